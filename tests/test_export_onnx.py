"""ONNX export (issue 22): one graph ``X -> (score, predict)`` per fitted detector, for every
``ood_score``, on tables and images; parity with ``score_samples`` / ``predict`` through
onnxruntime on CPU; clear errors for modules that cannot be exported and for unfitted
detectors."""

import warnings

import numpy as np
import pytest
import torch
from sklearn.exceptions import NotFittedError
from torch import nn

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from aoe_detect import AOEDetector  # noqa: E402
from aoe_detect.export import INPUT_NAME, OUTPUT_NAMES, ONNXExportError, export_onnx  # noqa: E402
from aoe_detect.scores import SCORES  # noqa: E402

TINY = dict(epochs=1, pretrain_epochs=1, batch_size=32, device="cpu", random_state=0,
            outliers="uniform")
rng = np.random.RandomState(0)
XT = np.r_[rng.normal(0, 1, (60, 4)) + [3, 0, 0, 0], rng.normal(0, 1, (60, 4)) - [3, 0, 0, 0]]
YT = np.r_[np.zeros(60, int), np.ones(60, int)]
# ID rows, near-ID rows and far rows: a spread of scores on both sides of the threshold
PT = np.r_[XT[:20], XT[60:80] * 1.5, rng.uniform(-12, 12, (30, 4))]
XI = rng.rand(60, 1, 8, 8).astype(np.float32) * 0.5
YI = np.r_[np.zeros(30, int), np.ones(30, int)]
PI = np.r_[XI[:20], rng.rand(30, 1, 8, 8).astype(np.float32)]
DATA = {"table": (XT, YT, PT, {}), "image": (XI, YI, PI, {"backbone": "small_cnn"})}


@pytest.fixture(scope="module")
def detectors():
    out = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # few held-out rows: CalibrationWarning
        for kind, (X, y, _, kw) in DATA.items():
            for score in SCORES:
                out[kind, score] = AOEDetector(**TINY, **kw, ood_score=score).fit(X, y)
    return out


def _run(path, X):
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(list(OUTPUT_NAMES), {INPUT_NAME: X})


@pytest.mark.parametrize("score", SCORES)
@pytest.mark.parametrize("kind", list(DATA))
def test_parity_with_score_samples_and_predict(detectors, kind, score, tmp_path):
    det = detectors[kind, score]
    probe = DATA[kind][2]
    path = det.export_onnx(tmp_path / "det.onnx")
    model = onnx.load(path)
    onnx.checker.check_model(model, full_check=True)
    assert [i.name for i in model.graph.input] == [INPUT_NAME]
    assert [o.name for o in model.graph.output] == list(OUTPUT_NAMES)
    meta = {p.key: p.value for p in model.metadata_props}
    assert float(meta["offset"]) == det.offset_ and meta["ood_score"] == score

    ref = det.score_samples(probe)
    scores, pred = _run(path, probe.astype(np.float32))
    assert scores.dtype == np.float32 and scores.shape == (len(probe),)
    assert pred.dtype == np.int64 and set(np.unique(pred)) <= {-1, 1}
    spread = np.ptp(ref)
    assert spread > 0
    err = np.abs(scores.astype(np.float64) - ref)
    # float32 rounding: relative to the scores' magnitude (and far below their spread)
    assert err.max() <= 1e-5 * np.abs(ref).max() + 1e-6, (err.max(), np.abs(ref).max())
    assert err.max() <= 1e-4 * spread
    away = np.abs(ref - det.offset_) > 1e-4 * spread
    assert away.sum() >= len(probe) - 2
    np.testing.assert_array_equal(pred[away], det.predict(probe)[away])
    assert (pred == 1).any() and (pred == -1).any()  # both decisions are exercised
    # dynamic batch axis: one row, and a batch of another size, give the same rows
    one, _ = _run(path, probe[:1].astype(np.float32))
    np.testing.assert_allclose(one, scores[:1], rtol=1e-6, atol=1e-6)


def test_uint8_images_are_scaled_in_the_graph(detectors, tmp_path):
    det = detectors["image", "energy+mahalanobis"]
    pixels = (np.random.RandomState(3).rand(9, 1, 8, 8) * 255).astype(np.uint8)
    path = export_onnx(det, tmp_path / "u8.onnx", input_dtype="uint8")
    scores, pred = _run(path, pixels)
    ref = det.score_samples(pixels)  # score_samples scales uint8 images to [0, 1] itself
    np.testing.assert_allclose(scores, ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())
    with pytest.raises(ValueError, match="`input_dtype`='uint8' is for image detectors"):
        export_onnx(detectors["table", "energy"], tmp_path / "t.onnx", input_dtype="uint8")
    with pytest.raises(ValueError, match="`input_dtype` must be 'float32' or 'uint8'"):
        export_onnx(det, tmp_path / "t.onnx", input_dtype="float64")


def test_export_leaves_the_detector_unchanged(detectors, tmp_path):
    det = detectors["table", "energy+knn"]
    before = det.score_samples(PT).tobytes()
    state = {k: v.clone() for k, v in det.module_.state_dict().items()}
    det.export_onnx(tmp_path / "a.onnx")
    assert det.score_samples(PT).tobytes() == before
    assert not det.module_.training and det.scorer_.parts[1].bank.device.type == "cpu"
    for k, v in det.module_.state_dict().items():
        assert torch.equal(v, state[k]), k


def test_unfitted_detector_is_refused(tmp_path):
    with pytest.raises(NotFittedError):
        AOEDetector().export_onnx(tmp_path / "x.onnx")
    assert not (tmp_path / "x.onnx").exists()


class LogGamma(nn.Module):
    """An operator the ONNX exporter refuses (``aten::lgamma``)."""

    def forward(self, x):
        return torch.lgamma(x.abs() + 1.0)


class PythonSide(nn.Module):
    """Scales each batch by a Python float read from the tensor: a trace freezes it."""

    def forward(self, x):
        scale = float(x.abs().max()) + 1.0
        return x / scale


def _user_detector(block):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 8), block, nn.Linear(8, 2))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return AOEDetector(**TINY, backbone=net, ood_score="energy").fit(XT, YT)


def test_unsupported_operator_is_named(tmp_path):
    det = _user_detector(LogGamma())
    with pytest.raises(ONNXExportError, match=r"\(Sequential\).*'aten::lgamma'.*"
                                              r"submodule '1' \(LogGamma\)"):
        det.export_onnx(tmp_path / "bad.onnx")
    assert not (tmp_path / "bad.onnx").exists()


def test_python_side_computation_is_refused_or_caught(tmp_path):
    det = _user_detector(PythonSide())
    with pytest.raises(ONNXExportError, match=r"Python-side computation.*test_export_onnx.py"):
        det.export_onnx(tmp_path / "py.onnx")
    # strict=False: the trace warning is shown, and onnxruntime on fresh rows finds the
    # frozen constant
    with pytest.warns(UserWarning, match="ONNX export: Converting a tensor"):
        with pytest.raises(ONNXExportError, match="does not reproduce the detector"):
            det.export_onnx(tmp_path / "py.onnx", strict=False)
    assert not (tmp_path / "py.onnx").exists()
