"""``python -m benchmarks.paper``: the paper suite's command line (run from the repository root).

The options are those of ``aoe-detect benchmark`` (``python -m benchmarks.paper --help``);
results go to ``benchmarks/results/`` unless ``--out`` is given::

    python -m benchmarks.paper --profile quick --threads 1        # < 15 min on 2 CPU cores
    python -m benchmarks.paper --profile full --data-root DIR --threads 1   # ~1 h
    python -m benchmarks.paper --report-only benchmarks/results/paper_full.json
"""

import os
import sys

from aoe_detect.cli import main

RESULTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "results")


def run(argv=None):
    """Run ``aoe-detect benchmark`` with ``argv``; ``--out`` defaults to benchmarks/results."""
    args = list(sys.argv[1:] if argv is None else argv)
    if "--out" not in args and not any(a.startswith("--out=") for a in args) \
            and "-h" not in args and "--help" not in args:
        args += ["--out", RESULTS]
    return main(["benchmark", *args])


if __name__ == "__main__":
    sys.exit(run())
