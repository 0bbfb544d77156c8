"""Inpainting never changes locked measures and fills the others; generation; the CLI's lock spec."""

import music21
import pytest
import torch

from engine.errors import ModelError, ScoreError
from engine.cli import build_parser, parse_lock_spec
from engine.measure.context import MeasureLM
from engine.measure.inpaint import generate, inpaint
from engine.measure.representation import from_document
from engine.score.document import ScoreDocument
from engine.score.formats import score_to_musicxml
from tests.test_measure_model import tiny_config


@pytest.fixture(scope="module")
def document():
    score = music21.corpus.parse("bach/bwv66.6")
    for part in score.parts:  # six measures keep the test fast
        for measure in list(part.getElementsByClass(music21.stream.Measure))[6:]:
            part.remove(measure)
    return ScoreDocument(score_to_musicxml(score), "bwv66.6")


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return MeasureLM(tiny_config()).eval()


def _measure_notes(document, p, m):
    measure = list(document.score().parts[p].getElementsByClass(music21.stream.Measure))[m]
    return [(str(n.offset), n.quarterLength, tuple(x.nameWithOctave for x in n.pitches), n.tie.type if n.tie else None,
             [l.text for l in n.lyrics]) for n in measure.recurse().notesAndRests]


def test_inpaint_keeps_locked_cells_and_fills_the_rest(document, model):
    locked = {(p, m) for p in range(4) for m in range(6) if not (2 <= m <= 3)} | {(0, 3)}
    result = inpaint(document, locked, model=model, seed=1, sweeps=1, refine_fraction=0.5).document
    for p, m in locked:
        assert _measure_notes(result, p, m) == _measure_notes(document, p, m)
    changed = [(p, m) for p in range(4) for m in range(6) if (p, m) not in locked and _measure_notes(result, p, m) != _measure_notes(document, p, m)]
    assert len(changed) >= 5  # (an untrained model may by chance rewrite a measure as it was)
    grid = from_document(result)
    for p, m in [(p, m) for p in range(4) for m in range(6) if (p, m) not in locked]:
        assert grid.cells[p][m].voices
    again = inpaint(document, locked, model=model, seed=1, sweeps=1, refine_fraction=0.5).document
    assert from_document(again) == grid  # deterministic for a seed


def test_inpaint_left_to_right_keeps_pickup_padding(document, model):
    locked = {(p, m) for p in range(4) for m in range(1, 6)}
    result = inpaint(document, locked, model=model, seed=0, order="left-to-right").document
    first = list(result.score().parts[0].getElementsByClass(music21.stream.Measure))[0]
    assert first.duration.quarterLength == 1.0  # the pickup stays a one-beat measure


def test_inpaint_refuses_cells_outside_the_grid(document, model):
    with pytest.raises(ScoreError):
        inpaint(document, {(9, 0)}, model=model)


def test_generate(model):
    doc = generate(["violin", "cello"], 2, "3/4", model=model, seed=0)
    grid = from_document(doc)
    assert grid.n_parts == 2 and grid.n_columns == 2
    assert all(cell.n_beats == 3 for row in grid.cells for cell in row)
    ar = MeasureLM(tiny_config(kind="ar", layers=["attn"])).eval()
    assert from_document(generate(["soprano"], 2, "4/4", model=ar, seed=0)).n_columns == 2
    with pytest.raises(ModelError):
        inpaint(doc, set(), model=ar)


def test_lock_spec(document):
    args = build_parser().parse_args(["inpaint", "in.musicxml", "--lock", "1-2,4", "--lock", "2:5", "--out", "o.musicxml"])
    cells = parse_lock_spec(args.lock, document.grid)
    # columns: 0 is the pickup (measure 0), so measure n is column n
    assert cells == {(p, m) for p in range(4) for m in (1, 2, 4)} | {(1, 5)}
    with pytest.raises(ScoreError):
        parse_lock_spec(["40"], document.grid)
