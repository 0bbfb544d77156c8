"""What a lighter weight format costs in quality, against fp32 on the same trained weights (run by
`bench/notagen_speed.py --quality`).

Models: the shipped one (assets/notagen) and the fixtures' trained tiny one. Data: the four fixture pieces
(shared/fixtures/notagen_reference/input_*.abc) and the first `pieces` validation pieces of a data set built
by `training.data` (read only; encoded as pre-training does, one fixed key per piece).

* loss: mean next-char cross-entropy over every target char, as the training loss; the change relative
  to fp32.
* argmax agreement: teacher-forced, the share of target chars whose most likely char is the same as fp32's.
* greedy agreement (fixture rows): free greedy continuation (`reference.greedy_continue`, 32 patches) of
  each fixture piece's header; the share of generated chars equal to fp32's up to the first difference (1.0: identical).
"""
from __future__ import annotations

import copy
import os
import random
from pathlib import Path

import torch
from torch.nn import functional as F

from engine.notagen.generate import DEFAULT_MODEL_DIR
from engine.notagen.model import NotagenModel, load_checkpoint
from engine.notagen.patchilizer import PAD_ID, Patchilizer
from engine.notagen.quantize import place
from engine.notagen.reference import greedy_continue

FIXTURES = Path(os.environ.get("SHARED_DIR", Path(__file__).resolve().parents[2] / "shared")) / "fixtures" / "notagen_reference"


def fixture_texts() -> list[str]:
    return [path.read_text() for path in sorted(FIXTURES.glob("input_*.abc"))]


def corpus_texts(data_dir: Path, pieces: int) -> list[str]:
    from training.notagen_data import build_index, complete_shards, piece_text, select, ShardReader

    entries = select(build_index(data_dir, complete_shards(data_dir)), "pretrain", "validation", pieces)
    reader = ShardReader(data_dir)
    try:
        return [piece_text(reader.read(entry), "pretrain", random.Random(entry.id)) for entry in entries]
    finally:
        reader.close()


def _batches(texts: list[str], model: NotagenModel) -> list[tuple[torch.Tensor, torch.Tensor]]:
    patchilizer = Patchilizer(model.config.patch_size)
    batches = []
    for text in texts:
        ids = patchilizer.encode_train(text, model.config.patch_length, rng=random.Random(0))
        patches = torch.tensor([ids], device=model.device)
        batches.append((patches, torch.ones(patches.shape[:2], dtype=torch.long, device=model.device)))
    return batches


def scores(model: NotagenModel, batches) -> tuple[float, torch.Tensor]:
    """Mean loss per target char and the argmax of every target char."""
    total, count, choices = 0.0, 0, []
    with torch.inference_mode():
        for patches, masks in batches:
            encoded, targets = model.training_pairs(patches, masks)
            logits = model.char_level_decoder(encoded, targets).logits[:, :-1].float()
            valid = targets != PAD_ID
            total += F.cross_entropy(logits[valid], targets[valid], reduction="sum").item()
            count += int(valid.sum())
            choices.append(logits.argmax(-1)[valid].cpu())
    return total / count, torch.cat(choices)


def greedy_texts(model: NotagenModel, headers: list[str]) -> list[str]:
    with torch.inference_mode():
        return [greedy_continue(model, Patchilizer(model.config.patch_size), header, max_patches=32).text for header in headers]


def _agreement(reference: list[str], other: list[str]) -> float:
    same = total = 0
    for a, b in zip(reference, other):
        prefix = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
        same, total = same + prefix, total + len(a)
    return same / max(total, 1)


def quality_report(formats: list[str], device: torch.device, data_dir: Path, pieces: int) -> str:
    models = {"shipped": DEFAULT_MODEL_DIR, "fixture tiny-trained": FIXTURES / "tiny_notagen_trained_fp16.pth"}
    data = {"fixtures": fixture_texts()}
    if pieces and (data_dir / "pieces").is_dir():
        data[f"{pieces} corpus pieces"] = corpus_texts(data_dir, pieces)
    headers = [text[: text.index("[V:")] if "[V:" in text else text for text in data["fixtures"]]
    rows = ["| model | weights | data | loss fp32 | loss | change | argmax agreement | greedy agreement |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, checkpoint in models.items():
        base, _ = load_checkpoint(checkpoint)
        reference = place(copy.deepcopy(base), device, "fp32")
        greedy_reference = greedy_texts(reference, headers)
        for data_name, texts in data.items():
            batches = _batches(texts, reference)
            loss_reference, choices_reference = scores(reference, batches)
            for weights in formats:
                model = place(copy.deepcopy(base), device, weights)
                loss, choices = scores(model, batches)
                greedy = f"{_agreement(greedy_reference, greedy_texts(model, headers)):.1%}" if data_name == "fixtures" else "-"
                rows.append(f"| {name} | {weights} | {data_name} | {loss_reference:.4f} | {loss:.4f} "
                            f"| {(loss - loss_reference) / loss_reference:+.2%} "
                            f"| {(choices == choices_reference).float().mean().item():.2%} | {greedy} |")
                print(rows[-1], flush=True)
    return "\nQuality against fp32 (bench/notagen_quality.py):\n\n" + "\n".join(rows) + "\n"
