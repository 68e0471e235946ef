"""
Tables: a DataFrame with categorical columns and missing values
================================================================

:class:`~aoe_detect.AOEDetector` takes numbers only. A real table (a pandas DataFrame with
categorical columns and missing values) goes through scikit-learn's
:class:`~sklearn.compose.ColumnTransformer` first: one-hot encoding for the categories
(``handle_unknown="ignore"``: a category never seen in training becomes all zeros instead of
an error), imputation and scaling for the numbers. The encoder's sparse output is accepted
(densified inside the detector, below a memory limit).

We use scikit-learn's wine table: cultivars 0 and 1 are in-distribution, cultivar 2 plays
the new kind of input the detector must flag. To show the encoding, the table gets a
made-up categorical column (``cellar``, unrelated to the cultivar) and a few missing values.
The fit is shortened (``epochs`` / ``pretrain_epochs``) so the page builds in seconds; the
defaults train longer.
"""

import matplotlib.pyplot as plt
import numpy as np
import torch
from sklearn.compose import ColumnTransformer
from sklearn.datasets import load_wine
from sklearn.impute import SimpleImputer
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from aoe_detect import AOEDetector
from aoe_detect.losses import energy
from aoe_detect.metrics import auroc, fpr_at_tpr

wine = load_wine(as_frame=True)
df, y = wine.data.copy(), wine.target.to_numpy()
rng = np.random.RandomState(0)
df["cellar"] = rng.choice(["north", "south", "east"], len(df))  # categorical (strings)
df.loc[rng.rand(len(df)) < 0.05, "magnesium"] = np.nan  # a few missing values

idx = rng.permutation(np.flatnonzero(y < 2))
train, test_id = idx[:100], idx[100:]
X_train, y_train = df.iloc[train], y[train]
X_test_id, X_ood = df.iloc[test_id], df[y == 2]

# %%
# Without encoding, the detector names the columns it cannot use and points here:
try:
    AOEDetector().fit(X_train, y_train)
except ValueError as err:
    print(str(err)[:160], "...")

# %%
# The pipeline: one-hot encode ``cellar``; impute, then standardise the numeric columns.
numeric = [c for c in df.columns if c != "cellar"]
encode = ColumnTransformer([
    ("categorical", OneHotEncoder(handle_unknown="ignore"), ["cellar"]),
    ("numeric", make_pipeline(SimpleImputer(), StandardScaler()), numeric),
], sparse_threshold=1.0)  # keep the encoder's sparse output, to show it is accepted
detector = AOEDetector(epochs=30, pretrain_epochs=30, validation_fraction=0.2, random_state=0)
pipe = make_pipeline(encode, detector).fit(X_train, y_train)

# %%
# The default score (``ood_score="energy+mahalanobis"``, what ``score_samples`` returns)
# beside the paper's energy score ``-E(x) = logsumexp(f(x))`` of the same fitted network
# (``module_`` is a plain PyTorch classifier on the encoded inputs). Higher = more
# in-distribution; AUROC with in-distribution as the positive class.


def energy_score(X):
    Z = torch.as_tensor(encode.transform(X).toarray(), dtype=torch.float32)
    with torch.no_grad():
        return -energy(detector.module_(Z)).double().numpy()


for name, score in (("default (energy+mahalanobis)", pipe.score_samples),
                    ("energy (the paper)", energy_score)):
    s_id, s_ood = score(X_test_id), score(X_ood)
    print(f"{name:30s} AUROC {auroc(s_id, s_ood):.3f}  FPR@95TPR {fpr_at_tpr(s_id, s_ood):.3f}")
print("cultivar 2 flagged as OOD:", f"{(pipe.predict(X_ood) == -1).mean():.0%}",
      "| held-out cultivars 0-1 accepted:", f"{(pipe.predict(X_test_id) == 1).mean():.0%}")

# %%
# A category never seen in training is encoded as zeros and scored, not refused. Column
# *names* are checked by the ``ColumnTransformer`` in front; a detector fitted directly on a
# DataFrame records ``feature_names_in_`` and refuses missing, extra or reordered columns.
unseen = X_ood.assign(cellar="west")
print("unseen category, mean score:", round(float(pipe.score_samples(unseen).mean()), 2))

fig, ax = plt.subplots(figsize=(5.5, 3.2))
bins = np.linspace(min(pipe.score_samples(X_ood).min(), pipe.score_samples(X_test_id).min()),
                   max(pipe.score_samples(X_test_id).max(), pipe.score_samples(X_ood).max()), 30)
ax.hist(pipe.score_samples(X_test_id), bins, alpha=0.6, label="cultivars 0-1 (held out, ID)")
ax.hist(pipe.score_samples(X_ood), bins, alpha=0.6, label="cultivar 2 (OOD)")
ax.axvline(detector.offset_, color="k", ls=":", label="offset_ (95% of ID accepted)")
ax.set_xlabel("score_samples (higher = more in-distribution)")
ax.legend(fontsize=8)
fig.tight_layout()
plt.show()
