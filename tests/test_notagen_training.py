"""NotaGen training (`training/notagen.py`): pre-training, fine-tuning, exact resume, checkpoints, export.

The data set is made here: four Bach chorales from the music21 corpus, through the official
preprocessing (`engine.score.notagen_abc.preprocess`, all 15 keys), written as one shard in the data
builder's format (docs/datasets.md). The model is the reference fixtures' tiny size (64 patches,
so the chorales are longer than the context and the stream cut runs).
"""
import json
import math
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import music21
import pytest
import torch

from engine.notagen.config import NotagenConfig
from engine.notagen.model import NotagenModel, load_checkpoint
from engine.score.formats import read_score_file
from engine.score.notagen_abc import KEYS, preprocess
from training import kit, notagen
from training.notagen_data import (
    NotagenDataset,
    build_index,
    complete_shards,
    finetune_key,
    finetune_key_distribution,
    select,
)

pytestmark = [pytest.mark.timeout(180), pytest.mark.usefixtures("one_torch_thread")]

ROOT = Path(__file__).resolve().parents[1]
CHORALES = ("bach/bwv66.6", "bach/bwv1.6", "bach/bwv10.7", "bach/bwv101.7")
LABELS = {"period": "Baroque", "composer": "Bach, Johann Sebastian", "instrumentation": "Choral"}
PROMPT_LINES = "%Baroque\n%Bach, Johann Sebastian\n%Choral\n"


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    """8 training pieces (6 labelled) and 2 validation pieces, in one complete shard."""
    converted = []
    for name in CHORALES:
        text = preprocess(read_score_file(music21.corpus.getWork(name)).musicxml)
        converted.append((name, text))
    records = []
    layout = [(0, "train", True), (1, "train", True), (2, "train", True), (3, "train", True), (0, "train", True),
              (1, "train", True), (2, "train", False), (3, "train", False), (2, "validation", True), (3, "validation", True)]
    for number, (which, split, labelled) in enumerate(layout):
        name, text = converted[which]
        records.append({
            "id": f"test/{name}#{number}", "source": "test", "title": name, "work": f"test/{name}#{number}", "split": split,
            "labels": LABELS if labelled else None, "prompt": "Baroque_Bach, Johann Sebastian_Choral" if labelled else None,
            "original_key": text.original_key, "interleaved": text.interleaved, "keys": dict(text.reduced),
            "bars": 0, "misaligned_bars": 0,
        })
    out = tmp_path_factory.mktemp("notagen_data")
    (out / "pieces").mkdir()
    with open(out / "pieces" / "shard-00000.jsonl", "w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record) + "\n")
    (out / "pieces" / "shard-00000.done").write_text("{}", encoding="utf-8")
    # An unfinished shard of the builder: never read.
    (out / "pieces" / "shard-00001.jsonl.tmp").write_text("garbage", encoding="utf-8")
    return out


@pytest.fixture(scope="module")
def config_path(tmp_path_factory, data_dir) -> Path:
    stage = {"batch_size": 1, "grad_accum": 2, "lr": 3e-3, "warmup": 2, "schedule": "linear", "epochs": 3,
             "max_steps": 6, "eval_every": 2, "save_every": 0, "log_every": 1, "seed": 3, "threads": 1}
    config = {"name": "test_tiny", "model": {"preset": "tiny"}, "data": {"dir": str(data_dir)},
              "pretrain": {**stage, "out": "unused"}, "finetune": {**stage, "out": "unused", "lr": 1e-3}}
    path = tmp_path_factory.mktemp("notagen_config") / "notagen_test.json"
    path.write_text(json.dumps(config), encoding="utf-8")
    return path


def _metrics(run: Path, kind: str = "train") -> list[dict]:
    lines = (run / kit.METRICS).read_text(encoding="utf-8").splitlines()
    return [record for record in map(json.loads, lines) if record["kind"] == kind]


def _run(*args: str) -> None:
    assert notagen.main([*args, "--no-progress"]) == 0


# ---------------------------------------------------------------------------------------------- data


def test_finetune_key_distribution():
    dist = finetune_key_distribution("F#min")  # -> A (pitch class 9): 6..12 = F#/Gb, G, Ab, A, Bb, B/Cb, C
    assert math.isclose(sum(dist.values()), 1.0)
    assert dist["A"] == 4 / 16 and dist["Ab"] == dist["Bb"] == 3 / 16 and dist["G"] == dist["B"] + dist["Cb"] == 2 / 16
    assert dist["F#"] == dist["Gb"] == 1 / 32 and dist["C"] == 1 / 16
    assert math.isclose(dist["B"], 0.8 * 2 / 16)
    rng = random.Random(0)
    counts = Counter(finetune_key("F#min", KEYS, rng) for _ in range(20000))
    assert set(counts) == set(dist)
    for key, p in dist.items():
        assert abs(counts[key] / 20000 - p) < 0.015, key
    # An unknown key, or a key that was not built, falls back to the available keys.
    assert finetune_key(None, ("C", "G"), rng) in ("C", "G")
    assert finetune_key("A", ("C",), rng) == "C"


def test_dataset_items(data_dir):
    shards = complete_shards(data_dir)
    assert [shard["name"] for shard in shards] == ["shard-00000.jsonl"]
    entries = build_index(data_dir, shards)
    assert len(select(entries, "pretrain", "train")) == 8
    assert len(select(entries, "finetune", "train")) == 6
    assert len(select(entries, "finetune", "validation")) == 2

    pre = NotagenDataset(data_dir, select(entries, "pretrain", "train"), "pretrain", patch_length=64, seed=1)
    fine = NotagenDataset(data_dir, select(entries, "finetune", "train"), "finetune", patch_length=64, seed=1)
    reader = pre.reader
    keys_seen = Counter()
    for epoch in range(6):
        pre.set_epoch(epoch)
        fine.set_epoch(epoch)
        for i in range(len(fine)):
            record = reader.read(fine.entries[i])
            text = fine.text(i)
            assert text.startswith(PROMPT_LINES)  # the prompt lines before the piece
            allowed = finetune_key_distribution(record["original_key"])
            assert text[len(PROMPT_LINES):] in {record["keys"][key] for key in allowed}
            pre_text = pre.text(i)
            assert not pre_text.startswith("%Baroque")
            keys_seen.update(key for key, body in reader.read(pre.entries[i])["keys"].items() if body == pre_text)
            # Long pieces are cut to the context; the BOS patch and the header stay in front.
            patches = fine[i]
            assert patches.shape[1] == 16 and patches.shape[0] <= 64
            assert patches[0].tolist() == [1] * 15 + [2]
            assert "".join(map(chr, patches[1:4].flatten().tolist())).startswith("%Baroque")
            assert torch.equal(patches, fine[i])  # deterministic per (seed, epoch, piece)
    assert len(keys_seen) >= 12  # pre-training draws from all 15 keys
    fine.set_epoch(0)
    a = [fine.text(i) for i in range(len(fine))]
    fine.set_epoch(1)
    assert a != [fine.text(i) for i in range(len(fine))]


# -------------------------------------------------------------------------------- pretrain + resume


def test_pretrain_resume_is_exact(config_path, tmp_path):
    whole, split = tmp_path / "whole", tmp_path / "split"
    _run("pretrain", "--config", str(config_path), "--out", str(whole))
    # Interrupted after step 5 (mid-epoch: 8 pieces, 2 per step), then resumed by the same command.
    _run("pretrain", "--config", str(config_path), "--out", str(split), "--stop-at-step", "5")
    first = _metrics(split)
    assert [record["step"] for record in first] == [1, 2, 3, 4, 5]
    assert not (split / notagen.FINAL).exists()
    state = torch.load(split / kit.LAST, map_location="cpu", weights_only=True)
    assert (state["global_step"], state["epoch"], state["step_in_epoch"]) == (5, 1, 1)
    _run("pretrain", "--config", str(config_path), "--out", str(split))

    ref = {r["step"]: r for r in _metrics(whole)}
    got = {r["step"]: r for r in _metrics(split)}
    assert sorted(ref) == sorted(got) == [1, 2, 3, 4, 5, 6]
    for step in range(1, 7):
        assert got[step]["loss"] == ref[step]["loss"], step  # bitwise
        assert got[step]["lr"] == ref[step]["lr"]
    assert [r["eval_loss"] for r in _metrics(split, "eval")] == [r["eval_loss"] for r in _metrics(whole, "eval")]
    a = torch.load(whole / kit.LAST, weights_only=True)["model"]
    b = torch.load(split / kit.LAST, weights_only=True)["model"]
    assert all(torch.equal(a[key], b[key]) for key in a)
    # The loss goes down on this tiny set (lr 3e-3): training does something.
    assert ref[6]["loss"] < ref[1]["loss"]

    # Checkpoints: the official keys, weights_only loading, RNG states as tensors / plain types.
    for name in (kit.LAST, notagen.BEST):
        checkpoint = torch.load(whole / name, map_location="cpu", weights_only=True)
        assert set(notagen.OFFICIAL_KEYS) <= set(checkpoint)
        model = NotagenModel(NotagenConfig.preset("tiny"))
        model.load_state_dict(checkpoint["model"], strict=True)
    last = torch.load(whole / kit.LAST, weights_only=True)
    assert (last["epoch"], last["step_in_epoch"], last["global_step"], last["lr_sched"]["last_epoch"]) == (1, 2, 6, 6)
    evals = _metrics(whole, "eval")
    assert [r["step"] for r in evals] == [2, 4, 6]  # every 2 steps, at each epoch end (4) and at the end
    best = min(evals, key=lambda r: r["eval_loss"])
    assert last["min_eval_loss"] == best["eval_loss"] and last["best_step"] == best["step"]
    assert all(math.isclose(r["eval_ppl"], math.exp(r["eval_loss"])) for r in evals)
    assert (whole / "tb").is_dir() and any((whole / "tb").iterdir())

    # The final model (the best one) as safetensors + config.json, and an fp16 export.
    final = NotagenModel.from_pretrained(whole / notagen.FINAL)
    best_state = torch.load(whole / notagen.BEST, weights_only=True)["model"]
    assert all(torch.equal(final.state_dict()[key], best_state[key]) for key in best_state)
    _run_export = notagen.main(["export", "--checkpoint", str(whole / notagen.BEST), "--out", str(tmp_path / "fp16"), "--fp16"])
    assert _run_export == 0
    half = NotagenModel.from_pretrained(tmp_path / "fp16")
    assert half.patch_level_decoder.patch_embedding.weight.dtype == torch.float32
    size = (tmp_path / "fp16" / "model.safetensors").stat().st_size
    assert size < 0.6 * (whole / notagen.FINAL / "model.safetensors").stat().st_size
    patches = torch.randint(3, 128, (1, 8, 16))
    masks = torch.ones(1, 8, dtype=torch.long)
    with torch.no_grad():
        assert abs(float(half(patches, masks)) - float(final(patches, masks))) < 1e-2


def test_killed_run_resumes_exactly(config_path, tmp_path):
    """A real SIGTERM mid-run: the process saves last.pt and exits; the same command continues."""
    run = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "training.notagen", "pretrain", "--config", str(config_path), "--out", str(run),
               "--no-progress", "--max-steps", "400", "--set", "eval_every=0", "--set", "epochs=1000"]
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        if (run / kit.METRICS).exists() and len(_metrics(run)) >= 3:
            break
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    output = process.communicate(timeout=60)[0].decode()
    assert process.returncode == 0, output
    state = torch.load(run / kit.LAST, weights_only=True)
    stopped = state["global_step"]
    assert 3 <= stopped < 400, output
    assert "signal" in output
    # Resume and go a little further than the stop; compare with an uninterrupted run to the same step.
    target = stopped + 3
    _run("pretrain", "--config", str(config_path), "--out", str(run), "--max-steps", "400", "--set", "eval_every=0",
         "--set", "epochs=1000", "--stop-at-step", str(target))
    whole = tmp_path / "whole"
    _run("pretrain", "--config", str(config_path), "--out", str(whole), "--max-steps", "400", "--set", "eval_every=0",
         "--set", "epochs=1000", "--stop-at-step", str(target))
    got = {r["step"]: r["loss"] for r in _metrics(run)}
    ref = {r["step"]: r["loss"] for r in _metrics(whole)}
    assert sorted(got) == sorted(ref) == list(range(1, target + 1))
    assert got == ref


# ------------------------------------------------------------------------------------------ finetune


def test_finetune_from_official_checkpoint(config_path, notagen_reference, tmp_path):
    official = notagen_reference / "tiny_notagen.pth"
    reference, config = load_checkpoint(official)

    # lr 0: the model that comes out is the official one, so --init loaded it (strictly, all weights).
    frozen = tmp_path / "frozen"
    _run("finetune", "--config", str(config_path), "--init", str(official), "--out", str(frozen), "--max-steps", "2",
         "--set", "lr=0")
    out = NotagenModel.from_pretrained(frozen / notagen.FINAL)
    assert out.config == config
    assert all(torch.equal(out.state_dict()[k], v) for k, v in reference.state_dict().items())

    run = tmp_path / "finetune"
    _run("finetune", "--config", str(config_path), "--init", str(official), "--out", str(run))
    info = json.loads((run / "run.json").read_text())
    assert info["train_pieces"] == 6 and info["eval_pieces"] == 2 and info["stage"] == "finetune"
    train = _metrics(run)
    assert [r["step"] for r in train] == [1, 2, 3, 4, 5, 6]
    assert train[-1]["loss"] < train[0]["loss"]
    checkpoint = torch.load(run / notagen.BEST, map_location="cpu", weights_only=True)
    assert set(notagen.OFFICIAL_KEYS) <= set(checkpoint)
    # Our checkpoints are accepted where the official ones are: by the engine's loader and as --init.
    model, _ = load_checkpoint(run / notagen.BEST)
    assert isinstance(model, NotagenModel)
    again = tmp_path / "again"
    _run("finetune", "--config", str(config_path), "--init", str(run / notagen.FINAL), "--out", str(again), "--max-steps", "1")
    assert len(_metrics(again)) == 1


def test_time_budget_ends_the_run_with_an_export(config_path, tmp_path):
    run = tmp_path / "budget"
    _run("pretrain", "--config", str(config_path), "--out", str(run), "--set", "max_minutes=1e-6")
    summary = [json.loads(line) for line in (run / kit.METRICS).read_text().splitlines()][-1]
    assert summary["kind"] == "summary" and summary["reason"] == "max_minutes" and summary["global_step"] == 1
    assert [r["step"] for r in _metrics(run, "eval")] == [1]
    assert NotagenModel.from_pretrained(run / notagen.FINAL).config == NotagenConfig.preset("tiny")


def test_balanced_finetune_lists_offered_prompts_and_export_ships_them(config_path, notagen_reference, tmp_path):
    run = tmp_path / "balanced"
    _run("finetune", "--config", str(config_path), "--init", str(notagen_reference / "tiny_notagen.pth"),
         "--out", str(run), "--max-steps", "2", "--set", "balance=true", "--set", "offer_min_pieces=6")
    assert (run / "prompts.txt").read_text() == "Baroque_Bach, Johann Sebastian_Choral\t6\n"
    table = json.loads((run / "balance.json").read_text())
    assert [(row["prompt"], row["pieces"]) for row in table] == [("Baroque_Bach, Johann Sebastian_Choral", 6)]
    assert json.loads((run / "run.json").read_text())["steps_per_epoch"] == 3  # 6 pieces / (1 x 2)
    exported = notagen.export(run / notagen.BEST, tmp_path / "model")
    assert (exported / "prompts.txt").read_text() == (run / "prompts.txt").read_text()

    too_few = tmp_path / "too_few"
    _run("finetune", "--config", str(config_path), "--init", str(notagen_reference / "tiny_notagen.pth"),
         "--out", str(too_few), "--max-steps", "1", "--set", "offer_min_pieces=7")
    assert (too_few / "prompts.txt").read_text() == ""


def test_window_patches_cut_training_pieces_and_keep_validation_whole(config_path, notagen_reference, tmp_path):
    """`window_patches`: training items are header + a window of the body, validation keeps the context."""
    run = notagen.load_config(config_path, "finetune", {"out": str(tmp_path / "window"), "window_patches": 8})
    trainer = notagen.Trainer(run, "finetune", notagen.init_distributed("cpu"),
                              init=str(notagen_reference / "tiny_notagen.pth"), progress=False)
    assert trainer.train_set.patch_length == 8 and trainer.eval_set.patch_length == run.model.patch_length > 8
    items = [trainer.train_set[i] for i in range(len(trainer.train_set))]
    assert all(len(item) <= 8 for item in items) and any(len(item) == 8 for item in items)
    whole = [trainer.eval_set[i] for i in range(len(trainer.eval_set))]
    assert max(len(item) for item in whole) > 8
    assert all(item[0].tolist() == items[0][0].tolist() for item in items)  # each window opens with BOS


def test_pretraining_continues_a_given_model(config_path, notagen_reference, tmp_path):
    reference, _ = load_checkpoint(notagen_reference / "tiny_notagen.pth")
    run = tmp_path / "continued"
    _run("pretrain", "--config", str(config_path), "--init", str(notagen_reference / "tiny_notagen.pth"),
         "--out", str(run), "--max-steps", "1", "--set", "lr=0")
    out = NotagenModel.from_pretrained(run / notagen.FINAL)
    assert all(torch.equal(out.state_dict()[k], v) for k, v in reference.state_dict().items())


def test_sample_eval_reports_instrumentation_match(notagen_reference):
    result = notagen.sample_eval(notagen_reference / "tiny_notagen.pth", n=2, batch=2, max_bars=2,
                                 prompts=["Baroque_Bach, Johann Sebastian_Choral"], constrain=True)
    by = result["instrumentation_match_by"]["Choral"]
    assert by["pieces"] == 2 and 0 <= by["matched"] <= result["converted"]
    assert result["instrumentation_match"] == by["share"] and result["constrain"] is True
