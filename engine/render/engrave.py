"""Engraving with verovio: SVG pages, a timemap for playback highlighting, and MIDI.

Verovio runs in a worker process (`engine.render.verovio_worker`, which says why) within a render budget
(`engine.score.sandbox`); `Engraver` sends it one request at a time and starts a fresh one when the last
one crashed, hung or ran out of memory.
"""
from __future__ import annotations

import base64
import threading
from dataclasses import dataclass

import music21

from engine.errors import ScoreError
from engine.score.sandbox import RenderBudget, WorkerDied, WorkerProcess, WorkerTimedOut, answer


@dataclass(frozen=True)
class Engraving:
    """The engraved pages: SVG text, one per page."""

    pages: tuple[str, ...]


class Engraver:
    """The verovio worker process behind a lock (a toolkit does one thing at a time).

    A request that crashes the worker, or takes more than the budget's time or memory, fails with a
    `ScoreError`; the worker is started again for the next one, so one bad score never takes the app down."""

    def __init__(self, budget: RenderBudget = RenderBudget()) -> None:
        self.budget = budget
        self._lock = threading.Lock()
        self._worker: WorkerProcess | None = None

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

    def midi(self, musicxml: str) -> bytes:
        """Standard MIDI file bytes at tempo factor 1, timed like the timemap (so audio and highlighting
        agree); `scale_tempo` plays them faster or slower."""
        encoded = self._call("midi_base64", musicxml)
        if not encoded:
            raise ScoreError("verovio produced no MIDI for this score")
        return base64.b64decode(encoded)

    @property
    def worker_pid(self) -> int | None:
        """The worker's process id (None before the first request): what the fault tests kill."""
        return self._worker.process.pid if self._worker is not None and self._worker.alive else None

    def close(self) -> None:
        with self._lock:
            if self._worker is not None:
                self._worker.stop()
            self._worker = None

    def _call(self, name: str, *args):
        """`python -m engine.render.verovio_worker`: a plain child process (multiprocessing's spawn would
        re-run the caller's main script), its output left to the app's log."""
        what = "engraving this score"
        with self._lock:
            if self._worker is None or not self._worker.alive:
                self._worker = WorkerProcess("engine.render.verovio_worker", self.budget.memory_mb, quiet=False)
            try:
                status, value = self._worker.call((name, args), self.budget.time_s)
            except WorkerTimedOut:
                raise ScoreError(f"{what} took longer than {self.budget.time_s:g} s and was stopped (the render "
                                 "time limit, --render-time-limit)") from None
            except WorkerDied as exc:
                if exc.of_memory:
                    raise ScoreError(self.budget.too_big(what)) from exc
                raise ScoreError("the engraver (verovio) crashed on this score, so it cannot be engraved or "
                                 "exported this way; the score itself is unchanged") from exc
        return answer(status, value, self.budget, what)


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
