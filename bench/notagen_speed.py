"""NotaGen decoding speed on the CPU: the KV-cached generation engine against the official decode.

    .venv/bin/python bench/notagen_speed.py [--threads 2] [--patches 8] [--baseline-patches 2] [--write docs/performance.md]

Random weights (speed does not depend on them), two sizes: NotaGen-small (12 patch layers, 3 char
layers, hidden 768, context 2048) and a tiny one (2 / 1 / 128, context 2048). Two contexts: a short
prompt (BOS + 3 prompt patches) and a synthetic piece of about 1000 patches. Batch 1 and 8.

* "cached" is the real engine (`engine.notagen.batch_engine.BatchEngine`, the loop behind `NotagenGenerator`):
  sampling with the released settings (top-k 9, top-p 0.9, temperature 1.2), bar resampling off (random
  weights write no bars). The context encoding ("prefill") is timed separately; throughput counts only
  the generated patches (16 chars each).
* "official" is the baseline: the official `NotaGenLMHeadModel.generate` algorithm
  (`NotagenModel.generate_patch`): the whole context re-encoded by the patch decoder for every patch, the
  char decoder re-run from scratch for every char, same sampler. The official code has no batching, so
  its batch-8 figure is 8 times its batch-1 time (not run 8 times). An even more naive decode that also
  re-encodes the patch context for every *char* would be ~16x slower again at long contexts; it is not
  measured.
* bars/s are derived: patches/s divided by the mean patches per bar line of the fixture pieces
  (shared/fixtures/notagen_reference/input_*.abc, as the model sees them), because random weights write
  no bars.
"""
from __future__ import annotations

import argparse
import os
import platform
import re
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.report import write_section  # noqa: E402
from engine.errors import ScoreError  # noqa: E402
from engine.notagen.batch_engine import BatchEngine  # noqa: E402
from engine.notagen.config import PRESETS, NotagenConfig  # noqa: E402
from engine.notagen.finish import GenerationContext  # noqa: E402
from engine.notagen.model import NotagenModel  # noqa: E402
from engine.notagen.options import GenerationOptions, SamplingOptions  # noqa: E402
from engine.notagen.patchilizer import Patchilizer  # noqa: E402
from engine.notagen.prompts import Prompt  # noqa: E402
from engine.notagen.reference import zero_after_eos  # noqa: E402
from engine.notagen.sampling import Sampler, row_generators  # noqa: E402

SIZES = {
    "NotaGen-small": PRESETS["notagen-small"],
    "tiny": NotagenConfig(patch_length=2048, patch_num_layers=2, char_num_layers=1, hidden_size=128),
}
PROMPT = Prompt("Baroque", "Bach, Johann Sebastian", "Keyboard")
HEADER = "%%score { 1 | 2 }\nL:1/8\nM:4/4\nK:D\nV:1 treble nm=\"Piano\"\nV:2 bass\n"


def long_context(patches: int) -> GenerationContext:
    """A synthetic two-staff piece whose encoding is about `patches` patches (bars vary a little)."""
    patchilizer = Patchilizer()
    notes = ["c2 d2 e2 f2", "g2 f2 e2 d2", "c4 B,2 A,2", "dcBA G2 F2", "E2 ^F2 G2 A2"]
    bass = ["C,4 G,,4", "A,,4 F,,4", "D,2 E,2 F,2 G,2", "C,8"]
    lines: list[str] = []
    while True:
        i = len(lines)
        lines.append(f"[V:1]{notes[i % len(notes)]}|[V:2]{bass[i % len(bass)]}|\n")
        m = len(lines)
        body = "".join(f"[r:{k}/{m - 1 - k}]{line}" for k, line in enumerate(lines))
        if len(patchilizer.encode_generate(PROMPT.text + HEADER + body, patch_length=10**9)) >= patches:
            return GenerationContext(PROMPT.text + HEADER, body)


def patches_per_bar() -> tuple[float, str]:
    reference = ROOT.parent / "shared" / "fixtures" / "notagen_reference"
    texts = sorted(reference.glob("input_*.abc")) if reference.is_dir() else []
    if not texts:
        return 8.0, "assumed 8 (fixtures not found)"
    patchilizer, patches, bars = Patchilizer(), 0, 0
    for path in texts:
        _, body = patchilizer.stream_lines(path.read_text())
        patches += len(patchilizer.patchilize_tunebody(body))
        bars += len(body)
    return patches / bars, f"{patches / bars:.1f} (mean of the {len(texts)} fixture pieces)"


def make_model(config: NotagenConfig) -> NotagenModel:
    torch.manual_seed(0)
    return NotagenModel(config).eval()


def _no_conversion(text: str, start: int, reason: str):
    raise ScoreError("benchmark rows are not converted")


def time_cached(model: NotagenModel, context: GenerationContext, batch: int, patches: int) -> dict:
    options = GenerationOptions(n=batch, seed=0, bae_resample=False, max_attempts=1, max_patches=patches + 2)
    engine = BatchEngine(model, context, _no_conversion, options)
    started = time.perf_counter()
    groups = engine.start()
    prefill = time.perf_counter() - started
    groups = engine.advance(groups)  # warm-up patch, not timed
    started = time.perf_counter()
    for _ in range(patches):
        groups = engine.advance(groups)
    seconds = time.perf_counter() - started
    rows = sum(len(group.rows) for group in groups)
    if rows != batch:
        raise RuntimeError(f"only {rows} of {batch} rows survived the timed patches")
    return dict(prefill=prefill, seconds=seconds, patches=patches * batch, context=groups[0].cache.num_patches - patches - 1)


def time_official(model: NotagenModel, context: GenerationContext, patches: int) -> dict:
    patchilizer = Patchilizer()
    if context.body:
        ids = patchilizer.encode_generate(context.text, patch_length=model.config.patch_length)
    else:
        prompt = [patchilizer.bos_patch] + patchilizer.patchilize_metadata(re.findall(r"[^\n]*\n", context.metadata))
        ids = [[ord(c) for c in patch] + [0] * (16 - len(patch)) for patch in prompt]
    flat = [token for patch in ids for token in patch]
    choose = Sampler(SamplingOptions()).chooser(row_generators(0, 1))
    with torch.inference_mode():
        model.generate_patch(flat[: 5 * 16], choose)  # warm-up (short, so long contexts are not paid twice)
        started = time.perf_counter()
        for _ in range(patches):
            new = model.generate_patch(flat, choose)
            flat += zero_after_eos(new)
        seconds = time.perf_counter() - started
    return dict(seconds=seconds, patches=patches, context=len(ids))


def run(args: argparse.Namespace) -> list[dict]:
    torch.set_num_threads(args.threads)
    contexts = {"short": GenerationContext(PROMPT.text), "~1000": long_context(1000)}
    results = []
    for size, config in SIZES.items():
        model = make_model(config)
        for context_name, context in contexts.items():
            official = time_official(model, context, args.baseline_patches)
            official_rate = official["patches"] / official["seconds"]
            print(f"{size:13s} ctx {context_name:5s}: official {official_rate:7.2f} patch/s "
                  f"({official['seconds'] / official['patches']:.3f} s/patch at {official['context']} patches)", flush=True)
            for batch in (1, 8):
                cached = time_cached(model, context, batch, args.patches)
                rate = cached["patches"] / cached["seconds"]
                result = dict(size=size, context=context_name, context_patches=cached["context"], batch=batch,
                              prefill=cached["prefill"], cached_patch_rate=rate,
                              official_patch_rate=official_rate,  # sequential rows: the same patches/s for any batch
                              seconds=cached["seconds"])
                results.append(result)
                print(f"{'':13s} batch {batch}: cached {rate:8.2f} patch/s = {rate * 16:8.1f} char/s "
                      f"(prefill {cached['prefill']:.2f} s), {rate / official_rate:6.1f}x the official", flush=True)
        del model
    return results


def table(results: list[dict], per_bar: float) -> str:
    rows = [
        "| model | context (patches) | batch | cached char/s | cached bars/s | official char/s | speed-up | prefill s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        cached, official = r["cached_patch_rate"], r["official_patch_rate"]
        rows.append(
            f"| {r['size']} | {r['context']} ({r['context_patches']}) | {r['batch']} | {cached * 16:.0f} | {cached / per_bar:.2f} "
            f"| {official * 16:.1f} | {cached / official:.1f}x | {r['prefill']:.2f} |"
        )
    batch_rows = []
    for size in SIZES:
        for context in ("short", "~1000"):
            one = next(r for r in results if r["size"] == size and r["context"] == context and r["batch"] == 1)
            eight = next(r for r in results if r["size"] == size and r["context"] == context and r["batch"] == 8)
            batch_rows.append(f"{size} / {context}: {eight['cached_patch_rate'] / one['cached_patch_rate']:.2f}x")
    return "\n".join(rows) + "\n\nBatch-8 throughput over batch 1 (cached): " + "; ".join(batch_rows) + ".\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--patches", type=int, default=8, help="timed patches per cached case (default 8)")
    parser.add_argument("--baseline-patches", type=int, default=2, help="timed patches per official case (default 2)")
    parser.add_argument("--write", type=Path, default=None, help="put the table into this markdown file")
    args = parser.parse_args()
    per_bar, per_bar_note = patches_per_bar()
    started = time.perf_counter()
    results = run(args)
    total = time.perf_counter() - started
    text = (
        f"Run: `.venv/bin/python bench/notagen_speed.py --threads {args.threads} --patches {args.patches} "
        f"--baseline-patches {args.baseline_patches}` ({total:.0f} s in all), {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores, torch {torch.__version__}, {args.threads} threads, float32, random weights. "
        f"Patches per bar for bars/s: {per_bar_note}.\n\n" + table(results, per_bar)
    )
    print()
    print(text)
    if args.write:
        write_section(args.write, f"notagen_speed threads={args.threads}", text)


if __name__ == "__main__":
    main()
