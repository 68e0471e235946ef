"""The steps of ``AOEDetector.fit`` that take more than a line, as functions of plain values.

Each returns what it resolved (a module and its classes, stage lengths, margins, a loss);
the estimator, the only caller, sets its fitted attributes from the results. The
automatic defaults (``AUTO_*``) are documented with the parameters of
:class:`~aoe_detect.AOEDetector` and re-exported by :mod:`aoe_detect.detector`.
"""

from __future__ import annotations

import copy
import math
import sys
import warnings

import numpy as np
import torch
from sklearn.utils import check_random_state
from tqdm.auto import tqdm

from . import distributed as _distributed
from ._torch_utils import resolve_device, steps_per_epoch
from ._training import batched_outputs
from .backbones import build_backbone
from .exceptions import InvertedScoreWarning, NonFiniteLossError
from .losses import CrossEntropyOnly, EnergyMarginLoss, SoftmaxOELoss
from .scores import feature_layer as find_feature_layer

__all__ = ["check_diverged_refit",
           "AUTO_MARGIN_GAP", "AUTO_PRETRAIN_EPOCHS", "AUTO_EPOCHS", "AUTO_MIN_STEPS",
           "seed_from", "seed_and_device", "build_module", "stage_lengths", "auto_margins", "outlier_loss", "resolve_lam",
           "fit_source",
           "warn_if_inverted"]

#: Gap ``m_out - m_in`` (in nats) of the automatic energy margins. The energy is a negative
#: log-density up to a constant, so a gap of 2 asks training outliers to be e^2 (about 7x)
#: less likely than the median ID input, whatever the backbone's logit scale. Re-checked on
#: design splits: tabular ``benchmarks/margin_gap.py`` (flat with the default score) and
#: images ``benchmarks/outlier_study.py --stage m`` (chose 10 on the design split, which did
#: not confirm on the evaluation sets: AOE lost MNIST AUROC and 4 points of accuracy), so it
#: stays 2 (docs/user_guide.md, "Margins"). Liu et al.'s fixed CIFAR margins (-25/-7) assume
#: CIFAR-scale logits.
AUTO_MARGIN_GAP = 2.0
#: Pretraining epochs used by ``pretrain_epochs="auto"`` for a fresh (untrained) backbone:
#: the fewest of 10, 15 and 20 whose accuracy on a design split of the Fashion-MNIST
#: training set reached 91.5% with the default small CNN (90.75%, 91.43%, 91.61%;
#: ``benchmarks/recipe_accuracy.py --design``, docs/selection_protocol.md).
AUTO_PRETRAIN_EPOCHS = 20
#: Fine-tuning epochs used by ``epochs="auto"`` (Liu et al. fine-tune for 10).
AUTO_EPOCHS = 10
#: Floor of the automatic budgets in optimizer steps per stage: ``"auto"`` runs
#: ``max(10, ceil(AUTO_MIN_STEPS / steps_per_epoch))`` epochs, so small data sets (120 rows
#: of wine are one batch of 128, i.e. one step per epoch) still train to convergence, while
#: any data set with at least ``AUTO_MIN_STEPS / 10`` batches per epoch (6 400 rows at the
#: default batch size) keeps exactly 10 epochs. Measured in ``benchmarks/tabular_outliers.py``.
AUTO_MIN_STEPS = 500


def seed_from(random_state):
    """A 31-bit seed; ``None`` draws fresh OS entropy without touching numpy's global RNG."""
    if random_state is None:
        return int(np.random.SeedSequence().generate_state(1)[0] % (2**31 - 1))
    return int(check_random_state(random_state).randint(0, 2**31 - 1))


def _check_logits(module, X_train):
    """The number of logits of ``module`` on two training rows (2-D output required)."""
    dev = next(iter(module.parameters()), torch.empty(0)).device
    was = module.training
    module.eval()
    try:
        with torch.inference_mode():
            out = module(X_train[:2].to(dev))
    except Exception as exc:
        raise ValueError(f"The backbone failed on inputs of shape {tuple(X_train[:2].shape)}: "
                         f"{type(exc).__name__}: {exc}") from exc
    finally:
        module.train(was)
    if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[0] != 2:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"The backbone must return 2-D logits (n_samples, n_classes); got "
                         f"{shape} for 2 inputs.")
    return int(out.shape[1])


def _input_stats(X):
    """Per-feature (tabular) or per-channel (images) mean and std of a float32 tensor."""
    if X.dim() == 2:
        return X.mean(0), X.std(0)
    flat = X.transpose(0, 1).reshape(X.shape[1], -1)
    return flat.mean(1), flat.std(1)


def _fresh_module(backbone, X_train, classes):
    """A new module from a registry name (``"auto"``: mlp / small_cnn) or a factory."""
    name = ("mlp" if len(X_train.shape) == 2 else "small_cnn") if backbone == "auto" else backbone
    n_classes = 1 if classes is None else len(classes)
    if isinstance(name, str):
        mean, std = _input_stats(X_train)
        return build_backbone(name, n_classes, X_train.shape[1:], mean=mean, std=std)
    module = name(n_classes, tuple(X_train.shape[1:]))
    if not isinstance(module, torch.nn.Module):
        raise TypeError(f"The `backbone` factory returned {type(module).__name__}, "
                        "not a torch.nn.Module.")
    return module


def _class_indices(lab_tr, classes, k, fresh, resumed):
    """Training targets (class indices) of labelled rows."""
    if fresh:
        return np.searchsorted(classes, lab_tr)
    if resumed and classes is not None:
        unknown = np.setdiff1d(lab_tr, classes)
        if unknown.size:
            raise ValueError(f"`y` has labels {unknown[:5].tolist()} that the detector being "
                             f"warm-started does not know; its classes_ are "
                             f"{classes.tolist()}.")
        return np.searchsorted(classes, lab_tr)
    if lab_tr.dtype.kind not in "iub":
        raise ValueError(f"`y` holds {lab_tr.dtype} labels, but a pretrained module's "
                         f"outputs are class indices: pass integer labels in [0, {k}) "
                         "that follow the module's output order.")
    if lab_tr.max() >= k:
        raise ValueError(f"`y` has label {int(lab_tr.max())} but the backbone outputs only "
                         f"{k} logits; labels must be class indices in [0, {k}).")
    return lab_tr


def check_diverged_refit(refit, stopped):
    """``stopped`` (a training stage stopped on a non-finite loss) for a first fit; for a
    refit of a fitted detector such a stop is a failed call: raise
    :class:`~aoe_detect.exceptions.NonFiniteLossError` (``fit`` then restores the previous
    detector). A first fit keeps the last finite weights, with a warning."""
    if stopped and refit:
        raise NonFiniteLossError(
            "This fit of an already fitted detector stopped on a non-finite loss or weights "
            "(see the NonFiniteLossWarning), so the previously fitted detector is kept "
            "unchanged. Lower `lr`, or check the data and the outlier source (NaN/inf in "
            "their batches).")
    return stopped


def fit_source(source, X_train, sample_shape, generator):
    """The outlier source of training fitted on ``X_train`` (when it has ``fit``) and probed
    once: ``sample(2, generator)`` must return samples of the ID shape. None stays None."""
    if source is None:
        return None
    if hasattr(source, "fit"):
        source.fit(X_train, generator)
    probe = source.sample(2, generator)
    if not isinstance(probe, torch.Tensor) or probe[0].numel() != X_train[0].numel():
        raise ValueError(f"The outlier source returned {getattr(probe, 'shape', type(probe))} "
                         f"for 2 samples; expected samples of shape {tuple(sample_shape)}.")
    return source


def seed_and_device(random_state, device, distributed, verbose=0):
    """``(seed, device, distributed_)`` of a fit: the seed from ``random_state``, the
    resolved device (with ``verbose``, one line on stderr names what "auto" chose) and,
    data-parallel, the same seed on every rank and each rank on its own GPU."""
    seed = seed_from(random_state)
    dev = resolve_device(device)
    if verbose and device == "auto" and _distributed.is_main_process():
        tqdm.write(f"AOEDetector: device='auto' resolved to '{dev}'", file=sys.stderr)
    ddp = _distributed.resolve(distributed, device)
    if ddp:
        seed, dev = _distributed.broadcast_seed(seed), _distributed.rank_device(dev)
    return seed, dev, ddp


def build_module(backbone, inputs, batch_size, num_workers=0, *, resumed=None, classes=None,
                 device=None, feature_layer=False):
    """The module to train, its classes and the training targets.

    ``resumed``: the fitted module of a warm start (a copy is trained, so a failed fit
    leaves it untouched); else ``backbone`` is a module (deep-copied, treated as
    pretrained: its logits are the classes ``0..k-1``) or a name / factory (built fresh;
    the classes are the sorted labels). ``classes`` are the current ``classes_`` (None when
    absent); a fresh label-free module keeps them as they are. A pretrained module's own
    predictions on the training rows (in batches of ``batch_size``, ``num_workers`` loader
    workers for a Dataset) are the targets of a label-free fit.

    Returns ``(module, classes, targets)``: ``classes`` None means no ``classes_``;
    ``targets`` are class indices of the training rows (of every training row of a
    Dataset) or None. The module is moved to ``device``; ``feature_layer`` (not False) is
    looked up in it before training (see :func:`aoe_detect.scores.feature_layer`).
    """
    X_train, lab_tr = inputs.X_train, inputs.train_labels
    fresh = False
    if resumed is not None:  # train a copy: a failed fit leaves the fitted module_ untouched
        module = copy.deepcopy(resumed)
    elif isinstance(backbone, torch.nn.Module):
        module = copy.deepcopy(backbone)
    else:
        if lab_tr is not None:
            classes = np.unique(lab_tr)
        module, fresh = _fresh_module(backbone, X_train, classes if lab_tr is not None else None), True
    k = _check_logits(module, X_train)
    if not fresh and resumed is None:
        # a user module: its logits are the classes, labels are class indices
        classes = np.arange(k) if (k > 1 or lab_tr is not None) else None
    if lab_tr is not None:
        targets = _class_indices(lab_tr, classes, k, fresh, resumed is not None)
    elif not fresh and k > 1:
        # pretrained module without labels: its own predictions keep its classes
        dev = next(iter(module.parameters()), torch.empty(0)).device
        targets = batched_outputs(module, inputs.train_data.batches(batch_size, num_workers),
                                  lambda t: t.argmax(1), batch_size=batch_size, device=dev).numpy()
    else:
        targets = None
    module = module.to(device)
    if feature_layer is not False and any(True for _ in module.parameters()):
        find_feature_layer(module, feature_layer)  # fail before training, not after
    return module, classes, targets


def stage_lengths(pretrain_epochs, epochs, *, n_train, batch_size, world, built, labelled,
                  history=None):
    """``(pretrain epochs, finetune epochs)`` to run.

    ``"auto"``: :data:`AUTO_PRETRAIN_EPOCHS` (fresh ``built`` backbone with labels, else 0)
    and :data:`AUTO_EPOCHS`, each at least ``ceil(AUTO_MIN_STEPS / steps_per_epoch)``.
    Pretraining needs labels. ``history`` (a warm start): the totals minus the epochs
    already done, like scikit-learn's ``warm_start``.
    """
    floor = math.ceil(AUTO_MIN_STEPS / steps_per_epoch(n_train, batch_size, world))
    pre = pretrain_epochs
    if pre == "auto":
        pre = max(AUTO_PRETRAIN_EPOCHS, floor) if (built and labelled) else 0
    if pre and not labelled:
        warnings.warn("pretrain_epochs > 0 ignored: pretraining needs class labels.", UserWarning,
                      stacklevel=3)
        pre = 0
    n_ft = max(AUTO_EPOCHS, floor) if epochs == "auto" else epochs
    if history is not None:  # totals, like sklearn's warm_start: run only the epochs not done yet
        pre = max(0, pre - sum(r["stage"] == "pretrain" for r in history))
        n_ft = max(0, n_ft - sum(r["stage"] == "finetune" for r in history))
        if pre == 0 and n_ft == 0:
            warnings.warn("warm_start=True but all `pretrain_epochs` and `epochs` are already "
                          "done (see history_); only the threshold offset_ was refit. Increase "
                          "`epochs` to train more.", UserWarning, stacklevel=3)
    return pre, n_ft


def auto_margins(m_in, m_out, id_energies=None, kept=None):
    """``(m_in_, m_out_)``: ``"auto"`` ``m_in`` is the median of ``id_energies()`` (or the
    ``kept`` value of a warm start that continues outlier exposure), ``"auto"`` ``m_out``
    is ``m_in_ + AUTO_MARGIN_GAP`` (relatively more for huge energies)."""
    if m_in == "auto" or m_out == "auto":
        med = kept if kept is not None else float(np.median(id_energies()))
    m_in_ = med if m_in == "auto" else float(m_in)
    # the relative term keeps m_out_ > m_in_ when a diverged model has |energies| ~ 1e20
    gap = max(AUTO_MARGIN_GAP, 1e-6 * abs(m_in_))
    m_out_ = m_in_ + gap if m_out == "auto" else float(m_out)
    if m_out_ <= m_in_:
        raise ValueError(f"`loss__m_out` ({m_out_}) must be greater than `loss__m_in` ({m_in_}).")
    return m_in_, m_out_


def resolve_lam(lam, loss):
    """``lam`` resolved: ``"auto"`` is 0.1 for the energy loss and 0.5 for the softmax one."""
    return (0.1 if loss == "energy" else 0.5) if lam == "auto" else float(lam)


def outlier_loss(loss, source, lam, m_in, m_out, temperature):
    """The fine-tuning loss: cross-entropy only without an outlier source, else the
    energy-margin or softmax OE loss."""
    if source is None:
        return CrossEntropyOnly()
    if loss == "energy":
        return EnergyMarginLoss(lam, m_in, m_out, temperature)
    return SoftmaxOELoss(lam)


#: :func:`warn_if_inverted` judges fits whose outlier-exposure stage ran at least this many
#: optimizer steps (a fit of a few steps is not trained yet: tests and smoke runs).
INVERTED_MIN_STEPS = 50


def warn_if_inverted(history, threshold=0.5, min_steps=INVERTED_MIN_STEPS):
    """Warn (:class:`~aoe_detect.exceptions.InvertedScoreWarning`) when the last epoch's
    held-out synthetic-outlier AUROC of ``-E(x)`` (``val_auroc_<family>`` of ``history_``) is
    below ``threshold`` for some family, after an outlier-exposure stage of at least
    ``min_steps`` optimizer steps: the fitted energy then calls those outliers more
    in-distribution than held-out ID rows, the signature of an inverted fit. Returns the
    offending ``{family: auroc}``."""
    rows = [r for r in history if any(k.startswith("val_auroc_") for k in r)]
    steps = sum(int(r.get("steps", 1)) for r in history if r.get("stage") == "finetune")
    if not rows or steps < min_steps:
        return {}
    bad = {k[len("val_auroc_"):]: v for k, v in rows[-1].items()
           if k.startswith("val_auroc_") and v == v and v < threshold}
    if bad:
        shown = ", ".join(f"{k} {v:.2f}" for k, v in bad.items())
        warnings.warn(f"The fitted energy ranks held-out synthetic outliers above held-out "
                      f"in-distribution rows (AUROC {shown} < {threshold}, history_[-1]): this "
                      "fit may score OOD inputs as in-distribution. Refit with another "
                      "random_state, standardise or quantile-transform the inputs, or compare "
                      "with ood_score='mahalanobis'.", InvertedScoreWarning, stacklevel=4)
    return bad
