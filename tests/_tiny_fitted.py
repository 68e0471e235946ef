"""Shared by the reliability tests of round two (issue 11), which are split by capability into
``test_failed_calls.py``, ``test_tampered_files.py``, ``test_fit_second_argument.py``,
``test_parameter_checks.py`` and ``test_small_data_and_conformal.py``: their imports, the tiny
blobs and ``fails_untouched`` (a failing call leaves the detector bitwise unchanged). The
module-scoped tiny fit ``fitted`` is the one of ``conftest.py`` (one fit per test module).

The test modules import everything here with ``from _tiny_fitted import *``."""

import copy
import json
import math
import warnings

import numpy as np
import pytest
import torch
from torch import nn

import aoe_detect.persistence as persistence
from aoe_detect import AOEDetector, TrainingInterruptedWarning
from aoe_detect import _fit_inputs, _fit_steps
from aoe_detect._fit_inputs import keep_classes_in_training
from aoe_detect._state import CalibrationWarning, conformal_offset
from aoe_detect.attacks import PGD
from aoe_detect.detector import NoClassesError
from aoe_detect.outliers import UniformNoise
from aoe_detect.testing import (TINY, FlatInTrain, NoParams, describe_change, quiet, set_json,
                                snapshot, tamper, tiny_blobs)

X, Y, PROBE = tiny_blobs()


def fails_untouched(det, call, exc, match, probe=PROBE):
    snap = snapshot(det, probe)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(exc, match=match):
            call(det)
    assert describe_change(det, snap, probe) is None

# the star import of the test modules takes these (``_fit_inputs``, ``_fit_steps`` included)
__all__ = [name for name in dir() if not name.startswith("__")]
