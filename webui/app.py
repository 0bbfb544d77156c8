"""The Gradio Blocks app: open, see, lock, listen, undo, download.

A thin layer over `engine.service.Composer`: each handler turns a user action into one facade call and
the result into component updates. Each tab's `Session` (history + locks) lives in `gr.State` and is
mirrored to localStorage. A failing action returns the session unchanged and shows the error, so the
score on screen and the history are never lost.
"""
from __future__ import annotations

import html
import random
from functools import partial

import gradio as gr

from engine.errors import ModelError, ScoreError
from engine.locks import Locks
from engine.notagen.prompts import Prompt
from engine.service import Composer
from webui.score_view import CSS as VIEW_CSS
from webui.score_view import EMPTY_VIEW, JS_ON_LOAD, locks_prop, player_html, score_html, unengraved_html
from webui.session import Session

UPLOAD_TYPES = [".musicxml", ".xml", ".mxl", ".abc", ".krn", ".mid", ".midi"]
SCORE_DOWNLOADS = (("musicxml", "MusicXML"), ("mid", "MIDI"), ("abc", "ABC"), ("svg", "SVG"))
AUDIO_DOWNLOADS = (("ogg", "Ogg"), ("wav", "WAV"))
REQUESTED_DOWNLOADS = (*AUDIO_DOWNLOADS, ("pdf", "PDF"))
"""Made on request (Render audio, Make PDF: each takes seconds), so every new version clears them."""
LAYOUT_CSS = """
#toolbar { align-items: end; }
#app-title { flex: 0 0 240px; }
#app-title h2 { margin: 0 0 8px; white-space: nowrap; }
#lock-bar { align-items: center; gap: 8px; }
#lock-summary { flex: 0 0 150px; }
@media (min-width: 1000px) {
  #sidebar { position: sticky; top: 8px; align-self: flex-start; max-height: calc(100vh - 16px); overflow-y: auto; }
}
"""
"""A compact toolbar above; on wide screens the controls scroll on their own beside the score."""
CSS = VIEW_CSS + LAYOUT_CSS
USER_ERRORS = (ScoreError, ModelError)
GENERATION_TIME_LIMIT = 300.0
"""Seconds one generation may run before it stops with what it has."""
STORAGE_KEY = "notagen-composer-session"
STORE_SAVED_JS = f"""(saved) => {{
    if (!saved) return;
    const text = JSON.stringify(saved);
    try {{ sessionStorage.setItem('{STORAGE_KEY}', text); }} catch (e) {{}}
    try {{ localStorage.setItem('{STORAGE_KEY}', text); }} catch (e) {{}}
}}"""
"""Each tab keeps its own work in sessionStorage (per tab, kept across reloads); the newest work of any tab
also goes to localStorage, only so that a brand-new tab can start from it."""
LOAD_SAVED_JS = f"""(saved, session) => {{
    const text = sessionStorage.getItem('{STORAGE_KEY}') || localStorage.getItem('{STORAGE_KEY}');
    try {{ return [text ? JSON.parse(text) : null, session]; }} catch (e) {{ return [null, session]; }}
}}"""

GRADIO_CACHE_CLEANUP = (1800, 3 * 3600)
"""Every 30 min Gradio deletes the uploads and served copies of downloads older than 3 h: bounded disk use."""
INPAINT_TIME_BUDGET = 60.0
"""Seconds the refinement sweeps of one inpainting may take."""
VERSION_OUTPUTS = 9 + len(SCORE_DOWNLOADS) + len(REQUESTED_DOWNLOADS)
"""session, saved, view, status, lock summary, versions, undo, redo, player, downloads."""


def keep(session: Session, status=None) -> list:
    """Outputs for an action that changes no version: everything stays, the status may change."""
    return [session, gr.update(), gr.update(), gr.update() if status is None else status,
            *(gr.update() for _ in range(VERSION_OUTPUTS - 4))]


def build_app(composer: Composer) -> gr.Blocks:
    """The Blocks app over one `Composer` (shared by all sessions; each tab has its own `Session`)."""

    def file_url(path) -> str:
        return f"gradio_api/file={path}"

    def summary(session: Session) -> str:
        document = session.document
        return f"**{html.escape(document.title)}**: {document.n_parts} parts, {document.n_measures} measures"

    def show(session: Session, message: str, preview: bool = False) -> list:
        """Every output of a version change: view, status, versions, undo/redo, downloads.

        A `preview` (a piece still being generated) skips the exports, which the final version makes."""
        document = session.document
        downloads = [gr.update(interactive=False) for _ in SCORE_DOWNLOADS] if preview else []
        for fmt, label in () if preview else SCORE_DOWNLOADS:
            try:
                downloads.append(gr.update(value=str(composer.export_file(document, fmt)), interactive=True))
            except USER_ERRORS as exc:
                downloads.append(gr.update(value=None, interactive=False))
                message += f"  \n{label} export is unavailable for this score: {exc}"
        try:
            view = score_html(composer.engrave(document))
        except ScoreError as exc:  # the version is kept (history, downloads); only its picture is missing
            view = unengraved_html(str(exc))
            message += f"  \nThis version could not be engraved: {exc}"
        history = session.history
        return [
            session,
            session.to_browser(),
            gr.update(value=view, locks=locks_prop(session.locks)),
            message,
            session.locks.describe(),
            gr.update(choices=history.labels(), value=history.labels()[history.index]),
            gr.update(interactive=history.can_undo),
            gr.update(interactive=history.can_redo),
            "",
            *downloads,
            *(gr.update(value=None, interactive=False) for _ in REQUESTED_DOWNLOADS),
        ]

    def failed(session: Session, message: str) -> list:
        gr.Warning(message)
        return keep(session, f"**Error:** {html.escape(message)}")

    def open_upload(path: str | None, session: Session):
        if not path:
            return failed(session, "no file was received")
        try:
            document = composer.open_file(path)
            session = session.with_version(document, f"Opened {document.title}")
            return show(session, summary(session))
        except USER_ERRORS as exc:
            return failed(session, f"could not open the file: {exc}")

    def open_example(title: str | None, session: Session):
        if not title:
            return failed(session, "pick an example first")
        try:
            session = session.with_version(composer.open_example(title), f"Opened {title}")
            return show(session, summary(session))
        except USER_ERRORS as exc:
            return failed(session, f"could not open the example: {exc}")

    def move(session: Session, step: str, label: str | None = None):
        history = session.history
        if not history.versions:
            return failed(session, "there is nothing to undo yet")
        if step == "undo":
            history = history.undo()
        elif step == "redo":
            history = history.redo()
        else:
            history = history.jump(history.labels().index(label)) if label in history.labels() else history
        if history is session.history or history.index == session.history.index:
            return keep(session)
        session = session.with_history(history)
        return show(session, summary(session))

    def restore(saved: dict | None, session: Session):
        """On page load: bring back the tab's work from localStorage."""
        if session.document is None:
            session = Session.from_browser(saved)
        if session.document is None:
            return keep(session)
        return show(session, summary(session) + " (restored)")

    def change_locks(session: Session, make, cursor: int | None = None) -> list:
        if session.document is None:
            return [session, gr.update(), gr.update(), "open a score first"]
        session = session.with_locks(make(session.locks), cursor)
        return [session, session.to_browser(), gr.update(locks=locks_prop(session.locks)), session.locks.describe()]

    def toggle(session: Session, evt: gr.EventData):
        data = evt._data or {}
        column, part = int(data.get("column", -1)), int(data.get("part", 0))
        try:
            if data.get("single"):
                return change_locks(session, lambda locks: locks.toggle_cell(part, column), column)
            return change_locks(session, lambda locks: locks.toggle_column(column), column)
        except IndexError as exc:
            return [session, gr.update(), gr.update(), str(exc)]

    def sampling(temperature, top_k, top_p, seed) -> dict:
        return {"temperature": float(temperature), "top_k": int(top_k), "top_p": float(top_p),
                "seed": None if seed is None or int(seed) < 0 else int(seed), "time_limit": GENERATION_TIME_LIMIT}

    def stream_versions(session: Session, progress, label: str):
        """Show a streamed piece as it grows; the version stays (partial) if stopped or failed."""
        first = True
        try:
            for step in progress:
                status = f"Generating: {step.bars} bars, {step.seconds:.1f} s"
                if step.document is None:
                    yield keep(session, status)
                    continue
                session = session.with_growing_version(step.document, f"{label} ({step.document.n_measures} bars)", first)
                first = False
                if step.done:
                    ending = "the model ended the piece" if step.stop == "end" else f"stopped: {step.stop}"
                    yield show(session, f"{summary(session)}. Done in {step.seconds:.1f} s ({ending}).")
                else:
                    yield show(session, status, preview=True)
        except USER_ERRORS as exc:
            if first:
                yield failed(session, str(exc))
            else:  # a preview is on screen: keep it as a full version, downloads included, as Stop does
                gr.Warning(str(exc))
                yield show(session, f"**Error:** {html.escape(str(exc))}. Kept what was made.")

    def stopped(session: Session):
        """Stop keeps the piece as far as it got: a full version, downloads included, not a preview."""
        if session.document is None:
            return keep(session, "Stopped.")
        return show(session, f"{summary(session)}. Stopped: kept what was made.")

    def generate(session: Session, period, composer_name, instrumentation, temperature, top_k, top_p, seed, max_bars):
        prompt = Prompt(period or "", composer_name or "", instrumentation or "") if period else None
        label = "Generated " + (" / ".join(x for x in (period, composer_name, instrumentation) if x) or "unconditionally")
        try:
            progress = composer.generate(prompt, max_bars=int(max_bars), **sampling(temperature, top_k, top_p, seed))
        except USER_ERRORS as exc:
            yield failed(session, str(exc))
            return
        yield from stream_versions(session, progress, label)

    def continue_piece(session: Session, bars, temperature, top_k, top_p, seed, from_cursor: bool):
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
        yield from stream_versions(session, progress, label)

    def regenerate_unlocked(session: Session, n_sweeps, seed):
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
        session = session.with_version(result, f"Regenerated unlocked ({session.locks.describe()})")
        return show(session, summary(session))

    def request_failed(message: str, n_outputs: int) -> list:
        """A Render audio or Make PDF that could not be done: the status says why, its outputs stay."""
        gr.Warning(message)
        return [f"**Error:** {html.escape(message)}", *(gr.update() for _ in range(n_outputs))]

    def render_audio(session: Session, tempo: float):
        if session.document is None:
            return request_failed("open a score first", 1 + len(AUDIO_DOWNLOADS))
        try:
            paths = [composer.export_file(session.document, fmt, tempo=tempo) for fmt, _ in AUDIO_DOWNLOADS]
        except USER_ERRORS as exc:
            return request_failed(str(exc), 1 + len(AUDIO_DOWNLOADS))
        onsets = composer.measure_onsets(session.document)
        return [summary(session), player_html(file_url(paths[0]), tempo, onsets),
                *(gr.update(value=str(p), interactive=True) for p in paths)]

    def make_pdf(session: Session):
        if session.document is None:
            return request_failed("open a score first", 1)
        try:
            path = composer.export_file(session.document, "pdf")
        except USER_ERRORS as exc:
            return request_failed(str(exc), 1)
        return [summary(session) + ". The PDF is ready.", gr.update(value=str(path), interactive=True)]

    with gr.Blocks(title="NotaGen Composer", fill_width=True, delete_cache=GRADIO_CACHE_CLEANUP) as demo:
        session_state = gr.State(Session())
        saved = gr.JSON(None, visible=False, elem_id="saved-session")
        with gr.Row(elem_id="toolbar", equal_height=True):
            gr.Markdown("## NotaGen Composer", elem_id="app-title")
            upload = gr.UploadButton(
                "Open a score file", file_types=UPLOAD_TYPES, type="filepath", variant="primary", size="md",
                scale=0, min_width=170, elem_id="upload",
            )
            example = gr.Dropdown(choices=list(composer.examples), value=None, label="...or an example",
                                  scale=2, min_width=200, elem_id="example")
            open_button = gr.Button("Open example", size="md", scale=0, min_width=150, elem_id="open-example")
            undo = gr.Button("Undo", interactive=False, size="md", scale=0, min_width=70, elem_id="undo")
            redo = gr.Button("Redo", interactive=False, size="md", scale=0, min_width=70, elem_id="redo")
            versions = gr.Dropdown(choices=[], label="Versions", scale=3, min_width=220, elem_id="versions")
        status = gr.Markdown("", elem_id="status")
        with gr.Row():
            with gr.Column(scale=0, min_width=340, elem_id="sidebar"):
                with gr.Accordion("Compose with NotaGen", open=True):
                    can_compose = composer.notagen is not None
                    if not can_compose:
                        gr.Markdown("Composing is off: no NotaGen model is loaded "
                                    "(start with `--notagen-checkpoint PATH`).", elem_id="compose-off")
                    periods = sorted({p.period for p in composer.prompts})
                    with gr.Group():
                        period = gr.Dropdown(periods, value=periods[0] if periods else None, label="Period",
                                             elem_id="period")
                        composer_name = gr.Dropdown([], label="Composer", elem_id="composer")
                        instrumentation = gr.Dropdown([], label="Instrumentation", elem_id="instrumentation")
                    with gr.Row():
                        max_bars = gr.Number(32, precision=0, minimum=1, maximum=128, label="Maximum bars",
                                             min_width=100, elem_id="max-bars")
                        seed = gr.Number(-1, precision=0, label="Seed (-1: random)", min_width=100, elem_id="seed")
                    with gr.Accordion("Sampling", open=False):
                        temperature = gr.Slider(0.1, 2.0, value=1.2, step=0.05, label="Temperature", elem_id="temperature")
                        top_k = gr.Slider(1, 64, value=9, step=1, label="Top-k", elem_id="top-k")
                        top_p = gr.Slider(0.05, 1.0, value=0.9, step=0.05, label="Top-p", elem_id="top-p")
                    with gr.Row():
                        generate_button = gr.Button("Generate", variant="primary", interactive=can_compose,
                                                    min_width=100, elem_id="generate")
                        stop_button = gr.Button("Stop", variant="stop", min_width=100, elem_id="stop")
                    with gr.Row(equal_height=True):
                        continue_bars = gr.Number(8, precision=0, minimum=1, maximum=64, label="Bars to add",
                                                  min_width=100, elem_id="continue-bars")
                        continue_button = gr.Button("Continue", interactive=can_compose, min_width=100, elem_id="continue")
                    regenerate_button = gr.Button("Regenerate from clicked measure", interactive=can_compose,
                                                  elem_id="regenerate-from")
                with gr.Accordion("Listen", open=True):
                    audio_problem = composer.audio_problem
                    with gr.Row(equal_height=True):
                        tempo = gr.Number(1.0, minimum=0.25, maximum=2.0, step=0.05, label="Tempo factor",
                                          min_width=100, elem_id="tempo")
                        listen = gr.Button("Render audio", interactive=audio_problem is None, min_width=100,
                                           elem_id="listen")
                    if audio_problem:
                        gr.Markdown(audio_problem, elem_id="audio-problem")
                    player = gr.HTML("", elem_id="player")
                with gr.Accordion("Download", open=True):
                    with gr.Row():
                        score_downloads = [
                            gr.DownloadButton(label, interactive=False, size="sm", min_width=60, elem_id=f"download-{fmt}")
                            for fmt, label in SCORE_DOWNLOADS
                        ]
                    with gr.Row():
                        audio_downloads = [
                            gr.DownloadButton(label, interactive=False, size="sm", min_width=60, elem_id=f"download-{fmt}")
                            for fmt, label in AUDIO_DOWNLOADS
                        ]
                        make_pdf_button = gr.Button("Make PDF", size="sm", min_width=60, elem_id="make-pdf")
                        pdf_download = gr.DownloadButton("PDF", interactive=False, size="sm", min_width=60,
                                                         elem_id="download-pdf")
            with gr.Column(scale=1):
                with gr.Row(equal_height=True, elem_id="lock-bar"):
                    lock_summary = gr.Markdown("no measures locked", elem_id="lock-summary")
                    part_mode = gr.Checkbox(False, label="Lock single parts (or Shift-click)", scale=2,
                                            min_width=150, elem_id="part-mode")
                    lock_all = gr.Button("Lock all", size="sm", scale=0, min_width=70, elem_id="lock-all")
                    unlock_all = gr.Button("Unlock all", size="sm", scale=0, min_width=80, elem_id="unlock-all")
                    invert = gr.Button("Invert", size="sm", scale=0, min_width=60, elem_id="invert-locks")
                    can_inpaint = composer.measure_model is not None
                    sweeps = gr.Dropdown([("no refinement", 0), *((f"{n} refinement sweeps", n) for n in range(1, 5))],
                                         value=0, show_label=False, container=False, scale=0, min_width=160,
                                         elem_id="sweeps")
                    inpaint_button = gr.Button("Regenerate unlocked", variant="primary", interactive=can_inpaint,
                                               size="md", scale=0, min_width=180, elem_id="inpaint")
                    if not can_inpaint:
                        gr.Markdown("Inpainting is off: no measure model is loaded "
                                    "(start with `--measure-checkpoint DIR`).", elem_id="inpaint-off")
                view = gr.HTML(EMPTY_VIEW, js_on_load=JS_ON_LOAD, locks={"columns": [], "cells": []},
                               part_mode=False, elem_id="score-view")

        version_outputs = [session_state, saved, view, status, lock_summary, versions, undo, redo, player,
                           *score_downloads, *audio_downloads, pdf_download]
        lock_outputs = [session_state, saved, view, lock_summary]
        upload.upload(open_upload, [upload, session_state], version_outputs)
        open_button.click(open_example, [example, session_state], version_outputs)
        undo.click(lambda s: move(s, "undo"), session_state, version_outputs)
        redo.click(lambda s: move(s, "redo"), session_state, version_outputs)
        versions.input(lambda s, label: move(s, "jump", label), [session_state, versions], version_outputs)
        view.measure_toggle(toggle, session_state, lock_outputs)
        part_mode.change(lambda on: gr.update(part_mode=on), part_mode, view)
        lock_all.click(lambda s: change_locks(s, Locks.all), session_state, lock_outputs)
        unlock_all.click(lambda s: change_locks(s, Locks.none), session_state, lock_outputs)
        invert.click(lambda s: change_locks(s, Locks.inverted), session_state, lock_outputs)
        # The model, audio and PDF actions share one limit (app.py's --concurrency): Gradio counts each
        # event on its own otherwise, so N generations, N inpaintings and N renders could all run at once.
        heavy = dict(concurrency_id="heavy")
        listen.click(render_audio, [session_state, tempo], [status, player, *audio_downloads], **heavy)
        make_pdf_button.click(make_pdf, session_state, [status, pdf_download], **heavy)
        demo.load(restore, [saved, session_state], version_outputs, js=LOAD_SAVED_JS)
        saved.change(None, saved, None, js=STORE_SAVED_JS)

        def composers_for(period_value):
            names = sorted({p.composer for p in composer.prompts if p.period == period_value})
            return gr.update(choices=names, value=names[0] if names else None)

        def instrumentations_for(period_value, composer_value):
            kinds = sorted({p.instrumentation for p in composer.prompts
                            if p.period == period_value and p.composer == composer_value})
            return gr.update(choices=kinds, value=kinds[0] if kinds else None)

        period.change(composers_for, period, composer_name)
        composer_name.change(instrumentations_for, [period, composer_name], instrumentation)
        demo.load(composers_for, period, composer_name)
        sampling_inputs = [temperature, top_k, top_p, seed]
        runs = [
            generate_button.click(generate, [session_state, period, composer_name, instrumentation, *sampling_inputs, max_bars],
                                  version_outputs, **heavy),
            continue_button.click(partial(continue_piece, from_cursor=False),
                                  [session_state, continue_bars, *sampling_inputs], version_outputs, **heavy),
            regenerate_button.click(partial(continue_piece, from_cursor=True),
                                    [session_state, continue_bars, *sampling_inputs], version_outputs, **heavy),
        ]
        stop_button.click(stopped, session_state, version_outputs, cancels=runs)
        inpaint_button.click(regenerate_unlocked, [session_state, sweeps, seed], version_outputs, **heavy)
    return demo
