"""Input rules: every rule about what the detector accepts as data lives here, once.

Arrays, tensors, DataFrames and sparse matrices (:func:`check_inputs`,
:func:`check_more_inputs`), the items and batches of map-style Datasets
(:func:`inspect_dataset`, :func:`split_item`, :func:`item_tensor`, :func:`item_label`,
:func:`check_batch`), the sample shape (:func:`channels_first_shape`: channels first, the
channels-last hint), finite values, the declared ``input_range`` (:func:`resolve_input_range`,
:func:`check_input_range`), uint8 pixels (:func:`is_pixels`), class labels and outlier rows
(:func:`labels_from_y`, :func:`outlier_rows`, :func:`check_two_classes`,
:func:`is_outlier_array`) and the attack radius (:func:`check_epsilon`). The modules above
(:mod:`aoe_detect._fit_inputs`, which orders the checks of ``fit``; :mod:`aoe_detect._loading`,
the row type, whose batches are checked while they load; the outlier sources and the
scoring methods) call these rules and hold none of their own. Internal helpers trust their
inputs.
"""

from __future__ import annotations

import math
import numbers
import warnings

import numpy as np
import scipy.sparse
import torch
from torch.utils.data import IterableDataset

from sklearn.base import BaseEstimator
from sklearn.utils import check_array

from ._compat import validate_data
from ._torch_utils import pixels_to_unit

__all__ = ["to_numpy", "is_dataframe", "MAX_DENSE_BYTES", "check_inputs", "check_more_inputs",
           "check_input_range", "resolve_input_range", "labels_from_y", "outlier_rows",
           "check_two_classes", "is_outlier_array", "check_epsilon", "FitRecord",
           "channels_first_shape", "is_pixels", "check_finite", "split_item", "item_tensor", "item_label",
           "check_batch", "check_item_shapes", "inspect_dataset", "DatasetInfo", "N_CHECK"]

_F32_MAX = float(np.finfo(np.float32).max)

#: A scipy.sparse ``X`` (e.g. the output of a ``ColumnTransformer`` with a ``OneHotEncoder``)
#: is densified when its dense copy takes at most this many bytes (2 GiB); a larger one is
#: refused with a hint. Scoring densifies chunk by chunk, so only ``fit`` meets the limit.
MAX_DENSE_BYTES = 2 * 1024 ** 3

_PIPELINE_HINT = ("encode them before the detector, e.g. make_pipeline(ColumnTransformer("
                  "[('categorical', OneHotEncoder(handle_unknown='ignore'), categorical_columns)], "
                  "remainder=StandardScaler()), AOEDetector()) (user guide: \"Tables: DataFrames, "
                  "categorical columns and missing values\")")


def _names(cols, limit=10):
    shown = ", ".join(repr(c) for c in cols[:limit])
    return f"[{shown}{', ...' if len(cols) > limit else ''}] ({len(cols)} in all)"


def _missing_message(name, where):
    return (f"Input {name} contains NaN: missing values in {where}. AOEDetector does not accept "
            "missing values: impute them first, e.g. make_pipeline(SimpleImputer(), AOEDetector()) "
            "(sklearn.impute; add_indicator=True keeps the information that a value was "
            "missing), or drop those rows.")


def is_dataframe(a):
    """Whether ``a`` is a pandas DataFrame (duck-typed: pandas is an optional dependency)."""
    return hasattr(a, "columns") and hasattr(a, "dtypes") and hasattr(a, "iloc")


def _check_frame(df, name):
    """DataFrames: non-numeric columns and columns with missing values are named."""
    bad = [f"{c} ({dt})" for c, dt in df.dtypes.items() if getattr(dt, "kind", "O") not in "biuf"]
    if bad:
        raise ValueError(f"`{name}` has non-numeric columns {_names(bad)}; AOEDetector takes "
                         f"numbers only: {_PIPELINE_HINT}.")
    missing = [c for c, m in df.isna().any().items() if m]
    if missing:
        raise ValueError(_missing_message(name, f"the columns {_names(missing)}"))
    return df


def _densify(a, name):
    """A scipy.sparse matrix or array as a dense ndarray, below :data:`MAX_DENSE_BYTES`."""
    n_bytes = int(np.prod(a.shape, dtype=np.float64)) * max(a.dtype.itemsize, 4)
    if n_bytes > MAX_DENSE_BYTES:
        raise ValueError(
            f"`{name}` is a sparse matrix of shape {a.shape}; the detector's backbone needs dense "
            f"rows, and its dense copy would take {n_bytes / 2 ** 30:.1f} GiB, above the limit of "
            f"{MAX_DENSE_BYTES / 2 ** 30:.0f} GiB (aoe_detect._validation.MAX_DENSE_BYTES). Reduce "
            "the columns first (OneHotEncoder(min_frequency=..., max_categories=...), or "
            "TruncatedSVD), or fit on fewer rows.")
    return a.toarray()


def _check_missing(arr, name):
    """Arrays: NaN named by column (2-D) or counted by sample (images)."""
    if getattr(getattr(arr, "dtype", None), "kind", None) != "f" or getattr(arr, "ndim", 0) < 2:
        return
    nan = np.isnan(arr)
    if not nan.any():
        return
    if arr.ndim == 2:
        cols = np.flatnonzero(nan.any(axis=0)).tolist()
        raise ValueError(_missing_message(name, f"the columns (indices) {_names(cols)}"))
    rows = int(nan.reshape(len(arr), -1).any(axis=1).sum())
    raise ValueError(_missing_message(name, f"{rows} sample(s)"))


class FitRecord(BaseEstimator):
    """Stands in for the estimator in scikit-learn's ``validate_data(reset=True)``: it
    receives ``n_features_in_`` and ``feature_names_in_`` so that the fit-input path returns
    them and only the estimator sets its own attributes. Error messages name
    ``estimator_name``."""

    def __init__(self, estimator_name="AOEDetector"):
        self.estimator_name = estimator_name


def to_numpy(a, name):
    """Torch tensors -> numpy (on CPU; bfloat16 and other dtypes numpy lacks via float32);
    loaders and iterators are refused with a hint; everything else via ``np.asarray`` later."""
    if isinstance(a, torch.Tensor):
        if a.layout != torch.strided:
            raise TypeError(f"`{name}` is a sparse tensor; sparse input is not supported, pass a "
                            "dense tensor (X.to_dense()).")
        a = a.detach().cpu()
        if a.dtype in (torch.bfloat16, torch.float16) or str(a.dtype).startswith("torch.float8"):
            a = a.float()  # exact: every bf16/fp16/fp8 value is a float32
        try:
            return a.numpy()
        except TypeError as exc:
            raise TypeError(f"`{name}` is a tensor of dtype {a.dtype}, which cannot be converted "
                            f"({exc}); pass a float32 tensor.") from None
    if isinstance(a, torch.utils.data.DataLoader):
        raise TypeError(f"`{name}` is a DataLoader; pass its Dataset instead ({name}=loader.dataset): "
                        "the detector batches (and, for fit, shuffles) the data itself.")
    if not hasattr(a, "__len__") and (hasattr(a, "__next__") or hasattr(a, "__iter__")):
        raise TypeError(f"`{name}` is an iterator/generator ({type(a).__name__}); pass an array, a "
                        "tensor or a map-style Dataset (np.asarray(list(...)) for small data).")
    return a


def _reject_bad_dtype(a, name):
    """Refuse complex, string and ragged data; name a DataFrame's non-numeric and missing
    columns (the frame is returned as is, so scikit-learn records its column names);
    densify scipy.sparse input; name the columns of an array holding NaN."""
    if is_dataframe(a):
        return _check_frame(a, name)
    if scipy.sparse.issparse(a):
        a = _densify(a, name)
    if hasattr(a, "dtype"):
        arr = a
    else:
        try:
            arr = np.asarray(a)
        except ValueError as exc:  # ragged nested lists
            raise ValueError(f"`{name}` is ragged (rows of different lengths or shapes): {exc}. "
                             "Every sample must have the same shape.") from None
    kind = getattr(getattr(arr, "dtype", None), "kind", None)
    if kind == "c":
        raise ValueError(f"Complex data not supported: `{name}` has dtype {arr.dtype}; real "
                         "numbers are expected.")
    if kind in ("U", "S"):
        raise ValueError(f"`{name}` holds strings (dtype {arr.dtype}); numeric data is expected.")
    if kind == "O":
        try:
            np.asarray(arr, dtype=np.float64)
        except (TypeError, ValueError) as exc:  # keep the type: sklearn expects TypeError
            raise type(exc)(f"`{name}` has dtype object with non-numeric values ({exc}); "
                            "numeric data is expected.") from None
    _check_missing(arr, name)
    return arr


def _check_n_dims_and_samples(X, name, min_samples):
    """Name the argument in the messages for too few dimensions or samples."""
    shape = tuple(getattr(X, "shape", ()))
    if len(shape) < 2:
        raise ValueError(f"`{name}` must be 2-D (n_samples, n_features), 3-D (n, h, w) or 4-D "
                         f"(n, c, h, w); got {len(shape)}-D with shape {shape}. Reshape your data: "
                         "a single sample needs a leading axis, x.reshape(1, -1) or x[None].")
    if shape[0] < min_samples:
        raise ValueError(f"`{name}` has {shape[0]} sample(s) (shape {shape}); at least "
                         f"{min_samples} needed.")


def _check_float32_finite(X, name):
    """float64 values beyond the float32 range would silently become inf."""
    if not np.isfinite(X).all():
        raise ValueError(f"`{name}` has values too large for float32 (|x| > 3.4e38 after "
                         "conversion); finite float32 values are expected.")


def channels_first_shape(raw_shape, name, per_item=False, array_shape=None):
    """The shape rule: one raw sample's shape -> the channels-first shape the backbone sees.

    ``(d,)`` (a table row) and ``(c, h, w)`` stay, ``(h, w)`` becomes ``(1, h, w)``;
    channels-last images ``(h, w, c)`` with ``c`` in 1, 3, 4 are refused with the fix for an
    array (``per_item=False``; ``array_shape`` is the whole array's shape, named in the
    message) or for a Dataset's items; other shapes are refused.
    """
    raw = tuple(int(v) for v in raw_shape)
    if len(raw) == 1:
        return raw
    if len(raw) == 2:
        return (1, *raw)
    if len(raw) == 3:
        if raw[-1] in (1, 3, 4) and raw[0] not in (1, 3, 4):
            fix = ("the items must be (c, h, w) or (h, w) (use transforms.ToTensor() or "
                   "x.permute(2, 0, 1))" if per_item else
                   f"images must be (n, c, h, w) or (n, h, w). Use {name}.transpose(0, 3, 1, 2)")
            what = (f"shape {tuple(array_shape)}" if array_shape is not None
                    else f"samples of shape {raw}")
            raise ValueError(f"`{name}` looks channels-last with {what}; {fix}.")
        return raw
    raise ValueError(f"`{name}` has samples of shape {raw}; expected (d,) (a table row), (h, w) or "
                     "(c, h, w) (an image): arrays of 2, 3 or 4 dimensions.")


def _channels_first(X, name):
    """(n, h, w) -> (n, 1, h, w); reject obvious channels-last 4-D arrays (:func:`channels_first_shape`)."""
    if X.ndim > 4:
        raise ValueError(f"`{name}` must be 2-D (n, features), 3-D (n, h, w) or 4-D (n, c, h, w); "
                         f"got {X.ndim} dimensions with shape {X.shape}.")
    channels_first_shape(X.shape[1:], name, array_shape=X.shape)
    return X[:, None] if X.ndim == 3 else X


def is_pixels(uint8, shape):
    """The pixel rule: uint8 samples of images (``shape`` ``(c, h, w)``) are pixel values in
    [0, 255], scaled to [0, 1] (:func:`~aoe_detect._torch_utils.pixels_to_unit`); uint8
    tables keep their values."""
    return bool(uint8) and len(shape) == 3


def _check_fitted_image_shape(X, expected, name):
    """Name the image shape a fitted detector expects when ``X`` is flattened images or
    channels-last images (scikit-learn would only count features or channels)."""
    if len(expected) != 3:
        return
    c, h, w = expected
    if X.ndim == 2 and X.shape[1] == c * h * w:
        raise ValueError(f"`{name}` is 2-D with {X.shape[1]} features, but the detector was "
                         f"fitted on images of shape {expected} (channels, height, width): "
                         f"pass {name}.reshape(-1, {c}, {h}, {w}).")
    if X.ndim == 2:
        raise ValueError(f"`{name}` is 2-D with shape {X.shape}, but the detector was fitted on "
                         f"images of shape {expected}; pass (n, {c}, {h}, {w}) arrays.")
    if X.ndim == 4 and tuple(X.shape[1:]) == (h, w, c) and (h, w, c) != expected:
        raise ValueError(f"`{name}` looks channels-last with shape {X.shape}; the detector was "
                         f"fitted on images of shape {expected} (n, c, h, w). Use "
                         f"{name}.transpose(0, 3, 1, 2).")


def check_inputs(estimator, X, *, name="X", reset, min_samples=1):
    """Validate ``X`` and return ``(float32 ndarray (n, *sample_shape), was_uint8)``.

    On ``reset=True`` sets ``n_features_in_`` (and ``feature_names_in_``); otherwise checks
    the number of features / channels and the full sample shape against ``input_shape_``.
    """
    X = to_numpy(X, name)
    X = _reject_bad_dtype(X, name)
    _check_n_dims_and_samples(X, name, min_samples)
    was_uint8 = getattr(X, "dtype", None) == np.uint8
    if not hasattr(X, "columns"):  # not a DataFrame: images become (n, c, h, w) first, so
        X = np.asarray(X)  # n_features_in_ is the channel count for (n, h, w) input too
        if X.ndim >= 3:
            X = _channels_first(X, name)
        if not reset and getattr(estimator, "input_shape_", None) is not None:
            _check_fitted_image_shape(X, tuple(estimator.input_shape_), name)
    name_in_errors = estimator.estimator_name if isinstance(estimator, FitRecord) else estimator
    try:
        X = validate_data(estimator, X, reset=reset, allow_nd=True, dtype=[np.float64, np.float32],
                          ensure_min_samples=min_samples, estimator=name_in_errors)
    except ValueError as exc:  # columns missing, extra or reordered: refused, as scikit-learn does
        if str(exc).startswith("The feature names should match"):
            raise ValueError(f"`{name}` does not have the columns the detector was fitted on. "
                             f"{str(exc).rstrip()}\nSelect and order them by name: "
                             f"{name}[detector.feature_names_in_].") from None
        raise
    X = np.asarray(X)
    if not reset:
        expected = estimator.input_shape_
        if tuple(X.shape[1:]) != tuple(expected):
            raise ValueError(f"`{name}` has samples of shape {tuple(X.shape[1:])}, but the detector "
                             f"was fitted on samples of shape {tuple(expected)}.")
    X = X.astype(np.float32, copy=False)
    _check_float32_finite(X, name)
    was_uint8 = is_pixels(was_uint8, X.shape[1:])
    if was_uint8:
        X = pixels_to_unit(X)
    return X, was_uint8


def check_more_inputs(X, *, name, sample_shape, feature_names=None):
    """Validate an extra array (outliers) against the ID sample shape; scale uint8. A
    DataFrame must have the columns ``feature_names`` of ``X`` (when ``X`` had names), in
    the same order."""
    X = to_numpy(X, name)
    X = _reject_bad_dtype(X, name)
    if feature_names is not None and is_dataframe(X):
        cols = [str(c) for c in X.columns]
        if cols != [str(c) for c in feature_names]:
            raise ValueError(f"`{name}` has the columns {_names(cols)}, but X has "
                             f"{_names(list(feature_names))}; pass it with X's columns in X's "
                             f"order ({name}[X.columns]).")
    _check_n_dims_and_samples(X, name, 1)
    was_uint8 = getattr(X, "dtype", None) == np.uint8
    X = check_array(X, allow_nd=True, dtype=[np.float64, np.float32], input_name=name,
                    ensure_min_samples=1)
    X = np.asarray(X)
    if X.ndim == 3 and len(sample_shape) == 3:
        X = X[:, None]
    if tuple(X.shape[1:]) != tuple(sample_shape):
        raise ValueError(f"`{name}` has samples of shape {tuple(X.shape[1:])}, but X has samples "
                         f"of shape {tuple(sample_shape)}.")
    X = X.astype(np.float32, copy=False)
    _check_float32_finite(X, name)
    return pixels_to_unit(X) if is_pixels(was_uint8, X.shape[1:]) else X


def resolve_input_range(input_range, sample_shape):
    """``input_range`` -> ``(low, high)`` floats or None; ``"auto"``: (0, 1) for images."""
    r = input_range
    if isinstance(r, str):
        return (0.0, 1.0) if len(sample_shape) == 3 else None
    if r is None:
        return None
    if (len(r) != 2 or not all(isinstance(v, numbers.Real) and math.isfinite(v) for v in r)
            or not r[0] < r[1]):
        raise ValueError(f"`input_range` must be 'auto', None or (low, high) with finite "
                         f"low < high, got {r!r}.")
    return (float(r[0]), float(r[1]))


def _where(X, bad_rows, items):
    """"row i" / "item j" (a Dataset's item index) of the first offending row."""
    i = int(np.flatnonzero(np.asarray(bad_rows))[0])
    return f"item {items[i]}" if items is not None else f"row {i}"


def _rows_mask(X, fn):
    flat = X.reshape(len(X), -1)
    out = fn(flat).any(1)
    return out.numpy() if isinstance(out, torch.Tensor) else out


def check_finite(X, name, items=None):
    """The finite-values rule for a batch (array or tensor, rows first): NaN or infinity
    is refused, naming the first offending row (its Dataset item index with ``items``)."""
    finite = torch.isfinite(X).all() if isinstance(X, torch.Tensor) else np.isfinite(X).all()
    if not bool(finite):
        lib = torch if isinstance(X, torch.Tensor) else np
        bad = _rows_mask(X, lambda f: ~lib.isfinite(f))
        raise ValueError(f"`{name}` {_where(X, bad, items)} contains NaN or infinity.")


def check_input_range(X, input_range, name, items=None):
    """The input-range rule: raise if ``X`` (array or tensor, rows first) leaves the declared
    ``input_range`` (tolerance 1e-6), naming the first offending row (its Dataset item index
    with ``items``)."""
    size = X.numel() if isinstance(X, torch.Tensor) else X.size
    if input_range is None or size == 0:
        return
    lo, hi = input_range
    xmin, xmax = float(X.min()), float(X.max())
    if xmin < lo - 1e-6 or xmax > hi + 1e-6:
        bad = _rows_mask(X, lambda f: (f < lo - 1e-6) | (f > hi + 1e-6))
        raise ValueError(
            f"`{name}` has values in [{xmin:.4g}, {xmax:.4g}], outside the declared input range "
            f"[{lo}, {hi}] (parameter `input_range`). The first such sample is "
            f"{_where(X, bad, items)}. Scale images to [0, 1] (uint8 is scaled automatically), "
            "or set input_range=None (no clipping) or to the real range.")


def check_item_shapes(xs, raw_shape, name, items):
    """Every loaded item has the raw shape of the first items (:func:`inspect_dataset`)."""
    for t, i in zip(xs, items):
        if tuple(t.shape) != tuple(raw_shape):
            raise ValueError(f"`{name}` item {i} has shape {tuple(t.shape)}; the first items have "
                             f"{tuple(raw_shape)}. All samples must have the same shape.")


def check_batch(x, name, input_range, items):
    """A loaded batch of Dataset items (float32 tensor): finite, inside ``input_range``."""
    if x.numel():
        check_finite(x, name, items)
        check_input_range(x, input_range, name, items)


def labels_from_y(y, n, name="y", outlier_label=-1):
    """Validate class labels; return ``(labels ndarray, is_outlier mask)``.

    Labels are anything a scikit-learn classifier accepts: integers (floats without a
    fractional part and bools are taken as integers; non-contiguous values such as
    ``{3, 7, 100}`` are fine) or strings. Rows equal to ``outlier_label`` are outlier rows.
    For integer labels every other negative value is an error (negative labels mean OOD in
    :meth:`AOEDetector.score <aoe_detect.AOEDetector.score>`).

    Returns
    -------
    labels : ndarray of shape (n,)
        Integer labels in their own dtype, bools as bools, integral floats as int64,
        str for string labels.
    is_outlier : ndarray of shape (n,), bool
    """
    y = to_numpy(y, name)
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y.ravel()
    if y.ndim != 1:
        raise ValueError(f"`{name}` must be 1-D class labels of length {n}; got shape {y.shape}.")
    if len(y) != n:
        raise ValueError(f"`{name}` has {len(y)} labels but X has {n} samples.")
    if y.dtype.kind == "c":
        raise ValueError(f"`{name}` must hold integer class labels; got dtype {y.dtype} (string "
                         "labels are accepted too).")
    if y.dtype.kind == "O":
        kinds = {"str" if isinstance(v, str) else "num" if isinstance(v, (int, float, np.number))
                 and not isinstance(v, (bool, np.bool_)) else type(v).__name__ for v in y}
        if kinds == {"str"}:
            y = y.astype(str)
        elif kinds <= {"num", "bool"} and kinds:
            try:
                y = y.astype(np.float64)
            except (TypeError, ValueError):  # pragma: no cover - guarded by the kinds above
                raise ValueError(f"`{name}` has non-numeric values.") from None
        else:
            raise ValueError(f"`{name}` must hold class labels of one kind (all integers or all "
                             f"strings); got values of types {sorted(kinds)}.")
    if y.dtype.kind in ("U", "S"):
        y = y.astype(str)
        if isinstance(outlier_label, str):
            return y, y == outlier_label
        n_like = int((y == str(outlier_label)).sum())
        if n_like:
            warnings.warn(f"`{name}` holds string labels, and {n_like} of them are "
                          f"{str(outlier_label)!r}, the text of the integer outlier_label="
                          f"{outlier_label!r}: they are taken as a class, not as outliers. Pass "
                          f"outlier_label={str(outlier_label)!r} to mark them as outliers, or "
                          "integer labels.", UserWarning, stacklevel=4)
        return y, np.zeros(len(y), dtype=bool)
    if y.dtype.kind == "f":
        if not np.all(np.isfinite(y)):
            raise ValueError(f"`{name}` contains NaN or infinity.")
        if np.any(y != np.round(y)):
            bad = y[y != np.round(y)][:3]
            raise ValueError(f"`{name}` must hold integer class labels; got fractional values "
                             f"such as {bad.tolist()}.")
        y = y.astype(np.int64)
    elif y.dtype.kind == "b":  # bool labels stay bools (classes_ [False, True]); a bool
        return y, np.zeros(len(y), dtype=bool)  # is never the outlier_label
    # integer labels keep their dtype (classes_ as the user gave them, uint64 included)
    marker = None if isinstance(outlier_label, str) else outlier_label
    if marker is None or (y.dtype.kind == "u" and marker < 0):
        is_out = np.zeros(len(y), dtype=bool)
    else:
        is_out = y == marker
    bad = (y < 0) & ~is_out
    if bad.any():
        raise ValueError(f"`{name}` has negative labels other than {outlier_label!r} "
                         f"({np.unique(y[bad])[:5].tolist()}); class labels are integers >= 0 "
                         f"or strings, and `outlier_label` ({outlier_label!r}) marks an outlier "
                         "row (negative labels mean OOD).")
    return y, is_out


def outlier_rows(y, n, outlier_label):
    """The one rule for labels with outlier rows, for arrays and Datasets alike: ``(labels,
    is_outlier)`` from ``y``; an error when fewer than two in-distribution rows remain."""
    labels, is_out = labels_from_y(y, n, outlier_label=outlier_label)
    if is_out.all():
        raise ValueError(f"All rows of `y` are {outlier_label!r} (outliers); at least two "
                         "in-distribution rows are needed.")
    if n - int(is_out.sum()) < 2:
        raise ValueError(f"Only {n - int(is_out.sum())} in-distribution row(s) in X; at least 2 "
                         "are needed.")
    return labels, is_out


def check_two_classes(labels, backbone_is_name):
    """A backbone built by name learns classes: labels of one class only are refused."""
    if labels is not None and backbone_is_name and len(np.unique(labels)) < 2:
        raise ValueError(f"`y` has only one class ({np.unique(labels).tolist()}); pass labels "
                         "of at least two classes, or fit without labels (y=None).")


def is_outlier_array(y, sample_shape, n_samples=None):
    """Whether the second positional argument of ``fit`` is an array of outliers.

    The rule, in order:

    - ``None``, 0-D and 1-D: labels (not outliers).
    - 2-D of shape ``(n, 1)`` with integer/bool values: labels, always (a column vector of
      class labels), even when ``X`` has one feature.
    - a one-hot label matrix (``n_samples`` rows of 0/1 with exactly one 1 each): refused
      with a ``ValueError`` that says to pass ``y.argmax(1)`` (never silently outliers).
    - samples of ``X``'s shape: outliers. A float ``(n_samples, 1)`` array of integral
      values next to a one-feature ``X`` is ambiguous and refused (pass ``y.ravel()`` for
      labels or ``X_outliers=`` for outliers).
    - anything else: labels (``labels_from_y`` then reports the shape error).
    """
    if y is None or isinstance(y, str):
        return False
    arr = np.asarray(to_numpy(y, "y"))
    shape = arr.shape
    if len(shape) < 2:
        return False
    kind = arr.dtype.kind
    if len(shape) == 2 and shape[1] == 1 and kind in "iub":
        return False
    same_rows = n_samples is not None and shape[0] == n_samples
    if (same_rows and len(shape) == 2 and shape[1] > 1 and kind in "iubf" and arr.size
            and np.isin(arr, (0, 1)).all() and (arr.sum(axis=1) == 1).all()):
        raise ValueError(f"The second argument of fit has shape {shape} and looks like one-hot class "
                         "labels; pass integer labels y.argmax(axis=1) as `y`, or an outlier array "
                         "as `X_outliers=` (never both positionally).")
    tail = tuple(shape[1:])
    matches = tail == tuple(sample_shape) or (len(sample_shape) == 3 and sample_shape[0] == 1
                                              and tail == tuple(sample_shape[1:]))
    if (matches and same_rows and len(shape) == 2 and shape[1] == 1 and kind == "f"
            and np.isfinite(arr).all() and (arr == np.round(arr)).all()):
        raise ValueError(f"Ambiguous second argument of fit: shape {shape} with integral values "
                         "next to a one-feature X could be labels or outliers; pass labels as "
                         "y.ravel() (integers) or outliers as `X_outliers=`.")
    return matches


def check_epsilon(epsilon, sample_shape, name="epsilon"):
    """A real number or one per feature, finite in float32 and >= 0; bools and strings
    are refused (``True`` is not a radius, ``"0.1"`` is not a number). Returns a float or
    a float32 array broadcastable to ``sample_shape``."""
    msg = (f"`{name}` must be None, a number >= 0 or an array of one radius per feature "
           f"(shape {tuple(sample_shape)} or broadcastable to it), finite in float32; "
           f"got {epsilon!r}.")
    if isinstance(epsilon, (bool, np.bool_, str, bytes)):
        raise TypeError(msg)
    if isinstance(epsilon, torch.Tensor):
        epsilon = epsilon.detach().cpu().numpy()
    try:
        e = np.asarray(epsilon)
    except (TypeError, ValueError):
        raise TypeError(msg) from None
    if e.dtype.kind not in "iuf":
        raise TypeError(msg)
    e = e.astype(np.float64)
    if not (np.isfinite(e).all() and (e >= 0).all() and (np.abs(e) <= _F32_MAX).all()):
        raise ValueError(msg)
    if e.ndim:
        try:
            np.broadcast_shapes(e.shape, tuple(sample_shape))
        except ValueError:
            raise ValueError(msg) from None
        if e.ndim > len(sample_shape):
            raise ValueError(msg)
        return e.astype(np.float32)
    return float(e)


#: Items of a Dataset checked up front by :func:`inspect_dataset` (type, dtype, shape,
#: finite values); every later item is checked while it loads (:func:`check_batch`).
N_CHECK = 8


# ----------------------------------------------------------------------------- Dataset items
def split_item(item, name, index):
    """``x`` or ``(x, y)`` -> ``(x, y or None)``; a 1-tuple ``(x,)`` (TensorDataset) is ``x``."""
    if isinstance(item, (tuple, list)):
        if len(item) == 2:
            return item[0], item[1]
        if len(item) == 1:
            return item[0], None
        raise ValueError(f"`{name}` items must be x or (x, y); item {index} is a "
                         f"{type(item).__name__} of length {len(item)}.")
    if isinstance(item, dict):
        raise ValueError(f"`{name}` items must be x or (x, y), not dicts (item {index} has keys "
                         f"{sorted(item)[:5]}); wrap the dataset to return (image, label).")
    return item, None


def item_tensor(x, name, index):
    """One item's sample as a CPU tensor (numpy arrays without a copy); complex refused,
    bool as uint8."""
    if isinstance(x, torch.Tensor):
        t = x.detach()
        if t.device.type != "cpu":
            t = t.cpu()
    elif isinstance(x, np.ndarray):
        t = torch.from_numpy(np.ascontiguousarray(x))
    else:
        raise TypeError(f"`{name}` item {index} holds a {type(x).__name__}; samples must be torch "
                        "tensors or numpy arrays (for PIL images add torchvision's "
                        "transforms.ToTensor() or PILToTensor()).")
    if t.is_complex():
        raise ValueError(f"Complex data not supported: `{name}` item {index} has dtype {t.dtype}.")
    if t.dtype == torch.bool:
        t = t.to(torch.uint8)
    return t


def item_label(y, name, index):
    """One item's label: a scalar integer (``-1`` marks an outlier)."""
    if isinstance(y, torch.Tensor):
        if y.numel() != 1:
            raise ValueError(f"`{name}` item {index} has a label of shape {tuple(y.shape)}; "
                             "labels must be scalars (class index, -1 for an outlier).")
        y = y.item()
    elif isinstance(y, np.ndarray):
        if y.size != 1:
            raise ValueError(f"`{name}` item {index} has a label of shape {y.shape}; labels must "
                             "be scalars.")
        y = y.item()
    if isinstance(y, bool) or not isinstance(y, numbers.Real) or (
            isinstance(y, float) and (not np.isfinite(y) or y != round(y))):
        raise ValueError(f"`{name}` item {index} has label {y!r}; labels must be integer class "
                         "indices (-1 marks an outlier).")
    return int(y)


class DatasetInfo:
    """What :func:`inspect_dataset` learned from the first items."""

    def __init__(self, shape, raw_shape, labelled, uint8):
        self.shape, self.raw_shape, self.labelled, self.uint8 = shape, raw_shape, labelled, uint8

    def __repr__(self):
        return (f"DatasetInfo(shape={self.shape}, labelled={self.labelled}, "
                f"uint8={self.uint8})")


def inspect_dataset(dataset, name="X", sample_shape=None, min_samples=1):
    """Validate the first items of a map-style dataset.

    Checks the item structure (``x`` or ``(x, y)``), that ``x`` is a numeric tensor/array
    of a supported shape with finite values, and (``sample_shape`` given) that the shape
    matches. Later items are checked batch by batch while they are loaded.

    Returns
    -------
    DatasetInfo
        ``shape`` (channels-first, as the backbone sees it), ``labelled`` and ``uint8``
        (pixels scaled from [0, 255] to [0, 1]).
    """
    if isinstance(dataset, IterableDataset):
        raise TypeError(f"`{name}` is an IterableDataset; only map-style datasets (with "
                        "__getitem__ and __len__) are supported, so that rows can be split, "
                        "sharded across processes and scored in order.")
    try:
        n = len(dataset)
    except TypeError:
        raise TypeError(f"`{name}` is a Dataset without __len__; map-style datasets with "
                        "__len__ are required.") from None
    if n < min_samples:
        raise ValueError(f"`{name}` has {n} item(s); at least {min_samples} are needed.")
    raw_shape = labelled = uint8 = None
    for i in range(min(N_CHECK, n)):
        x, y = split_item(dataset[i], name, i)
        t = item_tensor(x, name, i)
        if labelled is None:
            labelled = y is not None
            raw_shape, uint8 = tuple(t.shape), t.dtype == torch.uint8
            shape = channels_first_shape(raw_shape, name, per_item=True)
        elif labelled != (y is not None):
            raise ValueError(f"`{name}` mixes items with and without labels (item {i}).")
        if tuple(t.shape) != raw_shape:
            raise ValueError(f"`{name}` item {i} has shape {tuple(t.shape)}, item 0 has "
                             f"{raw_shape}; all samples must have the same shape.")
        if (t.dtype == torch.uint8) != uint8:
            raise ValueError(f"`{name}` mixes uint8 and non-uint8 samples (item {i} is {t.dtype}).")
        if t.is_floating_point():
            check_finite(t[None], name, [i])
        if y is not None:
            item_label(y, name, i)
    if sample_shape is not None and tuple(shape) != tuple(sample_shape):
        raise ValueError(f"`{name}` has samples of shape {tuple(shape)}, but the detector "
                         f"expects samples of shape {tuple(sample_shape)} (those of the ID data).")
    return DatasetInfo(shape, raw_shape, labelled, uint8)
