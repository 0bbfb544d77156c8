"""Inpainting and lock-click latency on the CPU: a short chorale and a long string quartet.

    python bench/measure_speed.py [--checkpoint assets/measure] [--repeats 3] [--quartet FILE]
                                  [--browser [--skip-inpaint]]

For each score: a hole of `--hole` measures in every part in the middle of the score, everything
else locked, timed as the app runs it (the document is already open, so its MusicXML is parsed once
before timing: "parse" is reported on its own). Wall time and the process's CPU time (one thread:
what the wall time is on an idle core). With `--browser`, also the lock clicks in headless Chromium
against the real app at 1280x720 (`bench/lock_clicks.py`): click to on screen, and to the server's
answer. Prints one line per score and a JSON summary.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import music21  # noqa: E402
import torch  # noqa: E402

from bench.lock_clicks import lock_click_latency, report_line  # noqa: E402
from engine.measure.inpaint import CONTEXT_COLUMNS, inpaint, load_model  # noqa: E402
from engine.score.document import ScoreDocument  # noqa: E402
from engine.score.formats import read_score_file, score_to_musicxml  # noqa: E402

QUARTET = (Path(__file__).resolve().parents[2] / "shared" / "corpora" / "openscore-quartets" / "scores"
           / "Beethoven_Ludwig_van__String_Quartet_No_3_Op_18_No_3__sq8907120.mxl")


def time_score(name: str, document: ScoreDocument, model, hole: int, repeats: int) -> dict:
    started = time.perf_counter()
    n_parts, n_columns = document.n_parts, document.n_measures  # parses the MusicXML, as opening it does
    parse_s = time.perf_counter() - started
    start = max(0, n_columns // 2 - hole // 2)
    free = {(p, m) for p in range(n_parts) for m in range(start, min(n_columns, start + hole))}
    locked = {(p, m) for p in range(n_parts) for m in range(n_columns)} - free
    runs, cpu = [], []
    for seed in range(repeats):
        started, started_cpu = time.perf_counter(), time.process_time()
        inpaint(document, locked, model=model, seed=seed)
        runs.append(time.perf_counter() - started)
        cpu.append(time.process_time() - started_cpu)
    median = statistics.median(runs)
    print(f"{name}: {n_parts} parts x {n_columns} measures, {len(free)} cells: {median:.2f} s per inpaint, "
          f"{statistics.median(cpu):.2f} s of CPU (medians of {repeats}; parsing the score once before: {parse_s:.1f} s)")
    return {"parts": n_parts, "measures": n_columns, "cells": len(free), "median_s": round(median, 3),
            "cpu_median_s": round(statistics.median(cpu), 3), "runs_s": [round(x, 3) for x in runs],
            "parse_s": round(parse_s, 2)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=None, help="model folder (default assets/measure)")
    parser.add_argument("--chorale", default="bach/bwv269")
    parser.add_argument("--quartet", type=Path, default=QUARTET, help="a long quartet (.mxl)")
    parser.add_argument("--hole", type=int, default=4, help="measures in the hole")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--browser", action="store_true", help="also time lock clicks in the app in Chromium")
    parser.add_argument("--skip-inpaint", action="store_true", help="with --browser: only the lock clicks")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    chorale_xml = score_to_musicxml(music21.corpus.parse(args.chorale))
    if not args.quartet.is_file():
        print(f"{args.quartet} not found: the long-score timings are skipped")
    summary = {"threads": args.threads, "cpu": platform.processor() or platform.machine(),
               "load_average_before": round(os.getloadavg()[0], 1)}
    if not args.skip_inpaint:
        model = load_model(args.checkpoint)
        results = {"chorale": time_score(args.chorale, ScoreDocument(chorale_xml, args.chorale), model, args.hole,
                                         args.repeats)}
        if args.quartet.is_file():
            results["quartet"] = time_score(args.quartet.stem, read_score_file(args.quartet), model, args.hole,
                                            args.repeats)
        summary.update({"hole": args.hole, "context_columns": CONTEXT_COLUMNS,
                        "parameters": sum(p.numel() for p in model.parameters()), "results": results})
    if args.browser:
        with tempfile.TemporaryDirectory() as folder:
            chorale = Path(folder) / f"{args.chorale.replace('/', '_')}.musicxml"
            chorale.write_text(chorale_xml, encoding="utf-8")
            scores = {"chorale": (chorale, False)}
            if args.quartet.is_file():
                scores["quartet"] = (args.quartet, True)
            clicks = lock_click_latency(scores)
        for name, result in clicks.items():
            print(report_line(name, result))
        summary["lock_clicks"] = clicks
    summary["load_average_after"] = round(os.getloadavg()[0], 1)
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
