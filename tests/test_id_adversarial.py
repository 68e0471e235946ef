"""Issue 18: ID-side adversarial training (``FGSM(sides="both")`` / ``PGD(sides="both")``):
the default keeps today's numbers, "both" trains on ID rows attacked toward higher energy."""

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.utils._param_validation import InvalidParameterError
from torch import nn

from aoe_detect import AOEDetector
from aoe_detect._training import TrainOptions, build_stage, train_epoch
from aoe_detect.attacks import FGSM, PGD
from aoe_detect.losses import EnergyMarginLoss, energy
from aoe_detect.outliers import UniformNoise
from aoe_detect.testing import TINY, quiet, tiny_blobs

CPU = torch.device("cpu")
EPS = 0.05


class Recorder(nn.Module):
    """Records every train-mode batch and, at that moment, the eval-mode energies of its
    first ``n_in`` rows and of the clean training rows nearest to them (L-inf)."""

    def __init__(self, inner, X, n_in):
        super().__init__()
        self.inner, self.X, self.n_in, self.seen = inner, X, n_in, []

    def forward(self, x):
        if self.training:
            rows = x[: self.n_in].detach()
            dist = (rows[:, None, :] - self.X[None]).abs().amax(-1)
            d, j = dist.min(1)
            with torch.no_grad():
                self.inner.eval()
                e_adv = energy(self.inner(rows)).clone()
                e_clean = energy(self.inner(self.X[j])).clone()
                self.inner.train()
            self.seen.append((d, e_adv, e_clean))
        return self.inner(x)


def _record(attack, steps=5):
    g = torch.Generator().manual_seed(0)
    X = torch.randn(80, 3, generator=g)
    y = (X[:, 0] > 0).long()
    torch.manual_seed(0)
    net = Recorder(nn.Sequential(nn.Linear(3, 16), nn.ReLU(), nn.Linear(16, 2)), X, 16)
    source = UniformNoise()
    source.fit(X, torch.Generator().manual_seed(1))
    stage = build_stage("finetune", 1, net, X, y, loss_fn=EnergyMarginLoss(0.1, -5.0, -3.0),
                        generator=torch.Generator().manual_seed(0), device=CPU,
                        options=TrainOptions(batch_size=16, outlier_batch_size=8, lr=1e-2),
                        source=source, attack=attack, eps=EPS)
    train_epoch(stage)
    return net.seen


@pytest.mark.parametrize("attack", [FGSM(sides="both"), PGD(steps=3, sides="both"),
                                    PGD(steps=3, sides="both", early_stop=-100.0)])
def test_the_loss_sees_id_rows_moved_within_eps_toward_higher_energy(attack):
    seen = _record(attack)
    assert len(seen) == 5  # 80 rows / 16 per step
    d = torch.cat([s[0] for s in seen])
    e_adv, e_clean = torch.cat([s[1] for s in seen]), torch.cat([s[2] for s in seen])
    assert float(d.max()) <= EPS + 1e-6  # inside the ball around a training row
    assert float(d.min()) > EPS / 10  # and every row moved (none is the clean row)
    # toward higher energy (the ID rows look more OOD), at the weights of that step;
    # PGD's early_stop (an outlier threshold, reached at once here) does not stop ID rows
    assert float((e_adv > e_clean).float().mean()) >= 0.9
    assert float((e_adv - e_clean).mean()) > 0


def test_an_outlier_early_stop_does_not_stop_the_id_rows():
    # the first step runs on the same weights and random numbers: same ID rows either way
    plain = _record(PGD(steps=3, sides="both"))[0]
    stopped = _record(PGD(steps=3, sides="both", early_stop=-100.0))[0]
    torch.testing.assert_close(stopped[1], plain[1], rtol=0, atol=0)


def test_with_sides_ood_the_loss_sees_the_clean_id_rows():
    for attack in (FGSM(), FGSM(sides="ood"), PGD(steps=3)):
        d = torch.cat([s[0] for s in _record(attack)])
        assert float(d.max()) == 0.0


@pytest.fixture(scope="module")
def blobs3():
    X, Y, _ = tiny_blobs()
    return X, Y


def _scores(attack, X, Y):
    det = quiet(AOEDetector(**{**TINY, "attack": attack}).fit, X, Y)
    return det.score_samples(X), det


def test_default_sides_keeps_the_fit_bitwise_and_both_changes_it(blobs3):
    X, Y = blobs3
    base, det = _scores(FGSM(), X, Y)
    same, _ = _scores(FGSM(sides="ood"), X, Y)
    named, _ = _scores("fgsm", X, Y)
    both, det_both = _scores(FGSM(sides="both"), X, Y)
    np.testing.assert_array_equal(base, same)
    np.testing.assert_array_equal(base, named)
    assert np.abs(both - base).max() > 1e-4
    # pretraining is unaffected: the first history row (pretrain) is identical
    pre = [r for r in det.history_ if r["stage"] == "pretrain"]
    pre_both = [r for r in det_both.history_ if r["stage"] == "pretrain"]
    assert [r["loss"] for r in pre] == [r["loss"] for r in pre_both]
    ft = [r for r in det.history_ if r["stage"] == "finetune"]
    ft_both = [r for r in det_both.history_ if r["stage"] == "finetune"]
    # the ID rows trained on are attacked toward higher energy: their mean energy is higher
    assert ft_both[0]["mean_energy_id"] > ft[0]["mean_energy_id"]


def test_sides_is_validated_cloned_and_set_through_nested_params(blobs3):
    X, Y = blobs3
    for attack in (FGSM(sides="id"), PGD(sides=None)):
        with pytest.raises(InvalidParameterError, match="sides"):
            AOEDetector(**{**TINY, "attack": attack}).fit(X, Y)
    det = AOEDetector(**{**TINY, "attack": PGD(steps=2)})
    det.set_params(attack__sides="both")
    assert det.attack.sides == "both" and det.get_params()["attack__sides"] == "both"
    twin = clone(det)
    assert twin.attack is not det.attack and twin.attack.sides == "both"
    assert FGSM().sides == "ood" and PGD().sides == "ood"
    assert repr(FGSM()) == "FGSM()" and "sides='both'" in repr(FGSM(sides="both"))
