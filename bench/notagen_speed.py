"""NotaGen decoding speed: the KV-cached generation engine on the CPU or CUDA, per weight format, beside
the official decode and the hardware limit.

    .venv/bin/python bench/notagen_speed.py [--device cpu|cuda] [--weights fp32,int8] [--sizes NotaGen-small,tiny]
        [--threads 2] [--patches 8] [--baseline-patches 2] [--quality] [--write docs/performance.md]

Random weights (speed does not depend on them). Sizes: NotaGen-small (12 patch layers, 3 char layers,
hidden 768, context 2048), -medium (16/3/1024/2048), -large (= NotaGen-X: 20/6/1280/1024) and a tiny one
(2 / 1 / 128, context 2048). Two contexts: a short prompt (BOS + 3 prompt patches) and a synthetic piece of
about 1000 patches. Batch 1 and 8.

* "cached" is the real engine (`engine.notagen.batch_engine.BatchEngine`, the loop behind `NotagenGenerator`):
  sampling with the released settings (top-k 9, top-p 0.9, temperature 1.2), bar resampling off (random
  weights write no bars), bar constraint off (under it they end their pieces at once). The context encoding ("prefill") is timed separately; throughput counts only
  the generated patches (16 chars each). Each weight format (`engine.notagen.quantize`) is timed on the
  same random weights.
* "official" is the baseline: the official `NotaGenLMHeadModel.generate` algorithm
  (`NotagenModel.generate_patch`): the whole context re-encoded by the patch decoder for every patch, the
  char decoder re-run from scratch for every char, same sampler. The official code has no batching, so
  its batch-8 figure is 8 times its batch-1 time (not run 8 times). `--baseline-patches 0` skips it.
* "limit" is the batch-1 floor of one patch: for each decoder step (1 patch step, 16 char steps) the larger
  of its weight bytes / `--bandwidth` (4.8 TB/s on CUDA: an H200's HBM; 15 GB/s on the CPU, this
  machine's measured copy rate) and its launch floor (aten ops one step dispatches x the time of one
  tiny op on the device). Its chars/s over the measured ones says how far decoding is from the hardware.
* bars/s are derived: patches/s divided by the mean patches per bar line of the fixture pieces
  (shared/fixtures/notagen_reference/input_*.abc, as the model sees them), because random weights write
  no bars.
* `--quality`: validation loss and greedy agreement of each weight format against fp32
  (`bench/notagen_quality.py`).
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
from torch.utils._python_dispatch import TorchDispatchMode

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.report import write_section  # noqa: E402
from engine.device import resolve_device  # noqa: E402
from engine.errors import ScoreError  # noqa: E402
from engine.notagen.batch_engine import BatchEngine  # noqa: E402
from engine.notagen.config import PRESETS, NotagenConfig  # noqa: E402
from engine.notagen.finish import GenerationContext  # noqa: E402
from engine.notagen.kv_buffers import KVBuffers, advance_patch  # noqa: E402
from engine.notagen.model import NotagenModel  # noqa: E402
from engine.notagen.options import GenerationOptions, SamplingOptions  # noqa: E402
from engine.notagen.patchilizer import Patchilizer  # noqa: E402
from engine.notagen.prompts import Prompt  # noqa: E402
from engine.notagen.quantize import place, resolve_weights, weight_bytes  # noqa: E402
from engine.notagen.reference import zero_after_eos  # noqa: E402
from engine.notagen.sampling import Sampler, row_generators  # noqa: E402

SIZES = {
    "tiny": NotagenConfig(patch_length=2048, patch_num_layers=2, char_num_layers=1, hidden_size=128),
    "NotaGen-small": PRESETS["notagen-small"],
    "NotaGen-medium": PRESETS["notagen-medium"],
    "NotaGen-large/X": PRESETS["notagen-x"],
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


def make_model(config: NotagenConfig, device: torch.device, weights: str) -> NotagenModel:
    torch.manual_seed(0)
    return place(NotagenModel(config), device, weights)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _no_conversion(text: str, start: int, reason: str):
    raise ScoreError("benchmark rows are not converted")


def time_cached(model: NotagenModel, context: GenerationContext, batch: int, patches: int) -> dict:
    # Unconstrained: under the bar constraint random weights end their pieces within a few patches.
    options = GenerationOptions(n=batch, seed=0, bae_resample=False, constrain=False, max_attempts=1, max_patches=patches + 2)
    engine = BatchEngine(model, context, _no_conversion, options)
    started = time.perf_counter()
    groups = engine.start()
    _sync(model.device)
    prefill = time.perf_counter() - started
    groups = engine.advance(groups)  # warm-up patch, not timed
    _sync(model.device)
    started = time.perf_counter()
    for _ in range(patches):
        groups = engine.advance(groups)
    _sync(model.device)
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


# ------------------------------------------------------------------------------ the hardware limit
class _OpCounter(TorchDispatchMode):
    """Counts the aten ops (on the device: kernel launches, roughly) that run inside it."""

    def __init__(self) -> None:
        super().__init__()
        self.ops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops += 1
        return func(*args, **(kwargs or {}))


def launch_seconds(device: torch.device, repeats: int = 2000) -> float:
    """The time of one tiny op on `device`: the floor of any kernel, launch and dispatch included."""
    x = torch.zeros(8, device=device)
    for _ in range(100):
        x.add_(1)
    _sync(device)
    started = time.perf_counter()
    for _ in range(repeats):
        x.add_(1)
    _sync(device)
    return (time.perf_counter() - started) / repeats


def patch_limit(model: NotagenModel, bandwidth: float, launch: float) -> dict:
    """Seconds per patch at batch 1 if each step cost max(weight bytes / bandwidth, ops x launch)."""
    patch_bytes = weight_bytes(model.patch_level_decoder) - weight_bytes(model.patch_level_decoder.base.wpe)
    char_bytes = weight_bytes(model.char_level_decoder)
    with torch.inference_mode():
        cache = model.encode_patches(torch.zeros((1, 4, model.config.patch_size), dtype=torch.long, device=model.device))
        buffers = KVBuffers.from_cache(cache, model.config.patch_length)
        with _OpCounter() as patch_ops:
            advance_patch(model, buffers, torch.zeros((1, 1, model.config.patch_size), dtype=torch.long, device=model.device))
        with _OpCounter() as char_ops:
            model.decode_patch(buffers.last_hidden)
    per_char_ops = char_ops.ops / model.config.patch_size
    patch_step = max(patch_bytes / bandwidth, patch_ops.ops * launch)
    char_step = max(char_bytes / bandwidth, per_char_ops * launch)
    return dict(seconds=patch_step + model.config.patch_size * char_step, patch_ops=patch_ops.ops, char_ops=per_char_ops,
                patch_bytes=patch_bytes, char_bytes=char_bytes,
                bound="launch" if per_char_ops * launch > char_bytes / bandwidth else "bandwidth")


# ------------------------------------------------------------------------------ the run
def run(args: argparse.Namespace) -> list[dict]:
    device = resolve_device(args.device)
    bandwidth = args.bandwidth or (4.8e12 if device.type == "cuda" else 15e9)
    launch = launch_seconds(device)
    print(f"device {device}, bandwidth {bandwidth / 1e9:.0f} GB/s, one tiny op {launch * 1e6:.1f} us", flush=True)
    contexts = {"short": GenerationContext(PROMPT.text), "~1000": long_context(1000)}
    results = []
    for size in args.sizes:
        for weights in args.weights:
            model = make_model(SIZES[size], device, weights)
            limit = patch_limit(model, bandwidth, launch)
            print(f"{size} {weights}: limit {16 / limit['seconds']:.0f} char/s at batch 1 ({limit['bound']}-bound: "
                  f"{limit['patch_ops']} ops + {limit['patch_bytes'] / 2**20:.0f} MiB per patch step, "
                  f"{limit['char_ops']:.0f} ops + {limit['char_bytes'] / 2**20:.0f} MiB per char step)", flush=True)
            for context_name, context in contexts.items():
                official_rate = None
                if args.baseline_patches:
                    official = time_official(model, context, args.baseline_patches)
                    official_rate = official["patches"] / official["seconds"]
                    print(f"  ctx {context_name:5s}: official {official_rate:7.2f} patch/s", flush=True)
                for batch in args.batches:
                    cached = time_cached(model, context, batch, args.patches)
                    rate = cached["patches"] / cached["seconds"]
                    results.append(dict(size=size, weights=weights, context=context_name, context_patches=cached["context"],
                                        batch=batch, prefill=cached["prefill"], cached_patch_rate=rate,
                                        official_patch_rate=official_rate,  # sequential rows: the same for any batch
                                        limit_patch_rate=1 / limit["seconds"], seconds=cached["seconds"]))
                    print(f"  ctx {context_name:5s} batch {batch}: cached {rate:8.2f} patch/s = {rate * 16:8.1f} char/s "
                          f"(prefill {cached['prefill']:.2f} s)", flush=True)
            del model
    return results


def table(results: list[dict], per_bar: float) -> str:
    rows = [
        "| model | weights | context (patches) | batch | cached char/s | cached bars/s | limit char/s (batch 1) "
        "| official char/s | speed-up | prefill s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        cached, official = r["cached_patch_rate"], r["official_patch_rate"]
        baseline = f"| {official * 16:.1f} | {cached / official:.1f}x " if official else "| - | - "
        rows.append(
            f"| {r['size']} | {r['weights']} | {r['context']} ({r['context_patches']}) | {r['batch']} | {cached * 16:.0f} "
            f"| {cached / per_bar:.2f} | {r['limit_patch_rate'] * 16:.0f} {baseline}| {r['prefill']:.2f} |"
        )
    notes = []
    for one in (r for r in results if r["batch"] == 1):
        same = [r for r in results if all(r[k] == one[k] for k in ("size", "weights", "context"))]
        eight = next((r for r in same if r["batch"] == 8), None)
        fp32 = next((r for r in results if r["batch"] == 1 and r["weights"] == "fp32"
                     and r["size"] == one["size"] and r["context"] == one["context"]), None)
        line = f"{one['size']} {one['weights']} / {one['context']}: limit/measured {one['limit_patch_rate'] / one['cached_patch_rate']:.1f}x"
        if eight:
            line += f", batch 8 / batch 1 {eight['cached_patch_rate'] / one['cached_patch_rate']:.2f}x"
        if fp32 and fp32 is not one:
            line += f", batch 1 over fp32 {one['cached_patch_rate'] / fp32['cached_patch_rate']:.2f}x"
        notes.append(line)
    return "\n".join(rows) + "\n\n" + "; ".join(notes) + ".\n"


def _list(choices):
    def parse(text: str) -> list[str]:
        items = [item.strip() for item in text.split(",") if item.strip()]
        unknown = [item for item in items if item not in choices]
        if unknown:
            raise argparse.ArgumentTypeError(f"unknown {unknown}; choose from {', '.join(choices)}")
        return items
    return parse


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto (default cpu)")
    parser.add_argument("--weights", type=_list(("auto", "fp32", "bf16", "fp16", "int8")), default=["fp32"],
                        help="comma-separated weight formats (default fp32)")
    parser.add_argument("--sizes", type=_list(tuple(SIZES)), default=["NotaGen-small", "tiny"],
                        help=f"comma-separated sizes of {', '.join(SIZES)} (default NotaGen-small,tiny)")
    parser.add_argument("--batches", type=lambda text: [int(b) for b in text.split(",")], default=[1, 8])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--patches", type=int, default=8, help="timed patches per cached case (default 8)")
    parser.add_argument("--baseline-patches", type=int, default=2, help="timed patches per official case (0: skip; default 2)")
    parser.add_argument("--bandwidth", type=float, default=None, help="bytes/s for the limit (default: 4.8e12 CUDA, 15e9 CPU)")
    parser.add_argument("--quality", action="store_true", help="also the loss / agreement of each format against fp32")
    parser.add_argument("--corpus", type=Path, default=Path("/work/data-build"), help="data set for --quality (read only)")
    parser.add_argument("--corpus-pieces", type=int, default=100)
    parser.add_argument("--write", type=Path, default=None, help="put the table into this markdown file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    args.weights = [resolve_weights(weights, device) for weights in args.weights]
    per_bar, per_bar_note = patches_per_bar()
    started = time.perf_counter()
    results = run(args)
    quality = ""
    if args.quality:
        from bench.notagen_quality import quality_report

        quality = quality_report([w for w in args.weights if w != "fp32"], device, args.corpus, args.corpus_pieces)
    total = time.perf_counter() - started
    hardware = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    text = (
        f"Run: `.venv/bin/python {' '.join(['bench/notagen_speed.py'] + sys.argv[1:])}` ({total:.0f} s in all), {hardware}, "
        f"torch {torch.__version__}, {args.threads} threads, random weights. "
        f"Patches per bar for bars/s: {per_bar_note}.\n\n" + table(results, per_bar) + quality
    )
    print()
    print(text)
    if args.write:
        name = f"notagen_speed threads={args.threads}"
        if device.type != "cpu" or args.weights != ["fp32"]:
            name += f" device={device.type} weights={','.join(args.weights)}"
        write_section(args.write, name, text)


if __name__ == "__main__":
    main()
