"""Helpers shared by the reliability tests and ``benchmarks/fault_injection.py``.

- :func:`snapshot` / :func:`changed`: everything a failed call must leave alone on a
  detector (``get_params``, every fitted attribute, the module's weights, buffers, device,
  memory layout and training flag, and the scores of fixed probe data, bitwise);
- :func:`bad_values`: values that violate *every* declared constraint of a parameter
  (``_parameter_constraints`` of the estimator or of an attack / outlier-source object),
  so a new parameter is covered as soon as it declares its constraints;
- :func:`constraint_cases`: ``(owner, parameter, bad value)`` for the estimator and every
  attack and outlier-source class, ready to be checked against the promise of
  ``docs/failure_modes.md`` by :func:`check_bad_param`.

Not part of the stable API.
"""

from __future__ import annotations

import copy
import json
import math
import numbers
import re
import warnings

import numpy as np
import torch
from . import persistence
from ._compat import Interval, make_constraint
from .attacks import ATTACKS
from .losses import LOSS_CONFIGS
from .outliers import OUTLIER_SOURCES, ArrayOutliers, GeneratorOutliers, Mixture

__all__ = ["quiet", "snapshot", "changed", "describe_change", "bad_values", "constraint_cases",
           "nested_classes", "check_bad_param", "expected_results", "numpy_scalar_params", "PUBLIC_CALLS"]


# --------------------------------------------------------------------------- state
def _freeze(v):
    if isinstance(v, torch.nn.Module):
        params = list(v.parameters())
        return ("module", id(v), v.training, tuple(m.training for m in v.modules()),
                tuple(str(p.device) for p in params), tuple(tuple(p.stride()) for p in params),
                {k: t.detach().clone() for k, t in v.state_dict().items()})
    if isinstance(v, np.ndarray):
        return ("array", v.copy())
    if isinstance(v, (list, tuple, dict, str, int, float, bool, type(None), torch.device,
                      np.generic)):
        return ("value", repr(v))  # repr: nan-safe, order-sensitive, deep
    return ("object", id(v))  # sources, attacks: must be the same object


def _same(a, b):
    if a[0] != b[0]:
        return False
    if a[0] == "module":
        sa, sb = a[-1], b[-1]
        return (a[1:-1] == b[1:-1] and sa.keys() == sb.keys()
                and all(sa[k].dtype == sb[k].dtype and sa[k].shape == sb[k].shape
                        and torch.equal(sa[k], sb[k]) for k in sa))
    if a[0] == "array":
        return (a[1].dtype == b[1].dtype and a[1].shape == b[1].shape
                and np.array_equal(a[1], b[1], equal_nan=True))
    return a[1] == b[1]


def snapshot(det, probe):
    """What a failed call must not change: ``(params repr, fitted attributes, score bytes)``."""
    fitted = {k: _freeze(v) for k, v in vars(det).items() if k.endswith("_")}
    scores = det.score_samples(probe).tobytes() if "offset_" in fitted else None
    return repr(det.get_params(deep=False)), fitted, scores


def describe_change(det, snap, probe):
    """``None`` if ``det`` matches ``snap``, else a short description of what changed."""
    try:
        now = snapshot(det, probe)
    except Exception as exc:  # e.g. scoring now fails: the detector was damaged
        return f"scoring fails afterwards: {type(exc).__name__}: {exc}"
    if now[0] != snap[0]:
        return "get_params changed"
    if now[1].keys() != snap[1].keys():
        return f"fitted attributes added/removed: {sorted(set(now[1]) ^ set(snap[1]))}"
    diff = [k for k in now[1] if not _same(now[1][k], snap[1][k])]
    if diff:
        return f"fitted attributes changed: {diff}"
    if now[2] != snap[2]:
        return "scores changed"
    return None


def changed(det, snap, probe):
    return describe_change(det, snap, probe) is not None


# ------------------------------------------------------------------- bad values
_POOL = ("not-an-option", 1.5, -1, 0, float("nan"), float("inf"), -float("inf"), None, True,
         [1.0, 2.0], (0.0,), {"a": 1}, object())


def _interval_bad(c):
    out = []
    for bound, side in ((c.left, "left"), (c.right, "right")):
        if bound is None:
            continue
        closed = c.closed in (side, "both")
        step = max(1.0, abs(bound)) if c.type is not numbers.Integral else 1
        beyond = bound - step if side == "left" else bound + step
        out.append(beyond)
        if not closed:
            out.append(bound)
        if c.type is numbers.Integral:
            out.append(np.int64(beyond))  # numpy scalars are checked like Python ones
        else:
            out.append(np.float64(beyond))
    if c.type is numbers.Integral:
        lo = c.left if c.left is not None else 0
        out.append(lo + 0.5)
    return out


def bad_values(constraints):
    """Values satisfying none of ``constraints`` (a ``_parameter_constraints`` entry):
    outside each interval (Python and numpy scalars), NaN/inf, wrong types, unknown
    strings, ``None`` where it is not allowed."""
    cons = [make_constraint(c) for c in constraints]
    candidates = list(_POOL)
    for c in cons:
        if isinstance(c, Interval):
            candidates.extend(_interval_bad(c))
    out, seen = [], set()
    for v in candidates:
        key = (type(v).__name__, repr(v))
        if key in seen:
            continue
        seen.add(key)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ok = any(c.is_satisfied_by(v) for c in cons)
        if not ok:
            out.append(v)
    return out


def nested_classes():
    """Every attack, outlier-source and loss class that declares parameter constraints,
    with the estimator parameter it is passed through (``attack`` / ``outliers`` /
    ``loss``)."""
    out = [("attack", cls) for cls in ATTACKS.values()]
    out += [("loss", cls) for cls in LOSS_CONFIGS.values()]
    out += [("outliers", cls) for cls in OUTLIER_SOURCES.values()]
    out += [("outliers", cls) for cls in (ArrayOutliers, GeneratorOutliers, Mixture)]
    return [(owner, cls) for owner, cls in out if getattr(cls, "_parameter_constraints", None)]


def constraint_cases(estimator_cls):
    """``(owner, parameter, bad value, settings)`` where ``settings`` is the
    ``set_params`` dict that injects the value: the estimator's own parameters, then
    every parameter of every nested attack / outlier-source class (passed as a fresh
    object with that one bad value)."""
    cases = []
    for name, cons in estimator_cls._parameter_constraints.items():
        for v in bad_values(cons):
            cases.append((estimator_cls.__name__, name, v, {name: v}))
    for owner, cls in nested_classes():
        for name, cons in cls._parameter_constraints.items():
            for v in bad_values(cons):
                cases.append((cls.__name__, name, v, {owner: _make(cls, name, v)}))
    return cases


def _make(cls, name, v):
    obj = cls()
    obj.__dict__[name] = v  # __init__ stores verbatim anyway; never validates
    return obj


# --------------------------------------------------------------- the promise
#: Public calls checked after a bad ``set_params``: each must raise a ValueError/TypeError
#: naming the parameter, or behave exactly as before (same result, detector unchanged).
PUBLIC_CALLS = {
    "score_samples": lambda d, X, y: d.score_samples(X),
    "decision_function": lambda d, X, y: d.decision_function(X),
    "predict": lambda d, X, y: d.predict(X),
    "perturb": lambda d, X, y: d.perturb(X[:4]),
    "recalibrate": lambda d, X, y: d.recalibrate().offset_,
}


def _names_param(exc, name):
    return re.search(rf"['`\"]?{re.escape(name)}['`\"]?", str(exc)) is not None


def expected_results(fitted, probe, y, calls=PUBLIC_CALLS):
    """What each public call returns on ``fitted`` (computed on copies, once)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {call: fn(copy.deepcopy(fitted), probe, y) for call, fn in calls.items()}


def check_bad_param(fitted, settings, name, X, y, probe, calls=PUBLIC_CALLS, expected=None):
    """Check the promise for one bad parameter value on a deep copy of ``fitted``.

    ``fit`` must raise a ValueError/TypeError whose message names ``name``; every public
    call must raise such an error or return what it returned before; once the parameter is
    set back, the detector (params, fitted attributes, module, scores) is bitwise as
    before. Returns a list of problems (empty: the promise holds).
    """
    det = copy.deepcopy(fitted)
    original = {k: det.get_params(deep=False)[k] for k in settings}
    snap = snapshot(det, probe)
    expected = expected_results(det, probe, y, calls) if expected is None else expected
    problems = []
    det.set_params(**settings)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            det.fit(X, y)
            problems.append("fit accepted it")
        except (ValueError, TypeError) as exc:
            if not _names_param(exc, name):
                problems.append(f"fit error does not name `{name}`: {exc}")
        except Exception as exc:  # noqa: BLE001 - the wrong family is the finding
            problems.append(f"fit raised {type(exc).__name__}: {exc}")
        for call, fn in calls.items():
            try:
                got = fn(det, probe, y)
            except (ValueError, TypeError) as exc:
                if not _names_param(exc, name):
                    problems.append(f"{call} error does not name `{name}`: {exc}")
                continue
            except Exception as exc:  # noqa: BLE001
                problems.append(f"{call} raised {type(exc).__name__}: {exc}")
                continue
            if not _equal(got, expected[call]):
                problems.append(f"{call} returned something else than before")
    det.set_params(**original)
    what = describe_change(det, snap, probe)
    if what:
        problems.append(what)
    return problems


def _equal(a, b):
    if isinstance(a, np.ndarray) and isinstance(b, np.ndarray):
        return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    return a == b


def numpy_scalar_params(estimator_cls, defaults):
    """``{param: numpy scalar}``: every parameter whose declared constraints include a
    real or integral interval, given as a numpy scalar of a valid value (the default when
    it is a number, else the interval's closed bound or a value inside)."""
    out = {}
    for name, cons in estimator_cls._parameter_constraints.items():
        ivs = [c for c in map(make_constraint, cons) if isinstance(c, Interval)]
        if not ivs:
            continue
        iv = ivs[0]
        v = defaults.get(name)
        if not (isinstance(v, numbers.Real) and not isinstance(v, bool) and iv.is_satisfied_by(v)):
            lo = iv.left if iv.left is not None else 0
            v = lo if iv.closed in ("left", "both") else lo + (1 if iv.type is numbers.Integral
                                                               else 0.5 * (min(iv.right, lo + 1) - lo
                                                                           if iv.right is not None
                                                                           else 1))
        out[name] = np.int64(v) if iv.type is numbers.Integral else np.float64(v)
    return out


# ------------------------------------------------------- shared fixtures and file edits
#: Tiny, fast detector settings used by the reliability tests and the fault-injection script.
TINY = dict(epochs=1, pretrain_epochs=1, batch_size=32, device="cpu", random_state=0,
            outliers="uniform")


def quiet(fn, *args, **kwargs):
    """``fn(*args, **kwargs)`` with every warning silenced (for fixtures whose warnings are
    tested elsewhere)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


def tiny_blobs():
    """``(X, Y, PROBE)``: two 2-D Gaussian blobs (80 labelled rows) and 20 probe rows (10 ID,
    10 far away), deterministic."""
    rng = np.random.RandomState(0)
    X = np.r_[rng.normal(0, 1, (40, 2)) + [3, 0], rng.normal(0, 1, (40, 2)) - [3, 0]]
    Y = np.r_[np.zeros(40, int), np.ones(40, int)]
    probe = np.r_[X[:10], np.random.RandomState(5).uniform(-30, 30, (10, 2))]
    return X, Y, probe


def tamper(path, edit, recompute=True):
    """Apply ``edit(payload)`` to a saved ``.aoe`` file, optionally with a valid checksum
    (an attacker who knows the format)."""
    payload = torch.load(path, map_location="cpu", weights_only=True)
    edit(payload)
    if recompute:
        payload["sha256"] = persistence._digest(payload)
    torch.save(payload, path)


def set_json(field, key, value):
    """An edit for :func:`tamper`: set ``key`` of the JSON text in ``payload[field]``."""
    def edit(p):
        d = json.loads(p[field])
        d[key] = value
        p[field] = json.dumps(d)
    return edit


class NoParams(torch.nn.Module):
    """A "backbone" without parameters (its logits are ``[x, -x]``)."""

    def forward(self, x):
        return torch.cat([x, -x], 1)


class FlatInTrain(torch.nn.Module):
    """A backbone whose output is 1-D in train mode only (2-D logits in eval mode)."""

    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(2, 2)

    def forward(self, x):
        out = self.lin(x)
        return out.flatten() if self.training else out

