"""Systematic bad-parameter battery (issue 11): bad values are *derived* from the declared
constraints (``AOEDetector._parameter_constraints`` and those of every attack and outlier
source class), so a new parameter is covered as soon as it declares its constraints.

For every (parameter, bad value): ``fit`` raises a ValueError/TypeError naming the
parameter; ``score_samples``, ``decision_function``, ``predict``, ``perturb`` and
``recalibrate`` either raise such an error or return exactly what they returned before;
and once the parameter is set back the detector is bitwise unchanged (params, fitted
attributes, module weights/buffers/device/layout/training flags, scores). The helpers are
shared with ``benchmarks/fault_injection.py`` (``aoe_detect.testing``).
"""

import warnings
from collections import defaultdict

import numpy as np
import pytest

from aoe_detect import AOEDetector
from aoe_detect._compat import make_constraint
from aoe_detect.testing import (TINY, bad_values, check_bad_param, constraint_cases,
                                expected_results, tiny_blobs,
                                nested_classes, numpy_scalar_params)

X, Y, PROBE = tiny_blobs()

CASES = defaultdict(list)
for _owner, _name, _value, _settings in constraint_cases(AOEDetector):
    CASES[(_owner, _name)].append((_value, _settings))


@pytest.fixture(scope="module")
def fitted():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return AOEDetector(**TINY).fit(X, Y)


@pytest.fixture(scope="module")
def expected(fitted):
    return expected_results(fitted, PROBE, Y)


def test_every_parameter_and_nested_class_is_covered():
    covered = {name for owner, name in CASES if owner == "AOEDetector"}
    # every estimator parameter has at least one derived bad value...
    assert covered == set(AOEDetector._parameter_constraints) == set(AOEDetector().get_params())
    # ...and so has every parameter of every attack / outlier-source class
    for _, cls in nested_classes():
        assert {n for o, n in CASES if o == cls.__name__} == set(cls._parameter_constraints), cls
    assert {cls.__name__ for _, cls in nested_classes()} >= {
        "FGSM", "PGD", "GaussianAugment", "UniformNoise", "GaussianNoise", "SmoothNoise",
        "LowDensityGMM", "PermutedID", "Mixture"}
    assert sum(map(len, CASES.values())) > 400


def test_bad_values_violate_every_constraint_and_include_numpy_scalars():
    cons = AOEDetector._parameter_constraints["batch_size"]
    vals = bad_values(cons)
    assert 0 in vals and np.int64(0) in vals and 1.5 in vals and None in vals
    assert not any(make_constraint(c).is_satisfied_by(v) for v in vals for c in cons)
    from aoe_detect.attacks import PGD

    steps = bad_values(PGD._parameter_constraints["steps"])
    assert 0 in steps and -1 in steps
    assert any(isinstance(v, float) and np.isnan(v)
               for v in bad_values(PGD._parameter_constraints["step_size"]))


@pytest.mark.parametrize("owner, name", sorted(CASES), ids=lambda v: str(v))
def test_bad_parameter_clear_error_and_detector_untouched(fitted, expected, owner, name):
    problems = []
    for value, settings in CASES[(owner, name)]:
        for p in check_bad_param(fitted, settings, name, X, Y, PROBE, expected=expected):
            problems.append(f"{name}={value!r}: {p}")
    assert not problems, "\n".join(problems[:10])


def test_numpy_scalars_accepted_for_every_numeric_parameter():
    # GridSearchCV with numpy grids passes numpy scalars: all at once, one fit
    params = numpy_scalar_params(AOEDetector, AOEDetector().get_params())
    assert {"batch_size", "epochs", "lr", "temperature", "contamination"} <= set(params)
    params = {**params, "epochs": np.int64(1), "pretrain_epochs": np.int64(1),
              "batch_size": np.int64(32), "outlier_batch_size": np.int64(16),
              "attack_refresh": np.int64(1), "num_workers": np.int64(0),
              "m_in": np.float64(-1.0), "m_out": np.float64(1.0)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        det = AOEDetector(**{**TINY, **params}).fit(X, Y)
        ref = AOEDetector(**{**TINY, **{k: v.item() for k, v in params.items()}}).fit(X, Y)
    assert det.score_samples(PROBE).tobytes() == ref.score_samples(PROBE).tobytes()
    assert det.offset_ == ref.offset_
