"""aoe-detect: out-of-distribution detection with Adversarial Outlier Exposure (AOE).

The public estimator is :class:`AOEDetector`; see the user guide in ``docs/``.
"""

__version__ = "0.1.0"

from .detector import AOEDetector, NonFiniteLossWarning, TrainingInterruptedWarning  # noqa: E402
from .losses import energy  # noqa: E402

__all__ = ["AOEDetector", "energy", "NonFiniteLossWarning", "TrainingInterruptedWarning",
           "__version__"]
