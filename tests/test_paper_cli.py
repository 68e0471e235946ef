"""``python -m benchmarks.paper``: the paper suite's own command line (issue 21).

The argument handling moved here from the library's ``aoe-detect benchmark`` subcommand with
the same options and checks: errors are ONE line ``python -m benchmarks.paper: error: ...``
on stderr, exit status 2, no traceback, before anything is loaded or trained.
"""

import subprocess
import sys

import pytest

import benchmarks.paper as B
from benchmarks.paper.cli import build_parser, main

PROG = "python -m benchmarks.paper"


def _error_line(capsys):
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert "Traceback" not in err
    errors = [ln for ln in lines if ln.startswith(f"{PROG}: error:")]
    assert len(errors) == 1, err
    return errors[0]


@pytest.fixture(autouse=True)
def _never_train(monkeypatch):
    """None of these tests may reach the suite's training."""
    from benchmarks.paper import cli

    monkeypatch.setattr(cli, "run_benchmark", lambda *a, **k: pytest.fail("benchmark ran"))


def test_help(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: {PROG}")
    for option in ("--profile", "--report-only", "--data-root", "--data", "--out", "--seeds",
                   "--items", "--set", "--cache-dir", "--no-plots", "--device", "--threads",
                   "--quiet"):
        assert option in build_parser().format_help()


@pytest.mark.parametrize("argv, needle", [
    (["--profile", "huge"], "invalid choice"),
    ([], "--profile"),
    (["--report-only", "missing.json"], "not found"),
    (["--profile", "quick", "--seeds", "a,b"], "comma-separated"),
    (["--profile", "quick", "--items", "0,9"], "--items"),
    (["--profile", "quick", "--set", "nonsense"], "FIELD=VALUE"),
    (["--profile", "quick", "--set", "no_such_field=1"], "no_such_field"),
    (["--profile", "quick", "--seeds", "0,-1"], "--seeds"),
    (["--profile", "quick", "--data", "mine.csv"], "--data must be an .npz"),
])
def test_argument_errors(argv, needle, capsys):
    assert main(argv) == 2
    assert needle in _error_line(capsys)


@pytest.mark.parametrize("pair, needle", [
    ("epochs=-1", "--set epochs: expected an integer >= 0"),
    ("epochs=abc", "--set epochs"),
    ("epochs=2.5", "--set epochs"),
    ("n_adv=0", "--set n_adv"),
    ("lr=-0.1", "--set lr: expected a finite number >= 0"),
    ("seeds=(0, -1)", "--set seeds"),
    ("adv_eps=(0.0, -0.1)", "--set adv_eps"),
    ("sources=(1, 2)", "--set sources: expected a tuple of strings"),
    ("data=3", "--set data: expected a non-empty string"),
    ("device=gpu", "--set device"),
    ("items=(1, 9)", "--set items"),
])
def test_set_values_are_validated_before_running(pair, needle, capsys):
    assert main(["--profile", "quick", "--set", pair]) == 2
    assert needle in _error_line(capsys)


def test_single_values_of_tuple_fields_become_tuples():
    from benchmarks.paper.cli import check_profile_overrides

    overrides = {"items": 3, "adv_eps": 0.1, "epochs": 2}
    check_profile_overrides("quick", overrides)
    assert overrides == {"items": (3,), "adv_eps": (0.1,), "epochs": 2}
    assert B.get_profile("quick", **overrides).items == (3,)


def test_out_must_be_a_folder(tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    assert main(["--profile", "quick", "--out", str(tmp_path / "afile")]) == 2
    assert "not a folder" in _error_line(capsys)


def test_default_out_is_the_checkouts_results_folder():
    import pathlib

    from benchmarks.paper import cli

    assert pathlib.Path(cli.RESULTS) == pathlib.Path(B.__file__).parents[1] / "results"


def test_python_dash_m_is_the_entry_point():
    r = subprocess.run([sys.executable, "-m", "benchmarks.paper", "--profile", "huge"],
                       capture_output=True, text=True)
    assert r.returncode == 2
    assert r.stderr.startswith(f"{PROG}: error: argument --profile: invalid choice")
