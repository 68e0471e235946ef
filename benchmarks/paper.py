"""Reproduce the AOE paper's claims: a thin wrapper around ``aoe-detect benchmark``.

    python benchmarks/paper.py --profile quick        # < 10 min on 2 CPU cores, embedded sample
    python benchmarks/paper.py --profile full --data-root /path/to/mnist --threads 1   # ~1 h

Results (JSON, Markdown report, PNG plots) go to benchmarks/results/ unless --out is given.
All options: ``python benchmarks/paper.py --help``; the engine is :mod:`aoe_detect.benchmark`
and the guide docs/benchmarks.md.
"""

import os
import sys

from aoe_detect.cli import main

if __name__ == "__main__":
    args = sys.argv[1:]
    if "--out" not in args and not any(a.startswith("--out=") for a in args) \
            and "-h" not in args and "--help" not in args:
        args += ["--out", os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")]
    sys.exit(main(["benchmark", *args]))
