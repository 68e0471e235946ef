"""Issue 18 item 3: the post-hoc peers of ``benchmarks/robustness_study.py --stage peers``
are attacked white-box through their own score (tests that fail for a detached gradient,
a wrong sign or a different protocol)."""

import pathlib

import numpy as np
import pytest
import torch

import aoe_detect
from aoe_detect import AOEDetector
from aoe_detect.attacks import eval_mode, pgd
from aoe_detect.robustness import robust_ood_report
from benchmarks.robustness_study import POOD_PEERS, fit_peer_heads

N, EPS = 24, 0.03


@pytest.fixture(scope="module")
def setup():
    with np.load(pathlib.Path(aoe_detect.__file__).parent / "sample_data" / "sample.npz") as d:
        img = lambda a: (a.astype(np.float32) / 255).reshape(len(a), 1, 28, 28)  # noqa: E731
        X, y = img(d["fashion_train_X"][:300]), d["fashion_train_y"][:300]
        Xid, Xood = img(d["fashion_test_X"][:N]), img(d["mnist_test_X"][:N])
    ref = AOEDetector(outliers=None, pretrain_epochs=1, epochs=0, ood_score="energy",
                      batch_size=64, random_state=0, device="cpu").fit(X, y)
    return fit_peer_heads(ref.module_, X, y, 0, ref), ref, Xid, Xood


def test_energy_peer_is_attacked_exactly_as_the_package_energy_detector(setup):
    peers, ref, Xid, Xood = setup
    mine = robust_ood_report(peers["ce_energy_pood"], Xid, Xood, eps=(EPS,), steps=10,
                             random_state=0, warn=False)
    pkg = robust_ood_report(ref, Xid, Xood, eps=(EPS,), steps=10, random_state=0, warn=False)
    for a, b in zip(mine.rows, pkg.rows):
        assert a["attack"] == b["attack"] and a["side"] == b["side"]
        assert a["auroc"] == pytest.approx(b["auroc"], abs=1e-6)


@pytest.mark.parametrize("variant", sorted(POOD_PEERS))
def test_peer_attack_stays_in_the_ball_and_moves_the_peer_score(setup, variant):
    peers, _, Xid, Xood = setup
    det = peers[variant]
    x = torch.from_numpy(Xood)
    with eval_mode(det.module_):
        adv = pgd(det.module_, x, EPS, steps=10, step_size=2.5 * EPS / 10, clip=(0.0, 1.0),
                  generator=torch.Generator().manual_seed(0), keep_best=True)
    assert float((adv - x).abs().max()) <= EPS + 1e-6
    assert adv.min() >= 0 and adv.max() <= 1
    clean, moved = det.score_samples(Xood), det.score_samples(adv.numpy())
    assert np.all(moved >= clean - 1e-4)
    assert moved.mean() > clean.mean() + 1e-3  # a detached (masked) gradient leaves it flat
    rep = robust_ood_report(det, Xid, Xood, eps=(0.0, EPS), steps=10, random_state=0, warn=False)
    assert rep.auroc(EPS, "both") < rep.auroc(0.0, "both") - 0.02
    assert not [d for d in rep.diagnostics if d["kind"] == "not_improving"]
