"""Locks and the measure model address the same measures of real scores.

A lock is a (part, column) index into `ScoreDocument.grid`; inpainting reads the document into the
measure model's `MeasureScore` and rewrites every cell that is not locked. Both must cut the score
into the same rows and columns, or a lock would protect one measure and leave its neighbour to be
rewritten. Checked on a pickup (bwv66.6), a bar split at a repeat sign numbered '4' and '4a'
(bwv104.6) and a piano in two `PartStaff`s with first and second endings (Maple Leaf Rag).
"""
import music21
import pytest
import torch

from engine.locks import Locks
from engine.measure.context import MeasureLM
from engine.measure.inpaint import inpaint
from engine.measure.representation import from_document
from engine.score.document import ScoreDocument
from engine.score.formats import score_to_musicxml
from engine.score.grid import DEFAULT_TIME_SIGNATURE
from tests.test_measure_model import tiny_config

#: piece -> (locked cell as (part, printed measure number), what the piece shows)
PIECES = {
    "bach/bwv66.6": ((2, "0"), "a one-beat pickup numbered 0"),
    "bach/bwv104.6": ((1, "4a"), "bar 4 split at a repeat sign into '4' and '4a'"),
    "joplin/maple_leaf_rag": ((1, "34"), "the second ending, in the lower of two piano PartStaffs"),
}


@pytest.fixture(scope="module", params=list(PIECES))
def piece(request):
    score = music21.corpus.parse(request.param)
    return request.param, ScoreDocument(score_to_musicxml(score), request.param)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return MeasureLM(tiny_config()).eval()


def _notes(score: music21.stream.Score, part: int, column: int) -> tuple[str, list]:
    """The printed number and the notes of the measure at a cell, read straight from music21."""
    measure = list(score.parts[part].getElementsByClass(music21.stream.Measure))[column]
    notes = [(n.offset, n.quarterLength, tuple(p.nameWithOctave for p in n.pitches), n.tie.type if n.tie else None,
              [lyric.text for lyric in n.lyrics]) for n in measure.recurse().notesAndRests]
    return f"{measure.number}{measure.numberSuffix or ''}", notes


def test_locks_and_the_measure_model_share_rows_columns_and_bar_lengths(piece):
    name, document = piece
    grid, cells = document.grid, from_document(document)
    assert cells.n_parts == len(grid.parts) == len(grid.cells) == document.n_parts > 0
    assert cells.n_columns == len(grid.columns) == document.n_measures > 0
    assert all(len(row) == cells.n_columns for row in grid.cells + cells.cells)
    assert [c.number for c in cells.columns] == [c.number for c in grid.columns]
    assert [c.time_signature for c in cells.columns] == [c.time_signature for c in grid.columns]
    for row in cells.cells:
        assert [cell.beat_unit * cell.n_beats for cell in row] == [c.bar_length for c in grid.columns]
    # the model's column m is the measure at index m of each part, as the app's grid reads it
    score = document.score()
    for p in range(cells.n_parts):
        for m in (0, cells.n_columns // 2, cells.n_columns - 1):
            assert _notes(score, p, m)[0] == grid.columns[m].number
    locks = Locks(document.n_parts, document.n_measures).all()
    assert locks.cells == {(p, m) for p in range(cells.n_parts) for m in range(cells.n_columns)}


def test_a_locked_cell_is_the_measure_inpainting_leaves_alone(piece, model):
    name, document = piece
    (part, number), _ = PIECES[name]
    column = document.grid.column_of_number(number)
    around = range(max(0, column - 1), min(document.n_measures, column + 2))
    free = {(p, m) for p in range(document.n_parts) for m in around} - {(part, column)}
    locks = Locks(document.n_parts, document.n_measures).all()
    for p, m in free:
        locks = locks.toggle_cell(p, m)
    assert (part, column) in locks.cells and not free & locks.cells

    result = inpaint(document, set(locks.cells), model=model, seed=0).document
    before, after = document.score(), result.score()
    assert _notes(after, part, column) == _notes(before, part, column)
    assert _notes(after, part, column)[0] == number
    assert any(_notes(after, p, m) != _notes(before, p, m) for p, m in free)
    assert result.grid.columns == document.grid.columns


def test_a_score_without_time_signature_is_read_in_4_4_by_both():
    part = music21.stream.Part()
    for pitches in (["C4", "D4", "E4"], ["F4", "G4", "A4", "B4"]):
        measure = music21.stream.Measure()
        for pitch in pitches:
            measure.append(music21.note.Note(pitch))
        part.append(measure)
    document = ScoreDocument(score_to_musicxml(music21.stream.Score([part])))
    assert not document.score().recurse().getElementsByClass(music21.meter.TimeSignature)
    assert [c.time_signature for c in document.grid.columns] == [DEFAULT_TIME_SIGNATURE] * 2
    assert [c.bar_length for c in document.grid.columns] == [4, 4]
    cells = from_document(document)
    assert cells.columns == document.grid.columns
    assert [(cell.beat_unit * cell.n_beats) for cell in cells.cells[0]] == [4, 4]
