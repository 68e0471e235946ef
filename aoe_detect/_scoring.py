"""Scoring and prediction of a fitted :class:`~aoe_detect.AOEDetector`.

- :class:`Rows` applies a function of the logits (or of a score head's output) to every row
  of a float32 tensor or Dataset view, batch by batch, with the detector's device, batch
  size, ``compile``, ``amp`` and ``channels_last``; rows whose float32 result overflowed are
  recomputed in float64.
- :func:`fit_scorer` fits the statistics of ``ood_score`` after training.
- :class:`PredictMixin` holds the public methods of a fitted detector (``score_samples``,
  ``decision_function``, ``predict``, ``predict_proba``, ``predict_class``, ``score``,
  ``recalibrate``, ``perturb``); every one validates its input once and streams it in
  chunks (:data:`SCORE_CHUNK_ROWS`) or through a DataLoader.

Signs: scores are higher = more in-distribution; ``predict`` is +1 for ID and -1 for OOD.
"""

from __future__ import annotations

import copy
import numbers
from dataclasses import dataclass

import numpy as np
import scipy.sparse
import torch
from sklearn.utils.validation import check_is_fitted

from . import _state
from . import distributed as _distributed
from ._loading import DatasetView, _ChunkSampler, is_dataset, make_loader, scoring_view
from ._fit_steps import seed_from
from ._training import amp_dtype, batched_outputs, compiled
from ._validation import check_epsilon, check_input_range, check_inputs
from .attacks import attack_radius, resolve_attack
from .exceptions import NoClassesError
from .losses import energy
from .metrics import auroc_scorer
from .model_selection import ood_mask
from .scores import LogitsAndFeatures, ScoreHead, SumScore, build_scorer

__all__ = ["SCORE_CHUNK_ROWS", "Rows", "infer_batch", "fit_scorer", "PredictMixin"]

#: Arrays longer than this are validated, converted and scored in chunks of about this
#: many rows (whole scoring batches), so scoring memory does not grow with the number of
#: inputs: the float64/float32 conversions of a 1024-row chunk of 28x28 images take ~13 MB
#: (small buffers also keep the allocator from fragmenting its heap over many chunks).
SCORE_CHUNK_ROWS = 1024


def infer_batch(batch_size):
    """The scoring batch: ``batch_size``, at least 256 (an invalid value set after fit is
    reported by the next fit; scoring uses 256 meanwhile)."""
    ok = isinstance(batch_size, numbers.Integral) and not isinstance(batch_size, bool) \
        and batch_size >= 1
    return max(int(batch_size), 256) if ok else 256


def use_channels_last(option, sample_shape, device):
    """``channels_last`` resolved: only images; ``"auto"`` = on CUDA."""
    if len(sample_shape) != 3:
        return False
    return device.type == "cuda" if option == "auto" else bool(option)


class _Float64(torch.nn.Module):
    """A float64 copy of a score head (for rows whose float32 score overflowed)."""

    def __init__(self, model):
        super().__init__()
        self.model = copy.deepcopy(model).double()

    def forward(self, x):
        return self.model(x.double())


@dataclass
class Rows:
    """Batched evaluation of ``module`` (or another model, e.g. a score head) on rows."""

    module: torch.nn.Module
    device: torch.device
    batch_size: int = 256
    num_workers: int = 0
    compile: object = False
    amp: object = False
    channels_last: bool = False

    def batches(self, X):
        """A float32 tensor as is; a Dataset view as an in-order DataLoader."""
        if not isinstance(X, DatasetView):
            return X
        return make_loader(X, _ChunkSampler(len(X), self.batch_size), self.num_workers,
                           pin_memory=self.device.type == "cuda")

    def apply(self, X, fn, dtype, tail=(), model=None):
        """``fn(logits)`` of every row of ``X`` (tensor or Dataset view), written batch by
        batch into a preallocated ``(n, *tail)`` array of ``dtype``. ``model``: another
        module than ``module`` (a score head; not compiled)."""
        dev = self.device
        out = batched_outputs(
            compiled(self.module, self.compile) if model is None else model, self.batches(X),
            fn, batch_size=self.batch_size, device=dev,
            autocast_dtype=amp_dtype(self.amp, dev),
            out=np.empty((len(X), *tail), dtype=dtype), channels_last=self.channels_last)
        return self._recompute_overflow(X, out, fn, tail, model)

    def _recompute_overflow(self, X, out, fn, tail, model=None):
        """Rows whose float32 result overflowed (e.g. ``logits / T`` beyond 3.4e38 for huge
        finite inputs) are recomputed with float64 logits, so finite inputs never give
        NaN/inf scores; all other rows keep their bits."""
        if out.dtype.kind != "f" or np.isfinite(out).all():
            return out
        flat = out.reshape(len(out), -1)
        bad = np.flatnonzero(~np.isfinite(flat).all(1))
        rows = X.view(bad) if isinstance(X, DatasetView) else X[torch.from_numpy(bad)]
        out[bad] = batched_outputs(
            self.module if model is None else _Float64(model), self.batches(rows),
            lambda logits: fn(logits.double()), batch_size=self.batch_size, device=self.device,
            out=np.empty((len(bad), *tail), dtype=out.dtype))
        return out

    def energy_scores(self, X, temperature):
        """``-E(x)`` of every row as float64 numpy."""
        return self.apply(X, lambda logits: -energy(logits, temperature), np.float64)


def _probe_widths(module, head, X_train, device):
    """``(n_logits, n_logits + n_features)`` from a forward pass on two training rows."""
    with torch.inference_mode():
        was = module.training
        module.eval()
        try:
            out = head(X_train[:2].to(device))
        finally:
            module.train(was)
    return out.shape[1] - head._layer_width, int(out.shape[1])


def fit_scorer(rows, X_train, y_train, X_val, generator, *, ood_score, temperature, knn_k,
               knn_max_samples, feature_layer, has_classes):
    """The fitted score of ``ood_score``: statistics of the features of the fine-tuned
    ``rows.module`` on the ID training rows; a sum of scores standardised on the held-out
    rows. Labels of the rows: ``y_train`` unless ``X_train`` is a subset of a streamed
    Dataset; then (and for a label-free fit of a pretrained module) the backbone's
    predictions (a Dataset's fit subset is all its rows, in order, when it has few enough)."""
    scorer = build_scorer(ood_score, temperature=temperature, knn_k=knn_k,
                          knn_max_samples=knn_max_samples)
    if scorer.needs_features:
        head = LogitsAndFeatures(rows.module, feature_layer)
        k, width = _probe_widths(rows.module, head, X_train, rows.device)
        out = torch.from_numpy(rows.apply(X_train, lambda t: t, np.float32, model=head,
                                          tail=(width,)))
        logits, feats = out[:, :k], out[:, k:]
        if y_train is not None and len(X_train) == len(y_train):
            labels = y_train.numpy()
        elif has_classes and k > 1:
            labels = logits.argmax(1).numpy()
        else:
            labels = None
        scorer = scorer.fit(logits, feats, labels, generator).to(rows.device)
        if isinstance(scorer, SumScore):
            comp = rows.apply(X_val, lambda t: t, np.float32,
                              model=ScoreHead(rows.module, scorer, feature_layer, components=True),
                              tail=(len(scorer.parts),))
            scorer.fit_normalisation(torch.from_numpy(comp).to(rows.device))
    return scorer.to(rows.device)


class PredictMixin:
    """The methods of a fitted detector: scores, decisions, classes, AUROC, re-thresholding
    and the adversary (:class:`~aoe_detect.AOEDetector` is the only user)."""

    def _infer_batch(self):
        return infer_batch(self.batch_size)

    def _rows(self):
        """:class:`Rows` for ``module_`` with the current scoring parameters."""
        dev = self.device_
        return Rows(self.module_, dev, self._infer_batch(), getattr(self, "num_workers", 0),
                    getattr(self, "compile", False), getattr(self, "amp", False),
                    use_channels_last(getattr(self, "channels_last", "auto"),
                                      self.input_shape_, dev))

    def _score_model(self):
        """``(model, temperature)`` whose energy the attacks lower: the backbone with
        ``temperature`` for the energy score, else a :class:`ScoreHead` (energy = -score)."""
        scorer = getattr(self, "scorer_", None)
        if scorer is None or scorer.name == "energy":
            return self.module_, self.temperature
        return ScoreHead(self.module_, scorer, self.feature_layer), 1.0

    def _score_fn(self):
        """``(fn, model)``: ``-E`` of the logits of ``module_`` for the energy score, else
        the one-column output of a score head."""
        model, _ = self._score_model()
        if model is self.module_:
            return (lambda logits: -energy(logits, self.temperature)), None
        return (lambda s: s[:, 0]), model

    def _chosen_scores(self, X):
        """Scores of ``ood_score`` (higher = more ID) for a float32 tensor or Dataset view."""
        fn, model = self._score_fn()
        return self._rows().apply(X, fn, np.float64, model=model)

    def _validation_scores(self, X_val):
        """Scores of the held-out rows; under DDP each rank scores its share and all ranks
        gather all of them (so ``offset_`` is the same everywhere)."""
        if not self.distributed_:
            return self._chosen_scores(X_val)
        rows = np.arange(_distributed.rank(), len(X_val), _distributed.world_size())
        part = X_val[torch.from_numpy(rows)] if isinstance(X_val, torch.Tensor) else X_val.view(rows)
        return _distributed.gather_rows(self._chosen_scores(part), len(X_val))

    def _check_X(self, X):
        check_is_fitted(self, "offset_")
        Xc, _ = check_inputs(self, X, reset=False)
        check_input_range(Xc, self.input_range_, "X")
        return torch.from_numpy(np.ascontiguousarray(Xc))

    def _predict_rows(self, X, fn, dtype, tail=(), model=None):
        """Validate ``X`` and apply ``fn(logits)``: Datasets are streamed, large arrays are
        validated and converted chunk by chunk, so memory does not grow with ``len(X)``
        beyond the output (chunks are whole scoring batches: results are identical)."""
        check_is_fitted(self, "offset_")
        _state.check_params(self)  # scoring-time parameters may have changed since fit
        rows = self._rows()
        if is_dataset(X):
            view = scoring_view(X, self.input_shape_, self.input_range_)
            return rows.apply(view, fn, dtype, tail, model)
        step = rows.batch_size * max(1, SCORE_CHUNK_ROWS // rows.batch_size)
        if scipy.sparse.issparse(X):
            X = X.tocsr()  # row chunks, each densified on its own (check_inputs)
        if (isinstance(X, (np.ndarray, torch.Tensor)) or scipy.sparse.issparse(X)) \
                and X.ndim >= 2 and X.shape[0] > step:
            out = np.empty((X.shape[0], *tail), dtype=dtype)
            for start in range(0, X.shape[0], step):
                out[start:start + step] = rows.apply(self._check_X(X[start:start + step]), fn,
                                                     dtype, tail, model)
            return out
        return rows.apply(self._check_X(X), fn, dtype, tail, model)

    def score_samples(self, X):
        """The OOD score of ``ood_score``: higher = more in-distribution.

        ``ood_score="energy"``: the negative energy ``-E(x) = T * logsumexp(f(x) / T)``;
        the default ``"energy+mahalanobis"``: the sum of the standardised energy and
        Mahalanobis scores (see :mod:`aoe_detect.scores` for every formula).

        Parameters
        ----------
        X : array-like or torch.Tensor of shape (n, *sample_shape), or Dataset
            A map-style ``torch.utils.data.Dataset`` yielding ``x`` or ``(x, y)`` is
            streamed through a DataLoader (``num_workers``); memory stays flat as ``n``
            grows.

        Returns
        -------
        scores : ndarray of shape (n,), float64
            Higher means more in-distribution.
        """
        check_is_fitted(self, "offset_")
        fn, model = self._score_fn()
        return self._predict_rows(X, fn, np.float64, model=model)

    def decision_function(self, X):
        """``score_samples(X) - offset_``: negative for OOD, non-negative for in-distribution.

        Returns
        -------
        ndarray of shape (n,), float64
        """
        return self.score_samples(X) - self.offset_

    def predict(self, X):
        """+1 for in-distribution, -1 for OOD (``decision_function < 0``).

        Returns
        -------
        ndarray of shape (n,), int
        """
        return np.where(self.decision_function(X) < 0, -1, 1)

    def recalibrate(self, X=None, contamination=None):
        """Re-threshold without refitting.

        Parameters
        ----------
        X : array-like, optional
            In-distribution data to compute the threshold on (default: the held-out
            validation scores from ``fit``).
        contamination : float in (0, 0.5], optional
            New contamination (also stored in ``self.contamination``).

        Returns
        -------
        self
        """
        check_is_fitted(self, "offset_")
        if contamination is not None:
            if not (isinstance(contamination, numbers.Real) and 0 < contamination <= 0.5):
                raise ValueError(f"`contamination` must be in (0, 0.5], got {contamination!r}.")
        else:
            _state.check_param(self, "contamination")  # may have been changed by set_params
        scores = self.validation_scores_ if X is None else self.score_samples(X)
        new_c = self.contamination if contamination is None else contamination
        offset = _state.conformal_offset(scores, new_c)
        if contamination is not None:  # only after X passed validation
            self.contamination = contamination
        self.offset_ = offset
        return self

    def _require_classes(self):
        check_is_fitted(self, "offset_")
        if not hasattr(self, "classes_"):
            raise NoClassesError("This detector was fitted without class labels, so it has no "
                                 "classes: predict_proba and predict_class need a fit with labels "
                                 "`y` or a pretrained module as `backbone`. Use score_samples / "
                                 "predict for the OOD decision.")

    def predict_proba(self, X):
        """Class probabilities (softmax of the logits) of the in-distribution classes.

        Returns
        -------
        ndarray of shape (n, n_classes), float64; columns follow ``classes_``.
        """
        self._require_classes()
        return self._predict_rows(X, lambda logits: torch.softmax(logits, 1), np.float64,
                                  (len(self.classes_),))

    def predict_class(self, X):
        """In-distribution class label of each input (``classes_[argmax logits]``).

        Returns
        -------
        ndarray of shape (n,)
        """
        self._require_classes()
        return self.classes_[self._predict_rows(X, lambda t: t.argmax(1), np.int64)]

    def score(self, X, y):
        """AUROC of :meth:`score_samples` with in-distribution as the positive class.

        Parameters
        ----------
        X : array-like
        y : array-like of shape (n,)
            ``outlier_label`` (and, for numeric labels, any ``y < 0``) marks OOD rows; any
            other value (class labels, numbers or strings) is in-distribution.

        Returns
        -------
        float
            AUROC in [0, 1] (nan with a warning if one side is empty).
        """
        marker = getattr(self, "outlier_label", -1)
        y_arr = None if y is None else np.asarray(y)
        numeric = y_arr is not None and y_arr.dtype.kind in "biuf"
        if y_arr is not None and not (numeric and not isinstance(marker, str) and marker < 0):
            # string labels or a non-negative marker: map to the -1 / +1 convention first
            # (numeric labels with a negative marker go through unchanged: y < 0 is OOD)
            y = np.where(ood_mask(y_arr, marker), -1, 1)
        return auroc_scorer(self, X, y)

    def perturb(self, X, attack="fgsm", epsilon=None, direction=-1, random_state=None):
        """Adversarially perturb ``X`` against this detector's energy.

        ``direction=-1`` (default) lowers the energy, making OOD inputs look
        in-distribution (the adversary of the AOE paper's robustness evaluation).

        Parameters
        ----------
        X : array-like
        attack : {"fgsm", "pgd"} or attack object, default="fgsm"
            An attack object's own ``eps`` takes precedence over ``epsilon``.
        epsilon : float, optional
            Default: ``epsilon_``.
        direction : {-1, 1}, default=-1
        random_state : int, optional
            For PGD's random start.

        Returns
        -------
        ndarray of shape (n, *input_shape_), float32, in the detector's input units
        (images in [0, 1], channels-first).
        """
        _state.check_params(self)
        Xt = self._check_X(X)
        if epsilon is not None:
            epsilon = check_epsilon(epsilon, self.input_shape_)
        if isinstance(direction, (bool, np.bool_)) or direction not in (-1, 1):
            raise ValueError(f"`direction` must be -1 (toward lower energy) or 1, got {direction!r}.")
        att = resolve_attack(attack)
        _state.validate_object(att, "attack")
        if att is None:
            return Xt.numpy().copy()  # never the caller's own array
        eps = attack_radius(att, self.epsilon_ if epsilon is None else epsilon,
                            self.input_shape_, self.device_)
        try:
            gen = torch.Generator().manual_seed(seed_from(random_state))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"`random_state` must be None, an int or a RandomState, got "
                             f"{random_state!r} ({exc}).") from None
        model, temperature = self._score_model()
        out, b = [], self._infer_batch()
        for start in range(0, len(Xt), b):
            out.append(att.perturb(model, Xt[start:start + b].to(self.device_), eps,
                                   clip=self.input_range_, temperature=temperature,
                                   generator=gen, direction=direction).cpu())
        return torch.cat(out).numpy()
