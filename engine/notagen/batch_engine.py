"""Sampled, batched, streaming generation: the decoding loop behind `NotagenGenerator`.

One call generates N pieces ("rows") from one context. Both decoders run with KV caches: the context is
encoded once (`encode_patches`), then the patch decoder advances one patch per step on preallocated
key/value buffers (`KVBuffers`, `advance_patch`), and the char decoder runs its 16 cached steps per
patch (`decode_patch`). Rows whose patch contexts have equal length share one cache ("group") and are
encoded together; a row leaves its group when it is rolled back (bar resampling) or re-encoded (context
full) and joins any group whose length it meets again. The char decoder always runs over all rows at once (one call
per distinct prefix length), since it only needs each row's last patch vector.

The loop follows the official `inference_patch` (fixtures README, section D):
  * the first predicted patch starting with `[r:` is replaced by one predicted from `[r:0/`
    (never again once a tune body exists, also when resuming a body given in the context);
  * the EOS patch (`[1, 2, ...]`) ends a piece; ids after a patch's first EOS are zeroed in the context;
  * when the context reaches `patch_length` patches the row is re-encoded with `encode_generate` from
    its header plus the last half of its tune-body lines ("stream generation"), so pieces can be longer
    than the context. One deliberate difference: the official loop's header there is only the
    *generated* metadata, losing the period/composer/instrumentation prompt lines; here the prompt and
    any given header stay, as in the training data's stream cut (`encode_train` always keeps metadata).
Limits the official loop lacks: bar, time, patch and cancel limits, checked after every patch. A bar whose
voices do not add up is rolled back to a snapshot taken at its start and sampled again; a piece that does
not convert is sampled again from the start.
"""
from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from engine.errors import ModelError, ScoreError, out_of_memory_as_model_error
from engine.notagen.bar_constraint import BarConstraint
from engine.notagen.bar_reader import BarReader
from engine.notagen.constrained import ConstrainedChooser, reader_for
from engine.notagen.events import GeneratedPiece, GenerationEvent
from engine.notagen.finish import Finisher, GenerationContext, text_lines
from engine.notagen.kv_buffers import KVBuffers, advance_patch
from engine.notagen.model import NotagenModel
from engine.notagen.options import (
    STOP_BARS,
    STOP_CANCEL,
    STOP_CONTEXT,
    STOP_DEAD_END,
    STOP_END,
    STOP_LENGTH,
    STOP_PATCHES,
    STOP_TIME,
    GenerationOptions,
)
from engine.notagen.patchilizer import BOS_ID, EOS_ID, PAD_ID, Patchilizer
from engine.notagen.reference import BODY_START, zero_after_eos
from engine.notagen.sampling import Sampler, row_generators
from engine.score.bae import bar_alignment, bar_is_aligned

_NO_BAR_REASONS = {
    STOP_END: "the model ended the piece before writing a bar",
    STOP_TIME: "the time limit ran out before a bar was complete",
    STOP_CANCEL: "cancelled before a bar was complete",
    STOP_LENGTH: "no bar was complete within the character limit",
    STOP_PATCHES: "no bar was complete within the patch limit",
    STOP_DEAD_END: "bar-exact decoding found no allowed character before a bar was complete",
}
DEAD_END_RETRIES = 3
"""Times a bar is sampled again after bar-exact decoding found no allowed char in it (a gap in the written
subset's rules): the row never goes on unconstrained; after these the piece stops at its last whole bar."""


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
    reader: BarReader | None


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
        self.dead_ends_left = DEAD_END_RETRIES
        self.appended: list[int] = []
        self.rollback = False
        self.stop: str | None = None
        self.reader: BarReader | None = None  # follows `text` when decoding is bar-exact

    @property
    def bars(self) -> int:
        return len(self.bar_ends)

    def complete_text(self) -> str:
        end = self.text.rfind("\n") + 1
        return self.text[: max(end, 0)]


@dataclass
class _Group:
    cache: KVBuffers
    rows: list[_Row]


class BatchEngine:
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
        self.constraint = BarConstraint() if options.constrain else None
        self.forced = [ord(char) for char in BODY_START]
        self.started = time.monotonic()
        self.deadline: float | None = None
        self.events: list[GenerationEvent] = []
        self.attempts_done = [0] * n
        self.resampled_total = [0] * n
        self._restarts: list[int] = []

    # -------------------------------------------------------------- context encoding
    def _encode_context(self, context: GenerationContext) -> tuple[GenerationContext, list[list[int]]]:
        """The context's patch ids; a given body too long for the context keeps its last lines (halving as
        the official stream step does)."""
        if not context.body:
            patches = [self.patchilizer.bos_patch] + self.patchilizer.patchilize_metadata(text_lines(context.metadata))
            ids = [[ord(char) for char in patch] + [PAD_ID] * (self.size - len(patch)) for patch in patches]
        else:
            lines = text_lines(context.body)
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
        return context, ids

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
        context, ids = self._encode_context(self.context)
        with torch.inference_mode():
            self.start_cache = self._prefill([patch for patch in ids if len(patch) == self.size])
        self.start_prefix = ids[-1] if len(ids[-1]) < self.size else []
        self.start_context = context
        # Keep the text of the caller's context even where the model's context had to drop bars.
        self.full_context = self.context
        self.start_reader = reader_for(ids) if self.constraint is not None else None
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
        row.reader = self.start_reader
        if row.snapshot_pending:
            row.snapshot_pending = False
            row.snapshot = _Snapshot(0, self.start_cache.num_patches, self.start_cache.last_hidden[0], list(self.start_prefix),
                                     len(row.text), len(row.body), 0, True, row.line_start, row.reader)
        return row

    def _elapsed(self) -> float:
        return time.monotonic() - self.started

    def _step(self, groups: list[_Group]) -> list[_Group]:
        entries = [(group, position, row) for group in groups for position, row in enumerate(group.rows)]
        hidden = torch.cat([group.cache.last_hidden for group in groups])
        predicted: list[list[int]] = [[] for _ in entries]
        readers: list[BarReader | None] = [row.reader for _, _, row in entries]

        by_prefix: dict[int, list[int]] = defaultdict(list)
        for i, (_, _, row) in enumerate(entries):
            by_prefix[len(row.prefix)].append(i)
        for length, indices in by_prefix.items():
            prefix = torch.tensor([entries[i][2].prefix for i in indices], dtype=torch.long, device=hidden.device) if length else None
            self._decode(hidden, prefix, indices, [entries[i][2] for i in indices], predicted, readers)

        # The official forcing: the first patch that starts a tune body is predicted again from `[r:0/`.
        forced = [i for i, (_, _, row) in enumerate(entries)
                  if not row.body_started and self.patchilizer.decode([predicted[i]]).startswith("[r:")]
        body_starts: set[int] = set()
        if forced:
            prefix = torch.tensor([self.forced] * len(forced), device=hidden.device)
            rows = [entries[i][2] for i in forced]
            starts = [_read(row.reader, BODY_START) for row in rows]
            self._decode(hidden, prefix, forced, rows, predicted, readers, starts)
            for i in forced:
                predicted[i] = self.forced + predicted[i]
                body_starts.add(i)

        for i, (group, _, row) in enumerate(entries):
            if i in body_starts:
                row.snapshot = _Snapshot(row.epoch, group.cache.num_patches, hidden[i].clone(), [],
                                         len(row.text), len(row.body), row.bars, False, len(row.text), row.reader)
                row.body_started = True
                row.line_start = len(row.text)
            lost = row.reader is not None and readers[i] is None and self.constraint is not None
            row.reader = readers[i]
            if lost:
                self._dead_end(row)
            else:
                self._take(row, predicted[i])

        return self._regroup(groups)

    def _decode(self, hidden: torch.Tensor, prefix: torch.Tensor | None, indices: list[int], rows: list[_Row],
                predicted: list[list[int]], readers: list[BarReader | None], starts: list[BarReader | None] | None = None) -> None:
        """One patch for `rows` (entries `indices`), bar-exact where the rows have readers: `predicted[i]` and
        `readers[i]` become each row's chars and its reader after them. `starts`: the readers to begin from
        (default: the rows' own)."""
        generators = [row.rng for row in rows]
        if self.constraint is None:
            chooser = self.sampler.chooser(generators)
        else:
            chooser = ConstrainedChooser(self.sampler, generators, starts or [row.reader for row in rows], self.constraint)
        chars = self.model.decode_patch(hidden[indices], prefix, chooser).tolist()
        for position, (i, row_chars) in enumerate(zip(indices, chars)):
            predicted[i] = row_chars
            if self.constraint is not None:
                readers[i] = chooser.readers[position]

    def _dead_end(self, row: _Row) -> None:
        """The constraint found no allowed char in this patch: sample the bar again from its start, or stop
        the piece at its last whole bar (the patch is dropped either way)."""
        row.patches += 1
        if row.snapshot is not None and row.dead_ends_left > 0:
            row.dead_ends_left -= 1
            self.resampled_total[row.index] += 1
            row.rollback = True
            return
        row.stop = STOP_DEAD_END
        self._finish(row)

    def _take(self, row: _Row, predicted: list[int]) -> None:
        """Apply one predicted patch to a row (text, limits, bar checks)."""
        row.patches += 1
        if len(predicted) >= 2 and predicted[0] == BOS_ID and predicted[1] == EOS_ID:
            row.stop = STOP_END
            self._finish(row)
            return
        chars = self.patchilizer.decode([predicted])
        row.appended = row.prefix + zero_after_eos(predicted)
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
            row.dead_ends_left = DEAD_END_RETRIES
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
                                 len(row.text), len(row.body), row.bars, True, row.line_start, row.reader)

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
        row.reader = snapshot.reader
        return cache.cut(position, snapshot.num_patches, snapshot.hidden)

    def _reencode(self, row: _Row) -> KVBuffers | None:
        """The official stream step: header plus the last half of the body lines, `encode_generate`."""
        if "\n" not in row.body:
            row.stop = STOP_CONTEXT
            self._finish(row, "the context filled before a bar was complete")
            return None
        lines = text_lines(row.body)
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
                    abc, document, warnings = self.finisher(text, row.start, row.stop)
                except ScoreError as exc:
                    failure = f"the generated text does not convert: {exc}"
                else:
                    generated = text[row.start :]
                    piece = GeneratedPiece(
                        index=row.index, text=text, abc=abc, document=document, bars=row.bars, stop_reason=row.stop,
                        alignment=bar_alignment(generated), attempts=row.attempt,
                        resampled_bars=self.resampled_total[row.index], seconds=elapsed, warnings=warnings,
                    )
                    self.events.append(GenerationEvent("done", row.index, text, row.bars, elapsed, piece=piece, attempt=row.attempt, stop=row.stop))
                    return
        retry = row.attempt < self.max_attempts and row.stop not in (STOP_TIME, STOP_CANCEL) and self._global_stop() is None
        if retry:
            self._restarts.append(row.index)
        self.events.append(GenerationEvent(
            "failed", row.index, text, row.bars, elapsed, reason=failure, will_retry=retry, attempt=row.attempt, stop=row.stop
        ))


def _read(reader: BarReader | None, text: str) -> BarReader | None:
    """A copy of `reader` that has read `text`; None where it has none or refuses the text."""
    if reader is None:
        return None
    reader = reader.copy()
    return reader if all(reader.step(char) for char in text) else None
