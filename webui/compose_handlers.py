"""Composing with the models: pick a prompt, generate, continue, regenerate from a measure, inpaint, stop.

Handlers as in webui/handlers.py (the `Composer` and the tab's `Session` first, named outputs back).
Generation handlers are generators: each bar's preview replaces the growing version, and the Stop
button, which stops iterating them, keeps the piece as far as it got.
"""
from __future__ import annotations

import html
import random
from dataclasses import dataclass

import gradio as gr

from engine.notagen.header import MAJOR_KEYS, MINOR_KEYS, HeaderChoice, ensembles_for, find_ensemble
from engine.notagen.prompts import Prompt
from engine.service import Composer
from webui.handlers import USER_ERRORS, Unchanged, VersionView, failed, show, summary
from webui.session import Session, compose_fields

GENERATION_TIME_LIMIT = 300.0
"""Seconds one generation may run before it stops with what it has."""
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
FIELDS = ("period", "composer", "instrumentation", "ensemble", "key", "metre", "tempo")
"""The Compose panel's fields, in the order the app passes them."""


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
    tempo = values.get("tempo")
    picked = {"period": period, "composer": composer_name, "instrumentation": instrumentation,
              "ensemble": kept(values.get("ensemble"), ensembles), "key": kept(values.get("key"), Choices(KEY_CHOICES)),
              "metre": kept(values.get("metre"), Choices(METRE_CHOICES)),
              "tempo": tempo if isinstance(tempo, (int, float)) else None}
    return PromptFields(composers, instrumentations, ensembles, picked)


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


def stream_versions(composer: Composer, session: Session, progress, label: str):
    """Show a streamed piece as it grows; the version stays (partial) if stopped or failed."""
    first = True
    try:
        for step in progress:
            status = f"Generating: {step.bars} bars, {step.seconds:.1f} s"
            if step.document is None:
                yield Unchanged(session, status)
                continue
            session = session.with_growing_version(step.document, f"{label} ({step.document.n_measures} bars)", first)
            first = False
            if step.done:
                ending = "the model ended the piece" if step.stop == "end" else f"stopped: {step.stop}"
                yield show(composer, session, f"{summary(session)}. Done in {step.seconds:.1f} s ({ending}).")
            else:
                yield show(composer, session, status, preview=True)
    except USER_ERRORS as exc:
        if first:
            yield failed(session, str(exc))
        else:  # a preview is on screen: keep it as a full version, downloads included, as Stop does
            gr.Warning(str(exc))
            yield show(composer, session, f"**Error:** {html.escape(str(exc))}. Kept what was made.")


def stopped(composer: Composer, session: Session) -> VersionView | Unchanged:
    """Stop keeps the piece as far as it got: a full version, downloads included, not a preview."""
    if session.document is None:
        return Unchanged(session, "Stopped.")
    return show(composer, session, f"{summary(session)}. Stopped: kept what was made.")


def generate(composer: Composer, session: Session, period, composer_name, instrumentation,
             temperature, top_k, top_p, seed, max_bars,
             ensemble=MODELS_CHOICE, key=MODELS_CHOICE, metre=MODELS_CHOICE, tempo=None):
    """A new piece from the picked prompt (no period: unconditional) and header fields, streamed."""
    prompt = prompt_of(period, composer_name, instrumentation)
    label = "Generated " + (" / ".join(x for x in (period, composer_name, instrumentation) if x) or "unconditionally")
    chosen = [str(x) for x in (ensemble, key, metre) if fixed(x)] + ([] if fixed(tempo) is None else [f"{int(tempo)} bpm"])
    label += f" ({', '.join(chosen)})" if chosen else ""
    try:
        header = header_choice(prompt, ensemble, key, metre, tempo)
        progress = composer.generate(prompt, max_bars=int(max_bars), header=header,
                                     **sampling(temperature, top_k, top_p, seed))
    except USER_ERRORS as exc:
        yield failed(session, str(exc))
        return
    yield from stream_versions(composer, session, progress, label)


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
    try:
        progress = composer.continue_score(document, int(bars), keep=keep_bars,
                                           **sampling(temperature, top_k, top_p, seed))
    except USER_ERRORS as exc:
        yield failed(session, str(exc))
        return
    label = f"Regenerated from measure {document.grid.columns[keep_bars].number}" if from_cursor else f"Continued by {int(bars)} bars"
    yield from stream_versions(composer, session, progress, label)


def regenerate_unlocked(composer: Composer, session: Session, n_sweeps, seed) -> VersionView | Unchanged:
    """Inpaint every unlocked measure with the measure model (seed negative: random)."""
    document = session.document
    if document is None:
        return failed(session, "open or generate a score first")
    if len(session.locks.cells) == session.locks.n_parts * session.locks.n_columns:
        return failed(session, "every measure is locked: unlock the ones to regenerate")
    try:
        result = composer.inpaint(document, session.locks.cells, sweeps=int(n_sweeps),
                                  seed=random.randrange(2**31) if seed is None or int(seed) < 0 else int(seed),
                                  time_budget_s=INPAINT_TIME_BUDGET)
    except USER_ERRORS as exc:
        return failed(session, f"regenerating failed: {exc}")
    session = session.with_version(result.document, f"Regenerated unlocked ({session.locks.describe()})")
    return show(composer, session, "; ".join([summary(session), *result.warnings]))
