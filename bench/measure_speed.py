"""Inpainting latency of the measure model on the CPU: an 8-measure hole (all four parts) in a chorale.

    python bench/measure_speed.py [--checkpoint assets/measure] [--chorale bach/bwv269] [--repeats 3]

Prints one line per setting (0 and 2 refinement sweeps, refine fraction 0.25) with the median wall
time of `engine.measure.inpaint.inpaint` (parsing the input and writing MusicXML included) and the
model-only part, and a JSON summary at the end.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import music21  # noqa: E402
import torch  # noqa: E402

from engine.measure.inpaint import inpaint, load_model, part_tokens, run_algorithm1  # noqa: E402
from engine.measure.representation import from_document  # noqa: E402
from engine.score.document import ScoreDocument  # noqa: E402
from engine.score.formats import score_to_musicxml  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=None, help="model folder (default assets/measure)")
    parser.add_argument("--chorale", default="bach/bwv269")
    parser.add_argument("--start", type=int, default=4, help="first column of the hole")
    parser.add_argument("--hole", type=int, default=8, help="measures in the hole")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = load_model(args.checkpoint)
    document = ScoreDocument(score_to_musicxml(music21.corpus.parse(args.chorale)), args.chorale)
    grid = from_document(document)
    if grid.n_parts != 4 or grid.n_columns < args.start + args.hole:
        raise SystemExit(f"{args.chorale} has {grid.n_parts} parts and {grid.n_columns} measures")
    hole = {(p, m) for p in range(4) for m in range(args.start, args.start + args.hole)}
    locked = {(p, m) for p in range(4) for m in range(grid.n_columns)} - hole
    results = {}
    for sweeps in (0, 2):
        full, core = [], []
        for seed in range(args.repeats):
            started = time.perf_counter()
            inpaint(document, locked, model=model, seed=seed, sweeps=sweeps)
            full.append(time.perf_counter() - started)
            started = time.perf_counter()
            run_algorithm1(model, grid, part_tokens(grid), sorted(hole), seed=seed, sweeps=sweeps)
            core.append(time.perf_counter() - started)
        results[f"sweeps={sweeps}"] = {"median_s": round(statistics.median(full), 3), "model_only_median_s": round(statistics.median(core), 3),
                                       "runs_s": [round(x, 3) for x in full]}
        print(f"sweeps={sweeps}: {statistics.median(full):.2f} s per inpaint ({statistics.median(core):.2f} s in the model), "
              f"{len(hole)} cells + {sweeps} x {max(1, round(0.25 * len(hole)))} refills")
    summary = {"chorale": args.chorale, "cells": len(hole), "threads": args.threads, "cpu": platform.processor() or platform.machine(),
               "parameters": sum(p.numel() for p in model.parameters()), "results": results}
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
