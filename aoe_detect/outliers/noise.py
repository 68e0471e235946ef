"""Noise sources: uniform, Gaussian, smooth noise and low-density samples of a Gaussian mixture."""

from __future__ import annotations

from numbers import Integral, Real

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.decomposition import PCA
from sklearn.mixture import GaussianMixture

from .._compat import Interval

from ._base import _F32_MAX, OutlierSource, _is_image, _torch_seed


class UniformNoise(OutlierSource):
    """Uniform noise over the (optionally widened) value range of the ID data.

    Parameters
    ----------
    widen : float, default=0.0
        Tabular data: the box ``[min - widen*span, max + widen*span]`` per feature. Images
        always use the global pixel range seen in ``fit``.
    """

    _parameter_constraints = {
        "widen": [Interval(Real, 0, _F32_MAX, closed="both")],
    }

    def __init__(self, widen: float = 0.0):
        self.widen = widen

    def sample(self, n, generator):
        u = torch.rand((n, *self.sample_shape_), generator=generator)
        lo, hi = self.low_, self.high_
        if not _is_image(self.sample_shape_):
            span = hi - lo
            lo, hi = lo - self.widen * span, hi + self.widen * span
        return lo + u * (hi - lo)


class GaussianNoise(OutlierSource):
    """Gaussian noise with the ID data's per-feature mean and ``scale`` times its std.

    Images use the global pixel mean/std and are clipped to the pixel range.

    Parameters
    ----------
    scale : float, default=1.0
        Multiplier of the ID standard deviation.
    """

    _parameter_constraints = {
        "scale": [Interval(Real, 0, _F32_MAX, closed="right")],
    }

    def __init__(self, scale: float = 1.0):
        self.scale = scale

    def fit(self, X, generator=None):
        super().fit(X, generator)
        if _is_image(self.sample_shape_):
            self.mean_, self.std_ = X.mean().reshape(1), X.std().reshape(1)
        else:
            self.mean_, self.std_ = X.mean(0), X.std(0).clamp_min(1e-12)
        return self

    def sample(self, n, generator):
        z = torch.randn((n, *self.sample_shape_), generator=generator)
        x = self.mean_ + self.scale * self.std_ * z
        return self._clip(x) if _is_image(self.sample_shape_) else x


class SmoothNoise(OutlierSource):
    """Spatially smooth (low-frequency) noise images: structured, texture-like outliers.

    A random field is drawn at a coarse resolution (``cells x cells``, ``cells`` random in
    ``[2, max_cells]`` per image) and bilinearly upsampled to the image size, then rescaled
    to a random sub-range of the pixel range. For tabular data it falls back to uniform noise.

    Parameters
    ----------
    max_cells : int, default=8
        Largest coarse grid side.
    """

    _parameter_constraints = {
        "max_cells": [Interval(Integral, 1, None, closed="left")],
    }

    def __init__(self, max_cells: int = 8):
        self.max_cells = max_cells

    def sample(self, n, generator):
        shape = self.sample_shape_
        if not _is_image(shape):
            return UniformNoise().fit_from(self).sample(n, generator)
        img = shape if len(shape) == 3 else (1, *shape)
        c, h, w = img
        out = torch.empty((n, c, h, w))
        cells = torch.randint(2, max(3, self.max_cells + 1), (n,), generator=generator)
        for k in cells.unique().tolist():
            idx = (cells == k).nonzero().flatten()
            coarse = torch.rand((len(idx), c, k, k), generator=generator)
            out[idx] = F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)
        lo, hi = float(self.low_), float(self.high_)
        a = torch.rand((n, 1, 1, 1), generator=generator)
        b = torch.rand((n, 1, 1, 1), generator=generator)
        low, high = torch.minimum(a, b), torch.maximum(a, b)
        out = lo + (hi - lo) * (low + (high - low) * out)
        return out.reshape((n, *shape))


class LowDensityGMM(OutlierSource):
    """Low-density samples of a cheap generative model of the ID data (fitted in seconds).

    The ID inputs are flattened, projected onto their first ``n_components`` principal
    components, and a diagonal Gaussian mixture with ``n_clusters`` components is fitted in
    that space. Outliers are drawn from the mixture with every component's deviation scaled
    by ``sigma > 1`` (the low-density shell around the data, like sampling a GAN's latent
    with sigma > 1), mapped back to input space and clipped to the ID value range. The result
    resembles the ID data in its coarse statistics but not in its fine structure, the role
    GAN samples play in the AOE paper.

    Parameters
    ----------
    n_components : int, default=32
        PCA dimensions (capped at the number of features and samples).
    n_clusters : int, default=10
        Mixture components.
    sigma : float, default=2.0
        Scale of the deviations from the component means (1 = the fitted density).
    max_fit_samples : int, default=5000
        Subsample size used for fitting.
    """

    _parameter_constraints = {
        "n_components": [Interval(Integral, 1, None, closed="left")],
        "n_clusters": [Interval(Integral, 1, None, closed="left")],
        "sigma": [Interval(Real, 0, _F32_MAX, closed="right")],
        "max_fit_samples": [Interval(Integral, 2, None, closed="left")],
    }

    def __init__(self, n_components=32, n_clusters=10, sigma=2.0, max_fit_samples=5000):
        self.n_components = n_components
        self.n_clusters = n_clusters
        self.sigma = sigma
        self.max_fit_samples = max_fit_samples

    def fit(self, X, generator=None):
        super().fit(X, generator)
        seed = _torch_seed(generator) if generator is not None else 0
        rng = np.random.RandomState(seed)
        flat = X.reshape(len(X), -1).double().numpy()
        if len(flat) > self.max_fit_samples:
            flat = flat[rng.choice(len(flat), self.max_fit_samples, replace=False)]
        k = max(1, min(self.n_components, flat.shape[1], len(flat) - 1))
        self.pca_ = PCA(n_components=k, random_state=seed).fit(flat)
        Z = self.pca_.transform(flat)
        n_clusters = max(1, min(self.n_clusters, len(flat) // 2))
        self.gmm_ = GaussianMixture(
            n_components=n_clusters, covariance_type="diag", random_state=seed, reg_covar=1e-4
        ).fit(Z)
        return self

    def sample(self, n, generator):
        w = torch.as_tensor(self.gmm_.weights_, dtype=torch.float64)
        comp = torch.multinomial(w, n, replacement=True, generator=generator).numpy()
        z = torch.randn((n, self.gmm_.means_.shape[1]), generator=generator, dtype=torch.float64)
        Z = self.gmm_.means_[comp] + self.sigma * np.sqrt(self.gmm_.covariances_[comp]) * z.numpy()
        flat = self.pca_.inverse_transform(Z)
        x = torch.as_tensor(flat, dtype=torch.float32).reshape((n, *self.sample_shape_))
        return self._clip(x)
