"""Reliability guarantees of AOEDetector (issue 5): bad input, training faults, checkpoints,
reproducibility and thread safety. docs/failure_modes.md lists the guarantees tested here.

Every failure test runs on a deep copy of a module-scoped fitted detector and asserts that a
failed call left it bitwise untouched: same scores on fixed data, same ``get_params``, same
fitted attributes and weights.
"""

import copy
import importlib.util
import json
import os
import random
import subprocess
import sys
import textwrap
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from scipy import sparse
from sklearn.exceptions import NotFittedError
from torch import nn

import aoe_detect.persistence as persistence
from aoe_detect import AOEDetector, NonFiniteLossWarning, TrainingInterruptedWarning
from aoe_detect.detector import CalibrationWarning
from aoe_detect.testing import describe_change, snapshot

TINY = dict(epochs=1, pretrain_epochs=1, batch_size=32, device="cpu", random_state=0,
            outliers="uniform")


# ----------------------------------------------------------------------------- data
def _blobs():
    rng = np.random.RandomState(0)
    X = np.r_[rng.normal(0, 1, (40, 2)) + [3, 0], rng.normal(0, 1, (40, 2)) - [3, 0]]
    return X, np.r_[np.zeros(40, int), np.ones(40, int)]


def _images():
    rng = np.random.RandomState(1)
    X = np.r_[rng.rand(16, 1, 8, 8) * 0.5, rng.rand(16, 1, 8, 8) * 0.5 + 0.5]
    return X, np.r_[np.zeros(16, int), np.ones(16, int)]


X, Y = _blobs()
XI, YI = _images()
# fixed probe data: ID, far OOD
PROBE = np.r_[X[:10], np.random.RandomState(5).uniform(-30, 30, (10, 2))]
PROBE_I = np.r_[XI[:6], np.random.RandomState(5).rand(6, 1, 8, 8)]


@pytest.fixture(scope="module")
def fitted():
    return AOEDetector(**TINY).fit(X, Y)


@pytest.fixture(scope="module")
def fitted_img():
    return AOEDetector(**{**TINY, "batch_size": 16}).fit(XI, YI)


# --------------------------------------------------------------------- state helpers
def assert_untouched(det, snap, probe):
    """Params, every fitted attribute (module weights, buffers, device, layout, training
    flags) and the probe scores bitwise as in ``snap`` (shared helpers: aoe_detect.testing)."""
    what = describe_change(det, snap, probe)
    assert what is None, what


def _with(a, idx, v):
    a = np.array(a, dtype=float)
    a[idx] = v
    return a


class Logits3D(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(2, 4)

    def forward(self, x):
        return self.lin(x).reshape(len(x), 2, 2)


class TupleOut(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(2, 2)

    def forward(self, x):
        return (self.lin(x),)


class WrongShapeSource:
    def sample(self, n, generator):
        return torch.zeros(n, 3)


def FIT(d):
    return d.fit(X, Y)


def case(call, exc, match, id, **params):
    """``params`` are set on the fitted copy before the snapshot; then ``call`` must fail."""
    return pytest.param(params, call, exc, match, id=id)


# (call on a deep copy of the fitted tabular detector, exception, regex naming the argument
#  and what is expected)
BAD_TABULAR = [
    # non-finite values
    case(lambda d: d.fit(_with(X, (0, 0), np.nan), Y), ValueError, r"Input X contains NaN", "X-nan"),
    case(lambda d: d.fit(_with(X, (3, 1), np.inf), Y), ValueError, r"Input X contains infinity", "X-inf"),
    case(lambda d: d.fit(_with(X, (0, 0), 1e39), Y), ValueError, r"`X` has values too large for float32", "X-float32-overflow"),
    case(lambda d: d.fit(X, _with(Y, 0, np.nan)), ValueError, r"`y` contains NaN or infinity", "y-nan"),
    case(lambda d: d.fit(X, _with(Y, 0, np.inf)), ValueError, r"`y` contains NaN or infinity", "y-inf"),
    case(lambda d: d.fit(X, Y, X_outliers=_with(X[:5], (0, 0), np.nan)), ValueError, r"Input X_outliers contains NaN", "X_outliers-nan"),
    case(lambda d: d.fit(X, Y, X_outliers=_with(X[:5], (0, 0), -np.inf)), ValueError, r"Input X_outliers contains infinity", "X_outliers-inf"),
    # sizes and dimensions
    case(lambda d: d.fit(np.empty((0, 2)), np.empty(0, int)), ValueError, r"`X` has 0 sample\(s\).*at least 2", "X-empty"),
    case(lambda d: d.fit([]), ValueError, r"`X` must be 2-D.*got 1-D", "X-empty-list"),
    case(lambda d: d.fit(X[:1], Y[:1]), ValueError, r"`X` has 1 sample\(s\).*at least 2", "X-one-sample"),
    case(lambda d: d.fit(X[:, 0], Y), ValueError, r"`X` must be 2-D.*got 1-D.*Reshape", "X-1d"),
    case(lambda d: d.fit(np.float64(3.0)), ValueError, r"`X` must be 2-D.*got 0-D", "X-0d"),
    case(lambda d: d.fit(np.zeros((4, 1, 2, 2, 2))), ValueError, r"`X` must be 2-D.*4-D.*got 5 dimensions", "X-5d"),
    case(lambda d: d.fit(X, Y, X_outliers=np.zeros((0, 2))), ValueError, r"`X_outliers` has 0 sample\(s\)", "X_outliers-empty"),
    case(lambda d: d.fit(X, Y, X_outliers=np.zeros((5, 3))), ValueError, r"`X_outliers` has samples of shape \(3,\), but X has samples of shape \(2,\)", "X_outliers-sample-shape"),
    # dtypes
    case(lambda d: d.fit(X.astype(str), Y), ValueError, r"`X` holds strings.*numeric data is expected", "X-strings"),
    case(lambda d: d.fit(np.array([[1.0, "a"]] * 80, dtype=object), Y), ValueError, r"`X` has dtype object with non-numeric values", "X-object"),
    case(lambda d: d.fit(X + 1j, Y), ValueError, r"`X` has dtype complex128; real numbers are expected", "X-complex"),
    case(lambda d: d.fit(X, Y, X_outliers=X[:5].astype(str)), ValueError, r"`X_outliers` holds strings", "X_outliers-strings"),
    case(lambda d: d.fit(sparse.csr_matrix((300000, 10000)), Y), ValueError, r"`X` is a sparse matrix of shape \(300000, 10000\); .* above the limit", "X-scipy-sparse-too-large"),
    case(lambda d: d.score_samples(torch.as_tensor(X).to_sparse()), TypeError, r"`X` is a sparse tensor; sparse input is not supported", "score-torch-sparse"),
    # labels
    case(lambda d: d.fit(X, Y + 0.5), ValueError, r"`y` must hold integer class labels; got fractional values", "y-fractional"),
    # X alone is valid (and would reset n_features_in_): the failed fit must undo that
    case(lambda d: d.fit(np.c_[X, X], Y + 0.5), ValueError, r"`y` must hold integer class labels", "y-fractional-X-of-other-width"),
    case(lambda d: d.fit(X, np.where(Y == 1, -2, 0)), ValueError, r"`y` has negative labels other than -1 \(\[-2\]\)", "y-negative"),
    case(lambda d: d.fit(X, np.zeros_like(Y)), ValueError, r"`y` has only one class \(\[0\]\)", "y-one-class"),
    case(lambda d: d.fit(X, Y[:-3]), ValueError, r"`y` has 77 labels but X has 80 samples", "y-length"),
    case(lambda d: d.fit(X, np.array([0, "a"] * 40, dtype=object)), ValueError, r"`y` must hold class labels of one kind", "y-mixed-types"),
    case(lambda d: d.fit(X, Y + 0j), ValueError, r"`y` must hold integer class labels; got dtype complex", "y-complex"),
    case(lambda d: d.fit(X, np.c_[Y, Y, Y]), ValueError, r"`y` must be 1-D class labels of length 80; got shape \(80, 3\)", "y-2d"),
    case(lambda d: d.fit(X, -np.ones_like(Y)), ValueError, r"All rows of `y` are -1 \(outliers\)", "y-all-outliers"),
    case(lambda d: d.fit(X, np.r_[0, -np.ones(79, int)]), ValueError, r"Only 1 in-distribution row", "y-one-id-row"),
    case(lambda d: d.fit(X, X[:5], X_outliers=X[:5]), ValueError, r"Ambiguous call.*`X_outliers`", "outliers-twice"),
    # hyperparameters (sklearn's InvalidParameterError is a ValueError and a TypeError)
    case(FIT, ValueError, r"`attack` \(FGSM\).*'eps' parameter.*Got -0\.1", "epsilon-negative", attack__eps=-0.1),
    case(FIT, ValueError, r"'eps' parameter.*Got nan", "epsilon-nan", attack__eps=float("nan")),
    case(FIT, ValueError, r"'eps' parameter.*Got inf", "epsilon-inf", attack__eps=float("inf")),
    case(FIT, ValueError, r"'batch_size' parameter.*range \[1, inf\).*Got 0", "batch_size-0", batch_size=0),
    case(FIT, ValueError, r"'outlier_batch_size' parameter.*Got 0", "outlier_batch_size-0", outlier_batch_size=0),
    case(FIT, ValueError, r"'epochs' parameter.*range \[0, inf\).*Got -1", "epochs-negative", epochs=-1),
    case(FIT, TypeError, r"'epochs' parameter.*int.*Got 1\.5", "epochs-float", epochs=1.5),
    case(FIT, ValueError, r"'pretrain_epochs' parameter.*Got -1", "pretrain_epochs-negative", pretrain_epochs=-1),
    case(FIT, ValueError, r"'contamination' parameter.*range \(0\.0, 0\.5\].*Got 0\.0", "contamination-0", contamination=0.0),
    case(FIT, ValueError, r"'contamination' parameter.*range \(0\.0, 0\.5\].*Got 0\.6", "contamination-0.6", contamination=0.6),
    case(FIT, ValueError, r"'contamination' parameter.*Got nan", "contamination-nan", contamination=float("nan")),
    case(FIT, ValueError, r"'lr' parameter.*range \(0\.0, inf\)", "lr-0", lr=0.0),
    case(FIT, ValueError, r"'fraction' parameter.*range \[0\.0, 1\.0\]", "attack_fraction-1.5", attack__fraction=1.5),
    case(FIT, ValueError, r"'validation_fraction' parameter.*\[0\.0, 1\.0\)", "validation_fraction-1", validation_fraction=1.0),
    case(FIT, ValueError, r"'m_in' parameter.*Got nan", "m_in-nan", loss__m_in=float("nan")),
    case(FIT, ValueError, r"`loss__m_out` \(0\.5\) must be greater than `loss__m_in` \(1\.0\)", "m_out-below-m_in", loss__m_in=1.0, loss__m_out=0.5),
    case(FIT, ValueError, r"`input_range` must be 'auto', None or \(low, high\) with finite low < high, got \(1\.0, 0\.0\)", "input_range-reversed", input_range=(1.0, 0.0)),
    case(FIT, ValueError, r"`device` must be 'auto', 'cpu', 'cuda' or 'cuda:N', got 'tpu'", "device-unknown", device="tpu"),
    case(FIT, ValueError, r"'warm_start' parameter.*bool", "warm_start-str", warm_start="yes"),
    case(FIT, ValueError, r"'optimizer' parameter.*'adam'.*Got 'rmsprop'|'optimizer' parameter.*'sgd'.*Got 'rmsprop'", "optimizer-unknown", optimizer="rmsprop"),
    case(FIT, ValueError, r"'loss' parameter.*'energy'.*Got 'hinge'|'loss' parameter.*'softmax'.*Got 'hinge'", "loss-unknown", loss="hinge"),
    # unknown component names list the valid ones
    case(FIT, ValueError, r"'backbone' parameter.*(?=.*'mlp')(?=.*'small_cnn')(?=.*'wrn40_2').*Got 'vgg'", "backbone-unknown", backbone="vgg"),
    case(FIT, ValueError, r"'attack' parameter.*(?=.*'fgsm')(?=.*'pgd').*Got 'cw'", "attack-unknown", attack="cw"),
    case(FIT, ValueError, r"'outliers' parameter.*(?=.*'uniform')(?=.*'default').*Got 'imagenet'", "outliers-unknown", outliers="imagenet"),
    case(FIT, ValueError, r"backbone 'small_cnn' needs image inputs.*backbone='mlp'", "backbone-cnn-on-tabular", backbone="small_cnn"),
    # backbones that do not produce 2-D logits
    case(FIT, ValueError, r"backbone must return 2-D logits \(n_samples, n_classes\); got \(2, 2, 2\)", "backbone-3d-output", backbone=Logits3D()),
    case(FIT, ValueError, r"backbone must return 2-D logits.*got tuple", "backbone-tuple-output", backbone=TupleOut()),
    case(FIT, ValueError, r"The backbone failed on inputs of shape \(2, 2\)", "backbone-wrong-input", backbone=nn.Linear(3, 2)),
    case(FIT, TypeError, r"`backbone` factory returned int, not a torch.nn.Module", "backbone-factory-not-module", backbone=lambda k, shape: 5),
    case(lambda d: d.fit(X, np.where(Y == 1, 5, 0)), ValueError, r"`y` has label 5 but the backbone outputs only 2 logits", "y-beyond-backbone-logits", backbone=nn.Linear(2, 2)),
    # fails only after a new module was built: the old fitted state must come back
    case(FIT, ValueError, r"outlier source returned.*expected samples of shape \(2,\)", "outlier-source-shape", outliers=WrongShapeSource()),
    case(FIT, ValueError, r"`loss__m_out` \(-1000\.0\) must be greater than `loss__m_in`", "m_out-below-auto-m_in", loss__m_in="auto", loss__m_out=-1e3),
    # methods of a fitted detector
    case(lambda d: d.score_samples(X[:, :1]), ValueError, r"X has 1 features, but AOEDetector is expecting 2 features", "score-fewer-features"),
    case(lambda d: d.predict(np.c_[X, X]), ValueError, r"X has 4 features, but AOEDetector is expecting 2 features", "predict-more-features"),
    case(lambda d: d.decision_function(_with(X, (0, 0), np.nan)), ValueError, r"Input X contains NaN", "decision-nan"),
    case(lambda d: d.score_samples(np.empty((0, 2))), ValueError, r"`X` has 0 sample\(s\)", "score-empty"),
    case(lambda d: d.score_samples(X[0]), ValueError, r"`X` must be 2-D.*Reshape", "score-1d"),
    case(lambda d: d.predict(X[:, :, None]), ValueError, r"X has 1 features, but AOEDetector is expecting 2 features", "predict-3d"),
    case(lambda d: d.score_samples(X.astype(str)), ValueError, r"`X` holds strings", "score-strings"),
    case(lambda d: d.score_samples(X + 1j), ValueError, r"`X` has dtype complex128", "score-complex"),
    case(lambda d: d.score_samples(_with(X, (0, 0), -1e39)), ValueError, r"`X` has values too large for float32", "score-float32-overflow"),
    case(lambda d: d.recalibrate(contamination=0.7), ValueError, r"`contamination` must be in \(0, 0\.5\], got 0\.7", "recalibrate-contamination"),
    case(lambda d: d.recalibrate(X[:, :1], contamination=0.1), ValueError, r"X has 1 features", "recalibrate-bad-X"),
    case(lambda d: d.perturb(X, epsilon=-1.0), ValueError, r"`epsilon` must be None, a number >= 0.*got -1\.0", "perturb-epsilon-negative"),
    case(lambda d: d.perturb(X, epsilon=float("nan")), ValueError, r"`epsilon` must be None, a number >= 0.*got nan", "perturb-epsilon-nan"),
    case(lambda d: d.perturb(X, attack="cw"), ValueError, r"Unknown `attack` 'cw'; valid names are \['fgsm', 'gaussian', 'none', 'pgd'\]", "perturb-attack-unknown"),
    case(lambda d: d.perturb(X, direction=0), ValueError, r"`direction` must be -1.*or 1, got 0", "perturb-direction"),
    case(lambda d: d.score(X, Y[:-1]), ValueError, r"y has 79 entries but scores has 80", "score-y-length"),
]

BAD_IMAGES = [
    case(lambda d: d.fit(XI * 2, YI), ValueError, r"`X` has values in \[.*\], outside the declared input range \[0\.0, 1\.0\] \(parameter `input_range`\)", "images-above-range"),
    case(lambda d: d.fit(XI - 0.5, YI), ValueError, r"`X` has values in \[-0\.4.*outside the declared input range", "images-below-range"),
    case(lambda d: d.fit(XI, YI, X_outliers=XI[:4] + 1.5), ValueError, r"`X_outliers` has values in .* outside the declared input range", "outlier-images-out-of-range"),
    case(lambda d: d.fit(XI, YI, X_outliers=np.zeros((3, 1, 4, 4))), ValueError, r"`X_outliers` has samples of shape \(1, 4, 4\), but X has samples of shape \(1, 8, 8\)", "outlier-images-shape"),
    case(lambda d: d.fit(np.repeat(XI, 3, 1).transpose(0, 2, 3, 1), YI), ValueError, r"`X` looks channels-last with shape \(32, 8, 8, 3\)", "images-channels-last"),
    case(lambda d: d.score_samples(np.repeat(XI, 3, 1)), ValueError, r"X has 3 features, but AOEDetector is expecting 1 features", "score-channel-count"),
    case(lambda d: d.score_samples(XI[:, :, :4, :4]), ValueError, r"`X` has samples of shape \(1, 4, 4\), but the detector was fitted on samples of shape \(1, 8, 8\)", "score-image-size"),
    case(lambda d: d.predict(XI * 3), ValueError, r"`X` has values in .* outside the declared input range \[0\.0, 1\.0\]", "predict-out-of-range"),
]


def _run_bad_case(base, probe, params, call, exc, match):
    det = copy.deepcopy(base)
    before = snapshot(det, probe)
    top = det.get_params(deep=False)  # a nested name is restored by its component
    original = {k.split("__")[0]: top[k.split("__")[0]] for k in params}
    det.set_params(**params)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(exc, match=match):
            call(det)
    det.set_params(**original)
    assert_untouched(det, before, probe)
    # the weights and threshold are still the fitted ones (temperature enters the score)
    if "temperature" not in params:
        assert det.score_samples(probe).tobytes() == base.score_samples(probe).tobytes()
    assert det.offset_ == base.offset_


@pytest.mark.parametrize("params, call, exc, match", BAD_TABULAR)
def test_bad_input_clear_error_and_fitted_estimator_untouched(fitted, params, call, exc, match):
    _run_bad_case(fitted, PROBE, params, call, exc, match)


@pytest.mark.parametrize("params, call, exc, match", BAD_IMAGES)
def test_bad_image_input_clear_error_and_untouched(fitted_img, params, call, exc, match):
    _run_bad_case(fitted_img, PROBE_I, params, call, exc, match)


def test_bad_input_table_is_large_enough():
    assert len(BAD_TABULAR) + len(BAD_IMAGES) >= 30
    ids = [p.id for p in BAD_TABULAR + BAD_IMAGES]
    assert len(set(ids)) == len(ids)


NOT_FITTED_CALLS = {
    "score_samples": lambda d: d.score_samples(X),
    "decision_function": lambda d: d.decision_function(X),
    "predict": lambda d: d.predict(X),
    "score": lambda d: d.score(X, Y),
    "predict_proba": lambda d: d.predict_proba(X),
    "predict_class": lambda d: d.predict_class(X),
    "perturb": lambda d: d.perturb(X),
    "recalibrate": lambda d: d.recalibrate(),
    "save": lambda d: d.save("never-written.aoe"),
}


@pytest.mark.parametrize("method", sorted(NOT_FITTED_CALLS))
def test_methods_before_fit_raise_not_fitted(method, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    det = AOEDetector(**TINY)
    with pytest.raises(NotFittedError, match="not fitted yet"):
        NOT_FITTED_CALLS[method](det)
    assert not [k for k in vars(det) if k.endswith("_")]
    assert not os.listdir(tmp_path)


def test_failed_first_fit_leaves_estimator_unfitted():
    det = AOEDetector(**TINY)
    with pytest.raises(ValueError, match="m_out"):
        det.set_params(loss__m_out=-1e6).fit(X, Y)  # fails after the module was built
    assert not [k for k in vars(det) if k.endswith("_")]
    with pytest.raises(NotFittedError):
        det.score_samples(X)


# ------------------------------------------------------------------- training faults
class Faulty(nn.Module):
    """A small MLP that raises ``exc`` on its ``at``-th forward call in training mode."""

    calls = 0
    at = None
    exc = KeyboardInterrupt

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, 2))

    def forward(self, x):
        if self.training:
            type(self).calls += 1
            if type(self).calls == type(self).at:
                raise type(self).exc("injected")
        return self.net(x)


@pytest.fixture
def faulty():
    Faulty.calls, Faulty.at, Faulty.exc = 0, None, KeyboardInterrupt
    torch.manual_seed(0)
    yield Faulty()
    Faulty.at = None


def _ckpt_weights(folder):
    path = os.path.join(folder, "checkpoint.aoe")
    payload = torch.load(path, map_location="cpu", weights_only=True)
    return payload["state_dict"], payload


def _assert_weights_equal(module, state):
    got = module.state_dict()
    assert got.keys() == state.keys()
    for k in got:
        assert torch.equal(got[k], state[k]), k


# 80 rows -> 72 training rows; batch 128 = one step per epoch (the step that diverges is the
# last of its epoch, with no loss after it); batch 16 = 5 steps (diverges mid-epoch)
NAN_CASES = [
    pytest.param(dict(optimizer="sgd", lr=1e3, batch_size=16, pretrain_epochs=2, epochs=2), id="sgd-mid-epoch"),
    pytest.param(dict(optimizer="sgd", lr=1e8, batch_size=128, pretrain_epochs=3, epochs=2), id="sgd-last-step-of-epoch"),
    pytest.param(dict(optimizer="adam", lr=1e8, batch_size=16, pretrain_epochs=2, epochs=2), id="adam-in-finetune"),
]


@pytest.mark.parametrize("params", NAN_CASES)
def test_nonfinite_loss_stops_with_warning_at_last_finite_weights(params, tmp_path):
    det = AOEDetector(**{**TINY, **params, "checkpoint_dir": str(tmp_path)})
    with pytest.warns(NonFiniteLossWarning, match=r"Training stopped in (pretrain|finetune) epoch \d+.*lower `lr`"):
        det.fit(X, Y)
    n_planned = params["pretrain_epochs"] + params["epochs"]
    assert len(det.history_) < n_planned
    assert all(np.isfinite(r["loss"]) for r in det.history_)
    # the weights are those of the last completed epoch (or the initial ones)
    if det.history_:
        state, payload = _ckpt_weights(tmp_path)
        assert repr(json.loads(payload["fitted"])["history_"]) == repr(det.history_)
        _assert_weights_equal(det.module_, state)
    else:
        init = AOEDetector(**{**TINY, **params, "pretrain_epochs": 0, "epochs": 0}).fit(X, Y)
        _assert_weights_equal(det.module_, init.module_.state_dict())
    for t in det.module_.state_dict().values():
        assert torch.isfinite(t).all()
    scores = det.score_samples(np.r_[PROBE, PROBE * 100])
    assert np.isfinite(scores).all() and np.isfinite(det.offset_)
    assert np.isfinite(det.validation_scores_).all()
    assert set(det.predict(PROBE)) <= {-1, 1}


def test_nonfinite_loss_never_reaches_scores_with_large_margins():
    # energies ~1e26 after a diverged pretraining: auto margins stay ordered, scores finite
    det = AOEDetector(**{**TINY, "optimizer": "adam", "lr": 1e8, "batch_size": 16,
                         "pretrain_epochs": 2, "epochs": 1})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NonFiniteLossWarning)
        det.fit(X, Y)
    assert det.m_out_ > det.m_in_
    assert np.isfinite(det.score_samples(PROBE)).all()


INTERRUPT_AT = [
    # 72 training rows, batch 32 -> 3 steps per epoch; pretrain 2 epochs, finetune 2
    pytest.param(1, 0, id="first-step"),
    pytest.param(5, 1, id="pretrain-epoch-2"),
    pytest.param(8, 2, id="finetune-epoch-1"),
    pytest.param(12, 3, id="finetune-epoch-2-last-step"),
]


@pytest.mark.parametrize("at, completed", INTERRUPT_AT)
def test_keyboard_interrupt_keeps_last_completed_epoch(faulty, tmp_path, at, completed):
    init = copy.deepcopy(faulty.state_dict())
    Faulty.at = at
    det = AOEDetector(**{**TINY, "backbone": faulty, "pretrain_epochs": 2, "epochs": 2,
                         "checkpoint_dir": str(tmp_path)})
    with pytest.warns(TrainingInterruptedWarning, match=r"fit interrupted in (pretrain|finetune) epoch"):
        det.fit(X, Y)
    assert len(det.history_) == completed
    if completed:
        _assert_weights_equal(det.module_, _ckpt_weights(tmp_path)[0])
    else:
        _assert_weights_equal(det.module_, init)
    _assert_weights_equal(faulty, init)  # the user's module is never trained in place
    assert np.isfinite(det.score_samples(PROBE)).all()
    assert det.predict(PROBE).shape == (len(PROBE),)
    assert not det.module_.training


def test_keyboard_interrupt_while_sampling_outliers_is_handled():
    class InterruptingSource:
        calls = 0

        def sample(self, n, generator):
            InterruptingSource.calls += 1
            if InterruptingSource.calls == 4:  # probe + 2 steps of the first finetune epoch
                raise KeyboardInterrupt
            return torch.rand(n, 2, generator=generator) * 10 - 5

    det = AOEDetector(**{**TINY, "outliers": InterruptingSource(), "epochs": 3})
    with pytest.warns(TrainingInterruptedWarning, match="finetune epoch 1"):
        det.fit(X, Y)
    assert [r["stage"] for r in det.history_] == ["pretrain"]
    assert np.isfinite(det.score_samples(PROBE)).all()


def test_interrupt_outside_the_epoch_loop_restores_the_fitted_state(fitted):
    class SlowSource:
        def fit(self, X, generator=None):
            raise KeyboardInterrupt

        def sample(self, n, generator):  # pragma: no cover
            raise AssertionError

    det = copy.deepcopy(fitted).set_params(outliers=SlowSource())
    before = snapshot(det, PROBE)
    with pytest.raises(KeyboardInterrupt):
        det.fit(X, Y)
    assert_untouched(det, before, PROBE)


def test_crash_during_warm_start_training_restores_weights_and_history(faulty):
    det = AOEDetector(**{**TINY, "backbone": faulty, "pretrain_epochs": 1, "epochs": 1}).fit(X, Y)
    det.set_params(warm_start=True, epochs=3)
    before = snapshot(det, PROBE)
    Faulty.calls, Faulty.at, Faulty.exc = 0, 5, RuntimeError  # 2nd of the 2 extra epochs
    with pytest.raises(RuntimeError, match="injected"):
        det.fit(X, Y)
    assert_untouched(det, before, PROBE)


# ----------------------------------------------------------- checkpoints and resuming
def test_checkpoint_written_after_every_epoch(tmp_path, monkeypatch):
    seen = []
    real_save = persistence.save

    def spy(det, path, _partial=False):
        seen.append((len(det.history_), os.path.basename(path), _partial))
        return real_save(det, path, _partial=_partial)

    monkeypatch.setattr(persistence, "save", spy)
    det = AOEDetector(**{**TINY, "pretrain_epochs": 2, "epochs": 2,
                         "checkpoint_dir": str(tmp_path / "ck")}).fit(X, Y)
    # a partial checkpoint after every epoch, then the complete detector (issue 20)
    assert seen == [(i, "checkpoint.aoe", True) for i in (1, 2, 3, 4)] + [(4, "checkpoint.aoe", False)]
    state, payload = _ckpt_weights(tmp_path / "ck")
    _assert_weights_equal(det.module_, state)
    assert sorted(os.listdir(tmp_path / "ck")) == ["checkpoint.aoe"]  # no temp files left


def test_resume_interrupted_fit_from_checkpoint_runs_only_remaining_epochs(faulty, tmp_path):
    params = {**TINY, "backbone": faulty, "pretrain_epochs": 2, "epochs": 3,
              "checkpoint_dir": str(tmp_path)}
    Faulty.at = 11  # finetune epoch 2 (steps 10-12)
    with pytest.warns(TrainingInterruptedWarning):
        first = AOEDetector(**params).fit(X, Y)
    assert [(r["stage"], r["epoch"]) for r in first.history_] == [
        ("pretrain", 1), ("pretrain", 2), ("finetune", 1)]

    Faulty.calls, Faulty.at = 0, None
    resumed = AOEDetector(**{**params, "warm_start": True})
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning: a clean resume
        warnings.simplefilter("ignore", CalibrationWarning)  # 8 held-out rows: expected
        resumed.fit(X, Y)
    assert [(r["stage"], r["epoch"]) for r in resumed.history_] == [
        ("pretrain", 1), ("pretrain", 2), ("finetune", 1), ("finetune", 2), ("finetune", 3)]
    assert repr(resumed.history_[:3]) == repr(first.history_)  # completed epochs kept as they were
    assert Faulty.calls == 2 * 3  # exactly the 2 remaining epochs of 3 steps
    assert resumed.m_in_ == first.m_in_ and resumed.m_out_ == first.m_out_
    assert np.isfinite(resumed.score_samples(PROBE)).all()
    _assert_weights_equal(resumed.module_, _ckpt_weights(tmp_path)[0])


def test_resume_builtin_backbone_with_non_index_labels(tmp_path):
    y37 = np.where(Y == 1, 7, 3)
    params = {**TINY, "epochs": 2, "checkpoint_dir": str(tmp_path)}
    first = AOEDetector(**{**params, "epochs": 1}).fit(X, y37)  # as if stopped after 2 epochs
    resumed = AOEDetector(**{**params, "warm_start": True}).fit(X, y37)
    assert resumed.classes_.tolist() == [3, 7]
    assert [r["stage"] for r in resumed.history_] == ["pretrain", "finetune", "finetune"]
    assert repr(resumed.history_[:2]) == repr(first.history_)
    assert set(resumed.predict_class(X[:10])) <= {3, 7}
    with pytest.raises(ValueError, match=r"`y` has labels \[5\] that the detector being warm-started"):
        AOEDetector(**{**params, "warm_start": True, "epochs": 3}).fit(X, np.where(Y == 1, 5, 3))


def test_resume_rejects_checkpoint_of_other_data(tmp_path):
    AOEDetector(**{**TINY, "checkpoint_dir": str(tmp_path)}).fit(X, Y)
    det = AOEDetector(**{**TINY, "warm_start": True, "checkpoint_dir": str(tmp_path)})
    with pytest.raises(ValueError, match=r"checkpoint in `checkpoint_dir`=.*samples of shape \(2,\), but X has samples of shape \(3,\)"):
        det.fit(np.c_[X, X[:, :1]], Y)
    assert not [k for k in vars(det) if k.endswith("_")]


def test_warm_start_counts_totals_like_sklearn(fitted):
    det = copy.deepcopy(fitted).set_params(warm_start=True)
    before = det.module_.state_dict()
    before = {k: v.clone() for k, v in before.items()}
    with pytest.warns(UserWarning, match=r"warm_start=True but all .* already done.*only the threshold"):
        det.fit(X, Y)
    _assert_weights_equal(det.module_, before)
    assert repr(det.history_) == repr(fitted.history_)
    assert det.offset_ == fitted.offset_  # same data, same split -> same threshold
    det.set_params(epochs=3).fit(X, Y)
    assert [(r["stage"], r["epoch"]) for r in det.history_] == [
        ("pretrain", 1), ("finetune", 1), ("finetune", 2), ("finetune", 3)]
    assert det.m_in_ == fitted.m_in_  # outlier exposure continues with its margins


# -------------------------------------------------------------------- reproducibility
REPRO_SCRIPT = textwrap.dedent("""
    import sys, numpy as np, torch
    torch.set_num_threads(int(sys.argv[1]))
    from aoe_detect import AOEDetector
    rng = np.random.RandomState(0)
    X = np.r_[rng.normal(0, 1, (40, 2)) + [3, 0], rng.normal(0, 1, (40, 2)) - [3, 0]]
    y = np.r_[np.zeros(40, int), np.ones(40, int)]
    probe = np.r_[X[:10], np.random.RandomState(5).uniform(-30, 30, (10, 2))]
    det = AOEDetector(epochs=1, pretrain_epochs=1, batch_size=32, device="cpu", random_state=0,
                      outliers="default").fit(X, y)
    print(det.score_samples(probe).tobytes().hex())
""")


def _repro_fit():
    return AOEDetector(**{**TINY, "outliers": "default"}).fit(X, Y)


def test_same_seed_bitwise_identical_in_process_and_across_processes():
    a = _repro_fit().score_samples(PROBE)
    b = _repro_fit().score_samples(PROBE)
    assert a.tobytes() == b.tobytes()
    out = subprocess.run([sys.executable, "-c", REPRO_SCRIPT, str(torch.get_num_threads())],
                         capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == a.tobytes().hex()


def test_same_seed_bitwise_identical_images_and_different_seeds_differ():
    params = {**TINY, "batch_size": 16, "outliers": "default", "attack": "pgd"}
    a = AOEDetector(**params).fit(XI, YI)
    b = AOEDetector(**params).fit(XI, YI)
    c = AOEDetector(**{**params, "random_state": 1}).fit(XI, YI)
    assert a.score_samples(PROBE_I).tobytes() == b.score_samples(PROBE_I).tobytes()
    assert a.offset_ == b.offset_ and a.history_[0]["loss"] == b.history_[0]["loss"]
    assert not np.array_equal(a.score_samples(PROBE_I), c.score_samples(PROBE_I))
    assert any(not torch.equal(v, c.module_.state_dict()[k])
               for k, v in a.module_.state_dict().items() if v.is_floating_point())


@pytest.mark.parametrize("random_state", [0, None])
def test_fit_leaves_global_rngs_alone(random_state):
    torch_state = torch.get_rng_state()
    np_state = np.random.get_state()
    py_state = random.getstate()
    AOEDetector(**{**TINY, "outliers": "default", "attack": "pgd",
                   "random_state": random_state}).fit(X, Y)
    AOEDetector(**{**TINY, "batch_size": 16, "outliers": "default",
                   "random_state": random_state}).fit(XI, YI)
    assert torch.equal(torch.get_rng_state(), torch_state)
    after = np.random.get_state()
    assert after[0] == np_state[0] and np.array_equal(after[1], np_state[1]) and after[2:] == np_state[2:]
    assert random.getstate() == py_state


# ------------------------------------------------------------------------ concurrency
@pytest.mark.parametrize("which", ["tabular", "images"])
def test_score_samples_from_8_threads_matches_serial(fitted, fitted_img, which):
    rng = np.random.RandomState(3)
    if which == "tabular":
        det, data = fitted, rng.normal(0, 4, (1500, 2))
    else:
        det, data = fitted_img, rng.rand(600, 1, 8, 8)
    chunks = np.array_split(data, 8)
    serial = [det.score_samples(c) for c in chunks]
    serial_all = det.score_samples(data)
    barrier = threading.Barrier(8)

    def work(i):
        barrier.wait()
        return det.score_samples(chunks[i]), det.score_samples(data), det.predict(chunks[i])

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(work, range(8)))
    for i, (part, whole, pred) in enumerate(results):
        assert part.tobytes() == serial[i].tobytes()
        assert whole.tobytes() == serial_all.tobytes()
        np.testing.assert_array_equal(pred, np.where(serial[i] - det.offset_ < 0, -1, 1))
    assert not det.module_.training


# ------------------------------------------------------------- fault-injection script
def test_fault_injection_script_handles_every_case_and_loses_nothing(tmp_path, capsys):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    spec = importlib.util.spec_from_file_location(
        "fault_injection", os.path.join(root, "benchmarks", "fault_injection.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "fault_injection.json").read_text())
    assert result["total"]["lost"] == 0
    assert result["total"]["handled"] == result["total"]["tried"] >= 900
    # the constraint-derived battery and the issue-11 classes are part of the table
    cats = set(result["summary"])
    assert {"bad parameter derived from its declared constraints",
            "persistence: edited file, checksum recomputed",
            "training fault: KeyboardInterrupt outside the steps"} <= cats
    md = (tmp_path / "fault_injection.md").read_text()
    assert "| **total** |" in md and "## Machine" in md and "## Versions" in md
    assert "data lost" in capsys.readouterr().out
