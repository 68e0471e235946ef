"""OODStratifiedKFold: labelled OOD rows never train the model; folds are never NaN."""

import numpy as np
import pytest
from sklearn.base import BaseEstimator, OutlierMixin
from sklearn.datasets import load_wine
from sklearn.model_selection import (GridSearchCV, StratifiedKFold, cross_val_predict,
                                     cross_val_score, cross_validate)
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from aoe_detect import AOEDetector
from aoe_detect.model_selection import OODStratifiedKFold, ood_mask

FAST = dict(epochs=2, pretrain_epochs=3, batch_size=32, random_state=0, device="cpu")


@pytest.fixture(scope="module")
def wine():
    """Wine: classes 0 and 1 in-distribution, class 2 relabelled -1 (OOD)."""
    X, y = load_wine(return_X_y=True)
    return X, np.where(y == 2, -1, y)


class _Spy(OutlierMixin, BaseEstimator):
    """Records the labels each fit receives; scores by distance to the ID mean."""

    seen = []

    def fit(self, X, y=None):
        type(self).seen.append(np.asarray(y).copy())
        self.mean_ = np.asarray(X)[np.asarray(y) >= 0].mean(0)
        self.scale_ = np.asarray(X)[np.asarray(y) >= 0].std(0) + 1e-9
        return self

    def score_samples(self, X):
        return -np.abs((np.asarray(X) - self.mean_) / self.scale_).sum(1)

    def decision_function(self, X):
        return self.score_samples(X) + 20

    def predict(self, X):
        return np.where(self.decision_function(X) < 0, -1, 1)

    def score(self, X, y):
        from aoe_detect.metrics import auroc_scorer

        return auroc_scorer(self, X, y)


@pytest.mark.parametrize("shuffle", [False, True])
def test_unseen_protocol_indices(wine, shuffle):
    X, y = wine
    cv = OODStratifiedKFold(5, shuffle=shuffle, random_state=0)
    tests = []
    for train, test in cv.split(X, y):
        assert not (y[train] == -1).any()                      # OOD never trained on
        assert (y[test] == -1).any() and (y[test] >= 0).any()  # both sides in every fold
        assert np.intersect1d(train, test).size == 0
        # ID classes stratified: each class share in the test fold within one row of ideal
        for c in (0, 1):
            assert abs((y[test] == c).sum() - (y == c).sum() / 5) <= 1
        tests.append(test)
    allt = np.concatenate(tests)
    assert np.array_equal(np.sort(allt), np.arange(len(y)))   # a partition: each row tested once
    assert cv.get_n_splits(X, y) == 5


def test_seen_protocol_keeps_ood_in_training(wine):
    X, y = wine
    cv = OODStratifiedKFold(4, protocol="seen", shuffle=True, random_state=1)
    n_ood = (y == -1).sum()
    for train, test in cv.split(X, y):
        assert (y[train] == -1).sum() + (y[test] == -1).sum() == n_ood
        assert (y[train] == -1).any() and (y[test] == -1).any()
        assert np.array_equal(np.sort(np.r_[train, test]), np.arange(len(y)))


def test_shuffle_is_reproducible_and_leaves_global_rng(wine):
    X, y = wine
    np.random.seed(123)
    before = np.random.get_state()[1].copy()
    a = [t.tolist() for _, t in OODStratifiedKFold(3, shuffle=True, random_state=7).split(X, y)]
    b = [t.tolist() for _, t in OODStratifiedKFold(3, shuffle=True, random_state=7).split(X, y)]
    c = [t.tolist() for _, t in OODStratifiedKFold(3, shuffle=True, random_state=8).split(X, y)]
    assert a == b and a != c
    assert np.array_equal(np.random.get_state()[1], before)


def test_string_labels_and_marker():
    y = np.array(["cat", "dog"] * 6 + ["outlier"] * 4)
    cv = OODStratifiedKFold(2, outlier_label="outlier")
    for train, test in cv.split(np.zeros((16, 1)), y):
        assert "outlier" not in set(y[train]) and (y[test] == "outlier").sum() == 2
    assert ood_mask(np.array([0, -3, 5, -1])).tolist() == [False, True, False, True]
    assert ood_mask(np.array(["a", "x"]), outlier_label=-1).tolist() == [False, False]


@pytest.mark.parametrize("kwargs, needle", [
    (dict(n_splits=1), "`n_splits`"),
    (dict(n_splits=2.5), "`n_splits`"),
    (dict(protocol="leaky"), "`protocol`"),
    (dict(outlier_label=1.5), "`outlier_label`"),
    (dict(shuffle="yes"), "`shuffle`"),
])
def test_parameter_errors(kwargs, needle):
    y = np.r_[np.zeros(5, int), np.ones(5, int), -np.ones(5, int)]
    with pytest.raises(ValueError, match=needle):
        list(OODStratifiedKFold(**kwargs).split(np.zeros((15, 1)), y))


def test_too_few_ood_rows_is_a_clear_error():
    y = np.r_[np.zeros(10, int), np.ones(10, int), [-1, -1]]
    with pytest.raises(ValueError, match="at least 5 OOD rows"):
        list(OODStratifiedKFold(5).split(np.zeros((22, 1)), y))
    with pytest.raises(ValueError, match="needs `y`"):
        list(OODStratifiedKFold(2).split(np.zeros((22, 1))))


def test_estimator_never_receives_ood_rows(wine):
    X, y = wine
    _Spy.seen = []
    scores = cross_val_score(_Spy(), X, y, cv=OODStratifiedKFold(5, shuffle=True, random_state=0))
    assert len(_Spy.seen) == 5 and all((s >= 0).all() for s in _Spy.seen)
    assert np.isfinite(scores).all() and (scores > 0.5).all()
    _Spy.seen = []
    cross_val_score(_Spy(), X, y, cv=OODStratifiedKFold(5, protocol="seen"))
    assert all((s == -1).any() for s in _Spy.seen)
    pred = cross_val_predict(_Spy(), X, y, cv=OODStratifiedKFold(3), method="predict")
    assert pred.shape == (len(y),) and set(np.unique(pred)) <= {-1, 1}


@pytest.fixture(scope="module")
def wine_cv(wine):
    X, y = wine
    pipe = make_pipeline(StandardScaler(), AOEDetector(**FAST))
    cv = OODStratifiedKFold(3, shuffle=True, random_state=0)
    return cross_validate(pipe, X, y, cv=cv, return_estimator=True)


def test_cross_validate_pipeline_on_wine(wine_cv, wine):
    scores = wine_cv["test_score"]
    assert scores.shape == (3,) and np.isfinite(scores).all()
    assert (scores > 0.6).all() and (scores <= 1).all(), scores
    for pipe in wine_cv["estimator"]:
        det = pipe[-1]
        # no labelled OOD row reached training: the outlier source is the built-in one
        assert det.classes_.tolist() == [0, 1]
        assert type(det.outlier_source_).__name__ != "ArrayOutliers"


def test_default_cv_is_nan_on_sorted_data_but_ours_is_not(wine):
    """The failure the splitter exists for: class-sorted data and plain K-fold."""
    X, y = wine
    order = np.argsort(-y, kind="stable")  # ID first, OOD last: plain KFold leaves folds without OOD
    Xs, ys = X[order], y[order]
    from sklearn.model_selection import KFold

    _Spy.seen = []
    plain = cross_val_score(_Spy(), Xs, ys, cv=KFold(5))
    assert np.isnan(plain).sum() >= 3
    ours = cross_val_score(_Spy(), Xs, ys, cv=OODStratifiedKFold(5))
    assert np.isfinite(ours).all()
    # StratifiedKFold leaks OOD rows into training
    leaky = StratifiedKFold(5)
    assert any((ys[tr] == -1).any() for tr, _ in leaky.split(Xs, ys))


def test_grid_search_over_detector_parameters(wine):
    X, y = wine
    pipe = make_pipeline(StandardScaler(), AOEDetector(**{**FAST, "epochs": 1}))
    gs = GridSearchCV(pipe, {"aoedetector__attack": ["fgsm", None]},
                      cv=OODStratifiedKFold(2, shuffle=True, random_state=0), refit=False)
    gs.fit(X, y)
    mean = gs.cv_results_["mean_test_score"]
    assert mean.shape == (2,) and np.isfinite(mean).all() and (mean > 0.5).all()
    assert gs.best_params_["aoedetector__attack"] in ("fgsm", None)
