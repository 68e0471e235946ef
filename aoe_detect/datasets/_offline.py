"""Offline sets: upsampled scikit-learn digits, photo patches, noise images and the sample
shipped inside the package."""

from __future__ import annotations

from numbers import Integral
from pathlib import Path

import numpy as np

from ._files import _check_split


_SAMPLE_PATH = Path(__file__).resolve().parent.parent / "sample_data" / "sample.npz"


# --------------------------------------------------------------------------------------
def load_digits28(split=None):
    """scikit-learn's bundled 8x8 handwritten digits upsampled to 28x28 uint8 images.

    An out-of-distribution test set (for Fashion-MNIST models, or a near-OOD one for
    MNIST models) that ships with scikit-learn, so it needs no download. The 8x8 images
    (values ``0..16``) are upsampled bilinearly with ``torch.nn.functional.interpolate``
    (``align_corners=False``) and scaled to ``0..255``; the background stays 0 as in MNIST.

    Parameters
    ----------
    split : {None, "train", "test"}, default=None
        ``None``: all 1797 images; ``"train"``: the first 1000; ``"test"``: the last 797
        (a fixed block split, not shuffled).

    Returns
    -------
    X : ndarray of shape (n_samples, 28, 28), dtype uint8
        Images in ``0..255``.
    y : ndarray of shape (n_samples,), dtype int64
        Digit labels in ``0..9``.

    Examples
    --------
    >>> from aoe_detect.datasets import load_digits28
    >>> X, y = load_digits28()
    >>> X.shape, X.dtype, int(X.max()), y.dtype
    ((1797, 28, 28), dtype('uint8'), 255, dtype('int64'))
    """
    if split is not None:
        _check_split(split, ("train", "test"))
    import torch
    import torch.nn.functional as F
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.from_numpy(np.asarray(digits.images, dtype=np.float32))[:, None]
    up = F.interpolate(images, size=(28, 28), mode="bilinear", align_corners=False)
    X = (up[:, 0].numpy() * (255.0 / 16.0)).round().clip(0, 255).astype(np.uint8)
    y = np.asarray(digits.target, dtype=np.int64)
    if split == "train":
        return X[:1000], y[:1000]
    if split == "test":
        return X[1000:], y[1000:]
    return X, y


def _generator(random_state):
    """A local ``numpy.random.Generator`` (never the global RNG)."""
    if isinstance(random_state, np.random.Generator):
        return random_state
    if isinstance(random_state, np.random.RandomState):
        return np.random.default_rng(random_state.randint(0, 2**31 - 1))
    if random_state is None or isinstance(random_state, Integral):
        return np.random.default_rng(random_state)
    raise ValueError(
        "random_state must be None, an int, a numpy Generator or RandomState; got "
        f"{random_state!r}"
    )


def _check_count(n):
    if isinstance(n, bool) or not isinstance(n, Integral) or n < 0:
        raise ValueError(f"n must be a non-negative int; got {n!r}")
    return int(n)


def _check_shape(shape):
    try:
        shape = tuple(shape)
    except TypeError:
        shape = None
    if (
        not shape
        or len(shape) not in (2, 3)
        or not all(isinstance(s, Integral) and not isinstance(s, bool) and s > 0 for s in shape)
    ):
        raise ValueError(
            "shape must be (height, width) or (channels, height, width) of positive ints; "
            f"got {shape!r}"
        )
    return tuple(int(s) for s in shape)


def noise_images(kind, n, shape=(28, 28), random_state=None):
    """Noise images as uint8, a far out-of-distribution test set.

    Parameters
    ----------
    kind : {"gaussian", "uniform"}
        ``"gaussian"``: pixels ~ N(0.5, 0.25**2) in ``[0, 1]`` units, clipped to ``[0, 1]``,
        then scaled to ``0..255`` and rounded. ``"uniform"``: pixels uniform over
        ``0..255``.
    n : int
        Number of images.
    shape : tuple of int, default=(28, 28)
        Shape of one image: ``(28, 28)`` for grayscale sets, ``(3, 32, 32)`` for colour sets.
    random_state : int, numpy Generator, RandomState or None, default=None
        Seeds a local ``numpy.random.Generator``; the global RNGs are never used. The same
        int gives the same images.

    Returns
    -------
    X : ndarray of shape (n, *shape), dtype uint8
        The images.

    Examples
    --------
    >>> from aoe_detect.datasets import noise_images
    >>> X = noise_images("gaussian", 5, random_state=0)
    >>> X.shape, X.dtype
    ((5, 28, 28), dtype('uint8'))
    >>> bool((X == noise_images("gaussian", 5, random_state=0)).all())
    True
    """
    n = _check_count(n)
    shape = _check_shape(shape)
    rng = _generator(random_state)
    size = (n, *shape)
    if kind == "gaussian":
        unit = np.clip(rng.normal(0.5, 0.25, size=size), 0.0, 1.0)
        return np.round(unit * 255.0).astype(np.uint8)
    if kind == "uniform":
        return rng.integers(0, 256, size=size, dtype=np.uint8)
    raise ValueError(f"kind must be 'gaussian' or 'uniform'; got {kind!r}")


def load_photo_patches(n, shape=(28, 28), random_state=None):
    """Random crops of the two photographs bundled with scikit-learn, as uint8 images.

    A real-image (natural-scene) out-of-distribution test set that needs no download: each
    image is a random square crop (side between the target size and half the photograph's
    short side) of ``china.jpg`` or ``flower.jpg`` from
    :func:`sklearn.datasets.load_sample_images` (CC BY 2.0, see scikit-learn's
    ``datasets/images/README.txt``), resized bilinearly (antialiased) to ``shape``.
    Grayscale uses ITU-R BT.601 luma (0.299 R + 0.587 G + 0.114 B). Needs Pillow.

    Parameters
    ----------
    n : int
        Number of patches.
    shape : tuple of int, default=(28, 28)
        ``(height, width)`` for grayscale patches, ``(3, height, width)`` for RGB
        channels-first patches (``(1, height, width)`` gives a grayscale channel axis).
        Height and width must be at most 213.
    random_state : int, numpy Generator, RandomState or None, default=None
        Seeds a local ``numpy.random.Generator``; the global RNGs are never used.

    Returns
    -------
    X : ndarray of shape (n, *shape), dtype uint8
        The patches.

    Examples
    --------
    >>> from aoe_detect.datasets import load_photo_patches
    >>> X = load_photo_patches(4, shape=(3, 32, 32), random_state=0)
    >>> X.shape, X.dtype
    ((4, 3, 32, 32), dtype('uint8'))
    """
    n = _check_count(n)
    shape = _check_shape(shape)
    if len(shape) == 3 and shape[0] not in (1, 3):
        raise ValueError(f"shape must have 1 or 3 channels; got {shape!r}")
    import torch
    import torch.nn.functional as F
    from sklearn.datasets import load_sample_images

    photos = [np.asarray(img, dtype=np.float32) for img in load_sample_images().images]
    height, width = shape[-2:]
    short = min(min(p.shape[:2]) for p in photos)
    max_side = short // 2
    if max(height, width) > max_side:
        raise ValueError(
            f"shape height and width must be at most {max_side}; got {shape!r}"
        )
    gray = len(shape) == 2 or shape[0] == 1
    if gray:
        luma = np.array([0.299, 0.587, 0.114], dtype=np.float32)
        photos = [(p @ luma)[None] for p in photos]  # (1, H, W)
    else:
        photos = [p.transpose(2, 0, 1) for p in photos]  # (3, H, W)
    rng = _generator(random_state)
    out = np.empty((n, len(photos[0]), height, width), dtype=np.uint8)
    for i in range(n):
        photo = photos[int(rng.integers(len(photos)))]
        side = int(rng.integers(max(height, width), max_side + 1))
        top = int(rng.integers(0, photo.shape[1] - side + 1))
        left = int(rng.integers(0, photo.shape[2] - side + 1))
        crop = torch.from_numpy(
            np.ascontiguousarray(photo[:, top : top + side, left : left + side])
        )[None]
        resized = F.interpolate(
            crop, size=(height, width), mode="bilinear", align_corners=False, antialias=True
        )
        out[i] = resized[0].numpy().round().clip(0, 255).astype(np.uint8)
    return out[:, 0] if len(shape) == 2 else out


def load_sample():
    """Load the small data sample shipped inside the package (no download, no files).

    The sample (``aoe_detect/sample_data/sample.npz``, built by ``aoe_detect/sample_data/make_sample.py``;
    sources and licences in ``aoe_detect/sample_data/LICENSES.md``) holds class-balanced subsets,
    each selected deterministically (seeded) from the official files:

    * ``"fashion_train"``: 3000 Fashion-MNIST training images, 300 per class (Zalando, MIT);
    * ``"fashion_test"``: 1000 Fashion-MNIST test images, 100 per class;
    * ``"mnist_test"``: 1000 MNIST test images, 100 per class (Y. LeCun and C. Cortes,
      CC BY-SA 3.0).

    Returns
    -------
    sample : dict of str to tuple of (ndarray, ndarray)
        Keys ``"fashion_train"``, ``"fashion_test"``, ``"mnist_test"``; each value is
        ``(X, y)`` with ``X`` of shape ``(n_samples, 28, 28)``, dtype uint8, and ``y`` of
        shape ``(n_samples,)``, dtype int64, labels in ``0..9``. Fresh arrays on every
        call.

    Raises
    ------
    FileNotFoundError
        If the package was installed without its data files.

    Examples
    --------
    >>> from aoe_detect.datasets import load_sample
    >>> sample = load_sample()
    >>> X, y = sample["fashion_train"]
    >>> X.shape, X.dtype, y.dtype
    ((3000, 28, 28), dtype('uint8'), dtype('int64'))
    """
    if not _SAMPLE_PATH.is_file():
        raise FileNotFoundError(
            f"the embedded sample {_SAMPLE_PATH} is missing: the package was installed "
            "without its package data (setup.cfg package_data must include sample_data/*.npz); "
            "regenerate it with `python aoe_detect/sample_data/make_sample.py`"
        )
    sample = {}
    with np.load(_SAMPLE_PATH, allow_pickle=False) as npz:
        for key in ("fashion_train", "fashion_test", "mnist_test"):
            X = np.asarray(npz[f"{key}_X"], dtype=np.uint8)
            y = np.asarray(npz[f"{key}_y"], dtype=np.int64)
            sample[key] = (X, y)
    return sample
