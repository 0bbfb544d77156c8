"""What a generation call can set: sampling defaults and options, limits, and why a piece stopped.

Torch-free, so the command line and the web UI can share these defaults without loading the model code.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass

#: The released NotaGen demo's settings.
DEFAULT_TOP_K = 9
DEFAULT_TOP_P = 0.9
DEFAULT_TEMPERATURE = 1.2
#: Bars per new piece offered by the command line and the app.
DEFAULT_MAX_BARS = 32

#: Official safety cap on the text of one piece (`len(byte_list) > 102400` fails the piece).
MAX_CHARS = 102400

# Why a piece stopped.
STOP_END = "end"  # the model wrote the EOS patch: the piece is complete
STOP_BARS = "bars"  # the bar limit was reached
STOP_TIME = "time"  # the call's time limit ran out
STOP_CANCEL = "cancel"  # the cancel event was set
STOP_LENGTH = "length"  # the piece's text passed `max_chars`
STOP_PATCHES = "patches"  # the attempt generated `max_patches` patches
STOP_CONTEXT = "context"  # the context filled and could not be shortened (no complete body line, or one line fills it)
STOP_DEAD_END = "dead end"  # bar-exact decoding found no allowed char, again after resampling the bar


@dataclass(frozen=True)
class SamplingOptions:
    """How each char is chosen. `top_k=0` and `top_p=1` switch those filters off; `top_k=1` (or
    `temperature=0`) is greedy decoding."""

    top_k: int = DEFAULT_TOP_K
    top_p: float = DEFAULT_TOP_P
    temperature: float = DEFAULT_TEMPERATURE

    def __post_init__(self) -> None:
        if int(self.top_k) != self.top_k or self.top_k < 0:
            raise ValueError(f"top_k must be a whole number >= 0 (0 = off), not {self.top_k}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], not {self.top_p}")
        if not self.temperature >= 0.0 or self.temperature == float("inf"):
            raise ValueError(f"temperature must be a finite number >= 0, not {self.temperature}")

    @property
    def greedy(self) -> bool:
        return self.top_k == 1 or self.temperature == 0.0


@dataclass(frozen=True)
class GenerationLimits:
    """When a piece stops besides the EOS patch. Every limit is checked after each patch."""

    max_bars: int | None = None
    """Generated bars (tune-body lines) per piece."""
    time_limit: float | None = None
    """Seconds for the whole call (all pieces); pieces stop with what they have (complete bars)."""
    max_chars: int = MAX_CHARS
    """Generated characters per piece (the official cap)."""
    max_patches: int | None = None
    """Generated patches per attempt (a safety net and for benchmarks)."""

    def __post_init__(self) -> None:
        for name in ("max_bars", "max_patches"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1 or None, not {value}")
        if self.time_limit is not None and not self.time_limit > 0:
            raise ValueError(f"time_limit must be > 0 seconds or None, not {self.time_limit}")
        if self.max_chars < 1:
            raise ValueError(f"max_chars must be >= 1, not {self.max_chars}")


@dataclass(frozen=True)
class GenerationOptions:
    """Everything a generation call can set besides its prompt or document."""

    n: int = 1
    """Pieces generated together (a batch from one context); each finishes on its own."""
    seed: int | None = None
    """None: fresh randomness. An int reproduces the pieces of a call with the same settings and `n`."""
    top_k: int = DEFAULT_TOP_K
    top_p: float = DEFAULT_TOP_P
    temperature: float = DEFAULT_TEMPERATURE
    max_bars: int | None = None
    time_limit: float | None = None
    max_chars: int = MAX_CHARS
    max_patches: int | None = None
    cancel: threading.Event | None = None
    """Set it (from any thread) to stop: every piece ends with its complete bars."""
    bae_resample: bool = True
    """Sample a bar whose voices do not add up (bar alignment) again, up to `bar_retries` times; then keep it.
    Off for greedy decoding, which would write the same bar again."""
    bar_retries: int = 3
    constrain: bool = True
    """Bar-exact decoding (`engine.notagen.constrained`): every voice of a bar fills its metre (a first or
    last bar may be shorter, with all its voices equal) and the text stays readable. Off: the model's
    own choices, as the official code samples them."""
    max_attempts: int = 3
    """A piece that does not convert to a score is sampled again from the start, up to this many attempts in
    all (not after a time limit or cancel); then it is reported in `GenerationResult.failures`."""

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError(f"n must be >= 1, not {self.n}")
        if self.max_attempts < 1 or self.bar_retries < 0:
            raise ValueError("max_attempts must be >= 1 and bar_retries >= 0")

    @property
    def sampling(self) -> SamplingOptions:
        return SamplingOptions(self.top_k, self.top_p, self.temperature)

    @property
    def limits(self) -> GenerationLimits:
        return GenerationLimits(self.max_bars, self.time_limit, self.max_chars, self.max_patches)
