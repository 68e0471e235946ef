"""The rules that turn the suite's numbers into verdicts on the paper's claims.

:func:`_conclusions` applies the fixed claim rules (tests/test_verdicts.py checks them on
controlled inputs); :func:`conclusions` adds to every claim one line comparing AOE (with the
package's default ``ood_score``) with the best post-hoc peer, without touching the rules.
Claim (2) is judged by the committed strong-protocol study (:data:`CLAIM2_RULE`, issue 18);
the suite's own short attacks are extra evidence lines.
"""

from __future__ import annotations

import json
import math
import os

import numpy as np

from .plan import METHODS, SOURCE_LABELS, _eps_key, _label


def _per_seed_metric(results, key, getter, seeds):
    return np.asarray([getter(results["runs"][key]["per_seed"][str(s)]) for s in seeds], float)


def _compare(a, b, higher_better=True):
    """Per-seed differences a - b (sign-corrected): 'better' if all > 0, 'worse' if all < 0."""
    d = (a - b) if higher_better else (b - a)
    mean = float(np.mean(d))
    if np.all(d > 0):
        word = "better"
    elif np.all(d < 0):
        word = "worse"
    else:
        word = "inconsistent"
    return word, mean


def _sets_worse(results, key_a, key_b, seeds):
    """OOD sets on which run ``key_a``'s mean AUROC over ``seeds`` is below ``key_b``'s."""
    per = lambda k: results["runs"][k]["per_seed"]  # noqa: E731
    names = sorted(per(key_a)[str(seeds[0])].get("ood", {}))
    worse = []
    for name in names:
        a = np.mean([per(key_a)[str(s)]["ood"][name]["auroc"] for s in seeds])
        b = np.mean([per(key_b)[str(s)]["ood"][name]["auroc"] for s in seeds])
        if a < b:
            worse.append(name)
    return worse


def _verdict(n_yes, n_total):
    if n_total == 0:
        return "not run"
    if n_yes == n_total:
        return "confirmed"
    if n_yes == 0:
        return "not confirmed"
    return "mixed"


def _auroc(r):
    return r["avg"]["auroc"]


def _fpr(r):
    return r["avg"]["fpr95"]


def _claim1(results, main, seeds):
    yes, tot, ev = 0, 0, []
    for src, meth in main.items():
        for aoe in ("aoe_fgsm", "aoe_pgd"):
            for base in ("oe", "oe_gauss"):
                a = _per_seed_metric(results, meth[aoe], _auroc, seeds)
                b = _per_seed_metric(results, meth[base], _auroc, seeds)
                word, d = _compare(a, b)
                fa = _per_seed_metric(results, meth[aoe], _fpr, seeds)
                fb = _per_seed_metric(results, meth[base], _fpr, seeds)
                fword, _ = _compare(fa, fb, higher_better=False)
                worse_sets = _sets_worse(results, meth[aoe], meth[base], seeds)
                won = word == "better" and fword == "better" and not worse_sets
                if aoe == "aoe_fgsm":
                    tot += 1
                    yes += won
                ev.append(f"{METHODS[aoe][0]} vs {METHODS[base][0]} ({SOURCE_LABELS[src]}): "
                          f"avg AUROC {np.mean(a):.4f} vs {np.mean(b):.4f} ({d:+.4f}, {word}); "
                          f"avg FPR95 {np.mean(fa):.4f} vs {np.mean(fb):.4f} ({fword}); "
                          + (f"lower mean AUROC on {', '.join(worse_sets)}" if worse_sets
                             else "mean AUROC not lower on any OOD set")
                          + (" -> counts as a win" if won else ""))
    return {"claim": "(1) AOE improves OOD detection beyond OE and OE + Gaussian noise",
            "verdict": _verdict(yes, tot),
            "rule": "AOE-FGSM (the paper's method) vs each baseline and outlier source "
                    "wins when its avg AUROC is higher AND its avg FPR95 lower for every "
                    "seed AND its mean AUROC is not lower on any single OOD set. (Rule "
                    "made stricter on 2026-11-29, after the committed results had been "
                    "seen, as issue 9 asked; it was: avg AUROC higher for every seed.)",
            "evidence": ev}


#: The committed strong-protocol study (issue 18) that judges claim (2).
STRONG_STUDY = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                            "results", "robustness_study.json")
#: Its variants compared by the claim-2 rule: the package's default AOE and plain OE.
STRONG_AOE, STRONG_OE = "aoe_fgsm", "oe"
#: Sides of the rule and the non-noise sets whose AUROCs are averaged.
STRONG_SIDES = ("ood", "both")
STRONG_SETS = ("mnist", "digits28", "photo_patches")

CLAIM2_RULE = (
    "Strong protocol (benchmarks/results/robustness_study.json, stage eval: Fashion-MNIST ID, "
    "3 seeds, attacks white-box through the deployed score): the package's default AOE "
    f"({STRONG_AOE}) vs OE ({STRONG_OE}), per seed the AUROC under the per-input worst case "
    "of PGD-40 (random start) and FGSM at eps 0.03, averaged over MNIST, digits28 and photo "
    "patches, on the OOD side (OOD inputs pushed toward ID) and on both sides (ID inputs "
    "pushed toward OOD as well); each side counts when AOE's is higher on every seed "
    "(confirmed: both sides; mixed: one; not confirmed: none). The paper suite's own FGSM "
    "(single step, OOD side only) and short PGD numbers are listed as extra evidence and do "
    "not decide. (Rule changed in round 3 of issue 18, 2026-12-02, after the suite's results "
    "and the strong-protocol study had been seen, because the issue asks the claim to be "
    "judged under the strong protocol; it was: AOE-FGSM vs OE, adversarial avg AUROC of the "
    "suite's own runs, every attack and eps > 0, higher for every seed)")


def load_strong_study(path=STRONG_STUDY):
    """``stages`` of the committed strong-protocol study, or None when it is absent."""
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return json.load(f).get("stages")


def _strong_per_seed(rows, side, lab="worst"):
    """``{seed: AUROC}`` of one variant's evaluation rows, mean over :data:`STRONG_SETS`."""
    return {int(r["seed"]): float(np.mean([r["strong"][lab][k][side]["auroc"]
                                           for k in STRONG_SETS])) for r in rows}


def _strong_lines(stages):
    """``(yes, total, evidence)`` of the claim-2 rule on the study's ``stages``."""
    ev_rows = (stages or {}).get("eval", {})
    if STRONG_AOE not in ev_rows or STRONG_OE not in ev_rows:
        return 0, 0, ["strong-protocol study: not available, claim not judged"]
    yes, tot, ev = 0, 0, []
    for side in STRONG_SIDES:
        a, b = (_strong_per_seed(ev_rows[v], side) for v in (STRONG_AOE, STRONG_OE))
        seeds = sorted(set(a) & set(b))
        word, d = _compare(np.array([a[s] for s in seeds]), np.array([b[s] for s in seeds]))
        tot += 1
        yes += word == "better"
        ev.append(f"strong protocol, worst case of PGD-40 and FGSM, eps 0.03, "
                  f"{'OOD side' if side == 'ood' else 'both sides'} (decides): AOE "
                  f"{np.mean([a[s] for s in seeds]):.4f} vs OE {np.mean([b[s] for s in seeds]):.4f}"
                  f" ({d:+.4f}, {word}; seeds {', '.join(map(str, seeds))}: "
                  + ", ".join(f"{a[s]:.3f}/{b[s]:.3f}" for s in seeds) + ")")
    peers = (stages or {}).get("peers", {})
    for v, rows in peers.items():  # pytorch-ood's post-hoc peers, attacked the same way
        ev.append(f"same protocol, post-hoc peer {v} on the plain CE backbone (reported only): "
                  + ", ".join(f"{'OOD side' if sd == 'ood' else 'both sides'} "
                              f"{np.mean(list(_strong_per_seed(rows, sd).values())):.4f}"
                              for sd in STRONG_SIDES))
    return yes, tot, ev


def _claim2(results, main, p, seeds, strong=None):
    """Claim (2), judged by the strong-protocol study (``strong``: its ``stages``; default:
    ``results["strong_protocol"]`` or the committed study) with :data:`CLAIM2_RULE`; the
    suite's own short attacks are extra evidence lines."""
    if strong is None:
        strong = (results["strong_protocol"] if "strong_protocol" in results
                  else load_strong_study())
    yes, tot, ev = _strong_lines(strong)
    for src in p.adv_sources:
        if src not in main:
            continue
        for att in ("fgsm", "pgd"):
            for e in p.adv_eps:
                if e <= 0:
                    continue
                ek = _eps_key(e)
                g = lambda r: r["adv"][att][ek]["auroc"]  # noqa: E731
                a = _per_seed_metric(results, main[src]["aoe_fgsm"], g, seeds)
                b = _per_seed_metric(results, main[src]["oe"], g, seeds)
                word, d = _compare(a, b)
                what = ("the paper's single-step FGSM, OOD side only" if att == "fgsm"
                        else "the suite's short PGD, OOD side only")
                ev.append(f"paper suite, {att.upper()} eps={e} ({what}; extra evidence, does "
                          f"not decide): AOE-FGSM {np.mean(a):.4f} vs OE {np.mean(b):.4f} "
                          f"({d:+.4f}, {word})")
    return {"claim": "(2) AOE makes detection more robust to OOD inputs attacked toward "
                     "low energy",
            "verdict": _verdict(yes, tot),
            "rule": CLAIM2_RULE,
            "evidence": ev}


def _claim3(results, main, seeds):
    yes, tot, ev = 0, 0, []
    for src, meth in main.items():
        base = _per_seed_metric(results, meth["none"], lambda r: r["acc"], seeds)
        for aoe in ("aoe_fgsm", "aoe_pgd"):
            a = _per_seed_metric(results, meth[aoe], lambda r: r["acc"], seeds)
            drop = float(np.mean(base - a)) * 100
            tot += 1
            yes += drop <= 1.0
            ev.append(f"{METHODS[aoe][0]} ({SOURCE_LABELS[src]}): accuracy "
                      f"{np.mean(a) * 100:.2f}% vs no OE {np.mean(base) * 100:.2f}% "
                      f"(drop {drop:+.2f} pp)")
    return {"claim": "(3) AOE (mostly) preserves ID accuracy",
            "verdict": _verdict(yes, tot),
            "rule": "mean accuracy drop vs no-OE fine-tuning at most 1 percentage point",
            "evidence": ev}


def _claim4(results, p):
    conv = results["items"].get("4", {})
    ev, yes, tot = [], 0, 0
    nonfinite = sum(results["nonfinite_warnings"].values())
    drops = {}
    for m, c in conv.items():
        au = [v[0] for v in c["auroc"]]
        drops[m] = max([0.0] + [au[i] - au[i + 1] for i in range(1, len(au) - 1)])
    ref_drop = drops.get("oe", 0.0)
    for m, c in conv.items():
        au = [v[0] for v in c["auroc"]]
        final = au[-1]
        first_epoch = [a for a, e in zip(au, c["epoch"]) if 0 < e <= 1.0]
        finite = all(v is not None and math.isfinite(v) for v in
                     [x[0] for x in c["loss"][1:]])
        frac = ((first_epoch[-1] - au[0]) / (final - au[0])
                if first_epoch and final != au[0] else float("nan"))
        fast = bool(first_epoch) and math.isfinite(frac) and frac >= 0.9
        ev.append(f"{METHODS[m][0]}: AUROC {au[0]:.4f} (pretrained) -> "
                  f"{first_epoch[-1] if first_epoch else float('nan'):.4f} after 1 epoch -> "
                  f"{final:.4f} after {p.epochs} epochs ({c['iteration'][-1]} iterations): "
                  f"{frac * 100:.0f}% of the gain in the first epoch; largest AUROC drop "
                  f"between evaluations {drops[m]:.4f}; losses finite: {finite}")
        if m != "oe":
            tot += 1
            yes += (finite and nonfinite == 0 and drops[m] <= ref_drop + 0.01 and fast)
    ev.append(f"non-finite-loss stops in all runs: {nonfinite}")
    return {"claim": "(4) AOE training is stable and converges fast",
            "verdict": _verdict(yes, tot),
            "rule": "stable = finite losses, no non-finite-loss stop in any run, and the "
                    "largest AUROC drop between consecutive evaluations (mean curve) at "
                    "most 0.01 above vanilla OE's; fast = at least 90% of the final AUROC "
                    "gain over the pretrained model reached after the first epoch",
            "evidence": ev}


def _claim5(results, items, seeds):
    ev, yes, tot = [], 0, 0
    for m in ("oe", "aoe_fgsm"):
        sizes = items["sample"][m]
        ns = sorted(sizes)
        vals = [_per_seed_metric(results, sizes[n], _auroc, seeds) for n in ns]
        means = [float(np.mean(v)) for v in vals]
        gain = means[-1] - means[0]
        helps = _compare(vals[-1], vals[0])[0] == "better" and gain > 0.002
        last_gain = means[-1] - means[-2] if len(means) > 1 else 0.0
        saturates = len(means) > 2 and (abs(last_gain) <= 0.005 or
                                         (gain > 0 and last_gain <= 0.25 * gain))
        ev.append(f"{METHODS[m][0]}: " + ", ".join(f"{n}: {v:.4f}" for n, v in zip(ns, means))
                  + f" (gain {gain:+.4f}; more outliers help: {helps}; saturates: {saturates})")
        if m == "aoe_fgsm":
            tot += 2
            yes += int(helps) + int(saturates)
    return {"claim": "(5) More outliers help, but the effect saturates quickly",
            "verdict": _verdict(yes, tot),
            "rule": "AOE-FGSM avg AUROC: largest pool better than smallest for every "
                    "seed (gain > 0.002), and the last step in pool size adds at most "
                    "0.005 or a quarter of the total gain",
            "evidence": ev}


def _claim6a(results, items, p, seeds):
    real = items["real"]
    a = _per_seed_metric(results, real["aoe_fgsm"], _auroc, seeds)
    b = _per_seed_metric(results, real["oe"], _auroc, seeds)
    word, d = _compare(a, b)
    unseen = results.get("unseen_sets", ["gaussian_noise", "uniform_noise", "photo_patches"])
    evidence = [f"all OOD sets: AOE-FGSM {np.mean(a):.4f} vs OE {np.mean(b):.4f} "
                f"({d:+.4f}, {word})"]
    if unseen:
        gu = lambda r: np.mean([r["ood"][n]["auroc"] for n in unseen])  # noqa: E731
        au, bu = (_per_seed_metric(results, real[k], gu, seeds) for k in ("aoe_fgsm", "oe"))
        word_u, d_u = _compare(au, bu)
        evidence.append(f"sets unlike the real outliers ({', '.join(_label(n) for n in unseen)}):"
                        f" AOE-FGSM {np.mean(au):.4f} vs OE {np.mean(bu):.4f} ({d_u:+.4f}, "
                        f"{word_u})")
    answer = {"better": "yes", "worse": "no (it hurts)", "inconsistent": "no consistent effect"}
    return {"claim": "(6a) Open question: does AOE help with real (non-synthetic) outliers?",
            "verdict": answer[word],
            "rule": f"AOE-FGSM vs OE, both trained on real images ({p.real_outliers}), avg "
                    "AUROC higher for every seed",
            "evidence": evidence}


def _claim6b(results, items, p, seeds):
    strong = items["strong"]
    fg = f"FGSM eps={p.epsilon * 255:.0f}/255"
    base = _per_seed_metric(results, strong[fg], _auroc, seeds)
    ev, better = [], []
    for lab, k in strong.items():
        if lab in (fg, "OE"):
            continue
        v = _per_seed_metric(results, k, _auroc, seeds)
        word, d = _compare(v, base)
        if word == "better":
            better.append(lab)
        rob = results["runs"][k].get("adv", {})
        rob_s = ""
        if rob:
            rob_s = (f"; PGD eps={p.robust_eps} AUROC "
                     f"{rob['pgd'][_eps_key(p.robust_eps)]['auroc'][0]:.4f}")
        ev.append(f"{lab}: avg AUROC {np.mean(v):.4f} vs {fg} {np.mean(base):.4f} "
                  f"({d:+.4f}, {word}){rob_s}")
    return {"claim": "(6b) Open question: do stronger adversaries (more PGD steps, larger "
                     "eps) help more than FGSM?",
            "verdict": ("yes: " + ", ".join(better)) if better else "no",
            "rule": f"clean avg AUROC higher than {fg} for every seed",
            "evidence": ev}


def _conclusions(results, items, p):
    seeds = p.seeds
    out = []
    main = items.get("main", {})
    if 1 in p.items and main:
        out.append(_claim1(results, main, seeds))
    if 2 in p.items and main:
        out.append(_claim2(results, main, p, seeds))
    if 3 in p.items and main:
        out.append(_claim3(results, main, seeds))
    if 4 in p.items:
        out.append(_claim4(results, p))
    if 5 in p.items:
        out.append(_claim5(results, items, seeds))
    if 6 in p.items:
        out.append(_claim6a(results, items, p, seeds))
        out.append(_claim6b(results, items, p, seeds))
    return out


# ------------------------------------------------------------------------- peers
def _peer_mean(per_seed, seed, backbone, kind, name, sets, metric):
    rows = per_seed[seed][backbone][kind][name]
    return float(np.mean([rows[s][metric] for s in sets]))


def best_peer(peers):
    """The peer with the highest mean non-noise AUROC (over sets and seeds) on the CE
    backbone; None without a peer table."""
    if not peers or not peers.get("per_seed"):
        return None
    per, near = peers["per_seed"], peers["non_noise_sets"]
    names = list(next(iter(per.values()))["ce"]["peer"])
    return max(names, key=lambda n: np.mean([_peer_mean(per, s, "ce", "peer", n, near, "auroc")
                                             for s in per]))


def peer_comparison(results):
    """One line: AOE-FGSM with the package's default ``ood_score`` vs the best peer on the CE
    backbone, mean AUROC / FPR95 over the non-noise sets; None without a peer table."""
    peers = results.get("peers")
    best = best_peer(peers)
    if best is None:
        return None
    per, near, score = peers["per_seed"], peers["non_noise_sets"], peers["default_score"]
    seeds = list(per)
    g = lambda bb, kind, n, m: np.asarray([_peer_mean(per, s, bb, kind, n, near, m)  # noqa: E731
                                           for s in seeds])
    a, b = g("aoe", "own", score, "auroc"), g("ce", "peer", best, "auroc")
    fa, fb = g("aoe", "own", score, "fpr95"), g("ce", "peer", best, "fpr95")
    word, d = _compare(a, b)
    fword, _ = _compare(fa, fb, higher_better=False)
    return (f"AOE-FGSM with the package's default ood_score ({score}) vs the best post-hoc peer "
            f"(pytorch-ood {best} on the cross-entropy backbone), mean over "
            f"{', '.join(_label(n) for n in near)}: AUROC {np.mean(a):.4f} vs {np.mean(b):.4f} "
            f"({d:+.4f}, {word}); FPR95 {np.mean(fa):.4f} vs {np.mean(fb):.4f} ({fword}). "
            "Reported only: the claim rule above does not use it.")


def conclusions(results, items, p):
    """:func:`_conclusions`, each claim with ``"peer_comparison"`` when the run has peers."""
    out = _conclusions(results, items, p)
    line = peer_comparison(results)
    if line is not None:
        for c in out:
            c["peer_comparison"] = line
    return out
