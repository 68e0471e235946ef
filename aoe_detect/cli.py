"""Command-line interface: ``aoe-detect demo | benchmark | fit | score``.

For users who do not write Python. Every subcommand has ``--help``. Expected errors (bad
arguments, missing or malformed files, invalid parameters) print ONE line
``aoe-detect: error: ...`` to stderr and exit with status 2; no traceback. Warnings from the
library print as one line ``aoe-detect: warning: ...``.

Array files: ``.npy`` (one array, the inputs) or ``.npz`` (key ``X`` for the inputs and,
optionally, ``y`` for labels), read with ``allow_pickle=False``. Images are ``(n, h, w)`` or
``(n, c, h, w)``, uint8 (scaled to [0, 1]) or floats in [0, 1]; tabular data is ``(n, d)``.
Labels for ``fit`` are class labels (``-1`` marks an outlier row); labels for ``score`` mark
OOD rows with a negative value.

Scores are ``-energy``: higher = more in-distribution; ``predict`` gives +1 (ID) / -1 (OOD).
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
import warnings

__all__ = ["main", "build_parser"]

PROG = "aoe-detect"


class CLIError(Exception):
    """An expected error, printed as one line."""


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
def _int_at_least(lo, what):
    """argparse type: an integer >= ``lo``, described as ``what`` in errors."""
    def parse(text):
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if v < lo:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return v
    return parse


_positive_int = _int_at_least(1, "a positive integer")
_nonneg_int = _int_at_least(0, "an integer >= 0")


def _float_or_auto(text):
    if text == "auto":
        return "auto"
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or 'auto', got {text!r}") from None


def _int_list(text):
    try:
        vals = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers such as 0,1,2, got {text!r}") from None
    if not vals:
        raise argparse.ArgumentTypeError(f"expected at least one integer, got {text!r}")
    return tuple(vals)


def _assignment(text):
    import ast

    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected FIELD=VALUE, got {text!r}")
    try:
        parsed = ast.literal_eval(value)
    except (ValueError, SyntaxError):
        parsed = value
    if isinstance(parsed, list):
        parsed = tuple(parsed)
    return key.strip(), parsed


def build_parser():
    """The argparse parser of ``aoe-detect`` (subcommands demo, benchmark, fit, score)."""
    p = _Parser(prog=PROG, description=(
        "Out-of-distribution detection with Adversarial Outlier Exposure (AOE). Scores are "
        "-energy (higher = more in-distribution)."))
    from . import __version__

    p.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = p.add_subparsers(dest="command", metavar="{demo,benchmark,fit,score}",
                           parser_class=_Parser)
    sub.required = True

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
    d.add_argument("--seed", type=_nonneg_int, default=0, help="random seed (default: %(default)s)")
    _common_runtime(d)

    b = sub.add_parser("benchmark", help="run the paper-reproduction suite",
                       description=(
                           "Run the AOE paper suite (OOD detection, adversarial OOD detection, ID "
                           "accuracy, convergence, sample efficiency, open questions, outlier "
                           "ablation, pytorch-ood cross-check) and write JSON, a Markdown report "
                           "and PNG plots. 'quick' uses the embedded sample only (under 10 "
                           "minutes on 2 CPU cores); 'full' needs Fashion-MNIST and MNIST "
                           "(found by aoe_detect.datasets; see --data-root) and takes about an "
                           "hour. See docs/benchmarks.md."))
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
                   help="output folder (default: benchmarks/results if it exists, else "
                        "aoe-benchmark-results)")
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

    f = sub.add_parser("fit", help="fit a detector on array files and save it",
                       description=(
                           "Fit an AOEDetector on in-distribution inputs (.npy, or .npz with keys "
                           "X and optional y = class labels) and save it in the safe aoe-detect "
                           "format (tensors + JSON, loaded without running code)."))
    f.add_argument("--id", dest="id_file", required=True, metavar="FILE",
                   help="in-distribution inputs: .npy (X) or .npz (X, optional y)")
    f.add_argument("--labels", default=None, metavar="FILE",
                   help="class labels .npy (instead of y in the .npz); -1 marks outlier rows")
    f.add_argument("--outliers", default=None, metavar="FILE",
                   help="training outliers .npy/.npz (replace --outlier-source)")
    f.add_argument("--out", required=True, metavar="MODEL", help="file to save the detector to")
    f.add_argument("--outlier-source", default="default",
                   choices=("default", "gan", "uniform", "gaussian", "smooth", "lowdensity",
                            "permuted", "none"),
                   help="built-in outlier source when no --outliers file is given "
                        "(default: %(default)s; none = no outlier exposure)")
    f.add_argument("--attack", default="fgsm", choices=("fgsm", "pgd", "gaussian", "none"),
                   help="outlier augmentation (default: %(default)s = AOE; none = vanilla OE)")
    f.add_argument("--epsilon", type=_float_or_auto, default="auto",
                   help="attack radius in input units, or auto (default: %(default)s)")
    f.add_argument("--epochs", type=_nonneg_int, default=10,
                   help="outlier-exposure epochs (default: %(default)s)")
    f.add_argument("--pretrain-epochs", type=_float_or_auto, default="auto",
                   help="cross-entropy pretraining epochs, or auto (default: %(default)s)")
    f.add_argument("--backbone", default="auto",
                   choices=("auto", "mlp", "small_cnn", "wrn40_2", "resnet18"),
                   help="classifier (default: %(default)s: mlp for tabular, small_cnn for images)")
    f.add_argument("--batch-size", type=_positive_int, default=128, help="(default: %(default)s)")
    f.add_argument("--lr", type=float, default=1e-3, help="learning rate (default: %(default)s)")
    f.add_argument("--lam", type=_float_or_auto, default="auto",
                   help="weight of the outlier loss term, or auto (default: %(default)s)")
    f.add_argument("--contamination", type=float, default=0.05,
                   help="share of ID flagged as OOD by predict (default: %(default)s)")
    f.add_argument("--seed", type=_nonneg_int, default=None, help="random seed")
    _common_runtime(f)

    s = sub.add_parser("score", help="score inputs with a saved detector",
                       description=(
                           "Load a detector saved by 'aoe-detect fit' (or AOEDetector.save) and "
                           "score inputs: -energy, higher = more in-distribution. Prints a "
                           "summary; with labels (y in the .npz or --labels; y < 0 = OOD) also "
                           "AUROC, AUPR and FPR@95TPR."))
    s.add_argument("--model", required=True, metavar="MODEL", help="saved detector file")
    s.add_argument("--input", required=True, metavar="FILE", help=".npy (X) or .npz (X, optional y)")
    s.add_argument("--labels", default=None, metavar="FILE",
                   help="labels .npy: y < 0 marks OOD rows, anything else ID")
    s.add_argument("--out", default=None, metavar="FILE",
                   help="write the scores (float64) to a .npy or .csv file")
    s.add_argument("--device", default="auto", help="cpu, cuda or auto (default: %(default)s)")
    return p


def _common_runtime(p):
    p.add_argument("--device", default="auto", help="cpu, cuda or auto (default: %(default)s)")
    p.add_argument("--threads", type=_positive_int, default=None,
                   help="torch CPU threads (default: torch's choice; 1 is fastest on a busy "
                        "shared machine)")
    p.add_argument("--quiet", action="store_true", help="no progress output")


# --------------------------------------------------------------------------- files
def _read_arrays(path, what):
    """``(X, y or None)`` from a .npy or .npz file; errors are CLIError with one line."""
    import numpy as np

    ext = os.path.splitext(path)[1].lower()
    if ext not in (".npy", ".npz"):
        raise CLIError(f"{what} must be a .npy or .npz file, got {path!r}")
    if not os.path.isfile(path):
        raise CLIError(f"{what} file not found: {path}")
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
    import numpy as np

    if os.path.splitext(path)[1].lower() != ".npy":
        raise CLIError(f"--labels must be a .npy file, got {path!r}")
    X, _ = _read_arrays(path, "--labels")
    return np.asarray(X)


# ------------------------------------------------------------------------ commands
def _cmd_demo(args):
    from . import benchmark as B

    t0 = time.time()
    log = None if args.quiet else _log
    res = B.run_demo(epochs=args.epochs, pretrain_epochs=args.pretrain_epochs, seed=args.seed,
                     verbose=0 if args.quiet else 1, log=log, device=args.device)
    print("OOD detection on the embedded sample (ID: 1000 Fashion-MNIST test images; AUROC "
          "per OOD set, higher is better; FPR95 lower is better):")
    print(B.demo_table(res["rows"]))
    if not args.no_plot:
        try:
            from .plots import plot_score_histograms

            path = plot_score_histograms(
                res["scores"], args.out, labels={m: v[0] for m, v in B.METHODS.items()},
                ood_labels=B.OOD_LABELS, title="aoe-detect demo: score = -energy, ID vs OOD")
            print(f"plot written to {path}")
        except ImportError as exc:
            sys.stderr.write(f"{PROG}: note: plot skipped: {_one_line(exc)}\n")
    print(f"done in {time.time() - t0:.0f}s")
    return 0


def _cmd_benchmark(args, argv):
    from . import benchmark as B

    if args.report_only is not None:
        if not os.path.isfile(args.report_only):
            raise CLIError(f"--report-only file not found: {args.report_only}")
        paths = B.rerender(args.report_only, plots=not args.no_plots)
        print(f"report rewritten: {paths['markdown']}")
        if paths["plot_error"]:
            sys.stderr.write(f"{PROG}: note: plots skipped: {paths['plot_error']}\n")
        return 0
    if args.profile is None:
        raise CLIError("the following arguments are required: --profile (quick or full)")
    overrides = dict(args.overrides)
    if args.seeds is not None:
        overrides["seeds"] = args.seeds
    if args.items is not None:
        bad = [i for i in args.items if i not in B.ITEMS]
        if bad:
            raise CLIError(f"--items must be numbers 1-8, got {bad}")
        overrides["items"] = args.items
    if args.device != "auto":
        overrides["device"] = args.device
    profile = B.get_profile(args.profile, **overrides)
    out = args.out or ("benchmarks/results" if os.path.isdir("benchmarks/results")
                       else "aoe-benchmark-results")
    cache = None if args.cache_dir in (None, "none", "") else os.path.expanduser(args.cache_dir)
    command = shlex.join([PROG, *argv])
    log = None if args.quiet else _log
    data = None
    if args.data is not None:
        if os.path.splitext(args.data)[1].lower() != ".npz":
            raise CLIError(f"--data must be an .npz file, got {args.data!r}")
        data = B.load_user_data(args.data)
    results = B.run_benchmark(profile, data_root=args.data_root, data=data, log=log, verbose=0,
                              cache_dir=cache, command=command)
    paths = B.write_results(results, out, plots=not args.no_plots)
    for c in results["conclusions"]:
        print(f"{c['claim']}: {c['verdict']}")
    print(f"wall time {results['meta']['wall_seconds'] / 60:.1f} min; report: {paths['markdown']}; "
          f"data: {paths['json']}")
    if paths["plot_error"]:
        sys.stderr.write(f"{PROG}: note: plots skipped: {paths['plot_error']}\n")
    return 0


def _cmd_fit(args):
    import numpy as np

    from .detector import AOEDetector

    X, y = _read_arrays(args.id_file, "--id")
    if args.labels is not None:
        y = _read_labels(args.labels)
    outliers = None
    if args.outliers is not None:
        outliers, _ = _read_arrays(args.outliers, "--outliers")
    pre = args.pretrain_epochs
    if pre != "auto":
        if float(pre) != int(pre) or pre < 0:
            raise CLIError(f"--pretrain-epochs must be an integer >= 0 or auto, got {pre!r}")
        pre = int(pre)
    det = AOEDetector(
        backbone=args.backbone,
        outliers=None if args.outlier_source == "none" else args.outlier_source,
        attack=None if args.attack == "none" else args.attack, epsilon=args.epsilon,
        epochs=args.epochs, pretrain_epochs=pre, batch_size=args.batch_size, lr=args.lr,
        lam=args.lam, contamination=args.contamination, random_state=args.seed,
        device=args.device, verbose=0 if args.quiet else 1)
    if outliers is not None and args.outlier_source == "none":
        raise CLIError("--outliers was given but --outlier-source none disables outlier exposure")
    t0 = time.time()
    det.fit(X, y, X_outliers=outliers)
    det.save(args.out)
    n_id = int(np.sum(np.asarray(y) >= 0)) if y is not None else len(X)
    print(f"fitted on {n_id} in-distribution inputs in {time.time() - t0:.0f}s; threshold "
          f"offset_={det.offset_:.4f} (score = -energy; below it = OOD); saved to {args.out}")
    return 0


def _cmd_score(args):
    import numpy as np

    from .detector import AOEDetector
    from .metrics import ood_report

    if not os.path.isfile(args.model):
        raise CLIError(f"--model file not found: {args.model}")
    X, y = _read_arrays(args.input, "--input")
    if args.labels is not None:
        y = _read_labels(args.labels)
    if args.out is not None and os.path.splitext(args.out)[1].lower() not in (".npy", ".csv"):
        raise CLIError(f"--out must end in .npy or .csv, got {args.out!r}")
    det = AOEDetector.load(args.model, device=args.device)
    scores = det.score_samples(X)
    flagged = scores < det.offset_
    print(f"scored {len(scores)} inputs: score (-energy, higher = more in-distribution) mean "
          f"{scores.mean():.4f}, min {scores.min():.4f}, max {scores.max():.4f}; "
          f"{int(flagged.sum())} ({flagged.mean() * 100:.1f}%) below the threshold "
          f"{det.offset_:.4f} are flagged OOD")
    if y is not None:
        y = np.asarray(y).ravel()
        if len(y) != len(scores):
            raise CLIError(f"labels have {len(y)} entries but the input has {len(scores)} rows")
        is_ood = y < 0
        if is_ood.any() and (~is_ood).any():
            r = ood_report(scores[~is_ood], scores[is_ood])
            print(f"labels: {int((~is_ood).sum())} ID, {int(is_ood.sum())} OOD (y < 0): AUROC "
                  f"{r['auroc']:.4f}, AUPR-in {r['aupr_in']:.4f}, AUPR-out {r['aupr_out']:.4f}, "
                  f"FPR@95TPR {r['fpr95']:.4f}")
        else:
            print("labels: only one class present (y < 0 marks OOD); no OOD metrics")
    if args.out is not None:
        out_dir = os.path.dirname(os.path.abspath(args.out))
        if not os.path.isdir(out_dir):
            raise CLIError(f"--out folder does not exist: {out_dir}")
        if args.out.lower().endswith(".csv"):
            np.savetxt(args.out, scores, fmt="%.10g", header="score", comments="")
        else:
            with open(args.out, "wb") as fh:
                np.save(fh, scores, allow_pickle=False)
        print(f"scores written to {args.out}")
    return 0


# ---------------------------------------------------------------------------- main
def main(argv=None):
    """Entry point of ``aoe-detect``; returns the exit status (0 ok, 2 error, 130 interrupt)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    old_show = warnings.showwarning
    warnings.showwarning = _show_warning
    try:
        if getattr(args, "threads", None):
            import torch

            torch.set_num_threads(args.threads)
        if args.command == "demo":
            return _cmd_demo(args)
        if args.command == "benchmark":
            return _cmd_benchmark(args, argv)
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
    finally:
        warnings.showwarning = old_show


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
