"""Musical fit of inpainted measures against the real measures they replace, per kind of piece.

    nice -n 10 .venv/bin/python -m training.measure_fit --pieces 10 [--checkpoint assets/measure] [--temperature 0.8]

Held-out pieces of each kind (the test split of `training.corpus.split_of`, then the validation
split; `--splits` changes that): voice + piano (shared/corpora/openscore-lieder), string quartets
(shared/corpora/openscore-quartets), piano (the music21 corpus's keyboard pieces) and Bach chorales.
In each piece `--holes` holes of `--width` whole columns are blanked at seeded places (in the kinds of
`--every-hole`, by default piano, whose 2 held-out pieces would give a few measures only: every window
of `--width` columns, side by side) and inpainted as the app does (`run_algorithm1` on the
`CONTEXT_COLUMNS` window around the hole, length-constrained), then compared with the real measures:

* chromatic share: note onsets whose pitch class is outside the key signature's major scale (the
  same set as its relative minor's natural scale; no signature reads as C);
* neighbour distance: per part and hole measure, semitones from the measure's mean pitch to the middle
  of the pitch range of the same part in the `NEIGHBOURS` columns either side of the hole (the locked
  context a composer hears the hole against: every part of a hole column is regenerated). The real
  measures move a few semitones from it; a line an octave off its neighbours moves about 12. (The
  distance to the range's nearest edge was about 0 for the real measures, so no ratio could be read.)
* onset density: note onsets (chord events with a new note) per beat of the measure, summed over a
  part's voices;
* NLL (nats per masked measure, the real measures under the hole mask) and length accuracy (hole
  measures sampled without the length constraint whose every voice fills the measure exactly), as
  `training.measure` measures them on chorale crops.

The issue's targets: each inpainted figure within 1.5x of the real one, the chromatic share no
higher than 1.5x the real one.
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from engine.measure.batch import make_batch
from engine.measure.cells import STEP_SEMITONES, Cell, MeasureScore
from engine.measure.context import MeasureLM, grid_layout_for
from engine.measure.inpaint import context_windows, load_model, run_algorithm1
from engine.measure.instruments import part_tokens
from engine.measure.representation import from_document
from training.measure import GridBatch, chorale_work, evaluate_length, evaluate_nll

ROOT = Path(__file__).resolve().parents[1]
CORPORA = ROOT.parent / "shared" / "corpora"
KINDS = ("voice+piano", "quartet", "piano", "chorale")
NEIGHBOURS = 2
MAJOR = (0, 2, 4, 5, 7, 9, 11)


def held_out(kind: str, n: int, splits: tuple[str, ...], seed: int = 0) -> list[tuple[str, str]]:
    """(name, path) of `n` pieces of `kind` from `splits`, in split order, seeded within a split."""
    from training.corpus import ComposerTable, WorkTable, iter_extra, iter_music21, split_of

    if kind == "chorale":
        from music21 import corpus

        names = [str(name) for name in corpus.chorales.Iterator(returnType="filename")]
        refs = [(_chorale_file(corpus.getWork(name), name), split_of(chorale_work(name))) for name in names]
    elif kind == "piano":
        refs = [(ref.path, ref.split) for ref in iter_music21(ComposerTable.load(), WorkTable.load())
                if ref.instrumentation == "Keyboard" and ref.kind == "file"]
    else:
        folder = CORPORA / ("openscore-lieder" if kind == "voice+piano" else "openscore-quartets")
        refs = [(ref.path, ref.split) for ref in iter_extra(folder, ComposerTable.load(), WorkTable.load(),
                                                              labels_csv=folder / "metadata.csv", name=folder.name)]
    rng = random.Random(seed)
    chosen = []
    for split in splits:
        paths = sorted({path for path, s in refs if s == split})
        chosen += rng.sample(paths, len(paths))
    return [(Path(path).name, path) for path in chosen[:n]]


def _chorale_file(found, name: str) -> str:
    """The file of a chorale name: music21 lists several for some (bwv190.7 and bwv190.7-inst)."""
    paths = found if isinstance(found, list) else [found]
    return str(next((path for path in paths if Path(path).stem == Path(name).name), paths[0]))


@dataclass
class Tally:
    """Sums over the hole measures of one kind, for the real measures or the inpainted ones."""

    notes: int = 0
    outside: int = 0
    onsets: int = 0
    beats: float = 0.0
    distance: float = 0.0
    measured: int = 0  # part-measures with notes whose part has notes in the neighbouring columns

    def add(self, cell: Cell, scale: set[int], neighbours: tuple[int, int] | None) -> None:
        pitches = []
        self.beats += float(cell.content_beats)
        for voice in cell.voices:
            for event in voice:
                if event.pad:
                    continue
                new = [note for note in event.chord if not note.tie]
                self.onsets += bool(new)
                self.notes += len(new)
                self.outside += sum((STEP_SEMITONES[n.pitch.step] + n.pitch.alter) % 12 not in scale for n in new)
                pitches += [note.pitch.midi for note in event.chord]
        if pitches and neighbours is not None:
            self.distance += abs(sum(pitches) / len(pitches) - (neighbours[0] + neighbours[1]) / 2)
            self.measured += 1

    def figures(self) -> dict[str, float]:
        return {"chromatic": self.outside / max(self.notes, 1), "distance": self.distance / max(self.measured, 1),
                "density": self.onsets / max(self.beats, 1e-9)}


@dataclass
class KindReport:
    pieces: int = 0
    holes: int = 0
    measures: int = 0
    nll_sum: float = 0.0
    length_right: float = 0.0
    real: Tally = field(default_factory=Tally)
    inpainted: Tally = field(default_factory=Tally)
    skipped: list[str] = field(default_factory=list)


def scale_of(key_sharps: int | None) -> set[int]:
    tonic = (7 * (key_sharps or 0)) % 12
    return {(tonic + step) % 12 for step in MAJOR}


def _range(grid: MeasureScore, p: int, columns: list[int]) -> tuple[int, int] | None:
    """Lowest and highest pitch of row `p` in `columns`."""
    pitches = [n.pitch.midi for m in columns for voice in grid.cells[p][m].voices for e in voice for n in e.chord]
    return (min(pitches), max(pitches)) if pitches else None


def fit_hole(model: MeasureLM, grid: MeasureScore, hole: list[int], report: KindReport, seed: int,
             temperature: float = 1.0) -> None:
    """Inpaint the columns `hole` of `grid` (a window) and add both versions' figures to `report`."""
    tokens = part_tokens(grid, model.config.instrument_scheme)
    free = [(p, m) for p in range(grid.n_parts) for m in hole]
    filled = run_algorithm1(model, grid, tokens, free, seed=seed, temperature=temperature)
    around = [m for m in range(hole[0] - NEIGHBOURS, hole[-1] + NEIGHBOURS + 1) if 0 <= m < grid.n_columns and m not in hole]
    for p, m in free:
        scale, neighbours = scale_of(grid.columns[m].key_sharps), _range(grid, p, around)
        report.real.add(grid.cells[p][m], scale, neighbours)
        report.inpainted.add(filled.cells[p][m], scale, neighbours)
    cells = [list(row) for row in grid.cells]
    layout, flat = grid_layout_for(model.config, cells, tokens, [c.key_sharps for c in grid.columns])
    config = model.config
    batch = GridBatch(make_batch(flat, list(config.beat_units), max_events=config.max_events), layout,
                      torch.arange(len(flat)).view(1, -1), [grid])
    masked = torch.zeros(1, len(flat), dtype=torch.bool)
    for p, m in free:
        masked[0, p * grid.n_columns + m] = True
    nll = evaluate_nll(model, [(batch, masked)])
    length = evaluate_length(model, [(batch, masked)], max_cells=len(free), seed=seed)
    report.nll_sum += nll["nll"] * nll["measures"]
    report.length_right += length["length_accuracy"] * length["length_measures"]
    report.holes += 1
    report.measures += len(free)


def hole_starts(n_columns: int, holes: int, width: int, seed: int) -> list[int]:
    """First columns of the holes of `width` columns in a piece: `holes` seeded places, or (`holes`
    0) every window side by side; the first and the last column always stay as context."""
    if n_columns < width + 2:
        raise ValueError(f"{n_columns} measures leave no room for a hole")
    if holes == 0:
        return list(range(1, n_columns - width, width))
    rng = random.Random(seed)
    return sorted(rng.sample(range(1, n_columns - width), min(holes, n_columns - width - 1)))


def fit_piece(model: MeasureLM, path: str, holes: int, width: int, report: KindReport, seed: int,
              temperature: float = 1.0) -> None:
    """Inpaint `holes` holes of `width` columns in the piece at `path` (0: every window) into `report`."""
    from engine.score.formats import read_score_file

    document = read_score_file(path)
    n_columns = document.n_measures
    for index, start in enumerate(hole_starts(n_columns, holes, width, seed)):
        hole = list(range(start, start + width))
        window = context_windows(hole, n_columns)[0]
        grid = from_document(document, columns=window)
        fit_hole(model, grid, [m - window.start for m in hole], report, seed + index, temperature)
    report.pieces += 1


def _ratio(new: float, real: float) -> str:
    return f"{new / real:.2f}x" if real else "n/a"


def table(reports: dict[str, KindReport]) -> str:
    lines = ["| kind | pieces | holes | hole measures | NLL | length accuracy | chromatic share real / inpainted (x) "
             "| neighbour distance real / inpainted (semitones, x) | onsets per beat real / inpainted (x) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for kind, r in reports.items():
        real, new = r.real.figures(), r.inpainted.figures()
        n = max(r.measures, 1)
        lines.append(
            f"| {kind} | {r.pieces} | {r.holes} | {r.measures} | {r.nll_sum / n:.1f} | {r.length_right / n:.0%} "
            f"| {real['chromatic']:.1%} / {new['chromatic']:.1%} ({_ratio(new['chromatic'], real['chromatic'])}) "
            f"| {real['distance']:.1f} / {new['distance']:.1f} ({_ratio(new['distance'], real['distance'])}) "
            f"| {real['density']:.2f} / {new['density']:.2f} ({_ratio(new['density'], real['density'])}) |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--pieces", type=int, default=10, help="pieces per kind")
    parser.add_argument("--holes", type=int, default=2, help="holes per piece (0: every window of --width columns)")
    parser.add_argument("--every-hole", default="piano",
                        help="kinds whose every window of --width columns is a hole (piano: 2 held-out pieces)")
    parser.add_argument("--width", type=int, default=2, help="columns per hole")
    parser.add_argument("--kinds", default=",".join(KINDS))
    parser.add_argument("--splits", default="test,validation", help="held-out splits, in order of preference")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--temperature", type=float, default=1.0, help="sampling temperature of the inpainted measures")
    parser.add_argument("--json", default=None, help="also write the figures here")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    model = load_model(args.checkpoint)
    reports: dict[str, KindReport] = {}
    every_hole = set(args.every_hole.split(","))
    for kind in args.kinds.split(","):
        report = reports[kind] = KindReport()
        holes = 0 if kind in every_hole else args.holes
        for index, (name, path) in enumerate(held_out(kind, args.pieces, tuple(args.splits.split(",")), args.seed)):
            started = time.time()
            try:
                fit_piece(model, path, holes, args.width, report, args.seed + index, args.temperature)
            except Exception as exc:  # a piece the grid cannot hold is listed and skipped
                report.skipped.append(f"{name}: {type(exc).__name__}: {exc}")
                print(f"skipped {kind} {name}: {exc}", file=sys.stderr, flush=True)
                continue
            print(f"{kind} {name}: {time.time() - started:.0f} s", file=sys.stderr, flush=True)
    print(table(reports))
    for kind, report in reports.items():
        for line in report.skipped:
            print(f"skipped ({kind}) {line}")
    if args.json:
        Path(args.json).write_text(json.dumps({kind: {"pieces": r.pieces, "holes": r.holes, "measures": r.measures,
                                                      "nll": r.nll_sum / max(r.measures, 1),
                                                      "length_accuracy": r.length_right / max(r.measures, 1),
                                                      "real": r.real.figures(), "inpainted": r.inpainted.figures(),
                                                      "skipped": r.skipped} for kind, r in reports.items()}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
