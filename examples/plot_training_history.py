"""
Training history
================

Every fit records one row per epoch in ``history_`` (whatever ``verbose`` says): the stage
(``"pretrain"`` cross-entropy, then ``"finetune"`` outlier exposure), the total loss, its
cross-entropy part, the two energy-margin terms and the mean energies of the ID and the
(adversarial) outlier batches. The outlier energy rising above the ID energy is what the
detector learns.
"""

import matplotlib.pyplot as plt
import numpy as np
from sklearn.datasets import load_digits

from aoe_detect import AOEDetector

X, y = load_digits(return_X_y=True)
det = AOEDetector(epochs=4, pretrain_epochs=4, random_state=0).fit(X[y < 5], y[y < 5])

hist = det.history_
epoch = np.arange(1, len(hist) + 1)
ft = np.array([r["stage"] == "finetune" for r in hist])
print(f"{len(hist)} epochs recorded; margins m_in_={det.m_in_:.2f}, m_out_={det.m_out_:.2f}")

fig, (a, b) = plt.subplots(1, 2, figsize=(8, 3.2))
a.plot(epoch, [r["loss"] for r in hist], "o-", label="loss")
a.plot(epoch, [r["ce"] for r in hist], "s--", label="cross-entropy part")
a.axvspan(ft.argmax() + 0.5, len(hist) + 0.5, color="0.9", label="outlier exposure")
a.set_xlabel("epoch")
a.legend(fontsize=8)
b.plot(epoch[ft], [r["mean_energy_id"] for r in hist if r["stage"] == "finetune"], "o-",
       label="ID")
b.plot(epoch[ft], [r["mean_energy_outlier"] for r in hist if r["stage"] == "finetune"], "s-",
       label="training outliers (attacked)")
b.axhline(det.m_in_, color="C0", ls=":", label="m_in_")
b.axhline(det.m_out_, color="C1", ls=":", label="m_out_")
b.set_xlabel("epoch")
b.set_ylabel("mean energy (lower = more ID)")
b.legend(fontsize=8)
fig.tight_layout()
plt.show()
