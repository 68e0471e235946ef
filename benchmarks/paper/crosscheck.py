"""Item 8: our metrics and loss against pytorch-ood's, conventions mapped."""

from __future__ import annotations

import numpy as np
import pytorch_ood
import torch
from pytorch_ood.loss import EnergyRegularizedLoss
from pytorch_ood.metrics import OODMetrics
from sklearn.metrics import auc, precision_recall_curve

from aoe_detect.losses import EnergyMarginLoss
from aoe_detect.metrics import fpr_at_tpr_ood_positive, ood_report

from .data import _as_float_images
from .plan import METRICS

_THEIR_KEY = {"AUROC": "AUROC", "FPR95TPR": "FPR95TPR",
              "AUPR-IN (trapezoid)": "AUPR-IN", "AUPR-OUT (trapezoid)": "AUPR-OUT"}


def _metric_row(s_id, s_ood):
    """Our metrics (and their pytorch-ood conventions) vs pytorch-ood's on one OOD set."""
    ours = ood_report(s_id, s_ood)
    m = OODMetrics()
    scores = torch.from_numpy(np.r_[-s_id, -s_ood])  # outlier score: higher = more OOD
    labels = torch.from_numpy(np.r_[np.zeros(len(s_id), np.int64),
                                    -np.ones(len(s_ood), np.int64)])
    m.update(scores, labels)
    theirs = {k: float(v) for k, v in m.compute().items()}
    y = np.r_[np.ones(len(s_id)), np.zeros(len(s_ood))]
    s = np.r_[s_id, s_ood]
    pr_in, rc_in, _ = precision_recall_curve(y, s)
    pr_out, rc_out, _ = precision_recall_curve(1 - y, -s)
    mapped = {
        "AUROC": ours["auroc"],
        "FPR95TPR": fpr_at_tpr_ood_positive(s_id, s_ood, 0.95),
        "AUPR-IN (trapezoid)": float(auc(rc_in, pr_in)),
        "AUPR-OUT (trapezoid)": float(auc(rc_out, pr_out)),
    }
    diffs = {k: abs(mapped[k] - theirs[_THEIR_KEY[k]]) for k in mapped}
    return {"ours": {**{k: ours[k] for k in METRICS}, **mapped},
            "pytorch_ood": theirs, "abs_diff": diffs}


def _loss_rows(det, data, pool, n_loss):
    """The same logits through our EnergyMarginLoss and pytorch-ood's EnergyRegularizedLoss."""
    module = det.module_
    dev = next(module.parameters()).device
    g = torch.Generator().manual_seed(0)
    idx = torch.randperm(len(data["X_train"]), generator=g)[:n_loss].numpy()
    x_in = _as_float_images(data["X_train"][idx]).to(dev)
    y_in = torch.as_tensor(data["y_train"][idx], dtype=torch.long).to(dev)
    x_out = torch.from_numpy(pool[:n_loss]).to(dev)
    n_in, n_out = len(x_in), len(x_out)
    with torch.no_grad():
        module.eval()
        logits = module(torch.cat([x_in, x_out])).float()
    rows = []
    for m_in, m_out in ((det.m_in_, det.m_out_), (-25.0, -7.0), (float(det.m_in_) - 1.0,
                                                                  float(det.m_in_) + 0.5)):
        li = logits[:n_in].clone().requires_grad_(True)
        lo = logits[n_in:].clone().requires_grad_(True)
        ours, parts = EnergyMarginLoss(det.lam_, m_in, m_out, 1.0)(li, y_in, lo)
        g_ours = torch.autograd.grad(ours, (li, lo))
        lt = logits.clone().requires_grad_(True)
        target = torch.cat([y_in, torch.full((n_out,), -1, dtype=torch.long, device=dev)])
        theirs = EnergyRegularizedLoss(alpha=det.lam_, margin_in=m_in, margin_out=m_out)(lt, target)
        (g_theirs,) = torch.autograd.grad(theirs, lt)
        gdiff = float((torch.cat(g_ours) - g_theirs).abs().max())
        ours, theirs = float(ours.detach()), float(theirs.detach())
        rows.append({"m_in": float(m_in), "m_out": float(m_out), "lam": float(det.lam_),
                     "n_id": n_in, "n_outliers": n_out,
                     "ours": ours, "pytorch_ood": theirs,
                     "abs_diff": abs(ours - theirs), "grad_max_abs_diff": gdiff,
                     "energy_in_part": float(parts["energy_in"]),
                     "energy_out_part": float(parts["energy_out"])})
    return rows


def _crosscheck(det, data, pool, n_loss=256):
    """Item 8: our metrics and loss against pytorch-ood's, conventions mapped."""
    s_id = det.score_samples(data["X_test"])
    rows = {}
    max_diff = {"AUROC": 0.0, "FPR95TPR": 0.0, "AUPR-IN (trapezoid)": 0.0,
                "AUPR-OUT (trapezoid)": 0.0}
    for name in data["ood"]:
        rows[name] = _metric_row(s_id, det.score_samples(data["ood"][name]))
        for k, v in rows[name]["abs_diff"].items():
            max_diff[k] = max(max_diff[k], v)
    loss_rows = _loss_rows(det, data, pool, n_loss)
    tol = 1e-5
    agree_metrics = all(v <= tol for v in max_diff.values())
    agree_loss = all(r["abs_diff"] <= tol * max(1.0, abs(r["ours"])) and r["grad_max_abs_diff"] <= tol
                     for r in loss_rows)
    return {"status": "ok", "pytorch_ood_version": getattr(pytorch_ood, "__version__", "?"),
            "model": "seed-0 AOE-FGSM (default mixture)", "tolerance": tol,
            "metrics": rows, "max_abs_diff": max_diff, "loss": loss_rows,
            "agree_metrics": bool(agree_metrics), "agree_loss": bool(agree_loss),
            "ap_vs_trapezoid_max_abs_diff": max(
                max(abs(r["ours"]["aupr_in"] - r["pytorch_ood"]["AUPR-IN"]),
                    abs(r["ours"]["aupr_out"] - r["pytorch_ood"]["AUPR-OUT"]))
                for r in rows.values()),
            "id_positive_fpr95_vs_ood_positive_max_abs_diff": max(
                abs(r["ours"]["fpr95"] - r["pytorch_ood"]["FPR95TPR"]) for r in rows.values())}
