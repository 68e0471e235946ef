"""Issue 9: automatic training length (steps floor) and ConvergenceWarning."""

import math
import warnings

import numpy as np
import torch
import pytest
from sklearn.datasets import load_wine
from sklearn.exceptions import ConvergenceWarning

from aoe_detect import AOEDetector
from aoe_detect._training import still_falling
from aoe_detect.detector import AUTO_EPOCHS, AUTO_MIN_STEPS, AUTO_PRETRAIN_EPOCHS


def _stages(det):
    return {s: sum(r["stage"] == s for r in det.history_) for s in ("pretrain", "finetune")}


def _wine():
    X, y = load_wine(return_X_y=True)
    m = y < 2
    return X[m].astype(np.float32), y[m]


def test_still_falling_on_controlled_curves():
    n = 20
    t = np.arange(n)
    assert not still_falling(np.exp(-t))                       # converged: flat at the end
    assert not still_falling(np.full(n, 0.3))                  # flat
    assert still_falling(1.0 - 0.04 * t)                       # straight line: never flattens
    lr = 0.5 * (1 + np.cos(np.pi * (t + 0.5) / n))
    assert still_falling(1.0 - 0.1 * np.cumsum(lr) ** 2)      # accelerating per unit lr
    assert not still_falling([1.0, 0.5, 0.4, 0.3])             # too short to judge
    assert not still_falling([1.0, np.nan, 0.5, 0.4, 0.3, 0.2])
    assert not still_falling(1.0 + 0.04 * t)                   # rising: not "still falling"


def test_auto_length_floor_on_small_data():
    X, y = _wine()  # 130 rows; 117 train rows = 1 batch of 128: one step per epoch
    det = AOEDetector(random_state=0, device="cpu").fit(X, y)
    assert _stages(det) == {"pretrain": AUTO_MIN_STEPS, "finetune": AUTO_MIN_STEPS}
    assert sum(r["steps"] for r in det.history_) == 2 * AUTO_MIN_STEPS
    # batch_size 10: 12 steps per epoch -> ceil(500 / 12) = 42 epochs
    det = AOEDetector(random_state=0, device="cpu", batch_size=10).fit(X, y)
    per_epoch = det.history_[0]["steps"]
    assert per_epoch == 12
    assert _stages(det) == {"pretrain": math.ceil(AUTO_MIN_STEPS / 12),
                            "finetune": math.ceil(AUTO_MIN_STEPS / 12)}


def test_auto_length_unchanged_with_many_batches():
    X, y = _wine()
    # batch_size 2: 59 steps per epoch -> exactly AUTO_PRETRAIN_EPOCHS (20) and AUTO_EPOCHS (10)
    det = AOEDetector(random_state=0, device="cpu", batch_size=2).fit(X, y)
    assert _stages(det) == {"pretrain": AUTO_PRETRAIN_EPOCHS, "finetune": AUTO_EPOCHS}
    # explicit numbers are taken verbatim
    det = AOEDetector(random_state=0, device="cpu", epochs=3, pretrain_epochs=2).fit(X, y)
    assert _stages(det) == {"pretrain": 2, "finetune": 3}


def test_convergence_warning_short_vs_auto():
    X, y = _wine()
    with pytest.warns(ConvergenceWarning, match="pretrain: the training loss was still falling"):
        det = AOEDetector(random_state=0, device="cpu", epochs=10, pretrain_epochs=10).fit(X, y)
    assert len(det.history_) == 20
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        det = AOEDetector(random_state=0, device="cpu").fit(X, y)
    assert not [w for w in rec if issubclass(w.category, ConvergenceWarning)]
    pre = [r["loss"] for r in det.history_ if r["stage"] == "pretrain"]
    assert pre[-1] < 0.05 < pre[0]  # the floor trains the classifier to convergence


# ------------------------------------------------------------ validation rows in history_
def test_history_has_held_out_validation_numbers_per_epoch(tmp_path):
    from sklearn.datasets import load_digits

    from aoe_detect import AOEDetector
    from aoe_detect._training import VALIDATION_ROWS, validation_row
    from aoe_detect.plots import plot_history

    X, y = load_digits(return_X_y=True)
    X, y = X[y < 5][:400], y[y < 5][:400]
    det = AOEDetector(epochs=2, pretrain_epochs=2, random_state=0, device="cpu").fit(X, y)
    pre, ft = det.history_[:2], det.history_[2:]
    families = [name for name, _ in det.outlier_source_._named()]
    for r in det.history_:
        assert 0.0 <= r["val_accuracy"] <= 1.0 and np.isfinite(r["val_energy_id"])
    for r in ft:  # one AUROC per outlier family, during outlier exposure
        assert {f"val_auroc_{f}" for f in families} <= set(r)
        assert all(0.0 <= r[f"val_auroc_{f}"] <= 1.0 for f in families)
    assert not any(k.startswith("val_auroc_") for r in pre for k in r)
    # the same numbers from the function on the fitted module: accuracy on the held-out rows
    assert VALIDATION_ROWS >= 2
    Xv = torch.as_tensor(X[:50], dtype=torch.float32)
    row = validation_row(det.module_, Xv, y[:50], det.outlier_source_, temperature=1.0,
                         device=torch.device("cpu"), seed=3)
    pred = det.predict_class(X[:50])
    assert row["val_accuracy"] == pytest.approx(np.mean(pred == y[:50]))
    again = validation_row(det.module_, Xv, y[:50], det.outlier_source_, temperature=1.0,
                           device=torch.device("cpu"), seed=3)
    assert row == again  # its own generator: deterministic
    # label-free: no accuracy; no held-out rows: no validation numbers
    free = AOEDetector(epochs=1, random_state=0, device="cpu").fit(X)
    assert "val_accuracy" not in free.history_[-1] and "val_energy_id" in free.history_[-1]
    none = AOEDetector(epochs=1, pretrain_epochs=1, random_state=0, device="cpu",
                       validation_fraction=0.0).fit(X, y)
    assert not any(k.startswith("val_") for k in none.history_[-1])
    pytest.importorskip("matplotlib")
    path = plot_history(det, str(tmp_path / "h.png"))
    assert open(path, "rb").read(4) == b"\x89PNG"
