"""Labels like a scikit-learn classifier, constant-feature scaling, lean pickles, and using
the fine-tuned module in an application (issue 10, items 2-5)."""

import io
import pickle

import joblib
import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import cross_val_score
from sklearn.utils._param_validation import InvalidParameterError

from aoe_detect import AOEDetector
from aoe_detect.backbones import Standardize, safe_scale
from aoe_detect.model_selection import OODStratifiedKFold

FAST = dict(epochs=2, pretrain_epochs=3, batch_size=32, random_state=0, device="cpu")


@pytest.fixture(scope="module")
def three_blobs():
    rng = np.random.RandomState(0)
    centers = np.array([[4, 0], [-4, 0], [0, 4]])
    X = np.concatenate([rng.normal(0, 0.7, (60, 2)) + c for c in centers])
    codes = np.repeat([0, 1, 2], 60)
    ood = rng.uniform(-12, 12, (40, 2))
    return X, codes, ood


@pytest.fixture(scope="module")
def int_fit(three_blobs):
    X, codes, _ = three_blobs
    return AOEDetector(**FAST).fit(X, codes)


def test_sparse_int_labels_map_through_classes(three_blobs, int_fit):
    X, codes, ood = three_blobs
    labels = np.array([3, 7, 100])[codes]
    det = AOEDetector(**FAST).fit(X, labels)
    assert det.classes_.tolist() == [3, 7, 100]
    # a relabelling of the classes changes nothing but the names
    assert np.array_equal(det.score_samples(ood), int_fit.score_samples(ood))
    pred = det.predict_class(X)
    assert set(pred.tolist()) <= {3, 7, 100}
    assert np.array_equal(pred, np.array([3, 7, 100])[int_fit.predict_class(X)])
    assert (pred == labels).mean() > 0.95
    assert det.predict_proba(X).shape == (len(X), 3)


def test_string_labels_and_string_outlier_marker(three_blobs, int_fit):
    X, codes, ood = three_blobs
    names = np.array(["cat", "dog", "emu"])[codes]
    det = AOEDetector(**FAST).fit(X, names)
    assert det.classes_.tolist() == ["cat", "dog", "emu"]
    assert np.array_equal(det.score_samples(ood), int_fit.score_samples(ood))
    assert (det.predict_class(X) == names).mean() > 0.95
    assert det.predict_class(X).dtype.kind == "U"
    # rows marked with the string marker are training outliers, as -1 rows are for ints
    Xo = np.r_[X, ood]
    y_str = np.r_[names, np.full(len(ood), "outlier")]
    y_int = np.r_[codes, -np.ones(len(ood), int)]
    a = AOEDetector(**FAST, outlier_label="outlier").fit(Xo, y_str)
    b = AOEDetector(**FAST).fit(Xo, y_int)
    assert a.classes_.tolist() == ["cat", "dog", "emu"]
    assert type(a.outlier_source_).__name__ == "ArrayOutliers"
    assert len(a.outlier_source_.data_) == len(ood)
    assert np.array_equal(a.score_samples(ood), b.score_samples(ood))
    # score() reads the same marker: AUROC, ID positive
    assert a.score(Xo, y_str) == pytest.approx(b.score(Xo, y_int))
    assert 0.8 < a.score(Xo, y_str) <= 1


def test_string_labels_survive_save_load_and_pickle(three_blobs, tmp_path):
    X, codes, _ = three_blobs
    names = np.array(["cat", "dog", "emu"])[codes]
    det = AOEDetector(**FAST).fit(X, names)
    loaded = AOEDetector.load(det.save(tmp_path / "d.aoe"))
    assert loaded.classes_.tolist() == ["cat", "dog", "emu"]
    assert np.array_equal(loaded.predict_class(X), det.predict_class(X))
    assert pickle.loads(pickle.dumps(det)).predict_class(X[:5]).tolist() == \
        det.predict_class(X[:5]).tolist()


def test_cross_val_with_string_labels(three_blobs):
    X, codes, ood = three_blobs
    y = np.r_[np.array(["cat", "dog", "emu"])[codes], np.full(len(ood), "outlier")]
    det = AOEDetector(**{**FAST, "epochs": 1}, outlier_label="outlier")
    scores = cross_val_score(det, np.r_[X, ood], y,
                             cv=OODStratifiedKFold(2, shuffle=True, random_state=0,
                                                   outlier_label="outlier"))
    assert np.isfinite(scores).all() and (scores > 0.5).all(), scores
    # the same folds with integer labels and the default marker give the same numbers
    y_int = np.r_[codes, -np.ones(len(ood), int)]
    same = cross_val_score(AOEDetector(**{**FAST, "epochs": 1}), np.r_[X, ood], y_int,
                           cv=OODStratifiedKFold(2, shuffle=True, random_state=0))
    assert np.array_equal(scores, same)


@pytest.mark.parametrize("y_fn, needle", [
    (lambda c: np.where(c == 1, -2, c), r"negative labels other than -1 \(\[-2\]\)"),
    (lambda c: np.array([0, "a"] * 90, dtype=object), "one kind"),
])
def test_label_errors(three_blobs, y_fn, needle):
    X, codes, _ = three_blobs
    with pytest.raises(ValueError, match=needle):
        AOEDetector(**FAST).fit(X, y_fn(codes))


def test_outlier_label_parameter_is_validated(three_blobs):
    X, codes, _ = three_blobs
    with pytest.raises(InvalidParameterError, match="outlier_label"):
        AOEDetector(**FAST, outlier_label=1.5).fit(X, codes)
    # an integer marker other than -1 works for integer labels
    y = np.where(codes == 2, 99, codes)
    det = AOEDetector(**FAST, outlier_label=99).fit(X, y)
    assert det.classes_.tolist() == [0, 1]
    with pytest.raises(ValueError, match="`outlier_label`"):
        AOEDetector(**FAST, outlier_label=99).fit(X, np.where(codes == 2, -5, codes))


def test_string_labels_on_pretrained_module_are_refused(three_blobs):
    X, codes, _ = three_blobs
    net = torch.nn.Linear(2, 3)
    with pytest.raises(ValueError, match="class indices"):
        AOEDetector(**{**FAST, "backbone": net}).fit(X, np.array(["a", "b", "c"])[codes])


# ----------------------------------------------------------------- constant features
def test_safe_scale_matches_standard_scaler():
    from sklearn.preprocessing import StandardScaler

    X = np.c_[np.full(10, 16.0), np.arange(10.0), np.zeros(10)].astype(np.float32)
    sc = StandardScaler().fit(X)
    ours = safe_scale(torch.from_numpy(X.mean(0)), torch.from_numpy(X.std(0)))
    assert np.allclose(ours.numpy(), sc.scale_, rtol=1e-6)
    layer = Standardize(torch.from_numpy(X.mean(0)), torch.from_numpy(X.std(0)))
    out = layer(torch.tensor([[0.0, 4.5, 7.0]]))
    assert out.tolist()[0][0] == -16.0 and out.tolist()[0][2] == 7.0  # centred, not divided by 1e-6


def test_readme_digits_scores_stay_bounded():
    """README example: digits has pixels that are constant (0) in training; the floored
    std used to give scores down to -3e5 on OOD digits."""
    X, y = load_digits(return_X_y=True)
    ID, OOD = y < 5, y >= 5
    # the energy score: the one whose scale the old std floor blew up (a Mahalanobis score
    # of far-OOD inputs is legitimately large)
    det = AOEDetector(epochs=3, pretrain_epochs=5, random_state=0,
                      ood_score="energy").fit(X[ID][:600], y[ID][:600])
    const = X[ID][:600].std(0) == 0
    assert const.sum() >= 3  # the premise: several constant training features
    s = np.r_[det.score_samples(X[ID][600:]), det.score_samples(X[OOD])]
    assert np.isfinite(s).all() and s.min() > -100, s.min()
    std = det.module_.norm.std.numpy()
    assert np.all(std[const] == 1.0) and np.all(std[~const] != 1.0)
    from aoe_detect.metrics import ood_report

    assert ood_report(det.score_samples(X[ID][600:]), det.score_samples(X[OOD]))["auroc"] > 0.8


# ----------------------------------------------------------------------- pickles
def test_pickle_does_not_carry_outlier_arrays(three_blobs):
    X, codes, _ = three_blobs
    big = np.random.RandomState(1).uniform(-12, 12, (50_000, 2)).astype(np.float32)  # 400 KB
    det = AOEDetector(**{**FAST, "epochs": 1}).fit(X, codes, X_outliers=big)
    assert hasattr(det, "outlier_source_")
    blob = pickle.dumps(det)
    # what remains: the weights and the score statistics (a 128x128 precision: 64 KB)
    assert len(blob) < 200_000, len(blob)
    back = pickle.loads(blob)
    assert not hasattr(back, "outlier_source_")
    probe = np.random.RandomState(2).normal(0, 5, (100, 2))
    assert np.array_equal(back.score_samples(probe), det.score_samples(probe))
    buf = io.BytesIO()
    joblib.dump(det, buf)
    assert buf.tell() < 200_000
    buf.seek(0)
    assert np.array_equal(joblib.load(buf).score_samples(probe), det.score_samples(probe))
    assert hasattr(det, "outlier_source_")  # pickling does not modify the live detector
    import copy

    twin = copy.deepcopy(det)  # an in-memory copy keeps everything
    assert len(twin.outlier_source_.data_) == 50_000
    assert twin.module_ is not det.module_
    assert np.array_equal(twin.score_samples(probe), det.score_samples(probe))
    # the documented way to keep it
    kept_det, kept_src = pickle.loads(pickle.dumps((det, det.outlier_source_)))
    assert len(kept_src.data_) == 50_000
    # recalibrate and warm start work on the unpickled detector
    back.recalibrate(contamination=0.1)
    back.set_params(warm_start=True, epochs=2).fit(X, codes)
    assert len(back.history_) == len(det.history_) + 1


# ---------------------------------------------- the fine-tuned classifier in an app
def test_module_state_dict_export_and_reuse(int_fit, three_blobs, tmp_path):
    X, _, _ = three_blobs
    det = int_fit
    logits = det.module_(torch.as_tensor(X, dtype=torch.float32)).detach()
    assert np.array_equal(det.classes_[logits.argmax(1).numpy()], det.predict_class(X))
    # state_dict into a freshly built backbone of the same architecture
    torch.save(det.module_.state_dict(), tmp_path / "w.pt")
    from aoe_detect.backbones import build_backbone

    net = build_backbone("mlp", len(det.classes_), det.input_shape_,
                         mean=torch.zeros(2), std=torch.ones(2))
    net.load_state_dict(torch.load(tmp_path / "w.pt", weights_only=True))
    net.eval()
    assert torch.equal(net(torch.as_tensor(X, dtype=torch.float32)), logits)
    # torch.export: a self-contained program, loaded without aoe-detect's classes
    ep = torch.export.export(det.module_, (torch.as_tensor(X[:2], dtype=torch.float32),),
                             dynamic_shapes=({0: torch.export.Dim("batch")},))
    torch.export.save(ep, tmp_path / "det.pt2")
    prog = torch.export.load(tmp_path / "det.pt2").module()
    out = prog(torch.as_tensor(X, dtype=torch.float32)).detach()
    assert torch.allclose(out, logits, atol=1e-5)
    # the energy part of the detector's score is -energy = logsumexp of the logits (T = 1)
    energy_part = det.scorer_.parts[0](out, None)
    assert np.allclose(torch.logsumexp(out, 1).numpy(), energy_part.numpy(), atol=1e-5)


def test_verbose_names_the_auto_device(three_blobs, capsys):
    X, codes, _ = three_blobs
    det = AOEDetector(**{**FAST, "device": "auto", "verbose": 1, "epochs": 1,
                         "pretrain_epochs": 1}).fit(X, codes)
    err = capsys.readouterr().err
    assert f"device='auto' resolved to '{det.device_}'" in err
    AOEDetector(**{**FAST, "device": "auto", "epochs": 1, "pretrain_epochs": 1}).fit(X, codes)
    assert "resolved" not in capsys.readouterr().err  # silent without verbose


def test_string_labels_with_a_dataset_match_the_array_fit(three_blobs):
    from torch.utils.data import TensorDataset

    X, codes, _ = three_blobs
    names = np.array(["cat", "dog", "emu"])[codes]
    ds = TensorDataset(torch.as_tensor(X, dtype=torch.float32))
    a = AOEDetector(**FAST).fit(X.astype(np.float32), names)
    d = AOEDetector(**FAST).fit(ds, names)
    assert d.classes_.tolist() == ["cat", "dog", "emu"]
    assert np.array_equal(d.score_samples(X), a.score_samples(X))
    assert np.array_equal(d.predict_class(X), a.predict_class(X))


def test_torchscript_trace_of_module(int_fit, three_blobs, tmp_path):
    """TorchScript still works on the built-in backbones (deprecated in recent torch, so its
    warnings are silenced here); torch.export above is the recommended path."""
    import warnings

    X, _, _ = three_blobs
    x = torch.as_tensor(X, dtype=torch.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(int_fit.module_, x[:2])
        torch.jit.save(traced, str(tmp_path / "det.ts"))
        loaded = torch.jit.load(str(tmp_path / "det.ts"))
    with torch.inference_mode():
        assert torch.allclose(loaded(x), int_fit.module_(x), atol=1e-6)
