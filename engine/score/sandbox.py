"""Reading user files in worker processes with a time and a memory budget.

The readers (music21, abc2xml) can take minutes and gigabytes on small hostile files (an 82-byte MIDI
file with huge delta times); checks before parsing catch the known shapes, and this catches the rest.
Each read runs in a `python -m engine.score.sandbox FD` process whose address space is capped with
RLIMIT_AS (and its CPU time with RLIMIT_CPU, should the parent die); the parent waits at most the time
budget, then kills it. A failed read kills only that worker: the caller's process and memory are untouched.
Workers are reused (starting one costs about a second of imports), at most `workers` at a time, and
retired once their memory has grown, so memory goes back to its level before a large read; a read that
a reused worker dies in is tried once more on a fresh one.
"""
from __future__ import annotations

import os
import resource
import subprocess
import sys
import threading
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path

from engine.errors import ScoreError, describe

ROOT = Path(__file__).resolve().parents[2]
RETIRE_GROWTH_BYTES = 256 * 2**20
"""A worker whose peak memory grew more than this since it started, or past half its limit, is not reused."""
MIN_MEMORY_MB = 256
"""Below this the readers' own imports do not fit."""


@dataclass(frozen=True)
class ImportBudget:
    """What one import (an upload, a file, a restored session) may use before it is stopped."""

    time_s: float = 30.0
    memory_mb: int = 1024

    def __post_init__(self) -> None:
        if self.time_s <= 0 or self.memory_mb < MIN_MEMORY_MB:
            raise ValueError(f"an import needs a time limit above 0 s and at least {MIN_MEMORY_MB} MB of memory")


class Sandbox:
    """A small pool of reader workers; `read` is thread-safe and blocks while all `workers` are busy."""

    def __init__(self, budget: ImportBudget = ImportBudget(), workers: int = 2) -> None:
        self.budget = budget
        self._slots = threading.BoundedSemaphore(workers)
        self._lock = threading.Lock()
        self._idle: list[_Worker] = []

    def read(self, files: list[tuple[bytes, str]]) -> list[str]:
        """The MusicXML of each (bytes, file name) as `engine.score.formats.read_score` makes it, all read
        within one budget; a `ScoreError` names the first file that fails or the limit that was hit."""
        names = ", ".join(name for _, name in files[:3]) + (", ..." if len(files) > 3 else "")
        with self._slots:
            worker = self._take()
            if worker.served:  # a worker that read before may die of what it kept: then a fresh one tries
                try:
                    return self._read_with(worker, files, names)
                except _WorkerDied:
                    worker = _Worker(self.budget)
            try:
                return self._read_with(worker, files, names)
            except _WorkerDied as exc:
                raise ScoreError(self._over_memory(names)) from exc

    def _read_with(self, worker: _Worker, files: list[tuple[bytes, str]], names: str) -> list[str]:
        try:
            status, value, keep = worker.call(files, self.budget.time_s, names)
        except (EOFError, OSError) as exc:  # RLIMIT_AS hit inside C code, or the worker was killed
            worker.stop()
            raise _WorkerDied from exc
        except BaseException:
            worker.stop()
            raise
        if keep:
            with self._lock:
                self._idle.append(worker)
        else:
            worker.stop()
        if status == "memory":
            raise ScoreError(self._over_memory(names))
        if status == "error":
            raise ScoreError(value)
        return value

    def _over_memory(self, names: str) -> str:
        return (f"reading {names} needed more than the {self.budget.memory_mb} MB import memory limit and was "
                "stopped (the limit is --import-memory-mb)")

    def warm(self) -> None:
        """Start a worker now (without waiting for it), so that the first import does not pay for it."""
        with self._lock:
            if not self._idle:
                self._idle.append(_Worker(self.budget))

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for worker in idle:
            worker.stop()

    def _take(self) -> _Worker:
        with self._lock:
            while self._idle:
                worker = self._idle.pop()
                if worker.alive:
                    return worker
                worker.stop()
        return _Worker(self.budget)


class _WorkerDied(Exception):
    """The worker process ended in the middle of a read."""


class _Worker:
    """One reader process, spoken to over a socket pair (as `engine.render.engrave.Engraver` does)."""

    def __init__(self, budget: ImportBudget) -> None:
        import socket

        ours, theirs = socket.socketpair()
        with theirs:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "engine.score.sandbox", str(theirs.fileno()), str(budget.memory_mb)],
                cwd=ROOT, pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,  # music21's warnings (hundreds of lines for some Humdrum files)
                env={**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"},
            )
        self.connection = Connection(ours.detach())
        self.ready = False
        self.served = False

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def call(self, files: list[tuple[bytes, str]], time_s: float, names: str) -> tuple[str, object, int]:
        """(status "ok", "error" or "memory"; the MusicXML texts or the message; whether it may read again)."""
        if not self.ready:
            if not self.connection.poll(60) or not self.connection.recv():
                raise ScoreError("the file reader process did not start within 60 s")
            self.ready = True
        self.connection.send((files, time_s))
        if not self.connection.poll(time_s):
            raise ScoreError(f"reading {names} took longer than the {time_s:g} s import time limit and was stopped "
                             "(the limit is --import-time-limit)")
        answer = self.connection.recv()
        self.served = True
        return answer

    def stop(self) -> None:
        self.connection.close()
        if self.alive:
            self.process.kill()
        self.process.wait(5)


def _peak_bytes() -> int:
    """The most address space this process has had (VmPeak, what RLIMIT_AS caps)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmPeak:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def serve(connection: Connection, memory_mb: int) -> None:
    """The worker: import the readers, cap memory, say ready, then answer (ok, texts or message, growth)."""
    import warnings

    import engine.score.formats  # noqa: F401  (imported before the memory cap and the ready message)

    warnings.simplefilter("ignore")
    limit = memory_mb * 2**20
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    retire_at = min(_peak_bytes() + RETIRE_GROWTH_BYTES, limit // 2)
    connection.send(True)
    while True:
        try:
            files, time_s = connection.recv()
        except (EOFError, OSError):
            return
        used = resource.getrusage(resource.RUSAGE_SELF)
        cpu = int(used.ru_utime + used.ru_stime + time_s) + 2  # a backstop should the parent be gone
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 5))
        status, value = _read_all(files)
        if status == "error" and _peak_bytes() > 0.9 * limit:
            status = "memory"  # an allocation failed inside a reader, which reported it as something else
        keep = status != "memory" and _peak_bytes() < retire_at  # else the next read gets a fresh worker
        connection.send((status, value, keep))
        if not keep:
            return


def _read_all(files: list[tuple[bytes, str]]) -> tuple[str, object]:
    from engine.score.formats import read_score

    texts = []
    for data, name in files:
        try:
            texts.append(read_score(data, name).musicxml)
        except ScoreError as exc:
            return "error", str(exc)
        except MemoryError:
            return "memory", None
        except RecursionError:
            return "error", f"{name} is nested too deeply to be read"
        except Exception as exc:  # a reader bug on odd input still gets a message that names the file
            return "error", f"{name} could not be read ({describe(exc)})"
    return "ok", texts


if __name__ == "__main__":
    serve(Connection(int(sys.argv[1])), int(sys.argv[2]))
