"""Training and inference loops: plain functions, no estimator inside.

One training step (:func:`train_epoch`): an ID batch, an outlier batch from the
:class:`OutlierFeed` (drawn, perturbed by the attack in eval mode, optionally cached for
``refresh`` steps), ONE forward over ``cat(ID, outliers)`` (under autocast if asked), the
loss, and an optimizer step (through a gradient scaler for float16). Everything the package
adds around that work is bookkeeping on tensors that stay on the device; the host reads a
value once per epoch (and, on CUDA, checks the loss for NaN every ``check_every`` steps).

:func:`stage_options` builds what a training stage needs besides data and optimizer: the
forward module (``DistributedDataParallel`` and/or ``torch.compile`` wrappers around the
plain module), the attack module, the autocast dtype, the grad scaler, the outlier feed and
the batch provider.
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from . import distributed
from ._torch_utils import index_batches, steps_per_epoch, to_device
from ._loading import TrainBatches
from .exceptions import NonFiniteLossError  # re-exported: its former home
from .losses import energy
from .outliers import Mixture

__all__ = ["index_batches", "steps_per_epoch", "train_epoch", "batched_outputs", "OutlierFeed",
           "stage_options", "amp_dtype", "compiled", "NonFiniteLossError", "CUDA_CHECK_EVERY",
           "validation_row", "still_falling"]

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
    """

    def __init__(self, source, *, attack=None, eps=0.0, attack_fraction=1.0, clip=None,
                 temperature=1.0, autocast_dtype=None, refresh=1, rank=0, world=1, stream=None):
        self.source, self.attack, self.eps = source, attack, eps
        self.attack_fraction, self.clip, self.temperature = attack_fraction, clip, temperature
        self.autocast_dtype, self.refresh = autocast_dtype, refresh
        self.rank, self.world, self.stream = rank, world, stream
        self._cache, self._calls = None, 0

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
        x = self.source.sample(m, generator)
        return x if self.world == 1 else x[self.rank::self.world]

    def next(self, model, m, generator, device):
        """This process's ``m``-row outlier batch (global size), perturbed, on ``device``."""
        if self.refresh > 1 and self._cache is not None and self._calls % self.refresh != 0 \
                and len(self._cache) >= self._rows(m):
            self._calls += 1
            return self._cache[:self._rows(m)]
        self._calls += 1
        x_out = to_device(self._draw(m, generator), device)
        k = int(round(self.attack_fraction * m)) if self.attack is not None else 0
        k = k if self.world == 1 else self._rows(k)
        if k > 0:
            adv = self.attack.perturb(model, x_out[:k], self.eps, clip=self.clip,
                                      temperature=self.temperature, generator=generator,
                                      autocast_dtype=self.autocast_dtype)
            x_out = torch.cat([adv, x_out[k:]])
        if self.refresh > 1:
            self._cache = x_out
        return x_out


def stage_options(module, *, device, X, y, batch_size, generator, source=None, attack=None,
                  eps=0.0, attack_fraction=1.0, clip=None, temperature=1.0,
                  outlier_batch_size=None, amp=False, compile=False, channels_last=False,
                  attack_refresh=1, ddp=False, num_workers=0):
    """Keyword arguments of :func:`train_epoch` for one training stage (kept across epochs).

    ``X``/``y`` are the training inputs: a float32 tensor with labels, or a
    :class:`~aoe_detect._loading.DatasetView` with targets aligned to its rows. ``ddp`` wraps
    the forward module in ``DistributedDataParallel`` (the process group must be
    initialised); the attack always runs on the plain module (an input gradient needs no
    gradient synchronisation). DataLoader seeds derive from ``generator.initial_seed()``
    without drawing from it, so streaming a Dataset consumes the same random numbers as
    training on the equivalent tensor.
    """
    rank, world = (distributed.rank(), distributed.world_size()) if ddp else (0, 1)
    cuda = device.type == "cuda"
    dtype = amp_dtype(amp, device)
    scaler = torch.amp.GradScaler(device.type) if dtype == torch.float16 else None
    if channels_last:
        module.to(memory_format=torch.channels_last)
    forward_model = distributed.wrap(module, device) if ddp else module
    forward_model = compiled(forward_model, compile)
    attack_model = compiled(module, compile)
    feed = None
    if source is not None:
        stream = None
        if hasattr(source, "stream"):
            seed = (generator.initial_seed() + 2) % (2**31 - 1)
            m = outlier_batch_size or batch_size
            stream = source.stream(len(range(rank, m, world)), seed, rank, world, pin_memory=cuda)
        feed = OutlierFeed(source, attack=attack, eps=eps, attack_fraction=attack_fraction,
                           clip=clip, temperature=temperature, autocast_dtype=dtype,
                           refresh=attack_refresh, rank=rank, world=world, stream=stream)
    batches = None
    if world > 1 or not isinstance(X, torch.Tensor):
        batches = TrainBatches(X, y, batch_size, rank, world, num_workers, pin_memory=cuda,
                               seed=(generator.initial_seed() + 1) % (2**31 - 1))
    return {"forward_model": forward_model, "attack_model": attack_model,
            "autocast_dtype": dtype, "scaler": scaler, "feed": feed, "batches": batches,
            "channels_last": bool(channels_last), "world": world,
            "check_every": CUDA_CHECK_EVERY if cuda else 1}


def _tensor_batches(X, y, batch_size, generator):
    for idx in index_batches(len(X), batch_size, generator):
        yield X[idx], (None if y is None else y[idx]), len(idx)


def _raise_if_nonfinite(flag, loss, steps, world, check_every):
    if world > 1:
        flag = distributed.any_true(flag)
    if bool(flag):
        where = f"at step {steps}" if check_every == 1 else f"by step {steps}"
        raise NonFiniteLossError(f"loss became {loss.item()} {where}")


def train_epoch(model, X, y, *, optimizer, loss_fn, batch_size, generator, device,
                source=None, outlier_batch_size=None, attack=None, eps=0.0, attack_fraction=1.0,
                clip=None, temperature=1.0, scheduler=None, progress=None, feed=None,
                batches=None, forward_model=None, attack_model=None, autocast_dtype=None,
                scaler=None, channels_last=False, world=1, check_every=1):
    """One epoch over the ID data ``X`` (float32 CPU tensor) with labels ``y`` (or None).

    Each step: draw ``outlier_batch_size`` outliers (default: as many as ID rows in the
    global batch) from ``feed`` (or from ``source``, perturbing the first
    ``round(attack_fraction * n_out)`` with ``attack``, model in eval mode), then ONE
    forward over ``cat(ID, outliers)`` in train mode, the loss, and an optimizer step.

    ``batches`` (a :class:`~aoe_detect._loading.TrainBatches`) replaces ``X``/``y`` (Datasets,
    several processes); ``forward_model`` (DDP/compiled wrapper of ``model``) runs the
    training forward, ``attack_model`` the attack. With ``world > 1`` the epoch means are
    averaged over the processes.

    Returns
    -------
    dict
        Means over the epoch of ``loss``, ``ce``, ``energy_in``, ``energy_out`` (loss parts),
        ``mean_energy_id`` and ``mean_energy_outlier`` (energies of the training batches,
        the outliers after perturbation), ``steps`` and ``seconds``.
    """
    t0 = time.perf_counter()
    sums = {}
    steps = 0
    if feed is None and source is not None:
        feed = OutlierFeed(source, attack=attack, eps=eps, attack_fraction=attack_fraction,
                           clip=clip, temperature=temperature, autocast_dtype=autocast_dtype)
    fwd = model if forward_model is None else forward_model
    att = model if attack_model is None else attack_model
    model.train()
    fwd.train()
    pending = None
    it = batches.epoch(generator) if batches is not None else _tensor_batches(X, y, batch_size,
                                                                               generator)
    for x_in, y_in, n_global in it:
        x_in = to_device(x_in, device, channels_last)
        y_in = None if y_in is None else to_device(y_in, device)
        x_out = None
        if feed is not None:
            x_out = feed.next(att, outlier_batch_size or n_global, generator, device)
            model.train()
        batch = x_in if x_out is None else torch.cat([x_in, x_out])
        if channels_last and batch.dim() == 4:
            batch = batch.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            logits = fwd(batch)
        if not isinstance(logits, torch.Tensor) or logits.dim() != 2 or len(logits) != len(batch):
            shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
            raise ValueError(f"The `backbone` must return 2-D logits (n_samples, n_classes) in "
                             f"train mode too; got {shape} for a batch of {len(batch)} in train "
                             "mode. Fix its forward (e.g. no squeeze()/flatten of the batch axis).")
        logits = logits.float()
        logits_in, logits_out = logits[: len(x_in)], (None if x_out is None else logits[len(x_in):])
        loss, parts = loss_fn(logits_in, y_in, logits_out)
        bad = ~torch.isfinite(loss.detach())
        pending = bad if pending is None else pending | bad
        if (steps + 1) % check_every == 0:
            _raise_if_nonfinite(pending, loss, steps + 1, world, check_every)
            pending = None
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        if scheduler is not None:
            scheduler.step()
        with torch.no_grad():
            row = {"loss": loss.detach(), **parts,
                   "mean_energy_id": energy(logits_in.detach(), temperature).mean()}
            if logits_out is not None:
                row["mean_energy_outlier"] = energy(logits_out.detach(), temperature).mean()
        for k_, v in row.items():
            sums[k_] = sums.get(k_, 0.0) + v
        steps += 1
        if progress is not None:
            progress.update(1)
    if pending is not None:
        _raise_if_nonfinite(pending, loss, steps, world, check_every)
    if world > 1:
        sums = distributed.mean_over_ranks(sums)
    out = {k_: float(v) / max(steps, 1) for k_, v in sums.items()}
    out.setdefault("mean_energy_outlier", math.nan)
    out["steps"] = steps
    out["seconds"] = time.perf_counter() - t0
    return out


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
