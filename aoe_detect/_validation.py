"""Input validation for the public entry points (internal helpers trust their inputs)."""

from __future__ import annotations

import warnings

import numpy as np
import scipy.sparse
import torch

from sklearn.base import BaseEstimator
from sklearn.utils import check_array

from ._compat import validate_data
from ._torch_utils import pixels_to_unit

__all__ = ["to_numpy", "is_dataframe", "MAX_DENSE_BYTES", "check_inputs", "check_more_inputs",
           "check_input_range", "labels_from_y", "is_outlier_array", "check_epsilon", "FitRecord"]

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


def _channels_first(X, name):
    """(n, h, w) -> (n, 1, h, w); reject obvious channels-last 4-D arrays."""
    if X.ndim == 3:
        return X[:, None]
    if X.ndim == 4 and X.shape[-1] in (1, 3, 4) and X.shape[1] not in (1, 3, 4):
        raise ValueError(
            f"`{name}` looks channels-last with shape {X.shape}; images must be (n, c, h, w) "
            f"or (n, h, w). Use X.transpose(0, 3, 1, 2)."
        )
    if X.ndim > 4:
        raise ValueError(f"`{name}` must be 2-D (n, features), 3-D (n, h, w) or 4-D (n, c, h, w); "
                         f"got {X.ndim} dimensions with shape {X.shape}.")
    return X


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
    was_uint8 = was_uint8 and X.ndim == 4  # only images are pixel values in [0, 255]
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
    # uint8 images are pixel values in [0, 255]; uint8 tabular data keeps its values
    return pixels_to_unit(X) if (was_uint8 and X.ndim == 4) else X


def check_input_range(X, input_range, name):
    """Raise if ``X`` leaves the declared ``input_range`` (tolerance 1e-6)."""
    if input_range is None or X.size == 0:
        return
    lo, hi = input_range
    xmin, xmax = float(X.min()), float(X.max())
    if xmin < lo - 1e-6 or xmax > hi + 1e-6:
        raise ValueError(
            f"`{name}` has values in [{xmin:.4g}, {xmax:.4g}], outside the declared input range "
            f"[{lo}, {hi}] (parameter `input_range`). Scale images to [0, 1] (uint8 is scaled "
            "automatically), or set input_range=None (no clipping) or to the real range.")


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
