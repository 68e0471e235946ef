"""``python -m benchmarks.paper``: the paper suite's command line (run from the repository root).

The options are in :mod:`benchmarks.paper.cli` (``python -m benchmarks.paper --help``);
results go to ``benchmarks/results/`` unless ``--out`` is given::

    python -m benchmarks.paper --profile quick --threads 1        # < 15 min on 2 CPU cores
    python -m benchmarks.paper --profile full --data-root DIR --threads 1   # ~1.5 h
    python -m benchmarks.paper --report-only benchmarks/results/paper_full.json

(Results committed before issue 21 record the same runs as ``aoe-detect benchmark ...``;
the options are unchanged.)
"""

import sys

from .cli import RESULTS, main

__all__ = ["RESULTS", "main"]

if __name__ == "__main__":
    sys.exit(main())
