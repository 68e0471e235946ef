"""The energy score and the outlier-exposure losses.

One :func:`energy` function is shared by the losses, the attacks and scoring, so the three
cannot drift apart.

References
----------
.. [1] W. Liu, X. Wang, J. Owens, Y. Li. "Energy-based Out-of-distribution Detection."
   NeurIPS 2020.
.. [2] D. Hendrycks, M. Mazeika, T. Dietterich. "Deep Anomaly Detection with Outlier
   Exposure." ICLR 2019.
.. [3] T. Botschen, K. Kirchheim, F. Ortmeier. "Out-of-Distribution Detection with
   Adversarial Outlier Exposure." CVPR 2025 Workshops.
"""

from __future__ import annotations

from numbers import Real

import torch
import torch.nn.functional as F
from sklearn.base import BaseEstimator
from torch import nn

from ._compat import Interval, StrOptions

__all__ = ["energy", "EnergyMarginLoss", "SoftmaxOELoss", "CrossEntropyOnly", "LOSSES",
           "EnergyMargin", "SoftmaxOE", "LOSS_CONFIGS", "loss_settings"]

#: Bound of margins ``|m_in|, |m_out|`` (energies are logit-scale: Liu et al. use -25/-7);
#: beyond it the squared hinge terms overflow and training diverges.
MAX_MARGIN = 1e4


def energy(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Free energy of logits: ``E(x) = -T * logsumexp(f(x) / T)`` over the last dimension.

    Low energy = in-distribution. ``score_samples`` of the detector returns ``-E(x)``.

    Parameters
    ----------
    logits : torch.Tensor of shape (n, n_classes)
    temperature : float, default=1.0

    Returns
    -------
    torch.Tensor of shape (n,)
        Computed in at least float32 (half-precision logits are upcast first).

    Examples
    --------
    >>> import torch
    >>> round(float(energy(torch.tensor([[0.0, 0.0]]))[0]), 4)  # -log(2)
    -0.6931
    """
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()
    return -temperature * torch.logsumexp(logits / temperature, dim=-1)


def _ce(logits_in, y_in):
    if y_in is None:
        return logits_in.new_zeros(())
    return F.cross_entropy(logits_in.float(), y_in)


class EnergyMarginLoss(nn.Module):
    r"""Energy-margin outlier-exposure loss (Liu et al. 2020), as used by AOE.

    .. math::

        \mathcal{L} = \mathrm{CE}(f(x_{in}), y)
          + \lambda \Big( \tfrac{1}{N_{in}}\sum \max(0, E(x_{in}) - m_{in})^2
          + \tfrac{1}{N_{out}}\sum \max(0, m_{out} - E(x_{out}))^2 \Big)

    with two separate means, one per part. ``y=None`` drops the cross-entropy term
    (label-free training).

    Parameters
    ----------
    lam : float, default=0.1
    m_in, m_out : float
        Energy margins; ID energies are pushed below ``m_in``, outlier energies above
        ``m_out``.
    temperature : float, default=1.0

    Returns (forward)
    -----------------
    total : scalar tensor
    parts : dict of float
        ``ce``, ``energy_in`` (the squared-hinge mean for ID), ``energy_out`` (for outliers).
    """

    def __init__(self, lam=0.1, m_in=-25.0, m_out=-7.0, temperature=1.0):
        super().__init__()
        self.lam, self.m_in, self.m_out, self.temperature = lam, m_in, m_out, temperature

    def forward(self, logits_in, y_in, logits_out):
        ce = _ce(logits_in, y_in)
        e_in = energy(logits_in, self.temperature)
        l_in = F.relu(e_in - self.m_in).pow(2).mean()
        if logits_out is None or len(logits_out) == 0:
            l_out = logits_in.new_zeros(())
        else:
            l_out = F.relu(self.m_out - energy(logits_out, self.temperature)).pow(2).mean()
        total = ce + self.lam * (l_in + l_out)
        return total, {"ce": ce.detach(), "energy_in": l_in.detach(), "energy_out": l_out.detach()}


class SoftmaxOELoss(nn.Module):
    r"""Softmax outlier-exposure loss of Hendrycks et al. (2019).

    .. math::

        \mathcal{L} = \mathrm{CE}(f(x_{in}), y)
          + \lambda \tfrac{1}{N_{out}} \sum -\tfrac{1}{K}\sum_k \log\mathrm{softmax}(f(x_{out}))_k

    i.e. cross-entropy of the outliers' predictions to the uniform distribution over the
    ``K`` classes. Hendrycks et al. use ``lam=0.5``.
    """

    def __init__(self, lam=0.5):
        super().__init__()
        self.lam = lam

    def forward(self, logits_in, y_in, logits_out):
        ce = _ce(logits_in, y_in)
        if logits_out is None or len(logits_out) == 0:
            l_out = logits_in.new_zeros(())
        else:
            l_out = -F.log_softmax(logits_out.float(), dim=1).mean(dim=1).mean()
        total = ce + self.lam * l_out
        zero = logits_in.new_zeros(())
        return total, {"ce": ce.detach(), "energy_in": zero, "energy_out": l_out.detach()}


class CrossEntropyOnly(nn.Module):
    """Plain cross-entropy on the ID batch; outliers are ignored (the no-OE baseline)."""

    def forward(self, logits_in, y_in, logits_out=None):
        ce = _ce(logits_in, y_in)
        zero = logits_in.new_zeros(())
        return ce, {"ce": ce.detach(), "energy_in": zero, "energy_out": zero}


LOSSES = ("energy", "softmax")


_LAM = [Interval(Real, 0, None, closed="left"), StrOptions({"auto"}), None]
_MARGIN = [Interval(Real, -MAX_MARGIN, MAX_MARGIN, closed="both"), StrOptions({"auto"}), None]


class EnergyMargin(BaseEstimator):
    """Settings of the energy-margin loss (:class:`EnergyMarginLoss`) for
    ``AOEDetector(loss=EnergyMargin(...))``, clonable and grid-searchable (``loss__lam``,
    ``loss__m_in``, ``loss__m_out``).

    Parameters
    ----------
    lam : float, "auto" or None, default=None
        Weight of the outlier term; ``None`` or ``"auto"``: 0.1 (Liu et al.).
    m_in, m_out : float, "auto" or None, default=None
        Energy margins; ``None`` or ``"auto"``: ``m_in`` is the median energy of the ID
        training data when outlier exposure starts and ``m_out = m_in + 2`` (energy is a
        negative log-density up to a constant, so outliers are asked to be e^2 times less
        likely than a typical ID input). The margins thus follow the backbone's own energy
        level; Liu et al.'s fixed -25/-7 fit CIFAR-scale WRN logits only.

    Examples
    --------
    >>> from aoe_detect import AOEDetector
    >>> det = AOEDetector(loss=EnergyMargin(m_in=-8.0, m_out=-4.0))
    >>> det.set_params(loss__lam=0.2).loss
    EnergyMargin(lam=0.2, m_in=-8.0, m_out=-4.0)
    """

    name = "energy"
    _parameter_constraints = {"lam": _LAM, "m_in": _MARGIN, "m_out": _MARGIN}

    def __init__(self, lam=None, m_in=None, m_out=None):
        self.lam = lam
        self.m_in = m_in
        self.m_out = m_out


class SoftmaxOE(BaseEstimator):
    """Settings of the softmax OE loss (:class:`SoftmaxOELoss`) for
    ``AOEDetector(loss=SoftmaxOE(lam=...))`` (``loss__lam``); ``lam=None`` or ``"auto"``:
    0.5 (Hendrycks et al.)."""

    name = "softmax"
    _parameter_constraints = {"lam": _LAM}

    def __init__(self, lam=None):
        self.lam = lam


#: The loss objects by the name of the string ``loss`` they configure.
LOSS_CONFIGS = {"energy": EnergyMargin, "softmax": SoftmaxOE}


def loss_settings(loss):
    """The one place where the loss's settings are read: ``(name, lam, m_in, m_out)`` from
    ``loss`` (a name of :data:`LOSSES` or a loss object); a setting that is None, or that
    the loss does not have, is ``"auto"`` (resolved later, by ``fit``)."""
    if isinstance(loss, str):
        return loss, "auto", "auto", "auto"
    own = loss.get_params(deep=False)
    pick = ["auto" if own.get(k) is None else own[k] for k in ("lam", "m_in", "m_out")]
    return (loss.name, *pick)
