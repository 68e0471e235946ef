"""The training stage object and its loop (aoe_detect._training), without the estimator."""

import math
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from aoe_detect import AOEDetector
from aoe_detect._params import flat_params
from aoe_detect._training import (Progress, Stage, TrainOptions, build_stage, close_stage,
                                  restore_kept, run_stage, train_epoch)
from aoe_detect.attacks import FGSM, attack_radius, resolve_epsilon
from aoe_detect.exceptions import NonFiniteLossWarning, TrainingInterruptedWarning
from aoe_detect.losses import CrossEntropyOnly, EnergyMarginLoss
from aoe_detect.outliers import UniformNoise

CPU = torch.device("cpu")


def _data(n=70, d=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d, generator=g)
    y = (X[:, 0] > 0).long()
    return X, y


def _net(d=3, k=2, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(d, 8), nn.ReLU(), nn.Linear(8, k))


def _stage(name="finetune", epochs=3, batch_size=16, source=None, attack=None, eps=0.0, lr=1e-2,
           loss=None, net=None, **opts):
    X, y = _data()
    net = _net() if net is None else net
    if source is not None:
        source.fit(X, torch.Generator().manual_seed(1))
    return build_stage(name, epochs, net, X, y, loss_fn=loss or CrossEntropyOnly(),
                       generator=torch.Generator().manual_seed(0), device=CPU,
                       options=TrainOptions(batch_size=batch_size, lr=lr, **opts),
                       source=source, attack=attack, eps=eps)


def test_build_stage_holds_everything_the_epochs_share():
    stage = _stage(source=UniformNoise(), attack=FGSM(), eps=0.1)
    assert isinstance(stage, Stage) and stage.name == "finetune" and stage.epochs == 3
    assert isinstance(stage.optimizer, torch.optim.Adam)
    assert stage.optimizer.param_groups[0]["lr"] == 1e-2
    # cosine schedule over every step of the stage: 70 rows / 16 = 4 full batches + 6 rows
    assert stage.scheduler.T_max == 3 * 5
    assert stage.feed is not None and stage.feed.eps == 0.1 and stage.feed.attack is not None
    # one batch provider for every backend; rows in memory: the global batches of the tensor
    assert len(stage.batches) == 5 and type(stage.batches).__name__ == "_TensorBatches"
    assert stage.forward_model is stage.module and stage.attack_model is stage.module
    assert stage.scaler is None and stage.autocast_dtype is None and stage.bar is None
    assert stage.world == 1 and stage.check_every == 1
    sgd = _stage(optimizer="sgd")
    assert isinstance(sgd.optimizer, torch.optim.SGD)
    assert sgd.optimizer.param_groups[0]["nesterov"] and sgd.optimizer.param_groups[0]["momentum"] == 0.9


def test_optimizer_and_scheduler_step_once_per_batch():
    stage = _stage(epochs=2, batch_size=16)
    rows = [train_epoch(stage) for _ in range(2)]
    assert [r["steps"] for r in rows] == [5, 5]
    assert stage.scheduler.last_epoch == 10  # one scheduler step per optimizer step
    state = stage.optimizer.state[stage.optimizer.param_groups[0]["params"][0]]
    assert int(state["step"]) == 10
    # the cosine schedule reached its end after the planned steps
    assert stage.optimizer.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)
    for r in rows:
        assert set(r) >= {"loss", "ce", "mean_energy_id", "mean_energy_outlier", "steps", "seconds"}
        assert math.isnan(r["mean_energy_outlier"])  # no outliers in this stage
        assert math.isfinite(r["loss"])


def test_a_trailing_batch_of_one_row_is_dropped():
    X, y = _data(n=33)
    stage = build_stage("pretrain", 1, _net(), X, y, loss_fn=CrossEntropyOnly(),
                        generator=torch.Generator().manual_seed(0), device=CPU,
                        options=TrainOptions(batch_size=16))
    assert train_epoch(stage)["steps"] == 2  # 16 + 16, the 33rd row alone is dropped
    assert stage.scheduler.T_max == 2


def test_outlier_batches_go_through_the_attack_and_the_loss():
    stage = _stage(source=UniformNoise(), attack=FGSM(), eps=0.05, outlier_batch_size=8,
                   loss=EnergyMarginLoss(0.1, -5.0, -3.0))
    row = train_epoch(stage)
    assert math.isfinite(row["mean_energy_outlier"]) and math.isfinite(row["energy_out"])
    assert stage.feed._calls == row["steps"]


def test_run_stage_appends_rows_counts_epochs_on_and_calls_the_hook():
    stage = _stage(epochs=2)
    history, progress, calls = [{"stage": "finetune", "epoch": 1, "loss": 1.0}], Progress(), []
    stopped = run_stage(stage, history=history, progress=progress,
                        probe_scores=lambda: np.zeros(3), on_epoch_end=lambda: calls.append(1))
    assert stopped is False
    assert [(r["stage"], r["epoch"]) for r in history] == [("finetune", 1), ("finetune", 2),
                                                            ("finetune", 3)]
    assert calls == [1, 1]
    weights, n_hist = progress.kept
    assert n_hist == 3
    for k, v in stage.module.state_dict().items():
        assert torch.equal(v, weights[k])
    assert progress.where == "finetune epoch 3 (after it completed)"


def test_run_stage_rolls_back_on_a_non_finite_loss():
    net = _net()
    stage = _stage(epochs=3, lr=1e30, optimizer="sgd", net=net)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    history, progress = [], Progress()
    with pytest.warns(NonFiniteLossWarning, match="Training stopped in finetune epoch"):
        stopped = run_stage(stage, history=history, progress=progress,
                            probe_scores=lambda: np.zeros(1))
    assert stopped is True
    n_done = len(history)
    assert n_done < 3
    kept, n_hist = progress.kept
    assert n_hist == n_done
    for k, v in net.state_dict().items():  # the weights of the last completed epoch
        assert torch.equal(v, kept[k])
        assert bool(torch.isfinite(v).all())
    if n_done == 0:
        for k, v in net.state_dict().items():
            assert torch.equal(v, before[k])


def test_run_stage_rolls_back_when_the_probe_scores_are_not_finite():
    net = _net()
    stage = _stage(epochs=2, net=net)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with pytest.warns(NonFiniteLossWarning, match="scores of training inputs became non-finite"):
        stopped = run_stage(stage, history=[], progress=Progress(),
                            probe_scores=lambda: np.array([0.0, np.inf]))
    assert stopped is True
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k])


def test_run_stage_closes_the_stage_even_when_an_epoch_raises():
    stage = _stage(epochs=2, verbose=1)

    class Boom(Exception):
        pass

    def probe():
        raise Boom

    assert stage.bar is not None
    with pytest.raises(Boom):
        run_stage(stage, history=[], progress=Progress(), probe_scores=probe)
    assert stage.bar.disable  # tqdm.close() disables the bar
    close_stage(stage)  # idempotent


def test_restore_kept_puts_back_weights_and_history_with_a_warning():
    net = _net()
    kept = {k: v.clone() for k, v in net.state_dict().items()}
    history = [{"stage": "pretrain"}, {"stage": "finetune"}]
    with torch.no_grad():
        for p in net.parameters():
            p.add_(1.0)
    net.train()
    with pytest.warns(TrainingInterruptedWarning, match="fit interrupted in finetune epoch 2"):
        restore_kept(net, history, Progress(where="finetune epoch 2", kept=(kept, 1)))
    assert len(history) == 1 and not net.training
    for k, v in net.state_dict().items():
        assert torch.equal(v, kept[k])


def test_train_options_from_the_estimator_params():
    params = flat_params(AOEDetector(batch_size=64, outlier_batch_size=32, lr=0.5,
                                     optimizer="sgd", attack=FGSM(refresh=3), verbose=2))
    opts = TrainOptions.from_params(params, clip=(0.0, 1.0), channels_last=False, ddp=False)
    assert (opts.batch_size, opts.outlier_batch_size, opts.lr, opts.optimizer) == (64, 32, 0.5, "sgd")
    assert opts.attack_refresh == 3 and opts.clip == (0.0, 1.0) and opts.verbose == 2
    assert opts.sync_batchnorm == "auto" and opts.temperature == 1.0
    assert opts.weight_decay == 0.0
    assert TrainOptions.from_params(flat_params(AOEDetector(weight_decay=0.05)),
                                    clip=None, channels_last=False, ddp=False).weight_decay == 0.05


def test_weight_decay_is_decoupled_with_adam_and_l2_with_sgd():
    assert type(_stage().optimizer) is torch.optim.Adam  # 0: plain Adam, the former numbers
    adamw = _stage(weight_decay=0.1).optimizer
    assert type(adamw) is torch.optim.AdamW and adamw.param_groups[0]["weight_decay"] == 0.1
    sgd = _stage(optimizer="sgd", weight_decay=0.1).optimizer
    assert type(sgd) is torch.optim.SGD and sgd.param_groups[0]["weight_decay"] == 0.1
    # with a zero loss gradient AdamW only decays: w <- w * (1 - lr * wd) per step
    net = _net()
    w0 = [p.detach().clone() for p in net.parameters()]
    stage = _stage(net=net, weight_decay=0.1, lr=1e-2, epochs=1, loss=_ZeroLoss())
    rows = train_epoch(stage)
    lrs = [1e-2 * 0.5 * (1 + math.cos(math.pi * t / 5)) for t in range(rows["steps"])]
    shrink = float(np.prod([1 - lr * 0.1 for lr in lrs]))
    for p, q in zip(net.parameters(), w0):
        torch.testing.assert_close(p.detach(), q * shrink, rtol=1e-5, atol=1e-7)


def test_weight_decay_is_validated_by_fit(blobs):
    with pytest.raises(ValueError, match="weight_decay"):
        AOEDetector(weight_decay=-0.1).fit(*blobs)


class _ZeroLoss(CrossEntropyOnly):
    """Cross-entropy times zero: every parameter gets a zero (not None) gradient."""

    def forward(self, logits_in, y_in, logits_out=None):
        ce, parts = super().forward(logits_in, y_in, logits_out)
        return ce * 0.0, parts


def test_epsilon_is_resolved_in_one_place():
    X = torch.tensor([[0.0, 10.0], [2.0, 30.0]])
    np.testing.assert_allclose(resolve_epsilon("auto", X, (2,)), 0.1 * X.std(0).numpy(), rtol=1e-6)
    assert resolve_epsilon("auto", torch.zeros(2, 1, 4, 4), (1, 4, 4)) == pytest.approx(8 / 255)
    assert resolve_epsilon(0.3, X, (2,)) == 0.3
    # the attack's own eps wins over the detector's epsilon_ (attack__eps)
    assert attack_radius(FGSM(eps=0.2), 0.1, (2,), CPU) == 0.2
    assert attack_radius(FGSM(), 0.1, (2,), CPU) == 0.1
    t = attack_radius(FGSM(), np.array([0.1, 0.5], np.float32), (2,), CPU)
    assert isinstance(t, torch.Tensor) and t.dtype == torch.float32
    with pytest.raises(ValueError, match="attack__eps"):
        attack_radius(FGSM(eps=[0.1, 0.2, 0.3]), 0.1, (2,), CPU)


def test_fit_uses_the_attack_eps_set_through_nested_params(blobs):
    X, y = blobs
    kw = dict(epochs=1, pretrain_epochs=1, outliers="uniform", ood_score="energy",
              random_state=0, device="cpu", batch_size=32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a = AOEDetector(attack=FGSM(), epsilon=0.3, **kw).fit(X, y)
        b = AOEDetector(attack=FGSM(), epsilon=0.05, **kw).set_params(attack__eps=0.3).fit(X, y)
    # the same radius reaches the outlier feed either way: the same training, bit for bit
    np.testing.assert_array_equal(a.score_samples(X[:20]), b.score_samples(X[:20]))


def test_loss_objects_carry_their_settings_and_the_old_shortcuts_fill_the_rest(blobs):
    from sklearn.base import clone

    from aoe_detect.losses import EnergyMargin, SoftmaxOE, loss_settings

    assert loss_settings("energy") == ("energy", "auto", "auto", "auto")
    assert loss_settings(EnergyMargin(m_in=-8.0)) == ("energy", "auto", -8.0, "auto")
    assert loss_settings(SoftmaxOE(lam=0.7)) == ("softmax", 0.7, "auto", "auto")
    X, y = blobs
    kw = dict(epochs=1, pretrain_epochs=1, outliers="uniform", ood_score="energy",
              random_state=0, device="cpu", batch_size=32)
    with pytest.warns(FutureWarning):  # the flat names of 0.2
        short = AOEDetector(lam=0.3, m_in=-6.0, m_out=-2.0, **kw).fit(X, y)
        obj = AOEDetector(loss=EnergyMargin(lam=0.3, m_in=-6.0), m_out=-2.0, **kw).fit(X, y)
    grid = clone(AOEDetector(loss=EnergyMargin(), **kw)).set_params(
        loss__lam=0.3, loss__m_in=-6.0, loss__m_out=-2.0).fit(X, y)
    for det in (obj, grid):
        assert (det.lam_, det.m_in_, det.m_out_) == (0.3, -6.0, -2.0)
        np.testing.assert_array_equal(det.score_samples(X[:20]), short.score_samples(X[:20]))
    soft = AOEDetector(loss=SoftmaxOE(lam=0.25), **kw).fit(X, y)
    assert soft.lam_ == 0.25
    np.testing.assert_array_equal(
        soft.score_samples(X[:20]),
        AOEDetector(loss="softmax", **kw).set_params(loss__lam=0.25).fit(X, y).score_samples(X[:20]))
    with pytest.raises(ValueError, match="`loss__m_out`.*must be greater than `loss__m_in`"):
        AOEDetector(loss=EnergyMargin(m_in=1.0, m_out=0.5), **kw).fit(X, y)
    with pytest.raises(ValueError, match=r"loss.*EnergyMargin.*lam"):
        AOEDetector(loss=EnergyMargin(lam=-1.0), **kw).fit(X, y)
