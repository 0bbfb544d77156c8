"""Lock-click latency in headless Chromium against the real app (issue #17: under 200 ms at any length).

The app runs as a user starts it (`python app.py`, shipped models); each score is opened through the
page's own upload and engraved; then measures are clicked, as a user does, on the first page, far down
the score, and with every other measure locked. In the page a probe records, on the `performance.now()`
clock: the click (the pointerup's time stamp), the moment the measure shows as locked or unlocked (its
class and highlight box, seen by a MutationObserver), the start of the next frame after that (a
requestAnimationFrame callback), when that frame was on screen (the click's Event Timing entry: the
presentation of the first frame after its handlers, in steps of 8 ms, taken when the change was made by
then; otherwise the end of a task queued from that callback, after the frame's style, layout and paint,
but also after any task queued before it), and the server's answer (the lock summary changing); whether
the engraved SVG is still the same element afterwards (no re-engraving); and, from Chromium's own
counters (CDP `Performance.getMetrics`), the style recalculation and script time the page spent from
the click to its answer.
"""
from __future__ import annotations

import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"]
MEASURES = "#score-view svg g.measure"

PROBE_JS = """(column) => {
  const view = document.querySelector('#score-view');
  const measure = view.querySelectorAll('svg g.measure')[column];
  const summary = document.querySelector('#lock-summary');
  const probe = {svg: view.querySelector('svg'), before: summary.innerText, click: null, shown: null, frame: null,
                 painted: null, presented: null, ack: null, svg_kept: null, want: !measure.classList.contains('locked')};
  window.lockProbe = probe;
  const timing = new PerformanceObserver((list) => {
    for (const e of list.getEntries()) {
      if (e.name !== 'pointerup' || probe.click === null || Math.abs(e.startTime - probe.click) > 1) continue;
      probe.presented = {end: e.startTime + e.duration, processed: e.processingEnd};
      timing.disconnect();
    }
  });
  timing.observe({type: 'event', durationThreshold: 16});
  const shows = () => measure.classList.contains('locked') === probe.want
    && Boolean(measure.querySelector(':scope > rect.mark-locked')) === probe.want;
  document.addEventListener('pointerup', (event) => { probe.click = event.timeStamp; }, {capture: true, once: true});
  const seen = new MutationObserver(() => {
    if (probe.shown !== null || !shows()) return;
    probe.shown = performance.now();
    seen.disconnect();
    requestAnimationFrame(() => {
      probe.frame = performance.now();
      setTimeout(() => { probe.painted = performance.now(); }, 0);
    });
  });
  seen.observe(measure, {attributes: true, attributeFilter: ['class'], childList: true});
  const answered = new MutationObserver(() => {
    if (probe.ack !== null || summary.innerText === probe.before || !/locked/.test(summary.innerText)) return;
    probe.ack = performance.now();
    answered.disconnect();
  });
  answered.observe(summary, {subtree: true, childList: true, characterData: true});
}"""

RESULT_JS = """() => {
  const p = window.lockProbe, view = document.querySelector('#score-view');
  p.svg_kept = p.svg.isConnected && view.querySelector('svg') === p.svg;
  // On screen: the frame the click's handlers led to was presented (Event Timing), if the change was made
  // by then; otherwise (a change made later, or no entry: under 16 ms) the task after the next frame.
  const presented = p.presented && p.shown !== null && p.shown <= p.presented.processed;
  return {click: p.click, shown: p.shown, frame: p.frame, painted: presented ? p.presented.end : p.painted, ack: p.ack,
          svg_kept: p.svg_kept};
}"""


def click_latency(record: dict) -> dict:
    """One probe record (page clock, ms) as latencies from the click: the page changed, the next frame
    began, it was on screen, the server answered; None where that moment was not seen."""
    def since(key: str) -> float | None:
        moment = record.get(key)
        return None if moment is None or record.get("click") is None else round(moment - record["click"], 1)

    return {"shown_ms": since("shown"), "frame_ms": since("frame"), "painted_ms": since("painted"), "ack_ms": since("ack"),
            "svg_kept": bool(record.get("svg_kept"))}


def summarize(clicks: list[dict]) -> dict:
    """Median and max of each latency and page cost over `clicks` (`click` results), clicks whose moment was
    not seen counted apart, and whether every click left the engraved SVG in place."""
    out: dict = {"clicks": len(clicks), "svg_kept": all(c["svg_kept"] for c in clicks)}
    for key in ("shown_ms", "frame_ms", "painted_ms", "ack_ms", "style_ms", "script_ms"):
        values = [c[key] for c in clicks if c.get(key) is not None]
        out[key] = {"median": round(statistics.median(values), 1) if values else None,
                    "max": max(values) if values else None, "missing": len(clicks) - len(values)}
    return out


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_app(port: int) -> subprocess.Popen:
    """`python app.py` on `port` with the shipped models, once it answers."""
    log = open(Path(tempfile.gettempdir()) / f"lock_clicks_app_{port}.log", "w")
    app = subprocess.Popen([sys.executable, "app.py", "--port", str(port)], cwd=ROOT, stdout=log,
                           stderr=subprocess.STDOUT)
    for _ in range(480):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2)
            return app
        except OSError:
            if app.poll() is not None:
                raise RuntimeError(f"the app exited; see {log.name}")
            time.sleep(0.5)
    app.terminate()
    raise RuntimeError(f"the app did not answer in 4 minutes; see {log.name}")


def page_costs(cdp) -> dict:
    """Chromium's running totals for the page, in ms: style recalculation and script."""
    metrics = {m["name"]: m["value"] for m in cdp.send("Performance.getMetrics")["metrics"]}
    return {"style_ms": metrics["RecalcStyleDuration"] * 1000, "script_ms": metrics["ScriptDuration"] * 1000}


def click(page, cdp, column: int) -> dict:
    """Click the middle of measure `column` (of its clickable area: a measure's own box can reach into its
    neighbours with a slur) once it is scrolled into view; the probe's latencies and the page's style and
    script time until the answer."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    target = page.locator(f'#score-view rect.hit[data-column="{column}"]:not([data-part])')
    target.scroll_into_view_if_needed()
    page.wait_for_timeout(300)  # the scroll settles: only the click is timed
    page.evaluate(PROBE_JS, column)
    box = target.bounding_box()
    before = page_costs(cdp)  # after the bench's own query for the box: only the page's costs are counted
    page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    for moment, seconds in (("painted", 120), ("ack", 120), ("presented", 2)):
        try:
            page.wait_for_function(f"() => window.lockProbe.{moment} !== null", timeout=seconds * 1000)
        except PlaywrightTimeout:  # not seen: reported as missing (Event Timing's entry: the task after the frame)
            pass
    page.wait_for_timeout(300)  # anything the answer re-renders has happened
    after = page_costs(cdp)
    return {**click_latency(page.evaluate(RESULT_JS)), **{k: round(after[k] - before[k], 1) for k in after}}


def score_clicks(browser, url: str, path: Path, far: bool) -> dict:
    """Open `path` through the upload button, then time clicks: the first page's measures, measures far
    down the score (`far`), and, after Lock all, unlocking some (every other measure stays highlighted)."""
    page = browser.new_context(viewport={"width": 1280, "height": 720}).new_page()
    page.set_default_timeout(600_000)
    page.goto(url)
    page.wait_for_selector("#score-view")
    started = time.perf_counter()
    with page.expect_file_chooser() as chooser:
        page.locator("#upload").click()
    chooser.value.set_files(str(path))
    page.wait_for_function("() => /parts, \\d+ measures|error/i.test(document.querySelector('#status').innerText)")
    opened_s = time.perf_counter() - started
    n = page.locator(MEASURES).count()
    cdp = page.context.new_cdp_session(page)
    cdp.send("Performance.enable")
    if not n:
        shot = Path(tempfile.gettempdir()) / f"lock_clicks_{path.stem}.png"
        page.screenshot(path=str(shot))
        raise RuntimeError(f"{path.name} was not engraved: {page.locator('#status').inner_text()!r} (see {shot})")
    groups = {"first page": [1, 2, 3, 4, 5]}
    if far:
        groups["far down"] = [n // 4, n // 2, (5 * n) // 8, (3 * n) // 4, (7 * n) // 8, n - 2]
    results = {group: [click(page, cdp, c) for c in columns] for group, columns in groups.items()}
    page.locator("#lock-all").click()
    page.wait_for_function(f"() => document.querySelector('#lock-summary').innerText.includes('{n} measures locked')")
    results["all locked, unlock one"] = [click(page, cdp, c) for c in (2, n // 4, n // 2, (3 * n) // 4, n - 3)]
    page.context.close()
    return {"measures": n, "open_and_engrave_s": round(opened_s, 1),
            "groups": {group: summarize(clicks) for group, clicks in results.items()},
            "all": summarize([c for clicks in results.values() for c in clicks])}


def lock_click_latency(scores: dict[str, tuple[Path, bool]]) -> dict:
    """name -> (file, click far down too): the app started once, each score in a fresh tab."""
    from playwright.sync_api import sync_playwright

    app = start_app(free_port())
    url = f"http://127.0.0.1:{app.args[-1]}/"
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                return {name: score_clicks(browser, url, path, far) for name, (path, far) in scores.items()}
            finally:
                browser.close()
    finally:
        app.terminate()
        app.wait(timeout=30)


def report_line(name: str, result: dict) -> str:
    """Median/max per group of clicks: the page changed, on screen (end of the next frame), answered."""
    def pair(stats: dict) -> str:
        return f"{stats['median']}/{stats['max']}"

    groups = "; ".join(f"{group}: changed {pair(s['shown_ms'])}, on screen {pair(s['painted_ms'])}, "
                       f"answer {pair(s['ack_ms'])} (style {pair(s['style_ms'])}, script {pair(s['script_ms'])})"
                       for group, s in result["groups"].items())
    kept = "SVG kept" if result["all"]["svg_kept"] else "SVG REPLACED (re-engraved)"
    return (f"{name} ({result['measures']} measures, opened and engraved in {result['open_and_engrave_s']} s), "
            f"lock click ms median/max: {groups}; {kept}")
