"""Size limits on a score, checked on the raw file before any music library parses it.

music21 and abc2xml take time and memory in proportion to what a file declares, not to its size: 82 bytes
of MIDI can declare days of music, a few megabytes 100,000 measures or 10,000 Humdrum spines. These
counts cost one pass over the bytes (the XML tree is parsed by defusedxml anyway), so a file that
exceeds them is refused at once with a message naming the limit; the worker's budget
(`engine.score.sandbox`) catches whatever they miss.
"""
from __future__ import annotations

import re
import struct
from xml.etree.ElementTree import Element

from engine.errors import ScoreError

MAX_PARTS = 64
MAX_MEASURES = 5_000
"""Measures in a part (the 2,000-measure test score opens in a few seconds)."""
MAX_NOTES = 200_000
"""Notes and rests in the whole score (MIDI: note and other events)."""
MAX_QUARTERS = 4 * MAX_MEASURES
"""Length of a part in quarter notes (MIDI: of a track)."""
MAX_TRACKS = 2 * MAX_PARTS
MAX_HUMDRUM_SPINES = 2 * MAX_PARTS
MAX_TEXT_LINE = 20_000
"""Characters on one line of ABC or Humdrum (abc2xml's parser slows down sharply on very long lines)."""


def _refuse(name: str, what: str, count: int, limit: int) -> None:
    if count > limit:
        raise ScoreError(f"{name} has {count:,} {what}; the limit is {limit:,}")


def check_musicxml(root: Element, name: str) -> None:
    """Parts, measures, notes, divisions and durations of a parsed (not yet interpreted) MusicXML tree."""
    if root.tag == "score-partwise":
        parts = root.findall("part")
        measures = max((len(part.findall("measure")) for part in parts), default=0)
    else:
        parts = root.findall("part-list/score-part")
        measures = len(root.findall("measure"))
    _refuse(name, "parts", len(parts), MAX_PARTS)
    _refuse(name, "measures in a part", measures, MAX_MEASURES)
    _refuse(name, "notes", sum(1 for _ in root.iter("note")), MAX_NOTES)
    divisions = 1.0
    for element in root.iter():
        if element.tag not in ("divisions", "duration"):
            continue
        try:
            value = float(element.text or "")
        except ValueError:
            raise ScoreError(f"{name} has <{element.tag}>{(element.text or '')[:20]}</{element.tag}>, "
                             "which is not a number") from None
        if element.tag == "divisions":
            if not value > 0:
                raise ScoreError(f"{name} has <divisions>{element.text}</divisions>; divisions of a quarter "
                                 "note must be a positive number")
            divisions = value
        elif value / divisions > MAX_QUARTERS:
            raise ScoreError(f"{name} has a note or rest {value / divisions:,.0f} quarter notes long; "
                             f"the limit is {MAX_QUARTERS:,}")


def check_midi(data: bytes, name: str) -> None:
    """Tracks, events and length of a standard MIDI file, read from its chunks without decoding notes.

    A file whose chunks cannot be walked is left to music21, which says what is wrong with it."""
    if len(data) < 14 or data[:4] != b"MThd":
        return
    header_length, _, declared_tracks, division = struct.unpack(">IHHH", data[4:14])
    if division == 0:
        raise ScoreError(f"{name} declares 0 ticks per quarter note in its MIDI header, which is invalid")
    _refuse(name, "MIDI tracks", declared_tracks, MAX_TRACKS)
    ticks_per_quarter = division if division < 0x8000 else 24 * 80  # SMPTE time: at most 30 fps x 80 ticks
    position, tracks, events = 8 + header_length, 0, 0
    while position + 8 <= len(data):
        kind, length = data[position: position + 4], struct.unpack(">I", data[position + 4: position + 8])[0]
        position += 8
        if kind == b"MTrk":
            tracks += 1
            _refuse(name, "MIDI tracks", tracks, MAX_TRACKS)
            ticks, count = _track_length(data[position: position + length])
            events += count
            _refuse(name, "MIDI events", events, MAX_NOTES)
            quarters = ticks // ticks_per_quarter
            if quarters > MAX_QUARTERS:
                raise ScoreError(f"{name} has a MIDI track {quarters:,} quarter notes long "
                                 f"({ticks:,} ticks); the limit is {MAX_QUARTERS:,}")
        position += length


_CHANNEL_DATA_BYTES = {0x8: 2, 0x9: 2, 0xA: 2, 0xB: 2, 0xC: 1, 0xD: 1, 0xE: 2}


def _track_length(track: bytes) -> tuple[int, int]:
    """(ticks, events) of one track chunk; stops where the chunk stops making sense."""
    position, ticks, events, running = 0, 0, 0, 0
    while position < len(track) and events <= MAX_NOTES:
        delta, position = _variable_length(track, position)
        ticks += delta
        events += 1
        if position >= len(track):
            break
        status = track[position]
        if status == 0xFF or status in (0xF0, 0xF7):
            position += 2 if status == 0xFF else 1
            length, position = _variable_length(track, position)
            position += length
            continue
        if status & 0x80:
            running = status
            position += 1
        data_bytes = _CHANNEL_DATA_BYTES.get(running >> 4)
        if data_bytes is None:
            break
        position += data_bytes
    return ticks, events


def _variable_length(data: bytes, position: int) -> tuple[int, int]:
    value = 0
    for _ in range(4):
        if position >= len(data):
            break
        byte = data[position]
        position += 1
        value = (value << 7) | (byte & 0x7F)
        if not byte & 0x80:
            break
    return value, position


_ABC_TUNE = re.compile(r"^X:", re.MULTILINE)


def check_abc(text: str, name: str) -> None:
    """One tune per file, line lengths and bar lines of ABC text."""
    tunes = len(_ABC_TUNE.findall(text))
    if tunes > 1:
        raise ScoreError(f"{name} holds {tunes} ABC tunes (X: fields); open one tune per file")
    _check_lines(text, name)
    _refuse(name, "bar lines", text.count("|"), MAX_MEASURES * MAX_PARTS)


def check_humdrum(text: str, name: str) -> None:
    """Spines, line lengths, measures and data lines of Humdrum text."""
    lines = text.splitlines()
    _refuse(name, "Humdrum spines", max((line.count("\t") + 1 for line in lines), default=0), MAX_HUMDRUM_SPINES)
    _check_lines(text, name)
    _refuse(name, "measures", sum(1 for line in lines if line.startswith("=")), MAX_MEASURES)
    _refuse(name, "data lines", sum(1 for line in lines if line and line[0] not in "!*="), MAX_NOTES)


def _check_lines(text: str, name: str) -> None:
    longest = max(map(len, text.splitlines()), default=0)
    if longest > MAX_TEXT_LINE:
        raise ScoreError(f"{name} has a line of {longest:,} characters; the limit is {MAX_TEXT_LINE:,}")
