"""Deprecated: the loading internals moved to the private module ``aoe_detect._loading``.

``aoe_detect.data`` stays importable, and every name it used to hold is still reachable here
with a :class:`DeprecationWarning` (the folder of the shipped data sample, formerly
``aoe_detect/data/``, is now ``aoe_detect/sample_data/``; read it with
:func:`aoe_detect.datasets.load_sample`). Nothing in the package imports this module.
"""

from __future__ import annotations

import warnings

from . import _fit_inputs, _loading

#: Names that moved to :mod:`aoe_detect._fit_inputs` (internals of ``AOEDetector.fit``).
_MOVED_TO_FIT_INPUTS = ("prepare_fit", "combine_outliers", "outlier_source")

warnings.warn("aoe_detect.data is deprecated and will be removed: it holds internals of "
              "AOEDetector (now the private aoe_detect._loading). Pass arrays, tensors or "
              "Datasets to the estimator directly.", DeprecationWarning, stacklevel=2)


def __getattr__(name):
    """The former names, each access with a DeprecationWarning."""
    if name in _MOVED_TO_FIT_INPUTS:
        warnings.warn(f"aoe_detect.data.{name} is deprecated and will be removed; it is an "
                      "internal of AOEDetector.fit (now aoe_detect._fit_inputs).",
                      DeprecationWarning, stacklevel=2)
        return getattr(_fit_inputs, name)
    if not name.startswith("__") and hasattr(_loading, name):
        warnings.warn(f"aoe_detect.data.{name} is deprecated and will be removed; it is an "
                      "internal of AOEDetector (now aoe_detect._loading).",
                      DeprecationWarning, stacklevel=2)
        return getattr(_loading, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
