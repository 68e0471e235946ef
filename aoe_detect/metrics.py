"""Out-of-distribution (OOD) detection metrics on top of :mod:`sklearn.metrics`.

Sign and label conventions (they hold for every function in this module):

* Scores are **higher = more in-distribution (ID)**, e.g. ``score_samples`` of the
  detectors in this package (``-energy``).
* Unless a name says otherwise, **ID is the positive class**: ``auroc``, ``aupr_in`` and
  ``fpr_at_tpr`` use ``label 1 = ID`` with the score as is. ``aupr_out`` and
  ``fpr_at_tpr_ood_positive`` use ``label 1 = OOD`` with ``-score``.
* A sample is *accepted* as ID when ``score >= threshold``.
* In label vectors (scorers, :func:`split_scores`) ``y < 0`` marks an OOD row; every other
  label is ID.

All curves come from :func:`sklearn.metrics.roc_curve`,
:func:`sklearn.metrics.roc_auc_score` and :func:`sklearn.metrics.average_precision_score`;
nothing here re-implements ROC or precision-recall.
"""

import numbers
import warnings

import numpy as np
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

__all__ = [
    "auroc",
    "aupr_in",
    "aupr_out",
    "fpr_at_tpr",
    "fpr_at_tpr_ood_positive",
    "ood_report",
    "split_scores",
    "ood_scorer",
    "auroc_scorer",
]


# --------------------------------------------------------------------------- validation
def _as_scores(x, name):
    """Return ``x`` as a 1-D, non-empty, finite float64 numpy array or raise ValueError.

    Accepts lists, numpy arrays and torch tensors (detached and moved to CPU first; torch is
    not imported here). The error message names the argument ``name``.
    """
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # torch.Tensor, duck-typed
        x = x.detach().cpu()
        if hasattr(x, "is_complex") and x.is_complex():
            raise ValueError(f"{name} must contain real numbers, got a complex tensor ({x.dtype}).")
        if hasattr(x, "double"):  # bfloat16/float16/int/bool -> float64 (exact for float32)
            x = x.double()
    try:
        arr = np.asarray(x)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} could not be converted to a 1-D float array: {exc}") from exc
    if arr.dtype.kind not in "biuf":
        raise ValueError(
            f"{name} must contain real numbers (bool, int or float), got dtype {arr.dtype}."
        )
    if arr.ndim != 1:
        raise ValueError(
            f"{name} must be a 1-D array of scores, got {arr.ndim}-D input of shape {arr.shape}."
        )
    if arr.shape[0] == 0:
        raise ValueError(f"{name} is empty; at least one score is required.")
    arr = arr.astype(np.float64, copy=False)
    finite = np.isfinite(arr)
    if not finite.all():
        n_nan = int(np.isnan(arr).sum())
        n_inf = int((~finite).sum()) - n_nan
        first = int(np.flatnonzero(~finite)[0])
        raise ValueError(
            f"{name} must be finite, but it contains {n_nan} NaN and {n_inf} infinite "
            f"value(s) (first at index {first}: {arr[first]})."
        )
    return arr


def _check_tpr(tpr):
    """Return ``tpr`` as a float in (0, 1] or raise ValueError naming ``tpr``."""
    if isinstance(tpr, (bool, np.bool_)) or not isinstance(tpr, numbers.Real):
        raise ValueError(f"tpr must be a real number in (0, 1], got {tpr!r}.")
    tpr = float(tpr)
    if not (0.0 < tpr <= 1.0):  # also rejects NaN
        raise ValueError(f"tpr must be in the interval (0, 1], got {tpr!r}.")
    return tpr


def _validate(scores_id, scores_ood):
    return _as_scores(scores_id, "scores_id"), _as_scores(scores_ood, "scores_ood")


def _id_labels(s_id, s_ood):
    """Concatenate scores; label 1 = ID (positive), 0 = OOD."""
    y = np.r_[np.ones(s_id.shape[0], dtype=np.int8), np.zeros(s_ood.shape[0], dtype=np.int8)]
    return y, np.concatenate([s_id, s_ood])


# ----------------------------------------------------------------- internal metric cores
# These trust their inputs (validated 1-D, non-empty, finite float64 arrays).
def _auroc(s_id, s_ood):
    y, s = _id_labels(s_id, s_ood)
    return float(roc_auc_score(y, s))


def _aupr_in(s_id, s_ood):
    y, s = _id_labels(s_id, s_ood)
    return float(average_precision_score(y, s))


def _aupr_out(s_id, s_ood):
    y, s = _id_labels(s_id, s_ood)
    return float(average_precision_score(1 - y, -s))


def _fpr_at_tpr_positive(s_pos, s_neg, tpr):
    """FPR at the first ROC point with TPR >= tpr; positives are ``s_pos``, higher = positive.

    ``drop_intermediate=False`` keeps one ROC point per distinct score value. With the default
    ``True`` sklearn drops collinear points, e.g. the middle of a run of mixed ties, and the
    "first point with TPR >= tpr" could jump to a later point with a larger FPR.
    """
    y = np.r_[np.ones(s_pos.shape[0], dtype=np.int8), np.zeros(s_neg.shape[0], dtype=np.int8)]
    fpr, tpr_curve, _ = roc_curve(y, np.concatenate([s_pos, s_neg]), drop_intermediate=False)
    # tpr_curve is non-decreasing and ends at exactly 1.0, so an index always exists.
    return float(fpr[np.flatnonzero(tpr_curve >= tpr)[0]])


def _fpr_at_tpr(s_id, s_ood, tpr):
    return _fpr_at_tpr_positive(s_id, s_ood, tpr)


def _fpr_at_tpr_ood_positive(s_id, s_ood, tpr):
    return _fpr_at_tpr_positive(-s_ood, -s_id, tpr)


# ------------------------------------------------------------------------ public metrics
def auroc(scores_id, scores_ood):
    """Area under the ROC curve with **in-distribution as the positive class**.

    Computed as ``sklearn.metrics.roc_auc_score`` on labels ``1`` for ID and ``0`` for OOD
    with the scores as given (higher = more in-distribution). Equals the probability that a
    random ID sample scores higher than a random OOD sample, ties counting one half.

    Parameters
    ----------
    scores_id : array-like of shape (n_id,)
        Scores of the in-distribution samples, higher = more in-distribution. List, numpy
        array or torch tensor; 1-D, non-empty, finite.
    scores_ood : array-like of shape (n_ood,)
        Scores of the OOD samples, same sign convention.

    Returns
    -------
    float
        AUROC in [0, 1]: 1.0 when every ID sample scores strictly above every OOD sample,
        0.5 at chance (or when all scores are equal), 0.0 when the order is fully reversed.
        Swapping the arguments gives ``1 - auroc``.

    Raises
    ------
    ValueError
        If an argument is not 1-D, is empty, or contains NaN or infinity (the message names
        the argument).

    References
    ----------
    .. [1] D. Hendrycks and K. Gimpel, "A Baseline for Detecting Misclassified and
       Out-of-Distribution Examples in Neural Networks", ICLR 2017.
    .. [2] T. Fawcett, "An introduction to ROC analysis", Pattern Recognition Letters 27,
       2006.

    Examples
    --------
    >>> from aoe_detect.metrics import auroc
    >>> auroc([3, 4], [1, 2])
    1.0
    >>> auroc([1, 3], [2, 4])  # pairs (ID > OOD): 3>2 only -> 1 of 4
    0.25
    >>> auroc([1, 1], [1, 1])
    0.5
    """
    return _auroc(*_validate(scores_id, scores_ood))


def aupr_in(scores_id, scores_ood):
    """Area under the precision-recall curve with **in-distribution as the positive class**.

    ``sklearn.metrics.average_precision_score`` on labels ``1`` for ID, ``0`` for OOD, with
    the scores as given (higher = more in-distribution). Average precision is the step-wise
    sum ``sum_k (R_k - R_{k-1}) P_k`` (no trapezoidal interpolation). Its chance level is the
    ID fraction ``n_id / (n_id + n_ood)``, so it depends on the class balance.

    Parameters
    ----------
    scores_id : array-like of shape (n_id,)
        Scores of the in-distribution samples, higher = more in-distribution.
    scores_ood : array-like of shape (n_ood,)
        Scores of the OOD samples, same sign convention.

    Returns
    -------
    float
        Average precision in (0, 1]; 1.0 when every ID sample scores strictly above every
        OOD sample.

    Raises
    ------
    ValueError
        If an argument is not 1-D, is empty, or is not finite.

    References
    ----------
    .. [1] D. Hendrycks and K. Gimpel, "A Baseline for Detecting Misclassified and
       Out-of-Distribution Examples in Neural Networks", ICLR 2017 (AUPR-In / AUPR-Out).
    .. [2] J. Davis and M. Goadrich, "The Relationship Between Precision-Recall and ROC
       Curves", ICML 2006.

    Examples
    --------
    >>> from aoe_detect.metrics import aupr_in
    >>> aupr_in([3, 4], [1, 2])
    1.0
    >>> aupr_in([4, 2], [3, 1])  # ID ranks 1 and 3: (1/1 + 2/3) / 2
    0.8333333333333333
    """
    return _aupr_in(*_validate(scores_id, scores_ood))


def aupr_out(scores_id, scores_ood):
    """Area under the precision-recall curve with **OOD as the positive class**.

    ``sklearn.metrics.average_precision_score`` on labels ``1`` for OOD, ``0`` for ID, ranked
    by ``-score`` (the scores stay "higher = more in-distribution"; the minus sign makes
    "higher = more OOD" for the OOD-positive curve). Chance level is
    ``n_ood / (n_id + n_ood)``.

    Parameters
    ----------
    scores_id : array-like of shape (n_id,)
        Scores of the in-distribution samples, higher = more in-distribution.
    scores_ood : array-like of shape (n_ood,)
        Scores of the OOD samples, same sign convention.

    Returns
    -------
    float
        Average precision in (0, 1]; 1.0 when every OOD sample scores strictly below every
        ID sample.

    Raises
    ------
    ValueError
        If an argument is not 1-D, is empty, or is not finite.

    References
    ----------
    .. [1] D. Hendrycks and K. Gimpel, "A Baseline for Detecting Misclassified and
       Out-of-Distribution Examples in Neural Networks", ICLR 2017 (AUPR-In / AUPR-Out).

    Examples
    --------
    >>> from aoe_detect.metrics import aupr_out
    >>> aupr_out([3, 4], [1, 2])
    1.0
    >>> aupr_out([4, 2], [3, 1])  # by -score the OOD ranks are 1 and 3: (1/1 + 2/3) / 2
    0.8333333333333333
    """
    return _aupr_out(*_validate(scores_id, scores_ood))


def fpr_at_tpr(scores_id, scores_ood, tpr=0.95):
    """False positive rate at a true positive rate, **in-distribution positive** (FPR@95TPR).

    The fraction of OOD samples that are accepted as ID (``score >= threshold``) at the
    threshold where at least ``tpr`` of the ID samples are accepted. This is the convention
    of Liu et al. (2020) and of this package (``contamination=0.05`` puts ``predict`` at the
    same operating point). For the OOD-positive convention use
    :func:`fpr_at_tpr_ood_positive`.

    Computed with ``sklearn.metrics.roc_curve(y, score, drop_intermediate=False)`` on labels
    ``1`` for ID, ``0`` for OOD, taking the FPR at the **first** ROC point (highest
    threshold) whose TPR is ``>= tpr``. No interpolation between points.

    Ties: ROC points sit at the distinct score values and a sample is accepted when
    ``score >= threshold``. Hence all samples tied with the chosen threshold, ID and OOD, are
    accepted together: OOD samples tied with the threshold count as false positives (the
    pessimistic choice), and the achieved TPR may exceed ``tpr``. Equivalently, the
    threshold is the ``k``-th largest ID score where ``k`` is the smallest integer with
    ``k / n_id >= tpr``, and the result is ``mean(scores_ood >= threshold)``.

    Parameters
    ----------
    scores_id : array-like of shape (n_id,)
        Scores of the in-distribution samples (the positives), higher = more
        in-distribution.
    scores_ood : array-like of shape (n_ood,)
        Scores of the OOD samples (the negatives), same sign convention.
    tpr : float, default=0.95
        Required fraction of accepted ID samples, in (0, 1].

    Returns
    -------
    float
        FPR in [0, 1], a multiple of ``1 / n_ood``; lower is better. 0.0 when every OOD
        score is below the threshold.

    Raises
    ------
    ValueError
        If an argument is not 1-D, is empty or is not finite, or if ``tpr`` is not in
        (0, 1].

    See Also
    --------
    fpr_at_tpr_ood_positive : the OOD-positive convention (pytorch-ood "FPR95TPR").

    References
    ----------
    .. [1] W. Liu, X. Wang, J. Owens and Y. Li, "Energy-based Out-of-distribution
       Detection", NeurIPS 2020.

    Examples
    --------
    >>> from aoe_detect.metrics import fpr_at_tpr
    >>> # 95% of 4 ID samples needs all 4: threshold 2, OOD 3.5 and 6 are accepted -> 2/3
    >>> fpr_at_tpr([2, 3, 4, 5], [1, 3.5, 6])
    0.6666666666666666
    >>> # half of the ID samples (5 and 4): threshold 4, only OOD 6 is accepted -> 1/3
    >>> fpr_at_tpr([2, 3, 4, 5], [1, 3.5, 6], tpr=0.5)
    0.3333333333333333
    """
    tpr = _check_tpr(tpr)
    return _fpr_at_tpr(*_validate(scores_id, scores_ood), tpr)


def fpr_at_tpr_ood_positive(scores_id, scores_ood, tpr=0.95):
    """False positive rate at a true positive rate, **OOD positive** (pytorch-ood FPR95TPR).

    The fraction of ID samples flagged as OOD at the threshold where at least ``tpr`` of the
    OOD samples are detected. OOD is the positive class and is ranked by ``-score``, i.e. a
    sample is flagged as OOD when ``score <= threshold``. This is the convention of
    pytorch-ood's ``OODMetrics`` ("FPR95TPR"); it generally differs from
    :func:`fpr_at_tpr`, which is this package's default.

    Computed with ``sklearn.metrics.roc_curve(y, -score, drop_intermediate=False)`` on labels
    ``1`` for OOD, ``0`` for ID, taking the FPR at the first ROC point with TPR ``>= tpr``.
    Ties: every sample tied with the chosen threshold is flagged, so ID samples tied with
    it count as false positives. Equivalently the threshold is the ``k``-th smallest OOD
    score with ``k`` the smallest integer such that ``k / n_ood >= tpr``, and the result is
    ``mean(scores_id <= threshold)``.

    Parameters
    ----------
    scores_id : array-like of shape (n_id,)
        Scores of the in-distribution samples (the negatives here), higher = more
        in-distribution.
    scores_ood : array-like of shape (n_ood,)
        Scores of the OOD samples (the positives here), same sign convention.
    tpr : float, default=0.95
        Required fraction of detected OOD samples, in (0, 1].

    Returns
    -------
    float
        FPR in [0, 1], a multiple of ``1 / n_id``; lower is better.

    Raises
    ------
    ValueError
        If an argument is not 1-D, is empty or is not finite, or if ``tpr`` is not in
        (0, 1].

    See Also
    --------
    fpr_at_tpr : the in-distribution-positive convention used by this package.

    References
    ----------
    .. [1] K. Kirchheim, M. Filax and F. Ortmeier, "PyTorch-OOD: A Library for
       Out-of-Distribution Detection based on PyTorch", CVPR Workshops 2022.

    Examples
    --------
    >>> from aoe_detect.metrics import fpr_at_tpr, fpr_at_tpr_ood_positive
    >>> # detecting all 3 OOD needs threshold 6: all 4 ID are flagged as well
    >>> fpr_at_tpr_ood_positive([2, 3, 4, 5], [1, 3.5, 6])
    1.0
    >>> fpr_at_tpr([2, 3, 4, 5], [1, 3.5, 6])  # the ID-positive convention differs
    0.6666666666666666
    >>> # detecting 2 of 3 OOD: threshold 3.5, ID 2 and 3 are flagged -> 2/4
    >>> fpr_at_tpr_ood_positive([2, 3, 4, 5], [1, 3.5, 6], tpr=0.5)
    0.5
    """
    tpr = _check_tpr(tpr)
    return _fpr_at_tpr_ood_positive(*_validate(scores_id, scores_ood), tpr)


def ood_report(scores_id, scores_ood, tpr=0.95):
    """All standard OOD metrics at once, validating the inputs once.

    Scores are higher = more in-distribution. "auroc", "aupr_in" and "fpr95" take
    **in-distribution as the positive class**; "aupr_out" takes OOD as positive, ranked by
    ``-score``.

    Parameters
    ----------
    scores_id : array-like of shape (n_id,)
        Scores of the in-distribution samples, higher = more in-distribution.
    scores_ood : array-like of shape (n_ood,)
        Scores of the OOD samples, same sign convention.
    tpr : float, default=0.95
        TPR (fraction of ID accepted) at which "fpr95" is read, in (0, 1]. The key keeps its
        name for other values.

    Returns
    -------
    dict
        ``{"auroc": auroc(...), "aupr_in": aupr_in(...), "aupr_out": aupr_out(...),
        "fpr95": fpr_at_tpr(..., tpr=tpr), "n_id": int, "n_ood": int}``. Metric values are
        Python floats; for "fpr95" lower is better, for the others higher is better.

    Raises
    ------
    ValueError
        If an argument is not 1-D, is empty or is not finite, or if ``tpr`` is not in
        (0, 1].

    References
    ----------
    .. [1] D. Hendrycks and K. Gimpel, "A Baseline for Detecting Misclassified and
       Out-of-Distribution Examples in Neural Networks", ICLR 2017.
    .. [2] W. Liu, X. Wang, J. Owens and Y. Li, "Energy-based Out-of-distribution
       Detection", NeurIPS 2020.

    Examples
    --------
    >>> from aoe_detect.metrics import ood_report
    >>> ood_report([3, 4], [1, 2])
    {'auroc': 1.0, 'aupr_in': 1.0, 'aupr_out': 1.0, 'fpr95': 0.0, 'n_id': 2, 'n_ood': 2}
    """
    tpr = _check_tpr(tpr)
    s_id, s_ood = _validate(scores_id, scores_ood)
    return {
        "auroc": _auroc(s_id, s_ood),
        "aupr_in": _aupr_in(s_id, s_ood),
        "aupr_out": _aupr_out(s_id, s_ood),
        "fpr95": _fpr_at_tpr(s_id, s_ood, tpr),
        "n_id": int(s_id.shape[0]),
        "n_ood": int(s_ood.shape[0]),
    }


# ------------------------------------------------------------------------------ scorers
def _as_labels(y, n_samples):
    """Return ``y`` as a 1-D numeric numpy array of length ``n_samples`` or raise ValueError."""
    if y is None:
        raise ValueError(
            "y is required to split scores into ID and OOD (y < 0 marks OOD rows), got None."
        )
    if hasattr(y, "detach") and hasattr(y, "cpu"):
        y = y.detach().cpu()
    try:
        y = np.asarray(y)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"y could not be converted to a 1-D numeric array: {exc}") from exc
    if y.dtype.kind not in "biuf":
        raise ValueError(
            f"y must be numeric (y < 0 marks OOD rows, any other value ID), got dtype {y.dtype}."
        )
    if y.ndim != 1:
        raise ValueError(f"y must be 1-D, got {y.ndim}-D input of shape {y.shape}.")
    if y.shape[0] != n_samples:
        raise ValueError(
            f"y has {y.shape[0]} entries but scores has {n_samples}; they must match."
        )
    if y.dtype.kind == "f" and np.isnan(y).any():
        raise ValueError("y contains NaN; labels must be numbers (y < 0 marks OOD rows).")
    return y


def split_scores(scores, y):
    """Split scores into ``(scores_id, scores_ood)`` using labels where ``y < 0`` is OOD.

    Every row with ``y < 0`` (the package uses ``-1``) is OOD; every other label (``+1``,
    ``0``, class indices) is in-distribution. The scores keep their sign, higher = more
    in-distribution.

    If one side is empty an :class:`sklearn.exceptions.UndefinedMetricWarning` is issued
    and the empty side is returned as is; the scorers from :func:`ood_scorer` then return
    ``nan`` instead of raising, independently of the scikit-learn version (the metric
    functions themselves raise ValueError for an empty argument).

    Parameters
    ----------
    scores : array-like of shape (n_samples,)
        Scores, higher = more in-distribution; 1-D, non-empty, finite.
    y : array-like of shape (n_samples,)
        Labels; ``y < 0`` marks OOD rows.

    Returns
    -------
    scores_id : ndarray of shape (n_id,), float64
        Scores of the rows with ``y >= 0``, in their original order.
    scores_ood : ndarray of shape (n_ood,), float64
        Scores of the rows with ``y < 0``, in their original order.

    Raises
    ------
    ValueError
        If ``scores`` is not 1-D, empty or not finite, or ``y`` is missing, not numeric, not
        1-D, contains NaN or has a different length.

    Warns
    -----
    UndefinedMetricWarning
        If there are no ID rows or no OOD rows.

    References
    ----------
    .. [1] scikit-learn User Guide, "Defining your scoring strategy from metric functions",
       https://scikit-learn.org/stable/modules/model_evaluation.html

    Examples
    --------
    >>> from aoe_detect.metrics import split_scores
    >>> s_id, s_ood = split_scores([0.9, -2.0, 0.7, -1.5], [1, -1, 0, -1])
    >>> s_id.tolist(), s_ood.tolist()
    ([0.9, 0.7], [-2.0, -1.5])
    """
    scores = _as_scores(scores, "scores")
    y = _as_labels(y, scores.shape[0])
    is_ood = y < 0
    s_id, s_ood = scores[~is_ood], scores[is_ood]
    if s_id.shape[0] == 0 or s_ood.shape[0] == 0:
        missing = "in-distribution (y >= 0)" if s_id.shape[0] == 0 else "OOD (y < 0)"
        warnings.warn(
            f"No {missing} rows among the {scores.shape[0]} samples; OOD metrics are "
            "undefined here and the OOD scorers return nan.",
            UndefinedMetricWarning,
            stacklevel=2,
        )
    return s_id, s_ood


# name -> (metric core, uses tpr, sign applied so that greater is better)
_SCORER_METRICS = {
    "auroc": (_auroc, False, 1.0),
    "aupr_in": (_aupr_in, False, 1.0),
    "aupr_out": (_aupr_out, False, 1.0),
    "fpr_at_tpr": (_fpr_at_tpr, True, -1.0),
    "fpr95": (_fpr_at_tpr, True, -1.0),
    "fpr_at_tpr_ood_positive": (_fpr_at_tpr_ood_positive, True, -1.0),
}


class _OODScorer:
    """Callable ``scorer(estimator, X, y)`` built by :func:`ood_scorer` (picklable)."""

    def __init__(self, metric, tpr):
        self.metric = metric
        self.tpr = tpr

    def __call__(self, estimator, X, y=None):
        func, uses_tpr, sign = _SCORER_METRICS[self.metric]
        if not hasattr(estimator, "score_samples"):
            raise TypeError(
                f"{type(estimator).__name__} has no score_samples method; OOD scorers need "
                "score_samples(X) with higher = more in-distribution."
            )
        scores = estimator.score_samples(X)
        s_id, s_ood = split_scores(scores, y)
        if s_id.shape[0] == 0 or s_ood.shape[0] == 0:
            return float("nan")
        value = func(s_id, s_ood, self.tpr) if uses_tpr else func(s_id, s_ood)
        return sign * value

    def __repr__(self):
        if _SCORER_METRICS[self.metric][1]:
            return f"ood_scorer(metric={self.metric!r}, tpr={self.tpr!r})"
        return f"ood_scorer(metric={self.metric!r})"


def ood_scorer(metric="auroc", *, tpr=0.95):
    """Make a scikit-learn scorer ``scorer(estimator, X, y)`` for an OOD metric.

    The scorer calls ``estimator.score_samples(X)`` (higher = more in-distribution), splits
    the rows with :func:`split_scores` (``y < 0`` is OOD, every other label ID) and returns
    the metric so that **greater is better**, as ``cross_val_score`` and ``GridSearchCV``
    expect:

    * ``"auroc"``, ``"aupr_in"`` (ID positive) and ``"aupr_out"`` (OOD positive, ``-score``)
      are returned as is.
    * ``"fpr_at_tpr"`` (alias ``"fpr95"``; ID positive, see :func:`fpr_at_tpr`) and
      ``"fpr_at_tpr_ood_positive"`` are returned **negated**, ``-FPR`` in [-1, 0], so that
      higher is better; 0.0 is the best value.

    If a split has no OOD rows or no ID rows the scorer warns
    (:class:`sklearn.exceptions.UndefinedMetricWarning`) and returns ``nan``.

    Parameters
    ----------
    metric : {"auroc", "aupr_in", "aupr_out", "fpr_at_tpr", "fpr95", \
"fpr_at_tpr_ood_positive"}, default="auroc"
        Metric to compute.
    tpr : float, default=0.95
        TPR in (0, 1] for the FPR metrics; ignored by the others.

    Returns
    -------
    scorer : callable
        ``scorer(estimator, X, y) -> float``, greater is better. Picklable.

    Raises
    ------
    ValueError
        If ``metric`` is unknown or ``tpr`` is not in (0, 1].

    References
    ----------
    .. [1] scikit-learn User Guide, "Defining your scoring strategy from metric functions",
       https://scikit-learn.org/stable/modules/model_evaluation.html
    .. [2] W. Liu, X. Wang, J. Owens and Y. Li, "Energy-based Out-of-distribution
       Detection", NeurIPS 2020.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.neighbors import KernelDensity
    >>> from aoe_detect.metrics import auroc_scorer, ood_scorer
    >>> X = np.array([[0.0], [0.5], [1.0], [1.5], [0.25], [5.0]])
    >>> y = np.array([1, 1, 1, 1, -1, -1])  # -1 marks OOD rows
    >>> kde = KernelDensity(bandwidth=0.5).fit(X[y >= 0])  # log density: higher = more ID
    >>> # OOD 0.25 outscores ID 0.0 and 1.5 only, OOD 5.0 no ID: 1 - 2/8
    >>> auroc_scorer(kde, X, y)
    0.75
    >>> # all 4 ID accepted -> OOD 0.25 accepted too: FPR 1/2, reported negated
    >>> ood_scorer("fpr_at_tpr")(kde, X, y)
    -0.5
    >>> ood_scorer("fpr_at_tpr", tpr=0.5)
    ood_scorer(metric='fpr_at_tpr', tpr=0.5)
    """
    if not isinstance(metric, str) or metric not in _SCORER_METRICS:
        raise ValueError(
            f"metric must be one of {sorted(_SCORER_METRICS)}, got {metric!r}."
        )
    tpr = _check_tpr(tpr)
    return _OODScorer(metric, tpr)


#: Scorer for AUROC, in-distribution positive, greater is better (``ood_scorer("auroc")``).
auroc_scorer = ood_scorer("auroc")

