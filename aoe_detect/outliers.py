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

import math
from numbers import Integral, Real

import numpy as np
import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF
from sklearn.base import BaseEstimator, clone
from sklearn.decomposition import PCA
from sklearn.mixture import GaussianMixture

from ._compat import Interval
from ._torch_utils import pixels_to_unit
from ._loading import DatasetView, OutlierBatchSampler, RowsDataset, inspect_dataset, make_loader

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
    "default_outliers",
    "resolve_outliers",
    "OUTLIER_SOURCES",
]


#: Upper bound of real-valued source parameters (beyond it float32 samples overflow).
_F32_MAX = float(np.finfo(np.float32).max)


def _torch_seed(generator: torch.Generator) -> int:
    """Draw a 31-bit seed from ``generator`` (for numpy/sklearn code inside a source)."""
    return int(torch.randint(0, 2**31 - 1, (1,), generator=generator).item())


def _value_range(X: torch.Tensor, is_image: bool):
    """Per-feature (tabular) or global (image) min/max of ``X``."""
    if is_image:
        return X.min().reshape(1), X.max().reshape(1)
    return X.min(dim=0).values, X.max(dim=0).values


def _is_image(sample_shape) -> bool:
    return len(sample_shape) >= 2


class OutlierSource(BaseEstimator):
    """Base class of outlier sources: ``fit(X, generator)`` then ``sample(n, generator)``.

    Subclasses store their parameters verbatim in ``__init__`` (scikit-learn rules), learn
    fitted attributes ending in ``_`` in :meth:`fit`, and implement :meth:`sample`.
    """

    def fit(self, X: torch.Tensor, generator: torch.Generator | None = None):
        """Remember the sample shape and value range of the ID inputs ``X``."""
        self.sample_shape_ = tuple(X.shape[1:])
        lo, hi = _value_range(X, _is_image(self.sample_shape_))
        self.low_, self.high_ = lo.float(), hi.float()
        return self

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def fit_from(self, other: "OutlierSource"):
        """Copy the fitted shape and value range of ``other`` (used by fall-backs)."""
        self.sample_shape_, self.low_, self.high_ = other.sample_shape_, other.low_, other.high_
        return self

    def _clip(self, x: torch.Tensor) -> torch.Tensor:
        """Clip to the ID value range seen in ``fit`` (images: the global range)."""
        if _is_image(self.sample_shape_):
            return x.clamp(float(self.low_), float(self.high_))
        return torch.maximum(torch.minimum(x, self.high_), self.low_)


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


class _IDPool(OutlierSource):
    """Base of sources that transform the user's own ID inputs: keeps a pool of them.

    Parameters
    ----------
    max_pool : int, default=20000
        Number of ID rows kept to draw from (a random subset when there are more).
    """

    _parameter_constraints = {
        "max_pool": [Interval(Integral, 1, None, closed="left")],
    }
    _images_only = False

    def fit(self, X, generator=None):
        super().fit(X, generator)
        if self._images_only and not _is_image(self.sample_shape_):
            raise ValueError(f"{type(self).__name__} transforms images; the ID inputs have shape "
                             f"{self.sample_shape_} (tabular). Use a tabular source such as "
                             "ShellNoise or CorruptedID.")
        if len(X) > self.max_pool:
            g = generator if generator is not None else torch.Generator().manual_seed(0)
            X = X[torch.randperm(len(X), generator=g)[: self.max_pool]]
        self.pool_ = X.detach().to("cpu", torch.float32).clone()
        return self

    def _draw(self, n, generator):
        """``n`` random pool images as ``(n, channels, height, width)``."""
        x = self.pool_[torch.randint(0, len(self.pool_), (n,), generator=generator)]
        return x.reshape(n, -1, *self.sample_shape_[-2:])


class PermutedID(_IDPool):
    """ID inputs whose semantics are destroyed while low-level statistics are kept.

    Images: each outlier is a random ID image with its ``grid x grid`` patches shuffled,
    optionally followed by a heavy box blur (``blur`` probability). Tabular data: every
    feature is drawn from a different random ID row (a column-wise permutation), which keeps
    each marginal distribution but destroys the dependencies between features.

    Parameters
    ----------
    grid : int, default=4
        Patches per image side (the image side must be divisible or it is cropped/padded).
    blur : float, default=0.3
        Probability of additionally blurring an image heavily.
    max_pool : int, default=20000
        Number of ID rows kept to draw from.
    """

    _parameter_constraints = {
        **_IDPool._parameter_constraints,
        "grid": [Interval(Integral, 1, None, closed="left")],
        "blur": [Interval(Real, 0, _F32_MAX, closed="both")],
    }

    def __init__(self, grid=4, blur=0.3, max_pool=20000):
        self.grid = grid
        self.blur = blur
        self.max_pool = max_pool

    def sample(self, n, generator):
        pool = self.pool_
        if not _is_image(self.sample_shape_):
            idx = torch.randint(0, len(pool), (n, pool.shape[1]), generator=generator)
            return torch.gather(pool, 0, idx)
        x = self._draw(n, generator)
        return _shuffle_patches(x, self.grid, self.blur, generator).reshape((n, *self.sample_shape_))


class CutPasteID(_IDPool):
    """Two ID images in one: a random rectangle of one pasted into another (images only).

    Each outlier is a random ID image with a rectangle of side ``U(min_side, max_side)`` times
    the image side, at a random position, replaced by the same-sized region of a second random
    ID image (CutMix, Yun et al. 2019, used here as an outlier: parts of two objects, usually
    of different classes, with the ID data's own textures and edges). Near-OOD by design.

    Parameters
    ----------
    min_side, max_side : float, default=0.4, 0.7
        Range of the pasted rectangle's sides as fractions of the image sides.
    max_pool : int, default=20000
        Number of ID images kept to draw from.
    """

    _parameter_constraints = {
        **_IDPool._parameter_constraints,
        "min_side": [Interval(Real, 0, 1, closed="right")],
        "max_side": [Interval(Real, 0, 1, closed="right")],
    }
    _images_only = True

    def __init__(self, min_side=0.4, max_side=0.7, max_pool=20000):
        self.min_side = min_side
        self.max_side = max_side
        self.max_pool = max_pool

    def sample(self, n, generator):
        a, b = self._draw(n, generator), self._draw(n, generator)
        h, w = a.shape[-2:]
        lo, hi = sorted((float(self.min_side), float(self.max_side)))
        side = lo + (hi - lo) * torch.rand((n, 2), generator=generator)
        rh = (side[:, 0] * h).round().clamp(1, h).long()
        rw = (side[:, 1] * w).round().clamp(1, w).long()
        top = (torch.rand(n, generator=generator) * (h - rh + 1)).long()
        left = (torch.rand(n, generator=generator) * (w - rw + 1)).long()
        rows, cols = torch.arange(h), torch.arange(w)
        inside_r = (rows[None] >= top[:, None]) & (rows[None] < (top + rh)[:, None])
        inside_c = (cols[None] >= left[:, None]) & (cols[None] < (left + rw)[:, None])
        mask = (inside_r[:, :, None] & inside_c[:, None, :])[:, None]
        return torch.where(mask, b, a).reshape((n, *self.sample_shape_))


class MixupID(_IDPool):
    """Blends of two random ID images, ``lam * a + (1 - lam) * b`` (images only).

    ``lam ~ U(low, high)`` close to 1/2, so neither image dominates: a ghosted overlay of two
    objects (mixup, Zhang et al. 2018, used as near-OOD outliers as in MixOE, Zhang et al.
    2023).

    Parameters
    ----------
    low, high : float, default=0.35, 0.65
        Range of the blending weight.
    max_pool : int, default=20000
        Number of ID images kept to draw from.
    """

    _parameter_constraints = {
        **_IDPool._parameter_constraints,
        "low": [Interval(Real, 0, 1, closed="both")],
        "high": [Interval(Real, 0, 1, closed="both")],
    }
    _images_only = True

    def __init__(self, low=0.35, high=0.65, max_pool=20000):
        self.low = low
        self.high = high
        self.max_pool = max_pool

    def sample(self, n, generator):
        a, b = self._draw(n, generator), self._draw(n, generator)
        lo, hi = sorted((float(self.low), float(self.high)))
        lam = (lo + (hi - lo) * torch.rand((n, 1, 1, 1), generator=generator))
        return (lam * a + (1 - lam) * b).reshape((n, *self.sample_shape_))


class ElasticID(_IDPool):
    """ID images under a strong random elastic warp (images only).

    A random displacement field (uniform in [-1, 1] per pixel and axis) is smoothed with a
    Gaussian of standard deviation ``sigma`` (a fraction of the image side, torchvision's
    ``gaussian_blur``), rescaled to a root-mean-square displacement of ``alpha`` (a fraction
    of the image side) and applied with ``torch.nn.functional.grid_sample`` (Simard et al.
    2003's elastic distortion, far beyond its augmentation strength, so shapes melt while
    strokes, textures and intensities stay the ID data's).

    Parameters
    ----------
    alpha : float, default=0.12
        RMS displacement as a fraction of the image side.
    sigma : float, default=0.1
        Smoothness of the field as a fraction of the image side.
    max_pool : int, default=20000
        Number of ID images kept to draw from.
    """

    _parameter_constraints = {
        **_IDPool._parameter_constraints,
        "alpha": [Interval(Real, 0, None, closed="left")],
        "sigma": [Interval(Real, 0, None, closed="neither")],
    }
    _images_only = True

    def __init__(self, alpha=0.12, sigma=0.1, max_pool=20000):
        self.alpha = alpha
        self.sigma = sigma
        self.max_pool = max_pool

    def sample(self, n, generator):
        x = self._draw(n, generator)
        h, w = x.shape[-2:]
        field = torch.rand((n, 2, h, w), generator=generator) * 2 - 1
        s = float(self.sigma) * min(h, w)
        k = 2 * int(math.ceil(3 * s)) + 1
        field = TF.gaussian_blur(field, [k, k], [s, s])
        rms = field.pow(2).mean(dim=(1, 2, 3), keepdim=True).sqrt().clamp_min(1e-12)
        field = field / rms * (2 * float(self.alpha))  # grid coordinates span 2 per side
        ys, xs = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
        grid = torch.stack((xs, ys), dim=-1)[None] + field.permute(0, 2, 3, 1)
        out = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=True)
        return out.reshape((n, *self.sample_shape_))


def _shuffle_patches(x, grid, blur, generator):
    n, c, h, w = x.shape
    ph, pw = max(1, h // grid), max(1, w // grid)
    gh, gw = h // ph, w // pw
    core = x[:, :, : gh * ph, : gw * pw]
    patches = core.reshape(n, c, gh, ph, gw, pw).permute(0, 2, 4, 1, 3, 5).reshape(n, gh * gw, c, ph, pw)
    perm = torch.argsort(torch.rand((n, gh * gw), generator=generator), dim=1)
    patches = torch.gather(patches, 1, perm[:, :, None, None, None].expand_as(patches))
    core = patches.reshape(n, gh, gw, c, ph, pw).permute(0, 3, 1, 4, 2, 5).reshape(n, c, gh * ph, gw * pw)
    out = x.clone()
    out[:, :, : gh * ph, : gw * pw] = core
    if blur > 0:
        k = max(3, (min(h, w) // 4) | 1)
        do = torch.rand((n,), generator=generator) < blur
        if do.any():
            sel = out[do]
            out[do] = F.avg_pool2d(F.pad(sel, (k // 2,) * 4, mode="replicate"), k, stride=1)
    return out


class _OffSupport(OutlierSource):
    """Base of tabular sources whose samples are guaranteed to lie off the ID support.

    ``fit`` standardises the ID rows (per-feature mean/std), keeps up to ``max_pool`` of
    them and computes each kept row's distance to its nearest *other* ID row; the
    rejection radius ``radius_`` is the ``radius_quantile`` quantile of those distances
    (0.95: 95% of ID rows have a neighbour closer than it). A candidate outlier is kept
    only if its nearest ID row is farther than ``radius_``, i.e. it lies in a region where
    the ID data are sparser than almost anywhere in the ID sample itself. Candidates are
    proposed in rounds; if too few survive ``max_rounds`` rounds, the farthest rejected
    candidates are pushed radially outward (times 1.25 per try) until they pass, so every
    sample is outside the radius. Subclasses implement ``_propose(m, generator)`` in
    standardised units.
    """

    def _fit_support(self, X, generator):
        OutlierSource.fit(self, X, generator)
        flat = X.reshape(len(X), -1).double()
        if len(flat) > self.max_pool:
            g = generator if generator is not None else torch.Generator().manual_seed(0)
            flat = flat[torch.randperm(len(flat), generator=g)[: self.max_pool]]
        self.mean_ = flat.mean(0)
        self.std_ = flat.std(0).clamp_min(1e-12) if len(flat) > 1 else torch.ones(flat.shape[1],
                                                                                  dtype=torch.float64)
        self.pool_z_ = ((flat - self.mean_) / self.std_).float()
        d = torch.cdist(self.pool_z_, self.pool_z_)
        d.fill_diagonal_(float("inf"))
        nn = d.min(1).values
        nn = nn[torch.isfinite(nn)]
        self.radius_ = float(torch.quantile(nn, self.radius_quantile)) if len(nn) else 0.0
        return self

    def _nearest(self, z):
        out = torch.empty(len(z))
        for s in range(0, len(z), 1024):
            out[s:s + 1024] = torch.cdist(z[s:s + 1024], self.pool_z_).min(1).values
        return out

    def sample(self, n, generator):
        kept, pool_c, pool_d = [], [], []
        have = 0
        for _ in range(self.max_rounds):
            if have >= n:
                break
            z = self._propose(max(2 * (n - have), 8), generator).float()
            d = self._nearest(z)
            ok = d > self.radius_
            kept.append(z[ok])
            have += int(ok.sum())
            pool_c.append(z[~ok])
            pool_d.append(d[~ok])
        z = torch.cat(kept)[:n]
        if len(z) < n:  # fall back: the farthest rejected candidates, pushed outward
            c, d = torch.cat(pool_c), torch.cat(pool_d)
            c = c[torch.argsort(d, descending=True)[: n - len(z)]]
            for _ in range(60):  # radially away from the ID mean (0) until off support
                inside = self._nearest(c) <= self.radius_
                if not bool(inside.any()):
                    break
                c[inside] = c[inside] * 1.25 + (c[inside].norm(dim=1, keepdim=True) == 0)
            z = torch.cat([z, c])
        x = (z.double() * self.std_ + self.mean_).float()
        return x.reshape((n, *self.sample_shape_))


class ShellNoise(_OffSupport):
    """Gaussian shells around the standardised ID data, outside the ID support.

    In standardised units (each feature's mean 0, std 1) a direction is drawn uniformly on
    the sphere and scaled to ``r * sqrt(d)`` (``d`` features; ``sqrt(d)`` is the typical
    norm of a standardised row), ``r`` drawn uniformly from ``radii`` per sample; candidates
    within the ID rows' nearest-neighbour radius are rejected (see ``radius_quantile``).
    Covers every direction at several distances, near (``r`` about 1) to far.

    Parameters
    ----------
    radii : tuple of float, default=(1.0, 1.5, 2.0, 3.0)
        Shell radii in units of ``sqrt(d)`` standard deviations.
    radius_quantile : float in [0, 1], default=0.95
        Quantile of the ID rows' nearest-neighbour distances used as rejection radius.
    max_pool : int, default=5000
        ID rows kept for the nearest-neighbour test.
    max_rounds : int, default=20
        Proposal rounds before the farthest rejected candidates fill the batch.
    """

    _parameter_constraints = {
        "radii": [tuple, list],
        "radius_quantile": [Interval(Real, 0, 1, closed="both")],
        "max_pool": [Interval(Integral, 2, None, closed="left")],
        "max_rounds": [Interval(Integral, 1, None, closed="left")],
    }

    def __init__(self, radii=(1.0, 1.5, 2.0, 3.0), radius_quantile=0.95, max_pool=5000,
                 max_rounds=20):
        self.radii = radii
        self.radius_quantile = radius_quantile
        self.max_pool = max_pool
        self.max_rounds = max_rounds

    def fit(self, X, generator=None):
        radii = np.asarray(self.radii, dtype=float)
        if radii.ndim != 1 or len(radii) == 0 or not np.all(np.isfinite(radii)) or np.any(radii <= 0):
            raise ValueError(f"ShellNoise `radii` must be positive finite numbers, got {self.radii!r}.")
        return self._fit_support(X, generator)

    def _propose(self, m, generator):
        d = self.pool_z_.shape[1]
        u = torch.randn((m, d), generator=generator, dtype=torch.float64)
        u = u / u.norm(dim=1, keepdim=True).clamp_min(1e-12)
        radii = torch.as_tensor(np.asarray(self.radii, dtype=float))
        r = radii[torch.randint(0, len(radii), (m,), generator=generator)]
        return u * (r * np.sqrt(d))[:, None]


class CorruptedID(_OffSupport):
    """ID rows with a few features shifted off their range ("broken sensors"), off support.

    Each outlier is a random ID row in standardised units with ``k`` features (``k`` uniform
    in ``1 .. max(1, round(max_fraction * d))``) shifted by ``+-s`` standard deviations,
    ``s`` uniform in ``shift``; candidates within the ID rows' nearest-neighbour radius are
    rejected. Near-OOD for tabular data: most features stay plausible.

    Parameters
    ----------
    shift : (float, float), default=(2.0, 6.0)
        Range of the shift in standard deviations.
    max_fraction : float in (0, 1], default=0.3
        Largest share of features corrupted in one row.
    radius_quantile, max_pool, max_rounds
        As in :class:`ShellNoise`.
    """

    _parameter_constraints = {
        "shift": [tuple, list],
        "max_fraction": [Interval(Real, 0, 1, closed="right")],
        "radius_quantile": [Interval(Real, 0, 1, closed="both")],
        "max_pool": [Interval(Integral, 2, None, closed="left")],
        "max_rounds": [Interval(Integral, 1, None, closed="left")],
    }

    def __init__(self, shift=(2.0, 6.0), max_fraction=0.3, radius_quantile=0.95, max_pool=5000,
                 max_rounds=20):
        self.shift = shift
        self.max_fraction = max_fraction
        self.radius_quantile = radius_quantile
        self.max_pool = max_pool
        self.max_rounds = max_rounds

    def fit(self, X, generator=None):
        s = np.asarray(self.shift, dtype=float)
        if s.shape != (2,) or not np.all(np.isfinite(s)) or not 0 <= s[0] <= s[1]:
            raise ValueError(f"CorruptedID `shift` must be (low, high) with 0 <= low <= high, "
                             f"got {self.shift!r}.")
        return self._fit_support(X, generator)

    def _propose(self, m, generator):
        pool = self.pool_z_.double()
        d = pool.shape[1]
        z = pool[torch.randint(0, len(pool), (m,), generator=generator)].clone()
        kmax = max(1, int(round(self.max_fraction * d)))
        k = torch.randint(1, kmax + 1, (m,), generator=generator)
        rank = torch.argsort(torch.rand((m, d), generator=generator), dim=1)
        mask = rank < k[:, None]
        lo, hi = float(self.shift[0]), float(self.shift[1])
        s = lo + (hi - lo) * torch.rand((m, d), generator=generator, dtype=torch.float64)
        sign = torch.where(torch.rand((m, d), generator=generator) < 0.5, -1.0, 1.0).double()
        return z + mask * sign * s


class RejectedLowDensity(_OffSupport):
    """Low-density samples of a Gaussian mixture, kept only where the ID density is low.

    A full-covariance Gaussian mixture (``n_clusters`` components) is fitted to the
    standardised ID rows; candidates are drawn from it with every component's deviations
    scaled by ``sigma`` and kept only if their log-density under the *fitted* mixture is
    below its ``density_quantile`` quantile over the ID rows **and** they lie outside the
    ID nearest-neighbour radius. Unlike :class:`LowDensityGMM` (no rejection, clipped to
    the ID box), no sample lands in the bulk of the ID distribution.

    Parameters
    ----------
    sigma : float, default=2.0
        Scale of the deviations from the component means.
    n_clusters : int, default=5
        Mixture components (capped at half the number of rows).
    density_quantile : float in [0, 1], default=0.01
        Largest ID log-density quantile a kept sample may have.
    radius_quantile, max_pool, max_rounds
        As in :class:`ShellNoise`.
    """

    _parameter_constraints = {
        "sigma": [Interval(Real, 0, _F32_MAX, closed="right")],
        "n_clusters": [Interval(Integral, 1, None, closed="left")],
        "density_quantile": [Interval(Real, 0, 1, closed="both")],
        "radius_quantile": [Interval(Real, 0, 1, closed="both")],
        "max_pool": [Interval(Integral, 2, None, closed="left")],
        "max_rounds": [Interval(Integral, 1, None, closed="left")],
    }

    def __init__(self, sigma=2.0, n_clusters=5, density_quantile=0.01, radius_quantile=0.95,
                 max_pool=5000, max_rounds=20):
        self.sigma = sigma
        self.n_clusters = n_clusters
        self.density_quantile = density_quantile
        self.radius_quantile = radius_quantile
        self.max_pool = max_pool
        self.max_rounds = max_rounds

    def fit(self, X, generator=None):
        self._fit_support(X, generator)
        seed = _torch_seed(generator) if generator is not None else 0
        Z = self.pool_z_.double().numpy()
        k = max(1, min(self.n_clusters, len(Z) // 2))
        self.gmm_ = GaussianMixture(n_components=k, covariance_type="full", reg_covar=1e-3,
                                    random_state=seed).fit(Z)
        self.log_density_max_ = float(np.quantile(self.gmm_.score_samples(Z), self.density_quantile))
        self.chol_ = np.linalg.cholesky(self.gmm_.covariances_)
        return self

    def _propose(self, m, generator):
        d = self.pool_z_.shape[1]
        w = torch.as_tensor(self.gmm_.weights_, dtype=torch.float64)
        out = []
        for _ in range(10):  # density rejection; the support test follows in sample()
            comp = torch.multinomial(w, m, replacement=True, generator=generator).numpy()
            e = torch.randn((m, d), generator=generator, dtype=torch.float64).numpy()
            z = self.gmm_.means_[comp] + self.sigma * np.einsum("nij,nj->ni", self.chol_[comp], e)
            out.append(z[self.gmm_.score_samples(z) < self.log_density_max_])
            if sum(len(o) for o in out) >= m:
                break
        z = np.concatenate(out)[:m]
        return torch.as_tensor(z if len(z) else np.zeros((0, d)))


class ArrayOutliers(OutlierSource):
    """Outliers drawn (with replacement) from a fixed array of examples.

    Parameters
    ----------
    X : array-like or torch.Tensor of shape (m, *sample_shape)
        The outliers, in the same units as the ID inputs (uint8 images are scaled to [0, 1]).
    """

    _parameter_constraints = {
        "X": ["array-like", None],
    }

    def __init__(self, X=None):
        self.X = X

    def fit(self, X=None, generator=None):
        data = self.X
        if isinstance(data, torch.Tensor):
            data = data.detach().cpu()
        else:
            data = torch.as_tensor(np.asarray(data))
        if data.dtype == torch.uint8 and data.dim() >= 3:  # uint8 images; tabular keeps values
            data = pixels_to_unit(data)
        if not bool(torch.isfinite(data.float()).all()):
            raise ValueError("`ArrayOutliers.X` contains NaN or infinity; finite outliers are "
                             "expected.")
        self.data_ = data.float()
        if X is not None and self.data_[0].numel() == X[0].numel():
            self.data_ = self.data_.reshape((len(self.data_), *X.shape[1:]))
        self.sample_shape_ = tuple(self.data_.shape[1:])
        return self

    def sample(self, n, generator):
        idx = torch.randint(0, len(self.data_), (n,), generator=generator)
        return self.data_[idx]


class GeneratorOutliers(OutlierSource):
    """Outliers from any torch generator network ``G(z)`` (e.g. a GAN such as BigGAN).

    Parameters
    ----------
    generator : torch.nn.Module
        Maps a latent batch to inputs in the ID data's units. Used in eval mode, without
        gradients; it is never trained here.
    latent_dim : int or tuple of int
        Shape of one latent vector (ignored when ``latent_sampler`` is given).
    sigma : float, default=1.0
        Latent scale; ``sigma > 1`` samples the generator's low-density regions.
    latent_sampler : callable, optional
        ``latent_sampler(n, generator) -> tensor`` replacing the default ``sigma * N(0, I)``.
    batch_size : int, default=256
        Generator batch size.
    device : str or torch.device, optional
        Where the generator runs (default: where its parameters are).
    clip : bool, default=True
        Clip the samples to the ID value range seen in ``fit``.
    """

    _parameter_constraints = {
        "generator": [callable, None],
        "latent_dim": [Interval(Integral, 1, None, closed="left"), tuple, list],
        "sigma": [Interval(Real, 0, _F32_MAX, closed="right")],
        "latent_sampler": [callable, None],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "device": [str, torch.device, None],
        "clip": ["boolean"],
    }

    def __init__(self, generator=None, latent_dim=128, sigma=1.0, latent_sampler=None,
                 batch_size=256, device=None, clip=True):
        self.generator = generator
        self.latent_dim = latent_dim
        self.sigma = sigma
        self.latent_sampler = latent_sampler
        self.batch_size = batch_size
        self.device = device
        self.clip = clip

    def fit(self, X=None, generator=None):
        if X is not None:
            super().fit(X, generator)
        return self

    def _latent(self, n, generator):
        if self.latent_sampler is not None:
            return self.latent_sampler(n, generator)
        shape = (self.latent_dim,) if isinstance(self.latent_dim, Integral) else tuple(self.latent_dim)
        return self.sigma * torch.randn((n, *shape), generator=generator)

    @torch.no_grad()
    def sample(self, n, generator):
        G = self.generator
        params = list(G.parameters())
        device = torch.device(self.device) if self.device is not None else (
            params[0].device if params else torch.device("cpu"))
        was_training = G.training
        G.eval()
        try:
            out = []
            for start in range(0, n, self.batch_size):
                m = min(self.batch_size, n - start)
                z = self._latent(m, generator).to(device)
                out.append(G(z).float().cpu())
        finally:
            G.train(was_training)
        x = torch.cat(out)
        if hasattr(self, "sample_shape_"):
            x = x.reshape((n, *self.sample_shape_))
            if self.clip:
                x = self._clip(x)
        return x


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
}


#: Named sources defined in modules above this one (they build on its base classes), which
#: add themselves here when imported: ``"gan"`` -> :class:`~aoe_detect.generative.GANOutliers`
#: (``aoe_detect/__init__.py`` imports :mod:`aoe_detect.generative`, so the name is always
#: known). Kept apart from :data:`OUTLIER_SOURCES`, the generic sources for any data.
_SOURCES_DEFINED_ABOVE = {}


def resolve_outliers(outliers, sample_shape):
    """Turn the ``outliers`` parameter into an (unfitted) source object, or ``None``.

    ``"default"`` gives :func:`default_outliers`, ``"gan"`` a
    :class:`~aoe_detect.generative.GANOutliers` (a DCGAN trained on the ID images inside
    ``fit``), a name from :data:`OUTLIER_SOURCES` its
    class with default parameters, an array-like :class:`ArrayOutliers`, an object with
    ``sample`` a clone of itself (when it is an sklearn-style object), ``None`` no outliers.
    """
    if outliers is None:
        return None
    if isinstance(outliers, str):
        if outliers == "default":
            return default_outliers(sample_shape)
        if outliers in _SOURCES_DEFINED_ABOVE:  # "gan"
            return _SOURCES_DEFINED_ABOVE[outliers]()
        if outliers not in OUTLIER_SOURCES:
            raise ValueError(
                f"Unknown `outliers` name {outliers!r}; valid names are "
                f"{sorted(['default', 'gan', *OUTLIER_SOURCES])}, an array, or an object with a "
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


class DatasetOutliers(OutlierSource):
    """Outliers from a map-style ``torch.utils.data.Dataset`` (items ``x`` or ``(x, y)``;
    labels are ignored; uint8 samples are scaled to [0, 1]).

    :meth:`sample` draws items uniformly with replacement. Inside
    :meth:`AOEDetector.fit <aoe_detect.AOEDetector.fit>` the items are streamed instead
    (:meth:`stream`): shuffled passes over the dataset, loaded by ``num_workers``
    DataLoader workers and sharded across processes under ``torch.distributed``, so the
    outlier set never has to fit in memory. Loading lives in :mod:`aoe_detect.data`.

    Parameters
    ----------
    dataset : torch.utils.data.Dataset
        Map-style (``__getitem__`` and ``__len__``).
    num_workers : int, default=0
        DataLoader worker processes for :meth:`stream`.
    input_range : (float, float) or None, default=None
        Valid input range; items outside it are an error (the detector passes its own).
    """

    def __init__(self, dataset=None, num_workers=0, input_range=None):
        self.dataset = dataset
        self.num_workers = num_workers
        self.input_range = input_range

    def fit(self, X=None, generator=None):
        shape = None if X is None else tuple(X.shape[1:])
        info = inspect_dataset(self.dataset, "X_outliers", sample_shape=shape)
        self.view_ = DatasetView(self.dataset, info, name="X_outliers", input_range=self.input_range)
        self.sample_shape_ = tuple(info.shape)
        return self

    def sample(self, n, generator):
        rows = RowsDataset(self.view_)
        idx = torch.randint(0, len(rows), (n,), generator=generator).tolist()
        x, _ = self.view_.collate()([rows[i] for i in idx])
        return x

    def stream(self, m, seed, rank=0, world=1, pin_memory=False):
        """Endless iterator of this rank's outlier batches (``m`` rows each, CPU float32)."""
        sampler = OutlierBatchSampler(len(self.view_), m, seed, rank, world)
        loader = make_loader(self.view_, sampler, self.num_workers, pin_memory, seed=seed)
        return (x for x, _ in loader)
