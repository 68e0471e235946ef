"""Loading: map-style torch Datasets as inputs, batch samplers, transfers (private; formerly
``aoe_detect.data``, which remains as a deprecated alias).

:class:`~aoe_detect.AOEDetector` accepts, besides arrays, map-style
:class:`torch.utils.data.Dataset` objects whose items are ``x`` or ``(x, y)`` (``x`` a tensor
or array of one sample's shape, ``y`` an integer label, ``-1`` marking an outlier). They are
streamed through :class:`~torch.utils.data.DataLoader` objects (``num_workers`` worker
processes, pinned memory on CUDA), so the data never has to fit in memory:

- :func:`inspect_dataset` validates the first items (type, dtype, shape, finite values);
  every later batch is checked for NaN/inf and the input range by :class:`Collate`, with the
  index of the offending item in the error.
- :class:`DatasetView` is "these rows of that dataset" (the training rows, the held-out
  validation rows, the outlier rows), with the labels aligned to the rows.
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
import numbers

import numpy as np
import torch
from torch.utils.data import (DataLoader, Dataset, DistributedSampler, IterableDataset, Sampler,
                              Subset)

from ._torch_utils import index_batches, pixels_to_unit, steps_per_epoch, to_device

__all__ = ["is_dataset", "any_dataset", "inspect_dataset", "DatasetInfo", "DatasetView", "Collate",
           "GlobalBatchSampler", "OutlierBatchSampler", "TrainBatches", "make_loader", "to_device",
           "scoring_view", "RowsDataset", "MAX_FIT_SUBSET"]

#: Largest number of ID samples loaded into memory during ``fit`` on a Dataset, to compute
#: the input standardisation, ``epsilon="auto"``, the automatic margins and to fit the
#: outlier source (a random subset, drawn with the fit's local generator).
MAX_FIT_SUBSET = 10_000
#: Items checked up front (type, dtype, shape, finite values).
N_CHECK = 8


def is_dataset(obj) -> bool:
    """Whether ``obj`` is a torch ``Dataset`` (map-style or iterable)."""
    return isinstance(obj, Dataset)


def any_dataset(*objs) -> bool:
    return any(is_dataset(o) for o in objs)


# ----------------------------------------------------------------------------- items
def _split_item(item, name, index):
    """``x`` or ``(x, y)`` -> ``(x, y or None)``; a 1-tuple ``(x,)`` (TensorDataset) is ``x``."""
    if isinstance(item, (tuple, list)):
        if len(item) == 2:
            return item[0], item[1]
        if len(item) == 1:
            return item[0], None
        raise ValueError(f"`{name}` items must be x or (x, y); item {index} is a "
                         f"{type(item).__name__} of length {len(item)}.")
    if isinstance(item, dict):
        raise ValueError(f"`{name}` items must be x or (x, y), not dicts (item {index} has keys "
                         f"{sorted(item)[:5]}); wrap the dataset to return (image, label).")
    return item, None


def _as_tensor(x, name, index):
    if isinstance(x, torch.Tensor):
        t = x.detach()
        if t.device.type != "cpu":
            t = t.cpu()
    elif isinstance(x, np.ndarray):
        t = torch.from_numpy(np.ascontiguousarray(x))
    else:
        raise TypeError(f"`{name}` item {index} holds a {type(x).__name__}; samples must be torch "
                        "tensors or numpy arrays (for PIL images add torchvision's "
                        "transforms.ToTensor() or PILToTensor()).")
    if t.is_complex():
        raise ValueError(f"Complex data not supported: `{name}` item {index} has dtype {t.dtype}.")
    if t.dtype == torch.bool:
        t = t.to(torch.uint8)
    return t


def _label(y, name, index):
    if isinstance(y, torch.Tensor):
        if y.numel() != 1:
            raise ValueError(f"`{name}` item {index} has a label of shape {tuple(y.shape)}; "
                             "labels must be scalars (class index, -1 for an outlier).")
        y = y.item()
    elif isinstance(y, np.ndarray):
        if y.size != 1:
            raise ValueError(f"`{name}` item {index} has a label of shape {y.shape}; labels must "
                             "be scalars.")
        y = y.item()
    if isinstance(y, bool) or not isinstance(y, numbers.Real) or (
            isinstance(y, float) and (not np.isfinite(y) or y != round(y))):
        raise ValueError(f"`{name}` item {index} has label {y!r}; labels must be integer class "
                         "indices (-1 marks an outlier).")
    return int(y)


def _sample_shape(raw_shape, name):
    """Shape of one raw sample -> the channels-first sample shape the backbone sees."""
    if len(raw_shape) == 1:
        return tuple(raw_shape)
    if len(raw_shape) == 2:
        return (1, *raw_shape)
    if len(raw_shape) == 3:
        if raw_shape[-1] in (1, 3, 4) and raw_shape[0] not in (1, 3, 4):
            raise ValueError(f"`{name}` yields channels-last samples of shape {tuple(raw_shape)}; "
                             "samples must be (c, h, w) or (h, w) (use transforms.ToTensor() or "
                             "x.permute(2, 0, 1)).")
        return tuple(raw_shape)
    raise ValueError(f"`{name}` yields samples of shape {tuple(raw_shape)}; expected (d,), (h, w) "
                     "or (c, h, w).")


class DatasetInfo:
    """What :func:`inspect_dataset` learned from the first items."""

    def __init__(self, shape, raw_shape, labelled, uint8):
        self.shape, self.raw_shape, self.labelled, self.uint8 = shape, raw_shape, labelled, uint8

    def __repr__(self):
        return (f"DatasetInfo(shape={self.shape}, labelled={self.labelled}, "
                f"uint8={self.uint8})")


def inspect_dataset(dataset, name="X", sample_shape=None, min_samples=1):
    """Validate the first items of a map-style dataset.

    Checks the item structure (``x`` or ``(x, y)``), that ``x`` is a numeric tensor/array
    of a supported shape with finite values, and (``sample_shape`` given) that the shape
    matches. Later items are checked batch by batch while they are loaded.

    Returns
    -------
    DatasetInfo
        ``shape`` (channels-first, as the backbone sees it), ``labelled`` and ``uint8``
        (pixels scaled from [0, 255] to [0, 1]).
    """
    if isinstance(dataset, IterableDataset):
        raise TypeError(f"`{name}` is an IterableDataset; only map-style datasets (with "
                        "__getitem__ and __len__) are supported, so that rows can be split, "
                        "sharded across processes and scored in order.")
    try:
        n = len(dataset)
    except TypeError:
        raise TypeError(f"`{name}` is a Dataset without __len__; map-style datasets with "
                        "__len__ are required.") from None
    if n < min_samples:
        raise ValueError(f"`{name}` has {n} item(s); at least {min_samples} are needed.")
    raw_shape = labelled = uint8 = None
    for i in range(min(N_CHECK, n)):
        x, y = _split_item(dataset[i], name, i)
        t = _as_tensor(x, name, i)
        if labelled is None:
            labelled = y is not None
            raw_shape, uint8 = tuple(t.shape), t.dtype == torch.uint8
            shape = _sample_shape(raw_shape, name)
        elif labelled != (y is not None):
            raise ValueError(f"`{name}` mixes items with and without labels (item {i}).")
        if tuple(t.shape) != raw_shape:
            raise ValueError(f"`{name}` item {i} has shape {tuple(t.shape)}, item 0 has "
                             f"{raw_shape}; all samples must have the same shape.")
        if (t.dtype == torch.uint8) != uint8:
            raise ValueError(f"`{name}` mixes uint8 and non-uint8 samples (item {i} is {t.dtype}).")
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise ValueError(f"`{name}` item {i} contains NaN or infinity.")
        if y is not None:
            _label(y, name, i)
    if sample_shape is not None and tuple(shape) != tuple(sample_shape):
        raise ValueError(f"`{name}` has samples of shape {tuple(shape)}, but the detector "
                         f"expects samples of shape {tuple(sample_shape)} (those of the ID data).")
    return DatasetInfo(shape, raw_shape, labelled, uint8)


def dataset_labels(dataset, info, name, num_workers=0):
    """All labels of a labelled dataset as an int64 array.

    Uses the torchvision convention ``dataset.targets`` (also through ``Subset``) when
    present; otherwise one pass over the items (with ``num_workers`` loader workers).
    """
    t = _targets_attr(dataset)
    if t is not None and len(t) == len(dataset):
        return np.asarray([_label(v, name, i) for i, v in enumerate(np.asarray(t).tolist())],
                          dtype=np.int64)
    view = DatasetView(dataset, info, name=name)
    loader = DataLoader(_LabelRows(view), batch_size=1024, num_workers=num_workers,
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
    def __init__(self, view):
        self.view = view

    def __len__(self):
        return len(self.view)

    def __getitem__(self, j):
        _, y = _split_item(self.view.dataset[int(self.view.indices[j])], self.view.name, j)
        return _label(y, self.view.name, int(self.view.indices[j]))


def _collate_labels(ys):
    return np.asarray(ys, dtype=np.int64)


# ----------------------------------------------------------------------------- views
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
        x, _ = _split_item(self.view.dataset[idx], self.view.name, idx)
        t = -2 if self.targets is None else int(self.targets[j])
        return idx, x, t


class Collate:
    """Stack rows into a float32 batch ``(n, *sample_shape)`` (uint8 scaled to [0, 1]) and
    check it: same shapes, finite values, inside ``input_range``. Picklable (workers)."""

    def __init__(self, info, name, input_range=None):
        self.info, self.name, self.input_range = info, name, input_range

    def __call__(self, rows):
        idx = [r[0] for r in rows]
        xs = [_as_tensor(r[1], self.name, i) for r, i in zip(rows, idx)]
        raw = self.info.raw_shape
        for t, i in zip(xs, idx):
            if tuple(t.shape) != raw:
                raise ValueError(f"`{self.name}` item {i} has shape {tuple(t.shape)}; the first "
                                 f"items have {raw}. All samples must have the same shape.")
        x = torch.stack(xs)
        if x.dtype == torch.uint8 and len(self.info.shape) == 3:  # only images are pixels
            x = pixels_to_unit(x)
        elif x.dtype != torch.float32:
            x = x.to(torch.float32)
        x = x.reshape((len(xs), *self.info.shape))
        if x.numel():
            lo, hi = torch.aminmax(x)
            lo, hi = float(lo), float(hi)
            if not (np.isfinite(lo) and np.isfinite(hi)):
                bad = (~torch.isfinite(x.reshape(len(xs), -1)).all(1)).nonzero().flatten()
                raise ValueError(f"`{self.name}` item {idx[int(bad[0])]} contains NaN or infinity.")
            r = self.input_range
            if r is not None and (lo < r[0] - 1e-6 or hi > r[1] + 1e-6):
                flat = x.reshape(len(xs), -1)
                bad = ((flat < r[0] - 1e-6) | (flat > r[1] + 1e-6)).any(1).nonzero().flatten()
                raise ValueError(
                    f"`{self.name}` item {idx[int(bad[0])]} has values outside the declared input "
                    f"range [{r[0]}, {r[1]}] (batch range [{lo:.4g}, {hi:.4g}]; parameter "
                    "`input_range`). Scale images to [0, 1] (uint8 is scaled automatically), or "
                    "set input_range=None or to the real range.")
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


class TrainBatches:
    """The ID training batches of one process for ``train_epoch``.

    ``X`` is a float32 tensor (with labels ``y`` or None) or a :class:`DatasetView`
    (with ``y`` the int64 targets aligned to its rows, or None). Each epoch yields
    ``(x, y, n_global)``: this rank's share of a global batch of ``n_global`` rows.
    """

    def __init__(self, X, y, batch_size, rank=0, world=1, num_workers=0, pin_memory=False,
                 seed=0):
        self.X, self.y, self.batch_size = X, y, batch_size
        self.rank, self.world = rank, world
        self.num_workers, self.pin_memory, self.seed = num_workers, pin_memory, seed
        self._loader, self._sampler = None, None

    def __len__(self):
        return steps_per_epoch(len(self.X), self.batch_size, self.world)

    def epoch(self, generator):
        if isinstance(self.X, torch.Tensor):
            for b in index_batches(len(self.X), self.batch_size, generator, world=self.world):
                idx = b[self.rank::self.world]
                yield self.X[idx], (None if self.y is None else self.y[idx]), len(b)
            return
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
