"""Scaling features: Dataset inputs, chunked scoring, AMP, channels_last, torch.compile,
the cached-pool attack, PGD early stop, and the GPU path (``gpu`` tests skip without CUDA).

Timing is never asserted here (see ``benchmarks/speed.py``)."""

import math
import pickle

import numpy as np
import pytest
import torch
from sklearn.utils._param_validation import InvalidParameterError
from torch import nn
from torch.utils.data import Dataset, IterableDataset

import aoe_detect.attacks as attacks
import aoe_detect._scoring as _scoring
from aoe_detect import AOEDetector
from aoe_detect.runtime import Runtime
from aoe_detect._training import index_batches, steps_per_epoch
from aoe_detect.attacks import FGSM, pgd
from aoe_detect._loading import GlobalBatchSampler
from aoe_detect.datasets import load_sample
from aoe_detect.losses import energy
from aoe_detect.outliers import DatasetOutliers

IMG = dict(backbone="small_cnn", outliers="uniform", epochs=1, pretrain_epochs=1, batch_size=32,
           random_state=0, device="cpu")
TAB = dict(epochs=2, pretrain_epochs=2, batch_size=32, random_state=0, device="cpu")


class Rows(Dataset):
    """Map-style dataset over arrays: items ``x`` or ``(x, y)``, counting item reads."""

    def __init__(self, X, y=None, as_tensor=True):
        self.X, self.y, self.as_tensor, self.reads = X, y, as_tensor, 0

    def __len__(self):
        return len(self.X)

    def __getitem__(self, i):
        self.reads += 1
        x = torch.from_numpy(self.X[i]) if self.as_tensor else self.X[i]
        return x if self.y is None else (x, int(self.y[i]))


@pytest.fixture(scope="module")
def images():
    """Small uint8 images (16x16 centre crops of the embedded Fashion-MNIST/MNIST sample)."""
    s = load_sample()
    X, y = s["fashion_train"]
    crop = (slice(None), slice(6, 22), slice(6, 22))
    return (np.ascontiguousarray(X[:128][crop]), y[:128],
            np.ascontiguousarray(s["mnist_test"][0][:64][crop]))


@pytest.fixture(scope="module")
def array_fit(images):
    X, y, _ = images
    return AOEDetector(**IMG).fit(X, y)


# ------------------------------------------------------------------ Dataset inputs
def test_dataset_fit_is_identical_to_array_fit(images, array_fit):
    X, y, X_test = images
    det = AOEDetector(**IMG).fit(Rows(X, y))
    # every row fits the statistics subset, so the Dataset path sees exactly the same numbers
    np.testing.assert_array_equal(det.score_samples(X_test), array_fit.score_samples(X_test))
    assert det.offset_ == array_fit.offset_
    assert [r["loss"] for r in det.history_] == [r["loss"] for r in array_fit.history_]
    assert det.n_features_in_ == 1 and det.input_shape_ == (1, 16, 16)
    assert det.classes_.tolist() == array_fit.classes_.tolist()


def test_dataset_scoring_matches_arrays(images, array_fit):
    _, _, X_test = images
    ds = Rows(X_test, np.zeros(len(X_test), int))  # labels are ignored when scoring
    s = array_fit.score_samples(ds)
    assert s.dtype == np.float64 and s.shape == (len(X_test),)
    np.testing.assert_array_equal(s, array_fit.score_samples(X_test))
    np.testing.assert_array_equal(array_fit.predict(ds), array_fit.predict(X_test))
    np.testing.assert_array_equal(array_fit.predict_proba(ds), array_fit.predict_proba(X_test))
    np.testing.assert_array_equal(array_fit.predict_class(ds), array_fit.predict_class(X_test))


def test_chunked_array_scoring_is_identical(images, array_fit, monkeypatch):
    X, _, X_test = images
    Z = np.concatenate([X, X_test, X, X])  # 448 rows
    whole = array_fit.score_samples(Z)
    monkeypatch.setattr(_scoring, "SCORE_CHUNK_ROWS", 256)  # 2 chunks of whole batches
    np.testing.assert_array_equal(array_fit.score_samples(Z), whole)
    np.testing.assert_array_equal(array_fit.score_samples(torch.from_numpy(Z)), whole)
    with pytest.raises(ValueError, match="NaN|infinity"):  # validation still sees every chunk
        bad = Z.astype(np.float32) / 255
        bad[400, 3, 3] = np.nan
        array_fit.score_samples(bad)


def test_dataset_labels_from_y_and_targets(images, array_fit):
    X, y, X_test = images
    a = AOEDetector(**IMG).fit(Rows(X), y)  # items x, labels y
    np.testing.assert_array_equal(a.score_samples(X_test), array_fit.score_samples(X_test))
    ds = Rows(X, y)
    ds.targets = list(y)  # torchvision convention: no label pass over the items
    b = AOEDetector(**IMG).fit(ds)
    np.testing.assert_array_equal(b.score_samples(X_test), array_fit.score_samples(X_test))


def test_dataset_outlier_rows_and_outlier_datasets(images):
    X, y, X_test = images
    y_out = y.copy()
    y_out[:30] = -1  # rows labelled -1 are training outliers
    det = AOEDetector(**{**IMG, "pretrain_epochs": 0}).fit(Rows(X, y_out))
    assert isinstance(det.outlier_source_, DatasetOutliers)
    assert len(det.outlier_source_.dataset) == 30
    assert math.isfinite(det.history_[-1]["mean_energy_outlier"])
    # an outlier Dataset as X_outliers, streamed by 2 worker processes; scoring with workers
    det = AOEDetector(**{**IMG, "runtime": Runtime(num_workers=2)}).fit(X, y, X_outliers=Rows(X_test))
    assert isinstance(det.outlier_source_, DatasetOutliers)
    assert np.isfinite(det.score_samples(Rows(X_test))).all()
    # ... and as the `outliers` parameter
    det = AOEDetector(**{**IMG, "outliers": Rows(X_test)}).fit(X, y)
    assert math.isfinite(det.history_[-1]["mean_energy_outlier"])


class Stream(IterableDataset):
    def __iter__(self):
        yield torch.zeros(4)


def test_dataset_validation_errors(images, array_fit):
    X, y, _ = images
    Xf = X.astype(np.float32) / 255
    Xf[90, 5, 5] = np.nan  # far beyond the items checked up front
    with pytest.raises(ValueError, match="item 90 contains NaN or infinity"):
        AOEDetector(**IMG).fit(Rows(Xf, y))
    with pytest.raises(TypeError, match="map-style"):
        AOEDetector(**IMG).fit(Stream())
    with pytest.raises(ValueError, match="channels-last"):
        AOEDetector(**IMG).fit(Rows(np.zeros((8, 16, 16, 3), np.uint8)))
    with pytest.raises(ValueError, match="pass the labels one way"):
        AOEDetector(**IMG).fit(Rows(X, y), y)
    with pytest.raises(TypeError, match="tensors or numpy arrays"):  # e.g. PIL images
        AOEDetector(**IMG).fit(Rows([[1.0, 2.0]] * 4, np.zeros(4, int), as_tensor=False))
    with pytest.raises(ValueError, match="expects samples of shape"):
        array_fit.score_samples(Rows(np.zeros((4, 32, 32), np.uint8)))
    with pytest.raises(ValueError, match="input range"):
        array_fit.score_samples(Rows(np.full((20, 16, 16), 3.0, np.float32)))


# ------------------------------------------------------------------ cheaper attacks
class CountingFGSM(FGSM):
    calls = 0

    def perturb(self, *args, **kwargs):
        type(self).calls += 1
        return super().perturb(*args, **kwargs)


def test_attack_refresh_perturbs_every_k_steps(blobs):
    X, y = blobs
    CountingFGSM.calls = 0
    det = AOEDetector(**{**TAB, "attack": CountingFGSM(refresh=3)}).fit(X, y)
    steps = sum(r["steps"] for r in det.history_ if r["stage"] == "finetune")
    assert CountingFGSM.calls == math.ceil(steps / 3)
    assert all(math.isfinite(r["loss"]) for r in det.history_)
    with pytest.raises(InvalidParameterError, match=r"`attack` \(FGSM\).*'refresh'"):
        AOEDetector().set_params(attack__refresh=0).fit(X, y)


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3))


def test_pgd_early_stop_is_per_sample_and_adds_no_forward():
    m = _net()
    x = torch.randn(40, 6, generator=torch.Generator().manual_seed(0))
    sizes = []
    m.register_forward_hook(lambda mod, inp, out: sizes.append(len(inp[0])))
    kw = dict(steps=8, step_size=0.05, random_start=False)
    full = pgd(m, x, 0.5, **kw)
    assert sizes == [40] * 8  # one forward per step
    sizes.clear()
    np.testing.assert_array_equal(pgd(m, x, 0.5, early_stop=-math.inf, **kw), full)
    assert sizes == [40] * 8  # a threshold nobody reaches costs nothing extra
    with torch.no_grad():
        e1 = energy(m(pgd(m, x, 0.5, steps=1, step_size=0.05, random_start=False)))
    sizes.clear()
    out = pgd(m, x, 0.5, early_stop=float(e1.median()), **kw)
    assert sizes[0] == sizes[1] == 40 and min(sizes) < 40 and sizes == sorted(sizes, reverse=True)
    with torch.no_grad():
        e_out, e_full = energy(m(out)), energy(m(full))
    done_after_one = e1 <= e1.median()
    # samples that reached the threshold after one step stopped there; the others went on
    one = pgd(m, x, 0.5, steps=1, step_size=0.05, random_start=False)
    np.testing.assert_array_equal(out[done_after_one], one[done_after_one])
    assert (e_out[~done_after_one] >= e_full[~done_after_one] - 1e-5).all()


class Scaled(nn.Module):
    """Logits multiplied by ``s``: tiny input gradients that float16 flushes to zero."""

    def __init__(self, s):
        super().__init__()
        torch.manual_seed(0)
        self.a, self.b, self.s = nn.Linear(64, 32), nn.Linear(32, 4), s

    def forward(self, x):
        return self.b(torch.relu(self.a(x.flatten(1)))) * self.s


@pytest.mark.parametrize("s", [1e-6, 1e-9])
def test_fp16_attack_gradient_sign_survives_underflow(s, monkeypatch):
    m = Scaled(s)
    x = torch.rand(16, 64, generator=torch.Generator().manual_seed(0))
    exact = attacks._energy_grad_sign(m, x, 1.0, None)
    assert (exact != 0).all()
    half = attacks._energy_grad_sign(m, x, 1.0, torch.float16)
    assert (half == exact).float().mean() > 0.99
    if s == 1e-6:  # without the energy scaling (and the float32 retry) signs underflow to 0
        monkeypatch.setattr(attacks, "FP16_GRAD_SCALE", 1.0)
        monkeypatch.setattr(attacks, "FP16_MIN_GRAD", 0.0)
        unscaled = attacks._energy_grad_sign(m, x, 1.0, torch.float16)
        assert (unscaled == exact).float().mean() < 0.5


# ------------------------------------------------------------------ precision, layout, compile
@pytest.fixture(scope="module")
def tab_fit(blobs):
    X, y = blobs
    return AOEDetector(**TAB).fit(X, y)


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_amp_training_on_cpu(blobs, tab_fit, amp):
    X, y = blobs
    det = AOEDetector(**TAB, runtime=Runtime(amp=amp)).fit(X, y)
    s = det.score_samples(X)
    assert s.dtype == np.float64 and np.isfinite(s).all()
    assert np.corrcoef(s, tab_fit.score_samples(X))[0, 1] > 0.95
    assert all(math.isfinite(r["loss"]) for r in det.history_)


def test_channels_last_and_round_trip(images, array_fit, tmp_path):
    X, y, X_test = images
    det = AOEDetector(**IMG, runtime=Runtime(channels_last=True)).fit(X, y)
    assert det.module_.features[0][0].weight.is_contiguous(memory_format=torch.channels_last)
    s = det.score_samples(X_test)
    np.testing.assert_allclose(s, array_fit.score_samples(X_test), rtol=0, atol=1e-2 * np.ptp(s))
    loaded = AOEDetector.load(det.save(tmp_path / "cl.aoe"), device="cpu")
    np.testing.assert_allclose(loaded.score_samples(X_test), s, rtol=1e-6, atol=1e-5)
    np.testing.assert_allclose(pickle.loads(pickle.dumps(det)).score_samples(X_test), s,
                               rtol=1e-6, atol=1e-5)


def test_compile_matches_eager(blobs):
    X, y = blobs
    cfg = {**TAB, "epochs": 1, "pretrain_epochs": 1, "batch_size": 64, "outliers": "uniform"}
    plain = AOEDetector(**cfg).fit(X, y)
    det = AOEDetector(**cfg, runtime=Runtime(compile={"backend": "eager"})).fit(X, y)  # dynamo, no codegen
    np.testing.assert_allclose(det.score_samples(X), plain.score_samples(X), rtol=1e-5,
                               atol=1e-5)
    assert type(det.module_) is type(plain.module_)  # module_ stays the plain module


def test_new_parameters_are_validated(blobs):
    X, y = blobs
    p = Runtime().get_params()
    assert {k: p[k] for k in ("amp", "compile", "channels_last", "num_workers",
                              "distributed")} == dict(amp=False, compile=False,
                                                      channels_last="auto", num_workers=0,
                                                      distributed="auto")
    assert AOEDetector().runtime is None and AOEDetector().attack == "fgsm"
    for bad in (dict(amp="fp8"), dict(channels_last="yes"), dict(num_workers=-1),
                dict(distributed="maybe"), dict(compile="max")):
        key = next(iter(bad))
        with pytest.raises(InvalidParameterError, match=rf"`runtime` \(Runtime\).*'{key}'"):
            AOEDetector(runtime=Runtime(**bad)).fit(X, y)


# ------------------------------------------------------------------ sharding invariants
def test_global_batches_shard_like_distributed_sampler():
    for n, b, w in [(10, 4, 1), (9, 4, 1), (11, 4, 2), (13, 4, 2), (100, 32, 3)]:
        full = index_batches(n, b, torch.Generator().manual_seed(1), world=w)
        assert len(full) == steps_per_epoch(n, b, w)
        shards = [list(GlobalBatchSampler(n, b, torch.Generator().manual_seed(1), r, w))
                  for r in range(w)]
        for step, batch in enumerate(full):
            union = sorted(i for r in range(w) for i in shards[r][step])
            assert union == sorted(batch.tolist())  # ranks split each global batch exactly


# ------------------------------------------------------------------ GPU (skipped without CUDA)
@pytest.mark.gpu
@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_gpu_amp_fit_scores_on_cpu_after_loading(images, tmp_path, amp):
    X, y, X_test = images
    det = AOEDetector(**{**IMG, "device": "cuda"}, amp=amp).fit(X, y)
    assert det.device_.type == "cuda"
    assert det.module_.features[0][0].weight.is_contiguous(memory_format=torch.channels_last)
    s_gpu = det.score_samples(X_test)
    assert np.isfinite(s_gpu).all()
    cpu = AOEDetector.load(det.save(tmp_path / "gpu.aoe"), device="cpu")
    cpu.set_params(amp=False)
    np.testing.assert_allclose(cpu.score_samples(X_test), s_gpu, rtol=0, atol=0.05 * np.ptp(s_gpu))
    assert pickle.loads(pickle.dumps(det)).score_samples(X_test).shape == s_gpu.shape


@pytest.mark.gpu
def test_cpu_fit_scores_on_gpu_and_dataset_streaming(images, array_fit, tmp_path):
    _, _, X_test = images
    gpu = AOEDetector.load(array_fit.save(tmp_path / "cpu.aoe"), device="cuda")
    np.testing.assert_allclose(gpu.score_samples(Rows(X_test)), array_fit.score_samples(X_test),
                               rtol=1e-4, atol=1e-4)


@pytest.mark.gpu
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 GPUs")
def test_second_gpu(images):
    X, y, X_test = images
    det = AOEDetector(**{**IMG, "device": "cuda:1"}).fit(X, y)
    assert det.device_ == torch.device("cuda", 1)
    assert next(det.module_.parameters()).device == torch.device("cuda", 1)
    assert np.isfinite(det.score_samples(X_test)).all()
