"""Misuse of the scores (issue 20): a fitted score never goes stale after ``set_params``,
finite inputs never get NaN scores accepted as in-distribution, degenerate statistics are
named before they become a silent threshold. docs/failure_modes.md lists these cases."""

import copy
import pickle
import warnings

import numpy as np
import pytest

from aoe_detect import AOEDetector
from aoe_detect.exceptions import CalibrationWarning, StaleScoreError
from aoe_detect.scores import OODScore
from aoe_detect.testing import TINY, describe_change, quiet, snapshot, tiny_blobs

X, Y, PROBE = tiny_blobs()
# 20 features: rows of +-1e37 overflow float32 inside the MLP (inf - inf = NaN)
_R = np.random.RandomState(0)
X20 = _R.normal(0, 1, (100, 20))
Y20 = (X20[:, 0] > 0).astype(int)
HUGE20 = np.r_[np.full((1, 20), 1e37), np.full((1, 20), -1e37), _R.choice([-1e37, 1e37], (3, 20)),
               np.full((1, 20), 3e38)]


@pytest.fixture(scope="module")
def fitted_knn():
    return quiet(AOEDetector(**TINY, ood_score=OODScore("energy+knn", k=3)).fit, X, Y)


@pytest.fixture(scope="module")
def wide():
    """One fit per score on 20 features (shared by the non-finite tests)."""
    return {s: quiet(AOEDetector(**TINY, ood_score=s).fit, X20, Y20)
            for s in ("energy", "knn", "energy+mahalanobis")}


# ------------------------------------------------------------ 1. stale fitted score
@pytest.mark.parametrize("param, value", [("ood_score", "energy"), ("ood_score", "mahalanobis"),
                                          ("ood_score__feature_layer", "net.0")])
def test_refit_params_refuse_to_score_and_to_save(fitted, tmp_path, param, value):
    det = copy.deepcopy(fitted)
    snap = snapshot(det, PROBE)
    det.set_params(**{param: value})
    for call in (det.score_samples, det.decision_function, det.predict, det.perturb):
        with pytest.raises(StaleScoreError, match=rf"`{param}` was changed .*fit again"):
            call(PROBE)
    with pytest.raises(StaleScoreError, match=param):
        det.save(tmp_path / "d.aoe")
    assert not (tmp_path / "d.aoe").exists()  # never a file that load() would reject
    det.set_params(ood_score=fitted.ood_score)  # set back: exactly as fitted
    assert describe_change(det, snap, PROBE) is None


def test_knn_max_samples_refuses(fitted_knn):
    det = copy.deepcopy(fitted_knn).set_params(ood_score__max_samples=5)
    with pytest.raises(StaleScoreError, match="ood_score__max_samples"):
        det.score_samples(PROBE)


def test_irrelevant_score_params_change_nothing(fitted):
    # the k-NN settings mean nothing to energy+mahalanobis: the scores stay bitwise the same
    det = copy.deepcopy(fitted).set_params(ood_score__k=7, ood_score__max_samples=10)
    assert det.score_samples(PROBE).tobytes() == fitted.score_samples(PROBE).tobytes()


def _refit_with(params, base_params):
    return quiet(AOEDetector(**{**base_params, **params}).fit, X, Y)


def _held_out_rows():
    """The rows fit held out for the threshold (TINY: random_state=0, 10% of 80 rows)."""
    from aoe_detect._fit_steps import seed_from

    return X[np.random.RandomState(seed_from(0)).permutation(len(X))[:8]]


@pytest.mark.parametrize("param, value", [("temperature", 2.0), ("contamination", 0.2)])
def test_temperature_and_contamination_rebuild_score_and_threshold(fitted, tmp_path, param, value):
    """A new temperature / contamination takes effect at once: the score, the
    standardisation of the sum and the threshold are rebuilt from the held-out outputs kept
    at fit, exactly as a rebuild on the held-out rows themselves gives them."""
    det = copy.deepcopy(fitted)
    det.set_params(**{param: value})
    s = det.score_samples(PROBE)
    ref = copy.deepcopy(fitted)
    del ref._held_out  # as a loaded detector: rebuilt from the held-out rows given
    quiet(ref.set_params(**{param: value}).recalibrate, _held_out_rows())
    np.testing.assert_allclose(s, ref.score_samples(PROBE), rtol=1e-5, atol=1e-6)
    assert det.offset_ == pytest.approx(ref.offset_, rel=1e-5, abs=1e-6)
    if param == "temperature":
        assert not np.allclose(s, fitted.score_samples(PROBE))  # really the new score
    else:  # same scores, new threshold: the same as a fit with that contamination
        assert s.tobytes() == fitted.score_samples(PROBE).tobytes()
        assert det.offset_ == _refit_with({param: value}, TINY).offset_
    # the saved file is consistent and loads, with the same decisions
    back = AOEDetector.load(det.save(tmp_path / "d.aoe"))
    assert back.get_params()[param] == value
    assert back.decision_function(PROBE).tobytes() == det.decision_function(PROBE).tobytes()
    # set back: bitwise the fitted detector
    det.set_params(**{param: fitted.get_params()[param]})
    assert det.score_samples(PROBE).tobytes() == fitted.score_samples(PROBE).tobytes()
    assert det.offset_ == fitted.offset_


def test_knn_k_rebuilds_score_and_threshold(fitted_knn):
    det = copy.deepcopy(fitted_knn).set_params(ood_score__k=5)
    ref = quiet(AOEDetector(**TINY, ood_score=OODScore("energy+knn", k=5)).fit, X, Y)
    np.testing.assert_allclose(det.score_samples(PROBE), ref.score_samples(PROBE), rtol=1e-5,
                               atol=1e-6)
    assert det.offset_ == pytest.approx(ref.offset_, rel=1e-5, abs=1e-6)


def test_loaded_detector_temperature_needs_recalibrate_with_data(fitted, tmp_path):
    det = AOEDetector.load(fitted.save(tmp_path / "d.aoe"))
    det.set_params(temperature=3.0)
    with pytest.raises(StaleScoreError, match=r"temperature.*recalibrate\(X\)"):
        det.predict(PROBE)
    det.recalibrate(X)  # rebuilt on the ID rows given
    s = det.score_samples(X)
    assert np.isfinite(s).all()
    # the threshold rests on X's scores: at most contamination of X rejected
    assert np.mean(s < det.offset_) <= det.contamination
    np.testing.assert_array_equal(det.validation_scores_, s)
    # and the file written now is consistent
    back = AOEDetector.load(det.save(tmp_path / "e.aoe"))
    assert back.decision_function(PROBE).tobytes() == det.decision_function(PROBE).tobytes()


def test_a_pickle_knows_what_its_score_was_fitted_for(fitted):
    det = copy.deepcopy(fitted).set_params(ood_score="energy")
    back = pickle.loads(pickle.dumps(det))
    with pytest.raises(StaleScoreError, match="ood_score"):
        back.score_samples(PROBE)
    back.set_params(ood_score=fitted.ood_score)
    assert back.score_samples(PROBE).tobytes() == fitted.score_samples(PROBE).tobytes()
    # pickles do not keep the held-out outputs: a new temperature needs recalibrate(X)
    t = pickle.loads(pickle.dumps(fitted)).set_params(temperature=2.0)
    with pytest.raises(StaleScoreError, match=r"recalibrate\(X\)"):
        t.predict(PROBE)
    # a change applied before pickling travels with it
    applied = copy.deepcopy(fitted).set_params(temperature=2.0)
    s = applied.score_samples(PROBE)
    assert pickle.loads(pickle.dumps(applied)).score_samples(PROBE).tobytes() == s.tobytes()


def test_recalibrate_accepts_the_user_guide_keyword(fitted):
    a = copy.deepcopy(fitted).recalibrate(X_id=X)
    b = copy.deepcopy(fitted).recalibrate(X)
    assert a.offset_ == b.offset_
    with pytest.raises(TypeError, match="both"):
        copy.deepcopy(fitted).recalibrate(X, X_id=X)


def test_failed_recalibrate_changes_nothing(fitted):
    det = copy.deepcopy(fitted)
    snap = snapshot(det, PROBE)
    with pytest.raises(ValueError):
        det.recalibrate(X[:, :1])
    assert describe_change(det, snap, PROBE) is None


# ----------------------------------------------- 2. finite inputs, finite scores
@pytest.mark.parametrize("score", ["energy", "knn", "energy+mahalanobis"])
def test_huge_finite_inputs_never_nan_and_never_silently_id(wide, score):
    det = wide[score]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no NonFiniteScoreWarning: float64 recomputation
        warnings.simplefilter("ignore", CalibrationWarning)
        s = det.score_samples(HUGE20)
    assert s.dtype == np.float64 and np.isfinite(s).all(), s
    ok = det.score_samples(X20[:5])
    assert np.isfinite(ok).all()


@pytest.mark.parametrize("magnitude", [1e3, 1e10, 1e20, 1e30, 1e37, 3e38])
def test_scores_finite_over_magnitudes(wide, magnitude):
    rows = np.sign(np.random.RandomState(int(np.log10(magnitude))).normal(size=(4, 20))) * magnitude
    for det in wide.values():
        assert np.isfinite(det.score_samples(rows)).all()


def test_non_finite_scores_become_most_ood_with_a_warning(wide, monkeypatch):
    det = copy.deepcopy(wide["energy"])
    from aoe_detect import _scoring
    from aoe_detect.exceptions import NonFiniteScoreWarning

    real = _scoring.Rows.apply

    def nan_rows(self, X, fn, dtype, tail=(), model=None):
        out = real(self, X, fn, dtype, tail, model)
        out[:2] = np.nan  # as if even float64 had overflowed
        return out

    monkeypatch.setattr(_scoring.Rows, "apply", nan_rows)
    with pytest.warns(NonFiniteScoreWarning, match="-inf"):
        s = det.score_samples(X20[:4])
    assert (s[:2] == -np.inf).all() and np.isfinite(s[2:]).all()
    with pytest.warns(NonFiniteScoreWarning):
        assert (det.predict(X20[:4])[:2] == -1).all()


# ------------------------------------------------ 3. degenerate statistics
def test_mahalanobis_on_duplicated_rows_is_refused():
    Xd = np.repeat(X[[0, 45]], 40, axis=0)  # two distinct rows, one per class
    yd = np.repeat([0, 1], 40)
    with pytest.raises(ValueError, match=r"mahalanobis.*distinct.*duplicated"):
        quiet(AOEDetector(**TINY, ood_score="mahalanobis").fit, Xd, yd)


def test_zero_validation_fraction_with_knn_warns():
    with pytest.warns(CalibrationWarning, match=r"near-zero spread.*own nearest neighbour"):
        AOEDetector(**TINY, ood_score="knn", validation_fraction=0).fit(X, Y)


def test_knn_k_above_the_bank_warns():
    with pytest.warns(UserWarning, match=r"ood_score__k=500 is larger than the \d+ ID training"):
        AOEDetector(**{**TINY, "ood_score": OODScore("knn", k=500)}).fit(X, Y)


@pytest.mark.parametrize("param", ["ood_score__max_samples", "batch_size", "ood_score__k",
                                   "epochs"])
def test_bools_are_not_integers(param):
    name = param.split("__")[-1]
    with pytest.raises(ValueError, match=rf"'{name}' parameter.*not a bool"):
        AOEDetector(**TINY).set_params(**{param: True}).fit(X, Y)
