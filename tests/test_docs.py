"""Code in README.md and docs/*.md, and the modules' doctests, run so they cannot rot.

Every ```python block is executed (blocks of one file share a namespace, in order); a block
preceded by the line ``<!-- norun -->`` is shown only (it needs data or hardware that tests
do not have).
"""

import doctest
import importlib
import pathlib
import pkgutil
import re

import pytest

import aoe_detect

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOC_FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"(<!-- norun -->\s*\n)?```python\n(.*?)```", re.S)


def _blocks(path):
    return [code for skip, code in BLOCK.findall(path.read_text()) if not skip]


@pytest.mark.parametrize("path", [p for p in DOC_FILES if _blocks(p)],
                         ids=lambda p: p.relative_to(ROOT).as_posix())
def test_markdown_code_runs(path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ns = {"__name__": "__docs__"}
    for i, code in enumerate(_blocks(path)):
        try:
            exec(compile(code, f"{path.name}[block {i}]", "exec"), ns)
        except Exception as exc:  # pragma: no cover - the message is the point
            raise AssertionError(f"{path.name} block {i} failed: {exc!r}\n{code}") from exc


MODULES = sorted(m.name for m in pkgutil.walk_packages(aoe_detect.__path__, "aoe_detect.")
                 if ".data." not in m.name and not m.name.endswith(".data"))


@pytest.mark.parametrize("name", MODULES)
def test_doctests(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0


def test_api_reference_is_current():
    import runpy

    render = runpy.run_path(str(ROOT / "docs" / "make_api.py"), run_name="make_api")["render"]
    assert (ROOT / "docs" / "api.md").read_text() == render(), \
        "docs/api.md is stale: run `python docs/make_api.py`"
