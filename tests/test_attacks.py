import pytest
import torch
from torch import nn

from aoe_detect.attacks import FGSM, PGD, GaussianAugment, fgsm, gaussian_augment, pgd, resolve_attack
from aoe_detect.losses import energy


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.BatchNorm1d(8), nn.Dropout(0.5),
                         nn.ReLU(), nn.Linear(8, 3))


@pytest.fixture
def model_and_x():
    m = _model()
    x = torch.rand(12, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    return m, x


@pytest.mark.parametrize("attack", ["fgsm", "pgd"])
@pytest.mark.parametrize("train_mode", [True, False])
def test_attack_invariants(model_and_x, attack, train_mode):
    m, x = model_and_x
    m.train(train_mode)
    # leave some parameter gradients behind, and freeze one parameter
    m(x).sum().backward()
    grads = [None if p.grad is None else p.grad.clone() for p in m.parameters()]
    list(m.parameters())[0].requires_grad_(False)
    flags = [p.requires_grad for p in m.parameters()]
    bn_stats = m[2].running_mean.clone()
    x0 = x.clone()
    eps = 0.05
    if attack == "fgsm":
        xa = fgsm(m, x, eps, clip=(0.0, 1.0))
    else:
        xa = pgd(m, x, eps, steps=5, clip=(0.0, 1.0), generator=torch.Generator().manual_seed(0))
    assert torch.equal(x, x0), "input modified in place"
    assert (xa - x).abs().max() <= eps + 1e-7
    assert xa.min() >= 0 and xa.max() <= 1
    assert not xa.requires_grad
    assert all(mod.training == train_mode for mod in m.modules())
    assert [p.requires_grad for p in m.parameters()] == flags
    for p, g in zip(m.parameters(), grads):
        assert (p.grad is None and g is None) or torch.equal(p.grad, g)
    assert torch.equal(m[2].running_mean, bn_stats), "BatchNorm statistics updated"
    m.eval()
    with torch.no_grad():
        assert energy(m(xa)).mean() < energy(m(x)).mean(), "energy did not go down"


def test_fgsm_is_signed_gradient_step():
    # linear model: E(x) = -logsumexp(Wx); gradient sign is analytic for one active class
    m = nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        m.weight.copy_(torch.tensor([[2.0, -3.0]]))
    x = torch.tensor([[0.5, 0.5]])
    # E = -(2 x1 - 3 x2); grad = (-2, 3); x - eps*sign(grad) = x + eps*(1, -1)
    assert torch.allclose(fgsm(m, x, 0.1), torch.tensor([[0.6, 0.4]]))
    assert torch.allclose(fgsm(m, x, 0.1, direction=1), torch.tensor([[0.4, 0.6]]))


def test_fgsm_per_feature_eps_and_no_clip():
    m = nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        m.weight.copy_(torch.tensor([[2.0, -3.0]]))
    x = torch.tensor([[5.0, -5.0]])
    xa = fgsm(m, x, torch.tensor([1.0, 0.5]))
    assert torch.allclose(xa, torch.tensor([[6.0, -5.5]]))


def test_pgd_stronger_than_fgsm(model_and_x):
    m, x = model_and_x
    m.eval()
    with torch.no_grad():
        e_f = energy(m(fgsm(m, x, 0.1))).mean()
        e_p = energy(m(pgd(m, x, 0.1, steps=10, random_start=False))).mean()
    assert e_p <= e_f + 1e-6


def test_pgd_deterministic_with_generator(model_and_x):
    m, x = model_and_x
    a = pgd(m, x, 0.1, steps=3, generator=torch.Generator().manual_seed(5))
    b = pgd(m, x, 0.1, steps=3, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b)


def test_pgd_early_stop(model_and_x):
    m, x = model_and_x
    # a threshold every sample already meets stops after the first step
    kw = dict(step_size=0.02, random_start=False)
    full = pgd(m, x, 0.1, steps=20, **kw)
    early = pgd(m, x, 0.1, steps=20, early_stop=1e9, **kw)
    one = pgd(m, x, 0.1, steps=1, **kw)
    assert torch.equal(early, one) and not torch.equal(full, one)


def test_eps_zero_is_identity(model_and_x):
    m, x = model_and_x
    assert torch.equal(pgd(m, x, 0.0), x)


def test_gaussian_augment():
    x = torch.full((2000, 4), 0.5)
    out = gaussian_augment(x, 0.1, clip=(0, 1), generator=torch.Generator().manual_seed(0))
    assert out.std().item() == pytest.approx(0.1, rel=0.05)
    assert torch.equal(x, torch.full((2000, 4), 0.5))


def test_configs_and_resolution():
    assert resolve_attack(None) is None and resolve_attack("none") is None
    assert isinstance(resolve_attack("fgsm"), FGSM)
    assert isinstance(resolve_attack("pgd"), PGD)
    assert isinstance(resolve_attack("gaussian"), GaussianAugment)
    assert PGD(eps=0.2).resolve_eps(0.1) == 0.2 and PGD().resolve_eps(0.1) == 0.1
    with pytest.raises(ValueError, match="valid names"):
        resolve_attack("cw")
    with pytest.raises(TypeError, match="attack"):
        resolve_attack(3)
    assert PGD(steps=3).get_params()["steps"] == 3
