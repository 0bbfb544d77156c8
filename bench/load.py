"""Load: concurrent sessions drive the app through its web API for a while (issue #8).

    .venv/bin/python bench/load.py [--sessions 8] [--duration 300] [--bars 4] [--hostile] [--url URL]

Each session is its own gradio_client `Client` (so its own server-side `Session`) and loops: generate a
few bars from its own prompt, regenerate the unlocked measures (inpaint), render audio, download the
MusicXML. Without --url the bench starts `python app.py` (the shipped models) with a temp folder of its
own, so the server's memory (VmRSS) and temp-disk use can be read. Prints requests, errors (target 0),
p50/p95 latency per action, memory and disk at start and end, and whether a session ever saw another
session's score: each download must be byte for byte the version its session holds (the `saved` output,
titled with its own prompt), and no score may turn up in two sessions. With --hostile, one of the sessions
uploads hostile files instead (issue #22: tests/test_bounded_input.py's, and two that reach the workers'
budgets) and reports how each was refused; the errors counted are then those of the other sessions.
"""
from __future__ import annotations

import argparse
import hashlib
import math
import os
import shutil
import sys
import tempfile
import threading
import time
import urllib.request
from collections import defaultdict
from contextlib import nullcontext
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.conftest import running_app  # noqa: E402  (the tests' app launcher: free port, waits until it answers)

ACTIONS = ("generate", "inpaint", "audio", "download")
SAMPLING = (1.2, 9, 0.9)
"""The app's default temperature, top-k and top-p."""
HEADER = ("model's choice", "model's choice", "model's choice", None)
"""Ensemble, key, metre and tempo of the header: the model's (the page's defaults)."""


class SessionRun:
    """One simulated user: its client, prompt, timings, errors and the scores it made."""

    def __init__(self, url: str, index: int, prompt: tuple[str, str, str], bars: int) -> None:
        from gradio_client import Client

        self.client = Client(url, verbose=False, download_files=False)
        self.index, self.prompt, self.bars = index, prompt, bars
        period, composer, instrumentation = prompt
        self.title = f"{composer} - {period} - {instrumentation}"  # the title the app gives a prompted piece
        self.latencies: dict[str, list[float]] = defaultdict(list)
        self.errors: list[str] = []
        self.leaks: list[str] = []
        self.digests: set[str] = set()
        # As the page does on load and on each pick: the server then accepts these values for this session.
        self.client.predict(period, api_name="/composers_for")
        self.client.predict(period, composer, api_name="/instrumentations_for")

    def loop(self, deadline: float) -> None:
        seed = self.index * 100_000
        while time.monotonic() < deadline:
            seed += 1
            action = "generate"
            try:
                self.call(action, *self.prompt, *SAMPLING, seed, self.bars, *HEADER, api_name="/generate")
                action = "inpaint"
                outputs = self.call(action, 0, seed, True, api_name="/regenerate_unlocked")  # confirmed: all unlocked
                action = "audio"
                self.call(action, 1.0, api_name="/render_audio")
                action = "download"
                self.download(outputs)
            except Exception as exc:  # any failure is a result to report, not a reason to stop the load
                self.errors.append(f"session {self.index} {action}: {' '.join(str(exc).split())[:200]}")
                time.sleep(1)  # a server that refuses at once must not turn the loop into a busy spin

    def call(self, action: str, *args, api_name: str) -> tuple:
        started = time.perf_counter()
        outputs = self.client.predict(*args, api_name=api_name)
        self.latencies[action].append(time.perf_counter() - started)
        failure = next((o for o in outputs if isinstance(o, str) and o.startswith("**Error:**")), None)
        if failure:
            raise RuntimeError(failure)
        return outputs

    def download(self, outputs: tuple) -> None:
        """Fetch the MusicXML download and check it is this session's own current version."""
        saved = next(o for o in outputs if isinstance(o, dict) and "versions" in o)["versions"][-1]
        files = [o["value"] for o in outputs if isinstance(o, dict) and isinstance(o.get("value"), dict)]
        url = next(f["url"] for f in files if str(f.get("path", "")).endswith(".musicxml"))
        started = time.perf_counter()
        with urllib.request.urlopen(url, timeout=120) as response:
            data = response.read()
        self.latencies["download"].append(time.perf_counter() - started)
        if saved["title"] != self.title:
            self.leaks.append(f"session {self.index} holds {saved['title']!r}, not its own {self.title!r}")
        if data != saved["musicxml"].encode("utf-8"):
            self.leaks.append(f"session {self.index} downloaded a MusicXML that is not its current version")
        self.digests.add(hashlib.sha256(data).hexdigest())


class HostileRun:
    """A session that uploads hostile files in a loop: each should be refused with a one-line message."""

    def __init__(self, url: str, folder: Path) -> None:
        from gradio_client import Client

        self.client = Client(url, verbose=False, download_files=False)
        self.files = hostile_files(folder)
        self.outcomes: dict[str, list[tuple[float, str]]] = defaultdict(list)
        self.errors: list[str] = []

    def loop(self, deadline: float) -> None:
        from gradio_client import handle_file

        while time.monotonic() < deadline:
            for path in self.files:
                started = time.perf_counter()
                try:
                    outputs = self.client.predict(handle_file(str(path)), api_name="/open_upload")
                except Exception as exc:  # the server failed this request: an error, not a refusal
                    self.errors.append(f"hostile {path.name}: {' '.join(str(exc).split())[:200]}")
                    continue
                status = next((o for o in outputs if isinstance(o, str) and "could not open the file" in o), "accepted")
                self.outcomes[path.name].append((time.perf_counter() - started, " ".join(status.split())))


def hostile_files(folder: Path) -> list[Path]:
    """tests/test_bounded_input.py's hostile files (refused before parsing) and two for the budgets: 120,000
    measures of rests (music21 needs more than the import memory) and 12 MB of empty elements (verovio)."""
    from tests.test_bounded_input import HOSTILE, NOTE, musicxml

    made = {name: make() for name, (make, _) in HOSTILE.items()}
    rest = '<note><rest measure="yes"/><duration>4</duration></note>'
    made["greedy-import.musicxml"] = musicxml(3000, parts=40).replace(NOTE.format(d=4), rest).encode()
    made["greedy-engraving.musicxml"] = musicxml().replace("<note>", "<a/>" * 3_000_000 + "<note>", 1).encode()
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in made.items():
        (folder / name).write_bytes(data)
    return [folder / name for name in made]


def prompts(url: str) -> list[tuple[str, str, str]]:
    """Every (period, composer, instrumentation) the app offers, read through its own dropdown endpoints."""
    from gradio_client import Client

    client = Client(url, verbose=False, download_files=False)
    period = next(c for c in client.config["components"] if c.get("props", {}).get("elem_id") == "period")
    found = []
    for name, _ in period["props"]["choices"]:
        for composer, _ in client.predict(name, api_name="/composers_for")["choices"]:
            for kind, _ in client.predict(name, composer, api_name="/instrumentations_for")["choices"]:
                found.append((name, composer, kind))
    return found


def server_pid() -> int | None:
    """The `python app.py` child of this process (started by `running_app`)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == os.getpid() and b"app.py" in (stat.parent / "cmdline").read_bytes():
                return int(stat.parent.name)
        except (OSError, IndexError, ValueError):
            continue
    return None


def rss_mib(pid: int) -> float:
    """VmRSS of the server and its child processes (the verovio worker, FluidSynth while it runs)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            own = int(line.split()[1]) / 1024
            break
    else:
        raise RuntimeError(f"no VmRSS for process {pid}")
    children = [int(c) for task in Path(f"/proc/{pid}/task").iterdir()
                for c in (task / "children").read_text().split()]
    return own + sum(_child_rss_mib(child) for child in children)


def _child_rss_mib(pid: int) -> float:
    try:
        return rss_mib(pid)
    except (OSError, RuntimeError):  # it ended meanwhile
        return 0.0


def disk_mib(folder: Path) -> tuple[float, int]:
    """Bytes (MiB) and number of files under `folder`."""
    sizes = [p.stat().st_size for p in folder.rglob("*") if p.is_file()]
    return sum(sizes) / 2**20, len(sizes)


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile: a value that was measured."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=8)
    parser.add_argument("--duration", type=float, default=300, help="seconds the sessions keep starting new loops")
    parser.add_argument("--bars", type=int, default=4, help="bars each generation asks for")
    parser.add_argument("--hostile", action="store_true", help="one of the sessions uploads hostile files instead")
    parser.add_argument("--url", help="attach to a running app instead of starting one (memory and disk are not read)")
    args = parser.parse_args()

    temp = Path(tempfile.mkdtemp(prefix="load-bench-"))
    if args.url is None:  # the app's own temp files (exports, Gradio cache, FluidSynth) all go under `temp`
        os.environ["TMPDIR"] = os.environ["GRADIO_TEMP_DIR"] = str(temp)
    log = temp.parent / f"{temp.name}.log"
    app = nullcontext(args.url) if args.url else running_app(log_path=log)
    with app as url:
        pid = None if args.url else server_pid()
        peak = 0.0
        start_rss, start_disk = (rss_mib(pid), disk_mib(temp)) if pid else (None, None)
        print(f"load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; {url}")
        offered = prompts(url)
        composers = args.sessions - 1 if args.hostile else args.sessions
        runs = [SessionRun(url, i, offered[i % len(offered)], args.bars) for i in range(composers)]
        hostile = [HostileRun(url, Path(tempfile.mkdtemp(prefix="load-bench-hostile-")))] if args.hostile else []
        deadline = time.monotonic() + args.duration
        started = time.monotonic()
        threads = [threading.Thread(target=run.loop, args=(deadline,)) for run in [*runs, *hostile]]
        for thread in threads:
            thread.start()
        while any(thread.is_alive() for thread in threads):
            if pid:
                peak = max(peak, rss_mib(pid))
            time.sleep(1)
        elapsed = time.monotonic() - started
        end_rss, end_disk = (rss_mib(pid), disk_mib(temp)) if pid else (None, None)
    shutil.rmtree(temp, ignore_errors=True)
    for run in hostile:
        shutil.rmtree(run.files[0].parent, ignore_errors=True)

    latencies = defaultdict(list)
    for run in runs:
        for action, values in run.latencies.items():
            latencies[action].extend(values)
    errors = [e for run in runs for e in run.errors]
    leaks = [leak for run in runs for leak in run.leaks]
    shared = set.union(*(a.digests & b.digests for i, a in enumerate(runs) for b in runs[i + 1 :])) if len(runs) > 1 else set()
    print(f"{len(runs)} composing sessions{' and 1 hostile' if hostile else ''}, {elapsed:.0f} s (new loops started for {args.duration:.0f} s), "
          f"{args.bars} bars per generation; load average after: {os.getloadavg()[0]:.1f}")
    print(f"requests completed: {sum(len(v) for v in latencies.values())} "
          f"({', '.join(f'{a} {len(latencies[a])}' for a in ACTIONS)}); errors: {len(errors)}")
    for action in ACTIONS:
        values = latencies[action]
        if values:
            print(f"  {action:9s} p50 {percentile(values, 0.5):6.2f} s   p95 {percentile(values, 0.95):6.2f} s   "
                  f"max {max(values):6.2f} s")
    if pid:
        print(f"server memory (VmRSS, with its child processes): {start_rss:.0f} MiB at start, {end_rss:.0f} MiB at end, peak {peak:.0f} MiB")
        print(f"server temp disk: {start_disk[0]:.1f} MiB ({start_disk[1]} files) at start, "
              f"{end_disk[0]:.1f} MiB ({end_disk[1]} files) at end")
    print(f"isolation: {sum(len(r.digests) for r in runs)} downloads checked; "
          f"{len(leaks)} mismatches, {len(shared)} scores seen by two sessions")
    for run in hostile:
        print(f"hostile session: {sum(map(len, run.outcomes.values()))} uploads, {len(run.errors)} server errors")
        for name, outcomes in run.outcomes.items():
            seconds = [s for s, _ in outcomes]
            print(f"  {name}: {len(outcomes)}x, max {max(seconds):.1f} s: {outcomes[-1][1][:160]}")
        errors += run.errors
    for line in (errors + leaks)[:20]:
        print("  " + line)
    if errors or leaks or shared:
        print(f"server log: {log}")
        return 1
    log.unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
