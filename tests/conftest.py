import numpy as np
import pytest
import torch

from aoe_detect import AOEDetector
from aoe_detect.testing import TINY, quiet, tiny_blobs

# One intra-op thread: the suite's models are tiny, and on a 2-core machine shared with any
# other process, spinning OpenMP threads made single steps up to 100x slower.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _no_gpu_required(request):
    if request.node.get_closest_marker("gpu") and not torch.cuda.is_available():
        pytest.skip("needs CUDA")


@pytest.fixture(scope="session")
def blobs():
    """Two Gaussian blobs in 2-D (ID) with class labels: small, deterministic."""
    rng = np.random.RandomState(0)
    X = np.r_[rng.normal(0, 1, (150, 2)) + [3, 0], rng.normal(0, 1, (150, 2)) - [3, 0]]
    y = np.r_[np.zeros(150, int), np.ones(150, int)]
    return X.astype(np.float64), y


@pytest.fixture(scope="module")
def fitted():
    """A tiny detector (``TINY`` settings, default score) fitted on ``tiny_blobs``; one fit
    per test module that asks for it. Modules may define their own ``fitted``."""
    X, Y, _ = tiny_blobs()
    return quiet(AOEDetector(**TINY).fit, X, Y)
