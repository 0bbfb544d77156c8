"""The measure grid: a score as parts x measures, each cell one part-wise measure.

`measure_layout` is the one reading of a score into rows and columns: the app's `MeasureGrid` (whose
cells measure locks address) and the measure model's `MeasureScore` (engine.measure.representation)
are both built on it, so a lock at (part, column) names the very measure the model rewrites. Rows are
staves as music21 reads them (a piano's two staves are two rows, as they are two voices in NotaGen's
interleaved ABC); columns are the measures of the longest part in score order, labelled with the
number printed in the score ('4a' for the rest of a bar split at a repeat sign).
"""
from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import music21

#: What a measure without any time signature in its score is read as (music21's default metre).
DEFAULT_TIME_SIGNATURE = "4/4"


@dataclass(frozen=True)
class PartInfo:
    """One row of the grid: a staff with its name and instrument."""

    name: str
    instrument: str


@dataclass(frozen=True)
class Column:
    """One measure column: its printed number, its time signature (`DEFAULT_TIME_SIGNATURE` where the
    score has none), its nominal length in quarters and its key signature (sharps; None if none)."""

    number: str
    time_signature: str
    bar_length: Fraction
    key_sharps: int | None = None


@dataclass(frozen=True)
class MeasureLayout:
    """A score's rows (`Part`/`PartStaff`), the measures of each row and the columns they share."""

    parts: tuple[music21.stream.Part, ...]
    measures: tuple[tuple[music21.stream.Measure, ...], ...]
    columns: tuple[Column, ...]


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


def measure_layout(score: music21.stream.Score) -> MeasureLayout:
    """Rows, their measures, and the columns read from the longest row (a shorter row lacks the last ones)."""
    parts = tuple(score.parts)
    measures = tuple(tuple(part.getElementsByClass(music21.stream.Measure)) for part in parts)
    return MeasureLayout(parts, measures, _columns(max(measures, key=len, default=())))


def measure_grid_of(layout: MeasureLayout) -> MeasureGrid:
    """The grid of a score's layout: a row per `Part`/`PartStaff`, the events of each measure."""
    n_columns = len(layout.columns)
    return MeasureGrid(
        parts=tuple(_part_info(part) for part in layout.parts),
        columns=layout.columns,
        cells=tuple(
            tuple(_events(ms[i]) if i < len(ms) else () for i in range(n_columns))
            for ms in layout.measures
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


def _columns(measures) -> tuple[Column, ...]:
    """Time and key signatures carry over from the measure that sets them (or the context before)."""
    columns = []
    default = music21.meter.TimeSignature(DEFAULT_TIME_SIGNATURE)
    time_signature = key = None
    for measure in measures:
        if measure.timeSignature is not None:
            time_signature = measure.timeSignature
        elif time_signature is None:
            time_signature = measure.getContextByClass(music21.meter.TimeSignature)
        keys = list(measure.getElementsByClass(music21.key.KeySignature))
        if keys:
            key = keys[0].sharps
        elif key is None:
            found = measure.getContextByClass(music21.key.KeySignature)
            key = found.sharps if found is not None else None
        metre = time_signature if time_signature is not None else default
        columns.append(
            Column(
                number=f"{measure.number}{measure.numberSuffix or ''}",
                time_signature=metre.ratioString,
                bar_length=Fraction(metre.barDuration.quarterLength),
                key_sharps=key,
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

