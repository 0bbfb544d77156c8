"""Engraving with verovio: SVG pages, a timemap for playback highlighting, and MIDI.

Verovio runs in worker processes (`engine.render.verovio_worker`, which says why) within a render budget
(`engine.score.sandbox`). `Engraver` keeps up to the budget's `workers` of them, each serving one request
at a time, so a score that takes the whole time limit holds up one worker, not every session's engraving;
a worker that crashed, hung or ran out of memory is replaced by a fresh one.
"""
from __future__ import annotations

import base64
from dataclasses import dataclass

import music21

from engine.errors import ScoreError
from engine.score.sandbox import RenderBudget, WorkerDied, WorkerPool, WorkerProcess, WorkerTimedOut, answer


@dataclass(frozen=True)
class Engraving:
    """The engraved pages: SVG text, one per page."""

    pages: tuple[str, ...]


class Engraver:
    """A pool of verovio worker processes (a toolkit does one thing at a time), `budget.workers` at most.

    A request that crashes its worker, or takes more than the budget's time or memory, fails with a
    `ScoreError`; a fresh worker serves the next one, so one bad score never takes the app down."""

    def __init__(self, budget: RenderBudget = RenderBudget()) -> None:
        self.budget = budget
        self._pool = WorkerPool("engine.render.verovio_worker", budget.memory_mb, budget.workers, quiet=False)
        self._last: WorkerProcess | None = None

    def engrave(self, musicxml: str, page_width: int = 2100, scale: int = 40,
                page_height: int | None = None) -> Engraving:
        """All pages of the score at the given width (verovio units) and scale (percent).

        A `page_height` makes every page that tall, as paper is; without it each page is as tall
        as its music, as a screen wants."""
        return Engraving(pages=self._call("pages", musicxml, page_width, scale, page_height))

    def warm(self) -> None:
        """Start a worker now (without waiting for it), so that the first engraving does not pay for it."""
        self._pool.warm()

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
        """The process id of the worker of the latest request (None before the first one, or once that
        worker is gone): what the fault tests kill."""
        worker = self._last
        return worker.process.pid if worker is not None and worker.alive else None

    def close(self) -> None:
        self._pool.close()

    def _call(self, name: str, *args):
        """`python -m engine.render.verovio_worker`: a plain child process (multiprocessing's spawn would
        re-run the caller's main script), its output left to the app's log."""
        what = "engraving this score"
        with self._pool.slots:
            worker = self._last = self._pool.take()
            try:
                status, value = worker.call((name, args), self.budget.time_s)
            except WorkerTimedOut:
                raise ScoreError(f"{what} took longer than {self.budget.time_s:g} s and was stopped (the render "
                                 "time limit, --render-time-limit)") from None
            except WorkerDied as exc:
                if exc.of_memory:
                    raise ScoreError(self.budget.too_big(what)) from exc
                raise ScoreError("the engraver (verovio) crashed on this score, so it cannot be engraved or "
                                 "exported this way; the score itself is unchanged") from exc
            self._pool.put(worker)
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
