"""Export a fitted detector to one ONNX graph: raw inputs in, score and decision out.

The graph holds the whole detector: the backbone (with its input standardisation), the
feature statistics of ``ood_score`` (class means and precision, the k-NN bank, the
standardisation of a sum of scores) and the threshold ``offset_``. It is traced from
:class:`DetectorGraph`, an ``nn.Module`` built from the package's own scoring modules
(:class:`~aoe_detect.scores.ScoreHead` around ``module_`` and ``scorer_``), so the
exported formulas are the ones :meth:`~aoe_detect.AOEDetector.score_samples` runs.

Graph signature (names are module constants):

============  ========  =================  ==================================================
name          dtype     shape              meaning
============  ========  =================  ==================================================
``X``         float32   ``(n, *shape)``    rows in the units ``score_samples`` accepts
              (uint8)                      (``input_dtype="uint8"``: pixel values 0..255,
                                           divided by 255 in the graph)
``score``     float32   ``(n,)``           ``score_samples``: higher = more in-distribution
``predict``   int64     ``(n,)``           ``predict``: +1 in-distribution (``score >=
                                           offset_``), -1 OOD
============  ========  =================  ==================================================

``shape`` is ``input_shape_``: ``(n_features,)`` for tables, ``(c, h, w)`` for images
(channels first; ``(n, h, w)`` arrays need ``x[:, None]``). ``n`` is a dynamic axis.
The graph's metadata (``metadata_props``) records ``offset_``, ``ood_score``,
``input_shape_``, ``input_range_``, ``feature_names_in_`` and the package version, so a
serving stack can re-threshold (``decision = score - offset``) without re-exporting.

What stays outside the graph: input *validation* (shape, finite values, ``input_range_``,
DataFrame column names), the float64 recomputation of rows whose float32 score overflows
(``score_samples`` does it for inputs near 3.4e38), and autocast (``amp``): the graph is
float32, so scores match ``score_samples`` of a detector with ``amp=False`` to float32
rounding.

The TorchScript-based exporter (``torch.onnx.export(..., dynamo=False)``) is used: it
needs only the ``onnx`` package and runs offline, where the ``torch.export``-based one
also needs ``onnxscript``. ``pip install "aoe-detect[onnx]"`` installs ``onnx`` and
``onnxruntime`` (the latter checks every export numerically, and serves the graph).
"""

from __future__ import annotations

import copy
import io
import json
import os
import re
import warnings

import numpy as np
import torch
from sklearn.utils.validation import check_is_fitted
from torch import nn

from . import _version
from ._torch_utils import atomic_write, pixels_to_unit
from .persistence import check_save_path
from .scores import EnergyScore, ScoreHead

__all__ = ["export_onnx", "DetectorGraph", "detector_graph", "ONNXExportError", "INPUT_NAME",
           "OUTPUT_NAMES", "DEFAULT_OPSET"]

#: Name of the graph's input.
INPUT_NAME = "X"
#: Names of the graph's outputs: the score (float32) and the +1/-1 decision (int64).
OUTPUT_NAMES = ("score", "predict")
#: ONNX opset of the exported graph (``Einsum``, used by the Mahalanobis score, needs 12).
DEFAULT_OPSET = 17

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


class ONNXExportError(RuntimeError):
    """The detector's module cannot be written as an ONNX graph (an operator the exporter
    does not support, or Python-side computation that tracing would freeze)."""


class DetectorGraph(nn.Module):
    """A fitted detector as one module: ``x -> (score, predict)``.

    Parameters
    ----------
    module : torch.nn.Module
        The fitted backbone (``module_``), in eval mode.
    scorer : torch.nn.Module
        The fitted score (``scorer_``; an :class:`~aoe_detect.scores.EnergyScore` for
        ``ood_score="energy"``).
    feature_layer : str or None
        The detector's ``feature_layer``.
    offset : float
        The threshold ``offset_``.
    pixels : bool, default=False
        Inputs are uint8 pixel values, divided by 255 first (as ``score_samples`` does).

    Notes
    -----
    ``forward(x)`` returns ``(score, predict)``: ``score`` float32 of shape ``(n,)``,
    higher = more in-distribution; ``predict`` int64 of shape ``(n,)``, +1 where
    ``score >= offset`` (in-distribution), else -1.
    """

    def __init__(self, module, scorer, feature_layer=None, offset=0.0, pixels=False):
        super().__init__()
        self.head = ScoreHead(module, scorer, feature_layer)
        self.pixels = bool(pixels)
        self.register_buffer("offset", torch.tensor(float(offset), dtype=torch.float32))

    def forward(self, x):
        if self.pixels:
            x = pixels_to_unit(x)
        score = self.head(x)[:, 0]
        predict = torch.where(score >= self.offset, 1, -1)
        return score, predict


def detector_graph(detector, pixels=False):
    """:class:`DetectorGraph` of a fitted detector, on CPU copies of ``module_`` and
    ``scorer_`` (the detector itself is not touched). The scorer is the one
    ``score_samples`` uses: ``scorer_``, or the energy at the current ``temperature``."""
    check_is_fitted(detector, "offset_")
    if hasattr(detector, "_sync_score"):  # score parameters set after fit: applied or refused
        detector._sync_score()
    module = copy.deepcopy(detector.module_).to("cpu").float().eval()
    scorer = getattr(detector, "scorer_", None)
    if scorer is None or scorer.name == "energy":
        scorer = EnergyScore(detector.temperature)
    else:
        scorer = copy.deepcopy(scorer).to("cpu").eval()
    graph = DetectorGraph(module, scorer, detector._score.feature_layer, detector.offset_, pixels)
    return graph.eval()


def _example_rows(detector, n, seed, pixels):
    """``n`` random rows of the fitted sample shape, inside ``input_range_`` (uniform) or
    standard normal when the range is unbounded; uint8 pixel values for ``pixels``."""
    g = torch.Generator().manual_seed(seed)
    shape = (n, *detector.input_shape_)
    if pixels:
        return torch.randint(0, 256, shape, generator=g, dtype=torch.uint8)
    rng = getattr(detector, "input_range_", None)
    if rng is None:
        return torch.randn(shape, generator=g)
    lo, hi = float(rng[0]), float(rng[1])
    return lo + (hi - lo) * torch.rand(shape, generator=g)


def _unsupported_where(graph, example, op):
    """``"submodule path (Type) at file:line"`` of the first node running ``op`` in a trace
    of ``graph``, or "" when it cannot be located."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            traced = torch.jit.trace(graph, (example,), check_trace=False)
    except Exception:  # the trace itself fails: the exporter's message has to do
        return ""
    for node in traced.inlined_graph.nodes():
        if node.kind() != op:
            continue
        # scope "head/__module.head.backbone/__module.head.backbone.1": the last part
        path = node.scopeName().split("/")[-1].replace("__module.", "", 1)
        path = re.sub(r"^head\.backbone\.?", "", path)
        try:
            kind = type(graph.head.backbone.get_submodule(path)).__name__
        except AttributeError:
            kind = "?"
        src = node.sourceRange().strip().splitlines()
        where = f" at {src[0]}" if src else ""
        return f"submodule {path or '<root>'!r} ({kind}){where}"
    return ""


def _trace_to_onnx(graph, example, opset_version):
    """ONNX bytes of ``graph`` traced on ``example``; TracerWarnings raised by the trace
    are returned, not shown (the caller decides)."""
    buf = io.BytesIO()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", torch.jit.TracerWarning)
        # the TorchScript exporter announces its own deprecation: not the user's concern
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
        torch.onnx.export(
            graph, (example,), buf, dynamo=False, opset_version=int(opset_version),
            input_names=[INPUT_NAME], output_names=list(OUTPUT_NAMES),
            dynamic_axes={name: {0: "n"} for name in (INPUT_NAME, *OUTPUT_NAMES)},
            do_constant_folding=True)
    tracer = [w for w in caught if issubclass(w.category, torch.jit.TracerWarning)]
    for w in caught:  # anything else goes to the user as it came
        if w not in tracer and not issubclass(w.category, (DeprecationWarning, FutureWarning)):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return buf.getvalue(), tracer


def _export_bytes(graph, example, opset_version, module_name, strict):
    """Export, turning the exporter's failures into :class:`ONNXExportError` naming the
    module, the operator and (when found) the submodule that runs it."""
    try:
        data, tracer = _trace_to_onnx(graph, example, opset_version)
    except Exception as exc:
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        op = re.search(r"operator '([\w:.]+)'", msg)
        where = _unsupported_where(graph, example, op.group(1)) if op else ""
        raise ONNXExportError(
            f"The detector's module ({module_name}) cannot be exported to ONNX (opset "
            f"{opset_version}): {msg}" + (f"; it runs in {where}" if where else "") + ". "
            "Replace that operation by ONNX-exportable ones, or try a higher `opset_version`."
        ) from exc
    # the package's own scoring code is traced as intended: only the user's code is suspect
    ours = [w for w in tracer if not os.path.abspath(str(w.filename)).startswith(_PACKAGE_DIR)]
    if ours and strict:
        first = ours[0]
        raise ONNXExportError(
            f"The detector's module ({module_name}) does Python-side computation on tensor "
            f"values that a traced ONNX graph would freeze into constants, at "
            f"{first.filename}:{first.lineno}: {first.message}. Rewrite it with tensor "
            "operations, or pass strict=False to export anyway (the graph is then checked "
            "numerically with onnxruntime when it is installed).")
    for w in ours:
        warnings.warn(f"ONNX export: {w.message} ({w.filename}:{w.lineno})", UserWarning)
    return data


def _metadata(detector, pixels):
    """``metadata_props`` of the graph: what a serving stack needs to use its outputs."""
    names = getattr(detector, "feature_names_in_", None)
    rng = getattr(detector, "input_range_", None)
    return {
        "aoe_detect.version": _version.__version__,
        "ood_score": detector._score_name,
        "offset": repr(float(detector.offset_)),
        "contamination": repr(float(detector.contamination)),
        "input_shape": json.dumps([int(d) for d in detector.input_shape_]),
        "input_dtype": "uint8" if pixels else "float32",
        "input_range": json.dumps(None if rng is None else [float(v) for v in rng]),
        "feature_names_in": json.dumps(None if names is None else [str(v) for v in names]),
        "score": "higher = more in-distribution; predict = +1 if score >= offset else -1",
    }


def _verify(data, graph, detector, pixels):
    """Run the ONNX graph with onnxruntime (when installed) on rows that played no part in
    the trace and compare with the torch module: catches values frozen by the trace."""
    try:
        import onnxruntime as ort  # optional dependency (the `onnx` extra)
    except ImportError:
        return False
    x = _example_rows(detector, 7, seed=1, pixels=pixels)
    with torch.inference_mode():
        ref_score, ref_pred = (t.numpy() for t in graph(x))
    sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    score, pred = sess.run(list(OUTPUT_NAMES), {INPUT_NAME: x.numpy()})
    scale = max(1.0, float(np.abs(ref_score).max()))
    close = np.abs(score - ref_score) <= 1e-4 * scale
    if not close.all() or not (pred == ref_pred)[close].all():
        raise ONNXExportError(
            "The exported graph does not reproduce the detector on fresh rows (largest score "
            f"difference {float(np.abs(score - ref_score).max()):.3g}): the trace froze a value "
            "that depends on the input. Check the module for Python-side computation on tensors.")
    return True


def _check_arguments(detector, input_dtype, opset_version):
    """Validate the arguments of :func:`export_onnx`; return whether inputs are pixels."""
    check_is_fitted(detector, "offset_")
    if input_dtype not in ("float32", "uint8"):
        raise ValueError(f"`input_dtype` must be 'float32' or 'uint8', got {input_dtype!r}.")
    pixels = input_dtype == "uint8"
    if pixels and len(detector.input_shape_) != 3:
        raise ValueError("`input_dtype`='uint8' is for image detectors (pixel values 0..255); "
                         f"this one was fitted on samples of shape {tuple(detector.input_shape_)}.")
    if isinstance(opset_version, bool) or not isinstance(opset_version, (int, np.integer)) \
            or opset_version < 12:
        raise ValueError(f"`opset_version` must be an int >= 12, got {opset_version!r}.")
    return pixels


def export_onnx(detector, path, *, input_dtype="float32", opset_version=DEFAULT_OPSET,
                strict=True, verify=True):
    """Write a fitted detector as one ONNX graph ``X -> (score, predict)``.

    Parameters
    ----------
    detector : AOEDetector
        Fitted (any ``ood_score``); it is not modified.
    path : str or os.PathLike
        The ``.onnx`` file to write (atomically).
    input_dtype : {"float32", "uint8"}, default="float32"
        ``"uint8"`` (image detectors only): the graph takes pixel values 0..255 and divides
        them by 255, as ``score_samples`` does with uint8 images.
    opset_version : int, default=17
    strict : bool, default=True
        Refuse a module whose trace warns that it converts tensor values to Python values
        (``.item()``, ``.numpy()``, data-dependent ``if``): the graph would hold the values
        of the example rows. ``False``: warn instead.
    verify : bool, default=True
        Run the graph with onnxruntime (when installed) on fresh rows and compare with the
        torch module; a mismatch raises.

    Returns
    -------
    str
        The path written.

    Raises
    ------
    sklearn.exceptions.NotFittedError
        The detector is not fitted.
    ONNXExportError
        The module cannot be exported (the message names the operator and the submodule).
    ImportError
        ``onnx`` is not installed (``pip install "aoe-detect[onnx]"``).

    Notes
    -----
    The graph's input ``X`` is float32 (or uint8) of shape ``(n, *input_shape_)``; outputs
    ``score`` (float32, ``(n,)``, higher = more in-distribution) and ``predict`` (int64,
    ``(n,)``, +1 in-distribution / -1 OOD, ``score >= offset_``). See :mod:`aoe_detect.export`.

    Examples
    --------
    >>> import os, tempfile
    >>> import onnxruntime as ort
    >>> from sklearn.datasets import load_iris
    >>> from aoe_detect import AOEDetector
    >>> X, y = load_iris(return_X_y=True)
    >>> det = AOEDetector(epochs=1, pretrain_epochs=1, random_state=0, device="cpu").fit(X, y)
    >>> path = det.export_onnx(os.path.join(tempfile.mkdtemp(), "det.onnx"))
    >>> session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    >>> score, predict = session.run(["score", "predict"], {"X": X[:4].astype(np.float32)})
    >>> bool(np.allclose(score, det.score_samples(X[:4]), rtol=1e-5, atol=1e-5))
    True
    >>> predict.tolist() == det.predict(X[:4]).tolist()
    True
    """
    pixels = _check_arguments(detector, input_dtype, opset_version)
    path = check_save_path(path)
    try:
        import onnx  # optional dependency (the `onnx` extra)
    except ImportError:
        raise ImportError('ONNX export needs the onnx package: pip install "aoe-detect[onnx]".') \
            from None
    graph = detector_graph(detector, pixels)
    data = _export_bytes(graph, _example_rows(detector, 2, seed=0, pixels=pixels),
                         opset_version, type(detector.module_).__name__, strict)
    model = onnx.load_from_string(data)
    for key, value in _metadata(detector, pixels).items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(model, full_check=True)
    data = model.SerializeToString()
    if verify:
        _verify(data, graph, detector, pixels)
    atomic_write(path, lambda tmp: _write_bytes(tmp, data))
    return path


def _write_bytes(path, data):
    with open(path, "wb") as fh:
        fh.write(data)


class ExportMixin:
    """:meth:`export_onnx` of :class:`~aoe_detect.AOEDetector`."""

    def export_onnx(self, path, **kwargs):
        """Write this fitted detector as one ONNX graph: input ``X`` (float32, shape
        ``(n, *input_shape_)``) to ``score`` (float32 ``(n,)``, higher = more
        in-distribution) and ``predict`` (int64 ``(n,)``, +1 ID / -1 OOD). Keyword arguments
        and details: :func:`aoe_detect.export.export_onnx`; needs ``aoe-detect[onnx]``.

        Returns
        -------
        str
            The path written.
        """
        return export_onnx(self, path, **kwargs)
