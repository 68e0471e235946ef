"""Misuse of saved files and checkpoints (issue 20): the checksum proves integrity, not
validity, so every loaded score statistic is checked as ``fit`` would have made it; a
training checkpoint is never mistaken for a detector. docs/failure_modes.md lists these."""

import json

import numpy as np
import pytest
import torch

from aoe_detect import AOEDetector
from aoe_detect.testing import TINY, quiet, set_json, tamper, tiny_blobs

X, Y, PROBE = tiny_blobs()


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """One saved file per score family (energy+mahalanobis, energy+knn)."""
    d = tmp_path_factory.mktemp("files")
    out = {}
    for score in ("energy+mahalanobis", "energy+knn"):
        det = quiet(AOEDetector(**TINY, ood_score=score).fit, X, Y)
        out[score] = (det, det.save(d / f"{score}.aoe"))
    return out


def _spec(edit):
    """An edit of the saved ``scorer_`` spec (the JSON description of the score)."""
    def run(p):
        fitted = json.loads(p["fitted"])
        edit(fitted["scorer_"])
        p["fitted"] = json.dumps(fitted)
    return run


def _state(key, fn):
    def run(p):
        k = next(k for k in p["scorer_state"] if k.endswith(key))
        p["scorer_state"][k] = fn(p["scorer_state"][k])
    return run


def _drop_scorer(p):
    fitted = json.loads(p["fitted"])
    del fitted["scorer_"]
    p["fitted"] = json.dumps(fitted)
    p["scorer_state"] = {}


def _params_and_drop(p):
    set_json("params", "ood_score", "energy")(p)
    _drop_scorer(p)


CASES = [
    ("energy+mahalanobis", set_json("params", "temperature", -1.0), r"'temperature' parameter"),
    ("energy+mahalanobis", _spec(lambda s: s.__setitem__("temperature", 5.0)),
     r"invalid `scorer_.temperature`"),
    ("energy+knn", set_json("params", "knn_k", -5), r"`ood_score` \(OODScore\).*'k' parameter"),
    ("energy+knn", _spec(lambda s: s.__setitem__("knn_k", 1000)), r"invalid `scorer_.knn_k`"),
    ("energy+knn", _spec(lambda s: s.__setitem__("knn_k", -5)), r"invalid `scorer_.knn_k`"),
    ("energy+knn", _state("bank", lambda t: t * 3), r"invalid `scorer_state.bank`"),
    ("energy+mahalanobis", _state("precision", lambda t: -t), r"precision`: not positive-definite"),
    ("energy+mahalanobis",
     lambda p: (_spec(lambda s: s.__setitem__("n_features", 3))(p),
                _state("means", lambda t: t[:, :3].contiguous())(p),
                _state("precision", lambda t: torch.eye(3))(p)),
     r"invalid `scorer_state`: statistics of 3-wide features"),
    ("energy+mahalanobis", _params_and_drop, r"no fitted score statistics"),
    ("energy+mahalanobis", set_json("fitted", "offset_", 0.5), r"invalid `offset_`.*quantile"),
    ("energy+mahalanobis", set_json("params", "contamination", 0.3), r"invalid `offset_`"),
]


@pytest.mark.parametrize("score, edit, match", CASES, ids=[
    "temperature-negative", "scorer-temperature", "knn_k-negative", "scorer-knn_k-other",
    "scorer-knn_k-negative", "bank-not-normalised", "precision-negated", "mean-3-wide",
    "scorer-removed-old-offset", "offset-edited", "contamination-edited"])
def test_edited_file_with_valid_checksum_refused_with_the_field_named(saved, tmp_path, score,
                                                                      edit, match):
    det, path = saved[score]
    copy_path = tmp_path / "edited.aoe"
    copy_path.write_bytes(open(path, "rb").read())
    tamper(copy_path, edit)  # checksum recomputed: an attacker who knows the format
    with pytest.raises(ValueError, match=match):
        quiet(AOEDetector.load, copy_path)


def test_untouched_files_load_and_score_bitwise(saved):
    for det, path in saved.values():
        back = AOEDetector.load(path)
        assert back.decision_function(PROBE).tobytes() == det.decision_function(PROBE).tobytes()


# ------------------------------------------------------------------- checkpoints
def test_checkpoint_of_a_refit_is_complete_and_consistent(tmp_path):
    det = quiet(AOEDetector(**TINY, checkpoint_dir=str(tmp_path)).fit, X, Y)
    quiet(det.set_params(epochs=2).fit, X, Y)  # a refit: the checkpoint follows it
    back = AOEDetector.load(tmp_path / "checkpoint.aoe")
    assert back.offset_ == det.offset_
    assert (back.predict(PROBE) == det.predict(PROBE)).all()
    assert back.score_samples(PROBE).tobytes() == det.score_samples(PROBE).tobytes()


def test_checkpoint_written_during_training_is_partial_and_refused_as_a_detector(tmp_path,
                                                                               monkeypatch):
    det = quiet(AOEDetector(**TINY).fit, X, Y)
    det.set_params(checkpoint_dir=str(tmp_path), epochs=2)
    from aoe_detect import detector as detmod

    def boom(self, *a, **k):  # fails after training: only the epoch checkpoints exist
        raise RuntimeError("boom")

    monkeypatch.setattr(detmod.AOEDetector, "_calibrate", boom)
    with pytest.raises(RuntimeError, match="boom"):
        quiet(det.fit, X, Y)
    payload = torch.load(tmp_path / "checkpoint.aoe", weights_only=True)
    fitted = json.loads(payload["fitted"])
    assert fitted["partial"] is True and "offset_" not in fitted and "scorer_" not in fitted
    with pytest.raises(ValueError, match=r"training checkpoint.*warm_start=True"):
        AOEDetector.load(tmp_path / "checkpoint.aoe")
    monkeypatch.undo()
    # ...and a warm start resumes it
    resumed = quiet(AOEDetector(**{**TINY, "epochs": 2}, warm_start=True,
                                checkpoint_dir=str(tmp_path)).fit, X, Y)
    assert [r["stage"] for r in resumed.history_] == ["pretrain", "finetune", "finetune"]
    assert np.isfinite(resumed.score_samples(PROBE)).all()
