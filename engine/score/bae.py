"""Bar alignment error (BAE): the share of bars whose voices do not last equally long.

NotaGen's paper (Table 2) reports it for generated interleaved ABC: a bar is one line of interleaved
text; it is misaligned when the durations of its voices (abctoolkit's `calculate_bartext_duration`,
in L: units) are not all equal, or when one of them cannot be computed. Voices left out of a
rest-reduced bar are not counted. The ground-truth data scores 0.377 %.
"""
from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from engine.score.notagen_abc import voice_bar_duration

_R_ANNOTATION = re.compile(r"^\[r:[^\]]*\]")
_VOICE_SEGMENT = re.compile(r"\[V:([^\]]+)\](.*?)(?=\[V:|$)")


@dataclass(frozen=True)
class BarAlignment:
    """How many bars were checked and how many of them are misaligned."""

    bars: int
    misaligned: int

    @property
    def rate(self) -> float:
        """Misaligned bars over bars (0.0 for no bars), the paper's BAE as a fraction, not a percentage."""
        return self.misaligned / self.bars if self.bars else 0.0

    def __add__(self, other: BarAlignment) -> BarAlignment:
        return BarAlignment(self.bars + other.bars, self.misaligned + other.misaligned)


def _bar_lines(interleaved: str) -> list[str]:
    """The bar lines of interleaved text: lines with a `[V:` voice, `[r:i/j]` prefix removed."""
    bars = []
    for line in interleaved.split("\n"):
        line = _R_ANNOTATION.sub("", line)
        if "[V:" in line and not line.startswith("%"):
            bars.append(line)
    return bars


def bar_is_aligned(bar_line: str) -> bool:
    """True when every voice of one bar line has a computable duration and all durations are equal."""
    durations = [voice_bar_duration(text) for _, text in _VOICE_SEGMENT.findall(bar_line)]
    return bool(durations) and None not in durations and len(set(durations)) == 1


def misaligned_bars(interleaved: str) -> list[int]:
    """Indices (0-based, among bar lines) of the misaligned bars, e.g. to point at them in the UI."""
    return [i for i, line in enumerate(_bar_lines(interleaved)) if not bar_is_aligned(line)]


def bar_alignment(interleaved: str) -> BarAlignment:
    """BAE of one piece of interleaved (optionally rest-reduced or `[r:]`-annotated) ABC."""
    bars = _bar_lines(interleaved)
    return BarAlignment(bars=len(bars), misaligned=sum(not bar_is_aligned(line) for line in bars))


def bar_alignment_of_set(texts: Iterable[str]) -> BarAlignment:
    """BAE over a set of pieces: bars and misaligned bars summed (pieces weigh by their length)."""
    total = BarAlignment(0, 0)
    for text in texts:
        total = total + bar_alignment(text)
    return total
