"""Deprecated: the paper-reproduction suite moved out of the package, to ``benchmarks/paper``.

The suite is not part of the installed library any more; it lives in the source
repository's ``benchmarks/paper`` package (run ``python -m benchmarks.paper --profile quick``
from the repository root). In a source checkout, where ``benchmarks.paper`` is importable,
this module still re-exports it, with a :class:`DeprecationWarning`; elsewhere importing it
raises :class:`ImportError`. The demo's functions are in :mod:`aoe_detect.demo`.
"""

import warnings

try:
    from benchmarks import paper as _paper
except ImportError as _exc:
    if getattr(_exc, "name", None) in ("benchmarks", "benchmarks.paper"):
        raise ImportError(
            "aoe_detect.benchmark moved out of the installed package: the paper suite lives in "
            "the source repository's benchmarks/ folder (benchmarks/paper). Run it from a "
            "checkout's root with `python -m benchmarks.paper --profile quick`, or import "
            "benchmarks.paper with the repository root on sys.path.") from _exc
    raise ImportError(f"the paper suite (benchmarks.paper) could not be imported: {_exc}; it "
                      "needs the bench extra: pip install 'aoe-detect[bench]'") from _exc

warnings.warn("aoe_detect.benchmark is deprecated: the paper suite moved to benchmarks.paper "
              "(the source repository's benchmarks/paper); import it from there.",
              DeprecationWarning, stacklevel=2)

globals().update({k: v for k, v in vars(_paper).items() if not k.startswith("__")})
__all__ = list(_paper.__all__)
