"""Bar alignment (BAE) and conversion rate of generated pieces: free decoding, bar resampling, bar-exact decoding.

    .venv/bin/python bench/notagen_bae.py [--checkpoint PATH] [--pieces 100] [--max-bars 8] [--write docs/performance.md]

Default model: the reference fixtures' `tiny_notagen_trained_fp16.pth` (2+1 layers, hidden 64, context 64
patches, overfit on one Bach chorale excerpt): the only trained NotaGen weights at hand. Its pieces are
short and mostly echo that chorale, so the figures say how the resampling and conversion machinery
behaves, not how good NotaGen-X is. Prompts cycle over four conditions (the chorale's own prompt, two
unseen ones, unconditional); the released sampling settings (top-k 9, top-p 0.9, temperature 1.2) and a
hotter setting (temperature 1.6, no top-k/top-p) are both measured. Each setting runs the same seeds
three ways: free (the model's own choices), with bar resampling, and bar-exact (the constraint, no resampling). One attempt per piece (`max_attempts=1`), so a piece that does not convert
counts as a failure here instead of being sampled again. The char decoder's CPU time per patch is
measured for each decoding; "cost" is bar-exact (or resampling) decoding's time per patch over free
decoding's, the constraint's price.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.report import write_section  # noqa: E402
from engine.notagen.generate import NotagenGenerator  # noqa: E402
from engine.notagen.prompts import Prompt  # noqa: E402
from engine.score.bae import BarAlignment, bar_alignment  # noqa: E402

DEFAULT_CHECKPOINT = ROOT.parent / "shared" / "fixtures" / "notagen_reference" / "tiny_notagen_trained_fp16.pth"
PROMPTS = [
    Prompt("Baroque", "Bach, Johann Sebastian", "Choral"),
    Prompt("Classical", "Haydn, Joseph", "Chamber"),
    Prompt("Romantic", "Chopin, Frederic", "Keyboard"),
    None,
]
SETTINGS = {
    "released (k 9, p 0.9, T 1.2)": dict(top_k=9, top_p=0.9, temperature=1.2),
    "hot (k off, p off, T 1.6)": dict(top_k=0, top_p=1.0, temperature=1.6),
}


DECODING = {
    "free": dict(bae_resample=False, constrain=False),
    "bar resampling (3 retries)": dict(bae_resample=True, constrain=False),
    "bar-exact": dict(bae_resample=False, constrain=True),
}


class DecodeClock:
    """Times the char decoder's patches (`NotagenModel.decode_patch`, where the constraint runs): seconds and
    row-patches, so decodings are compared per patch, apart from conversion and from how long pieces get.
    CPU time of this process, not wall time: on a shared machine the wall time mostly measures the others."""

    def __init__(self, generator: NotagenGenerator) -> None:
        self.seconds, self.patches = 0.0, 0
        decode_patch = generator.model.decode_patch

        def timed(hidden, *args, **kwargs):
            started = time.process_time()
            result = decode_patch(hidden, *args, **kwargs)
            self.seconds += time.process_time() - started
            self.patches += hidden.shape[0]
            return result

        generator.model.decode_patch = timed


def measure(generator: NotagenGenerator, clock: DecodeClock, pieces: int, batch: int, max_bars: int, sampling: dict,
            decoding: dict) -> dict:
    converted, total, alignment_all, alignment_ok, resampled, reasons = 0, 0, BarAlignment(0, 0), BarAlignment(0, 0), 0, {}
    started, clock.seconds, clock.patches = time.perf_counter(), 0.0, 0
    calls = (pieces + batch - 1) // batch
    for call in range(calls):
        prompt = PROMPTS[call % len(PROMPTS)]
        n = min(batch, pieces - call * batch)
        for event in generator.stream(prompt, n=n, seed=1000 + call, max_bars=max_bars, max_attempts=1,
                                      **decoding, **sampling):
            if event.kind not in ("done", "failed"):
                continue
            total += 1
            alignment_all = alignment_all + bar_alignment(event.text)
            if event.kind == "done":
                converted += 1
                alignment_ok = alignment_ok + event.piece.alignment
                resampled += event.piece.resampled_bars
            else:
                key = event.reason.split(":")[0]
                reasons[key] = reasons.get(key, 0) + 1
    return dict(pieces=total, converted=converted, alignment_all=alignment_all, alignment_ok=alignment_ok,
                resampled=resampled, reasons=reasons, seconds=time.perf_counter() - started,
                ms_per_patch=1000 * clock.seconds / max(clock.patches, 1))


def report(results: list[tuple[str, bool, dict]], args: argparse.Namespace, checkpoint: Path, seconds: float) -> str:
    lines = [
        f"Run: `nice -n 10 .venv/bin/python bench/notagen_bae.py --checkpoint {args.checkpoint} --pieces {args.pieces} "
        f"--max-bars {args.max_bars} --batch {args.batch} --threads {args.threads}"
        + (f" --decodings '{args.decodings}'" if args.decodings != ",".join(DECODING) else "") + "` "
        f"({seconds:.0f} s in all, {args.threads} thread(s)). Model: `{checkpoint.name}`. "
        "BAE = misaligned bars / bars (a bar line whose voices do not last equally long, `engine.score.bae`). "
        "ms / patch: the char decoder's CPU time per generated patch and row (model and constraint, not conversion); "
        "cost: that time over free decoding's with the same sampling.",
        "",
        "| sampling | decoding | pieces converted | BAE, converted pieces | BAE, all pieces | bars resampled (converted pieces) | failures (first words of the reason) | seconds | ms / patch | cost |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    free = {setting: r["ms_per_patch"] for setting, decoding, r in results if decoding == "free"}
    for setting, decoding, r in results:
        failures = "; ".join(f"{key} ({count})" for key, count in sorted(r["reasons"].items())) or "-"
        lines.append(
            f"| {setting} | {decoding} | {r['converted']}/{r['pieces']} "
            f"({100 * r['converted'] / max(r['pieces'], 1):.0f} %) | {100 * r['alignment_ok'].rate:.2f} % "
            f"({r['alignment_ok'].misaligned}/{r['alignment_ok'].bars}) | {100 * r['alignment_all'].rate:.2f} % "
            f"({r['alignment_all'].misaligned}/{r['alignment_all'].bars}) | {r['resampled']} | {failures} | {r['seconds']:.0f} "
            f"| {r['ms_per_patch']:.1f} | {100 * (r['ms_per_patch'] / free[setting] - 1):+.0f} % |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, default=DEFAULT_CHECKPOINT)
    parser.add_argument("--pieces", type=int, default=100)
    parser.add_argument("--max-bars", type=int, default=8)
    parser.add_argument("--batch", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--write", type=Path, default=None)
    parser.add_argument("--decodings", default=",".join(DECODING), help="comma-separated, of: " + ", ".join(DECODING))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    generator = NotagenGenerator.load(args.checkpoint)
    clock = DecodeClock(generator)
    started = time.perf_counter()
    results = []
    for setting, sampling in SETTINGS.items():
        for decoding in args.decodings.split(","):
            options = DECODING[decoding]
            result = measure(generator, clock, args.pieces, args.batch, args.max_bars, sampling, options)
            results.append((setting, decoding, result))
            print(f"{setting}, {decoding}: {result['converted']}/{result['pieces']} converted, "
                  f"BAE {100 * result['alignment_ok'].rate:.2f} % (converted) / {100 * result['alignment_all'].rate:.2f} % (all), "
                  f"{result['resampled']} bars resampled, {result['seconds']:.0f} s, {result['ms_per_patch']:.1f} ms/patch", flush=True)
    text = report(results, args, args.checkpoint, time.perf_counter() - started)
    print()
    print(text)
    if args.write:
        write_section(args.write, "notagen_bae", text)


if __name__ == "__main__":
    main()
