"""Command line: `python -m engine convert IN OUT`, `python -m engine check FILE`.

Errors print one line on stderr and exit non-zero; a user never sees a traceback.
"""
from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

from engine.errors import ModelError, ScoreError, describe

OUTPUT_EXTENSIONS = {
    ".musicxml": "musicxml",
    ".xml": "musicxml",
    ".abc": "abc",
    ".mid": "mid",
    ".midi": "mid",
    ".ogg": "ogg",
    ".wav": "wav",
    ".svg": "svg",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m engine", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    convert = commands.add_parser("convert", help="convert a score; formats come from the extensions")
    convert.add_argument("input", type=Path, help="a .musicxml/.xml/.mxl/.abc/.krn/.mid file")
    convert.add_argument("output", type=Path, help="a .musicxml/.abc/.mid/.ogg/.wav/.svg file")
    convert.add_argument("--interleaved", action="store_true", help="with .abc: write NotaGen's interleaved ABC")
    convert.add_argument("--tempo", type=float, default=1.0, help="tempo factor for .mid/.ogg/.wav (default 1.0)")

    check = commands.add_parser("check", help='print {"bars", "parts", "bae"} of a score as JSON')
    check.add_argument("input", type=Path)
    return parser


def run_convert(args: argparse.Namespace) -> None:
    from engine.service import Composer

    fmt = OUTPUT_EXTENSIONS.get(args.output.suffix.lower())
    if fmt is None:
        raise ScoreError(f"{args.output.name}: unsupported output type (use one of {', '.join(OUTPUT_EXTENSIONS)})")
    if args.interleaved:
        if fmt != "abc":
            raise ScoreError("--interleaved goes with an .abc output")
        fmt = "interleaved.abc"
    composer = Composer()
    document = composer.open_file(args.input)
    args.output.write_bytes(composer.export(document, fmt, tempo=args.tempo))


def run_check(args: argparse.Namespace) -> None:
    from engine.service import Composer

    composer = Composer()
    print(json.dumps(composer.check(composer.open_file(args.input))))


COMMANDS = {"convert": run_convert, "check": run_check}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    warnings.simplefilter("ignore")  # library warnings are noise on a command line
    try:
        COMMANDS[args.command](args)
    except (ScoreError, ModelError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"error: {describe(exc)}", file=sys.stderr)
        return 1
    except Exception as exc:  # last resort: one line, never a traceback
        print(f"error: unexpected failure ({type(exc).__name__}: {describe(exc)})", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
