"""What the three training loops (NotaGen, the measure model, M3) share, so that they read configs,
schedule the learning rate, checkpoint, budget time and log in one way.

* A config is a JSON file of sections (`model`, `train`, a stage...); `--set KEY=VALUE` replaces a
  setting by name in whichever section knows it (the value is JSON; a bare word is a string).
* The learning rate: linear warm-up, then constant, linear or cosine decay (to `floor` x lr).
* `last.pt` in the run folder is the resumable state of every trainer: written atomically, read with
  `torch.load(weights_only=True)`, so RNG states are stored as tensors and plain types.
"""
from __future__ import annotations

import argparse
import functools
import json
import math
import os
import random
import sys
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch

#: The resumable training state in a run folder (every trainer).
LAST = "last.pt"
#: One JSON line per logged record (NotaGen's steps and evaluations).
METRICS = "metrics.jsonl"
SCHEDULES = ("constant", "linear", "cosine")

# ---------------------------------------------------------------------------------------------
# settings
# ---------------------------------------------------------------------------------------------


def parse_setting(text: str) -> tuple[str, object]:
    """'key=value' with a JSON value ('steps=300', 'position_signal=false'); bare words are strings."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"--set needs KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def add_set_option(parser: argparse.ArgumentParser, example: str) -> None:
    """The repeatable `--set KEY=VALUE` option; `args.set` is then a list of (key, value) pairs."""
    parser.add_argument("--set", action="append", type=parse_setting, default=[], metavar="KEY=VALUE",
                        help=f"override a setting (JSON value; bare words are strings), e.g. {example}; repeatable")


def read_config(path: str | Path, sections: dict[str, Iterable[str]], overrides: dict | None = None) -> dict:
    """The config file's JSON with `overrides` (name -> value) put into the first of `sections`
    (section -> its setting names) that knows the name; an unknown name is an error."""
    raw = json.loads(Path(path).read_text(encoding="utf-8"))
    known = {section: set(names) for section, names in sections.items()}
    for key, value in (overrides or {}).items():
        section = next((s for s, names in known.items() if key in names), None)
        if section is None:
            raise ValueError(f"unknown setting {key!r} (" + "; ".join(f"{s}: {sorted(n)}" for s, n in known.items()) + ")")
        raw[section] = {**(raw.get(section) or {}), key: value}
    return raw


# ---------------------------------------------------------------------------------------------
# learning-rate schedule
# ---------------------------------------------------------------------------------------------


def lr_factor(step: int, warmup: int, total: int, shape: str = "cosine", floor: float = 0.0) -> float:
    """The factor of the peak learning rate for optimiser step `step` (0 = the first one).

    Warm-up: (step + 1) / warmup, so the first step already learns and step `warmup - 1` is at the
    peak. Then `constant`, or a `linear` / `cosine` decay from the peak at step `warmup` towards
    `floor` at step `total`.
    """
    if shape not in SCHEDULES:
        raise ValueError(f"unknown schedule {shape!r}: {', '.join(SCHEDULES)}")
    if step < warmup:
        return (step + 1) / warmup
    if shape == "constant":
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    decay = 1.0 - progress if shape == "linear" else 0.5 * (1.0 + math.cos(math.pi * progress))
    return floor + (1.0 - floor) * decay


def scheduler(optimizer: torch.optim.Optimizer, warmup: int, total: int, shape: str = "cosine",
              floor: float = 0.0) -> torch.optim.lr_scheduler.LambdaLR:
    """`lr_factor` as a scheduler: call `.step()` after each optimiser step; its `state_dict()` resumes."""
    lr_factor(0, warmup, total, shape, floor)  # reject an unknown shape now, not at the first step
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, functools.partial(lr_factor, warmup=warmup, total=total, shape=shape, floor=floor))


# ---------------------------------------------------------------------------------------------
# checkpoints and RNG states
# ---------------------------------------------------------------------------------------------


def save_checkpoint(path: str | Path, state: dict) -> None:
    """`torch.save` through a temporary file, so a kill while writing leaves the previous one intact."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: str | Path) -> dict | None:
    """The state saved at `path` (on the CPU), or None when there is none."""
    path = Path(path)
    return torch.load(path, map_location="cpu", weights_only=True) if path.exists() else None


def python_rng_state(rng=random) -> dict:
    """A `random.Random`'s (default: the global one's) state as a tensor and plain types."""
    version, internal, gauss = rng.getstate()
    return {"version": version, "state": torch.tensor(internal, dtype=torch.int64), "gauss": gauss}


def set_python_rng_state(state: dict, rng=random) -> None:
    rng.setstate((state["version"], tuple(state["state"].tolist()), state["gauss"]))


def rng_state() -> dict:
    """The global python, numpy, torch and (when present) CUDA RNG states."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": python_rng_state(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    set_python_rng_state(state["python"])
    numpy = state["numpy"]
    np.random.set_state((numpy["kind"], numpy["keys"].numpy().astype(np.uint32), numpy["pos"], numpy["has_gauss"], numpy["cached"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device


class Resumable:
    """A single-process run's resumable state: model, optimizer, schedule, the counters (step, training
    seconds, best validation figure) and every RNG the loop draws from (`rng`, an optional torch
    `generator`, and the global ones that dropout uses), saved to and restored from `path`."""

    def __init__(self, path: str | Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler,
                 rng: random.Random, generator: torch.Generator | None = None) -> None:
        self.path = Path(path)
        self.model, self.optimizer, self.scheduler = model, optimizer, scheduler
        self.rng, self.generator = rng, generator
        self.step, self.wall, self.best = 0, 0.0, math.inf

    def restore(self, state: dict) -> None:
        """Continue from a state written by `save` (the caller loads it: it may need its config first)."""
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["lr_sched"])
        self.step, self.wall, self.best = state["step"], state["wall"], state["best"]
        set_python_rng_state(state["rng"], self.rng)
        set_rng_state(state["global_rng"])  # dropout draws from the global torch RNG
        if self.generator is not None:
            self.generator.set_state(state["generator"])

    def advance(self, loss: torch.Tensor, grad_clip: float) -> tuple[float, float]:
        """One optimisation step on `loss` (gradients clipped to `grad_clip`): (gradient norm, learning rate)."""
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        norm = float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), grad_clip))
        lr = self.optimizer.param_groups[0]["lr"]
        self.optimizer.step()
        self.scheduler.step()
        self.step += 1
        return norm, lr

    def save(self, **extra) -> None:
        """Write the state, with `extra` entries (plain types and tensors) beside it."""
        state = {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                 "lr_sched": self.scheduler.state_dict(), "step": self.step, "wall": self.wall, "best": self.best,
                 "rng": python_rng_state(self.rng), "global_rng": rng_state(), **extra}
        if self.generator is not None:
            state["generator"] = self.generator.get_state()
        save_checkpoint(self.path, state)


# ---------------------------------------------------------------------------------------------
# time budget and logging
# ---------------------------------------------------------------------------------------------


class Budget:
    """A limit on training time. `spent` starts at what the caller counts against the limit (the
    earlier segments of a resumed run, or 0 for a per-invocation limit) and grows with `add`."""

    def __init__(self, max_minutes: float | None, spent: float = 0.0) -> None:
        self.limit = max_minutes * 60 if max_minutes else None
        self.spent = spent

    def add(self, seconds: float) -> None:
        self.spent += seconds

    @property
    def exhausted(self) -> bool:
        return self.limit is not None and self.spent >= self.limit


class RunLog:
    """TensorBoard scalars in `<folder>/tb` and JSON lines in `<folder>/metrics.jsonl`."""

    def __init__(self, folder: str | Path) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.writer = SummaryWriter(str(self.folder / "tb"))

    def scalars(self, step: int, values: dict[str, float | torch.Tensor]) -> None:
        for name, value in values.items():
            self.writer.add_scalar(name, float(value.detach() if isinstance(value, torch.Tensor) else value), step)

    def record(self, record: dict) -> None:
        with open(self.folder / METRICS, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")

    def drop_after(self, step: int) -> None:
        """Forget the records of steps after `step` (logged after the last checkpoint of a killed run:
        they are trained again); summaries stay."""
        path = self.folder / METRICS
        if not path.exists():
            return
        lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
        kept = [line for line in lines if json.loads(line).get("step", 0) <= step or json.loads(line)["kind"] == "summary"]
        if len(kept) != len(lines):
            path.write_text("".join(kept), encoding="utf-8")

    def close(self) -> None:
        self.writer.close()


def progress_bar(total: int, initial: int, desc: str):
    """A tqdm bar that redraws every second on a terminal and once a minute into a log file."""
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc=desc, dynamic_ncols=True,
                mininterval=1.0 if sys.stderr.isatty() else 60.0)
