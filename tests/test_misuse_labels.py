"""Misuse of labels, user objects and the smaller parameters (issue 20): labels are never
reinterpreted silently, user objects fail clearly, a failed refit changes nothing.
docs/failure_modes.md lists these cases."""

import copy

import numpy as np
import pytest
import torch

from aoe_detect import AOEDetector
from aoe_detect.attacks import PGD
from aoe_detect.exceptions import NonFiniteLossError
from aoe_detect.model_selection import OODStratifiedKFold
from aoe_detect.testing import TINY, describe_change, quiet, snapshot, tiny_blobs

X, Y, PROBE = tiny_blobs()


@pytest.fixture(scope="module")
def fitted_img():
    rng = np.random.RandomState(1)
    XI = np.r_[rng.rand(16, 3, 4, 4) * 0.5, rng.rand(16, 3, 4, 4) * 0.5 + 0.5]
    return quiet(AOEDetector(**{**TINY, "batch_size": 16}).fit, XI, np.repeat([0, 1], 16)), XI


# ------------------------------------------------------------------------ labels
@pytest.mark.parametrize("marker", [True, False, np.bool_(True)])
def test_bool_outlier_label_refused(marker):
    with pytest.raises(ValueError, match=r"'outlier_label' parameter.*not a bool"):
        AOEDetector(**TINY, outlier_label=marker).fit(X, Y)


def test_string_minus_one_with_integer_marker_warns():
    ys = np.where(Y == 1, "b", "a").astype(object)
    ys[:3] = "-1"
    with pytest.warns(UserWarning, match=r"3 of them are '-1'.*outlier_label='-1'"):
        det = AOEDetector(**TINY).fit(X, ys.astype(str))
    assert "-1" in det.classes_.tolist()  # a class, as the warning says


@pytest.mark.parametrize("y, classes", [
    (Y.astype(bool), [False, True]),
    (Y.astype(np.uint8), [0, 1]),
    (np.where(Y == 1, np.uint64(2**63), np.uint64(5)), [5, 2**63]),
])
def test_classes_keep_the_users_dtype(y, classes):
    det = quiet(AOEDetector(**TINY).fit, X, y)
    assert det.classes_.dtype == y.dtype
    assert det.classes_.tolist() == classes
    assert det.predict_class(X[:4]).dtype == y.dtype


def test_score_with_string_labels_and_integer_marker_is_clear(fitted):
    with pytest.raises(ValueError, match=r"string labels.*outlier_label=-1 is an integer"):
        fitted.score(PROBE, np.r_[["a"] * 10, ["-1"] * 10])
    # numeric labels still work
    assert 0 <= fitted.score(PROBE, np.r_[np.zeros(10, int), -np.ones(10, int)]) <= 1


def test_cv_splitter_accepts_numpy_bool_shuffle():
    y = np.r_[Y, -np.ones(9, int)]
    Xo = np.zeros((len(y), 2))
    a = list(OODStratifiedKFold(3, shuffle=np.bool_(True), random_state=0).split(Xo, y))
    b = list(OODStratifiedKFold(3, shuffle=True, random_state=0).split(Xo, y))
    assert len(a) == 3
    assert all((ta == tb).all() for (_, ta), (_, tb) in zip(a, b))


# ------------------------------------------------------------------ user objects
class _Source:
    def __init__(self, shape=(2,), dtype=torch.float32, bad_after=None, nan_after=None):
        self.shape, self.dtype, self.calls = shape, dtype, 0
        self.bad_after, self.nan_after = bad_after, nan_after

    def sample(self, n, generator):
        self.calls += 1
        x = torch.rand((n, 2), generator=generator) * 20 - 10
        if self.bad_after is not None and self.calls > self.bad_after:
            return torch.zeros((n, *self.shape), dtype=self.dtype)
        if self.nan_after is not None and self.calls > self.nan_after:
            x[:] = float("nan")
        return x


@pytest.mark.parametrize("kw, match", [
    (dict(shape=(1, 2)), r"_Source.sample\(32, generator\) returned shape \(32, 1, 2\); expected \(32, 2\)"),
    (dict(shape=(2,), dtype=torch.int64), r"_Source.sample\(32, generator\) returned a tensor of dtype torch.int64"),
])
def test_wrong_outlier_batches_from_a_users_source_are_named(fitted, kw, match):
    det = copy.deepcopy(fitted)
    snap = snapshot(det, PROBE)
    det.set_params(outliers=_Source(bad_after=1, **kw))  # the probe at fit passes; training not
    with pytest.raises(ValueError, match=match):
        quiet(det.fit, X, Y)
    det.set_params(outliers="uniform")
    assert describe_change(det, snap, PROBE) is None


def test_refit_with_a_source_turning_nan_restores_the_previous_detector(fitted):
    det = copy.deepcopy(fitted)
    snap = snapshot(det, PROBE)
    det.set_params(outliers=_Source(nan_after=1))
    with pytest.raises(NonFiniteLossError, match="previously fitted detector is kept"):
        quiet(det.fit, X, Y)
    det.set_params(outliers="uniform")
    assert describe_change(det, snap, PROBE) is None


# ------------------------------------------------------------- smaller parameters
def test_nested_attack_params_on_the_string_default():
    det = AOEDetector(**TINY).set_params(attack__eps=0.05)
    assert det.get_params()["attack__eps"] == 0.05
    det = AOEDetector(**TINY).set_params(loss__lam=0.3)
    assert det.get_params()["loss__lam"] == 0.3
    with pytest.raises(ValueError, match=r"`attack`=None has no parameters"):
        AOEDetector(**TINY, attack=None).set_params(attack__eps=0.1)


def test_epsilon_reports_the_radius_an_attack_object_uses():
    det = quiet(AOEDetector(**{**TINY, "attack": PGD(eps=0.05, steps=2)}).fit, X, Y)
    assert det.epsilon_ == 0.05


def test_flattened_and_channels_last_images_named_at_scoring(fitted_img):
    det, XI = fitted_img
    with pytest.raises(ValueError, match=r"images of shape \(3, 4, 4\).*reshape\(-1, 3, 4, 4\)"):
        det.score_samples(XI.reshape(len(XI), -1))
    with pytest.raises(ValueError, match=r"channels-last.*transpose\(0, 3, 1, 2\)"):
        det.score_samples(XI.transpose(0, 2, 3, 1))
    assert np.isfinite(det.score_samples(XI)).all()
