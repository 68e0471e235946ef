"""
Honest cross-validation: seen vs unseen OOD
===========================================

Rows labelled ``-1`` are training outliers for :class:`~aoe_detect.AOEDetector`. A plain
``StratifiedKFold`` therefore trains on the OOD class it then tests on.
:class:`~aoe_detect.model_selection.OODStratifiedKFold` keeps labelled OOD rows in the
test folds only (``protocol="unseen"``, the default) or, explicitly, lets the training
folds use them (``protocol="seen"``). Wine: classes 0-1 in-distribution, class 2 OOD.
"""

import matplotlib.pyplot as plt
import numpy as np
from sklearn.datasets import load_wine
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from aoe_detect import AOEDetector
from aoe_detect.model_selection import OODStratifiedKFold

X, y = load_wine(return_X_y=True)
y = np.where(y == 2, -1, y)
pipe = make_pipeline(StandardScaler(), AOEDetector(epochs=3, pretrain_epochs=5, random_state=0))
splitters = {
    "OODStratifiedKFold\n(unseen OOD)": OODStratifiedKFold(5, shuffle=True, random_state=0),
    "OODStratifiedKFold\n(protocol='seen')": OODStratifiedKFold(5, shuffle=True, random_state=0,
                                                                protocol="seen"),
    "StratifiedKFold\n(leaks OOD into training)": StratifiedKFold(5, shuffle=True,
                                                                  random_state=0),
}
results = {name: cross_val_score(pipe, X, y, cv=cv) for name, cv in splitters.items()}
for name, s in results.items():
    print(name.replace("\n", " "), np.round(s, 3), "mean", round(s.mean(), 3))

fig, ax = plt.subplots(figsize=(6, 3.5))
ax.boxplot(list(results.values()))
ax.set_xticks(range(1, len(results) + 1), list(results.keys()), fontsize=8)
ax.set_ylabel("AUROC per fold (ID positive)")
ax.set_title("wine: classes 0-1 ID, class 2 OOD")
fig.tight_layout()
plt.show()
