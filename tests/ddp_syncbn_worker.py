"""Worker for tests/test_sync_batchnorm.py, launched as
``python -m torch.distributed.run --standalone --nproc_per_node 2 tests/ddp_syncbn_worker.py OUT``.
"""

import os
import sys
import warnings

import numpy as np
import torch
import torch.distributed as dist

torch.set_num_threads(1)
warnings.simplefilter("ignore")

from aoe_detect import AOEDetector  # noqa: E402
from aoe_detect.runtime import Runtime  # noqa: E402
from aoe_detect.distributed import convert_sync_batchnorm, revert_sync_batchnorm  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_sync_batchnorm import CONFIG, make_data  # noqa: E402  (test module: data + config)


def unit_check(rank, world):
    """One SyncBatchNorm layer on this rank's half of a batch vs BatchNorm on all of it."""
    g = torch.Generator().manual_seed(0)
    full = torch.randn(16, 3, generator=g) * 3 + 1
    bn = torch.nn.BatchNorm1d(3)
    ref = torch.nn.BatchNorm1d(3)
    ref.load_state_dict(bn.state_dict())
    x_ref = full.clone().requires_grad_(True)
    out_ref = ref(x_ref)
    (out_ref * torch.arange(1.0, 4.0)).sum().backward()
    holder = torch.nn.Sequential(bn)
    handle = convert_sync_batchnorm(holder)
    rows = slice(rank * 8, (rank + 1) * 8)
    x = full[rows].clone().requires_grad_(True)
    out = holder(x)
    (out * torch.arange(1.0, 4.0)).sum().backward()
    revert_sync_batchnorm(handle)
    return dict(unit_out=out.detach().numpy(), unit_ref_out=out_ref.detach()[rows].numpy(),
                unit_grad=x.grad.numpy(), unit_ref_grad=x_ref.grad[rows].numpy(),
                unit_running=torch.stack([bn.running_mean, bn.running_var]).numpy(),
                unit_ref_running=torch.stack([ref.running_mean, ref.running_var]).detach().numpy(),
                unit_plain_restored=type(holder[0]) is torch.nn.BatchNorm1d)


def main(out):
    X, y, X_test = make_data()
    det = AOEDetector(**CONFIG).fit(X, y)  # initialises the gloo group from torchrun's env
    assert dist.is_initialized() and det.distributed_
    rank, world = dist.get_rank(), dist.get_world_size()
    nosync = AOEDetector(**{**CONFIG, "runtime": Runtime(distributed="auto",
                                                         sync_batchnorm=False)}).fit(X, y)
    res = unit_check(rank, world)
    plain = all(type(m).__name__ != "SyncBatchNorm" for m in det.module_.modules()) and any(
        isinstance(m, torch.nn.BatchNorm1d) for m in det.module_.modules())
    np.savez(os.path.join(out, f"rank{rank}.npz"), sync_scores=det.score_samples(X_test),
             nosync_scores=nosync.score_samples(X_test), plain_bn_after_fit=plain, **res)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
