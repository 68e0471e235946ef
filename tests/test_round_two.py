"""Issue 11 ("Reliability, round two"): one test per class of failure, each asserting the
promise of docs/failure_modes.md (a clear ValueError/TypeError naming the problem, a fitted
detector bitwise unchanged, finished work never lost)."""

import copy
import json
import math
import warnings

import numpy as np
import pytest
import torch
from torch import nn

import aoe_detect.persistence as persistence
from aoe_detect import AOEDetector, TrainingInterruptedWarning
from aoe_detect import _fit_inputs
from aoe_detect._state import CalibrationWarning, conformal_offset, keep_classes_in_training
from aoe_detect.attacks import PGD
from aoe_detect.detector import NoClassesError
from aoe_detect.outliers import UniformNoise
from aoe_detect.testing import (TINY, FlatInTrain, NoParams, describe_change, set_json, snapshot,
                                tamper, tiny_blobs)

X, Y, PROBE = tiny_blobs()


def quiet(fn, *a, **k):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*a, **k)


@pytest.fixture(scope="module")
def fitted():
    return quiet(AOEDetector(**TINY).fit, X, Y)


def fails_untouched(det, call, exc, match, probe=PROBE):
    snap = snapshot(det, probe)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(exc, match=match):
            call(det)
    assert describe_change(det, snap, probe) is None


# ------------------------------------------------------- 1. failed calls damage nothing
def test_meta_device_warm_start_refused_and_scoring_unchanged(fitted):
    det = copy.deepcopy(fitted)
    before = det.score_samples(PROBE)
    dev = next(det.module_.parameters()).device
    with pytest.raises(ValueError, match=r"`device` must be .*'meta'"):
        det.set_params(warm_start=True, device="meta").fit(X, Y)
    # no reset of the parameters needed: the fitted detector still scores as before
    assert det.score_samples(PROBE).tobytes() == before.tobytes()
    assert next(det.module_.parameters()).device == dev and not det.module_.training


def test_failed_warm_start_leaves_module_object_weights_and_layout(fitted):
    det = copy.deepcopy(fitted).set_params(warm_start=True, epochs=3)
    module = det.module_
    w = {k: v.clone() for k, v in module.state_dict().items()}

    class Boom:
        def sample(self, n, generator):
            raise RuntimeError("boom")

    det.set_params(outliers=Boom())
    snap = snapshot(det, PROBE)
    with pytest.raises(RuntimeError, match="boom"):
        quiet(det.fit, X, Y)
    assert det.module_ is module and not module.training
    assert all(torch.equal(module.state_dict()[k], w[k]) for k in w)
    assert describe_change(det, snap, PROBE) is None


def test_fit_never_trains_the_users_module_in_place():
    net = nn.Sequential(nn.Linear(2, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 2))
    w = {k: v.clone() for k, v in net.state_dict().items()}
    det = quiet(AOEDetector(**{**TINY, "backbone": net}).fit, X, Y)
    assert det.module_ is not net and net.training
    assert all(torch.equal(net.state_dict()[k], w[k]) for k in w)


def test_recalibrate_with_contamination_changed_by_set_params(fitted):
    det = copy.deepcopy(fitted)
    det.contamination = 0.9  # as set_params would, without validation
    snap_offset = det.offset_
    with pytest.raises(ValueError, match="contamination"):
        det.recalibrate()
    assert det.offset_ == snap_offset
    with pytest.raises(ValueError, match="contamination"):
        det.recalibrate(contamination=0.9)


# ----------------------------------------------------------------- 2. interrupts
class Interrupt(nn.Module):
    """MLP whose forward raises KeyboardInterrupt on the ``at``-th call (train or eval)."""

    def __init__(self, at=None, only_eval=False):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, 2))
        self.at, self.only_eval, self.calls = at, only_eval, 0

    def forward(self, x):
        if not (self.only_eval and self.training):
            self.calls += 1
            if self.at is not None and self.calls == self.at:
                raise KeyboardInterrupt
        return self.net(x)


def _interrupt_fit(tmp_path, monkeypatch, where):
    det = AOEDetector(**{**TINY, "pretrain_epochs": 2, "epochs": 2,
                         "checkpoint_dir": str(tmp_path)})
    if where == "checkpoint":  # Ctrl-C while the 3rd checkpoint is written
        real, n = persistence.save, {"k": 0}

        def save(*a, **k):
            n["k"] += 1
            if n["k"] == 3:
                raise KeyboardInterrupt
            return real(*a, **k)
        monkeypatch.setattr(persistence, "save", save)
        done = 3
    elif where == "between-stages":  # Ctrl-C in the margin scoring after pretraining
        real, n = AOEDetector._set_margins, {"k": 0}

        def set_margins(self, *a, **k):
            n["k"] += 1
            if n["k"] == 1:
                raise KeyboardInterrupt
            return real(self, *a, **k)
        monkeypatch.setattr(AOEDetector, "_set_margins", set_margins)
        done = 2
    else:  # "validation": Ctrl-C in the final validation scoring (once)
        real, n = AOEDetector._validation_scores, {"k": 0}

        def val(self, X_val):
            n["k"] += 1
            if n["k"] == 1:
                raise KeyboardInterrupt
            return real(self, X_val)
        monkeypatch.setattr(AOEDetector, "_validation_scores", val)
        done = 4
    with pytest.warns(TrainingInterruptedWarning, match="fit interrupted"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", CalibrationWarning)
            det.fit(X, Y)
    monkeypatch.undo()
    return det, done


@pytest.mark.parametrize("where", ["checkpoint", "between-stages", "validation"])
def test_interrupt_anywhere_keeps_last_completed_epoch(tmp_path, monkeypatch, where):
    det, done = _interrupt_fit(tmp_path, monkeypatch, where)
    assert len(det.history_) == done
    assert math.isfinite(det.offset_) and len(det.validation_scores_) > 0
    assert np.isfinite(det.score_samples(PROBE)).all() and not det.module_.training
    # the checkpoint is the kept epoch, never one behind
    ckpt = quiet(AOEDetector.load, tmp_path / "checkpoint.aoe")
    assert len(ckpt.history_) == done
    for k, v in det.module_.state_dict().items():
        assert torch.equal(v, ckpt.module_.state_dict()[k]), k
    if where == "validation":  # all epochs done: bitwise the uninterrupted fit
        full = quiet(AOEDetector(**{**TINY, "pretrain_epochs": 2, "epochs": 2}).fit, X, Y)
        assert det.score_samples(PROBE).tobytes() == full.score_samples(PROBE).tobytes()
        assert det.offset_ == full.offset_


def test_interrupt_before_any_training_restores_and_reraises(fitted, monkeypatch):
    det = copy.deepcopy(fitted)

    def boom(*a, **k):
        raise KeyboardInterrupt
    monkeypatch.setattr(_fit_inputs, "fit_outlier_source", boom)  # after the split, before training
    fails_untouched(det, lambda d: d.fit(X, Y), KeyboardInterrupt, "")


# ------------------------------------------------------------- 3. saved files


@pytest.mark.parametrize("edit, match", [
    (lambda p: p.pop("sha256"), r"no checksum \(`sha256`"),
    (set_json("fitted", "offset_", float("nan")), r"invalid `offset_`"),
    (set_json("fitted", "offset_", "0.1"), r"invalid `offset_`"),
    (set_json("params", "contamination", 7), r"'contamination' parameter"),
    (set_json("params", "batch_size", -3), r"'batch_size' parameter"),
    (set_json("params", "temperature", 1e-40), r"'temperature' parameter"),
    (set_json("params", "m_out", -2e4), r"'m_out' parameter"),
    (set_json("fitted", "m_in_", float("inf")), r"invalid `m_in_`"),
    (set_json("fitted", "input_shape_", [-2]), r"invalid `input_shape_`"),
    (set_json("fitted", "input_range_", [1.0, 0.0]), r"invalid `input_range_`"),
    (set_json("fitted", "epsilon_", [0.1]), r"invalid `epsilon_`"),
    (set_json("fitted", "classes_", [0, 0]), r"invalid `classes_`"),
    (set_json("backbone", "name", "vgg"), r"invalid `backbone`"),
    (lambda p: p["state_dict"].__setitem__(next(iter(p["state_dict"])),
                                           p["state_dict"][next(iter(p["state_dict"]))] * np.nan),
     r"invalid `state_dict\..*non-finite"),
    (lambda p: p.__setitem__("validation_scores", torch.full((3,), float("nan"), dtype=torch.float64)),
     r"invalid `validation_scores`"),
], ids=["no-sha256", "offset-nan", "offset-str", "contamination-7", "batch_size--3",
        "temperature-tiny", "m_out-range", "m_in_-inf", "input_shape", "input_range",
        "epsilon-length", "classes-dup", "backbone-name", "weights-nan", "val-scores-nan"])
def test_tampered_file_with_recomputed_checksum_refused(fitted, tmp_path, edit, match):
    path = fitted.save(tmp_path / "d.aoe")
    tamper(path, edit, recompute="no checksum" not in match)
    with pytest.raises(ValueError, match=match):
        quiet(AOEDetector.load, path)


def test_load_argument_errors(fitted, tmp_path):
    path = fitted.save(tmp_path / "d.aoe")
    with pytest.raises(TypeError, match=r"`module` must be None or a torch.nn.Module.*'mlp'"):
        AOEDetector.load(path, module="mlp")
    with pytest.raises(ValueError, match=r"`device` must be"):
        AOEDetector.load(path, device="meta")
    det = AOEDetector.load(path)
    assert det.score_samples(PROBE).tobytes() == fitted.score_samples(PROBE).tobytes()


# --------------------------------------------------- 4. the second argument of fit
def test_column_vector_integer_y_is_labels_even_for_one_feature_X():
    X1 = X[:, :1]
    det = quiet(AOEDetector(**TINY).fit, X1, Y[:, None])
    assert det.classes_.tolist() == [0, 1]
    ref = quiet(AOEDetector(**TINY).fit, X1, Y)
    assert det.score_samples(X1).tobytes() == ref.score_samples(X1).tobytes()


def test_one_hot_y_refused_and_ambiguous_float_column_refused():
    onehot = np.eye(2, dtype=int)[Y]  # width 2 == X's width: was taken as outliers
    with pytest.raises(ValueError, match=r"one-hot.*argmax"):
        AOEDetector(**TINY).fit(X, onehot)
    with pytest.raises(ValueError, match=r"Ambiguous second argument.*y\.ravel\(\)"):
        AOEDetector(**TINY).fit(X[:, :1], Y[:, None].astype(float))
    # a genuine outlier array (other length, float values) is still outliers
    det = quiet(AOEDetector(**TINY).fit, X, X[:7] * 10)
    assert not hasattr(det, "classes_")


def test_uint8_tabular_means_the_same_as_int64():
    Xi = np.round(np.abs(X) * 20).astype(np.int64)
    a = quiet(AOEDetector(**TINY).fit, Xi.astype(np.uint8), Y)
    b = quiet(AOEDetector(**TINY).fit, Xi, Y)
    assert a.score_samples(Xi).tobytes() == b.score_samples(Xi).tobytes()
    assert a.score_samples(Xi.astype(np.uint8)).tobytes() == a.score_samples(Xi).tobytes()


@pytest.mark.parametrize("bad, match", [
    (np.full((5, 2), np.nan), r"Input outliers contains NaN"),
    (np.zeros((5, 3)), r"`outliers` has samples of shape \(3,\)"),
    (np.array([["a", "b"]]), r"`outliers` holds strings"),
])
def test_outliers_parameter_arrays_validated_like_X_outliers(fitted, bad, match):
    det = copy.deepcopy(fitted)
    snap = snapshot(det, PROBE)
    with pytest.raises(ValueError, match=match):
        det.set_params(outliers=bad).fit(X, Y)
    det.set_params(outliers="uniform")
    assert describe_change(det, snap, PROBE) is None


# ----------------------------------------------------- 5. nested objects, scalars
@pytest.mark.parametrize("params, match", [
    ({"attack": PGD(steps=-1)}, r"`attack` \(PGD\).*'steps'"),
    ({"attack": PGD(step_size=float("nan"))}, r"`attack` \(PGD\).*'step_size'"),
    ({"outliers": UniformNoise(widen=float("nan"))}, r"`outliers` \(UniformNoise\).*'widen'"),
    ({"m_in": -1e200}, r"'m_in' parameter"),
    ({"temperature": 1e-40}, r"'temperature' parameter"),
    ({"attack__steps": 0, "attack": PGD()}, r"'steps'"),
])
def test_nested_and_extreme_parameters_rejected_at_fit(fitted, params, match):
    det = copy.deepcopy(fitted)
    snap = snapshot(det, PROBE)
    with pytest.raises(ValueError, match=match):
        first = {k: v for k, v in params.items() if "__" not in k}
        det.set_params(**first).set_params(**{k: v for k, v in params.items() if "__" in k})
        det.fit(X, Y)
    det.set_params(**{k: fitted.get_params()[k] for k in first})
    assert describe_change(det, snap, PROBE) is None


def test_temperature_set_after_fit_is_checked_where_used(fitted):
    det = copy.deepcopy(fitted).set_params(temperature=1e-40)
    for call in (det.score_samples, det.predict, det.decision_function, det.perturb):
        with pytest.raises(ValueError, match="'temperature' parameter"):
            call(PROBE)
    det.set_params(temperature=2.0)  # a valid change takes effect at once, finite
    s = det.score_samples(PROBE * 1e3)
    assert np.isfinite(s).all()


def test_numpy_scalar_batch_size_and_gridsearch_with_numpy_grid():
    from sklearn.model_selection import GridSearchCV, KFold

    det = quiet(AOEDetector(**{**TINY, "batch_size": np.int64(32)}).fit, X, Y)
    ref = quiet(AOEDetector(**TINY).fit, X, Y)
    assert det.score_samples(PROBE).tobytes() == ref.score_samples(PROBE).tobytes()
    ood = np.random.RandomState(2).uniform(-30, 30, (20, 2))
    Xs, ys = np.r_[X, ood], np.r_[Y, -np.ones(20, int)]
    gs = GridSearchCV(AOEDetector(**{**TINY, "outliers": None, "pretrain_epochs": 1, "epochs": 0}),
                      {"batch_size": np.array([16, 32]), "lr": np.array([1e-3])},
                      cv=KFold(2, shuffle=True, random_state=0))
    quiet(gs.fit, Xs, ys)
    assert isinstance(gs.best_params_["batch_size"], np.integer)
    assert np.isfinite(gs.best_score_)


# ------------------------------------------------------------ 6. errors from torch
@pytest.mark.parametrize("params, exc, match", [
    ({"device": "meta"}, ValueError, r"`device` must be"),
    ({"backbone": NoParams()}, ValueError, r"`backbone` has no trainable parameters"),
    ({"backbone": FlatInTrain()}, ValueError, r"`backbone` must return 2-D logits .*train mode"),
    ({"checkpoint_dir": ""}, ValueError, r"`checkpoint_dir` is an empty string"),
])
def test_deep_torch_errors_become_clear(fitted, params, exc, match):
    det = copy.deepcopy(fitted)
    snap = snapshot(det, PROBE)
    with pytest.raises(exc, match=match):
        quiet(det.set_params(**params).fit, X, Y)
    det.set_params(**{k: fitted.get_params()[k] for k in params})
    assert describe_change(det, snap, PROBE) is None


def test_checkpoint_dir_that_is_a_file(fitted, tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    det = copy.deepcopy(fitted)
    with pytest.raises(ValueError, match=r"`checkpoint_dir`=.* is not a folder"):
        det.set_params(checkpoint_dir=str(f)).fit(X, Y)
    assert f.read_text() == "x"


@pytest.mark.parametrize("eps, exc", [(True, TypeError), ("0.1", TypeError),
                                      ([0.1, 0.1, 0.1], ValueError), (1e39, ValueError),
                                      (np.array([[0.1, 0.1]] * 2), ValueError)])
def test_perturb_epsilon_validated(fitted, eps, exc):
    fails_untouched(copy.deepcopy(fitted), lambda d: d.perturb(X[:4], epsilon=eps), exc,
                    r"`epsilon` must be None, a number >= 0")


def test_perturb_per_feature_epsilon_and_no_aliasing(fitted):
    x = X[:4].astype(np.float32)
    out = fitted.perturb(x, epsilon=[0.1, 0.0])
    assert np.abs(out[:, 1] - x[:, 1]).max() == 0 and np.abs(out[:, 0] - x[:, 0]).max() <= 0.1 + 1e-6
    same = fitted.perturb(x, attack=None)
    assert not np.shares_memory(same, x) and np.array_equal(same, x)
    same[0, 0] = 123.0
    assert x[0, 0] != 123.0


def test_predict_proba_without_labels_clear_error():
    det = quiet(AOEDetector(**{**TINY, "pretrain_epochs": 0}).fit, X)
    with pytest.raises(NoClassesError, match=r"without class labels.*fit with labels"):
        det.predict_proba(PROBE)
    assert issubclass(NoClassesError, AttributeError) and issubclass(NoClassesError, ValueError)


def test_dataloader_bf16_ragged_inputs(fitted):
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.tensor(X)), 8)
    for call in (lambda d: d.fit(loader), lambda d: d.score_samples(loader)):
        fails_untouched(copy.deepcopy(fitted), call, TypeError, r"DataLoader.*loader\.dataset")
    fails_untouched(copy.deepcopy(fitted), lambda d: d.fit([[1.0, 2.0], [3.0]] * 5), ValueError,
                    r"`X` is ragged")
    xb = torch.tensor(PROBE, dtype=torch.bfloat16)
    got = fitted.score_samples(xb)
    assert got.tobytes() == fitted.score_samples(xb.float().numpy()).tobytes()
    gen = (row for row in X)
    fails_untouched(copy.deepcopy(fitted), lambda d: d.score_samples(gen), TypeError, "iterator")


# -------------------------------------------------- 7. small data, conformal offset
def test_class_with_one_row_stays_in_training():
    Xs = np.r_[X, [[0.0, 9.0]]]
    ys = np.r_[Y, 2]
    for seed in range(6):  # whatever the permutation, class 2 is trained on
        det = quiet(AOEDetector(**{**TINY, "random_state": seed, "validation_fraction": 0.5}).fit,
                    Xs, ys)
        assert det.classes_.tolist() == [0, 1, 2]  # classes_ come from the training rows


def test_keep_classes_in_training_rule():
    labels = np.array([0, 0, 0, 1, 1, 2])
    val, tr = keep_classes_in_training(np.array([5, 3, 0, 1, 2, 4]), 3, labels)
    assert set(labels[tr]) == {0, 1, 2} and sorted(np.r_[val, tr]) == list(range(6))
    assert list(val) == [3, 0]  # only class 2's row moved back
    with pytest.raises(ValueError, match="validation_fraction"):
        keep_classes_in_training(np.array([0, 1]), 1, np.array([0, 1]))


def test_conformal_offset_order_statistic_and_small_set_warning():
    s = np.arange(1.0, 40.0)  # n = 39 scores
    assert conformal_offset(s, 0.05) == 2.0  # floor(40 * 0.05) = 2nd smallest
    assert conformal_offset(s, 0.5) == 20.0
    with pytest.warns(CalibrationWarning, match=r"8 held-out .* at least 19"):
        assert conformal_offset(s[:8], 0.05) == 1.0


def test_conformal_guarantee_holds_statistically():
    # 400 calibrations on n = 30 exchangeable scores: the mean rejection rate of fresh ID
    # scores is k / (n + 1) <= alpha (exact), well inside a binomial tolerance
    rng = np.random.RandomState(0)
    n, alpha, reps, m = 30, 0.1, 400, 200
    rates = []
    for _ in range(reps):
        cal, new = rng.normal(size=n), rng.normal(size=m)
        rates.append(np.mean(new < conformal_offset(cal, alpha)))
    k = math.floor((n + 1) * alpha)
    mean = float(np.mean(rates))
    se = np.std(rates) / math.sqrt(reps)
    assert abs(mean - k / (n + 1)) < 4 * se
    assert mean <= alpha + 4 * se
    # the plain quantile it replaced is optimistic at this n (mean rate above alpha)
    plain = np.mean([np.mean(rng.normal(size=m) < np.quantile(rng.normal(size=n), alpha))
                     for _ in range(reps)])
    assert plain > mean


def test_detector_offset_is_conformal_and_warns_when_held_out_set_too_small(fitted):
    v = np.sort(fitted.validation_scores_)
    assert fitted.offset_ == v[0]  # 8 held-out rows: k = floor(9 * 0.05) = 0 -> smallest
    with pytest.warns(CalibrationWarning):
        AOEDetector(**TINY).fit(X, Y)
    det = quiet(AOEDetector(**{**TINY, "validation_fraction": 0.5}).fit, X, Y)  # 40 rows
    v = np.sort(det.validation_scores_)
    assert len(v) == 40 and det.offset_ == v[math.floor(41 * 0.05) - 1]
    with warnings.catch_warnings():
        warnings.simplefilter("error", CalibrationWarning)
        det.recalibrate(contamination=0.1)
    assert det.offset_ == v[math.floor(41 * 0.1) - 1]


def test_attack_eps_per_feature_and_invalid_named(fitted):
    from aoe_detect.attacks import FGSM

    det = quiet(AOEDetector(**{**TINY, "attack": FGSM(eps=[0.1, 0.2])}).fit, X, Y)
    assert np.isfinite(det.score_samples(PROBE)).all()
    out = fitted.perturb(X[:4], attack=FGSM(eps=[0.0, 0.2]))
    assert np.abs(out[:, 0] - X[:4, 0].astype(np.float32)).max() == 0
    for eps, exc in (([0.1, 0.1, 0.1], ValueError), ([0.1, np.nan], ValueError), (["a", "b"], TypeError)):
        fails_untouched(copy.deepcopy(fitted), lambda d: d.perturb(X[:4], attack=FGSM(eps=eps)),
                        exc, r"`attack__eps` must be")
        det = copy.deepcopy(fitted)
        snap = snapshot(det, PROBE)
        with pytest.raises(exc, match=r"`attack__eps` must be"):
            quiet(det.set_params(attack=FGSM(eps=eps)).fit, X, Y)
        det.set_params(attack="fgsm")
        assert describe_change(det, snap, PROBE) is None


def test_compile_options_checked_before_training(fitted):
    det = copy.deepcopy(fitted)
    snap = snapshot(det, PROBE)
    with pytest.raises(ValueError, match=r"`compile`=.*not valid for torch.compile"):
        det.set_params(compile={"mode": "bad"}).fit(X, Y)
    det.set_params(compile=False)
    assert describe_change(det, snap, PROBE) is None


def test_uint8_tabular_dataset_keeps_values_and_array_outliers_checked(fitted):
    from aoe_detect.outliers import ArrayOutliers

    Xi = np.round(np.abs(X) * 20).astype(np.uint8)
    ds = torch.utils.data.TensorDataset(torch.from_numpy(Xi), torch.from_numpy(Y))
    a = quiet(AOEDetector(**TINY).fit, ds)
    b = quiet(AOEDetector(**TINY).fit, Xi.astype(np.int64), Y)
    assert a.score_samples(Xi.astype(np.int64)).tobytes() == b.score_samples(Xi.astype(np.int64)).tobytes()
    with pytest.raises(ValueError, match=r"`ArrayOutliers.X` contains NaN"):
        quiet(AOEDetector(**{**TINY, "outliers": ArrayOutliers(np.full((3, 2), np.nan))}).fit, X, Y)


def test_scores_finite_for_finite_inputs_at_the_temperature_bounds(fitted):
    big = np.r_[PROBE, PROBE * 1e20, [[3e38, -3e38], [-1e30, 1e30]]]
    for t in (1e-3, 1.0, 1e3):
        det = copy.deepcopy(fitted).set_params(temperature=t)
        s = det.score_samples(big)
        assert s.dtype == np.float64 and np.isfinite(s).all(), t
        assert np.isfinite(det.decision_function(big)).all()


def test_one_hot_of_another_width_is_named_too():
    onehot3 = np.eye(3, dtype=int)[np.r_[Y[:-1], 2]]  # 3 classes, X has 2 features
    with pytest.raises(ValueError, match=r"one-hot"):
        AOEDetector(**TINY).fit(X, onehot3)


def test_failed_channels_last_warm_start_keeps_image_module_layout():
    rng = np.random.RandomState(1)
    XI = np.r_[rng.rand(16, 1, 8, 8) * 0.5, rng.rand(16, 1, 8, 8) * 0.5 + 0.5]
    YI = np.r_[np.zeros(16, int), np.ones(16, int)]
    probe = XI[:6]
    det = quiet(AOEDetector(**{**TINY, "batch_size": 16}).fit, XI, YI)
    strides = [p.stride() for p in det.module_.parameters()]

    class Boom:
        calls = 0

        def sample(self, n, generator):
            Boom.calls += 1
            if Boom.calls > 1:  # after the probe: inside the training loop
                raise RuntimeError("boom")
            return torch.rand(n, 1, 8, 8, generator=generator)

    snap = snapshot(det, probe)
    det.set_params(warm_start=True, epochs=3, channels_last=True, outliers=Boom())
    with pytest.raises(RuntimeError, match="boom"):
        quiet(det.fit, XI, YI)
    det.set_params(warm_start=False, epochs=1, channels_last="auto", outliers="uniform")
    assert describe_change(det, snap, probe) is None
    assert [p.stride() for p in det.module_.parameters()] == strides
