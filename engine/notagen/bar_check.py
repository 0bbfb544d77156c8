"""Check `BarReader`'s bar lengths against music21's on real music: the music21 corpus through the project's
MusicXML -> interleaved ABC pipeline (xml2abc, cleaning, interleaving; as `ScoreDocument.interleaved_abc`).

    python -m engine.notagen.bar_check [--limit N] [--seconds S] [--match SUBSTRING] [--seed N] [--mask]

The reference is music21's reading of the MusicXML that xml2abc converts (music21's export can re-bar a
score it finds inconsistent, so the score in memory is not compared). Interleaved body line i is compared
with measure i of every music21 part: each voice's bar must last one
of the durations music21 gives that measure in its parts (the parts agree on nearly every measure; the
voice -> part map is not recoverable from the ABC for multi-staff parts, so a set is compared).

With `--mask`, each piece is also fed as the patchilizer cuts it (with EOS) through `BarConstraint`: every
char of a valid bar line must be allowed; refusals on bar lines that break the rule (a voice longer than
the metre, voices of unequal length) are counted apart, as expected.
"""
from __future__ import annotations

import argparse
import random
import sys
import time
import warnings
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction

from engine.notagen.bar_constraint import BarConstraint
from engine.notagen.bar_reader import AbcRefused, BarReader, VoiceBar
from engine.notagen.patchilizer import Patchilizer
from engine.score.bae import bar_is_aligned


@dataclass
class CheckResult:
    """Totals of a run; `mismatches` keeps (piece, line, voice, reader length, music21 lengths, bar text)."""

    pieces: int = 0
    bars: int = 0
    mask_steps: int = 0
    mask_refused_invalid: int = 0
    mask_refused: list[tuple[str, int, str, str]] = field(default_factory=list)
    skipped: Counter = field(default_factory=Counter)
    mismatches: list[tuple[str, int, str, Fraction, tuple[Fraction, ...], str]] = field(default_factory=list)

    def summary(self) -> str:
        lines = [
            f"pieces checked: {self.pieces}, voice bars checked: {self.bars}, mismatches: {len(self.mismatches)}"
        ]
        if self.mask_steps:
            lines.append(
                f"mask: {self.mask_steps} chars checked, {len(self.mask_refused)} refused on valid bar lines,"
                f" {self.mask_refused_invalid} bar lines refused that break the bar rule"
            )
        lines += [f"skipped ({reason}): {n}" for reason, n in self.skipped.most_common()]
        for name, line, voice, got, expected, text in self.mismatches[:20]:
            lines.append(f"  {name} line {line} V:{voice}: reader {got}, music21 {list(map(str, expected))}: {text[:160]}")
        for name, line, char, context in self.mask_refused[:20]:
            lines.append(f"  mask refuses {char!r} in {name} line {line}: ...{context}")
        return "\n".join(lines)


def measure_lengths(score) -> list[set[Fraction]]:
    """Per measure index, the lengths (whole notes) music21 gives that measure in the score's parts."""
    per_measure: list[set[Fraction]] = []
    for part in score.parts:
        for index, measure in enumerate(part.getElementsByClass("Measure")):
            if index == len(per_measure):
                per_measure.append(set())
            per_measure[index].add(Fraction(measure.duration.quarterLength) / 4)
    return per_measure



def interleaved_text(musicxml: bytes) -> str:
    """The project's interleaved ABC of MusicXML (xml2abc -> clean -> interleave)."""
    from engine.score.notagen_abc import clean_abc, interleave, xml_to_abc

    return interleave(clean_abc(xml_to_abc(musicxml)))


def read_bars(text: str) -> BarReader:
    reader = BarReader(record=True)
    reader.feed_text(text if text.endswith("\n") else text + "\n")
    return reader


def check_score(name: str, score, result: CheckResult, mask: bool = False) -> None:
    """Compare one score's bars; conversion failures and bar-count differences are counted as skipped."""
    from music21 import converter
    from music21.musicxml.m21ToXml import GeneralObjectExporter

    from engine.errors import ScoreError

    try:
        musicxml = GeneralObjectExporter(score).parse()
    except Exception:  # noqa: BLE001 - music21 cannot export some of its own corpus
        result.skipped["music21 cannot export it"] += 1
        return
    try:
        text = interleaved_text(musicxml)
    except ScoreError:
        result.skipped["the pipeline rejects it"] += 1
        return
    expected = measure_lengths(converter.parse(musicxml, format="musicxml"))
    body = [line for line in text.splitlines() if line.startswith("[")]
    if len(body) != len(expected):
        result.skipped["bar count differs from music21's measures"] += 1
        return
    try:
        reader = read_bars(text)
    except AbcRefused as exc:
        result.mismatches.append((name, reader_line(text, exc), "?", Fraction(-1), (), f"refused: {exc}"))
        return
    result.pieces += 1
    for bar in reader.bars:
        result.bars += 1
        if bar.length not in expected[bar.line]:
            result.mismatches.append((name, bar.line, bar.voice, bar.length, tuple(sorted(expected[bar.line])), body[bar.line]))
    if mask:
        check_mask(name, text, reader.bars, result)


def full_inner_lines(text: str) -> tuple[int, int]:
    """(inner bar lines, those whose every voice lasts its metre) of interleaved text: the bar lines other than
    the first and the last (a pickup and a short ending may be shorter). A line the reader does not reach
    (it refuses the text before it) counts as not full."""
    lines = [line for line in text.splitlines() if line.startswith("[")]
    reader = BarReader(record=True)
    try:
        reader.feed_text(text if text.endswith("\n") else text + "\n")
    except AbcRefused:
        pass
    by_line: dict[int, list[VoiceBar]] = {}
    for bar in reader.bars:
        by_line.setdefault(bar.line, []).append(bar)
    full = sum(1 for line in range(1, len(lines) - 1)
               if by_line.get(line) and all(bar.metre is not None and bar.length == bar.metre for bar in by_line[line]))
    return max(len(lines) - 2, 0), full


def valid_line(bars: list[VoiceBar]) -> bool:
    """The bar rule: the first voice at most its metre, every other voice as long as the first. (The mask
    also keeps to what the BAE's bar durations can read: `check_mask` counts only lines they read.)"""
    first = bars[0]
    return (first.metre is None or first.length <= first.metre) and all(bar.length == first.length for bar in bars)


def check_mask(name: str, text: str, bars: list[VoiceBar], result: CheckResult) -> None:
    """Feed the patchilized piece through the constraint; see the module docstring."""
    patchilizer = Patchilizer()
    header, body = patchilizer.stream_lines(text)
    stream = "".join(patchilizer.patchilize_metadata(header) + patchilizer.patchilize_tunebody(body))
    by_line: dict[int, list[VoiceBar]] = {}
    for bar in bars:
        by_line.setdefault(bar.line, []).append(bar)
    reader, constraint, skip_line = BarReader(), BarConstraint("anywhere"), None
    for i, char in enumerate(stream):
        if skip_line != reader.body_line:
            result.mask_steps += 1
            if ord(char) not in constraint.allowed_ids(reader):
                skip_line = reader.body_line
                if valid_line(by_line.get(reader.body_line, bars[:1])) and bar_is_aligned(body[reader.body_line]):
                    result.mask_refused.append((name, reader.body_line, char, stream[max(0, i - 80) : i + 1]))
                else:
                    result.mask_refused_invalid += 1
        try:
            reader.feed(char)
        except AbcRefused:  # the text read whole, but not split into patches (an EOS the reader refuses)
            result.skipped["mask: the reader refuses the patch split"] += 1
            return


def reader_line(text: str, exc: AbcRefused) -> int:
    return int(str(exc).rsplit(" ", 1)[-1].rstrip(")"))


def corpus_scores(match: str = "", seed: int | None = None) -> Iterator[tuple[str, object]]:
    """(name, score) for every score of the music21 corpus (each tune of an ABC collection), in the
    corpus' order or shuffled by `seed` (a time-limited run then samples every collection)."""
    from music21 import corpus, stream

    paths = list(corpus.getPaths())
    if seed is not None:
        random.Random(seed).shuffle(paths)
    for path in paths:
        if match not in str(path) or str(path).endswith(".rntxt"):
            continue
        try:
            parsed = corpus.parse(path)
        except Exception:  # noqa: BLE001 - a corpus file music21 itself cannot read is not ours to judge
            continue
        scores = parsed.scores if isinstance(parsed, stream.Opus) else [parsed]
        for i, score in enumerate(scores):
            yield f"{path.parent.name}/{path.name}#{i}", score


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--limit", type=int, default=0, help="stop after this many pieces (0: all)")
    parser.add_argument("--seconds", type=float, default=0, help="stop after this many seconds (0: no limit)")
    parser.add_argument("--match", default="", help="only corpus paths containing this text")
    parser.add_argument("--seed", type=int, default=None, help="shuffle the corpus files with this seed")
    parser.add_argument("--mask", action="store_true", help="also check that the constraint allows the real bars")
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")  # music21's notes on odd corpus files are not this check's subject
    result, start = CheckResult(), time.monotonic()
    for name, score in corpus_scores(args.match, args.seed):
        check_score(name, score, result, args.mask)
        if (args.limit and result.pieces >= args.limit) or (args.seconds and time.monotonic() - start > args.seconds):
            break
    print(result.summary())
    print(f"{time.monotonic() - start:.0f} s")
    return 1 if result.mismatches else 0


if __name__ == "__main__":
    sys.exit(main())
