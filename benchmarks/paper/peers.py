"""Post-hoc peers from pytorch-ood and the package's own scores, on one backbone's features.

Shared by the paper suite (its peer table, :func:`backbone_metrics`) and
``benchmarks/scores_study.py`` (:func:`features`, :func:`peer_scores`, :func:`own_scores`).

Peers (pytorch-ood, fitted on ID training features, no input pre-processing): MSP, energy,
max-logit, Mahalanobis, deep k-NN (k = 50) and ViM. pytorch-ood's scores are outlier scores
(higher = more OOD); they are negated here, so every score is higher = more in-distribution.
"""

from __future__ import annotations

import numpy as np
import pytorch_ood.detector as pd
import torch

from aoe_detect.metrics import ood_report
from aoe_detect.scores import SCORES, LogitsAndFeatures, SumScore, build_scorer

PEERS = ("msp", "energy", "maxlogit", "mahalanobis", "knn", "vim")
PEER_LABELS = {"msp": "MSP", "energy": "energy", "maxlogit": "max-logit",
               "mahalanobis": "Mahalanobis", "knn": "deep k-NN", "vim": "ViM"}

#: Share of the ID training images that standardises the sums of two scores (held out from
#: fitting the feature statistics), as the detector's ``validation_fraction`` default.
VAL_FRACTION = 0.1


def features(module, X, batch=512):
    """``(logits, features)`` of ``module`` (eval mode, restored after) for a float tensor."""
    was = module.training
    head = LogitsAndFeatures(module).eval()
    outs = []
    try:
        with torch.inference_mode():
            for i in range(0, len(X), batch):
                outs.append(head(X[i:i + batch]))
    finally:
        module.train(was)
    out = torch.cat(outs)
    k = out.shape[1] - head._layer_width
    return out[:, :k], out[:, k:]


def own_scores(module, train, val, evals, y_train, gen):
    """Every ``aoe_detect.scores`` score: fitted on train features, sums standardised on val.

    ``module`` is unused (kept for the callers' symmetry with :func:`peer_scores`). Returns
    ``{score: {eval_name: ndarray, "_scorer": fitted scorer}}``.
    """
    lt, ft = train
    res = {}
    for name in SCORES:
        sc = build_scorer(name)
        sc.fit(lt, ft, y_train, gen)
        if isinstance(sc, SumScore):
            sc.fit_normalisation(sc.components(*val))
        with torch.inference_mode():
            res[name] = {k: sc(lg, f).double().numpy() for k, (lg, f) in evals.items()}
        res[name]["_scorer"] = sc
    return res


def peer_scores(module, train, evals, y_train):
    """pytorch-ood's detectors fitted on ``train = (logits, features)``; ``{peer: {eval_name:
    ndarray}}`` with higher = more in-distribution."""
    lt, ft = train
    fc = [m for m in module.modules() if isinstance(m, torch.nn.Linear)][-1]
    maha = pd.Mahalanobis(None).fit_features(ft, torch.as_tensor(y_train))
    knn = pd.KNN(None, k=50).fit_features(ft, torch.as_tensor(y_train))
    vim = pd.ViM(None, d=min(64, ft.shape[1] // 2), w=fc.weight, b=fc.bias)
    vim.fit_features(ft, torch.as_tensor(y_train))
    res = {p: {} for p in PEERS}
    for k, (lg, f) in evals.items():  # pytorch-ood scores are outlier scores: negate
        res["msp"][k] = -pd.MaxSoftmax.score(lg).double().numpy()
        res["energy"][k] = -pd.EnergyBased.score(lg).double().numpy()
        res["maxlogit"][k] = -pd.MaxLogit.score(lg).double().numpy()
        res["mahalanobis"][k] = -maha.predict_features(f).double().numpy()
        res["knn"][k] = -np.asarray(knn.predict_features(f), dtype=np.float64)
        res["vim"][k] = -vim.predict_features(f).double().numpy()
    return res


def metrics(scores, ood_names):
    """``{set: {"auroc", "fpr95"}}`` of score arrays ``{"id": ..., set: ...}``."""
    out = {}
    for o in ood_names:
        r = ood_report(scores["id"], scores[o])
        out[o] = {"auroc": float(r["auroc"]), "fpr95": float(r["fpr95"])}
    return out


def non_noise(names):
    """The OOD sets whose name does not contain "noise" (all of them if none is left)."""
    near = [n for n in names if "noise" not in n]
    return near or list(names)


def fit_split(n, seed):
    """``(fit_rows, val_rows)``: a random ``1 - VAL_FRACTION`` / ``VAL_FRACTION`` split of
    ``n`` training rows, fixed by ``seed``."""
    perm = np.random.RandomState(seed).permutation(n)
    n_val = max(1, int(round(n * VAL_FRACTION)))
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def backbone_metrics(module, X_train, y_train, X_test, ood, split, *, own=False, seed=0):
    """AUROC / FPR@95 per OOD set of every peer (and, with ``own``, every package score) on
    the features of ``module``.

    ``X_train`` / ``X_test`` / ``ood`` are float image tensors; ``split = (fit_rows,
    val_rows)`` of the training images (:func:`fit_split`): the peers and the package scores
    are fitted on the fit rows, sums of package scores standardised on the val rows.
    """
    fit_rows, val_rows = split
    train = features(module, X_train[torch.from_numpy(fit_rows)])
    y_fit = np.asarray(y_train)[fit_rows]
    evals = {"id": features(module, X_test), **{k: features(module, v) for k, v in ood.items()}}
    names = list(ood)
    out = {"peer": {k: metrics(v, names)
                    for k, v in peer_scores(module, train, evals, y_fit).items()}}
    if own:
        val = features(module, X_train[torch.from_numpy(val_rows)])
        gen = torch.Generator().manual_seed(int(seed))
        scores = own_scores(module, train, val, evals, y_fit, gen)
        out["own"] = {k: metrics({s: v for s, v in sc.items() if s != "_scorer"}, names)
                      for k, sc in scores.items()}
    return out
