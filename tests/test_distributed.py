"""Data-parallel training under torchrun: 2 CPU processes (gloo) vs one process.

``batch_size`` is the global batch: with 2 ranks each processes half of every global batch
(the same global batches as the single process, see ``aoe_detect._loading.GlobalBatchSampler``),
and DistributedDataParallel averages the two half-batch gradients, which equals the
full-batch gradient of the batch-mean losses. The MLP backbone has no BatchNorm, FGSM draws
no random numbers and the outlier source draws the same global batch on every rank, so the
two runs differ only in floating-point summation order (per-rank partial sums, gradient
averaging); Adam turns such 1e-7 differences into slightly larger weight differences
(measured: 1.4e-6 absolute on scores spanning 4.5). Scores and threshold must agree to
1e-4 of the score spread. (With BatchNorm backbones each rank normalises with the
statistics of its half batch, so expect differences of the order of the batch-to-batch
noise instead; use SyncBatchNorm to remove them.)
"""

import os
import subprocess
import sys

import numpy as np
import pytest

from aoe_detect import AOEDetector
from aoe_detect.runtime import Runtime

HERE = os.path.dirname(os.path.abspath(__file__))
CONFIG = dict(backbone="mlp", epochs=3, pretrain_epochs=2, batch_size=32, random_state=0,
              device="cpu", runtime=Runtime(distributed="auto"))


def make_data():
    rng = np.random.RandomState(0)
    X = np.r_[rng.normal(0, 1, (120, 4)) + [3, 0, 0, 0], rng.normal(0, 1, (120, 4)) - [3, 0, 0, 0]]
    y = np.r_[np.zeros(120, int), np.ones(120, int)]
    X_test = np.r_[X[:40], rng.uniform(-8, 8, (40, 4))]
    return X.astype(np.float32), y, X_test.astype(np.float32)


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           os.path.join(HERE, "ddp_worker.py"), str(out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ranks = [dict(np.load(out / f"rank{r}.npz")) for r in range(2)]
    return out, ranks


@pytest.fixture(scope="module")
def single():
    X, y, X_test = make_data()
    det = AOEDetector(**CONFIG).fit(X, y)
    assert det.distributed_ is False
    return det, det.score_samples(X_test)


def test_ranks_agree_exactly(ddp_run):
    _, (r0, r1) = ddp_run
    assert int(r0["world"]) == 2
    np.testing.assert_array_equal(r0["scores"], r1["scores"])
    np.testing.assert_array_equal(r0["validation_scores"], r1["validation_scores"])
    assert float(r0["offset"]) == float(r1["offset"])
    np.testing.assert_array_equal(r0["loss"], r1["loss"])  # metrics averaged over ranks
    np.testing.assert_array_equal(r0["ds_scores"], r1["ds_scores"])
    # outliers streamed from a Dataset: ranks see different outliers, train the same model
    np.testing.assert_array_equal(r0["out_scores"], r1["out_scores"])
    np.testing.assert_array_equal(r0["out_history"], r1["out_history"])
    assert np.isfinite(r0["out_history"]).all()


def test_matches_single_process(ddp_run, single):
    _, (r0, _) = ddp_run
    det, scores = single
    spread = np.ptp(scores)
    np.testing.assert_allclose(r0["scores"], scores, rtol=0, atol=1e-4 * spread)
    assert abs(float(r0["offset"]) - det.offset_) <= 1e-4 * spread
    assert abs(float(r0["m_in"]) - det.m_in_) <= 1e-6 * max(1.0, abs(det.m_in_))  # before OE
    np.testing.assert_allclose(r0["loss"], [r["loss"] for r in det.history_], rtol=1e-3)


def test_dataset_input_under_ddp_matches_single_process(ddp_run):
    # the worker fitted a labelled Dataset: sharded DataLoaders on 2 ranks vs arrays here
    _, (r0, _) = ddp_run
    X, y, X_test = make_data()
    det = AOEDetector(**{**CONFIG, "epochs": 1, "pretrain_epochs": 1}).fit(X, y)
    scores = det.score_samples(X_test)
    np.testing.assert_allclose(r0["ds_scores"], scores, rtol=0, atol=1e-4 * np.ptp(scores))


def test_only_rank0_writes(ddp_run):
    out, (r0, r1) = ddp_run
    assert bool(r0["saved"]) and not bool(r1["saved"])
    assert os.listdir(out / "ckpt") == ["checkpoint.aoe"]


def test_distributed_true_without_group_is_an_error():
    X, y, _ = make_data()
    with pytest.raises(ValueError, match="runtime__distributed=True"):
        AOEDetector(**{**CONFIG, "runtime": Runtime(distributed=True)}).fit(X, y)
