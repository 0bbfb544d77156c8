"""Where the time to the first bar goes, in the app's own path without a browser: `Composer.generate` as the
Generate button calls it (preview every bar), split into context encoding, decoding up to the first bar,
converting the preview and engraving it.

    .venv/bin/python bench/first_bar.py [--notagen-checkpoint PATH] [--device cpu] [--weights fp32] [--runs 5]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine.notagen.prompts import Prompt  # noqa: E402
from engine.service import SHIPPED, Composer  # noqa: E402

PROMPT = Prompt("Classical", "Mozart, Wolfgang Amadeus", "Chamber")  # an offered prompt of the shipped model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--notagen-checkpoint", default=SHIPPED)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--weights", default="fp32")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    composer = Composer.from_checkpoints(args.notagen_checkpoint, None, device=args.device, weights=args.weights)
    print(f"model load (once, at app start): {time.perf_counter() - started:.2f} s")
    composer.engrave(composer.open_example(composer.examples[0]))  # the app's engraver is warm by the first click
    stages: dict[str, list[float]] = {"first bar decoded": [], "preview converted": [], "engraved": [], "total": []}
    for run in range(args.runs):
        started = time.perf_counter()
        progress = composer.generate(PROMPT, preview_every=1, seed=run, max_bars=4)
        step = next(step for step in progress if step.document is not None or step.done)
        converted = time.perf_counter()
        composer.engrave(step.document)
        engraved = time.perf_counter()
        stages["first bar decoded"].append(step.seconds)
        stages["preview converted"].append(converted - started - step.seconds)
        stages["engraved"].append(engraved - converted)
        stages["total"].append(engraved - started)
        progress.close()
    for name, times in stages.items():
        print(f"{name:18s}: median {statistics.median(times):.3f} s (min {min(times):.3f}, max {max(times):.3f})")


if __name__ == "__main__":
    main()
