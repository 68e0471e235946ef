"""A small DCGAN of the in-distribution images whose imperfect samples act as outliers.

The AOE paper (Botschen et al., 2025) exposes the detector to samples of a generative model
of the ID data: a GAN trained for a few epochs produces images that share the coarse
statistics of the ID data but not its semantics, and sampling its latent space with a
scale ``sigma > 1`` reaches its low-density regions. This module provides

* :class:`DCGANGenerator` / :class:`DCGANDiscriminator`: a compact DCGAN (Radford et al.,
  2016) for 28x28 and 32x32 images with 1 or 3 channels (any side divisible by 4 works);
* :func:`train_gan`: the training loop (non-saturating loss, Adam), a plain function that
  is deterministic given a ``torch.Generator`` and leaves the global RNGs untouched;
* :class:`GANOutliers`: an outlier source (``fit(X, generator)`` / ``sample(n, generator)``,
  see :mod:`aoe_detect.outliers`; ``outliers="gan"``) that trains the DCGAN on the ID images, optionally caches
  the trained generator and a pool of samples on disk, and samples through
  :class:`~aoe_detect.outliers.GeneratorOutliers`.

References
----------
.. [1] A. Radford, L. Metz, S. Chintala. "Unsupervised Representation Learning with Deep
   Convolutional Generative Adversarial Networks". ICLR 2016.
.. [2] Botschen et al. "Adversarial Outlier Exposure" (AOE), 2025.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from numbers import Integral, Real

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.utils.validation import check_is_fitted
from tqdm.auto import tqdm
from torch import nn

from .._torch_utils import atomic_write, resolve_device
from ._base import GeneratorOutliers, OutlierSource, _torch_seed

__all__ = ["DCGANGenerator", "DCGANDiscriminator", "train_gan", "GANOutliers"]


def _image_shape(shape, name: str) -> tuple[int, int, int]:
    """``(h, w)`` or ``(c, h, w)`` -> ``(c, h, w)``; sides must be divisible by 4 and >= 8."""
    shape = tuple(int(s) for s in shape)
    if len(shape) == 2:
        shape = (1, *shape)
    if len(shape) != 3 or shape[0] < 1 or any(s < 8 or s % 4 for s in shape[1:]):
        raise ValueError(
            f"`{name}` must be (h, w) or (c, h, w) with h and w divisible by 4 and at least 8 "
            f"(e.g. (1, 28, 28) or (3, 32, 32)), got {shape!r}."
        )
    return shape


def _dcgan_init(module: nn.Module) -> None:
    """DCGAN initialisation [1]_: conv weights ~ N(0, 0.02), BatchNorm scale ~ N(1, 0.02)."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            weight = m.parametrizations.weight.original if hasattr(m, "parametrizations") else m.weight
            nn.init.normal_(weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


class DCGANGenerator(nn.Module):
    """DCGAN generator for small images: ``G(z)`` in ``[0, 1]``.

    Architecture: ``Linear(latent_dim -> 2*width*(h/4)*(w/4))`` + BatchNorm + ReLU, reshape to
    ``(2*width, h/4, w/4)`` (7x7 for 28x28, 8x8 for 32x32), two ``ConvTranspose2d(4, stride
    2)`` upsamplings (``2*width -> width -> width/2`` channels) each with BatchNorm + ReLU, a
    3x3 convolution to the image channels and a Sigmoid.

    Parameters
    ----------
    latent_dim : int, default=64
        Length of the latent vector ``z``.
    out_shape : tuple of int, default=(1, 28, 28)
        Image shape ``(c, h, w)`` (or ``(h, w)`` for one channel); ``h`` and ``w`` must be
        divisible by 4.
    width : int, default=64
        Channels after the first upsampling (``2*width`` before it, ``width//2`` after the
        second). ``width=64`` trains at about 0.2 s per batch of 128 28x28 images on 2 CPU
        cores.

    Attributes
    ----------
    out_shape : tuple of int
        ``(c, h, w)``; :meth:`forward` returns ``(n, c, h, w)``.

    References
    ----------
    .. [1] Radford, Metz, Chintala. "Unsupervised Representation Learning with Deep
       Convolutional Generative Adversarial Networks". ICLR 2016.

    Examples
    --------
    >>> import torch
    >>> G = DCGANGenerator(latent_dim=16, out_shape=(3, 32, 32), width=8).eval()
    >>> x = G(torch.zeros(2, 16))
    >>> tuple(x.shape), bool(((x >= 0) & (x <= 1)).all())
    ((2, 3, 32, 32), True)
    """

    def __init__(self, latent_dim: int = 64, out_shape=(1, 28, 28), width: int = 64):
        super().__init__()
        c, h, w = self.out_shape = _image_shape(out_shape, "out_shape")
        if width < 2:
            raise ValueError(f"`width` must be an int >= 2, got {width!r}.")
        self.latent_dim = int(latent_dim)
        base = (2 * width, h // 4, w // 4)
        n_base = base[0] * base[1] * base[2]
        self.project = nn.Sequential(
            nn.Linear(self.latent_dim, n_base, bias=False), nn.BatchNorm1d(n_base), nn.ReLU(True),
            nn.Unflatten(1, base),
        )
        self.upsample = nn.Sequential(
            nn.ConvTranspose2d(2 * width, width, 4, 2, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(True),
            nn.ConvTranspose2d(width, width // 2, 4, 2, 1, bias=False), nn.BatchNorm2d(width // 2),
            nn.ReLU(True),
            nn.Conv2d(width // 2, c, 3, 1, 1), nn.Sigmoid(),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Map latents ``(n, latent_dim)`` to images ``(n, c, h, w)`` in ``[0, 1]``."""
        return self.upsample(self.project(z))


class DCGANDiscriminator(nn.Module):
    """DCGAN discriminator for small images: one real-vs-fake logit per image.

    Architecture: ``Conv2d(c -> width, 4, stride 2)`` + LeakyReLU(0.2), ``Conv2d(width ->
    2*width, 4, stride 2)`` (+ BatchNorm unless spectral norm) + LeakyReLU(0.2), flatten,
    ``Linear -> 1``.

    Parameters
    ----------
    in_shape : tuple of int, default=(1, 28, 28)
        Image shape ``(c, h, w)`` or ``(h, w)``; ``h`` and ``w`` divisible by 4.
    width : int, default=64
        Channels of the first convolution.
    spectral_norm : bool, default=False
        Wrap every weight layer in spectral normalisation (Miyato et al., 2018) instead of
        using BatchNorm: slower but steadier training.

    Returns
    -------
    logits : torch.Tensor of shape (n,)
        From :meth:`forward`; positive = judged real (ID-like).

    Examples
    --------
    >>> import torch
    >>> D = DCGANDiscriminator((1, 28, 28), width=8)
    >>> tuple(D(torch.rand(4, 1, 28, 28)).shape)
    (4,)
    """

    def __init__(self, in_shape=(1, 28, 28), width: int = 64, spectral_norm: bool = False):
        super().__init__()
        c, h, w = self.in_shape = _image_shape(in_shape, "in_shape")
        sn = nn.utils.parametrizations.spectral_norm if spectral_norm else (lambda m: m)
        self.net = nn.Sequential(
            sn(nn.Conv2d(c, width, 4, 2, 1)), nn.LeakyReLU(0.2, True),
            sn(nn.Conv2d(width, 2 * width, 4, 2, 1, bias=spectral_norm)),
            nn.Identity() if spectral_norm else nn.BatchNorm2d(2 * width), nn.LeakyReLU(0.2, True),
            nn.Flatten(), sn(nn.Linear(2 * width * (h // 4) * (w // 4), 1)),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(n,)`` of images ``(n, c, h, w)`` (``(n, h, w)`` for one channel)."""
        if x.dim() == 3:
            x = x.unsqueeze(1)
        return self.net(x).squeeze(1)


def _resolve_device(device) -> torch.device:
    """:func:`aoe_detect._torch_utils.resolve_device`, with ``None`` meaning ``"auto"``."""
    return resolve_device("auto" if device is None else device)


def _build_models(latent_dim, shape, width, spectral_norm, seed):
    """Build and initialise G and D on the CPU without changing any global RNG state."""
    with torch.random.fork_rng(devices=[]):  # models are built on the CPU: fork the CPU RNG only
        torch.default_generator.manual_seed(seed)  # not torch.manual_seed: leaves CUDA RNGs alone
        G = DCGANGenerator(latent_dim, shape, width)
        D = DCGANDiscriminator(shape, width, spectral_norm=spectral_norm)
        _dcgan_init(G)
        _dcgan_init(D)
    return G, D


def _as_images(X):
    """``X`` as a tensor of at least 2 images ``(n, c, h, w)`` (one channel added to 3-D)."""
    X = torch.as_tensor(X).detach()
    if X.dim() == 3:
        X = X.unsqueeze(1)
    if X.dim() != 4 or len(X) < 2:
        raise ValueError(f"`X` must be at least 2 images of shape (n, h, w) or (n, c, h, w), got "
                         f"shape {tuple(X.shape)}.")
    return X


def _gan_epochs(G, D, X, *, epochs, bs, lr, generator, device, verbose):
    """The epochs of :func:`train_gan` (Adam for both networks); its history."""
    opt_g = torch.optim.Adam(G.parameters(), lr=lr, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(D.parameters(), lr=lr, betas=(0.5, 0.999))
    epoch_iter = range(1, int(epochs) + 1)
    bar = None
    if verbose:
        epoch_iter = bar = tqdm(epoch_iter, desc="GAN", unit="epoch")
    history = []
    try:
        for epoch in epoch_iter:
            start = time.perf_counter()
            d_mean, g_mean = _gan_epoch(G, D, X, (opt_g, opt_d), bs, generator, device)
            row = {"epoch": epoch, "d_loss": d_mean, "g_loss": g_mean,
                   "seconds": time.perf_counter() - start}
            history.append(row)
            if bar is not None:
                bar.set_postfix(d_loss=f"{row['d_loss']:.3f}", g_loss=f"{row['g_loss']:.3f}")
    finally:
        if bar is not None:
            bar.close()
    return history


def _gan_epoch(G, D, X, optimizers, bs, generator, device):
    """One epoch of :func:`train_gan`; the mean discriminator and generator losses."""
    opt_g, opt_d = optimizers
    ones, zeros = torch.ones(bs, device=device), torch.zeros(bs, device=device)
    n = len(X)
    perm = torch.randperm(n, generator=generator)
    d_sum = g_sum = torch.zeros((), device=device)
    steps = n // bs
    for i in range(steps):
        real = X[perm[i * bs:(i + 1) * bs].to(device)]
        z = torch.randn((bs, G.latent_dim), generator=generator).to(device)
        fake = G(z)
        # discriminator step: real -> 1, fake -> 0
        d_loss = (F.binary_cross_entropy_with_logits(D(real), ones)
                  + F.binary_cross_entropy_with_logits(D(fake.detach()), zeros))
        opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        opt_d.step()
        # generator step, non-saturating: fake -> 1
        g_loss = F.binary_cross_entropy_with_logits(D(fake), ones)
        opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        opt_g.step()
        d_sum = d_sum + d_loss.detach()
        g_sum = g_sum + g_loss.detach()
    return float(d_sum) / steps, float(g_sum) / steps


def train_gan(X, *, latent_dim: int = 64, epochs: int = 10, batch_size: int = 128,
              lr: float = 2e-4, width: int = 64, spectral_norm: bool = False,
              generator: torch.Generator | None = None, device="cpu", verbose: int = 0):
    """Train a DCGAN on images ``X`` with the non-saturating GAN loss.

    Each step draws ``z ~ N(0, I)``, updates the discriminator with
    ``L_D = BCE(D(x), 1) + BCE(D(G(z)), 0)`` and then the generator with the non-saturating
    loss ``L_G = BCE(D(G(z)), 1) = -mean log sigmoid(D(G(z)))`` (BCE with logits), both with
    Adam(``lr``, betas=(0.5, 0.999)) as in [1]_.

    Deterministic given ``generator``: the weight-initialisation seed, the per-epoch shuffling
    (``torch.randperm``) and every latent batch are drawn from it (on the CPU). Weights are
    initialised inside :func:`torch.random.fork_rng`, so the global RNG state is unchanged.

    Parameters
    ----------
    X : torch.Tensor or array-like of shape (n, h, w) or (n, c, h, w)
        Training images scaled to ``[0, 1]`` (the generator ends in a Sigmoid); ``h`` and ``w``
        divisible by 4 (28 and 32 are the intended sizes). At least 2 images.
    latent_dim : int, default=64
        Latent dimension of the generator.
    epochs : int, default=10
        Passes over ``X``.
    batch_size : int, default=128
        Images per step; the last incomplete batch of an epoch is dropped (all of ``X`` is
        one batch when ``n < batch_size``).
    lr : float, default=2e-4
        Adam learning rate of both networks.
    width : int, default=64
        Width of both networks (see :class:`DCGANGenerator`).
    spectral_norm : bool, default=False
        Spectral normalisation in the discriminator.
    generator : torch.Generator, optional
        Source of all randomness (default: ``torch.Generator().manual_seed(0)``).
    device : str or torch.device, default="cpu"
        Where to train; ``"auto"`` picks CUDA when available.
    verbose : int, default=0
        ``> 0`` shows a tqdm progress bar over epochs with the current losses.

    Returns
    -------
    G : DCGANGenerator
        The trained generator, in eval mode, on ``device``.
    D : DCGANDiscriminator
        The trained discriminator, in eval mode, on ``device``.
    history : list of dict
        One dict per epoch: ``epoch`` (1-based), ``d_loss`` and ``g_loss`` (mean over the
        epoch's steps), ``seconds`` (wall time of the epoch).

    References
    ----------
    .. [1] Radford, Metz, Chintala. "Unsupervised Representation Learning with Deep
       Convolutional Generative Adversarial Networks". ICLR 2016.

    Examples
    --------
    >>> import torch
    >>> X = torch.rand(16, 1, 28, 28)
    >>> G, D, hist = train_gan(X, latent_dim=8, epochs=1, batch_size=8, width=4,
    ...                        generator=torch.Generator().manual_seed(0))
    >>> len(hist), sorted(hist[0])
    (1, ['d_loss', 'epoch', 'g_loss', 'seconds'])
    """
    X = _as_images(X)
    shape = _image_shape(X.shape[1:], "X.shape[1:]")
    if generator is None:
        generator = torch.Generator().manual_seed(0)
    device = _resolve_device(device)
    G, D = _build_models(latent_dim, shape, width, spectral_norm, _torch_seed(generator))
    G, D = G.to(device).train(), D.to(device).train()
    X = X.to(device=device, dtype=torch.float32)
    history = _gan_epochs(G, D, X, epochs=epochs, bs=min(int(batch_size), len(X)), lr=lr,
                          generator=generator, device=device, verbose=verbose)
    return G.eval(), D.eval(), history


def _data_sha1(X: torch.Tensor) -> str:
    h = hashlib.sha1()
    h.update(repr((tuple(X.shape), str(X.dtype))).encode())
    h.update(X.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _key(payload: dict) -> str:
    return hashlib.sha1(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:20]


def _save_npy(path: str, arr: np.ndarray) -> None:
    with open(path, "wb") as f:  # a file object: np.save(path) would append ".npy"
        np.save(f, arr, allow_pickle=False)


class GANOutliers(OutlierSource):
    """Low-density samples of a DCGAN trained on the ID images (the AOE paper's GAN outliers).

    :meth:`fit` trains a small DCGAN (:func:`train_gan`) on the in-distribution images for a
    few epochs; :meth:`sample` draws latents ``sigma * N(0, I)`` and decodes them with the
    trained generator through :class:`~aoe_detect.outliers.GeneratorOutliers`. An
    under-trained generator and ``sigma > 1`` (the latent prior's low-density shell) give
    images that share the ID data's low-level statistics but not its semantics: imperfect
    samples that act as near outliers [2]_. Images only.

    Caching. With ``cache_dir``, :meth:`fit` stores the trained generator (a ``state_dict``
    written with :func:`torch.save`, read back with ``weights_only=True``) in a file keyed by
    the SHA-1 of the data bytes, the seed drawn from ``generator`` and the training
    parameters (``latent_dim``, ``epochs``, ``batch_size``, ``lr``, ``width``), and loads it
    instead of training when it exists. ``sigma``, ``n_cached``, ``device``, ``verbose`` and
    ``cache_dir`` do not change the trained generator, so they are left out of that key:
    tuning ``sigma`` reuses the generator. With ``n_cached > 0``, :meth:`fit` decodes a pool
    of ``n_cached`` samples once (saved as ``.npy`` in ``cache_dir`` under a key that also
    holds ``sigma`` and ``n_cached``) and :meth:`sample` draws from the pool with
    replacement, which is much faster inside a training loop.

    Parameters
    ----------
    latent_dim : int, default=64
        Latent dimension of the generator.
    epochs : int, default=10
        GAN training epochs.
    batch_size : int, default=128
        GAN training batch size.
    lr : float, default=2e-4
        Adam learning rate (betas (0.5, 0.999)).
    sigma : float, default=1.5
        Latent scale at sampling time; ``sigma > 1`` samples low-density regions, ``0`` always
        decodes the latent mean.
    n_cached : int, default=0
        Size of the pre-generated sample pool (0: decode fresh latents at every call).
    cache_dir : str or path-like, optional
        Directory for the generator/pool cache (created if needed); ``None`` disables it.
    device : str or torch.device, default="cpu"
        Where the GAN trains and decodes (``"auto"``: CUDA when available). Samples are always
        returned on the CPU.
    verbose : int, default=0
        ``> 0`` shows a tqdm progress bar during training.
    width : int, default=64
        Width of the DCGAN (see :class:`DCGANGenerator`); smaller trains faster.

    Attributes
    ----------
    sample_shape_ : tuple of int
        Shape of one ID image, ``(h, w)`` or ``(c, h, w)``, as seen in :meth:`fit`.
    low_, high_ : torch.Tensor of shape (1,)
        Pixel range of the ID images; samples are clipped to it.
    device_ : torch.device
        The resolved ``device``.
    generator_ : DCGANGenerator
        The trained generator, in eval mode, on ``device_``.
    history_ : list of dict
        Per-epoch ``epoch``, ``d_loss``, ``g_loss``, ``seconds`` of the training that produced
        ``generator_`` (read from the cache file when it was loaded).
    loaded_from_cache_ : bool
        True when ``generator_`` was loaded from ``cache_dir`` instead of trained.
    sampler_ : GeneratorOutliers
        The fitted sampler wrapping ``generator_`` with ``sigma``.
    pool_ : torch.Tensor of shape (n_cached, *sample_shape_) or None
        The pre-generated samples (``None`` when ``n_cached == 0``).
    cache_path_ : str or None
        The generator cache file used (``None`` without ``cache_dir``).

    References
    ----------
    .. [1] Radford, Metz, Chintala. "Unsupervised Representation Learning with Deep
       Convolutional Generative Adversarial Networks". ICLR 2016.
    .. [2] Botschen et al. "Adversarial Outlier Exposure" (AOE), 2025.

    Examples
    --------
    >>> import torch
    >>> X = torch.rand(32, 28, 28)
    >>> src = GANOutliers(latent_dim=8, epochs=1, batch_size=16, width=4)
    >>> src = src.fit(X, torch.Generator().manual_seed(0))
    >>> x = src.sample(5, torch.Generator().manual_seed(1))
    >>> tuple(x.shape), x.dtype
    ((5, 28, 28), torch.float32)
    """

    def __init__(self, latent_dim=64, epochs=10, batch_size=128, lr=2e-4, sigma=1.5, n_cached=0,
                 cache_dir=None, device="cpu", verbose=0, width=64):
        self.latent_dim = latent_dim
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.sigma = sigma
        self.n_cached = n_cached
        self.cache_dir = cache_dir
        self.device = device
        self.verbose = verbose
        self.width = width

    def _check_params(self):
        def check(name, ok, accepted):
            value = getattr(self, name)
            if not ok(value):
                raise ValueError(f"GANOutliers `{name}` must be {accepted}, got {value!r}.")

        def is_int(lo):
            return lambda v: isinstance(v, Integral) and not isinstance(v, bool) and v >= lo

        check("latent_dim", is_int(1), "an int >= 1")
        check("epochs", is_int(0), "an int >= 0")
        check("batch_size", is_int(2), "an int >= 2")
        check("width", is_int(2), "an int >= 2")
        check("n_cached", is_int(0), "an int >= 0")
        check("lr", lambda v: isinstance(v, Real) and v > 0, "a float > 0")
        check("sigma", lambda v: isinstance(v, Real) and np.isfinite(v) and v >= 0,
              "a finite float >= 0")

    def fit(self, X, generator: torch.Generator | None = None):
        """Train (or load from the cache) the DCGAN of the ID images ``X``.

        Parameters
        ----------
        X : torch.Tensor of shape (n, h, w) or (n, c, h, w)
            In-distribution images scaled to ``[0, 1]``, ``h`` and ``w`` divisible by 4
            (28x28 and 32x32 are the intended sizes), ``n >= 2``. Tabular ``(n, d)`` input
            raises ``ValueError``.
        generator : torch.Generator, optional
            Source of the training randomness (default: seed 0). Two seeds are drawn from it
            whether or not the cache is hit, so its state afterwards is the same either way.

        Returns
        -------
        self : GANOutliers
        """
        self._check_params()
        X = torch.as_tensor(X).detach().cpu()
        if X.dim() == 2:
            raise ValueError(
                f"GANOutliers models images only: `X` must have shape (n, h, w) or (n, c, h, w), "
                f"got tabular input of shape {tuple(X.shape)}. Use e.g. 'lowdensity' "
                "(LowDensityGMM) outliers for tabular data."
            )
        if X.dim() not in (3, 4) or len(X) < 2:
            raise ValueError(f"GANOutliers `X` must be at least 2 images of shape (n, h, w) or "
                             f"(n, c, h, w), got shape {tuple(X.shape)}.")
        X = X.float()
        shape = _image_shape(X.shape[1:], "X.shape[1:]")
        super().fit(X, generator)
        if generator is None:
            generator = torch.Generator().manual_seed(0)
        train_seed, pool_seed = _torch_seed(generator), _torch_seed(generator)
        self.device_ = _resolve_device(self.device)

        self.cache_path_ = None
        key = None
        if self.cache_dir is not None:
            key = _key({"data_sha1": _data_sha1(X), "seed": train_seed, "latent_dim": self.latent_dim,
                        "epochs": self.epochs, "batch_size": self.batch_size, "lr": float(self.lr),
                        "width": self.width, "out_shape": list(shape), "model": "dcgan-v1"})
            os.makedirs(self.cache_dir, exist_ok=True)
            self.cache_path_ = os.path.join(os.fspath(self.cache_dir), f"gan_{key}.pt")

        self.loaded_from_cache_ = False
        if self.cache_path_ is not None and os.path.exists(self.cache_path_):
            state = torch.load(self.cache_path_, map_location="cpu", weights_only=True)
            G = DCGANGenerator(self.latent_dim, shape, self.width)  # weights overwritten below
            G.load_state_dict(state["generator"])
            self.history_ = list(state["history"])
            self.loaded_from_cache_ = True
            G = G.to(self.device_)
        else:
            G, _, self.history_ = train_gan(
                X, latent_dim=self.latent_dim, epochs=self.epochs, batch_size=self.batch_size,
                lr=self.lr, width=self.width, generator=torch.Generator().manual_seed(train_seed),
                device=self.device_, verbose=self.verbose)
            if self.cache_path_ is not None:
                cpu_state = {k: v.detach().cpu() for k, v in G.state_dict().items()}
                atomic_write(self.cache_path_, lambda p: torch.save(
                    {"generator": cpu_state, "history": self.history_}, p))
        self.generator_ = G.eval()
        self.sampler_ = GeneratorOutliers(
            generator=self.generator_, latent_dim=self.latent_dim, sigma=self.sigma,
            device=self.device_, clip=True,
        ).fit(X)

        self.pool_ = None
        if self.n_cached > 0:
            self.pool_ = self._pool(key, pool_seed)
        return self

    def _pool(self, key, pool_seed):
        """``n_cached`` samples of the fitted sampler (read from / written to the cache when
        ``key`` is set)."""
        pool_path = None
        if key is not None:
            pool_key = _key({"gan": key, "sigma": float(self.sigma), "n_cached": self.n_cached,
                             "seed": pool_seed})
            pool_path = os.path.join(os.fspath(self.cache_dir), f"gan_{key}_pool_{pool_key}.npy")
        if pool_path is not None and os.path.exists(pool_path):
            pool = torch.from_numpy(np.load(pool_path, allow_pickle=False))
        else:
            pool = self.sampler_.sample(self.n_cached, torch.Generator().manual_seed(pool_seed))
            if pool_path is not None:
                arr = pool.numpy()
                atomic_write(pool_path, lambda p: _save_npy(p, arr))
        return pool.float().reshape((self.n_cached, *self.sample_shape_))

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """Draw ``n`` GAN outliers.

        Parameters
        ----------
        n : int
            Number of samples.
        generator : torch.Generator
            The only source of randomness (the latents, or the pool indices when
            ``n_cached > 0``).

        Returns
        -------
        X_out : torch.Tensor of shape (n, *sample_shape_)
            float32 images on the CPU, clipped to the ID pixel range.
        """
        check_is_fitted(self, "generator_")
        if self.pool_ is not None:
            idx = torch.randint(0, len(self.pool_), (n,), generator=generator)
            return self.pool_[idx]
        return self.sampler_.sample(n, generator)

