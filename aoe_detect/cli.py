"""Command-line interface: ``aoe-detect demo | fit | score`` (``benchmark``: a deprecated stub).

For users who do not write Python. Every subcommand has ``--help``. Expected errors (bad
arguments, missing or malformed files, invalid parameters) print ONE line
``aoe-detect: error: ...`` to stderr and exit with status 2; no traceback. Warnings from the
library print as one line ``aoe-detect: warning: ...``.

Input files: ``.npy`` (one array, the inputs), ``.npz`` (key ``X`` for the inputs and,
optionally, ``y`` for labels), both read with ``allow_pickle=False``, or ``.csv`` (tabular
rows of numbers, comma-separated; an optional header row; a column named ``y`` or ``label``
holds the labels, which may be strings). Images are ``(n, h, w)`` or ``(n, c, h, w)``, uint8
(scaled to [0, 1]) or floats in [0, 1]; tabular data is ``(n, d)``. Labels for ``fit`` are
class labels (``-1``, or the ``outlier_label`` given with ``--set``, marks an outlier row);
labels for ``score`` mark OOD rows with a negative value (or ``outlier_label``).

Scores are the detector's ``score_samples`` (its ``ood_score``; the summary names it): higher =
more in-distribution; ``predict`` gives +1 (ID) / -1 (OOD).
``score --out scores.csv`` writes both (columns ``score,prediction``); ``--json`` prints one
JSON object with the numbers instead of the human-readable summary.

Every option is validated before anything is read or trained, and every output path is
checked before training starts.
"""

from __future__ import annotations

import argparse
import ast
import csv
import json
import math
import os
import re
import shlex
import sys
import time
import warnings

import numpy as np
import torch

from . import _params, _version
from ._torch_utils import resolve_device as _resolve_device
from .demo import METHOD_LABELS, OOD_LABELS, demo_table, run_demo
from .detector import AOEDetector
from .exceptions import CLIError  # defined there; still importable from here
from .metrics import ood_report
from .model_selection import ood_mask
from .plots import plot_score_histograms

__all__ = ["main", "build_parser"]

PROG = "aoe-detect"


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (no usage dump) and exit status 2."""

    def error(self, message):
        sys.stderr.write(f"{PROG}: error: {message} (see '{self.prog} --help')\n")
        raise SystemExit(2)


def _one_line(exc):
    msg = " ".join(line.strip() for line in str(exc).strip().splitlines() if line.strip())
    if isinstance(exc, KeyError) and msg.startswith("'") and msg.endswith("'"):
        msg = msg[1:-1]
    return msg or type(exc).__name__


def _show_warning(message, category, filename, lineno, file=None, line=None):
    sys.stderr.write(f"{PROG}: warning: {_one_line(message)}\n")


def _log(msg, *, t0=[None]):  # noqa: B006 - a start time shared by the calls
    if t0[0] is None:
        t0[0] = time.time()
    sys.stderr.write(f"[{time.time() - t0[0]:7.1f}s] {msg}\n")
    sys.stderr.flush()


# ------------------------------------------------------------------------ arguments
def _int_at_least(lo, what, hi=None, auto=False):
    """argparse type: an integer in ``[lo, hi]`` (or ``"auto"``), ``what`` in errors."""
    def parse(text):
        if auto and text == "auto":
            return "auto"
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if v < lo or (hi is not None and v > hi):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return v
    return parse


_positive_int = _int_at_least(1, "a positive integer")
_nonneg_int = _int_at_least(0, "an integer >= 0")
_seed = _int_at_least(0, "an integer in [0, 2**32 - 1]", hi=2**32 - 1)
_epochs_or_auto = _int_at_least(0, "an integer >= 0 or 'auto'", auto=True)


def _real(lo=None, hi=None, *, lo_open=False, hi_open=False, auto=False):
    """argparse type: a finite number in the given interval (or ``"auto"``)."""
    left = "(" if lo_open else "["
    right = ")" if hi_open else "]"
    if lo is not None and hi is not None:
        what = f"a number in {left}{lo}, {hi}{right}"
    elif lo is not None:
        what = f"a finite number {'>' if lo_open else '>='} {lo}"
    else:
        what = "a finite number"
    if auto:
        what += " or 'auto'"

    def parse(text):
        if auto and text == "auto":
            return "auto"
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        ok = math.isfinite(v)
        if ok and lo is not None:
            ok = v > lo if lo_open else v >= lo
        if ok and hi is not None:
            ok = v < hi if hi_open else v <= hi
        if not ok:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return v
    return parse


# kept for callers of the old name: a finite number >= 0 or "auto"
_float_or_auto = _real(0, auto=True)

_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?|mps)$")


def _device(text):
    """argparse type: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``."""
    if not _DEVICE.match(text):
        raise argparse.ArgumentTypeError(f"expected auto, cpu, cuda, cuda:N or mps, got {text!r}")
    return text


_WORDS = {"true": True, "false": False, "none": None, "null": None}


def _assignment(text):
    """``FIELD=VALUE``: VALUE is a Python literal (numbers, tuples, quoted strings),
    ``true``/``false``/``none`` in any case, or else the bare string (``outliers=default``).
    Non-finite numbers are refused."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected FIELD=VALUE, got {text!r}")
    value = value.strip()
    if value.lower() in _WORDS:
        return key.strip(), _WORDS[value.lower()]
    try:
        parsed = ast.literal_eval(value)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        parsed = value
    if isinstance(parsed, list):
        parsed = tuple(parsed)
    if isinstance(parsed, str) and parsed == value:
        try:
            number = float(value)
        except ValueError:
            number = None
        if number is not None and not math.isfinite(number):
            raise argparse.ArgumentTypeError(f"--set {key.strip()}: expected a finite number, "
                                             f"got {value!r}")
    if isinstance(parsed, float) and not math.isfinite(parsed):
        raise argparse.ArgumentTypeError(f"--set {key.strip()}: expected a finite number, "
                                         f"got {value!r}")
    return key.strip(), parsed


def build_parser():
    """The argparse parser of ``aoe-detect`` (subcommands demo, fit, score; benchmark is a
    deprecated stub)."""
    p = _Parser(prog=PROG, description=(
        "Out-of-distribution detection with Adversarial Outlier Exposure (AOE). Scores are "
        "-energy (higher = more in-distribution)."))
    p.add_argument("--version", action="version", version=f"{PROG} {_version.__version__}")
    sub = p.add_subparsers(dest="command", metavar="{demo,benchmark,fit,score}",
                           parser_class=_Parser)
    sub.required = True
    _add_demo(sub)
    _add_benchmark(sub)
    _add_fit(sub)
    _add_score(sub)
    return p


def _add_demo(sub):
    d = sub.add_parser("demo", help="train no-OE, OE and AOE on the embedded sample and compare",
                       description=(
                           "Pretrain a small CNN on the Fashion-MNIST sample shipped with the "
                           "package, fine-tune it without outlier exposure, with OE and with AOE "
                           "(FGSM), print the OOD detection table and write a histogram plot. "
                           "About 1-3 minutes on 2 CPU cores; no download."))
    d.add_argument("--out", default="aoe_demo.png", help="PNG plot to write (default: %(default)s)")
    d.add_argument("--no-plot", action="store_true", help="do not write the plot")
    d.add_argument("--epochs", type=_positive_int, default=3,
                   help="fine-tuning epochs per method (default: %(default)s)")
    d.add_argument("--pretrain-epochs", type=_positive_int, default=10,
                   help="cross-entropy pretraining epochs (default: %(default)s)")
    d.add_argument("--seed", type=_seed, default=0, help="random seed (default: %(default)s)")
    _common_runtime(d)


def _add_benchmark(sub):
    b = sub.add_parser("benchmark", help="deprecated: the paper suite runs with `python -m "
                       "benchmarks.paper` from a source checkout",
                       description=(
                           "Deprecated and no longer runs anything: the paper-reproduction suite "
                           "is not part of the library. From the root of a source checkout run "
                           "`python -m benchmarks.paper ARGS` with the same arguments (see "
                           "docs/benchmarks.md). This stub exits with status 2 and will be "
                           "removed in the next minor release."))
    b.add_argument("suite_args", nargs="*", metavar="ARGS",
                   help="the suite's arguments, e.g. --profile quick --threads 1")


def _add_fit(sub):
    f = sub.add_parser("fit", help="fit a detector on array files and save it",
                       description=(
                           "Fit an AOEDetector on in-distribution inputs (.npy, or .npz with keys "
                           "X and optional y = class labels) and save it in the safe aoe-detect "
                           "format (tensors + JSON, loaded without running code)."))
    f.add_argument("--id", dest="id_file", required=True, metavar="FILE",
                   help="in-distribution inputs: .npy (X), .npz (X, optional y) or .csv "
                        "(optional y/label column)")
    f.add_argument("--labels", default=None, metavar="FILE",
                   help="class labels .npy or .csv (instead of y in the input file); -1 marks "
                        "outlier rows")
    f.add_argument("--outliers", default=None, metavar="FILE",
                   help="training outliers .npy/.npz/.csv (replace --outlier-source)")
    f.add_argument("--out", required=True, metavar="MODEL", help="file to save the detector to")
    f.add_argument("--outlier-source", default="default",
                   choices=("default", "gan", "uniform", "gaussian", "smooth", "lowdensity",
                            "permuted", "none"),
                   help="built-in outlier source when no --outliers file is given "
                        "(default: %(default)s; none = no outlier exposure)")
    f.add_argument("--attack", default="fgsm", choices=("fgsm", "pgd", "gaussian", "none"),
                   help="outlier augmentation (default: %(default)s = AOE; none = vanilla OE)")
    f.add_argument("--epsilon", type=_real(0, auto=True), default="auto",
                   help="attack radius in input units, or auto (default: %(default)s)")
    f.add_argument("--epochs", type=_epochs_or_auto, default="auto",
                   help="outlier-exposure epochs, or auto: 10, at least 500 optimizer steps "
                        "(default: %(default)s)")
    f.add_argument("--pretrain-epochs", type=_epochs_or_auto, default="auto",
                   help="cross-entropy pretraining epochs, or auto (default: %(default)s)")
    f.add_argument("--backbone", default="auto",
                   choices=("auto", "mlp", "small_cnn", "wrn40_2", "resnet18"),
                   help="classifier (default: %(default)s: mlp for tabular, small_cnn for images)")
    f.add_argument("--batch-size", type=_positive_int, default=128, help="(default: %(default)s)")
    f.add_argument("--lr", type=_real(0, lo_open=True), default=1e-3,
                   help="learning rate (default: %(default)s)")
    f.add_argument("--lam", type=_real(0, auto=True), default="auto",
                   help="weight of the outlier loss term, or auto (default: %(default)s)")
    f.add_argument("--contamination", type=_real(0, 0.5, lo_open=True), default=0.05,
                   help="share of ID flagged as OOD by predict (default: %(default)s)")
    f.add_argument("--seed", type=_seed, default=None, help="random seed")
    f.add_argument("--set", dest="params", type=_assignment, action="append", default=[],
                   metavar="PARAM=VALUE",
                   help="set any AOEDetector parameter (repeatable; applied last), e.g. "
                        "--set outliers=default --set temperature=2 --set runtime__amp=false "
                        "--set outlier_label=outlier; values are numbers, true/false, none, "
                        "tuples or strings")
    f.add_argument("--json", action="store_true",
                   help="print one JSON object (n_id, offset, seconds, device, out) to stdout")
    _out_options(f)
    _common_runtime(f)


def _add_score(sub):
    s = sub.add_parser("score", help="score inputs with a saved detector",
                       description=(
                           "Load a detector saved by 'aoe-detect fit' (or AOEDetector.save) and "
                           "score inputs with its score_samples (higher = more in-distribution). Prints a "
                           "summary; with labels (y in the .npz or --labels; y < 0 = OOD) also "
                           "AUROC, AUPR and FPR@95TPR."))
    s.add_argument("--model", required=True, metavar="MODEL", help="saved detector file")
    s.add_argument("--input", required=True, metavar="FILE",
                   help=".npy (X), .npz (X, optional y) or .csv (optional y/label column)")
    s.add_argument("--labels", default=None, metavar="FILE",
                   help="labels .npy or .csv: y < 0 (or the detector's outlier_label) marks OOD "
                        "rows, anything else ID")
    s.add_argument("--out", default=None, metavar="FILE",
                   help="write the results: .csv with columns score,prediction (score = "
                        "score_samples, float64; prediction +1 ID / -1 OOD), or .npy with the "
                        "scores")
    s.add_argument("--json", action="store_true",
                   help="print one JSON object with the summary and, with labels, the OOD "
                        "metrics (auroc, aupr_in, aupr_out, fpr95) to stdout")
    s.add_argument("--device", type=_device, default="auto",
                   help="cpu, cuda, cuda:N, mps or auto (default: %(default)s)")
    _out_options(s)


def _out_options(p):
    p.add_argument("--label-column", default=None, metavar="NAME",
                   help="CSV input: the column that holds the labels (default: one named y, "
                        "label, labels or target); none = every column is a feature")
    p.add_argument("--force", action="store_true", help="overwrite an existing --out file")


def _common_runtime(p):
    p.add_argument("--device", type=_device, default="auto",
                   help="cpu, cuda, cuda:N, mps or auto (default: %(default)s)")
    p.add_argument("--threads", type=_int_at_least(1, "an integer in [1, 1024]", hi=1024),
                   default=None,
                   help="torch CPU threads (default: torch's choice; 1 is fastest on a busy "
                        "shared machine)")
    p.add_argument("--quiet", action="store_true", help="no progress output")


# --------------------------------------------------------------------------- files
_LABEL_COLUMNS = ("y", "label", "labels", "target")
#: Column names that look like labels but are not taken as labels without --label-column
#: (a warning says so): a numeric "class" column is a plausible feature too.
_LABEL_LIKE = ("class", "classes", "targets", "category", "outcome", "ood", "is_ood",
               "outlier", "is_outlier", "y_true")


def _label_column_index(header, label_column, what, path):
    """Index of the label column: the one ``--label-column`` names (``"none"``: no labels),
    else a column named like ``_LABEL_COLUMNS``; label-like names (``_LABEL_LIKE``) warn."""
    if label_column is not None and label_column.lower() != "none":
        if header is None or label_column not in header:
            raise CLIError(f"--label-column {label_column!r}: {what} file {path} has no column "
                           f"of that name (columns: {', '.join(header or []) or 'no header'})")
        return header.index(label_column)
    if header is None or label_column is not None:
        return None
    hits = [i for i, h in enumerate(header) if h.lower() in _LABEL_COLUMNS]
    if len(hits) > 1:
        raise CLIError(f"{what} file {path} has several label columns "
                       f"({', '.join(header[i] for i in hits)}); keep one")
    like = [h for h in header if h.lower() in _LABEL_LIKE]
    if like:
        warnings.warn(f"{what} file {path}: column {like[0]!r} looks like labels but is used "
                      f"as a feature; pass --label-column {like[0]} if it holds the labels "
                      "(or --label-column none to silence this)", UserWarning)
    return hits[0] if hits else None


def _parse_labels(rows, header, label_col, what, path):
    """The label column: integers when every cell is an integral number, else strings;
    blank cells are an error naming their file lines."""
    raw = [r[label_col].strip() for r in rows]
    blank = [i + 1 + (header is not None) for i, v in enumerate(raw) if not v]
    if blank:
        raise CLIError(f"{what} file {path}: the label column {header[label_col]!r} is blank "
                       f"in {len(blank)} row(s) (file lines {blank[:10]}); give every row a "
                       "label (-1 for an outlier row)")
    try:
        y = np.array([float(v) for v in raw])
    except ValueError:
        return np.array(raw)
    return y.astype(np.int64) if np.all(np.isfinite(y)) and np.all(y == np.round(y)) else y


def _read_csv(path, what, label_column=None):
    """``(X float64 (n, d), y or None)`` from a CSV file of numbers.

    An optional header row (any non-numeric cell in the first row); a column named ``y``,
    ``label``, ``labels`` or ``target`` holds the labels (integers or strings), or the one
    named by ``label_column`` (``"none"``: every column is a feature). Blank label cells
    are an error naming their rows. With a header (distinct, non-empty names) and pandas
    installed, ``X`` is a DataFrame of the feature columns, so ``fit`` records their names
    and ``score`` refuses a file whose columns differ or come in another order."""
    try:
        with open(path, newline="") as fh:
            rows = [r for r in csv.reader(fh) if r and any(c.strip() for c in r)]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise CLIError(f"cannot read {what} file {path}: {_one_line(exc)}") from None
    if not rows:
        raise CLIError(f"{what} file {path} is empty")

    def numeric(cell):
        try:
            float(cell)
            return True
        except ValueError:
            return False

    header = None
    if not all(numeric(c) for c in rows[0]):
        header, rows = [c.strip() for c in rows[0]], rows[1:]
    if not rows:
        raise CLIError(f"{what} file {path} has a header but no data rows")
    width = len(rows[0])
    for i, r in enumerate(rows):
        if len(r) != width:
            raise CLIError(f"{what} file {path}: row {i + 1 + (header is not None)} has {len(r)} "
                           f"columns, the first data row has {width}")
    if header is not None and len(header) != width:
        raise CLIError(f"{what} file {path}: the header has {len(header)} columns, the data "
                       f"{width}")
    label_col = _label_column_index(header, label_column, what, path)
    cols = [j for j in range(width) if j != label_col]
    if not cols:
        raise CLIError(f"{what} file {path} has no feature columns")
    try:
        X = np.array([[float(r[j]) for j in cols] for r in rows], dtype=np.float64)
    except ValueError as exc:
        raise CLIError(f"{what} file {path} has a non-numeric feature value: "
                       f"{_one_line(exc)}") from None
    y = None if label_col is None else _parse_labels(rows, header, label_col, what, path)
    names = [header[j] for j in cols] if header is not None else None
    if names and len(set(names)) == len(names) and all(names):
        try:
            import pandas as pd  # optional dependency: the header's names are then checked
        except ImportError:
            pass
        else:  # the detector records them at fit and refuses other columns when scoring
            X = pd.DataFrame(X, columns=names)
    return X, y


def _read_arrays(path, what, label_column=None):
    """``(X, y or None)`` from a .npy, .npz or .csv file; errors are CLIError with one line."""
    ext = os.path.splitext(path)[1].lower()
    if ext not in (".npy", ".npz", ".csv"):
        raise CLIError(f"{what} must be a .npy, .npz or .csv file, got {path!r}")
    if not os.path.isfile(path):
        raise CLIError(f"{what} file not found: {path}")
    if ext == ".csv":
        return _read_csv(path, what, label_column)
    if label_column is not None and label_column.lower() != "none":
        raise CLIError(f"--label-column applies to .csv files; {path} is {ext} (use its y array)")
    try:
        loaded = np.load(path, allow_pickle=False)
    except Exception as exc:  # ValueError, OSError, EOFError, zipfile.BadZipFile
        raise CLIError(f"cannot read {what} file {path}: {_one_line(exc)}") from None
    if ext == ".npy":
        if not isinstance(loaded, np.ndarray):
            raise CLIError(f"{what} file {path} does not hold a single array")
        return loaded, None
    with loaded as npz:
        keys = list(npz.keys())
        if "X" not in keys:
            raise CLIError(f"{what} file {path} has no array 'X' (it holds: "
                           f"{', '.join(keys) or 'nothing'}); save it with "
                           "numpy.savez(path, X=inputs, y=labels)")
        X = npz["X"]
        y = npz["y"] if "y" in keys else None
    return X, y


def _read_labels(path):
    ext = os.path.splitext(path)[1].lower()
    if ext not in (".npy", ".csv"):
        raise CLIError(f"--labels must be a .npy or .csv file, got {path!r}")
    if ext == ".csv":
        X, y = _read_csv_labels(path)
        return y
    X, _ = _read_arrays(path, "--labels")
    return np.asarray(X)


def _read_csv_labels(path):
    """A one-column CSV (optional header) of labels, numbers or strings."""
    if not os.path.isfile(path):
        raise CLIError(f"--labels file not found: {path}")
    try:
        with open(path, newline="") as fh:
            rows = [r for r in csv.reader(fh) if r and any(c.strip() for c in r)]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise CLIError(f"cannot read --labels file {path}: {_one_line(exc)}") from None
    if any(len(r) != 1 for r in rows):
        raise CLIError(f"--labels file {path} must have exactly one column")
    raw = [r[0].strip() for r in rows]
    if raw and raw[0].lower() in _LABEL_COLUMNS:
        raw = raw[1:]
    if not raw:
        raise CLIError(f"--labels file {path} is empty")
    try:
        y = np.array([float(v) for v in raw])
        if np.all(np.isfinite(y)) and np.all(y == np.round(y)):
            y = y.astype(np.int64)
    except ValueError:
        y = np.array(raw)
    return None, y


def _check_out_file(path, what, exts=None, force=None):
    """Fail now (before any training) if ``path`` cannot be written, or (``force=False``)
    if it exists."""
    if exts is not None and os.path.splitext(path)[1].lower() not in exts:
        raise CLIError(f"{what} must end in {' or '.join(exts)}, got {path!r}")
    full = os.path.abspath(os.path.expanduser(path))
    if os.path.isdir(full):
        raise CLIError(f"{what} {path} is a folder; give a file name")
    if force is False and os.path.exists(full):
        raise CLIError(f"{what} {path} exists; pass --force to overwrite it, or another name")
    folder = os.path.dirname(full)
    if not os.path.isdir(folder):
        raise CLIError(f"{what} folder does not exist: {folder}")
    if not os.access(folder, os.W_OK):
        raise CLIError(f"{what} folder is not writable: {folder}")
    if os.path.exists(full) and not os.access(full, os.W_OK):
        raise CLIError(f"{what} file is not writable: {path}")


# ------------------------------------------------------------------------ commands
def _cmd_demo(args):
    if not args.no_plot:
        _check_out_file(args.out, "--out", (".png", ".pdf", ".svg"))
    t0 = time.time()
    log = None if args.quiet else _log
    res = run_demo(epochs=args.epochs, pretrain_epochs=args.pretrain_epochs, seed=args.seed,
                   verbose=0 if args.quiet else 1, log=log, device=args.device)
    print("OOD detection on the embedded sample (ID: 1000 Fashion-MNIST test images; AUROC "
          "per OOD set, higher is better; FPR95 lower is better; score: the paper's energy "
          "-E(x), last row: the package's default score on the AOE-FGSM network):")
    print(demo_table(res["rows"]))
    if not args.no_plot:
        try:
            path = plot_score_histograms(
                res["scores"], args.out, labels=METHOD_LABELS,
                ood_labels=OOD_LABELS, title="aoe-detect demo: -energy (last: default score), ID vs OOD")
            print(f"plot written to {path}")
        except ImportError as exc:
            sys.stderr.write(f"{PROG}: note: plot skipped: {_one_line(exc)}\n")
    print(f"done in {time.time() - t0:.0f}s")
    return 0


def _cmd_benchmark(suite_args):
    """The deprecated ``benchmark`` subcommand: says where the suite's command line went."""
    raise CLIError("`aoe-detect benchmark` is deprecated and no longer runs the paper suite, "
                   "which is not part of the library: from the root of a source checkout run "
                   f"`{shlex.join(['python', '-m', 'benchmarks.paper', *suite_args])}` "
                   "(same arguments)")


def _score_text(det):
    """What ``score_samples`` of ``det`` is, for the summaries."""
    return "-energy" if det._score_name == "energy" else f"ood_score {det._score_name!r}"


def _set_param(det, key, value):
    """``--set key=value``: a parameter, a component setting (``runtime__amp``, also on a
    name shortcut) or a flat name of 0.2 (with its FutureWarning)."""
    valid = det.get_params(deep=True)
    nested = key.split("__")[0] in _params.COMPONENTS and "__" in key
    if key not in valid and not nested and key not in _params.DEPRECATED:
        raise CLIError(f"--set {key}: not a parameter of AOEDetector; valid names: "
                       f"{', '.join(sorted(valid))} and <component>__<setting> for the "
                       f"components {', '.join(_params.COMPONENTS)}")
    try:
        det.set_params(**{key: value})
    except ValueError as exc:
        raise CLIError(f"--set {key}: {exc}") from None


def _cmd_fit(args):
    _check_out_file(args.out, "--out", force=args.force)  # before anything is read or trained
    X, y = _read_arrays(args.id_file, "--id", args.label_column)
    if args.labels is not None:
        y = _read_labels(args.labels)
    outliers = None
    if args.outliers is not None:
        outliers, _ = _read_arrays(args.outliers, "--outliers")
    if outliers is not None and args.outlier_source == "none":
        raise CLIError("--outliers was given but --outlier-source none disables outlier exposure")
    det = AOEDetector(
        backbone=args.backbone,
        outliers=None if args.outlier_source == "none" else args.outlier_source,
        attack=None if args.attack == "none" else args.attack,
        epochs=args.epochs, pretrain_epochs=args.pretrain_epochs, batch_size=args.batch_size,
        lr=args.lr, contamination=args.contamination, random_state=args.seed,
        device=args.device, verbose=0 if (args.quiet or args.json) else 1)
    if args.epsilon != "auto" and args.attack != "none":
        det.set_params(attack__eps=args.epsilon)
    if args.lam != "auto":
        det.set_params(loss__lam=args.lam)
    for key, value in args.params:  # in order, so later ones may refer to earlier ones
        _set_param(det, key, value)
    _resolve_device(det.device)  # an unavailable device fails here, before training
    # with --device auto and without --quiet/--json, fit (verbose=1) names the device it chose
    t0 = time.time()
    det.fit(X, y, X_outliers=outliers)
    det.save(args.out)
    seconds = time.time() - t0
    if y is not None and not np.asarray(y).ndim > 1:
        n_id = int(np.sum(~ood_mask(np.asarray(y).ravel(), det.outlier_label)))
    else:
        n_id = len(X)
    if args.json:
        print(json.dumps({"command": "fit", "n_id": n_id, "offset": det.offset_,
                          "seconds": round(seconds, 3), "device": str(det.device_),
                          "classes": None if not hasattr(det, "classes_")
                          else np.asarray(det.classes_).tolist(), "out": args.out}))
    else:
        print(f"fitted on {n_id} in-distribution inputs in {seconds:.0f}s on {det.device_}; "
              f"threshold offset_={det.offset_:.4f} (score = {_score_text(det)}; below it = OOD); saved to "
              f"{args.out}")
    return 0


def _cmd_score(args):
    if args.out is not None:
        _check_out_file(args.out, "--out", (".npy", ".csv"), force=args.force)
    if not os.path.isfile(args.model):
        raise CLIError(f"--model file not found: {args.model}")
    X, y = _read_arrays(args.input, "--input", args.label_column)
    if args.labels is not None:
        y = _read_labels(args.labels)
    det = AOEDetector.load(args.model, device=args.device)
    scores = det.score_samples(X)
    pred = np.where(scores < det.offset_, -1, 1)
    flagged = pred == -1
    summary = {"command": "score", "n": int(len(scores)), "device": str(det.device_),
               "ood_score": det._score_name,
               "score_mean": float(scores.mean()), "score_min": float(scores.min()),
               "score_max": float(scores.max()), "offset": float(det.offset_),
               "n_flagged_ood": int(flagged.sum()), "flagged_fraction": float(flagged.mean()),
               "metrics": None, "out": args.out}
    lines = [f"scored {len(scores)} inputs on {det.device_}: score ({_score_text(det)}, higher = more "
             f"in-distribution) mean {scores.mean():.4f}, min {scores.min():.4f}, max "
             f"{scores.max():.4f}; {int(flagged.sum())} ({flagged.mean() * 100:.1f}%) below the "
             f"threshold {det.offset_:.4f} are flagged OOD"]
    if y is not None:
        y = np.asarray(y)
        if y.ndim == 2 and y.shape[1] == 1:
            y = y.ravel()
        if y.ndim != 1 or len(y) != len(scores):
            raise CLIError(f"labels have shape {y.shape} but the input has {len(scores)} rows; "
                           "expected one label per row")
        marker = getattr(det, "outlier_label", -1)
        if y.dtype.kind in "USO" and not isinstance(marker, str):
            raise CLIError(f"the labels are strings (e.g. {str(y[0])!r}), but the detector marks "
                           f"OOD rows with the integer outlier_label {marker!r}, so no row could "
                           "count as OOD; give numeric labels (y < 0 = OOD), or fit with --set "
                           "outlier_label=<the string>")
        is_ood = ood_mask(y, marker)
        if is_ood.any() and (~is_ood).any():
            r = ood_report(scores[~is_ood], scores[is_ood])
            summary["metrics"] = {k: (float(v) if isinstance(v, float) else v)
                                  for k, v in r.items()}
            lines.append(f"labels: {int((~is_ood).sum())} ID, {int(is_ood.sum())} OOD: AUROC "
                         f"{r['auroc']:.4f}, AUPR-in {r['aupr_in']:.4f}, AUPR-out "
                         f"{r['aupr_out']:.4f}, FPR@95TPR {r['fpr95']:.4f}")
        else:
            lines.append("labels: only one class present (y < 0 marks OOD); no OOD metrics")
    if args.out is not None:
        if args.out.lower().endswith(".csv"):
            with open(args.out, "w") as fh:
                fh.write("score,prediction\n")
                for sc, pr in zip(scores.tolist(), pred.tolist()):
                    fh.write(f"{sc!r},{pr}\n")
        else:
            with open(args.out, "wb") as fh:
                np.save(fh, scores, allow_pickle=False)
        lines.append(f"scores written to {args.out}")
    if args.json:
        print(json.dumps(summary))
    else:
        print("\n".join(lines))
    return 0


# ---------------------------------------------------------------------------- main
def main(argv=None):
    """Entry point of ``aoe-detect``; returns the exit status (0 ok, 2 error, 130 interrupt)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    suite_args = argv[1:] if argv[:1] == ["benchmark"] else []
    if suite_args and not {"-h", "--help"} & set(suite_args):
        argv = argv[:1]  # the deprecated stub takes any arguments unparsed
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    old_show = warnings.showwarning
    warnings.showwarning = _show_warning
    try:
        if getattr(args, "threads", None):
            torch.set_num_threads(args.threads)
        if args.command == "demo":
            return _cmd_demo(args)
        if args.command == "benchmark":
            return _cmd_benchmark(suite_args)
        if args.command == "fit":
            return _cmd_fit(args)
        return _cmd_score(args)
    except CLIError as exc:
        sys.stderr.write(f"{PROG}: error: {exc}\n")
        return 2
    except (ValueError, TypeError, KeyError, OSError, ImportError) as exc:
        sys.stderr.write(f"{PROG}: error: {_one_line(exc)}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write(f"{PROG}: interrupted\n")
        return 130
    except Exception as exc:  # anything else is still one line, never a traceback
        sys.stderr.write(f"{PROG}: error: {type(exc).__name__}: {_one_line(exc)}\n")
        return 2
    finally:
        warnings.showwarning = old_show


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
