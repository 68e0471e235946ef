"""Training length on the design split only: is the 500-step floor right for fine-tuning?

Follow-up of ``benchmarks/tabular_outliers.py``, whose confirmation showed the automatic
length helping wine (labels) and hurting label-free breast cancer. That observation must
not choose anything (it is confirmation data), so the question is asked here on the design
split: scikit-learn digits, classes 0-4 ID, 5-9 OOD, with labels and label-free, package
defaults otherwise, 3 seeds. Every configuration is recorded.

Run: ``OMP_NUM_THREADS=1 python benchmarks/tabular_length_design.py``; writes
``benchmarks/results/tabular_length_design.{json,md}``.
"""

from __future__ import annotations

import os
import platform
import sys
import time
import warnings

import numpy as np
import torch

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from aoe_detect import AOEDetector  # noqa: E402
from aoe_detect.metrics import auroc  # noqa: E402
from benchmarks._lab import digits_design_split, write_results  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
CONFIGS = {
    "labels, auto + auto (default)": (True, {}),
    "labels, pretrain auto, finetune 10": (True, {"epochs": 10}),
    "labels, 10 + 10 (before issue 9)": (True, {"epochs": 10, "pretrain_epochs": 10}),
    "label-free, finetune auto (default)": (False, {}),
    "label-free, finetune 10 (before issue 9)": (False, {"epochs": 10}),
}


def main():
    torch.set_num_threads(1)
    rows, t0 = [], time.time()
    for name, (lab, kw) in CONFIGS.items():
        vals = []
        for seed in range(3):
            s = digits_design_split(seed, 0.7, labelled=lab)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                det = AOEDetector(random_state=seed, device="cpu", **kw).fit(
                    s.X_train, s.y_train)
            vals.append(auroc(det.score_samples(s.X_test), det.score_samples(s.X_ood)))
        rows.append({"config": name, "auroc": vals})
        print(f"{name:45s} {np.mean(vals):.3f} ± {np.std(vals):.3f}", flush=True)
    meta = {"command": "OMP_NUM_THREADS=1 python benchmarks/tabular_length_design.py",
            "machine": f"{platform.platform()}, {os.cpu_count()} CPUs, 1 torch thread",
            "torch": torch.__version__, "wall_seconds": round(time.time() - t0, 1)}
    md = ["# Training length on the design split (digits 0-4 ID vs 5-9), AUROC over 3 seeds", ""]
    md += [f"- {k}: {v}" for k, v in meta.items()] + ["", "| configuration | AUROC |", "|---|---|"]
    md += [f"| {r['config']} | {np.mean(r['auroc']):.3f} ± {np.std(r['auroc']):.3f} |" for r in rows]
    write_results(os.path.join(HERE, "results", "tabular_length_design"),
                  {"meta": meta, "rows": rows}, "\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
