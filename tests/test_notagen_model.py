"""The NotaGen model against the official code's outputs (fixtures README, sections A, C, D)."""
import json

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from engine.errors import ModelError
from engine.notagen.config import PRESETS, NotagenConfig, infer_from_state_dict
from engine.notagen.reference import BODY_START, greedy_continue
from engine.notagen.model import NotagenModel, greedy, load_checkpoint, load_official_state_dict
from engine.notagen.patchilizer import Patchilizer

TOL = dict(atol=1e-5, rtol=1e-5)
GREEDY_CASES = {  # fixture -> (model, greedy_continue keyword arguments)
    "greedy_2": ("tiny", dict(max_patches=24)),
    "greedy_2_r0": ("tiny", dict(max_patches=8, force_body_start=True)),
    "greedy_trained_2": ("trained", {}),
    "greedy_trained_haydn_prompt": ("trained", {}),
}


@pytest.fixture(scope="module")
def tiny(notagen_reference) -> NotagenModel:
    model, _ = load_checkpoint(notagen_reference / "tiny_notagen.pth")
    return model


@pytest.fixture(scope="module")
def trained(notagen_reference) -> NotagenModel:
    model, _ = load_checkpoint(notagen_reference / "tiny_notagen_trained_fp16.pth")
    return model


def _assert_close(actual: torch.Tensor, expected: np.ndarray) -> None:
    torch.testing.assert_close(actual, torch.from_numpy(np.asarray(expected)).to(actual.dtype), **TOL)


def _greedy_fixture(notagen_reference, name: str) -> dict:
    return json.loads((notagen_reference / f"{name}.json").read_text(encoding="utf-8"))


# ---------------------------------------------------------------------------------------- config
def test_state_dict_names_shapes_and_tying(notagen_reference, tiny):
    listed = json.loads((notagen_reference / "state_dict_keys.json").read_text())
    state_dict = tiny.state_dict()
    assert [(key, list(value.shape)) for key, value in state_dict.items()] == [
        (entry["key"], entry["shape"]) for entry in listed["state_dict"]
    ]
    assert sum(p.numel() for p in tiny.parameters()) == listed["num_parameters_requires_grad"]
    base = tiny.char_level_decoder.base
    assert base.lm_head.weight is base.transformer.wte.weight


def test_config_inferred_from_checkpoints(notagen_reference):
    for checkpoint, preset, values_file, values_key in [
        ("tiny_notagen.pth", "tiny", "tiny_config.json", "notagen_config_values"),
        ("tiny_notagen_trained_fp16.pth", "tiny-trained", "tiny_trained_config.json", "trained_config"),
    ]:
        config = infer_from_state_dict(load_official_state_dict(notagen_reference / checkpoint))
        assert config == PRESETS[preset]
        official = json.loads((notagen_reference / values_file).read_text())[values_key]
        assert NotagenConfig.from_official_values(official) == config
    heads = json.loads((notagen_reference / "tiny_config.json").read_text())["patch_config_full"]["n_head"]
    assert PRESETS["tiny"].num_heads == heads


def test_official_reference_configs_and_sizes(notagen_reference):
    official = json.loads((notagen_reference / "tiny_config.json").read_text())["official_full_configs_for_reference"]
    assert NotagenConfig.from_official_values(official["pretrain (NotaGen-small)"]) == NotagenConfig.preset("NotaGen-small")
    assert NotagenConfig.from_official_values(official["finetune/inference/gradio (NotaGen-X)"]) == NotagenConfig.preset("NotaGen-X")
    # Parameter counts: 109.6M (fixtures README timing table), 244M (official README), 516M (paper).
    for name, millions in [("notagen-small", 109.6), ("notagen-medium", 243.7), ("notagen-large", 515.7)]:
        with torch.device("meta"):
            model = NotagenModel(PRESETS[name])
        assert round(sum(p.numel() for p in model.parameters()) / 1e6, 1) == millions
        assert PRESETS[name].num_heads == PRESETS[name].hidden_size // 64


def test_config_json_round_trip_and_head_override(tmp_path):
    config = NotagenConfig(patch_length=32, patch_num_layers=1, char_num_layers=1, hidden_size=96, num_heads=3)
    config.save_json(tmp_path / "config.json")
    assert NotagenConfig.load_json(tmp_path / "config.json") == config
    with pytest.raises(ValueError):
        NotagenConfig.from_dict({**config.to_dict(), "hidden": 1})
    assert NotagenConfig(hidden_size=96).num_heads == 1  # the official hidden // 64
    for bad in (dict(hidden_size=100, num_heads=3), dict(hidden_size=32)):
        with pytest.raises(ValueError):
            NotagenConfig(**bad)


# ---------------------------------------------------------------------------------------- loading
def test_official_loader_ignores_legacy_attention_buffers_only(notagen_reference, tmp_path):
    checkpoint = torch.load(notagen_reference / "tiny_notagen.pth", weights_only=True)
    checkpoint["model"]["patch_level_decoder.base.h.0.attn.bias"] = torch.ones(1, 1, 64, 64)
    checkpoint["model"]["char_level_decoder.base.transformer.h.0.attn.masked_bias"] = torch.tensor(-1e4)
    torch.save(checkpoint, tmp_path / "legacy.pth")
    model, _ = load_checkpoint(tmp_path / "legacy.pth")
    assert "patch_level_decoder.base.h.0.attn.bias" not in model.state_dict()

    del checkpoint["model"]["patch_level_decoder.base.ln_f.bias"]
    torch.save(checkpoint, tmp_path / "incomplete.pth")
    with pytest.raises(RuntimeError, match="ln_f.bias"):
        load_checkpoint(tmp_path / "incomplete.pth")
    torch.save({"state": 1}, tmp_path / "other.pth")
    with pytest.raises(ModelError):
        load_checkpoint(tmp_path / "other.pth")


def test_fp16_checkpoint_loads_into_float32(notagen_reference, trained):
    stored = load_official_state_dict(notagen_reference / "tiny_notagen_trained_fp16.pth")
    assert {value.dtype for value in stored.values()} == {torch.float16}
    assert {p.dtype for p in trained.parameters()} == {torch.float32}
    for key, value in trained.state_dict().items():
        assert torch.equal(value, stored[key].float()), key


def test_safetensors_round_trip(tiny, notagen_reference, tmp_path):
    tiny.save_pretrained(tmp_path / "tiny")
    assert sorted(p.name for p in (tmp_path / "tiny").iterdir()) == ["config.json", "model.safetensors"]
    model, config = load_checkpoint(tmp_path / "tiny")
    assert config == tiny.config
    assert not model.training
    for (key, value), (other_key, other) in zip(tiny.state_dict().items(), model.state_dict().items()):
        assert key == other_key and torch.equal(value, other)
    assert model.char_level_decoder.base.lm_head.weight is model.char_level_decoder.base.transformer.wte.weight


# ---------------------------------------------------------------------------------------- forward
@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_forward_matches_official(notagen_reference, tiny, n):
    ref = np.load(notagen_reference / f"forward_{n}.npz")
    patches = torch.from_numpy(ref["patches"])[None]
    masks = torch.from_numpy(ref["masks"])[None]
    masks_before = masks.clone()
    with torch.no_grad():
        loss = tiny(patches, masks)
        hidden = tiny.patch_hidden(patches, masks)[0]
        logits = tiny.char_logits(patches, masks)
    assert torch.equal(masks, masks_before), "forward must not zero masks[:, 0] in place"
    _assert_close(loss, ref["loss"])
    torch.testing.assert_close(loss.double(), torch.tensor(ref["loss_float64_model"]), **TOL)
    _assert_close(hidden, ref["patch_hidden"])
    _assert_close(logits[:3], ref["char_logits_first3"])

    targets = patches[0, 1:]
    labels = F.pad(targets, (1, 0), value=1)
    assert torch.equal(labels.masked_fill(labels == 0, -100)[:3], torch.from_numpy(ref["char_labels_first3"]))
    valid = targets != 0
    assert torch.equal(valid, torch.from_numpy(ref["target_token_valid"]))
    nll = F.cross_entropy(logits[:, :16].flatten(0, 1), targets.flatten(), reduction="none").view_as(targets)
    _assert_close(nll * valid, ref["target_token_nll"])
    _assert_close(nll[valid].mean(), ref["loss"])


def test_padded_batch_forward(notagen_reference, tiny):
    ref = np.load(notagen_reference / "forward_batch_1_2.npz")
    patches, masks = torch.from_numpy(ref["patches"]), torch.from_numpy(ref["masks"])
    with torch.no_grad():
        loss = tiny(patches, masks)
        hidden = tiny.patch_hidden(patches, masks)
    _assert_close(loss, ref["loss"])
    real = masks == 1
    _assert_close(hidden[real], ref["patch_hidden"][real.numpy()])


def test_trained_fp16_forward(notagen_reference, trained):
    ref = np.load(notagen_reference / "forward_trained_2.npz")
    patches = torch.from_numpy(ref["patches"])[None]
    masks = torch.ones(patches.shape[:2], dtype=torch.long)
    with torch.no_grad():
        _assert_close(trained(patches, masks), ref["loss"])
        _assert_close(trained.patch_hidden(patches, masks)[0], ref["patch_hidden"])
        _assert_close(trained.char_logits(patches, masks)[:3], ref["char_logits_first3"])


# ---------------------------------------------------------------------------------------- generation
@pytest.mark.parametrize("name", GREEDY_CASES)
def test_greedy_continue_matches_official_loop(notagen_reference, tiny, trained, name):
    ref = _greedy_fixture(notagen_reference, name)
    model_name, kwargs = GREEDY_CASES[name]
    model = tiny if model_name == "tiny" else trained
    result = greedy_continue(model, Patchilizer(), ref["prompt_text"], **kwargs)

    steps = [step for step in ref["steps"] if "appended_patch" in step]
    assert len(result.patches) == len(steps)
    for ours, theirs in zip(result.patches, steps):
        assert list(ours.predicted) == theirs["predicted_raw"]
        assert list(ours.appended) == theirs["appended_patch"]
        assert ours.text == theirs["decoded_chars"]
        assert (ours.discarded is not None) == theirs["forced_r0"]
        if theirs["forced_r0"]:
            assert list(ours.discarded) == theirs["first_prediction_before_forcing"]
    assert result.text == ref["generated_text"]
    assert ref["prompt_text"] + result.text == ref["full_text"]
    txt = (notagen_reference / f"{name}.txt").read_bytes().decode("utf-8")
    assert ref["prompt_text"] + result.text == txt
    assert list(result.context[: len(ref["initial_input_patches"]) * 16]) == sum(ref["initial_input_patches"], [])
    assert list(result.context) == ref["final_input_patches_flat"]
    assert result.ended == ref["end_flag"]
    if result.ended:
        assert ref["steps"][-1]["end_patch"]
    assert result.context_full == (name == "greedy_trained_haydn_prompt")


@pytest.mark.parametrize("name", ["greedy_2_r0", "greedy_trained_2"])
def test_reference_generate_patch_matches_official_steps(notagen_reference, tiny, trained, name):
    """The uncached official-style path, fed the official contexts step by step."""
    ref = _greedy_fixture(notagen_reference, name)
    model = tiny if GREEDY_CASES[name][0] == "tiny" else trained
    final = ref["final_input_patches_flat"]
    start = len(ref["initial_input_patches"]) * 16
    for i, step in enumerate(ref["steps"]):
        context = final[: start + 16 * i]
        if step.get("forced_r0"):
            assert model.generate_patch(context) == step["first_prediction_before_forcing"]
            context = context + [ord(c) for c in BODY_START]
            assert model.generate_patch(context) == step["predicted_raw"][len(BODY_START) :]
        else:
            assert model.generate_patch(context) == step["predicted_raw"]


def test_first_patch_probabilities(notagen_reference, tiny):
    ref = np.load(notagen_reference / "greedy_2_first_patch_probs.npz")
    context = torch.from_numpy(ref["input_patches_flat"])

    def recording(into: list):
        def choose(logits):
            into.append(F.softmax(logits, dim=-1)[0])
            return greedy(logits)

        return choose

    reference_probs, cached_probs = [], []
    tiny.generate_patch(context, choose=recording(reference_probs))
    cache = tiny.encode_patches(context.view(1, -1, 16))
    tiny.decode_patch(cache.last_hidden, choose=recording(cached_probs))
    _assert_close(torch.stack(reference_probs), ref["probs"])
    _assert_close(torch.stack(cached_probs), ref["probs"])


def test_cached_path_equals_reference_path(notagen_reference, tiny):
    """Batched cached decoding (one patch at a time, ragged prefixes) against the uncached reference."""
    patches = torch.from_numpy(np.load(notagen_reference / "forward_2.npz")["patches"])
    other = torch.from_numpy(np.load(notagen_reference / "forward_4.npz")["patches"])
    batch = torch.stack([patches[:31], other[:31]])  # 30 to encode, the 31st supplies the prefixes
    cache = tiny.encode_patches(batch[:, :20])
    for k in range(20, 30):
        cache = tiny.encode_patches(batch[:, k : k + 1], cache)
    assert cache.num_patches == 30
    with torch.no_grad():
        _assert_close(cache.last_hidden, tiny.patch_hidden(batch[:, :30])[:, -1].numpy())

    for prefix_length in (0, 5, 15):
        prefix = batch[:, 30, :prefix_length]
        chars = tiny.decode_patch(cache.last_hidden, prefix)
        assert chars.shape == (2, 16 - prefix_length)
        for row in range(2):
            context = torch.cat([batch[row, :30].flatten(), prefix[row]])
            assert chars[row].tolist() == tiny.generate_patch(context)

    reordered = cache.select([1, 0, 1])
    assert torch.equal(tiny.decode_patch(reordered.last_hidden), tiny.decode_patch(cache.last_hidden)[[1, 0, 1]])
    with pytest.raises(ModelError):
        tiny.encode_patches(batch[:, :1].expand(2, 35, 16), cache)


def test_sequence_log_probs_sum_to_the_training_loss(notagen_reference):
    """Per-row sums over the same chars the loss averages: -sum/count equals the loss, rows independent."""
    model, _ = load_checkpoint(notagen_reference / "tiny_notagen.pth")
    torch.manual_seed(0)
    patches = torch.randint(3, 128, (2, 5, 16))
    masks = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    with torch.no_grad():
        log_probs, counts = model.sequence_log_probs(patches, masks)
        loss = model(patches, masks)
        alone, alone_count = model.sequence_log_probs(patches[1:, :3], masks[1:, :3])
    assert counts.tolist() == [64, 32]
    torch.testing.assert_close(-log_probs.sum() / counts.sum(), loss)
    torch.testing.assert_close(alone, log_probs[1:], atol=1e-4, rtol=1e-5)
