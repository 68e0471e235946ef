"""Small data keeps every class in training; the conformal offset and its warnings; scattered
edge cases of issue 11 (section 7 and after)."""

from _tiny_fitted import *  # noqa: F401,F403  (shared imports, tiny blobs, the `fitted` fixture)


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
    with pytest.raises(ValueError, match=r"`runtime__compile`=.*not valid for torch.compile"):
        det.set_params(runtime__compile={"mode": "bad"}).fit(X, Y)
    det.set_params(runtime=None)
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
    det.set_params(warm_start=True, epochs=3, runtime__channels_last=True, outliers=Boom())
    with pytest.raises(RuntimeError, match="boom"):
        quiet(det.fit, XI, YI)
    det.set_params(warm_start=False, epochs=1, runtime=None, outliers="uniform")
    assert describe_change(det, snap, probe) is None
    assert [p.stride() for p in det.module_.parameters()] == strides
