"""The training-time attack on the deployed score (``attack__target="deployed"``, issue 18).

By default fine-tuning's attack lowers the backbone's energy ``E(x)``, while the detector
deploys ``ood_score`` (standardised energy + Mahalanobis by default). With an attack whose
``target`` is ``"deployed"``, :class:`DeployedTarget` gives the outlier feed, at the start
of every fine-tuning epoch, a :class:`~aoe_detect.scores.ScoreHead` of the current model
and a scorer fitted by :func:`aoe_detect._scoring.fit_scorer` (the function that fits the
deployed score after training; the formulas live in :mod:`aoe_detect.scores` only) on at
most :data:`DEPLOYED_ROWS` training rows: the first half of the drawn rows fit the
statistics (class means and shared precision, k-NN bank), the second half standardise the
terms of a sum, as held-out rows do after training. The attacks lower the energy of the
head's one output column ``s``, i.e. ``-s``: they raise the deployed score (outliers made to
look in-distribution) or, ``direction=+1``, lower it (ID rows pushed toward OOD).

The rows are drawn with a generator seeded from the fit's seed (the training generator's
stream is not consumed, the global RNG never touched); the statistics are estimated in eval
mode and every module's mode is restored. For ``ood_score="energy"`` the deployed score *is*
the energy: no head is built and the fit is the energy target's, bit for bit.
"""

from __future__ import annotations

import torch

from ._scoring import fit_scorer
from ._torch_utils import steps_per_epoch
from .attacks import eval_mode
from .scores import ScoreHead

__all__ = ["DEPLOYED_ROWS", "DeployedTarget", "deployed_target"]

#: At most this many training rows estimate the deployed score's statistics per epoch.
DEPLOYED_ROWS = 2000


def _subset(X, idx):
    """Rows ``idx`` (sorted positions) of a float32 tensor or a Dataset view."""
    return X[idx] if isinstance(X, torch.Tensor) else X.view(idx.numpy())


class DeployedTarget:
    """The model (and temperature) the training attack runs on when it targets the
    deployed score: a :class:`ScoreHead` re-fitted every ``period`` outlier batches."""

    def __init__(self, rows, X, labels, ood_score, *, temperature, has_classes, period, seed,
                 max_rows=DEPLOYED_ROWS):
        self.rows, self.X, self.labels, self.ood_score = rows, X, labels, ood_score
        self.temperature, self.has_classes = temperature, has_classes
        self.period, self.max_rows = max(1, int(period)), int(max_rows)
        self.generator = torch.Generator().manual_seed(int(seed))
        self.head, self.refits, self._calls, self.n_rows = None, 0, 0, (0, 0)

    def tick(self):
        """One training step (outlier batch): the head is re-fitted at the first step of
        each epoch (every ``period`` steps)."""
        if self._calls % self.period == 0:
            self.head = None
        self._calls += 1

    def model(self):
        """``(model, temperature)`` for the attack: the current score head, temperature 1
        (the energy of its one column ``s`` is ``-s``)."""
        if self.head is None:
            self.head = self._fit()
            self.refits += 1
        return self.head, 1.0

    def _fit(self):
        n = len(self.X)
        m = min(n, self.max_rows)
        idx = torch.randperm(n, generator=self.generator)[:m]
        half = m - m // 2 if m > 1 else 1
        fit_idx, norm_idx = idx[:half].sort().values, idx[half:].sort().values
        if len(norm_idx) == 0:
            norm_idx = fit_idx
        self.n_rows = (len(fit_idx), len(norm_idx))
        labels = None if self.labels is None else self.labels[fit_idx]
        module = self.rows.module
        with eval_mode(module):
            scorer = fit_scorer(self.rows, _subset(self.X, fit_idx), labels,
                                _subset(self.X, norm_idx), self.generator, self.ood_score,
                                temperature=self.temperature, has_classes=self.has_classes)
            scorer.eval()
            head = ScoreHead(module, scorer, self.ood_score.feature_layer)
        return head


def deployed_target(attack, stage, rows, labels, ood_score, *, temperature, has_classes):
    """The :class:`DeployedTarget` of a fine-tuning ``stage`` whose attack targets the
    deployed score, or None (no attack, ``target="energy"``, or the energy score, whose
    head would be the backbone's energy itself)."""
    if attack is None or getattr(attack, "target", "energy") != "deployed" \
            or stage.feed is None or ood_score.name == "energy":
        return None
    period = steps_per_epoch(len(stage.X), stage.options.batch_size, stage.world)
    seed = (stage.generator.initial_seed() + 3) % (2**31 - 1)
    return DeployedTarget(rows, stage.X, labels, ood_score, temperature=temperature,
                          has_classes=has_classes, period=period, seed=seed)
