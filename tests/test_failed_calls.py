"""A failed call damages nothing, and an interrupt keeps finished work (issue 11, sections 1-2;
docs/failure_modes.md)."""

from _tiny_fitted import *  # noqa: F401,F403  (shared imports, tiny blobs, the `fitted` fixture)


# ------------------------------------------------------- 1. failed calls damage nothing
def test_meta_device_warm_start_refused_and_scoring_unchanged(fitted):
    det = copy.deepcopy(fitted)
    before = det.score_samples(PROBE)
    dev = next(det.module_.parameters()).device
    with pytest.raises(ValueError, match=r"`device` must be .*'meta'"):
        det.set_params(warm_start=True, device="meta").fit(X, Y)
    # no reset of the parameters needed: the fitted detector still scores as before
    assert det.score_samples(PROBE).tobytes() == before.tobytes()
    assert next(det.module_.parameters()).device == dev and not det.module_.training


def test_failed_warm_start_leaves_module_object_weights_and_layout(fitted):
    det = copy.deepcopy(fitted).set_params(warm_start=True, epochs=3)
    module = det.module_
    w = {k: v.clone() for k, v in module.state_dict().items()}

    class Boom:
        def sample(self, n, generator):
            raise RuntimeError("boom")

    det.set_params(outliers=Boom())
    snap = snapshot(det, PROBE)
    with pytest.raises(RuntimeError, match="boom"):
        quiet(det.fit, X, Y)
    assert det.module_ is module and not module.training
    assert all(torch.equal(module.state_dict()[k], w[k]) for k in w)
    assert describe_change(det, snap, PROBE) is None


def test_fit_never_trains_the_users_module_in_place():
    net = nn.Sequential(nn.Linear(2, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 2))
    w = {k: v.clone() for k, v in net.state_dict().items()}
    det = quiet(AOEDetector(**{**TINY, "backbone": net}).fit, X, Y)
    assert det.module_ is not net and net.training
    assert all(torch.equal(net.state_dict()[k], w[k]) for k in w)


def test_recalibrate_with_contamination_changed_by_set_params(fitted):
    det = copy.deepcopy(fitted)
    det.contamination = 0.9  # as set_params would, without validation
    snap_offset = det.offset_
    with pytest.raises(ValueError, match="contamination"):
        det.recalibrate()
    assert det.offset_ == snap_offset
    with pytest.raises(ValueError, match="contamination"):
        det.recalibrate(contamination=0.9)


# ----------------------------------------------------------------- 2. interrupts
class Interrupt(nn.Module):
    """MLP whose forward raises KeyboardInterrupt on the ``at``-th call (train or eval)."""

    def __init__(self, at=None, only_eval=False):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, 2))
        self.at, self.only_eval, self.calls = at, only_eval, 0

    def forward(self, x):
        if not (self.only_eval and self.training):
            self.calls += 1
            if self.at is not None and self.calls == self.at:
                raise KeyboardInterrupt
        return self.net(x)


def _interrupt_fit(tmp_path, monkeypatch, where):
    det = AOEDetector(**{**TINY, "pretrain_epochs": 2, "epochs": 2,
                         "checkpoint_dir": str(tmp_path)})
    if where == "checkpoint":  # Ctrl-C while the 3rd checkpoint is written
        real, n = persistence.save, {"k": 0}

        def save(*a, **k):
            n["k"] += 1
            if n["k"] == 3:
                raise KeyboardInterrupt
            return real(*a, **k)
        monkeypatch.setattr(persistence, "save", save)
        done = 3
    elif where == "between-stages":  # Ctrl-C in the margin scoring after pretraining
        real, n = AOEDetector._set_margins, {"k": 0}

        def set_margins(self, *a, **k):
            n["k"] += 1
            if n["k"] == 1:
                raise KeyboardInterrupt
            return real(self, *a, **k)
        monkeypatch.setattr(AOEDetector, "_set_margins", set_margins)
        done = 2
    else:  # "validation": Ctrl-C in the final validation scoring (once)
        real, n = AOEDetector._validation_scores, {"k": 0}

        def val(self, X_val):
            n["k"] += 1
            if n["k"] == 1:
                raise KeyboardInterrupt
            return real(self, X_val)
        monkeypatch.setattr(AOEDetector, "_validation_scores", val)
        done = 4
    with pytest.warns(TrainingInterruptedWarning, match="fit interrupted"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", CalibrationWarning)
            det.fit(X, Y)
    monkeypatch.undo()
    return det, done


@pytest.mark.parametrize("where", ["checkpoint", "between-stages", "validation"])
def test_interrupt_anywhere_keeps_last_completed_epoch(tmp_path, monkeypatch, where):
    det, done = _interrupt_fit(tmp_path, monkeypatch, where)
    assert len(det.history_) == done
    assert math.isfinite(det.offset_) and len(det.validation_scores_) > 0
    assert np.isfinite(det.score_samples(PROBE)).all() and not det.module_.training
    # the checkpoint is the kept epoch, never one behind
    ckpt = quiet(AOEDetector.load, tmp_path / "checkpoint.aoe")
    assert len(ckpt.history_) == done
    for k, v in det.module_.state_dict().items():
        assert torch.equal(v, ckpt.module_.state_dict()[k]), k
    if where == "validation":  # all epochs done: bitwise the uninterrupted fit
        full = quiet(AOEDetector(**{**TINY, "pretrain_epochs": 2, "epochs": 2}).fit, X, Y)
        assert det.score_samples(PROBE).tobytes() == full.score_samples(PROBE).tobytes()
        assert det.offset_ == full.offset_


def test_interrupt_before_any_training_restores_and_reraises(fitted, monkeypatch):
    det = copy.deepcopy(fitted)

    def boom(*a, **k):
        raise KeyboardInterrupt
    monkeypatch.setattr(_fit_steps, "fit_source", boom)  # after the split, before training
    fails_untouched(det, lambda d: d.fit(X, Y), KeyboardInterrupt, "")
