"""UI latency: time to the first generated bars on screen, and re-engraving a 32-measure 4-part score.

    .venv/bin/python bench/ui_latency.py [--notagen-checkpoint PATH] [--runs 5]

Time to first bars is measured in headless Chromium against the real app, by the page's own clock: from
the click event on Generate to the first frame drawn with an engraved measure in the score view (a
MutationObserver sees the measure, the next animation frame draws it). Playwright's `wait_for_selector`
is not the clock: after its first few tries it looks only every 500 ms, which added up to 0.7 s.
Each run then presses Stop and waits for the piece to end (no longer than `STOP_WAIT_S`), so the next
run starts on an idle server. Re-engraving is the engine call each new version makes
(verovio layout + SVG of every page + timemap), on a fresh engraver cache, for the first 32 measures of
Haydn's Op. 74/1 (string quartet) from the music21 corpus. Prints medians and the machine's load.
"""
from __future__ import annotations

import argparse
import os
import re
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
APP_START_S = 120.0
"""Longest wait for the app to answer (it loads the models first)."""
FIRST_BAR_S = 60.0
"""Longest wait from the click for the first engraved bar."""
STOP_WAIT_S = 30.0
"""Longest wait for a stopped piece to end (the model stops after its current patch)."""
WATCH_FIRST_BAR_JS = """() => {
    window.__firstBar = null;
    document.querySelector('#generate').addEventListener('click', (event) => {
        const clicked = event.timeStamp;
        const seen = new MutationObserver(() => {
            if (!document.querySelector('#score-view svg g.measure')) return;
            seen.disconnect();
            const status = document.querySelector('#status').innerText;
            requestAnimationFrame(() => setTimeout(() => {
                window.__firstBar = {seconds: (performance.now() - clicked) / 1000, status};
            }));
        });
        seen.observe(document.body, {childList: true, subtree: true});
    }, {capture: true, once: true});
}"""
"""Times one Generate click in the page: from the click event to the frame after the first measure is in
the score view (a setTimeout after requestAnimationFrame runs once that frame is drawn), and keeps the
status line shown with that measure ("Generating: 1 bars, 0.8 s": the model's own time to the bar)."""
MODEL_SECONDS = re.compile(r"Generating: 1 bars, ([0-9.]+) s")


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


def first_bar_times(checkpoint: str | None, runs: int) -> tuple[list[float], list[float]]:
    """Seconds from the click to the first bar on screen, and of those the model's decoding, per run."""
    from playwright.sync_api import sync_playwright

    port = 7899
    args = [sys.executable, "app.py", "--port", str(port)]
    if checkpoint:
        args += ["--notagen-checkpoint", checkpoint]
    log = open(Path(tempfile.gettempdir()) / "ui_latency_app.log", "w")
    app = subprocess.Popen(args, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_for_app(url, app)
        times, model_times = [], []
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
            for run in range(runs):
                page = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
                page.set_default_timeout(APP_START_S * 1000)
                page.goto(url)
                page.wait_for_selector("#composer input")
                page.wait_for_function("() => document.querySelector('#composer input').value !== ''")
                page.locator("#seed input").fill(str(run))
                page.evaluate(WATCH_FIRST_BAR_JS)
                page.locator("#generate").click()
                first = wait_for(page, "window.__firstBar", FIRST_BAR_S, f"run {run + 1}: no engraved bar")
                times.append(first["seconds"])
                model = MODEL_SECONDS.search(first["status"])
                if model:
                    model_times.append(float(model.group(1)))
                page.locator("#stop").click()
                wait_for(page, "/Done in|Error|Stopped/.test(document.querySelector('#status').innerText)", STOP_WAIT_S,
                         f"run {run + 1}: the piece did not end after Stop")
                page.context.close()
            browser.close()
        return times, model_times
    finally:
        app.terminate()
        app.wait(timeout=30)


def wait_for_app(url: str, app: subprocess.Popen) -> None:
    """Until the app answers; SystemExit if it ended or did not answer within `APP_START_S`."""
    deadline = time.monotonic() + APP_START_S
    while time.monotonic() < deadline:
        if app.poll() is not None:
            raise SystemExit(f"the app ended (exit code {app.returncode}) before answering: see its log "
                             f"{Path(tempfile.gettempdir()) / 'ui_latency_app.log'}")
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except OSError:
            time.sleep(0.5)
    raise SystemExit(f"the app did not answer at {url} within {APP_START_S:.0f} s")


def wait_for(page, expression: str, seconds: float, what: str):
    """The value of `expression` once it is truthy; SystemExit saying `what` did not happen within `seconds`
    and what the status line said. Checked every 100 ms, not every frame, so that the check takes little CPU
    from the app (the page keeps its own times)."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        return page.wait_for_function(f"() => {expression}", polling=100, timeout=seconds * 1000).json_value()
    except PlaywrightTimeout:
        status = page.locator("#status").inner_text()
        raise SystemExit(f"{what} within {seconds:.0f} s; the status line said: {status!r}") from None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--notagen-checkpoint", default=None, help="default: the app's default model")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    engrave = engrave_times(args.runs)
    print(f"re-engrave 32 measures x 4 parts: median {statistics.median(engrave) * 1000:.0f} ms "
          f"(min {min(engrave) * 1000:.0f}, max {max(engrave) * 1000:.0f}; target < 300 ms)")
    first, model = first_bar_times(args.notagen_checkpoint, args.runs)
    print(f"Generate -> first bars on screen: median {statistics.median(first):.2f} s "
          f"(min {min(first):.2f}, max {max(first):.2f}; target < 1.5 s)")
    if model:
        print(f"  of which the model decoding the first bar (status line, {len(model)} runs): median "
              f"{statistics.median(model):.1f} s (min {min(model):.1f}, max {max(model):.1f})")
    print(f"load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
