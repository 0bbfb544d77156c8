"""The musical-fit report of inpainted measures (training.measure_fit)."""

import math
from fractions import Fraction

import music21
import pytest
import torch

from engine.measure.cells import Cell, ChordEvent, Note, Pitch
from engine.measure.context import MeasureLM
from engine.measure.representation import from_score
from tests.test_measure_model import tiny_config
from training.measure_fit import KindReport, Tally, fit_hole, scale_of, table


def test_a_tally_counts_onsets_outside_the_key_distance_and_density():
    c, f_sharp, g = Pitch.parse("C5"), Pitch.parse("F#5"), Pitch.parse("G5")
    voice = (ChordEvent((Note(c), Note(f_sharp)), Fraction(1)), ChordEvent((Note(c, tie=True), Note(g)), Fraction(1)),
             ChordEvent((), Fraction(1)), ChordEvent((), Fraction(1), pad=True))
    tally = Tally()
    tally.add(Cell(Fraction(1), 4, (voice,)), scale_of(0), neighbours=(60, 70))
    # onsets: C, F#, G (the tied C is no onset); F# is outside C major; 2 onset events in 3 beats of content
    assert (tally.notes, tally.outside, tally.onsets, tally.beats) == (3, 1, 2, 3.0)
    mean = (c.midi + f_sharp.midi + c.midi + g.midi) / 4
    assert tally.figures() == pytest.approx({"chromatic": 1 / 3, "distance": mean - 70, "density": 2 / 3})
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
    assert "| chorale | 0 | 8 |" in table({"chorale": report})
