"""Pretraining augmentation (``augment``): random shifts of image batches, images only."""
import numpy as np
import pytest
import torch

from aoe_detect import AOEDetector
from aoe_detect._training import random_shift


def test_random_shift_is_a_bounded_translation_with_edge_padding():
    x = torch.rand(64, 2, 28, 28, generator=torch.Generator().manual_seed(0))
    out = random_shift(x, torch.Generator().manual_seed(1))
    assert out.shape == x.shape and out.dtype == x.dtype
    p = 2  # round(28 / 14)
    padded = torch.nn.functional.pad(x, (p, p, p, p), mode="replicate")
    seen = set()
    for i in range(len(x)):  # each output is one crop of the padded input, offsets in [0, 2p]
        hits = [(a, b) for a in range(2 * p + 1) for b in range(2 * p + 1)
                if torch.equal(out[i], padded[i, :, a:a + 28, b:b + 28])]
        assert len(hits) == 1
        seen.add(hits[0])
    assert len(seen) > 10  # offsets vary across the batch
    again = random_shift(x, torch.Generator().manual_seed(1))
    assert torch.equal(out, again)
    assert torch.equal(random_shift(x[:, :, :6, :6], torch.Generator()), x[:, :, :6, :6])  # p = 0


def _images():
    rng = np.random.RandomState(0)
    X = (rng.rand(96, 12, 12) * 255).astype(np.uint8)
    return X, np.arange(96) % 3


@pytest.mark.parametrize("augment", [False, True])
def test_augment_is_a_validated_parameter_and_changes_only_image_pretraining(augment):
    X, y = _images()
    kw = dict(pretrain_epochs=1, epochs=1, random_state=0, device="cpu", batch_size=32)
    a = AOEDetector(augment=augment, **kw).fit(X, y).score_samples(X[:8])
    b = AOEDetector(augment=False, **kw).fit(X, y).score_samples(X[:8])
    assert np.array_equal(a, b) == (augment is False)
    # no pretraining stage (a given module is pretrained): augment has no effect
    mod = AOEDetector(augment=False, pretrain_epochs=1, epochs=0, random_state=0, device="cpu",
                      batch_size=32).fit(X, y).module_
    c = AOEDetector(backbone=mod, augment=augment, **{**kw, "pretrain_epochs": 0}).fit(X, y)
    d = AOEDetector(backbone=mod, augment=False, **{**kw, "pretrain_epochs": 0}).fit(X, y)
    assert np.array_equal(c.score_samples(X[:8]), d.score_samples(X[:8]))


def test_tabular_data_is_never_augmented():
    rng = np.random.RandomState(0)
    X, y = rng.randn(80, 4), np.arange(80) % 2
    kw = dict(pretrain_epochs=1, epochs=1, random_state=0, device="cpu")
    assert np.array_equal(AOEDetector(augment=True, **kw).fit(X, y).score_samples(X),
                          AOEDetector(augment=False, **kw).fit(X, y).score_samples(X))


def test_bad_augment_value_names_the_parameter():
    X, y = _images()
    with pytest.raises(ValueError, match="augment"):
        AOEDetector(augment="auto", epochs=1, pretrain_epochs=1).fit(X, y)
