"""Tables: scikit-learn's DataFrame conventions, categorical / missing / sparse input, the
documented ColumnTransformer pipeline and the inverted-fit warning (issue 19)."""

import pickle
import re
import warnings

import numpy as np
import pytest
from scipy import sparse

pd = pytest.importorskip("pandas")

from sklearn.compose import ColumnTransformer  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import OneHotEncoder, StandardScaler  # noqa: E402

from aoe_detect import AOEDetector, _fit_steps, _training  # noqa: E402
from aoe_detect import _validation  # noqa: E402
from aoe_detect.exceptions import InvertedScoreWarning  # noqa: E402
from aoe_detect.metrics import auroc  # noqa: E402

TINY = dict(epochs=1, pretrain_epochs=1, batch_size=16, random_state=0, device="cpu")
COLS = ["age", "income", "height"]


def _quiet(fn, *a, **k):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*a, **k)


@pytest.fixture(scope="module")
def table():
    rng = np.random.RandomState(0)
    X = np.r_[rng.normal(0, 1, (40, 3)) + [3, 0, 0], rng.normal(0, 1, (40, 3)) - [3, 0, 0]]
    return pd.DataFrame(X, columns=COLS), np.r_[np.zeros(40, int), np.ones(40, int)]


@pytest.fixture(scope="module")
def frame_fit(table):
    df, y = table
    return _quiet(AOEDetector(**TINY).fit, df, y)


@pytest.fixture(scope="module")
def array_fit(table):
    df, y = table
    return _quiet(AOEDetector(**TINY).fit, df.to_numpy(), y)


def test_feature_names_recorded_only_for_string_columns(table, frame_fit, array_fit):
    df, y = table
    assert frame_fit.feature_names_in_.tolist() == COLS
    assert frame_fit.feature_names_in_.dtype == object and frame_fit.n_features_in_ == 3
    assert not hasattr(array_fit, "feature_names_in_") and array_fit.n_features_in_ == 3
    # integer column names: no names (scikit-learn's rule); a refit on an array drops them
    ints = _quiet(AOEDetector(**TINY).fit, pd.DataFrame(df.to_numpy()), y)
    assert not hasattr(ints, "feature_names_in_")
    det = _quiet(AOEDetector(**TINY).fit, df, y)
    _quiet(det.fit, df.to_numpy(), y)
    assert not hasattr(det, "feature_names_in_")


def test_frame_and_array_give_the_same_scores(table, frame_fit, array_fit):
    df, _ = table
    a = frame_fit.score_samples(df)
    assert a.dtype == np.float64 and a.shape == (len(df),)
    np.testing.assert_array_equal(a, _quiet(frame_fit.score_samples, df.to_numpy()))
    np.testing.assert_array_equal(a, array_fit.score_samples(df.to_numpy()))  # same seed and data
    # a reordered frame is refused, and selecting by name is the documented fix
    np.testing.assert_array_equal(a, frame_fit.score_samples(df[COLS[::-1]][frame_fit.feature_names_in_]))


SCORING = {
    "score_samples": lambda d, X: d.score_samples(X),
    "decision_function": lambda d, X: d.decision_function(X),
    "predict": lambda d, X: d.predict(X),
    "predict_proba": lambda d, X: d.predict_proba(X),
    "predict_class": lambda d, X: d.predict_class(X),
    "score": lambda d, X: d.score(X, np.zeros(len(X), int)),
    "perturb": lambda d, X: d.perturb(X),
    "recalibrate": lambda d, X: d.recalibrate(X),
}
COLUMN_CHANGES = {
    "reordered": (lambda df: df[["income", "age", "height"]], r"same order"),
    "missing": (lambda df: df[["age", "income"]], r"missing:\n- height"),
    "extra": (lambda df: df.assign(weight=1.0), r"unseen at fit time:\n- weight"),
    "renamed": (lambda df: df.rename(columns={"age": "AGE"}), r"unseen at fit time:\n- AGE"),
}


@pytest.mark.parametrize("method", list(SCORING))
@pytest.mark.parametrize("change", list(COLUMN_CHANGES))
def test_every_scoring_method_refuses_other_columns(table, frame_fit, method, change):
    df, _ = table
    edit, match = COLUMN_CHANGES[change]
    offset = frame_fit.offset_
    with pytest.raises(ValueError, match=match) as info:
        SCORING[method](frame_fit, edit(df))
    msg = str(info.value)
    assert "`X` does not have the columns the detector was fitted on" in msg
    assert "X[detector.feature_names_in_]" in msg
    assert frame_fit.offset_ == offset  # a failed call changes nothing


def test_names_vs_no_names_warn_like_scikit_learn(table, frame_fit, array_fit):
    df, _ = table
    with pytest.warns(UserWarning, match="X does not have valid feature names, but AOEDetector "
                                         "was fitted with feature names"):
        frame_fit.score_samples(df.to_numpy())
    with pytest.warns(UserWarning, match="X has feature names, but AOEDetector was fitted "
                                         "without feature names"):
        array_fit.score_samples(df)


@pytest.mark.parametrize("column, dtype", [
    (["a", "b"] * 40, "str"), (pd.Categorical(["a", "b"] * 40), "category"),
    (pd.date_range("2020-01-01", periods=80), "datetime64[ns]"),
])
def test_non_numeric_columns_are_named_and_point_to_the_pipeline(table, column, dtype):
    df, y = table
    bad = df.assign(colour=column)
    for call in (lambda: AOEDetector(**TINY).fit(bad, y),):
        with pytest.raises(ValueError) as info:
            call()
        msg = str(info.value)
        assert re.search(r"non-numeric columns \['colour \(.*\)'\] \(1 in all\)", msg), msg
        assert "OneHotEncoder(handle_unknown='ignore')" in msg and "ColumnTransformer" in msg
        assert "user guide" in msg


def test_missing_values_are_named_and_suggest_an_imputer(table, frame_fit, array_fit):
    df, y = table
    holes = df.copy()
    holes.loc[3, "income"] = np.nan
    holes.loc[5, "height"] = np.nan
    msg = r"Input X contains NaN: missing values in the columns \['income', 'height'\] \(2 in all\)"
    for call in (lambda: AOEDetector(**TINY).fit(holes, y), lambda: frame_fit.score_samples(holes)):
        with pytest.raises(ValueError, match=msg) as info:
            call()
        assert "SimpleImputer" in str(info.value)
    with pytest.raises(ValueError, match=r"missing values in the columns \(indices\) \[1, 2\]"):
        array_fit.predict(holes.to_numpy())
    with pytest.raises(ValueError, match=r"Input X_outliers contains NaN: .*columns \(indices\) \[1, 2\]"):
        AOEDetector(**TINY).fit(df, y, X_outliers=holes.to_numpy()[:6])
    # pandas' own missing marker in a nullable column
    nullable = df.astype({"age": "Float64"})
    nullable.loc[0, "age"] = pd.NA
    with pytest.raises(ValueError, match=r"columns \['age'\]"):
        AOEDetector(**TINY).fit(nullable, y)


def test_outlier_frames_must_have_the_columns_of_X(table):
    df, y = table
    with pytest.raises(ValueError, match=r"`X_outliers` has the columns \['income', 'age', 'height'\]"
                                         r".*X_outliers\[X.columns\]"):
        AOEDetector(**TINY).fit(df, y, X_outliers=df[["income", "age", "height"]] + 10)
    det = _quiet(AOEDetector(**TINY).fit, df, y, X_outliers=df + 10)  # same columns: accepted
    assert det.feature_names_in_.tolist() == COLS


def test_sparse_input_is_densified_with_the_same_result(table, array_fit):
    df, y = table
    X = df.to_numpy().copy()
    X[np.abs(X) < 0.7] = 0.0  # a matrix with real zeros
    dense = _quiet(AOEDetector(**TINY).fit, X, y)
    det = _quiet(AOEDetector(**TINY).fit, sparse.csr_matrix(X), y)
    np.testing.assert_array_equal(det.score_samples(X), dense.score_samples(X))
    for fmt in (sparse.csr_matrix, sparse.csc_matrix, sparse.coo_matrix, sparse.csr_array):
        np.testing.assert_array_equal(dense.score_samples(fmt(X)), dense.score_samples(X))
    assert dense.score(sparse.csr_matrix(X), np.r_[np.zeros(40, int), -np.ones(40, int)]) == \
        dense.score(X, np.r_[np.zeros(40, int), -np.ones(40, int)])
    # long sparse input is scored chunk by chunk: same values as dense
    big = sparse.random(3000, 3, density=0.5, format="coo", random_state=0)
    np.testing.assert_array_equal(dense.score_samples(big), dense.score_samples(big.toarray()))


def test_sparse_input_above_the_memory_limit_is_refused(table, monkeypatch):
    df, y = table
    monkeypatch.setattr(_validation, "MAX_DENSE_BYTES", 100)
    with pytest.raises(ValueError, match=r"`X` is a sparse matrix of shape \(80, 3\); .*would take "
                                         r".* GiB, above the limit .*MAX_DENSE_BYTES.*OneHotEncoder"):
        AOEDetector(**TINY).fit(sparse.csr_matrix(df.to_numpy()), y)


def test_save_load_and_pickle_keep_the_column_names(table, frame_fit, tmp_path):
    df, _ = table
    frame_fit.save(tmp_path / "d.aoe")
    for det in (AOEDetector.load(tmp_path / "d.aoe"), pickle.loads(pickle.dumps(frame_fit))):
        assert det.feature_names_in_.tolist() == COLS
        np.testing.assert_array_equal(det.score_samples(df), frame_fit.score_samples(df))
        with pytest.raises(ValueError, match="same order"):
            det.score_samples(df[COLS[::-1]])


def _mixed_table(n, rng, shift=0.0, colours=("red", "green", "blue")):
    return pd.DataFrame({
        "colour": rng.choice(colours, n),
        "size": rng.normal(10 + shift, 1, n),
        "weight": rng.normal(50 + 5 * shift, 5, n),
        "rooms": rng.randint(1, 5, n).astype(float),
    })


@pytest.fixture(scope="module")
def pipeline_fit():
    rng = np.random.RandomState(1)
    df = _mixed_table(200, rng)
    y = (df["size"] > 10).astype(int).to_numpy()
    pre = ColumnTransformer([("categorical", OneHotEncoder(handle_unknown="ignore"), ["colour"])],
                            remainder=StandardScaler(), sparse_threshold=1.0)  # sparse output
    pipe = make_pipeline(pre, AOEDetector(epochs=5, pretrain_epochs=5, random_state=0, device="cpu"))
    return _quiet(pipe.fit, df, y), rng


def test_the_documented_pipeline_takes_a_mixed_frame_with_sparse_output(pipeline_fit):
    pipe, rng = pipeline_fit
    test = _mixed_table(100, rng)
    assert sparse.issparse(pipe[0].transform(test))  # the detector really got sparse input
    det = pipe[-1]
    assert det.n_features_in_ == 6 and not hasattr(det, "feature_names_in_")
    s_id = pipe.score_samples(test)
    ood = _mixed_table(100, rng, shift=6.0, colours=("purple",))  # unseen category: ignored
    s_ood = pipe.score_samples(ood)
    assert s_id.dtype == np.float64 and np.isfinite(np.r_[s_id, s_ood]).all()
    assert auroc(s_id, s_ood) > 0.95
    assert set(np.unique(pipe.predict(ood))) <= {-1, 1} and (pipe.predict(ood) == -1).mean() > 0.9
    assert (pipe.predict(test) == 1).mean() > 0.8
    np.testing.assert_array_equal(pipe.predict_proba(test), det.predict_proba(pipe[0].transform(test)))
    labels = det.predict_class(pipe[0].transform(test))  # the classifier inside works too
    assert (labels == (test["size"] > 10).astype(int).to_numpy()).mean() > 0.8


def test_inverted_fit_is_detected_from_history():
    rows = [{"stage": "finetune", "steps": 60, "val_auroc_shell": 0.9, "val_auroc_corrupted": 0.3}]
    with pytest.warns(InvertedScoreWarning, match=r"corrupted 0.30 < 0.5"):
        assert _fit_steps.warn_if_inverted(rows) == {"corrupted": 0.3}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _fit_steps.warn_if_inverted([{**rows[0], "steps": 49}]) == {}  # not trained yet
        assert _fit_steps.warn_if_inverted([{"stage": "finetune", "steps": 60,
                                             "val_auroc_shell": 0.5}]) == {}
        assert _fit_steps.warn_if_inverted([{"stage": "pretrain", "loss": 1.0}]) == {}
        assert _fit_steps.warn_if_inverted([]) == {}


def test_fit_warns_when_the_held_out_synthetic_outliers_rank_above_id(table, monkeypatch):
    df, y = table
    real = _training.validation_row

    def inverted(*args, **kwargs):
        row = real(*args, **kwargs)
        return {k: (0.2 if k.startswith("val_auroc_") else v) for k, v in row.items()}

    monkeypatch.setattr(_training, "validation_row", inverted)
    with pytest.warns(InvertedScoreWarning, match="ranks held-out synthetic outliers above"):
        det = AOEDetector(**{**TINY, "epochs": 10}).fit(df, y)  # 10 x 5 steps >= 50
    assert any(v == 0.2 for k, v in det.history_[-1].items() if k.startswith("val_auroc_"))
    with warnings.catch_warnings(record=True) as caught:  # after 5 steps: silent (not trained yet)
        warnings.simplefilter("always")
        AOEDetector(**TINY).fit(df, y)
    assert not [w for w in caught if issubclass(w.category, InvertedScoreWarning)]


def test_cli_csv_header_names_are_recorded_and_checked(table, tmp_path, capsys):
    from aoe_detect.cli import main

    df, y = table

    def write(path, frame, labels):
        frame.assign(y=labels).to_csv(path, index=False)

    write(tmp_path / "train.csv", df, y)
    assert main(["fit", "--id", str(tmp_path / "train.csv"), "--out", str(tmp_path / "m.aoe"),
                 "--epochs", "1", "--pretrain-epochs", "1", "--seed", "0", "--quiet",
                 "--device", "cpu"]) == 0
    assert AOEDetector.load(tmp_path / "m.aoe").feature_names_in_.tolist() == COLS
    write(tmp_path / "same.csv", df, y)
    write(tmp_path / "swapped.csv", df[COLS[::-1]], y)
    capsys.readouterr()
    assert main(["score", "--model", str(tmp_path / "m.aoe"), "--input",
                 str(tmp_path / "same.csv"), "--json"]) == 0
    assert main(["score", "--model", str(tmp_path / "m.aoe"), "--input",
                 str(tmp_path / "swapped.csv"), "--json"]) != 0
    assert "same order" in capsys.readouterr().err
