"""The patchilizer against the official NotaGen Patchilizer's outputs (fixtures README, section B)."""
import json
import random

import pytest

from engine.notagen.patchilizer import Patchilizer

PATCH_LENGTH = 64  # the fixtures' tiny config
INPUTS = [1, 2, 3, 4]


@pytest.fixture(scope="module")
def patchilizer() -> Patchilizer:
    return Patchilizer()


def _tokenize(notagen_reference, n: int) -> dict:
    return json.loads((notagen_reference / f"tokenize_{n}.json").read_text(encoding="utf-8"))


class ScriptedChoices:
    """A `random` stand-in that returns the fixture's picks and checks the options offered."""

    def __init__(self, picks: list[dict]) -> None:
        self.picks = list(picks)

    def choice(self, seq):
        expected = self.picks.pop(0)
        assert list(seq) == expected["options"]
        return expected["picked"]


@pytest.mark.parametrize("n", INPUTS)
def test_lines_bars_and_patches(notagen_reference, patchilizer, n):
    ref = _tokenize(notagen_reference, n)
    metadata_lines, body_lines = patchilizer.stream_lines(ref["text"])
    assert metadata_lines == ref["metadata_lines"]
    assert body_lines == ref["stream_tunebody_lines"]
    assert "".join(metadata_lines + body_lines) == ref["stream_text"]
    assert patchilizer.split_bars(body_lines) == ref["split_bars_of_stream_tunebody_lines"]
    assert patchilizer.patchilize_metadata(metadata_lines) == ref["patchilize_metadata"]
    assert patchilizer.patchilize_tunebody(body_lines) == ref["patchilize_tunebody_train"]


@pytest.mark.parametrize("n", [1, 2, 4])
def test_encode_train_without_cut(notagen_reference, patchilizer, n):
    ref = _tokenize(notagen_reference, n)
    expected = ref["encode_train"]
    assert not expected["stream_cut_applied"]
    patches = patchilizer.encode_train(ref["text"], PATCH_LENGTH)
    assert patches == expected["patches"]
    assert (patchilizer.encode_train(ref["text"], PATCH_LENGTH, body_start="pretrain") == patches) is expected[
        "pretrain_variant_identical"
    ]
    assert patchilizer.decode(patches) == ref["decode_of_encode_train"]


def test_encode_train_stream_cut_variants(notagen_reference, patchilizer):
    ref = _tokenize(notagen_reference, 3)
    variants = ref["encode_train"]["variants"]
    assert len(variants) == 4
    for variant in variants:
        for body_start in ("finetune", "pretrain") if variant["pretrain_variant_identical"] else ("finetune",):
            rng = ScriptedChoices(variant["random_choices"])
            patches = patchilizer.encode_train(ref["text"], PATCH_LENGTH, rng=rng, body_start=body_start)
            assert not rng.picks, "every scripted random.choice was used"
            assert patches == variant["patches"]
            assert len(patches) == variant["num_patches"]
            assert patchilizer.decode(patches) == variant["decoded"]
        uncut = patchilizer.encode_train(ref["text"], PATCH_LENGTH, cut=False, rng=ScriptedChoices(variant["random_choices"]))
        assert len(uncut) == variant["num_patches_if_cut_False"]


def test_encode_train_python_random_seeds(notagen_reference, patchilizer):
    ref = _tokenize(notagen_reference, 3)
    expected = ref["encode_train"]
    state = random.getstate()
    try:
        for outcome in expected["python_random_seed_outcomes"]:
            random.seed(outcome["random.seed"])
            patches = patchilizer.encode_train(ref["text"], PATCH_LENGTH)
            matches = [i for i, variant in enumerate(expected["variants"]) if variant["patches"] == patches]
            assert matches == outcome["matches_variant_index"], outcome
    finally:
        random.setstate(state)


@pytest.mark.parametrize("n", INPUTS)
def test_encode_generate(notagen_reference, patchilizer, n):
    cases = _tokenize(notagen_reference, n)["encode_generate"]["cases"]
    assert len(cases) == 5
    for case in cases:
        patches = patchilizer.encode_generate(case["text"], PATCH_LENGTH)
        assert patches == case["patches"], case["name"]
        assert [len(patch) for patch in patches] == case["patch_lengths"], case["name"]
        assert patchilizer.decode(patches) == case["decoded"], case["name"]


def test_encode_generate_prompt_only_repeats_text(notagen_reference, patchilizer):
    meta = json.loads((notagen_reference / "notagen_meta.json").read_text(encoding="utf-8"))
    case = meta["encode_generate_prompt_only_edge_case"]
    patches = patchilizer.encode_generate(case["text"], PATCH_LENGTH)
    assert patches == case["patches"]
    assert patchilizer.decode(patches) == case["decoded"]


def test_special_patches_and_decode_keep_control_ids(patchilizer):
    assert [ord(c) for c in patchilizer.bos_patch] == [1] * 15 + [2]
    assert [ord(c) for c in patchilizer.eos_patch] == [1] + [2] * 15
    assert patchilizer.decode([[1] * 15 + [2], [1] + [2] * 15, [65, 0, 66, 2, 67]]) == "\x01" * 15 + "\x01" + "A\x00B"


def test_exactly_one_patch_long_line_gets_no_eos(patchilizer):
    assert patchilizer.split_patches("%%score 1 2 3 4\n") == ["%%score 1 2 3 4\n"]
    assert patchilizer.split_patches("K:C\n") == ["K:C\n\x02"]


def test_split_bars_drops_unsplittable_line_and_everything_after(patchilizer):
    lines = ["[V:1]ab|cd|\n", "|\n", "[V:1]ef|\n"]
    assert patchilizer.split_bars(lines) == ["[V:1]ab", "|cd|\n"]
    # A bar ending a line without its newline cannot be paired either (official IndexError).
    assert patchilizer.split_bars(["[V:1]ab|", "[V:1]cd|\n"]) == []


def test_body_start_rule_finetune_contains_pretrain_startswith(patchilizer):
    text = "L:1/8\n%voice [V:1] comment\n[V:1]ab|\n"
    _, finetune_body = patchilizer.stream_lines(text, body_start="finetune")
    _, pretrain_body = patchilizer.stream_lines(text, body_start="pretrain")
    assert finetune_body == ["[r:0/1]%voice [V:1] comment\n", "[r:1/0][V:1]ab|\n"]
    assert pretrain_body == ["[r:0/0][V:1]ab|\n"]
    # No voice line at all: the last line is the body (the official index -1).
    assert patchilizer.stream_lines("L:1/8\nK:C\n") == (["L:1/8\n"], ["[r:0/0]K:C\n"])
