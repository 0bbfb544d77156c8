"""The lock-click bench's arithmetic (page-clock records to latencies, their medians and maxima), and the
score view's page sizes that let the browser skip the pages off screen."""
from __future__ import annotations

from bench.lock_clicks import click_latency, summarize
from engine.render.engrave import Engraving
from webui.score_view import score_html


def test_latencies_count_from_the_click_and_a_moment_not_seen_is_missing():
    record = {"click": 1000.0, "shown": 1012.25, "painted": 1030.0, "ack": None, "svg_kept": True}
    assert click_latency(record) == {"shown_ms": 12.2, "frame_ms": None, "painted_ms": 30.0, "ack_ms": None, "svg_kept": True}
    assert click_latency({"click": None, "shown": 5.0, "svg_kept": False})["shown_ms"] is None


def test_summary_gives_median_and_max_and_flags_a_replaced_svg():
    clicks = [click_latency({"click": 0.0, "shown": s, "painted": s + 10, "ack": a, "svg_kept": kept})
              for s, a, kept in ((10.0, 100.0, True), (30.0, None, True), (20.0, 300.0, False))]
    summary = summarize(clicks)
    assert summary["clicks"] == 3 and summary["svg_kept"] is False
    assert summary["shown_ms"] == {"median": 20.0, "max": 30.0, "missing": 0}
    assert summary["frame_ms"] == {"median": None, "max": None, "missing": 3}
    assert summary["painted_ms"] == {"median": 30.0, "max": 40.0, "missing": 0}
    assert summary["ack_ms"] == {"median": 200.0, "max": 300.0, "missing": 1}


def test_each_page_keeps_its_height_before_it_is_drawn():
    # The browser skips the pages off screen (content-visibility); each keeps its height from its viewBox and the zoom.
    page = '<svg viewBox="0 0 840 990" version="1.1"><svg class="definition-scale" viewBox="0 0 21000 24740"></svg></svg>'
    assert 'data-page="1" style="aspect-ratio: 840 / calc(990 * var(--zoom, 1))"><svg' in score_html(Engraving(pages=(page,)))
    assert '<div class="score-page" data-page="1"><svg>' in score_html(Engraving(pages=("<svg></svg>",)))
