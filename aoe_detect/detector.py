"""The :class:`AOEDetector` estimator: the recipe of ``fit`` and the fitted state.

Everything else lives in the module named after it: the fit-input path in
:mod:`aoe_detect._fit_inputs`, the resolved steps of ``fit`` in :mod:`aoe_detect._fit_steps`,
the training stages in :mod:`aoe_detect._training`, scoring and prediction in
:mod:`aoe_detect._scoring` (:class:`~aoe_detect._scoring.PredictMixin`), files and pickles in
:mod:`aoe_detect.persistence` (:class:`~aoe_detect.persistence.PersistenceMixin`). Only this
class sets fitted attributes.
"""

from __future__ import annotations

import numbers
import os

import numpy as np
import torch
from sklearn.base import BaseEstimator, OutlierMixin

from . import _deployed, _fit_inputs, _fit_steps, _params, _scoring, _state, _training
from . import distributed as _distributed
from . import persistence as _persistence
from ._compat import HasMethods, IntInterval, Interval, RegistryOptions, StrOptions
from ._fit_steps import AUTO_EPOCHS, AUTO_MARGIN_GAP, AUTO_MIN_STEPS, AUTO_PRETRAIN_EPOCHS  # noqa: F401
from ._scoring import SCORE_CHUNK_ROWS  # noqa: F401  (documented constant)
from ._torch_utils import resolve_device as _resolve_device  # noqa: F401  (former home)
from .attacks import (ATTACKS, AUTO_IMAGE_EPS, AUTO_TABULAR_EPS, attack_radius,  # noqa: F401
                      resolve_attack, resolve_epsilon, training_radius)
from .backbones import BACKBONES
from .exceptions import (CalibrationWarning, NoClassesError, NonFiniteLossWarning,  # noqa: F401
                         TrainingInterruptedWarning)
from .export import ExportMixin
from .losses import CrossEntropyOnly, EnergyMargin, SoftmaxOE, loss_settings
from .outliers import OUTLIER_SOURCES
from .runtime import Runtime
from .scores import FEATURE_SCORES, SCORES, OODScore

__all__ = ["AOEDetector", "TrainingInterruptedWarning", "NonFiniteLossWarning", "NoClassesError",
           "CalibrationWarning"]

#: Bounds of ``temperature``: ``T * logsumexp(f / T)`` stays finite in float32 for logits up
#: to ``|f| ~ 3e35`` at ``T = 1e-3`` (``1e-40`` overflowed every score to inf/NaN).
MIN_TEMPERATURE, MAX_TEMPERATURE = 1e-3, 1e3


class AOEDetector(_params.ParamsMixin, _scoring.PredictMixin, _persistence.PersistenceMixin, ExportMixin, OutlierMixin, BaseEstimator):
    """Out-of-distribution detector trained with Adversarial Outlier Exposure (AOE).

    A classifier (the *backbone*) is fine-tuned with outlier exposure on its energy
    ``E(x) = -T * logsumexp(f(x) / T)``. Before every training step each outlier is pushed
    toward *lower* energy with an FGSM step ``x - eps * sign(grad_x E(x))`` (or PGD), and the
    energy-margin loss teaches the model to map these hardened outliers back to high energy:

        ``CE(f(x_in), y) + lam * (mean(relu(E(x_in) - m_in)^2) + mean(relu(m_out - E(x_out))^2))``

    The same estimator runs the paper's baselines: ``outliers=None`` (plain cross-entropy
    fine-tuning, no OE), ``attack=None`` (vanilla OE), ``attack="gaussian"`` (OE with
    Gaussian noise of std ``attack__eps``), ``attack="pgd"`` and ``loss="softmax"`` (the OE loss of
    Hendrycks et al.).

    Signs: :meth:`score_samples` is higher = more in-distribution (``-E(x)`` with
    ``ood_score="energy"``; by default the energy plus a feature-space Mahalanobis score);
    :meth:`predict` returns +1 for in-distribution and -1 for OOD; training labels ``-1`` mark
    outlier rows.

    Parameters
    ----------
    backbone : {"auto", "mlp", "small_cnn", "wrn40_2", "resnet18"}, nn.Module or callable, default="auto"
        The classifier. ``"auto"`` is ``"mlp"`` for tabular and ``"small_cnn"`` for image
        inputs. An ``nn.Module`` is deep-copied (never trained in place) and treated as
        pretrained; its outputs are the logits, its class indices are the labels. A callable
        ``(n_classes, input_shape) -> nn.Module`` builds a fresh one. Built-in backbones
        standardise their inputs with statistics of the ID training data.
    outliers : "default", str, array-like, object with ``sample(n, generator)`` or None, default="default"
        Training outliers. ``"default"``: :func:`aoe_detect.outliers.default_outliers`
        (images: warped, patch-shuffled and blended ID images); names:
        ``"uniform"``, ``"gaussian"``, ``"smooth"``, ``"lowdensity"``, ``"permuted"``,
        ``"cutpaste"``, ``"mixup"``, ``"elastic"``, ``"shell"``, ``"corrupted"``,
        ``"lowdensity_rejected"``, ``"gan"`` (a small DCGAN trained on
        the ID images inside ``fit``, the paper's source; minutes on a CPU). ``None`` disables outlier exposure.
        Outliers passed to ``fit`` (``X_outliers``, rows with ``y == -1``, or the label-free
        second argument) replace this source.
    attack : {"fgsm", "pgd", "gaussian", "none"}, attack object or None, default="fgsm"
        Augmentation of the training outliers: FGSM/PGD toward lower energy (AOE),
        Gaussian noise (baseline) or none (vanilla OE). A name stands for the object of
        :mod:`aoe_detect.attacks` with its defaults (``"fgsm"`` is ``FGSM()``); its settings
        are ``attack__eps`` (radius in input units: pixel units in [0, 1] for images, uint8
        images being scaled to [0, 1] first; ``None``, "auto": 8/255 for images, ``0.1 *``
        each feature's standard deviation for tabular data), ``attack__fraction`` (share of
        each outlier batch attacked, 1.0 = the paper), ``attack__refresh`` and the attack's
        own (``attack__steps``).
    loss : {"energy", "softmax"}, EnergyMargin or SoftmaxOE, default="energy"
        Energy-margin loss (Liu et al. 2020) or softmax OE loss (Hendrycks et al. 2019): a
        name stands for :class:`~aoe_detect.losses.EnergyMargin` /
        :class:`~aoe_detect.losses.SoftmaxOE` with automatic settings, ``loss__lam``,
        ``loss__m_in``, ``loss__m_out`` (the margins follow the backbone's own energy level).
    ood_score : {"energy", "mahalanobis", "knn", "energy+mahalanobis", "energy+knn"} or OODScore, default="energy+mahalanobis"
        What :meth:`score_samples` returns (always higher = more in-distribution): ``"energy"``,
        the paper's ``-E(x)``; ``"mahalanobis"``, minus the squared Mahalanobis distance of
        the penultimate features to the closest class mean under a shared covariance (Lee et
        al. 2018); ``"knn"``, minus the distance of the normalised features to their ``k``-th
        nearest ID training feature (Sun et al. 2022); a sum ``"a+b"`` adds the two scores
        after standardising each on the held-out ID rows. Feature statistics are fitted on
        the ID training rows after fine-tuning. Settings (:class:`~aoe_detect.scores.OODScore`):
        ``ood_score__k``, ``ood_score__max_samples``, ``ood_score__feature_layer``.
        :meth:`perturb` attacks this score. After ``fit``: :data:`~aoe_detect._scoring.SCORE_PARAMS`.
    epochs : int or "auto", default="auto"
        Outlier-exposure fine-tuning epochs. ``"auto"``: 10 (Liu et al. fine-tune for 10),
        raised on small data so that the stage takes at least ``AUTO_MIN_STEPS`` (500)
        optimizer steps, i.e. ``max(10, ceil(500 / steps_per_epoch))``; data sets with at
        least 50 batches per epoch keep exactly 10. A ``ConvergenceWarning`` says when a
        stage's training loss was still falling steeply at its end.
    pretrain_epochs : int or "auto", default="auto"
        Plain cross-entropy epochs before outlier exposure. ``"auto"``: 20 for a fresh
        built-in or factory backbone fitted with labels, with the same small-data floor of
        500 optimizer steps as ``epochs``; 0 otherwise (a module is assumed pretrained;
        without labels there is nothing to pretrain on).
    batch_size : int, default=128
        ID samples per step (also the scoring batch size, at least 256).
    outlier_batch_size : int or None, default=None
        Outliers per step; ``None`` = same as ``batch_size``.
    lr : float, default=1e-3
        Learning rate (cosine-annealed over each stage).
    optimizer : {"adam", "sgd"}, default="adam"
        Adam, or SGD with Nesterov momentum 0.9.
    weight_decay : float, default=0.0
        Weight decay of every stage: decoupled (AdamW) with Adam, an L2 penalty with SGD.
    augment : bool, default=False
        Pretraining shifts image batches by up to ``round(side / 14)`` pixels (edge padding).
    temperature : float in [1e-3, 1e3], default=1.0
        Energy temperature ``T``, also of scoring: a change after ``fit`` takes effect at
        once, threshold included (:data:`~aoe_detect._scoring.SCORE_PARAMS`).
    contamination : float in (0, 0.5], default=0.05
        Fraction of held-out ID validation data scored below ``offset_``: with 0.05,
        :meth:`predict` accepts 95% of ID inputs, the operating point of FPR@95TPR.
    validation_fraction : float in [0, 1), default=0.1
        Share of ID rows held out (not trained on) to compute ``offset_``. 0 uses the
        training data (scores are then optimistic).
    input_range : "auto", (float, float) or None, default="auto"
        Valid input range for clipping outliers and attacks. ``"auto"``: (0, 1) for images,
        None (no clipping) for tabular data. Inputs outside the range are an error.
    outlier_label : int or str, default=-1
        The label that marks an outlier row in ``y``: in ``fit`` such rows are training
        outliers, in :meth:`score` they are the OOD rows. Class labels may be any integers
        (``{3, 7, 100}``) or strings; with string labels use a string marker such as
        ``outlier_label="outlier"``. For integer labels every other negative label is an
        error in ``fit`` (and counts as OOD in :meth:`score`).
    device : str, default="auto"
        ``"auto"`` picks CUDA when available (with ``verbose > 0``, ``fit`` writes one line
        to stderr naming the device it chose); the choice is ``device_``.
    runtime : Runtime or None, default=None
        How ``fit`` and scoring run (:class:`~aoe_detect.runtime.Runtime`; None: its
        defaults): ``runtime__amp`` (mixed precision), ``runtime__compile``,
        ``runtime__channels_last``, ``runtime__num_workers`` (DataLoader workers for Dataset
        inputs), ``runtime__distributed`` and ``runtime__sync_batchnorm`` (data-parallel
        training under ``torchrun``). They change speed and memory, not what is computed.
    random_state : int, RandomState or None, default=None
        Seeds every random choice through local generators; global RNGs are never touched.
    verbose : int, default=0
        >0 shows a tqdm progress bar per epoch with the loss parts; >=2 adds the held-out
        validation numbers of ``history_``.
    warm_start : bool, default=False
        Continue training the fitted ``module_`` or, on an unfitted detector, the
        checkpoint in ``checkpoint_dir``, instead of starting over. Like scikit-learn's
        ``warm_start``, ``pretrain_epochs`` and ``epochs`` are totals: only the epochs not
        yet in ``history_`` run (none: a warning, and only the threshold is refit).
    checkpoint_dir : str or None, default=None
        If set, the detector is saved atomically to ``checkpoint_dir/checkpoint.aoe`` after
        every completed epoch (see :meth:`save`); resume with ``warm_start=True``.

    The flat parameters of 0.2 that duplicated a component's setting (``epsilon``,
    ``attack_fraction``, ``attack_refresh``, ``lam``, ``m_in``, ``m_out``, ``knn_k``,
    ``knn_max_samples``, ``feature_layer``, ``amp``, ``compile``, ``channels_last``,
    ``num_workers``, ``distributed``, ``sync_batchnorm``) still work until 0.4, with a
    ``FutureWarning`` naming the new spelling (:data:`aoe_detect._params.DEPRECATED`).

    Attributes
    ----------
    module_ : torch.nn.Module
        The fine-tuned backbone (in eval mode, on ``device_``): an ordinary PyTorch
        classifier whose logit ``j`` is class ``classes_[j]``. Built-in backbones contain
        their input standardisation, so ``module_`` takes inputs in your units (images in
        [0, 1], channels-first). Use it directly in an application, save
        ``module_.state_dict()``, or export it with ``torch.export`` (user guide: "Using the
        fine-tuned classifier in an application").
    classes_ : ndarray of shape (n_classes,)
        The class labels as given in ``y`` (integers or strings, sorted; only when fitted
        with labels or a pretrained module, whose classes are ``0..k-1``). Logit ``j`` of
        ``module_`` is class ``classes_[j]``; :meth:`predict_class` returns these labels.
    offset_ : float
        Split-conformal ``contamination`` quantile of ``score_samples`` on the ``n``
        held-out ID rows: the ``floor((n + 1) * contamination)``-th smallest, so a new
        exchangeable ID input is rejected with probability at most ``contamination``
        (a ``CalibrationWarning`` when ``n`` is too small for that; see
        ``docs/failure_modes.md``). ``decision_function = score_samples - offset_``.
    validation_scores_ : ndarray
        Scores of the held-out ID data (used by :meth:`recalibrate`).
    history_ : list of dict
        One row per epoch: ``stage`` ("pretrain"/"finetune"), ``epoch``, ``loss``, ``ce``,
        ``energy_in``, ``energy_out``, ``mean_energy_id``, ``mean_energy_outlier``,
        ``seconds``, and held-out validation numbers (no real OOD data needed):
        ``val_energy_id``, ``val_accuracy`` (labelled fits) and ``val_auroc_<family>`` per
        outlier family (see :func:`aoe_detect._training.validation_row`);
        :func:`aoe_detect.plots.plot_history` draws them, ``verbose=2`` shows them.
    scorer_ : torch.nn.Module
        The fitted score of ``ood_score`` (:mod:`aoe_detect.scores`): its buffers hold the
        feature statistics (class means and precision, or the k-NN feature bank, and the
        standardisation of a sum).
    m_in_ : float
        Energy margin for ID inputs actually used (``m_in`` resolved from ``"auto"``).
    m_out_ : float
        Energy margin for outliers actually used.
    lam_ : float
        Weight of the outlier loss term actually used.
    epsilon_ : float or ndarray of shape (n_features,)
        Attack radius actually used (per feature for tabular ``epsilon="auto"``).
    input_range_ : tuple of (float, float) or None
        Valid input range used for clipping (``input_range`` resolved).
    input_shape_ : tuple
        Shape of one sample as used by the backbone (images are channels-first).
    device_ : torch.device
        The device the detector trained on and scores on (what ``device="auto"`` chose).
    distributed_ : bool
        Whether ``fit`` trained data-parallel over a process group.
    n_features_in_ : int
        Number of features (tabular) or channels (images).
    feature_names_in_ : ndarray of str
        Column names, when ``X`` was a DataFrame with string column names; scoring then
        refuses other or reordered columns (``X[detector.feature_names_in_]`` selects them).
    outlier_source_ : object with ``sample(n, generator)``
        The fitted outlier source used for training (only when outlier exposure ran). It
        can hold training data, so it is **not** pickled (see ``__getstate__``) nor saved
        by :meth:`save`.

    References
    ----------
    .. [1] T. Botschen, K. Kirchheim, F. Ortmeier. "Out-of-Distribution Detection with
       Adversarial Outlier Exposure." CVPR 2025 Workshops.
    .. [2] W. Liu et al. "Energy-based Out-of-distribution Detection." NeurIPS 2020.
    .. [3] D. Hendrycks et al. "Deep Anomaly Detection with Outlier Exposure." ICLR 2019.

    Examples
    --------
    >>> import numpy as np
    >>> from aoe_detect import AOEDetector
    >>> rng = np.random.RandomState(0)
    >>> X = np.r_[rng.normal(0, 1, (100, 2)) + [3, 0], rng.normal(0, 1, (100, 2)) - [3, 0]]
    >>> y = np.r_[np.zeros(100, int), np.ones(100, int)]
    >>> det = AOEDetector(epochs=3, pretrain_epochs=3, random_state=0).fit(X, y)
    >>> det.predict([[3.0, 0.0], [0.0, 40.0]]).tolist()
    [1, -1]
    """

    _parameter_constraints = {
        "backbone": [RegistryOptions(BACKBONES, extra=("auto",)), HasMethods(["forward"]), callable],
        "outliers": [StrOptions({"default", *OUTLIER_SOURCES}), "array-like",
                     HasMethods(["sample"]), None],
        "attack": [StrOptions({"none", *ATTACKS}), HasMethods(["perturb"]), None],
        "loss": [StrOptions({"energy", "softmax"}), EnergyMargin, SoftmaxOE],
        "ood_score": [StrOptions(set(SCORES)), OODScore],
        "epochs": [IntInterval(0, None, closed="left"), StrOptions({"auto"})],
        "pretrain_epochs": [IntInterval(0, None, closed="left"), StrOptions({"auto"})],
        "batch_size": [IntInterval(1, None, closed="left")],
        "outlier_batch_size": [IntInterval(1, None, closed="left"), None],
        "lr": [Interval(numbers.Real, 0, None, closed="neither")],
        "optimizer": [StrOptions({"adam", "sgd"})],
        "weight_decay": [Interval(numbers.Real, 0, None, closed="left")],
        "augment": ["boolean"],
        "temperature": [Interval(numbers.Real, MIN_TEMPERATURE, MAX_TEMPERATURE, closed="both")],
        "contamination": [Interval(numbers.Real, 0, 0.5, closed="right")],
        "validation_fraction": [Interval(numbers.Real, 0, 1, closed="left")],
        "input_range": [StrOptions({"auto"}), tuple, list, None],
        "outlier_label": [IntInterval(None, None, closed="neither"), str],
        "device": [str, torch.device],
        "runtime": [Runtime, None],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
        "warm_start": ["boolean"],
        "checkpoint_dir": [str, os.PathLike, None],
    }

    def __init__(self, backbone="auto", *, outliers="default", attack="fgsm", loss="energy",
                 ood_score="energy+mahalanobis", epochs="auto", pretrain_epochs="auto",
                 batch_size=128, outlier_batch_size=None, lr=1e-3, optimizer="adam",
                 weight_decay=0.0, augment=False, temperature=1.0, contamination=0.05,
                 validation_fraction=0.1, input_range="auto", outlier_label=-1, device="auto",
                 runtime=None, random_state=None, verbose=0, warm_start=False,
                 checkpoint_dir=None):
        self.backbone = backbone
        self.outliers = outliers
        self.attack = attack
        self.loss = loss
        self.ood_score = ood_score
        self.epochs = epochs
        self.pretrain_epochs = pretrain_epochs
        self.batch_size = batch_size
        self.outlier_batch_size = outlier_batch_size
        self.lr = lr
        self.optimizer = optimizer
        self.weight_decay = weight_decay
        self.augment = augment
        self.temperature = temperature
        self.contamination = contamination
        self.validation_fraction = validation_fraction
        self.input_range = input_range
        self.outlier_label = outlier_label
        self.device = device
        self.runtime = runtime
        self.random_state = random_state
        self.verbose = verbose
        self.warm_start = warm_start
        self.checkpoint_dir = checkpoint_dir

    def fit(self, X, y=None, X_outliers=None):
        """Fine-tune the backbone with (adversarial) outlier exposure.

        Accepted forms:

        - ``fit(X, y)``: class labels (integers or strings, mapped through ``classes_``);
          rows with ``y == outlier_label`` (default -1) are training outliers.
        - ``fit(X, y, X_outliers=A)``: labels plus an explicit outlier array.
        - ``fit(X_id, X_outliers)``: label-free; a second positional argument whose samples
          have the same shape as ``X``'s is an outlier array.
        - ``fit(X)``: label-free with the ``outliers`` source.

        Without labels the cross-entropy term is dropped (only the energy margins are
        learned), unless the backbone is a module: then its own predictions at the start of
        ``fit`` serve as targets, so its classes are kept. Outlier arrays given here replace
        the ``outliers`` source.

        ``X``, the outliers (``X_outliers`` or the label-free second argument) and the
        ``outliers`` parameter may also be map-style ``torch.utils.data.Dataset`` objects
        yielding ``x`` or ``(x, y)``: they are streamed through DataLoaders
        (``runtime__num_workers``), so they need not fit in memory. Their first items are validated
        up front and every batch is checked for NaN/inf and the input range while loading;
        the input standardisation, ``epsilon="auto"``, the automatic margins and the
        outlier source are fitted on a random subset of at most
        :data:`aoe_detect._loading.MAX_FIT_SUBSET` training rows (all rows, in order, when
        there are fewer, which makes a Dataset fit match the equivalent array fit). Labels
        come from the items, a ``targets`` attribute (torchvision) or ``y``.

        Parameters
        ----------
        X : array-like, torch.Tensor of shape (n, d), (n, h, w) or (n, c, h, w), or Dataset
            In-distribution inputs; uint8 images are scaled to [0, 1].
        y : array-like of shape (n,), outlier array or outlier Dataset, optional
        X_outliers : array-like of shape (m, *sample_shape) or Dataset, optional

        Returns
        -------
        self : AOEDetector
        """
        _params.check_fit_params(self)
        restore = _state.restore_point(self)
        try:
            seed, device, self.distributed_ = _fit_steps.seed_and_device(
                self.random_state, self.device, self._runtime.distributed, self.verbose)
            data = _fit_inputs.fit_inputs(X, y, X_outliers, validation_fraction=self.validation_fraction,
                                          seed=seed, **_fit_inputs.input_params(self))
            cuda_devices = [device.index or 0] if device.type == "cuda" else []
            with torch.random.fork_rng(devices=cuda_devices):
                torch.manual_seed(seed)
                self._fit(data, seed, device)
        except BaseException:
            restore()  # a failed fit leaves the previous fitted state (or none) untouched
            raise
        return self

    def _fit(self, data, seed, device):
        """The recipe: module, resolved parameters, two stages, score, threshold."""
        gen = torch.Generator().manual_seed(seed)
        self.__dict__.pop("feature_names_in_", None)  # n_features_in_, input_shape_, ...
        self.__dict__.update(data.fitted, device_=device)
        if self.warm_start and not hasattr(self, "module_"):  # an unfitted detector resumes
            self._resume_from_checkpoint(data, device)  # from checkpoint_dir, if it has one
        resuming = self.warm_start and hasattr(self, "module_")
        y_tr = self._set_module(data, resuming, device)
        kind, lam, _, _ = loss_settings(self.loss)
        self.lam_ = _fit_steps.resolve_lam(lam, kind)
        self.history_ = list(self.history_) if resuming else []  # never the fitted list itself
        pre, n_ft = _fit_steps.stage_lengths(
            self.pretrain_epochs, self.epochs, n_train=len(data.train_idx),
            batch_size=int(self.batch_size), labelled=y_tr is not None,
            world=_distributed.world_size() if self.distributed_ else 1,
            built=not isinstance(self.backbone, torch.nn.Module),  # fresh unless resuming
            history=self.history_ if resuming else None)
        source = _fit_steps.fit_source(data.source, data.X_train, data.sample_shape, gen)
        if source is not None:
            self.outlier_source_ = source
        attack = resolve_attack(self.attack)  # its radius, resolved once (fails before training)
        eps, self.epsilon_ = training_radius(attack, data.X_train, self.input_shape_, device)
        if source is None and y_tr is None:
            raise ValueError("Nothing to train on: no labels and `outliers=None`. Give class labels "
                             "`y`, outliers, or an outlier source.")
        progress = _training.Progress()
        val = _training.validation_probe(data.X_val, data.val_idx, data.labels,
                                         getattr(self, "classes_", None), self._runtime.num_workers)
        interrupted = False
        try:
            stopped = self._train("pretrain", pre, data, y_tr, CrossEntropyOnly(), None, None, 0.0,
                                  gen, progress, val)
            progress.where = "finetune (before its first epoch)" if n_ft else "fit (after training)"
            self._set_margins(data.X_train, device)
            if not stopped:
                loss = _fit_steps.outlier_loss(kind, source, self.lam_, self.m_in_, self.m_out_,
                                               self.temperature)
                self._train("finetune", n_ft, data, y_tr, loss, source, attack, eps, gen,
                            progress, val)
            progress.where = "fit (while fitting the score and scoring the validation data)"
            self._calibrate(data, y_tr, gen)
            _fit_steps.warn_if_inverted(self.history_)  # held-out synthetic outliers, AUROC < 0.5
        except KeyboardInterrupt:
            if progress.kept is None:  # nothing trained yet: fit restores the old state
                raise
            interrupted = True
        if interrupted:  # a second Ctrl-C from here on aborts fit (the old state comes back)
            _training.restore_kept(self.module_, self.history_, progress)  # with a warning
            if not hasattr(self, "m_in_"):
                self._set_margins(data.X_train, device)
            self._calibrate(data, y_tr, gen)  # (its checkpoint is never behind the kept epoch)
        return self

    def _set_module(self, data, resuming, device):
        """``module_`` and ``classes_`` from the backbone (or the warm-start module); return
        the training targets (class indices) as a tensor, or None."""
        module, classes, targets = _fit_steps.build_module(
            self.backbone, data, self._infer_batch(), self._runtime.num_workers,
            resumed=self.module_ if resuming else None,
            classes=getattr(self, "classes_", None), device=device,
            feature_layer=self._score.feature_layer if self._score_name in FEATURE_SCORES else False)
        self.__dict__.pop("classes_", None)
        if classes is not None:
            self.classes_ = classes
        self.module_ = module
        return None if targets is None else torch.as_tensor(targets, dtype=torch.long)

    def _set_margins(self, X_train, device):
        """``m_in_`` / ``m_out_``; a warm start continuing outlier exposure keeps its own."""
        keep = self.warm_start and any(r["stage"] == "finetune" for r in self.history_)
        _, _, m_in, m_out = loss_settings(self.loss)
        self.m_in_, self.m_out_ = _fit_steps.auto_margins(
            m_in, m_out, lambda: -self._rows().energy_scores(X_train[:5000], self.temperature),
            kept=getattr(self, "m_in_", None) if keep else None)

    def _train(self, name, epochs, data, y_tr, loss_fn, source, attack, eps, gen, progress, val):
        """Build and run one stage (nothing for 0 epochs); True if it stopped early."""
        if epochs == 0:
            return False
        options = _training.TrainOptions.from_params(
            _params.flat_params(self), clip=self.input_range_, ddp=self.distributed_,
            channels_last=self._rows().channels_last)
        stage = _training.build_stage(name, epochs, self.module_, data.train_data, y_tr,
                                      loss_fn=loss_fn, generator=gen, device=self.device_,
                                      options=options, source=source, attack=attack, eps=eps)
        if stage.feed is not None:  # attack__target="deployed": attack the deployed score
            stage.feed.target = _deployed.deployed_target(
                attack, stage, self._rows(), y_tr, self._score, temperature=self.temperature,
                has_classes=hasattr(self, "classes_"))
        checkpoint = self.checkpoint_dir is not None and _distributed.is_main_process()
        return _fit_steps.check_diverged_refit("offset_" in self.__dict__, _training.run_stage(
            stage, history=self.history_, progress=progress, validation=val,
            probe_scores=lambda: self._rows().energy_scores(data.train_data[:256], self.temperature, 1),
            on_epoch_end=self._epoch_checkpoint if checkpoint else None))

    def _calibrate(self, data, y_tr, gen):
        """``scorer_`` on the training rows, ``validation_scores_`` and ``offset_``."""
        self.module_.eval()
        self.scorer_ = _scoring.fit_scorer(
            self._rows(), data.X_train, y_tr, data.X_val, gen, self._score,
            temperature=self.temperature, has_classes=hasattr(self, "classes_"))
        self.validation_scores_ = self._validation_scores(data.X_val)  # finite, spread checked
        self.offset_ = _state.conformal_offset(self.validation_scores_, self.contamination)
        self._set_score_base(self._keep_held_out(data.X_val))  # what set_params may change
        self._checkpoint()  # (with checkpoint_dir) the complete detector, threshold included

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan, tags.input_tags.sparse = False, True  # sparse: densified
        tags.non_deterministic = self.random_state is None
        return tags


_persistence._ESTIMATOR_CLASS = AOEDetector  # what aoe_detect.persistence.load builds by default
