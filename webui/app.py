"""The Gradio Blocks app: open, see, lock, listen, undo, download.

A thin layer over `engine.service.Composer`: each handler turns a user action into one facade call and
the result into component updates. Each tab's `Session` (history + locks) lives in `gr.State` and is
mirrored to localStorage. A failing action returns the session unchanged and shows the error, so the
score on screen and the history are never lost.
"""
from __future__ import annotations

import html

import gradio as gr

from engine.errors import ModelError, ScoreError
from engine.locks import Locks
from engine.service import Composer
from webui.score_view import CSS as VIEW_CSS
from webui.score_view import EMPTY_VIEW, JS_ON_LOAD, locks_prop, player_html, score_html
from webui.session import Session

UPLOAD_TYPES = [".musicxml", ".xml", ".mxl", ".abc", ".krn", ".mid", ".midi"]
SCORE_DOWNLOADS = (("musicxml", "MusicXML"), ("mid", "MIDI"), ("abc", "ABC"), ("svg", "SVG"))
AUDIO_DOWNLOADS = (("ogg", "Ogg"), ("wav", "WAV"))
CSS = VIEW_CSS
USER_ERRORS = (ScoreError, ModelError)
VERSION_OUTPUTS = 9 + len(SCORE_DOWNLOADS) + len(AUDIO_DOWNLOADS)
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

    def show(session: Session, message: str) -> list:
        """Every output of a version change: view, status, versions, undo/redo, downloads."""
        document = session.document
        downloads = []
        for fmt, label in SCORE_DOWNLOADS:
            try:
                downloads.append(gr.update(value=str(composer.export_file(document, fmt)), interactive=True))
            except USER_ERRORS as exc:
                downloads.append(gr.update(value=None, interactive=False))
                message += f"  \n{label} export is unavailable for this score: {exc}"
        history = session.history
        return [
            session,
            session.to_browser(),
            gr.update(value=score_html(composer.engrave(document)), locks=locks_prop(session.locks)),
            message,
            session.locks.describe(),
            gr.update(choices=history.labels(), value=history.labels()[history.index]),
            gr.update(interactive=history.can_undo),
            gr.update(interactive=history.can_redo),
            "",
            *downloads,
            *(gr.update(value=None, interactive=False) for _ in AUDIO_DOWNLOADS),
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

    def change_locks(session: Session, make) -> list:
        if session.document is None:
            return [session, gr.update(), gr.update(), "open a score first"]
        session = session.with_locks(make(session.locks))
        return [session, session.to_browser(), gr.update(locks=locks_prop(session.locks)), session.locks.describe()]

    def toggle(session: Session, evt: gr.EventData):
        data = evt._data or {}
        column, part = int(data.get("column", -1)), int(data.get("part", 0))
        try:
            if data.get("single"):
                return change_locks(session, lambda locks: locks.toggle_cell(part, column))
            return change_locks(session, lambda locks: locks.toggle_column(column))
        except IndexError as exc:
            return [session, gr.update(), gr.update(), str(exc)]

    def render_audio(session: Session, tempo: float):
        if session.document is None:
            gr.Warning("open a score first")
            return [gr.update(), "**Error:** open a score first", *(gr.update() for _ in AUDIO_DOWNLOADS)]
        try:
            paths = [composer.export_file(session.document, fmt, tempo=tempo) for fmt, _ in AUDIO_DOWNLOADS]
        except USER_ERRORS as exc:
            gr.Warning(str(exc))
            return [gr.update(), f"**Error:** {html.escape(str(exc))}", *(gr.update() for _ in AUDIO_DOWNLOADS)]
        return [player_html(file_url(paths[0]), tempo), summary(session),
                *(gr.update(value=str(p), interactive=True) for p in paths)]

    with gr.Blocks(title="NotaGen Composer") as demo:
        session_state = gr.State(Session())
        saved = gr.BrowserState(None, storage_key="notagen-composer-session")
        gr.Markdown("## NotaGen Composer")
        with gr.Row():
            with gr.Column(scale=1, min_width=320):
                upload = gr.UploadButton(
                    "Open a score file (MusicXML, MXL, ABC, kern, MIDI)", file_types=UPLOAD_TYPES,
                    type="filepath", variant="primary", elem_id="upload",
                )
                example = gr.Dropdown(choices=list(composer.examples), value=None, label="...or an example", elem_id="example")
                open_button = gr.Button("Open example", elem_id="open-example")
                status = gr.Markdown("", elem_id="status")
                with gr.Accordion("Locks", open=True):
                    lock_summary = gr.Markdown("no measures locked", elem_id="lock-summary")
                    part_mode = gr.Checkbox(False, label="Clicks lock a single part (or Shift-click)", elem_id="part-mode")
                    with gr.Row():
                        lock_all = gr.Button("Lock all", size="sm", elem_id="lock-all")
                        unlock_all = gr.Button("Unlock all", size="sm", elem_id="unlock-all")
                        invert = gr.Button("Invert", size="sm", elem_id="invert-locks")
                with gr.Accordion("History", open=True):
                    with gr.Row():
                        undo = gr.Button("Undo", size="sm", interactive=False, elem_id="undo")
                        redo = gr.Button("Redo", size="sm", interactive=False, elem_id="redo")
                    versions = gr.Dropdown(choices=[], label="Versions", elem_id="versions")
                with gr.Accordion("Listen", open=True):
                    tempo = gr.Slider(0.25, 2.0, value=1.0, step=0.05, label="Tempo factor", elem_id="tempo")
                    audio_problem = composer.audio_problem
                    listen = gr.Button("Render audio", elem_id="listen", interactive=audio_problem is None)
                    if audio_problem:
                        gr.Markdown(audio_problem, elem_id="audio-problem")
                    player = gr.HTML("", elem_id="player")
                with gr.Accordion("Download", open=True):
                    with gr.Row():
                        score_downloads = [
                            gr.DownloadButton(label, interactive=False, size="sm", elem_id=f"download-{fmt}")
                            for fmt, label in SCORE_DOWNLOADS
                        ]
                    with gr.Row():
                        audio_downloads = [
                            gr.DownloadButton(label, interactive=False, size="sm", elem_id=f"download-{fmt}")
                            for fmt, label in AUDIO_DOWNLOADS
                        ]
            with gr.Column(scale=4):
                view = gr.HTML(EMPTY_VIEW, js_on_load=JS_ON_LOAD, locks={"columns": [], "cells": []},
                               part_mode=False, elem_id="score-view")

        version_outputs = [session_state, saved, view, status, lock_summary, versions, undo, redo, player,
                           *score_downloads, *audio_downloads]
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
        listen.click(render_audio, [session_state, tempo], [player, status, *audio_downloads])
        demo.load(restore, [saved, session_state], version_outputs)
    return demo
