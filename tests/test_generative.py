"""Tests of the DCGAN outlier source (aoe_detect.generative)."""

import doctest
import os

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.exceptions import NotFittedError

from aoe_detect.outliers import gan as generative
from aoe_detect.outliers import DCGANDiscriminator, DCGANGenerator, GANOutliers, train_gan
from aoe_detect.outliers import GeneratorOutliers, Mixture, UniformNoise, resolve_outliers

SMALL = dict(latent_dim=8, epochs=1, batch_size=16, width=8)


def _structured_images(n, shape, seed):
    """Bright axis-aligned rectangles on a dark background, values in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    *c, h, w = shape
    X = 0.1 * torch.rand((n, *c, h, w), generator=g)
    for i in range(n):
        y0, x0 = torch.randint(0, h // 2, (2,), generator=g).tolist()
        dy, dx = torch.randint(4, h // 2, (2,), generator=g).tolist()
        X[i, ..., y0:y0 + dy, x0:x0 + dx] = 0.9
    return X


@pytest.fixture(scope="module")
def gray():
    return _structured_images(64, (28, 28), seed=0)


@pytest.fixture(scope="module")
def rgb():
    return _structured_images(64, (3, 32, 32), seed=1)


@pytest.fixture(scope="module")
def fitted_gray(gray):
    return GANOutliers(**SMALL).fit(gray, torch.Generator().manual_seed(0))


def _gen(seed):
    return torch.Generator().manual_seed(seed)


# --------------------------------------------------------------------------- networks
@pytest.mark.parametrize("shape", [(1, 28, 28), (28, 28), (3, 32, 32), (1, 32, 32), (3, 28, 28)])
def test_generator_shape_and_range(shape):
    c_shape = shape if len(shape) == 3 else (1, *shape)
    G = DCGANGenerator(latent_dim=16, out_shape=shape, width=8).eval()
    with torch.no_grad():
        x = G(5.0 * torch.randn(6, 16, generator=_gen(0)))
    assert tuple(x.shape) == (6, *c_shape)
    assert x.dtype == torch.float32
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0


@pytest.mark.parametrize("spectral_norm", [False, True])
@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32)])
def test_discriminator_outputs_one_logit(shape, spectral_norm):
    D = DCGANDiscriminator(shape, width=8, spectral_norm=spectral_norm)
    with torch.no_grad():
        out = D(torch.rand(5, *shape, generator=_gen(0)))
    assert tuple(out.shape) == (5,)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("bad", [(1, 30, 30), (1, 28), (1, 4, 4), (2, 3, 28, 28)])
def test_networks_reject_bad_shapes(bad):
    with pytest.raises(ValueError, match="divisible by 4"):
        DCGANGenerator(out_shape=bad)
    with pytest.raises(ValueError, match="divisible by 4"):
        DCGANDiscriminator(bad)


# --------------------------------------------------------------------------- train_gan
def test_one_training_step_changes_parameters_and_losses_are_finite(gray):
    X = gray[:16]
    kw = dict(latent_dim=8, batch_size=16, width=8)
    G0, D0, h0 = train_gan(X, epochs=0, generator=_gen(0), **kw)  # the initial weights
    G1, D1, h1 = train_gan(X, epochs=1, generator=_gen(0), **kw)  # exactly one step
    assert h0 == []
    assert len(h1) == 1 and h1[0]["epoch"] == 1
    assert np.isfinite(h1[0]["d_loss"]) and np.isfinite(h1[0]["g_loss"])
    assert h1[0]["d_loss"] > 0 and h1[0]["g_loss"] > 0 and h1[0]["seconds"] >= 0
    for before, after in ((G0, G1), (D0, D1)):
        pairs = list(zip(before.named_parameters(), after.named_parameters()))
        assert pairs
        for (name, p0), (_, p1) in pairs:
            assert not torch.equal(p0, p1), name
    assert not G1.training and not D1.training


def test_train_gan_history_per_epoch_and_spectral_norm(rgb):
    G, D, hist = train_gan(rgb, latent_dim=8, epochs=2, batch_size=32, width=8,
                           spectral_norm=True, generator=_gen(3))
    assert [row["epoch"] for row in hist] == [1, 2]
    assert all(set(row) == {"epoch", "d_loss", "g_loss", "seconds"} for row in hist)
    assert all(np.isfinite(row["d_loss"]) and np.isfinite(row["g_loss"]) for row in hist)
    assert G.out_shape == (3, 32, 32)


def test_train_gan_is_deterministic_and_keeps_global_rng(gray):
    cpu_state = torch.get_rng_state()
    G1, _, h1 = train_gan(gray, latent_dim=8, epochs=1, batch_size=16, width=8, generator=_gen(5))
    assert torch.equal(torch.get_rng_state(), cpu_state)
    G2, _, h2 = train_gan(gray, latent_dim=8, epochs=1, batch_size=16, width=8, generator=_gen(5))
    for (k, a), (_, b) in zip(G1.state_dict().items(), G2.state_dict().items()):
        assert torch.equal(a, b), k
    assert [r["d_loss"] for r in h1] == [r["d_loss"] for r in h2]


def test_train_gan_verbose_zero_is_silent(gray, capsys):
    train_gan(gray[:16], latent_dim=8, epochs=1, batch_size=16, width=4, generator=_gen(0))
    out = capsys.readouterr()
    assert out.out == "" and out.err == ""


# --------------------------------------------------------------------------- GANOutliers
def test_fitted_attributes(fitted_gray, gray):
    src = fitted_gray
    assert src.sample_shape_ == (28, 28)
    assert isinstance(src.generator_, DCGANGenerator) and not src.generator_.training
    assert len(src.history_) == 1 and src.loaded_from_cache_ is False
    assert isinstance(src.sampler_, GeneratorOutliers) and src.sampler_.sigma == src.sigma
    assert src.pool_ is None and src.cache_path_ is None
    assert src.device_ == torch.device("cpu")


@pytest.mark.parametrize("data", ["gray", "rgb"])
def test_sample_is_an_outlier_source(data, request):
    X = request.getfixturevalue(data)
    src = resolve_outliers(GANOutliers(**SMALL), X.shape[1:])  # cloned like the detector does
    assert isinstance(src, GANOutliers)
    assert src.fit(X, _gen(0)) is src
    x = src.sample(37, _gen(1))
    assert x.dtype == torch.float32 and x.device.type == "cpu"
    assert tuple(x.shape) == (37, *X.shape[1:])
    assert float(x.min()) >= float(X.min()) and float(x.max()) <= float(X.max())
    assert torch.isfinite(x).all()


def test_works_inside_mixture_and_set_params(gray):
    mix = Mixture([("gan", GANOutliers(**SMALL)), ("uniform", UniformNoise())])
    mix.set_params(gan__sigma=2.5, gan__epochs=1)
    assert mix.get_params()["gan__sigma"] == 2.5
    mix.fit(gray, _gen(0))
    x = mix.sample(20, _gen(1))
    assert tuple(x.shape) == (20, 28, 28) and x.dtype == torch.float32
    assert mix.sources_[0].sampler_.sigma == 2.5


def test_get_params_round_trip():
    src = GANOutliers(latent_dim=4, sigma=2.0, n_cached=10, cache_dir="somewhere", width=16)
    params = src.get_params()
    assert params == dict(latent_dim=4, epochs=10, batch_size=128, lr=2e-4, sigma=2.0,
                          n_cached=10, cache_dir="somewhere", device="cpu", verbose=0, width=16)
    assert clone(src).get_params() == params


def test_sampling_is_deterministic_given_the_generator(fitted_gray, gray):
    again = GANOutliers(**SMALL).fit(gray, _gen(0))
    assert torch.equal(fitted_gray.sample(16, _gen(7)), again.sample(16, _gen(7)))
    other = GANOutliers(**SMALL).fit(gray, _gen(1))
    assert not torch.equal(fitted_gray.sample(16, _gen(7)), other.sample(16, _gen(7)))
    # same model, different sampling seed -> different samples
    assert not torch.equal(fitted_gray.sample(16, _gen(7)), fitted_gray.sample(16, _gen(8)))


def test_fit_and_sample_leave_global_rng_unchanged(gray):
    state = torch.get_rng_state()
    np_state = np.random.get_state()[1].copy()
    src = GANOutliers(**SMALL, n_cached=8).fit(gray, _gen(0))
    src.sample(5, _gen(1))
    GANOutliers(**SMALL).fit(gray, _gen(0)).sample(5, _gen(1))
    assert torch.equal(torch.get_rng_state(), state)
    assert np.array_equal(np.random.get_state()[1], np_state)


def test_fit_uses_only_the_given_generator(gray):
    """The passed generator advances by the same amount whether or not the cache is hit."""
    g = _gen(0)
    GANOutliers(**SMALL).fit(gray, g)
    h = _gen(0)
    generative._torch_seed(h), generative._torch_seed(h)  # fit draws exactly two seeds
    assert torch.equal(g.get_state(), h.get_state())


def test_sigma_scales_the_latents(gray, tmp_path):
    base = GANOutliers(**SMALL, sigma=0.0, cache_dir=tmp_path).fit(gray, _gen(0))
    z = {s: GeneratorOutliers(latent_dim=8, sigma=s)._latent(4000, _gen(2)) for s in (1.0, 3.0)}
    assert torch.allclose(z[3.0], 3.0 * z[1.0])
    assert abs(float(z[3.0].std()) - 3.0) < 0.1

    x0 = base.sample(64, _gen(2))
    assert torch.equal(x0, x0[:1].expand_as(x0))  # sigma=0: every latent is the mean
    dist = {}
    for s in (1.0, 3.0):
        src = GANOutliers(**SMALL, sigma=s, cache_dir=tmp_path).fit(gray, _gen(0))
        assert src.loaded_from_cache_  # sigma does not change the trained generator
        dist[s] = float((src.sample(64, _gen(2)) - x0).abs().mean())
    assert 0 < dist[1.0] < dist[3.0]


def test_cache_round_trip(gray, tmp_path, monkeypatch):
    first = GANOutliers(**SMALL, cache_dir=tmp_path).fit(gray, _gen(0))
    assert first.loaded_from_cache_ is False and len(first.history_) == 1
    assert os.path.exists(first.cache_path_) and first.cache_path_.endswith(".pt")
    assert [p.name for p in tmp_path.iterdir()] == [os.path.basename(first.cache_path_)]

    def no_training(*args, **kwargs):
        raise AssertionError("train_gan must not run on a cache hit")

    monkeypatch.setattr(generative, "train_gan", no_training)
    second = GANOutliers(**SMALL, cache_dir=tmp_path).fit(gray, _gen(0))
    assert second.loaded_from_cache_ is True and second.cache_path_ == first.cache_path_
    assert second.history_ == first.history_
    for (k, a), (_, b) in zip(first.generator_.state_dict().items(),
                              second.generator_.state_dict().items()):
        assert torch.equal(a, b), k
    assert torch.equal(first.sample(32, _gen(3)), second.sample(32, _gen(3)))

    # different data, seed or training parameters miss the cache (and would train)
    for changed in (dict(X=gray[:32], g=_gen(0), p=SMALL), dict(X=gray, g=_gen(1), p=SMALL),
                    dict(X=gray, g=_gen(0), p={**SMALL, "lr": 1e-3})):
        with pytest.raises(AssertionError, match="must not run"):
            GANOutliers(**changed["p"], cache_dir=tmp_path).fit(changed["X"], changed["g"])


def test_cached_pool(gray, tmp_path, monkeypatch):
    src = GANOutliers(**SMALL, n_cached=50, sigma=2.0, cache_dir=tmp_path).fit(gray, _gen(0))
    assert src.pool_.shape == (50, 28, 28) and src.pool_.dtype == torch.float32
    npy = sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".npy")
    assert len(npy) == 1
    assert np.array_equal(np.load(tmp_path / npy[0], allow_pickle=False), src.pool_.numpy())

    x = src.sample(200, _gen(4))
    assert x.shape == (200, 28, 28) and x.dtype == torch.float32
    # every sample is a pool row
    d = torch.cdist(x.reshape(200, -1), src.pool_.reshape(50, -1))
    assert float(d.min(dim=1).values.max()) == 0.0
    assert torch.equal(x, src.sample(200, _gen(4)))

    # second fit: both the generator and the pool come from disk
    monkeypatch.setattr(generative, "train_gan", lambda *a, **k: pytest.fail("trained"))
    monkeypatch.setattr(GeneratorOutliers, "sample", lambda *a, **k: pytest.fail("decoded"))
    again = GANOutliers(**SMALL, n_cached=50, sigma=2.0, cache_dir=tmp_path).fit(gray, _gen(0))
    assert again.loaded_from_cache_ and torch.equal(again.pool_, src.pool_)
    assert torch.equal(again.sample(200, _gen(4)), x)


def test_pool_without_cache_dir_matches_fresh_decode(gray):
    pooled = GANOutliers(**SMALL, n_cached=30).fit(gray, _gen(0))
    plain = GANOutliers(**SMALL).fit(gray, _gen(0))
    assert pooled.cache_path_ is None
    # the pool is decoded with the same trained generator and clipped to the ID range
    assert float(pooled.pool_.min()) >= float(gray.min())
    for (k, a), (_, b) in zip(pooled.generator_.state_dict().items(),
                              plain.generator_.state_dict().items()):
        assert torch.equal(a, b), k


def test_tabular_input_raises(gray):
    with pytest.raises(ValueError, match="images only"):
        GANOutliers(**SMALL).fit(torch.rand(50, 10), _gen(0))
    with pytest.raises(ValueError, match="divisible by 4"):
        GANOutliers(**SMALL).fit(torch.rand(50, 30, 30), _gen(0))


@pytest.mark.parametrize("param, value", [("latent_dim", 0), ("epochs", -1), ("batch_size", 1),
                                          ("lr", 0.0), ("sigma", -1.0), ("n_cached", 2.5),
                                          ("width", 1)])
def test_bad_params_raise_naming_the_parameter(param, value, gray):
    with pytest.raises(ValueError, match=f"`{param}`.*got {value!r}"):
        GANOutliers(**{**SMALL, param: value}).fit(gray, _gen(0))


def test_sample_before_fit_raises():
    with pytest.raises(NotFittedError):
        GANOutliers().sample(3, _gen(0))


def test_docstring_examples():
    result = doctest.testmod(generative, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
