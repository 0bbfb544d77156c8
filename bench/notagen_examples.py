"""Engraved examples of a NotaGen model's pieces, per instrumentation, for a reader of the docs to look at.

    .venv/bin/python bench/notagen_examples.py [--checkpoint assets/notagen] [--per-instrumentation 3]
        [--max-bars 8] [--out docs/examples]

Generated as the app generates them by default: bar-exact decoding, the released sampling settings, the
model writing its own header (so the staves say what the model makes of the prompt), up to three attempts.
For each instrumentation the model was fine-tuned on (Chamber, Art Song, Keyboard, Choral), the pieces
cycle over its prompts, most common first; each piece's first page is engraved by verovio (as the page
shows it) and written as PNG, with a README.md table of prompt, seed, parts, bars and whether the parts
match the prompt (`engine.scoring.instrumentation`).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cairosvg
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine.notagen.generate import NotagenGenerator, resolve_checkpoint  # noqa: E402
from engine.notagen.prompts import prompts_for_checkpoint  # noqa: E402
from engine.render.engrave import Engraver  # noqa: E402
from engine.render.music_font import register_music_font  # noqa: E402
from engine.scoring.instrumentation import header_part_names, matches_instrumentation  # noqa: E402

INSTRUMENTATIONS = ("Chamber", "Art Song", "Keyboard", "Choral")
PNG_WIDTH = 1400


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default="assets/notagen")
    parser.add_argument("--per-instrumentation", type=int, default=3)
    parser.add_argument("--max-bars", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "examples")
    args = parser.parse_args()
    torch.set_num_threads(1)
    checkpoint = resolve_checkpoint(args.checkpoint)
    generator, engraver = NotagenGenerator.load(checkpoint), Engraver()
    register_music_font()
    prompts = prompts_for_checkpoint(checkpoint)  # most common first (prompts.txt order)
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    try:
        for instrumentation in INSTRUMENTATIONS:
            chosen = [prompt for prompt in prompts if prompt.instrumentation == instrumentation]
            for index in range(args.per_instrumentation if chosen else 0):
                prompt, seed = chosen[index % len(chosen)], args.seed + index
                label = " / ".join((prompt.period, prompt.composer, prompt.instrumentation))
                result = generator.generate(prompt, n=1, seed=seed, max_bars=args.max_bars)
                if not result.pieces:
                    rows.append(f"| - | {label} | {seed} | {result.failures[0].reason} | - | - |")
                    continue
                piece = result.pieces[0]
                name = f"{instrumentation.lower().replace(' ', '_')}_{index + 1}.png"
                page = engraver.engrave(piece.document.musicxml, page_width=2100, scale=40).pages[0]
                cairosvg.svg2png(bytestring=page.encode("utf-8"), write_to=str(args.out / name),
                                 output_width=PNG_WIDTH, background_color="white")
                parts = header_part_names(piece.text)
                match = matches_instrumentation(instrumentation, parts)
                rows.append(f"| [{name}]({name}) | {label} | {seed} | {', '.join(parts) or '(unnamed)'} "
                            f"| {piece.bars} | {'yes' if match else 'no'} |")
                print(rows[-1], flush=True)
    finally:
        engraver.close()
    command = (f"`.venv/bin/python bench/notagen_examples.py --checkpoint {args.checkpoint} --per-instrumentation "
               f"{args.per_instrumentation} --max-bars {args.max_bars} --seed {args.seed}`")
    (args.out / "README.md").write_text(
        f"# Engraved examples of `{checkpoint.name}`\n\n"
        f"Written by {command}: bar-exact decoding, released sampling settings, the model's own header, "
        "the first page of each piece as the app engraves it.\n\n"
        "| page | prompt | seed | parts (header) | bars | parts match the prompt |\n| --- | --- | --- | --- | --- | --- |\n"
        + "\n".join(rows) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
