"""Smoke test of an installed (non-editable) aoe-detect, run from outside the source tree.

Catches packaging mistakes: a module or data file left out of the wheel, a broken console
script, a missing dependency. Exits non-zero on any failure.
"""

import os
import pathlib
import subprocess
import sys
import tempfile

import numpy as np

import aoe_detect
from aoe_detect import AOEDetector
from aoe_detect.datasets import load_sample
from aoe_detect.model_selection import OODStratifiedKFold

src = pathlib.Path(sys.argv[1]).resolve() if len(sys.argv) > 1 else None
where = pathlib.Path(aoe_detect.__file__).resolve()
assert "site-packages" in where.parts, f"aoe_detect imported from {where}, not an installed copy"
if src is not None:
    assert src not in where.parents, f"aoe_detect imported from the source tree: {where}"
print("aoe_detect", aoe_detect.__version__, "from", where.parent)

data = load_sample()  # the packaged data file
X_img, y_img = data["fashion_train"]
assert X_img.dtype == np.uint8 and len(X_img) > 100

rng = np.random.RandomState(0)
X = np.r_[rng.normal(0, 1, (80, 3)) + 3, rng.normal(0, 1, (80, 3)) - 3]
y = np.array(["a", "b"]).repeat(80)
det = AOEDetector(epochs=1, pretrain_epochs=2, random_state=0, device="cpu").fit(X, y)
scores = det.score_samples(np.r_[X, rng.uniform(-20, 20, (20, 3))])
assert scores.shape == (180,) and scores.dtype == np.float64 and np.isfinite(scores).all()
assert set(det.predict_class(X[:10])) <= {"a", "b"}
with tempfile.TemporaryDirectory() as tmp:
    path = det.save(os.path.join(tmp, "d.aoe"))
    assert np.array_equal(AOEDetector.load(path).score_samples(X), det.score_samples(X))
    exe = pathlib.Path(sys.executable).with_name("aoe-detect")
    out = subprocess.run([str(exe), "--help"], capture_output=True, text=True, check=True)
    assert out.stdout.startswith("usage: aoe-detect"), out.stdout[:200]
    np.save(os.path.join(tmp, "x.npy"), X.astype(np.float32))
    res = subprocess.run([str(exe), "score", "--model", path, "--input",
                          os.path.join(tmp, "x.npy"), "--json"],
                         capture_output=True, text=True, check=True)
    assert '"n": 160' in res.stdout, res.stdout
y_cv = np.r_[np.zeros(80, int), np.ones(80, int), -np.ones(20, int)]
folds = list(OODStratifiedKFold(2).split(np.zeros((180, 1)), y_cv))
assert all((y_cv[tr] >= 0).all() for tr, _ in folds)
print("smoke test passed")
