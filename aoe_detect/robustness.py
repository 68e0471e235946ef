"""Adversarial robustness of a fitted detector, in one call: :func:`robust_ood_report`.

Threat model (white-box, adaptive, L-infinity): the adversary knows the fitted detector,
including the feature statistics and the standardisation of a sum score, and perturbs each
input within ``||x' - x||_inf <= eps`` inside the detector's ``input_range_``. The attacks
run through the very score the detector deploys (``ood_score``; the model and the score
head that :meth:`~aoe_detect.AOEDetector.perturb` uses), not through a surrogate such as
the energy alone. Sides:

- ``"ood"``: OOD inputs are pushed toward *higher* score (to look in-distribution);
- ``"id"``: ID inputs are pushed toward *lower* score (to be rejected);
- ``"both"``: both at once. In eval mode each input's score depends on that input only, so
  attacking both sets together is exactly the pair of per-input attacks of the two sides.

Attacks are :func:`aoe_detect.attacks.fgsm` and :func:`aoe_detect.attacks.pgd` (PGD with a
random start, ``restarts`` random restarts, the best iterate of each run kept); per input
the worst case over restarts is reported, and the row ``attack="worst"`` is the per-input
worst case over all attacks. AUROC and FPR@95 use :mod:`aoe_detect.metrics` (ID is the
positive class: an AUROC of 0.5 is chance, 0 means every attacked OOD input outscores every
ID input).

Diagnostics (after Carlini et al. 2019 and Athalye et al. 2018; each is recorded in
:attr:`RobustnessReport.diagnostics` and emitted as a
:class:`~aoe_detect.exceptions.RobustnessWarning`) flag an attack that may be masked or too
weak, so that a high robust AUROC is not taken at face value:

- ``large_eps``: at ``eps >= LARGE_EPS_FRACTION`` of the input range, the worst-case AUROC
  of the ``"ood"`` / ``"both"`` side is above :data:`NEAR_ZERO_AUROC`;
- ``pgd_weaker_than_fgsm``: a multi-step attack leaves a higher AUROC than FGSM at the
  same ``eps`` (by more than :data:`FGSM_TOLERANCE`);
- ``not_improving``: the attack objective did not improve for more than
  :data:`STUCK_FRACTION` of the inputs (zero or masked gradients);
- ``non_monotone``: the mean objective fell back by more than :data:`NON_MONOTONE_DROP`
  of its gain during a run (step size too large, or a noisy gradient);
- ``eps_non_monotone``: an attack found weaker examples at a radius than at a smaller one
  (it has not converged there). The examples of the smaller ball, which lie in the larger
  one, are carried over, so every reported curve falls monotonically with ``eps``.

References
----------
.. [1] A. Madry et al. "Towards Deep Learning Models Resistant to Adversarial Attacks."
   ICLR 2018.
.. [2] N. Carlini et al. "On Evaluating Adversarial Robustness." arXiv:1902.06705, 2019.
.. [3] A. Athalye, N. Carlini, D. Wagner. "Obfuscated Gradients Give a False Sense of
   Security." ICML 2018.
.. [4] J. Chen et al. "ATOM: Robustifying Out-of-Distribution Detection Using Outlier
   Mining." ECML PKDD 2021 (PGD-40 on both sides of an OOD detector).
"""

from __future__ import annotations

import numbers
import time
import warnings
import zlib
from dataclasses import dataclass, field

import numpy as np
import torch
from sklearn.utils.validation import check_is_fitted

from ._fit_steps import seed_from
from .attacks import FGSM, PGD, eval_mode, pgd
from .exceptions import RobustnessWarning
from .metrics import auroc, fpr_at_tpr

__all__ = ["robust_ood_report", "RobustnessReport", "AUTO_EPS", "SIDES",
           "LARGE_EPS_FRACTION", "NEAR_ZERO_AUROC", "FGSM_TOLERANCE", "STUCK_FRACTION",
           "NON_MONOTONE_DROP"]

#: ``eps="auto"``: radii as fractions of the width of ``input_range_`` (for images in
#: [0, 1]: clean, 0.01, 8/255 ~ 0.03, 0.1 and 0.3, the MNIST-scale budget).
AUTO_EPS = (0.0, 0.01, 8.0 / 255.0, 0.1, 0.3)
#: The attacked sides (see the module docstring).
SIDES = ("ood", "id", "both")
#: A radius of at least this fraction of the input range counts as large.
LARGE_EPS_FRACTION = 0.25
#: At a large radius a working attack should bring the AUROC at or below this.
NEAR_ZERO_AUROC = 0.1
#: PGD may leave a higher AUROC than FGSM by at most this much before it is flagged.
FGSM_TOLERANCE = 0.005
#: Flag an attack run whose objective did not improve for more than this share of inputs.
STUCK_FRACTION = 0.1
#: Flag a run whose mean objective fell back by more than this share of its gain.
NON_MONOTONE_DROP = 0.1

_DIRECTION = {"ood": -1, "id": +1}  # energy direction: -1 raises the score (toward ID)


@dataclass
class RobustnessReport:
    """The result of :func:`robust_ood_report`.

    Attributes
    ----------
    rows : list of dict
        One per ``(attack, eps, side)``, with keys ``attack``, ``eps``, ``side``, ``auroc``,
        ``fpr95`` (ID positive; FPR of OOD at 95% TPR of ID), ``n_id``, ``n_ood``. The
        attack ``"worst"`` is the per-input worst case over all attacks.
    diagnostics : list of dict
        Signs of a masked or weak attack: ``kind``, ``attack``, ``eps``, ``side``,
        ``message`` (empty when none fired).
    curves : dict
        ``"attack|eps|side"`` -> mean attack objective (the score, signed so that higher is
        better for the adversary) per PGD iterate, first restart.
    seconds : dict
        Wall-clock seconds per attack (all radii, sides and restarts).
    settings : dict
        The resolved arguments.
    scores : dict
        Per-input scores (float64, higher = more ID): ``"clean"`` and ``"attack|eps"`` ->
        ``{"id": ..., "ood": ...}`` (the attacked sets only), for other metrics or subsets.
    """

    rows: list = field(default_factory=list)
    diagnostics: list = field(default_factory=list)
    curves: dict = field(default_factory=dict)
    seconds: dict = field(default_factory=dict)
    settings: dict = field(default_factory=dict)
    scores: dict = field(default_factory=dict)

    def _find(self, eps, side, attack):
        for r in self.rows:
            if r["attack"] == attack and r["side"] == side and np.isclose(r["eps"], eps):
                return r
        raise KeyError(f"no row for attack={attack!r}, eps={eps!r}, side={side!r}; attacks: "
                       f"{self.attacks}, eps: {self.eps}, sides: {self.sides}.")

    def auroc(self, eps, side="both", attack="worst"):
        """AUROC (ID positive) of one row."""
        return self._find(eps, side, attack)["auroc"]

    def fpr95(self, eps, side="both", attack="worst"):
        """FPR@95 (ID positive) of one row."""
        return self._find(eps, side, attack)["fpr95"]

    @property
    def attacks(self):
        return list(dict.fromkeys(r["attack"] for r in self.rows))

    @property
    def eps(self):
        return sorted({r["eps"] for r in self.rows})

    @property
    def sides(self):
        return list(dict.fromkeys(r["side"] for r in self.rows))

    def table(self, metric="auroc"):
        """A Markdown table: one line per ``(side, attack)``, one column per ``eps``."""
        head = "| side | attack | " + " | ".join(f"eps {e:.4g}" for e in self.eps) + " |"
        lines = [head, "|---|---|" + "---|" * len(self.eps)]
        for side in self.sides:
            for att in self.attacks:
                cells = [f"{self._find(e, side, att)[metric]:.3f}" for e in self.eps]
                lines.append(f"| {side} | {att} | " + " | ".join(cells) + " |")
        return "\n".join(lines)

    def __str__(self):
        flags = [f"- {d['message']}" for d in self.diagnostics] or ["- none"]
        return "\n".join(["AUROC (ID positive)", self.table("auroc"), "",
                          "FPR@95 (ID positive)", self.table("fpr95"), "", "diagnostics:", *flags])


def _check_sequence(value, name, allowed=None):
    seq = [value] if isinstance(value, (str, numbers.Real)) or hasattr(value, "perturb") \
        else list(value) if isinstance(value, (list, tuple)) else None
    if not seq:
        raise ValueError(f"`{name}` must be a non-empty value or list/tuple, got {value!r}.")
    if allowed is not None and any(v not in allowed for v in seq):
        raise ValueError(f"`{name}` must be among {list(allowed)}, got {value!r}.")
    return seq


def _resolve_attacks(attack, steps, step_size):
    """``{label: FGSM | PGD}``; names use ``steps`` / ``step_size``; objects keep theirs."""
    out = {}
    for a in _check_sequence(attack, "attack"):
        if a == "pgd":
            label, obj = f"pgd{steps}", PGD(steps=steps, step_size=step_size)
        elif a == "fgsm":
            label, obj = "fgsm", FGSM()
        elif isinstance(a, (FGSM, PGD)):
            a._validate_params()
            label = "fgsm" if isinstance(a, FGSM) else f"pgd{a.steps}"
            obj = a
        else:
            raise ValueError(f"`attack` entries must be 'pgd', 'fgsm' or FGSM / PGD objects "
                             f"from aoe_detect.attacks, got {a!r}.")
        while label in out or label == "worst":
            label += "'"
        out[label] = obj
    return out


def _check_int(value, name, low):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise ValueError(f"`{name}` must be an integer >= {low}, got {value!r}.")
    return int(value)


def _resolve_eps(eps, input_range):
    if isinstance(eps, str) and eps == "auto":
        if input_range is None:
            raise ValueError("`eps='auto'` needs a bounded `input_range_` (images); give `eps` "
                             "explicitly, in the units of the inputs, for unbounded data.")
        width = float(input_range[1]) - float(input_range[0])
        return [e * width for e in AUTO_EPS]
    vals = _check_sequence(eps, "eps")
    if not all(isinstance(e, numbers.Real) and not isinstance(e, bool) and np.isfinite(e)
               and e >= 0 for e in vals):
        raise ValueError(f"`eps` must be 'auto' or finite radii >= 0, got {eps!r}.")
    return sorted({float(e) for e in vals})


def _checked_inputs(detector, X, name):
    try:
        Xt = detector._check_X_all(X)  # the checks of score_samples; a Dataset loaded in full
    except (ValueError, TypeError) as exc:
        raise type(exc)(f"`{name}`: {exc}") from None
    if len(Xt) < 1:
        raise ValueError(f"`{name}` must contain at least one sample.")
    return Xt


def _attack_rows(detector, att, Xt, eps, direction, gen, trace):
    """One run of ``att`` over ``Xt`` (batched, on the detector's device): the attacked
    inputs and, appended to ``trace``, the per-iterate energies of each batch."""
    model, temperature = detector._score_model()
    if isinstance(att, FGSM):
        kw = dict(steps=1, step_size=eps, random_start=False)
    else:
        kw = dict(steps=att.steps, step_size=att.step_size, random_start=att.random_start)
    out, b = [], detector._infer_batch()
    for start in range(0, len(Xt), b):
        steps = []
        out.append(pgd(model, Xt[start:start + b].to(detector.device_), eps,
                       clip=detector.input_range_, temperature=temperature, direction=direction,
                       generator=gen, keep_best=True, trace=steps, **kw).cpu())
        trace.append(torch.stack(steps))  # (n_iterates, batch)
    return torch.cat(out)


def _run_generator(seed, label, eps, side, restart):
    """A generator of its own for every run, so a run's random start does not depend on
    which other attacks, radii, sides or restarts were requested (restart 0 of
    ``restarts=k`` is the run of ``restarts=1``)."""
    key = [seed, zlib.crc32(label.encode()), int(round(eps * 1e9)), SIDES.index(side), restart]
    return torch.Generator().manual_seed(int(np.random.SeedSequence(key).generate_state(1)[0]))


def _attacked_scores(detector, att, Xt, eps, side, restarts, seed, report, label):
    """Per-input worst-case score over ``restarts`` runs (max for OOD inputs, min for ID)."""
    direction = _DIRECTION[side]
    runs = restarts if isinstance(att, PGD) and att.random_start else 1
    worst = None
    for r in range(runs):
        gen, trace = _run_generator(seed, label, eps, side, r), []
        x_adv = _attack_rows(detector, att, Xt, eps, direction, gen, trace)
        s = detector.score_samples(x_adv.numpy())
        worst = s if worst is None else _extreme(side)(worst, s)
        objective = (torch.cat(trace, 1) * direction).numpy()  # higher = better for the adversary
        _check_curve(objective, label, eps, side, report, record=r == 0)
    return worst


def _check_curve(objective, label, eps, side, report, record):
    """``not_improving`` and ``non_monotone`` diagnostics of one run's objective curve."""
    mean = objective.mean(1)
    if record:
        report.curves[f"{label}|{eps:.6g}|{side}"] = [float(v) for v in mean]
    if len(objective) < 2:
        return
    gain = objective.max(0) - objective[0]
    stuck = float(np.mean(gain <= 1e-6 * (1.0 + np.abs(objective[0]))))
    if stuck > STUCK_FRACTION:
        _flag(report, "not_improving", label, eps, side,
              f"{label} at eps {eps:.4g} ({side} side): the objective did not improve for "
              f"{stuck:.0%} of the inputs (zero or masked gradients?).")
    total = mean.max() - mean[0]
    drop = float(np.max(np.maximum.accumulate(mean) - mean))
    if len(objective) > 2 and total > 0 and drop > NON_MONOTONE_DROP * total:
        _flag(report, "non_monotone", label, eps, side,
              f"{label} at eps {eps:.4g} ({side} side): the mean objective fell back by "
              f"{drop:.3g} after gaining {total:.3g} (step size too large or noisy gradient; "
              f"the best iterate is kept, but try a smaller step_size or more restarts).")


def _flag(report, kind, attack, eps, side, message):
    if not any(d["kind"] == kind and d["attack"] == attack and d["eps"] == eps
               and d["side"] == side for d in report.diagnostics):
        report.diagnostics.append(dict(kind=kind, attack=attack, eps=eps, side=side,
                                       message=message))


def _row(attack, eps, side, s_id, s_ood, tpr):
    return dict(attack=attack, eps=eps, side=side, auroc=float(auroc(s_id, s_ood)),
                fpr95=float(fpr_at_tpr(s_id, s_ood, tpr)), n_id=len(s_id), n_ood=len(s_ood))


def _side_rows(label, eps, sides, clean, adv, tpr):
    """Rows of one attack at one radius: ``adv[side]`` are the attacked scores."""
    pairs = {"ood": (clean["id"], adv.get("ood")), "id": (adv.get("id"), clean["ood"]),
             "both": (adv.get("id"), adv.get("ood"))}
    return [_row(label, eps, s, *pairs[s], tpr) for s in sides]


def _cross_checks(report, labels, eps_list, sides, input_range):
    """``pgd_weaker_than_fgsm`` and ``large_eps`` diagnostics from the finished rows."""
    multi = [a for a in labels if a.startswith("pgd")]
    for e in eps_list:
        for side in sides:
            if "fgsm" in labels and e > 0:
                ref = report.auroc(e, side, "fgsm")
                for a in multi:
                    if report.auroc(e, side, a) > ref + FGSM_TOLERANCE:
                        _flag(report, "pgd_weaker_than_fgsm", a, e, side,
                              f"{a} at eps {e:.4g} ({side} side) leaves AUROC "
                              f"{report.auroc(e, side, a):.3f}, above FGSM's {ref:.3f}: the "
                              "multi-step attack is weak or masked (more steps, a larger "
                              "step_size or restarts).")
            large = input_range is not None and \
                e >= LARGE_EPS_FRACTION * (input_range[1] - input_range[0])
            if large and side in ("ood", "both") and report.auroc(e, side) > NEAR_ZERO_AUROC:
                _flag(report, "large_eps", "worst", e, side,
                      f"at the large eps {e:.4g} ({side} side) the worst-case AUROC is still "
                      f"{report.auroc(e, side):.3f} > {NEAR_ZERO_AUROC}: the attack may not "
                      "have converged or the gradient may be masked; check with more steps "
                      "and restarts before reading the small-eps numbers as robustness.")


def _extreme(side):
    return np.maximum if side == "ood" else np.minimum


def _side_auroc(side, scores, clean):
    return auroc(clean["id"], scores) if side == "ood" else auroc(scores, clean["ood"])


def _run_all(detector, attacks, eps_list, need, sides, inputs, clean, opt, report):
    """Every attack at every radius (ascending) on the sets in ``need``; rows into ``report``.

    A point of a smaller ball lies in every larger one, so per input the result at a radius
    is the worse of its own run and the result at the next smaller radius (the clean input
    at the start); when that carry-over changes the AUROC, the attack did not converge at
    the larger radius and ``eps_non_monotone`` is flagged."""
    prev = {label: clean for label in attacks}
    for e in eps_list:
        per_attack = {}
        for label, att in attacks.items():
            t0, adv = time.perf_counter(), {}
            for s in sorted(need):
                if e == 0:
                    adv[s] = clean[s].copy()
                    continue
                raw = _attacked_scores(detector, att, inputs[s], e, s, opt["restarts"],
                                       opt["seed"], report, label)
                adv[s] = _extreme(s)(raw, prev[label][s])
                gap = _side_auroc(s, raw, clean) - _side_auroc(s, adv[s], clean)
                if gap > FGSM_TOLERANCE:
                    _flag(report, "eps_non_monotone", label, e, s,
                          f"{label} at eps {e:.4g} ({s} side) found weaker examples than at a "
                          f"smaller radius (AUROC {gap:.3f} higher; those examples are carried "
                          "over): the attack has not converged at this radius (more steps, "
                          "restarts or another step size).")
            report.seconds[label] = report.seconds.get(label, 0.0) + time.perf_counter() - t0
            per_attack[label] = prev[label] = report.scores[f"{label}|{e:.6g}"] = adv
            report.rows += _side_rows(label, e, sides, clean, adv, opt["tpr"])
        worst = {s: _extreme(s).reduce([a[s] for a in per_attack.values()]) for s in need}
        report.scores[f"worst|{e:.6g}"] = worst
        report.rows += _side_rows("worst", e, sides, clean, worst, opt["tpr"])


def _check_args(detector, eps, attack, sides, steps, restarts, step_size, random_state, tpr):
    """Validated ``(sides, attacks, eps_list, restarts, seed)``; errors name the parameter."""
    sides = _check_sequence(sides, "sides", SIDES)
    steps, restarts = _check_int(steps, "steps", 1), _check_int(restarts, "restarts", 1)
    if step_size is not None and not (isinstance(step_size, numbers.Real) and step_size > 0):
        raise ValueError(f"`step_size` must be None or a float > 0, got {step_size!r}.")
    if not (isinstance(tpr, numbers.Real) and 0 < tpr < 1):
        raise ValueError(f"`tpr` must be in (0, 1), got {tpr!r}.")
    attacks = _resolve_attacks(attack, steps, step_size)
    eps_list = _resolve_eps(eps, detector.input_range_)
    try:
        seed = seed_from(random_state)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"`random_state` must be None, an int or a RandomState, got "
                         f"{random_state!r} ({exc}).") from None
    return sides, attacks, eps_list, restarts, seed


def robust_ood_report(detector, X_id, X_ood, eps="auto", attack=("pgd", "fgsm"),
                      sides=SIDES, steps=40, restarts=1, step_size=None, random_state=None,
                      tpr=0.95, warn=True):
    """Attack a fitted detector on both sides and report AUROC / FPR@95 per radius.

    White-box and adaptive: the attacks take gradients of the score the detector deploys
    (``ood_score``, standardisation of a sum included), with the model in eval mode and
    every module flag and parameter restored afterwards. See the module docstring for the
    threat model, the sides and the diagnostics.

    Parameters
    ----------
    detector : AOEDetector
        Fitted.
    X_id, X_ood : array-like of shape (n, *input_shape_), or Dataset (loaded in full)
        In-distribution test inputs and OOD inputs, in the detector's input units.
    eps : "auto", float or sequence of float, default="auto"
        L-infinity radii in input units; 0 gives the clean row. ``"auto"``:
        :data:`AUTO_EPS` times the width of ``input_range_`` (bounded inputs only).
    attack : {"pgd", "fgsm"}, FGSM / PGD object, or a sequence of them, default=("pgd", "fgsm")
        ``"pgd"`` is ``PGD(steps=steps, step_size=step_size)`` with a random start; objects
        of :mod:`aoe_detect.attacks` keep their own settings (their ``eps`` is ignored).
    sides : sequence of {"ood", "id", "both"}, default=("ood", "id", "both")
    steps : int, default=40
        Steps of ``"pgd"``.
    restarts : int, default=1
        Random restarts of every PGD attack with a random start; per input the worst run
        counts.
    step_size : float, optional
        Step of ``"pgd"``; default ``2.5 * eps / steps``.
    random_state : int, RandomState or None
        Seeds the random starts (a local generator; global RNGs are untouched).
    tpr : float, default=0.95
        TPR of ID inputs at which the FPR is read.
    warn : bool, default=True
        Emit each diagnostic as a :class:`~aoe_detect.exceptions.RobustnessWarning`
        (they are recorded in the report either way).

    Returns
    -------
    RobustnessReport
        ``report.auroc(eps, side, attack="worst")``, ``report.table()``, ``report.rows``,
        ``report.diagnostics``.

    Examples
    --------
    >>> from aoe_detect.robustness import robust_ood_report
    >>> rep = robust_ood_report(det, X_test, X_ood, eps=(0, 8 / 255), restarts=2,
    ...                         random_state=0)  # doctest: +SKIP
    >>> rep.auroc(8 / 255, side="both")  # doctest: +SKIP
    """
    check_is_fitted(detector, "offset_")
    sides, attacks, eps_list, restarts, seed = _check_args(
        detector, eps, attack, sides, steps, restarts, step_size, random_state, tpr)
    Xi, Xo = _checked_inputs(detector, X_id, "X_id"), _checked_inputs(detector, X_ood, "X_ood")
    report = RobustnessReport(settings=dict(
        eps=eps_list, attacks={k: repr(v) for k, v in attacks.items()}, sides=sides,
        restarts=restarts, tpr=tpr, ood_score=detector._score_name))
    clean = {"id": detector.score_samples(Xi.numpy()), "ood": detector.score_samples(Xo.numpy())}
    report.scores["clean"] = clean
    need = {"ood", "id"} if "both" in sides else set(sides)  # the sets to attack
    with eval_mode(detector.module_):  # one restore point around all attacks
        _run_all(detector, attacks, eps_list, need, sides, {"id": Xi, "ood": Xo}, clean,
                 dict(restarts=restarts, seed=seed, tpr=tpr), report)
    _cross_checks(report, list(attacks), eps_list, sides, detector.input_range_)
    if warn:
        for d in report.diagnostics:
            warnings.warn(d["message"], RobustnessWarning, stacklevel=2)
    return report
