"""Composing with the models: pick a prompt, generate, continue, regenerate from a measure, inpaint, stop.

Handlers as in webui/handlers.py (the `Composer` and the tab's `Session` first, named outputs back).
Generation handlers are generators: each bar's preview replaces the growing version, and the Stop
button, which stops iterating them, keeps the piece as far as it got.
"""
from __future__ import annotations

import html
import queue
import random
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

import gradio as gr

from engine.notagen.options import STOP_CANCEL
from engine.notagen.prompts import Prompt
from engine.score.document import ScoreDocument
from engine.service import Composer
from webui.handlers import USER_ERRORS, Unchanged, VersionView, failed, show, summary
from webui.session import Session

GENERATION_TIME_LIMIT = 300.0
"""Seconds one generation may run before it stops with what it has."""
PREVIEW_INTERVAL = 1.0
"""Seconds between two engravings of a growing piece (each bar is kept; the view follows at this pace)."""
RUNNING: dict[str, threading.Event] = {}
"""The cancel event of each generation streaming now, by `Session.run`: what Stop sets."""
INPAINT_TIME_BUDGET = 60.0
"""Seconds the refinement sweeps of one inpainting may take."""


@dataclass(frozen=True)
class Choices:
    """A prompt dropdown's options, and the one picked (`picked` if it is one of them, else the first;
    None if there are none)."""
    options: list[str]
    picked: str | None = None

    @property
    def value(self) -> str | None:
        if self.picked in self.options:
            return self.picked
        return self.options[0] if self.options else None


@dataclass(frozen=True)
class PromptChoices:
    """The composer and instrumentation lists for a period: both change with it."""
    composers: Choices
    instrumentations: Choices


@dataclass(frozen=True)
class PromptFields(PromptChoices):
    """The prompt and sampling fields as the tab left them (kept in the browser over a reload)."""
    period: Choices
    numbers: dict[str, float | None]
    """`SAVED_NUMBERS` values; None where nothing (valid) was saved: the field keeps its default."""


SAVED_NUMBERS = ("max_bars", "seed", "temperature", "top_k", "top_p", "continue_bars")


def composers_for(composer: Composer, period: str | None, picked: str | None = None) -> Choices:
    return Choices(sorted({p.composer for p in composer.prompts if p.period == period}), picked)


def instrumentations_for(composer: Composer, period: str | None, composer_name: str | None,
                         picked: str | None = None) -> Choices:
    return Choices(sorted({p.instrumentation for p in composer.prompts
                           if p.period == period and p.composer == composer_name}), picked)


def choices_for_period(composer: Composer, period: str | None) -> PromptChoices:
    composers = composers_for(composer, period)
    return PromptChoices(composers, instrumentations_for(composer, period, composers.value))


def saved_fields(composer: Composer, saved: dict | None) -> PromptFields:
    """The fields from the browser's copy (`saved`: field name -> value as typed); defaults otherwise."""
    saved = saved if isinstance(saved, dict) else {}
    period = Choices(sorted({p.period for p in composer.prompts}), saved.get("period"))
    composers = composers_for(composer, period.value, saved.get("composer"))
    instrumentations = instrumentations_for(composer, period.value, composers.value, saved.get("instrumentation"))
    numbers = {}
    for name in SAVED_NUMBERS:
        try:
            numbers[name] = float(saved[name])
        except (KeyError, TypeError, ValueError):
            numbers[name] = None
    return PromptFields(composers, instrumentations, period, numbers)


def sampling(temperature, top_k, top_p, seed) -> dict:
    """The Sampling sliders and the seed (negative: random) as `Composer.generate` options."""
    return {"temperature": float(temperature), "top_k": int(top_k), "top_p": float(top_p),
            "seed": None if seed is None or int(seed) < 0 else int(seed), "time_limit": GENERATION_TIME_LIMIT}


def stream_versions(composer: Composer, session: Session, progress, cancel: threading.Event, label: str,
                    title: str | None = None, new_score: bool = False):
    """Show a streamed piece as it grows; the version stays (partial) if stopped or failed.

    Every bar is kept in the session under the piece's `title`; the view is re-engraved at most every
    `PREVIEW_INTERVAL` seconds, so engraving never slows the model down much. Stop sets `cancel`: the
    model then ends the piece after its last complete bar, which comes back as the finished version."""
    run = uuid.uuid4().hex
    RUNNING[run] = cancel
    first, shown_at = True, 0.0
    try:
        for step in progress:
            status = f"Generating: {step.bars} bars, {step.seconds:.1f} s"
            if step.document is None:
                yield Unchanged(session, status)
                continue
            document = step.document
            if title is not None and document.title != title:
                document = ScoreDocument(document.musicxml, title)
            session = session.with_growing_version(document, f"{label} ({document.n_measures} bars)", first, new_score)
            first = False
            if step.done:
                if step.stop == STOP_CANCEL:
                    ending = "Stopped: kept what was made."
                else:
                    reason = "the model ended the piece" if step.stop == "end" else f"stopped: {step.stop}"
                    ending = f"Done in {step.seconds:.1f} s ({reason})."
                yield show(composer, session, f"{summary(session)}. {ending}")
                return
            session = replace(session, run=run)
            if step.seconds - shown_at >= PREVIEW_INTERVAL or step.bars == 1:
                shown_at = step.seconds
                yield show(composer, session, status, preview=True)
            else:
                yield Unchanged(session, status)
    except USER_ERRORS as exc:
        if first and cancel.is_set():
            yield Unchanged(session, "Stopped before the first bar was complete.")
        elif first:
            yield failed(session, str(exc))
        else:  # a preview is on screen: keep it as a full version, downloads included, as Stop does
            gr.Warning(str(exc))
            yield show(composer, replace(session, run=None), f"**Error:** {html.escape(str(exc))}. Kept what was made.")
    finally:
        RUNNING.pop(run, None)


def stopped(composer: Composer, session: Session) -> VersionView | Unchanged:
    """Stop: the tab's generation ends after its current patch and shows every complete bar as the
    finished version. With none running (it ended or was closed) the piece as far as it got becomes a
    full version, downloads included."""
    cancel = RUNNING.get(session.run) if session.run else None
    if cancel is not None:
        cancel.set()
        return Unchanged(session, "Stopping after the current bar...")
    if session.document is None:
        return Unchanged(session, "Stopped.")
    return show(composer, replace(session, run=None), f"{summary(session)}. Stopped: kept what was made.")


def piece_title(prompt: Prompt | None) -> str:
    """A generated piece's title: its prompt (composer - period - instrumentation)."""
    if prompt is None:
        return "NotaGen"
    return " - ".join(x for x in (prompt.composer, prompt.period, prompt.instrumentation) if x) or "NotaGen"


def generate(composer: Composer, session: Session, period, composer_name, instrumentation,
             temperature, top_k, top_p, seed, max_bars):
    """A new piece from the picked prompt (no period: unconditional), streamed; it starts unlocked."""
    prompt = Prompt(period or "", composer_name or "", instrumentation or "") if period else None
    label = "Generated " + (" / ".join(x for x in (period, composer_name, instrumentation) if x) or "unconditionally")
    title = piece_title(prompt)
    cancel = threading.Event()
    try:
        progress = composer.generate(prompt, preview_every=1, title=title, max_bars=int(max_bars), cancel=cancel,
                                     **sampling(temperature, top_k, top_p, seed))
    except USER_ERRORS as exc:
        yield failed(session, str(exc))
        return
    yield from stream_versions(composer, session, progress, cancel, label, title, new_score=True)


def continue_piece(composer: Composer, session: Session, bars, temperature, top_k, top_p, seed, from_cursor: bool):
    """`bars` more bars after the score, or (`from_cursor`) the bars from the clicked measure on regenerated."""
    document = session.document
    if document is None:
        yield failed(session, "open or generate a score first")
        return
    keep_bars = None
    if from_cursor:
        if session.cursor is None:
            yield failed(session, "click the measure to regenerate from first")
            return
        keep_bars, bars = session.cursor, document.n_measures - session.cursor
    cancel = threading.Event()
    try:
        progress = composer.continue_score(document, int(bars), keep=keep_bars, preview_every=1, cancel=cancel,
                                           **sampling(temperature, top_k, top_p, seed))
    except USER_ERRORS as exc:
        yield failed(session, str(exc))
        return
    label = f"Regenerated from measure {document.grid.columns[keep_bars].number}" if from_cursor else f"Continued by {int(bars)} bars"
    yield from stream_versions(composer, session, progress, cancel, label)


def regenerate_unlocked(composer: Composer, session: Session, n_sweeps, seed, confirmed: bool = True):
    """Inpaint every unlocked measure with the measure model (seed negative: random), its progress in
    the status line. With nothing locked it rewrites the whole piece: only once the user `confirmed` it."""
    document = session.document
    if document is None:
        yield failed(session, "open or generate a score first")
        return
    locks = session.locks
    if len(locks.cells) == locks.n_parts * locks.n_columns:
        yield failed(session, "every measure is locked: unlock the ones to regenerate")
        return
    if not locks.cells and not confirmed:
        yield Unchanged(session, "Nothing was regenerated: lock the measures to keep first (click them).")
        return
    steps: queue.Queue = queue.Queue()
    options = dict(sweeps=int(n_sweeps), seed=random.randrange(2**31) if seed is None or int(seed) < 0 else int(seed),
                   time_budget_s=INPAINT_TIME_BUDGET, on_progress=lambda done, total: steps.put((done, total)))
    with ThreadPoolExecutor(max_workers=1) as pool:
        work = pool.submit(composer.inpaint, document, locks.cells, **options)
        yield Unchanged(session, "Regenerating the unlocked measures...")
        while not work.done():
            try:
                done, total = steps.get(timeout=0.5)
            except queue.Empty:
                continue
            while not steps.empty():
                done, total = steps.get_nowait()
            yield Unchanged(session, f"Regenerating: {done} / {total} measures")
        try:
            result = work.result()
        except USER_ERRORS as exc:
            yield failed(session, f"regenerating failed: {exc}")
            return
    session = session.with_version(result, f"Regenerated unlocked ({locks.describe()})")
    yield show(composer, session, summary(session))
