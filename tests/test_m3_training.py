"""training.m3: masked-patch training of our own encoder, resumption, and the exported scorer."""
import json
import random

import pytest
import torch

from engine.scoring import patchilizer
from engine.scoring.model import load_encoder
from tests.test_evaluate import data_dir  # noqa: F401 - the small built data set
from training import m3

pytestmark = [pytest.mark.timeout(300), pytest.mark.usefixtures("one_torch_thread")]


def test_corruption_selects_45_percent_and_keeps_targets():
    patches = torch.tensor(patchilizer.encode("X:1\nK:C\n" + "C D E F|" * 20 + "\n", add_special_patches=True))
    rng = random.Random(0)
    modes = set()
    for _ in range(30):
        inputs, selected = m3.corrupt(patches, rng, train=True)
        assert int(selected.sum()) == -(-len(patches) * 45 // 100)
        untouched = ~selected.bool()
        assert torch.equal(inputs[untouched], patches[untouched])
        chosen = inputs[selected.bool()]
        modes.add("mask" if (chosen == patchilizer.MASK_ID).all() else "other")
    assert modes == {"mask", "other"}
    inputs, _ = m3.corrupt(patches, rng, train=False)
    assert torch.equal(inputs, patches)


def test_train_resume_and_export_a_standardized_scorer(data_dir, tmp_path):  # noqa: F811
    config = {"model": {"patch_length": 32, "patch_num_layers": 1, "token_num_layers": 1, "hidden_size": 64},
              "train": {"name": "m3_test", "steps": 4, "batch_size": 2, "eval_every": 2, "eval_pieces": 4, "warmup": 1}}
    path = tmp_path / "m3.json"
    path.write_text(json.dumps(config))
    run = m3.train(path, data_dir, tmp_path)
    assert torch.load(run / "last.pt", weights_only=True)["step"] == 4
    config["train"]["steps"] = 6
    path.write_text(json.dumps(config))
    assert torch.load(m3.train(path, data_dir, tmp_path) / "last.pt", weights_only=True)["step"] == 6
    out = m3.export(run, tmp_path / "scorer", data_dir)
    encoder = load_encoder(out)
    assert encoder.feature_size == 64 and encoder.music_proj is not None
    texts = m3.load_texts(data_dir)["train"]
    features = encoder.features(texts)
    torch.testing.assert_close(features.mean(dim=0), torch.zeros(64), atol=1e-4, rtol=0)
    assert json.loads((out / "training.json").read_text())["projection_pieces"] == len(texts)


def test_shipped_encoder_tells_the_test_sets_prompts_apart(data_dir):  # noqa: F811
    """The default scorer (assets/m3): every piece of the small set is closer to its own prompt's mean
    than to the other prompt's (means over the other pieces, so a piece is never compared with itself)."""
    from engine.scoring.evaluate import load_reference
    from engine.scoring.metrics import cosine_to

    encoder = load_encoder(m3.ROOT / "assets" / "m3")
    pieces = load_reference(data_dir)
    features = encoder.features([p.interleaved for p in pieces])
    assert features.shape == (len(pieces), encoder.feature_size)
    for i, piece in enumerate(pieces):
        others = [j for j in range(len(pieces)) if j != i]
        own = features[[j for j in others if pieces[j].prompt == piece.prompt]].mean(dim=0)
        other = features[[j for j in others if pieces[j].prompt != piece.prompt]].mean(dim=0)
        assert cosine_to(features[i:i + 1], own) > cosine_to(features[i:i + 1], other), piece.id
