"""training.measure: settings from flags, exact resumption, the doubled-length test set, the ablation grid."""
import json
from fractions import Fraction

import music21
import pytest
import torch

from engine.measure.context import MeasureLM
from engine.measure.representation import from_score
from training import kit, measure
from training.kit import parse_setting
from training.measure import ROOT, doubled, read_config
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


def test_train_stopped_and_resumed_equals_one_run(tmp_path, monkeypatch):
    """Four chorales; a run stopped by its time budget after step 1 and rerun ends where an
    uninterrupted run does, bit for bit; the best model loads with `from_pretrained`."""
    pieces = [measure.Piece(name, name, split, measure.with_instruments(from_score(music21.corpus.parse(name), title=name), "names"))
              for name, split in (("bach/bwv66.6", "train"), ("bach/bwv1.6", "train"), ("bach/bwv10.7", "train"),
                                  ("bach/bwv101.7", "validation"))]
    monkeypatch.setattr(measure, "load_pieces", lambda: pieces)
    config = json.loads((ROOT / "training/configs/measure_tiny.json").read_text())
    config["train"] = {"steps": 4, "batch_size": 2, "max_columns": 3, "warmup": 2, "eval_every": 2, "eval_pieces": 1,
                       "checkpoint_every": 100, "log_every": 1}
    path = tmp_path / "measure.json"
    path.write_text(json.dumps(config))
    whole = kit.load_checkpoint(measure.train(path, tmp_path, overrides={"name": "whole"}) / kit.LAST)
    measure.train(path, tmp_path, overrides={"name": "split", "max_minutes": 1e-9})
    assert kit.load_checkpoint(tmp_path / "split" / kit.LAST)["step"] == 1
    split = kit.load_checkpoint(measure.train(path, tmp_path, overrides={"name": "split"}) / kit.LAST)
    assert split["step"] == whole["step"] == 4 and split["lr_sched"] == whole["lr_sched"]
    for key, value in whole["model"].items():
        assert torch.equal(value, split["model"][key]), key
    assert MeasureLM.from_pretrained(tmp_path / "split" / "best").config.kind == "csd"
