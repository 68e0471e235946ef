"""How large must the k-NN score's bank be? (``knn_max_samples``, issue 12.)

Design split only (Fashion-MNIST classes 0-5 as ID, 12 000 training images; the held-out
classes 6-9 of the test split as near OOD; no evaluation OOD set is used): one plain
cross-entropy small CNN per seed (3 epochs), then ``KNNScore`` with ``k="auto"`` (1% of
the bank, at most 50) fitted on random banks of several sizes drawn from the same
training features. Reports the held-out-class AUROC / FPR@95 per bank size and the k-NN
query time per 1 000 inputs relative to the network's forward pass (process CPU time,
1 thread), the quantity behind the speed benchmark's row 6.

Run: ``python benchmarks/knn_bank.py --data-root /tmp/aoe_data``
Writes ``benchmarks/results/knn_bank.{json,md}``.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

import numpy as np
import torch

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from aoe_detect import AOEDetector  # noqa: E402
from aoe_detect import datasets as ds  # noqa: E402
from aoe_detect.metrics import ood_report  # noqa: E402
from aoe_detect.scores import KNNScore, LogitsAndFeatures  # noqa: E402
from benchmarks._lab import to_unit as _img  # noqa: E402
from benchmarks._lab import write_results  # noqa: E402

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
BANKS = (1000, 2000, 4000, 6000, 10000, None)


def _features(module, X, batch=1024):
    head = LogitsAndFeatures(module.eval())
    with torch.inference_mode():
        t0 = time.process_time()
        out = torch.cat([head(X[i:i + batch]) for i in range(0, len(X), batch)])
        per_1000 = (time.process_time() - t0) / len(X) * 1000
    return out[:, out.shape[1] - head._layer_width:], per_1000


def run(seed, root):
    X, y = ds.load_fashion_mnist(root=root, split="train")
    Xt, yt = ds.load_fashion_mnist(root=root, split="test")
    keep = np.flatnonzero(y < 6)
    tr = np.sort(np.random.RandomState(31 + seed).permutation(keep)[:12000])
    det = AOEDetector(outliers=None, pretrain_epochs=3, epochs=0, ood_score="energy",
                      random_state=seed, device="cpu").fit(_img(X[tr]).numpy(), y[tr])
    f_tr, _ = _features(det.module_, _img(X[tr]))
    f_id, fwd = _features(det.module_, _img(Xt[yt < 6][:3000]))
    f_ood, _ = _features(det.module_, _img(Xt[yt >= 6][:2000]))
    rows = []
    for m in BANKS:
        sc = KNNScore(max_samples=m).fit(None, f_tr, None, torch.Generator().manual_seed(seed))
        with torch.inference_mode():
            sc(None, f_id[:10])  # builds the index
            t0 = time.process_time()
            s_id = sc(None, f_id).double().numpy()
            per_1000 = (time.process_time() - t0) / len(f_id) * 1000
            s_ood = sc(None, f_ood).double().numpy()
        r = ood_report(s_id, s_ood)
        rows.append({"bank": len(sc.bank), "k": sc.resolved_k(), "auroc": float(r["auroc"]),
                     "fpr95": float(r["fpr95"]), "query_s_per_1000": per_1000,
                     "forward_s_per_1000": fwd})
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-root", default=None)
    p.add_argument("--seeds", type=int, default=2)
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    per_seed = [run(s, a.data_root) for s in range(a.seeds)]
    res = {"command": "python benchmarks/knn_bank.py " + " ".join(sys.argv[1:] if argv is None else argv),
           "machine": f"{platform.platform()}, {os.cpu_count()} CPUs", "torch": torch.__version__,
           "per_seed": per_seed}
    lines = ["# k-NN bank size (design split: Fashion-MNIST 0-5 vs held-out classes 6-9)", "",
             f"- command: `{res['command']}`", f"- machine: {res['machine']}; torch threads 1",
             "- backbone: plain CE small CNN, 3 epochs, 12 000 training images; mean over "
             f"{a.seeds} seeds", "",
             "| bank | k | AUROC | FPR@95 | k-NN query / forward pass (CPU time) |", "|---|---|---|---|---|"]
    for i in range(len(BANKS)):
        rs = [s[i] for s in per_seed]
        m = lambda key: float(np.mean([r[key] for r in rs]))  # noqa: E731
        lines.append(f"| {rs[0]['bank']} | {rs[0]['k']} | {m('auroc'):.4f} | {m('fpr95'):.4f} | "
                     f"{m('query_s_per_1000') / m('forward_s_per_1000'):.3f} |")
    write_results(os.path.join(RESULTS, "knn_bank"), res, "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
