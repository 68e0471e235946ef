"""Adversarial perturbations on the energy score (FGSM / PGD) and Gaussian augmentation.

An attack is a pure function of ``(model, x)``: it takes gradients with
``torch.autograd.grad`` with respect to the input only, runs the model in eval mode, never
modifies ``x`` in place, and leaves every module's ``training`` flag and every parameter's
``requires_grad`` and ``.grad`` exactly as it found them. The result is detached, inside the
``eps``-ball around ``x`` (L-infinity) and inside the clip range.

``direction=-1`` (the default) moves inputs toward *lower* energy, i.e. makes outliers
look in-distribution: the AOE augmentation ``x - eps * sign(grad_x E(x))`` and the
adversary against an OOD detector. ``direction=+1`` moves toward higher energy.

Thin sklearn-style config classes (:class:`FGSM`, :class:`PGD`, :class:`GaussianAugment`)
carry the parameters so ``AOEDetector(attack=PGD(steps=5))`` can be cloned and grid
searched (``attack__steps``).

References
----------
.. [1] I. Goodfellow, J. Shlens, C. Szegedy. "Explaining and Harnessing Adversarial
   Examples." ICLR 2015 (FGSM).
.. [2] A. Madry et al. "Towards Deep Learning Models Resistant to Adversarial Attacks."
   ICLR 2018 (PGD).
.. [3] T. Botschen, K. Kirchheim, F. Ortmeier. "Out-of-Distribution Detection with
   Adversarial Outlier Exposure." CVPR 2025 Workshops.
.. [4] J. Chen, Y. Li, X. Wu, Y. Liang, S. Jha. "Robust Out-of-distribution Detection for
   Neural Networks." arXiv:2003.09711, 2020 (ALOE: adversarial training on both the ID
   inputs and the outliers).
.. [5] J. Chen, Y. Li, X. Wu, Y. Liang, S. Jha. "ATOM: Robustifying Out-of-distribution
   Detection Using Outlier Mining." ECML PKDD 2021.
"""

from __future__ import annotations

from contextlib import contextmanager
from numbers import Integral, Real

import numpy as np
import torch
from sklearn.base import BaseEstimator

from ._compat import Interval, StrOptions
from ._validation import check_epsilon
from .losses import energy

__all__ = ["fgsm", "pgd", "gaussian_augment", "FGSM", "PGD", "GaussianAugment", "ATTACKS",
           "resolve_attack", "eval_mode"]

#: Default FGSM/PGD radius for images in [0, 1]: the standard L-inf budget 8/255.
AUTO_IMAGE_EPS = 8.0 / 255.0
#: Default radius for tabular data, as a fraction of each feature's standard deviation.
AUTO_TABULAR_EPS = 0.1


@contextmanager
def eval_mode(model: torch.nn.Module):
    """Put ``model`` in eval mode with parameters frozen; restore everything afterwards.

    Restores each module's ``training`` flag, each parameter's ``requires_grad`` and leaves
    ``.grad`` untouched (gradients are taken with ``torch.autograd.grad`` w.r.t. the input).
    """
    modes = [(m, m.training) for m in model.modules()]
    flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        model.eval()
        for p, _ in flags:
            p.requires_grad_(False)
        yield model
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        for m, mode in modes:
            m.training = mode


def _as_bound(v, like):
    return v if not isinstance(v, torch.Tensor) else v.to(like.device, like.dtype)


def _project(x_adv, x, eps, clip):
    x_adv = torch.maximum(torch.minimum(x_adv, x + eps), x - eps)
    if clip is not None:
        x_adv = x_adv.clamp(clip[0], clip[1])
    return x_adv


#: Factor applied to the summed energy before the backward pass under float16 autocast, so
#: the input gradient does not underflow to zero in half precision (only its sign is used,
#: which scaling leaves unchanged).
FP16_GRAD_SCALE = 2.0 ** 12
#: Under float16, samples whose scaled input gradient has no component of at least this
#: size (so that components ~2^-14 times smaller would have underflowed), or a non-finite
#: one, are recomputed in float32.
FP16_MIN_GRAD = 2.0 ** -10


def _energy_and_grad(model, x, temperature, autocast_dtype=None):
    """Per-sample energies ``E(x)`` (float32, detached) and ``grad_x sum E(x)``."""
    scale = FP16_GRAD_SCALE if autocast_dtype == torch.float16 else None
    with torch.enable_grad():  # also works when the caller is under torch.no_grad()
        x = x.detach().requires_grad_(True)
        with torch.autocast(x.device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            logits = model(x)
        # sum of per-sample energies (float32): each sample's gradient is its own
        e = energy(logits.float(), temperature)
        total = e.sum()
        (grad,) = torch.autograd.grad(total if scale is None else total * scale, x)
    if scale is not None:
        flat = grad.reshape(len(grad), -1)
        bad = ~torch.isfinite(flat).all(1) | (flat.abs().amax(1) < FP16_MIN_GRAD)
        if bool(bad.any()):  # overflow or (partial) underflow: redo those samples in float32
            _, exact = _energy_and_grad(model, x[bad].detach(), temperature, None)
            grad = grad.clone()
            grad[bad] = exact
    return e.detach(), grad


def _energy_grad_sign(model, x, temperature, autocast_dtype=None):
    return _energy_and_grad(model, x, temperature, autocast_dtype)[1].sign()


def _energies(model, x, temperature, autocast_dtype=None):
    """Per-sample energies ``E(x)`` (float32), without a gradient."""
    with torch.no_grad():
        with torch.autocast(x.device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            logits = model(x)
        return energy(logits.float(), temperature)


def _keep_better(best, best_e, x, e, direction):
    """Per sample, the iterate with the lower (direction -1) or higher (+1) energy."""
    if best is None:
        return x.clone(), e.clone()
    better = (e - best_e) * -direction < 0
    shape = (-1,) + (1,) * (x.dim() - 1)
    return torch.where(better.view(shape), x, best), torch.where(better, e, best_e)


def _start(x, eps, clip, generator):
    """A uniform random point of the ``eps``-ball around ``x`` (noise drawn on the CPU)."""
    noise = torch.rand(x.shape, generator=generator, dtype=x.dtype).to(x.device)
    return _project(x + (2 * noise - 1) * eps, x, eps, clip)


def _still_moving(e, early_stop, direction, active, xa, grad, n):
    """Drop the rows whose energy ``e`` (of this step's forward pass: no extra pass) reached
    ``early_stop``; returns the remaining row indices, inputs and gradients."""
    done = (e - early_stop) * -direction <= 0
    if not bool(done.any()):
        return active, xa, grad
    rows = torch.arange(n, device=xa.device) if active is None else active
    return rows[~done], xa[~done], grad[~done]


def _step(x_adv, xa, x, active, delta, eps, clip):
    """One projected step of the rows still moving (``active``; ``None``: all)."""
    if active is None:
        return _project(x_adv + delta, x, eps, clip)
    x_adv = x_adv.clone()
    x_adv[active] = _project(xa + delta, x[active], eps, clip)
    return x_adv


def pgd(model, x, eps, *, steps=10, step_size=None, random_start=True, clip=None,
        temperature=1.0, direction=-1, generator=None, early_stop=None, autocast_dtype=None,
        keep_best=False, trace=None):
    """Projected gradient descent on the energy within an L-infinity ``eps``-ball.

    Each step: ``x <- proj(x + direction * step_size * sign(grad_x E(x)))``.

    Parameters
    ----------
    model : torch.nn.Module
        Maps inputs to logits.
    x : torch.Tensor of shape (n, ...)
        Inputs (not modified).
    eps : float or torch.Tensor broadcastable to one sample
        Radius of the L-infinity ball, in input units. ``eps=0`` returns a copy of ``x``.
    steps : int, default=10
    step_size : float, optional
        Default ``2.5 * eps / steps`` (Madry et al.).
    random_start : bool, default=True
        Start at a uniform random point of the ball (drawn with ``generator``).
    clip : (float, float) or None
        Valid input range; ``None`` for unbounded (tabular) inputs.
    temperature : float, default=1.0
    direction : {-1, +1}, default=-1
        -1 lowers the energy (outliers look in-distribution).
    generator : torch.Generator, optional
        For the random start (on CPU; the noise is moved to ``x``'s device).
    early_stop : float, optional
        Per-sample early stop: a sample whose energy is at or below (direction -1; above
        for +1) this value after a step stops moving; the attack ends once all have (at
        least one step; no extra forward pass). ``early_stop=m_in``: outliers stop once they
        look as in-distribution as the ID margin (``docs/scaling.md``).
    autocast_dtype : torch.dtype, optional
        Forward under autocast; the energy in float32 from the logits. Under float16 the
        energy is scaled by :data:`FP16_GRAD_SCALE` before the backward pass (the gradient's
        sign is what matters); samples whose gradient is still tiny (below
        :data:`FP16_MIN_GRAD`) or non-finite are recomputed in float32.
    keep_best : bool, default=False
        Return, per sample, the best iterate visited (start and last included; one more
        forward pass) instead of the last one, as robust evaluations do (sign steps can
        overshoot). Not combinable with ``early_stop``.
    trace : list, optional
        Every forward pass appends its per-sample energies (CPU): entry ``k`` is the iterate
        after ``k`` steps (the last one only with ``keep_best``); for convergence checks.

    Returns
    -------
    torch.Tensor, same shape, dtype and device as ``x``, detached.
    """
    if keep_best and early_stop is not None:
        raise ValueError("`keep_best` cannot be combined with `early_stop` (early-stopped "
                         "samples are not evaluated again).")
    x = x.detach()
    eps = _as_bound(eps, x)
    if isinstance(eps, (int, float)) and eps == 0:
        return x.clone()
    step_size = _as_bound(2.5 * eps / max(steps, 1) if step_size is None else step_size, x)
    with eval_mode(model):
        x_adv = _start(x, eps, clip, generator) if random_start else x.clone()
        active = None  # rows still moving under early_stop (None: all)
        best = best_e = None
        for step in range(steps):
            xa = x_adv if active is None else x_adv[active]
            e, grad = _energy_and_grad(model, xa, temperature, autocast_dtype)
            if trace is not None:
                trace.append(e.cpu())
            if keep_best:
                best, best_e = _keep_better(best, best_e, xa, e, direction)
            if early_stop is not None and step > 0:
                active, xa, grad = _still_moving(e, early_stop, direction, active, xa, grad, len(x))
                if active is not None and len(active) == 0:
                    break
            x_adv = _step(x_adv, xa, x, active, direction * step_size * grad.sign(), eps, clip)
        if keep_best:  # the last iterate is judged too
            e = _energies(model, x_adv, temperature, autocast_dtype)
            if trace is not None:
                trace.append(e.cpu())
            x_adv, _ = _keep_better(best, best_e, x_adv, e, direction)
    return x_adv.detach()


def fgsm(model, x, eps, *, clip=None, temperature=1.0, direction=-1, autocast_dtype=None):
    """FGSM on the energy: ``clip(x + direction * eps * sign(grad_x E(x)))``.

    With the default ``direction=-1`` this is the AOE augmentation
    ``x - eps * sign(grad_x E(x))`` (toward lower energy, i.e. more in-distribution).

    Parameters
    ----------
    model : torch.nn.Module
    x : torch.Tensor of shape (n, ...)
        Inputs (not modified).
    eps : float or torch.Tensor
        Step size, in input units.
    clip : (float, float) or None
    temperature : float, default=1.0
    direction : {-1, +1}, default=-1
    autocast_dtype : torch.dtype, optional

    Returns
    -------
    torch.Tensor, same shape as ``x``, detached, with ``||x_adv - x||_inf <= eps``.
    """
    return pgd(model, x, eps, steps=1, step_size=eps, random_start=False, clip=clip,
               temperature=temperature, direction=direction, autocast_dtype=autocast_dtype)


def gaussian_augment(x, sigma, *, clip=None, generator=None):
    """Add ``N(0, sigma^2)`` noise (the "OE + Gaussian noise" baseline); clipped, detached."""
    noise = torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)
    out = x.detach() + _as_bound(sigma, x) * noise
    return out.clamp(clip[0], clip[1]) if clip is not None else out


#: Radius constraint of every attack config: finite, >= 0 (scalar or one per feature), or
#: None ("auto"); checked by ``AOEDetector.fit`` and ``perturb``.
_EPS = [Interval(Real, 0, float(np.finfo(np.float32).max), closed="both"), "array-like", None]
#: Which inputs the training loop attacks: the outliers only, or the ID batch as well.
_SIDES = [StrOptions({"ood", "both"})]
#: What the training-time attack lowers: the backbone's energy, or minus the deployed score.
_TARGETS = [StrOptions({"energy", "deployed"})]

#: The training schedule every attack config carries (used by ``AOEDetector.fit`` only).
_SCHEDULE = {"fraction": [Interval(Real, 0, 1, closed="both")],
             "refresh": [Interval(Integral, 1, None, closed="left")]}

_SCHEDULE_DOC = """fraction : float in [0, 1], default=1.0
        Share of each training outlier batch that is attacked (1.0 = the paper).
    refresh : int, default=1
        Perturb a fresh outlier batch every ``refresh`` training steps and train on that
        cached batch in between (1: every step, the paper); ``k`` cuts the attack's cost to
        ``1/k`` (``docs/scaling.md`` has the measured trade-off)."""


class _Attack(BaseEstimator):
    """Base of attack configs: ``perturb(model, x, eps, clip, temperature, generator,
    autocast_dtype, direction)``.

    ``eps=None`` means "auto" (``AUTO_IMAGE_EPS`` for images, ``AUTO_TABULAR_EPS *`` each
    feature's standard deviation for tables; or the ``epsilon`` given to ``perturb``).
    ``fraction`` and ``refresh`` are the training schedule of the attack inside
    ``AOEDetector.fit`` (``attack__fraction``, ``attack__refresh``). Subclasses declare
    ``_parameter_constraints``; ``AOEDetector.fit`` and ``perturb`` check them
    (``attack._validate_params()``) before any work. ``sides`` (FGSM, PGD) says which
    inputs fine-tuning attacks: the outliers only (``"ood"``) or the ID batch as well
    (``"both"``, read by the training loop; ``perturb`` itself ignores it).
    """

    _parameter_constraints = {"eps": _EPS, **_SCHEDULE}

    def resolve_eps(self, default):
        return default if self.eps is None else self.eps


class FGSM(_Attack):
    r"""FGSM toward lower energy (the AOE paper's augmentation). See :func:`fgsm`.

    Parameters
    ----------
    eps : float, array-like of shape (n_features,) or None, default=None
        Radius in input units; None: "auto".
    {schedule}
    sides : {"ood", "both"}, default="ood"
        Which inputs fine-tuning trains on adversarially. ``"ood"``: the outliers only
        (AOE, :math:`\tilde x_{out} = x_{out} - \epsilon\,\mathrm{sign}\nabla_x E(x_{out})`).
        ``"both"``, in the spirit of ALOE (Chen et al. 2020) and ATOM (Chen et al. 2021), module references: every fine-tuning step also
        perturbs the ID batch toward *higher* energy with the same attack and radius,
        :math:`\tilde x_{in} = x_{in} + \epsilon\,\mathrm{sign}\nabla_x E(x_{in})`
        (``direction=+1``, eval mode, input clip respected), and trains on it instead of
        the clean rows:

        .. math::

            \mathrm{CE}(f(\tilde x_{in}), y) + \lambda \Big(\tfrac{1}{N_{in}}\sum
            \max(0, E(\tilde x_{in}) - m_{in})^2 + \tfrac{1}{N_{out}}\sum
            \max(0, m_{out} - E(\tilde x_{out}))^2\Big)

        (all ID rows are perturbed; ``fraction`` applies to the outliers only).
        One more attack per step; it targets robustness to ID inputs pushed toward OOD
        (``docs/robustness.md`` gives its measured cost and effect). Pretraining is
        unaffected.
    target : {"energy", "deployed"}, default="energy"
        What fine-tuning's attack lowers. ``"energy"``: the backbone's energy
        :math:`E(x)` (the paper). ``"deployed"``: minus the score the detector deploys
        (``ood_score``, e.g. standardised energy + Mahalanobis): at the start of every
        fine-tuning epoch its statistics (class means and shared precision, k-NN bank,
        the standardisation of each term of a sum) are re-estimated from the current
        model on at most :data:`~aoe_detect._deployed.DEPLOYED_ROWS` training rows (drawn
        with the fit's own seed; half fit the statistics, half standardise), with the
        package's own scorer classes, and the attack runs on the resulting
        :class:`~aoe_detect.scores.ScoreHead`. For ``ood_score="energy"`` both targets are
        the same. ``perturb`` always attacks the deployed score and ignores it.
    """

    _parameter_constraints = {"eps": _EPS, **_SCHEDULE, "sides": _SIDES, "target": _TARGETS}

    def __init__(self, eps=None, fraction=1.0, refresh=1, sides="ood", target="energy"):
        self.eps = eps
        self.fraction = fraction
        self.refresh = refresh
        self.sides = sides
        self.target = target

    def perturb(self, model, x, eps, clip=None, temperature=1.0, generator=None,
                autocast_dtype=None, direction=-1):
        return fgsm(model, x, eps, clip=clip, temperature=temperature, direction=direction,
                    autocast_dtype=autocast_dtype)


class PGD(_Attack):
    """PGD toward lower energy. See :func:`pgd`.

    Parameters
    ----------
    eps : float, array-like of shape (n_features,) or None, default=None
        Radius in input units; None: "auto".
    steps : int, default=10
    step_size : float, optional
        Default ``2.5 * eps / steps``.
    random_start : bool, default=True
    early_stop : float, optional
        Per-sample early stop: a sample stops moving once its energy is at or below this
        value, and the attack ends when all have (see :func:`pgd`). Saves the later steps'
        compute on the samples that are done.
    {schedule}
    sides : {"ood", "both"}, default="ood"
        ``"both"``: fine-tuning also trains on the ID batch perturbed by this PGD toward
        higher energy (``direction=+1``; ALOE / ATOM style, the formula in
        :class:`FGSM`); ``early_stop`` applies to the outliers only. ``"ood"``: outliers
        only.
    target : {"energy", "deployed"}, default="energy"
        What fine-tuning's attack lowers: the backbone's energy, or minus the deployed
        score (see :class:`FGSM`; ``early_stop`` is then a threshold on minus that score).
    """

    _parameter_constraints = {
        "eps": _EPS, **_SCHEDULE,
        "steps": [Interval(Integral, 1, None, closed="left")],
        "step_size": [Interval(Real, 0, float(np.finfo(np.float32).max), closed="right"), None],
        "random_start": ["boolean"],
        "early_stop": [Interval(Real, None, None, closed="neither"), None],
        "sides": _SIDES,
        "target": _TARGETS,
    }

    def __init__(self, eps=None, steps=10, step_size=None, random_start=True, early_stop=None,
                 fraction=1.0, refresh=1, sides="ood", target="energy"):
        self.eps = eps
        self.steps = steps
        self.step_size = step_size
        self.random_start = random_start
        self.early_stop = early_stop
        self.fraction = fraction
        self.refresh = refresh
        self.sides = sides
        self.target = target

    def perturb(self, model, x, eps, clip=None, temperature=1.0, generator=None,
                autocast_dtype=None, direction=-1):
        return pgd(model, x, eps, steps=self.steps, step_size=self.step_size,
                   random_start=self.random_start, clip=clip, temperature=temperature,
                   direction=direction,
                   generator=generator, early_stop=self.early_stop,
                   autocast_dtype=autocast_dtype)


class GaussianAugment(_Attack):
    """Gaussian noise with ``sigma = eps`` (the paper's "OE + Gaussian noise" baseline).

    Parameters
    ----------
    eps : float, array-like of shape (n_features,) or None, default=None
        Noise standard deviation in input units; None: "auto" (as the attacks' radius).
    {schedule}
    """

    def __init__(self, eps=None, fraction=1.0, refresh=1):
        self.eps = eps
        self.fraction = fraction
        self.refresh = refresh

    def perturb(self, model, x, eps, clip=None, temperature=1.0, generator=None,
                autocast_dtype=None, direction=-1):
        return gaussian_augment(x, eps, clip=clip, generator=generator)


for _cls in (FGSM, PGD, GaussianAugment):
    _cls.__doc__ = _cls.__doc__.replace("{schedule}", _SCHEDULE_DOC)

#: Names accepted by ``AOEDetector(attack=...)``; ``None``/"none" = vanilla OE.
ATTACKS = {"fgsm": FGSM, "pgd": PGD, "gaussian": GaussianAugment}


def resolve_attack(attack):
    """Turn the ``attack`` parameter into a config object, or ``None`` (no attack)."""
    if attack is None or (isinstance(attack, str) and attack == "none"):
        return None
    if isinstance(attack, str):
        if attack not in ATTACKS:
            raise ValueError(f"Unknown `attack` {attack!r}; valid names are "
                             f"{sorted(['none', *ATTACKS])} or None, or an attack object.")
        return ATTACKS[attack]()
    if hasattr(attack, "perturb"):
        return attack
    raise TypeError(f"`attack` must be None, one of {sorted(['none', *ATTACKS])} or an object "
                    f"with a `perturb` method, got {type(attack).__name__}.")


def resolve_epsilon(epsilon, X_tr, sample_shape):
    """A radius (``perturb``'s ``epsilon``, or "auto") -> ``epsilon_``: a float as given, or for
    ``"auto"`` :data:`AUTO_IMAGE_EPS` for images and ``AUTO_TABULAR_EPS *`` each feature's
    standard deviation (of the float32 training tensor ``X_tr``) for tabular data."""
    if epsilon != "auto":
        return float(epsilon)
    if len(sample_shape) == 3:
        return AUTO_IMAGE_EPS
    return (AUTO_TABULAR_EPS * X_tr.std(0)).numpy().astype(np.float32)


def training_radius(attack, X_train, sample_shape, device):
    """``(radius the attack runs with, epsilon_)`` of a fit, decided once: the attack's own
    ``eps`` (``attack__eps``, validated against ``sample_shape``) or "auto" resolved on the
    training rows (:func:`resolve_epsilon`); without an attack, 0 and the "auto" radius
    (what ``perturb`` uses by default). ``epsilon_`` is thus what training used."""
    own = getattr(attack, "eps", None)
    if own is not None:  # attack__eps: "auto" is not needed
        return attack_radius(attack, None, sample_shape, device), check_epsilon(
            own, sample_shape, "attack__eps")
    auto = resolve_epsilon("auto", X_train, sample_shape)
    return (0.0 if attack is None else attack_radius(attack, auto, sample_shape, device)), auto


def attack_radius(attack, default, sample_shape, device):
    """The one place that decides the radius an attack runs with: the attack object's own
    ``eps`` (``attack__eps``, validated against ``sample_shape``) when set, else ``default``
    (the detector's ``epsilon_`` or the ``epsilon`` given to ``perturb``). Per-feature radii
    become float32 tensors on ``device``."""
    own = getattr(attack, "eps", None)
    eps = default if own is None else check_epsilon(own, sample_shape, "attack__eps")
    if isinstance(eps, np.ndarray):
        eps = torch.from_numpy(np.ascontiguousarray(eps, dtype=np.float32)).to(device)
    return eps
