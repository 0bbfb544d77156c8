"""Small real files for tests, made with music21 and the reference fixtures (no mocks)."""
from __future__ import annotations

from pathlib import Path

import music21

CHORALE = "bach/bwv66.6.mxl"


def corpus_path(name: str = CHORALE) -> Path:
    return Path(music21.corpus.getWork(name))


def empty_midi_bytes() -> bytes:
    """A valid standard MIDI file with one track holding only a tempo event: no notes."""
    midi_file = music21.midi.MidiFile()
    track = music21.midi.MidiTrack(index=1)
    midi_file.tracks.append(track)
    delta = music21.midi.DeltaTime(track, time=0)
    tempo = music21.midi.MidiEvent(track, type=music21.midi.MetaEvents.SET_TEMPO)
    tempo.data = b"\x07\xa1\x20"
    end_delta = music21.midi.DeltaTime(track, time=0)
    end = music21.midi.MidiEvent(track, type=music21.midi.MetaEvents.END_OF_TRACK)
    end.data = b""
    track.events.extend([delta, tempo, end_delta, end])
    return midi_file.writestr()
