"""One row type after the first step of ``fit`` (issue 21, item 1) and one owner for each
input rule (item 4): rows in memory (``TensorRows``) and rows of a Dataset (``DatasetView``)
answer the same interface with the same values, the same bad input breaks the same rule
(one message) in both forms, and ``fit``'s ``X`` takes one path downstream for both."""

import ast
import importlib.util
import pathlib
import warnings

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset

import aoe_detect
from aoe_detect import AOEDetector
from aoe_detect._fit_inputs import fit_inputs
from aoe_detect._loading import DatasetView, TensorRows, as_rows
from aoe_detect._validation import inspect_dataset

ROOT = pathlib.Path(aoe_detect.__file__).parent
RNG = np.random.RandomState(0)
X = RNG.normal(size=(53, 4)).astype(np.float32)
Y = RNG.randint(0, 3, 53)
IMG = RNG.rand(20, 1, 6, 6).astype(np.float32)


class Items(Dataset):
    def __init__(self, X, y=None):
        self.X, self.y = torch.as_tensor(X), y

    def __len__(self):
        return len(self.X)

    def __getitem__(self, i):
        return self.X[i] if self.y is None else (self.X[i], int(self.y[i]))


def _both(data=X):
    tensor = TensorRows(torch.from_numpy(data))
    view = DatasetView(Items(data), inspect_dataset(Items(data)))
    return tensor, view


def _cat(batches):
    return torch.cat([b[0] if isinstance(b, (tuple, list)) else b for b in batches])


def test_both_backends_answer_the_interface_with_the_same_rows():
    t, v = _both()
    pos = np.array([5, 0, 17, 52, 3])
    assert len(t) == len(v) == 53 and t.shape == v.shape == (53, 4)
    for a, b in ((t[2:9], v[2:9]), (t.view(pos)[:], v.view(pos)[:]), (t.head(7), v.head(7)),
                 (t.to_tensor(), v.to_tensor())):
        assert a.dtype == b.dtype == torch.float32
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    torch.testing.assert_close(t.view(pos).view([1, 3])[:], torch.from_numpy(X[[0, 52]]),
                               rtol=0, atol=0)
    # in-order batches for inference: the same rows in the same order
    torch.testing.assert_close(_cat(t.batches(8)) if not torch.is_tensor(t.batches(8))
                               else t.batches(8), _cat(v.batches(8)), rtol=0, atol=0)
    # statistics rows: every row (under the subset limit), no draw from rng
    rng_t, rng_v = np.random.RandomState(1), np.random.RandomState(1)
    torch.testing.assert_close(t.fit_subset(rng_t), v.fit_subset(rng_v), rtol=0, atol=0)
    assert rng_t.randint(1 << 30) == rng_v.randint(1 << 30)


def test_a_dataset_above_the_subset_limit_draws_a_bounded_subset():
    t, v = _both()
    a = v.fit_subset(np.random.RandomState(0), limit=10)
    assert a.shape == (10, 4)
    rows = {r.tobytes() for r in X}
    assert all(r.numpy().tobytes() in rows for r in a)
    assert t.fit_subset(np.random.RandomState(0), limit=10).shape == (53, 4)  # in memory: all


@pytest.mark.parametrize("world", [1, 2])
def test_training_batches_are_the_same_global_batches_for_both_backends(world):
    t, v = _both()
    y = torch.as_tensor(Y)
    for rank in range(world):
        bt = t.train_batches(16, y, rank, world)
        bv = v.train_batches(16, y, rank, world)
        assert len(bt) == len(bv) > 0
        for epoch in range(2):
            gt, gv = torch.Generator().manual_seed(epoch), torch.Generator().manual_seed(epoch)
            got_t, got_v = list(bt.epoch(gt)), list(bv.epoch(gv))
            assert len(got_t) == len(got_v) == len(bt)
            for (xa, ya, na), (xb, yb, nb) in zip(got_t, got_v):
                torch.testing.assert_close(xa, xb, rtol=0, atol=0)
                assert torch.equal(ya, yb) and na == nb


def test_as_rows_takes_a_tensor_as_rows_in_memory_and_keeps_rows():
    t, v = _both()
    assert as_rows(t) is t and as_rows(v) is v
    r = as_rows(torch.from_numpy(X))
    assert isinstance(r, TensorRows) and r.tensor.data_ptr() == torch.from_numpy(X).data_ptr()


def test_fit_inputs_gives_the_same_split_and_statistics_rows_for_both_forms():
    a = fit_inputs(X, Y, None, validation_fraction=0.2, seed=3)
    d = fit_inputs(Items(X, Y), None, None, validation_fraction=0.2, seed=3)
    assert isinstance(a.train_data, TensorRows) and isinstance(d.train_data, DatasetView)
    np.testing.assert_array_equal(a.train_idx, d.train_idx)
    np.testing.assert_array_equal(a.val_idx, d.val_idx)
    torch.testing.assert_close(a.X_train, d.X_train, rtol=0, atol=0)
    torch.testing.assert_close(a.X_val[:], d.X_val[:], rtol=0, atol=0)
    assert a.fitted == d.fitted == {"n_features_in_": 4, "input_shape_": (4,),
                                    "input_range_": None}


# ------------------------------------------------------------------ one rule, one message
def _error(fn):
    with pytest.raises(ValueError) as info:
        fn()
    return str(info.value)


def test_the_input_range_rule_is_one_rule_for_arrays_and_datasets():
    bad = IMG.copy()
    bad[7, 0, 2, 2], bad[0, 0, 0, 0] = 1.5, 0.0
    y = np.arange(20) % 2
    det = AOEDetector(epochs=1, pretrain_epochs=0, device="cpu", random_state=0)
    arr = _error(lambda: det.fit(bad, y))
    ds = _error(lambda: det.fit(Items(bad, y)))
    common = "has values in [0, 1.5], outside the declared input range [0.0, 1.0] (parameter `input_range`)"
    assert common in arr and common in ds
    assert "the first such sample is row 7" in arr.lower() and "item 7" in ds
    assert not hasattr(det, "module_")  # a failed fit changes nothing


def test_the_channels_last_rule_is_one_rule_for_arrays_and_datasets():
    last = RNG.rand(10, 6, 6, 3).astype(np.float32)
    y = np.arange(10) % 2
    det = AOEDetector(epochs=1, pretrain_epochs=0, device="cpu")
    arr = _error(lambda: det.fit(last, y))
    ds = _error(lambda: det.fit(Items(last, y)))
    assert "looks channels-last with shape (10, 6, 6, 3)" in arr and "transpose(0, 3, 1, 2)" in arr
    assert "looks channels-last with samples of shape (6, 6, 3)" in ds and "permute(2, 0, 1)" in ds


def test_the_outlier_row_rule_is_one_rule_for_arrays_and_datasets():
    y = np.full(53, -1)
    y[0] = 0
    det = AOEDetector(epochs=1, pretrain_epochs=0, device="cpu")
    assert _error(lambda: det.fit(X, y)) == _error(lambda: det.fit(Items(X, y)))


def test_input_rules_live_in_validation():
    """The row type and the fit-input path apply the rules of ``_validation``; the row
    type raises no ValueError of its own (only a TypeError for misuse of its interface)."""
    for name in ("_loading.py",):
        tree = ast.parse((ROOT / name).read_text())
        raised = {n.exc.func.id for n in ast.walk(tree)
                  if isinstance(n, ast.Raise) and isinstance(getattr(n, "exc", None), ast.Call)
                  and isinstance(n.exc.func, ast.Name)}
        assert raised <= {"TypeError"}, (name, raised)
    src = (ROOT / "_fit_inputs.py").read_text()
    for rule in ("def resolve_input_range", "def outlier_rows", "def check_two_classes",
                 "def check_input_range", "def inspect_dataset"):
        assert rule not in src and rule in (ROOT / "_validation.py").read_text()


# ------------------------------------------------------------------ one path through fit
def _fit_path_module():
    path = ROOT.parent / "benchmarks" / "fit_path.py"
    if not path.exists():
        pytest.skip("benchmarks/ is not installed with the package")
    spec = importlib.util.spec_from_file_location("fit_path_for_test", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_x_takes_one_path_through_fit_for_arrays_and_datasets():
    fp = _fit_path_module()
    Xb = np.r_[RNG.normal(0, 1, (60, 4)) + 3, RNG.normal(0, 1, (60, 4)) - 3].astype(np.float32)
    yb = np.r_[np.zeros(60, int), np.ones(60, int)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a, d = fp.x_path(Xb, yb), fp.x_path(fp._Rows(Xb, yb), None)
    for r in (a, d):
        assert r["recipe_passes"][0] == "_fit_inputs"
        assert len(r["recipe_passes"]) == len(set(r["recipe_passes"]))  # each module once
        assert r["input_return_trips"] == 0
    assert a["recipe_passes"] == d["recipe_passes"]
    assert a["downstream"] == d["downstream"]


def test_perturb_and_the_robust_report_take_a_dataset_like_score_samples():
    """score_samples and perturb share the checks: a Dataset is perturbed like its array."""
    from aoe_detect.robustness import robust_ood_report

    Xb = np.r_[RNG.normal(0, 1, (60, 4)) + 3, RNG.normal(0, 1, (60, 4)) - 3].astype(np.float32)
    yb = np.r_[np.zeros(60, int), np.ones(60, int)]
    det = AOEDetector(epochs=1, pretrain_epochs=1, device="cpu", random_state=0).fit(Xb, yb)
    a = det.perturb(Xb[:20], epsilon=0.1, attack="pgd", random_state=0)
    d = det.perturb(Items(Xb[:20]), epsilon=0.1, attack="pgd", random_state=0)
    np.testing.assert_array_equal(a, d)
    assert np.abs(a - Xb[:20]).max() <= 0.1 + 1e-6 and np.abs(a - Xb[:20]).max() > 0.05
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ra = robust_ood_report(det, Xb[:16], Xb[:16] * 4, eps=[0.1], sides=("ood",),
                               random_state=0)
        rd = robust_ood_report(det, Items(Xb[:16]), Items(Xb[:16] * 4), eps=[0.1],
                               sides=("ood",), random_state=0)
    key = lambda rep: [(r["attack"], r["eps"], r["side"], r["auroc"], r["fpr95"])  # noqa: E731
                       for r in rep.rows]
    assert key(ra) == key(rd) and len(ra.rows) >= 2
    with pytest.raises(ValueError, match="expects samples of shape"):
        det.perturb(Items(Xb[:5, :3]))
