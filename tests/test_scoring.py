"""The M3 encoder against the official CLaMP 2 code's outputs (fixtures section E)."""
import json

import numpy as np
import pytest
import torch

from engine.errors import ModelError
from engine.scoring import patchilizer
from engine.scoring.model import load_encoder

ITEMS = ["input_1", "input_2", "input_3", "input_4", "interleaved_bwv66.6_m0-4", "interleaved_haydn_op74no1_mv1_m1-8"]
TOL = dict(atol=1e-5, rtol=1e-5)


def _text(reference, item: str) -> str:
    source = json.loads((reference / "m3_tokenize.json").read_text())["items"][item]["source_file"]
    return (reference / source).read_text()


@pytest.fixture(scope="module")
def features(notagen_reference):
    return np.load(notagen_reference / "m3_features.npz")


@pytest.fixture(scope="module")
def clamp2_checkpoint(notagen_reference, features, tmp_path_factory):
    """The tiny CLaMP 2 checkpoint rebuilt as the fixtures' README says: M3 encoder + music_proj."""
    m3 = torch.load(notagen_reference / "m3_tiny.pth", map_location="cpu", weights_only=True)["model"]
    state = {f"music_model.{k[len('encoder.'):]}": v for k, v in m3.items() if k.startswith("encoder.")}
    for name in ("weight", "bias"):
        state[f"music_proj.{name}"] = torch.from_numpy(features[f"clamp2/music_proj.{name}"])
    path = tmp_path_factory.mktemp("clamp2") / "clamp2_tiny.pth"
    torch.save({"model": state, "epoch": 1, "min_eval_loss": 1.0}, path)
    return path


@pytest.mark.parametrize("item", ITEMS)
def test_patches_match_the_official_patchilizer(notagen_reference, features, item):
    text = _text(notagen_reference, item)
    filtered = patchilizer.drop_comment_lines(text)
    assert np.array_equal(patchilizer.encode(filtered), features[f"{item}/patches_plain"])
    assert np.array_equal(patchilizer.encode(filtered, add_special_patches=True), features[f"{item}/patches_clamp2_notagen"])
    assert np.array_equal(patchilizer.encode(text, add_special_patches=True), features[f"{item}/patches_clamp2_upstream"])
    no_unit = text.replace("L:1/8\n", "")
    assert np.array_equal(patchilizer.encode(no_unit, add_special_patches=True), features[f"{item}/patches_m3_upstream"])
    recorded = json.loads((notagen_reference / "m3_tokenize.json").read_text())["items"][item]
    assert patchilizer.decode(features[f"{item}/patches_plain"]) == recorded["decode_of_patches_plain"]


@pytest.mark.parametrize("item", ITEMS)
def test_features_match_official_m3_and_clamp2(notagen_reference, features, clamp2_checkpoint, item, one_torch_thread):
    text = _text(notagen_reference, item)
    m3 = load_encoder(notagen_reference / "m3_tiny.pth")
    clamp2 = load_encoder(clamp2_checkpoint)
    assert m3.music_proj is None and clamp2.feature_size == 32
    upstream_m3 = torch.tensor(patchilizer.encode(text.replace("L:1/8\n", ""), add_special_patches=True))
    np.testing.assert_allclose(m3.patch_states(upstream_m3), features[f"{item}/feature_m3_upstream"][0], **TOL)
    upstream_clamp2 = torch.tensor(patchilizer.encode(text, add_special_patches=True))
    np.testing.assert_allclose(clamp2.patch_states(upstream_clamp2), features[f"{item}/feature_clamp2_upstream_unnormalized"][0], **TOL)
    np.testing.assert_allclose(clamp2.feature(text), features[f"{item}/feature_clamp2_notagen_normalized"][0], **TOL)


def test_long_piece_segments_overlap_and_weigh_by_length(notagen_reference):
    encoder = load_encoder(notagen_reference / "m3_tiny.pth")
    patches = torch.randint(4, 128, (42, 64))
    _, masks, weights = encoder.segments(patches)
    assert masks.sum(dim=1).tolist() == [32, 32] and weights.tolist() == [32, 10]


def test_bad_encoder_checkpoints_are_refused_clearly(tmp_path):
    with pytest.raises(ModelError, match="no music encoder"):
        load_encoder(tmp_path / "missing.pth")
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"not a checkpoint")
    with pytest.raises(ModelError, match="cannot read"):
        load_encoder(corrupt)
    torch.save({"model": {"something.else": torch.zeros(1)}}, tmp_path / "other.pth")
    with pytest.raises(ModelError, match="lacks M3 encoder weights"):
        load_encoder(tmp_path / "other.pth")
