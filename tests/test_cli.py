"""The ``aoe-detect`` command line: help, argument handling, error paths, fit/score round trip.

Errors must be ONE line ``aoe-detect: error: ...`` on stderr, exit status 2, no traceback.
"""

import os
import pathlib
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
    (["demo", "--epochs", "0"], "positive integer"),
    (["fit", "--id", "x.npy"], "--out"),
    (["fit", "--id", "x.npy", "--out", "m", "--attack", "cw"], "invalid choice"),
    (["fit", "--id", "x.npy", "--out", "m", "--epsilon", "big"], ">= 0 or 'auto'"),
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
    assert ".npy, .npz or .csv" in _error_line(capsys)


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
    assert lines[0] == "score,prediction" and len(lines) == 241
    table = np.loadtxt(out, delimiter=",", skiprows=1)
    from aoe_detect import AOEDetector

    det = AOEDetector.load(model, device="cpu")
    X = np.load(tabular / "train_X.npy")
    assert np.array_equal(table[:, 0], det.score_samples(X))  # repr round-trips float64
    assert np.array_equal(table[:, 1], det.predict(X))


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


# ------------------------------------------------------------- pipelines (issue 10/11)
import json  # noqa: E402


def test_score_json_is_machine_readable(model, tabular, capsys):
    capsys.readouterr()
    assert main(["score", "--model", str(model), "--input", str(tabular / "test.npz"),
                 "--json", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    data = json.loads(out)  # the whole stdout is one JSON object
    assert data["n"] == 120 and data["device"] == "cpu"
    assert 0.8 <= data["metrics"]["auroc"] <= 1 and data["metrics"]["n_ood"] == 60
    assert 0 <= data["flagged_fraction"] <= 1 and isinstance(data["offset"], float)


def test_csv_input_with_label_column(model, tabular, capsys):
    d = np.load(tabular / "test.npz")
    X, y = d["X"], d["y"]
    path = tabular / "test.csv"
    with open(path, "w") as fh:
        fh.write("f0,f1,f2,y\n")
        for row, lab in zip(X.tolist(), y.tolist()):
            fh.write(",".join(repr(v) for v in row) + f",{lab}\n")
    capsys.readouterr()
    assert main(["score", "--model", str(model), "--input", str(path), "--json"]) == 0
    from_csv = json.loads(capsys.readouterr().out)
    assert main(["score", "--model", str(model), "--input", str(tabular / "test.npz"),
                 "--json"]) == 0
    from_npz = json.loads(capsys.readouterr().out)
    assert from_csv["metrics"] == from_npz["metrics"]
    assert from_csv["score_mean"] == pytest.approx(from_npz["score_mean"], rel=1e-6)


def test_fit_from_csv_with_string_labels_and_set(tabular, capsys):
    d = np.load(tabular / "train.npz")
    path = tabular / "train_str.csv"
    names = np.array(["left", "right"])[d["y"]]
    with open(path, "w") as fh:
        fh.write("a,b,c,label\n")
        for row, lab in zip(d["X"].tolist(), names):
            fh.write(",".join(repr(v) for v in row) + f",{lab}\n")
        fh.write("0,0,0,outlier\n0.1,0.1,0.1,outlier\n")
    out = tabular / "str.aoe"
    capsys.readouterr()
    rc = main(["fit", "--id", str(path), "--out", str(out), "--epochs", "1",
               "--pretrain-epochs", "2", "--seed", "0", "--json", "--device", "cpu",
               "--set", "outlier_label=outlier", "--set", "outliers=uniform",
               "--set", "amp=false", "--set", "checkpoint_dir=none", "--set", "temperature=2"])
    assert rc == 0, capsys.readouterr().err
    data = json.loads(capsys.readouterr().out)
    assert data["classes"] == ["left", "right"] and data["n_id"] == 240
    from aoe_detect import AOEDetector

    det = AOEDetector.load(out)
    assert det.outlier_label == "outlier" and det.amp is False and det.checkpoint_dir is None
    assert det.temperature == 2 and det.outliers == "uniform"


@pytest.mark.parametrize("text, expected", [
    ("outliers=default", ("outliers", "default")),
    ("epochs=3", ("epochs", 3)),
    ("lr=1e-3", ("lr", 1e-3)),
    ("amp=False", ("amp", False)),
    ("amp=true", ("amp", True)),
    ("checkpoint_dir=None", ("checkpoint_dir", None)),
    ("checkpoint_dir=none", ("checkpoint_dir", None)),
    ("input_range=(0, 1)", ("input_range", (0, 1))),
    ("outlier_label='x y'", ("outlier_label", "x y")),
])
def test_set_accepts_the_obvious_forms(text, expected):
    from aoe_detect.cli import _assignment

    assert _assignment(text) == expected


@pytest.mark.parametrize("argv, needle", [
    (["fit", "--id", "x.npy", "--out", "m", "--pretrain-epochs", "inf"], "--pretrain-epochs"),
    (["fit", "--id", "x.npy", "--out", "m", "--pretrain-epochs", "2.5"], "integer >= 0 or 'auto'"),
    (["fit", "--id", "x.npy", "--out", "m", "--lr", "nan"], "--lr"),
    (["fit", "--id", "x.npy", "--out", "m", "--lr", "0"], "--lr"),
    (["fit", "--id", "x.npy", "--out", "m", "--lam", "-inf"], "--lam"),
    (["fit", "--id", "x.npy", "--out", "m", "--epsilon", "inf"], "--epsilon"),
    (["fit", "--id", "x.npy", "--out", "m", "--epsilon", "-0.1"], "--epsilon"),
    (["fit", "--id", "x.npy", "--out", "m", "--contamination", "0.9"], "--contamination"),
    (["fit", "--id", "x.npy", "--out", "m", "--contamination", "0"], "--contamination"),
    (["fit", "--id", "x.npy", "--out", "m", "--seed", "-1"], "--seed"),
    (["fit", "--id", "x.npy", "--out", "m", "--seed", str(2**40)], "--seed"),
    (["fit", "--id", "x.npy", "--out", "m", "--batch-size", "1e3"], "--batch-size"),
    (["fit", "--id", "x.npy", "--out", "m", "--device", "gpu"], "--device"),
    (["fit", "--id", "x.npy", "--out", "m", "--set", "lr=inf"], "finite"),
    (["fit", "--id", "x.npy", "--out", "m", "--threads", "0"], "--threads"),
    (["score", "--model", "m", "--input", "x.npy", "--device", "cuda:x"], "--device"),
    (["demo", "--device", "tpu"], "--device"),
    (["demo", "--seed", "nan"], "--seed"),
])
def test_every_numeric_option_is_validated(argv, needle, capsys):
    assert main(argv) == 2
    line = _error_line(capsys)
    assert needle in line, line


def test_output_paths_are_checked_before_training(tabular, capsys, monkeypatch):
    from aoe_detect import AOEDetector

    def boom(*a, **k):  # training must not even start
        raise AssertionError("fit was called")

    monkeypatch.setattr(AOEDetector, "fit", boom)
    base = ["fit", "--id", str(tabular / "train.npz"), "--quiet"]
    assert main([*base, "--out", str(tabular / "missing_dir" / "m.aoe")]) == 2
    assert "does not exist" in _error_line(capsys)
    assert main([*base, "--out", str(tabular)]) == 2
    assert "is a folder" in _error_line(capsys)
    # score checks its --out before loading or scoring
    assert main(["score", "--model", str(tabular / "nope.aoe"), "--input", "x.npy",
                 "--out", str(tabular / "missing_dir" / "s.csv")]) == 2
    assert "does not exist" in _error_line(capsys)
    # demo checks its plot path before training
    assert main(["demo", "--out", str(tabular / "missing_dir" / "p.png")]) == 2
    assert "does not exist" in _error_line(capsys)


def test_unexpected_errors_are_one_line(tabular, capsys, monkeypatch):
    from aoe_detect import AOEDetector

    def boom(*a, **k):
        raise RuntimeError("deep\ninside torch")

    monkeypatch.setattr(AOEDetector, "fit", boom)
    assert main(["fit", "--id", str(tabular / "train.npz"), "--out",
                 str(tabular / "m.aoe"), "--quiet"]) == 2
    line = _error_line(capsys)
    assert "RuntimeError: deep inside torch" in line


def test_set_unknown_parameter(tabular, capsys):
    assert main(["fit", "--id", str(tabular / "train.npz"), "--out", str(tabular / "m.aoe"),
                 "--set", "no_such=1", "--quiet"]) == 2
    assert "not a parameter of AOEDetector" in _error_line(capsys)
    # a component setting is accepted on a name (`attack="fgsm"`), refused without an attack
    assert main(["fit", "--id", str(tabular / "train.npz"), "--out", str(tabular / "m.aoe"),
                 "--attack", "none", "--set", "attack__eps=0.1", "--quiet"]) == 2
    assert "attack__eps" in _error_line(capsys)


def test_verbose_fit_says_which_device(tabular, capsys):
    rc = main(["fit", "--id", str(tabular / "train.npz"), "--out", str(tabular / "v.aoe"),
               "--epochs", "1", "--pretrain-epochs", "1", "--seed", "0"])
    assert rc == 0
    err = capsys.readouterr().err
    assert err.count("device='auto' resolved to") == 1, err


@pytest.mark.parametrize("args", [[], ["--profile", "quick", "--set", "epochs=2"],
                                  ["--report-only", "benchmarks/results/paper_full.json"]])
def test_benchmark_is_a_deprecated_stub_that_names_the_new_command(args, capsys, monkeypatch):
    """``aoe-detect benchmark`` runs nothing and imports nothing of benchmarks/ (issue 21):
    one line, status 2, the same arguments given to ``python -m benchmarks.paper``."""
    for name in ("benchmarks", "benchmarks.paper", "benchmarks.paper.cli"):
        monkeypatch.setitem(sys.modules, name, None)  # any import of the suite would fail
    assert main(["benchmark", *args]) == 2
    line = _error_line(capsys)
    assert "deprecated" in line
    assert f"`python -m benchmarks.paper{''.join(' ' + a for a in args)}`" in line


def test_demo_does_not_need_the_suite(monkeypatch):
    """``aoe-detect demo`` is library code: it never imports benchmarks.paper."""
    from aoe_detect import cli, demo

    assert cli.run_demo is demo.run_demo
    src = pathlib.Path(demo.__file__).read_text()
    assert "benchmarks" not in src.split('"""', 2)[2]
