"""Score data sets larger than one machine in partitions with Dask.

A fitted :class:`~aoe_detect.AOEDetector` pickles (its module as a CPU state, no training
data) and scores any block of rows on its own, so scoring at scale is ``map_blocks`` /
``map_partitions`` with the detector as one node of the task graph: it is serialised once
and each worker receives it once (not once per partition), then scores the partitions it
is given. Results equal ``score_samples`` on the whole array exactly (scoring is row-wise:
a row's score does not depend on the other rows of its batch).

Memory per worker is bounded by the partitions it holds at a time (``threads_per_worker``
partitions in flight, each ``rows x row bytes``, plus one copy of the detector); inside a
partition ``score_samples`` converts and scores at most
:data:`~aoe_detect.detector.SCORE_CHUNK_ROWS` rows at a time. Choose the chunk size so that
``threads_per_worker x chunk bytes`` fits the worker's memory limit.

Dask is an optional dependency (``pip install "aoe-detect[dask]"``), imported inside the
functions. With a ``distributed.Client``, ``client.scatter(detector, broadcast=True)``
places the detector on every worker ahead of time; pass the returned future as
``detector``.

Examples
--------
>>> import dask.array as da                                   # doctest: +SKIP
>>> X = da.from_zarr("rows.zarr").rechunk((100_000, -1))        # doctest: +SKIP
>>> scores = score_dask_array(det, X).compute()                 # doctest: +SKIP
>>> ddf["score"] = score_dask_dataframe(det, ddf, columns=cols)  # doctest: +SKIP
"""

from __future__ import annotations

import uuid

import numpy as np
from sklearn.utils.validation import check_is_fitted

__all__ = ["score_dask_array", "score_dask_dataframe", "METHODS"]

#: Row-wise methods these helpers apply, with the dtype of their result.
METHODS = {"score_samples": np.float64, "decision_function": np.float64, "predict": np.int64}


def _method(method):
    if method not in METHODS:
        raise ValueError(f"`method` must be one of {list(METHODS)}, got {method!r}.")
    return method


def _shipped(detector):
    """The detector as a single node of the task graph (a Delayed), or as given when it is
    already one (a Delayed, or a distributed Future from ``client.scatter``)."""
    import dask  # optional dependency (the `dask` extra)

    if hasattr(detector, "__dask_graph__") or type(detector).__name__ == "Future":
        return detector
    if not hasattr(detector, "score_samples"):
        raise TypeError(f"`detector` must be a fitted AOEDetector (or a Delayed / Future of "
                        f"one), got {type(detector).__name__}.")
    check_is_fitted(detector, "offset_")
    # pure=False: a unique key, no hashing of the whole detector
    return dask.delayed(detector, pure=False, name=f"aoe-detector-{uuid.uuid4().hex}")


def _score_block(block, detector, method, dtype):
    """``detector.<method>(block)``; empty blocks (dask meta inference, empty partitions)
    give an empty result instead of the detector's 'at least 1 sample' error."""
    if len(block) == 0:
        return np.empty(0, dtype=dtype)
    return np.asarray(getattr(detector, method)(block), dtype=dtype)


def score_dask_array(detector, X, *, method="score_samples"):
    """``detector.<method>`` of every row of a Dask array, block by block.

    Parameters
    ----------
    detector : AOEDetector, Delayed or distributed Future
        Fitted. Put in the task graph once (``dask.delayed``), whatever the number of
        blocks; a Future from ``client.scatter(detector, broadcast=True)`` is used as is.
    X : dask.array.Array of shape (n, *input_shape_)
        Rows in the units ``score_samples`` accepts (uint8 images are scaled). Blocks are
        rechunked to span every axis but the first (a row is never split).
    method : {"score_samples", "decision_function", "predict"}, default="score_samples"

    Returns
    -------
    dask.array.Array of shape (n,)
        float64 scores (higher = more in-distribution) or decision values, or int64
        +1 (in-distribution) / -1 (OOD) for ``predict``; chunked like ``X``'s rows. Call
        ``.compute()`` or store it (``.to_zarr``) to run it.
    """
    import dask.array as da  # optional dependency (the `dask` extra)

    dtype = METHODS[_method(method)]
    if not isinstance(X, da.Array):
        raise TypeError(f"`X` must be a dask.array.Array, got {type(X).__name__}; use "
                        "dask.array.from_array(X, chunks=(rows, -1)) or score_samples.")
    if X.ndim < 2:
        raise ValueError(f"`X` must have a row axis and sample axes, got shape {X.shape}.")
    X = X.rechunk({axis: -1 for axis in range(1, X.ndim)})
    return da.map_blocks(_score_block, X, _shipped(detector), method, dtype, dtype=dtype,
                         drop_axis=list(range(1, X.ndim)), chunks=(X.chunks[0],),
                         meta=np.empty(0, dtype=dtype))


def _score_partition(part, detector, method, dtype):
    import pandas as pd  # optional dependency (comes with dask.dataframe)

    return pd.Series(_score_block(part, detector, method, dtype), index=part.index,
                     dtype=dtype, name=method)


def score_dask_dataframe(detector, ddf, *, columns=None, method="score_samples"):
    """``detector.<method>`` of every row of a Dask DataFrame, partition by partition.

    Parameters
    ----------
    detector : AOEDetector, Delayed or distributed Future
        Fitted; in the task graph once (see :func:`score_dask_array`).
    ddf : dask.dataframe.DataFrame
    columns : list of str, optional
        The feature columns, in the order the detector was fitted on. Default: the
        detector's ``feature_names_in_`` when it was fitted on a DataFrame, else every
        column of ``ddf``.
    method : {"score_samples", "decision_function", "predict"}, default="score_samples"

    Returns
    -------
    dask.dataframe.Series
        Indexed like ``ddf`` (assign it as a new column), named after ``method``: float64
        scores (higher = more in-distribution) or int64 +1 / -1 for ``predict``.
    """
    import dask.dataframe as dd  # optional dependency (the `dask` extra)
    import pandas as pd  # optional dependency (comes with dask.dataframe)

    dtype = METHODS[_method(method)]
    if not isinstance(ddf, dd.DataFrame):
        raise TypeError(f"`ddf` must be a dask.dataframe.DataFrame, got {type(ddf).__name__}.")
    if columns is None:
        names = getattr(detector, "feature_names_in_", None)
        columns = list(ddf.columns) if names is None else list(names)
    missing = [c for c in columns if c not in ddf.columns]
    if missing:
        raise ValueError(f"`columns` {missing} are not columns of `ddf` "
                         f"(it has {list(ddf.columns)[:20]}).")
    return ddf[list(columns)].map_partitions(
        _score_partition, _shipped(detector), method, dtype,
        meta=pd.Series([], dtype=dtype, name=method))
