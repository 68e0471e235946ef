"""PNG plots of the benchmark and the demo (matplotlib, an optional dependency).

matplotlib is imported lazily, inside the functions, and only its object-oriented API is used
(``Figure`` + the Agg canvas): no global pyplot state, no display needed. Without matplotlib
every function raises :class:`ImportError` with the install command
(``pip install 'aoe-detect[plot]'``).

Signs: scores are higher = more in-distribution (``score_samples = -E(x)`` for the
energy score the paper's benchmark uses).
"""

from __future__ import annotations

import os

import numpy as np

__all__ = ["require_matplotlib", "plot_score_histograms", "plot_adversarial",
           "plot_convergence", "plot_sample_efficiency", "plot_history", "benchmark_plots"]

_INSTALL = "pip install 'aoe-detect[plot]'"


def require_matplotlib():
    """Return ``matplotlib.figure.Figure`` or raise ImportError naming the install command."""
    try:
        import matplotlib.backends.backend_agg  # noqa: F401
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise ImportError(f"plots need matplotlib, which is not installed ({exc}); install it "
                          f"with: {_INSTALL}") from None
    return Figure


def _new_figure(ncols, nrows=1, size=(4.2, 3.2)):
    Figure = require_matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    fig = Figure(figsize=(size[0] * ncols, size[1] * nrows), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, axes


def _save(fig, path):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)
    return path


def plot_score_histograms(scores, path, *, labels=None, ood_labels=None, title=None):
    """Histograms of ID and OOD scores, one panel per method.

    Parameters
    ----------
    scores : dict
        ``{method: {"id": array, "ood": {set_name: array}}}``; scores are ``-energy``
        (higher = more in-distribution).
    path : str
        PNG file to write.
    labels, ood_labels : dict, optional
        Display names of the methods and the OOD sets.
    title : str, optional

    Returns
    -------
    str
        ``path``.
    """
    labels, ood_labels = labels or {}, ood_labels or {}
    fig, axes = _new_figure(len(scores))
    for ax, (m, sc) in zip(axes[0], scores.items()):
        allv = np.concatenate([sc["id"], *sc["ood"].values()])
        lo, hi = np.percentile(allv, [0.5, 99.5])
        bins = np.linspace(lo, hi, 50)
        ax.hist(np.clip(sc["id"], lo, hi), bins=bins, density=True, alpha=0.45, color="k",
                label="ID test")
        for name, s in sc["ood"].items():
            ax.hist(np.clip(s, lo, hi), bins=bins, density=True, histtype="step", linewidth=1.3,
                    label=ood_labels.get(name, name))
        ax.set_title(labels.get(m, m))
        ax.set_xlabel("score = -energy (higher = more ID)")
    axes[0][0].set_ylabel("density")
    axes[0][-1].legend(fontsize=7)
    if title:
        fig.suptitle(title)
    return _save(fig, path)


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


def plot_history(history, path, *, title=None):
    """A fitted detector's ``history_`` per epoch: training loss parts, and the held-out
    validation numbers (ID energy, accuracy, synthetic-outlier AUROC per family).

    Parameters
    ----------
    history : AOEDetector or list of dict
        A fitted detector (its ``history_``) or the list itself.
    path : str
        PNG file to write.

    Returns
    -------
    str
        ``path``.
    """
    rows = list(getattr(history, "history_", history))
    if not rows:
        raise ValueError("`history` is empty: fit the detector first (history_ has one row per "
                         "epoch).")
    x = np.arange(1, len(rows) + 1)
    boundary = [i + 0.5 for i in range(1, len(rows)) if rows[i]["stage"] != rows[i - 1]["stage"]]
    aucs = sorted({k for r in rows for k in r if k.startswith("val_auroc_")})
    panels = [("training loss", ["loss", "ce", "energy_in", "energy_out"]),
              ("held-out ID energy", ["val_energy_id", "mean_energy_id"]),
              ("held-out accuracy", ["val_accuracy"]),
              ("held-out AUROC vs synthetic outliers", aucs)]
    panels = [(t, [k for k in keys if any(k in r for r in rows)]) for t, keys in panels]
    panels = [(t, keys) for t, keys in panels if keys]
    fig, axes = _new_figure(len(panels))
    for ax, (name, keys) in zip(axes[0], panels):
        for k in keys:
            v = np.array([r.get(k, np.nan) for r in rows], dtype=float)
            ax.plot(x, v, marker=".", label=k.replace("val_auroc_", ""))
        for b in boundary:
            ax.axvline(b, color="grey", lw=0.8, ls="--")  # pretrain | finetune
        ax.set_xlabel("epoch")
        ax.set_title(name, fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
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
    """All plots of a :func:`aoe_detect.benchmark.run_benchmark` result.

    Returns
    -------
    dict
        ``{"hist", "adv", "convergence", "sample"}`` -> paths of the files written (only the
        items that ran).
    """
    from .benchmark import METHODS, OOD_LABELS, SOURCE_LABELS

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
