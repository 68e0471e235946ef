"""Tests for aoe_detect.metrics.

Conventions under test: scores are higher = more in-distribution (ID); ID is the positive
class unless a name says otherwise; label vectors mark OOD rows with y < 0.
"""

import doctest
import math
import pickle
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.base import BaseEstimator
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.model_selection import GridSearchCV, StratifiedKFold, cross_val_score

import aoe_detect.metrics as metrics_module
from aoe_detect.metrics import (
    aupr_in,
    aupr_out,
    auroc,
    auroc_scorer,
    fpr_at_tpr,
    fpr_at_tpr_ood_positive,
    ood_report,
    ood_scorer,
    split_scores,
)

HYP = settings(max_examples=50, deadline=None)

ALL_METRICS = [auroc, aupr_in, aupr_out, fpr_at_tpr, fpr_at_tpr_ood_positive]


# --------------------------------------------------------------------------- oracles
def _pairwise_auroc(s_id, s_ood):
    """P(ID score > OOD score) + 0.5 P(equal), by brute force over all pairs."""
    s_id, s_ood = np.asarray(s_id, float)[:, None], np.asarray(s_ood, float)[None, :]
    return float(np.mean((s_id > s_ood) + 0.5 * (s_id == s_ood)))


def _k_needed(tpr, n):
    """Smallest k with k / n >= tpr (same float comparison as roc_curve's tps / tps[-1])."""
    return next(k for k in range(1, n + 1) if k / n >= tpr)


def _fpr_id_positive_oracle(s_id, s_ood, tpr):
    """Threshold = k-th largest ID score; fraction of OOD with score >= threshold."""
    s_id, s_ood = np.asarray(s_id, float), np.asarray(s_ood, float)
    thr = np.sort(s_id)[::-1][_k_needed(tpr, len(s_id)) - 1]
    return float(np.mean(s_ood >= thr))


def _fpr_ood_positive_oracle(s_id, s_ood, tpr):
    """Threshold = k-th smallest OOD score; fraction of ID with score <= threshold."""
    s_id, s_ood = np.asarray(s_id, float), np.asarray(s_ood, float)
    thr = np.sort(s_ood)[_k_needed(tpr, len(s_ood)) - 1]
    return float(np.mean(s_id <= thr))


# ------------------------------------------------------------------- hand-computed cases
def test_separated_case_all_metrics_perfect():
    # id=[3,4] all above ood=[1,2]
    assert auroc([3, 4], [1, 2]) == 1.0
    assert aupr_in([3, 4], [1, 2]) == 1.0
    assert aupr_out([3, 4], [1, 2]) == 1.0
    assert fpr_at_tpr([3, 4], [1, 2]) == 0.0
    assert fpr_at_tpr_ood_positive([3, 4], [1, 2]) == 0.0


def test_reversed_case():
    # id=[1,2] all below ood=[3,4]: no pair ordered correctly.
    assert auroc([1, 2], [3, 4]) == 0.0
    # Ranking by score: 4(O) 3(O) 2(I) 1(I). ID hits at ranks 3 and 4:
    # AP_in = 1/2 * (1/3) + 1/2 * (2/4) = 5/12.
    assert aupr_in([1, 2], [3, 4]) == pytest.approx(5 / 12)
    # By -score: -1(I) -2(I) -3(O) -4(O): OOD hits at ranks 3 and 4 -> also 5/12.
    assert aupr_out([1, 2], [3, 4]) == pytest.approx(5 / 12)
    # Accepting both ID needs threshold 1, which accepts every OOD.
    assert fpr_at_tpr([1, 2], [3, 4]) == 1.0
    assert fpr_at_tpr_ood_positive([1, 2], [3, 4]) == 1.0


def test_interleaved_case():
    # id=[2,4], ood=[1,3]. Pairs (id, ood): (2,1)+ (2,3)- (4,1)+ (4,3)+ -> 3/4.
    s_id, s_ood = [2, 4], [1, 3]
    assert auroc(s_id, s_ood) == 0.75
    # Ranking: 4(I) 3(O) 2(I) 1(O): AP_in = (1/1 + 2/3) / 2 = 5/6.
    assert aupr_in(s_id, s_ood) == pytest.approx(5 / 6)
    # By -score: -1(O) -2(I) -3(O) -4(I): AP_out = (1/1 + 2/3) / 2 = 5/6.
    assert aupr_out(s_id, s_ood) == pytest.approx(5 / 6)
    # tpr=0.95 needs both ID -> threshold 2 -> OOD >= 2 is {3}: 1/2.
    assert fpr_at_tpr(s_id, s_ood) == 0.5
    # tpr=0.5 needs one ID -> threshold 4 -> no OOD accepted.
    assert fpr_at_tpr(s_id, s_ood, tpr=0.5) == 0.0
    # OOD positive: detecting both OOD needs threshold 3 -> ID <= 3 is {2}: 1/2.
    assert fpr_at_tpr_ood_positive(s_id, s_ood) == 0.5
    assert fpr_at_tpr_ood_positive(s_id, s_ood, tpr=0.5) == 0.0


def test_ties_count_half_in_auroc():
    # id=[1,2,2], ood=[2,3]: only (2,2) pairs tie (two of them, 0.5 each); no pair wins.
    assert auroc([1, 2, 2], [2, 3]) == pytest.approx(1 / 6)
    assert auroc([5, 5], [5, 5, 5]) == 0.5


def test_fpr_conventions_differ_on_asymmetric_case():
    # id = [2, 3, 4, 5] (n_id = 4), ood = [1, 3.5, 6] (n_ood = 3).
    #
    # ID positive (fpr_at_tpr), accept when score >= t:
    #   tpr=0.95: need k=4 ID (3/4 < 0.95) -> t = 2 -> OOD accepted {3.5, 6} -> 2/3
    #   tpr=0.5 : need k=2 ID -> t = 4 -> OOD accepted {6} -> 1/3
    # OOD positive (fpr_at_tpr_ood_positive), flag OOD when score <= t:
    #   tpr=0.95: need all 3 OOD -> t = 6 -> ID flagged {2,3,4,5} -> 4/4 = 1
    #   tpr=0.5 : need k=2 OOD (1/3 < 0.5) -> t = 3.5 -> ID flagged {2, 3} -> 2/4
    s_id, s_ood = [2, 3, 4, 5], [1, 3.5, 6]
    assert fpr_at_tpr(s_id, s_ood) == pytest.approx(2 / 3)
    assert fpr_at_tpr(s_id, s_ood, tpr=0.5) == pytest.approx(1 / 3)
    assert fpr_at_tpr_ood_positive(s_id, s_ood) == 1.0
    assert fpr_at_tpr_ood_positive(s_id, s_ood, tpr=0.5) == 0.5
    # tpr=1 is allowed: same as 0.95 here because n < 20.
    assert fpr_at_tpr(s_id, s_ood, tpr=1.0) == pytest.approx(2 / 3)


def test_fpr_at_tpr_ties_at_threshold_are_accepted():
    # id=[0,1,1,1], ood=[-1,1]; tpr=0.5 needs 2 ID -> t = 1; the OOD tied at 1 is accepted.
    assert fpr_at_tpr([0, 1, 1, 1], [-1, 1], tpr=0.5) == 0.5
    # ID tied with the OOD threshold are flagged in the OOD-positive convention:
    # ood=[0,2], tpr=0.5 -> t = 0 -> ID <= 0: {0, 0} of [0, 0, 3, 4] -> 1/2.
    assert fpr_at_tpr_ood_positive([0, 0, 3, 4], [0, 2], tpr=0.5) == 0.5


def test_fpr_at_tpr_collinear_ties_not_skipped():
    # Tied groups each holding one ID and one OOD make the ROC points collinear:
    # (0,0), (1/3,1/3), (2/3,2/3), (1,1). sklearn's drop_intermediate=True would drop the
    # middle points and return 1.0. Correct: tpr=0.5 needs 2 of 3 ID -> t = 2 -> OOD {3,2}.
    assert fpr_at_tpr([3, 2, 1], [3, 2, 1], tpr=0.5) == pytest.approx(2 / 3)
    assert fpr_at_tpr_ood_positive([3, 2, 1], [3, 2, 1], tpr=0.5) == pytest.approx(2 / 3)


def test_ood_report_keys_and_values():
    s_id, s_ood = [2, 3, 4, 5], [1, 3.5, 6]
    rep = ood_report(s_id, s_ood)
    assert list(rep) == ["auroc", "aupr_in", "aupr_out", "fpr95", "n_id", "n_ood"]
    # AUROC by hand: ID 2 beats {1}; 3 beats {1}; 4 beats {1,3.5}; 5 beats {1,3.5}: 6/12.
    assert rep["auroc"] == 0.5
    assert rep["aupr_in"] == aupr_in(s_id, s_ood)
    assert rep["aupr_out"] == aupr_out(s_id, s_ood)
    assert rep["fpr95"] == pytest.approx(2 / 3)
    assert (rep["n_id"], rep["n_ood"]) == (4, 3)
    assert ood_report(s_id, s_ood, tpr=0.5)["fpr95"] == pytest.approx(1 / 3)
    assert all(type(rep[k]) is float for k in ("auroc", "aupr_in", "aupr_out", "fpr95"))
    assert type(rep["n_id"]) is int and type(rep["n_ood"]) is int


def test_accepts_numpy_and_torch():
    torch = pytest.importorskip("torch")
    ref = ood_report([2, 4], [1, 3])
    t_id = torch.tensor([2.0, 4.0], requires_grad=True)
    assert ood_report(t_id, torch.tensor([1, 3])) == ref
    assert ood_report(torch.tensor([2.0, 4.0], dtype=torch.bfloat16), np.array([1.0, 3.0])) == ref
    assert ood_report(np.array([2, 4], dtype=np.int64), (1.0, 3.0)) == ref
    assert ood_report(np.array([2, 4], dtype=np.float32), [1, 3]) == ref


# ------------------------------------------------------------------------- properties
small_ints = st.lists(st.integers(-30, 30), min_size=1, max_size=25)
TRANSFORMS = {
    "exp": np.exp,
    "affine": lambda x: 0.37 * x - 12.5,
    "arctan": lambda x: np.arctan(x / 7.0),
    "cube": lambda x: x**3 + x,
}


@HYP
@given(s_id=small_ints, s_ood=small_ints, tpr=st.floats(0.01, 1.0))
def test_matches_brute_force_definitions(s_id, s_ood, tpr):
    # Integer scores -> plenty of exact ties, no float coincidences.
    assert auroc(s_id, s_ood) == pytest.approx(_pairwise_auroc(s_id, s_ood), abs=1e-12)
    assert fpr_at_tpr(s_id, s_ood, tpr) == pytest.approx(
        _fpr_id_positive_oracle(s_id, s_ood, tpr), abs=1e-12
    )
    assert fpr_at_tpr_ood_positive(s_id, s_ood, tpr) == pytest.approx(
        _fpr_ood_positive_oracle(s_id, s_ood, tpr), abs=1e-12
    )
    # The OOD-positive convention is the ID-positive one with roles and sign swapped.
    s_id_neg = [-v for v in s_ood]
    s_ood_neg = [-v for v in s_id]
    assert fpr_at_tpr_ood_positive(s_id, s_ood, tpr) == fpr_at_tpr(s_id_neg, s_ood_neg, tpr)
    assert aupr_out(s_id, s_ood) == aupr_in(s_id_neg, s_ood_neg)


@HYP
@given(s_id=small_ints, s_ood=small_ints, name=st.sampled_from(sorted(TRANSFORMS)))
def test_invariant_to_strictly_increasing_transforms(s_id, s_ood, name):
    # Integers in [-30, 30] stay distinct under each transform in float64, so ranks and ties
    # are preserved exactly.
    f = TRANSFORMS[name]
    a, b = np.asarray(s_id, float), np.asarray(s_ood, float)
    assert ood_report(f(a), f(b)) == pytest.approx(ood_report(a, b), abs=1e-12)
    for tpr in (0.5, 0.95):
        assert fpr_at_tpr_ood_positive(f(a), f(b), tpr) == fpr_at_tpr_ood_positive(a, b, tpr)


finite = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False)


@HYP
@given(
    s_id=st.lists(finite, min_size=1, max_size=30),
    gaps=st.lists(st.floats(0.0, 1e6), min_size=1, max_size=30),
)
def test_perfect_separation_for_any_data(s_id, gaps):
    # Every OOD score is at least 1 below the smallest ID score.
    s_ood = [min(s_id) - 1.0 - g for g in gaps]
    # sklearn's trapezoid sum can land 1 ulp below 1 (found by hypothesis): 1 up to rounding.
    assert auroc(s_id, s_ood) == pytest.approx(1.0, abs=1e-15)
    # Average precision sums precision steps in floating point: 1 up to rounding.
    assert aupr_in(s_id, s_ood) == pytest.approx(1.0, abs=1e-12)
    assert aupr_out(s_id, s_ood) == pytest.approx(1.0, abs=1e-12)
    assert fpr_at_tpr(s_id, s_ood) == 0.0
    assert fpr_at_tpr_ood_positive(s_id, s_ood) == 0.0
    # Roles swapped: fully reversed.
    assert auroc(s_ood, s_id) == pytest.approx(0.0, abs=1e-15)
    assert fpr_at_tpr(s_ood, s_id) == 1.0


@HYP
@given(values=st.lists(st.integers(-1000, 1000), min_size=2, max_size=40, unique=True),
       data=st.data())
def test_auroc_antisymmetric_without_ties(values, data):
    n_id = data.draw(st.integers(1, len(values) - 1))
    s_id, s_ood = values[:n_id], values[n_id:]
    assert auroc(s_id, s_ood) == pytest.approx(1.0 - auroc(s_ood, s_id), abs=1e-12)


# ------------------------------------------------------------------------- validation
BAD_INPUTS = [
    pytest.param([1.0, np.nan], "NaN", id="nan"),
    pytest.param([1.0, np.inf], "infinite", id="inf"),
    pytest.param([-np.inf, 0.0], "infinite", id="-inf"),
    pytest.param([], "empty", id="empty"),
    pytest.param(np.zeros((2, 2)), "1-D", id="2d"),
    pytest.param(np.float64(3.0), "1-D", id="0d"),
    pytest.param(["a", "b"], "real numbers", id="strings"),
    pytest.param([1.0, None], "real numbers", id="none"),
]


@pytest.mark.parametrize("func", ALL_METRICS + [ood_report], ids=lambda f: f.__name__)
@pytest.mark.parametrize("bad, fragment", BAD_INPUTS)
@pytest.mark.parametrize("which", ["scores_id", "scores_ood"])
def test_invalid_scores_raise_naming_argument(func, bad, fragment, which):
    good = [0.0, 1.0]
    args = (bad, good) if which == "scores_id" else (good, bad)
    with pytest.raises(ValueError, match=fragment) as info:
        func(*args)
    assert str(info.value).startswith(which)


def test_nan_message_is_specific():
    with pytest.raises(ValueError) as info:
        auroc([0.0, 1.0], [2.0, np.nan, np.inf])
    assert str(info.value) == (
        "scores_ood must be finite, but it contains 1 NaN and 1 infinite value(s) "
        "(first at index 1: nan)."
    )


@pytest.mark.parametrize("func", [fpr_at_tpr, fpr_at_tpr_ood_positive, ood_report])
@pytest.mark.parametrize("tpr", [0.0, -0.1, 1.0000001, 1.5, float("nan"), True, "0.95", None])
def test_invalid_tpr_raises(func, tpr):
    with pytest.raises(ValueError, match=r"^tpr must"):
        func([0.0, 1.0], [0.5], tpr=tpr)


def test_constant_scores_are_valid():
    # All scores equal: chance level, and every sample sits at the only threshold.
    rep = ood_report([1.0, 1.0], [1.0, 1.0, 1.0])
    assert rep["auroc"] == 0.5
    assert rep["fpr95"] == 1.0
    assert rep["aupr_in"] == pytest.approx(2 / 5)
    assert rep["aupr_out"] == pytest.approx(3 / 5)


# --------------------------------------------------------------------- split + scorers
class CenterDistance(BaseEstimator):
    """Tiny detector: score = -|x - (mean of the ID training rows + shift)|; higher = more ID."""

    def __init__(self, shift=0.0):
        self.shift = shift

    def fit(self, X, y=None):
        X = np.asarray(X, dtype=float)
        keep = np.ones(len(X), bool) if y is None else np.asarray(y) >= 0
        self.center_ = X[keep].mean(axis=0) + self.shift
        return self

    def score_samples(self, X):
        return -np.linalg.norm(np.asarray(X, dtype=float) - self.center_, axis=1)


def _toy_data():
    rng = np.random.RandomState(0)
    X_id = rng.normal(0.0, 1.0, size=(30, 2))
    X_ood = rng.normal(0.0, 1.0, size=(15, 2)) + np.array([4.0, 0.0])
    X = np.vstack([X_id, X_ood])
    y = np.r_[np.ones(30, int), -np.ones(15, int)]
    return X, y


def test_split_scores():
    s_id, s_ood = split_scores([0.9, -2.0, 0.7, -1.5, 0.1], [1, -1, 0, -3, 7])
    np.testing.assert_array_equal(s_id, [0.9, 0.7, 0.1])
    np.testing.assert_array_equal(s_ood, [-2.0, -1.5])
    assert s_id.dtype == np.float64


@pytest.mark.parametrize(
    "y, fragment",
    [
        (None, "y is required"),
        ([1, -1], "y has 2 entries but scores has 3"),
        ([[1], [-1], [1]], "y must be 1-D"),
        ([1.0, np.nan, -1.0], "y contains NaN"),
        (["a", "b", "c"], "y must be numeric"),
    ],
)
def test_split_scores_validation(y, fragment):
    with pytest.raises(ValueError, match=fragment):
        split_scores([0.0, 1.0, 2.0], y)


def test_split_scores_invalid_scores_named():
    with pytest.raises(ValueError, match=r"^scores must be finite"):
        split_scores([0.0, np.nan], [1, -1])


@pytest.mark.parametrize("y", [[1, 1, 0], [-1, -1, -2]], ids=["no-ood", "no-id"])
def test_one_class_warns_and_scorer_returns_nan(y):
    X = np.array([[0.0], [1.0], [2.0]])
    est = CenterDistance().fit(X)
    with pytest.warns(UndefinedMetricWarning, match="undefined"):
        split_scores(est.score_samples(X), y)
    for metric in ("auroc", "aupr_in", "aupr_out", "fpr_at_tpr", "fpr_at_tpr_ood_positive"):
        with pytest.warns(UndefinedMetricWarning):
            value = ood_scorer(metric)(est, X, np.asarray(y))
        assert math.isnan(value)


def test_scorer_values_and_negative_fpr_sign():
    # 1-D data, ID center 0: scores = -|x|.
    X = np.array([[-1.0], [0.0], [1.0], [2.0], [0.5], [3.0]])
    y = np.array([1, 1, 1, 1, -1, -1])
    est = CenterDistance().fit(X, y)  # center = mean(-1, 0, 1, 2) = 0.5
    # scores: ID -1.5, -0.5, -0.5, -1.5; OOD 0.0, -2.5.
    # AUROC pairs: OOD 0.0 beats every ID, OOD -2.5 none -> 4/8.
    assert auroc_scorer(est, X, y) == 0.5
    # Accept all ID: t = -1.5 -> OOD 0.0 accepted -> FPR 1/2, scorer returns -1/2.
    assert ood_scorer("fpr_at_tpr")(est, X, y) == -0.5
    assert ood_scorer("fpr95")(est, X, y) == -0.5
    # tpr=0.5: t = -0.5 -> OOD 0.0 accepted -> FPR 1/2.
    assert ood_scorer("fpr_at_tpr", tpr=0.5)(est, X, y) == -0.5
    # OOD positive: detect both OOD needs t = 0.0 -> all ID flagged -> -1.
    assert ood_scorer("fpr_at_tpr_ood_positive")(est, X, y) == -1.0
    # Greater is better: a better detector gets a higher (less negative) fpr score.
    X_sep = np.array([[-1.0], [0.0], [1.0], [2.0], [9.0], [-9.0]])
    est_sep = CenterDistance().fit(X_sep, y)
    assert ood_scorer("fpr_at_tpr")(est_sep, X_sep, y) == 0.0
    assert auroc_scorer(est_sep, X_sep, y) == 1.0
    s_id, s_ood = split_scores(est.score_samples(X), y)
    assert ood_scorer("aupr_in")(est, X, y) == aupr_in(s_id, s_ood)
    assert ood_scorer("aupr_out")(est, X, y) == aupr_out(s_id, s_ood)


def test_cross_val_score_matches_manual_folds():
    X, y = _toy_data()
    cv = StratifiedKFold(n_splits=3, shuffle=True, random_state=0)
    for metric, sign in [("auroc", 1.0), ("fpr_at_tpr", -1.0)]:
        got = cross_val_score(CenterDistance(), X, y, cv=cv, scoring=ood_scorer(metric))
        expected = []
        for train, test in cv.split(X, y):
            est = CenterDistance().fit(X[train], y[train])
            s = est.score_samples(X[test])
            s_id, s_ood = s[y[test] >= 0], s[y[test] < 0]
            func = auroc if metric == "auroc" else fpr_at_tpr
            expected.append(sign * func(s_id, s_ood))
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)
        assert got.shape == (3,)
        if metric == "auroc":
            assert np.all((got > 0.5) & (got <= 1.0))
        else:
            assert np.all((got <= 0.0) & (got >= -1.0)) and np.any(got < 0.0)


def test_cross_val_score_fold_without_ood_gives_nan():
    X, y = _toy_data()  # rows 0-29 ID, rows 30-44 OOD
    idx = np.arange(len(y))
    id_only = idx[:10]  # a test fold with no OOD row
    mixed = np.r_[idx[10:20], idx[30:35]]
    cv = [(np.setdiff1d(idx, test), test) for test in (id_only, mixed)]
    with pytest.warns(UndefinedMetricWarning, match="No OOD"):
        got = cross_val_score(CenterDistance(), X, y, cv=cv, scoring=auroc_scorer)
    assert math.isnan(got[0])
    assert 0.0 <= got[1] <= 1.0


def test_grid_search_picks_better_detector():
    X, y = _toy_data()
    grid = GridSearchCV(
        CenterDistance(),
        {"shift": [0.0, 3.0]},
        scoring={"auroc": auroc_scorer, "fpr": ood_scorer("fpr_at_tpr")},
        refit="auroc",
        cv=StratifiedKFold(n_splits=3, shuffle=True, random_state=0),
    ).fit(X, y)
    assert grid.best_params_ == {"shift": 0.0}
    res = grid.cv_results_
    assert res["mean_test_auroc"][0] > res["mean_test_auroc"][1]
    assert np.all(res["mean_test_fpr"] <= 0.0)


def test_ood_scorer_validation_and_repr():
    with pytest.raises(ValueError, match=r"^metric must be one of .*'nope'"):
        ood_scorer("nope")
    with pytest.raises(ValueError, match=r"^tpr must"):
        ood_scorer("fpr_at_tpr", tpr=0.0)
    assert repr(auroc_scorer) == "ood_scorer(metric='auroc')"
    assert repr(ood_scorer("fpr95", tpr=0.9)) == "ood_scorer(metric='fpr95', tpr=0.9)"
    with pytest.raises(TypeError, match="score_samples"):
        auroc_scorer(object(), np.zeros((2, 1)), np.array([1, -1]))


def test_scorer_is_picklable():
    X = np.array([[-1.0], [0.0], [1.0], [2.0], [0.5], [3.0]])
    y = np.array([1, 1, 1, 1, -1, -1])
    est = CenterDistance().fit(X, y)
    for scorer in (auroc_scorer, ood_scorer("fpr_at_tpr", tpr=0.5)):
        clone = pickle.loads(pickle.dumps(scorer))
        assert clone(est, X, y) == scorer(est, X, y)


def test_module_doctests():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = doctest.testmod(metrics_module, optionflags=doctest.ELLIPSIS)
    assert result.attempted >= 15
    assert result.failed == 0
