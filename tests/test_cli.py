"""The ``aoe-detect`` command line: help, argument handling, error paths, fit/score round trip.

Errors must be ONE line ``aoe-detect: error: ...`` on stderr, exit status 2, no traceback.
"""

import os
import subprocess
import sys

import numpy as np
import pytest

from aoe_detect.cli import build_parser, main

SUBCOMMANDS = ("demo", "benchmark", "fit", "score")


def _error_line(capsys):
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert "Traceback" not in err
    errors = [ln for ln in lines if ln.startswith("aoe-detect: error:")]
    assert len(errors) == 1, err
    return errors[0]


@pytest.fixture(scope="module")
def tabular(tmp_path_factory):
    """Two Gaussian blobs (ID, labelled) and far-away OOD points, saved as .npz/.npy."""
    d = tmp_path_factory.mktemp("cli")
    rng = np.random.RandomState(0)
    X = np.r_[rng.normal(0, 1, (120, 3)) + 3, rng.normal(0, 1, (120, 3)) - 3].astype(np.float32)
    y = np.r_[np.zeros(120, int), np.ones(120, int)]
    X_ood = rng.normal(0, 0.3, (60, 3)).astype(np.float32)  # the empty gap between the blobs
    np.savez(d / "train.npz", X=X, y=y)
    np.save(d / "train_X.npy", X)
    np.save(d / "train_y.npy", y)
    np.savez(d / "test.npz", X=np.r_[X[:60], X_ood].astype(np.float32),
             y=np.r_[np.zeros(60, int), -np.ones(60, int)])
    np.savez(d / "wrongkey.npz", inputs=X)
    (d / "notes.txt").write_text("hello")
    (d / "broken.npy").write_bytes(b"not a numpy file")
    return d


@pytest.fixture(scope="module")
def model(tabular):
    path = tabular / "model.aoe"
    rc = main(["fit", "--id", str(tabular / "train.npz"), "--out", str(path), "--epochs", "3",
               "--pretrain-epochs", "3", "--outlier-source", "uniform", "--seed", "0",
               "--quiet", "--device", "cpu"])
    assert rc == 0
    return path


@pytest.mark.parametrize("cmd", [(), *[(c,) for c in SUBCOMMANDS]])
def test_help_for_every_command(cmd, capsys):
    assert main([*cmd, "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: aoe-detect")
    if cmd:
        assert cmd[0] in out.splitlines()[0]


def test_parser_lists_all_subcommands():
    text = build_parser().format_help()
    for c in SUBCOMMANDS:
        assert c in text


def test_no_command_is_one_line_error(capsys):
    assert main([]) == 2
    assert "required" in _error_line(capsys)


@pytest.mark.parametrize("argv, needle", [
    (["benchmark", "--profile", "huge"], "invalid choice"),
    (["benchmark"], "--profile"),
    (["benchmark", "--report-only", "missing.json"], "not found"),
    (["benchmark", "--profile", "quick", "--seeds", "a,b"], "comma-separated"),
    (["benchmark", "--profile", "quick", "--items", "0,9"], "--items"),
    (["benchmark", "--profile", "quick", "--set", "nonsense"], "FIELD=VALUE"),
    (["benchmark", "--profile", "quick", "--set", "no_such_field=1"], "no_such_field"),
    (["demo", "--epochs", "0"], "positive integer"),
    (["fit", "--id", "x.npy"], "--out"),
    (["fit", "--id", "x.npy", "--out", "m", "--attack", "cw"], "invalid choice"),
    (["fit", "--id", "x.npy", "--out", "m", "--epsilon", "big"], "number or 'auto'"),
    (["score", "--input", "x.npy"], "--model"),
])
def test_argument_errors(argv, needle, capsys):
    assert main(argv) == 2
    assert needle in _error_line(capsys)


def test_fit_missing_file(tabular, capsys):
    assert main(["fit", "--id", str(tabular / "nope.npz"), "--out", str(tabular / "m")]) == 2
    assert "not found" in _error_line(capsys)


def test_fit_bad_extension(tabular, capsys):
    assert main(["fit", "--id", str(tabular / "notes.txt"), "--out", str(tabular / "m")]) == 2
    assert ".npy or .npz" in _error_line(capsys)


def test_fit_wrong_npz_key(tabular, capsys):
    assert main(["fit", "--id", str(tabular / "wrongkey.npz"), "--out", str(tabular / "m")]) == 2
    line = _error_line(capsys)
    assert "no array 'X'" in line and "inputs" in line


def test_fit_unreadable_npy(tabular, capsys):
    assert main(["fit", "--id", str(tabular / "broken.npy"), "--out", str(tabular / "m")]) == 2
    assert "cannot read" in _error_line(capsys)


def test_fit_bad_parameter_value(tabular, capsys):
    # validated by the estimator's parameter constraints, reported as one line
    rc = main(["fit", "--id", str(tabular / "train.npz"), "--out", str(tabular / "m"),
               "--lr", "-1", "--quiet"])
    assert rc == 2
    assert "lr" in _error_line(capsys)


def test_fit_labels_length_mismatch(tabular, capsys):
    np.save(tabular / "short_y.npy", np.zeros(5, int))
    rc = main(["fit", "--id", str(tabular / "train_X.npy"), "--labels",
               str(tabular / "short_y.npy"), "--out", str(tabular / "m"), "--quiet"])
    assert rc == 2
    assert "label" in _error_line(capsys).lower()


def test_fit_and_score_round_trip(model, tabular, capsys):
    capsys.readouterr()
    out = tabular / "scores.npy"
    rc = main(["score", "--model", str(model), "--input", str(tabular / "test.npz"),
               "--out", str(out), "--device", "cpu"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "scored 120 inputs" in text and "AUROC" in text
    scores = np.load(out)
    assert scores.shape == (120,) and scores.dtype == np.float64
    assert np.isfinite(scores).all()
    # the gap between the blobs scores lower (more OOD) than the blobs
    assert scores[60:].mean() < scores[:60].mean()
    auroc = float(text.split("AUROC ")[1].split(",")[0])
    assert 0.8 <= auroc <= 1.0


def test_score_npy_and_csv(model, tabular, capsys):
    out = tabular / "scores.csv"
    assert main(["score", "--model", str(model), "--input", str(tabular / "train_X.npy"),
                 "--out", str(out)]) == 0
    assert "AUROC" not in capsys.readouterr().out  # no labels, no metrics
    lines = out.read_text().splitlines()
    assert lines[0] == "score" and len(lines) == 241


def test_score_errors(model, tabular, capsys):
    assert main(["score", "--model", str(tabular / "missing.aoe"), "--input",
                 str(tabular / "test.npz")]) == 2
    assert "not found" in _error_line(capsys)
    assert main(["score", "--model", str(tabular / "notes.txt"), "--input",
                 str(tabular / "test.npz")]) == 2
    assert "aoe-detect" in _error_line(capsys)  # not a detector file: one line
    assert main(["score", "--model", str(model), "--input", str(tabular / "test.npz"),
                 "--out", str(tabular / "scores.txt")]) == 2
    assert ".npy or .csv" in _error_line(capsys)
    np.save(tabular / "img.npy", np.zeros((4, 28, 28), np.uint8))
    assert main(["score", "--model", str(model), "--input", str(tabular / "img.npy")]) == 2
    line = _error_line(capsys)
    assert "shape" in line or "feature" in line


def test_console_script_error_has_no_traceback(tmp_path):
    """The real process: exit status 2 and a single stderr line."""
    proc = subprocess.run([sys.executable, "-m", "aoe_detect.cli", "fit", "--id",
                           str(tmp_path / "none.npy"), "--out", str(tmp_path / "m")],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0
    assert proc.stderr.startswith("aoe-detect: error:") and "Traceback" not in proc.stderr
