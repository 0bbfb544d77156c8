"""Whether generated pieces convert into parts of equal length (every part as many measures).

    .venv/bin/python bench/part_lengths.py [--checkpoint assets/notagen] [--prompts 6] [--pieces 8] [--seed 7]

The shipped NotaGen's first `--prompts` prompts, `--pieces` pieces each at the app's sampling settings,
4 bars, one attempt per piece (`max_attempts=1`, so a refused piece counts as refused here instead of
being sampled again). Prints how many converted with equal part lengths, how many converted with parts
of different lengths, and how many were refused (did not convert, or a bar far longer than its metre).
"""
from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

import music21
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine.notagen.generate import NotagenGenerator  # noqa: E402
from engine.notagen.prompts import prompts_for_checkpoint  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=str(ROOT / "assets/notagen"))
    parser.add_argument("--prompts", type=int, default=6)
    parser.add_argument("--pieces", type=int, default=8)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    torch.set_num_threads(1)
    generator = NotagenGenerator.load(args.checkpoint)
    counts: Counter = Counter()
    for prompt in prompts_for_checkpoint(args.checkpoint)[: args.prompts]:
        result = generator.generate(prompt, n=args.pieces, max_bars=4, temperature=1.2, top_k=9, top_p=0.9,
                                    seed=args.seed, max_attempts=1)
        counts["refused"] += len(result.failures)
        for piece in result.pieces:
            lengths = {len(part.getElementsByClass(music21.stream.Measure)) for part in piece.document.score().parts}
            even = len(lengths) == 1
            counts["equal part lengths" if even else "different part lengths"] += 1
    total = sum(counts.values())
    print(f"{total} pieces: " + ", ".join(f"{counts[k]} {k}" for k in ("equal part lengths", "different part lengths", "refused")))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
