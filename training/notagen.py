"""Train NotaGen: pre-training on every piece, prompt fine-tuning on the labelled pieces, export.

    python -m training.notagen pretrain --config training/configs/notagen_tiny.json
    python -m training.notagen finetune --config training/configs/notagen_tiny.json \\
        --init runs/notagen_tiny/pretrain/best.pt          # or an official .pth, or a save_pretrained dir
    python -m training.notagen export --checkpoint runs/notagen_tiny/finetune/best.pt --out assets/notagen --fp16
    torchrun --nproc_per_node 8 -m training.notagen pretrain --config training/configs/notagen_large.json

One process (CPU or one GPU), or one process per GPU under `torchrun` (DistributedDataParallel; the
rank and world size come from the environment variables torchrun sets). See docs/training.md.

A run directory (`out` of the stage) holds:

* `last.pt`: the training state, written every `save_every` steps, at the end of each epoch, on
  SIGINT / SIGTERM and at the end; a rerun of the same command resumes from it exactly (model,
  optimiser, scheduler, epoch, step within the epoch, the pinned list of data shards, and the python,
  numpy, torch and CUDA RNG states of every rank). It is a `torch.save` dict with the keys the official
  NotaGen scripts write and read (`model, optimizer, lr_sched, epoch, best_epoch, min_eval_loss`)
  plus our resume keys beside them, and loads with `torch.load(weights_only=True)`.
* `best.pt`: the same dict at the lowest validation loss so far.
* `final/`: the best model (or the last one, without validation data) as `config.json` +
  `model.safetensors` (`NotagenModel.save_pretrained`).
* `metrics.jsonl` (one JSON line per optimiser step and per evaluation), `run.json` (the settings and
  the data manifest), `tb/` (TensorBoard).
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import platform
import shutil
import signal
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from engine.device import DEVICES, resolve_device
from engine.notagen.config import NotagenConfig
from engine.notagen.model import NotagenModel, load_checkpoint
from training import kit
from training.balance import BalancedSampler, epoch_table
from training.notagen_data import NotagenDataset, Stage, build_index, collate, complete_shards, select, target_chars

STAGES: tuple[Stage, ...] = ("pretrain", "finetune")
BEST = "best.pt"
FINAL = "final"
#: The keys the official NotaGen training scripts write and read.
OFFICIAL_KEYS = ("model", "optimizer", "lr_sched", "epoch", "best_epoch", "min_eval_loss")
#: The official scripts start `min_eval_loss` at 100 ("no evaluation yet").
NO_EVAL_LOSS = 100.0


# ---------------------------------------------------------------------------------------------
# settings
# ---------------------------------------------------------------------------------------------


@dataclass
class StageSettings:
    """One stage's training settings (a `pretrain` or `finetune` section of a config file)."""

    out: str = "runs/notagen/pretrain"
    batch_size: int = 1
    """Pieces per micro-batch per process."""
    grad_accum: int = 1
    """Micro-batches per optimiser step (per process); the effective batch is batch_size * grad_accum * GPUs."""
    lr: float = 1e-4
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.999)
    warmup: int = 1000
    """Linear warm-up steps (0 = none)."""
    schedule: str = "constant"
    """After warm-up: "constant" (the official scripts), "linear" or "cosine" decay to 0 at the last step."""
    grad_clip: float = 1.0
    """Max global gradient norm (0 = no clipping)."""
    epochs: int = 1
    max_steps: int | None = None
    """Stop after this many optimiser steps in all (None: run all epochs). Also the decay horizon."""
    max_minutes: float | None = None
    """Stop (saving `last.pt`) once the run has trained this long in all, resumed segments included."""
    eval_every: int = 0
    """Also evaluate every N steps (0: only at the end of each epoch and of the run)."""
    save_every: int = 200
    """Write `last.pt` every N steps (0: only at epoch ends, interruptions and the end)."""
    log_every: int = 10
    max_eval_pieces: int | None = None
    """Evaluate on the first N validation pieces only (None: all)."""
    max_train_pieces: int | None = None
    seed: int = 0
    threads: int = 1
    """CPU threads (`torch.set_num_threads`); ignored on GPU."""
    bf16: bool = True
    """bf16 autocast on CUDA (weights and optimiser stay float32). No effect on the CPU."""
    num_workers: int = 0
    """DataLoader worker processes (0: read in the training process)."""
    train_split: str = "train"
    eval_split: str = "validation"
    dropout: float | None = None
    """GPT-2 dropout (resid/embd/attn); None keeps GPT-2's default 0.1, which the official scripts train with."""
    balance: bool = False
    """Fine-tuning: draw each epoch by prompt (`training/balance.py`) instead of piece by piece."""
    balance_alpha: float = 0.5
    balance_max_share: float = 0.15
    balance_max_repeat: float = 4.0
    window_patches: int | None = None
    """Train on windows of at most this many patches: the header always, the body cut as the official stream
    cut cuts it (None: the model's context). A step then costs a fraction, so fine-tuning sees each prompt's
    header (the ensemble, a few dozen of a piece's thousands of characters) many more times. Validation
    keeps the whole context."""
    offer_min_pieces: int = 1
    """Fine-tuning: the run's `prompts.txt` (what the app offers) lists prompts with at least this many training pieces."""

    @classmethod
    def from_dict(cls, values: dict) -> StageSettings:
        fields = {field.name for field in dataclasses.fields(cls)}
        unknown = set(values) - fields
        if unknown:
            raise ValueError(f"unknown stage settings: {sorted(unknown)}")
        values = dict(values)
        if "betas" in values:
            values["betas"] = tuple(values["betas"])
        return cls(**values)


@dataclass
class RunConfig:
    name: str
    model: NotagenConfig
    data_dir: str
    stage: StageSettings


def model_config(section: dict) -> NotagenConfig:
    """`{"preset": "notagen-small"}`, explicit sizes, or a preset with some sizes overridden."""
    section = dict(section)
    preset = section.pop("preset", None)
    if preset is None:
        return NotagenConfig.from_dict(section)
    base = NotagenConfig.preset(preset).to_dict()
    if "hidden_size" in section and "num_heads" not in section:
        base["num_heads"] = None  # re-derive the official hidden // 64
    base.update(section)
    return NotagenConfig.from_dict(base)


def load_config(path: str | Path, stage: Stage, overrides: dict | None = None) -> RunConfig:
    """The config file's model, data folder and `stage` section; `overrides` replace settings of that section."""
    raw = kit.read_config(path, {stage: [field.name for field in dataclasses.fields(StageSettings)]}, overrides)
    return RunConfig(
        name=raw.get("name", Path(path).stem),
        model=model_config(raw.get("model", {"preset": "tiny"})),
        data_dir=raw.get("data", {}).get("dir", "data"),
        stage=StageSettings.from_dict(raw.get(stage) or {}),
    )


# ---------------------------------------------------------------------------------------------
# distributed setup
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device: str = "auto") -> Dist:
    """From torchrun's environment (WORLD_SIZE, RANK, LOCAL_RANK) when present; else one process. `device`:
    auto (CUDA when present), cpu or cuda (`engine.device.resolve_device`)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if resolve_device(device).type == "cuda":
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    if world_size > 1:
        torch.distributed.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return Dist(rank, local_rank, world_size, device)


def _all_reduce_sum(values: list[float], dist: Dist) -> list[float]:
    if not dist.enabled:
        return values
    tensor = torch.tensor(values, dtype=torch.float64, device=dist.device)
    torch.distributed.all_reduce(tensor)
    return tensor.tolist()


# ---------------------------------------------------------------------------------------------
# the trainer
# ---------------------------------------------------------------------------------------------


class _Stop:
    """Set by SIGINT / SIGTERM: finish the current optimiser step, save `last.pt`, exit."""

    def __init__(self) -> None:
        self.requested = False
        self._previous = {}

    def __enter__(self) -> _Stop:
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread
                pass
        return self

    def _handle(self, signum, frame) -> None:  # noqa: ARG002
        if self.requested:  # a second signal: give up at once
            raise KeyboardInterrupt
        self.requested = True
        print(f"\nsignal {signum}: stopping after this step (last.pt will be written)", file=sys.stderr, flush=True)

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


class Trainer:
    def __init__(self, run: RunConfig, stage: Stage, dist: Dist, init: str | None = None,
                 stop_at_step: int | None = None, progress: bool = True) -> None:
        self.run = run
        self.stage = stage
        self.settings = settings = run.stage
        self.dist = dist
        self.out = Path(settings.out)
        self.stop_at_step = stop_at_step
        self.progress = progress and dist.main
        if dist.device.type == "cpu":
            torch.set_num_threads(settings.threads)
        self.autocast = (
            torch.autocast("cuda", dtype=torch.bfloat16) if dist.device.type == "cuda" and settings.bf16
            else contextlib.nullcontext()
        )

        resume_path = self.out / kit.LAST
        resume = kit.load_checkpoint(resume_path)
        self.resuming = resume is not None

        # The model: the config's sizes (pre-training), or the initial checkpoint's (fine-tuning).
        initial = None
        if resume is not None:
            config = NotagenConfig.from_dict(resume["model_config"])
        elif init is not None:
            initial = load_model(init)
            config = initial.config
            if config != run.model:
                self._log(f"note: the model sizes are those of {init}: {config.to_dict()}")
        else:
            config = run.model
        kit.seed_everything(settings.seed + dist.rank)
        self.model = NotagenModel(config)
        if settings.dropout is not None:
            for module in self.model.modules():
                if isinstance(module, nn.Dropout):
                    module.p = settings.dropout
        if initial is not None:
            self.model.load_state_dict(initial.state_dict())
            del initial
        # The patch decoder's wte [1, hidden] is never used (patches enter as embeddings); freezing it keeps
        # DDP from waiting for its gradient. It stays in the optimiser, as in the official scripts.
        self.model.patch_level_decoder.base.wte.weight.requires_grad_(False)
        self.model.to(dist.device)
        self.config = config

        # Data: the complete shards at the start of the run, pinned for resumption.
        self.shards = resume["data_shards"] if resume is not None else complete_shards(run.data_dir)
        if not self.shards:
            raise SystemExit(f"no complete shards in {Path(run.data_dir) / 'pieces'} (build them: python -m training.data build)")
        entries = build_index(run.data_dir, self.shards)
        train_entries = select(entries, stage, settings.train_split, settings.max_train_pieces)
        eval_entries = select(entries, stage, settings.eval_split, settings.max_eval_pieces)
        if not train_entries:
            raise SystemExit(f"no {settings.train_split} pieces for {stage} in {run.data_dir}")
        self.train_set = NotagenDataset(run.data_dir, train_entries, stage, settings.window_patches or config.patch_length,
                                        config.patch_size, settings.seed)
        self.eval_set = NotagenDataset(run.data_dir, eval_entries, stage, config.patch_length, config.patch_size, settings.seed)
        if settings.balance and stage == "finetune":
            self.sampler = BalancedSampler([entry.prompt for entry in train_entries], dist.world_size, dist.rank,
                                           settings.seed, settings.balance_alpha, settings.balance_max_share,
                                           settings.balance_max_repeat)
        else:
            self.sampler = torch.utils.data.DistributedSampler(
                self.train_set, num_replicas=dist.world_size, rank=dist.rank, shuffle=True, seed=settings.seed,
                drop_last=True,
            )
        pieces_per_step = settings.batch_size * settings.grad_accum
        self.steps_per_epoch = len(self.sampler) // pieces_per_step
        if self.steps_per_epoch == 0:
            raise SystemExit(f"{len(train_entries)} training pieces are fewer than one step "
                             f"({pieces_per_step} x {dist.world_size} processes)")
        full = self.steps_per_epoch * settings.epochs
        self.total_steps = min(full, settings.max_steps) if settings.max_steps else full

        self.ddp = (
            nn.parallel.DistributedDataParallel(self.model, device_ids=[dist.local_rank] if dist.device.type == "cuda" else None)
            if dist.enabled else None
        )
        # All parameters, in the official order (so the optimiser state has the official layout).
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=settings.lr, betas=settings.betas,
                                           weight_decay=settings.weight_decay)
        self.scheduler = kit.scheduler(self.optimizer, settings.warmup, self.total_steps, settings.schedule)

        self.epoch = 0  # completed epochs
        self.step_in_epoch = 0
        self.global_step = 0
        self.best_epoch = 0
        self.min_eval_loss = NO_EVAL_LOSS
        self.best_step = None
        self.budget = kit.Budget(settings.max_minutes)  # training time over every segment of the run
        self.chars_seen = 0
        if resume is not None:
            self.model.load_state_dict(resume["model"])
            self.optimizer.load_state_dict(resume["optimizer"])
            self.scheduler.load_state_dict(resume["lr_sched"])
            self.epoch = resume["epoch"]
            self.step_in_epoch = resume["step_in_epoch"]
            self.global_step = resume["global_step"]
            self.best_epoch = resume["best_epoch"]
            self.min_eval_loss = resume["min_eval_loss"]
            self.best_step = resume.get("best_step")
            self.budget.spent = resume.get("train_seconds", 0.0)
            self.chars_seen = resume.get("chars_seen", 0)
            states = resume["rng"]
            if len(states) != dist.world_size:
                self._log(f"warning: resuming {len(states)}-process RNG states on {dist.world_size} processes")
            kit.set_rng_state(states[dist.rank % len(states)])
            del resume
            self._log(f"resumed from {resume_path}: step {self.global_step}, epoch {self.epoch + 1} step {self.step_in_epoch}")

        self.log = None
        if dist.main:
            self.log = kit.RunLog(self.out)
            if self.resuming:
                self.log.drop_after(self.global_step)
            self._write_run_json(init, len(train_entries), len(eval_entries))
            if stage == "finetune":
                self._write_prompts(train_entries)

    # ------------------------------------------------------------------------------------------ util
    def _log(self, message: str) -> None:
        if self.dist.main:
            print(message, flush=True)

    def _write_run_json(self, init: str | None, n_train: int, n_eval: int) -> None:
        params = sum(p.numel() for p in self.model.parameters())
        info = {
            "stage": self.stage,
            "name": self.run.name,
            "model": self.config.to_dict(),
            "parameters": params,
            "settings": dataclasses.asdict(self.settings),
            "data_dir": self.run.data_dir,
            "data_shards": self.shards,
            "train_pieces": n_train,
            "eval_pieces": n_eval,
            "steps_per_epoch": self.steps_per_epoch,
            "total_steps": self.total_steps,
            "world_size": self.dist.world_size,
            "device": str(self.dist.device),
            "init": init,
            "command": " ".join(sys.argv),
            "torch": torch.__version__,
            "python": platform.python_version(),
            "cpu": platform.processor() or platform.machine(),
        }
        name = "run.json" if not self.resuming else f"run.resume-{self.global_step}.json"
        (self.out / name).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
        self._log(f"{self.stage}: {params:,} parameters, {n_train} training / {n_eval} validation pieces, "
                  f"{self.steps_per_epoch} steps per epoch, {self.total_steps} steps, {self.dist.world_size} process(es) on {self.dist.device}")

    def _write_prompts(self, train_entries: list) -> None:
        """`prompts.txt` (the prompts offered with the model: `offer_min_pieces` or more training pieces, with
        their counts; `export` copies it beside the weights) and, when balanced, `balance.json` (the epoch table)."""
        counts = Counter(entry.prompt for entry in train_entries)
        offered = [(prompt, n) for prompt, n in counts.most_common() if n >= self.settings.offer_min_pieces]
        (self.out / "prompts.txt").write_text("".join(f"{p}\t{n}\n" for p, n in sorted(offered)), encoding="utf-8")
        if isinstance(self.sampler, BalancedSampler):
            table = epoch_table(self.sampler)
            (self.out / "balance.json").write_text(json.dumps(table, indent=1) + "\n", encoding="utf-8")
            top = ", ".join(f"{row['prompt']} {row['share']:.1%}" for row in table[:3])
            self._log(f"balanced fine-tuning: {len(table)} prompts, {sum(r['per_epoch'] for r in table)} pieces per epoch; largest: {top}")

    def _metric(self, record: dict) -> None:
        if self.log is not None:
            self.log.record(record)

    def _loader(self, dataset: NotagenDataset, batches: list[list[int]]) -> torch.utils.data.DataLoader:
        # An own generator: creating the loader's iterator must not draw from the global torch RNG
        # (that would make the dropout stream depend on where a resumed run started).
        return torch.utils.data.DataLoader(
            dataset, batch_sampler=batches, collate_fn=collate, num_workers=self.settings.num_workers,
            generator=torch.Generator().manual_seed(self.settings.seed),
        )

    # --------------------------------------------------------------------------------------- evaluate
    @torch.no_grad()
    def evaluate(self) -> dict | None:
        """Validation loss (mean next-char NLL over all validation chars) and perplexity = exp(loss).

        Every piece in a fixed key and cut (epoch 0 of the validation set's own seed stream), so
        evaluations are comparable across the run.
        """
        if len(self.eval_set) == 0:
            return None
        self.model.eval()
        self.eval_set.set_epoch(0)
        indices = list(range(self.dist.rank, len(self.eval_set), self.dist.world_size))
        batches = [indices[i : i + self.settings.batch_size] for i in range(0, len(indices), self.settings.batch_size)]
        nll, chars = 0.0, 0
        for patches, masks in self._loader(self.eval_set, batches):
            n = target_chars(patches, masks)
            patches, masks = patches.to(self.dist.device), masks.to(self.dist.device)
            with self.autocast:
                loss = self.model(patches, masks)
            nll += float(loss) * n
            chars += n
        nll, chars = _all_reduce_sum([nll, float(chars)], self.dist)
        self.model.train()
        loss = nll / max(chars, 1)
        return {"eval_loss": loss, "eval_ppl": math.exp(min(loss, 50.0)), "eval_chars": int(chars)}

    def _evaluate_and_keep_best(self, reason: str) -> None:
        result = self.evaluate()
        if result is None:
            return
        record = {"kind": "eval", "step": self.global_step, "epoch": self.epoch + (self.step_in_epoch > 0), "reason": reason, **result}
        self._metric(record)
        if self.log is not None:
            self.log.scalars(self.global_step, {"eval/loss": result["eval_loss"], "eval/perplexity": result["eval_ppl"]})
        self._log(f"[eval] step {self.global_step}: loss {result['eval_loss']:.4f}, perplexity {result['eval_ppl']:.3f} ({reason})")
        if result["eval_loss"] < self.min_eval_loss:
            self.min_eval_loss = result["eval_loss"]
            self.best_epoch = record["epoch"]
            self.best_step = self.global_step
            self.save(BEST)

    # ------------------------------------------------------------------------------------------- save
    def state(self) -> dict:
        states = [kit.rng_state()]
        if self.dist.enabled:
            gathered = [None] * self.dist.world_size
            torch.distributed.all_gather_object(gathered, states[0])
            states = gathered
        return {
            # the official keys
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "lr_sched": self.scheduler.state_dict(),
            "epoch": self.epoch,
            "best_epoch": self.best_epoch,
            "min_eval_loss": self.min_eval_loss,
            # resume keys
            "stage": self.stage,
            "model_config": self.config.to_dict(),
            "settings": json.loads(json.dumps(dataclasses.asdict(self.settings))),
            "global_step": self.global_step,
            "step_in_epoch": self.step_in_epoch,
            "best_step": self.best_step,
            "train_seconds": self.budget.spent,
            "chars_seen": self.chars_seen,
            "data_shards": self.shards,
            "world_size": self.dist.world_size,
            "rng": states,
        }

    def save(self, name: str) -> None:
        state = self.state()  # every rank takes part in gathering the RNG states
        if self.dist.main:
            kit.save_checkpoint(self.out / name, state)

    def export_final(self) -> Path | None:
        if not self.dist.main:
            return None
        source = self.out / (BEST if (self.out / BEST).exists() else kit.LAST)
        model = load_model(source)
        model.save_pretrained(self.out / FINAL)
        self._log(f"exported {source.name} to {self.out / FINAL}")
        return self.out / FINAL

    # ------------------------------------------------------------------------------------------ train
    def _stop_reason(self, stop: _Stop) -> str | None:
        if self.global_step >= self.total_steps:
            return "done"
        if stop.requested:
            return "signal"
        if self.stop_at_step is not None and self.global_step >= self.stop_at_step:
            return "stop_at_step"
        if self.budget.exhausted:
            return "max_minutes"
        return None

    def _flag(self, value: bool) -> bool:
        """Rank 0's decision, so every rank stops at the same step (signals may reach only some)."""
        if not self.dist.enabled:
            return value
        tensor = torch.tensor([int(value)], device=self.dist.device)
        torch.distributed.broadcast(tensor, 0)
        return bool(tensor.item())

    def train(self) -> dict:
        settings, dist = self.settings, self.dist
        per_step = settings.batch_size * settings.grad_accum
        net = self.ddp if self.ddp is not None else self.model
        self.model.train()
        reason = None
        with _Stop() as stop:
            while self.global_step < self.total_steps and reason is None:
                epoch = self.epoch + 1
                self.sampler.set_epoch(epoch)
                self.train_set.set_epoch(epoch)
                order = list(self.sampler)[: self.steps_per_epoch * per_step]
                order = order[self.step_in_epoch * per_step :]
                micro = [order[i : i + settings.batch_size] for i in range(0, len(order), settings.batch_size)]
                loader = iter(self._loader(self.train_set, micro))
                bar = None
                if self.progress:
                    bar = kit.progress_bar(self.steps_per_epoch, self.step_in_epoch, f"{self.stage} epoch {epoch}")
                while self.step_in_epoch < self.steps_per_epoch and self.global_step < self.total_steps:
                    started = time.perf_counter()
                    loss_sum, chars = 0.0, 0
                    for k in range(settings.grad_accum):
                        patches, masks = next(loader)
                        chars += target_chars(patches, masks)
                        patches, masks = patches.to(dist.device), masks.to(dist.device)
                        sync = self.ddp is None or k == settings.grad_accum - 1
                        with (contextlib.nullcontext() if sync else self.ddp.no_sync()), self.autocast:
                            loss = net(patches, masks) / settings.grad_accum
                        loss.backward()
                        loss_sum += float(loss.detach())
                    grad_norm = (
                        float(nn.utils.clip_grad_norm_(self.model.parameters(), settings.grad_clip))
                        if settings.grad_clip else float("nan")
                    )
                    self.optimizer.step()
                    self.scheduler.step()
                    self.optimizer.zero_grad(set_to_none=True)
                    self.step_in_epoch += 1
                    self.global_step += 1
                    elapsed = time.perf_counter() - started
                    loss_all, chars_all = _all_reduce_sum([loss_sum, float(chars)], dist)
                    loss_mean = loss_all / dist.world_size
                    self.budget.add(elapsed)
                    self.chars_seen += int(chars_all)
                    lr = self.scheduler.get_last_lr()[0]
                    record = {"kind": "train", "step": self.global_step, "epoch": epoch, "loss": loss_mean,
                              "lr": lr, "grad_norm": grad_norm, "chars": int(chars_all), "seconds": elapsed,
                              "chars_per_s": chars_all / max(elapsed, 1e-9)}
                    self._metric(record)
                    if self.log is not None and (self.global_step % settings.log_every == 0 or self.global_step == 1):
                        self.log.scalars(self.global_step, {"train/loss": loss_mean, "train/lr": lr, "train/grad_norm": grad_norm,
                                                            "train/chars_per_s": record["chars_per_s"]})
                    if bar is not None:
                        bar.update(1)
                        bar.set_postfix(loss=f"{loss_mean:.4f}", lr=f"{lr:.2e}", cps=f"{record['chars_per_s']:.0f}", refresh=False)
                        if not sys.stderr.isatty() and self.global_step % settings.log_every == 0:
                            print(f"step {self.global_step}/{self.total_steps} epoch {epoch} loss {loss_mean:.4f} "
                                  f"lr {lr:.2e} chars/s {record['chars_per_s']:.0f} trained {self.budget.spent / 60:.1f} min",
                                  flush=True)
                    epoch_done = self.step_in_epoch == self.steps_per_epoch
                    if epoch_done:
                        self.epoch += 1
                        self.step_in_epoch = 0
                    if epoch_done or self.global_step == self.total_steps:
                        self._evaluate_and_keep_best("epoch end" if epoch_done else "last step")
                    elif settings.eval_every and self.global_step % settings.eval_every == 0:
                        self._evaluate_and_keep_best(f"every {settings.eval_every} steps")
                    reason = self._stop_reason(stop)
                    reason = reason if self._flag(reason is not None) else None
                    if reason is None and self._flag(epoch_done or bool(settings.save_every and self.global_step % settings.save_every == 0)):
                        self.save(kit.LAST)
                    if reason == "max_minutes" and not (epoch_done or self.global_step == self.total_steps
                                                        or (settings.eval_every and self.global_step % settings.eval_every == 0)):
                        self._evaluate_and_keep_best("time budget")
                    if reason is not None or epoch_done:
                        break
                if bar is not None:
                    bar.close()
            reason = reason or "done"
        self.save(kit.LAST)
        # A run that ends (all steps, or its time budget) exports its model; an interrupted one does not.
        final = self.export_final() if reason in ("done", "max_minutes") else None
        summary = {"stage": self.stage, "reason": reason, "global_step": self.global_step, "epochs_completed": self.epoch,
                   "train_seconds": self.budget.spent, "chars_seen": self.chars_seen,
                   "chars_per_s": self.chars_seen / max(self.budget.spent, 1e-9),
                   "min_eval_loss": None if self.best_step is None else self.min_eval_loss,
                   "best_step": self.best_step, "final": None if final is None else str(final)}
        self._metric({"kind": "summary", **summary})
        self._log(json.dumps(summary))
        if self.log is not None:
            self.log.close()
        return summary


# ---------------------------------------------------------------------------------------------
# export
# ---------------------------------------------------------------------------------------------


def load_model(path: str | Path) -> NotagenModel:
    """A model from our training state (.pt), an official .pth, or a `save_pretrained` folder (eval mode, CPU).

    Our .pt files carry the exact config (`model_config`, including a non-default head count); official
    ones are read by `engine.notagen.model.load_checkpoint` (sizes from the tensor shapes).
    """
    path = Path(path)
    if not path.is_dir():
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(checkpoint, dict) and "model_config" in checkpoint:
            model = NotagenModel(NotagenConfig.from_dict(checkpoint["model_config"]))
            model.load_state_dict(checkpoint["model"])
            return model.eval()
    model, _ = load_checkpoint(path)
    return model


def export(checkpoint: str | Path, out: str | Path, fp16: bool = False, max_shard_mib: float | None = None) -> Path:
    """Write `config.json` + `model.safetensors` of a checkpoint (our .pt, an official .pth, or a dir).

    `fp16` halves the file: the weights are stored as float16 and load back into float32 parameters.
    `max_shard_mib` splits the weights into files of at most that size (`NotagenModel.save_pretrained`).
    """
    model = load_model(checkpoint)
    if fp16:
        model = model.half()
    model.save_pretrained(out, None if max_shard_mib is None else int(max_shard_mib * 2**20))
    prompts = Path(checkpoint).parent / "prompts.txt"  # written by a fine-tuning run
    if Path(checkpoint).is_file() and prompts.exists():
        shutil.copyfile(prompts, Path(out) / "prompts.txt")
    return Path(out)


# ---------------------------------------------------------------------------------------------
# generated pieces
# ---------------------------------------------------------------------------------------------


def read_prompts(path: str | Path) -> list[str]:
    """Prompts from a `prompts.txt` (`Period_Composer_Instrumentation`, optionally a tab and a count)."""
    prompts = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        line = line.split("\t")[0].strip()
        if line and not line.startswith("#"):
            prompts.append(line)
    return prompts


def sample_eval(model_dir: str | Path, n: int, batch: int, max_bars: int, prompts: list[str] | None,
                seed: int = 0, threads: int = 1, bae_resample: bool = False, constrain: bool = False, **sampling) -> dict:
    """Generate `n` pieces (in calls of `batch`, cycling through `prompts`; None: unconditional) and measure
    them: the share that converts to a score (MusicXML) at the first attempt, the bar alignment error
    (BAE: misaligned bars / bars, over the converted pieces; by default without the generator's bar
    resampling, `bae_resample=True` measures what the app returns), the
    mean number of bars, the share the model ended itself (EOS) within `max_bars`, and per instrumentation
    the share of pieces whose parts are the prompt's (`engine.scoring.instrumentation`; a piece that did not
    convert counts as no match). `constrain` decodes bar-exact, as the app does; off measures the model."""
    from engine.scoring.instrumentation import piece_matches

    from engine.notagen.generate import NotagenGenerator
    from engine.notagen.prompts import Prompt

    torch.set_num_threads(threads)
    generator = NotagenGenerator.load(model_dir)
    converted, failures, reasons = [], 0, Counter()
    matched, judged = Counter(), Counter()
    started = time.perf_counter()
    for call, first in enumerate(range(0, n, batch)):
        size = min(batch, n - first)
        prompt = None
        if prompts:
            period, composer, instrumentation = prompts[call % len(prompts)].split("_")
            prompt = Prompt(period, composer, instrumentation)
        result = generator.generate(prompt, n=size, seed=seed + call, max_bars=max_bars, bae_resample=bae_resample,
                                    max_attempts=1, constrain=constrain, **sampling)
        converted += [(piece.bars, piece.alignment.bars, piece.alignment.misaligned, piece.ended) for piece in result.pieces]
        if prompt is not None and piece_matches(prompt.instrumentation, "") is not None:
            judged[prompt.instrumentation] += size
            matched[prompt.instrumentation] += sum(bool(piece_matches(prompt.instrumentation, p.abc)) for p in result.pieces)
        failures += len(result.failures)
        reasons.update(failure.reason.split(":")[0] for failure in result.failures)
        print(f"  call {call + 1}: {len(result.pieces)}/{size} converted ({prompt.text.strip() if prompt else 'no prompt'})", flush=True)
    bars = sum(item[1] for item in converted)
    misaligned = sum(item[2] for item in converted)
    return {
        "model": str(model_dir), "pieces": n, "converted": len(converted), "conversion_rate": len(converted) / n,
        "bae": misaligned / bars if bars else None, "bars_checked": bars, "misaligned_bars": misaligned,
        "mean_bars": sum(item[0] for item in converted) / len(converted) if converted else None,
        "ended_by_model": sum(item[3] for item in converted), "failure_reasons": dict(reasons),
        "instrumentation_match": sum(matched.values()) / sum(judged.values()) if judged else None,
        "instrumentation_match_by": {k: {"matched": matched[k], "pieces": judged[k], "share": matched[k] / judged[k]}
                                     for k in sorted(judged)},
        "max_bars": max_bars, "bae_resample": bae_resample, "constrain": constrain, "prompts": prompts, "seed": seed,
        "sampling": sampling,
        "seconds": time.perf_counter() - started,
    }


# ---------------------------------------------------------------------------------------------
# command line
# ---------------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m training.notagen", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for stage in STAGES:
        p = sub.add_parser(stage, help=f"{stage} (resumes from <out>/last.pt when it exists)")
        p.add_argument("--config", required=True, help="training/configs/notagen_*.json")
        p.add_argument("--init", required=stage == "finetune",
                       help="the initial model: an official .pth, our best.pt/last.pt, or a save_pretrained folder"
                       + ("" if stage == "finetune" else " (continue pre-training it; default: random weights)"))
        p.add_argument("--out", help="run directory (overrides the config's)")
        p.add_argument("--data", help="data directory (overrides the config's)")
        p.add_argument("--max-steps", type=int, help="stop after this many optimiser steps (overrides the config's)")
        kit.add_set_option(p, "--set lr=3e-4 (a setting of the stage section)")
        p.add_argument("--stop-at-step", type=int,
                       help="save last.pt and exit after this step, as if interrupted (rerun to resume)")
        p.add_argument("--no-progress", action="store_true", help="no tqdm bar")
        p.add_argument("--device", choices=DEVICES, default="auto", help="auto: the CUDA GPU when there is one")
    e = sub.add_parser("export", help="write a checkpoint as config.json + model.safetensors")
    e.add_argument("--checkpoint", required=True)
    e.add_argument("--out", required=True)
    e.add_argument("--fp16", action="store_true", help="store float16 weights (half the size)")
    e.add_argument("--max-shard-mib", type=float, help="split the weights into files of at most this many MiB")
    d = sub.add_parser("dpo", help="CLaMP-DPO iterations (resumes after the last finished one)")
    d.add_argument("--config", required=True, help="training/configs/notagen_dpo_*.json")
    kit.add_set_option(d, "--set iterations=1")
    d.add_argument("--device", choices=DEVICES, default="auto", help="auto: the CUDA GPU when there is one")
    g = sub.add_parser("sample-eval", help="generate pieces and measure conversion rate, BAE and length")
    g.add_argument("--model", required=True, help="a save_pretrained folder or a checkpoint")
    g.add_argument("--n", type=int, default=100)
    g.add_argument("--batch", type=int, default=10)
    g.add_argument("--max-bars", type=int, default=16)
    g.add_argument("--prompts", help="prompts.txt to cycle through (default: unconditional)")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--threads", type=int, default=1)
    g.add_argument("--bae-resample", action="store_true",
                   help="let the generator sample misaligned bars again (as the app does); default: raw output")
    g.add_argument("--constrain", action="store_true",
                   help="bar-exact decoding, as the app does (default: off, which measures the model itself)")
    g.add_argument("--out", help="write the result as JSON here")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "export":
        path = export(args.checkpoint, args.out, args.fp16, args.max_shard_mib)
        files = sorted(path.glob("*.safetensors"))
        print(f"wrote {path} ({sum(f.stat().st_size for f in files) / 2**20:.1f} MiB in {len(files)} file(s))")
        return 0
    if args.command == "dpo":
        from training.notagen_dpo import DpoRun, read_config

        dist = init_distributed(args.device)
        try:
            print(DpoRun(read_config(args.config, dict(args.set))).run())
        finally:
            if dist.enabled:
                torch.distributed.destroy_process_group()
        return 0
    if args.command == "sample-eval":
        result = sample_eval(args.model, args.n, args.batch, args.max_bars,
                             read_prompts(args.prompts) if args.prompts else None, args.seed, args.threads,
                             bae_resample=args.bae_resample, constrain=args.constrain)
        text = json.dumps(result, indent=2)
        print(text)
        if args.out:
            Path(args.out).write_text(text + "\n", encoding="utf-8")
        return 0
    overrides = dict(args.set)
    if args.out:
        overrides["out"] = args.out
    if args.max_steps is not None:
        overrides["max_steps"] = args.max_steps
    run = load_config(args.config, args.command, overrides)
    if args.data:
        run = dataclasses.replace(run, data_dir=args.data)
    dist = init_distributed(args.device)
    try:
        trainer = Trainer(run, args.command, dist, init=getattr(args, "init", None),
                          stop_at_step=args.stop_at_step, progress=not args.no_progress)
        trainer.train()
    finally:
        if dist.enabled:
            torch.distributed.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
