"""``benchmarks/`` as one lab (issue 21): every script registered with ``python -m
benchmarks``, the shared split builder equal to the formulas the studies used to inline, the
one results writer and run record."""

import json
import pathlib

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer, load_digits

from benchmarks import _lab
from benchmarks.__main__ import HELPERS, STUDIES, main, recorded_seconds

ROOT = pathlib.Path(__file__).resolve().parents[1] / "benchmarks"


def test_every_script_in_benchmarks_is_a_registered_study(capsys):
    """A new script without an entry in STUDIES (or HELPERS) fails here."""
    files = {p.name for p in ROOT.iterdir() if p.suffix in (".py", ".sh")}
    files |= {p.name for p in ROOT.iterdir() if (p / "__main__.py").is_file()}
    registered = {s.file for s in STUDIES}
    assert files - set(HELPERS) == registered
    assert len({s.name for s in STUDIES}) == len(STUDIES)
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for s in STUDIES:
        assert f"{s.name}  [{s.kind}]" in out and s.question in out
        assert s.kind in ("design", "evaluation", "design + evaluation", "check")
        for stem in s.results:
            assert (ROOT / "results" / f"{stem}.json").is_file(), stem


def test_list_shows_the_runtime_the_results_record():
    assert recorded_seconds("tabular_length_design") == 28.2
    assert recorded_seconds("scores_study") == pytest.approx(48.76905574798584 * 60)
    assert recorded_seconds("knn_bank") is None


def test_run_passes_the_command_line_through_and_restores_it(capsys):
    import sys

    argv = list(sys.argv)
    assert main(["run", "margin_gap", "--help"]) == 0
    assert capsys.readouterr().out.startswith("usage: margin_gap.py")
    assert sys.argv == argv
    assert main(["run", "no_such_study"]) == 2
    assert "no study 'no_such_study'" in capsys.readouterr().err
    assert main([]) == 2


# ----------------------------------------------------------------------- the design split
def _old_permuted(y, seed, n):
    """margin_gap, scores_study, tabular_small_design before issue 21."""
    rng = np.random.RandomState(seed)
    idd = rng.permutation(np.flatnonzero(y < 5))
    return idd[:n], idd[n:], rng


@pytest.mark.parametrize("seed", [0, 1, 2, 13, 100, 102])
def test_digits_design_split_is_the_formula_the_studies_inlined(seed):
    X, y = load_digits(return_X_y=True)
    for n in (120, 250, 600, int(0.7 * 901)):
        tr, te, _ = _old_permuted(y, seed, n)
        s = _lab.digits_design_split(seed, n)
        for a, b in ((s.X_train, X[tr]), (s.y_train, y[tr]), (s.X_test, X[te]),
                     (s.y_test, y[te]), (s.X_ood, X[y >= 5])):
            assert a.dtype == b.dtype and np.array_equal(a, b)
    # scores_study: 600 train, 100 validation rows, seed 13
    idd = np.random.RandomState(13).permutation(np.flatnonzero(y < 5))
    s = _lab.digits_design_split(13, 600, n_val=100)
    assert np.array_equal(s.X_val, X[idd[600:700]]) and np.array_equal(s.X_test, X[idd[700:]])
    # tabular_length_design / tabular_outliers: 70% of the ID rows, Xi[permutation(len(Xi))]
    m = y < 5
    Xi = X[m]
    p = np.random.RandomState(seed).permutation(len(Xi))
    ntr = int(0.7 * len(Xi))
    s = _lab.digits_design_split(seed, 0.7, labelled=False)
    assert s.y_train is None
    assert np.array_equal(s.X_train, Xi[p[:ntr]]) and np.array_equal(s.X_test, Xi[p[ntr:]])
    assert np.array_equal(s.X_ood, X[~m])


def test_id_split_continues_the_callers_stream_and_serves_other_data():
    X, y = load_digits(return_X_y=True)
    _, _, rng_old = _old_permuted(y, 3, 600)
    rng = np.random.RandomState(3)
    _lab.digits_design_split(rng, 600)
    assert np.array_equal(rng.uniform(0, 16, (5, 64)), rng_old.uniform(0, 16, (5, 64)))
    Xb, yb = load_breast_cancer(return_X_y=True)
    m = yb == 1
    p = np.random.RandomState(4).permutation(int(m.sum()))
    n = int(0.7 * m.sum())
    s = _lab.id_split(Xb, yb, m, 4, 0.7)
    assert np.array_equal(s.X_train, Xb[m][p[:n]]) and np.array_equal(s.y_train, yb[m][p[:n]])
    assert np.array_equal(s.X_test, Xb[m][p[n:]]) and np.array_equal(s.X_ood, Xb[~m])


def test_split_sizes_and_disjointness():
    s = _lab.digits_design_split(0, 600, n_val=100)
    assert (len(s.X_train), len(s.X_val), len(s.X_test), len(s.X_ood)) == (600, 100, 201, 896)
    rows = {r.tobytes() for r in s.X_train}
    assert not rows & {r.tobytes() for r in s.X_test}


# ------------------------------------------------------------------ the results writer
def test_write_results_writes_exactly_the_payload_and_the_text(tmp_path):
    payload = {"meta": {"command": "python x.py"}, "rows": [{"a": 1.5}], "v": np.float64(0.25)}
    paths = _lab.write_results(str(tmp_path / "sub" / "x"), payload, "# x\n", default=float)
    assert paths == {"json": str(tmp_path / "sub" / "x.json"),
                     "markdown": str(tmp_path / "sub" / "x.md")}
    text = pathlib.Path(paths["json"]).read_text()
    assert text == json.dumps(payload, indent=1, default=float)
    assert json.loads(text)["v"] == 0.25
    assert pathlib.Path(paths["markdown"]).read_text() == "# x\n"


def test_run_record_has_command_date_machine_versions():
    rec = _lab.run_record(str(ROOT / "margin_gap.py"), ["--seeds", "3", "a b"], seconds=1.0)
    assert list(rec) == ["command", "date", "seconds", "machine", "versions"]
    assert rec["command"].endswith("margin_gap.py --seeds 3 'a b'")
    assert {"platform", "cpu_count", "torch_threads"} <= set(rec["machine"])
    assert {"python", "torch", "numpy", "scikit_learn", "aoe_detect"} <= set(rec["versions"])


def test_help_of_a_study_without_options_does_not_run_it(capsys):
    """`run tabular_small_design --help` used to run the whole study (it takes no options)."""
    assert main(["run", "tabular_small_design", "--help"]) == 0
    out = capsys.readouterr().out
    assert "takes no options" in out and "tabular" in out
