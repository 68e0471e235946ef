"""Per-seed records -> mean ± std over seeds, per item; JSON-safe values."""

from __future__ import annotations

import math

import numpy as np

from .plan import METRICS, OOD_SETS


def _ms(values):
    """[mean, std] over seeds (sample std, 0 for one seed); nan-safe."""
    v = np.asarray([x for x in values if x is not None], dtype=float)
    if v.size == 0:
        return [float("nan"), float("nan")]
    return [float(np.mean(v)), float(np.std(v, ddof=1)) if v.size > 1 else 0.0]


def _aggregate_runs(specs, per_seed, seeds, names):
    runs = {}
    for key, spec in specs.items():
        recs = [per_seed[s][key] for s in seeds]
        agg = {"spec": spec, "per_seed": {str(s): _strip(per_seed[s][key]) for s in seeds},
               "acc": _ms([r["acc"] for r in recs]),
               "avg": {m: _ms([r["avg"][m] for r in recs]) for m in METRICS},
               "ood": {n: {m: _ms([r["ood"][n][m] for r in recs]) for m in METRICS}
                       for n in names},
               "train_seconds": _ms([r["train_seconds"] for r in recs])}
        if "adv" in recs[0]:
            agg["adv"] = {att: {e: {m: _ms([r["adv"][att][e][m] for r in recs])
                                    for m in ("auroc", "fpr95")}
                                for e in recs[0]["adv"][att]}
                          for att in recs[0]["adv"]}
        runs[key] = agg
    return runs


def _strip(rec):
    return _jsonable(rec)


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        f = float(obj)
        return f if math.isfinite(f) else None
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, (str, int, bool)) or obj is None:
        return obj
    return repr(obj)


def _item_convergence(p, convergence):
    curves = {}
    for m in p.conv_methods:
        per = [convergence[s][m] for s in p.seeds]
        its = [pt["iteration"] for pt in per[0]]
        keys = [k for k in ("auroc", "loss", "ce", "energy_in", "energy_out",
                            "mean_energy_id", "mean_energy_outlier")]
        curves[m] = {"iteration": its, "epoch": [pt["epoch"] for pt in per[0]],
                     **{k: [_ms([c[i].get(k) for c in per]) for i in range(len(its))]
                        for k in keys},
                     "per_seed": {str(s): convergence[s][m] for s in p.seeds}}
    return curves


def _item_open_questions(results, items, p, names):
    runs = results["runs"]
    unseen = results.get("unseen_sets", ["gaussian_noise", "uniform_noise", "photo_patches"])
    real = {}
    for m, k in items["real"].items():
        per_seed = runs[k]["per_seed"]
        real[m] = {"key": k, "avg": runs[k]["avg"], "acc": runs[k]["acc"],
                   "ood": {n: runs[k]["ood"][n]["auroc"] for n in names},
                   "unseen_auroc": _ms([np.mean([per_seed[str(s)]["ood"][n]["auroc"]
                                                 for n in unseen]) if unseen else None
                                        for s in p.seeds]),
                   "adv": runs[k].get("adv")}
    strong = {lab: {"key": k, "avg": runs[k]["avg"], "acc": runs[k]["acc"],
                    "adv": runs[k].get("adv"), "train_seconds": runs[k]["train_seconds"]}
              for lab, k in items["strong"].items()}
    return {"real_outliers": real, "real_source": p.real_outliers,
            "unseen_sets": list(unseen), "strong": strong}


def _items(results, items, p, convergence, crosscheck):
    runs = results["runs"]
    names = results.get("ood_sets", list(OOD_SETS))
    out = {}
    main = items.get("main", {})
    if 1 in p.items:
        out["1"] = {src: {m: {"key": k, "avg": runs[k]["avg"], "ood": runs[k]["ood"]}
                          for m, k in meth.items()} for src, meth in main.items()}
    if 2 in p.items:
        out["2"] = {src: {m: {"key": k, "adv": runs[k]["adv"]} for m, k in main[src].items()}
                    for src in p.adv_sources if src in main}
    if 3 in p.items:
        pre = [results["pretrained"][str(s)]["acc"] for s in p.seeds]
        out["3"] = {"pretrained": _ms(pre),
                    **{src: {m: runs[k]["acc"] for m, k in meth.items()}
                       for src, meth in main.items()}}
    if 4 in p.items:
        out["4"] = _item_convergence(p, convergence)
    if 5 in p.items:
        out["5"] = {"source": p.sample_source,
                    **{m: {str(n): {"key": k, "auroc": runs[k]["avg"]["auroc"],
                                    "fpr95": runs[k]["avg"]["fpr95"]}
                           for n, k in sizes.items()}
                       for m, sizes in items["sample"].items()}}
    if 6 in p.items:
        out["6"] = _item_open_questions(results, items, p, names)
    if 7 in p.items:
        out["7"] = {fam: {m: {"key": k, "ood": {n: runs[k]["ood"][n]["auroc"] for n in names},
                              "avg": runs[k]["avg"]["auroc"], "fpr95": runs[k]["avg"]["fpr95"]}
                          for m, k in meth.items()}
                    for fam, meth in items["ablation"].items()}
    if 8 in p.items:
        out["8"] = crosscheck if crosscheck is not None else {
            "status": "skipped", "detail": "item 8 needs the main table's AOE-FGSM run on the "
                                           "default mixture (sources must include 'default')"}
    return _jsonable(out)
