"""Test accuracy of the default image recipe on full Fashion-MNIST (issue 9, item 3).

One ``AOEDetector(random_state=seed)`` fit with every default (backbone ``"auto"`` = the
small CNN, ``pretrain_epochs="auto"``, ``epochs="auto"``, default outliers and attack) on
all 60 000 Fashion-MNIST training images (the detector holds out ``validation_fraction``
of them itself), then the classifier's accuracy on the 10 000 test images. The per-epoch
held-out accuracy of ``history_`` shows where the accuracy comes from (pretraining vs
fine-tuning). Wall time is the CPU budget of the recipe on this machine.

Run: ``python benchmarks/recipe_accuracy.py --data-root /tmp/aoe_data --threads 1``
Writes ``benchmarks/results/recipe_accuracy.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np
import torch

from aoe_detect import AOEDetector
from aoe_detect import datasets as ds

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def run(seed, data_root, n_train=None):
    X, y = ds.load_fashion_mnist(root=data_root, split="train")
    Xt, yt = ds.load_fashion_mnist(root=data_root, split="test")
    if n_train:
        X, y = X[:n_train], y[:n_train]
    t0 = time.time()
    det = AOEDetector(random_state=seed, device="cpu").fit(X, y)
    wall = time.time() - t0
    acc = float((det.predict_class(Xt) == yt).mean())
    hist = [{k: r.get(k) for k in ("stage", "epoch", "val_accuracy", "train_loss")} for r in det.history_]
    return {"seed": seed, "n_train": int(len(X)), "test_accuracy": acc, "fit_seconds": wall,
            "history": hist}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=1)
    p.add_argument("--data-root", default=None)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--n-train", type=int, default=None)
    p.add_argument("--out", default=RESULTS)
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    rows = [run(s, a.data_root, a.n_train) for s in range(a.seeds)]
    res = {"command": "python benchmarks/recipe_accuracy.py " + " ".join(argv or []),
           "machine": f"{platform.platform()}, {os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}",
           "torch": torch.__version__, "runs": rows}
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "recipe_accuracy.json"), "w") as f:
        json.dump(res, f, indent=1)
    lines = ["# Default image recipe: test accuracy on Fashion-MNIST", "",
             f"- command: `{res['command']}`", f"- machine: {res['machine']}", f"- torch: {res['torch']}", "",
             "| seed | training images | test accuracy | fit time (min) |", "|---|---|---|---|"]
    lines += [f"| {r['seed']} | {r['n_train']} | {r['test_accuracy']:.4f} | {r['fit_seconds'] / 60:.1f} |"
              for r in rows]
    lines += ["", "Held-out (validation) accuracy per epoch, seed 0:", "",
              "| stage | epoch | val accuracy |", "|---|---|---|"]
    lines += [f"| {h['stage']} | {h['epoch']} | {h['val_accuracy']} |" for h in rows[0]["history"]]
    with open(os.path.join(a.out, "recipe_accuracy.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
