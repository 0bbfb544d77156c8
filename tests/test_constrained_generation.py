"""Bar-exact decoding (`engine.notagen.constrained`): in the generator, and the constraint on its own."""
from __future__ import annotations

import random
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.notagen import batch_engine
from engine.notagen.bar_check import full_inner_lines
from engine.notagen.bar_constraint import _PRINTABLE, BarConstraint, logits_mask, token_char
from engine.notagen.bar_reader import EOS_CHAR, BarReader
from engine.notagen.config import NotagenConfig
from engine.notagen.finish import finish_generated
from engine.notagen.generate import NotagenGenerator
from engine.notagen.header import Ensemble, HeaderChoice
from engine.notagen.model import NotagenModel
from engine.notagen.patchilizer import BOS_ID, EOS_ID
from engine.notagen.batch_engine import DEAD_END_RETRIES
from engine.notagen.options import STOP_DEAD_END, SamplingOptions
from engine.notagen.prompts import Prompt
from engine.notagen.sampling import draw, draw_row, filtered_probs, masked_probs, ranked_probs

SHIPPED = Path(__file__).resolve().parents[1] / "assets" / "notagen"
WALK_HEADER = '%%score { 1 | 2 }\nL:1/8\nM:3/4\nK:D\nV:1 treble nm="Violin"\nV:2 bass nm="Cello"\n[r:0/2]'


@pytest.fixture(scope="module")
def trained(notagen_reference) -> NotagenGenerator:
    return NotagenGenerator.load(notagen_reference / "tiny_notagen_trained_fp16.pth")


def test_greedy_bars_that_fit_are_decoded_as_without_the_constraint(trained):
    runs = [trained.generate(None, n=1, top_k=1, max_bars=6, constrain=constrain, max_attempts=1) for constrain in (False, True)]
    free, constrained = (run.pieces[0] for run in runs)
    assert free.alignment.misaligned == 0  # the fixture model writes whole bars greedily...
    assert constrained.text == free.text  # ...and then the constraint changes nothing



def _random_model_pieces(n: int):
    """`n` bar-exact pieces of 3 bars of a random-weight model for violin and cello in D, 3/4, one attempt each."""
    torch.manual_seed(0)
    config = NotagenConfig(patch_length=64, patch_num_layers=1, char_num_layers=1, hidden_size=64, num_heads=1)
    generator = NotagenGenerator(NotagenModel(config).eval(), name="random")
    header = HeaderChoice(ensemble=Ensemble.parse("Violin:treble,Cello:bass"), key="D", metre="3/4")
    return generator.generate(None, n=n, seed=0, max_bars=3, header=header, max_attempts=1, bae_resample=False,
                              max_patches=60)


def test_a_random_model_under_the_constraint_writes_whole_bars_that_convert():
    """Random weights write anything; under the constraint all 50 pieces end, convert and fill their inner bars."""
    result = _random_model_pieces(50)
    assert not result.failures, [failure.reason for failure in result.failures]
    assert len(result.pieces) == 50
    for piece in result.pieces:
        assert piece.bars >= 1 and piece.document.n_parts == 2
        inner, full = full_inner_lines(piece.text)
        assert full == inner, piece.text  # every voice of every bar line but the first and last lasts its metre


@pytest.mark.parametrize("seed", range(3))
def test_random_text_the_constraint_allows_converts_with_the_lengths_it_read(seed):
    """A walk that picks uniformly among the allowed ids (no model at all) always ends and converts."""
    rng = random.Random(seed)
    constraint, finish = BarConstraint(), finish_generated("walk")
    for _ in range(15):
        reader, text = BarReader(), ""
        for char in WALK_HEADER:
            reader.feed(char)
            text += char
            if char == "\n":
                reader.feed(EOS_CHAR)
        for _ in range(5000):
            token = rng.choice(constraint.allowed_ids(reader))
            if token == BOS_ID:
                break
            reader.feed(EOS_CHAR if token == EOS_ID else chr(token))
            text += "" if token == EOS_ID else chr(token)
        else:
            pytest.fail(f"the walk did not end: {text[-200:]!r}")
        finish(text, 0, "end")  # converts (raises ScoreError otherwise)



def bar_element_lengths(text: str) -> list[list[Fraction | None]]:
    """The written length of every element of every voice bar of a piece (None inside a tuplet)."""
    reader, bars, current = BarReader(record=True), [], []
    for char in text:
        count, closed = reader.closed_count, len(reader.bars)
        reader.feed(char)
        if reader.closed_count > count:
            current.append(reader.last_written)
        if len(reader.bars) > closed:
            bars.append(current)
            current = []
    return bars


def test_bar_ends_are_not_filled_with_runs_of_tiny_notes(one_torch_thread):
    """Where the shipped model falls short of a bar the constraint closes it with musical lengths: no bar
    ends with three or more notes under a 16th in a piece that writes none elsewhere."""
    generator = NotagenGenerator.load(SHIPPED)
    prompt = Prompt("Classical", "Haydn, Joseph", "Chamber")
    result = generator.generate(prompt, n=6, seed=1001, max_bars=6, max_attempts=1, bae_resample=False)
    checked = 0
    for piece in result.pieces:
        bars = bar_element_lengths(piece.text)
        tiny = [[length is not None and length < Fraction(1, 16) for length in bar] for bar in bars]
        runs = [next((i for i, flag in enumerate(reversed(flags)) if not flag), len(flags)) for flags in tiny]
        elsewhere = sum(sum(flags) - run for flags, run in zip(tiny, runs))
        if not elsewhere:
            checked += len(bars)
            assert max(runs, default=0) < 3, piece.text
    assert checked >= 20


@pytest.mark.parametrize("options", [SamplingOptions(top_k=9, top_p=0.9, temperature=1.2), SamplingOptions(top_k=0, top_p=0.9, temperature=1.6),
                                     SamplingOptions(top_k=5, top_p=1.0, temperature=1.0), SamplingOptions(top_k=1)])
def test_the_masked_distribution_found_id_by_id_is_the_full_masks(options):
    """`masked_probs` (ids tested from the likeliest down until the filters' choice is known) gives the
    distribution the whole mask gives, or None when it needs more tests than allowed."""
    generator, decided = torch.Generator().manual_seed(0), 0
    for trial in range(300):
        logits = torch.randn(128, generator=generator) * (1 + trial % 4)
        size = (1, 2, 5, 20, 100)[trial % 5]
        allowed = set(torch.randperm(128, generator=generator)[:size].tolist())
        expected = filtered_probs(logits.masked_fill(~logits_mask([allowed])[0], float("-inf")).unsqueeze(0), options)[0]
        if options.greedy:
            expected = torch.nn.functional.one_hot(expected.argmax(), 128).double()
        for limit in (8, 32, 128):
            kept = masked_probs(tuple(part[0] for part in ranked_probs(logits.unsqueeze(0))), options, allowed.__contains__, limit)
            assert kept is not None or limit < 128
            if kept is not None:
                decided += limit == 8
                probs = torch.zeros(128, dtype=torch.float64)
                probs[kept[0]] = torch.tensor(kept[1], dtype=torch.float64)
                assert torch.allclose(probs, expected, atol=1e-9), (trial, limit)
                assert kept[1] == sorted(kept[1], reverse=True)  # likeliest first: greedy takes the first
    assert decided > 0  # a few tests can decide


def test_drawing_one_row_in_python_is_drawing_it_with_tensors():
    """`draw_row` (a refused row's redraw, its ids and probabilities given sparsely and in any order) picks
    the id `draw` picks from the same uniform."""
    generator = torch.Generator().manual_seed(0)
    for trial in range(2000):
        probs = torch.rand(128, generator=generator, dtype=torch.float64) * (torch.rand(128, generator=generator) < 0.1)
        probs[trial % 128] += 1e-3
        probs = probs / probs.sum()
        ids = probs.nonzero().flatten()[torch.randperm(int((probs > 0).sum()), generator=generator)].tolist()
        rows = [np.random.default_rng(trial) for _ in range(2)]
        assert draw_row(ids, probs[ids].tolist(), rows[0]) == int(draw(probs.unsqueeze(0), [rows[1]])[0])


def _states(reference: Path) -> list[BarReader]:
    """Reader states along a real four-voice chorale and along random walks of allowed ids (headers,
    annotations, decorations, tuplets, chords...), as the decoder meets them."""
    chorale = (reference / "preprocess" / "bwv66.6_m0-4" / "interleaved.abc").read_text()
    texts = [chorale.replace("\n[V:1]", "\n[r:0/9][V:1]", 1)]
    rng, constraint = random.Random(1), BarConstraint()
    states, reader = [], BarReader()
    for char in texts[0]:
        states.append(reader.copy())
        if not reader.step(char):
            break
        if char == "\n":
            states.append(reader.copy())
            reader.step(EOS_CHAR)
    for _ in range(3):
        reader = BarReader()
        reader.feed_text(WALK_HEADER)
        for _ in range(300):
            states.append(reader.copy())
            allowed = constraint.allowed_ids(reader)
            if not allowed or allowed == [BOS_ID]:
                break
            reader.feed(token_char(rng.choice(allowed)))
    return states


def test_the_decoders_fast_tests_agree_with_the_char_by_char_ones(notagen_reference):
    """What the chooser uses (`advance` on its own choice, the memoised `id_tester` for a redraw and its whole
    mask, `allowed_chars` through `char_tester`) allows what `allows_id`, `musical` and `allows_char` allow,
    one id at a time, on every state; and `advance` leaves the reader that reading the id gives."""
    constraint, checked = BarConstraint(), 0
    for reader in _states(notagen_reference):
        assert constraint.allowed_chars(reader) == {char for char in _PRINTABLE if constraint.allows_char(reader, char)}
        allowed = constraint.allowed_ids(reader)
        tester = constraint.id_tester(reader)
        assert ([token for token in range(128) if tester(token)] or allowed) == (constraint.musical_ids(reader, allowed) if allowed else [])
        assert constraint.tested_ids(tester) == [token for token in range(128) if tester(token)]
        for token in range(128):
            after = constraint.advance(reader, token)
            assert (after is not None) == (constraint.allows_id(reader, token) and constraint.musical(reader, token)), (token, reader.__dict__)
            if after is not None:
                stepped = reader.copy()
                stepped.feed(token_char(token))
                assert _fields(after) == _fields(stepped)
                checked += 1
    assert checked > 3000


def _fields(reader: BarReader) -> dict:
    fields = {name: value for name, value in vars(reader).items() if name not in ("decoration_names", "length")}
    return fields | {"length": reader.length.key()}


class _StuckInBarTwo(BarConstraint):
    """Allows nothing once the second bar line has begun: a gap in the written subset's rules."""

    @staticmethod
    def _stuck(reader) -> bool:
        return reader.in_body and reader.body_line >= 1 and reader.voice is not None

    def advance(self, reader, token):
        return None if self._stuck(reader) else super().advance(reader, token)

    def id_tester(self, reader):
        return (lambda token: False) if self._stuck(reader) else super().id_tester(reader)

    def allowed_ids(self, reader):
        return [] if self._stuck(reader) else super().allowed_ids(reader)


def test_a_dead_end_resamples_the_bar_then_stops_at_the_last_whole_bar(monkeypatch):
    """Where the constraint allows no char the row never goes on unconstrained: its bar is sampled again
    (3 times), then the piece ends with its whole bars."""
    monkeypatch.setattr(batch_engine, "BarConstraint", _StuckInBarTwo)
    result = _random_model_pieces(4)
    assert len(result.pieces) == 4, [failure.reason for failure in result.failures]
    for piece in result.pieces:
        assert piece.stop_reason == STOP_DEAD_END and piece.bars == 1 and piece.resampled_bars == DEAD_END_RETRIES
        assert piece.alignment.misaligned == 0
