"""Colour sets read through torchvision's dataset classes (CIFAR-10, CIFAR-100, SVHN)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ._files import ENV_VAR, _check_split, _download_root, _not_found, _search_bases


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
