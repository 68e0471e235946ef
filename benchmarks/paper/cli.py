"""The paper suite's command line: ``python -m benchmarks.paper`` (from the repository root).

Moved here from the library's ``aoe-detect benchmark`` subcommand (issue 21), with the same
options and behaviour, so that the library does not know the suite. Results go to
``benchmarks/results/`` unless ``--out`` is given::

    python -m benchmarks.paper --profile quick --threads 1        # < 15 min on 2 CPU cores
    python -m benchmarks.paper --profile full --data-root DIR --threads 1   # ~1.5 h
    python -m benchmarks.paper --report-only benchmarks/results/paper_full.json

Expected errors (bad arguments, missing files, profile fields of the wrong type) print ONE
line ``python -m benchmarks.paper: error: ...`` to stderr and exit with status 2. The
argument types are the library CLI's (``aoe_detect.cli``), so both accept the same values.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import shlex
import sys
import warnings

import torch

from aoe_detect.cli import _DEVICE, _assignment, _common_runtime, _log, _one_line
from aoe_detect.exceptions import CLIError

from .data import load_user_data
from .plan import ITEMS, PROFILES, Profile, get_profile
from .report import rerender, write_results
from .run import run_benchmark

PROG = "python -m benchmarks.paper"
RESULTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "results")


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (no usage dump) and exit status 2."""

    def error(self, message):
        sys.stderr.write(f"{PROG}: error: {message} (see '{self.prog} --help')\n")
        raise SystemExit(2)


def _int_list(text):
    try:
        vals = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers such as 0,1,2, got {text!r}") from None
    if not vals:
        raise argparse.ArgumentTypeError(f"expected at least one integer, got {text!r}")
    return tuple(vals)


def _check_out_dir(path, what):
    """Fail now if the folder ``path`` can neither be used nor created."""
    full = os.path.abspath(os.path.expanduser(path))
    if os.path.exists(full) and not os.path.isdir(full):
        raise CLIError(f"{what} {path} exists and is not a folder")
    probe = full
    while not os.path.exists(probe):
        probe = os.path.dirname(probe)
    if not os.path.isdir(probe) or not os.access(probe, os.W_OK):
        raise CLIError(f"{what} {path} cannot be created: {probe} is not a writable folder")


def build_parser():
    """The argparse parser of ``python -m benchmarks.paper``."""
    b = _Parser(prog=PROG, description=(
        "Run the AOE paper suite (OOD detection, adversarial OOD detection, ID "
        "accuracy, convergence, sample efficiency, open questions, outlier "
        "ablation, pytorch-ood cross-check, post-hoc peers) and write JSON, a "
        "Markdown report and PNG plots. The suite is not part of the installed "
        "package: it lives in the source repository (benchmarks/paper); run "
        "this from a checkout's root. "
        "'quick' uses the embedded sample only (about 10 minutes on 2 CPU "
        "cores); 'full' needs Fashion-MNIST and MNIST (found by "
        "aoe_detect.datasets; see --data-root) and takes about an hour and a half. See "
        "docs/benchmarks.md."))
    b.add_argument("--profile", choices=("quick", "full"), default=None,
                   help="run size (required unless --report-only)")
    b.add_argument("--report-only", default=None, metavar="JSON",
                   help="do not train: recompute the verdicts and rewrite the report and plots "
                        "of a previous run from its paper_<profile>.json")
    b.add_argument("--data-root", default=None,
                   help="folder searched first for Fashion-MNIST/MNIST (full profile); MNIST "
                        "in DIR/mnist, Fashion-MNIST in DIR/fashion-mnist")
    b.add_argument("--data", default=None, metavar="NPZ",
                   help="run the study on your own images: an .npz with X_train, y_train, "
                        "X_test, y_test, ood_<name>... and optionally real_outliers (see "
                        "docs/benchmarks.md); the profile then sets training sizes only")
    b.add_argument("--out", default=None,
                   help="output folder (default: benchmarks/results of this checkout)")
    b.add_argument("--seeds", type=_int_list, default=None, help="override the seeds, e.g. 0,1,2")
    b.add_argument("--items", type=_int_list, default=None,
                   help="run only these items (1-8), e.g. 1,2,3")
    b.add_argument("--set", dest="overrides", type=_assignment, action="append", default=[],
                   metavar="FIELD=VALUE",
                   help="override a profile field (repeatable), e.g. --set epochs=2")
    b.add_argument("--cache-dir", default=os.path.join("~", ".cache", "aoe_detect", "gan"),
                   help="where trained DCGANs are cached (default: %(default)s); 'none' disables")
    b.add_argument("--no-plots", action="store_true", help="do not write PNG plots")
    _common_runtime(b)
    return b


def _ok_number(v, like):
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return False
    if isinstance(like, int) and not isinstance(like, bool):
        return isinstance(v, int) and v >= 0
    return math.isfinite(v) and v >= 0


def _check_one(key, value, default):
    """``(good, what, value)`` for one ``--set`` override (``value`` possibly made a tuple);
    ``good`` is None where the field takes anything."""
    if key == "device":
        return isinstance(value, str) and bool(_DEVICE.match(value)), \
            "auto, cpu, cuda, cuda:N or mps", value
    if key == "items":
        value = value if isinstance(value, tuple) else (value,)
        good = bool(value) and all(v in ITEMS and not isinstance(v, bool) for v in value)
        return good, "a tuple of item numbers 1-8", value
    if key == "seeds":
        good = (isinstance(value, tuple) and value
                and all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 2**32
                        for v in value))
        return good, "a tuple of integers in [0, 2**32 - 1], e.g. (0, 1)", value
    if isinstance(default, str):
        return isinstance(value, str) and bool(value), "a non-empty string", value
    if isinstance(default, tuple):
        like = default[0] if default else 0.0
        value = value if isinstance(value, tuple) else (value,)
        good = bool(value) and all(
            isinstance(v, str) if isinstance(like, str) else _ok_number(v, like) for v in value)
        what = ("a tuple of strings" if isinstance(like, str) else
                "a tuple of integers >= 0" if isinstance(like, int) else
                "a tuple of finite numbers >= 0")
        return good, what, value
    if default is None or (isinstance(default, int) and not isinstance(default, bool)):
        if default is None and value is None:
            return None, "", value
        sized = key.startswith("n_") or key.endswith(("_size", "_chunks", "_steps", "width",
                                                      "_max_train"))
        lo = 1 if sized else 0
        good = isinstance(value, int) and not isinstance(value, bool) and value >= lo
        return good, f"an integer >= {lo}" + (" or none" if default is None else ""), value
    if isinstance(default, float):
        return _ok_number(value, 0.0), "a finite number >= 0", value
    return None, "", value


def check_profile_overrides(profile_name, overrides):
    """``--set`` values must have the type of the profile field: counts are integers >= 0
    (sizes and epochs, positive), rates and radii finite numbers >= 0, tuples of those,
    strings for names. Checked before anything is loaded or trained; single values given
    for tuple fields become 1-tuples in ``overrides``."""
    base = PROFILES.get(profile_name, Profile())
    fields = {f.name: getattr(base, f.name) for f in dataclasses.fields(Profile)}
    for key, value in list(overrides.items()):
        if key not in fields:
            continue  # unknown names are reported by get_profile
        good, what, value = _check_one(key, value, fields[key])
        overrides[key] = value
        if good is not None and not good:
            raise CLIError(f"--set {key}: expected {what}, got {value!r}")


def _report_only(args):
    if not os.path.isfile(args.report_only):
        raise CLIError(f"--report-only file not found: {args.report_only}")
    paths = rerender(args.report_only, plots=not args.no_plots)
    print(f"report rewritten: {paths['markdown']}")
    if paths["plot_error"]:
        sys.stderr.write(f"{PROG}: note: plots skipped: {paths['plot_error']}\n")
    return 0


def _overrides(args):
    overrides = dict(args.overrides)
    if args.seeds is not None:
        bad = [v for v in args.seeds if not 0 <= v < 2**32]
        if bad:
            raise CLIError(f"--seeds must be integers in [0, 2**32 - 1], got {bad}")
        overrides["seeds"] = args.seeds
    if args.items is not None:
        bad = [i for i in args.items if i not in ITEMS]
        if bad:
            raise CLIError(f"--items must be numbers 1-8, got {bad}")
        overrides["items"] = args.items
    if args.device != "auto":
        overrides["device"] = args.device
    check_profile_overrides(args.profile, overrides)
    return overrides


def run(args, argv):
    """Run (or re-render) the suite as ``args`` say; ``argv`` is recorded as the command."""
    if args.report_only is not None:
        return _report_only(args)
    if args.profile is None:
        raise CLIError("the following arguments are required: --profile (quick or full)")
    profile = get_profile(args.profile, **_overrides(args))
    out = args.out or RESULTS
    _check_out_dir(out, "--out")
    cache = None if args.cache_dir in (None, "none", "") else os.path.expanduser(args.cache_dir)
    command = " ".join([PROG, shlex.join(argv)]).strip()
    log = None if args.quiet else _log
    data = None
    if args.data is not None:
        if os.path.splitext(args.data)[1].lower() != ".npz":
            raise CLIError(f"--data must be an .npz file, got {args.data!r}")
        data = load_user_data(args.data)
    results = run_benchmark(profile, data_root=args.data_root, data=data, log=log, verbose=0,
                            cache_dir=cache, command=command)
    paths = write_results(results, out, plots=not args.no_plots)
    for c in results["conclusions"]:
        print(f"{c['claim']}: {c['verdict']}")
    print(f"wall time {results['meta']['wall_seconds'] / 60:.1f} min; report: {paths['markdown']}; "
          f"data: {paths['json']}")
    if paths["plot_error"]:
        sys.stderr.write(f"{PROG}: note: plots skipped: {paths['plot_error']}\n")
    return 0


def _show_warning(message, category, filename, lineno, file=None, line=None):
    sys.stderr.write(f"{PROG}: warning: {_one_line(message)}\n")


def _error_text(exc):
    """One line for an error: the message of expected errors (bad arguments or files, a
    missing extra), the type and message of anything else (never a traceback)."""
    if isinstance(exc, CLIError):
        return str(exc)
    if isinstance(exc, (ValueError, TypeError, KeyError, OSError, ImportError)):
        return _one_line(exc)
    return f"{type(exc).__name__}: {_one_line(exc)}"


def main(argv=None):
    """Entry point of ``python -m benchmarks.paper``; returns the exit status (0 ok, 2 error,
    130 interrupt)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    old_show, warnings.showwarning = warnings.showwarning, _show_warning
    try:
        if args.threads:
            torch.set_num_threads(args.threads)
        return run(args, argv)
    except KeyboardInterrupt:
        sys.stderr.write(f"{PROG}: interrupted\n")
        return 130
    except Exception as exc:  # noqa: BLE001 - every error is one line, never a traceback
        sys.stderr.write(f"{PROG}: error: {_error_text(exc)}\n")
        return 2
    finally:
        warnings.showwarning = old_show
