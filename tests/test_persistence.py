"""Safe persistence (issue 5): save/load is tensors + JSON read with ``weights_only=True``;
crafted, truncated and corrupted files give a clear ValueError without running code; version
mismatches warn; CUDA-fitted detectors load (and unpickle) on a CPU-only machine."""

import copy
import copyreg
import json
import os
import pickle
import re
import warnings

import numpy as np
import pytest
import torch
from sklearn.exceptions import NotFittedError
from torch import nn

import aoe_detect
import aoe_detect.persistence as persistence
from aoe_detect import AOEDetector

TINY = dict(epochs=1, pretrain_epochs=1, batch_size=32, device="cpu", random_state=0,
            outliers="uniform")

rng = np.random.RandomState(0)
X = np.r_[rng.normal(0, 1, (40, 2)) + [3, 0], rng.normal(0, 1, (40, 2)) - [3, 0]]
Y = np.r_[np.zeros(40, int), np.ones(40, int)]
PROBE = np.r_[X[:10], np.random.RandomState(5).uniform(-30, 30, (10, 2))]
XI = np.random.RandomState(1).rand(24, 1, 8, 8)
YI = np.r_[np.zeros(12, int), np.ones(12, int)]


@pytest.fixture(scope="module")
def fitted():
    return AOEDetector(**TINY).fit(X, Y)


@pytest.fixture(scope="module")
def saved(fitted, tmp_path_factory):
    path = tmp_path_factory.mktemp("saved") / "det.aoe"
    fitted.save(path)
    return path


def _same_detector(a, b, probe=PROBE):
    assert a.score_samples(probe).tobytes() == b.score_samples(probe).tobytes()
    assert a.offset_ == b.offset_
    np.testing.assert_array_equal(a.validation_scores_, b.validation_scores_)
    assert repr(a.history_) == repr(b.history_)
    for k in ("m_in_", "m_out_", "lam_", "input_range_", "input_shape_", "n_features_in_"):
        assert getattr(a, k) == getattr(b, k), k
    np.testing.assert_array_equal(a.classes_, b.classes_)
    np.testing.assert_array_equal(a.epsilon_, b.epsilon_)


# ----------------------------------------------------------------------- round trips
def test_round_trip_tabular_is_bitwise(fitted, saved):
    det = AOEDetector.load(saved)
    _same_detector(det, fitted)
    assert det.get_params() == fitted.get_params()
    assert det.device_ == torch.device("cpu") and not det.module_.training


def test_round_trip_images_and_user_module(tmp_path):
    img = AOEDetector(**{**TINY, "batch_size": 16}).fit(XI, YI)
    img.save(tmp_path / "img.aoe")
    _same_detector(AOEDetector.load(tmp_path / "img.aoe"), img, XI[:5])

    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(2, 8), nn.ReLU(), nn.Linear(8, 2))
    user = AOEDetector(**{**TINY, "backbone": net}).fit(X, Y)
    user.save(tmp_path / "user.aoe")
    with pytest.warns(UserWarning, match=r"Parameters \['backbone'\] were not serialisable"):
        with pytest.raises(ValueError, match="fitted on a user module: pass `module=`"):
            AOEDetector.load(tmp_path / "user.aoe")
    with pytest.warns(UserWarning, match="not serialisable"):
        back = AOEDetector.load(tmp_path / "user.aoe", module=net)
    _same_detector(back, user)
    with pytest.warns(UserWarning, match="not serialisable"):
        with pytest.raises(ValueError, match="do not fit the backbone"):
            AOEDetector.load(tmp_path / "user.aoe", module=nn.Linear(2, 3))


def test_a_pickle_from_before_newer_parameters_gets_their_defaults(fitted):
    state = fitted.__getstate__()
    for name in ("runtime", "augment", "weight_decay"):  # added after 0.1
        del state[name]
    old = AOEDetector.__new__(AOEDetector)
    old.__setstate__(state)
    params = old.get_params(deep=False)
    assert (params["runtime"], params["augment"], params["weight_decay"]) == (None, False, 0.0)
    _same_detector(old, fitted)
    assert old.set_params(epochs=1).fit(X, Y).offset_ == fitted.offset_  # refits as before


def test_file_is_plain_tensors_and_json(saved):
    payload = torch.load(saved, map_location="cpu", weights_only=True)
    assert payload["format"] == persistence.FORMAT
    for key in ("params", "params_not_saved", "fitted", "backbone"):
        json.loads(payload[key])
    assert all(isinstance(v, torch.Tensor) for v in payload["state_dict"].values())
    assert isinstance(payload["validation_scores"], torch.Tensor)
    assert all(isinstance(v, torch.Tensor) for v in payload["scorer_state"].values())
    tensors = ("state_dict", "validation_scores", "scorer_state")
    assert {type(v) for k, v in payload.items() if k not in tensors} == {str}


def test_load_uses_weights_only(saved, monkeypatch):
    calls = []
    real = torch.load

    def spy(*args, **kwargs):
        calls.append(kwargs.get("weights_only"))
        return real(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    AOEDetector.load(saved)
    assert calls == [True]


def test_save_unfitted_raises(tmp_path):
    with pytest.raises(NotFittedError):
        AOEDetector().save(tmp_path / "x.aoe")
    assert not os.listdir(tmp_path)


def test_failed_save_keeps_previous_file(fitted, saved, tmp_path, monkeypatch):
    path = tmp_path / "det.aoe"
    path.write_bytes(saved.read_bytes())

    def broken(obj, f, *a, **k):
        with open(f, "wb") as fh:
            fh.write(b"PK\x03\x04partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken)
    with pytest.raises(OSError, match="disk full"):
        fitted.save(path)
    monkeypatch.undo()
    assert path.read_bytes() == saved.read_bytes()
    assert os.listdir(tmp_path) == ["det.aoe"]  # no temp file left behind
    _same_detector(AOEDetector.load(path), fitted)


# ----------------------------------------------------------------- malicious payloads
class _RunsCode:
    """Unpickling this calls ``func(*args)``."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return (self.func, self.args)


def _write_plain_pickle(path, obj, protocol):
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=protocol)


def _write_torch(path, obj, protocol):
    torch.save(obj, path, pickle_protocol=protocol)


def _payloads(marker, saved):
    good = torch.load(saved, map_location="cpu", weights_only=True)
    touch = _RunsCode(os.system, f"touch {marker}")
    write = _RunsCode(exec, f"open({str(marker)!r}, 'w').write('pwned')")
    return {
        "os.system-top-level": {"format": persistence.FORMAT, "x": touch},
        "exec-top-level": write,
        "os.system-inside-state_dict": {**good, "state_dict": {**good["state_dict"], "w": touch}},
        "exec-as-params": {**good, "params": write},
        "eval-in-list": [_RunsCode(eval, f"__import__('os').system('touch {marker}')")],
    }


@pytest.mark.parametrize("writer", [_write_plain_pickle, _write_torch], ids=["pickle", "torch.save"])
@pytest.mark.parametrize("protocol", [2, 4])
@pytest.mark.parametrize("name", ["os.system-top-level", "exec-top-level",
                                  "os.system-inside-state_dict", "exec-as-params", "eval-in-list"])
def test_malicious_file_does_not_run_code(saved, tmp_path, writer, protocol, name):
    marker = tmp_path / "PWNED"
    path = tmp_path / "evil.aoe"
    writer(path, _payloads(marker, saved)[name], protocol)
    assert not marker.exists()  # writing it ran nothing
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch warns about the pickle protocol
        with pytest.raises(ValueError, match=r"may be malicious; it was refused without running "
                                             r"any of its code|not a readable aoe-detect file"):
            AOEDetector.load(path)
    assert not marker.exists(), "loading ran code from the file"


def test_pickle_payload_is_executed_by_pickle_itself(tmp_path):
    # Control for the test above: the same payload DOES run through plain pickle, so the
    # test is meaningful (and documents why pickle/joblib files must be trusted).
    marker = tmp_path / "PWNED"
    pickle.loads(pickle.dumps(_RunsCode(exec, f"open({str(marker)!r}, 'w').write('x')")))
    assert marker.exists()


# -------------------------------------------------------------- truncated / corrupted
@pytest.mark.parametrize("keep", [0.0, 1e-9, 0.001, 0.25, 0.5, 0.9, 0.999])
def test_truncated_file_clear_error(saved, tmp_path, keep):
    raw = saved.read_bytes()
    n = max(int(len(raw) * keep), 1 if keep else 0)
    (tmp_path / "t.aoe").write_bytes(raw[:n] if keep < 0.999 else raw[:-1])
    with pytest.raises(ValueError, match=r"not a readable aoe-detect file \(truncated, corrupted"):
        AOEDetector.load(tmp_path / "t.aoe")


@pytest.mark.parametrize("where", np.linspace(0.01, 0.99, 12).round(3).tolist())
def test_corrupted_byte_clear_error_or_intact(fitted, saved, tmp_path, where):
    raw = bytearray(saved.read_bytes())
    raw[int(len(raw) * where)] ^= 0x5A
    (tmp_path / "c.aoe").write_bytes(bytes(raw))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            back = AOEDetector.load(tmp_path / "c.aoe")
        except ValueError as exc:
            assert re.search(r"corrupted|not a readable aoe-detect file|is not an aoe-detect file",
                             str(exc))
            return
    # a byte of zip metadata that carries no data (e.g. a timestamp): must load unchanged
    _same_detector(back, fitted)
    assert back.get_params() == fitted.get_params()


def test_flipped_weight_is_caught_by_checksum(saved, tmp_path):
    payload = torch.load(saved, map_location="cpu", weights_only=True)
    name = next(iter(payload["state_dict"]))
    payload["state_dict"][name] = payload["state_dict"][name] + 1e-3
    torch.save(payload, tmp_path / "w.aoe")
    with pytest.raises(ValueError, match="checksum does not match"):
        AOEDetector.load(tmp_path / "w.aoe")


@pytest.mark.parametrize("content, match", [
    (b"", "not a readable"),
    (os.urandom(64), "not a readable"),
    (b"\x80\x02}q\x00.", "not a readable"),  # a pickled empty dict, no torch header
], ids=["empty", "random-bytes", "empty-dict"])
def test_foreign_file_clear_error(tmp_path, content, match):
    (tmp_path / "f.aoe").write_bytes(content)
    with pytest.raises(ValueError, match=match):
        AOEDetector.load(tmp_path / "f.aoe")


@pytest.mark.parametrize("obj, match", [
    (torch.zeros(3), "is not an aoe-detect file"),
    ({"format": "other/1"}, "is not an aoe-detect file"),
    ({"format": persistence.FORMAT, "version": aoe_detect.__version__}, r"is corrupted: KeyError"),
    ({"format": persistence.FORMAT, "version": aoe_detect.__version__, "params": "{",
      "params_not_saved": "[]", "fitted": "{}", "backbone": "{}", "state_dict": {}}, r"is corrupted: JSONDecodeError"),
], ids=["tensor", "other-format", "missing-fields", "bad-json"])
def test_wrong_structure_clear_error(tmp_path, obj, match):
    if isinstance(obj, dict) and obj.get("format") == persistence.FORMAT:
        obj = {**obj, "sha256": persistence._digest(obj)}  # the checksum is mandatory
    torch.save(obj, tmp_path / "s.aoe")
    with pytest.raises(ValueError, match=match):
        AOEDetector.load(tmp_path / "s.aoe")


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="No saved detector"):
        AOEDetector.load(tmp_path / "nope.aoe")
    with pytest.raises(FileNotFoundError, match="No saved detector"):
        AOEDetector.load(tmp_path)


# -------------------------------------------------------------------------- versions
def test_version_mismatch_warns_and_loads(fitted, tmp_path, monkeypatch):
    monkeypatch.setattr(aoe_detect._version, "__version__", "0.0.1")
    fitted.save(tmp_path / "old.aoe")
    monkeypatch.undo()
    with pytest.warns(UserWarning, match=r"written by aoe-detect 0\.0\.1; you are running"):
        det = AOEDetector.load(tmp_path / "old.aoe")
    _same_detector(det, fitted)


def test_pickle_version_mismatch_warns(fitted, monkeypatch):
    monkeypatch.setattr(aoe_detect._version, "__version__", "0.0.1")
    blob = pickle.dumps(fitted)
    monkeypatch.undo()
    with pytest.warns(UserWarning, match=r"pickled with aoe-detect 0\.0\.1"):
        det = pickle.loads(blob)
    _same_detector(det, fitted)


# ---------------------------------------------------------------- CUDA-fitted on CPU
def test_cuda_fitted_file_loads_on_cpu(fitted, tmp_path):
    det = copy.deepcopy(fitted)
    det.set_params(device="cuda:0")
    det.device_ = torch.device("cuda:0")  # what a GPU fit records (weights are saved on CPU)
    det.save(tmp_path / "gpu.aoe")
    payload = torch.load(tmp_path / "gpu.aoe", weights_only=True)
    assert json.loads(payload["fitted"])["device_"] == "cuda:0"
    back = AOEDetector.load(tmp_path / "gpu.aoe", device="auto")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert back.device_.type == expected
    assert all(p.device.type == expected for p in back.module_.parameters())
    if expected == "cpu":
        _same_detector(back, fitted)
        with pytest.raises(ValueError, match=r"`device`='cuda' but CUDA is not available"):
            AOEDetector.load(tmp_path / "gpu.aoe", device="cuda")


class _AsPickledOnGPU:
    """Pickles to the bytes a CUDA-fitted detector would produce: a bare ``AOEDetector``
    then ``__setstate__`` with ``device_ == "cuda:0"``."""

    def __init__(self, state):
        self.state = state

    def __reduce__(self):
        return (copyreg._reconstructor, (AOEDetector, object, None), self.state)


def test_cuda_pickled_detector_unpickles_on_cpu(fitted):
    state = fitted.__getstate__()
    assert state["device_"] == "cpu"
    state["device_"] = "cuda:0"
    det = pickle.loads(pickle.dumps(_AsPickledOnGPU(state)))
    assert type(det) is AOEDetector
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert det.device_.type == expected
    assert all(p.device.type == expected for p in det.module_.parameters())
    if expected == "cpu":
        _same_detector(det, fitted)
