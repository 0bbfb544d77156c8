"""Scores <-> the measure model's grid (`MeasureScore`): reading, writing, transposing.

The rows and columns come from `engine.score.grid.measure_layout`, the reading the app's locks use;
each cell is read and written by engine.measure.measure_cells (the paper's preprocessing, section 2.1).
Writing a grid back (`to_score`, `replace_cells`) keeps the split notes as tied notes, so reading what
was written gives the same grid again: grid -> music21 -> MusicXML -> ScoreDocument -> grid is
exact (tests/test_measure_representation.py, scripts in `python -m engine.measure.representation`).
Grace notes, microtones, unpitched notes and overfull or overlapping voices are not representable:
reading raises `ScoreError` with `strict=True`, else drops or repairs them (and counts in `losses`).
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace

import music21

from engine.errors import ScoreError, describe
from engine.measure.cells import (
    MAX_ALTER,
    MAX_OCTAVE,
    Cell,
    MIN_ALTER,
    MIN_OCTAVE,
    STEP_SEMITONES,
    MeasureScore,
    Note,
    Part,
    Pitch,
    beat_structure,
    empty_cell,
    normalise_instrument,
)
from engine.measure.measure_cells import TieState, clear_measure, fill_measure, read_cell
from engine.score.splice import rows_of_parts, splice_measures
from engine.score.grid import MeasureLayout, measure_layout


# ---------------------------------------------------------------------------------------------
# music21 -> MeasureScore
# ---------------------------------------------------------------------------------------------


def from_document(document, strict: bool = False, columns: Sequence[int] | None = None) -> MeasureScore:
    """The grid of a `ScoreDocument`, on the very layout its `grid` (and so its locks) is read from;
    `columns` reads only those columns (a window of a long score)."""
    return _read_layout(document.layout, document.title, strict, columns)


def from_score(score: music21.stream.Score, title: str = "", strict: bool = False) -> MeasureScore:
    return _read_layout(measure_layout(score), title, strict)


def _read_layout(layout: MeasureLayout, title: str, strict: bool, columns: Sequence[int] | None = None) -> MeasureScore:
    if not layout.parts:
        raise ScoreError("the score has no parts")
    if not layout.columns:
        raise ScoreError("the score has no measures")
    columns = columns if columns is not None else range(len(layout.columns))
    losses: list[str] = []
    cells = []
    for p, part_measures in enumerate(layout.measures):
        row = []
        for m in columns:
            column = layout.columns[m]
            beat_unit, n_beats = beat_structure(column.time_signature)
            if m < len(part_measures):
                where = f"part {p + 1}, measure {column.number}"
                row.append(read_cell(part_measures[m], m, beat_unit, n_beats, strict, losses, where))
            else:
                losses.append(f"part {p + 1} has no measure {column.number}: padded")
                row.append(empty_cell(beat_unit, n_beats, pad=True))
        cells.append(tuple(row))
    return MeasureScore(
        parts=tuple(_read_part(part) for part in layout.parts),
        columns=tuple(layout.columns[m] for m in columns),
        cells=tuple(cells),
        title=title,
        losses=tuple(losses),
    )


def _read_part(part: music21.stream.Part) -> Part:
    instrument = part.getInstrument(returnDefault=False)
    name = part.partName or (instrument.partName if instrument else None) or ""
    first_clef = next(iter(part.recurse().getElementsByClass(music21.clef.Clef)), None)
    return Part(
        name=str(name),
        instrument=normalise_instrument(str(name or (instrument.instrumentName if instrument else "") or "")),
        clef=_clef_name(first_clef),
    )


def _clef_name(clef) -> str:
    if clef is None:
        return ""
    return f"{clef.sign}{clef.line or ''}{clef.octaveChange:+d}" if clef.sign else ""


# ---------------------------------------------------------------------------------------------
# MeasureScore -> music21
# ---------------------------------------------------------------------------------------------


def to_score(grid: MeasureScore) -> music21.stream.Score:
    """A music21 score of the grid: split notes stay tied notes, pad events become measure padding
    (or rests, where a model put padding inside a measure)."""
    score = music21.stream.Score()
    if grid.title:
        score.insert(0, music21.metadata.Metadata(title=grid.title))
    for p, part_info in enumerate(grid.parts):
        part = music21.stream.Part()
        part.id = f"P{p + 1}"
        if part_info.name:
            part.partName = part_info.name
            instrument = music21.instrument.Instrument()
            instrument.partName = part_info.name
            instrument.instrumentName = part_info.name
            part.insert(0, instrument)
        ties = TieState()
        previous_column = None
        for m, column in enumerate(grid.columns):
            measure = music21.stream.Measure(number=_measure_number(column.number))
            suffix = re.sub(r"^\d+", "", column.number)
            if suffix:
                measure.numberSuffix = suffix
            if m == 0:
                clef = _clef_from_name(part_info.clef) or _default_clef(grid.cells[p])
                measure.insert(0, clef)
            if column.key_sharps is not None and (previous_column is None or previous_column.key_sharps != column.key_sharps):
                measure.insert(0, music21.key.KeySignature(column.key_sharps))
            if previous_column is None or previous_column.time_signature != column.time_signature:
                measure.insert(0, music21.meter.TimeSignature(column.time_signature))
            fill_measure(measure, grid.cells[p][m], ties)
            part.append(measure)
            previous_column = column
        score.insert(0, part)
    return score


def to_document(grid: MeasureScore):
    from engine.score.document import ScoreDocument
    from engine.score.formats import score_to_musicxml

    return ScoreDocument(musicxml=score_to_musicxml(to_score(grid), in_place=True), title=grid.title)


def _measure_number(number: str) -> int:
    match = re.match(r"\d+", number)
    return int(match.group(0)) if match else 0


def _clef_from_name(name: str):
    match = re.fullmatch(r"([A-Z]+)(\d*)([+-]\d+)", name or "")
    if not match:
        return None
    sign, line, octave = match.group(1), match.group(2), int(match.group(3))
    try:
        clef = music21.clef.clefFromString(f"{sign}{line}", octaveShift=octave)
    except Exception:  # an unusual clef: let the default decide
        return None
    return clef


def _default_clef(cells) -> music21.clef.Clef:
    pitches = [n.pitch.midi for cell in cells for voice in cell.voices for e in voice for n in e.chord]
    if not pitches:
        return music21.clef.TrebleClef()
    mean = sum(pitches) / len(pitches)
    if mean < 55:
        return music21.clef.BassClef()
    if mean < 62:
        return music21.clef.Treble8vbClef()
    return music21.clef.TrebleClef()


@dataclass(frozen=True)
class Rewritten:
    """A document with some measures rewritten, the (part, column) cells whose lyrics went with
    their notes (the model writes no lyrics) and the kept measures whose spanners had to be closed
    (`engine.score.spanners`): the app tells the user rather than change them silently."""

    document: object  # ScoreDocument
    lyrics_removed: tuple[tuple[int, int], ...] = ()
    spanners_closed: tuple[str, ...] = ()

    @property
    def warnings(self) -> list[str]:
        n = len(self.lyrics_removed)
        return ([f"lyrics removed from {n} measure{'s' * (n != 1)}"] if n else []) + list(self.spanners_closed)


def replace_cells(document, cells: dict[tuple[int, int], Cell]) -> Rewritten:
    """`document` with the measure at each (part, column) of `cells` rewritten as its cell.

    Only the columns around the rewritten ones are copied and written by music21; their `<measure>`
    elements replace the originals in the document's own MusicXML (engine.score.splice), so every
    other measure, the part list and the header keep their bytes. A tie flag on the first event of a
    rewritten measure is written as a tie stop only: the measure before is not touched."""
    from engine.score.document import ScoreDocument
    from engine.score.formats import score_to_musicxml

    if not cells:
        return Rewritten(ScoreDocument(document.musicxml, document.title))
    rows = rows_of_parts(document.musicxml, len(document.layout.parts))
    columns = sorted({m for _, m in cells})
    first = max(0, columns[0] - 1)  # a column before: the window's first measure gets the clef/key/metre added
    window = document.excerpt(first, columns[-1])
    lyrics = []
    for p, measures in enumerate(measure_layout(window).measures):  # the cells `from_document` read
        ties = TieState()
        for k, measure in enumerate(measures):
            if (p, first + k) in cells:
                if clear_measure(measure):
                    lyrics.append((p, first + k))
                fill_measure(measure, cells[(p, first + k)], ties)
            else:
                ties = TieState()
    try:
        exported = score_to_musicxml(window, in_place=True)
    except Exception as exc:  # music21's exporter raises many types; the user's score stays as it was
        raise ScoreError(f"the regenerated measures could not be written as MusicXML: {describe(exc)}") from exc
    columns_of_part = [{m for p, m in cells if p in part_rows} for part_rows in rows]
    musicxml, closed = splice_measures(document.musicxml, exported, first, columns_of_part)
    return Rewritten(ScoreDocument(musicxml=musicxml, title=document.title), tuple(sorted(lyrics)), tuple(closed))


# ---------------------------------------------------------------------------------------------
# transposition (data augmentation, section 5.2)
# ---------------------------------------------------------------------------------------------


def transpose(grid: MeasureScore, semitones: int) -> MeasureScore:
    """Shift every pitch by `semitones`, spelled with the fewest accidentals over the piece; the
    instrument tokens record the shift ('violin_shifted-7') and the key signatures move with it."""
    if semitones == 0:
        return grid
    pitches = {n.pitch for row in grid.cells for cell in row for voice in cell.voices for e in voice for n in e.chord}
    best = None
    base = round(semitones * 7 / 12)
    for steps in (base - 1, base, base + 1):
        mapping = {}
        cost = 0
        for pitch in pitches:
            moved = _move(pitch, steps, semitones)
            if moved is None:
                break
            mapping[pitch] = moved
            cost += abs(moved.alter)
        else:
            if best is None or cost < best[0]:
                best = (cost, mapping, steps)
    if best is None:
        raise ValueError(f"cannot transpose by {semitones} semitones within double accidentals")
    _, mapping, steps = best
    cells = tuple(
        tuple(
            replace(cell, voices=tuple(
                tuple(replace(e, chord=tuple(sorted(Note(mapping[n.pitch], n.tie) for n in e.chord))) for e in voice)
                for voice in cell.voices
            ))
            for cell in row
        )
        for row in grid.cells
    )
    parts = tuple(replace(part, shift=part.shift + semitones) for part in grid.parts)
    fifths = _fifths(steps, semitones)
    columns = tuple(column if column.key_sharps is None else replace(column, key_sharps=column.key_sharps + fifths)
                    for column in grid.columns)
    return replace(grid, parts=parts, columns=columns, cells=cells)


def _fifths(steps: int, semitones: int) -> int:
    """The key signature's change (in sharps) of a transposition by `steps` diatonic steps and
    `semitones`: the f with 4f = steps (mod 7) and 7f = semitones (mod 12) nearest 0."""
    return min((f for f in range(-42, 43) if (4 * f - steps) % 7 == 0 and (7 * f - semitones) % 12 == 0), key=abs)


def _move(pitch: Pitch, steps: int, semitones: int) -> Pitch | None:
    diatonic = pitch.diatonic + steps
    octave, step = divmod(diatonic, 7)
    natural = 12 * (octave + 1) + STEP_SEMITONES[step]
    alter = pitch.midi + semitones - natural
    if not MIN_ALTER <= alter <= MAX_ALTER or not MIN_OCTAVE <= octave <= MAX_OCTAVE:
        return None
    return Pitch(octave, step, alter)


# ---------------------------------------------------------------------------------------------
# checking the round trip over a corpus: python -m engine.measure.representation [N]
# ---------------------------------------------------------------------------------------------


def round_trip(score: music21.stream.Score, title: str = "") -> tuple[MeasureScore, MeasureScore]:
    """(grid of `score`, grid read back from the MusicXML written from that grid)."""
    from engine.score.document import ScoreDocument

    grid = from_score(score, title=title, strict=True)
    document = to_document(grid)
    again = from_score(ScoreDocument(document.musicxml, title).score(), title=title, strict=True)
    return grid, again


def first_difference(a: MeasureScore, b: MeasureScore) -> str:
    if a.parts != b.parts:
        return f"parts differ: {a.parts} / {b.parts}"
    if a.columns != b.columns:
        for x, y in zip(a.columns, b.columns):
            if x != y:
                return f"column differs: {x} / {y}"
        return f"{len(a.columns)} / {len(b.columns)} columns"
    for p, (ra, rb) in enumerate(zip(a.cells, b.cells)):
        for m, (ca, cb) in enumerate(zip(ra, rb)):
            if ca != cb:
                return f"part {p + 1} column {m}: {ca} / {cb}"
    return ""


def _main(argv=None) -> int:
    import argparse
    import time

    from music21 import corpus

    parser = argparse.ArgumentParser(description="round-trip every Bach chorale of the music21 corpus")
    parser.add_argument("limit", nargs="?", type=int, default=0)
    args = parser.parse_args(argv)
    names = list(corpus.chorales.Iterator(returnType="filename"))
    if args.limit:
        names = names[: args.limit]
    failures = []
    start = time.time()
    for name in names:
        try:
            grid, again = round_trip(corpus.parse(name), name)
            reason = first_difference(grid, again)
        except Exception as exc:  # report every failure with its reason
            reason = f"{type(exc).__name__}: {exc}"
        if reason:
            failures.append((name, reason))
            print(f"FAIL {name}: {reason[:300]}")
    print(f"{len(names) - len(failures)}/{len(names)} chorales round-trip exactly ({time.time() - start:.0f} s)")
    return 0 if not failures else 1


if __name__ == "__main__":
    raise SystemExit(_main())