"""The suite's report: Markdown (verdicts first, then one section per item) and JSON files.

:func:`write_results` writes ``paper_<profile>.json``, ``.md``, the seed-0 score arrays
(``_scores.npz``) and, when matplotlib is installed, the PNG figures; :func:`rerender`
rewrites the report of a finished run from its JSON without training.
"""

from __future__ import annotations

import json
import math
import os

import numpy as np

from . import plots as figures
from .aggregate import _jsonable, _ms
from .peers import PEER_LABELS
from .plan import (METHODS, METRICS, OOD_SETS, SOURCE_LABELS, _eps_key, _label, plan_from_json,
                   profile_from_json)
from .verdicts import best_peer, conclusions

_METRICS = METRICS


def _fmt(ms, digits=4, pct=False):
    if ms is None:
        return "n/a"
    m, s = ms
    if m is None or not math.isfinite(m):
        return "n/a"
    if pct:
        m, s = m * 100, (s or 0.0) * 100
        return f"{m:.2f} ± {s:.2f}"
    return f"{m:.{digits}f} ± {(s or 0.0):.{digits}f}"


def format_table(header, rows):
    """A Markdown table from a header list and rows of strings."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def _header(results):
    meta, prof = results["meta"], results["profile"]
    names = results.get("ood_sets", list(OOD_SETS))
    seeds = prof["seeds"]
    eps_name = f"{prof['epsilon'] * 255:.0f}/255"
    L = [f"# AOE paper benchmark — `{prof['name']}` profile", ""]
    L += [f"Command: `{meta['command']}`", "",
          f"Machine: {meta['platform']}, {meta['cpu']} ({meta['cpu_count']} CPU cores available, "
          f"torch threads {meta['torch_threads']}), device `{meta['device']}`. Versions: "
          f"aoe-detect {meta['aoe_detect']}, torch {meta['torch']}, scikit-learn {meta['sklearn']}, "
          f"numpy {meta['numpy']}, Python {meta['python']}.", "",
          f"Wall time: {meta['wall_seconds'] / 60:.1f} min (finished {meta['date']}). "
          "The machine was shared with other jobs; times are indicative only.", ""]
    if prof.get("notes"):
        L += [f"**Profile.** {prof['notes']}", ""]
    ds = results["data_sizes"]
    L += [f"**Setup.** In-distribution: {results.get('id_description', 'Fashion-MNIST')} "
          f"({ds['id_train']} training images, 10% held out by the detector for its threshold; "
          f"{ds['id_test']} test images). OOD test sets (fixed before any result, identical for "
          "all methods and seeds): " + ", ".join(f"{_label(k)} ({ds[k]})" for k in names)
          + f". Backbone: SmallCNN (3 conv blocks) of width {prof['width']}, pretrained with "
          f"cross-entropy for {prof['pretrain_epochs']} epochs (lr {prof.get('pretrain_lr', prof['lr'])}) "
          "once per seed; every method is "
          f"fine-tuned {prof['epochs']} epochs from a copy of those weights (Adam, lr "
          f"{prof['lr']}, batch {prof['batch_size']} ID + {prof['batch_size']} outliers, energy-"
          f"margin loss with automatic margins). Attack radius eps = {eps_name} for training "
          f"(AOE-PGD: {prof['pgd_steps']} steps, random start; OE + Gaussian noise uses noise "
          f"std = eps). Outlier pools of {prof['pool_size']} are drawn once per seed from each "
          f"source; the DCGAN (width {prof['gan_width']}, {prof['gan_epochs']} epochs, latent "
          f"sigma {prof['gan_sigma']}) is trained once per seed. Seeds: {seeds}; tables show "
          "mean ± sample std over seeds" + (" (one seed: std 0)" if len(seeds) == 1 else "") + ".",
          "",
          "Conventions: scores are `-energy` (higher = more in-distribution); AUROC, AUPR-in "
          "and FPR95 take in-distribution as the positive class (FPR95 = fraction of OOD "
          "accepted when 95% of ID is accepted, lower is better); AUPR-out takes OOD as "
          "positive. AUPR is sklearn's average precision.", ""]
    return L


def _verdict_lines(results):
    L = ["## Verdicts on the paper's claims", ""]
    for c in results["conclusions"]:
        L += [f"- **{c['claim']}: {c['verdict'].upper()}.** Rule: {c['rule']}."]
        L += [f"  - {e}" for e in c["evidence"]]
        if c.get("peer_comparison"):
            L += [f"  - Best peer: {c['peer_comparison']}"]
    L += [""]
    return L


def _section_1(results, items, names, prof, plots):
    L = []
    L += ["## 1. OOD detection", ""]
    for src, meth in items["1"].items():
        L += [f"### Outliers: {SOURCE_LABELS[src]}", "", "AUROC per OOD set and averages "
              "over the sets:", ""]
        hdr = ["method"] + [_label(k) for k in names] + [
            "avg AUROC", "avg AUPR-in", "avg AUPR-out", "avg FPR95"]
        rows = [[METHODS[m][0]] + [_fmt(r["ood"][k]["auroc"]) for k in names]
                + [_fmt(r["avg"][x]) for x in _METRICS] for m, r in meth.items()]
        near = [k for k in names if "noise" not in k]
        L += [format_table(hdr, rows), "", "Averages without the noise sets ("
              + ", ".join(_label(k) for k in near) + "; generic noise is easy by construction for "
              "an outlier source that contains noise, and the real question is near OOD), mean "
              "over seeds of the per-set means:", ""]
        rows = [[METHODS[m][0]] + [f"{np.mean([r['ood'][k][x][0] for k in near]):.4f}"
                                   for x in ("auroc", "fpr95")] for m, r in meth.items()]
        L += [format_table(["method", "non-noise avg AUROC", "non-noise avg FPR95"], rows), "",
              "FPR95 per OOD set:", ""]
        rows = [[METHODS[m][0]] + [_fmt(r["ood"][k]["fpr95"]) for k in names]
                for m, r in meth.items()]
        L += [format_table(["method"] + [_label(k) for k in names], rows), ""]
        rows = [[METHODS[m][0]] + [f"{_fmt(r['ood'][k]['aupr_in'], 3)} / "
                                   f"{_fmt(r['ood'][k]['aupr_out'], 3)}" for k in names]
                for m, r in meth.items()]
        L += ["AUPR-in / AUPR-out per OOD set:", "",
              format_table(["method"] + [_label(k) for k in names], rows), ""]
    if "hist" in plots:
        L += [f"![score histograms]({plots['hist']})", ""]
    return L


def _section_2(results, items, names, prof, plots):
    L = []
    L += ["## 2. Adversarial OOD detection", "",
          f"OOD test inputs (first {prof['n_adv']} of each set) attacked toward LOW energy "
          f"(to look in-distribution) with FGSM and PGD ({prof['adv_pgd_steps']} steps, "
          "step 2.5·eps/steps, random start) against each model; ID test inputs clean. "
          "Averages over the five OOD sets.", ""]
    for src, meth in items["2"].items():
        for att in ("fgsm", "pgd"):
            eps_keys = list(next(iter(meth.values()))["adv"][att].keys())
            hdr = ["method"] + [f"AUROC eps={float(e):g}" for e in eps_keys] + [
                f"FPR95 eps={float(e):g}" for e in eps_keys]
            rows = [[METHODS[m][0]] + [_fmt(r["adv"][att][e]["auroc"]) for e in eps_keys]
                    + [_fmt(r["adv"][att][e]["fpr95"]) for e in eps_keys]
                    for m, r in meth.items()]
            L += [f"**{att.upper()} attack, outliers: {SOURCE_LABELS[src]}**", "",
                  format_table(hdr, rows), ""]
    if "adv" in plots:
        L += [f"![adversarial AUROC vs eps]({plots['adv']})", ""]
    return L


def _section_3(results, items, names, prof, plots):
    L = []
    L += ["## 3. ID accuracy", "",
          f"Fashion-MNIST test accuracy (%). Pretrained model before fine-tuning: "
          f"{_fmt(items['3']['pretrained'], pct=True)}.", ""]
    srcs = [s for s in items["3"] if s != "pretrained"]
    rows = [[METHODS[m][0]] + [_fmt(items["3"][s][m], pct=True) for s in srcs]
            for m in METHODS]
    L += [format_table(["method"] + [f"outliers: {SOURCE_LABELS[s]}" for s in srcs], rows), ""]
    return L


def _section_4(results, items, names, prof, plots):
    L = []
    L += ["## 4. Convergence", "",
          f"Fine-tuning split into {prof['conv_chunks']} chunks per epoch, each a "
          "`fit(chunk, warm_start=True)` call adding one pass over the chunk to the same module (so the "
          "learning rate restarts its cosine per chunk, unlike the single-call runs above), "
          f"margins fixed after the first chunk; avg AUROC on the first {prof['conv_eval_n']} "
          "images of each set after every chunk; loss parts are the chunk's means "
          "(energy_in/out are the squared-hinge terms before the weight lam).", ""]
    for m, c in items["4"].items():
        hdr = ["iteration", "epoch", "avg AUROC", "loss", "CE", "energy_in", "energy_out"]
        rows = [[it, f"{ep:.2f}", _fmt(c["auroc"][i])] +
                [_fmt(c[k][i], 3) if i else "—" for k in ("loss", "ce", "energy_in",
                                                          "energy_out")]
                for i, (it, ep) in enumerate(zip(c["iteration"], c["epoch"]))]
        L += [f"**{METHODS[m][0]}** (outliers: default mixture)", "", format_table(hdr, rows), ""]
    if "convergence" in plots:
        L += [f"![convergence]({plots['convergence']})", ""]
    return L


def _section_5(results, items, names, prof, plots):
    L = []
    se = items["5"]
    L += ["## 5. Sample efficiency", "",
          f"Pools of n outliers from {SOURCE_LABELS[se['source']]} (the first n of one draw per "
          "seed), sampled with replacement during fine-tuning.", ""]
    ns = list(se["aoe_fgsm"].keys())
    rows = [[METHODS[m][0]] + [_fmt(se[m][n]["auroc"]) for n in ns] for m in ("oe", "aoe_fgsm")]
    L += [format_table(["method (avg AUROC)"] + [f"n={n}" for n in ns], rows), ""]
    rows = [[METHODS[m][0]] + [_fmt(se[m][n]["fpr95"]) for n in ns] for m in ("oe", "aoe_fgsm")]
    L += [format_table(["method (avg FPR95)"] + [f"n={n}" for n in ns], rows), ""]
    if "sample" in plots:
        L += [f"![sample efficiency]({plots['sample']})", ""]
    return L


def _section_6(results, items, names, prof, plots):
    L = []
    q = items["6"]
    L += ["## 6. The paper's open questions", "",
          f"### Real outliers ({q['real_source']} images instead of synthetic ones)", ""]
    unseen = results.get("unseen_sets", ["gaussian_noise", "uniform_noise", "photo_patches"])
    hdr = ["method"] + [_label(k) for k in names] + [
        "avg AUROC", "AUROC on " + ("+".join(_label(k) for k in unseen) or "—"),
        "avg FPR95", "accuracy %",
        f"PGD eps={prof['robust_eps']} AUROC"]
    ek = _eps_key(prof["robust_eps"])
    rows = [[METHODS[m][0]] + [_fmt(r["ood"][k]) for k in names]
            + [_fmt(r["avg"]["auroc"]), _fmt(r["unseen_auroc"]), _fmt(r["avg"]["fpr95"]),
               _fmt(r["acc"], pct=True),
               _fmt(r["adv"]["pgd"][ek]["auroc"]) if r.get("adv") else "n/a"]
            for m, r in q["real_outliers"].items()]
    L += [format_table(hdr, rows), ""]
    if unseen:
        L += ["The sets " + ", ".join(_label(k) for k in unseen) + " are unlike the real "
              "training outliers" + (" (MNIST and digits28 are handwritten digits, the same "
                                     "family as them)" if "mnist" in names else "")
              + ", so that column is the fairer test of generalisation.", ""]
    L += [
          "### Stronger adversaries during training (outliers: default mixture)", ""]
    hdr = ["training augmentation", "avg AUROC", "avg FPR95", "accuracy %",
           f"FGSM eps={prof['robust_eps']} AUROC", f"PGD eps={prof['robust_eps']} AUROC",
           "train s"]
    rows = []
    for lab, r in q["strong"].items():
        adv = r.get("adv") or {}
        rows.append([lab, _fmt(r["avg"]["auroc"]), _fmt(r["avg"]["fpr95"]),
                     _fmt(r["acc"], pct=True),
                     _fmt(adv["fgsm"][ek]["auroc"]) if "fgsm" in adv and ek in adv["fgsm"]
                     else "n/a",
                     _fmt(adv["pgd"][ek]["auroc"]) if "pgd" in adv and ek in adv["pgd"]
                     else "n/a", f"{r['train_seconds'][0]:.0f}"])
    L += [format_table(hdr, rows), ""]
    return L


def _section_7(results, items, names, prof, plots):
    L = []
    L += ["## 7. Outlier-source ablation", "",
          "AUROC per OOD set when fine-tuning with one outlier family alone (noise = uniform "
          "+ smooth + Gaussian noise; low-density = samples of a PCA+GMM model at sigma 2; "
          "DCGAN samples; transformed ID = patch-shuffled/blurred ID images) or the package's "
          "default mixture at the time of the run (runs before 2026-11-29: uniform, smooth, "
          "low-density, transformed ID; since then: elastic warps, 2x2 patch shuffles and "
          "mixup of ID images).", ""]
    hdr = ["outliers", "method"] + [_label(k) for k in names] + ["avg AUROC", "avg FPR95"]
    rows = []
    for fam, meth in items["7"].items():
        for m, r in meth.items():
            rows.append([SOURCE_LABELS[fam], METHODS[m][0]] +
                        [_fmt(r["ood"][k]) for k in names] + [_fmt(r["avg"]), _fmt(r["fpr95"])])
    L += [format_table(hdr, rows), ""]
    return L


def _section_8(results, items, names, prof, plots):
    L = []
    c = items["8"]
    L += ["## 8. Cross-check with pytorch-ood", ""]
    if c.get("status") != "ok":
        L += [f"Not run: {c.get('status')} — {c.get('detail', '')}", ""]
    else:
        L += [f"pytorch-ood {c['pytorch_ood_version']}, model: {c['model']}, tolerance "
              f"{c['tolerance']}. Mapping: pytorch-ood's `OODMetrics` takes OOD as the positive "
              "class and outlier scores (higher = more OOD), so it gets `-score_samples` and "
              "labels -1 for OOD / 0 for ID. Its AUROC equals our `auroc`; its FPR95TPR is our "
              "`fpr_at_tpr_ood_positive` (fraction of ID rejected when 95% of OOD is "
              "detected), NOT our ID-positive `fpr_at_tpr`; its AUPR-IN/AUPR-OUT are "
              "trapezoidal areas, which equal sklearn's `auc(recall, precision)`, not the "
              "average precision we report.", "",
              format_table(["quantity", "max abs(ours − pytorch-ood) over OOD sets", "agree"],
                           [[k, f"{v:.2e}", "yes" if v <= c["tolerance"] else "NO"]
                            for k, v in c["max_abs_diff"].items()]
                           + [["our AUPR (average precision) vs their trapezoid",
                               f"{c['ap_vs_trapezoid_max_abs_diff']:.2e}",
                               "different definitions"],
                              ["our ID-positive FPR95 vs their FPR95TPR",
                               f"{c['id_positive_fpr95_vs_ood_positive_max_abs_diff']:.2e}",
                               "different conventions"]]), "",
              f"Loss: the same logits ({c['loss'][0]['n_id']} ID + {c['loss'][0]['n_outliers']} outliers) through our `EnergyMarginLoss(lam, "
              "m_in, m_out)` and pytorch-ood's `EnergyRegularizedLoss(alpha=lam, margin_in=m_in, "
              "margin_out=m_out)` with targets -1 for the outliers:", "",
              format_table(["m_in", "m_out", "ours", "pytorch-ood", "abs diff",
                            "max abs grad diff"],
                           [[f"{r['m_in']:.3f}", f"{r['m_out']:.3f}", f"{r['ours']:.6f}",
                             f"{r['pytorch_ood']:.6f}", f"{r['abs_diff']:.1e}",
                             f"{r['grad_max_abs_diff']:.1e}"] for r in c["loss"]]), "",
              f"Metrics agree: **{c['agree_metrics']}**; loss and gradients agree: "
              f"**{c['agree_loss']}**.", ""]
    return L


def _cost(results):
    L = ["## Cost", "", "Mean training seconds per fine-tuning run (per seed):", ""]
    rows = [[f"`{k}`".replace("|", "\\|"), _fmt(r["train_seconds"], 1)]
            for k, r in results["runs"].items()]
    L += [format_table(["run", "train s"], rows), ""]
    return L


_BACKBONES = {"ce": "CE (pretrained)", "oe": "OE", "aoe": "AOE-FGSM"}


def _peer_rows(peers, names, near, best):
    """Table rows ``(backbone, detector, per-set "AUROC / FPR95", non-noise means)``."""
    per = peers["per_seed"]
    seeds = list(per)
    rows = []
    for bb in ("ce", "oe", "aoe"):
        kinds = [("peer", n) for n in per[seeds[0]][bb]["peer"]]
        if bb == "aoe":
            kinds += [("own", n) for n in per[seeds[0]][bb].get("own", {})]
        for kind, n in kinds:
            get = lambda s, sets, m: float(np.mean([per[s][bb][kind][n][k][m]  # noqa: E731
                                                    for k in sets]))
            label = (f"pytorch-ood {PEER_LABELS.get(n, n)}" if kind == "peer"
                     else f"aoe-detect ood_score={n}")
            if kind == "peer" and bb == "ce" and n == best:
                label += " (best peer)"
            if kind == "own" and n == peers["default_score"]:
                label += " (package default)"
            rows.append([_BACKBONES[bb], label]
                        + [f"{_fmt(_ms([get(s, [k], 'auroc') for s in seeds]), 3)} / "
                           f"{_fmt(_ms([get(s, [k], 'fpr95') for s in seeds]), 3)}"
                           for k in names]
                        + [_fmt(_ms([get(s, near, "auroc") for s in seeds])),
                           _fmt(_ms([get(s, near, "fpr95") for s in seeds]))])
    return rows


def _section_peers(results):
    """The peer table (issue 12): post-hoc detectors on the CE, OE and AOE-FGSM backbones."""
    peers = results.get("peers")
    if not peers:
        return ["## 1b. Post-hoc peers (pytorch-ood)", "",
                "Not in this run: the peer table was added to the suite after it was made "
                "(rerun the profile to get it).", ""]
    names = results.get("ood_sets", list(OOD_SETS))
    near = peers["non_noise_sets"]
    L = ["## 1b. Post-hoc peers (pytorch-ood)", "",
         "pytorch-ood's post-hoc detectors (MSP, energy, max-logit, Mahalanobis, deep k-NN with "
         "k = 50, ViM) on the features of the cross-entropy pretrained backbone (CE) of each "
         "seed, and of the OE and AOE-FGSM backbones of section 1 (runs "
         f"`{peers['backbones']['oe']}` and `{peers['backbones']['aoe']}`); on the AOE-FGSM backbone also the package's own "
         "`ood_score` options (`aoe_detect.scores`). Same seeds and OOD test sets as above. "
         f"Statistics are fitted on {peers['fit_rows']}. Cells: AUROC / FPR95 (mean ± std over "
         "seeds); the last two columns average over the non-noise sets ("
         + ", ".join(_label(n) for n in near) + "). The best peer is the one with the highest "
         "mean non-noise AUROC on the CE backbone.", ""]
    hdr = (["backbone", "detector"] + [f"{_label(k)} AUROC / FPR95" for k in names]
           + ["non-noise avg AUROC", "non-noise avg FPR95"])
    L += [format_table(hdr, _peer_rows(peers, names, near, best_peer(peers))), ""]
    return L


def render_markdown(results, plots=None):
    """The Markdown report of ``results`` (a dict from :func:`run_benchmark` or its JSON)."""
    items = results["items"]
    names = results.get("ood_sets", list(OOD_SETS))
    prof = results["profile"]
    plots = plots or {}
    L = _header(results) + _verdict_lines(results)
    sections = {"1": _section_1, "2": _section_2, "3": _section_3, "4": _section_4,
                "5": _section_5, "6": _section_6, "7": _section_7, "8": _section_8}
    for key, section in sections.items():
        if key in items:
            L += section(results, items, names, prof, plots)
        if key == "1" and "1" in items:
            L += _section_peers(results)
    L += _cost(results)
    return "\n".join(L) + "\n"


def _plots(results, out_dir, stem):
    """``(paths, error)``: the figures, or the reason they were not written."""
    try:
        return figures.benchmark_plots(results, out_dir, stem), None
    except ImportError as exc:  # matplotlib is optional
        return {}, str(exc)


def write_results(results, out_dir, *, plots=True):
    """Write ``paper_<profile>.json``, ``.md`` and (if matplotlib is installed) PNG plots.

    Returns
    -------
    dict
        ``{"json": path, "markdown": path, "plots": {name: path}, "plot_error": str or None}``.
    """
    os.makedirs(out_dir, exist_ok=True)
    name = results["profile"]["name"]
    stem = f"paper_{name}"
    plot_paths, plot_error = _plots(results, out_dir, stem) if plots else ({}, None)
    public = {k: v for k, v in results.items() if not k.startswith("_")}
    if plot_error:
        public["meta"] = {**public["meta"], "plots": f"not written: {plot_error}"}
    json_path = os.path.join(out_dir, stem + ".json")
    with open(json_path, "w") as f:
        json.dump(_jsonable(public), f, indent=1)
    if results.get("_scores"):
        _save_scores(results["_scores"], os.path.join(out_dir, stem + "_scores.npz"))
    md = render_markdown(public, {k: os.path.basename(v) for k, v in plot_paths.items()})
    if plot_error:
        md += f"\nPlots not written: {plot_error}\n"
    md_path = os.path.join(out_dir, stem + ".md")
    with open(md_path, "w") as f:
        f.write(md)
    return {"json": json_path, "markdown": md_path, "plots": plot_paths, "plot_error": plot_error}


def _save_scores(scores, path):
    """Seed-0 scores of the main runs (for the histograms), without pickles."""
    keys = sorted(scores)
    sets = list(scores[keys[0]]["ood"])
    arrays = {"keys": np.asarray(keys), "sets": np.asarray(sets)}
    for i, k in enumerate(keys):
        arrays[f"r{i}_id"] = scores[k]["id"]
        for j, name in enumerate(sets):
            arrays[f"r{i}_ood{j}"] = scores[k]["ood"][name]
    np.savez_compressed(path, **arrays)


def _load_scores(path):
    with np.load(path, allow_pickle=False) as z:
        keys, sets = z["keys"].tolist(), z["sets"].tolist()
        return {k: {"id": z[f"r{i}_id"], "ood": {name: z[f"r{i}_ood{j}"]
                                                 for j, name in enumerate(sets)}}
                for i, k in enumerate(keys)}


def rerender(json_path, *, plots=True):
    """Recompute the verdicts and rewrite the Markdown report (and plots) of a finished run.

    Reads ``paper_<profile>.json`` (and ``paper_<profile>_scores.npz`` for the histograms,
    when present) written by :func:`write_results`; trains nothing.

    Returns
    -------
    dict
        As :func:`write_results`.
    """
    with open(json_path) as f:
        results = json.load(f)
    for key in ("profile", "plan", "runs", "items", "meta"):
        if key not in results:
            raise ValueError(f"{json_path} is not a benchmark result (no {key!r} entry).")
    prof = profile_from_json(results["profile"])
    results["conclusions"] = conclusions(results, plan_from_json(results["plan"]), prof)
    stem = os.path.splitext(json_path)[0]
    if os.path.isfile(stem + "_scores.npz"):
        results["_scores"] = _load_scores(stem + "_scores.npz")
    results["meta"].pop("plots", None)
    return write_results(results, os.path.dirname(os.path.abspath(json_path)), plots=plots)
