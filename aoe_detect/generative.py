"""Deprecated: the DCGAN outlier source moved to :mod:`aoe_detect.outliers.gan`.

``aoe_detect.generative`` re-exports :mod:`aoe_detect.outliers.gan` with a
:class:`DeprecationWarning` for one minor release (0.3); import ``GANOutliers``,
``DCGANGenerator``, ``DCGANDiscriminator`` and ``train_gan`` from :mod:`aoe_detect.outliers`
instead. ``outliers="gan"`` works without importing anything.
"""

import warnings

from .outliers import gan as _gan
from .outliers.gan import *  # noqa: F401,F403  (the moved public names)
from .outliers.gan import __all__  # noqa: F401

warnings.warn("aoe_detect.generative is deprecated and will be removed in 0.4: the DCGAN "
              "outlier source moved to aoe_detect.outliers.gan; import GANOutliers, "
              "DCGANGenerator, DCGANDiscriminator and train_gan from aoe_detect.outliers.",
              DeprecationWarning, stacklevel=2)

_torch_seed = _gan._torch_seed
