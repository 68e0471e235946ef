import numpy as np
import pytest
import torch
from sklearn.base import clone

from aoe_detect.outliers import (ArrayOutliers, CorruptedID, GaussianNoise, GeneratorOutliers,
                                 LowDensityGMM, Mixture, PermutedID, RejectedLowDensity, ShellNoise,
                                 SmoothNoise, UniformNoise, default_outliers, resolve_outliers)

IMG = torch.rand(64, 1, 16, 16, generator=torch.Generator().manual_seed(0)) * 0.8 + 0.1
TAB = torch.randn(128, 5, generator=torch.Generator().manual_seed(0)) * torch.tensor([1, 2, 3, 4, 5.0])

SOURCES = [UniformNoise, GaussianNoise, SmoothNoise, LowDensityGMM, PermutedID]


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("cls", SOURCES)
@pytest.mark.parametrize("data", [IMG, TAB], ids=["image", "tabular"])
def test_source_shape_dtype_determinism(cls, data):
    src = cls().fit(data, gen())
    a = src.sample(50, gen(1))
    b = src.sample(50, gen(1))
    assert a.shape == (50, *data.shape[1:]) and a.dtype == torch.float32
    assert torch.equal(a, b)
    assert not torch.equal(a, src.sample(50, gen(2)))
    assert torch.isfinite(a).all()
    if data.dim() == 4:  # images stay in the ID pixel range
        assert a.min() >= data.min() - 1e-6 and a.max() <= data.max() + 1e-6


def test_sources_leave_global_rng_alone():
    state = torch.get_rng_state()
    np_state = np.random.get_state()[1].copy()
    for cls in SOURCES:
        cls().fit(IMG, gen()).sample(10, gen())
    assert torch.equal(state, torch.get_rng_state())
    assert np.array_equal(np_state, np.random.get_state()[1])


def test_uniform_widen_and_gaussian_scale():
    u = UniformNoise(widen=0.5).fit(TAB).sample(20000, gen())
    span = TAB.max(0).values - TAB.min(0).values
    assert torch.allclose(u.min(0).values, TAB.min(0).values - 0.5 * span, atol=0.05 * span.max())
    g = GaussianNoise(scale=3.0).fit(TAB).sample(20000, gen())
    assert torch.allclose(g.std(0), 3 * TAB.std(0), rtol=0.05)


def test_permuted_tabular_keeps_marginals_breaks_rows():
    src = PermutedID().fit(TAB, gen())
    out = src.sample(300, gen())
    # every value of column j comes from column j of the ID data
    for j in range(TAB.shape[1]):
        assert set(out[:, j].tolist()) <= set(TAB[:, j].tolist())
    rows = {tuple(r) for r in TAB.tolist()}
    assert sum(tuple(r) in rows for r in out.tolist()) < 30


def test_permuted_images_are_patch_shuffles():
    src = PermutedID(grid=4, blur=0.0).fit(IMG, gen())
    out = src.sample(20, gen())
    # patch shuffling keeps each image's pixel multiset: sorted pixels match some ID image
    ids = torch.sort(IMG.flatten(1), 1).values
    for o in out:
        assert (torch.sort(o.flatten()).values - ids).abs().amax(1).min() < 1e-6


def test_low_density_sigma_moves_away():
    near = LowDensityGMM(sigma=1.0).fit(TAB, gen()).sample(2000, gen())
    far = LowDensityGMM(sigma=3.0).fit(TAB, gen()).sample(2000, gen())
    mu = TAB.mean(0)
    assert (far - mu).norm(dim=1).mean() > 1.5 * (near - mu).norm(dim=1).mean()


def test_array_outliers_uint8_scaled():
    arr = np.full((10, 16, 16), 255, np.uint8)
    src = ArrayOutliers(arr).fit(IMG)
    out = src.sample(5, gen())
    assert out.shape == (5, 1, 16, 16) and float(out.max()) == 1.0


def test_generator_outliers_restores_mode_and_sigma():
    G = torch.nn.Sequential(torch.nn.Linear(4, 16 * 16), torch.nn.Sigmoid(), torch.nn.Unflatten(1, (1, 16, 16)))
    G.train()
    src = GeneratorOutliers(G, latent_dim=4, sigma=2.0).fit(IMG)
    out = src.sample(7, gen())
    assert out.shape == (7, 1, 16, 16) and G.training
    z = GeneratorOutliers(G, latent_dim=4, sigma=2.0)._latent(20000, gen())
    assert float(z.std()) == pytest.approx(2.0, rel=0.02)


def test_mixture_weights_and_nested_params():
    mix = Mixture([("a", ArrayOutliers(np.zeros((3, 5), np.float32))),
                   ("b", ArrayOutliers(np.ones((3, 5), np.float32)))], weights=[3, 1])
    mix.fit(TAB, gen())
    out = mix.sample(4000, gen())
    assert float(out[:, 0].mean()) == pytest.approx(0.25, abs=0.03)
    assert "a__X" in mix.get_params()
    mix2 = clone(default_outliers((1, 16, 16))).set_params(elastic__alpha=0.2)
    assert mix2.get_params()["elastic__alpha"] == 0.2
    with pytest.raises(ValueError, match="weights"):
        Mixture([UniformNoise()], weights=[-1]).fit(TAB, gen())


def test_default_outliers_families():
    img = dict(default_outliers((1, 28, 28)).sources)
    tab = dict(default_outliers((10,)).sources)
    assert set(img) == {"elastic", "permuted2", "mixup"}
    assert img["permuted2"].grid == 2
    assert set(tab) == {"shell", "corrupted"}


def test_resolve_outliers():
    assert resolve_outliers(None, (3,)) is None
    assert isinstance(resolve_outliers("uniform", (3,)), UniformNoise)
    assert isinstance(resolve_outliers(np.zeros((2, 3)), (3,)), ArrayOutliers)
    with pytest.raises(ValueError, match="valid names"):
        resolve_outliers("biggan", (3,))
    with pytest.raises(TypeError):
        resolve_outliers(3.0, (3,))


@pytest.mark.parametrize("make", [lambda: ShellNoise(), lambda: CorruptedID(),
                                  lambda: RejectedLowDensity(),
                                  lambda: ShellNoise(radii=(0.05,), max_rounds=1)],
                         ids=["shell", "corrupted", "lowdensity_rejected", "shell-fallback"])
def test_off_support_sources_stay_outside_the_id_support(make):
    """Issue 9: every tabular sample is farther from every ID row than the ID rows' 95%
    nearest-neighbour radius (standardised units), deterministically per generator."""
    rng = np.random.RandomState(0)
    base = rng.randn(300, 3)
    X = torch.as_tensor(np.c_[base, base @ rng.randn(3, 3) + 0.1 * rng.randn(300, 3)],
                        dtype=torch.float32)  # 6 correlated features
    src = make().fit(X, gen())
    a, b = src.sample(500, gen()), src.sample(500, gen())
    assert a.shape == (500, 6) and a.dtype == torch.float32 and torch.equal(a, b)
    z = (a.double() - src.mean_) / src.std_
    d = torch.cdist(z.float(), src.pool_z_).min(1).values
    assert float(d.min()) > src.radius_ > 0
    # the ID rows themselves: 95% have a neighbour within the radius
    dz = torch.cdist(src.pool_z_, src.pool_z_)
    dz.fill_diagonal_(float("inf"))
    assert float((dz.min(1).values <= src.radius_).float().mean()) == pytest.approx(0.95, abs=0.01)


def test_off_support_parameter_errors():
    with pytest.raises(ValueError, match="radii"):
        ShellNoise(radii=(0.0,)).fit(TAB, gen())
    with pytest.raises(ValueError, match="shift"):
        CorruptedID(shift=(3.0, 1.0)).fit(TAB, gen())
