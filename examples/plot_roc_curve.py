"""
ROC curves with scikit-learn's display classes
==============================================

:class:`sklearn.metrics.RocCurveDisplay` draws the ROC curve of the detector's scores with
in-distribution as the positive class (the convention of AUROC and FPR@95TPR in
:mod:`aoe_detect.metrics`). We compare AOE with vanilla outlier exposure (``attack=None``)
and with no outlier exposure at all (``outliers=None``) on digits 0-4 vs 5-9.
"""

import matplotlib.pyplot as plt
import numpy as np
from sklearn.datasets import load_digits
from sklearn.metrics import RocCurveDisplay

from aoe_detect import AOEDetector

X, y = load_digits(return_X_y=True)
X_id, y_id, X_ood = X[y < 5], y[y < 5], X[y >= 5]
X_test = np.r_[X_id[600:], X_ood]
is_id = np.r_[np.ones(len(X_id) - 600, int), np.zeros(len(X_ood), int)]  # ID = positive

methods = {"AOE (FGSM)": {}, "vanilla OE": {"attack": None}, "no OE": {"outliers": None}}
fig, ax = plt.subplots(figsize=(4.5, 4.5))
for name, params in methods.items():
    det = AOEDetector(epochs=3, pretrain_epochs=5, random_state=0, **params)
    det.fit(X_id[:600], y_id[:600])
    RocCurveDisplay.from_predictions(is_id, det.score_samples(X_test), name=name, ax=ax)
ax.plot([0, 1], [0, 1], "k:", lw=1)
ax.set_title("digits 0-4 (ID, positive) vs 5-9 (OOD)")
fig.tight_layout()
plt.show()
