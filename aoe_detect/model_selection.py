"""Cross-validation splitters for OOD detection: labelled OOD rows stay out of training.

:class:`~aoe_detect.AOEDetector` treats rows labelled ``-1`` (its ``outlier_label``) as
*training outliers*. With a plain ``KFold``/``StratifiedKFold`` the OOD rows of the training
folds are therefore trained on, and the cross-validated score measures an OOD class the model
has already seen (on wine, classes 0-1 ID and class 2 OOD: AUROC 0.994 with the OOD rows in
training against 0.862 without). With the default ``cv=5`` on class-sorted data most test
folds even hold no OOD row at all, and the AUROC is NaN.

:class:`OODStratifiedKFold` fixes both:

- ``protocol="unseen"`` (default): OOD rows appear **only in test folds** (each exactly
  once); the estimator trained on a fold never sees them. This measures detection of an
  OOD class that was not available at training time, the usual question.
- ``protocol="seen"``: OOD rows are split like an extra class, so the training folds hold
  OOD rows (used as training outliers) and the test folds hold *other rows of the same OOD
  class*. This measures how well labelled examples of an OOD class, available at training
  time, teach the detector to reject that class. Say which protocol a number comes from.

In both protocols the in-distribution classes are stratified and every test fold holds
in-distribution and OOD rows, so no fold score is NaN.

Examples
--------
>>> import numpy as np
>>> from aoe_detect.model_selection import OODStratifiedKFold
>>> y = np.array([0, 0, 0, 1, 1, 1, -1, -1, -1])
>>> cv = OODStratifiedKFold(n_splits=3)
>>> for train, test in cv.split(np.zeros((9, 1)), y):
...     print(train.tolist(), test.tolist())
[1, 2, 4, 5] [0, 3, 6]
[0, 2, 3, 5] [1, 4, 7]
[0, 1, 3, 4] [2, 5, 8]
"""

from __future__ import annotations

import numbers

import numpy as np
from sklearn.model_selection import BaseCrossValidator, KFold, StratifiedKFold
from sklearn.utils import check_random_state

__all__ = ["OODStratifiedKFold", "ood_mask"]


def ood_mask(y, outlier_label=-1):
    """Boolean mask of the rows of ``y`` that are labelled OOD.

    A row is OOD when it equals ``outlier_label``; for numeric labels any negative value
    is OOD too (the convention of :meth:`AOEDetector.score
    <aoe_detect.AOEDetector.score>`: ``y < 0`` marks OOD rows).

    Parameters
    ----------
    y : array-like of shape (n,)
        Class labels (numbers or strings).
    outlier_label : int or str, default=-1
        The label that marks OOD rows.

    Returns
    -------
    mask : ndarray of shape (n,), bool
        True for OOD rows.

    Examples
    --------
    >>> ood_mask([0, 3, -1, 7]).tolist()
    [False, False, True, False]
    >>> ood_mask(["cat", "outlier", "dog"], outlier_label="outlier").tolist()
    [False, True, False]
    """
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y.ravel()
    if y.ndim != 1:
        raise ValueError(f"`y` must be 1-D labels; got shape {y.shape}.")
    if y.dtype.kind in "biuf":
        mask = y < 0
        if isinstance(outlier_label, numbers.Real) and not isinstance(outlier_label, bool):
            mask = mask | (y == outlier_label)
        return mask
    if y.dtype.kind in "US":
        if isinstance(outlier_label, str):
            return y == outlier_label
        return np.zeros(len(y), dtype=bool)
    # object arrays: compare element by element with the marker's type in mind
    return np.array([type(v) is type(outlier_label) and v == outlier_label
                     or (isinstance(v, numbers.Real) and not isinstance(v, (bool, np.bool_))
                         and v < 0) for v in y], dtype=bool)


class OODStratifiedKFold(BaseCrossValidator):
    """K-fold cross-validation for OOD detectors: labelled OOD rows never train the model.

    The in-distribution (ID) rows are split by :class:`~sklearn.model_selection.StratifiedKFold`
    over their classes. The OOD rows (``y == outlier_label``, or ``y < 0`` for numeric
    labels) are split into ``n_splits`` near-equal groups, one per test fold:

    - ``protocol="unseen"`` (default): OOD rows are **only ever in test folds**; the training
      indices of every split hold ID rows only, so the detector is evaluated on an OOD class
      it has never seen (labels ``-1`` would otherwise become training outliers).
    - ``protocol="seen"``: the OOD rows not in the test fold are added to the training
      indices (the detector then uses them as training outliers), i.e. an ordinary stratified
      K-fold with OOD as one more class. Scores then measure rejection of an OOD class of
      which labelled examples were available in training.

    Every test fold holds ID and OOD rows, so AUROC-type scores (the detector's ``score``)
    are never NaN. Works with ``cross_val_score``, ``cross_validate``, ``cross_val_predict``
    (each row is in exactly one test fold) and ``GridSearchCV`` (``cv=OODStratifiedKFold()``).

    Parameters
    ----------
    n_splits : int, default=5
        Number of folds, at least 2. Needs at least ``n_splits`` OOD rows and, for every ID
        class, at least ``n_splits`` rows is recommended (scikit-learn warns otherwise).
    shuffle : bool, default=False
        Shuffle each class (and the OOD rows) before splitting.
    random_state : int, RandomState or None, default=None
        Seeds the shuffling when ``shuffle=True`` (no effect otherwise); the global RNG is
        never touched.
    protocol : {"unseen", "seen"}, default="unseen"
        Whether labelled OOD rows may appear in training folds (see above).
    outlier_label : int or str, default=-1
        Label marking OOD rows; keep it equal to the detector's ``outlier_label``. For numeric
        labels every negative label is OOD as well.

    See Also
    --------
    ood_mask : which rows count as OOD.

    Examples
    --------
    >>> import numpy as np
    >>> from aoe_detect.model_selection import OODStratifiedKFold
    >>> y = np.r_[np.zeros(6, int), np.ones(6, int), -np.ones(4, int)]
    >>> cv = OODStratifiedKFold(n_splits=2, shuffle=True, random_state=0)
    >>> [bool((y[train] == -1).any()) for train, _ in cv.split(np.zeros((16, 1)), y)]
    [False, False]
    >>> [int((y[test] == -1).sum()) for _, test in cv.split(np.zeros((16, 1)), y)]
    [2, 2]
    """

    def __init__(self, n_splits=5, *, shuffle=False, random_state=None, protocol="unseen",
                 outlier_label=-1):
        self.n_splits = n_splits
        self.shuffle = shuffle
        self.random_state = random_state
        self.protocol = protocol
        self.outlier_label = outlier_label

    def _check(self):
        if (isinstance(self.n_splits, bool) or not isinstance(self.n_splits, numbers.Integral)
                or self.n_splits < 2):
            raise ValueError(f"`n_splits` must be an integer >= 2, got {self.n_splits!r}.")
        if not isinstance(self.shuffle, (bool, np.bool_)):
            raise ValueError(f"`shuffle` must be True or False, got {self.shuffle!r}.")
        if self.protocol not in ("unseen", "seen"):
            raise ValueError(f"`protocol` must be 'unseen' or 'seen', got {self.protocol!r}.")
        if isinstance(self.outlier_label, (bool, np.bool_)) or not isinstance(
                self.outlier_label, (numbers.Integral, str)):
            raise ValueError(f"`outlier_label` must be an integer or a string, got "
                             f"{self.outlier_label!r}.")

    def _iter_test_masks(self, X, y=None, groups=None):
        self._check()
        if y is None:
            raise ValueError("OODStratifiedKFold needs `y` (class labels with OOD rows marked by "
                             "`outlier_label`).")
        y = np.asarray(y)
        if y.ndim == 2 and y.shape[1] == 1:
            y = y.ravel()
        n = len(y)
        is_ood = ood_mask(y, self.outlier_label)
        ood_idx, id_idx = np.flatnonzero(is_ood), np.flatnonzero(~is_ood)
        if len(ood_idx) < self.n_splits:
            raise ValueError(
                f"OODStratifiedKFold(n_splits={self.n_splits}) needs at least {self.n_splits} OOD "
                f"rows (y == {self.outlier_label!r}) so that every test fold holds OOD rows; got "
                f"{len(ood_idx)}. Lower `n_splits` or add labelled OOD rows.")
        if len(id_idx) < self.n_splits:
            raise ValueError(f"OODStratifiedKFold(n_splits={self.n_splits}) needs at least "
                             f"{self.n_splits} in-distribution rows; got {len(id_idx)}.")
        rng = check_random_state(self.random_state) if self.shuffle else None
        # one seed per sub-splitter, drawn from the local RNG: reproducible, global RNG untouched
        seeds = rng.randint(0, 2**31 - 1, 2) if rng is not None else (None, None)
        id_labels = y[id_idx]
        _, id_codes = np.unique(id_labels.astype(str) if id_labels.dtype.kind == "O"
                                else id_labels, return_inverse=True)
        shuffle = bool(self.shuffle)  # np.bool_ passes the check; scikit-learn wants a bool
        id_cv = StratifiedKFold(self.n_splits, shuffle=shuffle, random_state=seeds[0])
        ood_cv = KFold(self.n_splits, shuffle=shuffle, random_state=seeds[1])
        id_splits = id_cv.split(np.zeros(len(id_idx)), id_codes)
        ood_splits = ood_cv.split(np.zeros(len(ood_idx)))
        for (_, id_test), (_, ood_test) in zip(id_splits, ood_splits):
            mask = np.zeros(n, dtype=bool)
            mask[id_idx[id_test]] = True
            mask[ood_idx[ood_test]] = True
            yield mask

    def split(self, X, y=None, groups=None):
        """Generate ``(train, test)`` index arrays.

        Parameters
        ----------
        X : array-like of shape (n_samples, ...)
            Only its length is used.
        y : array-like of shape (n_samples,)
            Class labels; ``outlier_label`` (or a negative number) marks OOD rows.
        groups : ignored

        Yields
        ------
        train : ndarray of int
            Training indices; with ``protocol="unseen"`` they never include an OOD row.
        test : ndarray of int
            Test indices; every test fold holds ID and OOD rows.
        """
        self._check()
        if y is None:
            raise ValueError("OODStratifiedKFold needs `y` (class labels with OOD rows marked by "
                             "`outlier_label`).")
        n = len(y)
        if X is not None and len(X) != n:
            raise ValueError(f"`X` has {len(X)} rows but `y` has {n} labels.")
        keep_train = np.ones(n, dtype=bool)
        if self.protocol == "unseen":
            keep_train = ~ood_mask(y, self.outlier_label)
        for test_mask in self._iter_test_masks(X, y, groups):
            yield np.flatnonzero(~test_mask & keep_train), np.flatnonzero(test_mask)

    def get_n_splits(self, X=None, y=None, groups=None):
        """Number of splits (``n_splits``)."""
        return self.n_splits
