"""The parameter surface (issue 21, item 2): components own their settings.

At most 25 top-level parameters, keyword-only after ``backbone``, in one order in
``__init__``, the docstring and the declared constraints; every component setting reachable
as ``<component>__<setting>``, on the name shortcuts too; the flat names of 0.2 keep working
with a ``FutureWarning`` that names the new spelling and give bitwise the same fit; pickles
and saved files written with the flat names load with their settings; ``epsilon_`` is the
radius training used, however it was set."""

import inspect
import pickle
import re
import warnings

import numpy as np
import pytest
from sklearn.base import clone

from aoe_detect import AOEDetector
from aoe_detect._params import DEPRECATED
from aoe_detect.attacks import FGSM, PGD, GaussianAugment
from aoe_detect.losses import EnergyMargin, SoftmaxOE
from aoe_detect.runtime import Runtime
from aoe_detect.scores import OODScore
from aoe_detect.testing import TINY, quiet, tiny_blobs

X, Y, PROBE = tiny_blobs()

#: One non-default value per flat name of 0.2, and the component it must land on.
FLAT = {
    "epsilon": (0.07, "attack", FGSM(eps=0.07)),
    "attack_fraction": (0.5, "attack", FGSM(fraction=0.5)),
    "attack_refresh": (3, "attack", FGSM(refresh=3)),
    "lam": (0.3, "loss", EnergyMargin(lam=0.3)),
    "m_in": (-9.0, "loss", EnergyMargin(m_in=-9.0)),
    "m_out": (-2.0, "loss", EnergyMargin(m_out=-2.0)),
    "knn_k": (7, "ood_score", OODScore(k=7)),
    "knn_max_samples": (100, "ood_score", OODScore(max_samples=100)),
    "feature_layer": ("fc", "ood_score", OODScore(feature_layer="fc")),
    "amp": ("bf16", "runtime", Runtime(amp="bf16")),
    "compile": (True, "runtime", Runtime(compile=True)),
    "channels_last": (False, "runtime", Runtime(channels_last=False)),
    "num_workers": (2, "runtime", Runtime(num_workers=2)),
    "distributed": (False, "runtime", Runtime(distributed=False)),
    "sync_batchnorm": (False, "runtime", Runtime(sync_batchnorm=False)),
}


def _docstring_params():
    doc = AOEDetector.__doc__
    section = doc[doc.index("Parameters\n"):doc.index("Attributes\n")]
    return re.findall(r"^    ([a-z_]+) : ", section, flags=re.M)


def test_at_most_25_keyword_only_parameters_in_one_order():
    sig = inspect.signature(AOEDetector.__init__).parameters
    names = [n for n in sig if n != "self"]
    assert len(names) <= 25
    assert sorted(names) == sorted(AOEDetector().get_params(deep=False))  # (sklearn sorts)
    assert sig["backbone"].kind == inspect.Parameter.POSITIONAL_OR_KEYWORD
    assert all(sig[n].kind == inspect.Parameter.KEYWORD_ONLY for n in names[1:])
    assert _docstring_params() == names
    assert list(AOEDetector._parameter_constraints) == names
    assert not set(DEPRECATED) & set(names)
    assert set(FLAT) == set(DEPRECATED)


def test_positional_arguments_after_backbone_are_refused():
    with pytest.raises(TypeError):
        AOEDetector("mlp", "uniform")


@pytest.mark.parametrize("key,value,component,expected", [
    ("attack__eps", 0.2, "attack", FGSM(eps=0.2)),
    ("attack__fraction", 0.25, "attack", FGSM(fraction=0.25)),
    ("loss__lam", 0.3, "loss", EnergyMargin(lam=0.3)),
    ("ood_score__k", 3, "ood_score", OODScore(k=3)),
    ("runtime__amp", "fp16", "runtime", Runtime(amp="fp16")),
])
def test_nested_names_work_on_the_name_shortcuts(key, value, component, expected):
    det = AOEDetector().set_params(**{key: value})
    assert repr(getattr(det, component)) == repr(expected)
    assert det.get_params()[key] == value
    assert repr(clone(det)) == repr(det)


def test_nested_names_keep_the_named_variant():
    det = AOEDetector(attack="pgd", loss="softmax", ood_score="energy+knn")
    det.set_params(attack__steps=3, loss__lam=0.7, ood_score__k=4)
    assert repr(det.attack) == repr(PGD(steps=3))
    assert repr(det.loss) == repr(SoftmaxOE(lam=0.7))
    assert repr(det.ood_score) == repr(OODScore("energy+knn", k=4))


def test_nested_name_on_no_attack_is_a_clear_error():
    with pytest.raises(ValueError, match=r"`attack`='none' has no parameters.*FGSM"):
        AOEDetector(attack="none").set_params(attack__eps=0.1)


@pytest.mark.parametrize("old", sorted(FLAT))
def test_flat_names_of_0_2_warn_and_land_on_their_component(old):
    value, component, expected = FLAT[old]
    new = "__".join(DEPRECATED[old])
    with pytest.warns(FutureWarning, match=rf"`{old}` is deprecated.*`{new}`"):
        det = AOEDetector(**{old: value})
    assert repr(getattr(det, component)) == repr(expected)
    assert getattr(det, old) == value  # the setting in effect, read through the old name
    with pytest.warns(FutureWarning, match=rf"`{old}`.*`{new}`"):
        det2 = AOEDetector().set_params(**{old: value})
    assert repr(det2.get_params(deep=False)) == repr(det.get_params(deep=False))
    assert repr(clone(det)) == repr(det)  # clone keeps it (it is a parameter now)


def test_flat_names_never_change_a_users_object():
    attack = FGSM()
    with pytest.warns(FutureWarning):
        det = AOEDetector(attack=attack, epsilon=0.1)
    assert attack.eps is None and det.attack.eps == 0.1


def test_an_objects_own_setting_wins_over_the_old_shortcut_as_in_0_2():
    with pytest.warns(FutureWarning):
        det = AOEDetector(attack=PGD(eps=0.05), epsilon=0.1, loss=EnergyMargin(lam=0.4), lam=0.2)
    assert det.attack.eps == 0.05 and det.loss.lam == 0.4


def test_unknown_keyword_is_still_a_type_error():
    with pytest.raises(TypeError, match="unexpected keyword argument 'epsilonn'"):  # as Python
        AOEDetector(epsilonn=0.1)


def test_flat_spelling_fits_bitwise_like_the_new_spelling():
    with pytest.warns(FutureWarning):
        old = AOEDetector(**TINY, epsilon=0.07, lam=0.2, attack_fraction=0.5, knn_k=3,
                          ood_score="energy+knn")
    new = AOEDetector(**TINY, attack=FGSM(eps=0.07, fraction=0.5), loss=EnergyMargin(lam=0.2),
                      ood_score=OODScore("energy+knn", k=3))
    a, b = quiet(old.fit, X, Y), quiet(new.fit, X, Y)
    np.testing.assert_array_equal(a.score_samples(PROBE), b.score_samples(PROBE))
    assert a.epsilon_ == b.epsilon_ == pytest.approx(0.07)


@pytest.mark.parametrize("attack,expected", [(PGD(eps=0.05, steps=2), 0.05),
                                             (GaussianAugment(eps=0.02), 0.02)])
def test_epsilon_is_the_radius_training_used(attack, expected):
    det = quiet(AOEDetector(**TINY, attack=attack).fit, X, Y)
    assert det.epsilon_ == pytest.approx(expected)


def test_auto_radius_without_an_attack_object_is_per_feature():
    det = quiet(AOEDetector(**TINY).fit, X, Y)
    assert np.shape(det.epsilon_) == (X.shape[1],) and np.all(np.asarray(det.epsilon_) > 0)


def test_component_settings_are_validated_at_fit_naming_the_path():
    det = AOEDetector(**TINY).set_params(ood_score__k=0)
    with pytest.raises(ValueError, match=r"`ood_score` \(OODScore\).*'k'"):
        det.fit(X, Y)
    det = AOEDetector(**TINY).set_params(runtime__num_workers=-1)
    with pytest.raises(ValueError, match=r"`runtime` \(Runtime\).*'num_workers'"):
        det.fit(X, Y)
    det = AOEDetector(**TINY).set_params(attack__fraction=1.5)
    with pytest.raises(ValueError, match=r"`attack` \(FGSM\).*'fraction'"):
        det.fit(X, Y)


def test_margins_are_checked_under_their_new_names():
    det = AOEDetector(**TINY, loss=EnergyMargin(m_in=-1.0, m_out=-2.0))
    with pytest.raises(ValueError, match=r"`loss__m_out` \(-2.0\) must be greater than `loss__m_in`"):
        det.fit(X, Y)


def test_score_settings_after_fit_follow_the_score_rules(fitted):
    det = pickle.loads(pickle.dumps(fitted))
    with pytest.raises(Exception, match="ood_score__feature_layer"):
        det.set_params(ood_score__feature_layer="0")  # needs the training features
        det.score_samples(PROBE)
    det.set_params(ood_score=fitted.ood_score)
    np.testing.assert_array_equal(det.score_samples(PROBE), fitted.score_samples(PROBE))


def _as_pickled_by_0_2(det):
    """The pickle state of ``det`` as 0.2 wrote it: flat names, string components, no
    ``runtime``, the score parameters under their old keys."""
    state = det.__getstate__()
    state.pop("runtime")
    score = state["ood_score"]
    state["ood_score"] = getattr(score, "name", score)
    state.update(epsilon="auto", attack_fraction=1.0, attack_refresh=1, lam="auto", m_in="auto",
                 m_out="auto", knn_k=getattr(score, "k", "auto"),
                 knn_max_samples=getattr(score, "max_samples", 4000), feature_layer=None,
                 amp=False, compile=False, channels_last="auto", num_workers=0,
                 distributed="auto", sync_batchnorm="auto")
    applied = state.get("_score_applied")
    if applied:
        state["_score_applied"] = {{"ood_score__k": "knn_k", "ood_score__max_samples":
                                    "knn_max_samples", "ood_score__feature_layer":
                                    "feature_layer"}.get(k, k): v for k, v in applied.items()}
    return state


def test_a_detector_pickled_by_0_2_loads_with_its_settings():
    det = quiet(AOEDetector(**TINY, ood_score=OODScore("energy+knn", k=3)).fit, X, Y)
    state = _as_pickled_by_0_2(det)
    assert state["knn_k"] == 3 and "runtime" not in state
    old = AOEDetector.__new__(AOEDetector)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)  # silently translated
        old.__setstate__(state)
    assert repr(old.ood_score) == repr(OODScore("energy+knn", k=3))
    assert old.runtime is None and old.attack == "fgsm" and old.loss == "energy"
    assert "knn_k" not in old.__dict__
    np.testing.assert_array_equal(old.score_samples(PROBE), det.score_samples(PROBE))


def test_component_objects_survive_save_and_load(tmp_path):
    det = quiet(AOEDetector(**TINY, attack=PGD(eps=0.05, steps=2), loss=EnergyMargin(lam=0.2),
                            ood_score=OODScore("energy+knn", k=3)).fit, X, Y)
    path = det.save(tmp_path / "d.aoe")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing skipped, nothing deprecated
        back = AOEDetector.load(path)
    assert repr(back.get_params(deep=False)) == repr(det.get_params(deep=False))
    np.testing.assert_array_equal(back.score_samples(PROBE), det.score_samples(PROBE))


def test_an_attack_object_pickled_before_its_new_settings_gets_their_defaults():
    det = quiet(AOEDetector(**TINY, attack=PGD(steps=2)).fit, X, Y)
    state = det.__getstate__()
    for name in ("fraction", "refresh", "sides"):  # what a 0.2 PGD did not have
        del state["attack"].__dict__[name]
    old = AOEDetector.__new__(AOEDetector)
    old.__setstate__(state)
    assert repr(old.attack) == repr(PGD(steps=2))
    assert (old.attack.fraction, old.attack.refresh, old.attack.sides) == (1.0, 1, "ood")
    np.testing.assert_array_equal(old.score_samples(PROBE), det.score_samples(PROBE))
