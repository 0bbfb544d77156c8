"""Why CLaMP-DPO's "chosen" pieces are not the best-scored ones: per prompt, from a run's scored samples.

    .venv/bin/python bench/dpo_samples.py runs/notagen_dpo_ship [--k 0] [--fraction 0.25] [--plagiarism 0.95]
        [--max-misaligned-share 0.5]

Reads `samples_K.jsonl` (written by `python -m training.notagen dpo`) and prints, for each prompt: the
scored pieces, how many of the top `fraction` pass the chosen filters, how many of them exceed the
plagiarism bound, and the correlation between a piece's share of misaligned bars and its CLaMP score.
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
from collections import defaultdict
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--k", type=int, default=0)
    parser.add_argument("--fraction", type=float, default=0.25)
    parser.add_argument("--plagiarism", type=float, default=0.95)
    parser.add_argument("--max-misaligned-share", type=float, default=0.5)
    args = parser.parse_args()
    by_prompt = defaultdict(list)
    for line in (args.run / f"samples_{args.k}.jsonl").read_text(encoding="utf-8").splitlines():
        piece = json.loads(line)
        by_prompt[piece["prompt"]].append(piece)
    for prompt, pieces in sorted(by_prompt.items()):
        pieces.sort(key=lambda p: -p["clamp_score"])
        top = pieces[: max(1, math.ceil(args.fraction * len(pieces)))]
        eligible = [p for p in top if p["misaligned_bars"] <= args.max_misaligned_share * p["bars"]
                    and p["staves_adjacent"] and p["max_similarity"] <= args.plagiarism]
        shares = [p["misaligned_bars"] / max(1, p["bars"]) for p in pieces]
        scores = [p["clamp_score"] for p in pieces]
        correlation = statistics.correlation(shares, scores) if len(set(shares)) > 1 else float("nan")
        print(f"{prompt}: {len(pieces)} scored; top {len(top)}: {len(eligible)} eligible, "
              f"{sum(p['max_similarity'] > args.plagiarism for p in top)} over the plagiarism bound; "
              f"r(misaligned share, score) = {correlation:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
