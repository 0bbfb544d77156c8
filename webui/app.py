"""The Gradio Blocks app: open a score, see it engraved, hear it, download it.

A thin layer over `engine.service.Composer`: every handler turns a user action into one facade call
and the result into component updates. A failing action never replaces the score on screen: it
returns the current document unchanged and shows the error in the status line.
"""
from __future__ import annotations

import html

import gradio as gr

from engine.errors import ModelError, ScoreError
from engine.score.document import ScoreDocument
from engine.service import Composer

UPLOAD_TYPES = [".musicxml", ".xml", ".mxl", ".abc", ".krn", ".mid", ".midi"]
DOWNLOADS = (("musicxml", "MusicXML"), ("mid", "MIDI"), ("abc", "ABC"))

CSS = """
#score-view { background: white; border-radius: 8px; min-height: 320px; }
#score-view .score-page svg { width: 100%; height: auto; display: block; }
#score-view .score-page + .score-page { border-top: 1px dashed #ccc; margin-top: 12px; padding-top: 12px; }
#score-view .score-empty { color: #666; padding: 48px; text-align: center; }
"""
EMPTY_VIEW = '<div class="score-empty">Open a score file or pick an example to see it engraved here.</div>'


def score_html(pages: tuple[str, ...]) -> str:
    """All engraved pages, each scaled to the width of the view."""
    return "".join(f'<div class="score-page" data-page="{i + 1}">{svg}</div>' for i, svg in enumerate(pages))


def build_app(composer: Composer) -> gr.Blocks:
    """The Blocks app over one `Composer` (shared by all sessions; each tab has its own document)."""

    def show(document: ScoreDocument, message: str):
        pages = composer.engrave(document).pages
        downloads = []
        for fmt, label in DOWNLOADS:
            try:
                downloads.append(gr.update(value=str(composer.export_file(document, fmt)), interactive=True))
            except ScoreError as exc:
                downloads.append(gr.update(value=None, interactive=False))
                message += f"  \n{label} export is unavailable for this score: {exc}"
        return [document, score_html(pages), message, gr.update(value=None), *downloads]

    def unchanged(document: ScoreDocument | None, message: str):
        gr.Warning(message)
        return [document, gr.update(), f"**Error:** {html.escape(message)}", gr.update(), *(gr.update() for _ in DOWNLOADS)]

    def summary(document: ScoreDocument) -> str:
        return f"**{html.escape(document.title)}**: {document.n_parts} parts, {document.n_measures} measures"

    def open_upload(path: str | None, current: ScoreDocument | None):
        if not path:
            return unchanged(current, "no file was received")
        try:
            document = composer.open_file(path)
            return show(document, summary(document))
        except (ScoreError, ModelError) as exc:
            return unchanged(current, f"could not open the file: {exc}")

    def open_example(title: str | None, current: ScoreDocument | None):
        if not title:
            return unchanged(current, "pick an example first")
        try:
            document = composer.open_example(title)
            return show(document, summary(document))
        except (ScoreError, ModelError) as exc:
            return unchanged(current, f"could not open the example: {exc}")

    def render_audio(current: ScoreDocument | None, tempo: float):
        if current is None:
            gr.Warning("open a score first")
            return gr.update(), "**Error:** open a score first"
        try:
            path = composer.export_file(current, "ogg", tempo=tempo)
        except ScoreError as exc:
            gr.Warning(str(exc))
            return gr.update(), f"**Error:** {html.escape(str(exc))}"
        return gr.update(value=str(path)), summary(current)

    with gr.Blocks(title="NotaGen Composer") as demo:
        document_state = gr.State(None)
        gr.Markdown("## NotaGen Composer")
        with gr.Row():
            with gr.Column(scale=1, min_width=300):
                upload = gr.UploadButton(
                    "Open a score file (MusicXML, MXL, ABC, kern, MIDI)", file_types=UPLOAD_TYPES,
                    type="filepath", variant="primary", elem_id="upload",
                )
                example = gr.Dropdown(choices=list(composer.examples), value=None, label="...or an example", elem_id="example")
                open_button = gr.Button("Open example", elem_id="open-example")
                status = gr.Markdown("", elem_id="status")
                with gr.Group():
                    tempo = gr.Slider(0.25, 2.0, value=1.0, step=0.05, label="Tempo factor", elem_id="tempo")
                    audio_problem = composer.audio_problem
                    listen = gr.Button("Render audio", elem_id="listen", interactive=audio_problem is None)
                    audio = gr.Audio(label="Audio", type="filepath", interactive=False, elem_id="audio")
                    if audio_problem:
                        gr.Markdown(audio_problem, elem_id="audio-problem")
                with gr.Row():
                    download_buttons = [
                        gr.DownloadButton(label, interactive=False, size="sm", elem_id=f"download-{fmt}")
                        for fmt, label in DOWNLOADS
                    ]
            with gr.Column(scale=4):
                view = gr.HTML(EMPTY_VIEW, js_on_load=None, elem_id="score-view")

        outputs = [document_state, view, status, audio, *download_buttons]
        upload.upload(open_upload, [upload, document_state], outputs)
        open_button.click(open_example, [example, document_state], outputs)
        listen.click(render_audio, [document_state, tempo], [audio, status])
    return demo
