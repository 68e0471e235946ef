"""aoe-detect: out-of-distribution detection with Adversarial Outlier Exposure (AOE).

The public estimator is :class:`AOEDetector`; see the user guide in ``docs/``.
"""

from ._version import __version__
from .detector import AOEDetector  # noqa: E402
from .exceptions import (CalibrationWarning, NoClassesError, NonFiniteLossWarning,  # noqa: E402
                         TrainingInterruptedWarning)
from .losses import energy  # noqa: E402

__all__ = ["AOEDetector", "energy", "NonFiniteLossWarning",
           "TrainingInterruptedWarning", "CalibrationWarning", "NoClassesError", "__version__"]
