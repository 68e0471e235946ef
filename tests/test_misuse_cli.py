"""Misuse of the command line's CSV path (issue 20): label columns are never guessed
silently, blank labels are named, ``--out`` never overwrites without ``--force``, and the
summary names the score actually used. docs/failure_modes.md lists these cases."""

import json
import warnings

import numpy as np
import pytest

from aoe_detect.cli import main
from aoe_detect.testing import tiny_blobs

X, Y, PROBE = tiny_blobs()
FIT = ["--epochs", "1", "--pretrain-epochs", "1", "--outlier-source", "uniform", "--seed", "0",
       "--quiet", "--device", "cpu", "--batch-size", "32"]


def _csv(path, header, X, y=None):
    with open(path, "w") as fh:
        fh.write(",".join(header) + "\n")
        for i, row in enumerate(X.tolist()):
            cells = [repr(v) for v in row] + ([] if y is None else [str(y[i])])
            fh.write(",".join(cells) + "\n")
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    _csv(d / "train.csv", ["a", "b", "label"], X, Y)
    _csv(d / "classcol.csv", ["a", "b", "class"], X, Y)
    _csv(d / "probe.csv", ["a", "b"], PROBE)
    np.save(d / "str_labels.npy", np.r_[["a"] * 10, ["-1"] * 10])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["fit", "--id", str(d / "train.csv"), "--out", str(d / "m.aoe"), *FIT]) == 0
    return d


def _err(capsys):
    return capsys.readouterr().err


def test_blank_label_cell_is_an_error_naming_the_rows(files, capsys):
    text = (files / "train.csv").read_text().splitlines()
    text[5] = text[5].rsplit(",", 1)[0] + ","  # file line 6: blank label
    (files / "blank.csv").write_text("\n".join(text) + "\n")
    assert main(["fit", "--id", str(files / "blank.csv"), "--out", str(files / "b.aoe"), *FIT]) == 2
    err = _err(capsys)
    assert "label column 'label' is blank in 1 row(s) (file lines [6])" in err
    assert not (files / "b.aoe").exists()


def test_label_like_column_warns_and_label_column_uses_it(files, capsys):
    out = files / "c.aoe"
    assert main(["fit", "--id", str(files / "classcol.csv"), "--out", str(out), *FIT,
                 "--json", "--label-column", "class"]) == 0
    assert json.loads(capsys.readouterr().out)["classes"] == [0, 1]
    # without --label-column: a warning that 'class' is taken as a feature
    rc = main(["score", "--model", str(out), "--input", str(files / "classcol.csv")])
    err = _err(capsys)
    assert "column 'class' looks like labels but is used as a feature" in err
    assert "--label-column class" in err
    assert rc == 2  # and as a feature it does not fit the 2-feature model: named, not silent
    assert main(["fit", "--id", str(files / "classcol.csv"), "--out", str(files / "x.aoe"), *FIT,
                 "--label-column", "nope"]) == 2
    assert "no column of that name" in _err(capsys)


def test_out_is_never_overwritten_without_force(files, capsys):
    model = files / "m.aoe"
    before = model.read_bytes()
    assert main(["fit", "--id", str(files / "train.csv"), "--out", str(model), *FIT]) == 2
    assert "exists; pass --force" in _err(capsys)
    assert model.read_bytes() == before
    out = files / "s.csv"
    out.write_text("precious\n")
    assert main(["score", "--model", str(model), "--input", str(files / "probe.csv"),
                 "--out", str(out)]) == 2
    assert "exists; pass --force" in _err(capsys) and out.read_text() == "precious\n"
    assert main(["score", "--model", str(model), "--input", str(files / "probe.csv"),
                 "--out", str(out), "--force"]) == 0
    assert out.read_text().splitlines()[0] == "score,prediction"


def test_summary_names_the_score_used(files, capsys):
    capsys.readouterr()
    assert main(["score", "--model", str(files / "m.aoe"), "--input", str(files / "probe.csv")]) == 0
    text = capsys.readouterr().out
    assert "ood_score 'energy+mahalanobis'" in text and "-energy" not in text
    assert main(["score", "--model", str(files / "m.aoe"), "--input", str(files / "probe.csv"),
                 "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["ood_score"] == "energy+mahalanobis"


def test_string_labels_with_an_integer_marker_are_an_error(files, capsys):
    assert main(["score", "--model", str(files / "m.aoe"), "--input", str(files / "probe.csv"),
                 "--labels", str(files / "str_labels.npy")]) == 2
    assert "labels are strings" in _err(capsys)
