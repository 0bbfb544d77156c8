"""CLaMP-DPO: the DPOP loss, the preference pairs, and a whole tiny iteration on a small data set."""
import json
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from engine.notagen.generate import NotagenGenerator
from engine.scoring.evaluate import ScoredPiece, UnconvertedPiece
from tests.test_evaluate import data_dir  # noqa: F401 - the small built data set
from training.notagen_dpo import dpop_loss, preference_pairs

pytestmark = [pytest.mark.timeout(400), pytest.mark.usefixtures("one_torch_thread")]
ROOT = Path(__file__).resolve().parents[1]


def test_dpop_loss_is_log2_at_the_reference_and_penalizes_a_less_likely_chosen_piece():
    zero = torch.zeros(1)
    assert float(dpop_loss(zero, zero, zero, zero, 0.1, 10)) == pytest.approx(0.6931, abs=1e-4)
    # Rejected drops faster than chosen: plain DPO is content, DPOP is not (chosen lost likelihood).
    chosen, rejected = torch.tensor([-1.0]), torch.tensor([-5.0])
    assert float(dpop_loss(chosen, rejected, zero, zero, 0.1, 0)) < 0.6931
    assert float(dpop_loss(chosen, rejected, zero, zero, 0.1, 10)) > 0.6931


def _piece(prompt: str, score: float, misaligned: int = 0) -> ScoredPiece:
    return ScoredPiece(prompt, f"text {prompt} {score}", "abc", score, 0.5, True, True, misaligned, 4, True)


def test_preference_pairs_take_top_and_bottom_and_drop_ineligible_chosen():
    scored = [_piece("a", s / 10) for s in range(10)] + [_piece("b", 0.9, misaligned=1)] + [_piece("b", s / 10) for s in range(9)]
    pairs = preference_pairs(scored, 0.2, 64, random.Random(0))
    a = [p for p in pairs if p["prompt"] == "a"]
    assert len(a) == 4 and {p["chosen_score"] for p in a} == {0.9, 0.8} and {p["rejected_score"] for p in a} == {0.0, 0.1}
    b = [p for p in pairs if p["prompt"] == "b"]
    assert {p["chosen_score"] for p in b} == {0.8}  # the top piece of b has a misaligned bar
    assert not _piece("c", 0.5).chosen_eligible(plagiarism=0.4)
    assert _piece("c", 0.5, misaligned=1).chosen_eligible(max_misaligned_share=0.25)


def test_unconverted_pieces_are_rejected_before_any_scored_piece():
    scored = [_piece("a", s / 10) for s in range(8)]
    unconverted = [UnconvertedPiece("a", "broken", "does not convert"), UnconvertedPiece("b", "lonely", "does not convert")]
    pairs = preference_pairs(scored, 0.2, 64, random.Random(0), unconverted=unconverted)
    # 10 pieces of "a": the top 2 scored are chosen, the bottom 2 are the unconverted one and the lowest scored;
    # "b" has no scored piece, so nothing can be chosen.
    assert {p["prompt"] for p in pairs} == {"a"} and len(pairs) == 4
    assert {p["chosen_score"] for p in pairs} == {0.7, 0.6}
    assert {(p["rejected"], p["rejected_score"]) for p in pairs} == {("broken", None), ("text a 0.0", 0.0)}


def test_one_dpo_iteration_end_to_end(notagen_reference, data_dir, tmp_path):  # noqa: F811
    config = {"name": "dpo_test", "model": str(notagen_reference / "tiny_notagen_trained_fp16.pth"),
              "encoder": str(notagen_reference / "m3_tiny.pth"), "data": str(data_dir), "out": str(tmp_path),
              "iterations": 1, "min_references": 1, "pieces_per_prompt": 4, "max_bars": 2, "fraction": 0.25,
              "lr": 1e-4, "max_pairs_per_prompt": 4,
              "plagiarism": 1.0, "max_misaligned_share": 1.0}  # a random tiny encoder and model: every piece
    # is close to some reference and may have misaligned bars; the filters are tested above
    path = tmp_path / "dpo.json"
    path.write_text(json.dumps(config))
    command = [sys.executable, "-m", "training.notagen", "dpo", "--config", str(path)]
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    run = tmp_path / "dpo_test"
    table = (run / "metrics.md").read_text()
    assert "| sheet-GT | - |" in table and "| NotaGen | 0 |" in table and "| NotaGen | 1 |" in table
    finished = json.loads((run / "iter_1" / "done.json").read_text())
    samples = [json.loads(line) for line in (run / "samples_0.jsonl").read_text().splitlines()]
    assert len(samples) == finished["row_before"]["convert"] * 8 and {"clamp_score", "abc"} <= set(samples[0])
    pairs = [json.loads(line) for line in (run / "iter_1" / "preferences.jsonl").read_text().splitlines()]
    assert finished["training"]["pairs"] == len(pairs) > 0 and finished["training"]["steps"] == len(pairs)
    assert all(p["rejected_score"] is None or p["chosen_score"] >= p["rejected_score"] for p in pairs)
    trained = NotagenGenerator.load(run / "iter_1" / "model").model
    assert sum(p.numel() for p in trained.parameters()) > 0
    # A rerun resumes: iteration 1 is not repeated (only the final evaluation row is sampled again).
    again = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert again.returncode == 0 and "iteration 1:" not in again.stdout
    assert (run / "iter_1" / "done.json").read_text() == json.dumps(finished, indent=1) + "\n"
