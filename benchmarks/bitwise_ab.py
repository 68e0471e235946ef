"""Does a refactor change a number? Twelve small fits hashed (scores and threshold), to be
run on two commits and compared (issue 21: "it must not change a single number").

Cases: images and tables; arrays and map-style Datasets; label-free; outlier rows in ``y``;
``X_outliers`` as an array and as a Dataset; ``validation_fraction=0``; the k-NN score; a warm
start. Each line: case, SHA-1 prefix of ``score_samples`` on fixed rows, ``offset_``, the
number of ``history_`` rows. One torch thread; about a minute.

Run::

    python benchmarks/bitwise_ab.py > /tmp/now.txt
    PYTHONPATH=<worktree of the other commit> python benchmarks/bitwise_ab.py > /tmp/then.txt
    diff /tmp/then.txt /tmp/now.txt && echo bitwise-equal

Result of round 3 (4dcd8c0 vs the row-type commit): no difference
(``benchmarks/results/bitwise_ab.json``).
"""

import hashlib
import os
import sys
import warnings

import numpy as np
import torch
from torch.utils.data import Dataset, TensorDataset

if __package__ in (None, "") and "PYTHONPATH" not in os.environ:
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from aoe_detect import AOEDetector  # noqa: E402

warnings.simplefilter("ignore")
torch.set_num_threads(1)
rng = np.random.RandomState(0)
X = rng.rand(300, 1, 12, 12).astype(np.float32)
y = rng.randint(0, 3, 300)
T = rng.normal(size=(400, 6)).astype(np.float32)
ty = (T[:, 0] > 0).astype(int) + (T[:, 1] > 0)


class Items(Dataset):
    def __init__(self, X, y=None):
        self.X, self.y = torch.as_tensor(X), y

    def __len__(self):
        return len(self.X)

    def __getitem__(self, i):
        return self.X[i] if self.y is None else (self.X[i], int(self.y[i]))


def h(det, Z):  # noqa: D103
    s = det.score_samples(Z)
    return hashlib.sha1(s.tobytes()).hexdigest()[:12] + f" off={det.offset_:.6f}"
common = dict(epochs=1, pretrain_epochs=1, batch_size=64, random_state=0, device="cpu")
cases = {
 "img_default": lambda: AOEDetector(backbone="small_cnn", outliers="uniform", **common).fit(X, y),
 "img_ds": lambda: AOEDetector(backbone="small_cnn", outliers="uniform", **common).fit(Items(X, y)),
 "tab_default": lambda: AOEDetector(**common).fit(T, ty),
 "tab_ds": lambda: AOEDetector(**common).fit(Items(T, ty)),
 "tab_labelfree": lambda: AOEDetector(**common).fit(T),
 "tab_outrows": lambda: AOEDetector(**common).fit(T, np.where(np.arange(400) < 20, -1, ty)),
 "tab_ds_outrows": lambda: AOEDetector(**common).fit(Items(T, np.where(np.arange(400) < 20, -1, ty))),
 "tab_noval": lambda: AOEDetector(validation_fraction=0.0, ood_score="energy", **common).fit(T, ty),
 "tab_xout": lambda: AOEDetector(**common).fit(T, ty, X_outliers=T[:30] * 3),
 "tab_ds_xoutds": lambda: AOEDetector(**common).fit(T, ty, X_outliers=TensorDataset(torch.as_tensor(T[:30] * 3))),
 "tab_knn": lambda: AOEDetector(ood_score="energy+knn", **common).fit(T, ty),
}
for name, f in cases.items():
    det = f()
    Z = X[:50] if name.startswith("img") else T[:80]
    print(name, h(det, Z), len(det.history_), flush=True)
    if name == "tab_default":
        det.set_params(warm_start=True, epochs=1).fit(T, ty)
        print("tab_warm", h(det, Z), len(det.history_), flush=True)
