"""The paper suite's figures (matplotlib, optional): score histograms, adversarial AUROC,
convergence and sample efficiency.

Built on the library's :mod:`aoe_detect.plots` helpers (object-oriented matplotlib API, Agg
canvas, no global pyplot state). Without matplotlib every function raises ImportError with
the install command.
"""

from __future__ import annotations

import os

import numpy as np

from aoe_detect.plots import _new_figure, _save, plot_score_histograms, require_matplotlib

from .plan import METHODS, OOD_LABELS, SOURCE_LABELS


def plot_adversarial(adv, path, *, labels=None, title=None):
    """Adversarial AUROC vs eps, one panel per attack.

    Parameters
    ----------
    adv : dict
        ``{method: {attack: {eps_str: {"auroc": [mean, std]}}}}``.
    """
    labels = labels or {}
    attacks = list(next(iter(adv.values())).keys())
    fig, axes = _new_figure(len(attacks))
    for ax, att in zip(axes[0], attacks):
        for m, per in adv.items():
            eps = [float(e) for e in per[att]]
            mean = np.array([per[att][e]["auroc"][0] for e in per[att]], dtype=float)
            std = np.array([per[att][e]["auroc"][1] for e in per[att]], dtype=float)
            ax.errorbar(eps, mean, yerr=std, marker="o", capsize=3, label=labels.get(m, m))
        ax.set_title(f"{att.upper()} toward low energy")
        ax.set_xlabel("eps (pixel units)")
        ax.set_ylabel("avg AUROC over OOD sets")
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=7)
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def plot_convergence(curves, path, *, labels=None, title=None):
    """AUROC and loss parts vs training iterations.

    Parameters
    ----------
    curves : dict
        ``{method: {"iteration": [...], "auroc": [[mean, std], ...], "ce": ..., "energy_in":
        ..., "energy_out": ...}}``.
    """
    labels = labels or {}
    keys = [("auroc", "avg AUROC"), ("ce", "cross-entropy"), ("energy_in", "energy_in hinge"),
            ("energy_out", "energy_out hinge")]
    fig, axes = _new_figure(len(keys))
    for ax, (k, name) in zip(axes[0], keys):
        for m, c in curves.items():
            it = np.asarray(c["iteration"], dtype=float)
            vals = np.array([[np.nan, np.nan] if v is None or v[0] is None else v for v in c[k]],
                            dtype=float)
            mask = np.isfinite(vals[:, 0])
            ax.plot(it[mask], vals[mask, 0], marker=".", label=labels.get(m, m))
            ax.fill_between(it[mask], vals[mask, 0] - vals[mask, 1], vals[mask, 0] + vals[mask, 1],
                            alpha=0.2)
        ax.set_xlabel("training iterations")
        ax.set_title(name)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def plot_sample_efficiency(se, path, *, labels=None, title=None):
    """Avg AUROC vs number of training outliers (log x axis).

    Parameters
    ----------
    se : dict
        ``{method: {n_str: {"auroc": [mean, std]}}}``.
    """
    labels = labels or {}
    fig, axes = _new_figure(1)
    ax = axes[0][0]
    for m, per in se.items():
        ns = [int(n) for n in per]
        mean = [per[n]["auroc"][0] for n in per]
        std = [per[n]["auroc"][1] for n in per]
        ax.errorbar(ns, mean, yerr=std, marker="o", capsize=3, label=labels.get(m, m))
    ax.set_xscale("log")
    ax.set_xlabel("number of training outliers")
    ax.set_ylabel("avg AUROC over OOD sets")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def benchmark_plots(results, out_dir, stem):
    """All plots of a :func:`benchmarks.paper.run_benchmark` result.

    Returns
    -------
    dict
        ``{"hist", "adv", "convergence", "sample"}`` -> paths of the files written (only the
        items that ran).
    """
    require_matplotlib()
    labels = {m: v[0] for m, v in METHODS.items()}
    items = results["items"]
    plan = results.get("plan", {})
    out = {}
    seed0 = results["profile"]["seeds"][0]
    scores = results.get("_scores") or {}
    main = plan.get("main", {})
    if scores and main:
        src = "default" if "default" in main else next(iter(main))
        sc = {m: scores[k] for m, k in main[src].items() if k in scores}
        if sc:
            out["hist"] = plot_score_histograms(
                sc, os.path.join(out_dir, f"{stem}_histograms.png"), labels=labels,
                ood_labels=OOD_LABELS,
                title=f"Score histograms, seed {seed0}, outliers: {SOURCE_LABELS[src]}")
    if "2" in items:
        for src, meth in items["2"].items():
            adv = {m: r["adv"] for m, r in meth.items()}
            out["adv"] = plot_adversarial(
                adv, os.path.join(out_dir, f"{stem}_adversarial.png"), labels=labels,
                title=f"Adversarial OOD detection (outliers: {SOURCE_LABELS[src]})")
            break
    if "4" in items:
        out["convergence"] = plot_convergence(
            items["4"], os.path.join(out_dir, f"{stem}_convergence.png"), labels=labels,
            title="Fine-tuning convergence (mean ± std over seeds)")
    if "5" in items:
        se = {m: v for m, v in items["5"].items() if m != "source"}
        out["sample"] = plot_sample_efficiency(
            se, os.path.join(out_dir, f"{stem}_sample_efficiency.png"), labels=labels,
            title=f"Sample efficiency ({SOURCE_LABELS[items['5']['source']]})")
    return out
