"""Engraving with verovio: SVG pages, a timemap for playback highlighting, and MIDI.

Verovio runs in a worker process (`engine.render.verovio_worker`, which says why); `Engraver` sends it
one request at a time and starts a fresh one when the last one crashed or hung.
"""
from __future__ import annotations

import base64
import socket
import subprocess
import sys
import threading
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path

import music21

from engine.errors import ScoreError

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Engraving:
    """The engraved pages: SVG text, one per page."""

    pages: tuple[str, ...]


class Engraver:
    """The verovio worker process behind a lock (a toolkit does one thing at a time).

    A request that crashes the worker, or takes over `timeout_s`, fails with a `ScoreError`; the
    worker is started again for the next one, so one bad score never takes the app down."""

    def __init__(self, timeout_s: float = 120.0) -> None:
        self.timeout_s = timeout_s
        self._lock = threading.Lock()
        self._process: subprocess.Popen | None = None
        self._connection: Connection | None = None

    def engrave(self, musicxml: str, page_width: int = 2100, scale: int = 40,
                page_height: int | None = None) -> Engraving:
        """All pages of the score at the given width (verovio units) and scale (percent).

        A `page_height` makes every page that tall, as paper is; without it each page is as tall
        as its music, as a screen wants."""
        return Engraving(pages=self._call("pages", musicxml, page_width, scale, page_height))

    def measure_onsets(self, musicxml: str, page_width: int = 2100, scale: int = 40) -> tuple[tuple[float, str], ...]:
        """(time in ms, measure id) at each measure start in playback order, at tempo factor 1.

        The ids are those of `engrave` with the same layout (a fixed id seed), so the browser can find
        the measure under the playhead. Computed only when audio is rendered, not for every version.
        """
        return self._call("measure_onsets", musicxml, page_width, scale)

    def svg(self, musicxml: str, page_width: int = 2100, scale: int = 40) -> str:
        """The whole score on one tall page: what `convert OUT.svg` writes."""
        return self._call("svg", musicxml, page_width, scale)

    def midi(self, musicxml: str, tempo_factor: float = 1.0) -> bytes:
        """Standard MIDI file bytes, timed like the timemap (so audio and highlighting agree)."""
        encoded = self._call("midi_base64", musicxml)
        if not encoded:
            raise ScoreError("verovio produced no MIDI for this score")
        midi = base64.b64decode(encoded)
        return midi if tempo_factor == 1.0 else scale_tempo(midi, tempo_factor)

    @property
    def worker_pid(self) -> int | None:
        """The worker's process id (None before the first request): what the fault tests kill."""
        return self._process.pid if self._alive() else None

    def close(self) -> None:
        with self._lock:
            self._stop()

    def _call(self, name: str, *args):
        with self._lock:
            if not self._alive():
                self._start()
            try:
                self._connection.send((name, args))
                if not self._connection.poll(self.timeout_s):
                    self._stop()
                    raise ScoreError(f"engraving this score took longer than {self.timeout_s:.0f} s and was stopped")
                ok, value = self._connection.recv()
            except (EOFError, OSError) as exc:
                self._stop()
                raise ScoreError("the engraver (verovio) crashed on this score, so it cannot be engraved or "
                                 "exported this way; the score itself is unchanged") from exc
        if not ok:
            raise ScoreError(value)
        return value

    def _alive(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def _start(self) -> None:
        """`python -m engine.render.verovio_worker FD`: a plain child process (multiprocessing's spawn would
        re-run the caller's main script), answering over one end of a socket pair."""
        self._stop()
        ours, theirs = socket.socketpair()
        with theirs:
            process = subprocess.Popen([sys.executable, "-m", "engine.render.verovio_worker", str(theirs.fileno())],
                                       cwd=ROOT, pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL)
        connection = Connection(ours.detach())
        try:
            ready = connection.poll(60)
            ok, message = connection.recv() if ready else (False, "the verovio worker did not start within 60 s")
        except (EOFError, OSError):
            ok, message = False, "the verovio worker exited while starting"
        if not ok:
            connection.close()
            process.kill()
            process.wait()
            raise RuntimeError(message)
        self._process, self._connection = process, connection

    def _stop(self) -> None:
        if self._process is not None:
            self._connection.close()
            self._process.kill()
            self._process.wait(5)
        self._process = self._connection = None


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
