"""Build the training data sets: NotaGen texts, prompt labels, splits and a report.

    python -m training.data build --out data/            # the bundled music21 corpus, all cores
    python -m training.data build --out data/ \\
        --extra-dir ../openscore-lieder --extra-labels ../openscore-lieder/metadata.csv \\
        --extra-instrumentation "Art Song"
    python -m training.data report --out data/           # reprint the report

Pieces come from `training.corpus` (a fixed order; labels, work ids and splits decided there) and
are converted in a multiprocessing pool, each under a time limit, into shards of `--shard-size`
pieces. A shard is written to temporary files and renamed when complete, then gets a `.done`
marker holding a hash of its inputs and its statistics; a rerun skips every shard whose marker
matches, so an interrupted build resumes and a finished one costs nothing. Nothing is held in
memory beyond the pieces in flight: the report is summed from the markers.

Output (see docs/datasets.md):

    data/pieces/shard-NNNNN.jsonl    one line per converted piece: NotaGen texts (interleaved ABC,
                                     original key, rest-reduced text in each of the 15 keys), labels,
                                     prompt, work, split, BAE          -> pre-training set
    data/finetune/shard-NNNNN.jsonl  the labelled pieces of that shard: id, split, prompt, labels,
                                     line number in pieces/            -> fine-tuning set (index)
    data/failures/shard-NNNNN.jsonl  one line per failed stage: id, stage, reason
    data/pieces/shard-NNNNN.done     the shard's marker and statistics
    data/prompts.tsv, prompts.txt    the prompt list with counts per split
    data/build.json, report.json, report.md
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import json
import multiprocessing
import os
import re
import shlex
import signal
import sys
import threading
import time
import warnings
from collections import Counter, deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import lru_cache
from itertools import islice
from pathlib import Path

from training.corpus import (
    INSTRUMENTATIONS,
    SPLITS,
    ComposerTable,
    Labels,
    PieceRef,
    SourceSpec,
    fold,
    iter_pieces,
    labels_for,
)

#: Bump when the record format or conversion changes: every shard is then rebuilt.
FORMAT_VERSION = 1
DEFAULT_SHARD_SIZE = 256
DEFAULT_TIMEOUT_S = 300
DEFAULT_MAX_MEMORY_MB = 8192
#: The main process waits WATCHDOG_FACTOR x the limit + WATCHDOG_GRACE_S of wall time for a piece
#: before it declares the worker dead or hung, kills the pool and starts a new one. The limit itself
#: is CPU time, so on a loaded machine a piece may take several times its limit in wall time.
WATCHDOG_FACTOR = 3
WATCHDOG_GRACE_S = 60
FAILURE_LIST_LIMIT = 200


# ---------------------------------------------------------------------------------------------
# converting one piece (runs in a worker process)
# ---------------------------------------------------------------------------------------------


class PieceTimeout(BaseException):
    """Raised by SIGPROF inside a worker. A BaseException, so `except Exception` in music21 or
    abctoolkit cannot swallow it."""


_worker_timeout_s = DEFAULT_TIMEOUT_S


def _on_alarm(signum, frame):  # noqa: ARG001 - signal handler signature
    raise PieceTimeout()


def _arm(seconds: float) -> None:
    """Start (or, with 0, stop) the per-piece limit: CPU seconds of this worker (ITIMER_PROF).

    CPU time rather than wall time, so that which pieces hit the limit does not depend on how busy
    the machine is, and two builds of the same inputs stay identical.
    """
    signal.setitimer(signal.ITIMER_PROF, max(0.0, float(seconds)))


def _init_worker(timeout_s: int, max_memory_mb: int) -> None:
    """Per-worker setup: the time limit, an address-space cap (a huge file raises MemoryError in
    its worker instead of exhausting the machine), quiet warnings, default SIGINT handling."""
    global _worker_timeout_s
    _worker_timeout_s = timeout_s
    signal.signal(signal.SIGPROF, _on_alarm)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is handled once, by the main process
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # Pool.terminate() must end a worker at once
    warnings.filterwarnings("ignore")
    if max_memory_mb > 0:
        try:
            import resource

            limit = max_memory_mb * 1024 * 1024
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        except (ImportError, ValueError, OSError):
            pass


def _rests_to_the_end(score) -> None:
    """Parts that end early get measures of rest up to the last part's end. A piece written as one tune per
    part may end its parts on final notes of different lengths (Josquin, "Petite camusette": 38 and 40
    measures), and NotaGen's notation needs every voice to have every bar."""
    import music21

    rows = [part.getElementsByClass(music21.stream.Measure) for part in score.parts]
    longest = max(len(row) for row in rows)
    for part, row in zip(score.parts, rows):
        if not row:
            continue
        last = row[-1]
        bar = (last.timeSignature or last.getContextByClass(music21.meter.TimeSignature)
               or music21.meter.TimeSignature("4/4")).barDuration.quarterLength
        for number in range(last.number + 1, last.number + 1 + longest - len(row)):
            measure = music21.stream.Measure(number=number)
            measure.append(music21.note.Rest(quarterLength=bar))
            part.append(measure)


def _read_document(ref: PieceRef):
    """The piece as a ScoreDocument (MusicXML text + music21 parse), by the reader that fits its kind.

    Single ABC tunes go through abctoolkit's abc2xml (`engine.score.formats.read_score` ->
    `notagen_abc.abc_to_musicxml`) rather than music21's ABC reader: measured on 20 Essen tunes it
    took 0.045 s per tune against 0.129 s, converted all of them, and it is the converter NotaGen's
    own pipeline uses, so the text matches what the official data looked like.
    """
    from engine.errors import ScoreError
    from engine.score.document import ScoreDocument
    from engine.score.formats import read_score, score_to_musicxml

    path = Path(ref.path)
    if not path.is_file():
        raise ScoreError(f"{path.name}: no such file")
    if ref.kind == "abc-tune":
        start, end = ref.span or (0, None)
        with open(path, "rb") as handle:
            handle.seek(start)
            body = handle.read(None if end is None else end - start)
        return read_score(ref.header + body, f"{path.stem}.abc")
    if ref.kind == "abc-voices":
        import music21

        parsed = music21.converter.parse(str(path))
        if isinstance(parsed, music21.stream.Opus):
            parsed = parsed.mergeScores()
        if not isinstance(parsed, music21.stream.Score) or not parsed.parts:
            raise ScoreError(f"{path.name} holds no parts")
        _rests_to_the_end(parsed)
        return ScoreDocument(musicxml=score_to_musicxml(parsed, in_place=True), title=ref.title)
    return read_score(path.read_bytes(), path.name)


_CREATOR = re.compile(r"<creator[^>]*type=\"composer\"[^>]*>(.*?)</creator>", re.S)


def _composer_in_musicxml(musicxml: str) -> str:
    match = _CREATOR.search(musicxml[:200_000])
    if not match:
        return ""
    from html import unescape

    return unescape(match.group(1)).strip()


@lru_cache(maxsize=1)
def _composer_table() -> ComposerTable:
    return ComposerTable.load()


def _labels_from_file(ref: PieceRef, musicxml: str) -> tuple[Labels | None, str]:
    name = _composer_in_musicxml(musicxml)
    composer = _composer_table().find(name) if name else None
    if composer is None:
        return None, f"composer {fold(name.splitlines()[0]) if name else '(none)'!r} in the file is not in composers.csv"
    return labels_for(composer, ref.instrumentation), ""


def _describe(exc: BaseException) -> str:
    from engine.errors import ScoreError, describe

    if isinstance(exc, ScoreError):
        return describe(exc, 300)
    if isinstance(exc, MemoryError):
        return "out of memory (the worker's --max-memory-mb cap)"
    return f"{type(exc).__name__}: {describe(exc, 280)}"


def convert_piece(ref: PieceRef, keys: tuple[str, ...]) -> dict:
    """Every output for one piece, or the reasons it has none. Never raises (but see the watchdog).

    Stages: read (file -> MusicXML + music21 score), notagen (official preprocessing: interleaved
    ABC and the rest-reduced text per key, plus its bar alignment).
    A failed stage is recorded with its reason.
    """
    from engine.score.bae import bar_alignment
    from engine.score.notagen_abc import preprocess

    started = time.perf_counter()
    failures: list[dict] = []
    piece = None
    labels, label_note = ref.labels, ref.label_note
    stage = "read"
    _arm(_worker_timeout_s)
    try:
        try:
            document = _read_document(ref)
        except (Exception, MemoryError) as exc:  # noqa: BLE001 - any library failure is a recorded skip
            document = None
            failures.append({"stage": "read", "reason": _describe(exc)})
        if document is not None:
            if ref.composer_from_file:
                labels, label_note = _labels_from_file(ref, document.musicxml)
            common = {
                "id": ref.id,
                "source": ref.source,
                "title": ref.title,
                "work": ref.work,
                "split": ref.split,
                "labels": labels.to_dict() if labels else None,
                "prompt": labels.prompt if labels else None,
            }
            stage = "notagen"
            try:
                text = preprocess(document.musicxml, keys)
                alignment = bar_alignment(text.interleaved)
                piece = {
                    **common,
                    "original_key": text.original_key,
                    "interleaved": text.interleaved,
                    "keys": {key: text.reduced[key] for key in keys},
                    "bars": alignment.bars,
                    "misaligned_bars": alignment.misaligned,
                }
            except (Exception, MemoryError) as exc:  # noqa: BLE001
                failures.append({"stage": "notagen", "reason": _describe(exc)})
        _arm(0)
    except PieceTimeout:
        failures.append({"stage": stage, "reason": f"over the time limit of {_worker_timeout_s} CPU seconds (--timeout)"})
        piece = None
    finally:
        try:
            _arm(0)
        except PieceTimeout:  # the timer fired between the last line of work and here
            pass
    return {
        "piece": piece,
        "failures": failures,
        "labels": labels.prompt if labels else None,
        "label_note": label_note,
        "seconds": round(time.perf_counter() - started, 3),
    }


# ---------------------------------------------------------------------------------------------
# the pool: ordered results, a watchdog for dead or hung workers
# ---------------------------------------------------------------------------------------------


@dataclass
class _Task:
    shard: int
    ref: PieceRef


class PieceRunner:
    """Converts pieces in a process pool and yields results in submission order.

    Each worker enforces the per-piece CPU-time limit itself (SIGPROF). Should a worker die (killed
    by the OS) or hang without using CPU, the piece at the head of the queue produces no result:
    after `WATCHDOG_FACTOR` x its limit + `WATCHDOG_GRACE_S` it is recorded as failed, the pool is replaced
    and the pieces still in flight are resubmitted.
    """

    def __init__(self, workers: int, keys: tuple[str, ...], timeout_s: int, max_memory_mb: int) -> None:
        self.workers = max(1, workers)
        self.keys = keys
        self.timeout_s = timeout_s
        self.max_memory_mb = max_memory_mb
        self.window = self.workers * 4
        self.watchdog_s = WATCHDOG_FACTOR * timeout_s + WATCHDOG_GRACE_S
        self.restarts = 0
        self._pool = self._new_pool()

    def _new_pool(self):
        context = multiprocessing.get_context("fork" if sys.platform.startswith("linux") else "spawn")
        return context.Pool(
            self.workers,
            initializer=_init_worker,
            initargs=(self.timeout_s, self.max_memory_mb),
            maxtasksperchild=200,  # bounds music21's caches and any leak
        )

    def _submit(self, task: _Task):
        return self._pool.apply_async(convert_piece, (task.ref, self.keys))

    def run(self, tasks: Iterable[_Task]) -> Iterator[tuple[_Task, dict]]:
        tasks = iter(tasks)
        window: deque[list] = deque()

        def fill() -> None:
            while len(window) < self.window:
                task = next(tasks, None)
                if task is None:
                    return
                window.append([task, self._submit(task)])

        fill()
        while window:
            task, pending = window[0]
            became_head = time.monotonic()
            result = None
            while result is None:
                try:
                    result = pending.get(timeout=1.0)
                except multiprocessing.TimeoutError:
                    if time.monotonic() - became_head > self.watchdog_s:
                        result = self._dead_worker_result(window)
                except (Exception, PieceTimeout) as exc:  # noqa: BLE001 - e.g. a result that cannot be unpickled
                    result = _failed_result(f"the worker failed: {type(exc).__name__}: {exc}"[:300])
            window.popleft()
            yield task, result
            fill()

    def _dead_worker_result(self, window: deque) -> dict:
        self.restarts += 1
        self._pool.terminate()
        self._pool.join()
        self._pool = self._new_pool()
        for entry in list(window)[1:]:
            entry[1] = self._submit(entry[0])
        return _failed_result(
            f"no result after {self.watchdog_s:.0f} s: the worker process died or hung "
            "(killed for memory, or stuck where the time limit cannot interrupt it)"
        )

    def close(self) -> None:
        self._pool.terminate()
        self._pool.join()


def _failed_result(reason: str) -> dict:
    return {
        "piece": None, "failures": [{"stage": "worker", "reason": reason}],
        "labels": None, "label_note": "", "seconds": 0.0,
    }


# ---------------------------------------------------------------------------------------------
# shards
# ---------------------------------------------------------------------------------------------

SHARD_DIRS = ("pieces", "finetune", "failures")


def shard_name(index: int) -> str:
    return f"shard-{index:05d}"


def shard_inputs_hash(refs: list[PieceRef], keys: tuple[str, ...]) -> str:
    """What a shard's content depends on: format version, keys, and each piece's identity and labels."""
    digest = hashlib.sha256(json.dumps([FORMAT_VERSION, list(keys)]).encode())
    for ref in refs:
        digest.update(
            json.dumps(
                [ref.id, ref.kind, ref.work, ref.split, ref.title, ref.labels.prompt if ref.labels else None,
                 ref.label_note, ref.composer_from_file, ref.instrumentation, ref.span],
                ensure_ascii=False,
            ).encode()
        )
    return digest.hexdigest()


def _marker_path(out: Path, index: int) -> Path:
    return out / "pieces" / f"{shard_name(index)}.done"


def read_marker(out: Path, index: int) -> dict | None:
    try:
        return json.loads(_marker_path(out, index).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _normalise_reason(reason: str) -> str:
    """Failure reasons grouped for the report: numbers and quoted names masked."""
    reason = re.sub(r"'[^']*'|\"[^\"]*\"", "'...'", reason)
    return re.sub(r"\d+(\.\d+)?", "N", reason)[:160]


class ShardWriter:
    """Writes one shard to temporary files, renames them when complete, then writes its marker."""

    def __init__(self, out: Path, index: int, size: int, inputs_hash: str) -> None:
        self.out, self.index, self.size, self.inputs_hash = out, index, size, inputs_hash
        self.received = 0
        self.piece_lines = 0
        self.started = time.time()
        self.files = {}
        for name in SHARD_DIRS:
            (out / name).mkdir(parents=True, exist_ok=True)
            self.files[name] = open(self._tmp(name), "w", encoding="utf-8")
        self.stats = {
            "sources": {},
            "prompts": {},
            "splits": {kind: dict.fromkeys(SPLITS, 0) for kind in ("pieces", "finetune")},
            "failures": Counter(),
            "failure_stages": Counter(),
            "label_notes": Counter(),
            "timeouts": 0,
            "seconds": 0.0,
            "bars": 0,
            "misaligned_bars": 0,
        }

    def _final(self, name: str) -> Path:
        return self.out / name / f"{shard_name(self.index)}.jsonl"

    def _tmp(self, name: str) -> Path:
        return self.out / name / f"{shard_name(self.index)}.jsonl.tmp"

    def add(self, ref: PieceRef, result: dict) -> None:
        self.received += 1
        stats = self.stats
        source = stats["sources"].setdefault(
            ref.source,
            {"inputs": 0, "pieces": 0, "failed": 0, "labelled": 0, "bars": 0, "misaligned_bars": 0, "seconds": 0.0},
        )
        source["inputs"] += 1
        source["seconds"] += result["seconds"]
        stats["seconds"] += result["seconds"]
        piece = result["piece"]
        if piece is not None:
            self.files["pieces"].write(json.dumps(piece, ensure_ascii=False) + "\n")
            source["pieces"] += 1
            source["bars"] += piece["bars"]
            source["misaligned_bars"] += piece["misaligned_bars"]
            stats["bars"] += piece["bars"]
            stats["misaligned_bars"] += piece["misaligned_bars"]
            stats["splits"]["pieces"][ref.split] += 1
            if piece["prompt"]:
                self.files["finetune"].write(
                    json.dumps(
                        {"id": ref.id, "split": ref.split, "prompt": piece["prompt"], "labels": piece["labels"],
                         "work": ref.work, "shard": shard_name(self.index), "line": self.piece_lines},
                        ensure_ascii=False,
                    ) + "\n"
                )
                source["labelled"] += 1
                stats["splits"]["finetune"][ref.split] += 1
                counts = stats["prompts"].setdefault(piece["prompt"], dict.fromkeys(SPLITS, 0))
                counts[ref.split] += 1
            self.piece_lines += 1
        else:
            source["failed"] += 1
        for failure in result["failures"]:
            record = {"id": ref.id, "source": ref.source, "stage": failure["stage"], "reason": failure["reason"]}
            self.files["failures"].write(json.dumps(record, ensure_ascii=False) + "\n")
            stats["failures"][f"{failure['stage']}: {_normalise_reason(failure['reason'])}"] += 1
            stats["failure_stages"][failure["stage"]] += 1
            if "over the time limit" in failure["reason"]:
                stats["timeouts"] += 1
        if result.get("label_note"):
            stats["label_notes"][_normalise_label_note(result["label_note"])] += 1

    @property
    def complete(self) -> bool:
        return self.received >= self.size

    def finish(self) -> dict:
        for name, handle in self.files.items():
            handle.close()
            os.replace(self._tmp(name), self._final(name))
        marker = {
            "shard": shard_name(self.index),
            "format": FORMAT_VERSION,
            "inputs_hash": self.inputs_hash,
            "inputs": self.size,
            "wall_seconds": round(time.time() - self.started, 2),
            **{k: (dict(v) if isinstance(v, Counter) else v) for k, v in self.stats.items()},
        }
        marker["seconds"] = round(marker["seconds"], 2)
        for source in marker["sources"].values():
            source["seconds"] = round(source["seconds"], 2)
        tmp = _marker_path(self.out, self.index).with_suffix(".done.tmp")
        tmp.write_text(json.dumps(marker, ensure_ascii=False, indent=1, sort_keys=True), encoding="utf-8")
        os.replace(tmp, _marker_path(self.out, self.index))
        return marker

    def abort(self) -> None:
        for handle in self.files.values():
            handle.close()


def _normalise_label_note(note: str) -> str:
    return note if len(note) < 160 else note[:157] + "..."


def _chunks(refs: Iterable[PieceRef], size: int) -> Iterator[list[PieceRef]]:
    iterator = iter(refs)
    while chunk := list(islice(iterator, size)):
        yield chunk


def _remove_shards_from(out: Path, first_stale: int) -> int:
    """Delete shards a previous, larger build left beyond this build's last shard."""
    removed = 0
    for name in SHARD_DIRS:
        folder = out / name
        if not folder.is_dir():
            continue
        for path in folder.glob("shard-*"):
            match = re.match(r"shard-(\d+)", path.name)
            if match and int(match.group(1)) >= first_stale:
                path.unlink()
                removed += 1
    return removed


# ---------------------------------------------------------------------------------------------
# build
# ---------------------------------------------------------------------------------------------


@dataclass
class BuildOptions:
    """Everything `build` needs; the CLI fills it from flags."""

    out: Path
    specs: list[SourceSpec]
    sources: list[str] | None = None
    limit: int | None = None
    workers: int = os.cpu_count() or 1
    shard_size: int = DEFAULT_SHARD_SIZE
    timeout_s: int = DEFAULT_TIMEOUT_S
    max_memory_mb: int = DEFAULT_MAX_MEMORY_MB
    keys: tuple[str, ...] | None = None
    progress: bool = True
    command: str = ""


def build(options: BuildOptions) -> dict:
    """Build (or resume) the data sets into `options.out`; returns the report."""
    from tqdm import tqdm

    from engine.score.notagen_abc import KEYS

    keys = tuple(options.keys or KEYS)
    out = Path(options.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    manifest = {
        "command": options.command,
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "format": FORMAT_VERSION,
        "keys": list(keys),
        "shard_size": options.shard_size,
        "workers": options.workers,
        "timeout_s": options.timeout_s,
        "limit": options.limit,
        "sources": options.sources,
        "inputs": [spec.__dict__ for spec in options.specs],
        "finished": None,
    }
    # A resumed build keeps the timings of the earlier runs of the same build, so its report gives
    # the whole build time, not only the last run's.
    previous = _read_json(out / "build.json") or {}
    same_build = all(previous.get(k) == manifest[k] for k in ("format", "keys", "shard_size", "limit", "sources", "inputs"))
    manifest["runs"] = list(previous.get("runs", [])) if same_build else []
    _write_json(out / "build.json", manifest)

    def refs() -> Iterator[PieceRef]:
        return iter_pieces(options.specs, options.sources, options.limit)

    total = sum(1 for _ in refs())  # enumeration is cheap (no parsing) and gives the bar an ETA
    manifest.update(total_inputs=total, shards=-(-total // options.shard_size))
    _write_json(out / "build.json", manifest)
    bar = tqdm(total=total, unit="piece", desc="building", disable=not options.progress, dynamic_ncols=True, smoothing=0.05)
    counters = {"shards": 0, "skipped_shards": 0, "built_shards": 0, "skipped_pieces": 0}
    pending_shards: deque[tuple[int, list[PieceRef], str]] = deque()

    def tasks() -> Iterator[_Task]:
        for index, chunk in enumerate(_chunks(refs(), options.shard_size)):
            counters["shards"] = index + 1
            inputs_hash = shard_inputs_hash(chunk, keys)
            marker = read_marker(out, index)
            if marker and marker.get("inputs_hash") == inputs_hash and all(
                (out / name / f"{shard_name(index)}.jsonl").is_file() for name in SHARD_DIRS
            ):
                counters["skipped_shards"] += 1
                counters["skipped_pieces"] += len(chunk)
                bar.update(len(chunk))
                continue
            pending_shards.append((index, chunk, inputs_hash))
            for ref in chunk:
                yield _Task(index, ref)

    runner = PieceRunner(options.workers, keys, options.timeout_s, options.max_memory_mb)
    writer: ShardWriter | None = None
    try:
        for task, result in runner.run(tasks()):
            if writer is None or writer.index != task.shard:
                index, chunk, inputs_hash = pending_shards.popleft()
                writer = ShardWriter(out, index, len(chunk), inputs_hash)
            writer.add(task.ref, result)
            bar.update(1)
            if writer.complete:
                writer.finish()
                counters["built_shards"] += 1
                writer = None
    except BaseException:
        if writer is not None:
            writer.abort()
        manifest["runs"].append({"started": manifest["started"], "seconds": round(time.time() - started, 1),
                                 "built_shards": counters["built_shards"], "interrupted": True})
        _write_json(out / "build.json", manifest)
        raise
    finally:
        runner.close()
        bar.close()
    removed = _remove_shards_from(out, counters["shards"])
    seconds = round(time.time() - started, 1)
    manifest["runs"].append({"started": manifest["started"], "seconds": seconds, "built_shards": counters["built_shards"]})
    manifest.update(
        finished=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        seconds=seconds,
        total_seconds=round(sum(run["seconds"] for run in manifest["runs"]), 1),
        shards=counters["shards"],
        built_shards=counters["built_shards"],
        skipped_shards=counters["skipped_shards"],
        skipped_pieces=counters["skipped_pieces"],
        stale_files_removed=removed,
        pool_restarts=runner.restarts,
    )
    _write_json(out / "build.json", manifest)
    return write_report(out)


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, ensure_ascii=False, indent=1), encoding="utf-8")
    os.replace(tmp, path)


# ---------------------------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------------------------


def _markers(out: Path) -> Iterator[dict]:
    manifest = _read_json(out / "build.json") or {}
    n_shards = manifest.get("shards")
    for path in sorted((out / "pieces").glob("shard-*.done")):
        index = int(re.match(r"shard-(\d+)", path.name).group(1))
        if n_shards is not None and index >= n_shards:
            continue
        marker = read_marker(out, index)
        if marker:
            yield marker


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def make_report(out: str | Path) -> dict:
    """Sum the shard markers of a build into one report (pieces per source and prompt, splits,
    failures with reasons, corpus BAE, build time)."""
    out = Path(out)
    manifest = _read_json(out / "build.json") or {}
    sources: dict[str, dict] = {}
    prompts: dict[str, dict] = {}
    splits = {kind: dict.fromkeys(SPLITS, 0) for kind in ("pieces", "finetune")}
    failures, stages, label_notes = Counter(), Counter(), Counter()
    totals = Counter()
    shards_done = 0
    for marker in _markers(out):
        shards_done += 1
        for name, stats in marker["sources"].items():
            into = sources.setdefault(name, Counter())
            into.update(stats)
        for prompt, counts in marker["prompts"].items():
            prompts.setdefault(prompt, Counter()).update(counts)
        for kind, counts in splits.items():
            for split, n in marker["splits"][kind].items():
                counts[split] += n
        failures.update(marker["failures"])
        stages.update(marker["failure_stages"])
        label_notes.update(marker["label_notes"])
        totals.update(
            inputs=marker["inputs"], seconds=marker["seconds"], timeouts=marker["timeouts"],
            bars=marker["bars"], misaligned_bars=marker["misaligned_bars"],
        )
    source_rows = {}
    for name in sorted(sources):
        s = sources[name]
        source_rows[name] = {
            "inputs": s["inputs"], "pieces": s["pieces"], "failed": s["failed"],
            "labelled": s["labelled"], "bars": s["bars"], "misaligned_bars": s["misaligned_bars"],
            "bae_percent": round(100 * s["misaligned_bars"] / s["bars"], 3) if s["bars"] else None,
            "seconds": round(s["seconds"], 1),
        }
    prompt_rows = {
        p: {**{k: c.get(k, 0) for k in SPLITS}, "total": sum(c.values())}
        for p, c in sorted(prompts.items(), key=lambda item: (-sum(item[1].values()), item[0]))
    }
    failure_list = []
    failures_dir = out / "failures"
    for path in sorted(failures_dir.glob("shard-*.jsonl")) if failures_dir.is_dir() else []:
        index = int(re.match(r"shard-(\d+)", path.name).group(1))
        if manifest.get("shards") is not None and index >= manifest["shards"]:
            continue
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                if len(failure_list) >= FAILURE_LIST_LIMIT:
                    break
                failure_list.append(json.loads(line))
    pieces = sum(r["pieces"] for r in source_rows.values())
    report = {
        "command": manifest.get("command", ""),
        "started": manifest.get("started"),
        "finished": manifest.get("finished"),
        "complete": manifest.get("finished") is not None and shards_done == manifest.get("shards"),
        "build_seconds": manifest.get("seconds"),
        "total_build_seconds": manifest.get("total_seconds") or round(sum(r["seconds"] for r in manifest.get("runs", [])), 1),
        "runs": len(manifest.get("runs", [])),
        "piece_seconds": round(totals["seconds"], 1),
        "workers": manifest.get("workers"),
        "shards": {"total": manifest.get("shards"), "done": shards_done, "built_this_run": manifest.get("built_shards"),
                   "skipped_this_run": manifest.get("skipped_shards")},
        "pool_restarts": manifest.get("pool_restarts", 0),
        "keys": manifest.get("keys"),
        "totals": {
            "inputs": totals["inputs"],
            "pieces": pieces,
            "failed": sum(r["failed"] for r in source_rows.values()),
            "labelled": sum(r["labelled"] for r in source_rows.values()),
            "prompts": len(prompt_rows),
            "timeouts": totals["timeouts"],
        },
        "bae": {
            "bars": totals["bars"],
            "misaligned_bars": totals["misaligned_bars"],
            "percent": round(100 * totals["misaligned_bars"] / totals["bars"], 3) if totals["bars"] else None,
            "what": "bar alignment error of the interleaved ABC (original key) of every converted piece: "
                    "misaligned bars / bars, summed over the corpus (engine.score.bae)",
        },
        "splits": splits,
        "sources": source_rows,
        "prompts": prompt_rows,
        "failure_stages": dict(stages.most_common()),
        "failure_reasons": dict(failures.most_common()),
        "failures_listed": failure_list,
        "unlabelled_reasons": dict(label_notes.most_common()),
    }
    return report


def write_report(out: str | Path) -> dict:
    """Write report.json, report.md and the prompt list (prompts.tsv, prompts.txt); return the report."""
    out = Path(out)
    report = make_report(out)
    _write_json(out / "report.json", report)
    (out / "report.md").write_text(report_markdown(report), encoding="utf-8")
    with open(out / "prompts.tsv", "w", encoding="utf-8") as handle:
        handle.write("prompt\tperiod\tcomposer\tinstrumentation\t" + "\t".join(SPLITS) + "\ttotal\n")
        for prompt, counts in report["prompts"].items():
            period, composer, instrumentation = _split_prompt(prompt)
            handle.write("\t".join([prompt, period, composer, instrumentation, *(str(counts[s]) for s in SPLITS), str(counts["total"])]) + "\n")
    (out / "prompts.txt").write_text(
        "".join(f"{p}\n" for p in sorted(p for p, c in report["prompts"].items() if c["train"] > 0)), encoding="utf-8"
    )
    return report


def _split_prompt(prompt: str) -> tuple[str, str, str]:
    period, rest = prompt.split("_", 1)
    for instrumentation in INSTRUMENTATIONS:
        if rest.endswith("_" + instrumentation):
            return period, rest[: -len(instrumentation) - 1], instrumentation
    composer, _, instrumentation = rest.rpartition("_")
    return period, composer, instrumentation


def report_markdown(report: dict) -> str:
    """The report as Markdown (what the CLI prints and docs/datasets.md quotes)."""
    lines = ["# Dataset build report", ""]
    state = "complete" if report["complete"] else "INCOMPLETE (still running, or interrupted: rerun the command to resume)"
    lines += [
        f"- command: `{report['command']}`",
        f"- state: {state}; shards done {report['shards']['done']} of {report['shards']['total'] or '?'}"
        + (f" (the last run built {report['shards']['built_this_run']}, skipped {report['shards']['skipped_this_run']} already done)"
           if report["shards"]["built_this_run"] is not None else ""),
        f"- last run started {report['started']}, finished {report['finished'] or '(not yet)'}; wall time of the last run: "
        f"{_duration(report['build_seconds'])}, "
        + (f"of the whole build ({report['runs']} run(s), resumed ones added up): " if report["finished"]
           else f"of the {report['runs']} earlier (interrupted) run(s): ")
        + f"{_duration(report['total_build_seconds'])}; "
        f"conversion time summed over pieces: {_duration(report['piece_seconds'])} on {report['workers']} workers",
    ]
    t = report["totals"]
    lines += [
        f"- inputs {t['inputs']}: converted to NotaGen text {t['pieces']}, "
        f"no NotaGen text {t['failed']} ({t['timeouts']} timeouts); labelled for fine-tuning {t['labelled']} in {t['prompts']} prompts",
    ]
    bae = report["bae"]
    lines += [f"- corpus BAE: {bae['percent']} % ({bae['misaligned_bars']} of {bae['bars']} bars misaligned)", ""]
    lines += ["## Splits (by work)", "", "| set | " + " | ".join(SPLITS) + " |", "|---|" + "---:|" * len(SPLITS)]
    for kind, counts in report["splits"].items():
        lines.append(f"| {kind} | " + " | ".join(str(counts[s]) for s in SPLITS) + " |")
    lines += ["", "## Pieces per source", "",
              "| source | inputs | NotaGen texts | failed | labelled | BAE % | seconds |",
              "|---|---:|---:|---:|---:|---:|---:|"]
    for name, row in report["sources"].items():
        lines.append(
            f"| {name} | {row['inputs']} | {row['pieces']} | {row['failed']} | {row['labelled']} | "
            f"{'' if row['bae_percent'] is None else row['bae_percent']} | {row['seconds']} |"
        )
    lines += ["", f"## Pieces per prompt ({len(report['prompts'])} prompts)", "",
              "| prompt | " + " | ".join(SPLITS) + " | total |", "|---|" + "---:|" * (len(SPLITS) + 1)]
    for prompt, counts in report["prompts"].items():
        lines.append(f"| {prompt} | " + " | ".join(str(counts[s]) for s in SPLITS) + f" | {counts['total']} |")
    lines += ["", "## Failures", ""]
    if report["failure_stages"]:
        lines += ["By stage: " + ", ".join(f"{k} {v}" for k, v in report["failure_stages"].items()), "",
                  "| count | stage: reason (numbers masked) |", "|---:|---|"]
        lines += [f"| {n} | {reason.replace('|', '/')} |" for reason, n in list(report["failure_reasons"].items())[:40]]
        lines += ["", f"First {len(report['failures_listed'])} failed pieces (all are in failures/*.jsonl):", ""]
        lines += [f"- `{f['id']}` ({f['stage']}): {f['reason']}" for f in report["failures_listed"][:60]]
    else:
        lines.append("None.")
    if report["unlabelled_reasons"]:
        lines += ["", "## Pieces left unlabelled (pre-training only) although their source is labelled", ""]
        lines += [f"- {n} x {note}" for note, n in report["unlabelled_reasons"].items()]
    return "\n".join(lines) + "\n"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = int(seconds)
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m{seconds % 60:02d}s"


# ---------------------------------------------------------------------------------------------
# reading a built data set (for the training scripts)
# ---------------------------------------------------------------------------------------------


def iter_records(out: str | Path, kind: str = "pieces", split: str | None = None) -> Iterator[dict]:
    """Stream the records of `pieces`, `finetune` or `failures` shards, optionally one split."""
    folder = Path(out) / kind
    for path in sorted(folder.glob("shard-*.jsonl")):
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                record = json.loads(line)
                if split is None or record.get("split") == split:
                    yield record


def iter_finetune(out: str | Path, split: str | None = None) -> Iterator[dict]:
    """The fine-tuning set: the labelled piece records (with `prompt` and `labels`)."""
    for record in iter_records(out, "pieces", split):
        if record.get("prompt"):
            yield record


def finetune_text(record: dict, key: str) -> str:
    """A labelled piece as NotaGen fine-tuning text in `key`: the three `%` prompt lines, then the
    rest-reduced interleaved ABC (the format of the official fine-tuning data)."""
    labels = record["labels"]
    return f"%{labels['period']}\n%{labels['composer']}\n%{labels['instrumentation']}\n" + record["keys"][key]


# ---------------------------------------------------------------------------------------------
# command line
# ---------------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m training.data", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="build or resume the data sets")
    b.add_argument("--out", required=True, type=Path, help="output folder (e.g. data/)")
    b.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="worker processes (default: all cores)")
    b.add_argument("--shard-size", type=int, default=DEFAULT_SHARD_SIZE, help="pieces per shard (default %(default)s)")
    b.add_argument("--limit", type=int, default=None, help="at most N pieces per source (quick runs)")
    b.add_argument("--sources", default=None,
                   help="comma-separated sources to include: music21 folders (bach, music21/essenFolksong), "
                        "globs (music21/*), 'music21', or an extra folder's name")
    b.add_argument("--no-music21", action="store_true", help="leave out the bundled music21 corpus")
    b.add_argument("--extra-dir", action="append", default=[], help="a folder of scores (repeatable)")
    b.add_argument("--extra-labels", action="append", default=[],
                   help="its labels CSV: file, composer ('Last, First'), work[, period, instrumentation] (one per --extra-dir, in order)")
    b.add_argument("--extra-instrumentation", action="append", default=[],
                   help=f"instrumentation for rows without one (one per --extra-dir): {', '.join(INSTRUMENTATIONS)}")
    b.add_argument("--extra-name", action="append", default=[], help="source name of each --extra-dir (default: its folder name)")
    b.add_argument("--timeout", type=int, default=DEFAULT_TIMEOUT_S, help="CPU seconds allowed per piece (default %(default)s)")
    b.add_argument("--max-memory-mb", type=int, default=DEFAULT_MAX_MEMORY_MB,
                   help="address-space cap per worker, 0 for none (default %(default)s)")
    b.add_argument("--keys", default=None, help="comma-separated keys for the rest-reduced texts (default: NotaGen's 15)")
    b.add_argument("--quiet", action="store_true", help="no progress bar and no printed report")
    r = sub.add_parser("report", help="reprint (and rewrite) the report of a built data set")
    r.add_argument("--out", required=True, type=Path)
    m = sub.add_parser("openscore-csv", help="write a labels CSV for a local, converted copy of an OpenScore repository")
    m.add_argument("--dir", required=True, type=Path, help="the repository folder (holding scores/)")
    m.add_argument("--csv", required=True, type=Path, help="the CSV to write (e.g. DIR/metadata.csv)")
    return parser


def _specs(args: argparse.Namespace) -> list[SourceSpec]:
    specs = [] if args.no_music21 else [SourceSpec("music21")]
    n = len(args.extra_dir)
    for option, values in (("--extra-labels", args.extra_labels), ("--extra-instrumentation", args.extra_instrumentation),
                           ("--extra-name", args.extra_name)):
        if len(values) > n or (values and len(values) != n and n > 1):
            raise SystemExit(f"give {option} once per --extra-dir ({n}), in the same order")
    for i, directory in enumerate(args.extra_dir):
        if not Path(directory).is_dir():
            raise SystemExit(f"--extra-dir {directory}: not a folder")
        labels = args.extra_labels[i] if i < len(args.extra_labels) else None
        if labels and not Path(labels).is_file():
            raise SystemExit(f"--extra-labels {labels}: no such file")
        instrumentation = args.extra_instrumentation[i] if i < len(args.extra_instrumentation) else None
        if instrumentation and instrumentation not in INSTRUMENTATIONS:
            raise SystemExit(f"--extra-instrumentation {instrumentation!r}: use one of {', '.join(INSTRUMENTATIONS)}")
        name = args.extra_name[i] if i < len(args.extra_name) else None
        specs.append(SourceSpec("extra", str(directory), labels, instrumentation, name))
    return specs


class BuildInterrupted(KeyboardInterrupt):
    """SIGTERM (or SIGINT) during a build: stop the pool, keep every finished shard."""


def _interrupt(signum, frame):  # noqa: ARG001 - signal handler signature
    raise BuildInterrupted(f"stopped by signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if threading.current_thread() is threading.main_thread():
        # A background job (`nohup ... &`) starts with SIGINT ignored, and SIGTERM would kill the
        # process without stopping its pool: both end the build cleanly instead (finished shards
        # stay; rerun to resume).
        signal.signal(signal.SIGTERM, _interrupt)
        signal.signal(signal.SIGINT, _interrupt)
    if args.command == "openscore-csv":
        from training.corpus import openscore_metadata

        with open(args.csv, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=["file", "composer", "work", "source_path"])
            writer.writeheader()
            rows = 0
            for row in openscore_metadata(args.dir):
                writer.writerow(row)
                rows += 1
        print(f"{args.csv}: {rows} scores")
        return 0
    if args.command == "report":
        if not (args.out / "build.json").is_file():
            raise SystemExit(f"{args.out} holds no build (build.json is missing)")
        print(report_markdown(write_report(args.out)))
        return 0
    keys = tuple(k.strip() for k in args.keys.split(",")) if args.keys else None
    if keys:
        from engine.score.notagen_abc import KEYS

        unknown = [k for k in keys if k not in KEYS]
        if unknown:
            raise SystemExit(f"--keys: unknown {', '.join(unknown)}; NotaGen's keys are {', '.join(KEYS)}")
    options = BuildOptions(
        out=args.out,
        specs=_specs(args),
        sources=[s.strip() for s in args.sources.split(",") if s.strip()] if args.sources else None,
        limit=args.limit,
        workers=args.workers,
        shard_size=args.shard_size,
        timeout_s=args.timeout,
        max_memory_mb=args.max_memory_mb,
        keys=keys,
        progress=not args.quiet,
        command="python -m training.data " + shlex.join(argv if argv is not None else sys.argv[1:]),
    )
    try:
        report = build(options)
    except BuildInterrupted as exc:
        print(f"\nbuild interrupted ({exc}); finished shards are kept, rerun the same command to resume", file=sys.stderr)
        return 130
    if not args.quiet:
        print(report_markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
