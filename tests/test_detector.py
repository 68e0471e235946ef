"""End-to-end behaviour of AOEDetector on small deterministic data."""

import copy
import pickle

import joblib
import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.datasets import load_digits
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from aoe_detect import AOEDetector, energy
from aoe_detect.attacks import FGSM

FAST = dict(epochs=2, pretrain_epochs=3, batch_size=32, random_state=0, device="cpu")


@pytest.fixture(scope="module")
def fitted(blobs):
    X, y = blobs
    return AOEDetector(**FAST).fit(X, y)


def test_fit_returns_self_and_fitted_attributes(blobs):
    X, y = blobs
    det = AOEDetector(**FAST)
    assert det.fit(X, y) is det
    for attr in ("module_", "classes_", "offset_", "history_", "device_", "n_features_in_",
                 "m_in_", "m_out_", "epsilon_", "lam_", "validation_scores_"):
        assert hasattr(det, attr), attr
    assert det.n_features_in_ == 2 and det.classes_.tolist() == [0, 1]
    assert det.m_out_ == pytest.approx(det.m_in_ + 2.0)
    assert det.lam_ == 0.1
    assert [r["stage"] for r in det.history_] == ["pretrain"] * 3 + ["finetune"] * 2
    for key in ("loss", "ce", "energy_in", "energy_out", "mean_energy_id",
                "mean_energy_outlier", "seconds"):
        assert np.isfinite(det.history_[-1][key]), key


def test_score_samples_is_negative_energy(fitted, blobs):
    X, y = blobs
    energy_det = AOEDetector(**FAST, ood_score="energy").fit(X, y)
    s = energy_det.score_samples(X)
    assert s.dtype == np.float64 and s.shape == (len(X),)
    with torch.no_grad():
        expected = -energy(energy_det.module_(torch.as_tensor(X, dtype=torch.float32)))
    np.testing.assert_allclose(s, expected.numpy(), rtol=1e-5, atol=1e-5)


def test_decision_function_predict_and_offset(fitted, blobs):
    X, _ = blobs
    np.testing.assert_allclose(fitted.decision_function(X), fitted.score_samples(X) - fitted.offset_)
    # split-conformal threshold: the floor((n + 1) * contamination)-th smallest held-out score
    v = np.sort(fitted.validation_scores_)
    assert fitted.offset_ == v[int(np.floor((len(v) + 1) * 0.05)) - 1]
    pred = fitted.predict(X)
    assert set(np.unique(pred)) <= {-1, 1} and pred.dtype.kind == "i"
    far = np.array([[0.0, 60.0], [80.0, -80.0]])
    assert fitted.predict(far).tolist() == [-1, -1]
    assert fitted.score_samples(far).max() < fitted.score_samples(X).min()


def test_predict_proba_and_classes(fitted, blobs):
    X, y = blobs
    p = fitted.predict_proba(X)
    assert p.shape == (len(X), 2) and p.dtype == np.float64
    np.testing.assert_allclose(p.sum(1), 1.0, atol=1e-6)
    assert (fitted.predict_class(X) == y).mean() > 0.97


def test_non_contiguous_labels_map_back(blobs):
    X, y = blobs
    det = AOEDetector(**FAST).fit(X, np.where(y == 0, 3, 7))
    assert det.classes_.tolist() == [3, 7]
    assert set(np.unique(det.predict_class(X))) <= {3, 7}
    assert (det.predict_class(X) == np.where(y == 0, 3, 7)).mean() > 0.97


def test_score_is_auroc_with_negative_labels_as_ood(fitted, blobs):
    X, _ = blobs
    ood = np.random.RandomState(1).uniform(-40, 40, (50, 2))
    Xall = np.r_[X, ood]
    yall = np.r_[np.zeros(len(X)), -np.ones(len(ood))]
    s = fitted.score_samples(Xall)
    assert fitted.score(Xall, yall) == pytest.approx(roc_auc_score(yall >= 0, s))


def test_all_fit_forms_give_the_same_outliers(blobs):
    X, y = blobs
    out = np.random.RandomState(3).uniform(-10, 10, (40, 2))
    kw = dict(FAST, attack=None)
    a = AOEDetector(**kw).fit(X, y, X_outliers=out)
    b = AOEDetector(**kw).fit(np.r_[X, out], np.r_[y, -np.ones(40, int)])
    # same ID rows, same outliers -> identical model (validation split permutes ID rows only)
    np.testing.assert_array_equal(a.score_samples(X), b.score_samples(X))
    c = AOEDetector(**kw).fit(X, out)  # label-free: second positional = outliers
    assert not hasattr(c, "classes_") and c.module_(torch.zeros(1, 2)).shape == (1, 1)
    with pytest.raises(ValueError, match="Ambiguous"):
        AOEDetector(**kw).fit(X, out, X_outliers=out)


def test_label_free_with_pretrained_module_keeps_classes(fitted, blobs):
    X, y = blobs
    module = copy.deepcopy(fitted.module_)
    before = {k: v.clone() for k, v in module.state_dict().items()}
    det = AOEDetector(backbone=module, epochs=2, batch_size=32, random_state=0, device="cpu").fit(X)
    # the user's module is never trained in place
    assert all(torch.equal(before[k], v) for k, v in module.state_dict().items())
    assert det.classes_.tolist() == [0, 1]
    assert (det.predict_class(X) == y).mean() > 0.95


def test_factory_backbone(blobs):
    X, y = blobs
    calls = []

    def factory(n_classes, input_shape):
        calls.append((n_classes, input_shape))
        return torch.nn.Sequential(torch.nn.Linear(input_shape[0], 16), torch.nn.ReLU(),
                                   torch.nn.Linear(16, n_classes))

    det = AOEDetector(backbone=factory, **{**FAST, "pretrain_epochs": 10}).fit(X, y)
    assert calls == [(2, (2,))] and (det.predict_class(X) == y).mean() > 0.9


@pytest.mark.parametrize("variant", [
    dict(outliers=None), dict(attack=None), dict(attack="gaussian"), dict(attack="fgsm"),
    dict(attack="pgd"), dict(loss="softmax"), dict(attack=FGSM(fraction=0.5)),
], ids=["no-oe", "oe", "oe-gauss", "aoe-fgsm", "aoe-pgd", "softmax-oe", "half-attacked"])
def test_variants_separate_outliers(blobs, variant):
    X, y = blobs
    det = AOEDetector(**{**FAST, "epochs": 3, **variant}).fit(X, y)
    last = det.history_[-1]
    first = [r for r in det.history_ if r["stage"] == "finetune"][0]
    if variant.get("outliers", "default") is None:
        assert np.isnan(last["mean_energy_outlier"]) and last["energy_out"] == 0
    elif variant.get("loss") == "softmax":
        # cross-entropy of the outliers' softmax to uniform: >= log 2, and it goes down
        assert np.log(2) - 1e-6 <= last["energy_out"] <= first["energy_out"]
    else:
        assert last["mean_energy_outlier"] > last["mean_energy_id"]
    assert (det.predict_class(X) == y).mean() > 0.95
    if variant.get("loss") == "softmax":
        assert det.lam_ == 0.5


def test_attack_fraction_zero_equals_vanilla_oe(blobs):
    X, y = blobs
    a = AOEDetector(**FAST, attack=FGSM(fraction=0.0)).fit(X, y)
    b = AOEDetector(**FAST, attack=None).fit(X, y)
    np.testing.assert_array_equal(a.score_samples(X), b.score_samples(X))


def test_same_seed_identical_different_seed_differs(blobs):
    X, y = blobs
    a = AOEDetector(**FAST).fit(X, y).score_samples(X)
    b = AOEDetector(**FAST).fit(X, y).score_samples(X)
    c = AOEDetector(**{**FAST, "random_state": 1}).fit(X, y).score_samples(X)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_recalibrate(fitted, blobs):
    X, _ = blobs
    det = copy.deepcopy(fitted)
    det.recalibrate(contamination=0.2)
    assert det.contamination == 0.2
    v = np.sort(det.validation_scores_)
    assert det.offset_ == v[int(np.floor((len(v) + 1) * 0.2)) - 1]
    det.recalibrate(X)
    assert (det.predict(X) == -1).mean() == pytest.approx(0.2, abs=0.01)
    with pytest.raises(ValueError, match="contamination"):
        det.recalibrate(contamination=0.7)


def test_sklearn_tools(blobs):
    X, y = blobs
    ood = np.random.RandomState(2).uniform(-30, 30, (60, 2))
    Xall, yall = np.r_[X, ood], np.r_[y, -np.ones(60, int)]
    pipe = make_pipeline(StandardScaler(), AOEDetector(**FAST))
    pipe.fit(X, y)
    assert pipe.predict(ood).mean() < 0  # mostly flagged OOD
    # GridSearchCV through the attack object's parameter; score = AUROC with y < 0 as OOD
    rng = np.random.RandomState(0)
    order = rng.permutation(len(Xall))
    gs = GridSearchCV(AOEDetector(**{**FAST, "attack": FGSM()}),
                      {"attack__eps": [0.05, 0.3]}, cv=2)
    # fit only on ID rows: the detector's own y=-1 rows would be training outliers
    gs.fit(Xall[order], np.where(yall[order] < 0, -1, yall[order]))
    assert set(gs.cv_results_["param_attack__eps"]) == {0.05, 0.3}
    assert 0.5 < gs.best_score_ <= 1.0
    scores = cross_val_score(AOEDetector(**{**FAST, "epochs": 5}), Xall[order], yall[order], cv=2)
    assert scores.shape == (2,) and np.all(scores > 0.8), scores
    params = AOEDetector(**FAST).get_params()
    assert clone(AOEDetector(**FAST)).get_params() == params


def test_pickle_and_joblib_round_trip(fitted, blobs, tmp_path):
    X, _ = blobs
    joblib.dump(fitted, tmp_path / "det.joblib")
    det2 = joblib.load(tmp_path / "det.joblib")
    np.testing.assert_array_equal(det2.score_samples(X), fitted.score_samples(X))
    det3 = pickle.loads(pickle.dumps(fitted))
    np.testing.assert_array_equal(det3.predict(X), fitted.predict(X))
    assert det3.device_ == torch.device("cpu")


def test_save_load_round_trip(fitted, blobs, tmp_path):
    X, _ = blobs
    path = fitted.save(tmp_path / "det.aoe")
    det = AOEDetector.load(path)
    np.testing.assert_array_equal(det.score_samples(X), fitted.score_samples(X))
    np.testing.assert_array_equal(det.predict(X), fitted.predict(X))
    assert det.classes_.tolist() == [0, 1] and det.offset_ == fitted.offset_


def test_torch_tensor_inputs(fitted, blobs):
    X, _ = blobs
    np.testing.assert_array_equal(fitted.score_samples(torch.as_tensor(X)), fitted.score_samples(X))


def test_verbose_uses_tqdm_not_stdout(blobs, capsys):
    X, y = blobs
    AOEDetector(**{**FAST, "verbose": 1}).fit(X, y)
    out, err = capsys.readouterr()
    assert out == ""
    assert "finetune" in err
    AOEDetector(**FAST).fit(X, y)
    assert capsys.readouterr() == ("", "")


# ------------------------------------------------------------------ images
@pytest.fixture(scope="module")
def tiny_images():
    rng = np.random.RandomState(0)
    X = np.zeros((120, 16, 16), np.uint8)
    y = np.r_[np.zeros(60, int), np.ones(60, int)]
    X[:60, 4:12, 6:10] = 200  # vertical bars
    X[60:, 6:10, 4:12] = 200  # horizontal bars
    X = np.clip(X + rng.randint(0, 40, X.shape), 0, 255).astype(np.uint8)
    return X, y


def test_uint8_images_scaled_and_range_checked(tiny_images):
    X, y = tiny_images
    det = AOEDetector(epochs=1, pretrain_epochs=2, batch_size=32, random_state=0,
                      device="cpu").fit(X, y)
    assert det.input_shape_ == (1, 16, 16) and det.input_range_ == (0.0, 1.0)
    assert det.epsilon_ == pytest.approx(8 / 255)
    np.testing.assert_allclose(det.score_samples(X), det.score_samples(X.astype(np.float32) / 255),
                               rtol=1e-6)
    with pytest.raises(ValueError, match="input range"):
        det.score_samples(X.astype(np.float32))  # 0..255 floats are outside [0, 1]
    adv = det.perturb(X[:10], attack="pgd", epsilon=0.05, random_state=0)
    assert adv.shape == (10, 1, 16, 16)
    assert np.abs(adv - X[:10, None] / 255.0).max() <= 0.05 + 1e-6
    assert det.score_samples(adv).mean() > det.score_samples(X[:10]).mean()
    assert (det.predict_class(X) == y).mean() > 0.9


def test_digits_aoe_beats_no_outlier_exposure():
    """AOE vs plain CE fine-tuning on held-out OOD data (digits 0-4 are ID), on the
    paper's energy score (the feature scores are compared in tests/test_scores.py).

    The OOD sets are not among the training outlier families: unseen digit classes 5-9 and
    intensity-inverted ID digits. Same pretraining length, seeds and fine-tuning epochs.
    """
    X, y = load_digits(return_X_y=True)
    rng = np.random.RandomState(0)
    idm = y < 5
    Xid, yid = X[idm], y[idm]
    p = rng.permutation(len(Xid))
    tr, te = p[:600], p[600:]
    ood = {"digits5-9": X[~idm][:300], "inverted": 16 - Xid[te]}
    res = {}
    for name, kw in {"no-oe": dict(outliers=None), "aoe": dict(attack="fgsm")}.items():
        det = AOEDetector(epochs=5, pretrain_epochs=10, batch_size=64, random_state=0,
                          device="cpu", ood_score="energy", **kw).fit(Xid[tr], yid[tr])
        s_in = det.score_samples(Xid[te])
        res[name] = {k: roc_auc_score(np.r_[np.ones(len(s_in)), np.zeros(len(v))],
                                      np.r_[s_in, det.score_samples(v)]) for k, v in ood.items()}
        res[name]["acc"] = (det.predict_class(Xid[te]) == yid[te]).mean()
    mean = {k: np.mean([v["digits5-9"], v["inverted"]]) for k, v in res.items()}
    assert mean["aoe"] > mean["no-oe"] + 0.2, res
    assert res["aoe"]["digits5-9"] > 0.9, res
    assert res["aoe"]["acc"] > res["no-oe"]["acc"] - 0.03, res
