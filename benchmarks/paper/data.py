"""The suite's data: ID train/test images, the fixed OOD test sets, real outliers, user data."""

from __future__ import annotations

import math
import os

import numpy as np
import torch

from aoe_detect import datasets as ds
from aoe_detect.demo import ood_test_sets

from .plan import EVAL_SEED


def _stratified(y, n, seed):
    """Indices of a class-balanced subset of size ``n`` (all if ``n`` is None or too big)."""
    if n is None or n >= len(y):
        return np.arange(len(y))
    rng = np.random.RandomState(seed)
    classes = np.unique(y)
    per = int(math.ceil(n / len(classes)))
    idx = np.concatenate([rng.permutation(np.flatnonzero(y == c))[:per] for c in classes])
    return np.sort(rng.permutation(idx)[:n])


def _id_data(p, data_root):
    """``(X_train, y_train, X_test, y_test, mnist_test)`` of profile ``p`` before subsetting."""
    if p.data == "sample":
        s = ds.load_sample()
        X_tr, y_tr = s["fashion_train"]
        X_te, y_te = s["fashion_test"]
        return X_tr, y_tr, X_te, y_te, s["mnist_test"][0]
    if p.data != "files":
        raise ValueError(f"Profile `data` must be 'sample' or 'files', got {p.data!r}.")
    X_tr, y_tr = ds.load_fashion_mnist(root=data_root, split="train")
    X_te, y_te = ds.load_fashion_mnist(root=data_root, split="test")
    mnist = ds.load_mnist(root=data_root, split="test")[0]
    if X_te.shape == mnist.shape and np.array_equal(X_te[:100], mnist[:100]):
        raise ValueError(
            f"Fashion-MNIST and MNIST resolved to the same files under data root "
            f"{data_root!r} (the loaders accept idx files directly in the root for any set); "
            "put MNIST in a sub-folder DIR/mnist (and Fashion-MNIST in DIR/fashion-mnist, or "
            "leave it to the system copy) and pass --data-root DIR.")
    return X_tr, y_tr, X_te, y_te, mnist


def _real_outliers(p, data_root):
    if 6 not in p.items:
        return None
    if p.real_outliers == "digits28":
        return ds.load_digits28(split="train")[0]
    if p.real_outliers == "mnist":
        Xm, ym = ds.load_mnist(root=data_root, split="train")
        return Xm[_stratified(ym, p.n_real, EVAL_SEED + 6)]
    raise ValueError(f"Profile `real_outliers` must be 'digits28' or 'mnist', got "
                     f"{p.real_outliers!r}.")


def load_data(profile, data_root=None):
    """ID train/test data, OOD evaluation sets and real training outliers of ``profile``.

    The evaluation sets are fixed by :data:`EVAL_SEED`, identical for every method and seed.

    Returns
    -------
    dict
        ``X_train, y_train, X_test, y_test`` (uint8 ``(n, 28, 28)`` and int64),
        ``ood`` (name -> uint8 images), ``real`` (uint8 images or None), ``sizes``.
    """
    p = profile
    X_tr, y_tr, X_te, y_te, mnist = _id_data(p, data_root)
    i_tr = _stratified(y_tr, p.n_train, EVAL_SEED)
    i_te = _stratified(y_te, p.n_test_id, EVAL_SEED + 1)
    X_tr, y_tr, X_te, y_te = X_tr[i_tr], y_tr[i_tr], X_te[i_te], y_te[i_te]
    ood = ood_test_sets(mnist, p.n_ood, EVAL_SEED)
    real = _real_outliers(p, data_root)
    return _finish_data(X_tr, y_tr, X_te, y_te, ood, real,
                        unseen=("gaussian_noise", "uniform_noise", "photo_patches"),
                        description=("Fashion-MNIST" if p.data == "files"
                                     else "Fashion-MNIST (embedded sample)"))


def _finish_data(X_tr, y_tr, X_te, y_te, ood, real, *, unseen, description):
    sizes = {"id_train": int(len(X_tr)), "id_test": int(len(X_te)),
             **{k: int(len(v)) for k, v in ood.items()}}
    if real is not None:
        sizes["real_outliers"] = int(len(real))
    return {"X_train": X_tr, "y_train": y_tr, "X_test": X_te, "y_test": y_te, "ood": ood,
            "real": real, "sizes": sizes, "unseen": tuple(unseen), "description": description}


def _read_source(source):
    """``(dict of arrays, description)`` from a dict or an ``.npz`` path."""
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"data file not found: {path}")
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}, os.path.basename(path)
    return dict(source), "user data"


def load_user_data(source):
    """Your own image data for the suite, from a dict or an ``.npz`` file.

    Keys: ``X_train``, ``y_train`` (class labels 0..k-1), ``X_test``, ``y_test`` (the ID test
    set), one ``ood_<name>`` array per OOD test set, and optionally ``real_outliers`` (real
    training outliers for item 6; without it item 6 is skipped) and ``unseen`` (names of OOD
    sets unlike the real outliers). Images are ``(n, h, w)`` or ``(n, c, h, w)``, uint8 or
    floats in [0, 1]; ``h`` and ``w`` divisible by 4 (for the DCGAN). An ``.npz`` is read with
    ``allow_pickle=False``.

    Returns
    -------
    dict
        The data dict :func:`run_benchmark` accepts as ``data``.
    """
    source, desc = _read_source(source)
    missing = [k for k in ("X_train", "y_train", "X_test", "y_test") if k not in source]
    ood = {k[4:]: np.asarray(v) for k, v in source.items() if k.startswith("ood_")}
    if missing or not ood:
        raise KeyError(f"benchmark data needs keys X_train, y_train, X_test, y_test and at least "
                       f"one ood_<name>; missing: {missing + ([] if ood else ['ood_<name>'])} "
                       f"(got {sorted(source)})")
    arrays = {k: np.asarray(source[k]) for k in ("X_train", "X_test")}
    shape = arrays["X_train"].shape[1:]
    for name, X in [("X_test", arrays["X_test"])] + [(f"ood_{k}", v) for k, v in ood.items()]:
        if X.shape[1:] != shape:
            raise ValueError(f"{name} has images of shape {X.shape[1:]}, X_train {shape}.")
    if len(shape) not in (2, 3) or shape[-1] % 4 or shape[-2] % 4:
        raise ValueError(f"the suite needs images (n, h, w) or (n, c, h, w) with h and w "
                         f"divisible by 4; X_train has shape {arrays['X_train'].shape}.")
    real = source.get("real_outliers")
    unseen = [str(u) for u in np.atleast_1d(source.get("unseen", []))]
    bad = [u for u in unseen if u not in ood]
    if bad:
        raise ValueError(f"`unseen` names {bad} are not OOD sets ({sorted(ood)}).")
    return _finish_data(arrays["X_train"], np.asarray(source["y_train"]).astype(np.int64),
                        arrays["X_test"], np.asarray(source["y_test"]).astype(np.int64), ood,
                        None if real is None else np.asarray(real), unseen=unseen,
                        description=desc)


def _sample_shape(X):
    return (1, *X.shape[1:]) if X.ndim == 3 else tuple(X.shape[1:])


def _as_float_images(X):
    """uint8 (n, h, w) -> float32 tensor (n, 1, h, w) in [0, 1]."""
    t = torch.as_tensor(np.asarray(X))
    t = t.float() / 255.0 if t.dtype == torch.uint8 else t.float()
    return t.unsqueeze(1) if t.dim() == 3 else t
