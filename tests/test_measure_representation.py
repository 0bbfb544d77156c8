"""The measure model's representation: beats, ties, prime-exponent durations, padding, round trip."""
from fractions import Fraction

import music21
import pytest

from engine.measure.cells import (
    ChordEvent,
    Note,
    Pitch,
    beat_structure,
    duration_exponents,
    duration_from_exponents,
    split_at_beats,
)
from engine.measure.representation import first_difference, from_score, round_trip, to_document, transpose

# a sample spread over the corpus: pickups, 3/4, 12/8, 3/2, instrument parts, two voices
ROUND_TRIP_SAMPLE = ["bach/bwv66.6", "bach/bwv277", "bach/bwv248.12-2", "bach/bwv187.7", "bach/bwv8.6",
                     "bach/bwv18.5-lz", "bach/bwv248.23-s"]


def test_beat_structure():
    assert beat_structure("4/4") == (Fraction(1), 4)
    assert beat_structure("3/4") == (Fraction(1), 3)
    assert beat_structure("6/8") == (Fraction(3, 2), 2)
    assert beat_structure("12/8") == (Fraction(3, 2), 4)
    assert beat_structure("2/2") == (Fraction(2), 2)
    assert beat_structure("3/8") == (Fraction(1, 2), 3)
    assert beat_structure("9/16") == (Fraction(3, 4), 3)


def test_prime_exponent_durations():
    assert duration_exponents(Fraction(3, 4)) == (-2, 1, 0, 0, 0)  # a dotted eighth in quarter beats
    assert duration_exponents(Fraction(1, 3)) == (0, -1, 0, 0, 0)
    assert duration_exponents(Fraction(2, 5)) == (1, 0, -1, 0, 0)
    assert duration_exponents(Fraction(1)) == (0, 0, 0, 0, 0)
    for value in (Fraction(1, 7), Fraction(3, 11), Fraction(1, 256), Fraction(7, 8)):
        assert duration_from_exponents(duration_exponents(value)) == value
    with pytest.raises(ValueError):
        duration_exponents(Fraction(1, 13))


def test_split_at_beats():
    assert split_at_beats(Fraction(1, 2), Fraction(2)) == [(Fraction(1, 2), Fraction(1, 2)), (Fraction(1), Fraction(1)), (Fraction(2), Fraction(1, 2))]
    assert split_at_beats(Fraction(0), Fraction(1)) == [(Fraction(0), Fraction(1))]
    assert split_at_beats(Fraction(2, 3), Fraction(2, 3)) == [(Fraction(2, 3), Fraction(1, 3)), (Fraction(1), Fraction(1, 3))]


def _score(time_signature, *measures, pickup=False):
    """A one-part score; each of `measures` is a list of (pitch names or "r", quarter length)."""
    score = music21.stream.Score()
    part = music21.stream.Part()
    part.partName = "Violin I"
    for number, notes in enumerate(measures, start=1):
        measure = music21.stream.Measure(number=number)
        if number == 1:
            measure.append(music21.meter.TimeSignature(time_signature))
        for name, ql in notes:
            element = music21.note.Rest(quarterLength=ql) if name == "r" else (
                music21.chord.Chord(name.split(), quarterLength=ql) if " " in name else music21.note.Note(name, quarterLength=ql))
            measure.append(element)
        if pickup and number == 1:
            measure.paddingLeft = music21.meter.TimeSignature(time_signature).barDuration.quarterLength - measure.highestTime
        part.append(measure)
    score.insert(0, part)
    return score


def test_cross_beat_notes_become_tied_notes():
    grid = from_score(_score("4/4", [("C4", 0.5), ("D4", 2), ("E4 G4", 1.5)]), strict=True)
    voice = grid.cells[0][0].voices[0]
    c4, d4, e4, g4 = (Pitch.parse(n) for n in ("C4", "D4", "E4", "G4"))
    assert voice == (
        ChordEvent((Note(c4),), Fraction(1, 2)),
        ChordEvent((Note(d4),), Fraction(1, 2)),
        ChordEvent((Note(d4, True),), Fraction(1)),
        ChordEvent((Note(d4, True),), Fraction(1, 2)),
        ChordEvent((Note(e4), Note(g4)), Fraction(1, 2)),
        ChordEvent((Note(e4, True), Note(g4, True)), Fraction(1)),
    )
    assert grid.parts[0].instrument == "violin"
    # written back, the split notes are tied notes, and reading them again gives the same grid
    again = from_score(to_document(grid).score(), strict=True)
    assert first_difference(grid, again) == ""
    notes = list(to_document(grid).score().recurse().notes)
    assert [n.tie.type if n.tie else None for n in notes[1:4]] == ["start", "continue", "stop"]


def test_compound_meter_and_padding():
    grid = from_score(_score("6/8", [("C5", 0.5), ("D5", 1.5), ("r", 1)], [("E5", 1.5)]), strict=True)
    cell = grid.cells[0][0]
    assert (cell.beat_unit, cell.n_beats) == (Fraction(3, 2), 2)
    assert [e.duration for e in cell.voices[0]] == [Fraction(1, 3), Fraction(2, 3), Fraction(1, 3), Fraction(2, 3)]
    short = grid.cells[0][1].voices[0]  # an incomplete measure after the first pads at its end
    assert [(e.pad, e.duration) for e in short] == [(False, Fraction(1)), (True, Fraction(1))]
    pickup = from_score(_score("3/4", [("G4", 1)], [("A4", 3)], pickup=True), strict=True).cells[0][0]
    assert [e.pad for e in pickup.voices[0]] == [True, True, False]
    assert first_difference(grid, from_score(to_document(grid).score(), strict=True)) == ""


def test_transposition_spelling_and_token():
    grid = from_score(_score("4/4", [("F#4", 1), ("B-4", 1), ("C4 E4", 2)]), strict=True)
    down = transpose(grid, -7)
    assert down.parts[0].token == "violin_shifted-7"
    names = [n.pitch.name for e in down.cells[0][0].voices[0] for n in e.chord]
    assert names[:2] == ["B3", "E-4"]  # fewest accidentals: a fifth down, spelled diatonically
    assert transpose(down, 7).cells == grid.cells


@pytest.mark.parametrize("name", ROUND_TRIP_SAMPLE)
def test_chorale_round_trip_is_exact(name):
    """grid -> music21 -> MusicXML -> ScoreDocument -> grid; all chorales: python -m engine.measure.representation"""
    grid, again = round_trip(music21.corpus.parse(name), name)
    assert first_difference(grid, again) == ""
    assert grid == again
