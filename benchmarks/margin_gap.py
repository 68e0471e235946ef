"""Evidence for ``AUTO_MARGIN_GAP`` (the gap ``m_out - m_in`` of the automatic energy margins).

Design split only: scikit-learn digits 0-4 as ID (600 training rows), digits 5-9 (near OOD)
and uniform noise over the pixel range [0, 16] (far OOD). For each seed the detector is fitted
once with the automatic margins to read ``m_in_`` (the median ID energy when outlier exposure
starts; it does not depend on the gap), then refitted with the same seed and
``m_in=m_in_, m_out=m_in_ + gap`` for each gap, so only the gap changes. AUROC with the energy
score (what the margins shape) and with the default score.

Run: ``python benchmarks/margin_gap.py`` (about a minute on 2 CPU cores). Writes
``benchmarks/results/margin_gap.{json,md}``.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
import warnings

import numpy as np
import torch

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from aoe_detect import AOEDetector  # noqa: E402
from aoe_detect.detector import AUTO_MARGIN_GAP  # noqa: E402
from aoe_detect.losses import EnergyMargin  # noqa: E402
from aoe_detect.metrics import auroc  # noqa: E402
from benchmarks._lab import digits_design_split, write_results  # noqa: E402

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
GAPS = (1.0, 2.0, 5.0, 10.0)
SCORES = ("energy", "energy+mahalanobis")


def split(seed):
    rng = np.random.RandomState(seed)
    s = digits_design_split(rng, 600)
    noise = rng.uniform(0, 16, (500, s.X_train.shape[1]))  # the same stream, after the split
    return s.X_train, s.y_train, s.X_test, {"digits 5-9": s.X_ood, "uniform noise": noise}


def run(seeds):
    rows = []
    for seed in seeds:
        X, y, X_id, ood = split(seed)
        base = AOEDetector(random_state=seed, device="cpu", ood_score="energy").fit(X, y)
        m_in = base.m_in_
        for gap in GAPS:
            for score in SCORES:
                det = AOEDetector(random_state=seed, device="cpu", ood_score=score,
                                  loss=EnergyMargin(m_in=m_in, m_out=m_in + gap)).fit(X, y)
                s_id = det.score_samples(X_id)
                res = {k: float(auroc(s_id, det.score_samples(v))) for k, v in ood.items()}
                rows.append({"seed": seed, "gap": gap, "score": score, "m_in": m_in, **res})
    return rows


def table(rows):
    L = ["| score | gap | " + " | ".join(k for k in rows[0] if k not in
                                         ("seed", "gap", "score", "m_in")) + " |",
         "|---|---|---|---|"]
    sets = [k for k in rows[0] if k not in ("seed", "gap", "score", "m_in")]
    for score in SCORES:
        for gap in GAPS:
            sel = [r for r in rows if r["score"] == score and r["gap"] == gap]
            cells = [f"{np.mean([r[s] for r in sel]):.3f} ± {np.std([r[s] for r in sel]):.3f}"
                     for s in sets]
            mark = " (default)" if gap == AUTO_MARGIN_GAP else ""
            L.append(f"| {score} | {gap:g}{mark} | " + " | ".join(cells) + " |")
    return "\n".join(L)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--out", default=os.path.join(RESULTS, "margin_gap"))
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    t0 = time.time()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning etc. are not what is measured here
        rows = run(range(a.seeds))
    md = "\n".join([
        "# Energy-margin gap (`AUTO_MARGIN_GAP`) on the design split", "",
        f"Command: `python benchmarks/margin_gap.py --seeds {a.seeds}`; {platform.machine()}, "
        f"torch {torch.__version__}, {time.time() - t0:.0f} s. AUROC (mean ± std over seeds), "
        "digits 0-4 as ID; every other setting at the package defaults.", "",
        table(rows), ""])
    write_results(a.out, {"rows": rows, "gaps": GAPS, "default": AUTO_MARGIN_GAP}, md)
    print(md)


if __name__ == "__main__":
    main()
