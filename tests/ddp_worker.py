"""Worker for tests/test_distributed.py, launched as
``python -m torch.distributed.run --standalone --nproc_per_node 2 tests/ddp_worker.py OUT``.

Every rank fits the same tiny detector with ``distributed="auto"`` (the process group is
initialised by ``fit`` from the torchrun environment, gloo on the CPU) and writes what it
learned to ``OUT/rank{r}.npz``; the test compares the ranks with each other and with a
single-process fit.
"""

import os
import sys
import warnings

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import Dataset

torch.set_num_threads(1)
warnings.simplefilter("ignore")

from aoe_detect import AOEDetector  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_distributed import CONFIG, make_data  # noqa: E402  (test module: data + config)


class Rows(Dataset):
    def __init__(self, X, y):
        self.X, self.y = X, y

    def __len__(self):
        return len(self.X)

    def __getitem__(self, i):
        return torch.from_numpy(self.X[i]), int(self.y[i])


def main(out):
    X, y, X_test = make_data()
    ckpt = os.path.join(out, "ckpt")
    det = AOEDetector(**CONFIG, checkpoint_dir=ckpt).fit(X, y)
    assert dist.is_initialized() and det.distributed_
    rank = dist.get_rank()
    saved = det.save(os.path.join(out, f"saved_by_rank{rank}.aoe"))
    # Datasets under DDP: ID rows through the sharded DataLoader path
    det_ds = AOEDetector(**{**CONFIG, "epochs": 1, "pretrain_epochs": 1}).fit(Rows(X, y))
    # an outlier Dataset under DDP: each rank streams its DistributedSampler share
    det_out = AOEDetector(**{**CONFIG, "epochs": 1, "pretrain_epochs": 0}).fit(
        X, y, X_outliers=Rows(X_test, np.zeros(len(X_test), int)))
    np.savez(os.path.join(out, f"rank{rank}.npz"),
             scores=det.score_samples(X_test), offset=det.offset_,
             validation_scores=det.validation_scores_, m_in=det.m_in_,
             loss=np.array([r["loss"] for r in det.history_]),
             world=dist.get_world_size(), saved=os.path.exists(saved),
             ds_scores=det_ds.score_samples(X_test), ds_offset=det_ds.offset_,
             out_scores=det_out.score_samples(X_test),
             out_history=np.array([r["mean_energy_outlier"] for r in det_out.history_]))
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
