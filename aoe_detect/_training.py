"""Training and inference loops: plain functions, no estimator inside."""

from __future__ import annotations

import math
import time

import numpy as np
import torch

from .losses import energy

__all__ = ["index_batches", "train_epoch", "batched_outputs", "NonFiniteLossError"]


class NonFiniteLossError(FloatingPointError):
    """Raised inside the loop when the loss becomes NaN or infinite."""


def index_batches(n, batch_size, generator, shuffle=True):
    """Index tensors covering ``range(n)``; a trailing batch of one sample is dropped
    (BatchNorm cannot train on it) unless it is the only one."""
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    batches = list(order.split(batch_size))
    if len(batches) > 1 and len(batches[-1]) == 1:
        batches.pop()
    return batches


def _to(x, device, non_blocking=False):
    return x.to(device, non_blocking=non_blocking)


def train_epoch(model, X, y, *, optimizer, loss_fn, batch_size, generator, device,
                source=None, outlier_batch_size=None, attack=None, eps=0.0, attack_fraction=1.0,
                clip=None, temperature=1.0, scheduler=None, progress=None, outlier_pool=None,
                autocast_dtype=None, scaler=None):
    """One epoch over the ID data ``X`` (float32 CPU tensor) with labels ``y`` (or None).

    Each step: draw ``outlier_batch_size`` outliers from ``source`` (if any), perturb the
    first ``round(attack_fraction * n_out)`` of them with ``attack`` (model in eval mode),
    then ONE forward over ``cat(ID, outliers)`` in train mode, the loss, and an optimizer
    step.

    Returns
    -------
    dict
        Means over the epoch of ``loss``, ``ce``, ``energy_in``, ``energy_out`` (loss parts),
        ``mean_energy_id`` and ``mean_energy_outlier`` (energies of the training batches,
        the outliers after perturbation), and ``seconds``.
    """
    t0 = time.perf_counter()
    sums = {}
    steps = 0
    model.train()
    for idx in index_batches(len(X), batch_size, generator):
        x_in = _to(X[idx], device, True)
        y_in = None if y is None else _to(y[idx], device, True)
        x_out = None
        if source is not None:
            m = outlier_batch_size or len(idx)
            x_out = (outlier_pool.next(m, generator) if outlier_pool is not None
                     else source.sample(m, generator)).to(device, non_blocking=True)
            k = int(round(attack_fraction * m)) if attack is not None else 0
            if k > 0 and outlier_pool is None:
                adv = attack.perturb(model, x_out[:k], eps, clip=clip, temperature=temperature,
                                     generator=generator, autocast_dtype=autocast_dtype)
                x_out = torch.cat([adv, x_out[k:]])
            model.train()
        batch = x_in if x_out is None else torch.cat([x_in, x_out])
        with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            logits = model(batch)
        logits = logits.float()
        logits_in, logits_out = logits[: len(x_in)], (None if x_out is None else logits[len(x_in):])
        loss, parts = loss_fn(logits_in, y_in, logits_out)
        if not torch.isfinite(loss):
            raise NonFiniteLossError(f"loss became {float(loss)} at step {steps + 1}")
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
    out = {k_: float(v) / max(steps, 1) for k_, v in sums.items()}
    out.setdefault("mean_energy_outlier", math.nan)
    out["steps"] = steps
    out["seconds"] = time.perf_counter() - t0
    return out


def batched_outputs(model, X, fn, *, batch_size, device, autocast_dtype=None):
    """Apply ``fn(logits)`` batch by batch under ``torch.inference_mode`` in eval mode.

    ``X`` is a float32 CPU tensor; results are moved to the CPU per batch and concatenated
    (memory grows only with the output). The model's mode is restored afterwards.
    """
    was_training = model.training
    if was_training:
        model.eval()
    outs = []
    try:
        with torch.inference_mode():
            for start in range(0, len(X), batch_size):
                xb = X[start:start + batch_size].to(device, non_blocking=True)
                with torch.autocast(device.type, dtype=autocast_dtype,
                                    enabled=autocast_dtype is not None):
                    logits = model(xb)
                outs.append(fn(logits.float()).cpu())
    finally:
        if was_training:
            model.train()
    if not outs:
        return torch.empty(0)
    return torch.cat(outs)


def to_float64(t):
    return t.numpy().astype(np.float64)
