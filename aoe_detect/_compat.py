"""The only module that imports private or version-dependent scikit-learn names."""

from __future__ import annotations

import numbers

import numpy as np

try:  # scikit-learn >= 1.6
    from sklearn.utils.validation import validate_data as _validate_data

    def validate_data(_estimator, X, /, *, reset, **check_params):
        return _validate_data(_estimator, X, reset=reset, **check_params)
except ImportError:  # pragma: no cover - older scikit-learn
    def validate_data(_estimator, X, /, *, reset, **check_params):
        return _estimator._validate_data(X, reset=reset, **check_params)

from sklearn.utils._param_validation import (  # noqa: E402
    HasMethods, Interval, InvalidParameterError, StrOptions, make_constraint,
    validate_parameter_constraints)

__all__ = ["validate_data", "Interval", "IntInterval", "StrOptions", "RegistryOptions",
           "HasMethods",
           "InvalidParameterError", "validate_parameter_constraints", "make_constraint"]


class RegistryOptions(StrOptions):
    """:class:`StrOptions` whose valid strings are the keys of ``registry`` (plus ``extra``)
    at validation time, so names registered after import are accepted (e.g.
    ``register_backbone("mine")`` then ``AOEDetector(backbone="mine").fit(...)``). The error
    message lists the names registered when it is raised."""

    def __init__(self, registry, extra=()):
        self._registry, self._extra = registry, tuple(extra)
        super().__init__(set())

    @property
    def options(self):
        return {*self._extra, *self._registry}

    @options.setter
    def options(self, value):  # StrOptions.__init__ assigns it; the registry is the truth
        pass


class IntInterval(Interval):
    """``Interval(numbers.Integral, ...)`` that refuses bools: ``True`` is an ``Integral``
    to Python, but ``batch_size=True`` or ``knn_max_samples=True`` is a mistake, not 1."""

    def __init__(self, left, right, *, closed):
        super().__init__(numbers.Integral, left, right, closed=closed)

    def is_satisfied_by(self, val):
        if isinstance(val, (bool, np.bool_)):
            return False
        return super().is_satisfied_by(val)

    def __str__(self):
        return super().__str__() + " (not a bool)"
