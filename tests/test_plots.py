"""The library's plots for a fitted detector (matplotlib optional)."""

import sys

import numpy as np
import pytest

from aoe_detect import plots


def test_plot_roc_and_histograms_write_pngs(tmp_path):
    pytest.importorskip("matplotlib")
    rng = np.random.RandomState(0)
    s_id, s_ood = rng.randn(50) + 2, rng.randn(40)
    for path in (plots.plot_roc(s_id, s_ood, tmp_path / "roc.png", title="t"),
                 plots.plot_roc(s_id, {"a": s_ood, "b": s_ood - 1}, tmp_path / "roc2.png"),
                 plots.plot_score_histograms({"m": {"id": s_id, "ood": {"a": s_ood}}},
                                             str(tmp_path / "h.png"))):
        with open(path, "rb") as fh:
            assert fh.read(8) == b"\x89PNG\r\n\x1a\n"


def test_without_matplotlib_the_error_names_the_extra(tmp_path, monkeypatch):
    for name in ("matplotlib", "matplotlib.figure", "matplotlib.backends.backend_agg"):
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(ImportError, match=r"aoe-detect\[plot\]"):
        plots.plot_roc(np.ones(3), np.zeros(3), tmp_path / "roc.png")
