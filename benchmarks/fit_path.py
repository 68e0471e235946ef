"""How many rooms does ``fit`` walk through? The house figures of issue 21, measured.

Question: on its way from ``AOEDetector.fit`` to the first training step, which modules does
the recipe call into, in which order, and how often does it come back to a module it had
left (a *return trip*)? Also: the number of top-level parameters, the largest module and
class, and the longest function.

Method: ``sys.setprofile`` follows ``X`` from the start of ``fit`` until the first call
of ``_training.run_stage``: a call into an ``aoe_detect`` module is on the path when one of
its arguments is ``X`` or was made from it (returned by a call on the path, or a field of
such a value, e.g. ``FitInputs.X_train``); the estimator's own file and the settings reads
of ``_params`` are not counted. Consecutive calls into the same module are one *stay*; a
*return trip* is a stay in a module the path had already left. Two fits: a tabular array
fit and the same rows as a map-style ``Dataset`` (the two input forms).

Run: ``python benchmarks/fit_path.py [--out benchmarks/results/fit_path.json]`` (seconds).
Compare two commits by running it in a worktree of each.
"""

from __future__ import annotations

import argparse
import ast
import inspect
import json
import os
import pathlib
import sys
import warnings

import numpy as np
import torch

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import aoe_detect  # noqa: E402
from aoe_detect import AOEDetector  # noqa: E402

ROOT = pathlib.Path(aoe_detect.__file__).parent


class _Rows(torch.utils.data.Dataset):
    def __init__(self, X, y):
        self.X, self.y = torch.as_tensor(X, dtype=torch.float32), torch.as_tensor(y)

    def __len__(self):
        return len(self.X)

    def __getitem__(self, i):
        return self.X[i], self.y[i]


def _module_of(code):
    path = pathlib.Path(code.co_filename)
    try:
        rel = path.resolve().relative_to(ROOT.resolve())
    except ValueError:
        return None
    return ".".join(rel.with_suffix("").parts)


def _parts(value):
    """The value and what it carries (dataclass / object attributes, tuple items), one level."""
    out = [value]
    if isinstance(value, (tuple, list)):
        out += list(value)
    elif hasattr(value, "__dict__") and not isinstance(value, (torch.nn.Module, type)):
        out += list(vars(value).values())
    return out


def x_path(X, y):
    """The modules ``fit``'s ``X`` passes through, in order, until training starts: every call
    into an ``aoe_detect`` module (other than the estimator's own file) that receives ``X``
    or something made from it (what a call that received it returned, and the fields of
    such a value, e.g. ``FitInputs.X_train``)."""
    tracked, frames, calls, done = {id(X)}, set(), [], []
    alive = [X]  # tracked objects are kept alive, so that no other object reuses their id

    def prof(frame, event, arg):
        if done:
            return
        callee = _module_of(frame.f_code)
        if callee is None:
            return
        if event == "call":
            if callee == "_training" and frame.f_code.co_name == "run_stage":
                done.append(True)
                return
            args = inspect.getargvalues(frame)
            values = [args.locals.get(n) for n in args.args]
            if args.varargs:
                values += list(args.locals.get(args.varargs) or ())
            if args.keywords:
                values += list((args.locals.get(args.keywords) or {}).values())
            if any(id(p) in tracked for v in values if not isinstance(v, AOEDetector)
                   for p in _parts(v) if not isinstance(p, (bool, int, float, str, type(None)))):
                frames.add(id(frame))
                if callee not in ("detector", "_params"):  # the recipe; settings reads
                    back = frame.f_back
                    caller = _module_of(back.f_code) if back is not None else None
                    calls.append((f"{callee}.{frame.f_code.co_name}", caller))
        elif event == "return" and id(frame) in frames:
            frames.discard(id(frame))
            new = [p for p in _parts(arg) if p is not None and not isinstance(p, (bool, int, float, str))]
            alive.extend(new)
            tracked.update(id(p) for p in new)

    det = AOEDetector(epochs=1, pretrain_epochs=1, batch_size=32, device="cpu", random_state=0,
                      outliers="uniform")
    sys.setprofile(prof)
    try:
        det.fit(X, y)
    finally:
        sys.setprofile(None)
    return {**_stays([c for c, _ in calls]), **_rounds(calls)}


def _stays(calls):
    """The round-2 figures: consecutive calls into one module are a stay."""
    stays = []
    for c in calls:
        m = c.split(".")[0]
        if not stays or stays[-1]["module"] != m:
            stays.append({"module": m, "calls": []})
        stays[-1]["calls"].append(c.split(".", 1)[1])
    modules = [s["module"] for s in stays]
    visits = {m: modules.count(m) for m in dict.fromkeys(modules)}
    return {"stays": stays, "n_stays": len(stays), "n_modules": len(visits), "visits": visits,
            "return_trips": sum(v - 1 for v in visits.values())}


#: The modules that hold input rules or order them (issue 21's "input modules"; ``_loading``
#: is the row type since round 3, read by the modules downstream).
INPUT_MODULES = ("_fit_inputs", "_validation", "_compat")


def _rounds(calls):
    """Round-3 figures (added with the row type, issue 21 item 1):

    - ``recipe_passes``: the modules the estimator's recipe itself hands ``X`` (or what was
      made from it) to, in order; consecutive calls into one module are one pass.
    - ``input_phase`` / ``downstream``: the stays up to the last one in an input module
      reached from the recipe's first pass, and the stays after it; in ``downstream`` the
      row type's own work (calls into ``_loading`` or ``_validation`` made inside
      ``_loading`` or by torch's DataLoader: loaders, samplers, collation, and the input
      rules of :mod:`aoe_detect._validation` that it applies to each loaded batch of a
      Dataset) is folded into the call of the module that read the rows.
    - ``input_return_trips``: stays in an input module in ``downstream`` (target 0).
    """
    passes = []
    for c, caller in calls:
        m = c.split(".")[0]
        if caller == "detector" and (not passes or passes[-1] != m):
            passes.append(m)
    first_pass = passes[0] if passes else None
    end = 0  # the input phase: the recipe's first pass and everything inside it
    for i, (c, caller) in enumerate(calls):
        if caller == "detector" and c.split(".")[0] != first_pass:
            end = i
            break
    down = [c for c, caller in calls[end:]  # the row type's own work is folded
            if not (c.split(".")[0] in ("_loading", "_validation") and caller in ("_loading", None))]
    stays = _stays(down)["stays"]
    return {"recipe_passes": passes,
            "recipe_pass_counts": {m: passes.count(m) for m in dict.fromkeys(passes)},
            "input_phase": [s["module"] for s in _stays([c for c, _ in calls[:end]])["stays"]],
            "downstream": [f"{s['module']}:{'/'.join(dict.fromkeys(s['calls']))}" for s in stays],
            "input_return_trips": sum(s["module"] in INPUT_MODULES for s in stays)}


def _longest_function():
    best = (0, "")
    for path in ROOT.rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                best = max(best, (n, f"{path.relative_to(ROOT)}:{node.name}"))
    return {"lines": best[0], "where": best[1]}


def house_figures():
    sizes = {str(p.relative_to(ROOT)): len(p.read_text().splitlines()) for p in ROOT.rglob("*.py")}
    largest = max(sizes, key=sizes.get)
    src = inspect.getsource(AOEDetector)
    params = [n for n in inspect.signature(AOEDetector.__init__).parameters if n != "self"]
    return {"parameters": len(params), "largest_module": {"path": largest, "lines": sizes[largest]},
            "AOEDetector_lines": len(src.splitlines()), "longest_function": _longest_function(),
            "modules": len(sizes)}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=None)
    a = ap.parse_args(argv)
    rng = np.random.RandomState(0)
    X = np.r_[rng.normal(0, 1, (100, 4)) + 3, rng.normal(0, 1, (100, 4)) - 3].astype(np.float32)
    y = np.r_[np.zeros(100, int), np.ones(100, int)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = {"house": house_figures(), "array_fit": x_path(X, y),
               "dataset_fit": x_path(_Rows(X, y), None)}
    a_, d_ = res["array_fit"], res["dataset_fit"]
    res["same_path"] = {"recipe_passes": a_["recipe_passes"] == d_["recipe_passes"],
                        "downstream": a_["downstream"] == d_["downstream"]}
    res["command"] = "python benchmarks/fit_path.py" + (f" --out {a.out}" if a.out else "")
    text = json.dumps(res, indent=1)
    if a.out:
        pathlib.Path(a.out).write_text(text + "\n")
    else:
        print(text)
    return res


if __name__ == "__main__":
    main()
