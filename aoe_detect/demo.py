"""The ``aoe-detect demo``: no OE, OE and AOE on the embedded sample, in a few minutes.

The paper-reproduction suite itself is not part of the installed package: it lives in the
source repository's ``benchmarks/paper`` folder (``python -m benchmarks.paper``) and reuses
the evaluation sets and the evaluation of this module, so that the demo is a small version
of the suite's item 1.

Signs: scores are higher = more in-distribution (``score_samples = -E(x)`` for the energy
score). AUROC, AUPR-in and FPR@95TPR take in-distribution as the positive class; AUPR-out
takes OOD as positive.
"""

from __future__ import annotations

import copy
import time

import numpy as np

from . import datasets as ds
from .detector import AOEDetector
from .metrics import ood_report

__all__ = ["EVAL_SEED", "OOD_LABELS", "METHOD_LABELS", "ood_test_sets", "evaluate", "run_demo",
           "demo_table"]

#: Seed of the evaluation-set draws (the paper suite's too); never tuned.
EVAL_SEED = 20250

#: Display names of the OOD test sets of :func:`ood_test_sets`.
OOD_LABELS = {"mnist": "MNIST", "digits28": "digits28", "gaussian_noise": "Gauss noise",
              "uniform_noise": "Unif. noise", "photo_patches": "photos"}

#: Display names of the demo's rows: the three training methods with the paper's energy
#: score, and the AOE-FGSM network with the package's default score (what users get).
METHOD_LABELS = {"none": "no OE (CE fine-tuning)", "oe": "OE", "aoe_fgsm": "AOE-FGSM",
                 "aoe_fgsm_default": "AOE-FGSM, default score"}

_METRICS = ("auroc", "aupr_in", "aupr_out", "fpr95")


def ood_test_sets(mnist, n, seed=EVAL_SEED):
    """Five fixed OOD test sets of ``n`` 28x28 uint8 images for a Fashion-MNIST model.

    ``mnist`` (MNIST test images) is subsampled; digits28, Gaussian and uniform noise and
    photo patches come from :mod:`aoe_detect.datasets`. The draws depend on ``seed`` only.

    Returns
    -------
    dict
        ``{"mnist", "digits28", "gaussian_noise", "uniform_noise", "photo_patches"}`` ->
        images, in that order.
    """
    n = int(n)
    rng = np.random.RandomState(seed + 2)
    return {
        "mnist": mnist[np.sort(rng.permutation(len(mnist))[:n])],
        "digits28": ds.load_digits28(split="test")[0][:n],
        "gaussian_noise": ds.noise_images("gaussian", n, random_state=seed + 3),
        "uniform_noise": ds.noise_images("uniform", n, random_state=seed + 4),
        "photo_patches": ds.load_photo_patches(n, random_state=seed + 5),
    }


def evaluate(det, X_test, y_test, ood, scores_out=None):
    """ID accuracy and per-set OOD metrics of a fitted detector.

    Parameters
    ----------
    det : AOEDetector
        A fitted detector with class labels.
    X_test, y_test : array-like
        ID test inputs and their class labels.
    ood : dict
        ``{set_name: inputs}``.
    scores_out : dict, optional
        Receives ``{"id": scores, "ood": {set_name: scores}}``.

    Returns
    -------
    record : dict
        ``{"acc", "ood": {set_name: {auroc, aupr_in, aupr_out, fpr95}}, "avg": {...}}``.
    s_id : ndarray
        The ID test scores.
    """
    s_id = det.score_samples(X_test)
    acc = float(np.mean(det.predict_class(X_test) == y_test))
    reports, scores = {}, {}
    for name in ood:
        s = det.score_samples(ood[name])
        scores[name] = s
        r = ood_report(s_id, s)
        reports[name] = {m: r[m] for m in _METRICS}
    if scores_out is not None:
        scores_out.update({"id": s_id, "ood": scores})
    avg = {m: float(np.mean([r[m] for r in reports.values()])) for m in _METRICS}
    return {"acc": acc, "ood": reports, "avg": avg}, s_id


def run_demo(*, epochs=3, pretrain_epochs=10, pretrain_lr=3e-3, n_ood=500, seed=0, verbose=1,
             log=None, device="auto"):
    """The ``aoe-detect demo``: no-OE, OE and AOE on the embedded sample.

    One small CNN (the library's ``small_cnn``) is pretrained with cross-entropy on the
    sample's 3000 Fashion-MNIST images (learning rate ``pretrain_lr``), then fine-tuned three
    ways (learning rate 1e-3) from the same weights
    with the default outlier mixture; every model is scored on the sample's 1000
    Fashion-MNIST test images and five OOD sets with the paper's energy score ``-E(x)``.
    The row ``"aoe_fgsm_default"`` scores the same AOE-FGSM network with the package's
    default ``ood_score`` (``"energy+mahalanobis"``), the score ``score_samples`` returns.

    Returns
    -------
    dict
        ``{"rows": {method: {"acc", "ood": {set: report}, "avg"}}, "scores": {method:
        {"id": ndarray, "ood": {set: ndarray}}}, "seconds": float}``.
    """
    log = log or (lambda msg: None)
    t0 = time.time()
    s = ds.load_sample()
    X_tr, y_tr = s["fashion_train"]
    X_te, y_te = s["fashion_test"]
    ood = ood_test_sets(s["mnist_test"][0], n_ood)
    log(f"pretraining a small CNN on {len(X_tr)} Fashion-MNIST images "
        f"({pretrain_epochs} epochs)")
    pre = AOEDetector(outliers=None, epochs=0, pretrain_epochs=pretrain_epochs, lr=pretrain_lr,
                      random_state=seed, verbose=verbose, device=device)
    pre.fit(X_tr, y_tr)
    methods = {"none": {"outliers": None, "attack": None}, "oe": {"attack": None},
               "aoe_fgsm": {"attack": "fgsm"}}
    rows, scores = {}, {}
    for m, params in methods.items():
        log(f"fine-tuning: {METHOD_LABELS[m]} ({epochs} epochs)")
        default = m == "aoe_fgsm"  # the default score is fitted on the AOE network too
        det = AOEDetector(backbone=pre.module_, epochs=epochs, random_state=seed,
                          verbose=verbose, device=device,
                          **({} if default else {"ood_score": "energy"}), **params)
        det.fit(X_tr, y_tr)
        runs = [(m, _energy_only(det) if default else det)]
        if default:
            runs.append(("aoe_fgsm_default", det))
        for key, scored in runs:
            sc = {}
            rows[key], _ = evaluate(scored, X_te, y_te, ood, sc)
            scores[key] = sc
    return {"rows": rows, "scores": scores, "seconds": time.time() - t0}


def _energy_only(det):
    """A view of a fitted detector that scores with the energy ``-E(x)`` of its network (the
    same weights; the feature statistics of its default score are left out)."""
    view = copy.copy(det)
    view.scorer_ = None
    return view


def demo_table(rows):
    """Plain-text table of :func:`run_demo` rows (AUROC per set, averages, accuracy)."""
    names = list(next(iter(rows.values()))["ood"])
    hdr = ["method", "ID acc"] + [OOD_LABELS.get(k, k) for k in names] + ["avg AUROC",
                                                                          "avg FPR95"]
    body = [[METHOD_LABELS.get(m, m), f"{r['acc'] * 100:.1f}%"]
            + [f"{r['ood'][k]['auroc']:.3f}" for k in names]
            + [f"{r['avg']['auroc']:.3f}", f"{r['avg']['fpr95']:.3f}"] for m, r in rows.items()]
    widths = [max(len(str(x)) for x in col) for col in zip(hdr, *body)]
    line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths))  # noqa: E731
    return "\n".join([line(hdr), line(["-" * w for w in widths])] + [line(r) for r in body])
