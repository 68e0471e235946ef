"""Shared helpers of the studies in ``benchmarks/`` (issue 21): one results writer, one record
of the run's environment, one builder of the ID/OOD splits (the digits design split among
them). The evaluation sets of the Fashion-MNIST studies have their one builder in
``benchmarks/fashion_sets.py`` (re-exported here).

- :func:`write_results` writes ``<stem>.json`` and ``<stem>.md`` (creating the folder);
- :func:`run_record` is the ``meta`` block a study records: command line, date, machine,
  versions (:func:`machine`, :func:`versions`);
- :func:`id_split` shuffles the ID rows of a labelled data set with a seeded
  ``RandomState`` and cuts train / validation / test; :func:`digits_design_split` is that
  split on scikit-learn's digits with classes 0-4 as ID and 5-9 as OOD, the design split
  of the tabular studies (``margin_gap``, ``scores_study``, ``tabular_length_design``,
  ``tabular_outliers``, ``tabular_small_design``).

Every converted script produces the same arrays and the same files as before the helpers
existed: ``tests/test_benchmarks_lab.py`` compares the split with the formulas the scripts
used to inline.
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import subprocess
import time
from collections import OrderedDict
from typing import NamedTuple

import numpy as np
import sklearn
import torch
from sklearn.datasets import load_digits
from sklearn.utils import check_random_state

import aoe_detect
from benchmarks.fashion_sets import evaluation_sets, stratified, to_unit

__all__ = ["HERE", "RESULTS", "Split", "digits_design_split", "evaluation_sets", "id_split",
           "machine", "run_record", "stratified", "to_unit", "versions", "write_results"]

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results")


# ----------------------------------------------------------------------------- results
def write_results(stem, payload, markdown, *, indent=1, default=None):
    """Write ``payload`` to ``<stem>.json`` (``json.dump`` with ``indent`` and ``default``)
    and the text ``markdown`` to ``<stem>.md``, verbatim; the folder is created if needed.
    Returns ``{"json": path, "markdown": path}``."""
    folder = os.path.dirname(os.path.abspath(stem))
    os.makedirs(folder, exist_ok=True)
    paths = {"json": stem + ".json", "markdown": stem + ".md"}
    with open(paths["json"], "w") as f:
        json.dump(payload, f, indent=indent, default=default)
    with open(paths["markdown"], "w") as f:
        f.write(markdown)
    return paths


def versions():
    """Python, torch, numpy, scikit-learn, aoe-detect and the checkout's git commit."""
    commit = None
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=HERE,
                                capture_output=True, text=True, timeout=10).stdout.strip() or None
    except Exception:  # no git, or not a checkout: the commit is simply not recorded
        pass
    return OrderedDict(python=platform.python_version(), torch=torch.__version__,
                       numpy=np.__version__, scikit_learn=sklearn.__version__,
                       aoe_detect=aoe_detect.__version__, git_commit=commit)


def machine():
    """Platform, processor, CPU count, torch threads and whether CUDA is available."""
    return OrderedDict(platform=platform.platform(), processor=platform.processor() or
                       platform.machine(), cpu_count=os.cpu_count(),
                       torch_threads=torch.get_num_threads(),
                       cuda=torch.cuda.is_available())


def run_record(script, argv, **extra):
    """The ``meta`` block of a result file: ``command`` (``python <script> <argv>``, the
    script's path relative to the current folder), ``date`` (local time with zone), then
    ``extra`` (e.g. ``seconds``), ``machine`` and ``versions``."""
    command = "python " + shlex.join([os.path.relpath(script), *argv])
    return OrderedDict(command=command, date=time.strftime("%Y-%m-%d %H:%M:%S %Z"), **extra,
                       machine=machine(), versions=versions())


# ------------------------------------------------------------------------------ splits
class Split(NamedTuple):
    """Training rows, validation rows, test rows of the ID classes, and the OOD rows.
    ``y_train`` is None for a label-free split."""

    X_train: np.ndarray
    y_train: np.ndarray | None
    X_val: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    X_ood: np.ndarray


def _count(n, n_id):
    return int(n * n_id) if isinstance(n, float) else int(n)


def id_split(X, y, id_mask, random_state, n_train, n_val=0, labelled=True):
    """Shuffle the ID rows (``id_mask``) with ``RandomState(random_state).permutation`` and
    cut them: the first ``n_train`` rows train (a float is a fraction of the ID rows,
    rounded down), the next ``n_val`` validate, the rest test; the OOD rows are
    ``X[~id_mask]`` in their original order. ``random_state`` may be a ``RandomState``
    whose stream the caller continues afterwards."""
    rng = check_random_state(random_state)
    id_mask = np.asarray(id_mask, dtype=bool)
    perm = rng.permutation(np.flatnonzero(id_mask))
    a = _count(n_train, len(perm))
    b = a + _count(n_val, len(perm))
    tr, va, te = perm[:a], perm[a:b], perm[b:]
    return Split(X[tr], y[tr] if labelled else None, X[va], X[te], y[te], X[~id_mask])


def digits_design_split(random_state, n_train, n_val=0, labelled=True):
    """The digits design split: scikit-learn's 8x8 digits (1797 rows, 64 features in
    [0, 16]), classes 0-4 as ID (901 rows) split by :func:`id_split`, classes 5-9 as OOD
    (896 rows). Design data only: it may choose defaults."""
    X, y = load_digits(return_X_y=True)
    return id_split(X, y, y < 5, random_state, n_train, n_val, labelled)
