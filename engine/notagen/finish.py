"""NotaGen text in and out of generation: the context a call starts from, and turning generated text into
a `ScoreDocument` (whole new pieces, or the continuation of a user's score).

A `Finisher` converts a stopped piece; raising `ScoreError` makes the engine sample the piece again or
report it, so nothing that does not convert (or converts to unreadable notation) is ever returned.
"""
from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from engine.errors import ScoreError
from engine.score.splice import continued_xml
from engine.notagen.prompts import PromptLike, prompt_text
from engine.score.document import ScoreDocument
from engine.score.notagen_abc import abc_to_musicxml, clean_abc, interleave, reduce_rests, restore_rests


def text_lines(text: str) -> list[str]:
    """Lines with their newline kept; unlike `str.splitlines`, only `\\n` ends a line (as in ABC files)."""
    return re.findall(r"[^\n]*\n|[^\n]+$", text)


@dataclass(frozen=True)
class GenerationContext:
    """What a call starts from. `metadata` (prompt and header lines) is kept on every re-encode; `body`
    holds given `[r:]`-annotated bar lines (empty: the model starts the tune body itself)."""

    metadata: str
    body: str = ""

    @property
    def text(self) -> str:
        return self.metadata + self.body


def text_context(text: str) -> GenerationContext:
    """NotaGen text as a context: the header, and the tune body from the first line that starts with `[r:`
    or `[V:` (the `encode_generate` rule). A given body is resumed: the `[r:0/` forcing does not fire."""
    lines = text_lines(text)
    start = next((i for i, line in enumerate(lines) if line.startswith(("[r:", "[V:"))), len(lines))
    return GenerationContext("".join(lines[:start]), "".join(lines[start:]))


Finisher = Callable[[str, int, str], tuple[str, ScoreDocument, tuple[str, ...]]]
"""(piece text, where generation started in it, stop reason) -> (abc, document, warnings: lines saying what
of a continued score's kept bars had to change); raises ScoreError."""


def check_generated_bars(text: str, all_body: bool = False) -> None:
    """Refuse generated text that the rest restoration would silently turn into something else: control
    characters (the model can emit ids 0-31), or a tune-body line with no `[V:` voice (it would become a
    bar of rests)."""
    bad = sorted({char for char in text if ord(char) < 32 and char != "\n"})
    if bad:
        raise ScoreError(f"the generated text holds control characters ({', '.join(repr(c) for c in bad[:3])})")
    lines = text_lines(text)
    start = 0 if all_body else next((i for i, line in enumerate(lines) if line.startswith("[r:") or "[V:" in line), None)
    if start is None:
        return
    for number, line in enumerate(lines[start:], 1):
        if "[V:" not in line:
            raise ScoreError(f"generated bar line {number} has no voice ([V:n])")


def check_voices(text: str, voices: frozenset[int]) -> None:
    """Refuse a body that uses a voice its (app-written) header does not have: it would add a part."""
    used = {int(number) for number in re.findall(r"\[V:(\d+)\]", text)}
    if used - voices:
        raise ScoreError(f"the model wrote voice {min(used - voices)}, which the chosen ensemble does not have")


def finish_generated(title: str = "", voices: frozenset[int] | None = None) -> Finisher:
    """Convert a whole generated piece: restore rests, drop `%` lines, `X:1`, abc2xml, parse. With `voices`
    (a header written by the app), the generated body may use only those."""

    def finish(text: str, start: int, reason: str) -> tuple[str, ScoreDocument, tuple[str, ...]]:
        check_generated_bars(text)
        if voices is not None:
            check_voices(text[start:], voices)
        restored = restore_rests(text)
        lines = [line for line in text_lines(restored) if not (line.startswith("%") and not line.startswith("%%"))]
        abc = "X:1\n" + "".join(lines)
        return abc, _document(abc, title), ()

    return finish


MAX_BAR_OVERRUN = 4
"""A converted bar may last at most this many times its metre's bar (misaligned voices stay well below)."""


def _document(abc: str, title: str) -> ScoreDocument:
    document = ScoreDocument(abc_to_musicxml(abc), title)
    if document.n_measures < 1:  # parses the MusicXML with music21 (raises ScoreError when it cannot)
        raise ScoreError("the converted score has no measures")
    check_bar_lengths(document)
    return document


def check_bar_lengths(document: ScoreDocument) -> None:
    """abc2xml sometimes writes a generated piece with notes far longer than their written type (a 4/4
    bar of four quarter notes lasting 96 beats): not notation anyone can read, and verovio crashed on one."""
    grid = document.grid  # already built by `n_measures`: no second walk over a copy of the score
    for p, row in enumerate(grid.cells, 1):
        for column, events in zip(grid.columns, row):
            length = max((event.offset + event.duration for event in events), default=0)
            if column.bar_length and length > MAX_BAR_OVERRUN * column.bar_length:
                raise ScoreError(f"converted bar {column.number} of part {p} lasts {float(length):g} "
                                 f"quarter notes, far more than its metre's {float(column.bar_length):g}")


@dataclass(frozen=True)
class ScoreContinuation:
    """A user's score cut after `keep` bars, as NotaGen context, and how to put the result back together.

    The model reads the rest-reduced text (the training format: a voice that only rests in a bar is left
    out, an all-rest bar disappears) with `[r:i/j]` bar annotations, where j counts the bars still to come
    (`keep + bars` in all). The piece converted for the model's output keeps the document's own
    interleaved lines for the kept bars (only generated bars have their rests restored); the document
    returned then takes the kept measures from the user's MusicXML itself, so ties, slurs, lyrics and
    everything else the trip through ABC would lose stay exactly as they were; only a spanner going on past
    the kept bars is closed at their end, and the finisher's warnings name where.
    """

    context: GenerationContext
    header: tuple[str, ...]
    """The document's header lines (interleaved ABC, before the first bar)."""
    kept_lines: tuple[str, ...]
    """The document's first `keep` interleaved bar lines, unchanged."""
    keep: int
    bars: int
    total_bars: int
    """Bars in the document."""
    musicxml: str
    """The document's own MusicXML, whose first `keep` measures the result keeps."""

    def finisher(self, title: str) -> Finisher:
        header = "".join(self.header)

        def finish(text: str, start: int, reason: str) -> tuple[str, ScoreDocument, tuple[str, ...]]:
            check_generated_bars(text[start:], all_body=True)
            restored = text_lines(restore_rests(header + text[start:]))[len(self.header) :]
            lines = [line for line in self.header if not (line.startswith("%") and not line.startswith("%%"))]
            abc = "X:1\n" + "".join(lines) + "".join(self.kept_lines) + "".join(restored)
            converted = _document(abc, title)
            musicxml, warnings = continued_xml(self.musicxml, converted.musicxml, self.keep)
            return abc, ScoreDocument(musicxml, title), tuple(warnings)

        return finish


def score_continuation(document: ScoreDocument, bars: int, keep: int | None = None, prompt: PromptLike = None) -> ScoreContinuation:
    """Cut `document` after `keep` bars (default: all) to generate `bars` more.

    Raises `ScoreError` when the document cannot go through NotaGen's pipeline or `keep` is out of range.
    """
    cleaned = clean_abc(document.abc)
    interleaved_lines = text_lines(interleave(cleaned))
    header_length = next((i for i, line in enumerate(interleaved_lines) if "[V:" in line), None)
    if header_length is None:
        raise ScoreError("the score has no bars NotaGen can read")
    header, body = interleaved_lines[:header_length], interleaved_lines[header_length:]
    # The reduced text has one line per bar too, all-rest bars as empty lines (which `text_lines` would drop).
    reduced_lines = [line + "\n" for line in reduce_rests(cleaned).split("\n")]
    reduced_lines = reduced_lines[:-1] if reduced_lines[-1] == "\n" else reduced_lines
    reduced_body = reduced_lines[len(reduced_lines) - len(body) :]
    if len(reduced_lines) < len(body) or reduced_lines[: len(reduced_lines) - len(body)] != header:
        raise ScoreError("the rest-reduced text does not line up with the interleaved text")
    keep = len(body) if keep is None else keep
    if not 0 <= keep <= len(body):
        raise ScoreError(f"cannot keep {keep} bars of a score with {len(body)}")
    if bars < 1:
        raise ValueError(f"bars must be >= 1, not {bars}")
    kept = [line for line in reduced_body[:keep] if line.strip()]
    total = len(kept) + bars
    annotated = "".join(f"[r:{i}/{total - 1 - i}]{line}" for i, line in enumerate(kept))
    context = GenerationContext(prompt_text(prompt) + "".join(header), annotated)
    return ScoreContinuation(context, tuple(header), tuple(body[:keep]), keep, bars, len(body), document.musicxml)
