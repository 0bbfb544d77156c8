"""Command line: `python -m engine convert IN OUT`, `check FILE`, `generate ...`, `continue IN ...`,
`inpaint IN ...`, `evaluate ...`.

Every verb goes through `engine.service.Composer`, as the app does. Errors print one line on stderr and exit
non-zero; a user never sees a traceback.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import warnings
from pathlib import Path

from engine.device import DEVICES, WEIGHTS
from engine.errors import ModelError, ScoreError, describe
from engine.notagen.header import HeaderChoice, find_ensemble
from engine.notagen.options import (
    DEFAULT_MAX_BARS,
    DEFAULT_TEMPERATURE,
    DEFAULT_TOP_K,
    DEFAULT_TOP_P,
    GenerationOptions,
)
from engine.notagen.prompts import Prompt, read_prompts

OUTPUT_EXTENSIONS = {
    ".musicxml": "musicxml",
    ".xml": "musicxml",
    ".abc": "abc",
    ".mid": "mid",
    ".midi": "mid",
    ".ogg": "ogg",
    ".wav": "wav",
    ".svg": "svg",
    ".pdf": "pdf",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m engine", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    convert = commands.add_parser("convert", help="convert a score; formats come from the extensions")
    convert.add_argument("input", type=Path, help="a .musicxml/.xml/.mxl/.abc/.krn/.mid file")
    convert.add_argument("output", type=Path, help="a .musicxml/.abc/.mid/.ogg/.wav/.svg/.pdf file")
    convert.add_argument("--interleaved", action="store_true", help="with .abc: write NotaGen's interleaved ABC")
    convert.add_argument("--tempo", type=float, default=1.0, help="tempo factor for .mid/.ogg/.wav (default 1.0)")
    _import_arguments(convert)

    check = commands.add_parser("check", help='print {"measures", "parts", "abc_bars", "bae"} of a score as JSON (bae: of its NotaGen text)')
    check.add_argument("input", type=Path)
    _import_arguments(check)

    generate = commands.add_parser("generate", help="compose new pieces with a NotaGen model")
    _model_arguments(generate)
    generate.add_argument("--prompt", default=None, help='"Period|Composer|Instrumentation" (default: unconditional)')
    generate.add_argument("-n", type=int, default=1, help="how many pieces (generated together; default 1)")
    generate.add_argument("--max-bars", type=int, default=DEFAULT_MAX_BARS, help="stop each piece after this many bars (default %(default)s)")
    generate.add_argument("--out", type=Path, required=True, help="folder for piece_NN.abc and piece_NN.musicxml")
    generate.add_argument("--ensemble", default=None,
                          help='the parts: a name offered for the prompt ("string quartet", "voice and piano", "SATB", '
                               '"piano") or Name:clef[+clef],... (default: the model\'s choice)')
    generate.add_argument("--key", default=None, help='e.g. "D", "F# minor", "Bbm" (default: the model\'s choice)')
    generate.add_argument("--metre", default=None, help='e.g. "3/4", "6/8" (default: the model\'s choice)')
    generate.add_argument("--tempo", type=int, default=None, help="quarter notes per minute (default: the model's choice)")

    inpaint = commands.add_parser("inpaint", help="regenerate the unlocked measures of a score with the measure model")
    inpaint.add_argument("input", type=Path, help="a score file (.musicxml/.xml/.mxl/.abc/.krn/.mid)")
    inpaint.add_argument("--lock", action="append", default=[], metavar="SPEC",
                         help='measures to keep: "1-4,9" (all parts) or "2:5-8" (part 2); repeatable')
    inpaint.add_argument("--out", type=Path, required=True, help="output file; the extension chooses the format")
    inpaint.add_argument("--seed", type=int, default=0)
    inpaint.add_argument("--temperature", type=float, default=None,
                         help="sampling temperature (default: the measure model's, engine.measure.inpaint.DEFAULT_TEMPERATURE)")
    inpaint.add_argument("--sweeps", type=int, default=0, help="refinement sweeps after the first pass")
    inpaint.add_argument("--refine-fraction", type=float, default=0.25)
    inpaint.add_argument("--order", choices=("random", "left-to-right"), default="random")
    inpaint.add_argument("--time-budget", type=float, default=None, help="seconds; refinement stops when spent")
    inpaint.add_argument("--unconstrained", action="store_true", help="do not force exact measure lengths")
    inpaint.add_argument("--checkpoint", type=Path, default=None, help="model folder (default assets/measure)")
    _import_arguments(inpaint)


    resume = commands.add_parser("continue", help="continue a score (or regenerate it from a bar) with NotaGen")
    resume.add_argument("input", type=Path, help="a .musicxml/.xml/.mxl/.abc/.krn/.mid file")
    _model_arguments(resume)
    resume.add_argument("--bars", type=int, default=None, help="new bars to generate (default with --keep: the bars after it)")
    resume.add_argument("--keep", type=int, default=None, help="keep only the first K bars (default: all), e.g. to regenerate from bar K")
    resume.add_argument("--prompt", default=None, help='optional "Period|Composer|Instrumentation" lines')
    resume.add_argument("-n", type=int, default=1, help="how many versions (default 1)")
    resume.add_argument("--out", type=Path, required=True, help="a .musicxml/.xml/.abc file, or a folder (for -n > 1)")
    _import_arguments(resume)
    evaluate = commands.add_parser("evaluate", help="the NotaGen paper's Table 2 metrics for a model and prompts")
    evaluate.add_argument("--checkpoint", type=Path, default=None, help="NotaGen model (default: assets/notagen)")
    evaluate.add_argument("--encoder", type=Path, default=Path(__file__).resolve().parents[1] / "assets" / "m3",
                          help="music encoder: a saved folder, an official M3 or CLaMP 2 .pth (default: assets/m3)")
    evaluate.add_argument("--data", type=Path, default=None,
                          help="data set built by training.data (default: the reference features shipped in --reference; "
                               "PPL needs --data)")
    evaluate.add_argument("--reference", type=Path, default=None,
                          help="folder of reference.json/.safetensors, used without --data (default: assets/m3)")
    evaluate.add_argument("--prompts", type=Path, default=None,
                          help="prompts.txt (default: the data set's prompts with --min-references training pieces)")
    evaluate.add_argument("--min-references", type=int, default=5, help="default prompt set's minimum (default 5)")
    evaluate.add_argument("-n", type=int, default=8, help="pieces per prompt (default 8)")
    evaluate.add_argument("--max-bars", type=int, default=16, help="bars per piece (default 16)")
    evaluate.add_argument("--seed", type=int, default=0)
    evaluate.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    _device_arguments(evaluate)
    evaluate.add_argument("--out", type=Path, required=True, help="FILE.json (the table also goes to FILE.md)")
    return parser


def _import_arguments(parser: argparse.ArgumentParser) -> None:
    """The import and render budgets of a verb that reads a file."""
    parser.add_argument("--import-time-limit", type=float, default=30, metavar="SECONDS",
                        help="stop reading the input file after this long (default %(default)s)")
    parser.add_argument("--import-memory-mb", type=int, default=1024, metavar="MB",
                        help="most memory reading the input file may use (default %(default)s)")
    parser.add_argument("--render-time-limit", type=float, default=120, metavar="SECONDS",
                        help="stop engraving, rendering audio or writing the output after this long (default %(default)s)")
    parser.add_argument("--render-memory-mb", type=int, default=1024, metavar="MB",
                        help="most memory engraving, audio or writing the output may use (default %(default)s)")


def _model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help="an official NotaGen .pth or a saved model folder (default: assets/notagen/ if present)")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: random)")
    parser.add_argument("--top-k", type=int, default=DEFAULT_TOP_K, help="sample among the k likeliest chars (1 = greedy; default %(default)s)")
    parser.add_argument("--top-p", type=float, default=DEFAULT_TOP_P, help="nucleus sampling mass (default %(default)s)")
    parser.add_argument("--temperature", type=float, default=DEFAULT_TEMPERATURE, help="sampling temperature (default %(default)s)")
    parser.add_argument("--time-limit", type=float, default=None, help="stop after this many seconds (default: none)")
    parser.add_argument("--no-bae-resample", action="store_true", help="keep bars whose voices do not add up")
    parser.add_argument("--no-constrain", action="store_true",
                        help="sample the model's own choices (default: bar-exact decoding, every voice fills its bar)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's choice)")
    _device_arguments(parser)


def _device_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", choices=DEVICES, default="auto",
                        help="where NotaGen runs (default %(default)s: the CUDA GPU when there is one)")
    parser.add_argument("--weights", choices=WEIGHTS, default="auto",
                        help="NotaGen's number format: bf16/fp16 on CUDA, bf16/int8 on the CPU for speed "
                             "(default %(default)s: bf16 on CUDA, fp32 on the CPU)")


def _composer(args: argparse.Namespace, notagen: Path | None | str = None, measure: Path | None | str = None):
    """The facade every verb goes through, with the models the verb needs (None: not loaded) and the
    import and render budgets of the command line's flags (the defaults for verbs that read no file)."""
    from engine.score.sandbox import ImportBudget, RenderBudget
    from engine.service import Composer

    try:
        budgets = {"import_budget": ImportBudget(), "render_budget": RenderBudget()}
        if "import_time_limit" in args:
            budgets = {"import_budget": ImportBudget(args.import_time_limit, args.import_memory_mb),
                       "render_budget": RenderBudget(args.render_time_limit, args.render_memory_mb)}
    except ValueError as exc:
        raise ScoreError(str(exc)) from exc
    placement = {"device": args.device, "weights": args.weights} if "device" in args else {}
    return Composer.from_checkpoints(notagen=notagen, measure=measure, **budgets, **placement)


def _output_format(path: Path) -> str:
    fmt = OUTPUT_EXTENSIONS.get(path.suffix.lower())
    if fmt is None:
        raise ScoreError(f"{path.name}: unsupported output type (use one of {', '.join(OUTPUT_EXTENSIONS)})")
    return fmt


def run_convert(args: argparse.Namespace) -> None:
    fmt = _output_format(args.output)
    if args.interleaved:
        if fmt != "abc":
            raise ScoreError("--interleaved goes with an .abc output")
        fmt = "interleaved.abc"
    composer = _composer(args)
    document = composer.open_file(args.input)
    args.output.write_bytes(composer.export(document, fmt, tempo=args.tempo))
    _warn(composer.export_warnings(document, fmt))


def run_check(args: argparse.Namespace) -> None:
    composer = _composer(args)
    print(json.dumps(composer.check(composer.open_file(args.input))))


def _set_threads(args: argparse.Namespace) -> None:
    if args.threads is not None:
        import torch

        torch.set_num_threads(max(1, args.threads))


def _generation_options(args: argparse.Namespace) -> dict:
    _set_threads(args)
    options = dict(
        n=args.n, seed=args.seed, top_k=args.top_k, top_p=args.top_p, temperature=args.temperature,
        time_limit=args.time_limit, bae_resample=not args.no_bae_resample, constrain=not args.no_constrain,
    )
    try:  # check the settings before loading a model
        GenerationOptions(**options, max_bars=args.max_bars if "max_bars" in args else args.bars).limits
        GenerationOptions(**options).sampling
    except ValueError as exc:
        raise ModelError(f"invalid setting: {exc}") from exc
    return options


def _notagen_composer(args: argparse.Namespace):
    from engine.service import SHIPPED

    return _composer(args, notagen=args.checkpoint or SHIPPED)


def _prompt(args: argparse.Namespace):
    if args.prompt is None:
        return None
    try:
        return Prompt.parse(args.prompt)
    except ValueError as exc:
        raise ModelError(str(exc)) from exc


def _header(args: argparse.Namespace, prompt) -> HeaderChoice:
    """The header fields fixed on the command line (`ScoreError` for any that cannot be written)."""
    ensemble = find_ensemble(args.ensemble, prompt) if args.ensemble else None
    return HeaderChoice(ensemble, args.key, args.metre, args.tempo)


def _progress(event) -> None:
    if event.kind == "bar":
        print(f"piece {event.index + 1}: bar {event.bars} ({event.elapsed:.1f} s)", flush=True)
    elif event.kind == "failed":
        again = ", sampling it again" if event.will_retry else ""
        print(f"piece {event.index + 1}: attempt {event.attempt} failed: {event.reason}{again}", file=sys.stderr, flush=True)


def _check_result(result) -> None:
    if not result.pieces:
        reasons = "; ".join(sorted({failure.reason for failure in result.failures})) or "nothing was generated"
        raise ModelError(f"no piece could be generated ({reasons})")


def _warn(lines) -> None:
    for line in lines:
        print(f"warning: {line}", file=sys.stderr)


def _write_piece(piece, abc_path: Path | None, musicxml_path: Path | None) -> None:
    for path, data in ((abc_path, piece.abc), (musicxml_path, piece.document.musicxml)):
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(data, encoding="utf-8")
            print(f"wrote {path}")


def _summary(piece) -> str:
    ended = "ended by the model" if piece.ended else f"stopped: {piece.stop_reason}"
    return (f"piece {piece.index + 1}: {piece.bars} bars, {ended}, {piece.alignment.misaligned} misaligned, "
            f"{piece.resampled_bars} resampled, {piece.seconds:.1f} s")


def run_generate(args: argparse.Namespace) -> None:
    options = _generation_options(args)
    prompt = _prompt(args)
    header = _header(args, prompt)
    composer = _notagen_composer(args)
    result = composer.compose(prompt, max_bars=args.max_bars, header=header, on_event=_progress, **options)
    _check_result(result)
    for piece in result.pieces:
        stem = args.out / f"piece_{piece.index + 1:02d}"
        _write_piece(piece, stem.with_suffix(".abc"), stem.with_suffix(".musicxml"))
        print(_summary(piece))
    if result.failures:
        print(f"{len(result.failures)} of {args.n} pieces failed", file=sys.stderr)


def run_continue(args: argparse.Namespace) -> None:
    suffix = args.out.suffix.lower()
    if suffix and suffix not in (".musicxml", ".xml", ".abc"):
        raise ScoreError(f"{args.out.name}: write a .musicxml, .xml or .abc file, or a folder")
    if suffix and args.n > 1:
        raise ScoreError("with -n > 1, --out must be a folder")
    if args.bars is None and args.keep is None:
        raise ScoreError("give --bars (new bars to add) or --keep (bars to keep; the rest is generated again)")
    options = _generation_options(args)
    document = _composer(args).open_file(args.input)  # a bad file is reported before the model loads
    composer = _notagen_composer(args)
    result = composer.compose_continuation(document, args.bars, keep=args.keep, prompt=_prompt(args),
                                           on_event=_progress, **options)
    _check_result(result)
    _warn(result.warnings)
    for piece in result.pieces:
        if suffix == ".abc":
            _write_piece(piece, args.out, None)
        elif suffix:
            _write_piece(piece, None, args.out)
        else:
            stem = args.out / f"{args.input.stem}_{piece.index + 1:02d}"
            _write_piece(piece, stem.with_suffix(".abc"), stem.with_suffix(".musicxml"))
        print(_summary(piece))


def parse_lock_spec(specs: list[str], grid) -> set[tuple[int, int]]:
    """Locked (part index, column index) cells of `grid` (an engine.score.grid.MeasureGrid) from --lock specs:
    measure numbers as printed ("1-4,9": every part of measures 1 to 4 and 9) or, after a 1-based part
    number and a colon, measures of one part ("2:5-8")."""
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


def run_inpaint(args: argparse.Namespace) -> None:
    from engine.service import SHIPPED

    fmt = _output_format(args.out)
    composer = _composer(args, measure=args.checkpoint or SHIPPED)
    document = composer.open_file(args.input)
    locked = parse_lock_spec(args.lock, document.grid)
    sampling = {} if args.temperature is None else {"temperature": args.temperature}
    result = composer.inpaint(
        document, locked, seed=args.seed, sweeps=args.sweeps, **sampling,
        refine_fraction=args.refine_fraction, order=args.order, time_budget_s=args.time_budget,
        constrained=not args.unconstrained,
    )
    args.out.write_bytes(composer.export(result.document, fmt))


def run_evaluate(args: argparse.Namespace) -> None:
    _set_threads(args)
    from engine.scoring.evaluate import TableRow, markdown_table

    prompts = None
    if args.prompts is not None:
        prompts = ["_".join((p.period, p.composer, p.instrumentation)) for p in read_prompts(args.prompts)]
    composer = _notagen_composer(args)
    result = composer.evaluate(args.encoder, args.data, args.out, prompts, n=args.n, max_bars=args.max_bars,
                               seed=args.seed, min_references=args.min_references, reference_dir=args.reference)
    print(markdown_table([TableRow(**row) for row in result["rows"]], result["notes"]), end="")


COMMANDS = {
    "convert": run_convert,
    "check": run_check,
    "generate": run_generate,
    "continue": run_continue,
    "inpaint": run_inpaint,
    "evaluate": run_evaluate,
}


def main(argv: list[str] | None = None) -> int:
    from engine.tempdirs import exit_on_sigterm

    args = build_parser().parse_args(argv)
    warnings.simplefilter("ignore")  # library warnings are noise on a command line
    exit_on_sigterm()  # a stopped command removes its temp folders as at a normal exit
    try:
        COMMANDS[args.command](args)
    except (ScoreError, ModelError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"error: {describe(exc)}", file=sys.stderr)
        return 1
    except Exception as exc:  # last resort: one line, never a traceback
        print(f"error: {args.command} failed inside the program ({type(exc).__name__}: {describe(exc)}); "
              "please report it", file=sys.stderr)
        return 2
    return 0
