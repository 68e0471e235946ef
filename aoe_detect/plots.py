"""PNG plots for a fitted detector and the demo (matplotlib, an optional dependency).

:func:`plot_history` draws a detector's training history, :func:`plot_score_histograms` and
:func:`plot_roc` its scores on ID and OOD data, :func:`plot_robustness` the AUROC of
:func:`aoe_detect.robustness.robust_ood_report` against the attack radius. The paper suite's figures live with the suite
in the source repository (``benchmarks/paper/plots.py``).

matplotlib is imported lazily, inside the functions (importing aoe_detect never imports it),
and only its object-oriented API is used
(``Figure`` + the Agg canvas): no global pyplot state, no display needed. Without matplotlib
every function raises :class:`ImportError` with the install command
(``pip install 'aoe-detect[plot]'``).

Signs: scores are higher = more in-distribution (``score_samples = -E(x)`` for the
energy score the paper's benchmark uses).
"""

from __future__ import annotations

import os

import numpy as np
from sklearn.metrics import roc_curve

from .metrics import auroc

__all__ = ["require_matplotlib", "plot_score_histograms", "plot_roc", "plot_history",
           "plot_robustness"]

_INSTALL = "pip install 'aoe-detect[plot]'"


def require_matplotlib():
    """Return ``matplotlib.figure.Figure`` or raise ImportError naming the install command."""
    try:  # matplotlib is optional: imported here, never when aoe_detect is imported
        import matplotlib.backends.backend_agg  # noqa: F401
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise ImportError(f"plots need matplotlib, which is not installed ({exc}); install it "
                          f"with: {_INSTALL}") from None
    return Figure


def _new_figure(ncols, nrows=1, size=(4.2, 3.2)):
    Figure = require_matplotlib()
    # the optional dependency, present now (require_matplotlib checked it)
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


def plot_roc(scores_id, scores_ood, path, *, title=None):
    """ROC curves of ID vs OOD scores (in-distribution is the positive class).

    Parameters
    ----------
    scores_id : array-like
        Scores of in-distribution inputs (``score_samples``: higher = more ID).
    scores_ood : array-like or dict
        Scores of OOD inputs, or ``{set_name: scores}`` for one curve per set.
    path : str
        PNG file to write.
    title : str, optional

    Returns
    -------
    str
        ``path``.
    """
    s_id = np.asarray(scores_id, dtype=float).ravel()
    sets = scores_ood if isinstance(scores_ood, dict) else {"OOD": scores_ood}
    fig, axes = _new_figure(1, size=(4.2, 4.0))
    ax = axes[0][0]
    for name, s in sets.items():
        s = np.asarray(s, dtype=float).ravel()
        fpr, tpr, _ = roc_curve(np.r_[np.ones(len(s_id)), np.zeros(len(s))], np.r_[s_id, s])
        ax.plot(fpr, tpr, label=f"{name} (AUROC {auroc(s_id, s):.3f})")
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--")
    ax.set_xlabel("OOD accepted (false-positive rate)")
    ax.set_ylabel("ID accepted (true-positive rate)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    if title:
        ax.set_title(title)
    return _save(fig, path)


def _report_rows(report):
    rows = getattr(report, "rows", report)
    if not isinstance(rows, (list, tuple)) or not all(isinstance(r, dict) for r in rows):
        raise TypeError("`reports` must be a RobustnessReport, a list of its rows, or a dict of "
                        f"them by label, got {type(report).__name__}.")
    return list(rows)


def plot_robustness(reports, path, *, attack="worst", sides=None, title=None):
    """AUROC (ID positive) against the attack radius, one panel per attacked side.

    Parameters
    ----------
    reports : RobustnessReport, list of row dicts, or dict
        The result of :func:`aoe_detect.robustness.robust_ood_report` (or its ``rows``), or
        ``{label: report}`` for one line per detector.
    path : str
        PNG file to write.
    attack : str, default="worst"
        Which attack's rows to draw (``"worst"``: the per-input worst case over attacks).
    sides : sequence of {"ood", "id", "both"}, optional
        Panels; default every side in the rows.
    title : str, optional

    Returns
    -------
    str
        ``path``.
    """
    series = reports if isinstance(reports, dict) else {"": reports}
    series = {k: [r for r in _report_rows(v) if r["attack"] == attack] for k, v in series.items()}
    if not any(series.values()):
        raise ValueError(f"no rows with `attack`={attack!r} to plot.")
    if sides is None:
        sides = list(dict.fromkeys(r["side"] for rows in series.values() for r in rows))
    fig, axes = _new_figure(len(sides), size=(3.6, 3.2))
    for ax, side in zip(axes[0], sides):
        for label, rows in series.items():
            pts = sorted((r["eps"], r["auroc"]) for r in rows if r["side"] == side)
            if pts:
                ax.plot(*zip(*pts), marker="o", label=label or attack)
        ax.axhline(0.5, color="grey", lw=0.8, ls="--")
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel("eps (L-inf, input units)")
        ax.set_title(f"{side} side attacked", fontsize=9)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("AUROC (ID positive)")
    axes[0][-1].legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    return _save(fig, path)


_MOVED = ("plot_adversarial", "plot_convergence", "plot_sample_efficiency", "benchmark_plots")


def __getattr__(name):
    if name in _MOVED:
        raise AttributeError(
            f"aoe_detect.plots.{name} moved with the paper benchmark out of the package: it is "
            f"benchmarks.paper.plots.{name} in the source repository (benchmarks/paper/).")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
