"""Synchronised BatchNorm under data-parallel training (issue 11): 2 CPU processes (gloo)
launched with torchrun, compared with one process.

With ``sync_batchnorm="auto"`` (the default) every BatchNorm layer normalises with the
statistics of the *global* batch (all ranks' rows, ID and outliers), so a 2-rank fit of a
BatchNorm backbone matches the single-process fit up to floating-point summation order,
as the MLP fit of ``test_distributed.py`` does. With ``sync_batchnorm=False`` each rank
normalises its half batch: the forward pass differs from the single-process one.
"""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

from aoe_detect import AOEDetector
from aoe_detect.runtime import Runtime
from aoe_detect.distributed import convert_sync_batchnorm, revert_sync_batchnorm
from test_distributed import make_data  # noqa: F401  (shared data; the DDP worker imports it from here)

HERE = os.path.dirname(os.path.abspath(__file__))


def bn_backbone(n_classes, input_shape):
    """A small MLP with BatchNorm (a factory: fresh weights from the fit's seed)."""
    return nn.Sequential(nn.Linear(input_shape[0], 32), nn.BatchNorm1d(32), nn.ReLU(),
                         nn.Linear(32, n_classes))


CONFIG = dict(backbone=bn_backbone, epochs=2, pretrain_epochs=1, batch_size=32, random_state=0,
              device="cpu", runtime=Runtime(distributed="auto"), outliers="uniform",
              attack="fgsm")


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp_bn")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           os.path.join(HERE, "ddp_syncbn_worker.py"), str(out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return [dict(np.load(out / f"rank{r}.npz")) for r in range(2)]


def test_sync_layer_matches_full_batch_batchnorm(ddp_run):
    # each rank normalised its half of a 16-row batch: outputs, input gradients and the
    # running statistics equal plain BatchNorm on the whole batch
    for r, res in enumerate(ddp_run):
        np.testing.assert_allclose(res["unit_out"], res["unit_ref_out"], atol=1e-5)
        np.testing.assert_allclose(res["unit_grad"], res["unit_ref_grad"], atol=1e-5)
        np.testing.assert_allclose(res["unit_running"], res["unit_ref_running"], atol=1e-6)
        assert res["unit_plain_restored"]


def test_ddp_fit_with_sync_batchnorm_matches_single_process(ddp_run):
    X, y, X_test = make_data()
    det = AOEDetector(**CONFIG).fit(X, y)
    assert det.distributed_ is False
    ref = det.score_samples(X_test)
    r0, r1 = ddp_run
    np.testing.assert_array_equal(r0["sync_scores"], r1["sync_scores"])
    spread = np.ptp(ref)
    np.testing.assert_allclose(r0["sync_scores"], ref, rtol=0, atol=1e-3 * spread)
    # without synchronisation the ranks' BatchNorm saw half batches: a visibly other model
    assert np.abs(r0["nosync_scores"] - ref).max() > 10 * np.abs(r0["sync_scores"] - ref).max()
    # module_ keeps plain BatchNorm layers (the sync layers only exist during training)
    assert bool(r0["plain_bn_after_fit"])


def test_convert_and_revert_share_tensors_outside_a_process_group():
    net = bn_backbone(2, (4,))
    bn = net[1]
    handle = convert_sync_batchnorm(net)
    assert type(net[1]).__name__ == "SyncBatchNorm" and net[1].weight is bn.weight
    x = torch.randn(8, 4)
    net.train()
    net(x)  # no process group: plain BatchNorm behaviour, updates the shared buffers
    revert_sync_batchnorm(handle)
    assert net[1] is bn and int(bn.num_batches_tracked) == 1
    ref = bn_backbone(2, (4,))
    ref.load_state_dict({k: v for k, v in net.state_dict().items()})
    assert torch.equal(ref[1].running_mean, bn.running_mean)
