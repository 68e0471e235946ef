"""The fitted state of a fit: its threshold and its snapshot (no torch training here).

- :func:`conformal_offset`: the split-conformal threshold ``offset_``;
- :func:`check_spread`: a warning before a threshold is set on scores with no spread;
- :func:`restore_point`: the snapshot that a failed ``fit`` restores.

(The parameter checks that lived here are in :mod:`aoe_detect._params`, with the parameter
surface they check; the held-out split rule is in :mod:`aoe_detect._fit_inputs`.)
"""

from __future__ import annotations

import math
import warnings

import numpy as np

from .exceptions import CalibrationWarning  # re-exported: its former home

__all__ = ["CalibrationWarning", "conformal_offset", "check_spread", "restore_point"]


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


def check_spread(scores, ood_score="energy", validation_fraction=0.1):
    """Warn (:class:`CalibrationWarning`) before a threshold is set on held-out scores with
    (near-)zero spread (a range below ``1e-6`` of their magnitude, at least 1e-6): every
    new input scored a hair lower would be rejected. With ``validation_fraction=0`` and a
    k-NN score this is the rule, not an accident: each training row is its own nearest
    neighbour in the bank, so its score is ~0 and no new ID row reaches the threshold."""
    s = np.asarray(scores, dtype=np.float64)
    s = s[np.isfinite(s)]
    if len(s) < 2:
        return
    knn_self = validation_fraction == 0 and "knn" in str(ood_score).split("+")
    if knn_self or float(np.ptp(s)) <= 1e-6 * max(1.0, float(np.median(np.abs(s)))):
        why = (" With validation_fraction=0 the threshold is computed on the training rows, "
               "and a k-NN score counts each training row as its own nearest neighbour "
               "(distance 0): the threshold is far too strict for new ID data."
               if knn_self else "")
        warnings.warn(f"The {len(s)} held-out in-distribution scores the threshold `offset_` "
                      f"rests on have a range of {float(np.ptp(s)):.3g} (near-zero spread), so "
                      "new in-distribution inputs will mostly be rejected." + why + " Hold out "
                      "rows (validation_fraction > 0), give more varied data, or "
                      "recalibrate(X) on other ID data.", CalibrationWarning, stacklevel=3)


def restore_point(estimator):
    """Return a function that puts back the current attributes of ``estimator``. ``fit``
    never modifies a module in place (a warm start trains a copy of ``module_``), so the
    attributes (and the rows of ``history_``) are all there is to put back."""
    attrs = estimator.__dict__.copy()
    history = list(attrs.get("history_", []))

    def restore():
        estimator.__dict__.clear()
        estimator.__dict__.update(attrs)
        if "history_" in attrs:
            estimator.history_ = history
    return restore
