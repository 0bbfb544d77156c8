"""Evaluation metrics and the `python -m engine evaluate` table on a small built data set and on the reference
saved from it (the shipped reference's format)."""
import json
import subprocess
import sys
from pathlib import Path

import music21
import pytest
import torch

from engine.errors import ModelError
from engine.notagen.model import load_checkpoint
from engine.score.bae import bar_alignment
from engine.score.formats import read_score_file
from engine.score.notagen_abc import preprocess
from engine.scoring.evaluate import SHIPPED_REFERENCE, ReferenceSet, load_reference, perplexity, sheet_gt_row
from engine.scoring.metrics import LinearProbe, instrument_staves_adjacent, max_similarity
from engine.scoring.model import load_encoder

pytestmark = [pytest.mark.timeout(300), pytest.mark.usefixtures("one_torch_thread")]
ROOT = Path(__file__).resolve().parents[1]
BACH = ("Baroque", "Bach, Johann Sebastian", "Choral")
PALESTRINA = ("Renaissance", "Palestrina, Giovanni Pierluigi da", "Choral")
PIECES = [("bach/bwv66.6", BACH, "train"), ("bach/bwv1.6", BACH, "train"), ("bach/bwv10.7", BACH, "validation"),
          ("bach/bwv101.7", BACH, "test"), ("palestrina/Agnus_01", PALESTRINA, "train"),
          ("palestrina/Agnus_02", PALESTRINA, "train"), ("palestrina/Agnus_03", PALESTRINA, "test")]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    """Seven labelled pieces of two prompts in one complete shard, in the data builder's format."""
    out = tmp_path_factory.mktemp("evaluate_data")
    (out / "pieces").mkdir()
    with open(out / "pieces" / "shard-00000.jsonl", "w", encoding="utf-8") as handle:
        for name, (period, composer, instrumentation), split in PIECES:
            text = preprocess(read_score_file(music21.corpus.getWork(name)).musicxml)
            alignment = bar_alignment(text.interleaved)
            handle.write(json.dumps({
                "id": name, "split": split, "prompt": f"{period}_{composer}_{instrumentation}",
                "labels": {"period": period, "composer": composer, "instrumentation": instrumentation},
                "original_key": text.original_key, "interleaved": text.interleaved, "keys": dict(text.reduced),
                "bars": alignment.bars, "misaligned_bars": alignment.misaligned,
            }) + "\n")
    (out / "pieces" / "shard-00000.done").write_text("{}", encoding="utf-8")
    return out


@pytest.fixture(scope="module")
def encoder(notagen_reference):
    return load_encoder(notagen_reference / "m3_tiny.pth")


@pytest.fixture(scope="module")
def saved_reference(data_dir, encoder, tmp_path_factory) -> Path:
    """The small data set's reference as `python -m engine.scoring.reference` saves it."""
    out = tmp_path_factory.mktemp("reference")
    ReferenceSet.build(data_dir, encoder, cache_dir=out / "cache").save(out)
    return out


def test_reference_set_caches_features_and_scores_the_test_pieces(data_dir, encoder, tmp_path):
    pieces = load_reference(data_dir)
    assert [p.split for p in pieces].count("test") == 2 and pieces[0].text.startswith("%Baroque\n%Bach")
    reference = ReferenceSet.build(data_dir, encoder, cache_dir=tmp_path)
    assert reference.features.shape == (7, 64) and len(list(tmp_path.glob("*.pt"))) == 1
    again = ReferenceSet.build(data_dir, encoder, cache_dir=tmp_path)
    assert torch.equal(again.features, reference.features)
    assert reference.prompts(min_train=2) == ["Baroque_Bach, Johann Sebastian_Choral", "Renaissance_Palestrina, Giovanni Pierluigi da_Choral"]
    row = sheet_gt_row(reference, reference.prompts())
    assert row.pieces == 2 and -1 <= row.acs <= 1 and row.la_instrumentation == 1.0 and 0 <= row.bae < 100


def test_saved_reference_keeps_features_labels_and_bar_counts_without_texts(data_dir, encoder, saved_reference):
    built = ReferenceSet.build(data_dir, encoder, cache_dir=saved_reference / "cache")
    loaded = ReferenceSet.load(saved_reference, encoder)
    assert loaded.digest == built.digest and loaded.features.dtype == torch.float32
    torch.testing.assert_close(loaded.features, built.features, atol=2e-2, rtol=1e-2)
    assert all(p.text is None and p.interleaved is None for p in loaded.pieces)
    assert [(p.id, p.split, p.prompt, p.bars, p.misaligned_bars) for p in loaded.pieces] == \
        [(p.id, p.split, p.prompt, p.bars, p.misaligned_bars) for p in built.pieces]
    assert loaded.period_probe.predict(built.features) == built.period_probe.predict(built.features)
    prompts = built.prompts()
    row, expected = sheet_gt_row(loaded, prompts), sheet_gt_row(built, prompts)
    assert (row.pieces, row.la_period, row.la_instrumentation, row.bae) == \
        (expected.pieces, expected.la_period, expected.la_instrumentation, expected.bae)
    assert row.acs == pytest.approx(expected.acs, abs=1e-2)


def test_saved_reference_refuses_another_encoder(saved_reference):
    with pytest.raises(ModelError, match="computed by another encoder.*engine.scoring.reference"):
        ReferenceSet.load(saved_reference, load_encoder(SHIPPED_REFERENCE))


def test_shipped_reference_matches_the_shipped_encoder():
    reference = ReferenceSet.load(SHIPPED_REFERENCE, load_encoder(SHIPPED_REFERENCE))
    assert reference.features.shape == (len(reference.pieces), 128) and len(reference.prompts(min_train=5)) >= 10
    assert {p.split for p in reference.pieces} == {"train", "validation", "test"}
    assert sum(path.stat().st_size for path in SHIPPED_REFERENCE.glob("reference.*")) < 4_000_000


def test_linear_probe_separates_separable_features():
    torch.manual_seed(0)
    features = torch.cat([torch.randn(20, 8) + 3, torch.randn(20, 8) - 3])
    labels = ["a"] * 20 + ["b"] * 20
    probe = LinearProbe.fit(features, labels)
    assert probe.accuracy(features, labels) == 1.0 and probe.predict(torch.full((1, 8), 3.0)) == ["a"]
    assert probe.accuracy(features[:0], []) is None


def test_plagiarism_and_staff_adjacency_checks():
    reference = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    assert max_similarity(torch.tensor([[2.0, 0.0], [1.0, 1.0]]), reference).tolist() == pytest.approx([1.0, 0.7071], abs=1e-4)
    piano_then_violin = 'V:1 treble nm="Piano"\nV:2 bass\nV:3 treble nm="Violin"\n'
    split_piano = 'V:1 treble nm="Piano"\nV:2 treble nm="Violin"\nV:3 bass nm="Piano"\n'
    assert instrument_staves_adjacent(piano_then_violin) and not instrument_staves_adjacent(split_piano)


def test_perplexity_is_the_exponent_of_the_mean_char_loss(notagen_reference, data_dir):
    model, _ = load_checkpoint(notagen_reference / "tiny_notagen_trained_fp16.pth")
    texts = [p.text for p in load_reference(data_dir)][:2]
    value = perplexity(model.float().eval(), texts, batch_size=1)
    assert 1.0 < value < 128.0
    assert perplexity(model, []) is None


def test_evaluate_command_writes_the_table(notagen_reference, data_dir, tmp_path):
    out = tmp_path / "eval.json"
    done = subprocess.run(
        [sys.executable, "-m", "engine", "evaluate", "--checkpoint", str(notagen_reference / "tiny_notagen_trained_fp16.pth"),
         "--encoder", str(notagen_reference / "m3_tiny.pth"), "--data", str(data_dir), "-n", "2", "--max-bars", "2",
         "--min-references", "1", "--threads", "1", "--out", str(out)], capture_output=True, text=True, cwd=ROOT, timeout=240)
    assert done.returncode == 0, done.stderr
    result = json.loads(out.read_text())
    names = [row["name"] for row in result["rows"]]
    assert names[0] == "sheet-GT" and result["rows"][1]["pieces"] == 2 * len(result["prompts"])
    model = result["rows"][1]
    assert model["ppl"] > 1 and 0 <= model["convert"] <= 1
    assert all(-1 <= piece["clamp_score"] <= 1 for piece in result["pieces"])
    table = out.with_suffix(".md").read_text()
    assert table.startswith("| Models & Data | K | ACS |") and "| sheet-GT | - |" in table and "| sheet-GT |" in done.stdout


def test_evaluate_command_on_a_saved_reference_reports_no_ppl(notagen_reference, saved_reference, tmp_path):
    out = tmp_path / "eval.json"
    done = subprocess.run(
        [sys.executable, "-m", "engine", "evaluate", "--checkpoint", str(notagen_reference / "tiny_notagen_trained_fp16.pth"),
         "--encoder", str(notagen_reference / "m3_tiny.pth"), "--reference", str(saved_reference), "-n", "2",
         "--max-bars", "2", "--min-references", "1", "--threads", "1", "--out", str(out)],
        capture_output=True, text=True, cwd=ROOT, timeout=240)
    assert done.returncode == 0, done.stderr
    result = json.loads(out.read_text())
    sheet_gt, model = result["rows"]
    assert result["reference"] == str(saved_reference) and sheet_gt["pieces"] == 2 and sheet_gt["bae"] is not None
    assert model["ppl"] is None and model["pieces"] == 2 * len(result["prompts"])
    assert "PPL not measured" in out.with_suffix(".md").read_text() and "PPL not measured" in done.stdout


def test_evaluate_without_data_refuses_the_shipped_reference_for_another_encoder(notagen_reference, tmp_path):
    done = subprocess.run([sys.executable, "-m", "engine", "evaluate", "--encoder", str(notagen_reference / "m3_tiny.pth"),
                           "--out", str(tmp_path / "x.json")], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 1 and "computed by another encoder" in done.stderr and "Traceback" not in done.stderr


def test_evaluate_without_data_says_how_to_build_it(notagen_reference, tmp_path):
    done = subprocess.run([sys.executable, "-m", "engine", "evaluate", "--encoder", str(notagen_reference / "m3_tiny.pth"),
                           "--data", str(tmp_path), "--out", str(tmp_path / "x.json")], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 1 and "training.data build" in done.stderr and "Traceback" not in done.stderr
