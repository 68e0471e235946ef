"""Fashion-MNIST subsets and the evaluation OOD sets shared by the studies in benchmarks/.

``scores_study.py``, ``outlier_study.py`` and ``knn_bank.py`` draw their class-balanced
subsets and their fixed evaluation sets (MNIST, digits28, photo patches, Gaussian and
uniform noise, seeds 21-27) from here, so the studies score exactly the same images.
(The paper suite has its own sampler in ``benchmarks/paper/data.py``.)
"""

from __future__ import annotations

import os

import numpy as np
import torch

from aoe_detect import datasets as ds


def stratified(y, n, seed):
    """Sorted indices of ``n // n_classes`` random rows of every class of ``y``."""
    rng = np.random.RandomState(seed)
    per = n // len(np.unique(y))
    return np.sort(np.concatenate([rng.permutation(np.flatnonzero(y == c))[:per]
                                   for c in np.unique(y)]))


def to_unit(x):
    """uint8 images (n, h, w) -> float32 tensor (n, 1, h, w) in [0, 1]."""
    return torch.from_numpy(x.astype(np.float32) / 255.0)[:, None]


def evaluation_sets(data_root, n_train, n_ood=2000):
    """All ten Fashion-MNIST classes as ID and the fixed OOD test sets, as uint8 arrays:
    ``(X_train, y_train, X_val, X_test, y_test, ood)`` (``X_val``: 2000 further training
    images; ``ood``: name -> images, the non-noise sets first)."""
    Xf, yf = ds.load_fashion_mnist(root=data_root, split="train")
    Xt, yt = ds.load_fashion_mnist(root=data_root, split="test")
    idx = stratified(yf, n_train, 21)
    val = np.setdiff1d(stratified(yf, n_train + 2000, 22), idx)[:2000]
    te = stratified(yt, 5000, 23)
    mnist = ds.load_mnist(root=os.path.join(data_root, "mnist"), split="test")[0]
    rng = np.random.RandomState(24)
    ood = {"mnist": mnist[np.sort(rng.permutation(len(mnist))[:n_ood])],
           "digits28": ds.load_digits28(split="test")[0][:n_ood],
           "photo_patches": ds.load_photo_patches(n_ood, random_state=25),
           "gaussian_noise": ds.noise_images("gaussian", n_ood, random_state=26),
           "uniform_noise": ds.noise_images("uniform", n_ood, random_state=27)}
    return Xf[idx], yf[idx], Xf[val], Xt[te], yt[te], ood
