"""``python -m benchmarks``: list the studies of this lab and run one of them.

    python -m benchmarks list                   # every study: kind, question, recorded runtime
    python -m benchmarks run NAME [ARGS...]     # runs it exactly as its own command does

``run`` executes the study's script (``python benchmarks/NAME.py ARGS``, or ``python -m
benchmarks.paper ARGS`` for the paper suite) in this process with the same ``sys.argv``, so
it records the same command in its results as running the script directly. Run from the
repository root. The index with commands and result files is ``benchmarks/README.md``.

Registering a new study is one entry in :data:`STUDIES` (a test fails for a script in
``benchmarks/`` without one): name, file, kind (``design``: chooses something on design
data; ``evaluation``: measures on data that chose nothing; ``design + evaluation``: both,
in stages; ``check``: a pass/fail check), the question, the stems of its result files in ``benchmarks/results/`` and,
where its results do not record it, a runtime note.
"""

from __future__ import annotations

import json
import os
import runpy
import subprocess
import sys
from typing import NamedTuple

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results")
PROG = "python -m benchmarks"


class Study(NamedTuple):
    name: str
    file: str  # relative to benchmarks/; a folder is a package run with ``python -m``
    kind: str
    question: str
    results: tuple = ()
    runtime: str = ""


# One entry per study. ``results``: stems under benchmarks/results/ (the first one that
# records a runtime gives the runtime shown by ``list``).
STUDIES = (
    Study("paper", "paper", "evaluation", "Does AOE deliver what the paper claims (8 items, peers)?", ("paper_full", "paper_quick")),  # noqa: E501
    Study("scores_study", "scores_study.py", "design + evaluation", "Which OOD score should be the default, and how do the post-hoc peers compare?", ("scores_study",)),  # noqa: E501
    Study("outlier_study", "outlier_study.py", "design + evaluation", "Which synthetic image outliers should be the default mixture?", ("outlier_study",), "not recorded (cached fits, several sessions)"),  # noqa: E501
    Study("outlier_defaults", "outlier_defaults.py", "evaluation", "Does each outlier family alone or the default mixture do better on held-out OOD sets?", ("outlier_defaults",)),  # noqa: E501
    Study("knn_bank", "knn_bank.py", "design", "How large must the k-NN score's bank be (knn_max_samples)?", ("knn_bank",), "not recorded"),  # noqa: E501
    Study("margin_gap", "margin_gap.py", "design", "Which gap m_out - m_in should the automatic energy margins use?", ("margin_gap",), "104 s (margin_gap.md)"),  # noqa: E501
    Study("recipe_accuracy", "recipe_accuracy.py", "evaluation", "What test accuracy does the default image recipe reach on full Fashion-MNIST? (--design: which pretraining length)", ("recipe_accuracy", "recipe_accuracy_20_epochs", "recipe_accuracy_10_epochs", "recipe_accuracy_augment", "recipe_accuracy_design_base", "recipe_accuracy_design_15", "recipe_accuracy_design_20")),  # noqa: E501
    Study("tabular_outliers", "tabular_outliers.py", "design + evaluation", "Which tabular outlier sources stay off the ID support and should be the default?", ("tabular_outliers",)),  # noqa: E501
    Study("tabular_length_design", "tabular_length_design.py", "design", "Is the 500-step floor of epochs='auto' right for tabular fine-tuning?", ("tabular_length_design",)),  # noqa: E501
    Study("tabular_small_design", "tabular_small_design.py", "design + evaluation", "Which score and length for small and label-free tabular data?", ("tabular_small_design",)),  # noqa: E501
    Study("speed", "speed.py", "evaluation", "What does the package add on top of the work AOE has to do (time and memory ratios)?", ("speed", "speed_scores")),  # noqa: E501
    Study("fault_injection", "fault_injection.py", "evaluation", "Does every bad input or training fault fail clearly without losing data?", ("fault_injection",)),  # noqa: E501
    Study("dask_throughput", "dask_throughput.py", "evaluation", "How many rows/s does scoring on a local Dask cluster give against one process?", ("dask_throughput",), "not recorded (about 25 min on 2 busy cores; --quick about 8)"),  # noqa: E501
    Study("robustness_study", "robustness_study.py", "design + evaluation", "Under multi-step attacks through the deployed score, on both sides, does AOE beat OE (issue 18)?", ("robustness_study", "robustness_schedules"), "not recorded (one process per seed on a loaded CPU)"),  # noqa: E501
    Study("tabular_benchmark", "tabular_benchmark.py", "design + evaluation", "On 16 real labelled tables, does AOEDetector beat the classical detectors (novel class, label-free), and which tabular defaults would win (issue 19)?", ("tabular_benchmark",), "not recorded (several runs on a loaded CPU; reduced suite)"),  # noqa: E501
    Study("fit_path", "fit_path.py", "evaluation", "Which modules does fit's X pass through before training, how often does it come back, and how big are the rooms (issue 21)?", ("fit_path", "fit_path_bbf32b0", "fit_path_4ba4b21", "fit_path_4dcd8c0"), "seconds"),  # noqa: E501
    Study("bitwise_ab", "bitwise_ab.py", "check", "Does a refactor change a number (twelve small fits hashed, compared across two commits)?", ("bitwise_ab",), "about a minute per commit"),  # noqa: E501
    Study("gpu_check", "gpu_check.sh", "check", "Do AMP, compile, save/load and WRN-40-2 throughput work on a CUDA GPU?", (), "< 8 min on one GPU (results not committed)"),  # noqa: E501
)

#: Files in benchmarks/ that are not studies: shared helpers and parts of a study.
HELPERS = ("__init__.py", "__main__.py", "_lab.py", "fashion_sets.py", "_gpu_check.py")


def recorded_seconds(stem):
    """The wall time a result file records (``wall_seconds``, ``seconds`` or ``minutes``,
    at the top or in ``meta``; for recipe runs the sum of their fit times), else None."""
    path = os.path.join(RESULTS, stem + ".json")
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        data = json.load(f)
    for block in (data.get("meta", {}), data):
        for key, scale in (("wall_seconds", 1), ("seconds", 1), ("minutes", 60)):
            if isinstance(block.get(key), (int, float)):
                return float(block[key]) * scale
    runs = data.get("runs")
    if isinstance(runs, list) and runs and all("fit_seconds" in r for r in runs):
        return float(sum(r["fit_seconds"] + (r.get("finetune_seconds") or 0) for r in runs))
    return None


def runtime(study):
    for stem in study.results:
        s = recorded_seconds(stem)
        if s is not None:
            return (f"{s:.0f} s" if s < 120 else f"{s / 60:.1f} min") + f" ({stem}.json)"
    return study.runtime or "not recorded"


def list_studies(out=None):
    out = sys.stdout if out is None else out
    for s in STUDIES:
        out.write(f"{s.name}  [{s.kind}]  {runtime(s)}\n    {s.question}\n")
    return 0


def _takes_options(path):
    """Whether a study parses a command line (a ``--help`` of one that does not would run
    the whole study)."""
    if os.path.isdir(path) or path.endswith(".sh"):
        return True
    with open(path, encoding="utf-8") as f:
        return "argparse" in f.read()


def run_study(name, args):
    """Run study ``name`` with ``args`` as its command line; returns its exit status."""
    study = {s.name: s for s in STUDIES}.get(name)
    if study is None:
        sys.stderr.write(f"{PROG}: error: no study {name!r}; `{PROG} list` shows them\n")
        return 2
    path = os.path.join(HERE, study.file)
    if {"-h", "--help"} & set(args) and not _takes_options(path):
        print(f"{study.name}: {study.question}\n(this study takes no options; "
              f"`{PROG} run {study.name}` runs it)")  # instead of running the whole study
        return 0
    if study.file.endswith(".sh"):
        return subprocess.call(["bash", path, *args])
    old_argv = sys.argv
    try:
        if os.path.isdir(path):
            sys.argv = [path, *args]
            runpy.run_module(f"benchmarks.{study.file}", run_name="__main__", alter_sys=True)
        else:
            sys.argv = [os.path.relpath(path), *args]
            runpy.run_path(path, run_name="__main__")
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except ImportError as exc:
        sys.stderr.write(f"{PROG}: error: {name} cannot run: {exc}\n")
        return 2
    finally:
        sys.argv = old_argv
    return 0


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["list"] and len(argv) == 1:
        return list_studies()
    if argv[:1] == ["run"] and len(argv) >= 2:
        return run_study(argv[1], argv[2:])
    sys.stderr.write(f"usage: {PROG} list | {PROG} run NAME [ARGS...]\n")
    return 0 if argv[:1] in (["-h"], ["--help"]) else 2


if __name__ == "__main__":
    sys.exit(main())
