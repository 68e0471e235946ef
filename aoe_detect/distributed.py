"""Process-group helpers for training on several GPUs or machines (``torch.distributed`` only).

Launch one process per GPU with ``torchrun`` (no home-made process management)::

    torchrun --nproc_per_node 4 train.py          # one machine, 4 GPUs
    torchrun --nnodes 2 --nproc_per_node 8 --rdzv_backend c10d \\
        --rdzv_endpoint host0:29500 train.py      # two machines

where ``train.py`` calls ``AOEDetector(..., runtime=Runtime(distributed="auto")).fit(X, y)`` on every rank
with the same data and ``random_state``. ``fit`` then

- uses the initialised default process group, or initialises one from the torchrun
  environment (``nccl`` for CUDA, ``gloo`` for the CPU);
- puts each rank on ``cuda:LOCAL_RANK`` (``device="auto"``/``"cuda"``);
- broadcasts rank 0's seed, so ``random_state=None`` works too;
- shards every global ID batch and outlier batch across the ranks (each takes every
  ``world``-th row), wraps the backbone in ``DistributedDataParallel`` for the training
  forward pass and averages the epoch metrics with ``all_reduce``;
- broadcasts rank 0's weights and buffers after each stage (BatchNorm statistics differ
  per rank otherwise), scores the held-out rows sharded and gathers them, so
  ``validation_scores_`` and ``offset_`` are identical on every rank;
- shows progress bars and writes checkpoints on rank 0 only (``save`` too).

``batch_size`` is the *global* batch size: each of ``w`` ranks processes ``batch_size / w``
rows per step, so results do not depend on the number of processes beyond floating-point
summation order and per-rank BatchNorm batch statistics.
"""

from __future__ import annotations

import os

import numpy as np
import torch
import torch.distributed as dist

__all__ = ["resolve", "is_active", "rank", "world_size", "is_main_process", "rank_device",
           "broadcast_seed", "wrap", "broadcast_module", "mean_over_ranks", "any_true",
           "gather_rows", "launched_by_torchrun", "SyncBatchNorm", "use_sync_batchnorm",
           "convert_sync_batchnorm", "revert_sync_batchnorm"]


def launched_by_torchrun() -> bool:
    """Whether the torchrun environment (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``) is set."""
    return all(k in os.environ for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"))


def is_active() -> bool:
    """An initialised default process group exists."""
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_active() else 0


def world_size() -> int:
    return dist.get_world_size() if is_active() else 1


def is_main_process() -> bool:
    """Rank 0, or no process group: the process that logs and saves."""
    return rank() == 0


def resolve(distributed, device_param="auto"):
    """Resolve the ``distributed`` parameter to True/False (may initialise the group).

    ``"auto"``: True if a process group with more than one rank is initialised, or if the
    process was launched by torchrun with ``WORLD_SIZE > 1`` (the group is then initialised:
    ``nccl`` when CUDA is used, ``gloo`` otherwise). ``True``: the same, and an error if
    neither holds. ``False``: single-process training, whatever the environment.
    """
    if distributed is False:
        return False
    if is_active():
        return distributed is True or world_size() > 1
    if dist.is_available() and launched_by_torchrun() and (
            distributed is True or int(os.environ["WORLD_SIZE"]) > 1):
        use_cuda = torch.cuda.is_available() and str(device_param) != "cpu"
        if use_cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
        return True
    if distributed is True:
        raise ValueError("`runtime__distributed=True` but no torch.distributed process group is "
                         "initialised and the process was not launched by torchrun (RANK, "
                         "WORLD_SIZE, MASTER_ADDR, MASTER_PORT unset). Launch with `torchrun "
                         "--nproc_per_node N script.py`, call "
                         "torch.distributed.init_process_group first, or use runtime__distributed='auto'.")
    return False


def rank_device(device):
    """``cuda`` without an index means this rank's GPU (``LOCAL_RANK``) under DDP."""
    if device.type == "cuda" and device.index is None:
        idx = int(os.environ.get("LOCAL_RANK", torch.cuda.current_device()))
        torch.cuda.set_device(idx)
        return torch.device("cuda", idx)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    return device


def _comm_device():
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def broadcast_seed(seed: int) -> int:
    """Rank 0's seed on every rank."""
    t = torch.tensor([seed], dtype=torch.int64, device=_comm_device())
    dist.broadcast(t, src=0)
    return int(t.item())


def wrap(module, device):
    """``DistributedDataParallel`` around ``module`` (its parameters are broadcast from
    rank 0 on construction)."""
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(module, device_ids=ids, output_device=ids[0] if ids else None)


def broadcast_module(module):
    """Copy rank 0's parameters and buffers into ``module`` on every rank."""
    with torch.no_grad():
        for t in module.state_dict().values():
            if not isinstance(t, torch.Tensor):
                continue
            buf = t if t.is_contiguous() else t.contiguous()
            dist.broadcast(buf, src=0)
            if buf is not t:
                t.copy_(buf)


def mean_over_ranks(values: dict) -> dict:
    """Average a dict of scalar tensors/floats over the ranks (one ``all_reduce``)."""
    keys = list(values)
    dev = _comm_device()
    t = torch.stack([torch.as_tensor(values[k], dtype=torch.float64).reshape(()).to(dev)
                     for k in keys])
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    t = (t / dist.get_world_size()).cpu()
    return {k: t[i] for i, k in enumerate(keys)}


def any_true(flag) -> bool:
    """Whether ``flag`` (a bool tensor) is true on any rank."""
    t = torch.as_tensor(flag).to(_comm_device(), torch.int32).reshape(1)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def gather_rows(local, n):
    """Reassemble an array of ``n`` rows sharded as ``rows[rank::world]`` on every rank.

    ``local`` holds this rank's rows (float64 numpy, 1-D or 2-D); returns all ``n`` rows in
    order on every rank.
    """
    world = dist.get_world_size()
    size = -(-n // world)
    local = np.asarray(local, dtype=np.float64)
    dev = _comm_device()
    padded = torch.zeros((size, *local.shape[1:]), dtype=torch.float64, device=dev)
    padded[:len(local)] = torch.from_numpy(local).to(dev)
    parts = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded)
    out = np.empty((n, *local.shape[1:]), dtype=np.float64)
    for r, p in enumerate(parts):
        k = len(range(r, n, world))
        out[r::world] = p[:k].cpu().numpy()
    return out


# ---------------------------------------------------------------- synchronised BatchNorm
class SyncBatchNorm(torch.nn.modules.batchnorm._BatchNorm):
    """BatchNorm whose training-mode statistics are those of the *global* batch.

    In training mode under an initialised process group with several ranks, the per-channel
    sums, sums of squares and row counts of every rank are added with a differentiable
    ``all_reduce`` (so the backward pass is exact too), then the batch is normalised with
    the global mean and biased variance and the running statistics are updated with the
    unbiased global variance, like one process seeing the whole global batch. Otherwise it
    is plain BatchNorm. Unlike ``torch.nn.SyncBatchNorm`` it also runs on the CPU (gloo),
    which is what the tests use. Parameters and buffers are the original layer's tensors
    (see :func:`convert_sync_batchnorm`).
    """

    def _check_input_dim(self, input):
        if input.dim() < 2:
            raise ValueError(f"expected at least 2-D input (got {input.dim()}-D input)")

    def forward(self, x):
        if not (self.training and is_active() and world_size() > 1):
            return super().forward(x)
        from torch.distributed.nn.functional import all_reduce

        c = x.shape[1]
        dims = [0, *range(2, x.dim())]
        xf = x.float()
        count = xf.new_tensor([x.numel() // max(c, 1)], dtype=torch.float32)
        stats = all_reduce(torch.cat([xf.sum(dims), (xf * xf).sum(dims), count]))
        total = stats[-1]
        mean = stats[:c] / total
        var = (stats[c:2 * c] / total - mean * mean).clamp_min(0.0)
        if self.track_running_stats and self.running_mean is not None:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = (self.momentum if self.momentum is not None
                     else 1.0 / float(self.num_batches_tracked))
                unbiased = var * (total / (total - 1).clamp_min(1.0))
                self.running_mean.mul_(1 - m).add_(mean.detach().to(self.running_mean.dtype), alpha=m)
                self.running_var.mul_(1 - m).add_(unbiased.detach().to(self.running_var.dtype), alpha=m)
        shape = [1, c] + [1] * (x.dim() - 2)
        out = (xf - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        return out.to(x.dtype)


def _batchnorm_layers(module):
    """(parent, attribute name, layer) of every plain BatchNorm layer below ``module``."""
    found = []
    for parent in module.modules():
        for name, child in parent.named_children():
            if (isinstance(child, torch.nn.modules.batchnorm._BatchNorm)
                    and not isinstance(child, (SyncBatchNorm, torch.nn.SyncBatchNorm))):
                found.append((parent, name, child))
    return found


def use_sync_batchnorm(option, module) -> bool:
    """Whether to synchronise BatchNorm statistics: ``option`` is the estimator's
    ``sync_batchnorm`` ("auto"/True: when several ranks train and ``module`` has
    BatchNorm layers; False: never)."""
    if option is False or world_size() < 2:
        return False
    return bool(_batchnorm_layers(module))


def convert_sync_batchnorm(module, device=None):
    """Swap every BatchNorm layer of ``module`` for a :class:`SyncBatchNorm` sharing its
    parameters and buffers (in place); return the handle :func:`revert_sync_batchnorm` needs.
    The original layers see every update (same tensors), so reverting is exact."""
    handle = []
    for parent, name, bn in _batchnorm_layers(module):
        sync = SyncBatchNorm.__new__(SyncBatchNorm)
        torch.nn.Module.__init__(sync)
        for attr in ("num_features", "eps", "momentum", "affine", "track_running_stats"):
            setattr(sync, attr, getattr(bn, attr))
        for pname, p in bn._parameters.items():
            sync._parameters[pname] = p
        for bname, b in bn._buffers.items():
            sync._buffers[bname] = b
        sync.train(bn.training)
        setattr(parent, name, sync)
        handle.append((parent, name, bn, sync))
    return handle


def revert_sync_batchnorm(handle):
    """Put the original BatchNorm layers back (their tensors hold the trained values)."""
    for parent, name, bn, sync in handle:
        for pname, p in sync._parameters.items():  # load_state_dict may have replaced none,
            bn._parameters[pname] = p                # but keep whatever sync holds now
        for bname, b in sync._buffers.items():
            bn._buffers[bname] = b
        bn.train(sync.training)
        setattr(parent, name, bn)
