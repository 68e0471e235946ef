"""The paper benchmark's verdict rules on controlled inputs (no training).

`_compare`, `_verdict` and the claim-1/claim-2 rules of `_conclusions` are checked with
hand-made per-seed numbers, so that swapping arguments or inverting a sign fails a test.
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


def _claims(auroc, fpr, adv, per_set=None):
    results, items = _results(auroc, fpr, adv, per_set=per_set)
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
    c = _claims(swapped, fpr, swapped)
    assert c["(1)"]["verdict"] == "not confirmed" and c["(2)"]["verdict"] == "not confirmed"
    # AOE better than OE but not than OE + Gaussian noise: mixed
    mixed = dict(auroc, oe_gauss=[0.97, 0.97, 0.97])
    assert _claims(mixed, fpr, adv)["(1)"]["verdict"] == "mixed"
    # one seed the other way: no attack setting is "better" on every seed any more
    one = dict(adv, aoe_fgsm=[0.95, 0.80, 0.96])
    c2 = _claims(auroc, fpr, one)["(2)"]
    assert c2["verdict"] == "not confirmed"
    assert all("inconsistent" in e for e in c2["evidence"])


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
