"""Registry of built-in backbones: ``"mlp"``, ``"small_cnn"``, ``"wrn40_2"``, ``"resnet18"``.

A backbone maps inputs in the user's units to logits of shape ``(n, n_classes)``. Input
normalisation lives inside the backbone (a :class:`Standardize` layer whose statistics come
from the ID training data), so the attack, the clipping and the user all speak the same
units.

Register your own with :func:`register_backbone`; a factory receives
``(n_classes, input_shape)`` and keyword arguments ``mean`` and ``std`` (tensors
broadcastable to one sample) and returns an ``nn.Module``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["register_backbone", "list_backbones", "build_backbone", "BACKBONES", "Standardize",
           "safe_scale", "MLP", "SmallCNN", "WideResNet", "resnet18_small"]

#: name -> factory ``(n_classes, input_shape, *, mean, std) -> nn.Module``
BACKBONES: dict = {}


def register_backbone(name, overwrite=False):
    """Decorator registering a backbone factory under ``name``.

    The name is usable as ``AOEDetector(backbone=name)`` as soon as it is registered
    (parameter validation reads :data:`BACKBONES` at fit time).

    Parameters
    ----------
    name : str
    overwrite : bool, default=False
        Replace a factory already registered under ``name``. Without it, a name that is
        taken (a built-in or an earlier registration) is a ``ValueError``.

    Examples
    --------
    >>> from torch import nn
    >>> from aoe_detect.backbones import list_backbones, register_backbone
    >>> @register_backbone("linear_example")
    ... def linear(n_classes, input_shape, *, mean=None, std=None):
    ...     return nn.Linear(input_shape[0], n_classes)
    >>> "linear_example" in list_backbones()
    True
    >>> _ = BACKBONES.pop("linear_example")
    """
    if not isinstance(name, str):
        raise TypeError(f"`name` must be a str, got {type(name).__name__} {name!r}.")
    if name == "auto":
        raise ValueError("`name`='auto' is reserved (backbone='auto' picks 'mlp' or 'small_cnn').")
    if name in BACKBONES and not overwrite:
        raise ValueError(f"A backbone named {name!r} is already registered; pass overwrite=True "
                         "to replace it, or choose another name.")

    def deco(fn):
        BACKBONES[name] = fn
        return fn
    return deco


def list_backbones():
    """Sorted names accepted by ``AOEDetector(backbone=...)`` besides ``"auto"``.

    >>> from aoe_detect.backbones import list_backbones
    >>> list_backbones()
    ['mlp', 'resnet18', 'small_cnn', 'wrn40_2']
    """
    return sorted(BACKBONES)


def build_backbone(name, n_classes, input_shape, *, mean=None, std=None):
    """Build the registered backbone ``name`` for ``n_classes`` outputs.

    Parameters
    ----------
    name : str
    n_classes : int
    input_shape : tuple
        Shape of one sample: ``(d,)`` tabular, ``(c, h, w)`` images.
    mean, std : torch.Tensor, optional
        Normalisation statistics broadcastable to one sample.
    """
    if name not in BACKBONES:
        raise ValueError(f"Unknown `backbone` {name!r}; valid names are {sorted(BACKBONES)}, "
                         "an nn.Module, or a factory (n_classes, input_shape) -> nn.Module.")
    return BACKBONES[name](n_classes, tuple(input_shape), mean=mean, std=std)


#: A feature whose training standard deviation is at most this fraction of ``max(1, |mean|)``
#: is treated as constant and gets scale 1 (as scikit-learn's ``StandardScaler`` does).
CONSTANT_STD_RTOL = 1e-6


def safe_scale(mean, std):
    """``std`` with constant features (``std <= 1e-6 * max(1, |mean|)``) set to 1.

    Dividing by a floored tiny ``std`` would turn any test value that differs from a
    feature's constant training value into an enormous standardised input (and score);
    scale 1 leaves such a feature merely centred, like ``StandardScaler``.

    Examples
    --------
    >>> safe_scale(torch.tensor([0.0, 5.0]), torch.tensor([0.0, 2.0])).tolist()
    [1.0, 2.0]
    """
    mean = torch.as_tensor(mean, dtype=torch.float32)
    std = torch.as_tensor(std, dtype=torch.float32)
    tol = CONSTANT_STD_RTOL * mean.abs().clamp_min(1.0)
    return torch.where(std > tol, std, torch.ones_like(std))


class Standardize(nn.Module):
    """``(x - mean) / std`` with fixed buffers (saved in the state dict).

    Features that are constant in the statistics (``std <= 1e-6 * max(1, |mean|)``) get
    scale 1 instead of a tiny ``std`` (see :func:`safe_scale`), so inputs that differ from a
    feature's constant training value cannot explode.
    """

    def __init__(self, mean, std):
        super().__init__()
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32).clone())
        self.register_buffer("std", safe_scale(mean, std).clone())

    def forward(self, x):
        return (x - self.mean) / self.std


def _standardize(shape, mean, std, per_channel):
    if mean is None:
        return nn.Identity()
    if per_channel:
        mean, std = mean.reshape(-1, 1, 1), std.reshape(-1, 1, 1)
    return Standardize(mean, std)


class MLP(nn.Module):
    """Fully connected net: flatten -> (Linear -> ReLU) x len(hidden) -> Linear."""

    def __init__(self, in_features, n_classes, hidden=(128, 128), norm=None):
        super().__init__()
        self.norm = norm if norm is not None else nn.Identity()
        layers, d = [], in_features
        for h in hidden:
            layers += [nn.Linear(d, h), nn.ReLU()]
            d = h
        layers.append(nn.Linear(d, n_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(self.norm(x).flatten(1))


class SmallCNN(nn.Module):
    """Small CNN for 28x28 / 32x32 images: 3 conv blocks (32-64-128) + global pool + linear."""

    def __init__(self, in_channels, n_classes, width=32, norm=None):
        super().__init__()
        self.norm = norm if norm is not None else nn.Identity()
        w = width

        def block(i, o):
            return nn.Sequential(nn.Conv2d(i, o, 3, padding=1, bias=False), nn.BatchNorm2d(o),
                                 nn.ReLU(inplace=True))
        self.features = nn.Sequential(
            block(in_channels, w), nn.MaxPool2d(2),
            block(w, 2 * w), nn.MaxPool2d(2),
            block(2 * w, 4 * w), nn.AdaptiveAvgPool2d(1),
        )
        self.fc = nn.Linear(4 * w, n_classes)

    def forward(self, x):
        return self.fc(self.features(self.norm(x)).flatten(1))


class _WideBasic(nn.Module):
    def __init__(self, i, o, stride, drop):
        super().__init__()
        self.bn1, self.conv1 = nn.BatchNorm2d(i), nn.Conv2d(i, o, 3, stride, 1, bias=False)
        self.bn2, self.conv2 = nn.BatchNorm2d(o), nn.Conv2d(o, o, 3, 1, 1, bias=False)
        self.drop = drop
        self.short = None if (i == o and stride == 1) else nn.Conv2d(i, o, 1, stride, bias=False)

    def forward(self, x):
        o = F.relu(self.bn1(x))
        y = self.conv1(o)
        y = F.relu(self.bn2(y))
        if self.drop:
            y = F.dropout(y, self.drop, self.training)
        y = self.conv2(y)
        return y + (x if self.short is None else self.short(o))


class WideResNet(nn.Module):
    """WideResNet (Zagoruyko & Komodakis 2016); ``depth=40, widen=2`` is the OOD literature's
    WRN-40-2 (Hendrycks et al. 2019; Liu et al. 2020)."""

    def __init__(self, in_channels, n_classes, depth=40, widen=2, drop=0.3, norm=None):
        super().__init__()
        assert (depth - 4) % 6 == 0, "depth must be 6n+4"
        n = (depth - 4) // 6
        widths = [16, 16 * widen, 32 * widen, 64 * widen]
        self.norm = norm if norm is not None else nn.Identity()
        self.conv = nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False)
        blocks, i = [], widths[0]
        for g, stride in zip(range(3), (1, 2, 2)):
            for k in range(n):
                blocks.append(_WideBasic(i, widths[g + 1], stride if k == 0 else 1, drop))
                i = widths[g + 1]
        self.blocks = nn.Sequential(*blocks)
        self.bn = nn.BatchNorm2d(i)
        self.fc = nn.Linear(i, n_classes)

    def forward(self, x):
        x = self.blocks(self.conv(self.norm(x)))
        x = F.adaptive_avg_pool2d(F.relu(self.bn(x)), 1).flatten(1)
        return self.fc(x)


def resnet18_small(in_channels, n_classes, norm=None):
    """torchvision's ResNet-18 adapted to small images (3x3 stem, stride 1, no max-pool)."""
    from torchvision.models import resnet18

    net = resnet18(weights=None, num_classes=n_classes)
    net.conv1 = nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False)
    net.maxpool = nn.Identity()
    return nn.Sequential(norm if norm is not None else nn.Identity(), net)


def _channels(input_shape, name):
    if len(input_shape) != 3:
        raise ValueError(f"backbone {name!r} needs image inputs (n, c, h, w) or (n, h, w); "
                         f"got samples of shape {input_shape}. Use backbone='mlp' for tabular data.")
    return input_shape[0]


@register_backbone("mlp")
def _mlp(n_classes, input_shape, *, mean=None, std=None):
    d = 1
    for s in input_shape:
        d *= s
    return MLP(d, n_classes, norm=_standardize(input_shape, mean, std, False))


@register_backbone("small_cnn")
def _small_cnn(n_classes, input_shape, *, mean=None, std=None):
    return SmallCNN(_channels(input_shape, "small_cnn"), n_classes,
                    norm=_standardize(input_shape, mean, std, True))


@register_backbone("wrn40_2")
def _wrn(n_classes, input_shape, *, mean=None, std=None):
    return WideResNet(_channels(input_shape, "wrn40_2"), n_classes,
                      norm=_standardize(input_shape, mean, std, True))


@register_backbone("resnet18")
def _resnet18(n_classes, input_shape, *, mean=None, std=None):
    return resnet18_small(_channels(input_shape, "resnet18"), n_classes,
                          norm=_standardize(input_shape, mean, std, True))
