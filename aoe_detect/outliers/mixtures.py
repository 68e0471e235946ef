"""Mixtures of sources and the default mixture for images and tables."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.base import clone

from ._base import OutlierSource, _is_image
from .id_transforms import ElasticID, MixupID, PermutedID
from .off_support import CorruptedID, ShellNoise


class Mixture(OutlierSource):
    """A weighted mixture of outlier sources.

    Each call to :meth:`sample` draws how many outliers come from each source from a
    multinomial with the given weights, then shuffles the batch.

    Parameters
    ----------
    sources : list of (name, source) or list of sources
        The components (any objects with ``sample(n, generator)``; ``fit`` optional).
    weights : list of float, optional
        Non-negative relative weights (default: equal).
    """

    _parameter_constraints = {
        "sources": [list, tuple, None],
        "weights": ["array-like", None],
    }

    def __init__(self, sources=None, weights=None):
        self.sources = sources
        self.weights = weights

    def _named(self):
        return [s if isinstance(s, tuple) else (type(s).__name__, s) for s in self.sources]

    def get_params(self, deep=True):
        params = super().get_params(deep=False)
        if deep and isinstance(self.sources, (list, tuple)):  # invalid values: fit says so
            for name, src in self._named():
                params[name] = src
                if hasattr(src, "get_params"):
                    for k, v in src.get_params(deep=True).items():
                        params[f"{name}__{k}"] = v
        return params

    def set_params(self, **params):
        own = {k: v for k, v in params.items() if "__" not in k and k in ("sources", "weights")}
        super().set_params(**own)
        named = dict(self._named())
        for key, value in params.items():
            if key in own:
                continue
            name, _, sub = key.partition("__")
            if name not in named:
                raise ValueError(f"Invalid parameter {key!r} for Mixture; components: {sorted(named)}.")
            if sub:
                named[name].set_params(**{sub: value})
        return self

    def fit(self, X, generator=None):
        if not self.sources:
            raise ValueError("Mixture needs at least one source in `sources`.")
        w = np.ones(len(self.sources)) if self.weights is None else np.asarray(self.weights, float)
        if w.shape != (len(self.sources),) or not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
            raise ValueError(f"Mixture `weights` must be {len(self.sources)} non-negative numbers "
                             f"with a positive sum, got {self.weights!r}.")
        self.weights_ = torch.as_tensor(w / w.sum(), dtype=torch.float64)
        self.sources_ = []
        for _, src in self._named():
            src = clone(src) if hasattr(src, "get_params") else src
            if hasattr(src, "fit"):
                src.fit(X, generator)
            self.sources_.append(src)
        self.sample_shape_ = tuple(X.shape[1:])
        return self

    def sample(self, n, generator):
        counts = torch.bincount(
            torch.multinomial(self.weights_, n, replacement=True, generator=generator),
            minlength=len(self.sources_),
        )
        parts = [src.sample(int(c), generator).reshape((int(c), *self.sample_shape_))
                 for src, c in zip(self.sources_, counts) if c > 0]
        x = torch.cat(parts)
        return x[torch.randperm(n, generator=generator)]


def default_outliers(sample_shape) -> Mixture:
    """The default outlier mixture for inputs of ``sample_shape``.

    Images: strong elastic warps of ID images (:class:`ElasticID`), 2x2 patch shuffles of ID
    images (:class:`PermutedID` with ``grid=2``, 30% blurred) and blends of two ID images
    (:class:`MixupID`), equal weights. All three are made from the user's own images, so the
    default serves any image domain. Chosen by the selection protocol of
    ``benchmarks/outlier_study.py`` (docs/selection_protocol.md) among ten families on a
    Fashion-MNIST design split (classes 0-5 as ID, the held-out classes 6-9 and
    leave-one-source-out probes as OOD); it replaced uniform + smooth noise + low-density
    GMM + 4x4 patch shuffles (held-out-class AUROC 0.787 vs 0.732 there). Noise is not in the
    mixture: every model in that study, trained on any family, detected unseen uniform and
    smooth noise at AUROC >= 0.999 with the default score.

    Tabular data: :class:`ShellNoise` (shells at 1, 1.5, 2 and 3
    times the typical standardised norm) and :class:`CorruptedID` (ID rows with up to 30%
    of their features shifted by 2-6 standard deviations), equal weights; both reject every
    candidate that lies within the ID rows' 95% nearest-neighbour radius, so no training
    outlier is an ID-like row. Chosen on the digits design split
    (``benchmarks/tabular_outliers.py``); the previous tabular mixture (uniform box,
    inflated Gaussian, low-density GMM, column-permuted rows) contained sources that sample
    the ID distribution itself (a column permutation of independent features is the ID
    distribution).
    """
    if _is_image(tuple(sample_shape)):
        return Mixture([("elastic", ElasticID()), ("permuted2", PermutedID(grid=2)),
                        ("mixup", MixupID())])
    return Mixture([("shell", ShellNoise()), ("corrupted", CorruptedID())])


#: Names accepted by ``AOEDetector(outliers=...)``.
