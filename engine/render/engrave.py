"""Engraving with verovio: SVG pages, a timemap for playback highlighting, and MIDI.

Verovio reads MusicXML (never multi-voice ABC, which it does not support). One toolkit is shared
behind a lock because a toolkit is not thread-safe, and its resource path is resolved at import in
the main thread because a toolkit created in a worker thread may fail to find its fonts.
"""
from __future__ import annotations

import base64
import re
import threading
from dataclasses import dataclass
from pathlib import Path

import music21
import verovio

from engine.errors import ScoreError

RESOURCE_PATH = str(Path(verovio.__file__).resolve().parent / "data")
verovio.enableLog(verovio.LOG_OFF)  # its warnings go to stderr; failures are caught via loadData

BASE_OPTIONS = {
    "svgAdditionalAttribute": ["measure@n", "staff@n"],
    "adjustPageHeight": True,
    "breaks": "auto",
    "header": "none",
    "footer": "none",
    "mnumInterval": 1,
    "svgViewBox": True,
}


@dataclass(frozen=True)
class Engraving:
    """The engraved pages: SVG text, one per page."""

    pages: tuple[str, ...]


class Engraver:
    """A verovio toolkit behind a lock. Create it in the main thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._toolkit = verovio.toolkit(False)
        if not self._toolkit.setResourcePath(RESOURCE_PATH):
            raise RuntimeError(f"verovio could not load its resources from {RESOURCE_PATH}")
        self._toolkit.setOptions({"xmlIdSeed": 1})

    def engrave(self, musicxml: str, page_width: int = 2100, scale: int = 40,
                page_height: int | None = None) -> Engraving:
        """All pages of the score at the given width (verovio units) and scale (percent).

        A `page_height` makes every page that tall, as paper is; without it each page is as tall
        as its music, as a screen wants."""
        fixed = {} if page_height is None else {"pageHeight": page_height, "adjustPageHeight": False}
        with self._lock:
            self._load(musicxml, {"pageWidth": page_width, "scale": scale, **fixed})
            pages = tuple(self._toolkit.renderToSVG(n) for n in range(1, self._toolkit.getPageCount() + 1))
        return Engraving(pages=pages)

    def measure_onsets(self, musicxml: str, page_width: int = 2100, scale: int = 40) -> tuple[tuple[float, str], ...]:
        """(time in ms, measure id) at each measure start in playback order, at tempo factor 1.

        The ids are those of `engrave` with the same layout (a fixed id seed), so the browser can find
        the measure under the playhead. Computed only when audio is rendered, not for every version.
        """
        with self._lock:
            self._load(musicxml, {"pageWidth": page_width, "scale": scale})
            timemap = self._toolkit.renderToTimemap({"includeMeasures": True, "includeRests": False})
        # a repeated passage plays again as "<id>-rend2", ...: highlight the engraved measure each time
        return tuple(
            (float(entry["tstamp"]), re.sub(r"-rend\d+$", "", entry["measureOn"]))
            for entry in timemap if "measureOn" in entry
        )

    def svg(self, musicxml: str, page_width: int = 2100, scale: int = 40) -> str:
        """The whole score on one tall page: what `convert OUT.svg` writes."""
        with self._lock:
            self._load(musicxml, {"pageWidth": page_width, "scale": scale, "breaks": "encoded", "pageHeight": 60000})
            if self._toolkit.getPageCount() > 1:
                self._toolkit.setOptions({"breaks": "auto"})
                self._toolkit.redoLayout()
            return self._toolkit.renderToSVG(1)

    def midi(self, musicxml: str, tempo_factor: float = 1.0) -> bytes:
        """Standard MIDI file bytes, timed like the timemap (so audio and highlighting agree)."""
        with self._lock:
            self._load(musicxml, {})
            encoded = self._toolkit.renderToMIDI()
        if not encoded:
            raise ScoreError("verovio produced no MIDI for this score")
        midi = base64.b64decode(encoded)
        return midi if tempo_factor == 1.0 else scale_tempo(midi, tempo_factor)

    def _load(self, musicxml: str, options: dict) -> None:
        """Load with fresh options; a failed load must stop here (rendering after it crashes verovio)."""
        self._toolkit.resetOptions()
        self._toolkit.setOptions({**BASE_OPTIONS, "xmlIdSeed": 1, **options})
        if not self._toolkit.loadData(musicxml):
            raise ScoreError("verovio could not read this score")



def scale_tempo(midi: bytes, factor: float) -> bytes:
    """MIDI played `factor` times as fast: every tempo event scaled (a 120 bpm default added if none).

    Done on the MIDI itself because verovio's `midiTempoAdjustment` is ignored when the score
    carries its own tempo marks.
    """
    if factor <= 0:
        raise ValueError("the tempo factor must be positive")
    midi_file = music21.midi.MidiFile()
    midi_file.readstr(midi)
    tempo_events = [
        event for track in midi_file.tracks for event in track.events
        if event.type == music21.midi.MetaEvents.SET_TEMPO
    ]
    if not tempo_events:
        track = midi_file.tracks[0]
        event = music21.midi.MidiEvent(track, type=music21.midi.MetaEvents.SET_TEMPO)
        event.data = (500_000).to_bytes(3, "big")
        track.events[:0] = [music21.midi.DeltaTime(track, time=0), event]
        tempo_events = [event]
    for event in tempo_events:
        microseconds = round(int.from_bytes(event.data, "big") / factor)
        event.data = min(max(microseconds, 1), 0xFFFFFF).to_bytes(3, "big")
    return midi_file.writestr()
