"""Generate docs/api.md from the docstrings of every public name.

Run ``python docs/make_api.py`` after changing a public signature or docstring;
``tests/test_docs.py`` fails while docs/api.md is out of date.
"""

from __future__ import annotations

import importlib
import inspect
import pathlib
import re

PUBLIC_MODULES = [
    "aoe_detect",
    "aoe_detect.detector",
    "aoe_detect.losses",
    "aoe_detect.attacks",
    "aoe_detect.scores",
    "aoe_detect.runtime",
    "aoe_detect.outliers",
    "aoe_detect.outliers.gan",
    "aoe_detect.backbones",
    "aoe_detect.metrics",
    "aoe_detect.robustness",
    "aoe_detect.model_selection",
    "aoe_detect.datasets",
    "aoe_detect.persistence",
    "aoe_detect.export",
    "aoe_detect.scale",
    "aoe_detect.exceptions",
    "aoe_detect.distributed",
    "aoe_detect.demo",
    "aoe_detect.plots",
    "aoe_detect.cli",
]

OUT = pathlib.Path(__file__).with_name("api.md")


def _summary(obj):
    doc = inspect.getdoc(obj) or ""
    para = doc.split("\n\n")[0].strip()
    return re.sub(r"\s+", " ", para) or "(no docstring)"


def _signature(obj):
    try:
        sig = str(inspect.signature(obj))
    except (TypeError, ValueError):
        return ""
    return re.sub(r" at 0x[0-9a-f]+", "", sig)


def _section(doc, title):
    """The entries ``name : type`` of a numpydoc section, each with the first sentence of
    its description."""
    lines = doc.splitlines()
    try:
        start = next(i for i in range(len(lines) - 1)
                     if lines[i].strip() == title and set(lines[i + 1].strip()) == {"-"})
    except StopIteration:
        return []
    out, i = [], start + 2
    while i < len(lines):
        line = lines[i]
        if i + 1 < len(lines) and line.strip() and set(lines[i + 1].strip()) == {"-"}:
            break  # the next section
        if line and not line.startswith(" "):
            name, _, kind = line.partition(" : ")
            desc = []
            i += 1
            while i < len(lines) and (lines[i].startswith(" ") or not lines[i].strip()):
                if not lines[i].strip() and desc:
                    break
                desc.append(lines[i].strip())
                i += 1
            text = re.sub(r"\s+", " ", " ".join(desc)).strip()
            first = re.split(r"(?<=\.)\s", text, maxsplit=1)[0] if text else ""
            out.append((name.strip(), kind.strip(), first))
            continue
        i += 1
    return out


def _public_methods(cls):
    out = []
    for name, member in inspect.getmembers(cls):
        if name.startswith("_") or not (inspect.isfunction(member) or inspect.ismethod(member)):
            continue
        if getattr(member, "__module__", "").startswith("aoe_detect"):
            out.append((name, member))
    return out


def render():
    lines = ["# API reference", "",
             "Generated from the docstrings by `python docs/make_api.py`; the full docstrings "
             "(parameters, returns, references, examples) are in the source and in `help()`.",
             "Signs everywhere: scores are higher = more in-distribution (`-E(x)` for the "
             "energy score); `predict` "
             "gives +1 for in-distribution and -1 for OOD.", ""]
    seen = set()
    for modname in PUBLIC_MODULES:
        try:
            mod = importlib.import_module(modname)
        except ImportError:
            continue
        names = getattr(mod, "__all__", None)
        if names is None:
            continue
        lines += [f"## `{modname}`", "", _summary(mod), ""]
        for name in names:
            obj = getattr(mod, name)
            key = (modname, name)
            if key in seen:
                continue
            seen.add(key)
            if inspect.isclass(obj):
                lines += [f"### class `{name}{_signature(obj)}`", "", _summary(obj), ""]
                attrs = [a for a in _section(inspect.getdoc(obj) or "", "Attributes")
                         if a[0].endswith("_")]
                if attrs:
                    lines.append("Fitted attributes:")
                    lines += [f"- `{a}` ({kind}): {desc}" for a, kind, desc in attrs]
                    lines.append("")
                for mname, meth in _public_methods(obj):
                    if mname in ("get_params", "set_params", "get_metadata_routing", "fit_predict"):
                        continue
                    lines.append(f"- `{mname}{_signature(meth)}`: {_summary(meth)}")
                lines.append("")
            elif callable(obj):
                lines += [f"### `{name}{_signature(obj)}`", "", _summary(obj), ""]
            else:
                lines += [f"### `{name}`", "", f"Constant: `{type(obj).__name__}`.", ""]
    return "\n".join(lines).rstrip() + "\n"


if __name__ == "__main__":
    OUT.write_text(render())
    print(f"wrote {OUT}")
