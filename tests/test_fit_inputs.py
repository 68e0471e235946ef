"""The one fit-input path (aoe_detect._fit_inputs): arrays, tensors and Datasets -> FitInputs."""

import dataclasses

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset, TensorDataset

from aoe_detect import AOEDetector
from aoe_detect.runtime import Runtime
from aoe_detect._fit_inputs import (FitInputs, build_source, input_params,
                                    prepare_fit_inputs, split_validation)
from aoe_detect._fit_steps import fit_source
from aoe_detect._loading import DatasetView, TensorRows
from aoe_detect.outliers import ArrayOutliers, DatasetOutliers, Mixture

RNG = np.random.RandomState(0)
X = RNG.normal(size=(40, 3))
Y = np.r_[np.zeros(20, int), np.ones(20, int)]
IMG = RNG.randint(0, 256, size=(12, 8, 8)).astype(np.uint8)


class Items(Dataset):
    """A map-style Dataset yielding ``(x, y)`` (or ``x`` when ``y`` is None)."""

    def __init__(self, X, y=None):
        self.X, self.y = torch.as_tensor(X, dtype=torch.float32), y

    def __len__(self):
        return len(self.X)

    def __getitem__(self, i):
        return self.X[i] if self.y is None else (self.X[i], int(self.y[i]))


def test_arrays_with_labels():
    inp = prepare_fit_inputs(X, Y)
    assert isinstance(inp, FitInputs)
    assert isinstance(inp.X, TensorRows)  # the row type, in memory
    assert inp.X.to_tensor().dtype == torch.float32 and inp.X.shape == (40, 3)
    np.testing.assert_array_equal(inp.labels, Y)
    assert inp.sample_shape == (3,) and inp.input_range is None
    assert inp.n_features_in == 3 and inp.feature_names_in is None
    assert inp.outliers is None and inp.source_array is None
    assert inp.train_idx is None and inp.X_train is None  # no split yet
    assert inp.fitted_attributes() == {"n_features_in_": 3, "input_shape_": (3,),
                                       "input_range_": None}


def test_outlier_rows_of_y_and_x_outliers_are_collected():
    y = Y.copy()
    y[:5] = -1
    extra = RNG.normal(size=(7, 3))
    inp = prepare_fit_inputs(X, y, X_outliers=extra)
    assert len(inp.X) == 35 and (inp.labels >= 0).all()
    assert isinstance(inp.outliers, np.ndarray) and inp.outliers.shape == (12, 3)
    np.testing.assert_array_equal(inp.outliers[:5], X[:5].astype(np.float32))
    np.testing.assert_array_equal(inp.outliers[5:], extra.astype(np.float32))


def test_label_free_second_argument_is_outliers():
    out = RNG.normal(size=(9, 3))
    inp = prepare_fit_inputs(X, out)
    assert inp.labels is None and inp.outliers.shape == (9, 3)
    with pytest.raises(ValueError, match="Ambiguous call"):
        prepare_fit_inputs(X, out, X_outliers=out)


def test_uint8_images_are_scaled_and_get_the_unit_range():
    inp = prepare_fit_inputs(IMG, np.arange(12) % 2)
    assert inp.sample_shape == (1, 8, 8) and inp.input_range == (0.0, 1.0)
    assert inp.n_features_in == 1 and inp.X.to_tensor().max() <= 1.0
    np.testing.assert_array_equal(inp.X[:][:, 0].numpy(), IMG.astype(np.float32) / np.float32(255))


def test_tensors_give_the_same_inputs_as_arrays():
    a = prepare_fit_inputs(X, Y)
    t = prepare_fit_inputs(torch.from_numpy(X), torch.from_numpy(Y))
    np.testing.assert_array_equal(a.X[:].numpy(), t.X[:].numpy())
    np.testing.assert_array_equal(a.labels, t.labels)


def test_datasets_stay_views_with_labels_from_their_items():
    y = Y.copy()
    y[-3:] = -1
    inp = prepare_fit_inputs(Items(X, y))
    assert isinstance(inp.X, DatasetView) and len(inp.X) == 37
    np.testing.assert_array_equal(inp.labels, y[:-3])
    assert inp.sample_shape == (3,) and inp.n_features_in == 3 and inp.feature_names_in is None
    assert isinstance(inp.outliers, DatasetView) and len(inp.outliers) == 3
    assert inp.outliers.name == "X_outliers"


def test_dataset_outliers_next_to_array_outliers_become_a_mixture():
    out_ds = TensorDataset(torch.randn(6, 3))
    inp = prepare_fit_inputs(X, Y, X_outliers=out_ds)
    assert isinstance(inp.X, TensorRows) and isinstance(inp.outliers, DatasetView)
    y = Y.copy()
    y[:4] = -1
    mixed = prepare_fit_inputs(X, y, X_outliers=out_ds)
    assert isinstance(mixed.outliers, Mixture)
    assert list(mixed.outliers.weights) == [4, 6]  # the 4 outlier rows of y, the 6 Dataset items
    with pytest.raises(ValueError, match="Ambiguous call"):
        prepare_fit_inputs(X, out_ds, X_outliers=out_ds)


def test_the_outliers_parameter_as_an_array_is_validated_like_x_outliers():
    arr = RNG.normal(size=(5, 3))
    inp = prepare_fit_inputs(X, Y, outliers=arr)
    assert inp.source_array.dtype == np.float32 and inp.source_array.shape == (5, 3)
    with pytest.raises(ValueError, match="`outliers` has samples of shape"):
        prepare_fit_inputs(X, Y, outliers=RNG.normal(size=(5, 4)))


def test_one_class_is_refused_for_a_built_backbone_only():
    with pytest.raises(ValueError, match="only one class"):
        prepare_fit_inputs(X, np.zeros(40, int))
    inp = prepare_fit_inputs(X, np.zeros(40, int), backbone_is_name=False)
    assert set(inp.labels) == {0}


def test_input_params_reads_the_estimator_and_sets_nothing():
    det = AOEDetector(outlier_label="out", input_range=(-10.0, 10.0),
                      runtime=Runtime(num_workers=0))
    before = dict(det.__dict__)
    p = input_params(det)
    assert p["outlier_label"] == "out" and p["input_range"] == (-10.0, 10.0)
    assert p["backbone_is_name"] and p["estimator_name"] == "AOEDetector"
    inp = prepare_fit_inputs(X, np.where(Y == 0, "a", "b"), **p)
    assert inp.input_range == (-10.0, 10.0) and inp.labels.dtype.kind == "U"
    assert det.__dict__ == before  # only the estimator's fit sets attributes


@pytest.mark.parametrize("fraction, n_val", [(0.1, 4), (0.0, 0), (0.5, 20), (0.99, 38)])
def test_validation_split_sizes(fraction, n_val):
    """round(fraction * n) rows, at least 1 and at most n - 2 (label-free: nothing moves)."""
    inp = split_validation(prepare_fit_inputs(X), fraction, np.random.RandomState(0))
    assert len(inp.val_idx) == n_val and len(inp.train_idx) == 40 - n_val
    assert sorted(np.r_[inp.val_idx, inp.train_idx].tolist()) == list(range(40))
    assert inp.X_train.shape == (40 - n_val, 3) and inp.train_data.to_tensor() is inp.X_train
    if n_val:
        np.testing.assert_array_equal(inp.X_val[:].numpy(), X[inp.val_idx].astype(np.float32))
    else:
        assert inp.X_val is inp.train_data  # nothing held out: the training rows
    assert inp.train_labels is None


def test_validation_split_keeps_every_class_in_training():
    y = np.r_[np.zeros(38, int), [1, 1]]
    for seed in range(10):
        inp = split_validation(prepare_fit_inputs(X, y), 0.5, np.random.RandomState(seed))
        assert set(inp.train_labels) == {0, 1}
        np.testing.assert_array_equal(inp.train_labels, y[inp.train_idx])
    # 38 of 40 held out would leave class 1 (or 0) without a training row: one row moves back
    inp = split_validation(prepare_fit_inputs(X, Y), 0.99, np.random.RandomState(0))
    assert len(inp.val_idx) == 37 and set(inp.train_labels) == {0, 1}


def test_validation_split_of_a_dataset_keeps_views():
    inp = split_validation(prepare_fit_inputs(Items(X, Y)), 0.25, np.random.RandomState(0))
    assert isinstance(inp.train_data, DatasetView) and isinstance(inp.X_val, DatasetView)
    assert len(inp.train_data) == 30 and len(inp.X_val) == 10
    # fewer rows than the fit-subset limit: the statistics rows are every training row
    assert isinstance(inp.X_train, torch.Tensor) and inp.X_train.shape == (30, 3)
    array = split_validation(prepare_fit_inputs(X, Y), 0.25, np.random.RandomState(0))
    np.testing.assert_array_equal(inp.train_idx, array.train_idx)
    np.testing.assert_array_equal(inp.X_train.numpy(), array.X_train.numpy())


def test_outlier_source_from_the_inputs_or_the_parameter():
    gen = torch.Generator().manual_seed(0)
    inp = split_validation(prepare_fit_inputs(X, Y, X_outliers=RNG.normal(size=(6, 3))), 0.1,
                           np.random.RandomState(0))
    assert isinstance(inp.source, ArrayOutliers)  # built once, with the inputs
    assert fit_source(inp.source, inp.X_train, inp.sample_shape, gen) is inp.source
    assert isinstance(build_source(inp, "default"), ArrayOutliers)
    with pytest.warns(UserWarning, match="outliers=None"):
        assert build_source(inp, None) is None
    plain = dataclasses.replace(inp, outliers=None)
    assert build_source(plain, None) is None
    assert type(build_source(plain, "uniform")).__name__ == "UniformNoise"
    ds = split_validation(prepare_fit_inputs(X, Y, X_outliers=TensorDataset(torch.randn(6, 3))),
                          0.1, np.random.RandomState(0))
    assert isinstance(ds.source, DatasetOutliers)
    assert fit_source(None, inp.X_train, inp.sample_shape, gen) is None


def test_fit_sets_what_the_inputs_describe(blobs):
    Xb, yb = blobs
    det = AOEDetector(epochs=1, pretrain_epochs=1, outliers="uniform", ood_score="energy",
                      random_state=0, device="cpu")
    det.fit(Xb, yb)
    assert det.n_features_in_ == 2 and det.input_shape_ == (2,) and det.input_range_ is None
    assert not hasattr(det, "feature_names_in_")
    assert len(det.validation_scores_) == round(0.1 * len(Xb))


@pytest.mark.parametrize("as_dataset", [False, True], ids=["array", "dataset"])
def test_the_outlier_row_rule_is_the_same_for_arrays_and_datasets(as_dataset):
    """One rule in one place: the Dataset path used to hard-code -1 in its message."""
    Xs = RNG.normal(size=(6, 3)).astype(np.float32)
    data = TensorDataset(torch.from_numpy(Xs)) if as_dataset else Xs
    with pytest.raises(ValueError, match=r"All rows of `y` are 'out' \(outliers\)"):
        prepare_fit_inputs(data, np.array(["out"] * 6), outlier_label="out")
    y = np.array(["a"] + ["out"] * 5)
    with pytest.raises(ValueError, match=r"Only 1 in-distribution row\(s\) in X; at least 2"):
        prepare_fit_inputs(data, y, outlier_label="out")
    inp = prepare_fit_inputs(data, np.array(["a", "b", "a", "out", "b", "out"]), outlier_label="out")
    assert len(inp.X) == 4 and list(inp.labels) == ["a", "b", "a", "b"]
