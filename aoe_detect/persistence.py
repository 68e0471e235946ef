"""Safe persistence: a single file of tensors plus JSON text, read with ``weights_only=True``.

The file is written with ``torch.save`` but holds only a dict of strings, numbers and
tensors, so ``torch.load(..., weights_only=True)`` reads it without unpickling arbitrary
objects: a crafted file cannot run code on load. The backbone is rebuilt from its registry
name (built-in backbones) or must be supplied as an instance of the same architecture
(user modules and factories).

Format versions: every file carries ``format_version`` ``"MAJOR.MINOR"`` (files without it,
written by the releases before the field existed, up to 0.2.x, are ``"1.0"``); ``format``
is ``"aoe-detect/MAJOR"``.

- A MINOR bump only *adds* fields: readers of the same MAJOR load the file and ignore what
  they do not know (with a warning when the file is newer than they are).
- A MAJOR bump changes or removes fields: a reader refuses a file of a newer MAJOR with a
  message naming both format versions and the aoe-detect version that wrote the file.
- Every release loads the files of every earlier release (converting old MAJORs in the
  loader); ``tests/data`` holds a file written by each release and the scores it gave.

``pickle``/``joblib`` also work (the estimator moves its module to the CPU when pickled and
back to an available device when unpickled), but unpickling runs code by design: only load
pickles you trust.
"""

from __future__ import annotations

import copy
import hashlib
import inspect
import json
import os
import warnings

import numpy as np
import torch
from sklearn.utils.validation import check_is_fitted

from . import _params, _version
from . import distributed as _distributed
from ._params import check_margin_params, validate_nested
from ._state import conformal_offset
from ._torch_utils import atomic_write, resolve_device
from .backbones import BACKBONES, build_backbone
from .scores import (EnergyScore, KNNScore, LogitsAndFeatures, MahalanobisScore, SumScore,
                     build_scorer)

__all__ = ["save", "load", "check_save_path", "FORMAT", "FORMAT_VERSION"]

FORMAT = "aoe-detect/1"
#: ``"MAJOR.MINOR"`` of the files :func:`save` writes (see the module docstring for the
#: policy). 1.0: aoe-detect up to 0.2.x (no ``format_version`` field); 1.1: the field is
#: written.
FORMAT_VERSION = "1.1"

#: The class :func:`load` builds by default. :mod:`aoe_detect.detector` imports this module
#: (save/load/checkpoints) and sets this to :class:`~aoe_detect.AOEDetector` when it is
#: imported, so persistence needs no import of the estimator (no import cycle).
_ESTIMATOR_CLASS = None

_FITTED = ("offset_", "m_in_", "m_out_", "lam_", "input_range_", "input_shape_", "n_features_in_")


def _jsonable(v):
    if isinstance(v, (str, bool, int, float)) or v is None:
        return v
    if isinstance(v, (np.integer, np.floating)):
        return v.item()
    if isinstance(v, (list, tuple)):
        out = [_jsonable(x) for x in v]
        return None if any(o is _NOT for o in out) else out
    if _params.CONFIG_CLASSES.get(type(v).__name__) is type(v):  # a component object
        own = {k: _jsonable(x) for k, x in v.get_params(deep=False).items()}
        if all(x is not _NOT for x in own.values()):
            return {"__config__": type(v).__name__, "params": own}
    return _NOT


def _from_json(v):
    """A saved parameter value back: component objects rebuilt (see :func:`_jsonable`)."""
    if isinstance(v, dict) and set(v) == {"__config__", "params"}:
        cls = _params.CONFIG_CLASSES.get(v["__config__"])
        if cls is None or not isinstance(v["params"], dict):
            raise ValueError(f"unknown component {v['__config__']!r}")
        return cls(**v["params"])
    return v


class _NotJSON:
    pass


_NOT = _NotJSON()


def save(detector, path, _partial=False):
    """Write a fitted :class:`~aoe_detect.AOEDetector` to ``path`` (atomically).

    Parameters
    ----------
    detector : AOEDetector
        Fitted.
    path : str or os.PathLike

    Returns
    -------
    str
        The path written.
    """
    if not _partial:
        check_is_fitted(detector, "offset_")
        sync = getattr(detector, "_sync_score", None)
        if sync is not None:  # score parameters set after fit: consistent, or refused
            sync()
    params, skipped = {}, []
    for k, v in detector.get_params(deep=False).items():
        j = _jsonable(v)
        if j is _NOT:
            skipped.append(k)
        else:
            params[k] = j
    fitted = {k: _jsonable(getattr(detector, k)) for k in _FITTED if hasattr(detector, k)}
    if _partial:  # a training checkpoint: the weights of the last epoch, no score or threshold
        fitted.pop("offset_", None)  # (those of a previous fit would not belong to them)
        fitted["partial"] = True
    eps = getattr(detector, "epsilon_", None)
    fitted["epsilon_"] = eps.tolist() if isinstance(eps, np.ndarray) else eps
    fitted["device_"] = str(getattr(detector, "device_", "cpu"))
    if hasattr(detector, "classes_"):
        fitted["classes_"] = np.asarray(detector.classes_).tolist()
    if hasattr(detector, "feature_names_in_"):  # DataFrame column names
        fitted["feature_names_in_"] = [str(c) for c in detector.feature_names_in_]
    fitted["history_"] = getattr(detector, "history_", [])
    scorer = None if _partial else getattr(detector, "scorer_", None)
    if scorer is not None:
        fitted["scorer_"] = _scorer_spec(scorer)
    bb = detector.backbone
    spec = {"kind": "builtin", "name": bb} if isinstance(bb, str) else {"kind": "module"}
    if spec["kind"] == "builtin" and bb == "auto":
        spec["name"] = "mlp" if len(detector.input_shape_) == 1 else "small_cnn"
    state = {k: v.detach().cpu().clone() for k, v in detector.module_.state_dict().items()}
    n_logits = _n_logits(detector.module_, state)
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "version": _version.__version__,
        "torch_version": str(torch.__version__),
        "params": json.dumps(params),
        "params_not_saved": json.dumps(skipped),
        "fitted": json.dumps(fitted),
        "backbone": json.dumps({**spec, "n_logits": n_logits}),
        "state_dict": state,
        "scorer_state": ({} if scorer is None else
                         {k: v.detach().cpu().clone() for k, v in scorer.state_dict().items()}),
        "validation_scores": torch.as_tensor(
            np.asarray(np.zeros(0) if _partial else getattr(detector, "validation_scores_",
                                                             np.zeros(0)), dtype=np.float64)),
    }
    payload["sha256"] = _digest(payload)
    path = check_save_path(path)
    atomic_write(path, lambda tmp: torch.save(payload, tmp))
    return path


def _scorer_spec(scorer):
    """JSON description of a fitted scorer: its name and the shapes of its buffers."""
    state = scorer.state_dict()
    spec = {"name": scorer.name, "temperature": None, "n_classes": 1, "n_features": 1,
            "n_bank": 1, "knn_k": "auto", "knn_max_samples": None}
    for key, v in state.items():
        if key.endswith("means"):
            spec["n_classes"], spec["n_features"] = int(v.shape[0]), int(v.shape[1])
        elif key.endswith("bank"):
            spec["n_bank"], spec["n_features"] = int(v.shape[0]), int(v.shape[1])
    for m in scorer.modules():
        if hasattr(m, "temperature"):
            spec["temperature"] = float(m.temperature)
        if hasattr(m, "k"):
            spec["knn_k"] = m.k if isinstance(m.k, str) else int(m.k)
            spec["knn_max_samples"] = None if m.max_samples is None else int(m.max_samples)
    return spec


def _load_scorer(spec, state, path, ood_score):
    """Rebuild ``scorer_`` from its JSON spec and tensors, checked like a fitted one: the
    score must be the detector's ``ood_score`` and every statistic finite."""
    if not isinstance(spec, dict) or spec.get("name") != ood_score:
        raise ValueError(f"{path!r} is corrupted: field `scorer_` describes score "
                         f"{spec.get('name') if isinstance(spec, dict) else spec!r}, but the "
                         f"saved `ood_score` is {ood_score!r}.")
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path!r} is corrupted: field `scorer_state` must hold tensors.")
    bad = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise ValueError(f"{path!r} is corrupted: the score statistics {bad} hold NaN/inf.")
    for key in [k for k in state if k.endswith("std")]:
        if not bool((state[key] > 0).all()):
            raise ValueError(f"{path!r} is corrupted: score statistic `{key}` must be positive.")
    try:
        scorer = build_scorer(spec["name"], temperature=spec["temperature"] or 1.0,
                              n_classes=spec["n_classes"], n_features=spec["n_features"],
                              n_bank=spec["n_bank"], knn_k=spec["knn_k"],
                              knn_max_samples=spec["knn_max_samples"])
        scorer.load_state_dict(state)
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise ValueError(f"{path!r} is corrupted: its score statistics do not load "
                         f"({type(exc).__name__}: {exc}).") from None
    return scorer.eval()


def check_save_path(path, name="path"):
    """Return ``os.fspath(path)`` if a file can be written there, else raise a ValueError
    naming the problem (a folder, a missing or read-only parent folder). Call it before
    long work whose result is to be saved (the CLI checks ``--out`` before training)."""
    try:
        path = os.fspath(path)
    except TypeError:
        raise TypeError(f"`{name}` must be a str or os.PathLike file path, got "
                        f"{type(path).__name__}.") from None
    if not path:
        raise ValueError(f"`{name}` is an empty string; pass a file path such as 'model.aoe'.")
    if os.path.isdir(path):
        raise ValueError(f"`{name}`={path!r} is a folder; pass a file path inside it, e.g. "
                         f"{os.path.join(path, 'model.aoe')!r}.")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise ValueError(f"`{name}`={path!r}: the folder {folder!r} does not exist; create it first.")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ValueError(f"`{name}`={path!r}: the folder {folder!r} is not writable.")
    return path


def _digest(payload):
    """SHA-256 of every field and tensor byte: zip archives do not check their CRCs on read,
    so a flipped byte in the weights would otherwise load silently."""
    h = hashlib.sha256()

    def add(key, v):
        h.update(key.encode())
        if isinstance(v, torch.Tensor):
            t = v.detach().cpu()
            h.update(f"{t.dtype}{tuple(t.shape)}".encode())
            try:
                h.update(t.numpy().tobytes())
            except TypeError:  # bfloat16 and other dtypes numpy lacks: float32 is exact
                h.update(t.float().numpy().tobytes())
        else:
            h.update(repr(v).encode())

    for k in sorted(payload):
        if k == "sha256":
            continue
        if isinstance(payload[k], dict):
            for name in sorted(payload[k]):
                add(f"{k}.{name}", payload[k][name])
        else:
            add(k, payload[k])
    return h.hexdigest()


def _n_logits(module, state):
    """Output width of the last Linear layer (the logits of every built-in backbone)."""
    for m in reversed(list(module.modules())):
        if isinstance(m, torch.nn.Linear):
            return int(m.out_features)
    return None


def _bad(path, field, why):
    return ValueError(f"{path!r} holds an invalid `{field}`: {why}. The file was edited or "
                      "damaged; it was not loaded.")


def _check_loaded_params(det, path):
    """The saved parameters go through the same checks as ``fit``."""
    try:
        det._validate_params()
        validate_nested(det)
        check_margin_params(det)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{path!r} holds an invalid parameter: {exc} The file was edited or "
                         "damaged; it was not loaded.") from None


def _finite_real(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v)


def _check_loaded_fitted(fitted, spec, state, validation_scores, path):
    """Fitted values: the invariants ``fit`` establishes (finite threshold and margins,
    consistent shapes, finite weights)."""
    if spec.get("kind") not in ("builtin", "module"):
        raise _bad(path, "backbone", f"kind {spec.get('kind')!r} is not 'builtin' or 'module'")
    if spec["kind"] == "builtin" and spec.get("name") not in BACKBONES:
        raise _bad(path, "backbone", f"unknown built-in backbone {spec.get('name')!r}")
    n_logits = spec.get("n_logits")
    if n_logits is not None and not (isinstance(n_logits, int) and n_logits >= 1):
        raise _bad(path, "backbone.n_logits", f"{n_logits!r} is not a positive integer")
    shape = fitted.get("input_shape_")
    if (not isinstance(shape, list) or len(shape) not in (1, 3)
            or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 1 for d in shape)):
        raise _bad(path, "input_shape_", f"{shape!r} is not a list of 1 or 3 positive integers")
    if "offset_" in fitted and not _finite_real(fitted["offset_"]):
        raise _bad(path, "offset_", f"{fitted['offset_']!r} is not a finite number")
    for k in ("m_in_", "m_out_", "lam_"):
        if k in fitted and not _finite_real(fitted[k]):
            raise _bad(path, k, f"{fitted[k]!r} is not a finite number")
    if "lam_" in fitted and fitted["lam_"] < 0:
        raise _bad(path, "lam_", f"{fitted['lam_']!r} is negative")
    if "m_in_" in fitted and "m_out_" in fitted and not fitted["m_out_"] > fitted["m_in_"]:
        raise _bad(path, "m_out_", f"{fitted['m_out_']!r} is not greater than m_in_ {fitted['m_in_']!r}")
    rng = fitted.get("input_range_")
    if rng is not None and not (isinstance(rng, list) and len(rng) == 2
                                and all(_finite_real(v) for v in rng) and rng[0] < rng[1]):
        raise _bad(path, "input_range_", f"{rng!r} is not null or [low, high] with finite low < high")
    nf = fitted.get("n_features_in_")
    if nf is not None and nf != shape[0]:
        raise _bad(path, "n_features_in_", f"{nf!r} does not match input_shape_ {shape!r}")
    eps = fitted.get("epsilon_")
    if isinstance(eps, list):
        arr = np.asarray(eps, dtype=object)
        ok = (arr.ndim == 1 and len(arr) == (shape[0] if len(shape) == 1 else len(arr))
              and all(_finite_real(v) and v >= 0 for v in eps))
        if not ok:
            raise _bad(path, "epsilon_", "not a list of finite radii >= 0, one per feature")
    elif eps is not None and not (_finite_real(eps) and eps >= 0):
        raise _bad(path, "epsilon_", f"{eps!r} is not a finite number >= 0")
    names = fitted.get("feature_names_in_")
    if names is not None and not (isinstance(names, list) and len(names) == shape[0]
                                  and all(isinstance(c, str) for c in names)):
        raise _bad(path, "feature_names_in_", "not a list of one column name per feature")
    classes = fitted.get("classes_")
    if classes is not None:
        if not isinstance(classes, list) or not classes or len(set(map(repr, classes))) != len(classes):
            raise _bad(path, "classes_", "not a non-empty list of distinct labels")
        if n_logits is not None and spec["kind"] == "builtin" and len(classes) != n_logits:
            raise _bad(path, "classes_", f"{len(classes)} classes for {n_logits} logits")
    hist = fitted.get("history_", [])
    if not isinstance(hist, list) or not all(isinstance(r, dict) for r in hist):
        raise _bad(path, "history_", "not a list of per-epoch records")
    for k, t in state.items():
        if not isinstance(t, torch.Tensor):
            raise _bad(path, f"state_dict.{k}", f"{type(t).__name__} is not a tensor")
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise _bad(path, f"state_dict.{k}", "non-finite weights (NaN or inf)")
    v = validation_scores
    if v.dim() != 1 or not v.is_floating_point() or not bool(torch.isfinite(v).all()):
        raise _bad(path, "validation_scores", "not a 1-D array of finite scores")
    if "offset_" in fitted and len(v) == 0:
        raise _bad(path, "validation_scores", "empty, but the detector has a threshold")


def load(path, module=None, device="auto", *, cls=None, _checkpoint=False):
    """Load a detector written by :func:`save`; never executes code from the file.

    Parameters
    ----------
    path : str or os.PathLike
    module : torch.nn.Module, optional
        Required if the detector was fitted on a user module or factory: an instance of
        the same architecture (deep-copied; its weights are replaced).
    device : str, default="auto"
        Where to put the module (a CUDA-fitted detector loads on a CPU-only machine).
    cls : type, optional
        The estimator class to build (``AOEDetector.load`` passes its own class). ``None``:
        :class:`~aoe_detect.AOEDetector` (:data:`_ESTIMATOR_CLASS`).

    Returns
    -------
    AOEDetector
        Fitted, ready to score. Parameters that are not JSON-serialisable (arrays, module
        and source objects) come back at their defaults and are listed in a warning.

    Raises
    ------
    ValueError
        Truncated, corrupted or foreign files, or a ``module`` that does not match.
    """
    estimator_cls = _ESTIMATOR_CLASS if cls is None else cls
    if module is not None and not isinstance(module, torch.nn.Module):
        raise TypeError(f"`module` must be None or a torch.nn.Module instance of the architecture "
                        f"the detector was fitted on, got {type(module).__name__} {module!r}. "
                        "Built-in backbones (e.g. 'mlp') are rebuilt from the file: omit `module`.")
    dev = resolve_device(device)  # before reading: a bad `device` is the caller's error
    try:
        path = os.fspath(path)
    except TypeError:
        raise TypeError(f"`path` must be a str or os.PathLike file path, got "
                        f"{type(path).__name__}.") from None
    if not os.path.isfile(path):
        raise FileNotFoundError(f"No saved detector at {path!r}.")
    payload = _read_payload(path)
    params, skipped, fitted, spec, state = _parse_payload(payload, path)
    if fitted.get("partial") and not _checkpoint:
        raise ValueError(f"{path!r} is a training checkpoint written during fit (the weights of "
                         "its last completed epoch, no fitted score or threshold), not a "
                         "detector: resume it with AOEDetector(warm_start=True, checkpoint_dir="
                         "...).fit(...), or load a file written by save().")
    det = _build_loaded(estimator_cls, params, path)
    _check_loaded_params(det, path)
    _check_loaded_fitted(fitted, spec, state, payload["validation_scores"], path)
    if skipped:
        warnings.warn(f"Parameters {skipped} were not serialisable and are at their defaults; "
                      "set them again before refitting.", UserWarning)
    net = _rebuild_module(spec, tuple(fitted["input_shape_"]), module, state, path)
    det.module_ = net.to(dev).eval()
    det.device_ = dev
    _restore_fitted(det, fitted, payload, dev, path)
    if hasattr(det, "offset_") and hasattr(det, "_set_score_base"):
        det._set_score_base()  # the saved parameters are those the saved statistics belong to
    return det


def _build_loaded(estimator_cls, params, path):
    """The estimator of the saved parameters: component objects rebuilt, the flat names of
    0.2 put on their components (silently), names this version does not know ignored with a
    warning."""
    known = estimator_cls().get_params(deep=False)
    unknown = sorted(set(params) - set(known) - set(_params.DEPRECATED))
    if unknown:
        warnings.warn(f"{path!r} has parameters this aoe-detect version does not know ({unknown}); "
                      "they are ignored.", UserWarning)
    try:
        own = {k: _from_json(v) for k, v in params.items() if k in known}
        det = estimator_cls(**own)
        _params.apply_saved(det, {k: v for k, v in params.items() if k in _params.DEPRECATED})
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{path!r} is corrupted: its parameters cannot be rebuilt "
                         f"({type(exc).__name__}: {exc}).") from None
    return det


def _read_payload(path):
    """``torch.load(weights_only=True)`` of a file that must be an aoe-detect file with a
    matching checksum (a version mismatch is a warning)."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle.UnpicklingError, RuntimeError, EOFError, zip errors
        if "Weights only load failed" in str(exc):
            # keep torch's diagnosis ("unsupported GLOBAL ...") but not its advice to retry
            # with weights_only=False
            detail = " ".join(ln for ln in str(exc).splitlines() if "GLOBAL" in ln
                              or "Unsupported" in ln)
            if "GLOBAL" in detail:
                raise ValueError(f"{path!r} holds objects other than tensors and plain data, so it "
                                 "was not written by AOEDetector.save and may be malicious; it was "
                                 f"refused without running any of its code. {detail}") from None
            raise ValueError(f"{path!r} is not a readable aoe-detect file (truncated, corrupted, or "
                             "not written by AOEDetector.save); none of its code was run. "
                             f"{detail}") from None
        raise ValueError(f"{path!r} is not a readable aoe-detect file (truncated, corrupted, or "
                         f"not written by AOEDetector.save): {type(exc).__name__}: {exc}") from None
    _check_format_version(payload, path)
    if "sha256" not in payload:  # mandatory: without it any edit would load silently
        raise ValueError(f"{path!r} has no checksum (`sha256` field missing): it was edited or not "
                         "written by AOEDetector.save, so it is refused. Save the detector again.")
    try:
        ok = payload["sha256"] == _digest(payload)
    except Exception:  # e.g. a field of an unexpected type
        ok = False
    if not ok:
        raise ValueError(f"{path!r} is corrupted: its checksum does not match its contents.")
    if payload.get("version") != _version.__version__:
        warnings.warn(f"{path!r} was written by aoe-detect {payload.get('version')}; you are "
                      f"running {_version.__version__}.", UserWarning)
    return payload


def _format_version(payload):
    """``(major, minor)`` of a payload, or None when it is not an aoe-detect payload."""
    fmt = payload.get("format") if isinstance(payload, dict) else None
    if not isinstance(fmt, str) or not fmt.startswith("aoe-detect/"):
        return None
    version = payload.get("format_version", f"{fmt.split('/', 1)[1]}.0")
    try:
        major, minor = (int(p) for p in str(version).split("."))
    except ValueError:
        return None
    return (major, minor) if fmt == f"aoe-detect/{major}" else None


def _check_format_version(payload, path):
    """Refuse foreign files and files of a newer MAJOR format; warn on a newer MINOR."""
    found = _format_version(payload)
    if found is None:
        raise ValueError(f"{path!r} is not an aoe-detect file (format {FORMAT!r} with a "
                         "MAJOR.MINOR `format_version` expected).")
    ours = tuple(int(p) for p in FORMAT_VERSION.split("."))
    written = f"{found[0]}.{found[1]}"
    if found[0] != ours[0]:
        newer = found[0] > ours[0]
        raise ValueError(
            f"{path!r} has save format {written}, written by aoe-detect "
            f"{payload.get('version')}; this aoe-detect {_version.__version__} reads format {FORMAT_VERSION} "
            + ("and older: upgrade aoe-detect to load it." if newer else
               "and has no conversion from it."))
    if found[1] > ours[1]:
        warnings.warn(f"{path!r} has save format {written}, newer than the format "
                      f"{FORMAT_VERSION} of this aoe-detect {_version.__version__} (written by aoe-detect "
                      f"{payload.get('version')}); fields added since are ignored.", UserWarning)


def _parse_payload(payload, path):
    """``(params, params not saved, fitted, backbone spec, state dict)`` of a payload."""
    try:
        params = json.loads(payload["params"])
        skipped = json.loads(payload["params_not_saved"])
        fitted = json.loads(payload["fitted"])
        spec = json.loads(payload["backbone"])
        state = payload["state_dict"]
        tuple(fitted["input_shape_"])
        if not isinstance(state, dict) or not isinstance(payload["validation_scores"], torch.Tensor):
            raise TypeError("unexpected field types")
    except (KeyError, json.JSONDecodeError, TypeError) as exc:
        raise ValueError(f"{path!r} is corrupted: {type(exc).__name__}: {exc}") from None
    if not isinstance(params, dict) or not isinstance(fitted, dict) or not isinstance(spec, dict):
        raise ValueError(f"{path!r} is corrupted: `params`, `fitted` and `backbone` must be JSON "
                         "objects.")
    return params, skipped, fitted, spec, state


def _rebuild_module(spec, shape, module, state, path):
    """The backbone with the saved weights: a built-in rebuilt from its spec, or a copy of
    the user's ``module``."""
    if spec["kind"] == "builtin":
        if module is not None:
            net = copy.deepcopy(module)
        else:
            # built-in backbones always carry a Standardize layer (per feature / per channel);
            # its buffers are overwritten by the state dict below
            c = shape[0]
            net = build_backbone(spec["name"], spec["n_logits"], shape, mean=torch.zeros(c),
                                 std=torch.ones(c))
    else:
        if module is None:
            raise ValueError("This detector was fitted on a user module: pass `module=` an instance "
                             "of the same architecture to load its weights into.")
        net = copy.deepcopy(module)
    try:
        net.load_state_dict(state)
    except RuntimeError as exc:
        raise ValueError(f"The weights in {path!r} do not fit the backbone: {exc}") from None
    return net


def _restore_fitted(det, fitted, payload, dev, path):
    """The fitted attributes of a loaded detector (besides ``module_`` and ``device_``)."""
    for k in _FITTED:
        if k in fitted:
            v = fitted[k]
            setattr(det, k, tuple(v) if k in ("input_range_", "input_shape_") and v is not None else v)
    eps = fitted.get("epsilon_")
    det.epsilon_ = np.asarray(eps, dtype=np.float32) if isinstance(eps, list) else eps
    if "classes_" in fitted:
        det.classes_ = np.asarray(fitted["classes_"])
    if "feature_names_in_" in fitted:
        det.feature_names_in_ = np.asarray(fitted["feature_names_in_"], dtype=object)
    det.history_ = fitted.get("history_", [])
    det.validation_scores_ = payload["validation_scores"].numpy()
    if "scorer_" in fitted:
        det.scorer_ = _load_scorer(fitted["scorer_"], payload.get("scorer_state", {}), path,
                                   det._score_name).to(dev)
        _check_loaded_scorer(det, fitted["scorer_"], path)
    elif "offset_" in fitted:  # (a checkpoint has neither)
        raise ValueError(f"{path!r} is corrupted: `ood_score`={det._score_name!r} but the file holds "
                         "no fitted score statistics (`scorer_`) for its threshold `offset_`.")
    if "offset_" in fitted:
        _check_loaded_offset(det, path, payload.get("version"))


def _check_loaded_scorer(det, spec, path):
    """The score statistics checked as ``fit`` would have made them: the parameters they
    were fitted with are the saved ones, the feature width is the module's, the precision
    is symmetric positive-definite, the k-NN bank rows have unit norm."""
    scorer = det.scorer_
    for m in scorer.modules():
        if isinstance(m, EnergyScore) and float(m.temperature) != float(det.temperature):
            raise _bad(path, "scorer_.temperature", f"{m.temperature!r} differs from the saved "
                       f"parameter temperature={det.temperature!r}")
        if isinstance(m, KNNScore):
            k = m.k
            if not (k == "auto" or (isinstance(k, int) and not isinstance(k, bool) and k >= 1)):
                raise _bad(path, "scorer_.knn_k", f"{k!r} is not 'auto' or an integer >= 1")
            if k != det._score.k:
                raise _bad(path, "scorer_.knn_k", f"{k!r} differs from the saved parameter "
                           f"ood_score__k={det._score.k!r}")
            if m.max_samples != det._score.max_samples:
                raise _bad(path, "scorer_.knn_max_samples", f"{m.max_samples!r} differs from the "
                           f"saved parameter ood_score__max_samples={det._score.max_samples!r}")
            norms = m.bank.double().norm(dim=1)
            if len(m.bank) < 1 or not bool(((norms - 1).abs() < 1e-3).all()):
                raise _bad(path, "scorer_state.bank", "the k-NN bank rows are not L2-normalised "
                           "ID features")
        if isinstance(m, MahalanobisScore):
            P = m.precision.double()
            if not bool(torch.allclose(P, P.T, rtol=1e-4, atol=1e-6 * float(P.abs().max()))):
                raise _bad(path, "scorer_state.precision", "not a symmetric matrix")
            try:
                torch.linalg.cholesky(P)
            except RuntimeError:
                raise _bad(path, "scorer_state.precision", "not positive-definite") from None
            n_cls = len(getattr(det, "classes_", [])) or 1
            if m.means.shape[0] not in (1, n_cls):
                raise _bad(path, "scorer_state.means", f"{m.means.shape[0]} class means for "
                           f"{n_cls} classes")
        if isinstance(m, SumScore) and len(m.mean) != len(m.parts):
            raise _bad(path, "scorer_state.mean", "not one mean per part of the sum")
    if getattr(scorer, "needs_features", False):
        width = None
        for key, v in scorer.state_dict().items():
            if key.endswith(("means", "bank")):
                width = int(v.shape[1])
        try:
            head = LogitsAndFeatures(det.module_, det._score.feature_layer)
            probe = torch.zeros((1, *det.input_shape_), device=det.device_)
            with torch.inference_mode():
                n_out = int(head(probe).shape[1])
                n_logits = int(det.module_(probe).shape[1])
        except Exception as exc:  # noqa: BLE001 - any failure of the module is the finding
            raise _bad(path, "feature_layer", f"the features cannot be taken ({type(exc).__name__}: "
                       f"{exc})") from None
        if width is not None and width != n_out - n_logits:
            raise _bad(path, "scorer_state", f"statistics of {width}-wide features, but the "
                       f"module's features are {n_out - n_logits} wide")


def _check_loaded_offset(det, path, version):
    """``offset_`` is the ``contamination`` quantile of the saved ``validation_scores_``,
    as ``fit`` and ``recalibrate`` compute it. (Before 0.3, ``recalibrate(X)`` did not
    keep the scores of ``X``: a file of another version only warns.)"""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # too few scores: warned about at fit already
        expected = conformal_offset(det.validation_scores_, det.contamination)
    if float(det.offset_) != expected:
        if version != _version.__version__:
            warnings.warn(f"{path!r}: `offset_` {det.offset_!r} is not the contamination="
                          f"{det.contamination} quantile of the saved validation scores (a file "
                          "of an older version, recalibrated on other data?); it is kept. Call "
                          "recalibrate(X) with ID data to rebuild it.", UserWarning)
            return
        raise _bad(path, "offset_", f"{det.offset_!r} is not the contamination={det.contamination} "
                   f"quantile {expected!r} of the saved validation scores")


def load_checkpoint(checkpoint_dir, backbone, labels, sample_shape, device):
    """The detector in ``checkpoint_dir/checkpoint.aoe`` (what a warm start on an unfitted
    detector continues), or None when there is none. A user module or factory ``backbone``
    provides the architecture (a factory is called with the number of classes in
    ``labels``); the checkpoint must have been fitted on samples of ``sample_shape``."""
    path = None if checkpoint_dir is None else os.path.join(checkpoint_dir, "checkpoint.aoe")
    if path is None or not os.path.isfile(path):
        return None
    if isinstance(backbone, torch.nn.Module):
        module = backbone
    elif callable(backbone) and not isinstance(backbone, str):
        module = backbone(1 if labels is None else len(np.unique(labels)), tuple(sample_shape))
    else:
        module = None
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Parameters .* were not serialisable")
        ckpt = load(path, module=module, device=device, _checkpoint=True)
    if tuple(ckpt.input_shape_) != tuple(sample_shape):
        raise ValueError(f"The checkpoint in `checkpoint_dir`={os.fspath(checkpoint_dir)!r} "
                         f"was fitted on samples of shape {tuple(ckpt.input_shape_)}, but X has "
                         f"samples of shape {tuple(sample_shape)}.")
    return ckpt


class PersistenceMixin:
    """Saving, loading, pickling and copying of :class:`~aoe_detect.AOEDetector`
    (:func:`save` / :func:`load` write and read safe ``.aoe`` files; pickles hold a CPU
    copy of the module and no training data)."""

    def save(self, path):
        """Save to ``path`` in a safe format (tensors + JSON config; no pickled code).

        See :func:`aoe_detect.persistence.save`. After a distributed ``fit`` only rank 0
        writes (the other ranks return ``path`` without writing).
        """
        if getattr(self, "distributed_", False) and not _distributed.is_main_process():
            return os.fspath(path)
        return save(self, path)

    @classmethod
    def load(cls, path, module=None, device="auto"):
        """Load a detector written by :meth:`save` (``weights_only=True``; runs no code).

        Parameters
        ----------
        path : str
        module : torch.nn.Module, optional
            Required when the detector was fitted on a user module: an instance of the
            same architecture (its weights are replaced).
        device : str, default="auto"
        """
        return load(path, module=module, device=device)

    def _resume_from_checkpoint(self, data, device):
        """warm_start without ``module_``: adopt ``checkpoint_dir/checkpoint.aoe`` if present
        (weights, ``history_``, ``classes_`` and the margins)."""
        if not self.warm_start or hasattr(self, "module_"):
            return
        ckpt = load_checkpoint(self.checkpoint_dir, self.backbone, data.train_labels,
                                            self.input_shape_, device)
        if ckpt is None:
            return
        self.module_, self.history_ = ckpt.module_, list(ckpt.history_)
        for name in ("classes_", "m_in_", "m_out_"):
            if hasattr(ckpt, name):
                setattr(self, name, getattr(ckpt, name))

    def _checkpoint(self, complete=True):
        """Write ``checkpoint_dir/checkpoint.aoe``: after the threshold the complete
        detector; with ``complete=False`` (after each epoch, :meth:`_epoch_checkpoint`) a
        partial file (weights, ``history_``, margins) that :func:`load` refuses. Nothing
        without ``checkpoint_dir`` or on a rank other than 0."""
        if self.checkpoint_dir is None or not _distributed.is_main_process():
            return
        os.makedirs(self.checkpoint_dir, exist_ok=True)
        was = self.module_.training
        self.module_.eval()
        try:
            save(self, os.path.join(self.checkpoint_dir, "checkpoint.aoe"), _partial=not complete)
        finally:
            self.module_.train(was)

    def _epoch_checkpoint(self):
        self._checkpoint(complete=False)

    def __getstate__(self):
        """Pickle/joblib state: the module as a CPU copy, without training data.

        ``outlier_source_`` is left out: it can hold training data (an outlier array passed
        to ``fit``, rows labelled ``outlier_label``, the ID inputs of ``PermutedID``, a
        Dataset). Scoring, ``predict``, ``recalibrate`` and a warm start do not need it. To
        keep it, pickle it yourself: ``joblib.dump((det, det.outlier_source_), path)``.
        """
        state = self.__dict__.copy()
        state.pop("outlier_source_", None)
        for key in ("_held_out", "_score_base"):  # rebuilt on unpickling
            state.pop(key, None)
        # _score_applied (plain values) stays: the parameters the pickled score belongs to
        if "module_" in state:
            state["module_"] = copy.deepcopy(state["module_"]).to("cpu")
            state["device_"] = str(state["device_"])
        if "scorer_" in state:
            state["scorer_"] = copy.deepcopy(state["scorer_"]).to("cpu")
        state["_aoe_version"] = _version.__version__
        return state

    def __deepcopy__(self, memo):
        """A full in-memory copy, ``outlier_source_`` included (only pickles are lean)."""
        new = type(self).__new__(type(self))
        memo[id(self)] = new
        new.__dict__.update(copy.deepcopy(self.__dict__, memo))
        return new

    def __setstate__(self, state):
        version = state.pop("_aoe_version", None)
        if version is not None and version != _version.__version__:
            warnings.warn(f"This detector was pickled with aoe-detect {version}; you are running "
                          f"{_version.__version__}.", UserWarning)
        defaults = {name: param.default for name, param in
                    inspect.signature(type(self).__init__).parameters.items()
                    if param.default is not param.empty}  # for parameters pickled before they existed
        self.__dict__.update(_params.translate_state(state, defaults))  # (0.2: flat names)
        if "module_" in state:
            dev = torch.device(state["device_"])
            if dev.type == "cuda" and not torch.cuda.is_available():
                dev = torch.device("cpu")
            self.device_ = dev
            self.module_ = self.module_.to(dev).eval()
            if "scorer_" in state:
                self.scorer_ = self.scorer_.to(dev)
        if "offset_" in state and hasattr(self, "_set_score_base"):
            applied = state.get("_score_applied")
            self._set_score_base()  # the pickled score state...
            if applied is not None:  # ...belongs to the parameters it was computed for
                self._score_base["params"] = self._score_applied = dict(applied)
