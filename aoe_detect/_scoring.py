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
import warnings
from dataclasses import dataclass

import numpy as np
import scipy.sparse
import torch
from sklearn.utils.validation import check_is_fitted

from . import _params, _state
from . import distributed as _distributed
from ._loading import as_rows, is_dataset, scoring_view
from ._fit_steps import seed_from
from ._training import amp_dtype, batched_outputs, compiled
from ._validation import check_epsilon, check_input_range, check_inputs
from .attacks import attack_radius, eval_mode, resolve_attack
from .exceptions import NoClassesError, NonFiniteScoreWarning, StaleScoreError
from .losses import energy
from .metrics import auroc_scorer
from .model_selection import ood_mask
from .scores import (FEATURE_SCORES, EnergyScore, KNNScore, LogitsAndFeatures, ScoreHead,
                     SumScore, build_scorer)

__all__ = ["SCORE_CHUNK_ROWS", "Rows", "infer_batch", "fit_scorer", "PredictMixin", "SCORE_PARAMS",
           "MAX_KEPT_HELD_OUT"]

#: Parameters that shape the fitted score or its threshold. After ``set_params`` of one of
#: them, the next call that scores (or ``save``) brings the fitted state in line: the
#: threshold is recomputed for a new ``contamination`` (from ``validation_scores_``), the
#: score and threshold for a new ``temperature`` or ``ood_score__k`` (from the held-out
#: outputs kept at ``fit``, or from the data given to ``recalibrate(X)``); a new score name,
#: ``ood_score__feature_layer`` or ``ood_score__max_samples`` needs the training features, so scoring is
#: refused with a :class:`~aoe_detect.exceptions.StaleScoreError` until ``fit`` (or until
#: the parameter is set back). Setting a parameter back restores the fitted state exactly.
SCORE_PARAMS = ("ood_score", "ood_score__feature_layer", "ood_score__k",
                "ood_score__max_samples", "temperature", "contamination")
_REFIT_PARAMS = ("ood_score", "ood_score__feature_layer", "ood_score__max_samples")

#: The held-out logits (and features, for feature scores) are kept in memory after ``fit``
#: (for a new ``temperature`` / ``ood_score__k``) only when they hold at most this many numbers
#: (16 MB of float32); larger held-out sets need ``recalibrate(X)`` after such a change.
#: They are neither pickled nor saved.
MAX_KEPT_HELD_OUT = 2 ** 22

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
        """The in-order batches of rows ``X`` (the row type, or a validated float32 tensor)."""
        return as_rows(X).batches(self.batch_size, self.num_workers,
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
        rows = as_rows(X).view(bad)
        out[bad] = batched_outputs(
            _Float64(self.module if model is None else model), self.batches(rows),
            lambda logits: fn(logits.double()), batch_size=self.batch_size, device=self.device,
            out=np.empty((len(bad), *tail), dtype=out.dtype))
        return out

    def energy_scores(self, X, temperature, float32_only=False):
        """``-E(x)`` of every row as float64 numpy. ``float32_only``: no float64
        recomputation of overflowed rows (the divergence probe of training wants to see
        float32 overflow: the module itself computes in float32)."""
        fn = lambda logits: -energy(logits, temperature)  # noqa: E731
        if float32_only:
            return batched_outputs(compiled(self.module, self.compile), self.batches(X), fn,
                                   batch_size=self.batch_size, device=self.device,
                                   autocast_dtype=amp_dtype(self.amp, self.device),
                                   out=np.empty(len(X), dtype=np.float64),
                                   channels_last=self.channels_last)
        return self.apply(X, fn, np.float64)


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


def fit_scorer(rows, X_train, y_train, X_val, generator, ood_score, *, temperature,
               has_classes):
    """The fitted score of ``ood_score`` (an :class:`~aoe_detect.scores.OODScore`): statistics of the features of the fine-tuned
    ``rows.module`` on the ID training rows; a sum of scores standardised on the held-out
    rows. Labels of the rows: ``y_train`` unless ``X_train`` is a subset of a streamed
    Dataset; then (and for a label-free fit of a pretrained module) the backbone's
    predictions (a Dataset's fit subset is all its rows, in order, when it has few enough)."""
    scorer = build_scorer(ood_score.name, temperature=temperature, knn_k=ood_score.k,
                          knn_max_samples=ood_score.max_samples)
    if scorer.needs_features:
        head = LogitsAndFeatures(rows.module, ood_score.feature_layer)
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
                              model=ScoreHead(rows.module, scorer, ood_score.feature_layer, components=True),
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
        rt = self._runtime
        return Rows(self.module_, dev, self._infer_batch(), rt.num_workers, rt.compile, rt.amp,
                    use_channels_last(rt.channels_last, self.input_shape_, dev))

    def _score_model(self):
        """``(model, temperature)`` whose energy the attacks lower: the backbone with
        ``temperature`` for the energy score, else a :class:`ScoreHead` (energy = -score)."""
        scorer = getattr(self, "scorer_", None)
        if scorer is None or scorer.name == "energy":
            return self.module_, self.temperature
        return ScoreHead(self.module_, scorer, self._score.feature_layer), 1.0

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
        gather all of them (so ``offset_`` is the same everywhere). Non-finite ones become
        ``-inf``; a near-zero spread warns (:func:`~aoe_detect._state.check_spread`)."""
        if not self.distributed_:
            scores = self._chosen_scores(X_val)
        else:
            rows = np.arange(_distributed.rank(), len(X_val), _distributed.world_size())
            part = X_val.view(rows)
            scores = _distributed.gather_rows(self._chosen_scores(part), len(X_val))
        scores = self._finite_scores(scores)
        _state.check_spread(scores, self._score_name, self.validation_fraction)
        return scores

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
        _params.check_params(self)  # scoring-time parameters may have changed since fit
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
        self._sync_score()  # parameters set after fit: see SCORE_PARAMS
        fn, model = self._score_fn()
        return self._finite_scores(self._predict_rows(X, fn, np.float64, model=model))

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

    def recalibrate(self, X=None, contamination=None, *, X_id=None):
        """Re-threshold without refitting.

        Parameters
        ----------
        X : array-like, optional
            In-distribution data to compute the threshold on (default: the scores the
            current threshold rests on, ``validation_scores_``). With ``X``, a score
            changed by ``set_params(temperature=...)`` or ``ood_score__k=...`` is also rebuilt on
            it (the standardisation of a sum score included), and ``validation_scores_``
            become the scores of ``X``.
        contamination : float in (0, 0.5], optional
            New contamination (also stored in ``self.contamination``).
        X_id : array-like, optional
            Another name for ``X`` (keyword only; pass one of them).

        Returns
        -------
        self
        """
        check_is_fitted(self, "offset_")
        if X_id is not None:
            if X is not None:
                raise TypeError("recalibrate() got both `X` and `X_id`; pass the ID data once.")
            X = X_id
        if contamination is not None:
            if isinstance(contamination, (bool, np.bool_)) or not (
                    isinstance(contamination, numbers.Real) and 0 < contamination <= 0.5):
                raise ValueError(f"`contamination` must be in (0, 0.5], got {contamination!r}.")
        else:
            _params.check_param(self, "contamination")  # may have been changed by set_params
        old_c = self.contamination
        state = {k: self.__dict__.get(k) for k in ("scorer_", "validation_scores_", "offset_",
                                                   "_score_base", "_score_applied", "_held_out")}
        try:
            if contamination is not None:
                self.contamination = contamination
            try:
                self._sync_score()
            except StaleScoreError as exc:  # a new temperature / ood_score__k: rebuilt on X
                if X is None or not getattr(exc, "needs_data", False):
                    raise
                self._sync_score(self._check_X_all(X))
            scores = self.validation_scores_ if X is None else self.score_samples(X)
            offset = _state.conformal_offset(scores, self.contamination)
            self.validation_scores_, self.offset_ = scores, offset
            if X is not None:
                self.__dict__.pop("_held_out", None)  # other data now: the kept outputs are stale
            self._set_score_base()
        except BaseException:
            self.contamination = old_c
            for k, v in state.items():
                if v is None:
                    self.__dict__.pop(k, None)
                else:
                    self.__dict__[k] = v
            raise
        return self

    def _check_X_all(self, X):
        """``X`` validated as a float32 tensor (a Dataset: loaded in full)."""
        check_is_fitted(self, "offset_")
        if is_dataset(X):
            return scoring_view(X, self.input_shape_, self.input_range_)[:]
        return self._check_X(X)

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
        if y_arr is not None and y_arr.dtype.kind in "US" and not isinstance(marker, str):
            n_like = int((y_arr.astype(str) == str(marker)).sum())
            raise ValueError(
                f"score(X, y): `y` holds string labels (e.g. {str(y_arr.ravel()[0])!r}) but "
                f"outlier_label={marker!r} is an integer, so no row is marked OOD"
                + (f" ({n_like} row(s) are the string {str(marker)!r}, not the integer)"
                   if n_like else "") + ". Pass numeric labels (y < 0 = OOD), or "
                "set_params(outlier_label=<the string>).")
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
        X : array-like, torch.Tensor or Dataset
            Checked as ``score_samples`` checks it; a map-style Dataset is loaded in full
            (the perturbed rows are returned as one array).
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
        _params.check_params(self)
        self._sync_score()  # parameters set after fit: see SCORE_PARAMS
        Xt = self._check_X_all(X)  # the checks of score_samples; a Dataset loaded in full
        if epsilon is not None:
            epsilon = check_epsilon(epsilon, self.input_shape_)
        if isinstance(direction, (bool, np.bool_)) or direction not in (-1, 1):
            raise ValueError(f"`direction` must be -1 (toward lower energy) or 1, got {direction!r}.")
        att = resolve_attack(attack)
        _params.validate_object(att, "attack")
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

    # ------------------------------------------------ fitted score vs. current parameters
    def _score_params(self):
        """The current values of :data:`SCORE_PARAMS` that matter to the fitted score:
        ``ood_score__feature_layer`` only for feature scores, ``ood_score__k`` and
        ``ood_score__max_samples`` only with a k-NN part,
        ``temperature`` only with an energy part (others change nothing fitted)."""
        scorer = self.__dict__.get("scorer_")
        name = getattr(scorer, "name", None) or self._score_name  # the fitted score's name
        parts = name.split("+") if isinstance(name, str) else []
        score = self._score
        out = {"ood_score": self._score_name, "contamination": self.contamination}
        if name in FEATURE_SCORES:
            out["ood_score__feature_layer"] = score.feature_layer
        if "knn" in parts:
            out["ood_score__k"], out["ood_score__max_samples"] = score.k, score.max_samples
        if "energy" in parts:
            out["temperature"] = self.temperature
        return out

    def _set_score_base(self, held_out=False):
        """Record the current fitted score state as the one the current parameters shape
        (end of ``fit`` and ``recalibrate``; at ``load`` and unpickling); ``held_out``: the
        outputs of :meth:`_keep_held_out` (None: none kept; False: unchanged)."""
        self._score_base = {"params": None, "scorer_": getattr(self, "scorer_", None),
                            "validation_scores_": self.validation_scores_,
                            "offset_": self.offset_}
        self._score_base["params"] = self._score_params()
        self._score_applied = self._score_base["params"]
        if held_out is None:
            self.__dict__.pop("_held_out", None)
        elif held_out is not False:
            self._held_out = held_out

    def _sync_score(self, X=None):
        """Bring ``scorer_``, ``validation_scores_`` and ``offset_`` in line with the current
        score parameters (see :data:`SCORE_PARAMS`), or raise naming the parameter. ``X``: a
        validated float32 tensor of ID rows to rebuild on (``recalibrate(X)``). Nothing is
        changed unless everything was computed."""
        base = getattr(self, "_score_base", None)
        if base is None:  # pickled by an older version: nothing recorded to compare with
            return
        now = self._score_params()
        if X is None and _same_params(now, getattr(self, "_score_applied", None)):
            return
        changed = [k for k in now if not _same_value(now[k], base["params"].get(k))]
        _params.check_params(self, changed)
        refit = [k for k in changed if k in _REFIT_PARAMS]
        if refit:
            k = refit[0]
            raise StaleScoreError(
                f"`{k}` was changed to {now[k]!r} after fit, but the fitted score statistics "
                f"were computed for {k}={base['params'][k]!r} (on the training features, which "
                f"are not kept). Call fit again, or set_params({k}={base['params'][k]!r}) to "
                "score with the fitted detector.")
        rebuild = [k for k in changed if k in ("temperature", "ood_score__k")]
        scorer, scores = base["scorer_"], base["validation_scores_"]
        if rebuild:
            held = getattr(self, "_held_out", None)
            if X is None and held is None:
                k = rebuild[0]
                exc = StaleScoreError(
                    f"`{k}` was changed to {now[k]!r} after fit (fitted with {k}="
                    f"{base['params'][k]!r}); the new score needs a new threshold, and the "
                    "held-out outputs it is computed from are not kept (a loaded or unpickled "
                    "detector, a large held-out set, or one recalibrated on other data). Call "
                    "recalibrate(X) with in-distribution data, fit again, or set_params("
                    f"{k}={base['params'][k]!r}).")
                exc.needs_data = True
                raise exc
            scorer = self._rescorer(base["scorer_"], now)
            scores = self._finite_scores(self._rescore(scorer, X, held))
        offset = (base["offset_"] if not changed
                  else _state.conformal_offset(scores, self.contamination))
        self.scorer_, self.validation_scores_, self.offset_ = scorer, scores, offset
        self._score_applied = now

    def _rescorer(self, scorer, now):
        """A copy of the fitted ``scorer`` with the current ``temperature`` / ``ood_score__k``."""
        new = copy.deepcopy(scorer)
        for m in new.modules():
            if isinstance(m, EnergyScore) and "temperature" in now:
                m.temperature = float(now["temperature"])
            if isinstance(m, KNNScore) and "ood_score__k" in now:
                k = now["ood_score__k"]
                m.k = k if isinstance(k, str) else int(k)
                m._index = None
                m.check_k()
        return new

    def _rescore(self, scorer, X, held):
        """Scores of the calibration rows under ``scorer`` (its sum re-standardised on
        them): the rows of ``X`` (a float32 tensor) or the kept held-out outputs."""
        rows = self._rows()
        with torch.inference_mode():
            if X is not None:
                if isinstance(scorer, SumScore):
                    head = ScoreHead(self.module_, scorer, self._score.feature_layer, components=True)
                    comp = rows.apply(X, lambda t: t, np.float32, model=head,
                                      tail=(len(scorer.parts),))
                    scorer.fit_normalisation(torch.from_numpy(comp).to(self.device_))
                if scorer is None or scorer.name == "energy":
                    T = self.temperature
                    return rows.apply(X, lambda t: -energy(t, T), np.float64)
                return rows.apply(X, lambda s: s[:, 0], np.float64,
                                  model=ScoreHead(self.module_, scorer, self._score.feature_layer))
            logits = held["logits"].to(self.device_)
            feats = None if held.get("features") is None else held["features"].to(self.device_)
            if isinstance(scorer, SumScore):
                scorer.fit_normalisation(scorer.components(logits, feats))
            s = scorer(logits, feats)
            bad = ~torch.isfinite(s)
            if bool(bad.any()):  # as in scoring: overflowed rows again in float64
                s = s.double()
                s[bad] = scorer.double()(logits[bad].double(),
                                         None if feats is None else feats[bad].double())
                scorer.float()
            return s.double().cpu().numpy()

    def _keep_held_out(self, X_val):
        """The held-out logits (and features) for :meth:`_sync_score`, or None when the
        score does not depend on ``temperature`` / ``ood_score__k`` or they would be too large."""
        parts = self._score_name.split("+")
        if "energy" not in parts and "knn" not in parts:
            return None
        first = X_val[:2]  # a tensor (a Dataset view loads its slice)
        if self._score_name in FEATURE_SCORES:
            head = LogitsAndFeatures(self.module_, self._score.feature_layer)
            k, width = _probe_widths(self.module_, head, first, self.device_)
        else:
            head = None
            with torch.inference_mode(), eval_mode(self.module_):
                k = width = int(self.module_(first.to(self.device_)).shape[1])
        if len(X_val) * width > MAX_KEPT_HELD_OUT:
            return None
        out = torch.from_numpy(self._rows().apply(X_val, lambda t: t, np.float32, model=head,
                                                  tail=(width,)))
        return {"logits": out[:, :k].clone(),
                "features": out[:, k:].clone() if head is not None else None}

    def _finite_scores(self, s):
        """Scores still NaN/inf after the float64 recomputation become ``-inf`` (most OOD),
        with a :class:`~aoe_detect.exceptions.NonFiniteScoreWarning`."""
        bad = ~np.isfinite(s) & ~(s == -np.inf)
        if bad.any():
            warnings.warn(f"{int(bad.sum())} score(s) were NaN or +inf even in float64 (extreme "
                          f"inputs, e.g. rows {np.flatnonzero(bad)[:5].tolist()}); they are set "
                          "to -inf (most out-of-distribution), so predict says -1 for them.",
                          NonFiniteScoreWarning, stacklevel=3)
            s = s.copy()
            s[bad] = -np.inf
        return s


def _same_value(a, b):
    if isinstance(a, numbers.Real) and isinstance(b, numbers.Real) \
            and not isinstance(a, (bool, np.bool_)) and not isinstance(b, (bool, np.bool_)):
        return float(a) == float(b) or (a != a and b != b)
    return type(a) is type(b) and a == b


def _same_params(a, b):
    return b is not None and a.keys() == b.keys() and all(_same_value(a[k], b[k]) for k in a)
