"""The paper-suite engine (``benchmarks.paper``) on tiny settings: structure and numbers.

One tiny run of all eight items (module-scoped) checks what the report promises: every
method present, finite metrics in [0, 1], mean ± std over seeds, the conclusions, the files.
"""

import json
import math
import pathlib
import sys

import numpy as np
import pytest
import torch

import benchmarks.paper as B
from benchmarks.paper.cli import main

TINY = dict(n_train=160, n_test_id=80, n_ood=40, seeds=(0, 1), width=4, pretrain_epochs=1,
            epochs=1, batch_size=64, pool_size=200, gan_epochs=1, gan_width=4, n_adv=8,
            adv_pgd_steps=2, pgd_steps=2, conv_chunks=2, conv_eval_n=20, sample_sizes=(50,),
            strong_pgd_steps=(1,), strong_eps=(16 / 255,), device="cpu")


@pytest.fixture(scope="module")
def tiny_results():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        prof = B.get_profile("quick", **TINY)
        logs = []
        res = B.run_benchmark(prof, log=logs.append, command="pytest tiny")
    finally:
        torch.set_num_threads(threads)
    return res, logs


def _unit(x):
    return x is not None and math.isfinite(x) and 0.0 <= x <= 1.0


def test_profiles_and_overrides():
    assert set(B.PROFILES) == {"quick", "full"}
    full = B.PROFILES["full"]
    assert len(full.seeds) >= 3 and set(full.items) == set(B.ITEMS)
    assert B.PROFILES["quick"].data == "sample"
    p = B.get_profile("quick", epochs=7)
    assert p.epochs == 7 and p is not B.PROFILES["quick"]
    with pytest.raises(ValueError, match="no_such"):
        B.get_profile("quick", no_such=1)
    with pytest.raises(ValueError, match="profile"):
        B.get_profile("medium")


def test_plan_shares_identical_runs():
    specs, items = B.plan(B.get_profile("quick"))
    main_ = items["main"]
    assert set(main_) == {"default", "gan"}
    for meth in main_.values():
        assert list(meth) == list(B.METHODS)
    # no-OE does not depend on the outlier source: one run
    assert main_["default"]["none"] == main_["gan"]["none"]
    # the ablation reuses the main table's runs for the shared families
    assert items["ablation"]["gan"]["oe"] == main_["gan"]["oe"]
    assert items["ablation"]["default"]["aoe_fgsm"] == main_["default"]["aoe_fgsm"]
    # the largest sample-efficiency pool is the main run
    assert items["sample"]["aoe_fgsm"][B.PROFILES["quick"].pool_size] == main_["gan"]["aoe_fgsm"]
    assert len(specs) == len(set(specs))


def test_eval_sets_are_fixed():
    prof = B.get_profile("quick", n_ood=30, n_train=100, n_test_id=50)
    a, b = B.load_data(prof), B.load_data(prof)
    assert list(a["ood"]) == list(B.OOD_SETS)
    for k in B.OOD_SETS:
        np.testing.assert_array_equal(a["ood"][k], b["ood"][k])
        assert a["ood"][k].dtype == np.uint8 and a["ood"][k].shape[1:] == (28, 28)
    assert np.bincount(a["y_train"]).tolist() == [10] * 10  # class-balanced subset


def test_all_items_and_methods_present(tiny_results):
    res, logs = tiny_results
    assert set(res["items"]) == {str(i) for i in B.ITEMS}
    for src in ("default", "gan"):
        assert list(res["items"]["1"][src]) == list(B.METHODS)
        for m, r in res["items"]["1"][src].items():
            for metric in ("auroc", "aupr_in", "aupr_out", "fpr95"):
                mean, std = r["avg"][metric]
                assert _unit(mean) and std >= 0
            for name in B.OOD_SETS:
                assert _unit(r["ood"][name]["auroc"][0])
    assert any("pretrained" in line for line in logs)


def test_mean_std_over_seeds(tiny_results):
    res, _ = tiny_results
    run = res["runs"][res["plan"]["main"]["default"]["oe"]]
    per = [run["per_seed"][s]["avg"]["auroc"] for s in ("0", "1")]
    assert run["avg"]["auroc"][0] == pytest.approx(np.mean(per))
    assert run["avg"]["auroc"][1] == pytest.approx(np.std(per, ddof=1))


def test_adversarial_and_accuracy(tiny_results):
    res, _ = tiny_results
    adv = res["items"]["2"]["default"]
    for m in B.METHODS:
        for att in ("fgsm", "pgd"):
            assert list(adv[m]["adv"][att]) == ["0.0000", "0.0100", "0.0300", "0.0700"]
            for cell in adv[m]["adv"][att].values():
                assert _unit(cell["auroc"][0]) and _unit(cell["fpr95"][0])
        # eps = 0 is the clean score on the attack subset: identical for FGSM and PGD
        assert adv[m]["adv"]["fgsm"]["0.0000"] == adv[m]["adv"]["pgd"]["0.0000"]
    acc = res["items"]["3"]
    assert _unit(acc["pretrained"][0])
    assert all(_unit(acc["default"][m][0]) for m in B.METHODS)


def test_convergence_sample_efficiency_open_questions_ablation(tiny_results):
    res, _ = tiny_results
    conv = res["items"]["4"]
    assert set(conv) == {"oe", "aoe_fgsm"}
    for c in conv.values():
        assert c["iteration"][0] == 0 and np.all(np.diff(c["iteration"]) > 0)
        assert len(c["iteration"]) == 1 + TINY["epochs"] * TINY["conv_chunks"]
        assert all(_unit(v[0]) for v in c["auroc"])
        assert all(math.isfinite(v[0]) for v in c["loss"][1:])
    se = res["items"]["5"]
    assert list(se["aoe_fgsm"]) == ["50", "200"]
    q = res["items"]["6"]
    assert set(q["real_outliers"]) == {"oe", "aoe_fgsm", "aoe_pgd"}
    assert any(k.startswith("PGD-1 ") for k in q["strong"])
    assert any("16/255" in k for k in q["strong"])
    for r in q["strong"].values():
        assert _unit(r["adv"]["pgd"]["0.0300"]["auroc"][0])
    abl = res["items"]["7"]
    assert set(abl) == {"noise", "lowdensity", "gan", "permuted", "default"}
    assert all(_unit(abl[f][m]["avg"][0]) for f in abl for m in ("oe", "aoe_fgsm"))


def test_crosscheck_with_pytorch_ood(tiny_results):
    pytest.importorskip("pytorch_ood")
    c = tiny_results[0]["items"]["8"]
    assert c["status"] == "ok"
    assert c["agree_metrics"] and c["agree_loss"]
    assert max(c["max_abs_diff"].values()) <= 1e-5
    assert len(c["loss"]) == 3 and all(r["abs_diff"] <= 1e-5 for r in c["loss"])


def test_the_suite_without_pytorch_ood_says_which_extra_it_needs(monkeypatch, capsys):
    """The suite needs pytorch-ood (item 8 and the peers): without it importing the suite
    says so, and ``python -m benchmarks run paper`` reports it in one line."""
    import importlib

    from benchmarks.__main__ import main as lab

    monkeypatch.setitem(sys.modules, "pytorch_ood", None)
    for name in [m for m in sys.modules if m == "benchmarks.paper" or
                 m.startswith("benchmarks.paper.")]:
        monkeypatch.delitem(sys.modules, name)
    with pytest.raises(ImportError, match=r"aoe-detect\[bench\]"):
        importlib.import_module("benchmarks.paper")
    assert lab(["run", "paper", "--profile", "quick", "--items", "1"]) == 2
    err = capsys.readouterr().err
    assert "aoe-detect[bench]" in err and len(err.strip().splitlines()) == 1


def test_peer_table_and_best_peer_line(tiny_results):
    """Issue 12: pytorch-ood's post-hoc peers on the CE, OE and AOE-FGSM backbones of every
    seed, the package's scores on the AOE backbone, and one best-peer line per claim."""
    res, _ = tiny_results
    peers = res["peers"]
    assert set(peers["per_seed"]) == {"0", "1"}
    assert peers["non_noise_sets"] == ["mnist", "digits28", "photo_patches"]
    for seed_rows in peers["per_seed"].values():
        assert set(seed_rows) == {"ce", "oe", "aoe"}
        for bb, rows in seed_rows.items():
            assert list(rows["peer"]) == list(B.PEERS)
            assert ("own" in rows) == (bb == "aoe")
            for per_set in rows["peer"].values():
                assert list(per_set) == list(B.OOD_SETS)
                assert all(_unit(v["auroc"]) and _unit(v["fpr95"]) for v in per_set.values())
        own = seed_rows["aoe"]["own"]
        assert set(own) == {"energy", "mahalanobis", "knn", "energy+mahalanobis", "energy+knn"}
        # the same energy score through pytorch-ood and through the package
        for name in B.OOD_SETS:
            assert own["energy"][name]["auroc"] == pytest.approx(
                seed_rows["aoe"]["peer"]["energy"][name]["auroc"], abs=1e-9)
    best = B.best_peer(peers)
    assert best in B.PEERS
    line = B.peer_comparison(res)
    assert f"pytorch-ood {best}" in line and peers["default_score"] in line
    assert all(c["peer_comparison"] == line for c in res["conclusions"])
    md = B.render_markdown({k: v for k, v in res.items() if not k.startswith("_")})
    assert "## 1b. Post-hoc peers" in md and "(best peer)" in md and "(package default)" in md
    assert md.count("  - Best peer: ") == len(res["conclusions"])


def test_peers_do_not_change_the_claim_rules(tiny_results):
    res, _ = tiny_results
    without = {k: v for k, v in res.items() if k != "peers"}
    prof = B.get_profile("quick", **TINY)
    _, items = B.plan(prof)
    plain = B._conclusions(without, items, prof)
    assert plain == [{k: v for k, v in c.items() if k != "peer_comparison"}
                     for c in res["conclusions"]]
    assert B.conclusions(without, items, prof) == plain
    md = B.render_markdown({k: v for k, v in without.items() if not k.startswith("_")})
    assert "Not in this run" in md


def test_conclusions_name_every_claim(tiny_results):
    res, _ = tiny_results
    claims = [c["claim"][:4] for c in res["conclusions"]]
    assert claims == ["(1) ", "(2) ", "(3) ", "(4) ", "(5) ", "(6a)", "(6b)"]
    for c in res["conclusions"]:
        assert c["verdict"] and c["rule"] and c["evidence"]
    verdicts = {c["verdict"] for c in res["conclusions"][:5]}
    assert verdicts <= {"confirmed", "not confirmed", "mixed"}


def test_write_results(tiny_results, tmp_path):
    pytest.importorskip("matplotlib")
    res, _ = tiny_results
    paths = B.write_results(res, tmp_path)
    data = json.loads(pathlib.Path(paths["json"]).read_text())
    assert data["meta"]["command"] == "pytest tiny"
    for key in ("torch", "platform", "cpu_count", "wall_seconds"):
        assert key in data["meta"]
    assert "_scores" not in data
    md = pathlib.Path(paths["markdown"]).read_text()
    for i in range(1, 9):
        assert f"## {i}. " in md
    assert "Verdicts" in md and "pytest tiny" in md
    assert set(paths["plots"]) == {"hist", "adv", "convergence", "sample"}
    for p in paths["plots"].values():
        with open(p, "rb") as fh:
            assert fh.read(8) == b"\x89PNG\r\n\x1a\n"


def test_rerender_from_json(tiny_results, tmp_path):
    pytest.importorskip("matplotlib")
    paths = B.write_results(tiny_results[0], tmp_path)
    md_before = pathlib.Path(paths["markdown"]).read_text()
    again = B.rerender(paths["json"])
    assert pathlib.Path(again["markdown"]).read_text() == md_before
    assert set(again["plots"]) == {"hist", "adv", "convergence", "sample"}
    assert main(["--report-only", paths["json"], "--no-plots"]) == 0


def test_write_results_without_matplotlib(tiny_results, tmp_path, monkeypatch):
    for name in ("matplotlib", "matplotlib.figure", "matplotlib.backends.backend_agg"):
        monkeypatch.setitem(sys.modules, name, None)
    paths = B.write_results(tiny_results[0], tmp_path)
    assert paths["plots"] == {} and "aoe-detect[plot]" in paths["plot_error"]
    assert "Plots not written" in pathlib.Path(paths["markdown"]).read_text()


def test_cli_benchmark_quick_path(tmp_path, capsys):
    sets = [f"{k}={v!r}".replace(" ", "") for k, v in TINY.items() if k != "seeds"]
    argv = ["--profile", "quick", "--out", str(tmp_path), "--seeds", "0",
            "--items", "1,3", "--no-plots", "--quiet", "--threads", "1", "--cache-dir", "none"]
    for s in sets:
        argv += ["--set", s]
    threads = torch.get_num_threads()
    try:
        assert main(argv) == 0
    finally:
        torch.set_num_threads(threads)
    out = capsys.readouterr().out
    assert "(1) AOE improves" in out and "paper_quick.md" in out
    data = json.loads((tmp_path / "paper_quick.json").read_text())
    assert set(data["items"]) == {"1", "3"}
    assert data["profile"]["seeds"] == [0]
    assert data["meta"]["command"].startswith("python -m benchmarks.paper --profile quick --out ")


def test_own_data_npz_through_the_cli(tmp_path, capsys):
    """The same study on user data: 16x16 RGB images, two OOD sets, no real outliers."""
    rng = np.random.RandomState(0)
    y = np.repeat([0, 1], 40)
    X = (rng.rand(80, 3, 16, 16) * 0.3 + y[:, None, None, None] * 0.5).astype(np.float32)
    np.savez(tmp_path / "mine.npz", X_train=X, y_train=y, X_test=X[::2], y_test=y[::2],
             ood_noise=rng.rand(20, 3, 16, 16).astype(np.float32),
             ood_dark=np.zeros((20, 3, 16, 16), np.float32))
    argv = ["--profile", "quick", "--data", str(tmp_path / "mine.npz"), "--out",
            str(tmp_path), "--seeds", "0", "--items", "1,3,6", "--no-plots", "--quiet",
            "--cache-dir", "none", "--threads", "1"]
    for k in ("width=4", "pretrain_epochs=1", "epochs=1", "pool_size=100", "batch_size=32",
              "n_adv=4", "pgd_steps=2", "device='cpu'"):
        argv += ["--set", k]
    threads = torch.get_num_threads()
    try:
        assert main(argv) == 0
    finally:
        torch.set_num_threads(threads)
    data = json.loads((tmp_path / "paper_quick.json").read_text())
    assert data["ood_sets"] == ["noise", "dark"]
    assert set(data["items"]) == {"1", "3"}  # no real outliers: item 6 skipped
    for m in B.METHODS:
        assert _unit(data["items"]["1"]["default"][m]["ood"]["noise"]["auroc"][0])
    assert "noise" in (tmp_path / "paper_quick.md").read_text()


def test_own_data_errors(tmp_path):
    with pytest.raises(KeyError, match="ood_<name>"):
        B.load_user_data({"X_train": np.zeros((4, 8, 8)), "y_train": np.zeros(4),
                          "X_test": np.zeros((2, 8, 8)), "y_test": np.zeros(2)})
    with pytest.raises(ValueError, match="divisible by 4"):
        B.load_user_data({"X_train": np.zeros((4, 10)), "y_train": np.zeros(4),
                          "X_test": np.zeros((2, 10)), "y_test": np.zeros(2),
                          "ood_a": np.zeros((2, 10))})
    with pytest.raises(FileNotFoundError):
        B.load_user_data(str(tmp_path / "none.npz"))
