"""Evidence for the default outlier mixture: each family alone vs the mixture, on OOD sets
that were NOT used to design the families or the defaults.

Design data (used while choosing defaults such as the margin gap): scikit-learn digits,
classes 0-4 as ID, classes 5-9 and uniform noise as OOD. Everything below is held out:

- tabular: wine (classes 0, 1 ID; class 2 OOD), breast cancer (label-free fit on benign
  tumours; malignant = OOD), and for both: ID rows with one feature scaled by 10 ("broken
  sensor"), and uniform noise in the feature box;
- images: the embedded Fashion-MNIST sample as ID (small CNN), MNIST, upsampled sklearn digits,
  natural photo patches, Gaussian noise as OOD.

Run: ``python benchmarks/outlier_defaults.py [--seeds 2]``; writes
``benchmarks/results/outlier_defaults.{json,md}``. AOE-FGSM with default settings throughout;
the same seeds, epochs and backbone for every source.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

import numpy as np
import torch
from sklearn.datasets import load_breast_cancer, load_wine

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from aoe_detect import AOEDetector  # noqa: E402
from aoe_detect.metrics import auroc  # noqa: E402
from aoe_detect.outliers import (GaussianNoise, LowDensityGMM, PermutedID,  # noqa: E402
                                 SmoothNoise, UniformNoise, default_outliers)
from benchmarks._lab import write_results  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def tabular_tasks(rng):
    tasks = {}
    X, y = load_wine(return_X_y=True)
    idm = y < 2
    p = rng.permutation(idm.sum())
    Xi, yi = X[idm][p], y[idm][p]
    ntr = int(0.7 * len(Xi))
    tasks["wine"] = (Xi[:ntr], yi[:ntr], Xi[ntr:], {"class 2": X[~idm]})
    X, y = load_breast_cancer(return_X_y=True)
    ben, mal = X[y == 1], X[y == 0]
    ben = ben[rng.permutation(len(ben))]
    ntr = int(0.7 * len(ben))
    tasks["breast_cancer (label-free)"] = (ben[:ntr], None, ben[ntr:], {"malignant": mal})
    for name, (Xtr, ytr, Xte, ood) in tasks.items():
        broken = Xte.copy()
        j = rng.randint(0, Xte.shape[1], len(Xte))
        broken[np.arange(len(Xte)), j] *= 10
        ood["broken sensor"] = broken
        lo, hi = Xtr.min(0), Xtr.max(0)
        ood["uniform box"] = rng.uniform(lo, hi, (300, Xtr.shape[1]))
    return tasks


def image_task(rng):
    from aoe_detect.datasets import load_digits28, load_photo_patches, load_sample, noise_images

    s = load_sample()
    Xtr, ytr = s["fashion_train"]
    Xte, _ = s["fashion_test"]
    ood = {"mnist": s["mnist_test"][0], "digits28": load_digits28()[0][:1000],
           "photo patches": load_photo_patches(1000, random_state=0),
           "gaussian noise": noise_images("gaussian", 1000, random_state=0)}
    return {"fashion_mnist_sample": (Xtr, ytr, Xte, ood)}


SOURCES_TAB = {"uniform": UniformNoise(widen=0.5), "gaussian": GaussianNoise(scale=3.0),
               "lowdensity": LowDensityGMM(), "permuted": PermutedID(), "default mixture": None}
SOURCES_IMG = {"uniform": UniformNoise(), "smooth": SmoothNoise(), "lowdensity": LowDensityGMM(),
               "permuted": PermutedID(), "default mixture": None}


def run(tasks, sources, seeds, fit_kw):
    rows = []
    for task, (Xtr, ytr, Xte, ood) in tasks.items():
        for src_name, src in sources.items():
            for seed in seeds:
                t0 = time.time()
                outl = default_outliers(Xtr.shape[1:] if Xtr.ndim == 2 else (1, *Xtr.shape[1:])) \
                    if src is None else src
                det = AOEDetector(outliers=outl, random_state=seed, **fit_kw).fit(Xtr, ytr)
                s_in = det.score_samples(Xte)
                res = {k: auroc(s_in, det.score_samples(v)) for k, v in ood.items()}
                rows.append({"task": task, "source": src_name, "seed": seed, **res,
                             "mean": float(np.mean(list(res.values()))),
                             "seconds": time.time() - t0})
                print(f"{task:28s} {src_name:16s} seed {seed}: " +
                      " ".join(f"{k}={v:.3f}" for k, v in res.items()), flush=True)
    return rows


def to_markdown(rows, header):
    lines = [header, ""]
    tasks = sorted({r["task"] for r in rows}, key=[r["task"] for r in rows].index)
    for task in tasks:
        sub = [r for r in rows if r["task"] == task]
        oods = [k for k in sub[0] if k not in ("task", "source", "seed", "mean", "seconds")]
        lines += [f"### {task}", "", "| source | " + " | ".join(oods) + " | mean |",
                  "|---" * (len(oods) + 2) + "|"]
        for src in sorted({r["source"] for r in sub}, key=[r["source"] for r in sub].index):
            rs = [r for r in sub if r["source"] == src]
            cells = [f"{np.mean([r[k] for r in rs]):.3f} ± {np.std([r[k] for r in rs]):.3f}"
                     for k in oods + ["mean"]]
            lines.append(f"| {src} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--skip-images", action="store_true")
    args = ap.parse_args(argv)
    rng = np.random.RandomState(12345)
    seeds = list(range(args.seeds))
    t0 = time.time()
    rows = run(tabular_tasks(rng), SOURCES_TAB, seeds,
               dict(epochs=10, pretrain_epochs=20, batch_size=64, device="cpu"))
    if not args.skip_images:
        rows += run(image_task(rng), SOURCES_IMG, seeds,
                    dict(epochs=3, pretrain_epochs=5, batch_size=128, device="cpu"))
    wall = time.time() - t0
    cmd = "python benchmarks/outlier_defaults.py " + " ".join(argv if argv is not None else sys.argv[1:])
    meta = {"command": cmd.strip(), "machine": f"{platform.platform()}, {os.cpu_count()} CPUs",
            "torch": torch.__version__, "wall_seconds": round(wall, 1), "seeds": seeds,
            "metric": "AUROC, in-distribution positive; mean ± std over seeds"}
    header = ("# Outlier sources alone vs the default mixture (held-out OOD sets)\n\n"
              + "\n".join(f"- {k}: {v}" for k, v in meta.items()))
    write_results(os.path.join(HERE, "results", "outlier_defaults"), {"meta": meta, "rows": rows},
                  to_markdown(rows, header) + "\n")
    print(to_markdown(rows, header))


if __name__ == "__main__":
    main()
