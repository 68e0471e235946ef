"""The repository itself: no merge-conflict markers in any tracked text file.

``docs/architecture.md`` carried three markers (seven ``<``, ``=`` or ``>`` opening a line) for a
whole round after the architecture merge, and nothing caught them; this test does.
"""

import pathlib
import re
import shutil
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
# A conflict block: 7 "<" + ref, a bare line of 7 "=", 7 ">" + ref. reST section
# underlines are runs of "=" too, so the middle marker counts only inside an opened block.
OPEN, MIDDLE, CLOSE = re.compile(r"^<{7}( |$)"), re.compile(r"^={7}$"), re.compile(r"^>{7}( |$)")


def conflict_markers(text):
    """Line numbers (1-based) of conflict markers in ``text``: every opening and closing
    marker line, and bare middle-marker lines that follow an opening marker."""
    found, opened = [], False
    for number, line in enumerate(text.splitlines(), 1):
        if OPEN.match(line):
            found.append(number)
            opened = True
        elif CLOSE.match(line):
            found.append(number)
            opened = False
        elif opened and MIDDLE.match(line):
            found.append(number)
    return found


def tracked_text_files():
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True)
    for name in out.stdout.decode().split("\0"):
        path = ROOT / name
        if not name or not path.is_file():
            continue
        data = path.read_bytes()
        if b"\0" in data[:8192]:
            continue  # binary (npz, png, .aoe fixtures)
        yield name, data.decode("utf-8", errors="replace")


def test_no_tracked_file_holds_conflict_markers():
    bad = {name: lines for name, text in tracked_text_files()
           if (lines := conflict_markers(text))}
    assert not bad, f"merge-conflict markers committed (file: line numbers): {bad}"


def test_the_detector_finds_each_marker_and_ignores_rest_underlines():
    lt, eq, gt = "<" * 7, "=" * 7, ">" * 7  # spelled out, so that this file holds no marker
    text = f"Title\n{eq}\n\na\n{lt} HEAD\nours\n{eq}\ntheirs\n{gt} branch\n"
    assert conflict_markers(text) == [5, 7, 9]
    assert conflict_markers(f"Section\n{eq}\ntext\n") == []
    assert conflict_markers(f"{lt}\n{gt}\n") == [1, 2]
