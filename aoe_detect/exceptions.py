"""The package's warnings and errors, in one place.

Each class is also importable from the module that raises it (its former home), as the
same class object: ``aoe_detect.detector.NonFiniteLossWarning is
aoe_detect.exceptions.NonFiniteLossWarning``.
"""

from __future__ import annotations

__all__ = ["NonFiniteLossWarning", "TrainingInterruptedWarning", "CalibrationWarning",
           "NoClassesError", "NonFiniteLossError", "CLIError", "StaleScoreError",
           "NonFiniteScoreWarning", "RobustnessWarning",
           "InvertedScoreWarning"]


class NonFiniteLossWarning(RuntimeWarning):
    """Training stopped because the loss became NaN/inf; the last finite weights are kept."""


class TrainingInterruptedWarning(RuntimeWarning):
    """``fit`` was interrupted (KeyboardInterrupt); the last completed epoch is kept."""


class CalibrationWarning(UserWarning):
    """The held-out set is too small for the requested ``contamination``: ``offset_`` has no
    finite-sample guarantee (it is the smallest held-out score)."""


class RobustnessWarning(UserWarning):
    """:func:`aoe_detect.robustness.robust_ood_report` found a sign of a masked or weak
    attack (see its diagnostics): the robust AUROC it reports may be overstated."""


class InvertedScoreWarning(UserWarning):
    """After ``fit``, the energy ranks the held-out synthetic outliers of ``history_`` as more
    in-distribution than the held-out ID rows (``val_auroc_<family>`` below 0.5): the fit
    is suspect (refit with another ``random_state``, or check the inputs' scaling)."""


class NoClassesError(AttributeError, ValueError):
    """``predict_proba``/``predict_class`` on a detector fitted without class labels (an
    ``AttributeError``, scikit-learn's convention for an unavailable method, and a
    ``ValueError``)."""


class NonFiniteLossError(FloatingPointError):
    """Raised inside the training loop when the loss becomes NaN or infinite (``fit``
    catches it, restores the last finite weights and warns with
    :class:`NonFiniteLossWarning`)."""


class CLIError(Exception):
    """An expected error of the ``aoe-detect`` command line, printed as one line."""


class StaleScoreError(ValueError):
    """A parameter that shapes the fitted score (``ood_score``, ``ood_score__feature_layer``,
    ``ood_score__max_samples``; ``temperature`` or ``ood_score__k`` without the kept held-out outputs) was
    changed by ``set_params`` after ``fit``: the fitted statistics no longer belong to it, so
    the detector refuses to score (or save) instead of scoring with the old statistics."""


class NonFiniteScoreWarning(RuntimeWarning):
    """Some scores were NaN or infinite even in float64 (extreme inputs); they were set to
    ``-inf`` (most out-of-distribution), so ``predict`` says -1 for those rows."""
