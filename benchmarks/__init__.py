"""Experiment scripts and the paper-reproduction suite of the aoe-detect source repository.

Not part of the installed package: run them from the repository root (``python -m
benchmarks.paper --profile quick``, ``python benchmarks/speed.py``, ...).
"""
