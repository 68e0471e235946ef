"""The paper benchmark's verdict rules on controlled inputs (no training).

`_compare`, `_verdict` and the claim-1/claim-2 rules of `_conclusions` are checked with
hand-made per-seed numbers, so that swapping arguments or inverting a sign fails a test.
Claim 2 is judged by the strong-protocol study (issue 18), given here as a synthetic
``results["strong_protocol"]``.
"""

import numpy as np
import pytest

import benchmarks.paper as B


def test_compare_is_directional():
    a, b = np.array([0.9, 0.8, 0.85]), np.array([0.8, 0.7, 0.80])
    assert B._compare(a, b) == ("better", pytest.approx(0.0833333, abs=1e-6))
    assert B._compare(b, a) == ("worse", pytest.approx(-0.0833333, abs=1e-6))
    # lower is better (FPR@95): a smaller a is "better"
    assert B._compare(b, a, higher_better=False)[0] == "better"
    assert B._compare(a, b, higher_better=False)[0] == "worse"
    assert B._compare(np.array([0.9, 0.7]), np.array([0.8, 0.8]))[0] == "inconsistent"
    assert B._compare(np.array([0.8]), np.array([0.8]))[0] == "inconsistent"  # a tie is not a win


@pytest.mark.parametrize("yes,total,word", [(3, 3, "confirmed"), (0, 3, "not confirmed"),
                                            (1, 3, "mixed"), (0, 0, "not run")])
def test_verdict_words(yes, total, word):
    assert B._verdict(yes, total) == word


def _results(auroc, fpr, adv, seeds=(0, 1, 2), per_set=None):
    """Runs for the default source: ``auroc[method]`` etc. are per-seed lists; the per-set
    AUROCs equal the average unless ``per_set[method] = {set: value}`` says otherwise."""
    per_set = per_set or {}
    runs, main = {}, {}
    ek = B._eps_key(0.03)
    for m in auroc:
        key = f"default/{m}"
        main[m] = key
        runs[key] = {"per_seed": {str(s): {"avg": {"auroc": auroc[m][i], "fpr95": fpr[m][i]},
                                           "ood": {n: {"auroc": per_set.get(m, {}).get(n, auroc[m][i])}
                                                   for n in ("mnist", "photos")},
                                           "adv": {att: {ek: {"auroc": adv[m][i]}}
                                                   for att in ("fgsm", "pgd")},
                                           "acc": 0.9}
                                  for i, s in enumerate(seeds)}}
    return {"runs": runs}, {"main": {"default": main}}


def _strong(aoe, oe, both_aoe=None, both_oe=None):
    """A strong-protocol study's ``stages`` (per-seed worst-case AUROCs, every non-noise set
    the same value): OOD side ``aoe``/``oe``, both sides ``both_*`` (default: the same)."""
    def rows(ood, both):
        both = ood if both is None else both
        return [{"seed": s, "strong": {"worst": {k: {"ood": {"auroc": ood[s]},
                                                     "both": {"auroc": both[s]}}
                                                 for k in ("mnist", "digits28", "photo_patches")}}}
                for s in range(len(ood))]
    return {"eval": {"aoe_fgsm": rows(aoe, both_aoe), "oe": rows(oe, both_oe)}}


HI, LO = [0.95, 0.94, 0.96], [0.90, 0.91, 0.92]


def _claims(auroc, fpr, adv, per_set=None, strong=None):
    results, items = _results(auroc, fpr, adv, per_set=per_set)
    results["strong_protocol"] = strong if strong is not None else _strong(HI, LO)
    p = B.get_profile("quick", seeds=(0, 1, 2), items=(1, 2), adv_eps=(0.0, 0.03),
                      adv_sources=("default",))
    return {c["claim"][:3]: c for c in B._conclusions(results, items, p)}


METHODS = ("none", "oe", "oe_gauss", "aoe_fgsm", "aoe_pgd")


def test_claims_follow_the_numbers_and_flip_when_they_flip():
    hi, lo = [0.95, 0.94, 0.96], [0.90, 0.91, 0.92]
    auroc = {m: (hi if m.startswith("aoe") else lo) for m in METHODS}
    fpr = {m: ([0.1] * 3 if m.startswith("aoe") else [0.2] * 3) for m in METHODS}
    adv = {m: (hi if m.startswith("aoe") else lo) for m in METHODS}
    c = _claims(auroc, fpr, adv)
    assert c["(1)"]["verdict"] == "confirmed" and c["(2)"]["verdict"] == "confirmed"
    # the same numbers with AOE and the baselines swapped: both claims are rejected
    swapped = {m: (lo if m.startswith("aoe") else hi) for m in METHODS}
    c = _claims(swapped, fpr, swapped, strong=_strong(LO, HI))
    assert c["(1)"]["verdict"] == "not confirmed" and c["(2)"]["verdict"] == "not confirmed"
    # AOE better than OE but not than OE + Gaussian noise: mixed
    mixed = dict(auroc, oe_gauss=[0.97, 0.97, 0.97])
    assert _claims(mixed, fpr, adv)["(1)"]["verdict"] == "mixed"


def test_claim_two_follows_the_strong_protocol_not_the_suites_weak_attacks():
    auroc = {m: (HI if m.startswith("aoe") else LO) for m in METHODS}
    fpr = {m: [0.1] * 3 for m in METHODS}
    weak_says_better = {m: (HI if m.startswith("aoe") else LO) for m in METHODS}
    # the strong protocol says worse on both sides: not confirmed, whatever FGSM says
    c2 = _claims(auroc, fpr, weak_says_better, strong=_strong(LO, HI))["(2)"]
    assert c2["verdict"] == "not confirmed"
    weak = [e for e in c2["evidence"] if e.startswith("paper suite")]
    assert len(weak) == 2 and all("(+0.0400, better)" in e and "does not decide" in e
                                  for e in weak)
    assert any("single-step FGSM, OOD side only" in e for e in weak)
    decides = [e for e in c2["evidence"] if "(decides)" in e]
    assert len(decides) == 2 and all("worse" in e for e in decides)
    assert "strong protocol" in c2["rule"].lower() and "round 3" in c2["rule"]
    # better on the OOD side, worse on both sides: mixed; one seed the other way: not better
    assert _claims(auroc, fpr, weak_says_better,
                   strong=_strong(HI, LO, LO, HI))["(2)"]["verdict"] == "mixed"
    one = [0.95, 0.80, 0.96]
    assert _claims(auroc, fpr, weak_says_better,
                   strong=_strong(one, LO))["(2)"]["verdict"] == "not confirmed"
    # weak attacks say worse, the strong protocol better on both sides: confirmed
    weak_says_worse = {m: (LO if m.startswith("aoe") else HI) for m in METHODS}
    assert _claims(auroc, fpr, weak_says_worse,
                   strong=_strong(HI, LO))["(2)"]["verdict"] == "confirmed"
    # without the study the claim is not judged
    c2 = _claims(auroc, fpr, weak_says_better, strong={})["(2)"]
    assert c2["verdict"] == "not run"


def test_claim_two_reads_the_committed_study():
    stages = B.verdicts.load_strong_study()
    assert stages is not None and {"aoe_fgsm", "oe"} <= set(stages["eval"])
    yes, tot, ev = B.verdicts._strong_lines(stages)
    assert tot == 2 and len([e for e in ev if "(decides)" in e]) == 2
    assert any("ce_mahalanobis_pood" in e for e in ev)  # the peers, attacked the same way


def test_claim_one_needs_fpr_and_every_set_too():
    hi, lo = [0.95, 0.94, 0.96], [0.90, 0.91, 0.92]
    auroc = {m: (hi if m.startswith("aoe") else lo) for m in METHODS}
    good = {m: ([0.1] * 3 if m.startswith("aoe") else [0.2] * 3) for m in METHODS}
    assert _claims(auroc, good, auroc)["(1)"]["verdict"] == "confirmed"
    # better average AUROC but worse FPR@95: no win
    bad = {m: ([0.3] * 3 if m.startswith("aoe") else [0.2] * 3) for m in METHODS}
    c = _claims(auroc, bad, auroc)["(1)"]
    assert c["verdict"] == "not confirmed"
    assert all("(worse)" in e for e in c["evidence"] if e.startswith("AOE-FGSM"))
    # better on average and on FPR@95, but worse on one OOD set: no win, and the set is named
    per_set = {"aoe_fgsm": {"photos": 0.5}}
    c = _claims(auroc, good, auroc, per_set=per_set)["(1)"]
    assert c["verdict"] == "not confirmed"
    assert any("lower mean AUROC on photos" in e for e in c["evidence"])
