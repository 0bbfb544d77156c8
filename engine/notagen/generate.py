"""NotaGen generation: the official inference loop on the KV-cached model path.

* `greedy_continue`: the reference driver, greedy, batch 1; mirrors `inference.py::inference_patch` of the
  official code (fixtures README, section D) up to the point where the context fills `patch_length`
  (there it stops and says so). Checked token for token against the official fixtures.
* `NotagenGenerator`: what the app calls. Sampled (top-k / top-p / temperature, seedable), batched,
  streaming (an event per bar), with bar / time / cancel limits, the official "stream generation" past a
  full context, bar-alignment resampling, continuation of a user's score, and conversion of every
  piece to a `ScoreDocument` (pieces that do not convert are sampled again or reported, never returned).
"""
from __future__ import annotations

import re
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from engine.errors import ModelError, ScoreError, describe, out_of_memory_as_model_error
from engine.notagen.model import NotagenModel, PatchCache, load_checkpoint
from engine.notagen.patchilizer import BOS_ID, EOS_ID, PAD_ID, Patchilizer
from engine.notagen.sampling import (
    DEFAULT_TEMPERATURE,
    DEFAULT_TOP_K,
    DEFAULT_TOP_P,
    Sampler,
    SamplingOptions,
    row_generators,
)
from engine.score.bae import BarAlignment, bar_alignment, bar_is_aligned
from engine.score.document import ScoreDocument
from engine.score.notagen_abc import abc_to_musicxml, clean_abc, interleave, reduce_rests, restore_rests

#: The official loop forces the first tune-body patch to start with these chars (bar 0 of the stream).
BODY_START = "[r:0/"


@dataclass(frozen=True)
class GeneratedPatch:
    """One generation step that added a patch to the context."""

    predicted: tuple[int, ...]
    """The 16 predicted ids (starting with `[r:0/` when forced)."""
    appended: tuple[int, ...]
    """The ids added to the context: `predicted` with every id after the first EOS set to 0."""
    text: str
    """The chars the patch adds to the piece (`decode([predicted])`)."""
    discarded: tuple[int, ...] | None
    """When the body start was forced: the prediction that was thrown away for it."""


@dataclass(frozen=True)
class Continuation:
    """The result of `greedy_continue`."""

    text: str
    """The generated chars (without the prompt)."""
    patches: tuple[GeneratedPatch, ...]
    ended: bool
    """The model predicted the EOS patch: the piece is complete."""
    context_full: bool
    """Stopped because the context reached `patch_length` patches (the official loop would stream on)."""
    context: tuple[int, ...]
    """The final flat context ids (BOS patch, prompt patches, appended patches)."""


def greedy_continue(
    model: NotagenModel,
    patchilizer: Patchilizer,
    prompt_text: str,
    max_patches: int | None = None,
    force_body_start: bool = False,
) -> Continuation:
    """Continue a header-only prompt patch by patch, following the official loop's rules.

    The prompt lines are patchilized as header lines after a BOS patch. The first predicted patch that
    starts with `[r:` is replaced by one predicted from the forced prefix `[r:0/` (`force_body_start`
    forces this on the first step, whatever the model predicts). Generation stops at the EOS patch, after
    `max_patches` generated patches, or when the context is full. Chars are chosen by argmax.
    """
    size = model.config.patch_size
    prompt = [patchilizer.bos_patch] + patchilizer.patchilize_metadata(_lines(prompt_text))
    context = [[ord(char) for char in patch] + [PAD_ID] * (size - len(patch)) for patch in prompt]
    cache = model.encode_patches(torch.tensor([context], device=model.device))
    forced_prefix = torch.tensor([[ord(char) for char in BODY_START]], device=model.device)

    body_started, ended, generated = False, False, []
    while (max_patches is None or len(generated) < max_patches) and cache.num_patches < model.config.patch_length:
        predicted = model.decode_patch(cache.last_hidden)[0].tolist()
        discarded = None
        if not body_started and (force_body_start or patchilizer.decode([predicted]).startswith("[r:")):
            body_started, discarded = True, tuple(predicted)
            predicted = forced_prefix[0].tolist() + model.decode_patch(cache.last_hidden, forced_prefix)[0].tolist()
        if predicted[0] == BOS_ID and predicted[1] == EOS_ID:
            ended = True
            break
        appended = _zero_after_eos(predicted)
        generated.append(GeneratedPatch(tuple(predicted), tuple(appended), patchilizer.decode([predicted]), discarded))
        context.append(appended)
        cache = model.encode_patches(torch.tensor([[appended]], device=model.device), cache)

    return Continuation(
        text="".join(patch.text for patch in generated),
        patches=tuple(generated),
        ended=ended,
        context_full=not ended and cache.num_patches >= model.config.patch_length,
        context=tuple(token for patch in context for token in patch),
    )


def _lines(text: str) -> list[str]:
    """Lines with their newline kept; unlike `str.splitlines`, only `\\n` ends a line (as in ABC files)."""
    return re.findall(r"[^\n]*\n|[^\n]+$", text)


def _zero_after_eos(patch: list[int]) -> list[int]:
    """The official loop pads a predicted patch with 0 after its first EOS before it joins the context."""
    if EOS_ID not in patch:
        return list(patch)
    end = patch.index(EOS_ID) + 1
    return patch[:end] + [PAD_ID] * (len(patch) - end)


# =====================================================================================================
# Sampled, batched, streaming generation (the engine behind `NotagenGenerator`)
# =====================================================================================================
#
# One call generates N pieces ("rows") from one context. Both decoders run with KV caches: the context is
# encoded once (`encode_patches`), then the patch decoder advances one patch per step on preallocated
# key/value buffers (`KVBuffers`, `advance_patch`), and the char decoder runs its 16 cached steps per
# patch (`decode_patch`). Rows whose patch contexts have equal length share one cache ("group") and are
# encoded together; a row leaves its group when it is rolled back (bar resampling) or re-encoded (context
# full) and joins any group whose length it meets again. The char decoder always runs over all rows at once (one call
# per distinct prefix length), since it only needs each row's last patch vector.
#
# The loop follows the official `inference_patch` (fixtures README, section D):
#   * the first predicted patch starting with `[r:` is replaced by one predicted from `[r:0/`
#     (never again once a tune body exists, also when resuming a body given in the context);
#   * the EOS patch (`[1, 2, ...]`) ends a piece; ids after a patch's first EOS are zeroed in the context;
#   * when the context reaches `patch_length` patches the row is re-encoded with `encode_generate` from
#     its header plus the last half of its tune-body lines ("stream generation"), so pieces can be longer
#     than the context. One deliberate difference: the official loop's header there is only the
#     *generated* metadata, losing the period/composer/instrumentation prompt lines; here the prompt and
#     any given header stay, as in the training data's stream cut (`encode_train` always keeps metadata).
# Limits the official loop lacks: bar, time, patch and cancel limits, checked after every patch.

#: Official safety cap on the text of one piece (`len(byte_list) > 102400` fails the piece).
MAX_CHARS = 102400
#: Where a shipped default model will live (`NotagenModel.save_pretrained` layout).
DEFAULT_MODEL_DIR = Path(__file__).resolve().parents[2] / "assets" / "notagen"

# Why a piece stopped.
STOP_END = "end"  # the model wrote the EOS patch: the piece is complete
STOP_BARS = "bars"  # the bar limit was reached
STOP_TIME = "time"  # the call's time limit ran out
STOP_CANCEL = "cancel"  # the cancel event was set
STOP_LENGTH = "length"  # the piece's text passed `max_chars`
STOP_PATCHES = "patches"  # the attempt generated `max_patches` patches
STOP_CONTEXT = "context"  # the context filled and could not be shortened (no complete body line, or one line fills it)


@dataclass(frozen=True)
class Prompt:
    """The official conditioning: period, composer and instrumentation, one `%` line each.

    Empty fields are left out (the official demo always sends all three; the released fine-tuned
    weights only know the combinations in the fixtures' `official_prompts.txt`).
    """

    period: str = ""
    composer: str = ""
    instrumentation: str = ""

    @classmethod
    def parse(cls, text: str) -> Prompt:
        """From `"Period|Composer|Instrumentation"` (the command line's form)."""
        parts = [part.strip() for part in text.split("|")]
        if len(parts) > 3:
            raise ValueError(f"a prompt has at most 3 parts (period|composer|instrumentation), not {len(parts)}")
        return cls(*parts)

    @property
    def text(self) -> str:
        return "".join(f"%{field}\n" for field in (self.period, self.composer, self.instrumentation) if field)


PromptLike = Prompt | str | None


def prompt_text(prompt: PromptLike) -> str:
    """The prompt lines: a `Prompt`, raw text (each line kept, a final newline added), or None (unconditional)."""
    if prompt is None:
        return ""
    if isinstance(prompt, Prompt):
        text = prompt.text
    elif isinstance(prompt, str):
        text = "".join(line + "\n" for line in prompt.split("\n") if line)
    else:
        raise TypeError(f"a prompt is a Prompt, a str or None, not {type(prompt).__name__}")
    if any(ord(char) > 127 for char in text):
        raise ValueError("the prompt must be ASCII (NotaGen reads 128 ids)")
    return text


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

    @property
    def alignment(self) -> BarAlignment:
        total = BarAlignment(0, 0)
        for piece in self.pieces:
            total = total + piece.alignment
        return total


# ----------------------------------------------------------------------------------- contexts
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
    lines = _lines(text)
    start = next((i for i, line in enumerate(lines) if line.startswith(("[r:", "[V:"))), len(lines))
    return GenerationContext("".join(lines[:start]), "".join(lines[start:]))


Finisher = Callable[[str, int, str], tuple[str, ScoreDocument]]
"""(piece text, where generation started in it, stop reason) -> (abc, document); raises ScoreError."""


def check_generated_bars(text: str, all_body: bool = False) -> None:
    """Refuse generated text that the rest restoration would silently turn into something else: control
    characters (the model can emit ids 0-31), or a tune-body line with no `[V:` voice (it would become a
    bar of rests)."""
    bad = sorted({char for char in text if ord(char) < 32 and char != "\n"})
    if bad:
        raise ScoreError(f"the generated text holds control characters ({', '.join(repr(c) for c in bad[:3])})")
    lines = _lines(text)
    start = 0 if all_body else next((i for i, line in enumerate(lines) if line.startswith("[r:") or "[V:" in line), None)
    if start is None:
        return
    for number, line in enumerate(lines[start:], 1):
        if "[V:" not in line:
            raise ScoreError(f"generated bar line {number} has no voice ([V:n])")


def finish_generated(title: str = "") -> Finisher:
    """Convert a whole generated piece: restore rests, drop `%` lines, `X:1`, abc2xml, parse."""

    def finish(text: str, start: int, reason: str) -> tuple[str, ScoreDocument]:
        check_generated_bars(text)
        restored = restore_rests(text)
        lines = [line for line in _lines(restored) if not (line.startswith("%") and not line.startswith("%%"))]
        abc = "X:1\n" + "".join(lines)
        return abc, _document(abc, title)

    return finish


MAX_BAR_OVERRUN = 4
"""A converted bar may last at most this many times its metre's bar (misaligned voices stay well below)."""


def _document(abc: str, title: str) -> ScoreDocument:
    document = ScoreDocument(abc_to_musicxml(abc), title)
    if document.n_measures < 1:  # parses the MusicXML with music21 (raises ScoreError when it cannot)
        raise ScoreError("the converted score has no measures")
    _check_bar_lengths(document)
    return document


def _check_bar_lengths(document: ScoreDocument) -> None:
    """abc2xml sometimes writes a generated piece with notes far longer than their written type (a 4/4
    bar of four quarter notes lasting 96 beats): not notation anyone can read, and verovio crashed on one."""
    grid = document.grid  # already built by `n_measures`: no second walk over a copy of the score
    for p, row in enumerate(grid.cells, 1):
        for column, events in zip(grid.columns, row):
            length = max((event.offset + event.duration for event in events), default=0)
            if column.bar_length and length > MAX_BAR_OVERRUN * column.bar_length:
                raise ScoreError(f"converted bar {column.number} of part {p} lasts {float(length):g} "
                                 f"quarter notes, far more than its metre's {float(column.bar_length):g}")


# ----------------------------------------------------------------------------------- the engine
_NO_BAR_REASONS = {
    STOP_END: "the model ended the piece before writing a bar",
    STOP_TIME: "the time limit ran out before a bar was complete",
    STOP_CANCEL: "cancelled before a bar was complete",
    STOP_LENGTH: "no bar was complete within the character limit",
    STOP_PATCHES: "no bar was complete within the patch limit",
}


@dataclass
class _Snapshot:
    """A row's state at the start of its current bar, to resample the bar. Valid while `epoch` (the
    row's re-encode count) is unchanged: the cache then still holds these `num_patches` positions."""

    epoch: int
    num_patches: int
    hidden: torch.Tensor
    prefix: list[int]
    text_length: int
    body_length: int
    bar_ends: int
    body_started: bool
    line_start: int


class _Row:
    """One piece being generated (one attempt)."""

    def __init__(self, index: int, attempt: int, rng: np.random.Generator, context: GenerationContext, prefix: list[int]):
        self.index = index
        self.attempt = attempt
        self.rng = rng
        self.start = len(context.text)
        self.text = context.text
        self.metadata = context.metadata
        self.body = context.body
        self.body_started = bool(context.body)
        self.prefix = list(prefix)
        self.line_start = len(self.text)
        self.bar_ends: list[int] = []  # text positions just after each accepted generated bar's newline
        self.patches = 0
        self.epoch = 0
        self.snapshot: _Snapshot | None = None
        self.snapshot_pending = self.body_started  # resuming a body: bar 1 starts at the given context
        self.retries_left = 0
        self.appended: list[int] = []
        self.rollback = False
        self.stop: str | None = None

    @property
    def bars(self) -> int:
        return len(self.bar_ends)

    def complete_text(self) -> str:
        end = self.text.rfind("\n") + 1
        return self.text[: max(end, 0)]


class KVBuffers:
    """The patch decoder's keys and values for a group of equally long contexts, preallocated along the
    position axis: [B, heads, capacity, head_dim] per layer, the first `num_patches` positions valid.

    `PatchCache` holds GPT-2's own tuples, which `encode_patches` concatenates into new tensors at every
    step (a full copy of the cache per patch: ~70 MB per row for NotaGen-small at 1000 patches, plus the
    page faults of allocating it). Here a step writes one position in place (`advance_patch`), and
    cutting a row back (bar resampling) only needs a shorter `num_patches`. Capacity grows by doubling
    up to the model's `patch_length`.
    """

    def __init__(self, keys: list[torch.Tensor], values: list[torch.Tensor], num_patches: int, last_hidden: torch.Tensor, limit: int):
        self.keys, self.values = keys, values
        self.num_patches = num_patches
        self.last_hidden = last_hidden
        self.limit = limit

    @property
    def capacity(self) -> int:
        return self.keys[0].shape[2]

    @property
    def batch_size(self) -> int:
        return self.last_hidden.shape[0]

    @classmethod
    def from_cache(cls, cache: PatchCache, limit: int, spare: int = 64) -> KVBuffers:
        capacity = min(limit, cache.num_patches + spare)
        keys, values = [], []
        for key, value in cache.past_key_values:
            keys.append(_buffer_like(key, capacity))
            values.append(_buffer_like(value, capacity))
        return cls(keys, values, cache.num_patches, cache.last_hidden, limit)

    def _copy(self, rows: torch.Tensor | slice, length: int, last_hidden: torch.Tensor, capacity: int | None = None) -> KVBuffers:
        capacity = capacity or self.capacity
        keys = [_buffer_like(key[rows, :, :length], capacity) for key in self.keys]
        values = [_buffer_like(value[rows, :, :length], capacity) for value in self.values]
        return KVBuffers(keys, values, length, last_hidden, self.limit)

    def select(self, rows: list[int]) -> KVBuffers:
        """A copy holding only (or repeating) these rows."""
        index = torch.as_tensor(rows, dtype=torch.long, device=self.last_hidden.device)
        return self._copy(index, self.num_patches, self.last_hidden[index])

    def cut(self, row: int, num_patches: int, last_hidden: torch.Tensor) -> KVBuffers:
        """A copy of one row cut back to its first `num_patches` positions (whose output was `last_hidden`)."""
        return self._copy(slice(row, row + 1), num_patches, last_hidden[None])

    @staticmethod
    def concat(groups: list[KVBuffers]) -> KVBuffers:
        if len(groups) == 1:
            return groups[0]
        capacity = max(group.capacity for group in groups)
        length = groups[0].num_patches
        keys = [_buffer_like(torch.cat([g.keys[i][:, :, :length] for g in groups]), capacity) for i in range(len(groups[0].keys))]
        values = [_buffer_like(torch.cat([g.values[i][:, :, :length] for g in groups]), capacity) for i in range(len(groups[0].keys))]
        return KVBuffers(keys, values, length, torch.cat([g.last_hidden for g in groups]), groups[0].limit)

    def reserve(self, positions: int) -> None:
        """Make room for `positions` more patches (doubling, at most `limit`)."""
        needed = self.num_patches + positions
        if needed > self.limit:
            raise ModelError(f"context of {needed} patches exceeds the model's {self.limit}")
        if needed > self.capacity:
            grown = self._copy(slice(None), self.num_patches, self.last_hidden, min(self.limit, max(needed, 2 * self.capacity)))
            self.keys, self.values = grown.keys, grown.values


def _buffer_like(source: torch.Tensor, capacity: int) -> torch.Tensor:
    """An uninitialised [B, heads, capacity, d] buffer whose first positions hold `source`."""
    batch, heads, length, dim = source.shape
    buffer = source.new_empty((batch, heads, capacity, dim))
    buffer[:, :, :length] = source
    return buffer


def advance_patch(model: NotagenModel, buffers: KVBuffers, patches: torch.Tensor) -> None:
    """Run the patch decoder over one new patch per row ([B, 1, 16] ids), in place.

    The same operations as GPT-2's eager forward with a cache (embedding + position, pre-LN blocks,
    scaled dot-product attention through the layer's own `_attn`, final LayerNorm), but keys and values
    are written into the preallocated buffers instead of concatenated.
    """
    decoder = model.patch_level_decoder
    base = decoder.base
    buffers.reserve(1)
    position = buffers.num_patches
    hidden = decoder.embed(patches) + base.wpe.weight[position]
    hidden = base.drop(hidden)
    for layer, block in enumerate(base.h):
        attention = block.attn
        residual = hidden
        query, key, value = attention.c_attn(block.ln_1(hidden)).split(attention.split_size, dim=2)
        query = attention._split_heads(query, attention.num_heads, attention.head_dim)
        buffers.keys[layer][:, :, position] = attention._split_heads(key, attention.num_heads, attention.head_dim)[:, :, 0]
        buffers.values[layer][:, :, position] = attention._split_heads(value, attention.num_heads, attention.head_dim)[:, :, 0]
        output, _ = attention._attn(
            query, buffers.keys[layer][:, :, : position + 1], buffers.values[layer][:, :, : position + 1]
        )
        output = attention.resid_dropout(attention.c_proj(attention._merge_heads(output, attention.num_heads, attention.head_dim)))
        hidden = output + residual
        hidden = hidden + block.mlp(block.ln_2(hidden))
    buffers.num_patches = position + 1
    buffers.last_hidden = base.ln_f(hidden)[:, -1]


@dataclass
class _Group:
    cache: KVBuffers
    rows: list[_Row]


class _Engine:
    """The sampling loop of one call; `run()` yields `GenerationEvent`s."""

    def __init__(self, model: NotagenModel, context: GenerationContext, finisher: Finisher, options: GenerationOptions) -> None:
        sampling, limits, n = options.sampling, options.limits, options.n
        self.model = model
        self.size = model.config.patch_size
        self.patch_length = model.config.patch_length
        self.patchilizer = Patchilizer(self.size)
        self.context = context
        self.finisher = finisher
        self.n = n
        self.sampler = Sampler(sampling)
        self.limits = limits
        self.rngs = row_generators(options.seed, n)
        self.cancel = options.cancel
        # Resampling a bar only makes sense when sampling is random: greedy would write it again.
        self.bar_retries = options.bar_retries if options.bae_resample and not sampling.greedy else 0
        self.max_attempts = options.max_attempts
        self.forced = [ord(char) for char in BODY_START]
        self.started = time.monotonic()
        self.deadline: float | None = None
        self.events: list[GenerationEvent] = []
        self.attempts_done = [0] * n
        self.resampled_total = [0] * n
        self._restarts: list[int] = []

    # -------------------------------------------------------------- context encoding
    def _encode_context(self, context: GenerationContext) -> tuple[GenerationContext, KVBuffers, list[int]]:
        """Initial cache and ragged prefix; a given body too long for the context keeps its last lines
        (halving as the official stream step does)."""
        if not context.body:
            patches = [self.patchilizer.bos_patch] + self.patchilizer.patchilize_metadata(_lines(context.metadata))
            ids = [[ord(char) for char in patch] + [PAD_ID] * (self.size - len(patch)) for patch in patches]
        else:
            lines = _lines(context.body)
            while True:
                ids = self.patchilizer.encode_generate(context.metadata + "".join(lines), self.patch_length)
                if len(ids) < self.patch_length or len(lines) == 1:
                    break
                lines = lines[len(lines) - len(lines) // 2 :]
            context = GenerationContext(context.metadata, "".join(lines))
        if len(ids) >= self.patch_length:
            raise ModelError(
                f"the context needs {len(ids)} patches but the model reads at most {self.patch_length - 1} before "
                "generating; shorten the header or the kept bars"
            )
        full = [patch for patch in ids if len(patch) == self.size]
        prefix = ids[-1] if len(ids[-1]) < self.size else []
        return context, self._prefill(full), prefix

    def _prefill(self, patches: list[list[int]]) -> KVBuffers:
        cache = self.model.encode_patches(torch.tensor([patches], device=self.model.device))
        return KVBuffers.from_cache(cache, self.patch_length)

    # -------------------------------------------------------------- the loop
    def run(self) -> Iterator[GenerationEvent]:
        with out_of_memory_as_model_error("NotaGen"):
            groups = self.start()
            while groups:
                groups = self.advance(groups)
                yield from self.events
                self.events = []

    def start(self) -> list[_Group]:
        """Encode the context and make the rows (the clock and time limit start here)."""
        self.started = time.monotonic()
        if self.limits.time_limit is not None:
            self.deadline = self.started + self.limits.time_limit
        with torch.inference_mode():
            context, self.start_cache, self.start_prefix = self._encode_context(self.context)
        self.start_context = context
        # Keep the text of the caller's context even where the model's context had to drop bars.
        self.full_context = self.context
        rows = [self._new_row(i, 1) for i in range(self.n)]
        return [_Group(self.start_cache.select([0] * self.n), rows)]

    def advance(self, groups: list[_Group]) -> list[_Group]:
        """One patch for every row (or stop them all); new events go to `self.events`."""
        stop = self._global_stop()
        if stop:
            for group in groups:
                for row in group.rows:
                    row.stop = stop
                    self._finish(row)
            return []
        with torch.inference_mode():
            return self._step(groups)

    def _global_stop(self) -> str | None:
        if self.cancel is not None and self.cancel.is_set():
            return STOP_CANCEL
        if self.deadline is not None and time.monotonic() >= self.deadline:
            return STOP_TIME
        return None

    def _new_row(self, index: int, attempt: int) -> _Row:
        row = _Row(index, attempt, self.rngs[index], self.start_context, self.start_prefix)
        # The output keeps the full given text even if the model's context had to be shortened.
        row.text = self.full_context.text
        row.start = row.line_start = len(row.text)
        row.retries_left = self.bar_retries
        if row.snapshot_pending:
            row.snapshot_pending = False
            row.snapshot = _Snapshot(0, self.start_cache.num_patches, self.start_cache.last_hidden[0], list(self.start_prefix),
                                     len(row.text), len(row.body), 0, True, row.line_start)
        return row

    def _elapsed(self) -> float:
        return time.monotonic() - self.started

    def _step(self, groups: list[_Group]) -> list[_Group]:
        entries = [(group, position, row) for group in groups for position, row in enumerate(group.rows)]
        hidden = torch.cat([group.cache.last_hidden for group in groups])
        predicted: list[list[int]] = [[] for _ in entries]

        by_prefix: dict[int, list[int]] = defaultdict(list)
        for i, (_, _, row) in enumerate(entries):
            by_prefix[len(row.prefix)].append(i)
        for length, indices in by_prefix.items():
            prefix = torch.tensor([entries[i][2].prefix for i in indices], dtype=torch.long, device=hidden.device) if length else None
            chooser = self.sampler.chooser([entries[i][2].rng for i in indices])
            chars = self.model.decode_patch(hidden[indices], prefix, chooser).tolist()
            for i, row_chars in zip(indices, chars):
                predicted[i] = row_chars

        # The official forcing: the first patch that starts a tune body is predicted again from `[r:0/`.
        forced = [i for i, (_, _, row) in enumerate(entries)
                  if not row.body_started and self.patchilizer.decode([predicted[i]]).startswith("[r:")]
        body_starts: set[int] = set()
        if forced:
            prefix = torch.tensor([self.forced] * len(forced), device=hidden.device)
            chooser = self.sampler.chooser([entries[i][2].rng for i in forced])
            chars = self.model.decode_patch(hidden[forced], prefix, chooser).tolist()
            for i, row_chars in zip(forced, chars):
                predicted[i] = self.forced + row_chars
                body_starts.add(i)

        for i, (group, _, row) in enumerate(entries):
            if i in body_starts:
                row.snapshot = _Snapshot(row.epoch, group.cache.num_patches, hidden[i].clone(), [],
                                         len(row.text), len(row.body), row.bars, False, len(row.text))
                row.body_started = True
                row.line_start = len(row.text)
            self._take(row, predicted[i])

        return self._regroup(groups)

    def _take(self, row: _Row, predicted: list[int]) -> None:
        """Apply one predicted patch to a row (text, limits, bar checks)."""
        row.patches += 1
        if len(predicted) >= 2 and predicted[0] == BOS_ID and predicted[1] == EOS_ID:
            row.stop = STOP_END
            self._finish(row)
            return
        chars = self.patchilizer.decode([predicted])
        row.appended = row.prefix + _zero_after_eos(predicted)
        row.prefix = []
        row.text += chars
        if row.body_started:
            row.body += chars
        else:
            row.metadata += chars

        if row.body_started and "\n" in chars:
            ends, position = [], row.line_start
            while (newline := row.text.find("\n", position)) != -1:
                ends.append(newline + 1)
                position = newline + 1
            lines = [row.text[start : end - 1] for start, end in zip([row.line_start] + ends[:-1], ends)]
            if row.retries_left > 0 and row.snapshot is not None and not all(map(bar_is_aligned, lines)):
                row.retries_left -= 1
                self.resampled_total[row.index] += 1
                row.rollback = True
                return
            row.retries_left = self.bar_retries
            row.line_start = position
            row.snapshot_pending = True
            for end in ends:  # one event per bar, also when a patch completes two lines
                row.bar_ends.append(end)
                self.events.append(GenerationEvent("bar", row.index, row.text[:end], row.bars, self._elapsed()))
                if self.limits.max_bars is not None and row.bars >= self.limits.max_bars:
                    row.text = row.text[:end]
                    row.stop = STOP_BARS
                    self._finish(row)
                    return
        if len(row.text) - row.start > self.limits.max_chars:
            row.stop = STOP_LENGTH
        elif self.limits.max_patches is not None and row.patches >= self.limits.max_patches:
            row.stop = STOP_PATCHES
        if row.stop:
            self._finish(row)

    def _regroup(self, groups: list[_Group]) -> list[_Group]:
        new_groups: list[_Group] = []
        for group in groups:
            stay, positions = [], []
            for position, row in enumerate(group.rows):
                if row.stop:
                    continue
                if row.rollback:
                    new_groups.append(_Group(self._roll_back(row, group.cache, position), [row]))
                elif group.cache.num_patches + 1 >= self.patch_length:
                    cache = self._reencode(row)
                    if cache is not None:
                        new_groups.append(_Group(cache, [row]))
                else:
                    stay.append(row)
                    positions.append(position)
            if stay:
                cache = group.cache if len(stay) == len(group.rows) else group.cache.select(positions)
                patches = torch.tensor([[row.appended] for row in stay], device=cache.last_hidden.device)
                advance_patch(self.model, cache, patches)
                for j, row in enumerate(stay):
                    if row.snapshot_pending:
                        self._take_snapshot(row, cache, j)
                new_groups.append(_Group(cache, stay))
        for index in self._restarts:
            row = self._new_row(index, self.attempts_done[index] + 1)
            new_groups.append(_Group(self.start_cache.select([0]), [row]))
        self._restarts = []

        merged: dict[int, list[_Group]] = defaultdict(list)
        for group in new_groups:
            merged[group.cache.num_patches].append(group)
        return [
            _Group(KVBuffers.concat([g.cache for g in same]), [row for g in same for row in g.rows])
            for _, same in sorted(merged.items())
        ]

    def _take_snapshot(self, row: _Row, cache: KVBuffers, position: int) -> None:
        row.snapshot_pending = False
        row.snapshot = _Snapshot(row.epoch, cache.num_patches, cache.last_hidden[position].clone(), list(row.prefix),
                                 len(row.text), len(row.body), row.bars, True, row.line_start)

    def _roll_back(self, row: _Row, cache: KVBuffers, position: int) -> KVBuffers:
        snapshot = row.snapshot
        assert snapshot is not None and snapshot.epoch == row.epoch
        row.rollback = False
        row.text = row.text[: snapshot.text_length]
        row.body = row.body[: snapshot.body_length]
        del row.bar_ends[snapshot.bar_ends :]
        row.line_start = snapshot.line_start
        row.prefix = list(snapshot.prefix)
        row.body_started = snapshot.body_started
        return cache.cut(position, snapshot.num_patches, snapshot.hidden)

    def _reencode(self, row: _Row) -> KVBuffers | None:
        """The official stream step: header plus the last half of the body lines, `encode_generate`."""
        if "\n" not in row.body:
            row.stop = STOP_CONTEXT
            self._finish(row, "the context filled before a bar was complete")
            return None
        lines = _lines(row.body)
        keep = len(lines) // 2
        kept = lines[-keep:] if keep else lines
        ids = self.patchilizer.encode_generate(row.metadata + "".join(kept), self.patch_length)
        if len(ids) >= self.patch_length:
            row.stop = STOP_CONTEXT
            self._finish(row, "one bar line is too long for the model's context")
            return None
        row.body = "".join(kept)
        row.epoch += 1
        full = [patch for patch in ids if len(patch) == self.size]
        row.prefix = ids[-1] if len(ids[-1]) < self.size else []
        cache = self._prefill(full)
        if row.snapshot_pending:
            self._take_snapshot(row, cache, 0)
        else:
            row.snapshot = None  # the current bar started before the re-encode: it cannot be resampled
        return cache

    # -------------------------------------------------------------- finishing
    def _finish(self, row: _Row, failure: str | None = None) -> None:
        """Convert a stopped row; emit "done", or "failed" and maybe schedule another attempt."""
        self.attempts_done[row.index] = row.attempt
        text = row.complete_text()
        elapsed = self._elapsed()
        if failure is None:
            if row.bars == 0:
                failure = _NO_BAR_REASONS.get(row.stop, f"no bar was generated (stopped: {row.stop})")
            else:
                try:
                    abc, document = self.finisher(text, row.start, row.stop)
                except ScoreError as exc:
                    failure = f"the generated text does not convert: {exc}"
                else:
                    generated = text[row.start :]
                    piece = GeneratedPiece(
                        index=row.index, text=text, abc=abc, document=document, bars=row.bars, stop_reason=row.stop,
                        alignment=bar_alignment(generated), attempts=row.attempt,
                        resampled_bars=self.resampled_total[row.index], seconds=elapsed,
                    )
                    self.events.append(GenerationEvent("done", row.index, text, row.bars, elapsed, piece=piece, attempt=row.attempt, stop=row.stop))
                    return
        retry = row.attempt < self.max_attempts and row.stop not in (STOP_TIME, STOP_CANCEL) and self._global_stop() is None
        if retry:
            self._restarts.append(row.index)
        self.events.append(GenerationEvent(
            "failed", row.index, text, row.bars, elapsed, reason=failure, will_retry=retry, attempt=row.attempt, stop=row.stop
        ))


# ----------------------------------------------------------------------------------- continuation
@dataclass(frozen=True)
class ScoreContinuation:
    """A user's score cut after `keep` bars, as NotaGen context, and how to put the result back together.

    The model reads the rest-reduced text (the training format: a voice that only rests in a bar is left
    out, an all-rest bar disappears) with `[r:i/j]` bar annotations, where j counts the bars still to come
    (`keep + bars` in all). The output keeps the document's own interleaved lines for the kept bars, so
    they stay exactly as they were; only generated bars have their rests restored.
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

    def finisher(self, title: str) -> Finisher:
        header = "".join(self.header)

        def finish(text: str, start: int, reason: str) -> tuple[str, ScoreDocument]:
            check_generated_bars(text[start:], all_body=True)
            restored = _lines(restore_rests(header + text[start:]))[len(self.header) :]
            lines = [line for line in self.header if not (line.startswith("%") and not line.startswith("%%"))]
            abc = "X:1\n" + "".join(lines) + "".join(self.kept_lines) + "".join(restored)
            return abc, _document(abc, title)

        return finish


def score_continuation(document: ScoreDocument, bars: int, keep: int | None = None, prompt: PromptLike = None) -> ScoreContinuation:
    """Cut `document` after `keep` bars (default: all) to generate `bars` more.

    Raises `ScoreError` when the document cannot go through NotaGen's pipeline or `keep` is out of range.
    """
    cleaned = clean_abc(document.abc)
    interleaved_lines = _lines(interleave(cleaned))
    header_length = next((i for i, line in enumerate(interleaved_lines) if "[V:" in line), None)
    if header_length is None:
        raise ScoreError("the score has no bars NotaGen can read")
    header, body = interleaved_lines[:header_length], interleaved_lines[header_length:]
    # The reduced text has one line per bar too, all-rest bars as empty lines (which `_lines` would drop).
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
    return ScoreContinuation(context, tuple(header), tuple(body[:keep]), keep, bars, len(body))


# ----------------------------------------------------------------------------------- the API
def resolve_checkpoint(checkpoint: str | Path | None) -> Path:
    """The model to load: `checkpoint`, else the shipped default (`assets/notagen/` with a config.json)."""
    if checkpoint is None:
        if (DEFAULT_MODEL_DIR / "config.json").is_file():
            return DEFAULT_MODEL_DIR
        raise ModelError(
            "no model: give a checkpoint (an official NotaGen .pth or a saved model folder); "
            f"there is no default model in {DEFAULT_MODEL_DIR}"
        )
    path = Path(checkpoint)
    if not path.exists():
        raise ModelError(f"checkpoint not found: {path}")
    return path


class NotagenGenerator:
    """A loaded NotaGen model and the verbs the app uses: generate, stream, continue, regenerate.

    Every method takes the sampling settings (`top_k`, `top_p`, `temperature`; `top_k=1` is greedy),
    `seed` (None: fresh randomness; an int reproduces the pieces of the same call), the limits
    (`max_bars`, `time_limit` seconds for the call, `max_chars`, `max_patches`), `cancel` (a
    `threading.Event`), `bae_resample` (sample a bar whose voices do not add up again, up to
    `bar_retries` times, then accept it) and `max_attempts` (a piece that does not convert is sampled
    again from the start up to this many times in all, then reported as a failure).

    Rows of a batch (`n > 1`) are decoded together; row i uses its own random stream, but its logits can
    differ from a batch-1 run in the last float bits, so the same seed gives the same pieces only for the
    same `n`.
    """

    def __init__(self, model: NotagenModel, name: str = "") -> None:
        self.model = model.eval()
        self.name = name

    @classmethod
    def load(cls, checkpoint: str | Path | None = None, num_heads: int | None = None) -> NotagenGenerator:
        """From an official `.pth`, a `save_pretrained` folder, or (None) the default `assets/notagen/`."""
        path = resolve_checkpoint(checkpoint)
        try:
            model, _ = load_checkpoint(path, num_heads=num_heads)
        except ModelError:
            raise
        except Exception as exc:  # torch.load / load_state_dict fail with many exception types
            raise ModelError(f"cannot load the NotaGen checkpoint {path}: {describe(exc)}") from exc
        return cls(model, name=path.name)

    # -------------------------------------------------------------- fresh pieces
    def stream(self, prompt: PromptLike = None, *, title: str = "", **options) -> Iterator[GenerationEvent]:
        """Generate pieces from a prompt (None: unconditional), yielding an event per accepted bar and per
        finished or failed piece. `options` are the fields of `GenerationOptions` (n, max_bars, seed,
        top_k, top_p, temperature, time_limit, cancel, bae_resample, ...)."""
        context = text_context(prompt_text(prompt))
        return self._engine(context, finish_generated(title or _title(prompt)), GenerationOptions(**options)).run()

    def generate(self, prompt: PromptLike = None, n: int = 1, *, on_event: EventCallback | None = None, **options) -> GenerationResult:
        """`stream` run to the end; `on_event` sees every event (progress)."""
        return _collect(self.stream(prompt, n=n, **options), on_event)

    # -------------------------------------------------------------- continuation
    def stream_continuation(
        self, document: ScoreDocument, bars: int, keep: int | None = None, prompt: PromptLike = None, **options
    ) -> Iterator[GenerationEvent]:
        """Keep the first `keep` bars of `document` (default: all) and generate `bars` more (the bar limit)."""
        continuation = score_continuation(document, bars, keep, prompt)
        options.setdefault("max_bars", bars)
        return self._engine(continuation.context, continuation.finisher(document.title), GenerationOptions(**options)).run()

    def continue_document(
        self, document: ScoreDocument, bars: int, keep: int | None = None, prompt: PromptLike = None,
        *, on_event: EventCallback | None = None, **options,
    ) -> GenerationResult:
        """`bars` new bars after the first `keep` bars (default: all) of `document`; each piece is the kept
        bars, unchanged, followed by the new ones (fewer if the model ends the piece earlier)."""
        return _collect(self.stream_continuation(document, bars, keep, prompt, **options), on_event)

    def regenerate_from(
        self, document: ScoreDocument, bar_index: int, bars: int | None = None, prompt: PromptLike = None,
        *, on_event: EventCallback | None = None, **options,
    ) -> GenerationResult:
        """Keep bars [0, bar_index) and generate the rest again: as many bars as the document has from
        `bar_index` on, unless `bars` says otherwise."""
        if bars is None:
            bars = document.n_measures - bar_index
            if bars < 1:
                raise ScoreError(f"the score has {document.n_measures} bars: nothing to regenerate from bar {bar_index}")
        return self.continue_document(document, bars, keep=bar_index, prompt=prompt, on_event=on_event, **options)

    # -------------------------------------------------------------- plumbing
    def _engine(self, context: GenerationContext, finisher: Finisher, options: GenerationOptions) -> _Engine:
        return _Engine(self.model, context, finisher, options)


EventCallback = Callable[[GenerationEvent], None]


def _collect(events: Iterator[GenerationEvent], on_event: Callable[[GenerationEvent], None] | None) -> GenerationResult:
    started = time.monotonic()
    pieces: dict[int, GeneratedPiece] = {}
    failures: dict[int, PieceFailure] = {}
    for event in events:
        if on_event is not None:
            on_event(event)
        if event.kind == "done":
            pieces[event.index] = event.piece
        elif event.kind == "failed" and not event.will_retry:
            failures[event.index] = PieceFailure(event.index, event.attempt, event.reason)
    return GenerationResult(
        pieces=tuple(pieces[i] for i in sorted(pieces)),
        failures=tuple(failures[i] for i in sorted(failures)),
        seconds=time.monotonic() - started,
    )


def _title(prompt: PromptLike) -> str:
    if isinstance(prompt, Prompt):
        return " - ".join(part for part in (prompt.composer, prompt.period, prompt.instrumentation) if part) or "NotaGen"
    return "NotaGen"
