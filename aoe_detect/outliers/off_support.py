"""Tabular sources off the ID support by construction: shells, corrupted rows, rejected
low-density samples (each kept only outside the ID rows' nearest-neighbour radius)."""

from __future__ import annotations

from numbers import Integral, Real

import numpy as np
import torch
from sklearn.mixture import GaussianMixture

from .._compat import Interval

from ._base import _F32_MAX, OutlierSource, _torch_seed


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
