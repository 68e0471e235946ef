"""Fit inputs that involve Datasets: arrays, tensors and map-style Datasets -> the training
data, its labels, and one outlier source or array.

Above loading (:mod:`aoe_detect._loading`) and the outlier sources (:mod:`aoe_detect.outliers`),
below the estimator, which is the only caller. (Formerly in :mod:`aoe_detect.data`, whose
names for these functions are deprecated aliases.)
"""

from __future__ import annotations

import numpy as np
from torch.utils.data import Subset

from ._validation import check_input_range, check_more_inputs, is_outlier_array, labels_from_y
from ._loading import DatasetView, dataset_labels, inspect_dataset, is_dataset
from .outliers import ArrayOutliers, DatasetOutliers, Mixture

__all__ = ["prepare_fit", "combine_outliers", "outlier_source"]


def combine_outliers(parts, num_workers=0):
    """Outlier arrays and Dataset views -> one array, one view, or (mixed) a
    :class:`~aoe_detect.outliers.Mixture` of their sources weighted by size."""
    if not parts:
        return None
    if all(isinstance(p, np.ndarray) for p in parts):
        return np.concatenate(parts)
    if len(parts) == 1:
        return parts[0]
    sources = [(f"part{i}", outlier_source(p, num_workers)) for i, p in enumerate(parts)]
    return Mixture(sources, weights=[len(p) for p in parts])


def outlier_source(outliers, num_workers=0, input_range=None):
    """An outlier array, Dataset, :class:`DatasetView` or source -> a source object."""
    if isinstance(outliers, DatasetView):
        ds = outliers.dataset
        if not isinstance(outliers.indices, range):
            ds = Subset(ds, outliers.indices.tolist())
        return DatasetOutliers(ds, num_workers=num_workers, input_range=outliers.input_range)
    if is_dataset(outliers):
        return DatasetOutliers(outliers, num_workers=num_workers, input_range=input_range)
    if isinstance(outliers, np.ndarray):
        return ArrayOutliers(outliers)
    return outliers


def _outlier_view(ds, shape, input_range):
    info = inspect_dataset(ds, "X_outliers")
    if tuple(info.shape) != tuple(shape):
        raise ValueError(f"`X_outliers` has samples of shape {tuple(info.shape)}, but X has "
                         f"samples of shape {tuple(shape)}.")
    return DatasetView(ds, info, name="X_outliers", input_range=input_range)


def prepare_fit(estimator, X, y, X_outliers):
    """``AOEDetector._prepare_fit_data`` when any input is a Dataset.

    ``X`` a Dataset: its first items are validated (the rest while loading); labels come
    from the items, from ``dataset.targets`` or from ``y``; rows labelled ``-1`` become
    outliers. ``y`` or ``X_outliers`` a Dataset: outliers streamed from it. Returns the
    same dict as the array path, with ``"X"`` a :class:`DatasetView` when ``X`` is a
    Dataset and ``"outliers"`` possibly a view.
    """
    num_workers = getattr(estimator, "num_workers", 0)
    ds_outliers = []
    if is_dataset(X_outliers):
        ds_outliers.append(X_outliers)
        X_outliers = None
    if is_dataset(y):  # fit(X, outlier_dataset): label-free second positional argument
        if ds_outliers:
            raise ValueError("Ambiguous call: fit(X_id, X_outliers) was given outliers as the "
                             "second positional argument AND as `X_outliers`; pass one.")
        ds_outliers.append(y)
        y = None
    if not is_dataset(X):
        out = estimator._prepare_fit_data(X, y, X_outliers)
        shape, input_range = out["shape"], out["input_range"]
        parts = [] if out["outliers"] is None else [out["outliers"]]
        parts += [_outlier_view(d, shape, input_range) for d in ds_outliers]
        out["outliers"] = combine_outliers(parts, num_workers)
        return out

    info = inspect_dataset(X, "X", min_samples=2)
    shape = info.shape
    input_range = estimator._resolve_input_range(shape)
    n = len(X)
    outlier_parts = []
    labels = None
    if info.labelled:
        if y is not None:
            raise ValueError("`X` is a Dataset yielding (x, y) pairs, and `y` was passed too; "
                             "pass the labels one way.")
        labels = dataset_labels(X, info, "X", num_workers)
    elif y is not None:
        if is_outlier_array(y, shape):
            if X_outliers is not None:
                raise ValueError("Ambiguous call: fit(X_id, X_outliers) was given outliers as the "
                                 "second positional argument AND as `X_outliers`; pass one.")
            outlier_parts.append(check_more_inputs(y, name="X_outliers", sample_shape=shape))
        else:
            labels = y
    view = DatasetView(X, info, name="X", input_range=input_range)
    if labels is not None:
        labels, is_out = labels_from_y(labels, n, outlier_label=getattr(estimator, "outlier_label", -1))
        if is_out.all():
            raise ValueError("All rows of `y` are -1 (outliers); at least two in-distribution "
                             "rows are needed.")
        if is_out.any():
            out_view = view.view(np.flatnonzero(is_out))
            out_view.name = "X_outliers"
            outlier_parts.append(out_view)
            view = view.view(np.flatnonzero(~is_out))
            labels = labels[~is_out]
        view.labels = labels
        if len(view) < 2:
            raise ValueError(f"Only {len(view)} in-distribution row(s) in X; at least 2 are needed.")
        if isinstance(estimator.backbone, str) and len(np.unique(labels)) < 2:
            raise ValueError(f"`y` has only one class ({np.unique(labels).tolist()}); pass labels "
                             "of at least two classes, or fit without labels (y=None).")
    if X_outliers is not None:
        outlier_parts.append(check_more_inputs(X_outliers, name="X_outliers", sample_shape=shape))
    for arr in outlier_parts:
        if isinstance(arr, np.ndarray):
            check_input_range(arr, input_range, "X_outliers")
    outlier_parts += [_outlier_view(d, shape, input_range) for d in ds_outliers]
    estimator.__dict__.pop("feature_names_in_", None)
    estimator.n_features_in_ = int(shape[0])
    return {"X": view, "labels": labels, "shape": shape, "input_range": input_range,
            "outliers": combine_outliers(outlier_parts, num_workers)}
