"""Write the saved-detector fixtures that later releases must keep loading.

Each fixture is a tiny tabular detector saved with :meth:`AOEDetector.save` by the release
named in its file name, next to a JSON file with the rows it was probed on and the scores,
threshold and decisions that release computed for them. ``tests/test_versioned_files.py``
loads every fixture with the code under test and compares.

Fixtures are written once per release and then never regenerated (a regenerated fixture
would test nothing): run this script only to *add* the fixture of a new release, from a
checkout of that release::

    PYTHONPATH=. python tests/data/make_fixtures.py

``aoe-detect-0.1.0.aoe`` (save format ``aoe-detect/1``, which has no separate format
version) was written by the 0.1.0 code at commit bbf32b0 with torch 2.14.1 on CPU.
"""

from __future__ import annotations

import json
import os
import pathlib

import numpy as np

import aoe_detect
from aoe_detect import AOEDetector

HERE = pathlib.Path(__file__).resolve().parent


def fixture_data():
    """Two Gaussian classes in 2-D (ID) and the probe rows (ID rows and far-away rows)."""
    rng = np.random.RandomState(0)
    X = np.r_[rng.normal(0, 1, (40, 2)) + [3, 0], rng.normal(0, 1, (40, 2)) - [3, 0]]
    y = np.r_[np.zeros(40, int), np.ones(40, int)]
    probe = np.r_[X[:6], np.random.RandomState(5).uniform(-30, 30, (6, 2))]
    return X, y, probe


def main():
    version = aoe_detect.__version__
    stem = HERE / f"aoe-detect-{version}"
    if os.path.exists(f"{stem}.aoe"):
        raise SystemExit(f"{stem}.aoe exists: fixtures of a release are never regenerated.")
    X, y, probe = fixture_data()
    det = AOEDetector(epochs=1, pretrain_epochs=1, batch_size=32, device="cpu", random_state=0,
                      outliers="uniform").fit(X, y)   # default ood_score="energy+mahalanobis"
    det.save(f"{stem}.aoe")
    expected = {"version": version, "ood_score": det.ood_score,
                "probe": probe.tolist(),
                "scores": det.score_samples(probe).tolist(),
                "offset_": float(det.offset_),
                "predict": det.predict(probe).tolist(),
                "classes_": det.classes_.tolist()}
    with open(f"{stem}.json", "w") as fh:
        json.dump(expected, fh, indent=1)
        fh.write("\n")


if __name__ == "__main__":
    main()
