"""The measure model's view of a score: a grid of part-wise measures (Yan & Duan, section 2 and 2.1).

    MeasureScore
      parts[p]      Part: name, instrument token base, transposition shift, clef
      columns[m]    Column: printed number, time signature, key signature (carried, not modelled)
      cells[p][m]   Cell: beat unit, number of beats, voices
        voice         a tuple of Events (chord-duration tuples)
          Event         chord: a sorted tuple of Notes (empty = rest), duration in beats, pad flag
            Note          (Pitch, tie): tie = the note continues the previous note of that pitch
              Pitch         diatonic step, accidental (-2 double flat .. +2 double sharp), octave

Preprocessing (section 2.1), applied when a score is read:
  * duration normalisation: durations are fractions of the beat unit of the time signature
    (`beat_structure`), so every common measure is 2, 3 or 4 beats long;
  * cross-beat splitting: an event crossing an integer beat is split into tied pieces;
  * padding: an incomplete measure (pickup, ending) is completed with pad events, before the
    content for a pickup (music21's `paddingLeft`, or a short first measure) and after it otherwise.

Writing a grid back (`to_score`, `write_cell`) keeps the split notes as tied notes, so reading what
was written gives the same grid again: grid -> music21 -> MusicXML -> ScoreDocument -> grid is
exact (tests/test_measure_representation.py, scripts in `python -m engine.measure.representation`).
Grace notes, microtones, unpitched notes and overfull or overlapping voices are not representable:
reading raises `ScoreError` with `strict=True`, else drops or repairs them (and counts in `losses`).
"""
from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field, replace
from fractions import Fraction
from functools import cached_property

import music21

from engine.errors import ScoreError, describe

STEPS = "CDEFGAB"
STEP_SEMITONES = (0, 2, 4, 5, 7, 9, 11)
MIN_ALTER, MAX_ALTER = -2, 2
MIN_OCTAVE, MAX_OCTAVE = 0, 9
#: Durations are products of powers of these primes (section 2.3).
PRIMES = (2, 3, 5, 7, 11)
#: Exponent range of each prime; the paper's range was lost in extraction. -8..8 covers a 1/256
#: beat (a 1024th note in 4/4) and every triplet, quintuplet, septuplet and 11-tuplet duration.
MIN_EXPONENT, MAX_EXPONENT = -8, 8


@dataclass(frozen=True, order=True)
class Pitch:
    """A spelled pitch: step 0..6 (C..B), alter -2..2, octave (scientific: C4 is middle C)."""

    octave: int
    step: int
    alter: int

    @property
    def midi(self) -> int:
        return 12 * (self.octave + 1) + STEP_SEMITONES[self.step] + self.alter

    @property
    def name(self) -> str:
        accidental = {-2: "--", -1: "-", 0: "", 1: "#", 2: "##"}[self.alter]
        return f"{STEPS[self.step]}{accidental}{self.octave}"

    @property
    def diatonic(self) -> int:
        """Diatonic index (7 per octave): what staff position the note sits on."""
        return 7 * self.octave + self.step

    @classmethod
    def parse(cls, name: str) -> Pitch:
        """'C#4', 'B-3', 'E--5' (music21 spelling)."""
        match = re.fullmatch(r"([A-G])(##|#|--|-|)(-?\d+)", name)
        if not match:
            raise ValueError(f"not a pitch name: {name!r}")
        alter = {"": 0, "#": 1, "##": 2, "-": -1, "--": -2}[match.group(2)]
        return cls(int(match.group(3)), STEPS.index(match.group(1)), alter)

    def __repr__(self) -> str:
        return self.name


@dataclass(frozen=True, order=True)
class Note:
    pitch: Pitch
    tie: bool = False

    def __repr__(self) -> str:
        return f"{self.pitch.name}{'~' if self.tie else ''}"


@dataclass(frozen=True)
class Event:
    """A chord-duration tuple. `chord` is sorted and has no repeated pitch; () is a rest.
    A pad event (`pad=True`, empty chord) completes an incomplete measure."""

    chord: tuple[Note, ...]
    duration: Fraction
    pad: bool = False

    def __repr__(self) -> str:
        body = "PAD" if self.pad else ("[" + " ".join(map(repr, self.chord)) + "]" if self.chord else "r")
        return f"{body}*{self.duration}"


Voice = tuple[Event, ...]


@dataclass(frozen=True)
class Cell:
    """One part-wise measure. `beat_unit` is in quarter notes; every voice lasts `n_beats` beats."""

    beat_unit: Fraction
    n_beats: int
    voices: tuple[Voice, ...]

    @property
    def content_beats(self) -> Fraction:
        """Beats of real content (the measure length without padding) of the first voice."""
        return sum((e.duration for e in self.voices[0] if not e.pad), Fraction(0)) if self.voices else Fraction(0)


@dataclass(frozen=True)
class Part:
    """A row. `instrument` is the instrument token's base name; `shift` the transposition applied
    by augmentation (section 5.2), which the token carries: 'violin_shifted-7'."""

    name: str
    instrument: str
    shift: int = 0
    clef: str = field(default="", compare=False)  # carried for writing, not part of the model's grid

    @property
    def token(self) -> str:
        return instrument_token(self.instrument, self.shift)


@dataclass(frozen=True)
class Column:
    number: str
    time_signature: str
    key_sharps: int | None = None


@dataclass(frozen=True)
class MeasureScore:
    parts: tuple[Part, ...]
    columns: tuple[Column, ...]
    cells: tuple[tuple[Cell, ...], ...]
    title: str = ""
    losses: tuple[str, ...] = field(default=(), compare=False)

    @property
    def n_parts(self) -> int:
        return len(self.parts)

    @property
    def n_columns(self) -> int:
        return len(self.columns)

    def with_cells(self, cells) -> MeasureScore:
        return replace(self, cells=tuple(tuple(row) for row in cells))

    def transposed(self, semitones: int) -> MeasureScore:
        return transpose(self, semitones)


def instrument_token(instrument: str, shift: int = 0) -> str:
    return instrument if shift == 0 else f"{instrument}_shifted{shift:+d}"


def normalise_instrument(name: str) -> str:
    """'Violin I' -> 'violin', 'Soprano' -> 'soprano', 'Violoncello 2' -> 'violoncello'."""
    text = re.sub(r"[^a-z0-9]+", " ", name.lower()).split()
    while text and (text[-1].isdigit() or text[-1] in {"i", "ii", "iii", "iv", "v", "vi"}):
        text.pop()
    return "_".join(text) or "unknown"


# ---------------------------------------------------------------------------------------------
# beats and durations
# ---------------------------------------------------------------------------------------------


def beat_structure(time_signature: str) -> tuple[Fraction, int]:
    """(beat unit in quarter notes, beats per measure) of a time signature such as '6/8'.

    Simple meters (numerator 1-4) beat the denominator's note; compound meters (multiples of 3
    above 3) beat its dotted value; other even numerators (8/8, 10/8) are grouped in pairs when that
    gives 2-4 beats; anything else beats the denominator's note."""
    numerator, denominator = (int(x) for x in time_signature.split("/"))
    unit = Fraction(4, denominator)
    if numerator <= 4:
        return unit, numerator
    if numerator % 3 == 0:
        return 3 * unit, numerator // 3
    if numerator % 2 == 0 and numerator // 2 <= 4:
        return 2 * unit, numerator // 2
    return unit, numerator


def duration_exponents(duration: Fraction) -> tuple[int, ...]:
    """The exponents of `PRIMES` whose product is `duration` (3/4 -> (-2, 1, 0, 0, 0))."""
    duration = Fraction(duration)
    if duration <= 0:
        raise ValueError(f"duration {duration} is not positive")
    exponents = []
    num, den = duration.numerator, duration.denominator
    for prime in PRIMES:
        e = 0
        while num % prime == 0:
            num //= prime
            e += 1
        while den % prime == 0:
            den //= prime
            e -= 1
        exponents.append(e)
    if num != 1 or den != 1:
        raise ValueError(f"duration {duration} has a prime factor above {PRIMES[-1]}")
    if not all(MIN_EXPONENT <= e <= MAX_EXPONENT for e in exponents):
        raise ValueError(f"duration {duration} needs an exponent outside {MIN_EXPONENT}..{MAX_EXPONENT}")
    return tuple(exponents)


def duration_from_exponents(exponents) -> Fraction:
    value = Fraction(1)
    for prime, e in zip(PRIMES, exponents):
        value *= Fraction(prime) ** int(e)
    return value


def split_at_beats(onset: Fraction, duration: Fraction) -> list[tuple[Fraction, Fraction]]:
    """Pieces (onset, duration) of a span cut at every integer beat strictly inside it."""
    pieces = []
    end = onset + duration
    start = onset
    while True:
        boundary = Fraction(start.numerator // start.denominator + 1)  # the next integer beat
        if boundary >= end:
            pieces.append((start, end - start))
            return pieces
        pieces.append((start, boundary - start))
        start = boundary


# ---------------------------------------------------------------------------------------------
# music21 -> MeasureScore
# ---------------------------------------------------------------------------------------------


def from_document(document, strict: bool = False) -> MeasureScore:
    """The grid of a `ScoreDocument` (read from its own parsed score; the document is not changed)."""
    return from_score(document._parsed, title=document.title, strict=strict)


def from_score(score: music21.stream.Score, title: str = "", strict: bool = False) -> MeasureScore:
    parts = list(score.parts)
    if not parts:
        raise ScoreError("the score has no parts")
    measures = [list(part.getElementsByClass(music21.stream.Measure)) for part in parts]
    n_columns = max(len(ms) for ms in measures)
    if n_columns == 0:
        raise ScoreError("the score has no measures")
    longest = max(measures, key=len)
    losses: list[str] = []
    columns = _read_columns(longest)
    cells = []
    for p, part_measures in enumerate(measures):
        row = []
        for m in range(n_columns):
            beat_unit, n_beats = beat_structure(columns[m].time_signature)
            if m < len(part_measures):
                where = f"part {p + 1}, measure {columns[m].number}"
                row.append(_read_cell(part_measures[m], m, beat_unit, n_beats, strict, losses, where))
            else:
                losses.append(f"part {p + 1} has no measure {columns[m].number}: padded")
                row.append(empty_cell(beat_unit, n_beats, pad=True))
        cells.append(tuple(row))
    return MeasureScore(
        parts=tuple(_read_part(part) for part in parts),
        columns=columns,
        cells=tuple(cells),
        title=title,
        losses=tuple(losses),
    )


def empty_cell(beat_unit: Fraction, n_beats: int, pad: bool = False) -> Cell:
    """A measure of one voice of rests (or pad events), one per beat."""
    return Cell(Fraction(beat_unit), n_beats, (tuple(Event((), Fraction(1), pad) for _ in range(n_beats)),))


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


def _read_columns(measures: list[music21.stream.Measure]) -> tuple[Column, ...]:
    columns = []
    time_signature = None
    key = None
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
        columns.append(
            Column(
                number=f"{measure.number}{measure.numberSuffix or ''}",
                time_signature=time_signature.ratioString if time_signature is not None else "4/4",
                key_sharps=key,
            )
        )
    return tuple(columns)


def _note_list(element, strict: bool, losses: list[str], where: str) -> tuple[Note, ...]:
    if isinstance(element, music21.note.Rest):
        return ()
    if isinstance(element, music21.note.Unpitched) or isinstance(element, music21.percussion.PercussionChord):
        raise ScoreError(f"{where}: unpitched notes are not supported")
    notes = element.notes if isinstance(element, music21.chord.Chord) else [element]
    result = {}
    for note in notes:
        pitch = note.pitch
        alter = pitch.accidental.alter if pitch.accidental is not None else 0
        if alter != int(alter) or not MIN_ALTER <= alter <= MAX_ALTER:
            if strict:
                raise ScoreError(f"{where}: the accidental of {pitch.nameWithOctave} is not supported")
            losses.append(f"{where}: microtone {pitch.nameWithOctave} rounded")
            alter = max(MIN_ALTER, min(MAX_ALTER, round(alter)))
        octave = pitch.octave if pitch.octave is not None else pitch.implicitOctave
        octave = max(MIN_OCTAVE, min(MAX_OCTAVE, octave))
        tie = note.tie is not None and note.tie.type in ("stop", "continue")
        p = Pitch(octave, STEPS.index(pitch.step), int(alter))
        result[p] = result.get(p, False) or tie
    return tuple(sorted(Note(p, t) for p, t in result.items()))


def _ql(value) -> Fraction:
    return Fraction(value).limit_denominator(1 << 20)


def _read_cell(measure, column_index, beat_unit, n_beats, strict, losses, where) -> Cell:
    direct = list(measure.getElementsByClass(music21.note.GeneralNote))
    streams = ([measure] if direct else []) + list(measure.voices)
    full = beat_unit * n_beats
    voices = []
    for stream in streams:
        timeline = []  # (onset ql, duration ql, notes)
        cursor = Fraction(0)
        for element in stream.getElementsByClass(music21.note.GeneralNote):
            duration = _ql(element.quarterLength)
            if duration == 0:
                if strict:
                    raise ScoreError(f"{where}: grace notes are not supported")
                losses.append(f"{where}: grace note dropped")
                continue
            offset = _ql(element.offset)
            if offset < cursor:
                if strict:
                    raise ScoreError(f"{where}: overlapping events in one voice")
                losses.append(f"{where}: overlapping event dropped")
                continue
            if offset > cursor:
                if strict:
                    raise ScoreError(f"{where}: a gap in a voice")
                losses.append(f"{where}: gap filled with a rest")
                timeline.append((cursor, offset - cursor, (), False))
            timeline.append((offset, duration, _note_list(element, strict, losses, where), False))
            cursor = offset + duration
        if not timeline:
            continue
        content = cursor
        if content > full:
            if strict:
                raise ScoreError(f"{where}: the voice lasts {content} quarters, the measure {full}")
            losses.append(f"{where}: overfull voice cut")
            timeline = [(o, min(d, full - o), n, pad) for o, d, n, pad in timeline if o < full]
            content = full
        padding_left = _ql(measure.paddingLeft or 0)
        if padding_left == 0 and content < full and not measure.paddingRight and (column_index == 0 or measure.number == 0):
            padding_left = full - content  # a pickup that music21 did not mark (it does on reading MusicXML)
        padding_left = min(padding_left, full - content)
        shifted = [(o + padding_left, d, n, pad) for o, d, n, pad in timeline]
        if padding_left:
            shifted.insert(0, (Fraction(0), padding_left, (), True))
        if content + padding_left < full:
            shifted.append((content + padding_left, full - content - padding_left, (), True))
        events = []
        for onset, duration, notes, pad in shifted:
            for index, (start, length) in enumerate(split_at_beats(onset / beat_unit, duration / beat_unit)):
                chord = notes if index == 0 else tuple(Note(n.pitch, True) for n in notes)
                try:
                    duration_exponents(length)
                except ValueError as exc:
                    if strict:
                        raise ScoreError(f"{where}: {exc}") from None
                    # an odd tuplet written back approximately: snap the end to 1/48 beat
                    end = Fraction(round((start + length) * 48), 48)
                    length = end - Fraction(round(start * 48), 48)
                    losses.append(f"{where}: duration {exc} snapped")
                    if length <= 0:
                        continue
                events.append(Event(chord, length, pad))
        voices.append(tuple(events))
    if not voices:
        losses.append(f"{where}: empty measure padded")
        return empty_cell(beat_unit, n_beats, pad=True)
    return Cell(beat_unit, n_beats, tuple(voices))


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
        ties = _TieState()
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


class _TieState:
    """The music21 notes of the last event of each voice index, to connect tie flags to ties."""

    def __init__(self) -> None:
        self.last: dict[int, dict[Pitch, music21.note.Note]] = {}


def fill_measure(measure: music21.stream.Measure, cell: Cell, ties: _TieState | None = None) -> None:
    """Write `cell` into an (emptied) music21 measure: one stream per voice, padding as padding."""
    ties = ties or _TieState()
    streams = []
    for v, voice in enumerate(cell.voices):
        events = list(voice)
        lead = 0
        while lead < len(events) and events[lead].pad:
            lead += 1
        tail = len(events)
        while tail > lead and events[tail - 1].pad:
            tail -= 1
        if v == 0:
            left = sum((e.duration for e in events[:lead]), Fraction(0)) * cell.beat_unit
            right = sum((e.duration for e in events[tail:]), Fraction(0)) * cell.beat_unit
            measure.paddingLeft = music21.common.opFrac(left)
            measure.paddingRight = music21.common.opFrac(right)
        elements = []
        for event in events[lead:tail]:
            quarter_length = event.duration * cell.beat_unit
            if event.pad or not event.chord:
                element = music21.note.Rest(quarterLength=quarter_length)
                ties.last[v] = {}
            else:
                notes = []
                current = {}
                for note in event.chord:
                    n = music21.note.Note(note.pitch.name)
                    if note.tie:
                        before = ties.last.get(v, {}).get(note.pitch)
                        if before is not None:
                            before.tie = music21.tie.Tie("continue" if before.tie is not None and before.tie.type == "stop" else "start")
                        n.tie = music21.tie.Tie("stop")
                    notes.append(n)
                    current[note.pitch] = n
                element = notes[0] if len(notes) == 1 else music21.chord.Chord(notes)
                element.quarterLength = quarter_length
                if len(notes) > 1:
                    current = {note.pitch: element.notes[i] for i, note in enumerate(event.chord)}
                    for i, note in enumerate(event.chord):
                        if notes[i].tie is not None:
                            element.notes[i].tie = notes[i].tie
                ties.last[v] = current
            elements.append(element)
        streams.append(elements)
    if len(streams) == 1:
        for element in streams[0]:
            measure.append(element)
    else:
        for v, elements in enumerate(streams):
            voice = music21.stream.Voice(id=str(v + 1))
            for element in elements:
                voice.append(element)
            measure.insert(0, voice)


def clear_measure(measure: music21.stream.Measure) -> None:
    """Remove the notes, rests and voices of a measure (keep clefs, keys, barlines, ...)."""
    for voice in list(measure.voices):
        measure.remove(voice)
    for element in list(measure.getElementsByClass(music21.note.GeneralNote)):
        measure.remove(element)
    measure.paddingLeft = 0
    measure.paddingRight = 0


def replace_cells(document, grid: MeasureScore, cells: set[tuple[int, int]]):
    """A new document: `document` with the measures at `cells` (part, column) rewritten from `grid`.

    Every other measure is copied untouched (lyrics, fermatas and all). A tie flag on the first
    event of a rewritten measure is written as a tie stop only: the measure before is not touched."""
    from engine.score.document import ScoreDocument
    from engine.score.formats import score_to_musicxml

    score = document.score()
    parts = list(score.parts)
    for p, part in enumerate(parts):
        measures = list(part.getElementsByClass(music21.stream.Measure))
        ties = _TieState()
        for m, measure in enumerate(measures):
            if (p, m) in cells:
                clear_measure(measure)
                fill_measure(measure, grid.cells[p][m], ties)
            else:
                ties = _TieState()
    try:
        musicxml = score_to_musicxml(score, in_place=True)
    except Exception as exc:  # music21's exporter raises many types; the user's score stays as it was
        raise ScoreError(f"the regenerated measures could not be written as MusicXML: {describe(exc)}") from exc
    return ScoreDocument(musicxml=musicxml, title=document.title)


# ---------------------------------------------------------------------------------------------
# transposition (data augmentation, section 5.2)
# ---------------------------------------------------------------------------------------------


def transpose(grid: MeasureScore, semitones: int) -> MeasureScore:
    """Shift every pitch by `semitones`, spelled with the fewest accidentals over the piece; the
    instrument tokens record the shift ('violin_shifted-7')."""
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
                best = (cost, mapping)
    if best is None:
        raise ValueError(f"cannot transpose by {semitones} semitones within double accidentals")
    mapping = best[1]
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
    return replace(grid, parts=parts, cells=cells)


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
