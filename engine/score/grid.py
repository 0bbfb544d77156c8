"""The measure grid: a score as parts x measures, each cell one part-wise measure.

Locks in the app address cells of this grid, and the measure model reads and writes it. Rows are
staves as music21 reads them (a piano's two staves are two rows, as they are two voices in NotaGen's
interleaved ABC); columns are measures in score order, labelled with the number printed in the score.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from fractions import Fraction

import music21


@dataclass(frozen=True)
class PartInfo:
    """One row of the grid: a staff with its name and instrument."""

    name: str
    instrument: str


@dataclass(frozen=True)
class Column:
    """One measure column: its printed number, its time signature and its nominal length in quarters."""

    number: str
    time_signature: str
    bar_length: Fraction


@dataclass(frozen=True)
class Event:
    """A note, chord or rest inside a part-wise measure. `pitches` is empty for a rest."""

    voice: int
    offset: Fraction
    duration: Fraction
    pitches: tuple[str, ...]
    ties: tuple[str, ...]


@dataclass(frozen=True)
class MeasureGrid:
    """`cells[p][m]` holds the events of part `p` in measure column `m` (empty for a missing measure)."""

    parts: tuple[PartInfo, ...]
    columns: tuple[Column, ...]
    cells: tuple[tuple[tuple[Event, ...], ...], ...]

    def column_of_number(self, number: str) -> int:
        """The column index of a measure number as printed in the score (the first one if repeated)."""
        for index, column in enumerate(self.columns):
            if column.number == str(number):
                return index
        raise KeyError(f"there is no measure {number}")

    def to_dict(self) -> dict:
        """A JSON-serialisable form; fractions become strings such as '1/3'."""
        return _jsonable(asdict(self))


def measure_grid(score: music21.stream.Score) -> MeasureGrid:
    """Read the grid from a music21 score (one row per `Part`/`PartStaff`)."""
    parts = list(score.parts)
    measures_per_part = [list(part.getElementsByClass(music21.stream.Measure)) for part in parts]
    n_columns = max((len(ms) for ms in measures_per_part), default=0)
    longest = max(measures_per_part, key=len, default=[])
    return MeasureGrid(
        parts=tuple(_part_info(part) for part in parts),
        columns=_columns(longest),
        cells=tuple(
            tuple(_events(ms[i]) if i < len(ms) else () for i in range(n_columns))
            for ms in measures_per_part
        ),
    )


def _part_info(part: music21.stream.Part) -> PartInfo:
    instrument = part.getInstrument(returnDefault=False)
    # music21 sets an unnamed part's id to id(part), a memory address: never use that as a name
    given_id = part.id if isinstance(part.id, str) else None
    name = part.partName or (instrument.partName if instrument else None) or given_id
    return PartInfo(
        name=str(name or ""),
        instrument=str((instrument.instrumentName if instrument else None) or name or ""),
    )


def _columns(measures: list[music21.stream.Measure]) -> tuple[Column, ...]:
    columns = []
    time_signature = None
    for measure in measures:
        if measure.timeSignature is not None:
            time_signature = measure.timeSignature
        elif time_signature is None:
            time_signature = measure.getContextByClass(music21.meter.TimeSignature)
        bar_length = (
            Fraction(time_signature.barDuration.quarterLength)
            if time_signature is not None
            else Fraction(measure.duration.quarterLength)
        )
        number = f"{measure.number}{measure.numberSuffix or ''}"
        columns.append(
            Column(
                number=number,
                time_signature=time_signature.ratioString if time_signature is not None else "",
                bar_length=bar_length,
            )
        )
    return tuple(columns)


def _events(measure: music21.stream.Measure) -> tuple[Event, ...]:
    voices = list(measure.voices) or [measure]
    events = []
    for voice_index, voice in enumerate(voices):
        for element in voice.notesAndRests:
            pitches = tuple(p.nameWithOctave for p in element.pitches)
            notes = element.notes if isinstance(element, music21.chord.Chord) else [element]
            ties = tuple(
                (n.tie.type if getattr(n, "tie", None) is not None else "") for n in notes
            ) if pitches else ()
            events.append(
                Event(
                    voice=voice_index,
                    offset=Fraction(element.offset),
                    duration=Fraction(element.quarterLength),
                    pitches=pitches,
                    ties=ties,
                )
            )
    return tuple(events)


def _jsonable(value):
    if isinstance(value, Fraction):
        return str(value)
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value
