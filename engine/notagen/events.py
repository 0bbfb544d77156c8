"""What a generation call reports: an event per accepted bar and per finished or failed piece, and the
collected result."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from engine.notagen.options import STOP_END
from engine.score.bae import BarAlignment
from engine.score.document import ScoreDocument


@dataclass(frozen=True)
class GeneratedPiece:
    """One finished piece that converted to a score."""

    index: int
    text: str
    """NotaGen text: prompt lines, header and `[r:i/j]`-annotated, rest-reduced bar lines (complete lines)."""
    abc: str
    """Interleaved ABC with rests restored, `X:1` first and `%` lines dropped (the official output)."""
    document: ScoreDocument
    bars: int
    """Bars generated (for a continuation: new bars, not the kept ones)."""
    stop_reason: str
    alignment: BarAlignment
    """Bar alignment of the generated bars."""
    attempts: int
    """1 unless earlier attempts failed to convert and were resampled."""
    resampled_bars: int
    """Bars thrown away and sampled again because their voices did not add up."""
    seconds: float
    warnings: tuple[str, ...] = ()
    """For a continuation: lines naming the kept measures changed to close a spanner cut at their end."""

    @property
    def ended(self) -> bool:
        """The model ended the piece itself (EOS patch)."""
        return self.stop_reason == STOP_END


@dataclass(frozen=True)
class PieceFailure:
    """A piece that did not convert (or had no bar), after all its attempts."""

    index: int
    attempts: int
    reason: str


@dataclass(frozen=True)
class GenerationEvent:
    """What `stream` yields: a bar was added, or a piece finished or failed.

    `kind` is "bar" (a generated bar was accepted), "done" (`piece` holds the result), "failed" (this
    attempt did not convert: `reason`; `will_retry` says whether it is being sampled again).
    """

    kind: str
    index: int
    text: str
    """The piece so far as NotaGen text (complete lines only)."""
    bars: int
    """Generated bars so far."""
    elapsed: float
    """Seconds since the call started."""
    piece: GeneratedPiece | None = None
    reason: str | None = None
    will_retry: bool = False
    attempt: int = 1
    stop: str | None = None
    """With "done"/"failed": why the piece stopped (STOP_END, STOP_BARS, STOP_TIME, ...)."""


@dataclass(frozen=True)
class GenerationResult:
    pieces: tuple[GeneratedPiece, ...]
    failures: tuple[PieceFailure, ...]
    seconds: float
    warnings: tuple[str, ...] = ()
    """The pieces' warnings, each line once (`GeneratedPiece.warnings`)."""

    @property
    def alignment(self) -> BarAlignment:
        total = BarAlignment(0, 0)
        for piece in self.pieces:
            total = total + piece.alignment
        return total


EventCallback = Callable[[GenerationEvent], None]
