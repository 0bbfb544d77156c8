"""Train and evaluate the measure model (CSD or AR) on the Bach chorales or on the whole corpus.

    python -m training.measure --config training/configs/measure_tiny.json      # train (resumes)
    python -m training.measure eval --checkpoint assets/measure [--limit N] [--data corpus]  # test-split metrics
    python -m training.measure export --run runs/measure_tiny --out assets/measure
    python -m training.measure_ablation --steps 400                                # Tables 1 and 2

Data: every chorale of `music21.corpus.chorales.Iterator()` is read into the measure grid
(engine.measure.representation, non-strict) once and cached in `data/measure/chorales.pkl`. The
split is by work: `training.corpus.split_of` of the BWV work id (the teammate's data builder's rule),
about 90/5/5. Training examples are random crops of `max_columns` columns of a random training
piece, transposed by a random shift (the instrument tokens record it: 'soprano_shifted-3').
With `"data": "corpus"` (training/configs/measure_corpus.json) the pieces are the grids of the music21
corpus and the OpenScore corpora that `training.measure_data` has read, each kind sampled with a
weight ~ the square root of its measure count (`kind_weights`).

Checkpoints: runs/<name>/last.pt (`training.kit`: model, optimiser, scheduler, step, wall time, RNG
states; the latest only) and runs/<name>/best/ (`MeasureLM.save_pretrained`: model.safetensors +
config.json, best validation NLL); TensorBoard logs in runs/<name>/tb.
"""
from __future__ import annotations

import argparse
import json
import math
import pickle
import platform
import random
import sys
import time
from dataclasses import dataclass, field, replace
from fractions import Fraction
from pathlib import Path

import torch

from engine.measure.batch import beat_unit_index, make_batch
from engine.measure.context import GridLayout, MeasureLM, key_index
from engine.measure.instruments import class_vocabulary, row_instruments
from engine.measure.model import MeasureConfig
from engine.measure.representation import MeasureScore, from_score, transpose
from training import kit
from training.measure_data import Piece, load_corpus

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / "data" / "measure" / "chorales.pkl"


@dataclass
class TrainConfig:
    name: str = "measure_tiny"
    steps: int = 3000
    batch_size: int = 4
    max_columns: int = 8
    lr: float = 2e-3
    warmup: int = 100
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    shifts: tuple[int, int] = (-5, 6)  # transposition augmentation range (semitones, inclusive)
    log_every: int = 20
    eval_every: int = 250
    checkpoint_every: int = 100
    eval_pieces: int = 12
    seed: int = 0
    threads: int = 1
    max_minutes: float = 0.0  # stop (and checkpoint) after this long in this invocation; 0 = no limit
    data: str = "chorales"  # "chorales" (the music21 chorales) or "corpus" (training.measure_data's grids)


# ---------------------------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------------------------


def chorale_work(name: str) -> str:
    from training.corpus import WorkTable, work_key

    return work_key("Bach, Johann Sebastian", Path(name).name, "music21/bach", WorkTable.load(), more_text=name)


def with_instruments(grid: MeasureScore, scheme: str) -> MeasureScore:
    """The grid with each row's instrument set to its token's base name under `scheme`
    (engine.measure.instruments), as inpainting will name it."""
    bases = row_instruments(grid, scheme)
    return replace(grid, parts=tuple(replace(part, instrument=base) for part, base in zip(grid.parts, bases)))


def load_pieces(cache: Path = CACHE, limit: int = 0) -> list[Piece]:
    """The chorales as measure grids (read once, then from the cache)."""
    from training.corpus import split_of

    if cache.exists() and not limit:
        with open(cache, "rb") as handle:
            return [p if isinstance(p, Piece) else Piece(**p) for p in _CacheUnpickler(handle).load()]
    from music21 import corpus

    names = list(corpus.chorales.Iterator(returnType="filename"))
    if limit:
        names = names[:limit]
    pieces = []
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover
        tqdm = lambda x, **_: x  # noqa: E731
    for name in tqdm(names, desc="reading chorales"):
        try:
            grid = with_instruments(from_score(corpus.parse(name), title=name), "names")
        except Exception as exc:  # a piece the representation cannot hold is skipped, with its reason
            print(f"skipped {name}: {exc}", file=sys.stderr)
            continue
        work = chorale_work(name)
        pieces.append(Piece(name, work, split_of(work), grid))
    if not limit:
        cache.parent.mkdir(parents=True, exist_ok=True)
        with open(cache, "wb") as handle:
            pickle.dump([p.__dict__ for p in pieces], handle)
    return pieces


class _CacheUnpickler(pickle.Unpickler):
    """Reads caches written when this module ran as __main__ (Piece pickled as __main__.Piece)."""

    def find_class(self, module, name):
        if name == "Piece":
            return Piece
        return super().find_class(module, name)


def load_training_pieces(data: str) -> list[Piece]:
    """The pieces of `TrainConfig.data`: the chorales, or every grid `training.measure_data` has read."""
    if data == "chorales":
        return load_pieces()
    if data == "corpus":
        pieces = load_corpus()
        if not pieces:
            raise SystemExit("no measure grids read yet: run python -m training.measure_data build")
        return pieces
    raise ValueError(f"unknown measure training data {data!r} (chorales or corpus)")


def interleaved_kinds(pieces: list[Piece]) -> list[Piece]:
    """Pieces in turn by kind (a fixed order), so that the first n of them hold every kind."""
    groups = by_kind(sorted(pieces, key=lambda p: p.name))
    rows = [groups[kind] for kind in sorted(groups)]
    return [row[i] for i in range(max(map(len, rows), default=0)) for row in rows if i < len(row)]


def instrument_vocabulary(pieces: list[Piece], shifts: tuple[int, int]) -> tuple[str, ...]:
    bases = sorted({part.instrument for piece in pieces if piece.split == "train" for part in piece.grid.parts})
    tokens = ["<unk>"]
    for base in bases:
        tokens.append(base)
        tokens.extend(f"{base}_shifted{s:+d}" for s in range(shifts[0], shifts[1] + 1) if s)
    return tuple(tokens)


def beat_unit_vocabulary(pieces: list[Piece]) -> tuple[str, ...]:
    units = sorted({str(cell.beat_unit) for piece in pieces for row in piece.grid.cells for cell in row},
                   key=lambda s: Fraction(s))
    return ("other", *units)


def crop(grid: MeasureScore, start: int, length: int) -> MeasureScore:
    return replace(grid, columns=grid.columns[start:start + length], cells=tuple(row[start:start + length] for row in grid.cells))


def augment(grid: MeasureScore, shift: int) -> MeasureScore:
    try:
        return transpose(grid, shift)
    except ValueError:
        return grid


# ---------------------------------------------------------------------------------------------
# batches
# ---------------------------------------------------------------------------------------------


@dataclass
class GridBatch:
    cells: object  # CellBatch
    layout: GridLayout
    cell_index: torch.Tensor  # [B, N], -1 for padding
    grids: list[MeasureScore] = field(default_factory=list)


def grid_batch(grids: list[MeasureScore], config: MeasureConfig, rng: random.Random | None = None,
               order: str = "grid") -> GridBatch:
    """Tokens of several grids, padded to the largest parts x columns rectangle (order "grid":
    row-major, for CSD) or in column-first order with parts shuffled per column (order "ar")."""
    P = max(g.n_parts for g in grids)
    M = max(g.n_columns for g in grids)
    B, N = len(grids), P * M
    flat = []
    fields_ = {k: torch.zeros(B, N, dtype=torch.long) for k in ("part", "column", "instrument", "beat_unit", "n_beats", "key")}
    valid = torch.zeros(B, N, dtype=torch.bool)
    cell_index = torch.full((B, N), -1, dtype=torch.long)
    beat_units = list(config.beat_units)
    for b, g in enumerate(grids):
        if order == "grid":
            positions = [(p, m) for p in range(P) for m in range(M)]
        else:
            positions = []
            for m in range(g.n_columns):
                rows = list(range(g.n_parts))
                if rng is not None:
                    rng.shuffle(rows)
                positions.extend((p, m) for p in rows)
            positions += [(p, m) for p in range(P) for m in range(M) if p >= g.n_parts or m >= g.n_columns]
        for i, (p, m) in enumerate(positions):
            fields_["part"][b, i] = p
            fields_["column"][b, i] = m
            if p < g.n_parts and m < g.n_columns:
                cell = g.cells[p][m]
                valid[b, i] = True
                cell_index[b, i] = len(flat)
                flat.append(cell)
                fields_["instrument"][b, i] = config.instrument_index(g.parts[p].token)
                fields_["beat_unit"][b, i] = beat_unit_index(cell.beat_unit, beat_units)
                fields_["n_beats"][b, i] = cell.n_beats
                fields_["key"][b, i] = key_index(g.columns[m].key_sharps)
    cells = make_batch(flat, beat_units, shuffle_notes=rng, max_events=config.max_events)
    layout = GridLayout(valid=valid, **fields_)
    return GridBatch(cells, layout, cell_index, grids)


def sample_mask(layout: GridLayout, rng: torch.Generator) -> torch.Tensor:
    """Masked cells: a ratio r ~ U(0, 1) per piece, each cell masked with probability r, at least
    one cell masked (the form chosen for the paper's lost sampling rule, see the docs)."""
    B, N = layout.valid.shape
    ratio = torch.rand(B, 1, generator=rng)
    masked = (torch.rand(B, N, generator=rng) < ratio) & layout.valid
    for b in range(B):
        if not masked[b].any():
            choices = layout.valid[b].nonzero().flatten()
            masked[b, choices[torch.randint(len(choices), (1,), generator=rng)]] = True
    return masked


def kind_weights(pieces: list[Piece]) -> dict[str, float]:
    """Sampling weight of each kind of piece: the square root of its measure count, so that the 153
    quartets are not drowned by 1,800 chorales, nor the 11 piano pieces repeated to a quarter of a batch."""
    columns: dict[str, int] = {}
    for piece in pieces:
        columns[piece.kind] = columns.get(piece.kind, 0) + piece.grid.n_columns
    return {kind: math.sqrt(n) for kind, n in sorted(columns.items())}


def by_kind(pieces: list[Piece]) -> dict[str, list[Piece]]:
    """The pieces of each kind, in their order."""
    groups: dict[str, list[Piece]] = {}
    for piece in pieces:
        groups.setdefault(piece.kind, []).append(piece)
    return groups


def training_grids(groups: dict[str, list[Piece]], weights: dict[str, float], train: TrainConfig,
                   rng: random.Random) -> list[MeasureScore]:
    """One batch of crops: a kind drawn by `weights` (`kind_weights`), then a piece of it (`by_kind`)."""
    kinds = list(weights)
    grids = []
    for _ in range(train.batch_size):
        piece = rng.choice(groups[rng.choices(kinds, [weights[k] for k in kinds])[0]])
        g = piece.grid
        length = min(train.max_columns, g.n_columns)
        start = rng.randrange(g.n_columns - length + 1)
        g = crop(g, start, length)
        grids.append(augment(g, rng.randint(*train.shifts)))
    return grids


def batch_order(config: MeasureConfig) -> str:
    """Token order of a batch: AR's shuffled column-first order, else row-major grid order."""
    return "ar" if config.kind == "ar" else "grid"


def doubled(grid: MeasureScore) -> MeasureScore:
    """The paper's length-augmentation test: every measure played twice in a row (every voice
    repeated, twice the beats), a length never seen in training."""
    cells = tuple(tuple(replace(cell, n_beats=2 * cell.n_beats, voices=tuple(v + v for v in cell.voices)) for cell in row)
                  for row in grid.cells)
    return replace(grid, cells=cells)


def loss_of(model: MeasureLM, batch: GridBatch, generator: torch.Generator) -> dict:
    if model.config.kind == "csd":
        masked = sample_mask(batch.layout, generator)
        return model.csd_loss(batch.cells, batch.layout, batch.cell_index, masked, generator=generator)
    return model.ar_loss(batch.cells, batch.layout, batch.cell_index)


# ---------------------------------------------------------------------------------------------
# evaluation
# ---------------------------------------------------------------------------------------------


def fixed_eval_batches(pieces: list[Piece], config: MeasureConfig, train: TrainConfig, n: int, seed: int = 1234,
                       double: bool = False):
    """Deterministic evaluation batches: one crop per piece, masks drawn with a fixed seed (the
    same crops and masks with `double`, every measure then repeated: see `doubled`)."""
    rng = random.Random(seed)
    gen = torch.Generator().manual_seed(seed)
    batches = []
    for piece in pieces[:n]:
        g = piece.grid
        length = min(train.max_columns, g.n_columns)
        start = rng.randrange(g.n_columns - length + 1)
        g = crop(g, start, length)
        batch = grid_batch([doubled(g) if double else g], config, rng, order=batch_order(config))
        batches.append((batch, sample_mask(batch.layout, gen)))
    return batches


@torch.no_grad()
def evaluate_nll(model: MeasureLM, batches) -> dict[str, float]:
    """Mean NLL (nats) per masked measure (CSD) or per measure (AR)."""
    model.eval()
    total, count = 0.0, 0.0
    for batch, masked in batches:
        if model.config.kind == "csd":
            out = model.csd_loss(batch.cells, batch.layout, batch.cell_index, masked)
        else:
            out = model.ar_loss(batch.cells, batch.layout, batch.cell_index)
        total += float(out["nll_masked"]) * float(out["n_masked"])
        count += float(out["n_masked"])
    return {"nll": total / max(count, 1), "measures": count}


@torch.no_grad()
def evaluate_length(model: MeasureLM, batches, max_cells: int = 64, seed: int = 0) -> dict[str, float]:
    """Length accuracy: masked measures sampled without the length constraint (temperature 1)
    whose every voice sums exactly to the measure's length (padding included). At most
    `max_cells`, spread evenly over the batches (pieces)."""
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    right = tried = 0
    per_batch = max(1, math.ceil(max_cells / max(len(batches), 1)))
    for batch, masked in batches:
        if tried >= max_cells:
            break
        cells = batch.cells
        h, memory = model.measure.encode(cells)
        hg, mg = model._to_grid(h, memory, batch.cell_index)
        if model.config.kind == "csd":
            c, m_in = model.context(hg, mg, masked, batch.layout)
            targets = (masked & batch.layout.valid)[0].nonzero().flatten().tolist()
        else:
            c, m_in = model.context(hg, mg, batch.layout)
            targets = batch.layout.valid[0].nonzero().flatten().tolist()
        flat = cells_list(batch)
        for i in targets[: min(per_batch, max_cells - tried)]:
            target = flat[int(batch.cell_index[0, i])]
            cell = model.measure.decode_cell(c[0, i], m_in[0, i], target.beat_unit, target.n_beats,
                                             generator=gen, constrained=False)
            ok = bool(cell.voices) and all(sum((e.duration for e in v), Fraction(0)) == target.n_beats for v in cell.voices)
            right += ok
            tried += 1
    return {"length_accuracy": right / max(tried, 1), "length_measures": tried}


def cells_list(batch: GridBatch):
    flat = {}
    B, N = batch.cell_index.shape
    for b, g in enumerate(batch.grids):
        for i in range(N):
            index = int(batch.cell_index[b, i])
            if index >= 0:
                flat[index] = g.cells[int(batch.layout.part[b, i])][int(batch.layout.column[b, i])]
    return [flat[i] for i in range(len(flat))]


# ---------------------------------------------------------------------------------------------
# training
# ---------------------------------------------------------------------------------------------


def read_config(path: str | Path, overrides: dict | None = None) -> tuple[dict, TrainConfig]:
    """(model fields, training settings) of a config file; `overrides` (name -> value) replace
    settings of either section by name (`--set key_function=skewgauss --set steps=300`)."""
    data = kit.read_config(path, {"train": TrainConfig.__dataclass_fields__, "model": MeasureConfig.__dataclass_fields__},
                           overrides)
    model, train = dict(data.get("model", {})), dict(data.get("train", {}))
    if "shifts" in train:
        train["shifts"] = tuple(train["shifts"])
    return model, TrainConfig(**train)


def train(config_path: str, run_root: Path = ROOT / "runs", fresh: bool = False, overrides: dict | None = None) -> Path:
    model_fields, tc = read_config(config_path, overrides)
    torch.set_num_threads(tc.threads)
    torch.manual_seed(tc.seed)
    run = run_root / tc.name
    run.mkdir(parents=True, exist_ok=True)
    scheme = model_fields.get("instrument_scheme", "names")
    pieces = [replace(p, grid=with_instruments(p.grid, scheme)) for p in load_training_pieces(tc.data)]
    train_pieces = [p for p in pieces if p.split == "train"]
    valid_pieces = interleaved_kinds([p for p in pieces if p.split == "validation"])
    state = None if fresh else kit.load_checkpoint(run / kit.LAST)
    if state is not None:
        config = MeasureConfig.from_dict(state["config"])
    else:
        config = MeasureConfig.from_dict({
            **model_fields,
            "instruments": class_vocabulary(tc.shifts) if scheme == "classes" else instrument_vocabulary(pieces, tc.shifts),
            "beat_units": beat_unit_vocabulary(pieces),
        })
    model = MeasureLM(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    scheduler = kit.scheduler(optimizer, tc.warmup, tc.steps, "cosine", floor=0.1)
    progress = kit.Resumable(run / kit.LAST, model, optimizer, scheduler, random.Random(tc.seed),
                             torch.Generator().manual_seed(tc.seed))
    if state is not None:
        progress.restore(state)
        print(f"resumed {run} at step {progress.step}")
    rng, generator = progress.rng, progress.generator
    config.save(run / "config.json")
    (run / "train_config.json").write_text(json.dumps(tc.__dict__, indent=2) + "\n")
    eval_batches = fixed_eval_batches(valid_pieces, config, tc, tc.eval_pieces)
    log = kit.RunLog(run)
    print(f"{len(train_pieces)} training / {len(valid_pieces)} validation pieces; "
          f"{sum(p.numel() for p in model.parameters()):,} parameters; {config.kind}")

    def save_checkpoint() -> None:
        progress.save(config=config.to_dict())

    budget, wall_at_start = kit.Budget(tc.max_minutes), progress.wall  # the limit is per invocation: a rerun goes on
    bar = kit.progress_bar(tc.steps, progress.step, tc.name)
    order = batch_order(config)
    groups, weights = by_kind(train_pieces), kind_weights(train_pieces)  # once, not per batch
    clock = time.perf_counter()
    while progress.step < tc.steps:
        model.train()
        batch = grid_batch(training_grids(groups, weights, tc, rng), config, rng, order=order)
        out = loss_of(model, batch, generator)
        norm, lr = progress.advance(out["loss"], tc.grad_clip)
        step = progress.step
        now = time.perf_counter()
        budget.add(now - clock)
        clock, progress.wall = now, wall_at_start + budget.spent
        bar.update(1)
        if step % tc.log_every == 0:
            log.scalars(step, {**{f"train/{key}": value for key, value in out.items()}, "train/grad_norm": norm, "train/lr": lr})
            bar.set_postfix(loss=f"{float(out['loss'].detach()):.2f}", masked=f"{float(out['nll_masked'].detach()):.2f}")
        if step % tc.eval_every == 0 or step == tc.steps:
            metrics = evaluate_nll(model, eval_batches)
            log.scalars(step, {"valid/nll": metrics["nll"]})
            print(f"\nstep {step}: validation NLL {metrics['nll']:.3f} per masked measure ({progress.wall / 60:.1f} min)", flush=True)
            if metrics["nll"] < progress.best:
                progress.best = metrics["nll"]
                model.save_pretrained(run / "best")
                (run / "best" / "training.json").write_text(json.dumps(
                    {"step": step, "wall_s": round(progress.wall), "valid_nll": progress.best, "config": str(config_path)}, indent=2) + "\n")
        if step % tc.checkpoint_every == 0 or step == tc.steps:
            save_checkpoint()
        if budget.exhausted:
            save_checkpoint()
            print(f"time limit reached at step {step}")
            break
    bar.close()
    log.close()
    return run


# ---------------------------------------------------------------------------------------------
# eval and export
# ---------------------------------------------------------------------------------------------


def evaluate(checkpoint: str | Path, limit: int = 0, length_cells: int = 96, threads: int = 1,
             pieces: list[Piece] | None = None, data: str = "chorales") -> dict:
    """Test-split NLL and length accuracy of a checkpoint on its own task (CSD: masked measures;
    AR: every measure from its history; "concurrent" / "single": the ablation tasks), and the same
    on the doubled-length test (`*_doubled`: every measure repeated, twice as long). `data` as in
    `TrainConfig.data`; the test pieces are taken in turn by kind."""
    torch.set_num_threads(threads)
    model = MeasureLM.from_pretrained(checkpoint)
    scheme = model.config.instrument_scheme
    pieces = interleaved_kinds([replace(p, grid=with_instruments(p.grid, scheme))
                                for p in (pieces or load_training_pieces(data)) if p.split == "test"])
    if limit:
        pieces = pieces[:limit]
    tc = TrainConfig()
    metrics: dict = {"task": model.config.kind, "test_pieces": len(pieces)}
    for suffix, double in (("", False), ("_doubled", True)):
        batches = fixed_eval_batches(pieces, model.config, tc, len(pieces), seed=4321, double=double)
        found = {**evaluate_nll(model, batches), **evaluate_length(model, batches, length_cells)}
        metrics.update({f"{key}{suffix}": value for key, value in found.items()})
    return metrics


MODEL_CARD = """# Measure model ({kind}) - small CPU checkpoint

The measure model of Yan & Duan, "Structured polyphonic music modeling via a measure model"
(TISMIR), re-implemented in `engine/measure/` (see docs/measure_model.md). This is a small CPU-trained
checkpoint, not a large quality model.

- Data: {data}; split by work with `training.corpus.split_of` (~90/5/5); random crops of
  {max_columns} measures, transposed by {shifts} semitones (instrument tokens record the shift{keys}).
- Instrument tokens: scheme `{scheme}` (engine/measure/instruments.py).
- Model: {params:,} parameters; config.json holds every size and choice (key function
  `{key_function}`, reader `{reader}`, context layers {layers}).
- Training: {steps} steps of batch {batch_size}, AdamW lr {lr}, {wall_min:.0f} min wall time on {hardware},
  {threads} thread(s). Best validation NLL at step {best_step}.
- Command: `{command}`
- Measured on the test split (`python -m training.measure eval --checkpoint assets/measure --data {data_name}`):
{metrics}

NLL is in nats per masked part-wise measure (masks: ratio ~ U(0,1) per crop, fixed seed). Length
accuracy: masked measures sampled at temperature 1 *without* the length constraint whose every voice
sums exactly to the measure length; with `constrained=True` (the default for inpainting) it is 100%
by construction. The `_doubled` figures are the paper's length-generalisation test: every context
measure repeated once (twice its beats, a length never seen in training), the model expected to
generate doubled measures.
"""


def data_description(pieces: list[Piece], data: str) -> str:
    """The card's line on what the model was trained on."""
    train = [p for p in pieces if p.split == "train"]
    if data == "chorales":
        return (f"the {len(train)} training chorales of the music21 corpus (`music21.corpus.chorales.Iterator()`, "
                f"{len(pieces)} read)")
    counts = ", ".join(f"{kind} {sum(p.kind == kind for p in train)}" for kind in sorted({p.kind for p in pieces}))
    return (f"{len(train)} training pieces of {len(pieces)} read as measure grids by `python -m training.measure_data build` "
            f"(music21 corpus scores, OpenScore Lieder and String Quartets; by kind: {counts}), kinds sampled "
            "with weights ~ the square root of their measure counts")


def export(run: Path, out: Path, metrics: dict | None = None) -> None:
    import shutil

    best = run / "best"
    info = json.loads((best / "training.json").read_text())
    out.mkdir(parents=True, exist_ok=True)
    shutil.copy(best / "model.safetensors", out / "model.safetensors")
    shutil.copy(best / "config.json", out / "config.json")
    tc = TrainConfig(**{k: (tuple(v) if k == "shifts" else v) for k, v in json.loads((run / "train_config.json").read_text()).items()})
    state = kit.load_checkpoint(run / kit.LAST)
    config = MeasureConfig.load(out / "config.json")
    pieces = load_training_pieces(tc.data)
    metrics = metrics or evaluate(out, data=tc.data)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    text = MODEL_CARD.format(
        kind=config.kind.upper(), data=data_description(pieces, tc.data), data_name=tc.data, scheme=config.instrument_scheme,
        keys=", and the key signatures move with it; the key signature is an input" if config.key_context else "",
        max_columns=tc.max_columns, shifts=f"{tc.shifts[0]}..{tc.shifts[1]}",
        params=sum(p.numel() for p in MeasureLM(config).parameters()),
        key_function=config.key_function, reader=config.reader, layers=list(config.layers),
        steps=state["step"], batch_size=tc.batch_size, lr=tc.lr, wall_min=state["wall"] / 60,
        hardware=f"{platform.processor() or platform.machine()} CPU ({platform.system()})", threads=tc.threads,
        best_step=info["step"], command=f"python -m training.measure --config {info['config']}",
        metrics="\n".join(f"  - {k}: {v:.4g}" if isinstance(v, float) else f"  - {k}: {v}" for k, v in metrics.items()),
    )
    (out / "MODEL_CARD.md").write_text(text)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv.pop(0) if argv and argv[0] in ("train", "eval", "export", "data") else "train"
    parser = argparse.ArgumentParser(prog=f"python -m training.measure {command}")
    if command == "train":
        parser.add_argument("--config", default=str(ROOT / "training/configs/measure_tiny.json"))
        parser.add_argument("--fresh", action="store_true", help="ignore an existing checkpoint")
        kit.add_set_option(parser, "--set kind=concurrent --set key_function=skewgauss --set reader=position "
                                   "--set position_signal=false --set memory=false --set name=my_run (model or train)")
        args = parser.parse_args(argv)
        train(args.config, fresh=args.fresh, overrides=dict(args.set))
    elif command == "eval":
        parser.add_argument("--checkpoint", default=str(ROOT / "assets/measure"))
        parser.add_argument("--limit", type=int, default=0, help="test pieces (0: all)")
        parser.add_argument("--length-cells", type=int, default=96)
        parser.add_argument("--data", default="chorales", choices=("chorales", "corpus"))
        args = parser.parse_args(argv)
        print(json.dumps(evaluate(args.checkpoint, args.limit, args.length_cells, data=args.data), indent=2))
    elif command == "export":
        parser.add_argument("--run", default=str(ROOT / "runs/measure_tiny"))
        parser.add_argument("--out", default=str(ROOT / "assets/measure"))
        args = parser.parse_args(argv)
        export(Path(args.run), Path(args.out))
    else:
        pieces = load_pieces()
        print(f"{len(pieces)} pieces: " + ", ".join(f"{s} {sum(p.split == s for p in pieces)}" for s in ("train", "validation", "test")))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
