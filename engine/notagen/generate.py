"""NotaGen generation: `NotagenGenerator`, what the app calls, and where its model comes from.

Sampled (top-k / top-p / temperature, seedable), batched, streaming (an event per bar), with bar / time /
cancel limits, the official "stream generation" past a full context, bar-alignment resampling,
continuation of a user's score, and conversion of every piece to a `ScoreDocument` (pieces that do not
convert are sampled again or reported, never returned). The decoding loop is `batch_engine.BatchEngine`;
the greedy reference driver checked against the official code is `reference.greedy_continue`.
"""
from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import torch

from engine.errors import ModelError, ScoreError, describe
from engine.notagen.batch_engine import BatchEngine
from engine.notagen.events import EventCallback, GeneratedPiece, GenerationEvent, GenerationResult, PieceFailure
from engine.notagen.finish import Finisher, GenerationContext, finish_generated, score_continuation, text_context
from engine.notagen.header import HeaderChoice, default_ensemble, header_voices, read_header, write_header
from engine.notagen.model import NotagenModel, load_checkpoint
from engine.notagen.options import GenerationOptions
from engine.notagen.prompts import Prompt, PromptLike, prompt_text
from engine.notagen.quantize import place
from engine.notagen.reference import BODY_START
from engine.score.document import ScoreDocument

#: Where a shipped default model will live (`NotagenModel.save_pretrained` layout).
DEFAULT_MODEL_DIR = Path(__file__).resolve().parents[2] / "assets" / "notagen"


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
    def load(cls, checkpoint: str | Path | None = None, num_heads: int | None = None,
             device: str | torch.device = "cpu", weights: str = "fp32") -> NotagenGenerator:
        """From an official `.pth`, a `save_pretrained` folder, or (None) the default `assets/notagen/`, placed
        on `device` ("auto": CUDA when present) in the `weights` format (`engine.notagen.quantize`)."""
        path = resolve_checkpoint(checkpoint)
        try:
            model, _ = load_checkpoint(path, num_heads=num_heads)
        except ModelError:
            raise
        except Exception as exc:  # torch.load / load_state_dict fail with many exception types
            raise ModelError(f"cannot load the NotaGen checkpoint {path}: {describe(exc)}") from exc
        return cls(place(model, device, weights), name=path.name)

    # -------------------------------------------------------------- fresh pieces
    def stream(self, prompt: PromptLike = None, *, title: str = "", header: HeaderChoice | None = None,
               **options) -> Iterator[GenerationEvent]:
        """Generate pieces from a prompt (None: unconditional), yielding an event per accepted bar and per
        finished or failed piece. `options` are the fields of `GenerationOptions` (n, max_bars, seed,
        top_k, top_p, temperature, time_limit, cancel, bae_resample, ...).

        `header` fixes the ensemble, key, metre or tempo: the header is then written here (fields left
        open come from a header the model writes first) and the model writes only the body."""
        text, settings, title = prompt_text(prompt), GenerationOptions(**options), title or _title(prompt)
        if header is None or not header.chosen:
            return self._engine(text_context(text), finish_generated(title), settings).run()
        if not header.complete:
            header = header.completed(self._model_header(text, settings), default_ensemble(prompt))
        # The body starts at once, from `[r:0/` as the official loop forces it.
        context = GenerationContext(text + write_header(header), BODY_START)
        return self._engine(context, finish_generated(title, header_voices(header)), settings).run()

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
    def _model_header(self, text: str, options: GenerationOptions) -> HeaderChoice:
        """The header the model writes itself after the prompt (read up to its first bar; a header longer than
        the model's context could not be used anyway)."""
        probe = replace(options, n=1, max_bars=1, max_attempts=1, bae_resample=False,
                        max_patches=self.model.config.patch_length)
        written = text
        for event in self._engine(text_context(text), _unconverted, probe).run():
            written = event.text
        return read_header(written[len(text):])

    def _engine(self, context: GenerationContext, finisher: Finisher, options: GenerationOptions) -> BatchEngine:
        return BatchEngine(self.model, context, finisher, options)


def _collect(events: Iterator[GenerationEvent], on_event: EventCallback | None) -> GenerationResult:
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
    finished = tuple(pieces[i] for i in sorted(pieces))
    return GenerationResult(
        pieces=finished,
        failures=tuple(failures[i] for i in sorted(failures)),
        seconds=time.monotonic() - started,
        warnings=tuple(dict.fromkeys(line for piece in finished for line in piece.warnings)),
    )


def _unconverted(text: str, start: int, reason: str) -> tuple[str, None, tuple[str, ...]]:
    """The header probe's finisher: only the text is read."""
    return text, None, ()


def _title(prompt: PromptLike) -> str:
    if isinstance(prompt, Prompt):
        return " - ".join(part for part in (prompt.composer, prompt.period, prompt.instrumentation) if part) or "NotaGen"
    return "NotaGen"
