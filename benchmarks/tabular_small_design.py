"""Tabular defaults for small and label-free data, chosen on digits only (issue 9).

The confirmation in ``benchmarks/results/tabular_outliers.md`` showed the automatic length
helping wine and hurting label-free breast cancer. Those are confirmation sets, so they do
not choose; this script asks the question on design tasks built from scikit-learn's digits
that mimic the two regimes (written before any of its results was seen):

- ``small``: digits 0-4, 120 labelled training rows (wine's size), OOD digits 5-9;
- ``label-free``: digits 0-4, 250 rows without labels (breast cancer's size), OOD 5-9;
- ``mid``: digits 0-4, 70% of the rows with labels (the earlier design split).

Candidates: ``ood_score`` in {energy+mahalanobis (default), mahalanobis, knn, energy} x
training length in {auto (500-step floor, default), a 200-step floor, 10 + 10 epochs}.
Rule: the highest mean AUROC over the three tasks and 3 seeds. Then, reported only: wine
(classes 0-1 vs 2, labels) and breast cancer (benign vs malignant, label-free), the chosen
and the current default vs IsolationForest and LocalOutlierFactor(novelty=True).

Run: ``python benchmarks/tabular_small_design.py``; writes
``benchmarks/results/tabular_small_design.{json,md}``.
"""

from __future__ import annotations

import math
import os
import platform
import sys
import time
import warnings

import numpy as np
import torch
from sklearn.datasets import load_breast_cancer, load_wine
from sklearn.ensemble import IsolationForest
from sklearn.neighbors import LocalOutlierFactor
from sklearn.preprocessing import StandardScaler

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from aoe_detect import AOEDetector  # noqa: E402
from aoe_detect.metrics import auroc  # noqa: E402
from benchmarks._lab import digits_design_split, id_split, write_results  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
SCORES = ("energy+mahalanobis", "mahalanobis", "knn", "energy")
LENGTHS = ("auto", "floor200", "10+10")
SEEDS = (0, 1, 2)


def _length(kind, n_train, labelled):
    if kind == "auto":
        return {}
    if kind == "10+10":
        return {"epochs": 10, "pretrain_epochs": 10 if labelled else 0}
    steps = math.ceil(int(round(0.9 * n_train)) / 128)
    e = max(10, math.ceil(200 / steps))
    return {"epochs": e, "pretrain_epochs": e if labelled else 0}


def design_split(task, seed):
    n = {"small": 120, "label-free": 250, "mid": 0.7}[task]
    s = digits_design_split(100 + seed, n, labelled=task != "label-free")
    return s.X_train, s.y_train, s.X_test, s.X_ood


def confirm_split(name, seed):
    if name == "wine":
        X, y = load_wine(return_X_y=True)
        m, lab = y < 2, True
    else:
        X, y = load_breast_cancer(return_X_y=True)
        m, lab = y == 1, False
    s = id_split(X, y, m, seed, 0.7, labelled=lab)
    return s.X_train, s.y_train, s.X_test, s.X_ood


def fit_auroc(split, score, length, seed):
    Xtr, ytr, Xte, Xood = split
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        det = AOEDetector(ood_score=score, random_state=seed, device="cpu",
                          **_length(length, len(Xtr), ytr is not None)).fit(Xtr, ytr)
    return float(auroc(det.score_samples(Xte), det.score_samples(Xood)))


def classical(split, seed):
    Xtr, _, Xte, Xood = split
    sc = StandardScaler().fit(Xtr)
    out = {}
    for name, est in (("IsolationForest", IsolationForest(random_state=seed)),
                      ("LocalOutlierFactor(novelty=True)", LocalOutlierFactor(novelty=True))):
        est.fit(sc.transform(Xtr))
        out[name] = float(auroc(est.score_samples(sc.transform(Xte)), est.score_samples(sc.transform(Xood))))
    return out


def main():
    torch.set_num_threads(1)
    t0 = time.time()
    design = {}
    for score in SCORES:
        for length in LENGTHS:
            key = f"{score} | {length}"
            design[key] = {t: [fit_auroc(design_split(t, s), score, length, s) for s in SEEDS]
                           for t in ("small", "label-free", "mid")}
            print(key, {t: round(float(np.mean(v)), 3) for t, v in design[key].items()}, flush=True)
    mean = {k: float(np.mean([np.mean(v) for v in r.values()])) for k, r in design.items()}
    chosen = max(mean, key=mean.get)
    confirm = {}
    for name in ("wine", "breast cancer"):
        rows = {k: [] for k in (chosen, "energy+mahalanobis | auto")}
        rows.update({"IsolationForest": [], "LocalOutlierFactor(novelty=True)": []})
        for s in SEEDS:
            sp = confirm_split(name, s)
            for k in (chosen, "energy+mahalanobis | auto"):
                score, length = k.split(" | ")
                rows[k].append(fit_auroc(sp, score, length, s))
            for k, v in classical(sp, s).items():
                rows[k].append(v)
        confirm[name] = rows
        print(name, {k: round(float(np.mean(v)), 3) for k, v in rows.items()}, flush=True)
    res = {"command": "python benchmarks/tabular_small_design.py",
           "machine": f"{platform.platform()}, {os.cpu_count()} CPUs, 1 torch thread",
           "torch": torch.__version__, "wall_seconds": round(time.time() - t0, 1),
           "design": design, "design_mean": mean, "chosen": chosen, "confirm": confirm}
    ms = lambda v: f"{np.mean(v):.3f} ± {np.std(v):.3f}"  # noqa: E731
    L = ["# Tabular score and length on small / label-free design tasks (digits only)", "",
         f"- command: `{res['command']}`", f"- machine: {res['machine']}; torch {res['torch']}",
         f"- wall: {res['wall_seconds'] / 60:.1f} min; seeds {list(SEEDS)}; AUROC, ID positive", "",
         "## Design (chooses)", "", "| ood_score | length | small (120 rows) | label-free (250) | mid (labels) | mean |",
         "|---|---|---|---|---|---|"]
    for k, r in sorted(design.items(), key=lambda kv: -mean[kv[0]]):
        sc, ln = k.split(" | ")
        L.append(f"| {sc} | {ln} | {ms(r['small'])} | {ms(r['label-free'])} | {ms(r['mid'])} | {mean[k]:.3f} |")
    L += ["", f"Chosen by the rule: **{chosen}**.", "", "## Confirmation (reported only)", "",
          "| method | wine 0-1 vs 2 | breast cancer (label-free) |", "|---|---|---|"]
    for k in confirm["wine"]:
        L.append(f"| {k} | {ms(confirm['wine'][k])} | {ms(confirm['breast cancer'][k])} |")
    write_results(os.path.join(HERE, "results", "tabular_small_design"), res, "\n".join(L) + "\n")
    print("\n".join(L))


if __name__ == "__main__":
    main()
