"""training.measure: settings from flags, the doubled-length test set, the ablation grid."""
from fractions import Fraction

import music21
import pytest

from engine.measure.representation import from_score
from training.measure import ROOT, doubled, parse_setting, read_config
from training.measure_ablation import all_variants, table1_variants, table2_variants


def test_settings_override_either_section():
    model, train = read_config(ROOT / "training/configs/measure_tiny.json",
                               dict([parse_setting("kind=concurrent"), parse_setting("position_signal=false"),
                                     parse_setting("steps=12"), parse_setting("key_function=skewgauss")]))
    assert model["kind"] == "concurrent" and model["position_signal"] is False and model["key_function"] == "skewgauss"
    assert train.steps == 12
    with pytest.raises(ValueError, match="unknown setting"):
        read_config(ROOT / "training/configs/measure_tiny.json", {"no_such_thing": 1})


def test_doubled_measures_repeat_every_voice():
    grid = from_score(music21.corpus.parse("bach/bwv66.6"))
    twice = doubled(grid)
    for row, row2 in zip(grid.cells, twice.cells):
        for cell, cell2 in zip(row, row2):
            assert cell2.n_beats == 2 * cell.n_beats
            for voice, voice2 in zip(cell.voices, cell2.voices):
                assert voice2 == voice + voice
                assert sum((e.duration for e in voice2), Fraction(0)) == 2 * cell.n_beats


def test_ablation_grid_is_the_papers():
    assert len(table1_variants()) == 8  # 4 key functions x 2 readers
    assert {v.task for v in table2_variants("single")} == {"single"}
    assert len(table2_variants("concurrent")) == 6
    names = [v.name for v in all_variants()]
    assert len(names) == len(set(names)) == 18  # table 2's concurrent "+pos" rows are table 1's
