"""Small helpers of the estimator's fit/recalibrate bookkeeping (no torch training here).

- :func:`conformal_offset`: the split-conformal threshold ``offset_``;
- :func:`keep_classes_in_training`: the held-out split never takes a class's last rows;
- :func:`check_param` / :func:`check_params`: re-check parameters where they are used
  (``set_params`` after ``fit`` changes them without a refit);
- :func:`validate_nested`: attack and outlier-source objects check their own declared
  ``_parameter_constraints`` (``attack__steps``, ``outliers__uniform__widen``,
  ``loss__lam``);
- :func:`check_fit_params`: the checks the declared constraints cannot express (margins,
  ``checkpoint_dir``, ``compile`` options), done before training;
- :func:`restore_point`: the snapshot that a failed ``fit`` restores.
"""

from __future__ import annotations

import math
import os
import warnings

import numpy as np
import torch

from ._compat import InvalidParameterError, validate_parameter_constraints
from .exceptions import CalibrationWarning  # re-exported: its former home
from .losses import loss_settings

__all__ = ["CalibrationWarning", "conformal_offset", "check_spread", "keep_classes_in_training",
           "check_param", "check_params", "validate_nested", "named_components", "SCORING_PARAMS",
           "check_margin_params",
           "check_fit_params", "restore_point"]

_F32_MAX = float(np.finfo(np.float32).max)

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


def validate_nested(estimator, names=("attack", "outliers", "loss")):
    for name in names:
        validate_object(getattr(estimator, name, None), name)


def named_components(estimator, params, registries):
    """For ``set_params``: nested keys (``attack__eps``) of a component given by name
    (``attack="fgsm"``) first replace the name by its object (``FGSM()``); yield the
    ``{name: object}`` dicts to set first (removed from ``params``). A component that is
    None or ``"none"`` has no parameters: a clear ValueError."""
    for name, registry in registries.items():
        if not any(k.startswith(name + "__") for k in params):
            continue
        value = params.pop(name, getattr(estimator, name))
        if isinstance(value, str) and value in registry:
            value = registry[value]()
        elif value is None or isinstance(value, str):
            nested = sorted(k for k in params if k.startswith(name + "__"))
            example = type(next(iter(registry.values()))()).__name__
            raise ValueError(f"Cannot set {nested}: `{name}`={value!r} has no parameters. Pass an "
                             f"object instead, e.g. {name}={example}(...).")
        yield {name: value}


def check_margin_params(estimator):
    """``epsilon`` finite in float32; the margins (the loss object's or the shortcuts
    ``m_in``/``m_out``) finite with ``m_out > m_in``."""
    eps = estimator.epsilon
    if not isinstance(eps, str) and eps > _F32_MAX:
        raise ValueError(f"`epsilon`={eps!r} overflows float32 (max 3.4e38); pass a "
                         "radius in the units of X, or 'auto'.")
    for name in ("m_in", "m_out"):
        v = getattr(estimator, name)
        if not isinstance(v, str) and not math.isfinite(v):
            raise ValueError(f"`{name}` must be a finite number or 'auto', got {v!r}.")
    _, _, m_in, m_out = loss_settings(getattr(estimator, "loss", "energy"), None,
                                      estimator.m_in, estimator.m_out)
    if not isinstance(m_in, str) and not isinstance(m_out, str) and m_out <= m_in:
        raise ValueError(f"`m_out` ({m_out}) must be greater than `m_in` ({m_in}).")


def check_checkpoint_dir(d):
    """Fail before training, not after the first epoch: the folder must be creatable
    and writable."""
    if d is None:
        return
    path = os.fspath(d)
    if not path:
        raise ValueError("`checkpoint_dir` is an empty string; pass a folder path or None "
                         "(no checkpoints).")
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"`checkpoint_dir`={path!r} exists and is not a folder; pass a "
                         "folder path (it is created if missing) or None.")
    parent = os.path.abspath(path)
    while not os.path.exists(parent) and os.path.dirname(parent) != parent:
        parent = os.path.dirname(parent)  # nearest existing ancestor
    if not os.path.isdir(parent) or not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"`checkpoint_dir`={path!r} cannot be written ({parent!r} is not a "
                         "writable folder); pass a writable folder or None.")


def check_compile_option(compile_option):
    """``compile`` options are checked before training (torch.compile raises only when
    called, mid-fit, otherwise)."""
    if not isinstance(compile_option, dict):
        return
    try:
        torch.compile(torch.nn.Identity(), **compile_option)
    except Exception as exc:  # noqa: BLE001 - torch raises RuntimeError/TypeError/...
        raise ValueError(f"`compile`={compile_option!r} is not valid for torch.compile: "
                         f"{type(exc).__name__}: {exc}") from None


def check_fit_params(estimator):
    """Everything ``fit`` checks about its parameters before touching the data: the
    declared constraints (scikit-learn), the nested attack / outlier-source objects, and
    the margins, ``checkpoint_dir`` and ``compile`` checks above."""
    estimator._validate_params()
    validate_nested(estimator)  # attack / outlier-source objects: their own constraints
    check_margin_params(estimator)
    check_checkpoint_dir(estimator.checkpoint_dir)
    check_compile_option(estimator.compile)


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
