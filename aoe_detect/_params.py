"""The parameter surface of :class:`~aoe_detect.AOEDetector`: components own their settings.

Four parameters are *components*: a name (the shortcut) or an object that carries the
component's settings, each reachable as ``<component>__<setting>`` (scikit-learn's nested
parameters), on a name too (:meth:`ParamsMixin.set_params` first replaces the name by its
object):

========== ================================================ =================================
component  name shortcut -> object                          settings
========== ================================================ =================================
attack     "fgsm"/"pgd"/"gaussian" -> FGSM/PGD/GaussianAugment eps, fraction, refresh (+ own)
loss       "energy"/"softmax" -> EnergyMargin/SoftmaxOE       lam, m_in, m_out
ood_score  "energy+mahalanobis", ... -> OODScore(name)        k, max_samples, feature_layer
runtime    None -> Runtime()                                 amp, compile, channels_last, ...
========== ================================================ =================================

The flat parameters of 0.2 that duplicated a component's setting (:data:`DEPRECATED`) keep
working until 0.4: given to the constructor or ``set_params`` they set the component's
setting (a ``FutureWarning`` names the new spelling); read as attributes they return the
setting in effect. Pickles and saved files of 0.2 are translated silently.

The checks of the parameters live here too: :func:`check_fit_params` (everything ``fit``
checks before touching the data: the declared constraints, the component objects' own,
the margins, ``checkpoint_dir`` and ``runtime__compile``) and :func:`check_params` (the
parameters scoring reads, re-checked at every call since ``set_params`` after ``fit`` can
change them).
"""

from __future__ import annotations

import inspect
import os
import warnings

import torch
from sklearn.base import clone

from ._compat import InvalidParameterError, validate_parameter_constraints
from .attacks import ATTACKS, FGSM, PGD, GaussianAugment
from .losses import LOSS_CONFIGS, EnergyMargin, SoftmaxOE, loss_settings
from .runtime import Runtime
from .scores import OODScore

__all__ = ["DEPRECATED", "COMPONENTS", "CONFIG_CLASSES", "ParamsMixin", "component",
           "flat_params", "apply_deprecated", "apply_saved", "translate_state", "SCORING_PARAMS",
           "check_param", "check_params", "validate_object", "validate_nested",
           "check_margin_params", "check_fit_params"]

#: The flat parameters of 0.2 -> ``(component, setting)``; removed in 0.4.
DEPRECATED = {
    "epsilon": ("attack", "eps"), "attack_fraction": ("attack", "fraction"),
    "attack_refresh": ("attack", "refresh"),
    "lam": ("loss", "lam"), "m_in": ("loss", "m_in"), "m_out": ("loss", "m_out"),
    "knn_k": ("ood_score", "k"), "knn_max_samples": ("ood_score", "max_samples"),
    "feature_layer": ("ood_score", "feature_layer"),
    "amp": ("runtime", "amp"), "compile": ("runtime", "compile"),
    "channels_last": ("runtime", "channels_last"), "num_workers": ("runtime", "num_workers"),
    "distributed": ("runtime", "distributed"), "sync_batchnorm": ("runtime", "sync_batchnorm"),
}

#: What a flat name reads when its component leaves the setting to "auto" (``None``) or has
#: no such setting (no attack, or ``SoftmaxOE``'s margins).
_UNSET = {"epsilon": "auto", "lam": "auto", "m_in": "auto", "m_out": "auto",
          "attack_fraction": 1.0, "attack_refresh": 1}

#: The component objects a saved file can hold (by class name).
CONFIG_CLASSES = {c.__name__: c for c in (FGSM, PGD, GaussianAugment, EnergyMargin, SoftmaxOE,
                                           OODScore, Runtime)}

#: The flat names that were shortcuts in 0.2 (an object's own setting, when not None, won).
_SHORTCUTS = ("epsilon", "lam", "m_in", "m_out")

#: Component -> the objects its name shortcuts stand for.
COMPONENTS = {"attack": ATTACKS, "loss": LOSS_CONFIGS,
              "ood_score": None,  # any score name: OODScore(name)
              "runtime": None}  # None: Runtime()


def _as_object(name, value):
    """The object a component's value stands for; None where it has no settings (no attack,
    an unknown name: the constraints report those)."""
    if name == "ood_score":
        return OODScore(value) if isinstance(value, str) else value
    if name == "runtime":
        return Runtime() if value is None else value
    if isinstance(value, str):
        cls = COMPONENTS[name].get(value)
        return None if cls is None else cls()
    return value


def component(estimator, name):
    """The object of component ``name`` in effect (a fresh one for a name shortcut; None for
    no attack). Reading it never changes the estimator."""
    return _as_object(name, getattr(estimator, name))


def _flat_value(estimator, old):
    comp, setting = DEPRECATED[old]
    obj = component(estimator, comp)
    value = getattr(obj, setting, None) if obj is not None else None
    return _UNSET.get(old) if value is None and old in _UNSET else value


def flat_params(estimator):
    """``get_params(deep=False)`` plus every flat setting in effect (:data:`DEPRECATED`
    names), for the internal code that reads settings by their flat names."""
    params = estimator.get_params(deep=False)
    params.update({old: _flat_value(estimator, old) for old in DEPRECATED})
    return params


def _set_flat(estimator, old, value, warn=True):
    comp, setting = DEPRECATED[old]
    if warn:
        warnings.warn(f"`{old}` is deprecated since aoe-detect 0.3 and will be removed in 0.4: "
                      f"use `{comp}__{setting}` (AOEDetector({comp}=..., ...) or "
                      f"set_params({comp}__{setting}=...)).", FutureWarning, stacklevel=4)
    current = getattr(estimator, comp)
    if old in _SHORTCUTS and current is not None and not isinstance(current, str) \
            and getattr(current, setting, None) is not None:
        return  # as in 0.2: an attack or loss object's own setting wins over the shortcut
    obj = _as_object(comp, current)
    if obj is None or setting not in obj.get_params(deep=False):
        return  # no attack, or m_in with loss="softmax": no effect, as in 0.2
    obj = clone(obj) if obj is current else obj  # never change a user's object in place
    obj.set_params(**{setting: value})
    setattr(estimator, comp, obj)


def apply_deprecated(estimator, values, warn=True):
    """Set the flat 0.2 parameters ``values`` (all names of :data:`DEPRECATED`) on their
    components."""
    for old in DEPRECATED:  # one fixed order, whatever the order given
        if old in values:
            _set_flat(estimator, old, values[old], warn)


def translate_state(state, defaults):
    """A pickled ``__dict__`` of 0.2 (flat parameters) -> this version's: the flat values go
    into their components, missing parameters get their defaults. In place; returns it."""
    flat = {k: state.pop(k) for k in list(state) if k in DEPRECATED}
    for name, default in defaults.items():
        state.setdefault(name, default)
    for name in COMPONENTS:  # component objects pickled before a setting of theirs existed
        _fill_new_settings(state.get(name))
    apply_saved(_Holder(state), flat)
    applied = state.get("_score_applied")  # the score parameters its statistics belong to
    if isinstance(applied, dict):
        state["_score_applied"] = {_SCORE_KEYS.get(k, k): v for k, v in applied.items()}
    return state


#: Keys of the pickled score parameters of 0.2 -> this version's.
_SCORE_KEYS = {"feature_layer": "ood_score__feature_layer", "knn_k": "ood_score__k",
               "knn_max_samples": "ood_score__max_samples"}


def apply_saved(estimator, flat):
    """Flat values of 0.2 read back from a pickle or a saved file, silently; values equal to
    the setting in effect leave the component as it is (a default stays a name / None)."""
    changed = {k: v for k, v in flat.items() if not _same(v, _flat_value(estimator, k))}
    apply_deprecated(estimator, changed, warn=False)


def _fill_new_settings(obj):
    """A component object unpickled from an older version gets the defaults of the settings
    its class has gained since (``fraction``, ``refresh``, ``sides`` of the attacks)."""
    if type(obj) not in CONFIG_CLASSES.values():
        return
    for name, param in inspect.signature(type(obj).__init__).parameters.items():
        if param.default is not param.empty:
            obj.__dict__.setdefault(name, param.default)


def _same(a, b):
    try:
        return bool(a == b) and type(a) is type(b)
    except (TypeError, ValueError):  # arrays
        return False


class _Holder:
    """Attribute view of a state dict (so :func:`apply_deprecated` can work on it)."""

    def __init__(self, state):
        object.__setattr__(self, "_state", state)

    def __getattr__(self, name):
        return self._state[name]

    def __setattr__(self, name, value):
        self._state[name] = value


def _flat_property(old):
    comp, setting = DEPRECATED[old]

    def get(self):
        return _flat_value(self, old)

    def set_(self, value):
        _set_flat(self, old, value)
    return property(get, set_, doc=f"Deprecated (0.3, removed in 0.4): the setting "
                                   f"``{comp}__{setting}`` in effect.")


def _example(name):
    return type(_as_object(name, next(iter(COMPONENTS[name])))).__name__


# ------------------------------------------------ checks of the parameters
#: Parameters that change what scoring and ``perturb`` compute and that they read from the
#: estimator itself (not from a fitted attribute): checked at every call, because
#: ``set_params`` after ``fit`` can change them. (Others, like ``batch_size``, only matter
#: to the next ``fit``; an invalid value there is reported by that ``fit`` and does not
#: stop the fitted detector from scoring.)
SCORING_PARAMS = ("temperature", "runtime")



def check_param(estimator, name):
    """Validate one parameter against ``estimator._parameter_constraints[name]``."""
    validate_parameter_constraints({name: estimator._parameter_constraints[name]},
                                   {name: getattr(estimator, name)},
                                   caller_name=type(estimator).__name__)


def check_params(estimator, names=SCORING_PARAMS):
    """Validate the parameters ``names`` (a nested name checks its component's object)."""
    for name in dict.fromkeys(n.split("__")[0] for n in names):
        if name in estimator._parameter_constraints and hasattr(estimator, name):
            check_param(estimator, name)
            validate_object(getattr(estimator, name), name)


def _components(obj):
    sources = getattr(obj, "sources", None)
    if not isinstance(sources, (list, tuple)):
        return []
    return [s if isinstance(s, tuple) and len(s) == 2 else (type(s).__name__, s) for s in sources]


def validate_object(obj, path):
    """Check an attack/outlier-source object's declared constraints (and its components',
    for mixtures); the error names the path, e.g. ``attack`` (PGD): 'steps' ..."""
    if obj is None or isinstance(obj, str) or not hasattr(obj, "get_params"):
        return
    if getattr(obj, "_parameter_constraints", None) and hasattr(obj, "_validate_params"):
        try:
            obj._validate_params()
        except InvalidParameterError as exc:
            raise InvalidParameterError(f"Invalid `{path}` ({type(obj).__name__}): {exc} Set it "
                                        f"with set_params({path}__<name>=...) or a new "
                                        f"{type(obj).__name__}(...).") from None
    for name, sub in _components(obj):
        validate_object(sub, f"{path}__{name}")


def validate_nested(estimator, names=("attack", "outliers", "loss", "ood_score", "runtime")):
    for name in names:
        validate_object(getattr(estimator, name, None), name)


def check_margin_params(estimator):
    """The loss's margins (``loss__m_in``, ``loss__m_out``; their own constraints keep
    them finite) with ``m_out > m_in``."""
    _, _, m_in, m_out = loss_settings(getattr(estimator, "loss", "energy"))
    if not isinstance(m_in, str) and not isinstance(m_out, str) and m_out <= m_in:
        raise ValueError(f"`loss__m_out` ({m_out}) must be greater than `loss__m_in` ({m_in}).")


def check_checkpoint_dir(d):
    """Fail before training, not after the first epoch: the folder must be creatable
    and writable."""
    if d is None:
        return
    path = os.fspath(d)
    if not path:
        raise ValueError("`checkpoint_dir` is an empty string; pass a folder path or None "
                         "(no checkpoints).")
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"`checkpoint_dir`={path!r} exists and is not a folder; pass a "
                         "folder path (it is created if missing) or None.")
    parent = os.path.abspath(path)
    while not os.path.exists(parent) and os.path.dirname(parent) != parent:
        parent = os.path.dirname(parent)  # nearest existing ancestor
    if not os.path.isdir(parent) or not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"`checkpoint_dir`={path!r} cannot be written ({parent!r} is not a "
                         "writable folder); pass a writable folder or None.")


def check_compile_option(compile_option):
    """``compile`` options are checked before training (torch.compile raises only when
    called, mid-fit, otherwise)."""
    if not isinstance(compile_option, dict):
        return
    try:
        torch.compile(torch.nn.Identity(), **compile_option)
    except Exception as exc:  # noqa: BLE001 - torch raises RuntimeError/TypeError/...
        raise ValueError(f"`runtime__compile`={compile_option!r} is not valid for torch.compile: "
                         f"{type(exc).__name__}: {exc}") from None


def check_fit_params(estimator):
    """Everything ``fit`` checks about its parameters before touching the data: the
    declared constraints (scikit-learn), the nested attack / outlier-source objects, and
    the margins, ``checkpoint_dir`` and ``compile`` checks above."""
    estimator._validate_params()
    validate_nested(estimator)  # attack / outlier-source objects: their own constraints
    check_margin_params(estimator)
    check_checkpoint_dir(estimator.checkpoint_dir)
    check_compile_option(getattr(estimator.runtime, "compile", False))


class _FlatNamesOf02(type):
    """Takes the flat names of 0.2 out of the constructor call and sets them on their
    components once the estimator is built, so that ``__init__`` keeps the plain
    scikit-learn signature (no ``**kwargs``: ``get_params``, ``clone`` and scikit-learn's
    checks see only the real parameters)."""

    def __init__(cls, name, bases, namespace):
        super().__init__(name, bases, namespace)
        init = inspect.signature(cls.__init__)  # what inspect.signature(cls) shows, not ours
        cls.__signature__ = init.replace(parameters=list(init.parameters.values())[1:])

    def __call__(cls, *args, **kwargs):
        flat = {k: kwargs.pop(k) for k in list(kwargs) if k in DEPRECATED}
        estimator = super().__call__(*args, **kwargs)
        if flat:
            apply_deprecated(estimator, flat)
        return estimator


class ParamsMixin(metaclass=_FlatNamesOf02):
    """``set_params`` with component names and the deprecated flat names; the components in
    effect (``_score``, ``_runtime``: what the library reads), and views of the flat names."""

    @property
    def _score(self):
        if not isinstance(self.ood_score, (str, OODScore)):
            check_param(self, "ood_score")  # an error naming it
        return component(self, "ood_score")

    @property
    def _score_name(self):
        return getattr(self._score, "name", self.ood_score)

    @property
    def _runtime(self):
        if not isinstance(self.runtime, (Runtime, type(None))):
            check_param(self, "runtime")
        return component(self, "runtime")

    def set_params(self, **params):
        """Set parameters (scikit-learn's ``set_params``). A nested name on a component given
        by name (``attack__eps`` on ``attack="fgsm"``, ``ood_score__k`` on
        ``ood_score="energy+knn"``, ``runtime__amp`` on ``runtime=None``) first replaces the
        name by its object; a flat name of 0.2 (``epsilon``, ``knn_k``, ...) sets its
        component's setting with a ``FutureWarning``. After ``fit`` see
        :data:`aoe_detect._scoring.SCORE_PARAMS`."""
        flat = {k: params.pop(k) for k in list(params) if k in DEPRECATED}
        for name in COMPONENTS:
            nested = sorted(k for k in params if k.startswith(name + "__"))
            if not nested:
                continue
            value = params.pop(name, getattr(self, name))
            obj = _as_object(name, value)
            if obj is None:
                raise ValueError(f"Cannot set {nested}: `{name}`={value!r} has no parameters. "
                                 f"Pass an object instead, e.g. {name}={_example(name)}(...).")
            super().set_params(**{name: obj})
        super().set_params(**params)
        apply_deprecated(self, flat)
        return self


for _old in DEPRECATED:
    setattr(ParamsMixin, _old, _flat_property(_old))
del _old
