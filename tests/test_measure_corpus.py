"""The measure model on the whole corpus: instrument classes, key signatures as context, the grid
builder (training.measure_data) and training on its grids."""
import json
import pickle
from types import SimpleNamespace

import music21
import pytest
import torch

from engine.measure.cells import MeasureScore, Part
from engine.measure.context import MeasureLM, grid_layout_for, key_index
from engine.measure.instruments import CLASSES, class_vocabulary, row_instruments
from engine.measure.model import MeasureConfig
from engine.measure.representation import from_score, transpose
from training import kit, measure, measure_data
from training.measure import ROOT


def _grid(*parts: tuple[str, str]) -> MeasureScore:
    from engine.measure.cells import normalise_instrument

    return MeasureScore(tuple(Part(name, normalise_instrument(name), clef=clef) for name, clef in parts), (), ())


@pytest.mark.parametrize("parts, classes", [
    ((("Voice", "G2+0"), ("Piano", "G2+0"), ("Piano", "F4+0")), ["voice", "keyboard_upper", "keyboard_lower"]),
    ((("Singstimme\nVoice", "G2+0"), ("Pianoforte", "G2+0"), ("Pianoforte", "G2+0")), ["voice", "keyboard_upper", "keyboard_lower"]),
    ((("Soprano", "G2+0"), ("Klavier", "G2+0"), ("Klavier", "F4+0")), ["voice", "keyboard_upper", "keyboard_lower"]),
    ((("Violin I", "G2+0"), ("Violin II", "G2+0"), ("Viola", "C3+0"), ("Violoncello", "F4+0")), ["violin", "violin", "viola", "cello"]),
    ((("", "G2+0"), ("", "G2+0"), ("", "G2-1"), ("", "F4+0")), ["soprano", "alto", "tenor", "bass"]),
    ((("Cantus", "G2+0"), ("Altus", "C3+0"), ("Tenor", "G2-1"), ("Bassus", "F4+0")), ["soprano", "alto", "tenor", "bass"]),
    ((("Organ", "F4+0"), ("Theremin", "G2+0"), ("Contrabass", "F4+0")), ["keyboard_lower", "other", "double_bass"]),
])
def test_parts_in_any_language_map_to_the_instrument_classes(parts, classes):
    assert row_instruments(_grid(*parts), "classes") == classes
    assert set(classes) <= set(CLASSES)


def test_the_chorale_models_names_scheme_is_unchanged():
    assert row_instruments(_grid(("", ""), ("", ""), ("", ""), ("", "")), "names") == ["soprano", "alto", "tenor", "bass"]
    assert row_instruments(_grid(("S", ""), ("Violin I", "")), "names") == ["soprano", "violin"]
    assert class_vocabulary((-1, 1))[:4] == ("<unk>", "soprano_shifted-1", "soprano", "soprano_shifted+1")


def _outside_the_key(grid: MeasureScore) -> int:
    from training.measure_fit import scale_of

    return sum(n.pitch.midi % 12 not in scale_of(grid.columns[m].key_sharps) for row in grid.cells
               for m, cell in enumerate(row) for voice in cell.voices for e in voice for n in e.chord)


@pytest.mark.parametrize("name", ["bach/bwv66.6", "bach/bwv10.7"])
def test_transposition_moves_the_key_signature_with_the_notes(name):
    grid = from_score(music21.corpus.parse(name))
    outside = _outside_the_key(grid)
    for semitones in range(-5, 7):
        moved = transpose(grid, semitones)
        assert _outside_the_key(moved) == outside, semitones
        assert all(-7 <= c.key_sharps <= 7 for c in moved.columns)
    assert {c.key_sharps for c in transpose(grid, 7).columns} == {c.key_sharps + 1 for c in grid.columns}


def test_a_model_with_key_context_hears_the_key_and_saves_it(tmp_path):
    from tests.test_measure_model import tiny_config

    torch.manual_seed(0)
    config = MeasureConfig.from_dict({**tiny_config().to_dict(), "key_context": True})
    model = MeasureLM(config).eval()
    grid = from_score(music21.corpus.parse("bach/bwv66.6"))
    cells = [list(row[:3]) for row in grid.cells]
    outputs = []
    for keys in ([3, 3, 3], [-2, -2, -2]):
        layout, _ = grid_layout_for(config, cells, ["soprano", "alto", "tenor", "bass"], keys)
        outputs.append(model.context.position(layout))
    assert not torch.allclose(*outputs)
    model.save_pretrained(tmp_path)
    loaded = MeasureLM.from_pretrained(tmp_path)
    assert loaded.config.key_context and torch.equal(loaded.context.column_key.weight, model.context.column_key.weight)


def _refs(names):
    return [SimpleNamespace(id=f"music21/{name}", path=str(music21.corpus.getWork(name)), work=name, split=split)
            for name, split in names]


def test_the_grid_builder_resumes_and_keeps_what_a_kill_cut_short(tmp_path, monkeypatch):
    names = [("bach/bwv66.6", "train"), ("bach/bwv1.6", "train"), ("bach/bwv101.7", "validation")]
    monkeypatch.setattr(measure_data, "refs_of", lambda kind, corpora=None: _refs(names))
    measure_data.build(("choral",), directory=tmp_path, limit=2)
    shard = tmp_path / "choral-0.pkl"
    first = [p.name for p in measure_data.load_corpus(("choral",), tmp_path)]
    assert len(first) == 2
    measure_data.build(("choral",), directory=tmp_path)  # only the third is read now
    pieces = measure_data.load_corpus(("choral",), tmp_path)
    assert [p.name for p in pieces][:2] == first and {p.kind for p in pieces} == {"choral"}
    assert sorted(p.name for p in pieces) == sorted(f"music21/{name}" for name, _ in names)
    assert all(p.grid.n_parts >= 4 for p in pieces)
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) - 100])  # a build killed while writing its last piece
    assert [p.name for p in measure_data.read_pieces(shard)] == first
    assert "| choral | 2 |" in measure_data.report(tmp_path)


def test_training_on_corpus_grids_uses_the_class_vocabulary(tmp_path, monkeypatch):
    names = [("bach/bwv66.6", "train"), ("bach/bwv1.6", "train"), ("bach/bwv101.7", "validation"), ("bach/bwv10.7", "test")]
    monkeypatch.setattr(measure_data, "refs_of", lambda kind, corpora=None: _refs(names))
    monkeypatch.setattr(measure_data, "GRIDS", tmp_path / "grids")
    measure_data.build(("choral",))
    config = json.loads((ROOT / "training/configs/measure_corpus.json").read_text())
    config["train"].update({"steps": 2, "batch_size": 2, "max_columns": 3, "warmup": 1, "eval_every": 2, "eval_pieces": 1,
                            "checkpoint_every": 100, "log_every": 1, "threads": 1})
    path = tmp_path / "measure.json"
    path.write_text(json.dumps(config))
    run = measure.train(path, tmp_path, overrides={"name": "corpus"})
    model = MeasureLM.from_pretrained(run / "best")
    assert model.config.instrument_scheme == "classes" and model.config.key_context
    assert model.config.instruments == class_vocabulary(tuple(config["train"].get("shifts", (-5, 6))))
    assert kit.load_checkpoint(run / kit.LAST)["step"] == 2
    metrics = measure.evaluate(run / "best", data="corpus", length_cells=4)
    assert metrics["test_pieces"] == 1 and metrics["nll"] > 0


def test_kinds_are_sampled_by_the_square_root_of_their_size():
    grid = SimpleNamespace(n_columns=100)
    pieces = [measure.Piece("a", "a", "train", grid, "choral")] * 16 + [measure.Piece("b", "b", "train", grid, "quartet")]
    assert measure.kind_weights(pieces) == {"choral": 40.0, "quartet": 10.0}
    assert pickle.loads(pickle.dumps(pieces[0])).kind == "choral"


def test_a_snapped_odd_duration_becomes_tied_parts_the_model_can_write():
    from fractions import Fraction

    from engine.measure.cells import duration_exponents
    from engine.measure.measure_cells import _binary_parts

    for units in range(1, 96):
        parts = _binary_parts(Fraction(units, 48))
        assert sum(parts) == Fraction(units, 48) and parts == sorted(parts, reverse=True)
        for part in parts:
            duration_exponents(part)


@pytest.mark.skipif(not measure_data.CORPORA.is_dir(), reason="the shared corpora are not here")
def test_a_song_with_odd_tuplets_reads_into_durations_the_model_can_write():
    from engine.measure.batch import make_batch
    from engine.measure.representation import from_document
    from engine.score.formats import read_score_file

    path = measure_data.CORPORA / "openscore-lieder/scores/Lehmann_Liza__Songs_of_Love_and_Spring_9_My_Secret__lc6764874.mxl"
    grid = from_document(read_score_file(path))
    assert any("snapped" in loss for loss in grid.losses)
    make_batch([cell for row in grid.cells for cell in row], ["other", "1/2", "1", "3/2", "2", "3"])  # raised on 47/48
