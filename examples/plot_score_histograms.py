"""
ID vs OOD score histograms
==========================

Fit :class:`~aoe_detect.AOEDetector` on scikit-learn's digits 0-4 (in-distribution) and
compare the scores of held-out digits 0-4 with those of digits 5-9 (OOD, never seen) and of
uniform noise. Scores are ``-energy``: higher = more in-distribution; the dashed line is the
threshold ``offset_`` below which :meth:`~aoe_detect.AOEDetector.predict` returns -1.
"""

import matplotlib.pyplot as plt
import numpy as np
from sklearn.datasets import load_digits

from aoe_detect import AOEDetector
from aoe_detect.metrics import ood_report

X, y = load_digits(return_X_y=True)
ID, OOD = y < 5, y >= 5
X_id, y_id = X[ID], y[ID]
det = AOEDetector(epochs=3, pretrain_epochs=5, random_state=0).fit(X_id[:600], y_id[:600])

rng = np.random.RandomState(0)
scores = {
    "digits 0-4 (ID, held out)": det.score_samples(X_id[600:]),
    "digits 5-9 (OOD)": det.score_samples(X[OOD]),
    "uniform noise (OOD)": det.score_samples(rng.uniform(0, 16, (300, 64))),
}
for name, s in list(scores.items())[1:]:
    r = ood_report(scores["digits 0-4 (ID, held out)"], s)
    print(f"{name}: AUROC {r['auroc']:.3f}, FPR@95TPR {r['fpr95']:.3f}")

fig, ax = plt.subplots(figsize=(6, 3.5))
bins = np.linspace(min(s.min() for s in scores.values()),
                   max(s.max() for s in scores.values()), 50)
for name, s in scores.items():
    ax.hist(s, bins=bins, alpha=0.55, density=True, label=name)
ax.axvline(det.offset_, color="k", ls="--", lw=1, label="threshold offset_")
ax.set_xlabel("score = -energy (higher = more in-distribution)")
ax.set_ylabel("density")
ax.legend(fontsize=8)
fig.tight_layout()
plt.show()
