"""The one fit-input path: whatever the user gave ``fit`` (arrays, tensors, map-style
Datasets, outlier arrays or Datasets, labels with outlier rows) -> one :class:`FitInputs`,
in one call (:func:`fit_inputs`).

:func:`prepare_fit_inputs` applies the input rules of :mod:`aoe_detect._validation` once
(this module orders them and holds none of its own) and returns the ID rows as the row type
(:class:`~aoe_detect._loading.TensorRows` in memory, or a
:class:`~aoe_detect._loading.DatasetView` of a Dataset), their labels, the sample shape and
input range, the outliers given with the data, what scikit-learn records about the features
(``n_features_in``, ``feature_names_in``) and the one outlier source of training
(:func:`build_source`); :func:`split_validation` adds the held-out split. Downstream code
reads the rows through their interface and never comes back here. Nothing here sets an
attribute of the estimator: ``fit`` copies what it needs from the :class:`FitInputs`.

Above the input rules (:mod:`aoe_detect._validation`), the row type
(:mod:`aoe_detect._loading`) and the outlier sources (:mod:`aoe_detect.outliers`), below the
estimator, which is the only caller. (``prepare_fit``, ``combine_outliers`` and
``outlier_source`` were in :mod:`aoe_detect.data`, whose names for them are deprecated
aliases.)
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Subset

from ._loading import DatasetView, TensorRows, any_dataset, dataset_labels, is_dataset
from ._validation import (FitRecord, check_input_range, check_inputs, check_more_inputs,
                          check_two_classes, inspect_dataset, is_outlier_array, outlier_rows,
                          resolve_input_range)
from .outliers import ArrayOutliers, DatasetOutliers, Mixture, resolve_outliers

__all__ = ["FitInputs", "fit_inputs", "prepare_fit_inputs", "split_validation", "build_source",
           "resolve_input_range", "input_params", "prepare_fit", "combine_outliers",
           "outlier_source", "keep_classes_in_training"]

_AMBIGUOUS = ("Ambiguous call: fit(X_id, X_outliers) was given outliers as the second "
              "positional argument AND as `X_outliers`; pass one.")


@dataclass
class FitInputs:
    """The validated data of one ``fit``.

    Attributes
    ----------
    X : TensorRows or DatasetView
        The in-distribution rows (outlier rows of ``y`` removed) as the row type: float32
        rows in memory, or a view of a Dataset.
    labels : ndarray of shape (n,) or None
        Their labels as given (integers or strings); None for a label-free fit.
    sample_shape : tuple
        Shape of one sample as the backbone sees it (images channels-first).
    input_range : (float, float) or None
        The resolved ``input_range``.
    n_features_in : int
        Features (tabular) or channels (images).
    feature_names_in : ndarray of str or None
        Column names of a DataFrame ``X``.
    outliers : ndarray, DatasetView, Mixture or None
        Outliers given with the data (``X_outliers``, rows labelled ``outlier_label``, the
        label-free second argument).
    source_array : ndarray or None
        The ``outliers`` parameter when it is an array (validated like ``X_outliers``).
    source : object with ``sample(n, generator)`` or None
        The outlier source of training, built once from the two above and the ``outliers``
        parameter (:func:`build_source`; fitted later on ``X_train`` by
        :func:`aoe_detect._fit_steps.fit_source`); None: no outlier exposure.
    train_idx, val_idx : ndarray or None
        Positions of the training and held-out rows in ``X`` (after
        :func:`split_validation`; None before).
    X_train : torch.Tensor or None
        The training rows as a float32 tensor (a bounded random subset of a Dataset):
        what the statistics (standardisation, ``epsilon="auto"``, margins, outlier source,
        score) are fitted on.
    X_val : TensorRows, DatasetView or None
        The held-out rows (the training rows when none are held out).
    train_data : TensorRows, DatasetView or None
        The training rows, what the training loop iterates over.
    train_labels : ndarray or None
        Labels of the training rows (None for a label-free fit or before the split).
    fitted : dict
        What the estimator records about its inputs (:meth:`fitted_attributes`).
    """

    X: object
    labels: np.ndarray | None
    sample_shape: tuple
    input_range: tuple | None
    n_features_in: int
    feature_names_in: np.ndarray | None = None
    outliers: object = None
    source_array: np.ndarray | None = None
    source: object = None
    train_idx: np.ndarray | None = None
    val_idx: np.ndarray | None = None
    X_train: torch.Tensor | None = None
    X_val: object = None
    train_data: object = None
    train_labels: np.ndarray | None = None
    fitted: dict = dataclasses.field(init=False, repr=False)

    def __post_init__(self):
        # what the estimator records about its inputs, read by fit as a value
        self.fitted = {"n_features_in_": self.n_features_in, "input_shape_": self.sample_shape,
                       "input_range_": self.input_range}
        if self.feature_names_in is not None:
            self.fitted["feature_names_in_"] = self.feature_names_in

    def fitted_attributes(self):
        """What the estimator records about its inputs: ``n_features_in_``,
        ``feature_names_in_`` (DataFrame columns only), ``input_shape_``, ``input_range_``
        (also the field ``fitted``)."""
        return dict(self.fitted)


def input_params(estimator):
    """The estimator parameters the fit-input path reads, as keyword arguments of
    :func:`prepare_fit_inputs`."""
    return {"outliers": estimator.outliers, "input_range": estimator.input_range,
            "outlier_label": getattr(estimator, "outlier_label", -1),
            "backbone_is_name": isinstance(estimator.backbone, str),
            "num_workers": estimator._runtime.num_workers,
            "estimator_name": type(estimator).__name__}


def _is_array_param(v):
    """The ``outliers`` parameter given as an array (not a name, source object or Dataset)."""
    if v is None or isinstance(v, str) or hasattr(v, "sample") or is_dataset(v):
        return False
    return isinstance(v, (np.ndarray, torch.Tensor, list, tuple)) or hasattr(v, "__array__")


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


def _array_inputs(X, y, X_outliers, p):
    """The array / tensor path: ``X`` validated by scikit-learn (which records the feature
    count and names on a :class:`FitRecord`), labels, outlier rows and arrays."""
    record = FitRecord(p["estimator_name"])
    Xc, _ = check_inputs(record, X, reset=True, min_samples=2)
    shape = tuple(Xc.shape[1:])
    names = getattr(record, "feature_names_in_", None)  # X's DataFrame columns, if any
    input_range = resolve_input_range(p["input_range"], shape)
    outlier_arrays, labels = [], None
    if is_outlier_array(y, shape, len(Xc)):
        if X_outliers is not None:
            raise ValueError(_AMBIGUOUS)
        outlier_arrays.append(check_more_inputs(y, name="X_outliers", sample_shape=shape,
                                                  feature_names=names))
    elif y is not None:
        labels, is_out = outlier_rows(y, len(Xc), p["outlier_label"])
        if is_out.any():
            outlier_arrays.append(Xc[is_out])
            Xc, labels = Xc[~is_out], labels[~is_out]
    if X_outliers is not None:
        outlier_arrays.append(check_more_inputs(X_outliers, name="X_outliers", sample_shape=shape,
                                                feature_names=names))
    check_input_range(Xc, input_range, "X")
    for arr in outlier_arrays:
        check_input_range(arr, input_range, "X_outliers")
    source_array = None
    if _is_array_param(p["outliers"]):  # same validation as X_outliers
        source_array = check_more_inputs(p["outliers"], name="outliers", sample_shape=shape,
                                         feature_names=names)
        check_input_range(source_array, input_range, "outliers")
    check_two_classes(labels, p["backbone_is_name"])
    rows = TensorRows(torch.from_numpy(np.ascontiguousarray(Xc)), labels)
    return FitInputs(rows, labels, shape, input_range, int(record.n_features_in_), names,
                     np.concatenate(outlier_arrays) if outlier_arrays else None, source_array)


def _dataset_labels(X, y, X_outliers, info, shape, p, outlier_parts):
    """Labels of a Dataset ``X`` (from its items, ``targets`` or ``y``); an outlier array
    passed as ``y`` goes to ``outlier_parts``."""
    if info.labelled:
        if y is not None:
            raise ValueError("`X` is a Dataset yielding (x, y) pairs, and `y` was passed too; "
                             "pass the labels one way.")
        return dataset_labels(X, "X", p["num_workers"])
    if y is not None and is_outlier_array(y, shape):
        if X_outliers is not None:
            raise ValueError(_AMBIGUOUS)
        outlier_parts.append(check_more_inputs(y, name="X_outliers", sample_shape=shape))
        return None
    return y


def _dataset_inputs(X, y, X_outliers, p):
    """The Dataset path: ``X`` a map-style Dataset, validated on its first items (the rest
    while loading); rows labelled ``outlier_label`` become outliers."""
    info = inspect_dataset(X, "X", min_samples=2)
    shape = info.shape
    input_range = resolve_input_range(p["input_range"], shape)
    outlier_parts = []
    labels = _dataset_labels(X, y, X_outliers, info, shape, p, outlier_parts)
    view = DatasetView(X, info, name="X", input_range=input_range)
    if labels is not None:
        labels, is_out = outlier_rows(labels, len(X), p["outlier_label"])
        if is_out.any():
            out_view = view.view(np.flatnonzero(is_out))
            out_view.name = "X_outliers"
            outlier_parts.append(out_view)
            view = view.view(np.flatnonzero(~is_out))
            labels = labels[~is_out]
        view.labels = labels
        check_two_classes(labels, p["backbone_is_name"])
    if X_outliers is not None:
        outlier_parts.append(check_more_inputs(X_outliers, name="X_outliers", sample_shape=shape))
    for arr in outlier_parts:
        if isinstance(arr, np.ndarray):
            check_input_range(arr, input_range, "X_outliers")
    return FitInputs(view, labels, shape, input_range, int(shape[0]), None, outlier_parts)


def prepare_fit_inputs(X, y=None, X_outliers=None, *, outliers="default", input_range="auto",
                       outlier_label=-1, backbone_is_name=True, num_workers=0,
                       estimator_name="AOEDetector"):
    """Validate the data of ``fit`` once and describe it as a :class:`FitInputs`.

    ``X`` an array / tensor: validated by scikit-learn (``n_features_in``,
    ``feature_names_in``), uint8 images scaled to [0, 1]. ``X`` a map-style Dataset: its
    first items are validated (the rest while loading), labels come from the items, from
    ``dataset.targets`` or from ``y``. ``y`` may be labels (rows equal to ``outlier_label``
    become outliers) or, label-free, an outlier array or Dataset; ``X_outliers`` an array
    or Dataset. The keyword arguments are the estimator's parameters (:func:`input_params`).
    """
    p = {"outliers": outliers, "input_range": input_range, "outlier_label": outlier_label,
         "backbone_is_name": backbone_is_name, "num_workers": num_workers,
         "estimator_name": estimator_name}
    ds_outliers = []
    if is_dataset(X_outliers):
        ds_outliers.append(X_outliers)
        X_outliers = None
    if is_dataset(y):  # fit(X, outlier_dataset): label-free second positional argument
        if ds_outliers:
            raise ValueError(_AMBIGUOUS)
        ds_outliers.append(y)
        y = None
    if is_dataset(X):
        inputs = _dataset_inputs(X, y, X_outliers, p)
        parts = inputs.outliers
    else:
        inputs = _array_inputs(X, y, X_outliers, p)
        parts = None if not ds_outliers else [] if inputs.outliers is None else [inputs.outliers]
    if parts is not None:
        parts += [_outlier_view(d, inputs.sample_shape, inputs.input_range) for d in ds_outliers]
        inputs = dataclasses.replace(inputs, outliers=combine_outliers(parts, num_workers))
    return dataclasses.replace(inputs, source=build_source(inputs, outliers, num_workers))


def keep_classes_in_training(perm, n_val, labels):
    """Split a permutation into ``(val_idx, train_idx)`` with ``n_val`` held-out rows, then
    move back into training the first held-out row of every class that would otherwise
    have no training row (so no class silently vanishes from training). Without labels,
    or when every class keeps a training row, this is exactly ``perm[:n_val], perm[n_val:]``.
    """
    val, tr = perm[:n_val], perm[n_val:]
    if labels is None or n_val == 0:
        return val, tr
    labels = np.asarray(labels)
    missing = np.setdiff1d(np.unique(labels[val]), np.unique(labels[tr]))
    if missing.size == 0:
        return val, tr
    move = np.array([int(np.flatnonzero(labels[val] == c)[0]) for c in missing])
    keep = np.ones(len(val), dtype=bool)
    keep[move] = False
    if not keep.any():
        raise ValueError(f"`validation_fraction` holds out {n_val} row(s), but keeping every class "
                         f"in training (classes {missing[:5].tolist()} have too few rows) leaves no "
                         "held-out row for the threshold; give more rows per class or set "
                         "validation_fraction=0.")
    return val[keep], np.concatenate([tr, val[move]])


def split_validation(inputs, validation_fraction, rng, num_workers=0):
    """Hold out ID rows for the threshold (every class keeps a training row): a copy of
    ``inputs`` with ``train_idx``, ``val_idx``, ``X_train``, ``X_val`` and ``train_data``.

    ``round(validation_fraction * n)`` rows (at least 1 and at most ``n - 2`` when the
    fraction is positive) of a permutation drawn from ``rng`` (a numpy RandomState) are held
    out; a Dataset's statistics rows are a bounded subset drawn from ``rng`` next."""
    X = inputs.X
    n = len(X)
    n_val = int(round(validation_fraction * n))
    if validation_fraction > 0:
        n_val = min(max(n_val, 1), n - 2)
    perm = rng.permutation(n)
    val_idx, tr_idx = keep_classes_in_training(perm, n_val, inputs.labels)
    train_data = X.view(tr_idx)
    X_val = X.view(val_idx) if len(val_idx) else train_data
    X_train = train_data.fit_subset(rng, num_workers=num_workers)  # a bounded subset of a Dataset
    return dataclasses.replace(inputs, train_idx=tr_idx, val_idx=val_idx, X_train=X_train,
                               X_val=X_val, train_data=train_data,
                               train_labels=None if inputs.labels is None else inputs.labels[tr_idx])


def fit_inputs(X, y, X_outliers, *, validation_fraction, seed, **params):
    """The data of one ``fit``, in one call: validated (:func:`prepare_fit_inputs`, with the
    estimator's parameters ``params``: :func:`input_params`), the outlier source built, and
    the held-out rows split off with ``numpy.random.RandomState(seed)``
    (:func:`split_validation`). Nothing downstream comes back here: it reads the rows."""
    inputs = prepare_fit_inputs(X, y, X_outliers, **params)
    return split_validation(inputs, validation_fraction, np.random.RandomState(seed),
                            params.get("num_workers", 0))


def build_source(inputs, outliers, num_workers=0):
    """The (unfitted) outlier source of training, or None (no outlier exposure), built once
    with the inputs: outliers given with the data replace the ``outliers`` parameter (with
    ``outliers=None`` they are ignored, with a warning)."""
    if inputs.outliers is not None:
        if outliers is None:
            warnings.warn("Outlier arrays were passed to fit but `outliers=None` disables "
                          "outlier exposure; they are ignored.", UserWarning, stacklevel=4)
            return None
        return outlier_source(inputs.outliers, num_workers)
    if is_dataset(outliers):
        return outlier_source(outliers, num_workers, inputs.input_range)
    if inputs.source_array is not None:
        return resolve_outliers(inputs.source_array, inputs.sample_shape)
    return resolve_outliers(outliers, inputs.sample_shape)





def prepare_fit(estimator, X, y, X_outliers):
    """Deprecated (reachable as ``aoe_detect.data.prepare_fit``): the former dict form of
    :func:`prepare_fit_inputs`, which also recorded ``n_features_in_`` on ``estimator``."""
    inputs = prepare_fit_inputs(X, y, X_outliers, **input_params(estimator))
    estimator.n_features_in_ = inputs.n_features_in
    if inputs.feature_names_in is None:
        estimator.__dict__.pop("feature_names_in_", None)
    else:
        estimator.feature_names_in_ = inputs.feature_names_in
    out = {"X": inputs.X, "labels": inputs.labels, "shape": inputs.sample_shape,
           "input_range": inputs.input_range, "outliers": inputs.outliers}
    if not any_dataset(X):  # the former form: a float32 array
        out["X"], out["source_array"] = inputs.X.to_tensor().numpy(), inputs.source_array
    return out
