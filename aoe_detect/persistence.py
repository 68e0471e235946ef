"""Safe persistence: a single file of tensors plus JSON text, read with ``weights_only=True``.

The file is written with ``torch.save`` but holds only a dict of strings, numbers and
tensors, so ``torch.load(..., weights_only=True)`` reads it without unpickling arbitrary
objects: a crafted file cannot run code on load. The backbone is rebuilt from its registry
name (built-in backbones) or must be supplied as an instance of the same architecture
(user modules and factories).

``pickle``/``joblib`` also work (the estimator moves its module to the CPU when pickled and
back to an available device when unpickled), but unpickling runs code by design: only load
pickles you trust.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings

import numpy as np
import torch

from .scores import build_scorer

__all__ = ["save", "load", "FORMAT"]

FORMAT = "aoe-detect/1"

_FITTED = ("offset_", "m_in_", "m_out_", "lam_", "input_range_", "input_shape_", "n_features_in_")


def _jsonable(v):
    if isinstance(v, (str, bool, int, float)) or v is None:
        return v
    if isinstance(v, (np.integer, np.floating)):
        return v.item()
    if isinstance(v, (list, tuple)):
        out = [_jsonable(x) for x in v]
        return None if any(o is _NOT for o in out) else out
    return _NOT


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
    from sklearn.utils.validation import check_is_fitted

    from . import __version__

    if not _partial:
        check_is_fitted(detector, "offset_")
    params, skipped = {}, []
    for k, v in detector.get_params(deep=False).items():
        j = _jsonable(v)
        if j is _NOT:
            skipped.append(k)
        else:
            params[k] = j
    fitted = {k: _jsonable(getattr(detector, k)) for k in _FITTED if hasattr(detector, k)}
    eps = getattr(detector, "epsilon_", None)
    fitted["epsilon_"] = eps.tolist() if isinstance(eps, np.ndarray) else eps
    fitted["device_"] = str(getattr(detector, "device_", "cpu"))
    if hasattr(detector, "classes_"):
        fitted["classes_"] = np.asarray(detector.classes_).tolist()
    fitted["history_"] = getattr(detector, "history_", [])
    scorer = getattr(detector, "scorer_", None)
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
        "version": __version__,
        "torch_version": str(torch.__version__),
        "params": json.dumps(params),
        "params_not_saved": json.dumps(skipped),
        "fitted": json.dumps(fitted),
        "backbone": json.dumps({**spec, "n_logits": n_logits}),
        "state_dict": state,
        "scorer_state": ({} if scorer is None else
                         {k: v.detach().cpu().clone() for k, v in scorer.state_dict().items()}),
        "validation_scores": torch.as_tensor(
            np.asarray(getattr(detector, "validation_scores_", np.zeros(0)), dtype=np.float64)),
    }
    payload["sha256"] = _digest(payload)
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".aoe-", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
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


def _load_scorer(spec, state, path):
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


def load(path, module=None, device="auto"):
    """Load a detector written by :func:`save`; never executes code from the file.

    Parameters
    ----------
    path : str or os.PathLike
    module : torch.nn.Module, optional
        Required if the detector was fitted on a user module or factory: an instance of
        the same architecture (deep-copied; its weights are replaced).
    device : str, default="auto"
        Where to put the module (a CUDA-fitted detector loads on a CPU-only machine).

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
    import copy

    from . import __version__
    from .backbones import build_backbone
    from .detector import AOEDetector, _resolve_device

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"No saved detector at {path!r}.")
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
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"{path!r} is not an aoe-detect file (format {FORMAT!r} expected).")
    if "sha256" in payload:  # files written before the checksum was added have none
        try:
            ok = payload["sha256"] == _digest(payload)
        except Exception:  # e.g. a field of an unexpected type
            ok = False
        if not ok:
            raise ValueError(f"{path!r} is corrupted: its checksum does not match its contents.")
    if payload.get("version") != __version__:
        warnings.warn(f"{path!r} was written by aoe-detect {payload.get('version')}; you are "
                      f"running {__version__}.", UserWarning)
    try:
        params = json.loads(payload["params"])
        skipped = json.loads(payload["params_not_saved"])
        fitted = json.loads(payload["fitted"])
        spec = json.loads(payload["backbone"])
        state = payload["state_dict"]
        shape = tuple(fitted["input_shape_"])
        if not isinstance(state, dict) or not isinstance(payload["validation_scores"], torch.Tensor):
            raise TypeError("unexpected field types")
    except (KeyError, json.JSONDecodeError, TypeError) as exc:
        raise ValueError(f"{path!r} is corrupted: {type(exc).__name__}: {exc}") from None
    det = AOEDetector(**{k: v for k, v in params.items() if k in AOEDetector().get_params()})
    if skipped:
        warnings.warn(f"Parameters {skipped} were not serialisable and are at their defaults; "
                      "set them again before refitting.", UserWarning)
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
    dev = _resolve_device(device)
    det.module_ = net.to(dev).eval()
    det.device_ = dev
    for k in _FITTED:
        if k in fitted:
            v = fitted[k]
            setattr(det, k, tuple(v) if k in ("input_range_", "input_shape_") and v is not None else v)
    eps = fitted.get("epsilon_")
    det.epsilon_ = np.asarray(eps, dtype=np.float32) if isinstance(eps, list) else eps
    if "classes_" in fitted:
        det.classes_ = np.asarray(fitted["classes_"])
    det.history_ = fitted.get("history_", [])
    det.validation_scores_ = payload["validation_scores"].numpy()
    if "scorer_" in fitted:
        det.scorer_ = _load_scorer(fitted["scorer_"], payload.get("scorer_state", {}), path).to(dev)
    return det
