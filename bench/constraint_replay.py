"""The bar constraint's own work, replayed without the model: where a change to the reader or the
constraint gains or loses, on the same states every time.

    .venv/bin/python bench/constraint_replay.py [--pieces 32] [--runs 9] [--no-score-memo]

Generates `--pieces` bar-exact pieces at batch 8 with the shipped model (its own header, released sampling,
the prompts cycled as `bench/notagen_bae.py` does) and records every check of the model's own char
(`BarConstraint.advance`) and every refused row's redraw (`masked_probs` over `id_tester`, from the ranked
probabilities of the sampler's first draw, whose softmax and sort free decoding makes too). Then it replays
them `--runs` times (default 9: on a shared machine one replay can take twice as long as the next) and
prints the fastest replay's CPU time: per check, and per redraw by where the row was
(the body, the `%%score` line, a `V:` line, another header line). Replayed alone each call costs a third
to a half of what it costs inside the decoder (see docs/performance.md), so read the figures side by side.
`--no-score-memo` replays with the `%%score` test unmemoised, as it was before 2026-12-06.
"""
from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.notagen_bae import SETTINGS  # noqa: E402
from engine.notagen import bar_constraint, constrained  # noqa: E402
from engine.notagen.bar_constraint import BarConstraint  # noqa: E402
from engine.notagen.generate import NotagenGenerator, resolve_checkpoint  # noqa: E402
from engine.notagen.options import SamplingOptions  # noqa: E402
from engine.notagen.prompts import prompts_for_checkpoint  # noqa: E402
from engine.notagen.sampling import masked_probs  # noqa: E402


def record(pieces: int) -> tuple[list, list]:
    """(reader, chosen id) of every check and (reader, ranked probabilities) of every redraw of a bar-exact
    decoding."""
    checks, redraws, testers = [], [], []
    advance, id_tester, redraw = BarConstraint.advance, BarConstraint.id_tester, constrained.masked_probs

    def recorded_advance(self, reader, token):
        checks.append((reader.copy(), token))
        return advance(self, reader, token)

    def recorded_id_tester(self, reader):
        testers.append(reader.copy())
        return id_tester(self, reader)

    def recorded_redraw(ranked, options, tester, limit=None):
        redraws.append((testers.pop(), tuple(part.clone() for part in ranked)))
        return redraw(ranked, options, tester, limit)

    BarConstraint.advance, BarConstraint.id_tester, constrained.masked_probs = recorded_advance, recorded_id_tester, recorded_redraw
    try:
        checkpoint = resolve_checkpoint(ROOT / "assets" / "notagen")
        generator, prompts = NotagenGenerator.load(checkpoint), prompts_for_checkpoint(checkpoint)
        for call in range((pieces + 7) // 8):
            generator.generate(prompts[call % len(prompts)], n=min(8, pieces - 8 * call), seed=1000 + call, max_bars=8,
                               max_attempts=1, bae_resample=False, **SETTINGS["released"])
    finally:
        BarConstraint.advance, BarConstraint.id_tester, constrained.masked_probs = advance, id_tester, redraw
    return checks, redraws


def where(reader) -> str:
    if reader.in_body:
        return "body"
    if reader.buffer.startswith("%%"):
        return "%%score line"
    return "V: line" if reader.buffer.startswith("V:") else "other header"


def replay(checks: list, redraws: list) -> tuple[float, Counter, Counter]:
    """CPU seconds of the checks, and of the redraws by place (with their counts), in one pass."""
    constraint, options = BarConstraint(), SamplingOptions(**SETTINGS["released"])
    started = time.process_time()
    for reader, token in checks:
        constraint.advance(reader, token)
    check_seconds, seconds, counts = time.process_time() - started, Counter(), Counter()
    for reader, ranked in redraws:
        started = time.process_time()
        masked_probs(ranked, options, constraint.id_tester(reader))
        seconds[where(reader)] += time.process_time() - started
        counts[where(reader)] += 1
    return check_seconds, seconds, counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pieces", type=int, default=32)
    parser.add_argument("--no-score-memo", action="store_true")
    parser.add_argument("--runs", type=int, default=9)
    args = parser.parse_args()
    torch.set_num_threads(1)
    checks, redraws = record(args.pieces)
    if args.no_score_memo:
        bar_constraint._score_line = bar_constraint._score_line.__wrapped__
    runs = [replay(checks, redraws) for _ in range(args.runs)]
    check_seconds, seconds, counts = min(runs, key=lambda run: run[0] + sum(run[1].values()))
    print(f"{args.pieces} pieces: {len(checks)} checks, {1e6 * check_seconds / len(checks):.1f} us each; "
          f"{len(redraws)} redraws, {1e6 * sum(seconds.values()) / len(redraws):.0f} us each")
    for place, count in counts.most_common():
        print(f"  redraws in the {place}: {count}, {1e6 * seconds[place] / count:.0f} us each")


if __name__ == "__main__":
    main()
