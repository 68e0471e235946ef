"""Feature-space scores: closed forms, brute-force checks, pytorch-ood agreement, estimator use."""

import io
import pickle

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from sklearn.preprocessing import StandardScaler
from torch import nn

from aoe_detect import AOEDetector, energy
from aoe_detect.attacks import PGD
from aoe_detect.scores import (SCORES, FeatureTap, KNNScore, LogitsAndFeatures, MahalanobisScore,
                               OODScore, ScoreHead, SumScore, build_scorer, feature_layer)

FAST = dict(epochs=2, pretrain_epochs=3, batch_size=32, random_state=0, device="cpu")


def _gaussian_classes(n=4000, d=3, seed=0):
    rng = np.random.RandomState(seed)
    means = np.array([[0.0, 0.0, 0.0], [4.0, 0.0, 1.0]])[:, :d]
    A = rng.normal(size=(d, d))
    cov = A @ A.T + np.eye(d)
    L = np.linalg.cholesky(cov)
    y = rng.randint(0, 2, n)
    z = means[y] + rng.normal(size=(n, d)) @ L.T
    return z, y, means, cov


def test_mahalanobis_matches_closed_form_on_gaussian_data():
    z, y, means, cov = _gaussian_classes()
    sc = MahalanobisScore().fit(None, torch.tensor(z, dtype=torch.float32), y)
    q = np.random.RandomState(1).normal(size=(50, 3)) * 3
    got = sc(None, torch.tensor(q, dtype=torch.float32)).double().numpy()
    P = np.linalg.inv(cov)
    true = -np.min([np.einsum("nd,de,ne->n", q - m, P, q - m) for m in means], axis=0)
    # fitted with 4000 samples: means/covariance within a few percent of the truth
    np.testing.assert_allclose(got, true, rtol=0.08, atol=0.05)
    # and exactly the formula with the fitted statistics
    mu, prec = sc.means.double().numpy(), sc.precision.double().numpy()
    exact = -np.min([np.einsum("nd,de,ne->n", q - m, prec, q - m) for m in mu], axis=0)
    np.testing.assert_allclose(got, exact, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(mu, [z[y == c].mean(0) for c in (0, 1)], rtol=1e-5, atol=1e-6)


def test_mahalanobis_without_labels_is_one_gaussian():
    z, _, _, _ = _gaussian_classes()
    sc = MahalanobisScore().fit(None, torch.tensor(z, dtype=torch.float32), None)
    assert sc.means.shape == (1, 3)
    np.testing.assert_allclose(sc.means[0].numpy(), z.mean(0), rtol=1e-5, atol=1e-5)


def test_mahalanobis_is_well_conditioned_with_fewer_rows_than_features():
    rng = np.random.RandomState(0)
    z = torch.tensor(rng.normal(size=(20, 64)), dtype=torch.float32)
    sc = MahalanobisScore().fit(None, z, rng.randint(0, 2, 20))
    s = sc(None, torch.tensor(rng.normal(size=(10, 64)), dtype=torch.float32))
    assert torch.isfinite(s).all() and (s <= 0).all()


def test_knn_matches_brute_force_and_its_differentiable_twin():
    rng = np.random.RandomState(0)
    bank = rng.normal(size=(500, 8))
    q = rng.normal(size=(40, 8))
    sc = KNNScore(k=7, max_samples=None).fit(None, torch.tensor(bank, dtype=torch.float32), None)
    got = sc(None, torch.tensor(q, dtype=torch.float32)).double().numpy()
    nb = bank / np.linalg.norm(bank, axis=1, keepdims=True)
    nq = q / np.linalg.norm(q, axis=1, keepdims=True)
    dist = np.sqrt(((nq[:, None, :] - nb[None]) ** 2).sum(-1))
    np.testing.assert_allclose(got, -np.sort(dist, 1)[:, 6], rtol=1e-5, atol=1e-5)
    qt = torch.tensor(q, dtype=torch.float32, requires_grad=True)
    twin = sc(None, qt)
    assert twin.requires_grad
    np.testing.assert_allclose(twin.detach().double().numpy(), got, rtol=1e-4, atol=1e-4)


def test_knn_auto_k_and_subsampling():
    z = torch.randn(3000, 4, generator=torch.Generator().manual_seed(0))
    sc = KNNScore(max_samples=1000).fit(None, z, None, torch.Generator().manual_seed(0))
    assert sc.bank.shape == (1000, 4) and sc.resolved_k() == 10
    assert KNNScore().fit(None, z[:50], None).resolved_k() == 1
    assert KNNScore().fit(None, torch.randn(20000, 2), None).resolved_k() == 40  # 1% of the 4000 bank
    assert KNNScore(max_samples=None).fit(None, torch.randn(6000, 2), None).resolved_k() == 50  # capped
    np.testing.assert_allclose(sc.bank.norm(dim=1).numpy(), 1.0, rtol=1e-5)


def test_sum_score_standardises_each_part_on_held_out_data():
    rng = np.random.RandomState(0)
    lt = torch.tensor(rng.normal(size=(300, 3)) * 5, dtype=torch.float32)
    ft = torch.tensor(rng.normal(size=(300, 4)), dtype=torch.float32)
    sc = build_scorer("energy+mahalanobis").fit(lt, ft, rng.randint(0, 3, 300))
    lv, fv = lt[:100] + 0.1, ft[:100] * 1.1
    sc.fit_normalisation(sc.components(lv, fv))
    comp = sc.components(lv, fv)
    z = (comp - sc.mean) / sc.std
    np.testing.assert_allclose(z.mean(0).numpy(), 0, atol=1e-4)
    np.testing.assert_allclose(z.std(0).numpy(), 1, atol=1e-4)
    np.testing.assert_allclose(sc(lv, fv).numpy(), z.sum(1).numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(comp[:, 0].numpy(), (-energy(lv)).numpy(), rtol=1e-6)


def test_build_scorer_names_and_errors():
    for name in SCORES:
        assert build_scorer(name).name == name
    with pytest.raises(ValueError, match="Unknown score"):
        build_scorer("odin")


def test_feature_layer_rule_and_tap():
    net = nn.Sequential(nn.Flatten(), nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3))
    assert feature_layer(net) is net[3]
    assert feature_layer(net, "1") is net[1]
    with pytest.raises(ValueError, match="not a submodule"):
        feature_layer(net, "head")
    with pytest.raises(ValueError, match="no nn.Linear|has none"):
        feature_layer(nn.Sequential(nn.Flatten()))
    x = torch.randn(5, 4)
    with FeatureTap(net[3]) as tap:
        out = net(x)
    np.testing.assert_allclose(tap.features.detach().numpy(), net[2](net[1](x)).detach().numpy())
    assert not net[3]._forward_pre_hooks  # removed on exit
    both = LogitsAndFeatures(net)(x)
    np.testing.assert_allclose(both[:, :3].detach().numpy(), out.detach().numpy(), rtol=1e-6)


# ---------------------------------------------------------------- pytorch-ood agreement
def test_feature_scores_agree_with_pytorch_ood():
    pood = pytest.importorskip("pytorch_ood.detector")
    z, y, _, _ = _gaussian_classes(n=3000, d=3)
    zt, yt = torch.tensor(z, dtype=torch.float32), torch.tensor(y)
    q = torch.tensor(np.random.RandomState(2).normal(size=(200, 3)) * 3, dtype=torch.float32)
    ours = MahalanobisScore().fit(None, zt, y)(None, q).double().numpy()
    theirs = pood.Mahalanobis(None).fit_features(zt, yt).predict_features(q).double().numpy()
    # pytorch-ood: outlier score 0.5 * d^2 with the covariance summed, not averaged, over the
    # N rows: -2 * N * theirs is our score, up to the Ledoit-Wolf shrinkage of ours (under 1%
    # at N = 3000), which leaves the ranking (all that AUROC/FPR see) the same
    from scipy.stats import spearmanr

    np.testing.assert_allclose(-2 * len(z) * theirs, ours, rtol=1.5e-2, atol=1e-3)
    assert spearmanr(theirs, ours).statistic < -0.9999
    knn_ours = KNNScore(k=50, max_samples=None).fit(None, zt, None)(None, q).double().numpy()
    knn_theirs = pood.KNN(None, k=50).fit_features(zt, yt).predict_features(q)
    np.testing.assert_allclose(-np.asarray(knn_theirs, dtype=np.float64), knn_ours, rtol=1e-5,
                               atol=1e-6)


# ------------------------------------------------------------------- in the estimator
@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    ID = np.flatnonzero(y < 5)
    X = X[:, X[ID[:500]].std(0) > 0]  # pixels that vary in the training rows
    X = StandardScaler().fit(X[ID[:500]]).transform(X).astype(np.float32)
    return X[ID[:500]], y[ID[:500]], X[ID[500:]], X[y >= 5]


@pytest.fixture(scope="module")
def fitted_scores(digits):
    X, y, _, _ = digits
    return {name: AOEDetector(**FAST, ood_score=name).fit(X, y) for name in SCORES}


def test_scores_share_the_training_and_differ_only_in_the_score(fitted_scores, digits):
    _, _, X_id, _ = digits
    ref = fitted_scores["energy"]
    for name, det in fitted_scores.items():
        # the score is chosen after training: the same seed gives the same network
        for a, b in zip(ref.module_.state_dict().values(), det.module_.state_dict().values()):
            assert torch.equal(a, b), name
        assert det.scorer_.name == name


def test_feature_score_is_the_formula_on_module_features(fitted_scores, digits):
    X, y, X_id, X_ood = digits
    det = fitted_scores["mahalanobis"]
    lf = LogitsAndFeatures(det.module_).eval()
    with torch.no_grad():
        out = lf(torch.from_numpy(X_id))
    feats = out[:, det.classes_.size:].double().numpy()
    mu, P = det.scorer_.means.double().numpy(), det.scorer_.precision.double().numpy()
    expected = -np.min([np.einsum("nd,de,ne->n", feats - m, P, feats - m) for m in mu], axis=0)
    s = det.score_samples(X_id)
    assert s.dtype == np.float64 and s.shape == (len(X_id),)
    np.testing.assert_allclose(s, expected, rtol=1e-4, atol=1e-3)
    assert det.scorer_.means.shape[0] == 5  # one mean per class
    # offset_ comes from the same score on the held-out rows
    v = np.sort(det.validation_scores_)
    k = int(np.floor((len(v) + 1) * det.contamination))
    assert det.offset_ == v[max(k, 1) - 1]
    assert np.median(det.validation_scores_) > np.median(det.score_samples(X_ood))


def test_every_score_separates_unseen_digits(fitted_scores, digits):
    from aoe_detect.metrics import ood_report

    _, _, X_id, X_ood = digits
    for name, det in fitted_scores.items():
        r = ood_report(det.score_samples(X_id), det.score_samples(X_ood))
        assert r["auroc"] > 0.75, (name, r["auroc"])
        assert np.isfinite(det.score_samples(X_ood)).all()


def test_perturb_attacks_the_chosen_score(fitted_scores, digits):
    _, _, _, X_ood = digits
    for name, det in fitted_scores.items():
        x = X_ood[:60]
        before = det.score_samples(x)
        adv = det.perturb(x, attack=PGD(steps=5), epsilon=0.3, random_state=0)
        assert np.abs(adv - x).max() <= 0.3 + 1e-5
        after = det.score_samples(adv)
        # the adversary raises the detector's own score (makes OOD look in-distribution)
        assert np.mean(after > before) > 0.9, name
        away = det.score_samples(det.perturb(x, attack=PGD(steps=5), epsilon=0.3, direction=1,
                                             random_state=0))
        assert np.mean(away < before) > 0.9, name


def test_save_load_and_pickle_keep_feature_scores_bitwise(fitted_scores, digits, tmp_path):
    _, _, X_id, _ = digits
    for name, det in fitted_scores.items():
        s = det.score_samples(X_id)
        path = det.save(tmp_path / f"{name.replace('+', '_')}.aoe")
        loaded = AOEDetector.load(path)
        assert loaded.scorer_.name == name
        np.testing.assert_array_equal(loaded.score_samples(X_id), s)
        again = pickle.loads(pickle.dumps(det))
        np.testing.assert_array_equal(again.score_samples(X_id), s)
        assert again.offset_ == det.offset_


def test_label_free_and_user_module_feature_scores(digits):
    X, y, X_id, X_ood = digits
    det = AOEDetector(**FAST, ood_score="mahalanobis").fit(X)  # one Gaussian
    assert det.scorer_.means.shape[0] == 1
    net = nn.Sequential(nn.Linear(X.shape[1], 32), nn.ReLU(), nn.Linear(32, 16), nn.ReLU(),
                        nn.Linear(16, 5))
    det2 = AOEDetector(backbone=net, epochs=1, random_state=0, device="cpu",
                       ood_score=OODScore("knn", feature_layer="2")).fit(X, y)
    assert det2.scorer_.bank.shape[1] == 32  # the input of layer "2"
    assert np.isfinite(det2.score_samples(X_ood)).all()
    with pytest.raises(ValueError, match="feature_layer"):
        AOEDetector(backbone=net, epochs=1, device="cpu",
                    ood_score=OODScore("knn", feature_layer="nope")).fit(X, y)
    with pytest.raises(ValueError, match="ood_score"):
        AOEDetector(ood_score="odin").fit(X, y)


def test_knn_max_samples_bounds_the_bank(digits):
    X, y, _, _ = digits
    det = AOEDetector(**FAST, ood_score=OODScore("knn", max_samples=100, k=3)).fit(X, y)
    assert det.scorer_.bank.shape[0] == 100 and det.scorer_.resolved_k() == 3


def test_feature_scores_are_finite_for_huge_finite_inputs(fitted_scores, digits):
    _, _, X_id, _ = digits
    huge = np.full((3, X_id.shape[1]), 1e30, dtype=np.float64)
    huge[1] *= -1
    for name, det in fitted_scores.items():
        s = det.score_samples(np.r_[X_id[:5], huge])
        assert np.isfinite(s).all(), name
        # ordinary rows keep their bits (only overflowed rows are recomputed in float64)
        np.testing.assert_array_equal(s[:5], det.score_samples(X_id[:5]))
        assert (s[5:] < det.offset_).all(), name  # and they are flagged as OOD


def test_scoring_with_a_feature_score_leaves_the_module_in_eval_mode(fitted_scores, digits):
    _, _, X_id, _ = digits
    for name, det in fitted_scores.items():
        assert not any(m.training for m in det.module_.modules()), name
        det.score_samples(X_id[:10])
        det.perturb(X_id[:10], attack="fgsm")
        assert not any(m.training for m in det.module_.modules()), name
