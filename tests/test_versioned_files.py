"""Versioned save files (issue 22): a file written by an earlier release keeps loading and
scoring as it did (fixtures in tests/data, written by tests/data/make_fixtures.py); a file of
a newer MAJOR format is refused naming both versions; a newer MINOR loads with a warning."""

import json
import pathlib
import warnings

import numpy as np
import pytest
import torch

import aoe_detect
import aoe_detect.persistence as persistence
from aoe_detect import AOEDetector

DATA = pathlib.Path(__file__).resolve().parent / "data"
FIXTURES = sorted(DATA.glob("aoe-detect-*.aoe"))


def test_there_is_a_fixture_of_the_first_release():
    assert DATA / "aoe-detect-0.1.0.aoe" in FIXTURES


@pytest.mark.parametrize("path", FIXTURES, ids=[p.stem for p in FIXTURES])
def test_files_of_earlier_releases_load_and_score_as_they_did(path):
    expected = json.loads(path.with_suffix(".json").read_text())
    with warnings.catch_warnings():
        # a release older than the running one: the version-mismatch warning is expected
        warnings.filterwarnings("ignore", message=".*was written by aoe-detect")
        det = AOEDetector.load(path, device="cpu")
    probe = np.asarray(expected["probe"])
    assert det.ood_score == expected["ood_score"]
    assert det.offset_ == expected["offset_"]
    np.testing.assert_array_equal(det.classes_, expected["classes_"])
    np.testing.assert_allclose(det.score_samples(probe), expected["scores"], rtol=1e-6,
                               atol=1e-6 * np.abs(expected["scores"]).max())
    np.testing.assert_array_equal(det.predict(probe), expected["predict"])
    assert set(expected["predict"]) == {-1, 1}  # the probe exercises both decisions


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    path = tmp_path_factory.mktemp("versioned") / "det.aoe"
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*was written by aoe-detect")
        det = AOEDetector.load(DATA / "aoe-detect-0.1.0.aoe", device="cpu")
    det.save(path)
    return path


def test_current_files_carry_the_format_version(saved):
    payload = torch.load(saved, map_location="cpu", weights_only=True)
    assert payload["format"] == persistence.FORMAT == "aoe-detect/1"
    assert payload["format_version"] == persistence.FORMAT_VERSION == "1.1"
    assert "format_version" not in torch.load(DATA / "aoe-detect-0.1.0.aoe", map_location="cpu",
                                              weights_only=True)  # 0.1.0 files are format 1.0


def _rewrite(saved, tmp_path, **fields):
    payload = torch.load(saved, map_location="cpu", weights_only=True)
    payload.update(fields)
    payload["sha256"] = persistence._digest(payload)
    path = tmp_path / "edited.aoe"
    torch.save(payload, path)
    return path


def test_newer_major_format_is_refused_naming_both_versions(saved, tmp_path):
    path = _rewrite(saved, tmp_path, format="aoe-detect/2", format_version="2.0",
                    version="9.1.0", state_dict={"anything": torch.zeros(1)})
    with pytest.raises(ValueError, match=r"save format 2\.0, written by aoe-detect 9\.1\.0; "
                                         r"this aoe-detect .* reads format 1\.1 and older: "
                                         r"upgrade aoe-detect"):
        AOEDetector.load(path)


def test_newer_minor_format_loads_with_a_warning(saved, tmp_path):
    path = _rewrite(saved, tmp_path, format_version="1.7", version=aoe_detect.__version__,
                    a_field_from_the_future="ignored")
    with pytest.warns(UserWarning, match=r"save format 1\.7, newer than the format 1\.1"):
        det = AOEDetector.load(path)
    ref = AOEDetector.load(saved)
    rows = np.zeros((3, 2))
    assert det.score_samples(rows).tobytes() == ref.score_samples(rows).tobytes()


@pytest.mark.parametrize("fields", [
    {"format_version": "one.zero"},
    {"format_version": "2.0"},           # does not match format "aoe-detect/1"
    {"format": "aoe-detect/x"},
], ids=["not-a-number", "major-mismatch", "bad-format"])
def test_malformed_versions_are_refused(saved, tmp_path, fields):
    with pytest.raises(ValueError, match="is not an aoe-detect file"):
        AOEDetector.load(_rewrite(saved, tmp_path, **fields))
