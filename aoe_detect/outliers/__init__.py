"""Sources of training outliers for outlier exposure.

Every source is a small scikit-learn style object (so ``clone``, ``set_params`` and
``GridSearchCV`` reach into it, e.g. ``outliers__sigma``) with two methods:

``fit(X, generator=None) -> self``
    Learn whatever the source needs from the in-distribution training inputs ``X``
    (a float32 ``torch.Tensor`` of shape ``(n, *sample_shape)`` in the user's units, images
    already scaled to ``[0, 1]``). Sources that need nothing return ``self``.
``sample(n, generator) -> torch.Tensor``
    Return ``n`` float32 outliers of shape ``(n, *sample_shape)`` on the CPU, drawn with the
    given ``torch.Generator`` only (never the global RNG).

Any object with a ``sample(n, generator)`` method is accepted by
:class:`~aoe_detect.AOEDetector`; ``fit`` is optional. Sources compose with
:class:`Mixture`.

The package is laid out by family: :mod:`~aoe_detect.outliers._base` (the base class and the
sources that wrap arrays, generator networks and Datasets), :mod:`~aoe_detect.outliers.noise`,
:mod:`~aoe_detect.outliers.id_transforms`, :mod:`~aoe_detect.outliers.off_support`,
:mod:`~aoe_detect.outliers.mixtures` and :mod:`~aoe_detect.outliers.gan` (the DCGAN of the
paper, formerly ``aoe_detect.generative``). :data:`OUTLIER_SOURCES` here is the one registry
of names, ``"gan"`` included; no module adds to it when imported.

Outlier exposure generalises only as far as its outliers reach, so the default
(:func:`default_outliers`) is a mixture of several families. Images: ID images transformed
until they are no longer in-distribution (strong elastic warps, 2x2 patch shuffles, blends
of two images), chosen by the selection protocol in docs/selection_protocol.md; noise,
low-density samples of a cheap generative model, cut-and-paste and other grids are
available by name. Tabular data: sources that are off the ID support by construction (shells
around the standardised data and ID rows with a few features shifted far, each kept only
outside the ID rows' nearest-neighbour radius).
"""


from __future__ import annotations

import numpy as np
import torch
from sklearn.base import clone

from ._base import (ArrayOutliers, DatasetOutliers, GeneratorOutliers, OutlierSource,
                    _torch_seed)
from .gan import DCGANDiscriminator, DCGANGenerator, GANOutliers, train_gan
from .id_transforms import CutPasteID, ElasticID, MixupID, PermutedID
from .mixtures import Mixture, default_outliers
from .noise import GaussianNoise, LowDensityGMM, SmoothNoise, UniformNoise
from .off_support import CorruptedID, RejectedLowDensity, ShellNoise

__all__ = [
    "OutlierSource",
    "UniformNoise",
    "GaussianNoise",
    "SmoothNoise",
    "LowDensityGMM",
    "PermutedID",
    "CutPasteID",
    "MixupID",
    "ElasticID",
    "ShellNoise",
    "CorruptedID",
    "RejectedLowDensity",
    "ArrayOutliers",
    "GeneratorOutliers",
    "Mixture",
    "DatasetOutliers",
    "GANOutliers",
    "DCGANGenerator",
    "DCGANDiscriminator",
    "train_gan",
    "default_outliers",
    "resolve_outliers",
    "OUTLIER_SOURCES",
]

#: ``_torch_seed`` stays importable from here (studies and tests draw seeds like the sources).
_PRIVATE_REEXPORTS = (_torch_seed,)


OUTLIER_SOURCES = {
    "uniform": UniformNoise,
    "gaussian": GaussianNoise,
    "smooth": SmoothNoise,
    "lowdensity": LowDensityGMM,
    "permuted": PermutedID,
    "cutpaste": CutPasteID,
    "mixup": MixupID,
    "elastic": ElasticID,
    "shell": ShellNoise,
    "corrupted": CorruptedID,
    "lowdensity_rejected": RejectedLowDensity,
    "gan": GANOutliers,
}


def resolve_outliers(outliers, sample_shape):
    """Turn the ``outliers`` parameter into an (unfitted) source object, or ``None``.

    ``"default"`` gives :func:`default_outliers`, ``"gan"`` a
    :class:`~aoe_detect.outliers.gan.GANOutliers` (a DCGAN trained on the ID images inside
    ``fit``), a name from :data:`OUTLIER_SOURCES` its
    class with default parameters, an array-like :class:`ArrayOutliers`, an object with
    ``sample`` a clone of itself (when it is an sklearn-style object), ``None`` no outliers.
    """
    if outliers is None:
        return None
    if isinstance(outliers, str):
        if outliers == "default":
            return default_outliers(sample_shape)
        if outliers not in OUTLIER_SOURCES:
            raise ValueError(
                f"Unknown `outliers` name {outliers!r}; valid names are "
                f"{sorted(['default', *OUTLIER_SOURCES])}, an array, or an object with a "
                "`sample(n, generator)` method."
            )
        return OUTLIER_SOURCES[outliers]()
    if hasattr(outliers, "sample"):
        return clone(outliers) if hasattr(outliers, "get_params") else outliers
    if isinstance(outliers, (np.ndarray, torch.Tensor, list)):
        return ArrayOutliers(outliers)
    raise TypeError(
        f"`outliers` must be None, a name in {sorted(['default', *OUTLIER_SOURCES])}, an array "
        f"or an object with `sample(n, generator)`, got {type(outliers).__name__}."
    )
