"""Measure grids of the whole corpus for the measure model: the music21 corpus's scores and the
OpenScore Lieder and String Quartets (../shared/corpora, see docs/datasets.md).

    python -m training.measure_data build [--kinds voice+piano quartet ...] [--shard 0/2] [--corpora DIR]
    python -m training.measure_data report

Each piece is read as the app opens it (`read_score_file` -> `from_document`, non-strict: what the
grid cannot hold is dropped and listed in `grid.losses`), so the model trains on the very rows and
columns it inpaints. Pieces are appended, one pickle each, to data/measure/grids/<kind>-<shard>.pkl
as they are read: a killed build resumes where it stopped, and a training run can start on the kinds
already read. The split is `training.corpus.split_of` of the work, as for NotaGen.
"""
from __future__ import annotations

import argparse
import pickle
import random
import signal
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from engine.measure.cells import MeasureScore

ROOT = Path(__file__).resolve().parents[1]
GRIDS = ROOT / "data" / "measure" / "grids"
CORPORA = ROOT.parent / "shared" / "corpora"
#: kind -> where its pieces come from; music21's single-tune ABC folk songs (monophonic) are left out
KINDS = ("voice+piano", "quartet", "piano", "choral", "other")
_MUSIC21_KINDS = {"Choral": "choral", "Keyboard": "piano", "Chamber": "quartet"}


def refs_of(kind: str, corpora: Path = CORPORA) -> list:
    """The `training.corpus.PieceRef`s of one kind, in a fixed order (the OpenScore folders under `corpora`)."""
    from training.corpus import ComposerTable, WorkTable, iter_extra, iter_music21

    composers, works = ComposerTable.load(), WorkTable.load()
    refs = []
    if kind in ("voice+piano", "quartet"):
        folder = corpora / ("openscore-lieder" if kind == "voice+piano" else "openscore-quartets")
        if folder.is_dir():
            refs += list(iter_extra(folder, composers, works, labels_csv=folder / "metadata.csv", name=folder.name))
    refs += [ref for ref in iter_music21(composers, works)
             if ref.kind == "file" and _MUSIC21_KINDS.get(ref.instrumentation, "other") == kind]
    return refs


def read_pieces(path: Path) -> list[Piece]:
    """Every piece of a shard file (a file cut short by a kill keeps the pieces before the cut)."""
    pieces = []
    with open(path, "rb") as handle:
        while True:
            try:
                pieces.append(pickle.load(handle))
            except (EOFError, pickle.UnpicklingError):
                return pieces


def load_corpus(kinds: tuple[str, ...] = KINDS, directory: Path | None = None) -> list[Piece]:
    """The pieces read so far of `kinds` (from `GRIDS` by default), each kind's name in `Piece.kind`."""
    pieces = []
    for kind in kinds:
        for path in sorted((directory or GRIDS).glob(f"{kind}-*.pkl")):
            pieces += read_pieces(path)
    return pieces


@dataclass
class Piece:
    """One score's grid, for training the measure model."""

    name: str
    work: str
    split: str
    grid: MeasureScore
    kind: str = "chorale"  # one of KINDS for the grids built here; the chorale data set's pieces are "chorale"


class _Timeout(Exception):
    pass


def _alarm(signum, frame):
    raise _Timeout


def build(kinds: tuple[str, ...], shard: tuple[int, int] = (0, 1), timeout: int = 120, directory: Path | None = None,
          limit: int = 0, corpora: Path = CORPORA) -> None:
    """Read the pieces of `kinds` whose index is `shard[0]` modulo `shard[1]` (`limit` of them drawn
    with a fixed seed, 0: all), skipping those done."""
    from engine.measure.representation import from_document
    from engine.score.formats import read_score_file

    directory = directory or GRIDS
    directory.mkdir(parents=True, exist_ok=True)
    signal.signal(signal.SIGALRM, _alarm)
    for kind in kinds:
        path = directory / f"{kind}-{shard[0]}.pkl"
        skipped = directory / f"{kind}-{shard[0]}.skipped"
        done = {piece.name for piece in read_pieces(path)} if path.exists() else set()
        done |= set(skipped.read_text().split("\n")) if skipped.exists() else set()
        refs = [ref for i, ref in enumerate(refs_of(kind, corpora)) if i % shard[1] == shard[0]]
        if limit:
            refs = random.Random(0).sample(refs, min(limit, len(refs)))
        refs = [ref for ref in refs if ref.id not in done]
        print(f"{kind}: {len(refs)} to read", flush=True)
        for ref in refs:
            started = time.time()
            signal.alarm(timeout)
            try:
                grid = from_document(read_score_file(ref.path))
            except (_Timeout, Exception) as exc:  # a piece that cannot be read is skipped with its reason
                signal.alarm(0)
                print(f"skipped {ref.id}: {type(exc).__name__} {exc}"[:300], flush=True)
                with open(skipped, "a") as handle:
                    handle.write(ref.id + "\n")
                continue
            signal.alarm(0)
            with open(path, "ab") as handle:
                pickle.dump(Piece(ref.id, ref.work, ref.split, grid, kind), handle)
            print(f"{ref.id}: {grid.n_parts}x{grid.n_columns} {time.time() - started:.1f} s", flush=True)


def report(directory: Path | None = None) -> str:
    lines = ["| kind | pieces | train / validation / test | part-measures |", "|---|---|---|---|"]
    for kind in KINDS:
        pieces = load_corpus((kind,), directory)
        splits = Counter(piece.split for piece in pieces)
        cells = sum(piece.grid.n_parts * piece.grid.n_columns for piece in pieces)
        lines.append(f"| {kind} | {len(pieces)} | {splits['train']} / {splits['validation']} / {splits['test']} | {cells:,} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.measure_data")
    parser.add_argument("command", choices=("build", "report"))
    parser.add_argument("--kinds", nargs="+", default=list(KINDS), choices=KINDS)
    parser.add_argument("--shard", default="0/1", help="i/n: read every n-th piece from the i-th (parallel builds)")
    parser.add_argument("--timeout", type=int, default=120, help="seconds per piece before it is skipped")
    parser.add_argument("--corpora", type=Path, default=CORPORA,
                        help="folder holding openscore-lieder/ and openscore-quartets/ (docs/datasets.md)")
    parser.add_argument("--limit", type=int, default=0, help="read N pieces of each kind, drawn with a fixed seed (0: all)")
    args = parser.parse_args(argv)
    if args.command == "report":
        print(report())
        return 0
    index, count = (int(x) for x in args.shard.split("/"))
    build(tuple(args.kinds), (index, count), args.timeout, limit=args.limit, corpora=args.corpora)
    return 0


if __name__ == "__main__":
    sys.exit(main())
