"""Saved files edited with a recomputed checksum are refused at load, naming the field (issue 11,
section 3)."""

from _tiny_fitted import *  # noqa: F401,F403  (shared imports, tiny blobs, the `fitted` fixture)


# ------------------------------------------------------------- 3. saved files


@pytest.mark.parametrize("edit, match", [
    (lambda p: p.pop("sha256"), r"no checksum \(`sha256`"),
    (set_json("fitted", "offset_", float("nan")), r"invalid `offset_`"),
    (set_json("fitted", "offset_", "0.1"), r"invalid `offset_`"),
    (set_json("params", "contamination", 7), r"'contamination' parameter"),
    (set_json("params", "batch_size", -3), r"'batch_size' parameter"),
    (set_json("params", "temperature", 1e-40), r"'temperature' parameter"),
    (set_json("params", "m_out", -2e4), r"'m_out' parameter"),
    (set_json("fitted", "m_in_", float("inf")), r"invalid `m_in_`"),
    (set_json("fitted", "input_shape_", [-2]), r"invalid `input_shape_`"),
    (set_json("fitted", "input_range_", [1.0, 0.0]), r"invalid `input_range_`"),
    (set_json("fitted", "epsilon_", [0.1]), r"invalid `epsilon_`"),
    (set_json("fitted", "classes_", [0, 0]), r"invalid `classes_`"),
    (set_json("backbone", "name", "vgg"), r"invalid `backbone`"),
    (lambda p: p["state_dict"].__setitem__(next(iter(p["state_dict"])),
                                           p["state_dict"][next(iter(p["state_dict"]))] * np.nan),
     r"invalid `state_dict\..*non-finite"),
    (lambda p: p.__setitem__("validation_scores", torch.full((3,), float("nan"), dtype=torch.float64)),
     r"invalid `validation_scores`"),
], ids=["no-sha256", "offset-nan", "offset-str", "contamination-7", "batch_size--3",
        "temperature-tiny", "m_out-range", "m_in_-inf", "input_shape", "input_range",
        "epsilon-length", "classes-dup", "backbone-name", "weights-nan", "val-scores-nan"])
def test_tampered_file_with_recomputed_checksum_refused(fitted, tmp_path, edit, match):
    path = fitted.save(tmp_path / "d.aoe")
    tamper(path, edit, recompute="no checksum" not in match)
    with pytest.raises(ValueError, match=match):
        quiet(AOEDetector.load, path)


def test_load_argument_errors(fitted, tmp_path):
    path = fitted.save(tmp_path / "d.aoe")
    with pytest.raises(TypeError, match=r"`module` must be None or a torch.nn.Module.*'mlp'"):
        AOEDetector.load(path, module="mlp")
    with pytest.raises(ValueError, match=r"`device` must be"):
        AOEDetector.load(path, device="meta")
    det = AOEDetector.load(path)
    assert det.score_samples(PROBE).tobytes() == fitted.score_samples(PROBE).tobytes()
