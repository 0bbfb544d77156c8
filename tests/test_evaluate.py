"""Evaluation metrics and the `python -m engine evaluate` table on a small built data set."""
import json
import subprocess
import sys
from pathlib import Path

import music21
import pytest
import torch

from engine.notagen.model import load_checkpoint
from engine.score.formats import read_score_file
from engine.score.notagen_abc import preprocess
from engine.scoring.evaluate import ReferenceSet, load_reference, perplexity, sheet_gt_row
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
            handle.write(json.dumps({
                "id": name, "split": split, "prompt": f"{period}_{composer}_{instrumentation}",
                "labels": {"period": period, "composer": composer, "instrumentation": instrumentation},
                "original_key": text.original_key, "interleaved": text.interleaved, "keys": dict(text.reduced),
            }) + "\n")
    (out / "pieces" / "shard-00000.done").write_text("{}", encoding="utf-8")
    return out


@pytest.fixture(scope="module")
def encoder(notagen_reference):
    return load_encoder(notagen_reference / "m3_tiny.pth")


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


def test_evaluate_without_data_says_how_to_build_it(notagen_reference, tmp_path):
    done = subprocess.run([sys.executable, "-m", "engine", "evaluate", "--encoder", str(notagen_reference / "m3_tiny.pth"),
                           "--data", str(tmp_path), "--out", str(tmp_path / "x.json")], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 1 and "training.data build" in done.stderr and "Traceback" not in done.stderr
