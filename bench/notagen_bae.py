"""Bar-exact generation measured: free decoding against the duration constraint, with and without header control.

    .venv/bin/python bench/notagen_bae.py [--checkpoint PATH] [--pieces 100] [--batch 8] [--cost-pieces 24]
        [--max-bars 8] [--write docs/performance.md]

Model: the shipped one (assets/notagen) unless `--checkpoint` names another. Prompts: the model's fine-tuning
prompts (its prompts.txt) cycled, one per batch. Sampling: the released settings (top-k 9, top-p 0.9,
temperature 1.2; `--sampling hot` for temperature 1.6 without top-k / top-p). One attempt per piece
(`max_attempts=1`): a piece that does not convert counts here, where the app would sample it again.

Rows: the constraint off (the model's own choices, as the official code samples) and on, each with the model
writing its header and with header control (the header written by the app from the prompt's most common
ensemble, `default_ensemble`; key, metre and tempo taken from a header the model writes first, a probe
decoded at batch 1 and counted in the decoding time). Columns:
  * returned: first attempts that return a piece (it converts);
  * BAE: misaligned bar lines over bar lines of the returned pieces (`engine.score.bae`);
  * inner bars full: bar lines other than a piece's first and last whose every voice lasts its metre
    (`engine.notagen.bar_check.full_inner_lines`);
  * parts match: returned pieces whose header's parts match the prompt's instrumentation
    (`engine.scoring.instrumentation`; pieces of instrumentations it does not judge are left out);
  * decode ms / bar and ms / patch: CPU time of this process spent decoding (patch and char decoders,
    sampling and the constraint; converting finished pieces not counted), per generated bar and per patch;
  * cost: bar-exact decoding's ms / patch over free decoding's in the same setting (different pieces, so
    noisy: their chars differ);
  * rows per patch decode (cost table): the batch rows whose next patch one call of the char decoder
    decodes, on average (rows share a call when the part of their patch already fixed has the same
    length): the fewer, the more the model costs per patch, whatever the constraint does;
  * constraint's own time: the CPU time inside the constraint (checks, masks and redraws; not the
    sampler's first draw, which free decoding makes too) per patch, and over the rest of the same pieces'
    decoding time: the constraint's price measured on the same pieces.
CPU time, not wall time: on a shared machine the wall time mostly measures the other jobs. The cost table
repeats the two decodings at batch 1 (`--cost-pieces` pieces), where the model's share per row is largest.
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.report import write_section  # noqa: E402
from engine.notagen import batch_engine, constrained  # noqa: E402
from engine.notagen.bar_check import full_inner_lines  # noqa: E402
from engine.notagen.generate import NotagenGenerator, resolve_checkpoint  # noqa: E402
from engine.notagen.header import HeaderChoice, default_ensemble  # noqa: E402
from engine.notagen.prompts import Prompt, prompts_for_checkpoint  # noqa: E402
from engine.score.bae import BarAlignment  # noqa: E402
from engine.scoring.instrumentation import header_part_names, matches_instrumentation  # noqa: E402

SETTINGS = {
    "released": dict(top_k=9, top_p=0.9, temperature=1.2),
    "hot": dict(top_k=0, top_p=1.0, temperature=1.6),
}
ROWS = {  # name: (constrain, header control)
    "free, model's header": (False, False),
    "bar-exact, model's header": (True, False),
    "free, header control": (False, True),
    "bar-exact, header control": (True, True),
}


class DecodeClock:
    """CPU time spent decoding: `BatchEngine.advance` without the conversions (`_finish`) it calls, and the
    patches it decoded (rows x steps); and of that, the constraint's own time: `ConstrainedChooser`'s set-up
    and calls without the sampler's first draw, which free decoding makes too."""

    def __init__(self) -> None:
        self.seconds, self.patches, self.constraint, self.decodes = 0.0, 0, 0.0, 0
        advance, finish = batch_engine.BatchEngine.advance, batch_engine.BatchEngine._finish
        decode = batch_engine.BatchEngine._decode
        choose, init = constrained.ConstrainedChooser.__call__, constrained.ConstrainedChooser.__init__
        clock = self

        def timed_choose(chooser, logits):
            started = time.process_time()
            result = choose(chooser, logits)
            clock.constraint += time.process_time() - started
            return result

        def timed_init(chooser, *args, **kwargs):
            started = time.process_time()
            init(chooser, *args, **kwargs)  # (copies the rows' readers)
            clock.constraint += time.process_time() - started
            first_draw = chooser._draw

            def untimed_first_draw(logits):
                started = time.process_time()
                result = first_draw(logits)
                clock.constraint -= time.process_time() - started
                return result

            chooser._draw = untimed_first_draw

        constrained.ConstrainedChooser.__call__, constrained.ConstrainedChooser.__init__ = timed_choose, timed_init

        def timed_advance(engine, groups):
            clock.patches += sum(len(group.rows) for group in groups)
            started = time.process_time()
            result = advance(engine, groups)
            clock.seconds += time.process_time() - started
            return result

        def untimed_finish(engine, *args, **kwargs):
            started = time.process_time()
            finish(engine, *args, **kwargs)
            clock.seconds -= time.process_time() - started

        def counted_decode(engine, *args, **kwargs):
            clock.decodes += 1
            return decode(engine, *args, **kwargs)

        batch_engine.BatchEngine.advance, batch_engine.BatchEngine._finish = timed_advance, untimed_finish
        batch_engine.BatchEngine._decode = counted_decode

    def reset(self) -> None:
        self.seconds, self.patches, self.constraint, self.decodes = 0.0, 0, 0.0, 0


@dataclass
class Row:
    """Totals of one row."""

    pieces: int = 0
    returned: int = 0
    alignment: BarAlignment = BarAlignment(0, 0)
    inner_bars: int = 0
    inner_full: int = 0
    judged: int = 0
    matched: int = 0
    bars: int = 0
    seconds: float = 0.0
    patches: int = 0
    constraint: float = 0.0
    decodes: int = 0
    failures: dict[str, int] = field(default_factory=dict)

    @property
    def ms_per_patch(self) -> float:
        return 1000 * self.seconds / max(self.patches, 1)

    @property
    def constraint_share(self) -> float:
        """The constraint's time over the rest of the decoding time of the same pieces."""
        return self.constraint / max(self.seconds - self.constraint, 1e-9)


def measure(generator: NotagenGenerator, clock: DecodeClock, prompts: list[Prompt], pieces: int, batch: int,
            max_bars: int, sampling: dict, constrain: bool, header_control: bool) -> Row:
    row, calls = Row(), (pieces + batch - 1) // batch
    clock.reset()
    for call in range(calls):
        prompt = prompts[call % len(prompts)]
        header = HeaderChoice(ensemble=default_ensemble(prompt)) if header_control else None
        result = generator.generate(prompt, n=min(batch, pieces - call * batch), seed=1000 + call, max_bars=max_bars,
                                    max_attempts=1, bae_resample=False, constrain=constrain, header=header, **sampling)
        row.pieces += len(result.pieces) + len(result.failures)
        for failure in result.failures:
            key = failure.reason.split(":")[0]
            row.failures[key] = row.failures.get(key, 0) + 1
        for piece in result.pieces:
            row.returned += 1
            row.alignment = row.alignment + piece.alignment
            row.bars += piece.bars
            inner, full = full_inner_lines(piece.text)
            row.inner_bars, row.inner_full = row.inner_bars + inner, row.inner_full + full
            match = matches_instrumentation(prompt.instrumentation, header_part_names(piece.text))
            if match is not None:
                row.judged, row.matched = row.judged + 1, row.matched + int(match)
    row.seconds, row.patches, row.constraint, row.decodes = clock.seconds, clock.patches, clock.constraint, clock.decodes
    return row


def _own(row: Row) -> str:
    """The constraint's own CPU time per patch and as a share of the rest of that decoding ("-" when off)."""
    if not row.constraint:
        return "-"
    return f"{1000 * row.constraint / max(row.patches, 1):.2f} ms = +{100 * row.constraint_share:.0f} %"


def _share(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f} % ({part}/{whole})" if whole else "-"


def report(rows: dict[str, Row], cost_rows: dict[str, Row], args: argparse.Namespace, seconds: float) -> str:
    free = {name: rows[name.replace("bar-exact", "free")].ms_per_patch for name in rows}
    lines = [
        f"Run: `nice -n 10 .venv/bin/python bench/notagen_bae.py --checkpoint {args.checkpoint} --pieces {args.pieces} "
        f"--batch {args.batch} --cost-pieces {args.cost_pieces} --max-bars {args.max_bars} --sampling {args.sampling} "
        f"--threads {args.threads}` ({seconds:.0f} s in all). Model `{args.checkpoint}`, {args.sampling} sampling, "
        f"{len(args.prompts)} fine-tuning prompts cycled, batches of {args.batch}, one attempt per piece.",
        "",
        "| decoding, header | returned (first attempts) | BAE | inner bars full | parts match the prompt | failures | decode ms / bar | ms / patch | cost | constraint's own time |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, row in rows.items():
        failures = "; ".join(f"{key} ({count})" for key, count in sorted(row.failures.items())) or "-"
        lines.append(
            f"| {name} | {_share(row.returned, row.pieces)} | {100 * row.alignment.rate:.2f} % "
            f"({row.alignment.misaligned}/{row.alignment.bars}) | {_share(row.inner_full, row.inner_bars)} "
            f"| {_share(row.matched, row.judged)} | {failures} | {1000 * row.seconds / max(row.bars, 1):.0f} "
            f"| {row.ms_per_patch:.2f} | {100 * (row.ms_per_patch / free[name] - 1):+.0f} % | {_own(row)} |")
    lines += ["", f"Constraint cost by batch size (model's header; batch 1: {args.cost_pieces} pieces, batch {args.batch}: "
              "the rows above):", "", "| batch | free ms / patch | bar-exact ms / patch | cost | rows per patch decode, free / bar-exact "
              "| constraint's own time |", "| --- | --- | --- | --- | --- | --- |"]
    for batch, (off, on) in ((1, (cost_rows["free"], cost_rows["bar-exact"])),
                             (args.batch, (rows["free, model's header"], rows["bar-exact, model's header"]))):
        lines.append(f"| {batch} | {off.ms_per_patch:.2f} | {on.ms_per_patch:.2f} | {100 * (on.ms_per_patch / off.ms_per_patch - 1):+.0f} % "
                     f"| {off.patches / max(off.decodes, 1):.2f} / {on.patches / max(on.decodes, 1):.2f} | {_own(on)} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default="assets/notagen")
    parser.add_argument("--pieces", type=int, default=100)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--cost-pieces", type=int, default=24, help="pieces per decoding at batch 1")
    parser.add_argument("--max-bars", type=int, default=8)
    parser.add_argument("--sampling", choices=SETTINGS, default="released")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--write", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    checkpoint = resolve_checkpoint(ROOT / args.checkpoint if not Path(args.checkpoint).is_absolute() else args.checkpoint)
    generator = NotagenGenerator.load(checkpoint)
    args.prompts = prompts_for_checkpoint(checkpoint)
    if not args.prompts:
        sys.exit(f"{checkpoint} lists no fine-tuning prompts (prompts.txt)")
    clock, sampling, started = DecodeClock(), SETTINGS[args.sampling], time.perf_counter()
    rows, cost_rows = {}, {}
    for name, (constrain, header_control) in ROWS.items():
        rows[name] = measure(generator, clock, args.prompts, args.pieces, args.batch, args.max_bars, sampling, constrain, header_control)
        print(f"{name}: {rows[name].returned}/{rows[name].pieces} returned, BAE {100 * rows[name].alignment.rate:.2f} %, "
              f"{rows[name].ms_per_patch:.2f} ms/patch", flush=True)
    for name, constrain in (("free", False), ("bar-exact", True)):
        cost_rows[name] = measure(generator, clock, args.prompts, args.cost_pieces, 1, args.max_bars, sampling, constrain, False)
        print(f"batch 1, {name}: {cost_rows[name].ms_per_patch:.2f} ms/patch", flush=True)
    text = report(rows, cost_rows, args, time.perf_counter() - started)
    print()
    print(text)
    if args.write:
        write_section(args.write, "notagen_bae", text)


if __name__ == "__main__":
    main()
