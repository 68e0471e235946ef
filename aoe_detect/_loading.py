"""The row type of the detector: in memory (:class:`TensorRows`) or streamed from a map-style
Dataset (:class:`DatasetView`); Dataset loading (private; formerly ``aoe_detect.data``, which
remains as a deprecated alias).

``fit`` turns its data into rows once (:mod:`aoe_detect._fit_inputs`); scoring validates each
call's data and takes it as rows (:func:`scoring_view`, :func:`as_rows`). Everything downstream (the training loop, the
statistics, the score, the threshold) consumes rows through one interface and never asks
which backend it holds:

- ``len(rows)``, ``rows.shape`` (``(n, *sample_shape)``), ``rows[a:b]`` (those rows as a
  float32 tensor), ``rows.view(positions)`` (a sub-view of the same backend), ``rows.labels``;
- ``rows.to_tensor()`` / ``rows.head(n)`` (rows as a float32 tensor),
  ``rows.fit_subset(rng)`` (the rows statistics are fitted on: all rows in memory; a
  bounded random subset of at most :data:`MAX_FIT_SUBSET` rows of a Dataset);
- ``rows.batches(batch_size, ...)`` (in order, for inference) and
  ``rows.train_batches(batch_size, targets, ...)`` (the shuffled global batches of one
  training stage).

A Dataset's items are ``x`` or ``(x, y)`` (``x`` a tensor or array of one sample's shape,
``y`` an integer label, ``-1`` marking an outlier). They are streamed through
:class:`~torch.utils.data.DataLoader` objects (``num_workers`` worker processes, pinned
memory on CUDA), so the data never has to fit in memory. The input rules (first items, each
loaded batch: finite values, the input range, uint8 pixels) are those of
:mod:`aoe_detect._validation`, applied by :class:`Collate` with the index of the offending
item in the error.

- :class:`GlobalBatchSampler` yields the same global batches as the in-memory training loop
  (:func:`aoe_detect._torch_utils.index_batches` on the shared generator); under
  ``torch.distributed`` each rank takes every ``world``-th row of each batch, as
  :class:`~torch.utils.data.DistributedSampler` does. A process group of ``w`` ranks with
  ``batch_size=B`` therefore trains on exactly the global batches of a single process with
  ``B`` (see ``docs/scaling.md``).
- :class:`OutlierBatchSampler` streams outlier batches endlessly from epochs of a
  :class:`~torch.utils.data.DistributedSampler` (each rank its share).
- :func:`to_device` copies a CPU batch to CUDA through pinned memory without blocking.

Nothing here touches the global RNGs: batch order comes from the caller's
:class:`torch.Generator`, worker seeds from a generator seeded by the caller.
"""

from __future__ import annotations

import itertools

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler, Subset

from ._torch_utils import index_batches, pixels_to_unit, steps_per_epoch, to_device
from ._validation import (N_CHECK, DatasetInfo, check_batch, check_item_shapes, inspect_dataset,
                          is_pixels, item_label, item_tensor, split_item)

__all__ = ["is_dataset", "any_dataset", "inspect_dataset", "DatasetInfo", "TensorRows",
           "DatasetView", "as_rows", "Collate", "GlobalBatchSampler", "OutlierBatchSampler",
           "TrainBatches", "make_loader", "to_device", "scoring_view", "RowsDataset",
           "MAX_FIT_SUBSET", "N_CHECK"]

#: Largest number of ID samples loaded into memory during ``fit`` on a Dataset, to compute
#: the input standardisation, ``epsilon="auto"``, the automatic margins and to fit the
#: outlier source (a random subset, drawn with the fit's local generator).
MAX_FIT_SUBSET = 10_000


def is_dataset(obj) -> bool:
    """Whether ``obj`` is a torch ``Dataset`` (map-style or iterable)."""
    return isinstance(obj, Dataset)


def any_dataset(*objs) -> bool:
    return any(is_dataset(o) for o in objs)


def dataset_labels(dataset, name, num_workers=0):
    """All labels of a labelled dataset as an int64 array (each by :func:`item_label`).

    Uses the torchvision convention ``dataset.targets`` (also through ``Subset``) when
    present; otherwise one pass over the items (with ``num_workers`` loader workers).
    """
    t = _targets_attr(dataset)
    if t is not None and len(t) == len(dataset):
        return np.asarray([item_label(v, name, i) for i, v in enumerate(np.asarray(t).tolist())],
                          dtype=np.int64)
    loader = DataLoader(_LabelRows(dataset, name), batch_size=1024, num_workers=num_workers,
                        collate_fn=_collate_labels,
                        generator=torch.Generator().manual_seed(0))
    return np.concatenate([b for b in loader]) if len(dataset) else np.zeros(0, np.int64)


def _targets_attr(dataset):
    if isinstance(dataset, Subset):
        base = _targets_attr(dataset.dataset)
        return None if base is None else np.asarray(base)[np.asarray(dataset.indices)]
    t = getattr(dataset, "targets", None)
    if isinstance(t, torch.Tensor):
        t = t.numpy()
    return t if isinstance(t, (list, np.ndarray)) else None


class _LabelRows(Dataset):
    def __init__(self, dataset, name):
        self.dataset, self.name = dataset, name

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, j):
        _, y = split_item(self.dataset[j], self.name, j)
        return item_label(y, self.name, j)


def _collate_labels(ys):
    return np.asarray(ys, dtype=np.int64)


# ----------------------------------------------------------------------------- the row type
class TensorRows:
    """Rows held in memory: a float32 tensor ``(n, *sample_shape)`` (validated) and their
    labels (or None). The in-memory backend of the row type (see the module docstring)."""

    def __init__(self, tensor, labels=None, name="X"):
        self.tensor, self.labels, self.name = tensor, labels, name

    def __len__(self):
        return len(self.tensor)

    @property
    def shape(self):
        return tuple(self.tensor.shape)

    def __getitem__(self, rows):
        if not isinstance(rows, slice):
            raise TypeError("Rows support slices only; use view(positions) for rows.")
        return self.tensor[rows]

    def view(self, positions):
        positions = np.asarray(positions, dtype=np.int64)
        return TensorRows(self.tensor[torch.from_numpy(positions)],
                          None if self.labels is None else self.labels[positions], self.name)

    def to_tensor(self, num_workers=0, batch_size=512):
        return self.tensor

    def head(self, n, num_workers=0):
        return self.tensor[:n]

    def fit_subset(self, rng, limit=MAX_FIT_SUBSET, num_workers=0):
        """Every row: rows in memory need no subset (``rng`` is not drawn from)."""
        return self.tensor

    def batches(self, batch_size, num_workers=0, pin_memory=False):
        """The tensor itself: :func:`~aoe_detect._training.batched_outputs` cuts it."""
        return self.tensor

    def train_batches(self, batch_size, targets=None, rank=0, world=1, num_workers=0,
                      pin_memory=False, seed=0):
        return _TensorBatches(self.tensor, targets, batch_size, rank, world)


def as_rows(X):
    """``X`` as the row type: rows as they are, a float32 tensor (already validated, e.g. the
    statistics rows of ``fit`` or a checked scoring chunk) as rows in memory."""
    return X if isinstance(X, (TensorRows, DatasetView)) else TensorRows(X)


class DatasetView:
    """Rows ``indices`` of a map-style ``dataset`` (all rows by default).

    ``targets`` (int64, aligned to the rows) replaces the items' own labels in training
    batches; ``labels`` are the validated labels of the rows (or None).
    """

    def __init__(self, dataset, info, indices=None, labels=None, name="X", input_range=None):
        self.dataset, self.info, self.name, self.input_range = dataset, info, name, input_range
        # all rows: a range (no O(n) index array, so scoring memory stays flat)
        self.indices = (range(len(dataset)) if indices is None
                        else np.asarray(indices, dtype=np.int64))
        self.labels = labels

    def __len__(self):
        return len(self.indices)

    @property
    def shape(self):
        """Shape ``(n, *sample_shape)``, like an array's."""
        return (len(self.indices), *self.info.shape)

    def __getitem__(self, rows):
        """``view[a:b]``: those rows loaded as a float32 tensor (like slicing an array)."""
        if not isinstance(rows, slice):
            raise TypeError("DatasetView supports slices only; use view(positions) for rows.")
        return self.view(np.arange(len(self))[rows]).to_tensor()

    def view(self, positions):
        """The sub-view of rows ``positions`` (positions within this view)."""
        positions = np.asarray(positions, dtype=np.int64)
        rows = positions if isinstance(self.indices, range) else self.indices[positions]
        return DatasetView(self.dataset, self.info, rows,
                           None if self.labels is None else self.labels[positions],
                           self.name, self.input_range)

    def collate(self):
        return Collate(self.info, self.name, self.input_range)

    def to_tensor(self, num_workers=0, batch_size=512):
        """Load every row (in order) into one float32 tensor ``(n, *sample_shape)``."""
        out = torch.empty((len(self), *self.info.shape))
        pos = 0
        for x, _ in make_loader(self, _ChunkSampler(len(self), batch_size), num_workers):
            out[pos:pos + len(x)] = x
            pos += len(x)
        return out

    def fit_subset(self, rng, limit=MAX_FIT_SUBSET, num_workers=0):
        """All rows in order if there are at most ``limit``, else ``limit`` rows drawn with
        ``rng`` (a numpy RandomState) without replacement, kept in row order."""
        if len(self) <= limit:
            return self.to_tensor(num_workers)
        pick = np.sort(rng.choice(len(self), limit, replace=False))
        return self.view(pick).to_tensor(num_workers)

    def head(self, n, num_workers=0):
        """The first ``n`` rows as a float32 tensor."""
        return self.view(np.arange(n)).to_tensor(int(num_workers))

    def batches(self, batch_size, num_workers=0, pin_memory=False):
        """An in-order DataLoader of ``(x, y)`` batches."""
        return make_loader(self, _ChunkSampler(len(self), batch_size), num_workers,
                           pin_memory=pin_memory)

    def train_batches(self, batch_size, targets=None, rank=0, world=1, num_workers=0,
                      pin_memory=False, seed=0):
        return TrainBatches(self, targets, batch_size, rank, world, num_workers, pin_memory,
                            seed)


class RowsDataset(Dataset):
    """``(row, x, target)`` for the rows of a view; ``target`` from ``targets`` or -2.

    What :func:`make_loader` loads from; :class:`~aoe_detect.outliers.DatasetOutliers`
    indexes it directly to draw single items."""

    def __init__(self, view, targets=None):
        self.view, self.targets = view, targets

    def __len__(self):
        return len(self.view)

    def __getitem__(self, j):
        idx = int(self.view.indices[j])
        x, _ = split_item(self.view.dataset[idx], self.view.name, idx)
        t = -2 if self.targets is None else int(self.targets[j])
        return idx, x, t


class Collate:
    """Stack rows into a float32 batch ``(n, *sample_shape)`` (uint8 scaled to [0, 1]) and
    check it: same shapes, finite values, inside ``input_range``. Picklable (workers)."""

    def __init__(self, info, name, input_range=None):
        self.info, self.name, self.input_range = info, name, input_range

    def __call__(self, rows):
        idx = [r[0] for r in rows]
        xs = [item_tensor(r[1], self.name, i) for r, i in zip(rows, idx)]
        check_item_shapes(xs, self.info.raw_shape, self.name, idx)
        x = torch.stack(xs)
        if is_pixels(x.dtype == torch.uint8, self.info.shape):
            x = pixels_to_unit(x)
        elif x.dtype != torch.float32:
            x = x.to(torch.float32)
        x = x.reshape((len(xs), *self.info.shape))
        check_batch(x, self.name, self.input_range, idx)
        t = [r[2] for r in rows]
        y = None if t[0] == -2 else torch.as_tensor(t, dtype=torch.long)
        return x, y


# ----------------------------------------------------------------------------- samplers
class _ChunkSampler(Sampler):
    """Consecutive positions ``[0, n)`` in chunks of ``batch_size`` (scoring order)."""

    def __init__(self, n, batch_size, positions=None):
        self.n, self.batch_size = n, batch_size
        self.positions = positions

    def __len__(self):
        return (self.n + self.batch_size - 1) // self.batch_size

    def __iter__(self):
        for s in range(0, self.n, self.batch_size):
            chunk = range(s, min(s + self.batch_size, self.n))
            yield list(chunk) if self.positions is None else self.positions[s:s + self.batch_size].tolist()


class GlobalBatchSampler(Sampler):
    """Batches of row positions for one epoch: the global batches of the single-process loop
    (``index_batches(n, batch_size, generator)``), of which this rank takes every
    ``world``-th row, starting at ``rank`` -- the sharding of ``DistributedSampler``.

    The permutation is drawn from ``generator`` when iteration starts, so the batches are
    identical on every rank (same seed) and identical to in-memory training.
    """

    def __init__(self, n, batch_size, generator, rank=0, world=1):
        self.n, self.batch_size, self.generator = n, batch_size, generator
        self.rank, self.world = rank, world

    def __len__(self):
        return steps_per_epoch(self.n, self.batch_size, self.world)

    def __iter__(self):
        for b in index_batches(self.n, self.batch_size, self.generator, world=self.world):
            yield b[self.rank::self.world].tolist()


class OutlierBatchSampler(Sampler):
    """Endless batches of ``m`` indices into an outlier dataset of ``n`` items: successive
    epochs of a shuffled :class:`~torch.utils.data.DistributedSampler` (``seed``; epoch
    ``e`` uses ``seed + e``), i.e. this rank's share of each pass, without replacement
    within a pass."""

    def __init__(self, n, m, seed, rank=0, world=1):
        self.n, self.m = n, m
        self.sampler = DistributedSampler(range(n), num_replicas=world, rank=rank, shuffle=True,
                                          seed=seed, drop_last=False)

    def __iter__(self):
        buf = []
        for epoch in itertools.count():
            self.sampler.set_epoch(epoch)
            buf.extend(iter(self.sampler))
            while len(buf) >= self.m:
                yield buf[:self.m]
                buf = buf[self.m:]


def make_loader(view, batch_sampler, num_workers=0, pin_memory=False, targets=None, seed=0,
                persistent=False):
    """A DataLoader over ``view`` yielding ``(x, y)`` float32/int64 CPU batches.

    Worker seeds come from a generator seeded with ``seed`` (the global RNG is not used).
    ``persistent`` keeps the workers alive between epochs.
    """
    return DataLoader(RowsDataset(view, targets), batch_sampler=batch_sampler,
                      num_workers=num_workers, collate_fn=view.collate(), pin_memory=pin_memory,
                      generator=torch.Generator().manual_seed(int(seed)),
                      persistent_workers=bool(persistent and num_workers > 0))


class _TensorBatches:
    """The training batches of rows in memory: each epoch the global batches of
    :func:`~aoe_detect._torch_utils.index_batches` drawn from the stage's generator, of
    which this rank takes every ``world``-th row; yields ``(x, y, n_global)``."""

    def __init__(self, X, y, batch_size, rank=0, world=1):
        self.X, self.y, self.batch_size, self.rank, self.world = X, y, batch_size, rank, world

    def __len__(self):
        return steps_per_epoch(len(self.X), self.batch_size, self.world)

    def epoch(self, generator):
        for b in index_batches(len(self.X), self.batch_size, generator, world=self.world):
            idx = b[self.rank::self.world]
            yield self.X[idx], (None if self.y is None else self.y[idx]), len(b)


class TrainBatches:
    """The training batches of a :class:`DatasetView` (with ``y`` the int64 targets aligned
    to its rows, or None): the same global batches as :class:`_TensorBatches`
    (:class:`GlobalBatchSampler`), loaded by one DataLoader per stage whose workers persist
    across epochs. Each epoch yields ``(x, y, n_global)``: this rank's share of a global
    batch of ``n_global`` rows."""

    def __init__(self, X, y, batch_size, rank=0, world=1, num_workers=0, pin_memory=False,
                 seed=0):
        self.X, self.y, self.batch_size = X, y, batch_size
        self.rank, self.world = rank, world
        self.num_workers, self.pin_memory, self.seed = num_workers, pin_memory, seed
        self._loader, self._sampler = None, None

    def __len__(self):
        return steps_per_epoch(len(self.X), self.batch_size, self.world)

    def epoch(self, generator):
        if self._loader is None:  # one loader per stage: workers persist across epochs
            self._sampler = GlobalBatchSampler(len(self.X), self.batch_size, generator,
                                               self.rank, self.world)
            targets = None if self.y is None else np.asarray(self.y)
            self._loader = make_loader(self.X, self._sampler, self.num_workers, self.pin_memory,
                                       targets, seed=self.seed, persistent=True)
        self._sampler.generator = generator
        # global batch sizes (the same on every rank): full batches, then the kept rest
        n, b = len(self.X), self.batch_size
        sizes = [b] * (n // b) + [n % b] * (len(self) - n // b)
        for step, (x, y) in enumerate(self._loader):
            yield x, y, sizes[step]


def scoring_view(dataset, input_shape, input_range, name="X"):
    """Validate a Dataset passed to ``score_samples`` & co.; return its view."""
    info = inspect_dataset(dataset, name, sample_shape=input_shape)
    return DatasetView(dataset, info, name=name, input_range=input_range)
