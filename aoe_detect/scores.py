"""OOD scores on a trained backbone: energy (the paper's), Mahalanobis, deep k-NN, and sums.

Every score follows the package's sign convention: **higher = more in-distribution**.

- ``"energy"``: ``-E(x) = T * logsumexp(f(x) / T)`` of the logits (Liu et al. 2020).
- ``"mahalanobis"``: ``-min_c (z - mu_c)^T Sigma^{-1} (z - mu_c)``, the negative squared
  Mahalanobis distance of the penultimate features ``z`` to the closest class mean, with one
  covariance ``Sigma`` shared by the classes (Lee et al. 2018, without input pre-processing).
  The means and the covariance are fitted on ID *training* features after fine-tuning; the
  covariance is the Ledoit-Wolf shrinkage estimate of scikit-learn (equal to the empirical
  one when there are many more rows than features, well-conditioned when there are not).
  Without class labels one Gaussian is fitted.
- ``"knn"``: ``-||z/||z|| - z'_(k)||``, minus the Euclidean distance of the L2-normalised
  features to the ``k``-th nearest normalised ID training feature (Sun et al. 2022), found
  with scikit-learn's :class:`~sklearn.neighbors.NearestNeighbors` (a differentiable
  brute-force twin in torch serves the white-box attacks only).
- ``"energy+mahalanobis"`` / ``"energy+knn"``: the sum of the two scores after each is
  standardised (``(s - mean) / std``) with statistics of *held-out* ID data, so neither
  dominates through its scale.

Features are the input of one layer of the backbone, taken with a forward pre-hook during
the same forward pass that gives the logits: by default the last :class:`torch.nn.Linear`
module (the classification head of every built-in backbone, and of most classifiers), or
the submodule named by ``feature_layer``.

Scorers are small ``nn.Module`` objects whose buffers hold the fitted statistics (so they
move with ``.to(device)`` and are saved as tensors); :class:`ScoreHead` wraps a backbone and
a scorer into a module whose single output column *is* the score, so the package's attacks
(which lower the energy ``-logsumexp`` of a model's outputs, and the energy of one column
``s`` is ``-s``) raise the chosen score without knowing which score it is.

References
----------
.. [1] W. Liu, X. Wang, J. Owens, Y. Li. "Energy-based Out-of-distribution Detection."
   NeurIPS 2020.
.. [2] K. Lee, K. Lee, H. Lee, J. Shin. "A Simple Unified Framework for Detecting
   Out-of-Distribution Samples and Adversarial Attacks." NeurIPS 2018.
.. [3] Y. Sun, Y. Ming, X. Zhu, Y. Li. "Out-of-Distribution Detection with Deep Nearest
   Neighbors." ICML 2022.
"""

from __future__ import annotations

import threading
import warnings

import numpy as np
import torch
from sklearn.base import BaseEstimator
from sklearn.covariance import LedoitWolf
from sklearn.neighbors import NearestNeighbors
from torch import nn

from ._compat import IntInterval, StrOptions
from .losses import energy

__all__ = ["SCORES", "FEATURE_SCORES", "feature_layer", "FeatureTap", "EnergyScore",
           "MahalanobisScore", "KNNScore", "SumScore", "ScoreHead", "LogitsAndFeatures", "build_scorer",
           "KNN_AUTO_K_MAX", "KNN_AUTO_K_FRACTION", "OODScore"]

#: Names accepted by ``AOEDetector(ood_score=...)``.
SCORES = ("energy", "mahalanobis", "knn", "energy+mahalanobis", "energy+knn")
#: Scores that need the penultimate features.
FEATURE_SCORES = ("mahalanobis", "knn", "energy+mahalanobis", "energy+knn")
#: ``ood_score__k="auto"``: 1% of the ID training features (Sun et al. found ``k`` proportional to
#: the number of training samples works; 1% gives their k=50 ... 500 range on CIFAR-scale
#: data), at least 1 and at most this many.
KNN_AUTO_K_MAX = 50
KNN_AUTO_K_FRACTION = 0.01


def feature_layer(module, name=None):
    """The submodule whose *input* is the feature vector: ``module.get_submodule(name)``, or
    the last :class:`torch.nn.Linear` in ``module.modules()`` order when ``name`` is None.

    Raises
    ------
    ValueError
        If ``name`` is not a submodule, or ``name`` is None and the module has no Linear layer.
    """
    if name is not None:
        try:
            return module.get_submodule(name)
        except AttributeError:
            names = [n for n, _ in module.named_modules() if n][:12]
            raise ValueError(f"`ood_score__feature_layer`={name!r} is not a submodule of the backbone; "
                             f"some of its submodules: {names}.") from None
    linear = [m for m in module.modules() if isinstance(m, nn.Linear)]
    if not linear:
        raise ValueError("Feature scores need the backbone's penultimate features, taken as the "
                         "input of its last nn.Linear layer, but the backbone has none: pass "
                         "`feature_layer` the name of the layer whose input are the features.")
    return linear[-1]


class FeatureTap:
    """Context manager capturing the (flattened, first positional) input of ``layer`` at
    every forward pass of the model it belongs to, in the thread that entered it (other
    threads may score with the same module at the same time); the hook is removed on exit."""

    def __init__(self, layer):
        self.layer, self.features, self._handle = layer, None, None
        self._thread = threading.get_ident()

    def _hook(self, _module, args):
        # only this thread's forward passes: scoring from several threads shares the module
        if threading.get_ident() == self._thread:
            self.features = args[0].flatten(1)

    def __enter__(self):
        self._thread = threading.get_ident()
        self._handle = self.layer.register_forward_pre_hook(self._hook)
        return self

    def __exit__(self, *exc):
        self._handle.remove()
        return False


def _real(x):
    """``x`` as float32, or as is when float64 (rows recomputed in double precision)."""
    return x if x.dtype == torch.float64 else x.float()


def _as_tensor(a, dtype=torch.float32):
    return torch.as_tensor(np.asarray(a), dtype=dtype)


class EnergyScore(nn.Module):
    """``-E(x) = T * logsumexp(f(x) / T)``; needs no features and no fitting."""

    name = "energy"
    needs_features = False

    def __init__(self, temperature=1.0):
        super().__init__()
        self.temperature = float(temperature)

    def fit(self, logits, features, labels, generator=None):
        return self

    def forward(self, logits, features=None):
        return -energy(_real(logits), self.temperature)


class MahalanobisScore(nn.Module):
    """Negative squared Mahalanobis distance to the closest class mean (shared covariance).

    ``fit(features, labels)``: ``mu_c`` = class means, ``Sigma`` = Ledoit-Wolf estimate of
    the covariance of the class-centred features (scikit-learn), ``P = Sigma^{-1}``.
    ``forward``: ``-min_c (z - mu_c)^T P (z - mu_c)``.
    """

    name = "mahalanobis"
    needs_features = True

    def __init__(self, n_classes=1, n_features=1):
        super().__init__()
        self.register_buffer("means", torch.zeros(n_classes, n_features))
        self.register_buffer("precision", torch.eye(n_features))

    def fit(self, logits, features, labels, generator=None):
        z = features.double().numpy()
        lab = np.zeros(len(z), dtype=np.int64) if labels is None else np.asarray(labels)
        classes = np.unique(lab)
        means = np.stack([z[lab == c].mean(0) for c in classes])
        centred = z - means[np.searchsorted(classes, lab)]
        distinct = len(np.unique(z, axis=0))
        spread = float(np.sum(centred ** 2)) / max(len(z), 1)
        scale = float(np.mean(np.sum(z ** 2, 1))) if len(z) else 0.0
        if distinct < 2 or spread <= 1e-12 * max(scale, 1e-30):
            raise ValueError(
                f"ood_score='mahalanobis' cannot fit a covariance: the {len(z)} ID training "
                f"feature rows have {distinct} distinct value(s) and (near-)zero spread around "
                "their class means, so every input would get the same score. Give varied "
                "in-distribution data (duplicated rows?), or use ood_score='energy'.")
        cov = LedoitWolf(assume_centered=True).fit(centred)
        self.means = _as_tensor(means)
        self.precision = _as_tensor(cov.precision_)
        return self

    def forward(self, logits, features):
        z = _real(features)
        d = z[:, None, :] - self.means.to(z.dtype)[None, :, :]        # (n, C, D)
        sq = torch.einsum("ncd,de,nce->nc", d, self.precision.to(z.dtype), d)  # (n, C)
        return -sq.min(1).values


class KNNScore(nn.Module):
    """Minus the distance of the L2-normalised features to the ``k``-th nearest normalised
    ID training feature (at most ``max_samples`` of them, drawn at random)."""

    name = "knn"
    needs_features = True

    def __init__(self, k="auto", max_samples=4000, n_bank=1, n_features=1):
        super().__init__()
        self.k, self.max_samples = k, max_samples
        self.register_buffer("bank", torch.zeros(n_bank, n_features))
        self._index = None

    @staticmethod
    def _normalise(z):
        return z / z.norm(dim=1, keepdim=True).clamp_min(1e-12)

    def resolved_k(self):
        n = len(self.bank)
        if self.k == "auto":
            k = int(round(KNN_AUTO_K_FRACTION * n))
            return max(1, min(KNN_AUTO_K_MAX, k))
        return int(min(self.k, n))

    def fit(self, logits, features, labels, generator=None):
        z = features.float()
        if self.max_samples is not None and len(z) > self.max_samples:
            g = generator if generator is not None else torch.Generator().manual_seed(0)
            z = z[torch.randperm(len(z), generator=g)[: int(self.max_samples)]]
        self.bank = self._normalise(z)
        self._index = None
        self.check_k()
        return self

    def check_k(self):
        """Warn when an integer ``k`` exceeds the bank (the ``len(bank)``-th neighbour is
        used instead, and the score is then the distance to the farthest bank row)."""
        if not isinstance(self.k, str) and int(self.k) > len(self.bank):
            warnings.warn(f"ood_score__k={int(self.k)} is larger than the {len(self.bank)} ID training "
                          f"features in the k-NN bank; k={len(self.bank)} is used (the distance "
                          "to the farthest one). Lower `ood_score__k` or give more training rows.",
                          UserWarning, stacklevel=2)

    def index(self):
        """scikit-learn's NearestNeighbors over the bank (built on first use)."""
        if self._index is None:
            self._index = NearestNeighbors(n_neighbors=self.resolved_k()).fit(
                self.bank.detach().cpu().numpy())
        return self._index

    def forward(self, logits, features):
        z = self._normalise(_real(features))
        if (torch.is_grad_enabled() and z.requires_grad) or torch.jit.is_tracing():
            # differentiable brute force, for white-box attacks on this score; a trace (the
            # ONNX export) cannot call scikit-learn, and takes float64 distances as it does
            zd = z.double() if torch.jit.is_tracing() else z
            dist = torch.cdist(zd, self.bank.to(zd.dtype))
            return -dist.topk(self.resolved_k(), dim=1, largest=False).values[:, -1].to(z.dtype)
        ok = torch.isfinite(z).all(1) & torch.isfinite(features.norm(dim=1))
        if not bool(ok.all()):  # overflowed features: NaN here, recomputed in float64 by the
            out = torch.full((len(z),), float("nan"), dtype=z.dtype, device=z.device)  # caller
            if bool(ok.any()):
                out[ok] = self.forward(logits[ok] if logits is not None else None, features[ok])
            return out
        dist, _ = self.index().kneighbors(z.detach().cpu().numpy(), return_distance=True)
        return -torch.as_tensor(dist[:, -1], dtype=z.dtype, device=z.device)

    def __getstate__(self):  # the index is rebuilt from the bank, never pickled
        state = self.__dict__.copy()
        state["_index"] = None
        return state


class SumScore(nn.Module):
    """Sum of scores, each standardised with statistics of held-out ID data:
    ``sum_i (s_i(x) - mean_i) / std_i``."""

    needs_features = True

    def __init__(self, parts):
        super().__init__()
        self.parts = nn.ModuleList(parts)
        self.name = "+".join(p.name for p in parts)
        self.register_buffer("mean", torch.zeros(len(parts)))
        self.register_buffer("std", torch.ones(len(parts)))

    def fit(self, logits, features, labels, generator=None):
        for p in self.parts:
            p.fit(logits, features, labels, generator)
        return self

    def components(self, logits, features):
        return torch.stack([p(logits, features) for p in self.parts], 1)

    def fit_normalisation(self, components):
        """Set ``mean``/``std`` from the component scores (n, n_parts) of held-out ID data."""
        c = components.double()
        self.mean = c.mean(0).float()
        std = c.std(0) if len(c) > 1 else torch.ones(c.shape[1], dtype=torch.float64)
        self.std = torch.where(torch.isfinite(std) & (std > 0), std,
                               torch.ones_like(std)).float()
        return self

    def forward(self, logits, features):
        c = self.components(logits, features)
        return ((c - self.mean.to(c.dtype)) / self.std.to(c.dtype)).sum(1)


def build_scorer(name, *, temperature=1.0, n_classes=1, n_features=1, knn_k="auto",
                 knn_max_samples=4000, n_bank=1):
    """An unfitted scorer for ``name`` (one of :data:`SCORES`). The sizes only shape the
    buffers (for loading saved statistics into them)."""
    def one(part):
        if part == "energy":
            return EnergyScore(temperature)
        if part == "mahalanobis":
            return MahalanobisScore(n_classes, n_features)
        if part == "knn":
            return KNNScore(knn_k, knn_max_samples, n_bank, n_features)
        raise ValueError(f"Unknown score {name!r}; choose one of {list(SCORES)}.")
    if name not in SCORES:
        raise ValueError(f"Unknown score {name!r}; choose one of {list(SCORES)}.")
    parts = name.split("+")
    return one(parts[0]) if len(parts) == 1 else SumScore([one(p) for p in parts])


class LogitsAndFeatures(nn.Module):
    """``backbone`` as a module returning ``cat([logits, features], 1)`` (for batched
    extraction; split with ``out[:, :n_logits]``)."""

    def __init__(self, backbone, layer_name=None):
        super().__init__()
        self.backbone = backbone
        self.training = backbone.training  # mirror it: callers that toggle modes restore both
        object.__setattr__(self, "_layer", feature_layer(backbone, layer_name))

    def forward(self, x):
        with FeatureTap(self._layer) as tap:
            logits = self.backbone(x)
        if tap.features is None:
            raise ValueError("The feature layer was not called in the backbone's forward pass; "
                             "pass `feature_layer` the name of a layer that is.")
        object.__setattr__(self, "_layer_width", int(tap.features.shape[1]))
        return torch.cat([_real(logits), _real(tap.features)], 1)


class ScoreHead(nn.Module):
    """``backbone`` and ``scorer`` as one module whose output ``(n, 1)`` is the score.

    The energy of a one-column output ``s`` is ``-logsumexp(s) = -s``, so the package's
    attacks, which lower the energy of a model's outputs, raise this score: with
    ``ScoreHead`` they attack whichever score the detector uses (white-box, through the
    feature statistics). Scoring and attacking are the only uses; it is never trained.
    """

    def __init__(self, backbone, scorer, layer_name=None, components=False):
        super().__init__()
        self.backbone, self.scorer, self.components = backbone, scorer, components
        self.training = scorer.training = backbone.training  # mirror the backbone's mode
        # a plain attribute, not a registered submodule (it already is one of the backbone)
        object.__setattr__(self, "_layer", feature_layer(backbone, layer_name)
                           if getattr(scorer, "needs_features", False) else None)

    def forward(self, x):
        if not getattr(self.scorer, "needs_features", False):
            return self.scorer(self.backbone(x), None)[:, None]
        with FeatureTap(self._layer) as tap:
            logits = self.backbone(x)
        if self.components:  # the parts of a SumScore, before standardisation: (n, n_parts)
            return self.scorer.components(_real(logits), _real(tap.features))
        return self.scorer(_real(logits), _real(tap.features))[:, None]


class OODScore(BaseEstimator):
    """The score of :class:`~aoe_detect.AOEDetector` with its settings
    (``ood_score=OODScore(...)``; a name is ``OODScore(name)``).

    Each setting is reachable as ``ood_score__<name>``, on a name too
    (``set_params(ood_score__k=10)``).

    Parameters
    ----------
    name : {"energy", "mahalanobis", "knn", "energy+mahalanobis", "energy+knn"}, default="energy+mahalanobis"
        The score (module docstring): ``"energy"``, the paper's ``-E(x)``; ``"mahalanobis"``
        (Lee et al. 2018); ``"knn"`` (Sun et al. 2022); a sum ``"a+b"`` adds the two scores
        after standardising each on the held-out ID rows.
    k : int or "auto", default="auto"
        ``k`` of the k-NN score; ``"auto"``: 1% of the stored training features, between 1
        and :data:`KNN_AUTO_K_MAX` (Sun et al. use 50 for CIFAR-10's 50,000 images). A change
        after ``fit`` applies at the next scoring call.
    max_samples : int or None, default=4000
        At most this many training features (a random subset) are kept for the k-NN search,
        so memory and scoring time do not grow with the training set; ``None`` keeps all
        (``benchmarks/results/knn_bank.md``: the AUROC is flat from 1,000 to 12,000).
    feature_layer : str or None, default=None
        Name of the backbone submodule whose *input* are the features of the feature scores
        (``dict(module.named_modules())`` keys, e.g. ``"fc"``); ``None``: the last
        ``nn.Linear`` layer (the head of every built-in backbone).

    Examples
    --------
    >>> from aoe_detect import AOEDetector
    >>> AOEDetector(ood_score="energy+knn").set_params(ood_score__k=10).ood_score
    OODScore(k=10, name='energy+knn')
    """

    _parameter_constraints = {
        "name": [StrOptions(set(SCORES))],
        "k": [IntInterval(1, None, closed="left"), StrOptions({"auto"})],
        "max_samples": [IntInterval(1, None, closed="left"), None],
        "feature_layer": [str, None],
    }

    def __init__(self, name="energy+mahalanobis", k="auto", max_samples=4000, feature_layer=None):
        self.name = name
        self.k = k
        self.max_samples = max_samples
        self.feature_layer = feature_layer

