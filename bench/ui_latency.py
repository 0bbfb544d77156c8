"""UI latency: time to the first generated bars on screen, and re-engraving a 32-measure 4-part score.

    .venv/bin/python bench/ui_latency.py [--notagen-checkpoint PATH] [--runs 5]

Time to first bars is measured in headless Chromium against the real app: from the click on Generate
to the first engraved measure in the page. Re-engraving is the engine call each new version makes
(verovio layout + SVG of every page + timemap), on a fresh engraver cache, for the first 32 measures of
Haydn's Op. 74/1 (string quartet) from the music21 corpus. Prints medians and the machine's load.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"]


def engrave_times(runs: int) -> list[float]:
    import music21

    from engine.render.engrave import Engraver
    from engine.score.formats import score_to_musicxml

    quartet = music21.corpus.parse("haydn/opus74no1/movement1.mxl").measures(1, 32)
    musicxml = score_to_musicxml(quartet)
    engraver = Engraver()
    engraver.engrave(musicxml)  # warm-up: fonts and first layout
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        engraver.engrave(musicxml)
        times.append(time.perf_counter() - started)
    return times


def first_bar_times(checkpoint: str | None, runs: int) -> list[float]:
    from playwright.sync_api import sync_playwright

    port = 7899
    args = [sys.executable, "app.py", "--port", str(port)]
    if checkpoint:
        args += ["--notagen-checkpoint", checkpoint]
    log = open(Path(tempfile.gettempdir()) / "ui_latency_app.log", "w")
    app = subprocess.Popen(args, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        for _ in range(240):
            try:
                urllib.request.urlopen(url, timeout=2)
                break
            except OSError:
                time.sleep(0.5)
        times = []
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
            for run in range(runs):
                page = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
                page.set_default_timeout(120_000)
                page.goto(url)
                page.wait_for_selector("#composer input")
                page.wait_for_function("() => document.querySelector('#composer input').value !== ''")
                page.locator("#seed input").fill(str(run))
                started = time.perf_counter()
                page.locator("#generate").click()
                page.wait_for_selector("#score-view svg g.measure")
                times.append(time.perf_counter() - started)
                page.wait_for_function("() => /Done in|Error/.test(document.querySelector('#status').innerText)")
                page.context.close()
            browser.close()
        return times
    finally:
        app.terminate()
        app.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--notagen-checkpoint", default=None, help="default: the app's default model")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    engrave = engrave_times(args.runs)
    print(f"re-engrave 32 measures x 4 parts: median {statistics.median(engrave) * 1000:.0f} ms "
          f"(min {min(engrave) * 1000:.0f}, max {max(engrave) * 1000:.0f}; target < 300 ms)")
    first = first_bar_times(args.notagen_checkpoint, args.runs)
    print(f"Generate -> first bars on screen: median {statistics.median(first):.2f} s "
          f"(min {min(first):.2f}, max {max(first):.2f}; target < 3 s)")
    print(f"load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
