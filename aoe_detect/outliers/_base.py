"""The base class of outlier sources and the sources that wrap data or a network: arrays,
generator networks, Datasets."""

from __future__ import annotations

from numbers import Integral, Real

import numpy as np
import torch
from sklearn.base import BaseEstimator

from .._compat import Interval
from .._torch_utils import pixels_to_unit
from .._loading import DatasetView, OutlierBatchSampler, RowsDataset, make_loader
from .._validation import inspect_dataset


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
