"""Low-level torch helpers shared by every layer: batch indexing, device resolution and
transfers, atomic file writes.

This module sits at the bottom of the package (it imports no sibling module), so loading,
training, components and the estimator can all use it without import cycles.
"""

from __future__ import annotations

import os
import tempfile

import numpy as np
import torch

__all__ = ["index_batches", "steps_per_epoch", "to_device", "resolve_device", "atomic_write",
           "PIXEL_MAX", "pixels_to_unit"]

#: uint8 images hold pixel values in ``[0, PIXEL_MAX]``; :func:`pixels_to_unit` maps them
#: to ``[0, 1]`` (uint8 tabular data keeps its values: callers decide what is an image).
PIXEL_MAX = 255.0


def index_batches(n, batch_size, generator, shuffle=True, world=1):
    """Index tensors covering ``range(n)``; a trailing batch of one sample is dropped
    (BatchNorm cannot train on it) unless it is the only one. With ``world`` processes
    each global batch is split across them, so a trailing batch smaller than ``2 * world``
    (fewer than two rows per process) is dropped."""
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    batches = list(order.split(int(batch_size)))  # numpy integers are not accepted by split
    if world == 1:
        if len(batches) > 1 and len(batches[-1]) == 1:
            batches.pop()
    elif batches and len(batches[-1]) < 2 * world:
        batches.pop()
    return batches


def steps_per_epoch(n, batch_size, world=1):
    """Number of batches :func:`index_batches` yields (without drawing anything)."""
    full, rest = divmod(n, batch_size)
    if world == 1:
        return full + (1 if rest > 1 or (rest == 1 and full == 0) else 0)
    return full + (1 if rest >= 2 * world else 0)


def to_device(x, device, channels_last=False):
    """Copy a CPU tensor to ``device``: through pinned memory and ``non_blocking`` on CUDA
    (the copy overlaps with queued GPU work); a no-op on the CPU. 4-D tensors become
    ``channels_last`` if asked."""
    if x.device != device:
        if device.type == "cuda" and x.device.type == "cpu" and not x.is_pinned():
            x = x.pin_memory()
        x = x.to(device, non_blocking=True)
    if channels_last and x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    return x


def resolve_device(device):
    """The ``device`` parameter -> :class:`torch.device`; ``"auto"`` picks CUDA when
    available. Unknown strings and unavailable devices are a ``ValueError`` naming the
    parameter."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"`device` must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}.") from exc
    if dev.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"`device` must be 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps', got {device!r} "
                         f"(device type {dev.type!r} cannot train or score a model).")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"`device`={device!r} but CUDA is not available; use device='auto' or 'cpu'.")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"`device`={device!r} but MPS is not available; use device='auto' or 'cpu'.")
    return dev


def pixels_to_unit(x):
    """Pixel values in ``[0, 255]`` (uint8 or float32; numpy array or tensor) -> float32 in
    ``[0, 1]``: one float32 division by 255, the same for arrays and tensors."""
    if isinstance(x, torch.Tensor):
        return x.to(torch.float32) / PIXEL_MAX
    return np.asarray(x, dtype=np.float32) / np.float32(PIXEL_MAX)


def atomic_write(path, write):
    """Write ``path`` through ``write(tmp_path)`` then rename, so readers never see a partial
    file. The temporary file is created next to ``path`` (same file system, so the rename is
    atomic) under a unique name, and removed if ``write`` fails."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".aoe-", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
