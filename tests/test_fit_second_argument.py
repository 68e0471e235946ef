"""What the second argument of ``fit`` means: labels, one-hot, outlier arrays (issue 11,
section 4)."""

from _tiny_fitted import *  # noqa: F401,F403  (shared imports, tiny blobs, the `fitted` fixture)


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
