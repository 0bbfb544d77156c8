"""`python -m engine inpaint IN --lock 1-4,9 --seed 0 --out OUT` (to be wired into engine/__main__.py):

    from engine.measure.cli import add_inpaint_arguments, run_inpaint_cli
    add_inpaint_arguments(commands.add_parser("inpaint", help="rewrite the unlocked measures with the measure model"))
    COMMANDS["inpaint"] = run_inpaint_cli

--lock takes measure numbers as printed in the score ("1-4,9": every part of measures 1 to 4 and 9)
or, prefixed with a 1-based part number and a colon, measures of one part ("2:5-8"); it may be
repeated. Everything not locked is rewritten.
"""
from __future__ import annotations

import argparse
import re
from pathlib import Path

from engine.errors import ScoreError


def add_inpaint_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("input", type=Path, help="a score file (.musicxml/.xml/.mxl/.abc/.krn/.mid)")
    parser.add_argument("--lock", action="append", default=[], metavar="SPEC",
                        help='measures to keep: "1-4,9" (all parts) or "2:5-8" (part 2); repeatable')
    parser.add_argument("--out", type=Path, required=True, help="output file; the extension chooses the format")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--sweeps", type=int, default=0, help="refinement sweeps after the first pass")
    parser.add_argument("--refine-fraction", type=float, default=0.25)
    parser.add_argument("--order", choices=("random", "left-to-right"), default="random")
    parser.add_argument("--time-budget", type=float, default=None, help="seconds; refinement stops when spent")
    parser.add_argument("--unconstrained", action="store_true", help="do not force exact measure lengths")
    parser.add_argument("--checkpoint", type=Path, default=None, help="model folder (default assets/measure)")
    return parser


def parse_lock_spec(specs: list[str], grid) -> set[tuple[int, int]]:
    """Locked (part index, column index) cells of `grid` (an engine.score.grid.MeasureGrid)."""
    cells: set[tuple[int, int]] = set()
    n_parts = len(grid.parts)
    for spec in specs:
        for item in filter(None, (s.strip() for s in spec.split(","))):
            match = re.fullmatch(r"(?:(\d+):)?(\w+?)(?:-(\w+))?", item)
            if not match:
                raise ScoreError(f"--lock: cannot read {item!r} (use e.g. 1-4,9 or 2:5-8)")
            part, first, last = match.groups()
            parts = range(n_parts)
            if part is not None:
                if not 1 <= int(part) <= n_parts:
                    raise ScoreError(f"--lock: the score has parts 1 to {n_parts}, not {part}")
                parts = [int(part) - 1]
            try:
                start = grid.column_of_number(first)
                end = grid.column_of_number(last) if last is not None else start
            except KeyError as exc:
                raise ScoreError(f"--lock: {exc.args[0]}") from None
            if end < start:
                raise ScoreError(f"--lock: {item!r} runs backwards")
            cells.update((p, m) for p in parts for m in range(start, end + 1))
    return cells


def run_inpaint_cli(args: argparse.Namespace) -> None:
    from engine.__main__ import OUTPUT_EXTENSIONS
    from engine.measure.inpaint import inpaint
    from engine.service import Composer

    fmt = OUTPUT_EXTENSIONS.get(args.out.suffix.lower())
    if fmt is None:
        raise ScoreError(f"{args.out.name}: unsupported output type (use one of {', '.join(OUTPUT_EXTENSIONS)})")
    composer = Composer()
    document = composer.open_file(args.input)
    locked = parse_lock_spec(args.lock, document.grid)
    result = inpaint(
        document, locked, checkpoint=args.checkpoint, seed=args.seed, temperature=args.temperature,
        sweeps=args.sweeps, refine_fraction=args.refine_fraction, order=args.order,
        time_budget_s=args.time_budget, constrained=not args.unconstrained,
    )
    args.out.write_bytes(composer.export(result, fmt))
