"""The ID-transforming image outlier families (CutPasteID, MixupID, ElasticID)."""
import numpy as np
import pytest
import torch
from sklearn.base import clone

from aoe_detect import AOEDetector
from aoe_detect.outliers import (OUTLIER_SOURCES, CutPasteID, ElasticID, MixupID, PermutedID,
                                 resolve_outliers)

IMG = torch.rand(64, 1, 16, 16, generator=torch.Generator().manual_seed(0)) * 0.8 + 0.1
RGB = torch.rand(40, 3, 12, 12, generator=torch.Generator().manual_seed(1))
TAB = torch.randn(128, 5, generator=torch.Generator().manual_seed(0))
NEW = [CutPasteID, MixupID, ElasticID]


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("cls", NEW)
@pytest.mark.parametrize("data", [IMG, RGB, IMG[:, 0]], ids=["gray", "rgb", "hw"])
def test_shape_range_determinism(cls, data):
    src = cls().fit(data, gen())
    a, b = src.sample(30, gen(1)), src.sample(30, gen(1))
    assert a.shape == (30, *data.shape[1:]) and a.dtype == torch.float32
    assert torch.equal(a, b) and not torch.equal(a, src.sample(30, gen(2)))
    assert a.min() >= data.min() - 1e-6 and a.max() <= data.max() + 1e-6


@pytest.mark.parametrize("cls", NEW)
def test_tabular_is_refused_with_a_clear_error(cls):
    with pytest.raises(ValueError, match="transforms images.*ShellNoise"):
        cls().fit(TAB, gen())


@pytest.mark.parametrize("cls", NEW)
def test_global_rng_untouched_and_clonable(cls):
    state, np_state = torch.get_rng_state(), np.random.get_state()[1].copy()
    cls().fit(IMG, gen()).sample(10, gen())
    assert torch.equal(state, torch.get_rng_state()) and np.array_equal(np_state, np.random.get_state()[1])
    assert clone(cls()).get_params() == cls().get_params()


def test_cutpaste_is_two_id_images_split_by_one_rectangle():
    pool = torch.arange(8, dtype=torch.float32)[:, None, None, None].expand(8, 1, 10, 10) / 8
    out = CutPasteID(min_side=0.5, max_side=0.5).fit(pool.clone(), gen()).sample(200, gen(3))
    two = 0
    for o in out[:, 0]:
        vals, counts = o.unique(return_counts=True)
        assert len(vals) in (1, 2)  # the same image pasted into itself leaves one value
        if len(vals) == 2:  # the pasted value fills exactly one 5x5 rectangle
            two += 1
            assert sorted(counts.tolist()) == [25, 75]
            rows, cols = torch.nonzero(o == vals[counts.argmin()], as_tuple=True)
            assert (int(rows.max() - rows.min()) + 1, int(cols.max() - cols.min()) + 1) == (5, 5)
    assert two > 150


def test_mixup_is_a_convex_blend_near_one_half():
    pool = torch.cat([torch.zeros(1, 1, 4, 4), torch.ones(1, 1, 4, 4)])
    out = MixupID(low=0.4, high=0.6).fit(pool, gen()).sample(2000, gen(4))
    v = out.flatten(1)
    assert torch.allclose(v, v[:, :1].expand_as(v))  # one weight per image
    mixed = v[:, 0][(v[:, 0] > 0) & (v[:, 0] < 1)]  # pairs of two different images
    assert len(mixed) > 600 and mixed.min() >= 0.4 - 1e-6 and mixed.max() <= 0.6 + 1e-6


def test_elastic_displacement_grows_with_alpha_and_zero_is_identity():
    assert torch.allclose(ElasticID(alpha=0.0).fit(IMG, gen()).sample(16, gen(5)),
                          IMG[torch.randint(0, 64, (16,), generator=gen(5))], atol=1e-5)
    smooth = torch.nn.functional.avg_pool2d(IMG, 3, 1, 1)  # warps only move smooth content
    dist = []
    for alpha in (0.02, 0.1, 0.3):
        src = ElasticID(alpha=alpha).fit(smooth, gen())
        ref = smooth[torch.randint(0, 64, (200,), generator=gen(6))]
        dist.append(float((src.sample(200, gen(6)) - ref).abs().mean()))
    assert dist[0] < dist[1] < dist[2]


def test_names_resolve_and_train_a_detector():
    for name, cls in (("cutpaste", CutPasteID), ("mixup", MixupID), ("elastic", ElasticID)):
        assert OUTLIER_SOURCES[name] is cls and isinstance(resolve_outliers(name, (1, 16, 16)), cls)
    X = (IMG[:, 0].numpy() * 255).astype(np.uint8)
    y = np.arange(64) % 2
    det = AOEDetector(outliers="cutpaste", pretrain_epochs=1, epochs=1, random_state=0, device="cpu").fit(X, y)
    assert np.isfinite(det.score_samples(X)).all()


def test_permuted_numbers_unchanged_by_the_shared_pool_base():
    """PermutedID moved onto the shared pool base: same draws as the stand-alone version."""
    src = PermutedID(grid=4, blur=0.0, max_pool=32).fit(IMG, gen(7))
    pool = IMG[torch.randperm(64, generator=gen(7))[:32]]
    x = pool[torch.randint(0, 32, (5,), generator=gen(8))]
    out = src.sample(5, gen(8))  # patch shuffling keeps each drawn image's pixel sum
    assert torch.allclose(out.sum((1, 2, 3)), x.sum((1, 2, 3)), atol=1e-4)
