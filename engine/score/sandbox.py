"""Work on user content in worker processes with a time and a memory budget.

The readers (music21, abc2xml), verovio, the ABC and PDF writers and FluidSynth can take minutes and
gigabytes on small hostile files (an 82-byte MIDI file with huge delta times); checks before parsing catch
the known shapes, and this catches the rest. Each job runs in a `python -m MODULE FD MB` process whose
address space is capped with RLIMIT_AS (and its CPU time with RLIMIT_CPU, should the parent die; programs
it starts, FluidSynth, inherit both); the parent waits at most the time budget, then kills the worker's
process group. A failed job kills only that worker: the caller's process and memory are untouched.

Two kinds of worker speak this protocol, each kept in a `WorkerPool` of the budget's `workers`: the
`Sandbox` (`python -m engine.score.sandbox`), which runs named functions (reading files, writing ABC, PDF,
audio), and the verovio workers (`engine.render.verovio_worker`, driven by `engine.render.engrave.Engraver`).
Workers are reused (starting one costs about a second of imports) and retired once their memory has grown,
so memory goes back to its level before a large job; a job that a reused `Sandbox` worker dies in is tried
once more on a fresh one.
"""
from __future__ import annotations

import importlib
import os
import resource
import signal
import socket
import subprocess
import sys
import threading
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import TYPE_CHECKING, Callable, ClassVar

from engine.errors import ScoreError, describe
from engine.tempdirs import remove_stale

if TYPE_CHECKING:
    from engine.score.grid import MeasureGrid

ROOT = Path(__file__).resolve().parents[2]
RETIRE_GROWTH_BYTES = 256 * 2**20
"""A worker whose peak memory grew more than this since it started, or past half its limit, is not reused."""
MIN_MEMORY_MB = 256
"""Below this the workers' own imports do not fit."""


@dataclass(frozen=True)
class Budget:
    """What one job may use before it is stopped, and how many jobs run at once; `kind` names the limit and
    its flags in messages."""

    time_s: float
    memory_mb: int
    workers: int = 2
    """How many jobs run at once, each in its own worker with the whole time and memory budget."""
    kind: ClassVar[str]

    def __post_init__(self) -> None:
        if self.time_s <= 0 or self.memory_mb < MIN_MEMORY_MB:
            raise ValueError(f"the {self.kind} budget needs a time limit above 0 s and at least {MIN_MEMORY_MB} MB "
                             "of memory")
        if self.workers < 1:
            raise ValueError(f"the {self.kind} budget needs at least 1 worker")

    def too_slow(self, what: str) -> str:
        return (f"{what} took longer than the {self.time_s:g} s {self.kind} time limit and was stopped "
                f"(the limit is --{self.kind}-time-limit)")

    def too_big(self, what: str) -> str:
        return (f"{what} needed more than the {self.memory_mb} MB {self.kind} memory limit and was stopped "
                f"(the limit is --{self.kind}-memory-mb)")


@dataclass(frozen=True)
class ImportBudget(Budget):
    """For reading an upload, a file or a restored session."""

    time_s: float = 30.0
    memory_mb: int = 1024
    kind: ClassVar[str] = "import"


@dataclass(frozen=True)
class RenderBudget(Budget):
    """For engraving, audio and every export of a document."""

    time_s: float = 120.0
    memory_mb: int = 1024
    kind: ClassVar[str] = "render"


class WorkerDied(Exception):
    """The worker process ended in the middle of a job."""

    def __init__(self, returncode: int | None) -> None:
        super().__init__(f"the worker ended with status {returncode}")
        self.returncode = returncode

    @property
    def of_memory(self) -> bool:
        """C++ code (verovio) that cannot allocate under RLIMIT_AS throws std::bad_alloc, which aborts."""
        return self.returncode == -signal.SIGABRT


class WorkerTimedOut(Exception):
    """The job ran past its time budget; the worker was killed."""


class WorkerProcess:
    """One worker (`python -m module FD MEMORY_MB`), spoken to over a socket pair."""

    def __init__(self, module: str, memory_mb: int, quiet: bool = True) -> None:
        """`quiet`: its output goes to /dev/null (music21 prints hundreds of warning lines for some files)."""
        ours, theirs = socket.socketpair()
        output = subprocess.DEVNULL if quiet else None
        with theirs:
            self.process = subprocess.Popen(
                [sys.executable, "-m", module, str(theirs.fileno()), str(memory_mb)],
                cwd=ROOT, pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL, stdout=output, stderr=output,
                start_new_session=True,  # its own process group, so that FluidSynth goes when it is killed
                env={**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"},
            )
        self.connection = Connection(ours.detach())
        self.memory_mb = memory_mb
        self.ready = False
        self.served = False

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def call(self, request: object, time_s: float) -> tuple[str, object]:
        """(status "ok", "error", "failed" or "memory"; the result or the message). Raises `WorkerTimedOut`
        or `WorkerDied` (the worker is gone then), `RuntimeError` when it does not start."""
        try:
            if not self.ready:
                if not self.connection.poll(60):
                    raise RuntimeError(f"the worker process ({self.process.args[2]}) did not start within 60 s")
                problem = self.connection.recv()
                if problem:
                    raise RuntimeError(problem)
                self.ready = True
            self.connection.send((request, time_s))
            if not self.connection.poll(time_s):
                raise WorkerTimedOut
            status, value, keep = self.connection.recv()
        except (EOFError, OSError) as exc:  # RLIMIT_AS hit inside C code, a crash, or the worker was killed
            self.stop()
            raise WorkerDied(self.process.returncode) from exc
        except BaseException:
            self.stop()
            raise
        self.served = True
        if not keep:
            self.stop()
        return status, value

    def stop(self) -> None:
        """Kill it (and what it started), and remove the temp folders it could not (`engine.tempdirs`)."""
        self.connection.close()
        if self.alive:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.process.wait(5) != 0:  # killed or crashed: it could not remove its temp folders
            remove_stale()


def answer(status: str, value: object, budget: Budget, what: str) -> object:
    """A worker's answer as the result, or as a `ScoreError` that says what failed."""
    if status == "memory":
        raise ScoreError(budget.too_big(what))
    if status == "error":
        raise ScoreError(value)
    if status == "failed":
        raise ScoreError(f"{what} failed ({value})")
    return value


class WorkerPool:
    """Up to `size` workers of one module, thread-safe: holding `slots` waits while all are busy, `take()`
    gives an idle worker (or starts one) and `put()` keeps it for the next job if it is still alive."""

    def __init__(self, module: str, memory_mb: int, size: int, quiet: bool = True) -> None:
        self.module, self.memory_mb, self.quiet = module, memory_mb, quiet
        self.slots = threading.BoundedSemaphore(size)
        self._lock = threading.Lock()
        self._idle: list[WorkerProcess] = []
        self._closed = False

    def start(self) -> WorkerProcess:
        return WorkerProcess(self.module, self.memory_mb, self.quiet)

    def take(self) -> WorkerProcess:
        with self._lock:
            while self._idle:
                worker = self._idle.pop()
                if worker.alive:
                    return worker
                worker.stop()
        return self.start()

    def put(self, worker: WorkerProcess) -> None:
        if not worker.alive:  # its job ended it, and `WorkerProcess.call` stopped it
            return
        with self._lock:
            if not self._closed:
                self._idle.append(worker)
                return
        worker.stop()

    def warm(self) -> None:
        """Start a worker now (without waiting for it), so that the first job does not pay for it."""
        with self._lock:
            if not self._idle:
                self._idle.append(self.start())

    def close(self) -> None:
        """Stop the idle workers; a busy one is stopped when its job ends."""
        with self._lock:
            idle, self._idle, self._closed = self._idle, [], True
        for worker in idle:
            worker.stop()


class Sandbox:
    """A `WorkerPool` running named functions within one budget; `run` blocks while all of the budget's
    `workers` are busy."""

    MODULE = "engine.score.sandbox"

    def __init__(self, budget: Budget = ImportBudget()) -> None:
        self.budget = budget
        self._pool = WorkerPool(self.MODULE, budget.memory_mb, budget.workers)

    def read(self, files: list[tuple[bytes, str]]) -> list[tuple[str, MeasureGrid]]:
        """The MusicXML and measure grid of each (bytes, file name) as `engine.score.formats.read_score` makes
        them, all read within one budget; a `ScoreError` names the first file that fails or the limit that was
        hit. With the grid the caller need not parse the MusicXML again outside the budget."""
        names = ", ".join(name for _, name in files[:3]) + (", ..." if len(files) > 3 else "")
        return self.run("engine.score.sandbox:read_all", (files,), f"reading {names}")

    def run(self, function: str, args: tuple, what: str) -> object:
        """`module:function`(*args) in a worker; `what` ("writing the PDF of this score") names the job in
        messages. A `ScoreError` from the function comes back as it is."""
        with self._pool.slots:
            worker = self._pool.take()
            if worker.served:  # a worker that worked before may die of what it kept: then a fresh one tries
                try:
                    return self._run_with(worker, (function, args), what)
                except WorkerDied:
                    worker = self._pool.start()
            try:
                return self._run_with(worker, (function, args), what)
            except WorkerDied as exc:
                raise ScoreError(self.budget.too_big(what)) from exc

    def _run_with(self, worker: WorkerProcess, request: tuple, what: str) -> object:
        try:
            status, value = worker.call(request, self.budget.time_s)
        except WorkerTimedOut:
            raise ScoreError(self.budget.too_slow(what)) from None
        self._pool.put(worker)
        return answer(status, value, self.budget, what)

    def warm(self) -> None:
        self._pool.warm()

    def close(self) -> None:
        self._pool.close()


# --- the worker's side ---------------------------------------------------------------------------------------

def _peak_bytes() -> int:
    """The most address space this process has had (VmPeak, what RLIMIT_AS caps)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmPeak:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def serve(setup: Callable[[], Callable[[object], object]]) -> None:
    """A worker's main (argv: socket FD, memory MB): `setup()` (imports, before the memory cap) gives the
    handler, or raises RuntimeError saying why it cannot; then cap memory, say ready (None), and answer each
    (request, time_s) with (status, value, whether the worker may be used again)."""
    connection, memory_mb = Connection(int(sys.argv[1])), int(sys.argv[2])
    try:
        handle = setup()
    except RuntimeError as exc:
        connection.send(str(exc))
        return
    limit = memory_mb * 2**20
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    retire_at = min(_peak_bytes() + RETIRE_GROWTH_BYTES, limit // 2)
    connection.send(None)
    while True:
        try:
            request, time_s = connection.recv()
        except (EOFError, OSError):
            return
        used = resource.getrusage(resource.RUSAGE_SELF)
        cpu = int(used.ru_utime + used.ru_stime + time_s) + 2  # a backstop should the parent be gone: SIGXCPU
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, resource.getrlimit(resource.RLIMIT_CPU)[1]))  # hard: as it was
        status, value = _handled(handle, request)
        if status in ("error", "failed") and _peak_bytes() > 0.9 * limit:
            status = "memory"  # an allocation failed inside a library, which reported it as something else
        keep = status != "memory" and _peak_bytes() < retire_at  # else the next job gets a fresh worker
        connection.send((status, value, keep))
        if not keep:
            return


def _handled(handle: Callable[[object], object], request: object) -> tuple[str, object]:
    try:
        return "ok", handle(request)
    except ScoreError as exc:
        return "error", str(exc)
    except MemoryError:
        return "memory", None
    except RecursionError:
        return "failed", "the score is nested too deeply"
    except Exception as exc:  # a library bug on odd input still gets a message that says what failed
        return "failed", describe(exc)


def _run_function(request: tuple[str, tuple]) -> object:
    function, args = request
    module, _, name = function.partition(":")
    return getattr(importlib.import_module(module), name)(*args)


def _pool_setup() -> Callable[[tuple[str, tuple]], object]:
    import warnings

    import engine.score.formats  # noqa: F401  (imported before the memory cap and the ready message)

    warnings.simplefilter("ignore")
    return _run_function


def read_all(files: list[tuple[bytes, str]]) -> list[tuple[str, MeasureGrid]]:
    """What `Sandbox.read` runs: every file's MusicXML and the grid `read_score` checked, or a `ScoreError`
    naming the file."""
    from engine.score.formats import read_score

    read = []
    for data, name in files:
        try:
            document = read_score(data, name)
            read.append((document.musicxml, document.grid))
        except (ScoreError, MemoryError):
            raise
        except RecursionError:
            raise ScoreError(f"{name} is nested too deeply to be read") from None
        except Exception as exc:  # a reader bug on odd input still gets a message that names the file
            raise ScoreError(f"{name} could not be read ({describe(exc)})") from exc
    return read


if __name__ == "__main__":
    serve(_pool_setup)
