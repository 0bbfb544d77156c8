"""Trains the project's own M3 music encoder with M3's masked-patch objective (CLaMP 2, section 3.1).

    python -m training.m3 train --config training/configs/m3_tiny.json     # resumes runs/<name>/last.pt
    python -m training.m3 train --set steps=300 --set hidden_size=64       # settings of either section
    python -m training.m3 export runs/m3_tiny --out assets/m3
    python -m training.m3 report assets/m3                                  # what it knows of the labels

Data: the interleaved ABC (CLaMP 2's format) of every piece in `data/pieces` built by
`python -m training.data build --out data/`, train / validation splits as built. As in the official
`train_m3.py`, each piece is cut to `patch_length` patches (head, tail or a random middle), 45 % of its
patches are selected, and the input is corrupted by one of: all selected patches replaced by the mask
patch (80 %), the characters inside each selected patch shuffled (10 %), or left as they are (10 %).
The token decoder must rebuild each selected patch from its encoder state.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import random
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from engine.scoring import patchilizer
from engine.scoring.model import M3Config, M3Model, MusicEncoder, load_encoder
from training import kit
from training.notagen_data import complete_shards

ROOT = Path(__file__).resolve().parents[1]
MASK_RATIO = 0.45  # the official M3_MASK_RATIO


@dataclass
class TrainConfig:
    name: str = "m3_tiny"
    steps: int = 6000
    batch_size: int = 8
    lr: float = 1e-3
    warmup: int = 200
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    eval_every: int = 500
    eval_pieces: int = 64
    checkpoint_every: int = 100
    log_every: int = 20
    threads: int = 1
    max_minutes: float = 0.0  # stop (and checkpoint) after this long in this invocation; 0 = no limit
    max_pieces: int = 0
    seed: int = 0


def read_config(path: str | Path, overrides: dict | None = None) -> tuple[M3Config, TrainConfig]:
    """The model and training settings of a config file; `overrides` (name -> value) replace either's."""
    raw = kit.read_config(path, {"train": TrainConfig.__dataclass_fields__, "model": M3Config.__dataclass_fields__}, overrides)
    return M3Config(**raw["model"]), TrainConfig(**raw["train"])


def load_texts(data_dir: str | Path, max_pieces: int = 0) -> dict[str, list[str]]:
    """Interleaved ABC of every built piece, by split (`train`, `validation`, `test`)."""
    texts: dict[str, list[str]] = {"train": [], "validation": [], "test": []}
    for shard in complete_shards(data_dir):
        with open(Path(data_dir) / "pieces" / shard["name"], encoding="utf-8") as handle:
            for line in handle:
                record = json.loads(line)
                texts[record["split"]].append(record["interleaved"])
                if max_pieces and sum(map(len, texts.values())) >= max_pieces:
                    return texts
    return texts


def cut(patches: list[list[int]], length: int, rng: random.Random) -> list[list[int]]:
    """At most `length` patches: the head, the tail or a random middle stretch, as M3 trains."""
    if len(patches) <= length:
        return patches
    choice = rng.choice(["head", "tail", "middle"])
    if choice == "head":
        return patches[:length]
    if choice == "tail":
        return patches[-length:]
    start = rng.randint(1, len(patches) - length)
    return patches[start:start + length]


def corrupt(patches: torch.Tensor, rng: random.Random, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(input patches, selected-patch flags) for one piece; evaluation keeps the input intact."""
    n = len(patches)
    chosen = sorted(rng.sample(range(n), math.ceil(MASK_RATIO * n)))
    inputs = patches.clone()
    mode = rng.choices(["mask", "shuffle", "original"], weights=[0.8, 0.1, 0.1])[0] if train else "original"
    if mode == "mask":
        inputs[chosen] = patchilizer.MASK_ID
    elif mode == "shuffle":
        for index in chosen:
            patch = inputs[index]
            eos = (patch == patchilizer.EOS_ID).nonzero()
            end = int(eos[0]) if len(eos) else len(patch)
            middle = list(range(1, end))
            rng.shuffle(middle)
            inputs[index] = patch[[0, *middle, *range(end, len(patch))]]
    selected = torch.zeros(n)
    selected[chosen] = 1
    return inputs, selected


def batch_of(texts: list[str], config: M3Config, rng: random.Random, train: bool = True) -> tuple[torch.Tensor, ...]:
    """Padded (inputs, masks, selected, targets) for a list of pieces."""
    pieces = [cut(patchilizer.encode(text, add_special_patches=True), config.patch_length, rng) for text in texts]
    width = max(map(len, pieces))
    shape = (len(pieces), width, config.patch_size)
    inputs, targets = torch.zeros(shape, dtype=torch.long), torch.zeros(shape, dtype=torch.long)
    masks, selected = torch.zeros(len(pieces), width), torch.zeros(len(pieces), width)
    for row, piece in enumerate(pieces):
        target = torch.tensor(piece)
        corrupted, chosen = corrupt(target, rng, train)
        inputs[row, :len(piece)], targets[row, :len(piece)] = corrupted, target
        masks[row, :len(piece)], selected[row, :len(piece)] = 1, chosen
    return inputs, masks, selected, targets


@torch.no_grad()
def evaluate(model: M3Model, texts: list[str], batch_size: int) -> float:
    """Mean reconstruction loss of 45 % of the patches of each validation piece, input uncorrupted
    (the official evaluation); the selection is seeded so every evaluation scores the same patches."""
    model.eval()
    rng = random.Random(1234)
    losses = [float(model(*batch_of(texts[i:i + batch_size], model.config, rng, train=False)))
              for i in range(0, len(texts), batch_size)]
    model.train()
    return sum(losses) / max(1, len(losses))


def train(config_path: str | Path, data_dir: str | Path = ROOT / "data", run_root: Path = ROOT / "runs",
          overrides: dict | None = None) -> Path:
    config, tc = read_config(config_path, overrides)
    torch.set_num_threads(tc.threads)
    torch.manual_seed(tc.seed)
    run = run_root / tc.name
    run.mkdir(parents=True, exist_ok=True)
    texts = load_texts(data_dir, tc.max_pieces)
    if not texts["train"]:
        raise SystemExit(f"no built pieces in {data_dir}/pieces: run `python -m training.data build --out {data_dir}` first")
    valid = texts["validation"][: tc.eval_pieces]
    model = M3Model(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    scheduler = kit.scheduler(optimizer, tc.warmup, tc.steps, "cosine", floor=0.1)
    state = kit.Resumable(run / kit.LAST, model, optimizer, scheduler, random.Random(tc.seed))
    if (saved := kit.load_checkpoint(state.path)) is not None:
        state.restore(saved)
        print(f"resumed {run} at step {state.step}")
    rng = state.rng
    log = kit.RunLog(run)
    print(f"{len(texts['train'])} training / {len(valid)} validation pieces; "
          f"{sum(p.numel() for p in model.parameters()):,} parameters", flush=True)

    budget, wall_at_start = kit.Budget(tc.max_minutes), state.wall  # the limit is per invocation: a rerun goes on
    clock = time.perf_counter()
    while state.step < tc.steps:
        loss = model(*batch_of(rng.sample(texts["train"], tc.batch_size), config, rng))
        state.advance(loss, tc.grad_clip)
        step = state.step
        now = time.perf_counter()
        budget.add(now - clock)
        clock, state.wall = now, wall_at_start + budget.spent
        if step % tc.log_every == 0:
            log.scalars(step, {"train/loss": loss.item()})
        if step % tc.eval_every == 0 or step == tc.steps:
            valid_loss = evaluate(model, valid, tc.batch_size)
            log.scalars(step, {"valid/loss": valid_loss})
            print(f"step {step}: train {loss.item():.3f} validation {valid_loss:.3f} ({state.wall / 60:.1f} min)", flush=True)
            if valid_loss < state.best:
                state.best = valid_loss
                model.save_pretrained(run / "best")
                (run / "best" / "training.json").write_text(json.dumps(
                    {"step": step, "wall_s": round(state.wall), "valid_loss": state.best, "pieces": len(texts["train"]),
                     "config": str(config_path), "train": dataclasses.asdict(tc)}, indent=1) + "\n")
        if step % tc.checkpoint_every == 0:
            state.save()
        if budget.exhausted:
            print(f"time limit reached at step {step}")
            break
    state.save()
    log.close()
    return run


@torch.no_grad()
def standardizing_projection(encoder: MusicEncoder, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """`music_proj` weight and bias that centre and scale pooled features over `texts`.

    Pooled states of an encoder trained only on masked patches share one large common direction: every
    piece has a cosine near 1 with every other, so CLaMP scores bunch up and the 0.95 plagiarism bound
    of CLaMP-DPO catches everything. CLaMP 2's contrastive projection spreads the features; a model
    without a text side gets the next best linear map, per-dimension standardization on the corpus.
    """
    pooled = encoder.features(texts)
    mean, std = pooled.mean(dim=0), pooled.std(dim=0).clamp_min(1e-6)
    return torch.diag(1 / std), -mean / std


def export(run: str | Path, out: str | Path, data_dir: str | Path = ROOT / "data", pieces: int = 2000) -> Path:
    """Writes the run's best encoder to `out` (config.json + model.safetensors + training.json), with a
    standardizing `music_proj` fitted on up to `pieces` training pieces."""
    source, out = Path(run) / "best", Path(out)
    encoder = MusicEncoder.from_pretrained(source)
    texts = load_texts(data_dir)["train"]
    weight, bias = standardizing_projection(encoder, random.Random(0).sample(texts, min(pieces, len(texts))))
    scorer = MusicEncoder(dataclasses.replace(encoder.config, projection_size=encoder.config.hidden_size))
    scorer.music_model.load_state_dict(encoder.music_model.state_dict())
    scorer.music_proj.load_state_dict({"weight": weight, "bias": bias})
    scorer.save_pretrained(out)
    training = json.loads((source / "training.json").read_text())
    training["projection_pieces"] = min(pieces, len(texts))
    (out / "training.json").write_text(json.dumps(training, indent=1) + "\n")
    return out


def report(encoder_path: str | Path, data_dir: str | Path = ROOT / "data", min_train: int = 11) -> dict:
    """What an encoder knows of the labelled pieces: the label classifiers' test accuracy, sheet-GT ACS,
    and how much closer a test piece is to its own prompt's mean than to the other prompts' means
    (prompts with at least `min_train` training pieces)."""
    from engine.scoring.evaluate import ReferenceSet, sheet_gt_row
    from engine.scoring.metrics import cosine_to, max_similarity

    reference = ReferenceSet.build(data_dir, load_encoder(encoder_path))
    row = sheet_gt_row(reference, reference.prompts(min_train=1))
    prompts = reference.prompts(min_train=min_train)
    means = {prompt: reference.prompt_features(prompt).mean(dim=0) for prompt in prompts}
    own, other = [], []
    for i in reference.indices("test"):
        prompt = reference.pieces[i].prompt
        if prompt in means:
            own.append(float(cosine_to(reference.features[i:i + 1], means[prompt])[0]))
            other += [float(cosine_to(reference.features[i:i + 1], means[q])[0]) for q in prompts if q != prompt]
    # How close genuinely different pieces come: a held-out piece against its prompt's training pieces.
    # CLaMP-DPO's plagiarism bound (0.95 for CLaMP 2) only means something well above these values.
    held_out = [float(max_similarity(reference.features[i:i + 1], reference.prompt_features(reference.pieces[i].prompt))[0])
                for i in reference.indices("test") + reference.indices("validation")
                if reference.indices("train", reference.pieces[i].prompt)]
    return {"labelled_pieces": len(reference.pieces), "test_pieces": row.pieces, "probe_test_period": row.la_period,
            "probe_test_instrumentation": row.la_instrumentation, "sheet_gt_acs": row.acs,
            "own_prompt_cosine": sum(own) / len(own) if own else None,
            "other_prompt_cosine": sum(other) / len(other) if other else None,
            "held_out_pieces": len(held_out),
            "held_out_max_similarity_median": statistics.median(held_out) if held_out else None,
            "held_out_share_above_0.95": sum(v > 0.95 for v in held_out) / len(held_out) if held_out else None}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.m3", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train (resumes runs/<name>/last.pt)")
    t.add_argument("--config", default=str(ROOT / "training/configs/m3_tiny.json"))
    t.add_argument("--data", default=str(ROOT / "data"))
    t.add_argument("--runs", default=str(ROOT / "runs"))
    kit.add_set_option(t, "--set steps=300 --set hidden_size=64 (model or train)")
    e = sub.add_parser("export", help="write a run's best encoder (+ standardizing projection) to e.g. assets/m3")
    e.add_argument("run")
    e.add_argument("--out", required=True)
    e.add_argument("--data", default=str(ROOT / "data"))
    r = sub.add_parser("report", help="label-probe accuracy, sheet-GT ACS and prompt separation of an encoder")
    r.add_argument("encoder")
    r.add_argument("--data", default=str(ROOT / "data"))
    args = parser.parse_args(argv)
    if args.command == "report":
        print(json.dumps(report(args.encoder, args.data), indent=1))
    elif args.command == "train":
        print(train(args.config, args.data, Path(args.runs), dict(args.set)))
    else:
        print(export(args.run, args.out, args.data))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
