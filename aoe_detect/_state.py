"""Small helpers of the estimator's fit/recalibrate bookkeeping (no torch training here).

- :func:`conformal_offset`: the split-conformal threshold ``offset_``;
- :func:`keep_classes_in_training`: the held-out split never takes a class's last rows;
- :func:`check_param` / :func:`check_params`: re-check parameters where they are used
  (``set_params`` after ``fit`` changes them without a refit);
- :func:`validate_nested`: attack and outlier-source objects check their own declared
  ``_parameter_constraints`` (``attack__steps``, ``outliers__uniform__widen``).
"""

from __future__ import annotations

import math
import warnings

import numpy as np

from ._compat import InvalidParameterError, validate_parameter_constraints
from .exceptions import CalibrationWarning  # re-exported: its former home

__all__ = ["CalibrationWarning", "conformal_offset", "keep_classes_in_training", "check_param",
           "check_params", "validate_nested", "SCORING_PARAMS"]

#: Parameters that change what scoring and ``perturb`` compute and that they read from the
#: estimator itself (not from a fitted attribute): checked at every call, because
#: ``set_params`` after ``fit`` can change them. (Others, like ``batch_size``, only matter
#: to the next ``fit``; an invalid value there is reported by that ``fit`` and does not
#: stop the fitted detector from scoring.)
SCORING_PARAMS = ("temperature", "amp")


def conformal_offset(scores, contamination):
    """Split-conformal lower threshold of ID scores.

    ``offset_ = s_(k)``, the ``k``-th smallest of the ``n`` held-out scores, with
    ``k = floor((n + 1) * contamination)``. For a new ID input exchangeable with the
    held-out rows, ``P(score < offset_) = P(its rank among the n + 1 is <= k) = k / (n + 1)``
    for untied scores (ties only lower it), so the false-rejection rate of ID data is
    ``<= contamination`` and ``> contamination - 1 / (n + 1)``. With ``k < 1`` (fewer than
    ``1 / contamination - 1`` held-out rows) no threshold has the guarantee: the smallest
    score is used and a :class:`CalibrationWarning` says how many rows are needed.
    """
    s = np.sort(np.asarray(scores, dtype=np.float64).ravel())
    n = len(s)
    if n == 0:
        raise ValueError("No held-out scores to compute the threshold `offset_` on; pass "
                         "in-distribution data.")
    k = int(math.floor((n + 1) * float(contamination)))
    if k < 1:
        need = int(math.ceil(1.0 / float(contamination))) - 1
        warnings.warn(f"The threshold rests on {n} held-out in-distribution score(s), too few for "
                      f"contamination={contamination}: at least {need} are needed for the "
                      "split-conformal guarantee P(ID rejected) <= contamination. offset_ is the "
                      "smallest held-out score (ID rejection rate up to "
                      f"1/{n + 1} = {1 / (n + 1):.3g}). Raise `validation_fraction`, give more "
                      "data, or recalibrate(X) on more ID data.", CalibrationWarning)
        k = 1
    return float(s[k - 1])


def keep_classes_in_training(perm, n_val, labels):
    """Split a permutation into ``(val_idx, train_idx)`` with ``n_val`` held-out rows, then
    move back into training the first held-out row of every class that would otherwise
    have no training row (so no class silently vanishes from training). Without labels,
    or when every class keeps a training row, this is exactly ``perm[:n_val], perm[n_val:]``.
    """
    val, tr = perm[:n_val], perm[n_val:]
    if labels is None or n_val == 0:
        return val, tr
    labels = np.asarray(labels)
    missing = np.setdiff1d(np.unique(labels[val]), np.unique(labels[tr]))
    if missing.size == 0:
        return val, tr
    move = np.array([int(np.flatnonzero(labels[val] == c)[0]) for c in missing])
    keep = np.ones(len(val), dtype=bool)
    keep[move] = False
    if not keep.any():
        raise ValueError(f"`validation_fraction` holds out {n_val} row(s), but keeping every class "
                         f"in training (classes {missing[:5].tolist()} have too few rows) leaves no "
                         "held-out row for the threshold; give more rows per class or set "
                         "validation_fraction=0.")
    return val[keep], np.concatenate([tr, val[move]])


def check_param(estimator, name):
    """Validate one parameter against ``estimator._parameter_constraints[name]``."""
    validate_parameter_constraints({name: estimator._parameter_constraints[name]},
                                   {name: getattr(estimator, name)},
                                   caller_name=type(estimator).__name__)


def check_params(estimator, names=SCORING_PARAMS):
    for name in names:
        if name in estimator._parameter_constraints and hasattr(estimator, name):
            check_param(estimator, name)


def _components(obj):
    sources = getattr(obj, "sources", None)
    if not isinstance(sources, (list, tuple)):
        return []
    return [s if isinstance(s, tuple) and len(s) == 2 else (type(s).__name__, s) for s in sources]


def validate_object(obj, path):
    """Check an attack/outlier-source object's declared constraints (and its components',
    for mixtures); the error names the path, e.g. ``attack`` (PGD): 'steps' ..."""
    if obj is None or isinstance(obj, str) or not hasattr(obj, "get_params"):
        return
    if getattr(obj, "_parameter_constraints", None) and hasattr(obj, "_validate_params"):
        try:
            obj._validate_params()
        except InvalidParameterError as exc:
            raise InvalidParameterError(f"Invalid `{path}` ({type(obj).__name__}): {exc} Set it "
                                        f"with set_params({path}__<name>=...) or a new "
                                        f"{type(obj).__name__}(...).") from None
    for name, sub in _components(obj):
        validate_object(sub, f"{path}__{name}")


def validate_nested(estimator, names=("attack", "outliers")):
    for name in names:
        validate_object(getattr(estimator, name, None), name)
