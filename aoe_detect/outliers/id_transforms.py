"""Sources that destroy the semantics of ID inputs: patch shuffles, cut-and-paste, mixup,
elastic warps."""

from __future__ import annotations

import math
from numbers import Integral, Real

import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF

from .._compat import Interval

from ._base import _F32_MAX, OutlierSource, _is_image


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
