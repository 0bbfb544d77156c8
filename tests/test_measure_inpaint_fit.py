"""The musical-fit report of inpainted measures (training.measure_fit)."""

import math
from fractions import Fraction

import music21
import pytest
import torch

from engine.measure.cells import Cell, ChordEvent, Note, Pitch
from engine.measure.context import MeasureLM
from engine.measure.representation import from_score, transpose
from tests.test_measure_model import tiny_config
from training.measure_fit import NEIGHBOURS, KindReport, Tally, _range, fit_hole, hole_starts, scale_of, table


def test_a_tally_counts_onsets_outside_the_key_distance_and_density():
    c, f_sharp, g = Pitch.parse("C5"), Pitch.parse("F#5"), Pitch.parse("G5")
    voice = (ChordEvent((Note(c), Note(f_sharp)), Fraction(1)), ChordEvent((Note(c, tie=True), Note(g)), Fraction(1)),
             ChordEvent((), Fraction(1)), ChordEvent((), Fraction(1), pad=True))
    tally = Tally()
    tally.add(Cell(Fraction(1), 4, (voice,)), scale_of(0), neighbours=(60, 70))
    # onsets: C, F#, G (the tied C is no onset); F# is outside C major; 2 onset events in 3 beats of content
    assert (tally.notes, tally.outside, tally.onsets, tally.beats) == (3, 1, 2, 3.0)
    mean = (c.midi + f_sharp.midi + c.midi + g.midi) / 4
    # the distance is from the middle of the neighbours' range (65), not from its nearest edge
    assert tally.figures() == pytest.approx({"chromatic": 1 / 3, "distance": mean - 65, "density": 2 / 3})
    assert scale_of(2) == {2, 4, 6, 7, 9, 11, 1}  # D major (and B minor)


def test_a_hole_in_a_chorale_is_inpainted_and_measured():
    torch.manual_seed(0)
    model = MeasureLM(tiny_config()).eval()
    grid = from_score(music21.corpus.parse("bach/bwv269"))
    report = KindReport()
    fit_hole(model, grid, [5, 6], report, seed=0)
    assert report.measures == 8
    assert math.isfinite(report.nll_sum) and report.nll_sum > 0
    assert 0 <= report.length_right <= 8
    assert report.real.notes > 0 and report.inpainted.notes > 0
    assert report.real.outside / report.real.notes < 0.2  # Bach keeps to the key
    assert report.holes == 1
    assert "| chorale | 0 | 1 | 8 |" in table({"chorale": report})


def test_the_neighbour_distance_of_real_measures_is_not_zero_and_an_octave_off_reads_far():
    grid = from_score(music21.corpus.parse("bach/bwv269"))
    low = transpose(grid, -12)
    real, octave = Tally(), Tally()
    hole = [5, 6]
    around = [m for m in range(hole[0] - NEIGHBOURS, hole[-1] + NEIGHBOURS + 1) if m not in hole]
    for p in range(grid.n_parts):
        for m in hole:
            neighbours = _range(grid, p, around)
            real.add(grid.cells[p][m], scale_of(0), neighbours)
            octave.add(low.cells[p][m], scale_of(0), neighbours)
    assert 0.5 < real.figures()["distance"] < 6  # a real part moves a few semitones about its context
    assert octave.figures()["distance"] > 8  # the same measures an octave down read as far off


def test_holes_are_drawn_at_seeded_places_or_tile_every_window():
    assert hole_starts(9, 0, 2, seed=0) == [1, 3, 5]  # columns 1-6 in holes; 0, 7 and 8 stay context
    assert hole_starts(8, 0, 2, seed=0) == [1, 3, 5]
    drawn = hole_starts(20, 3, 2, seed=4)
    assert drawn == sorted(drawn) and len(set(drawn)) == 3 and drawn == hole_starts(20, 3, 2, seed=4)
    assert all(1 <= start <= 17 for start in drawn)
    with pytest.raises(ValueError):
        hole_starts(3, 0, 2, seed=0)
