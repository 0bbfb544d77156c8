"""One music21 measure <-> one `Cell` of the measure model (Yan & Duan, section 2.1).

Reading applies the paper's preprocessing:
  * duration normalisation: durations are fractions of the beat unit of the time signature
    (`beat_structure`), so every common measure is 2, 3 or 4 beats long;
  * cross-beat splitting: an event crossing an integer beat is split into tied pieces;
  * padding: an incomplete measure (pickup, ending) is completed with pad events, before the
    content for a pickup (music21's `paddingLeft`, or a short first measure) and after it otherwise.
Writing keeps the split notes as tied notes and pad events as measure padding, so reading what was
written gives the same cell again.
"""
from __future__ import annotations

from fractions import Fraction

import music21

from engine.errors import ScoreError
from engine.measure.cells import (
    MAX_ALTER,
    MAX_OCTAVE,
    MIN_ALTER,
    MIN_OCTAVE,
    STEPS,
    Cell,
    ChordEvent,
    Note,
    Pitch,
    duration_exponents,
    empty_cell,
    split_at_beats,
)


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


def read_cell(measure, column_index, beat_unit, n_beats, strict, losses, where) -> Cell:
    """The cell of a music21 measure in column `column_index`; what it cannot hold goes to `losses`
    (or raises `ScoreError` with `strict`), `where` naming the measure."""
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
                    for k, piece in enumerate(_binary_parts(length)):  # 47/48 holds the prime 47: tied parts
                        events.append(ChordEvent(chord if k == 0 else tuple(Note(n.pitch, True) for n in chord), piece, pad))
                    continue
                events.append(ChordEvent(chord, length, pad))
        voices.append(tuple(events))
    if not voices:
        losses.append(f"{where}: empty measure padded")
        return empty_cell(beat_unit, n_beats, pad=True)
    return Cell(beat_unit, n_beats, tuple(voices))


def _binary_parts(length: Fraction) -> list[Fraction]:
    """A multiple of 1/48 beat as the sum of its binary parts 2^k/48, longest first: each of them holds
    only the primes 2 and 3, so every one is a duration the model can write."""
    units = int(length * 48)
    return [Fraction(1 << k, 48) for k in reversed(range(units.bit_length())) if units >> k & 1]


class TieState:
    """The music21 notes of the last event of each voice index, to connect tie flags to ties."""

    def __init__(self) -> None:
        self.last: dict[int, dict[Pitch, music21.note.Note]] = {}


def fill_measure(measure: music21.stream.Measure, cell: Cell, ties: TieState | None = None) -> None:
    """Write `cell` into an (emptied) music21 measure: one stream per voice, padding as padding."""
    ties = ties or TieState()
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
    # Explicit offsets from the measure's start: `append` would start after whatever the cleared
    # measure still holds (a dynamic or direction at beat 3), and the content would overflow the bar.
    if len(streams) == 1:
        _insert_in_sequence(measure, streams[0])
    else:
        for v, elements in enumerate(streams):
            voice = music21.stream.Voice(id=str(v + 1))
            _insert_in_sequence(voice, elements)
            measure.insert(0, voice)


def _insert_in_sequence(stream, elements) -> None:
    offset = Fraction(0)
    for element in elements:
        stream.insert(music21.common.opFrac(offset), element)
        offset += Fraction(element.quarterLength)


def clear_measure(measure: music21.stream.Measure) -> bool:
    """Remove the notes, rests and voices of a measure (keep clefs, keys, barlines, directions, ...);
    True if a removed note carried lyrics (the model writes none, so the caller reports the loss)."""
    had_lyrics = any(note.lyrics for note in measure.recurse().notes)
    for voice in list(measure.voices):
        measure.remove(voice)
    for element in list(measure.getElementsByClass(music21.note.GeneralNote)):
        measure.remove(element)
    measure.paddingLeft = 0
    measure.paddingRight = 0
    return had_lyrics
