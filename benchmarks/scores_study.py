"""Feature-space scores vs the post-hoc peers (issue 12), with a design/evaluation split.

For every seed: one plain cross-entropy backbone (CE) is trained, and OE and AOE-FGSM are
fine-tuned from copies of it with ``AOEDetector``; every score of ``aoe_detect.scores`` and
every pytorch-ood peer (MSP, energy, max-logit, Mahalanobis, deep k-NN, ViM) is computed on
all three backbones from the same features.

Protocol (written before any result was seen):

- **Design split** (chooses the default ``ood_score``): Fashion-MNIST classes 0-5 as ID and
  the *held-out classes* 6-9 (shirt, sneaker, bag, ankle boot) of its test split as OOD (near
  OOD, made from ID-domain data only), and scikit-learn digits 0-4 (standardised, MLP) with
  digits 5-9 as OOD. Rule: the default is the score with the highest mean AUROC over the
  design tasks on the AOE backbone (ties: lower mean FPR@95).
- **Evaluation** (reported, never used to choose): Fashion-MNIST all 10 classes as ID; OOD:
  MNIST, digits28, photo patches (non-noise) and Gaussian/uniform noise; adversarial AUROC
  of PGD-10 (eps 0.03) against each detector's own score on the MNIST images.

Run: ``python benchmarks/scores_study.py --seeds 3 --data-root /tmp/aoe_data``
(needs pytorch-ood: ``pip install -e ".[bench]"``). The peers and the feature extraction are
shared with the paper suite (``benchmarks/paper/peers.py``). Writes ``benchmarks/results/scores_study.{json,md}``.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import sys
import time

import numpy as np
import torch
from sklearn.preprocessing import StandardScaler

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from aoe_detect import AOEDetector  # noqa: E402
from aoe_detect import datasets as ds  # noqa: E402
from aoe_detect.attacks import PGD  # noqa: E402
from aoe_detect.metrics import ood_report  # noqa: E402
from aoe_detect.scores import SCORES, ScoreHead  # noqa: E402
from benchmarks._lab import digits_design_split, evaluation_sets, write_results  # noqa: E402
from benchmarks._lab import stratified as _stratified  # noqa: E402
from benchmarks._lab import to_unit as _img  # noqa: E402
from benchmarks.paper.peers import PEERS  # noqa: E402,F401  (shared with the paper suite)
from benchmarks.paper.peers import features as _features  # noqa: E402
from benchmarks.paper.peers import metrics as _metrics  # noqa: E402
from benchmarks.paper.peers import own_scores as _own_scores  # noqa: E402
from benchmarks.paper.peers import peer_scores as _peer_scores  # noqa: E402

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def _adversarial(module, scorer, X_ood, X_id_scores, eps):
    head = ScoreHead(module, scorer).eval()
    att = PGD(steps=10)
    gen = torch.Generator().manual_seed(0)
    adv = att.perturb(head, X_ood, eps, clip=(0.0, 1.0), temperature=1.0, generator=gen)
    with torch.inference_mode():
        s = head(adv)[:, 0].double().numpy()
    return float(ood_report(X_id_scores, s)["auroc"])


def _fit_three(X, y, seed, pre, ft, backbone=None):
    common = dict(random_state=seed, batch_size=128, device="cpu")
    ce = AOEDetector(backbone=backbone or "auto", outliers=None, pretrain_epochs=pre, epochs=0,
                     **common).fit(X, y)
    out = {"ce": ce}
    for name, attack in (("oe", None), ("aoe", "fgsm")):
        out[name] = AOEDetector(backbone=copy.deepcopy(ce.module_), pretrain_epochs=0, epochs=ft,
                                attack=attack, **common).fit(X, y)
    return out


def _run_task(task, seed, gen, adversarial=False, eps=0.03):
    X_tr, y_tr, X_val, evals_x, ood_names, pre, ft = task["data"]
    t0 = time.time()
    nets = _fit_three(X_tr.numpy() if task["tabular"] else (X_tr[:, 0].numpy() * 255).round().astype(np.uint8),
                      y_tr, seed, pre, ft)
    fit_s = time.time() - t0
    rows = {}
    for bb, det in nets.items():
        m = det.module_.eval()
        train = _features(m, X_tr)
        val = _features(m, X_val)
        evals = {k: _features(m, v) for k, v in evals_x.items()}
        acc = float((evals["id"][0].argmax(1).numpy() == task["y_id"]).mean())
        own = _own_scores(m, train, val, evals, y_tr, gen)
        peers = _peer_scores(m, train, evals, y_tr)
        rows[bb] = {"accuracy": acc, "own": {}, "peer": {}}
        for name, sc in own.items():
            scorer = sc.pop("_scorer")
            rows[bb]["own"][name] = _metrics(sc, ood_names)
            if adversarial and "mnist" in evals_x:
                rows[bb]["own"][name]["adv_auroc_mnist"] = _adversarial(
                    m, scorer, evals_x["mnist"][:500], sc["id"], eps)
        for name, sc in peers.items():
            rows[bb]["peer"][name] = _metrics(sc, ood_names)
    rows["fit_seconds"] = fit_s
    return rows


def design_tasks(data_root, n_fashion):
    Xf, yf = ds.load_fashion_mnist(root=data_root, split="train")
    Xt, yt = ds.load_fashion_mnist(root=data_root, split="test")
    keep = np.flatnonzero(yf < 6)
    idx = keep[_stratified(yf[keep], n_fashion, 11)]
    val = keep[_stratified(yf[keep], 1200, 12)]
    val = np.setdiff1d(val, idx)
    te_id = np.flatnonzero(yt < 6)[:3000]
    te_ood = np.flatnonzero(yt >= 6)[:2000]
    fashion = {"name": "fashion_0-5_vs_6-9", "tabular": False, "y_id": yt[te_id],
               "data": (_img(Xf[idx]), yf[idx], _img(Xf[val]),
                        {"id": _img(Xt[te_id]), "heldout_classes": _img(Xt[te_ood])},
                        ["heldout_classes"], 3, 2)}
    s = digits_design_split(13, 600, n_val=100)
    sc = StandardScaler().fit(s.X_train)
    f = lambda a: torch.from_numpy(sc.transform(a).astype(np.float32))  # noqa: E731
    digits = {"name": "digits_0-4_vs_5-9", "tabular": True, "y_id": s.y_test,
              "data": (f(s.X_train), s.y_train, f(s.X_val),
                       {"id": f(s.X_test), "digits_5-9": f(s.X_ood)}, ["digits_5-9"], 10, 5)}
    return [fashion, digits]


def eval_task(data_root, n_train):
    X_tr, y_tr, X_val, X_te, y_te, ood = evaluation_sets(data_root, n_train)
    evals = {"id": _img(X_te), **{k: _img(v) for k, v in ood.items()}}
    return {"name": "fashion_all_vs_ood", "tabular": False, "y_id": y_te,
            "data": (_img(X_tr), y_tr, _img(X_val), evals, list(ood), 3, 2)}


def _mean(rows, bb, kind, name, sets, metric):
    return float(np.mean([r[bb][kind][name][s][metric] for r in rows for s in sets]))


def choose_default(design):
    table = {}
    for name in SCORES:
        au = np.mean([_mean(rows, "aoe", "own", name, sets, "auroc") for rows, sets in design])
        fp = np.mean([_mean(rows, "aoe", "own", name, sets, "fpr95") for rows, sets in design])
        table[name] = (float(au), float(fp))
    best = sorted(table, key=lambda k: (-round(table[k][0], 4), table[k][1]))[0]
    return best, table


def report(res):
    L = ["# Feature-space scores vs post-hoc peers (issue 12)", "",
         f"Command: `{res['command']}`  ", f"Machine: {res['machine']}; seeds {res['seeds']}; "
         f"{res['minutes']:.1f} min.", "",
         "All detectors share one backbone per seed and row: CE = plain cross-entropy "
         "(3 epochs), OE / AOE = 2 epochs of outlier exposure (default outliers) fine-tuned "
         "from a copy of the CE net. Peers are pytorch-ood's detectors on the same features. "
         "AUROC / FPR@95 (ID-positive), mean over seeds.", "",
         "## Design split (chooses the default score)", ""]
    for tname, t in res["design"].items():
        L += [f"### {tname}", "", "| backbone | score | AUROC | FPR@95 |", "|---|---|---|---|"]
        for bb in ("ce", "oe", "aoe"):
            for kind in ("own", "peer"):
                for name in (SCORES if kind == "own" else PEERS):
                    au = _mean(t["rows"], bb, kind, name, t["sets"], "auroc")
                    fp = _mean(t["rows"], bb, kind, name, t["sets"], "fpr95")
                    label = name if kind == "own" else f"peer: {name}"
                    L.append(f"| {bb} | {label} | {au:.3f} | {fp:.3f} |")
        L.append("")
    L += ["Design rule: highest mean AUROC over the design tasks on the AOE backbone.", "",
          "| score | mean AUROC | mean FPR@95 |", "|---|---|---|"]
    for k, (a, f) in res["choice_table"].items():
        L.append(f"| {k} | {a:.3f} | {f:.3f} |")
    L += ["", f"**Chosen default: `{res['chosen']}`**", ""]
    ev = res.get("evaluation")
    if ev:
        sets, near = ev["sets"], [s for s in ev["sets"] if "noise" not in s]
        L += ["## Evaluation (Fashion-MNIST, all classes ID; played no part in the choice)", "",
              "Mean over the non-noise sets (" + ", ".join(near) + ") and over all sets; "
              "per-set AUROC; adversarial = PGD-10 eps 0.03 on MNIST against the score itself.",
              "", "| backbone | score | AUROC non-noise | FPR@95 non-noise | AUROC all | "
              + " | ".join(sets) + " | adv. AUROC | ID acc |",
              "|---|---|---|---|---|" + "---|" * len(sets) + "---|---|"]
        rows = ev["rows"]
        for bb in ("ce", "oe", "aoe"):
            acc = np.mean([r[bb]["accuracy"] for r in rows])
            for kind in ("own", "peer"):
                for name in (SCORES if kind == "own" else PEERS):
                    a1 = _mean(rows, bb, kind, name, near, "auroc")
                    f1 = _mean(rows, bb, kind, name, near, "fpr95")
                    a2 = _mean(rows, bb, kind, name, sets, "auroc")
                    per = [_mean(rows, bb, kind, name, [s], "auroc") for s in sets]
                    adv = (np.mean([r[bb][kind][name].get("adv_auroc_mnist", np.nan) for r in rows])
                           if kind == "own" else np.nan)
                    label = name if kind == "own" else f"peer: {name}"
                    L.append(f"| {bb} | {label} | {a1:.3f} | {f1:.3f} | {a2:.3f} | "
                             + " | ".join(f"{p:.3f}" for p in per)
                             + f" | {'' if np.isnan(adv) else f'{adv:.3f}'} | {acc:.3f} |")
        L.append("")
        L += ["### Per seed: chosen default on AOE vs the best peer (non-noise mean)", "",
              "| seed | chosen AUROC | chosen FPR@95 | best peer | its AUROC | its FPR@95 |",
              "|---|---|---|---|---|---|"]
        for i, r in enumerate(rows):
            ca = np.mean([r["aoe"]["own"][res["chosen"]][s]["auroc"] for s in near])
            cf = np.mean([r["aoe"]["own"][res["chosen"]][s]["fpr95"] for s in near])
            best = max(((bb, p) for bb in ("ce", "oe", "aoe") for p in PEERS),
                       key=lambda t: np.mean([r[t[0]]["peer"][t[1]][s]["auroc"] for s in near]))
            pa = np.mean([r[best[0]]["peer"][best[1]][s]["auroc"] for s in near])
            pf = np.mean([r[best[0]]["peer"][best[1]][s]["fpr95"] for s in near])
            L.append(f"| {res['seeds'][i]} | {ca:.3f} | {cf:.3f} | {best[1]} on {best[0]} | "
                     f"{pa:.3f} | {pf:.3f} |")
        L.append("")
    return "\n".join(L)


def plot(res, out):
    """Two PNGs: AUROC of every score on CE/OE/AOE (evaluation, non-noise mean, with the
    peers), and per-set AUROC of the chosen score vs the best peer."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ev = res.get("evaluation")
    if not ev:
        return []
    rows, sets = ev["rows"], ev["sets"]
    near = [s for s in sets if "noise" not in s]
    fig, ax = plt.subplots(figsize=(10, 4))
    names = [("own", n) for n in SCORES] + [("peer", n) for n in PEERS]
    width = 0.27
    for i, bb in enumerate(("ce", "oe", "aoe")):
        vals = [_mean(rows, bb, k, n, near, "auroc") for k, n in names]
        errs = [np.std([np.mean([r[bb][k][n][s]["auroc"] for s in near]) for r in rows])
                for k, n in names]
        ax.bar(np.arange(len(names)) + (i - 1) * width, vals, width, yerr=errs,
               label=bb.upper(), capsize=2)
    ax.set_xticks(np.arange(len(names)))
    ax.set_xticklabels([n if k == "own" else f"peer: {n}" for k, n in names], fontsize=8,
                       rotation=30, ha="right")
    ax.set_ylim(0.4, 1.0)
    ax.set_ylabel("AUROC, mean over " + ", ".join(near))
    ax.set_title("Fashion-MNIST ID: each score on the CE / OE / AOE backbone (mean ± std over seeds)")
    ax.legend()
    fig.tight_layout()
    p1 = out + "_auroc.png"
    fig.savefig(p1, dpi=110)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(8, 4))
    chosen = res["chosen"]
    for j, (bb, kind, name, label) in enumerate(
            (("aoe", "own", chosen, f"AOE + {chosen} (default)"),
             ("aoe", "own", "energy", "AOE + energy (paper)"),
             ("ce", "peer", "mahalanobis", "CE + pytorch-ood Mahalanobis"),
             ("oe", "own", "energy", "OE + energy"))):
        vals = [_mean(rows, bb, kind, name, [s], "auroc") for s in sets]
        ax.bar(np.arange(len(sets)) + (j - 1.5) * 0.2, vals, 0.2, label=label)
    ax.set_xticks(np.arange(len(sets)))
    ax.set_xticklabels(sets, fontsize=8)
    ax.set_ylim(0.0, 1.02)
    ax.set_ylabel("AUROC (mean over seeds)")
    ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    p2 = out + "_per_set.png"
    fig.savefig(p2, dpi=110)
    plt.close(fig)
    return [p1, p2]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--data-root", default="/tmp/aoe_data")
    ap.add_argument("--n-design", type=int, default=12000)
    ap.add_argument("--n-train", type=int, default=20000)
    ap.add_argument("--skip-eval", action="store_true")
    ap.add_argument("--out", default=os.path.join(RESULTS, "scores_study"))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--cache", default=None,
                    help="JSON file of finished (task, seed) rows: reused, and written after each")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    t0 = time.time()
    seeds = list(range(a.seeds))
    cache_path = a.cache or a.out + ".partial.json"
    cache = json.load(open(cache_path)) if os.path.exists(cache_path) else {}

    def cached(key, fn):
        if key not in cache:
            cache[key] = fn()
            with open(cache_path, "w") as fh:
                json.dump(cache, fh, default=float)
            print(f"{key} done at {time.time() - t0:.0f}s", flush=True)
        return cache[key]

    tasks = design_tasks(a.data_root, a.n_design)
    design = {t["name"]: {"rows": [], "sets": t["data"][4]} for t in tasks}
    for seed in seeds:
        for t in tasks:
            design[t["name"]]["rows"].append(cached(
                f"design/{t['name']}/{seed}",
                lambda: _run_task(t, seed, torch.Generator().manual_seed(seed))))
    chosen, table = choose_default([(d["rows"], d["sets"]) for d in design.values()])
    print("chosen", chosen, table, flush=True)
    res = {"command": "python benchmarks/scores_study.py " + " ".join(argv or sys.argv[1:]),
           "threads": a.threads,
           "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}",
           "seeds": seeds, "design": design, "choice_table": table, "chosen": chosen}
    if not a.skip_eval:
        t = eval_task(a.data_root, a.n_train)
        rows = [cached(f"eval/{t['name']}/{seed}",
                       lambda: _run_task(t, seed, torch.Generator().manual_seed(seed),
                                         adversarial=True))
                for seed in seeds]
        res["evaluation"] = {"rows": rows, "sets": t["data"][4]}
    res["minutes"] = (time.time() - t0) / 60
    write_results(a.out, res, report(res), default=float)
    try:
        plot(res, a.out)
    except ImportError:  # matplotlib is optional
        pass
    print(report(res))


if __name__ == "__main__":
    main()
