"""Scoring at scale with Dask (issue 22): ``aoe_detect.scale`` on a local distributed
cluster gives exactly ``score_samples`` / ``predict`` / ``decision_function``; the detector
is one node of the task graph whatever the number of partitions; DataFrames keep their
index and pick the fitted feature columns."""

import pickle
import warnings

import numpy as np
import pytest
from sklearn.exceptions import NotFittedError

da = pytest.importorskip("dask.array")
distributed = pytest.importorskip("distributed")

from aoe_detect import AOEDetector  # noqa: E402
from aoe_detect.scale import score_dask_array, score_dask_dataframe  # noqa: E402

TINY = dict(epochs=1, pretrain_epochs=1, batch_size=32, device="cpu", random_state=0,
            outliers="uniform")
rng = np.random.RandomState(0)
X = np.r_[rng.normal(0, 1, (60, 4)) + [3, 0, 0, 0], rng.normal(0, 1, (60, 4)) - [3, 0, 0, 0]]
Y = np.r_[np.zeros(60, int), np.ones(60, int)]
P = np.r_[X, rng.normal(0, 4, (880, 4))]  # 1000 rows: ID rows and wide rows


@pytest.fixture(scope="module")
def det():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return AOEDetector(**TINY).fit(X, Y)


@pytest.fixture(scope="module")
def client():
    # threads in this process: fast to start; the benchmark measures worker processes
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                                  dashboard_address=":0") as cluster:
        with distributed.Client(cluster) as c:
            yield c


@pytest.mark.parametrize("method", ["score_samples", "predict", "decision_function"])
def test_array_on_a_local_cluster_equals_one_process(det, client, method):
    X_d = da.from_array(P, chunks=(97, 2))  # uneven row blocks; columns split (rechunked)
    out = score_dask_array(det, X_d, method=method)
    assert out.chunks == (X_d.chunks[0],)  # one task per row block: memory per task bounded
    res = out.compute()
    ref = getattr(det, method)(P)
    assert res.dtype == ref.dtype and res.shape == (len(P),)
    np.testing.assert_array_equal(res, ref)  # exactly: scoring is row-wise
    if method == "predict":
        assert set(np.unique(res)) == {-1, 1}


def test_detector_is_in_the_graph_once(det):
    out = score_dask_array(det, da.from_array(P, chunks=(50, 4)))  # 20 blocks
    graph = dict(out.__dask_graph__())
    assert len(graph) >= 20
    size, det_size = len(pickle.dumps(graph)), len(pickle.dumps(det))
    assert det_size < size < 1.5 * det_size, (size, det_size)


def test_scattered_detector_and_uint8_images(client):
    XI = (np.random.RandomState(1).rand(40, 1, 8, 8) * 255).astype(np.uint8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        img = AOEDetector(**TINY, backbone="small_cnn").fit(XI, np.arange(40) % 2)
    future = client.scatter(img, broadcast=True)
    res = score_dask_array(future, da.from_array(XI, chunks=(7, 1, 8, 8))).compute()
    np.testing.assert_array_equal(res, img.score_samples(XI))  # uint8 scaled in each block


@pytest.mark.filterwarnings("ignore:X does not have valid feature names")
def test_dataframe_keeps_index_and_fitted_columns(client):
    pd = pytest.importorskip("pandas")
    dd = pytest.importorskip("dask.dataframe")
    cols = ["a", "b", "c", "d"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        named = AOEDetector(**TINY).fit(pd.DataFrame(X, columns=cols), Y)
    # what scikit-learn's validation records for a DataFrame fit (set here explicitly: this
    # test is about the helper picking the columns, whichever part of fit records them)
    named.feature_names_in_ = np.asarray(cols, dtype=object)
    frame = pd.DataFrame(P, columns=cols, index=np.arange(len(P)) * 3 + 7)
    frame = frame[["d", "b", "a", "c"]]  # columns reordered
    frame.insert(1, "extra", 1.0)  # and a column the detector does not use
    ddf = dd.from_pandas(frame, npartitions=6)
    s = score_dask_dataframe(named, ddf).compute()  # columns default: feature_names_in_
    assert s.name == "score_samples" and s.index.equals(frame.index)
    np.testing.assert_array_equal(s.to_numpy(), named.score_samples(frame[cols]))
    pred = score_dask_dataframe(named, ddf, columns=cols, method="predict").compute()
    np.testing.assert_array_equal(pred.to_numpy(), named.predict(frame[cols]))
    del named.feature_names_in_  # no names recorded: every column of ddf, unless given
    with pytest.raises(ValueError, match="5 features"):
        score_dask_dataframe(named, ddf).compute()
    s = score_dask_dataframe(named, ddf, columns=cols).compute()
    np.testing.assert_array_equal(s.to_numpy(), named.score_samples(frame[cols].to_numpy()))
    with pytest.raises(ValueError, match=r"`columns` \['zz'\] are not columns of `ddf`"):
        score_dask_dataframe(named, ddf, columns=["zz"])


def test_bad_arguments(det):
    with pytest.raises(TypeError, match="must be a dask.array.Array"):
        score_dask_array(det, P)
    with pytest.raises(ValueError, match="`method` must be one of"):
        score_dask_array(det, da.from_array(P), method="fit")
    with pytest.raises(NotFittedError):
        score_dask_array(AOEDetector(), da.from_array(P))
    with pytest.raises(TypeError, match="must be a fitted AOEDetector"):
        score_dask_array(object(), da.from_array(P))
