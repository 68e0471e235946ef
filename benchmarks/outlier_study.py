"""Which synthetic image outliers should be the default? A selection protocol (issue 9).

The protocol was written down (here and in docs/benchmarks.md) before any of its results
were seen. Design choices use only Fashion-MNIST *training-domain* data and synthetic
families; the evaluation OOD sets (MNIST, digits28, photo patches, noise) play no part in
the choice and are only measured once, at the end, for the chosen mixture and the old one.

Candidate families (all made from the user's own ID images or generic noise, so they serve
any image domain): ``uniform``, ``smooth`` (multi-scale smooth noise, random contrast),
``lowdensity`` (PCA+GMM low-density samples, sigma 2) and ``lowdensity3`` (sigma 3),
``permuted`` (4x4 patch shuffle, 30% blurred), ``permuted2`` (2x2) and ``permuted7`` (7x7),
``cutpaste`` (CutMix of two ID images), ``mixup`` (blend of two ID images) and ``elastic``
(strong elastic warp). The DCGAN is not a candidate: in the committed full paper benchmark
its samples were the weakest source by far (AOE-FGSM avg AUROC 0.78 vs 0.95 for the
default mixture, ``benchmarks/results/paper_full.md``) and it costs a GAN training per fit.

Design data: Fashion-MNIST classes 0-5 (``--n-design`` stratified training images) as ID;
a plain CE backbone is pretrained once per seed and every variant is fine-tuned from a copy
with ``AOEDetector`` (AOE-FGSM, default score). Probes, none of them ever used for training
the model they judge: the held-out Fashion-MNIST classes 6-9 (near OOD of the same domain),
and fresh samples of every family.

- **Stage A** (one family alone, every family): ``C[f][g]`` = AUROC on family ``g`` of the
  model trained on ``f`` only. ``J_A(f)`` = mean of the held-out-class AUROC and the mean
  of ``C[f][g]`` over ``g != f`` (how far training on ``f`` generalises).
- **Stage B** (mixtures, equal weights): the old default and the top 3 and top 5 families
  by ``J_A``. *Rule changed after Stage B's results were seen* (``RULE_CHANGE`` below; both
  rules are reported): ``J_B(M)`` = mean of the held-out-class AUROC and the common-probe
  leave-one-source-out AUROC, the mean over all ten families ``g`` of the AUROC on ``g`` of
  the model trained on ``M`` without ``g`` (``M`` itself when ``g`` is not in ``M``). The
  pre-registered rule, kept for the record: (The protocol first also listed "all ten families"; it was dropped for the CPU
  budget on 2026-11-29 while Stage A was running, after its first held-out-class AUROCs had
  been seen: its leave-one-out alone needs ten more fits per seed.) ``J_B(M)`` = mean of the held-out-class AUROC of the model
  trained on ``M`` and the leave-one-source-out AUROC ``LOSO(M)`` = mean over ``f`` in ``M``
  of the AUROC on ``f`` of the model trained on ``M`` without ``f`` (needs no real OOD data).
  The default is the mixture with the highest ``J_B`` averaged over seeds; within 0.002 of
  the best, the one with fewer families.
- **Stage C** (attack settings on the chosen mixture): OE vs AOE-FGSM at eps 8/255 and
  4/255, AOE with ``attack_fraction=0.5``, and AOE-PGD (3 steps); judged on the held-out-
  class AUROC and FPR@95 and the mean family AUROC (trained on the whole mixture, so this
  stage only ranks attacks, not mixtures). The default attack is the setting whose mean
  held-out-class AUROC is highest among those with FPR@95 not above OE's.
- **Stage M** (added on 2026-11-29 after the evaluation, run only with ``--stage m``; rule
  in :func:`stage_m`, written before its results): the automatic margin gap
  ``m_out - m_in`` in {1, 2, 5, 10} on the chosen mixture and attack.
- **Evaluation** (reported only): Fashion-MNIST, all 10 classes, ``--n-eval`` training
  images (10 000 by default; first planned as 20 000, halved for the CPU budget at the same
  time as the change above), 3 seeds; OE and AOE with the old and the chosen mixture; MNIST, digits28, photo
  patches, Gaussian and uniform noise; adversarial AUROC of PGD (eps 0.03) on MNIST.

Run: ``python benchmarks/outlier_study.py --stage all --data-root /tmp/aoe_data``
(``--stage a|b|c|eval|m`` for one stage; results are cached per fit in
``benchmarks/results/outlier_study.json``, so a stage can be resumed).
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

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from aoe_detect import AOEDetector  # noqa: E402
from aoe_detect import datasets as ds  # noqa: E402
from aoe_detect.attacks import FGSM, PGD  # noqa: E402
from aoe_detect.detector import AUTO_MARGIN_GAP  # noqa: E402
from aoe_detect.metrics import ood_report  # noqa: E402
from aoe_detect.plots import _new_figure, _save  # noqa: E402
from aoe_detect.outliers import (CutPasteID, ElasticID, LowDensityGMM, MixupID, Mixture,  # noqa: E402
                                 PermutedID, SmoothNoise, UniformNoise)
from benchmarks.fashion_sets import evaluation_sets, stratified, to_unit  # noqa: E402

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
OUT = os.path.join(RESULTS, "outlier_study.json")

FAMILIES = {
    "uniform": lambda: UniformNoise(),
    "smooth": lambda: SmoothNoise(),
    "lowdensity": lambda: LowDensityGMM(),
    "lowdensity3": lambda: LowDensityGMM(sigma=3.0),
    "permuted": lambda: PermutedID(),
    "permuted2": lambda: PermutedID(grid=2),
    "permuted7": lambda: PermutedID(grid=7),
    "cutpaste": lambda: CutPasteID(),
    "mixup": lambda: MixupID(),
    "elastic": lambda: ElasticID(),
}
OLD_DEFAULT = ("uniform", "smooth", "lowdensity", "permuted")
N_PROBE = 1000


def mixture(names):
    return Mixture([(n, FAMILIES[n]()) for n in names])


def _img(x):
    return to_unit(x).numpy()


class Cache:
    def __init__(self, path):
        self.path = path
        self.data = json.load(open(path)) if os.path.exists(path) else {"fits": {}}

    def get(self, key, fn):
        if key not in self.data["fits"]:
            t0 = time.time()
            row = fn()
            row["seconds"] = round(time.time() - t0, 1)
            self.data["fits"][key] = row
            self.save()
            print(f"[{time.strftime('%H:%M:%S')}] {key}: {row.get('summary', '')} ({row['seconds']} s)",
                  flush=True)
        return self.data["fits"][key]

    def save(self):
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(self.data, f, indent=1)
        os.replace(tmp, self.path)


def design_data(root, n):
    X, y = ds.load_fashion_mnist(root=root, split="train")
    Xt, yt = ds.load_fashion_mnist(root=root, split="test")
    keep = np.flatnonzero(y < 6)
    tr = keep[stratified(y[keep], n, 11)]
    te_id, te_ood = np.flatnonzero(yt < 6)[:3000], np.flatnonzero(yt >= 6)[:2000]
    return _img(X[tr]), y[tr], {"id": _img(Xt[te_id]), "heldout_classes": _img(Xt[te_ood])}


def family_probes(X, seed):
    """Fresh samples of every family, fitted on the design ID images with another seed."""
    Xt = torch.from_numpy(X)
    out = {}
    for i, (name, make) in enumerate(FAMILIES.items()):
        g = torch.Generator().manual_seed(10_000 + 97 * seed + i)
        out[name] = make().fit(Xt, g).sample(N_PROBE, g).numpy()
    return out


class Design:
    """Pretrained CE backbone per seed + every fine-tuned variant, scored on the probes."""

    def __init__(self, root, n, seeds, pre, ft, cache):
        self.X, self.y, self.tests = design_data(root, n)
        self.seeds, self.pre, self.ft, self.cache = seeds, pre, ft, cache
        self.probes = {s: family_probes(self.X, s) for s in seeds}
        self._ce = {}

    def ce(self, seed):
        if seed not in self._ce:
            self._ce[seed] = AOEDetector(outliers=None, pretrain_epochs=self.pre, epochs=0,
                                         random_state=seed, device="cpu").fit(self.X, self.y).module_
        return self._ce[seed]

    def fit(self, seed, names, attack="fgsm", **kw):
        key = f"design|s{seed}|{'+'.join(names)}|{attack}|{json.dumps(kw, sort_keys=True)}"

        def run():
            det = AOEDetector(backbone=copy.deepcopy(self.ce(seed)), outliers=mixture(names),
                              pretrain_epochs=0, epochs=self.ft, attack=_attack(attack),
                              random_state=seed, device="cpu", **kw).fit(self.X, self.y)
            s_id = det.score_samples(self.tests["id"])
            row = {name: ood_report(s_id, det.score_samples(x))
                   for name, x in {"heldout_classes": self.tests["heldout_classes"],
                                   **self.probes[seed]}.items()}
            row = {k: {m: float(v[m]) for m in ("auroc", "fpr95")} for k, v in row.items()}
            row["summary"] = f"heldout AUROC {row['heldout_classes']['auroc']:.3f}"
            return row
        return self.cache.get(key, run)


def _attack(name):
    return {"none": None, "fgsm": "fgsm", "fgsm4": FGSM(eps=4 / 255), "pgd3": PGD(steps=3)}[name]


def stage_a(d):
    rows = {f: [d.fit(s, (f,)) for s in d.seeds] for f in FAMILIES}
    cross = {f: {g: float(np.mean([r[g]["auroc"] for r in rs])) for g in FAMILIES}
             for f, rs in rows.items()}
    held = {f: float(np.mean([r["heldout_classes"]["auroc"] for r in rs])) for f, rs in rows.items()}
    j = {f: 0.5 * held[f] + 0.5 * float(np.mean([cross[f][g] for g in FAMILIES if g != f]))
         for f in FAMILIES}
    return {"cross": cross, "heldout": held, "J_A": j,
            "ranking": sorted(FAMILIES, key=lambda f: -j[f])}


def candidates(a):
    top = a["ranking"]
    cands = {"old_default": OLD_DEFAULT, "top3": tuple(top[:3]), "top5": tuple(top[:5])}
    seen, out = set(), {}
    for k, v in cands.items():  # identical sets are evaluated once
        if frozenset(v) not in seen:
            seen.add(frozenset(v))
            out[k] = v
    return out


def _unseen_all(d, names, seed):
    """Common-probe leave-one-source-out: the mean AUROC over *every* family, each judged by a
    model that never saw it (``M`` without it for members, ``M`` itself for the others)."""
    return float(np.mean([d.fit(seed, tuple(n for n in names if n != g) if g in names else names)[g]["auroc"]
                          for g in FAMILIES]))


def stage_b(d, a, loso_seeds):
    res = {}
    for label, names in candidates(a).items():
        held = [d.fit(s, names)["heldout_classes"] for s in d.seeds]
        loso = {s: float(np.mean([d.fit(s, tuple(n for n in names if n != f))[f]["auroc"]
                                  for f in names])) for s in loso_seeds}
        unseen = {s: _unseen_all(d, names, s) for s in loso_seeds}
        h = float(np.mean([r["auroc"] for r in held]))
        lo, un = float(np.mean(list(loso.values()))), float(np.mean(list(unseen.values())))
        res[label] = {"families": list(names), "heldout_auroc": h,
                      "heldout_fpr95": float(np.mean([r["fpr95"] for r in held])),
                      "loso": lo, "loso_per_seed": loso, "J_B_preregistered": 0.5 * h + 0.5 * lo,
                      "unseen_all": un, "J_B": 0.5 * h + 0.5 * un}

    def pick(key):
        best = max(r[key] for r in res.values())
        close = [k for k, r in res.items() if r[key] >= best - 0.002]
        return min(close, key=lambda k: (len(res[k]["families"]), -res[k][key]))
    chosen = pick("J_B")
    return {"candidates": res, "chosen": chosen, "chosen_by_preregistered_rule": pick("J_B_preregistered"),
            "families": res[chosen]["families"], "rule_change": RULE_CHANGE}


RULE_CHANGE = (
    "Changed on 2026-11-29 after Stage B's results were seen (design data only; no evaluation "
    "set had been scored): the pre-registered J_B averaged LOSO over each mixture's own "
    "families, so mixtures were judged on different probes and a mixture of intrinsically "
    "easy families (uniform and smooth noise, detected at AUROC 1.0 by every model) scored "
    "highest; that rule chose the old default. The corrected J_B judges every mixture on the "
    "same probes: all ten families, each by a model that never saw it (common-probe LOSO).")


ATTACKS = {"oe": ("none", {}), "aoe_fgsm": ("fgsm", {}), "aoe_fgsm4": ("fgsm4", {}),
           "aoe_half": ("fgsm", {"attack_fraction": 0.5}), "aoe_pgd3": ("pgd3", {})}


def stage_c(d, names):
    res = {}
    for label, (att, kw) in ATTACKS.items():
        rows = [d.fit(s, tuple(names), attack=att, **kw) for s in d.seeds]
        res[label] = {"heldout_auroc": float(np.mean([r["heldout_classes"]["auroc"] for r in rows])),
                      "heldout_fpr95": float(np.mean([r["heldout_classes"]["fpr95"] for r in rows])),
                      "family_auroc": float(np.mean([r[f]["auroc"] for r in rows for f in FAMILIES]))}
    ok = [k for k in res if k != "oe" and res[k]["heldout_fpr95"] <= res["oe"]["heldout_fpr95"]]
    chosen = max(ok, key=lambda k: res[k]["heldout_auroc"]) if ok else None
    return {"settings": res, "chosen": chosen}


GAPS = (1.0, 2.0, 5.0, 10.0)


def stage_m(d, names):
    """Margin gap ``m_out - m_in`` on the chosen mixture (design split). ``m_in_`` does not
    depend on the gap (the median ID energy of the pretrained copy when outlier exposure
    starts), so it is read once per seed from a 0-epoch fit and every gap is fitted with
    explicit ``m_in = m_in_``, ``m_out = m_in_ + gap``. Rule (written before the results):
    the highest mean of the held-out-class AUROC and the mean family-probe AUROC; the
    incumbent ``AUTO_MARGIN_GAP`` stays unless another gap beats it by more than 0.002."""
    m_in = {s: _auto_m_in(d.ce(s), names, d.X, d.y, s) for s in d.seeds}
    res = {}
    for gap in GAPS:
        rows = [d.fit(s, tuple(names), m_in=m_in[s], m_out=m_in[s] + gap) for s in d.seeds]
        h = float(np.mean([r["heldout_classes"]["auroc"] for r in rows]))
        fam = float(np.mean([r[f]["auroc"] for r in rows for f in FAMILIES]))
        res[str(gap)] = {"heldout_auroc": h, "family_auroc": fam, "J": 0.5 * h + 0.5 * fam,
                         "heldout_fpr95": float(np.mean([r["heldout_classes"]["fpr95"] for r in rows]))}
    best = max(res, key=lambda g: res[g]["J"])
    inc = str(float(AUTO_MARGIN_GAP))
    chosen = best if res[best]["J"] > res[inc]["J"] + 0.002 else inc
    return {"m_in": m_in, "gaps": res, "chosen": float(chosen)}


def eval_data(root, n):
    X, y, _, Xt, yt, ood = evaluation_sets(root, n)
    return _img(X), y, _img(Xt), yt, {k: _img(v) for k, v in ood.items()}


def _auto_m_in(backbone, names, X, y, seed):
    """The automatic ``m_in_`` of fine-tuning ``backbone`` (a 0-epoch fit: the median ID
    energy when outlier exposure starts; it does not depend on the gap or the attack)."""
    return float(AOEDetector(backbone=copy.deepcopy(backbone), outliers=mixture(names),
                             pretrain_epochs=0, epochs=0, random_state=seed, device="cpu")
                 .fit(X, y).m_in_)


def _margins(kw, backbone, names, X, y, seed):
    """``kw`` with a ``gap`` entry replaced by explicit margins ``m_in_``, ``m_in_ + gap``."""
    if "gap" not in kw:
        return kw
    kw = dict(kw)
    gap = kw.pop("gap")
    m_in = _auto_m_in(backbone, names, X, y, seed)
    return {**kw, "m_in": m_in, "m_out": m_in + gap}


def evaluation(root, n, seeds, pre, ft, chosen, attack, cache, gap=None):
    X, y, Xid, yid, ood = eval_data(root, n)
    configs = {"oe_old": (OLD_DEFAULT, "none", {}), "aoe_old": (OLD_DEFAULT, "fgsm", {}),
               "oe_new": (tuple(chosen), "none", {}), "aoe_new": (tuple(chosen), *ATTACKS[attack])}
    if gap is not None:  # Stage M's gap, evaluated after the fact (reported only)
        g = {"gap": float(gap)}
        configs.update({f"oe_new_gap{gap:g}": (tuple(chosen), "none", g),
                        f"aoe_new_gap{gap:g}": (tuple(chosen), ATTACKS[attack][0], {**ATTACKS[attack][1], **g})})
    out = {}
    for s in seeds:
        ce = None
        for label, (names, att, kw) in configs.items():
            key = f"eval|s{s}|{label}|{'+'.join(names)}|{att}|{json.dumps(kw, sort_keys=True)}"

            def run(names=names, att=att, kw=kw):
                nonlocal ce
                if ce is None:
                    ce = AOEDetector(outliers=None, pretrain_epochs=pre, epochs=0, random_state=s,
                                     device="cpu").fit(X, y).module_
                det = AOEDetector(backbone=copy.deepcopy(ce), outliers=mixture(names), pretrain_epochs=0,
                                  epochs=ft, attack=_attack(att), random_state=s, device="cpu",
                                  **_margins(kw, ce, names, X, y, s)).fit(X, y)
                s_id = det.score_samples(Xid)
                row = {k: {m: float(v[m]) for m in ("auroc", "fpr95")}
                       for k, v in ((k, ood_report(s_id, det.score_samples(x))) for k, x in ood.items())}
                adv = det.perturb(ood["mnist"][:500], attack="pgd", epsilon=0.03, random_state=s)
                row["adv_mnist_auroc"] = float(ood_report(s_id, det.score_samples(adv))["auroc"])
                row["accuracy"] = float((det.predict_class(Xid) == yid).mean())
                row["summary"] = f"MNIST {row['mnist']['auroc']:.3f} acc {row['accuracy']:.3f}"
                return row
            out.setdefault(label, []).append(cache.get(key, run))
    return out


EVAL_SETS = ["mnist", "digits28", "photo_patches", "gaussian_noise", "uniform_noise"]


def _fmt(v):
    return "" if v is None else f"{v:.3f}"


def _eval_table(ev):
    sets = EVAL_SETS
    near = sets[:3]
    head = ("| config | " + " | ".join(sets) + " | mean AUROC (non-noise) | mean FPR@95 (non-noise) "
            "| mean AUROC (all) | mean FPR@95 (all) | adv. AUROC MNIST (PGD 0.03) | accuracy |")
    lines = [head, "|" + "---|" * (len(sets) + 7)]
    for label, rows in ev.items():
        m = lambda f: float(np.mean([f(r) for r in rows]))  # noqa: E731
        cells = [f"{m(lambda r: r[s]['auroc']):.3f}" for s in sets]
        cells += [f"{m(lambda r: np.mean([r[s]['auroc'] for s in near])):.3f}",
                  f"{m(lambda r: np.mean([r[s]['fpr95'] for s in near])):.3f}",
                  f"{m(lambda r: np.mean([r[s]['auroc'] for s in sets])):.3f}",
                  f"{m(lambda r: np.mean([r[s]['fpr95'] for s in sets])):.3f}",
                  f"{m(lambda r: r['adv_mnist_auroc']):.3f}", f"{m(lambda r: r['accuracy']):.3f}"]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += ["", "Per seed, AOE vs OE with the chosen mixture (AUROC / FPR@95 per set):", ""]
    if "aoe_new" in ev and "oe_new" in ev:
        for i, (a, o) in enumerate(zip(ev["aoe_new"], ev["oe_new"])):
            parts = [f"{s} {a[s]['auroc']:.3f}/{a[s]['fpr95']:.3f} vs {o[s]['auroc']:.3f}/{o[s]['fpr95']:.3f}"
                     for s in sets]
            lines.append(f"- seed {i}: " + "; ".join(parts))
    return lines


def plot(data, out_png):
    """Two panels: Stage A's cross-family AUROC matrix and the evaluation AUROC per OOD set
    (mean and range over seeds) of each evaluated configuration. Needs matplotlib."""
    st = data.get("stages", {})
    if "a" not in st or "eval" not in st:
        return None
    fig, axes = _new_figure(2, size=(6.0, 4.6))
    a, ax = st["a"], axes[0][0]
    fams = list(a["cross"])
    C = np.array([[a["cross"][f][g] for g in fams] for f in fams])
    im = ax.imshow(C, vmin=0.5, vmax=1.0, cmap="viridis")
    ax.set_xticks(range(len(fams)), fams, rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(len(fams)), fams, fontsize=7)
    ax.set_xlabel("AUROC on fresh samples of")
    ax.set_ylabel("trained on (design split)")
    ax.set_title("Stage A: cross-family AUROC")
    fig.colorbar(im, ax=ax, shrink=0.8)
    ax, ev = axes[0][1], st["eval"]
    width, low = 0.8 / len(ev), 0.9
    for i, (label, rows) in enumerate(ev.items()):
        v = np.array([[r[s]["auroc"] for s in EVAL_SETS] for r in rows])
        x = np.arange(len(EVAL_SETS)) + (i - (len(ev) - 1) / 2) * width
        ax.bar(x, v.mean(0), width, label=label,
               yerr=[v.mean(0) - v.min(0), v.max(0) - v.mean(0)], capsize=2)
        low = min(low, np.floor(v.min() * 20) / 20)
    ax.set_xticks(range(len(EVAL_SETS)), EVAL_SETS, rotation=30, ha="right", fontsize=8)
    ax.set_ylim(low, 1.0)
    ax.set_ylabel("AUROC (ID positive), bars: seed range")
    ax.set_title("Evaluation (reported only)")
    ax.legend(fontsize=7)
    return _save(fig, out_png)


def report(data, out_md):
    st, meta = data.get("stages", {}), data.get("meta", {})
    L = ["# Image outlier families: selection protocol and results (issue 9)", "",
         f"- command: `{meta.get('command')}`"
         + (f"; Stage M: `{meta['command_stage_m']}`" if "command_stage_m" in meta else "")
         + (f"; evaluation re-run with Stage M's gap: `{meta['command_stage_eval']}`"
            if "command_stage_eval" in meta else ""),
         f"- machine: {meta.get('machine')}; torch {meta.get('torch')}",
         "- protocol: the module docstring of `benchmarks/outlier_study.py` and docs/benchmarks.md "
         "(written before any result); AUROC with ID positive, default `ood_score`", ""]
    if "a" in st:
        a = st["a"]
        fams = list(a["cross"])
        L += ["## Stage A: one family alone (design split, mean over seeds)", "",
              "Rows: trained on; columns: AUROC on fresh samples of each family (diagonal = seen in "
              "training) and on the held-out Fashion-MNIST classes 6-9.", "",
              "| trained on | " + " | ".join(fams) + " | held-out classes | J_A |",
              "|" + "---|" * (len(fams) + 3)]
        for f in a["ranking"]:
            L.append(f"| {f} | " + " | ".join(f"{a['cross'][f][g]:.3f}" for g in fams)
                     + f" | {a['heldout'][f]:.3f} | {a['J_A'][f]:.3f} |")
        L.append("")
    if "b" in st:
        b = st["b"]
        L += ["## Stage B: mixtures (equal weights)", "",
              "| candidate | families | held-out classes AUROC | FPR@95 | own-family LOSO | "
              "J_B pre-registered | common-probe LOSO (all families) | J_B |",
              "|---|---|---|---|---|---|---|---|"]
        for k, r in b["candidates"].items():
            L.append(f"| {k} | {', '.join(r['families'])} | {r['heldout_auroc']:.3f} | "
                     f"{r['heldout_fpr95']:.3f} | {r['loso']:.3f} | {r['J_B_preregistered']:.3f} | "
                     f"{r['unseen_all']:.3f} | {r['J_B']:.3f} |")
        L += ["", f"Chosen by the (corrected) rule: **{b['chosen']}** ({', '.join(b['families'])}); "
              f"the pre-registered rule chose **{b['chosen_by_preregistered_rule']}**.", "",
              f"Rule change: {b['rule_change']}", ""]
    if "c" in st:
        c = st["c"]
        L += ["## Stage C: attack settings on the chosen mixture (design split)", "",
              "| setting | held-out classes AUROC | FPR@95 | mean family AUROC |", "|---|---|---|---|"]
        for k, r in c["settings"].items():
            L.append(f"| {k} | {r['heldout_auroc']:.3f} | {r['heldout_fpr95']:.3f} | {r['family_auroc']:.3f} |")
        L += ["", f"Chosen by the rule: **{c['chosen']}**.", ""]
    if "m" in st:
        m = st["m"]
        L += ["## Stage M: margin gap on the chosen mixture (design split; added 2026-11-29, "
              "rule written before its results)", "",
              "| gap m_out - m_in | held-out classes AUROC | FPR@95 | mean family AUROC | J |",
              "|---|---|---|---|---|"]
        for g, r in m["gaps"].items():
            L.append(f"| {g} | {r['heldout_auroc']:.3f} | {r['heldout_fpr95']:.3f} | "
                     f"{r['family_auroc']:.3f} | {r['J']:.4f} |")
        L += ["", f"Chosen by the rule: **{m['chosen']}** (m_in per seed: "
              + ", ".join(f"{v:.2f}" for v in m["m_in"].values()) + ").", ""]
    if "eval" in st:
        L += ["## Evaluation (Fashion-MNIST, all classes; reported only, never used to choose)", ""]
        L += _eval_table(st["eval"])
        png = out_md.replace(".md", ".png")
        try:
            if plot(data, png):
                L += ["", f"![Stage A matrix and evaluation AUROC]({os.path.basename(png)})"]
        except ImportError as exc:  # matplotlib is optional
            print(f"no plot: {exc}")
    with open(out_md, "w") as f:
        f.write("\n".join(L) + "\n")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--stage", default="all", choices=["a", "b", "c", "eval", "all", "m"],
                   help="'m' (margin gap, added later) runs only on request, after 'b'")
    p.add_argument("--data-root", default=None)
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--loso-seeds", type=int, default=1)
    p.add_argument("--eval-seeds", type=int, default=3)
    p.add_argument("--n-design", type=int, default=6000)
    p.add_argument("--n-eval", type=int, default=10000)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--report-only", action="store_true")
    a = p.parse_args(argv)
    if a.report_only:
        report(json.load(open(OUT)), OUT.replace(".json", ".md"))
        return
    if a.threads:
        torch.set_num_threads(a.threads)
    cache = Cache(OUT)
    command = "python benchmarks/outlier_study.py " + " ".join(sys.argv[1:] if argv is None else argv)
    if a.stage in ("m", "eval") and "command" in cache.data.get("meta", {}):  # later additions:
        cache.data["meta"][f"command_stage_{a.stage}"] = command  # the main run stays the record
    else:
        cache.data["meta"] = {"command": command, "torch": torch.__version__,
                              "machine": f"{platform.platform()}, {os.cpu_count()} CPUs"}
    d = Design(a.data_root, a.n_design, list(range(a.seeds)), 3, 2, cache)
    res = cache.data.setdefault("stages", {})
    if a.stage in ("a", "all", "b", "c", "eval", "m"):
        res["a"] = stage_a(d)
        cache.save()
    if a.stage in ("b", "all", "c", "eval", "m"):
        res["b"] = stage_b(d, res["a"], list(range(a.loso_seeds)))
        cache.save()
    if a.stage in ("c", "all", "eval"):
        res["c"] = stage_c(d, res["b"]["families"])
        cache.save()
    if a.stage == "m":
        res["m"] = stage_m(d, res["b"]["families"])
        cache.save()
    if a.stage in ("eval", "all"):
        gap = res["m"]["chosen"] if "m" in res and res["m"]["chosen"] != AUTO_MARGIN_GAP else None
        res["eval"] = evaluation(a.data_root, a.n_eval, list(range(a.eval_seeds)), 3, 2,
                                 res["b"]["families"], res["c"]["chosen"] or "aoe_fgsm", cache, gap)
        cache.save()
    report(cache.data, OUT.replace(".json", ".md"))


if __name__ == "__main__":
    main()
