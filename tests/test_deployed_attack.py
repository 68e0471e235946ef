"""Issue 18: the training-time attack on the DEPLOYED score (``FGSM(target="deployed")`` /
``PGD(target="deployed")``): the default keeps today's fits bit for bit, the deployed
target attacks the score the detector deploys (its statistics re-estimated per epoch with
the package's own scorer), and the setting is validated, nested, cloned and persisted."""

import copy
import pickle

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.utils._param_validation import InvalidParameterError

from aoe_detect import AOEDetector, _deployed
from aoe_detect.attacks import FGSM, PGD, fgsm
from aoe_detect.testing import TINY, quiet, tiny_blobs


@pytest.fixture(scope="module")
def blobs():
    X, Y, _ = tiny_blobs()
    return X, Y


def _fit(attack, X, Y, **kw):
    return quiet(AOEDetector(**{**TINY, "attack": attack, **kw}).fit, X, Y)


def test_default_target_is_bitwise_the_energy_attack_and_deployed_changes_the_fit(blobs):
    X, Y = blobs
    base = _fit(FGSM(), X, Y).score_samples(X)
    for same in (FGSM(target="energy"), "fgsm"):
        np.testing.assert_array_equal(_fit(same, X, Y).score_samples(X), base)
    deployed = _fit(FGSM(target="deployed"), X, Y).score_samples(X)
    assert np.abs(deployed - base).max() > 1e-4
    pgd = _fit(PGD(steps=2), X, Y).score_samples(X)
    np.testing.assert_array_equal(_fit(PGD(steps=2, target="energy"), X, Y).score_samples(X), pgd)
    assert np.abs(_fit(PGD(steps=2, target="deployed"), X, Y).score_samples(X) - pgd).max() > 1e-4


def test_for_the_energy_score_the_deployed_target_is_the_energy_target(blobs):
    X, Y = blobs
    for sides in ("ood", "both"):
        a = _fit(FGSM(sides=sides), X, Y, ood_score="energy").score_samples(X)
        b = _fit(FGSM(sides=sides, target="deployed"), X, Y, ood_score="energy").score_samples(X)
        np.testing.assert_array_equal(a, b)


def _target(det, X, Y, period=1, max_rows=_deployed.DEPLOYED_ROWS):
    Xt = torch.as_tensor(X, dtype=torch.float32)
    labels = torch.as_tensor(np.searchsorted(det.classes_, Y), dtype=torch.long)
    return _deployed.DeployedTarget(det._rows(), Xt, labels, det._score,
                                    temperature=det.temperature, has_classes=True,
                                    period=period, seed=0, max_rows=max_rows)


@pytest.mark.parametrize("score", ["energy+mahalanobis", "mahalanobis", "energy+knn"])
def test_the_head_is_the_deployed_score_and_its_attack_raises_it_more(blobs, score):
    X, Y = blobs
    det = _fit(FGSM(), X, Y, ood_score=score)
    head, temperature = _target(det, X, Y).model()
    assert temperature == 1.0
    Xt = torch.as_tensor(X, dtype=torch.float32)
    with torch.no_grad():
        s_head = head(Xt)[:, 0].double().numpy()
    # statistics from half of the same rows: a similar ranking ...
    assert np.corrcoef(s_head, det.score_samples(X))[0, 1] > 0.5
    # ... and the same formulas: with the detector's statistics the head IS its score
    kinds = lambda scorer: [type(m) for m in scorer.modules()]  # noqa: E731
    assert kinds(head.scorer) == kinds(det.scorer_)
    twin = copy.deepcopy(head)
    twin.scorer = copy.deepcopy(det.scorer_)
    with torch.no_grad():
        np.testing.assert_allclose(twin(Xt)[:, 0].double().numpy(), det.score_samples(X),
                                   rtol=1e-5, atol=1e-5)
    # far rows the detector calls OOD; FGSM on the deployed head raises the deployed score
    # more than FGSM on the backbone's energy does
    far = torch.as_tensor(np.random.RandomState(3).uniform(-6, 6, (200, X.shape[1])),
                          dtype=torch.float32)
    clean = det.score_samples(far.numpy())
    eps = 0.3
    via_energy = det.score_samples(fgsm(det.module_, far, eps, temperature=det.temperature).numpy())
    via_head = det.score_samples(fgsm(head, far, eps).numpy())
    assert (via_head - clean).mean() > (via_energy - clean).mean()
    assert (via_head - clean).mean() > 0


def test_statistics_refit_once_per_epoch_from_a_local_generator(blobs, monkeypatch):
    X, Y = blobs
    calls, orig = [], _deployed.DeployedTarget._fit

    def counted(self):
        calls.append(self.period)
        return orig(self)

    monkeypatch.setattr(_deployed.DeployedTarget, "_fit", counted)
    rng_torch, rng_np = torch.random.get_rng_state(), np.random.get_state()[1].copy()
    det = _fit(FGSM(target="deployed"), X, Y, epochs=3)
    assert torch.equal(torch.random.get_rng_state(), rng_torch)  # global RNGs untouched
    np.testing.assert_array_equal(np.random.get_state()[1], rng_np)
    steps = [r["steps"] for r in det.history_ if r["stage"] == "finetune"]
    assert len(calls) == len(steps) == 3 and calls[0] == steps[0]  # one refit per epoch
    again = _fit(FGSM(target="deployed"), X, Y, epochs=3)  # same seed: same fit
    np.testing.assert_array_equal(again.score_samples(X), det.score_samples(X))


def test_the_model_state_is_restored_and_rows_are_bounded(blobs):
    X, Y = blobs
    det = _fit(FGSM(), X, Y)
    module = det.module_
    module.train()
    list(module.modules())[1].eval()  # mixed modes come back as they were
    modes = [m.training for m in module.modules()]
    flags = [p.requires_grad for p in module.parameters()]
    state = {k: v.clone() for k, v in module.state_dict().items()}
    grads = [None if p.grad is None else p.grad.clone() for p in module.parameters()]
    target = _target(det, X, Y, period=2, max_rows=10)
    target.tick()
    head, _ = target.model()
    fgsm(head, torch.as_tensor(X[:5], dtype=torch.float32), 0.1)
    assert [m.training for m in module.modules()] == modes
    assert [p.requires_grad for p in module.parameters()] == flags
    assert all(torch.equal(state[k], v) for k, v in module.state_dict().items())
    assert all((g is None and p.grad is None) or torch.equal(g, p.grad)
               for g, p in zip(grads, module.parameters()))
    assert target.n_rows == (5, 5)  # at most max_rows rows: half fit, half standardise
    target.tick()  # the second step of the "epoch" (period 2): the same head
    assert target.model()[0] is head and target.refits == 1
    target.tick()  # a new epoch: statistics of the current model, a new head
    assert target.model()[0] is not head and target.refits == 2


def test_target_is_validated_nested_cloned_and_persisted(blobs, tmp_path):
    X, Y = blobs
    for attack in (FGSM(target="logits"), PGD(target=None)):
        with pytest.raises(InvalidParameterError, match="target"):
            AOEDetector(**{**TINY, "attack": attack}).fit(X, Y)
    det = AOEDetector(**{**TINY, "attack": PGD(steps=2)})
    det.set_params(attack__target="deployed")
    assert det.attack.target == "deployed" and det.get_params()["attack__target"] == "deployed"
    assert clone(det).attack.target == "deployed"
    assert FGSM().target == "energy" and PGD().target == "energy"
    assert repr(FGSM()) == "FGSM()" and "target='deployed'" in repr(FGSM(target="deployed"))
    fitted = _fit(FGSM(target="deployed", sides="both"), X, Y)
    fitted.save(tmp_path / "d.aoe")
    back = AOEDetector.load(tmp_path / "d.aoe")
    assert back.attack.target == "deployed" and back.attack.sides == "both"
    np.testing.assert_array_equal(back.score_samples(X), fitted.score_samples(X))
    # a pickle from before `target` existed gets the default
    old = pickle.loads(pickle.dumps(_fit(FGSM(), X, Y)))
    del old.attack.__dict__["target"]
    revived = pickle.loads(pickle.dumps(old))
    assert revived.attack.target == "energy"


def test_a_dataset_fit_targets_the_same_rows_as_arrays(blobs):
    from torch.utils.data import TensorDataset
    X, Y = blobs
    ds = TensorDataset(torch.as_tensor(X, dtype=torch.float32), torch.as_tensor(Y))
    via_ds = quiet(AOEDetector(**{**TINY, "attack": FGSM(target="deployed")}).fit, ds)
    arrays = _fit(FGSM(target="deployed"), X, Y)
    np.testing.assert_array_equal(via_ds.score_samples(X), arrays.score_samples(X))
