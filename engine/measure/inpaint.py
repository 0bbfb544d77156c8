"""Inference with the measure model: CSD inpainting (Algorithm 1) and generation of new pieces.

    inpaint(document, locked_cells, ...) -> Rewritten (the new document, lyrics removed)
        Every cell (part, column) not in `locked_cells` is masked and filled one at a time (random or
        left-to-right order), each conditioned on everything unmasked in a window of columns around
        it; then `sweeps` refinement sweeps re-mask a fraction `refine_fraction` of the non-locked
        cells and fill them again. Locked measures keep their MusicXML text byte for byte.

    generate(instruments, n_measures, time_signature, ...) -> ScoreDocument
        A new piece: with a CSD model, Algorithm 1 from an all-masked grid; with an AR model,
        measures in column-first order, each from the history.

With `constrained=True` (default) every generated measure lasts exactly its measure length (and
keeps the original's pickup or short-ending padding); see `MeasureModel.decode_cell`.
"""
from __future__ import annotations

import random
import time
from dataclasses import replace
from fractions import Fraction
from functools import lru_cache
from pathlib import Path
from typing import Callable

import torch

from engine.errors import ModelError, ScoreError, out_of_memory_as_model_error
from engine.measure.batch import make_batch
from engine.measure.context import MeasureLM, grid_layout_for
from engine.measure.cells import Cell, MeasureScore, Part, beat_structure, empty_cell, normalise_instrument
from engine.measure.instruments import part_tokens
from engine.measure.representation import Rewritten, from_document, replace_cells, to_document
from engine.score.splice import rows_of_parts
from engine.score.grid import Column

DEFAULT_CHECKPOINT = Path(__file__).resolve().parents[2] / "assets" / "measure"
#: Columns of context either side of the measures being rewritten. The model was trained on crops of
#: 8 columns and its relative attention clips distances at 16, so farther columns tell it nothing it
#: learnt to use, while the whole score would make every fill cost quadratic in the score's length.
CONTEXT_COLUMNS = 8
#: Sampling temperature of inpainting and generation: at 0.8 the corpus model's inpainted measures keep
#: their key as the real ones do (training.measure_fit, docs/measure_model.md); at 1 it strays.
DEFAULT_TEMPERATURE = 0.8


@lru_cache(maxsize=4)
def _load(path: str) -> MeasureLM:
    if not (Path(path) / "model.safetensors").exists():
        raise ModelError(f"no measure model at {path} (train one: python -m training.measure)")
    return MeasureLM.from_pretrained(path)


def load_model(checkpoint: str | Path | None = None) -> MeasureLM:
    """A measure model from a folder with model.safetensors + config.json (cached)."""
    return _load(str(Path(checkpoint or DEFAULT_CHECKPOINT).resolve()))


def padding_of(cell: Cell) -> tuple[Fraction, Fraction]:
    """(beats of padding before the content, beats of content) of a measure."""
    voice = cell.voices[0] if cell.voices else ()
    before = Fraction(0)
    for event in voice:
        if not event.pad:
            break
        before += event.duration
    content = sum((e.duration for e in voice if not e.pad), Fraction(0)) if voice else Fraction(cell.n_beats)
    if before == cell.n_beats:  # an all-padding cell (a missing measure): fill the whole measure
        return Fraction(0), Fraction(cell.n_beats)
    return before, content


class _Filler:
    """The state of Algorithm 1 on one grid: cells, their encodings and which are masked."""

    def __init__(self, model: MeasureLM, grid: MeasureScore, tokens: list[str], generator: torch.Generator,
                 temperature: float, constrained: bool) -> None:
        self.model = model
        self.grid = grid
        self.cells = [list(row) for row in grid.cells]
        self.P, self.M = grid.n_parts, grid.n_columns
        self.layout, flat = grid_layout_for(model.config, self.cells, tokens, [c.key_sharps for c in grid.columns])
        self.generator = generator
        self.temperature = temperature
        self.constrained = constrained
        self.beat_units = list(model.config.beat_units)
        with torch.no_grad():
            h, memory = model.measure.encode(make_batch(flat, self.beat_units, max_events=model.config.max_events))
        self.h, self.memory = h.unsqueeze(0), memory.unsqueeze(0)
        self.masked = torch.zeros(1, self.P * self.M, dtype=torch.bool)
        self.padding = {(p, m): padding_of(self.cells[p][m]) for p in range(self.P) for m in range(self.M)}

    def token(self, p: int, m: int) -> int:
        return p * self.M + m

    def mask(self, positions) -> None:
        for p, m in positions:
            self.masked[0, self.token(p, m)] = True

    @torch.no_grad()
    def fill(self, p: int, m: int) -> None:
        i = self.token(p, m)
        c, m_in = self.model.context(self.h, self.memory, self.masked, self.layout)
        old = self.cells[p][m]
        before, content = self.padding[(p, m)]
        cell, h, memory = self.model.measure.decode_cell(
            c[0, i], m_in[0, i], old.beat_unit, old.n_beats, temperature=self.temperature, generator=self.generator,
            constrained=self.constrained, pad_before=before, content_beats=content, with_encoding=True,
        )
        if not cell.voices:
            cell = empty_cell(old.beat_unit, old.n_beats)
            h, memory = self.model.measure.encode(make_batch([cell], self.beat_units, max_events=self.model.config.max_events))
            h, memory = h[0], memory[0]
        self.cells[p][m] = cell
        self.h[0, i], self.memory[0, i] = h, memory
        self.masked[0, i] = False

    def result(self) -> MeasureScore:
        return self.grid.with_cells(self.cells)


def _order(positions: list[tuple[int, int]], order: str, rng: random.Random) -> list[tuple[int, int]]:
    if order == "left-to-right":
        return sorted(positions, key=lambda pm: (pm[1], pm[0]))
    if order == "random":
        shuffled = list(positions)
        rng.shuffle(shuffled)
        return shuffled
    raise ValueError("order must be 'random' or 'left-to-right'")


def run_algorithm1(model: MeasureLM, grid: MeasureScore, tokens: list[str], free: list[tuple[int, int]], *,
                   seed: int = 0, temperature: float = DEFAULT_TEMPERATURE, sweeps: int = 0, refine_fraction: float = 0.25,
                   order: str = "random", time_budget_s: float | None = None, constrained: bool = True,
                   on_progress: Callable[[int, int], None] | None = None) -> MeasureScore:
    """Algorithm 1 on `grid`: mask `free`, fill one by one, then refinement sweeps."""
    if model.config.kind != "csd":
        raise ModelError("inpainting needs a CSD measure model (this checkpoint is autoregressive)")
    model.eval()
    rng = random.Random(seed)
    generator = torch.Generator().manual_seed(seed)
    filler = _Filler(model, grid, tokens, generator, temperature, constrained)
    started = time.monotonic()
    n_refine = max(1, round(refine_fraction * len(free))) if free else 0
    total = len(free) + sweeps * n_refine
    done = 0
    filler.mask(free)
    for p, m in _order(free, order, rng):
        filler.fill(p, m)
        done += 1
        if on_progress:
            on_progress(done, total)
    for _ in range(sweeps):
        if time_budget_s is not None and time.monotonic() - started > time_budget_s:
            break
        chosen = rng.sample(free, n_refine)
        filler.mask(chosen)
        for p, m in _order(chosen, order, rng):
            filler.fill(p, m)
            done += 1
            if on_progress:
                on_progress(done, total)
    return filler.result()


def context_windows(columns: list[int], n_columns: int, context: int = CONTEXT_COLUMNS) -> list[range]:
    """Windows of columns to inpaint one at a time: the columns to rewrite (sorted) grouped where
    fewer than 2 * `context` columns separate them, each group with `context` columns either side."""
    groups: list[list[int]] = []
    for column in columns:
        if groups and column - groups[-1][-1] <= 2 * context:
            groups[-1].append(column)
        else:
            groups.append([column])
    return [range(max(0, g[0] - context), min(n_columns, g[-1] + context + 1)) for g in groups]


def inpaint(document, locked_cells: set[tuple[int, int]], *, model: MeasureLM | None = None,
            checkpoint: str | Path | None = None, seed: int = 0, temperature: float = DEFAULT_TEMPERATURE, sweeps: int = 0,
            refine_fraction: float = 0.25, order: str = "random", time_budget_s: float | None = None,
            constrained: bool = True, on_progress: Callable[[int, int], None] | None = None) -> Rewritten:
    """`document` with every cell not in `locked_cells` (part index, column index, both 0-based)
    rewritten by the model, each from a window of `CONTEXT_COLUMNS` columns either side of the
    measures rewritten (`context_windows`). Locked measures keep their MusicXML bytes."""
    model = model or load_model(checkpoint)
    layout = document.layout
    n_parts, n_columns = len(layout.parts), len(layout.columns)
    rows_of_parts(document.musicxml, n_parts)  # a score whose measures cannot be rewritten is refused now
    for p, m in locked_cells:
        if not (0 <= p < n_parts and 0 <= m < n_columns):
            raise ScoreError(f"locked cell ({p}, {m}) is outside the {n_parts} x {n_columns} grid")
    # a part lacking the last measures has nothing there to rewrite
    free = [(p, m) for p in range(n_parts) for m in range(len(layout.measures[p])) if (p, m) not in locked_cells]
    windows = context_windows(sorted({m for _, m in free}), n_columns)
    local_cells = [[(p, m - window.start) for p, m in free if m in window] for window in windows]
    fills = [len(local) + sweeps * max(1, round(refine_fraction * len(local))) for local in local_cells]
    new_cells: dict[tuple[int, int], Cell] = {}
    for index, (window, local) in enumerate(zip(windows, local_cells)):
        grid = from_document(document, columns=window)

        def progress(done: int, _total: int, before=sum(fills[:index])) -> None:
            if on_progress:
                on_progress(before + done, sum(fills))

        with out_of_memory_as_model_error("the measure model"):
            filled = run_algorithm1(model, grid, part_tokens(grid, model.config.instrument_scheme), local, seed=seed + index, temperature=temperature,
                                    sweeps=sweeps, refine_fraction=refine_fraction, order=order,
                                    time_budget_s=time_budget_s, constrained=constrained, on_progress=progress)
        new_cells.update({(p, window.start + m): filled.cells[p][m] for p, m in local})
    return replace_cells(document, new_cells)


def generate(instruments: list[str], n_measures: int, time_signature: str = "4/4", *,
             model: MeasureLM | None = None, checkpoint: str | Path | None = None, seed: int = 0,
             temperature: float = DEFAULT_TEMPERATURE, sweeps: int = 0, refine_fraction: float = 0.25,
             order: str = "left-to-right", key_sharps: int | None = None, title: str = "",
             constrained: bool = True, time_budget_s: float | None = None):
    """A new ScoreDocument of `n_measures` measures for `instruments` (names such as 'soprano',
    'violin'; a row per name) in `time_signature`."""
    model = model or load_model(checkpoint)
    if not instruments or n_measures < 1:
        raise ScoreError("generation needs at least one instrument and one measure")
    beat_unit, n_beats = beat_structure(time_signature)
    parts = tuple(Part(name=name.title() if name.islower() else name, instrument=normalise_instrument(name)) for name in instruments)
    columns = tuple(Column(str(i + 1), time_signature, beat_unit * n_beats, key_sharps) for i in range(n_measures))
    cells = tuple(tuple(empty_cell(beat_unit, n_beats) for _ in range(n_measures)) for _ in parts)
    grid = MeasureScore(parts, columns, cells, title=title)
    tokens = part_tokens(grid, model.config.instrument_scheme)
    if model.config.kind == "ar":
        grid = _generate_ar(model, grid, tokens, seed, temperature, constrained)
    else:
        free = [(p, m) for p in range(len(parts)) for m in range(n_measures)]
        grid = run_algorithm1(model, grid, tokens, free, seed=seed, temperature=temperature, sweeps=sweeps,
                              refine_fraction=refine_fraction, order=order, constrained=constrained,
                              time_budget_s=time_budget_s)
    return to_document(grid)


@torch.no_grad()
def _generate_ar(model: MeasureLM, grid: MeasureScore, tokens: list[str], seed: int, temperature: float,
                 constrained: bool) -> MeasureScore:
    """AR Measure sampling in column-first order (parts in score order)."""
    from engine.measure.context import GridLayout

    model.eval()
    generator = torch.Generator().manual_seed(seed)
    P, M = grid.n_parts, grid.n_columns
    order = [(p, m) for m in range(M) for p in range(P)]
    cells = [list(row) for row in grid.cells]
    beat_units = list(model.config.beat_units)
    layout_full, _ = grid_layout_for(model.config, cells, tokens, [c.key_sharps for c in grid.columns])
    index = torch.tensor([p * M + m for p, m in order])
    layout = GridLayout(*(getattr(layout_full, f)[:, index] for f in ("part", "column", "valid", "instrument", "beat_unit",
                                                                      "n_beats", "key")))
    h = torch.zeros(1, len(order), model.config.d_measure)
    memory = torch.zeros(1, len(order), model.config.mem_key, model.config.mem_val)
    for i, (p, m) in enumerate(order):
        c, m_in = model.context(h, memory, layout)
        old = cells[p][m]
        cell = model.measure.decode_cell(c[0, i], m_in[0, i], old.beat_unit, old.n_beats, temperature=temperature,
                                         generator=generator, constrained=constrained)
        if not cell.voices:
            cell = empty_cell(old.beat_unit, old.n_beats)
        cells[p][m] = cell
        he, me = model.measure.encode(make_batch([cell], beat_units, max_events=model.config.max_events))
        h[0, i], memory[0, i] = he[0], me[0]
    return replace(grid, cells=tuple(tuple(row) for row in cells))
