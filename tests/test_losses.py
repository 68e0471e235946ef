import math

import pytest
import torch

from aoe_detect.losses import CrossEntropyOnly, EnergyMarginLoss, SoftmaxOELoss, energy


def test_energy_hand_computed():
    logits = torch.tensor([[0.0, 0.0], [1.0, 2.0], [100.0, 100.0]])
    expected = [-math.log(2), -math.log(math.e + math.e**2), -(100 + math.log(2))]
    assert energy(logits).tolist() == pytest.approx(expected, abs=1e-5)


def test_energy_temperature():
    logits = torch.tensor([[2.0, 4.0]])
    # -T * log(exp(2/2) + exp(4/2)) with T = 2
    assert float(energy(logits, 2.0)) == pytest.approx(-2 * math.log(math.e + math.e**2), abs=1e-5)


def test_energy_half_precision_upcast():
    logits = torch.tensor([[60000.0, 60000.0]], dtype=torch.float16)
    e = energy(logits)
    assert e.dtype == torch.float32 and torch.isfinite(e).all()


def test_energy_margin_loss_hand_computed():
    # ID logits: energies -log(2) ~ -0.693 and -log(e+e^2) ~ -2.4076; m_in = -1
    logits_in = torch.tensor([[0.0, 0.0], [1.0, 2.0]])
    y = torch.tensor([0, 1])
    # outlier logits: energies -log 2 ~ -0.693 and -(5 + log 2) ~ -5.693; m_out = 0
    logits_out = torch.tensor([[0.0, 0.0], [5.0, 5.0]])
    loss = EnergyMarginLoss(lam=0.5, m_in=-1.0, m_out=0.0)
    total, parts = loss(logits_in, y, logits_out)
    ce = (math.log(2) + (math.log(math.e + math.e**2) - 2)) / 2
    l_in = ((-math.log(2) + 1) ** 2 + 0.0) / 2  # second ID energy is below m_in
    l_out = (math.log(2) ** 2 + (5 + math.log(2)) ** 2) / 2
    assert float(parts["ce"]) == pytest.approx(ce, abs=1e-5)
    assert float(parts["energy_in"]) == pytest.approx(l_in, abs=1e-5)
    assert float(parts["energy_out"]) == pytest.approx(l_out, abs=1e-5)
    assert float(total) == pytest.approx(ce + 0.5 * (l_in + l_out), abs=1e-4)


def test_energy_margin_loss_separate_means():
    # 1 ID sample and 3 outliers: each part is averaged over its own count
    logits_in = torch.tensor([[0.0, 0.0]])
    logits_out = torch.zeros(3, 2)
    _, parts = EnergyMarginLoss(lam=1.0, m_in=-10.0, m_out=10.0)(logits_in, None, logits_out)
    assert float(parts["energy_in"]) == pytest.approx((-math.log(2) + 10) ** 2, abs=1e-4)
    assert float(parts["energy_out"]) == pytest.approx((10 + math.log(2)) ** 2, abs=1e-4)
    assert float(parts["ce"]) == 0.0  # label-free: no CE term


def test_softmax_oe_loss_uniform_target():
    logits_out = torch.tensor([[1.0, 2.0, 3.0]])
    total, parts = SoftmaxOELoss(lam=0.5)(torch.tensor([[0.0, 0.0, 0.0]]), torch.tensor([0]),
                                          logits_out)
    lse = math.log(math.e + math.e**2 + math.e**3)
    expected_out = sum(lse - v for v in (1.0, 2.0, 3.0)) / 3
    assert float(parts["energy_out"]) == pytest.approx(expected_out, abs=1e-5)
    assert float(total) == pytest.approx(math.log(3) + 0.5 * expected_out, abs=1e-5)
    # minimum at uniform logits: cross-entropy to uniform = log K
    _, p2 = SoftmaxOELoss()(torch.zeros(1, 3), None, torch.zeros(1, 3))
    assert float(p2["energy_out"]) == pytest.approx(math.log(3), abs=1e-6)


def test_cross_entropy_only_ignores_outliers():
    li, y = torch.tensor([[2.0, 0.0]]), torch.tensor([0])
    a, _ = CrossEntropyOnly()(li, y, torch.randn(5, 2))
    assert float(a) == pytest.approx(math.log(1 + math.exp(-2)), abs=1e-6)


def test_energy_loss_gradient_raises_outlier_energy():
    logits_out = torch.zeros(4, 3, requires_grad=True)
    total, _ = EnergyMarginLoss(lam=1.0, m_in=-5.0, m_out=5.0)(torch.zeros(2, 3), None, logits_out)
    total.backward()
    # descending the loss lowers the logits of outliers -> raises their energy
    assert (logits_out.grad > 0).all()
