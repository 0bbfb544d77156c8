"""Composing with the models: pick a prompt, generate, continue, regenerate from a measure, inpaint, stop.

Handlers as in webui/handlers.py (the `Composer` and the tab's `Session` first, named outputs back).
Generation handlers are generators: each bar's preview replaces the growing version, and the Stop
button ends the run through the engine's cancel, keeping every complete bar.
"""
from __future__ import annotations

import html
import math
import queue
import random
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

import gradio as gr

from engine.notagen.header import MAJOR_KEYS, MINOR_KEYS, HeaderChoice, ensembles_for, find_ensemble
from engine.notagen.options import STOP_CANCEL
from engine.notagen.prompts import Prompt
from engine.score.document import ScoreDocument
from engine.service import Composer
from webui.handlers import USER_ERRORS, Unchanged, VersionView, failed, regenerate_start, show, summary
from webui.session import Session, compose_fields

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
    """A prompt dropdown's options, and the one picked (the first, None if there are none)."""
    options: list[str]

    @property
    def value(self) -> str | None:
        return self.options[0] if self.options else None


def composers_for(composer: Composer, period: str | None) -> Choices:
    return Choices(sorted({p.composer for p in composer.prompts if p.period == period}))


def instrumentations_for(composer: Composer, period: str | None, composer_name: str | None) -> Choices:
    return Choices(sorted({p.instrumentation for p in composer.prompts
                           if p.period == period and p.composer == composer_name}))


MODELS_CHOICE = "model's choice"
"""A header field left to the model."""
KEY_CHOICES = [MODELS_CHOICE, *(f"{key} major" for key in MAJOR_KEYS), *(f"{key} minor" for key in MINOR_KEYS)]
METRE_CHOICES = [MODELS_CHOICE, "4/4", "3/4", "2/4", "2/2", "3/2", "6/8", "3/8", "9/8", "12/8"]
SETTINGS = ("max_bars", "seed", "temperature", "top_k", "top_p", "continue_bars")
"""The generation and sampling number fields; one saved as None keeps its default."""
FIELDS = ("period", "composer", "instrumentation", "ensemble", "key", "metre", "tempo", *SETTINGS)
"""The Compose panel's fields (all kept with the tab), in the order the app passes them."""


def prompt_of(period, composer_name, instrumentation) -> Prompt | None:
    """The picked prompt (no period: unconditional)."""
    return Prompt(period or "", composer_name or "", instrumentation or "") if period else None


def ensembles_of(period, composer_name, instrumentation) -> Choices:
    """The model's choice, then the ensembles offered for the picked prompt."""
    return Choices([MODELS_CHOICE, *(e.name for e in ensembles_for(prompt_of(period, composer_name, instrumentation)))])


def fixed(value):
    """A header field's value, None where it is left to the model."""
    return None if value in (None, "", MODELS_CHOICE) else value


def header_choice(prompt: Prompt | None, ensemble, key, metre, tempo) -> HeaderChoice:
    """The fixed header fields (`ScoreError` for one that cannot be written)."""
    return HeaderChoice(find_ensemble(ensemble, prompt) if fixed(ensemble) else None, fixed(key), fixed(metre),
                        None if fixed(tempo) is None else int(tempo))


@dataclass(frozen=True)
class PromptFields:
    """The Compose fields, each valid for its choices (which follow the prompt picked above them)."""
    composers: Choices
    instrumentations: Choices
    ensembles: Choices
    values: dict


def prompt_fields(composer: Composer, values: dict) -> PromptFields:
    """`values` by field name made consistent: a composer of the period, an ensemble of the prompt, ..."""
    period = kept(values.get("period"), Choices(sorted({p.period for p in composer.prompts})))
    composers = composers_for(composer, period)
    composer_name = kept(values.get("composer"), composers)
    instrumentations = instrumentations_for(composer, period, composer_name)
    instrumentation = kept(values.get("instrumentation"), instrumentations)
    ensembles = ensembles_of(period, composer_name, instrumentation)
    picked = {"period": period, "composer": composer_name, "instrumentation": instrumentation,
              "ensemble": kept(values.get("ensemble"), ensembles), "key": kept(values.get("key"), Choices(KEY_CHOICES)),
              "metre": kept(values.get("metre"), Choices(METRE_CHOICES)),
              **{name: number(values.get(name)) for name in ("tempo", *SETTINGS)}}
    return PromptFields(composers, instrumentations, ensembles, picked)


def number(value) -> float | None:
    """A saved number field's value; None (tempo: the model's; a setting: its default) for anything else."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return value


def kept(value, choices: Choices):
    """`value` if it is among the choices, else their first."""
    return value if value in choices.options else choices.value


def restore_fields(composer: Composer, session: Session, saved: dict | None) -> PromptFields:
    """On page load: the fields as the tab left them (its browser copy), else the first prompt."""
    return prompt_fields(composer, compose_fields(saved) or session.compose)


def remember_fields(session: Session, *values) -> Session:
    """A field changed (and the ones below it followed): the tab's session keeps them all."""
    return session.with_compose(dict(zip(FIELDS, values)))


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
                warnings = "".join(f"  \n{line}" for line in step.warnings)
                yield show(composer, replace(session, run=None), f"{summary(session)}. {ending}{warnings}")
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
             temperature, top_k, top_p, seed, max_bars,
             ensemble=MODELS_CHOICE, key=MODELS_CHOICE, metre=MODELS_CHOICE, tempo=None):
    """A new piece from the picked prompt (no period: unconditional) and header fields, streamed; it
    starts unlocked."""
    prompt = prompt_of(period, composer_name, instrumentation)
    label = "Generated " + (" / ".join(x for x in (period, composer_name, instrumentation) if x) or "unconditionally")
    chosen = [str(x) for x in (ensemble, key, metre) if fixed(x)] + ([] if fixed(tempo) is None else [f"{int(tempo)} bpm"])
    label += f" ({', '.join(chosen)})" if chosen else ""
    title = piece_title(prompt)
    cancel = threading.Event()
    try:
        header = header_choice(prompt, ensemble, key, metre, tempo)
        progress = composer.generate(prompt, preview_every=1, title=title, max_bars=int(max_bars), header=header,
                                     cancel=cancel,
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
        keep_bars, problem = regenerate_start(session)
        if keep_bars is None:
            yield failed(session, problem)
            return
        bars = document.n_measures - keep_bars
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
    session = session.with_version(result.document, f"Regenerated unlocked ({locks.describe()})")
    yield show(composer, session, "; ".join([summary(session), *result.warnings]))
