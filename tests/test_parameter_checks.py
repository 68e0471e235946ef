"""Nested objects, extreme scalars and errors from torch become clear parameter errors (issue 11,
sections 5-6)."""

from _tiny_fitted import *  # noqa: F401,F403  (shared imports, tiny blobs, the `fitted` fixture)


# ----------------------------------------------------- 5. nested objects, scalars
@pytest.mark.parametrize("params, match", [
    ({"attack": PGD(steps=-1)}, r"`attack` \(PGD\).*'steps'"),
    ({"attack": PGD(step_size=float("nan"))}, r"`attack` \(PGD\).*'step_size'"),
    ({"outliers": UniformNoise(widen=float("nan"))}, r"`outliers` \(UniformNoise\).*'widen'"),
    ({"loss__m_in": -1e200}, r"'m_in' parameter"),
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
    det.set_params(**{k.split("__")[0]: fitted.get_params()[k.split("__")[0]] for k in params})
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
