"""Training and inference loops: plain functions, no estimator inside.

One training step (:func:`train_epoch`): an ID batch, an outlier batch from the
:class:`OutlierFeed` (drawn, perturbed by the attack in eval mode, optionally cached for
``refresh`` steps), ONE forward over ``cat(ID, outliers)`` (under autocast if asked), the
loss, and an optimizer step (through a gradient scaler for float16). Everything the package
adds around that work is bookkeeping on tensors that stay on the device; the host reads a
value once per epoch (and, on CUDA, checks the loss for NaN every ``check_every`` steps).

:func:`build_stage` builds everything a training stage keeps across its epochs into one
:class:`Stage`: the optimizer and its cosine schedule, the forward module
(``DistributedDataParallel`` and/or ``torch.compile`` wrappers around the plain module), the
attack module, the autocast dtype, the grad scaler, the outlier feed, the batch provider, the
loss and the progress bar. :func:`run_stage` runs its epochs: the snapshot of the last
completed epoch, the rollback on a non-finite loss, ``history`` rows with the held-out
validation numbers, and the per-epoch hook (the estimator's checkpoint).
"""

from __future__ import annotations

import copy
import math
import time
import warnings
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import roc_auc_score
from tqdm.auto import tqdm

from . import distributed
from ._loading import as_rows
from ._torch_utils import index_batches, steps_per_epoch, to_device
from .exceptions import (NonFiniteLossError,  # noqa: F401  (re-exported: its former home)
                         NonFiniteLossWarning, TrainingInterruptedWarning)
from .losses import energy
from .outliers import Mixture

__all__ = ["index_batches", "steps_per_epoch", "TrainOptions", "Stage", "Progress", "build_stage",
           "train_epoch", "run_stage", "close_stage", "restore_kept", "check_finite", "make_optimizer",
           "batched_outputs", "OutlierFeed", "amp_dtype", "compiled", "NonFiniteLossError",
           "CUDA_CHECK_EVERY", "validation_probe", "validation_row", "still_falling"]

#: On CUDA the loss is checked for NaN/inf every this many steps (each check makes the host
#: wait for the GPU); on the CPU, where checking costs nothing, after every step.
CUDA_CHECK_EVERY = 16
#: On CUDA, inference results are copied to the host every this many batches.
CUDA_FLUSH_EVERY = 32


def still_falling(losses, ratio=1.0, min_rel=0.02):
    """True when a stage's per-epoch training losses were still falling steeply at its end.

    The stage runs a cosine learning-rate schedule, so progress per epoch shrinks with the
    learning rate even when the loss is far from its minimum; the test therefore compares
    progress *per unit of learning rate*. The losses are split into five consecutive chunks
    (means ``c0..c4``, mean relative learning rates ``l0..l4`` of the cosine schedule);
    ``rate_k = (c_k - c_{k+1}) / ((l_k + l_{k+1}) / 2)``. "Still falling": the last rate is
    more than ``ratio`` times the first (the loss is no flatter at the end than at the start)
    and the last drop is more than ``min_rel`` of ``|c3|``. A converged stage has a last
    rate near 0. Stages shorter than 5 epochs or with non-finite losses are not judged.
    """
    losses = np.asarray(losses, dtype=float)
    n = len(losses)
    if n < 5 or not np.all(np.isfinite(losses)):
        return False
    lr = 0.5 * (1 + np.cos(np.pi * (np.arange(n) + 0.5) / n))
    c = [x.mean() for x in np.array_split(losses, 5)]
    l = [x.mean() for x in np.array_split(lr, 5)]
    first = (c[0] - c[1]) / ((l[0] + l[1]) / 2)
    last = (c[3] - c[4]) / ((l[3] + l[4]) / 2)
    return bool(last > 0 and last > ratio * max(first, 0.0) and c[3] - c[4] > min_rel * abs(c[3]) + 1e-6)


#: Held-out rows (and synthetic outliers per family) scored after every epoch for ``history_``.
VALIDATION_ROWS = 512


def validation_probe(X_val, val_idx, labels, classes, num_workers=0):
    """``(rows, class indices or None)``: at most :data:`VALIDATION_ROWS` held-out rows (a
    tensor, loaded from a Dataset view) for the per-epoch numbers in ``history_``, with the
    indices of their labels in ``classes`` (-1 for a label the training rows lack); None
    when fewer than two rows are held out."""
    n = min(len(val_idx), VALIDATION_ROWS)
    if n < 2:
        return None
    Xv = X_val.head(n, num_workers)
    yv = None
    if labels is not None and classes is not None:
        lab = np.asarray(labels)[val_idx[:n]]
        known = np.isin(lab, classes)
        yv = np.where(known, np.searchsorted(classes, lab).clip(0, len(classes) - 1), -1)
    return Xv, yv


def validation_row(model, X_val, y_val, source, *, temperature, device, seed=0):
    """Per-epoch validation numbers that need no real OOD data (for ``history_``).

    ``val_energy_id``: mean energy of (at most :data:`VALIDATION_ROWS`) held-out ID rows;
    ``val_accuracy``: their accuracy when labelled (``y_val`` class indices);
    ``val_auroc_<family>``: AUROC of ``-E(x)`` between those rows and as many fresh samples of
    each outlier family (each component of a :class:`~aoe_detect.outliers.Mixture`, else
    ``outliers``), drawn with a generator of their own (``seed``), so training's random
    stream is untouched. Eval mode, no gradients; the model's mode is restored.
    """
    Xv = X_val[:VALIDATION_ROWS]
    logits = batched_outputs(model, Xv, lambda t: t, batch_size=256, device=device)
    e_id = energy(logits, temperature).double().numpy()
    row = {"val_energy_id": float(e_id.mean())}
    if y_val is not None:
        row["val_accuracy"] = float((logits.argmax(1).numpy() == y_val[:len(Xv)]).mean())
    if source is None or len(Xv) < 2:
        return row
    if isinstance(source, Mixture) and hasattr(source, "sources_"):
        families = list(zip([name for name, _ in source._named()], source.sources_))
    else:
        families = [("outliers", source)]
    gen = torch.Generator().manual_seed(int(seed))
    for name, src in families:
        xo = src.sample(len(Xv), gen)
        e_out = energy(batched_outputs(model, xo.float(), lambda t: t, batch_size=256,
                                       device=device), temperature).double().numpy()
        y = np.r_[np.ones(len(e_id)), np.zeros(len(e_out))]
        row[f"val_auroc_{name}"] = float(roc_auc_score(y, -np.r_[e_id, e_out]))
    return row


def amp_dtype(amp, device):
    """The autocast dtype for the ``amp`` parameter: False -> None, "bf16", "fp16", True ->
    bfloat16 where supported (CPU, CUDA with bf16) else float16."""
    if amp is False or amp is None:
        return None
    if amp == "bf16":
        return torch.bfloat16
    if amp == "fp16":
        return torch.float16
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return torch.float16
    return torch.bfloat16


def compiled(module, options):
    """``torch.compile(module, **options)`` (``options`` True means defaults); ``module``
    itself when ``options`` is falsy. Compiled code is cached by dynamo per module, so
    wrapping the same module again does not recompile."""
    if not options:
        return module
    return torch.compile(module, **(options if isinstance(options, dict) else {}))


class OutlierFeed:
    """The outlier batch of each training step, for this process.

    Draws ``m`` outliers from ``source`` (or from ``stream``, an iterator of batches already
    sharded to this process), keeps this process's rows (every ``world``-th, from ``rank``)
    and perturbs the first ``round(attack_fraction * m)`` rows of the global batch with
    ``attack``. With ``refresh=k > 1`` the perturbed batch is cached and reused for ``k``
    steps (the attack then costs ``1/k`` of its per-step price; the outliers are up to
    ``k - 1`` steps stale and less diverse).

    With an attack whose ``sides`` is ``"both"``, :meth:`perturb_id` also moves each ID
    batch toward higher energy (ID-side adversarial training, ALOE/ATOM style).
    """

    def __init__(self, source, *, attack=None, eps=0.0, attack_fraction=1.0, clip=None,
                 temperature=1.0, autocast_dtype=None, refresh=1, rank=0, world=1, stream=None):
        self.source, self.attack, self.eps = source, attack, eps
        self.attack_fraction, self.clip, self.temperature = attack_fraction, clip, temperature
        self.autocast_dtype, self.refresh = autocast_dtype, refresh
        self.rank, self.world, self.stream = rank, world, stream
        self._cache, self._calls = None, 0
        self.sample_shape = None
        self.target = None  # a DeployedTarget (attack__target="deployed"), set by the fit

    def _attacked(self, model):
        """``(model, temperature)`` the attack runs on: ``model`` and the training
        temperature, or the deployed score's head (:mod:`aoe_detect._deployed`)."""
        return (model, self.temperature) if self.target is None else self.target.model()

    def _rows(self, n):
        """How many of the first ``n`` rows of a global batch belong to this process."""
        return len(range(self.rank, n, self.world))

    def _draw(self, m, generator):
        if self.stream is not None:
            need = self._rows(m)
            x = next(self.stream)
            while len(x) < need:
                x = torch.cat([x, next(self.stream)])
            return x[:need]
        x = check_outlier_batch(self.source.sample(m, generator), m, self.sample_shape,
                                self.source)
        return x if self.world == 1 else x[self.rank::self.world]

    def next(self, model, m, generator, device):
        """This process's ``m``-row outlier batch (global size), perturbed, on ``device``."""
        if self.target is not None:
            self.target.tick()
        if self.refresh > 1 and self._cache is not None and self._calls % self.refresh != 0 \
                and len(self._cache) >= self._rows(m):
            self._calls += 1
            return self._cache[:self._rows(m)]
        self._calls += 1
        x_out = to_device(self._draw(m, generator), device)
        k = int(round(self.attack_fraction * m)) if self.attack is not None else 0
        k = k if self.world == 1 else self._rows(k)
        if k > 0:
            model, temperature = self._attacked(model)
            adv = self.attack.perturb(model, x_out[:k], self.eps, clip=self.clip,
                                      temperature=temperature, generator=generator,
                                      autocast_dtype=self.autocast_dtype)
            x_out = torch.cat([adv, x_out[k:]])
        if self.refresh > 1:
            self._cache = x_out
        return x_out

    def perturb_id(self, model, x_in, generator):
        """``x_in`` attacked toward higher energy (``direction=+1``, same attack, radius and
        clip as the outliers; eval mode, the model's state restored by the attack) when the
        attack's ``sides`` is ``"both"``; else ``x_in`` itself. A PGD ``early_stop``
        (a threshold for outliers) is not applied to ID rows."""
        if self.attack is None or getattr(self.attack, "sides", "ood") != "both":
            return x_in
        attack = self.attack
        if getattr(attack, "early_stop", None) is not None:
            attack = copy.copy(attack)
            attack.early_stop = None
        model, temperature = self._attacked(model)
        return attack.perturb(model, x_in, self.eps, clip=self.clip,
                              temperature=temperature, generator=generator,
                              autocast_dtype=self.autocast_dtype, direction=1)


def check_outlier_batch(x, m, sample_shape, source):
    """A batch drawn from an outlier source: a floating tensor of ``m`` samples of the ID
    ``sample_shape`` (or a numpy array of one, converted), else a ValueError naming the
    source and the expected shape (not a torch shape error deep in the model)."""
    name = type(source).__name__
    if isinstance(x, np.ndarray) and x.dtype.kind in "f":
        x = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"The outlier source {name}.sample({m}, generator) returned "
                         f"{type(x).__name__}; expected a float tensor of shape "
                         f"({m}, {', '.join(map(str, sample_shape or ()))}).")
    if not x.is_floating_point():
        raise ValueError(f"The outlier source {name}.sample({m}, generator) returned a tensor "
                         f"of dtype {x.dtype}; expected floating point values (float32) in the "
                         "units of X.")
    if sample_shape is not None and (len(x) != m or tuple(x.shape[1:]) != tuple(sample_shape)):
        raise ValueError(f"The outlier source {name}.sample({m}, generator) returned shape "
                         f"{tuple(x.shape)}; expected ({m}, "
                         f"{', '.join(map(str, sample_shape))}): {m} samples of the shape of X.")
    return x if x.dtype == torch.float32 else x.float()


@dataclass(frozen=True)
class TrainOptions:
    """The training parameters of one ``fit``, resolved once and shared by its stages.

    ``clip`` is the valid input range (or None); ``channels_last`` is already resolved to a
    bool; ``ddp`` says whether the stages train data-parallel over a process group.
    """

    batch_size: int
    outlier_batch_size: int | None = None
    optimizer: str = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    attack_fraction: float = 1.0
    clip: tuple | None = None
    temperature: float = 1.0
    amp: object = False
    compile: object = False
    channels_last: bool = False
    attack_refresh: int = 1
    ddp: bool = False
    sync_batchnorm: object = "auto"
    num_workers: int = 0
    verbose: int = 0
    augment: bool = False

    @classmethod
    def from_params(cls, params, **resolved):
        """From :func:`aoe_detect._params.flat_params` of the estimator (its parameters and
        its components' settings by their flat names) and the values ``fit`` resolved
        (``clip``, ``channels_last``, ``ddp``)."""
        obs = params["outlier_batch_size"]
        return cls(batch_size=int(params["batch_size"]),
                   outlier_batch_size=None if obs is None else int(obs),
                   optimizer=params["optimizer"], lr=params["lr"],
                   weight_decay=float(params["weight_decay"]),
                   attack_fraction=params["attack_fraction"],
                   temperature=params["temperature"], amp=params["amp"],
                   compile=params["compile"], attack_refresh=int(params["attack_refresh"]),
                   sync_batchnorm=params["sync_batchnorm"],
                   num_workers=int(params["num_workers"]), verbose=params["verbose"],
                   augment=bool(params["augment"]), **resolved)


@dataclass
class Stage:
    """One training stage (``"pretrain"`` or ``"finetune"``), built once by
    :func:`build_stage` and kept across its epochs.

    ``module`` is the plain module being trained; ``forward_model`` runs the training forward
    (DDP and/or ``torch.compile`` wrappers), ``attack_model`` the attack on the outliers.
    ``feed`` draws and perturbs the outliers (None without outlier exposure); ``batches``
    yields the ID batches of each epoch (``X.train_batches``: the same global batches for
    rows in memory and rows of a Dataset).
    """

    name: str
    epochs: int
    module: torch.nn.Module
    X: object
    y: torch.Tensor | None
    loss_fn: object
    optimizer: torch.optim.Optimizer
    scheduler: object
    generator: torch.Generator
    device: torch.device
    options: TrainOptions
    forward_model: object = None
    attack_model: object = None
    autocast_dtype: object = None
    scaler: object = None
    source: object = None
    feed: OutlierFeed | None = None
    batches: object = None
    world: int = 1
    check_every: int = 1
    bar: object = None
    sync_handle: object = None


@dataclass
class Progress:
    """Where ``fit`` is (for the interrupt message) and ``kept``: ``(weights, len(history))``
    of the last completed epoch (the initial weights once training started)."""

    where: str = "fit"
    kept: tuple | None = None


def make_optimizer(params, options):
    """A fresh optimizer over ``params``: Adam (AdamW with a decoupled ``weight_decay``,
    Loshchilov & Hutter 2019), or SGD with Nesterov momentum 0.9 (``weight_decay`` as an L2
    penalty)."""
    wd = options.weight_decay
    if options.optimizer == "adam":
        if wd:
            return torch.optim.AdamW(params, lr=options.lr, weight_decay=wd)
        return torch.optim.Adam(params, lr=options.lr)
    return torch.optim.SGD(params, lr=options.lr, momentum=0.9, nesterov=True, weight_decay=wd)


def _outlier_feed(source, attack, eps, options, generator, dtype, rank, world, cuda):
    """The :class:`OutlierFeed` of a stage (a Dataset source streams its batches)."""
    stream = None
    if hasattr(source, "stream"):
        seed = (generator.initial_seed() + 2) % (2**31 - 1)
        m = options.outlier_batch_size or options.batch_size
        stream = source.stream(len(range(rank, m, world)), seed, rank, world, pin_memory=cuda)
    return OutlierFeed(source, attack=attack, eps=eps, attack_fraction=options.attack_fraction,
                       clip=options.clip, temperature=options.temperature, autocast_dtype=dtype,
                       refresh=options.attack_refresh, rank=rank, world=world, stream=stream)


def build_stage(name, epochs, module, X, y, *, loss_fn, generator, device, options,
                source=None, attack=None, eps=0.0):
    """Build the optimizer, the cosine schedule over ``epochs`` epochs, the progress bar,
    synchronised BatchNorm, the gradient scaler, the autocast dtype, the forward / attack
    wrappers, the outlier feed and the batch provider of one stage.

    ``X``/``y`` are the training rows (the row type of :mod:`aoe_detect._loading`, or a
    float32 tensor taken as rows in memory) and their targets (aligned to the rows, or None). With
    ``options.ddp`` the forward module is wrapped in ``DistributedDataParallel`` (the
    process group must be initialised); the attack always runs on the plain module (an input
    gradient needs no gradient synchronisation). DataLoader seeds derive from
    ``generator.initial_seed()`` without drawing from it, so streaming a Dataset consumes the
    same random numbers as training on the equivalent tensor. ``eps`` is the attack radius
    (a float or a tensor on ``device``).
    """
    params = [p for p in module.parameters() if p.requires_grad]
    if not params:
        raise ValueError("The `backbone` has no trainable parameters (module.parameters() "
                         "with requires_grad=True is empty); pass a module with weights to "
                         "train, or epochs=0 and pretrain_epochs=0 to only calibrate it.")
    opt = make_optimizer(params, options)
    rank, world = (distributed.rank(), distributed.world_size()) if options.ddp else (0, 1)
    steps = steps_per_epoch(len(X), options.batch_size, world)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, epochs * steps))
    bar = None
    if options.verbose and distributed.is_main_process():
        bar = tqdm(total=epochs * steps, desc=name, leave=False)
    sync_handle = None
    if options.ddp and distributed.use_sync_batchnorm(options.sync_batchnorm, module):
        sync_handle = distributed.convert_sync_batchnorm(module, device)
    cuda = device.type == "cuda"
    dtype = amp_dtype(options.amp, device)
    scaler = torch.amp.GradScaler(device.type) if dtype == torch.float16 else None
    if options.channels_last:
        module.to(memory_format=torch.channels_last)
    forward_model = compiled(distributed.wrap(module, device) if options.ddp else module,
                             options.compile)
    feed = None
    if source is not None:
        feed = _outlier_feed(source, attack, eps, options, generator, dtype, rank, world, cuda)
        feed.sample_shape = tuple(X.shape[1:])  # every drawn batch is checked against it
    batches = as_rows(X).train_batches(options.batch_size, y, rank, world, options.num_workers,
                                       pin_memory=cuda,
                                       seed=(generator.initial_seed() + 1) % (2**31 - 1))
    return Stage(name, epochs, module, X, y, loss_fn, opt, sched, generator, device, options,
                 forward_model=forward_model, attack_model=compiled(module, options.compile),
                 autocast_dtype=dtype, scaler=scaler, source=source, feed=feed, batches=batches,
                 world=world, check_every=CUDA_CHECK_EVERY if cuda else 1, bar=bar,
                 sync_handle=sync_handle)


def _raise_if_nonfinite(flag, loss, steps, world, check_every):
    if world > 1:
        flag = distributed.any_true(flag)
    if bool(flag):
        where = f"at step {steps}" if check_every == 1 else f"by step {steps}"
        raise NonFiniteLossError(f"loss became {loss.item()} {where}")


def _forward(stage, x_in, x_out):
    """Logits (float32) of ONE train-mode forward over ``cat(x_in, x_out)``."""
    batch = x_in if x_out is None else torch.cat([x_in, x_out])
    if stage.options.channels_last and batch.dim() == 4:
        batch = batch.contiguous(memory_format=torch.channels_last)
    dtype = stage.autocast_dtype
    with torch.autocast(stage.device.type, dtype=dtype, enabled=dtype is not None):
        logits = stage.forward_model(batch)
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2 or len(logits) != len(batch):
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ValueError(f"The `backbone` must return 2-D logits (n_samples, n_classes) in "
                         f"train mode too; got {shape} for a batch of {len(batch)} in train "
                         "mode. Fix its forward (e.g. no squeeze()/flatten of the batch axis).")
    return logits.float()


def _step(stage, loss):
    """Backward pass, optimizer step (through the gradient scaler for float16), schedule."""
    stage.optimizer.zero_grad(set_to_none=True)
    if stage.scaler is not None:
        stage.scaler.scale(loss).backward()
        stage.scaler.step(stage.optimizer)
        stage.scaler.update()
    else:
        loss.backward()
        stage.optimizer.step()
    stage.scheduler.step()


def random_shift(x, generator, fraction=1 / 14):
    """Shift each image of ``x`` (n, c, h, w) by up to ``round(fraction * min(h, w))`` pixels
    in each direction (uniform integer offsets drawn with ``generator``; edge padding, so no
    artificial border appears). The standard "pad and random crop" augmentation."""
    n, _, h, w = x.shape
    p = int(round(fraction * min(h, w)))
    if p < 1:
        return x
    padded = F.pad(x, (p, p, p, p), mode="replicate")
    off = torch.randint(0, 2 * p + 1, (n, 2), generator=generator)
    rows = (off[:, 0:1] + torch.arange(h))[:, None, :, None].to(x.device)
    cols = (off[:, 1:2] + torch.arange(w))[:, None, None, :].to(x.device)
    idx = torch.arange(n, device=x.device)[:, None, None, None]
    ch = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
    return padded[idx, ch, rows, cols]


def train_epoch(stage, progress=None):
    """One epoch of ``stage`` over its ID data (float32 tensor or batch provider).

    Each step: draw ``outlier_batch_size`` outliers (default: as many as ID rows in the
    global batch) from the stage's feed (the first ``round(attack_fraction * n_out)``
    perturbed by the attack, model in eval mode; with the attack's ``sides="both"`` the ID
    batch is attacked toward higher energy too), then ONE forward over
    ``cat(ID, outliers)`` in train mode, the loss, and an optimizer and scheduler step.
    With several processes the epoch means are averaged over them. ``progress``: a tqdm
    bar advanced once per step.

    Returns
    -------
    dict
        Means over the epoch of ``loss``, ``ce``, ``energy_in``, ``energy_out`` (loss parts),
        ``mean_energy_id`` and ``mean_energy_outlier`` (energies of the training batches,
        the outliers after perturbation), ``steps`` and ``seconds``.
    """
    t0 = time.perf_counter()
    sums, steps, pending = {}, 0, None
    model, opts, device = stage.module, stage.options, stage.device
    model.train()
    stage.forward_model.train()
    it = stage.batches.epoch(stage.generator)
    shift = opts.augment and stage.name == "pretrain"
    for x_in, y_in, n_global in it:
        if shift and x_in.dim() == 4:
            x_in = random_shift(x_in, stage.generator)
        x_in = to_device(x_in, device, opts.channels_last)
        y_in = None if y_in is None else to_device(y_in, device)
        x_out = None
        if stage.feed is not None:
            x_out = stage.feed.next(stage.attack_model, opts.outlier_batch_size or n_global,
                                    stage.generator, device)
            x_in = stage.feed.perturb_id(stage.attack_model, x_in, stage.generator)
            model.train()
        logits = _forward(stage, x_in, x_out)
        logits_in, logits_out = logits[: len(x_in)], (None if x_out is None else logits[len(x_in):])
        loss, parts = stage.loss_fn(logits_in, y_in, logits_out)
        bad = ~torch.isfinite(loss.detach())
        pending = bad if pending is None else pending | bad
        if (steps + 1) % stage.check_every == 0:
            _raise_if_nonfinite(pending, loss, steps + 1, stage.world, stage.check_every)
            pending = None
        _step(stage, loss)
        with torch.no_grad():
            row = {"loss": loss.detach(), **parts,
                   "mean_energy_id": energy(logits_in.detach(), opts.temperature).mean()}
            if logits_out is not None:
                row["mean_energy_outlier"] = energy(logits_out.detach(), opts.temperature).mean()
        for k_, v in row.items():
            sums[k_] = sums.get(k_, 0.0) + v
        steps += 1
        if progress is not None:
            progress.update(1)
    if pending is not None:
        _raise_if_nonfinite(pending, loss, steps, stage.world, stage.check_every)
    if stage.world > 1:
        sums = distributed.mean_over_ranks(sums)
    out = {k_: float(v) / max(steps, 1) for k_, v in sums.items()}
    out.setdefault("mean_energy_outlier", math.nan)
    out["steps"] = steps
    out["seconds"] = time.perf_counter() - t0
    return out


def check_finite(module, probe_scores):
    """The last step of an epoch is not followed by a loss: raise
    :class:`NonFiniteLossError` if a weight or buffer of ``module`` or a probe score
    (``probe_scores()``) is not finite, so that a diverged epoch is never kept."""
    bad = [k for k, v in module.state_dict().items()
           if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise NonFiniteLossError(f"non-finite values in {bad[:3]} after the epoch")
    if not np.isfinite(probe_scores()).all():
        raise NonFiniteLossError("scores of training inputs became non-finite")


def restore_kept(module, history, progress):
    """After a KeyboardInterrupt: put the weights and the ``history`` rows of the last
    completed epoch (``progress.kept``) back, eval mode, with a
    :class:`TrainingInterruptedWarning` naming where ``fit`` was interrupted."""
    weights, n_hist = progress.kept
    module.load_state_dict(weights)
    del history[n_hist:]
    module.eval()
    warnings.warn(f"fit interrupted in {progress.where}; the weights of the last "
                  f"completed epoch ({n_hist} in history_) are kept and the threshold is "
                  "computed.", TrainingInterruptedWarning, stacklevel=4)


def warn_non_finite(stage, epoch, exc):
    """The :class:`NonFiniteLossWarning` of a stage stopped in ``epoch`` (0-based), with a
    hint at what to change."""
    hint = ("lower `lr`" if stage == "pretrain" else
            "lower `lr`, or check what scales the outlier term: `epsilon` / the "
            "attack's `eps`, the outlier source's spread (e.g. `widen`, `scale`), "
            "`lam` and the margins")
    warnings.warn(f"Training stopped in {stage} epoch {epoch + 1}: {exc}. The "
                  f"weights of the last completed epoch are kept; {hint}.",
                  NonFiniteLossWarning, stacklevel=3)


def _show(stage, row):
    """The loss parts (and, with ``verbose >= 2``, the validation numbers) on the bar."""
    keys = ["loss", "ce", "energy_in", "energy_out"]
    if stage.options.verbose >= 2:  # and the held-out validation numbers
        keys += [k for k in row if k.startswith("val_")]
    stage.bar.set_postfix({k: f"{row[k]:.3g}" for k in keys})


def _warn_if_still_falling(stage, history, done):
    losses = [r["loss"] for r in history if r["stage"] == stage.name]
    if still_falling(losses[done:]):
        param = "pretrain_epochs" if stage.name == "pretrain" else "epochs"
        warnings.warn(
            f"{stage.name}: the training loss was still falling steeply in the last "
            f"{max(1, stage.epochs // 5)} of {stage.epochs} epochs (see history_); training has "
            f"not converged. Increase `{param}` or `lr`.", ConvergenceWarning, stacklevel=3)


def close_stage(stage):
    """Close the bar, put plain BatchNorm back and (data-parallel) take rank 0's weights and
    BatchNorm statistics everywhere."""
    if stage.bar is not None:
        stage.bar.close()
    if stage.sync_handle is not None:
        distributed.revert_sync_batchnorm(stage.sync_handle)
    if stage.options.ddp:  # BatchNorm statistics differ per rank: take rank 0's
        distributed.broadcast_module(stage.module)


def run_stage(stage, *, history, progress, probe_scores, validation=None, on_epoch_end=None):
    """Run the epochs of ``stage``, appending one row per epoch to ``history``; return True
    if training had to stop early (non-finite loss or weights: the weights of the last
    completed epoch are restored and a :class:`NonFiniteLossWarning` says so).

    ``progress`` (a :class:`Progress`) is updated to ``(weights, len(history))`` before the
    first epoch and after every completed one, so that a ``KeyboardInterrupt`` can keep
    them. ``probe_scores()`` returns scores that must be finite after each epoch;
    ``validation`` is ``(X_val, y_val)`` for the held-out numbers of each row (see
    :func:`validation_row`); ``on_epoch_end()`` runs after each completed epoch (the
    checkpoint). The stage is closed (:func:`close_stage`) whatever happens. Epochs are
    numbered on from the rows of this stage already in ``history`` (warm start).
    """
    module, opts = stage.module, stage.options
    done = sum(r["stage"] == stage.name for r in history)  # warm start: keep counting
    try:
        progress.kept = (copy.deepcopy(module.state_dict()), len(history))
        for epoch in range(done, done + stage.epochs):
            progress.where = f"{stage.name} epoch {epoch + 1}"
            snapshot = progress.kept[0]
            try:
                row = train_epoch(stage, progress=stage.bar)
                check_finite(module, probe_scores)
            except NonFiniteLossError as exc:
                module.load_state_dict(snapshot)
                warn_non_finite(stage.name, epoch, exc)
                return True
            row = {"stage": stage.name, "epoch": epoch + 1, **row}
            if validation is not None:  # held-out numbers, no real OOD data
                row.update(validation_row(module, *validation, stage.source,
                                          temperature=opts.temperature, device=stage.device,
                                          seed=len(history)))
            history.append(row)
            progress.kept = (copy.deepcopy(module.state_dict()), len(history))
            progress.where = f"{stage.name} epoch {epoch + 1} (after it completed)"
            if stage.bar is not None:
                _show(stage, row)
            if on_epoch_end is not None:
                on_epoch_end()
        _warn_if_still_falling(stage, history, done)
    finally:
        close_stage(stage)
    return False


def batched_outputs(model, X, fn, *, batch_size, device, autocast_dtype=None, out=None,
                    channels_last=False):
    """Apply ``fn(logits)`` batch by batch under ``torch.inference_mode`` in eval mode.

    ``X`` is a float32 CPU tensor (cut into ``batch_size`` rows) or an iterable of batches
    (a DataLoader yielding ``x`` or ``(x, y)``). Results are moved to the CPU per batch
    (every :data:`CUDA_FLUSH_EVERY` batches on CUDA, so the host does not wait for each)
    and written into ``out`` (a preallocated numpy array of ``len(X)`` rows; memory stays
    flat) or concatenated into a tensor. The model's mode is restored afterwards.
    """
    was_training = model.training
    if was_training:
        model.eval()
    if isinstance(X, torch.Tensor):
        batches = (X[start:start + batch_size] for start in range(0, len(X), batch_size))
    else:
        batches = (b[0] if isinstance(b, (tuple, list)) else b for b in X)
    flush_every = CUDA_FLUSH_EVERY if device.type == "cuda" else 1
    outs, pending, pos = [], [], 0

    def flush():
        nonlocal pos
        if not pending:
            return
        res = (pending[0] if len(pending) == 1 else torch.cat(pending)).cpu()
        pending.clear()
        if out is None:
            outs.append(res)
        else:
            out[pos:pos + len(res)] = res.numpy()
            pos += len(res)

    try:
        with torch.inference_mode():
            for xb in batches:
                xb = to_device(xb, device, channels_last)
                with torch.autocast(device.type, dtype=autocast_dtype,
                                    enabled=autocast_dtype is not None):
                    logits = model(xb)
                # float64 outputs (rows recomputed after a float32 overflow) stay float64
                pending.append(fn(logits if logits.dtype == torch.float64 else logits.float()))
                if len(pending) >= flush_every:
                    flush()
            flush()
    finally:
        if was_training:
            model.train()
    if out is not None:
        return out
    if not outs:
        return torch.empty(0)
    return torch.cat(outs)


def to_float64(t):
    return t.numpy().astype(np.float64)
