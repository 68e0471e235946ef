"""Issue 18: robust_ood_report attacks the deployed detector on both sides, and its attacks
are strong enough (sanity tests that fail for a broken or masked attack)."""

import copy
import pathlib
import warnings

import numpy as np
import pytest
import torch
from sklearn.exceptions import NotFittedError

import aoe_detect
from aoe_detect import AOEDetector
from aoe_detect.attacks import FGSM, PGD, GaussianAugment, pgd
from aoe_detect.exceptions import RobustnessWarning
from aoe_detect.metrics import auroc
from aoe_detect.robustness import robust_ood_report

N = 32


@pytest.fixture(scope="module")
def images():
    """Fashion-MNIST (ID) and MNIST (OOD) from the sample bundled with the package."""
    with np.load(pathlib.Path(aoe_detect.__file__).parent / "sample_data" / "sample.npz") as d:
        return {k: d[k] for k in ("fashion_train_X", "fashion_train_y", "fashion_test_X",
                                  "mnist_test_X")}


@pytest.fixture(scope="module")
def det(images):
    """A small image detector with the default score (energy + Mahalanobis, standardised)."""
    X, y = images["fashion_train_X"][:400], images["fashion_train_y"][:400]
    return AOEDetector(pretrain_epochs=2, epochs=1, batch_size=64, random_state=0,
                       device="cpu").fit(X, y)


@pytest.fixture(scope="module")
def data(images):
    return (images["fashion_test_X"][:N].astype(np.float32) / 255,
            images["mnist_test_X"][:N].astype(np.float32) / 255)


@pytest.fixture(scope="module")
def sweep(det, data):
    return robust_ood_report(det, *data, eps=(0.0, 0.03, 0.1, 0.3), steps=10, random_state=0,
                             warn=False)


def test_sides_move_scores_in_the_right_direction(sweep):
    clean = sweep.scores["clean"]
    for key in ("pgd10|0.03", "fgsm|0.03", "pgd10|0.3"):
        adv = sweep.scores[key]
        # the best iterate is kept, so no input ends worse than it started
        assert np.all(adv["ood"] >= clean["ood"] - 1e-3)
        assert np.all(adv["id"] <= clean["id"] + 1e-3)
        assert adv["ood"].mean() > clean["ood"].mean() + 0.1
        assert adv["id"].mean() < clean["id"].mean() - 0.1
    # each side lowers the AUROC, and both sides at once lower it most
    a = {s: sweep.auroc(0.03, s) for s in ("ood", "id", "both")}
    assert a["both"] < min(a["ood"], a["id"]) <= max(a["ood"], a["id"]) < sweep.auroc(0.0, "ood")


def test_auroc_falls_toward_zero_as_eps_grows(sweep):
    clean = sweep.auroc(0.0, "both")
    assert clean > 0.8  # the detector works before the attack
    for side in ("ood", "id", "both"):
        curve = [sweep.auroc(e, side) for e in (0.0, 0.03, 0.1, 0.3)]
        assert all(b <= a + 0.02 for a, b in zip(curve, curve[1:])), (side, curve)
    assert sweep.auroc(0.3, "both") < 0.05
    assert sweep.auroc(0.3, "ood") < 0.25  # far below chance (0.5) and the clean 0.9
    assert sweep.fpr95(0.3, "both") > 0.9


def test_pgd_at_least_as_strong_as_fgsm(sweep):
    for e in (0.03, 0.1, 0.3):
        for side in ("ood", "id", "both"):
            assert sweep.auroc(e, side, "pgd10") <= sweep.auroc(e, side, "fgsm") + 0.01
            worst = sweep.auroc(e, side, "worst")
            assert worst <= min(sweep.auroc(e, side, "pgd10"), sweep.auroc(e, side, "fgsm")) + 1e-12
    assert not [d for d in sweep.diagnostics if d["kind"] == "pgd_weaker_than_fgsm"]


def test_restarts_never_weaker_than_one_start(det, data):
    kw = dict(eps=(0.03,), attack="pgd", steps=5, random_state=3, warn=False)
    one = robust_ood_report(det, *data, restarts=1, **kw)
    three = robust_ood_report(det, *data, restarts=3, **kw)
    a, b = one.scores["pgd5|0.03"], three.scores["pgd5|0.03"]
    assert np.all(b["ood"] >= a["ood"]) and np.all(b["id"] <= a["id"])
    assert (b["ood"] > a["ood"]).any()  # the extra restarts found something
    for side in ("ood", "id", "both"):
        assert three.auroc(0.03, side) <= one.auroc(0.03, side)


def test_report_is_reproducible_and_independent_of_other_requests(det, data):
    a = robust_ood_report(det, *data, eps=(0.03,), attack="pgd", steps=3, sides=("ood",),
                          random_state=7, warn=False)
    b = robust_ood_report(det, *data, eps=(0.01, 0.03), attack=("fgsm", "pgd"), steps=3,
                          random_state=7, warn=False)
    np.testing.assert_array_equal(a.scores["pgd3|0.03"]["ood"], b.scores["pgd3|0.03"]["ood"])


def _state(det):
    m = det.module_
    return ({k: v.clone() for k, v in m.state_dict().items()},
            {k: v.clone() for k, v in det.scorer_.state_dict().items()},
            [mod.training for mod in m.modules()], [p.requires_grad for p in m.parameters()],
            [None if p.grad is None else p.grad.clone() for p in m.parameters()])


def test_model_state_is_restored_exactly(det, data):
    d = copy.deepcopy(det)
    m = d.module_
    m.train()  # unusual flags on purpose: the report must put them back as they were
    list(m.parameters())[0].requires_grad_(False)
    list(m.parameters())[1].grad = torch.ones_like(list(m.parameters())[1])
    before = _state(d)
    robust_ood_report(d, *data, eps=(0.03,), steps=3, random_state=0, warn=False)
    after = _state(d)
    for x, y in zip(before[:2], after[:2]):
        assert x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)
    assert before[2] == after[2] and before[3] == after[3]
    assert all((g is None and h is None) or torch.equal(g, h) for g, h in zip(before[4], after[4]))


def test_inputs_are_not_modified(det, data):
    X_id, X_ood = data[0].copy(), data[1].copy()
    robust_ood_report(det, X_id, X_ood, eps=(0.1,), steps=2, random_state=0, warn=False)
    np.testing.assert_array_equal(X_id, data[0])
    np.testing.assert_array_equal(X_ood, data[1])


class _Round(torch.nn.Module):
    """Quantises the input to 1/255 steps: the gradient w.r.t. the input is exactly zero."""

    def forward(self, x):
        return torch.round(x * 255) / 255


def test_diagnostics_flag_a_masked_gradient(det, data):
    masked = copy.deepcopy(det)
    masked.module_ = torch.nn.Sequential(_Round(), masked.module_)
    np.testing.assert_allclose(masked.score_samples(data[1]), det.score_samples(data[1]),
                               rtol=1e-4, atol=1e-4)  # same detector, masked gradient
    with pytest.warns(RobustnessWarning):
        rep = robust_ood_report(masked, *data, eps=(0.03, 0.3), steps=5, random_state=0)
    kinds = {d["kind"] for d in rep.diagnostics}
    assert {"not_improving", "large_eps"} <= kinds
    assert "not_improving" not in {d["kind"] for d in robust_ood_report(
        det, *data, eps=(0.03,), steps=5, random_state=0, warn=False).diagnostics}


def test_diagnostics_flag_pgd_weaker_than_fgsm(det, data):
    weak = PGD(steps=2, step_size=1e-4, random_start=False)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        rep = robust_ood_report(det, *data, eps=(0.1,), attack=(weak, "fgsm"), sides=("ood",),
                                random_state=0)
    assert any(d["kind"] == "pgd_weaker_than_fgsm" for d in rep.diagnostics)
    assert any(issubclass(x.category, RobustnessWarning) for x in w)
    assert "pgd_weaker_than_fgsm" in str(rep) or "FGSM" in str(rep)


def test_torchattacks_pgd_agrees_on_the_deployed_score(det, data):
    """The package's PGD and torchattacks' PGD, on the same differentiable deployed score
    (wrapped as a 2-logit model whose cross-entropy for label 0 is softplus(score), so
    torchattacks' ascent raises the score), from the same start, reach the same scores."""
    torchattacks = pytest.importorskip("torchattacks")
    model, temperature = det._score_model()
    assert temperature == 1.0 and det.ood_score == "energy+mahalanobis"

    class TwoLogits(torch.nn.Module):
        def __init__(self, head):
            super().__init__()
            self.head = head

        def forward(self, x):
            s = self.head(x)[:, 0] / 100.0  # scaled: softplus keeps a non-zero gradient
            return torch.stack([torch.zeros_like(s), s], 1)

    x = torch.from_numpy(data[1][:, None])
    eps, alpha, steps = 0.03, 0.005, 10
    wrapped = TwoLogits(model).eval()
    ta = torchattacks.PGD(wrapped, eps=eps, alpha=alpha, steps=steps, random_start=False)
    x_ta = ta(x, torch.zeros(len(x), dtype=torch.long))
    x_pkg = pgd(model, x, eps, steps=steps, step_size=alpha, random_start=False, clip=(0, 1),
                direction=-1)
    s_ta, s_pkg = det.score_samples(x_ta.numpy()), det.score_samples(x_pkg.numpy())
    s_id = det.score_samples(data[0])
    assert np.median(np.abs(s_ta - s_pkg)) < 0.05 * np.std(s_ta) + 1e-6
    assert abs(auroc(s_id, s_ta) - auroc(s_id, s_pkg)) <= 0.02
    rep = robust_ood_report(det, *data, eps=(eps,), attack="pgd", steps=steps, sides=("ood",),
                            random_state=0, warn=False)
    assert rep.auroc(eps, "ood") <= auroc(s_id, s_ta) + 0.02  # the report is at least as strong


@pytest.mark.parametrize("kw, name", [
    ({"eps": -0.1}, "eps"), ({"eps": "big"}, "eps"), ({"eps": (0.1, np.nan)}, "eps"),
    ({"attack": "cw"}, "attack"), ({"attack": GaussianAugment()}, "attack"),
    ({"attack": PGD(steps=0)}, "steps"), ({"sides": ("ood", "x")}, "sides"), ({"sides": ()}, "sides"),
    ({"steps": 0}, "steps"), ({"steps": 2.5}, "steps"), ({"restarts": 0}, "restarts"),
    ({"step_size": -1.0}, "step_size"), ({"tpr": 1.5}, "tpr"), ({"random_state": "x"}, "random_state"),
])
def test_bad_arguments_are_rejected_naming_the_parameter(det, data, kw, name):
    with pytest.raises(ValueError, match=name):
        robust_ood_report(det, *data, **kw)


def test_bad_inputs_name_the_argument(det, data):
    with pytest.raises(ValueError, match="X_ood"):
        robust_ood_report(det, data[0], data[1] * 3.0)  # outside the input range
    with pytest.raises(ValueError, match="X_id"):
        robust_ood_report(det, data[0][:, :5], data[1])
    with pytest.raises(NotFittedError):
        robust_ood_report(AOEDetector(), *data)


def test_tabular_needs_explicit_eps(blobs):
    X, y = blobs
    d = AOEDetector(pretrain_epochs=1, epochs=1, outliers="uniform", random_state=0,
                    device="cpu").fit(X, y)
    with pytest.raises(ValueError, match="eps"):
        robust_ood_report(d, X[:20], X[:20] + 10)
    rep = robust_ood_report(d, X[:20], X[:20] * 0 + [0, 8.0], eps=(0.0, 1.0), steps=3,
                            random_state=0, warn=False)
    assert rep.auroc(1.0, "both") <= rep.auroc(0.0, "both")
    assert not [x for x in rep.diagnostics if x["kind"] == "large_eps"]  # no range: no check


def test_table_and_plot(sweep, tmp_path):
    table = sweep.table()
    assert table.count("\n") == 2 + 3 * 3 - 1 and "eps 0.3" in table
    with pytest.raises(KeyError, match="attacks"):
        sweep.auroc(0.5, "both")
    pytest.importorskip("matplotlib")
    from aoe_detect.plots import plot_robustness
    out = plot_robustness({"a": sweep, "b": sweep.rows}, str(tmp_path / "r.png"))
    assert (tmp_path / "r.png").stat().st_size > 1000 and out.endswith("r.png")
    with pytest.raises(TypeError, match="reports"):
        plot_robustness(3, str(tmp_path / "x.png"))
