"""The Gradio Blocks app: the page's layout, and which handler each click runs.

The handlers (webui/handlers.py, webui/compose_handlers.py) return named outputs; the `*_updates`
functions below are the one place that puts them in the order of the components they update. Each tab's
`Session` (history + locks) lives in `gr.State` and is mirrored to the browser's storage.
"""
from __future__ import annotations

import inspect
from functools import partial

import gradio as gr

from engine.notagen.options import DEFAULT_MAX_BARS, DEFAULT_TEMPERATURE, DEFAULT_TOP_K, DEFAULT_TOP_P
from engine.service import Composer
from webui import compose_handlers as compose
from webui import handlers
from webui.handlers import AUDIO_DOWNLOADS, REQUESTED_DOWNLOADS, SCORE_DOWNLOADS, LockView, Made, Unchanged, VersionView
from webui.score_view import CSS as VIEW_CSS
from webui.score_view import CLICK_RELAY_JS, EMPTY_VIEW, JS_ON_LOAD
from webui.session import Session

UPLOAD_TYPES = [".musicxml", ".xml", ".mxl", ".abc", ".krn", ".mid", ".midi"]
LAYOUT_CSS = """
#toolbar { align-items: end; }
#app-title { flex: 0 0 240px; }
#app-title h2 { margin: 0 0 8px; white-space: nowrap; }
#lock-bar { align-items: center; gap: 8px; }
#lock-summary { flex: 0 0 150px; }
@media (min-width: 1000px) {
  #sidebar { position: sticky; top: 8px; align-self: flex-start; max-height: calc(100vh - 16px); overflow-y: auto;
             flex-wrap: nowrap; scrollbar-gutter: stable; scrollbar-width: thin; }
  #sidebar > * { flex-shrink: 0; }
}
"""
"""A compact toolbar above; on wide screens the controls scroll on their own (one column, never wrapped
into a clipped second one) beside the score."""
CSS = VIEW_CSS + LAYOUT_CSS
STORAGE_KEY = "notagen-composer-session"
STORE_SAVED_JS = f"""(saved) => {{
    if (!saved) return;
    const text = JSON.stringify(saved);
    for (const storage of [sessionStorage, localStorage]) {{
        try {{ storage.setItem('{STORAGE_KEY}', text); storage.setItem('{STORAGE_KEY}-locks', JSON.stringify(saved.locks)); }}
        catch (e) {{}}
    }}
}}"""
"""Each tab keeps its own work in sessionStorage (per tab, kept across reloads); the newest work of any tab
also goes to localStorage, only so that a brand-new tab can start from it."""
STORE_LOCKS_JS = f"""(locks) => {{
    if (!locks) return;
    const text = JSON.stringify(locks);
    try {{
        sessionStorage.setItem('{STORAGE_KEY}-locks', text);
        // localStorage's copy is the newest work of any tab: its locks only if that work is this tab's
        if (localStorage.getItem('{STORAGE_KEY}') === sessionStorage.getItem('{STORAGE_KEY}')) {{
            localStorage.setItem('{STORAGE_KEY}-locks', text);
        }}
    }} catch (e) {{}}
}}"""
"""A lock change stores the locks beside the saved copy (`STORAGE_KEY`-locks, which overrides the copy's
own on load); the copy stays as it is: on a long score it (every version's MusicXML) is MiBs to send,
parse and write on each click."""
LOAD_SAVED_JS = f"""(session, saved) => {{
    const storage = sessionStorage.getItem('{STORAGE_KEY}') ? sessionStorage : localStorage;
    const text = storage.getItem('{STORAGE_KEY}'), locks = storage.getItem('{STORAGE_KEY}-locks');
    try {{
        const stored = text ? JSON.parse(text) : null;
        if (stored && locks) stored.locks = JSON.parse(locks);
        return [session, stored];
    }} catch (e) {{ return [session, null]; }}
}}"""
SHOW_LOCKS_JS = """(locks) => { if (locks) document.dispatchEvent(new CustomEvent('score-locks', {detail: locks})); }"""
"""The server's locks to the score view's script (webui/score_view.py), which redraws only what changed."""
FIELD_INPUTS = {"period": "#period input", "composer": "#composer input", "instrumentation": "#instrumentation input",
                "ensemble": "#ensemble input", "key": "#key input", "metre": "#metre input",
                "tempo": "#header-tempo input", "max_bars": "#max-bars input", "seed": "#seed input",
                "temperature": "#temperature input[type=number]", "top_k": "#top-k input[type=number]",
                "top_p": "#top-p input[type=number]", "continue_bars": "#continue-bars input"}
"""Where the page shows each of `compose.FIELDS`."""
LOAD_FIELDS_JS = f"""(session, saved) => {{
    window.addEventListener('pagehide', () => {{
        let stored = null;
        try {{ stored = JSON.parse(sessionStorage.getItem('{STORAGE_KEY}')); }} catch (e) {{}}
        stored = stored || {{versions: [], locks: []}};
        const compose = {{...stored.compose}};  // a field not on the page (a closed accordion) keeps its value
        for (const [name, selector] of Object.entries({FIELD_INPUTS!r})) {{
            const input = document.querySelector(selector);
            if (input) compose[name] = input.type !== 'number' ? input.value : input.value === '' ? null : Number(input.value);
        }}
        const text = JSON.stringify({{...stored, compose}});
        try {{ sessionStorage.setItem('{STORAGE_KEY}', text); }} catch (e) {{}}
    }});
    return ({LOAD_SAVED_JS})(session, saved);
}}"""
"""Loads the tab's saved copy as LOAD_SAVED_JS does for the Compose fields. Each field's change reaches the
tab's session (and so its saved copy) through the server; as the page goes away (a reload, a closed tab)
the fields as shown are written into the tab's saved copy too, so a change made just before is not lost."""
FOLLOW_JS = "(on) => { document.querySelector('#score-view').dataset.follow = on ? 'on' : 'off'; }"
ZOOM_JS = "(zoom) => { document.querySelector('#score-view').style.setProperty('--zoom', zoom / 100); }"
CONFIRM_REWRITE_JS = """(session, sweeps, seed, rewrite) => [session, sweeps, seed,
    document.querySelector('#score-view .locked') !== null || !document.querySelector('#score-view g.measure')
    || window.confirm('No measure is locked: regenerate the whole piece?')]"""
"""Asked in the browser before an inpainting with no lock rewrites every measure."""

GRADIO_CACHE_CLEANUP = (1800, 3 * 3600)
"""Every 30 min Gradio deletes the uploads and served copies of downloads older than 3 h: bounded disk use."""
VERSION_OUTPUTS = 12 + len(SCORE_DOWNLOADS) + len(REQUESTED_DOWNLOADS)


def version_updates(outputs: VersionView | Unchanged) -> list:
    """session, saved, saved locks, view, locks shown, status, lock summary, regenerate-from button, versions, undo, redo,
    player, downloads (score, then audio and PDF, which every new version clears)."""
    if isinstance(outputs, Unchanged):
        return [outputs.session, gr.update(), gr.update(), gr.update(), gr.update(), status_update(outputs),
                *(gr.update() for _ in range(VERSION_OUTPUTS - 6))]
    if outputs.downloads is None:  # a preview: its files come with the final version
        downloads = [gr.update(interactive=False) for _ in SCORE_DOWNLOADS]
    else:
        downloads = [file_update(path) for path in outputs.downloads]
    return [
        outputs.session,
        outputs.saved,
        outputs.saved_locks,
        outputs.view,
        outputs.locks,
        outputs.status,
        outputs.lock_summary,
        outputs.regenerate_label,
        gr.update(choices=outputs.versions, value=outputs.version),
        gr.update(interactive=outputs.can_undo),
        gr.update(interactive=outputs.can_redo),
        "",
        *downloads,
        *(file_update(None) for _ in REQUESTED_DOWNLOADS),
    ]


def lock_updates(outputs: LockView | Unchanged) -> list:
    """session, saved locks, locks shown, lock summary, regenerate-from button."""
    if isinstance(outputs, Unchanged):
        return [outputs.session, gr.update(), gr.update(), status_update(outputs), gr.update()]
    return [outputs.session, outputs.saved_locks, outputs.locks, outputs.lock_summary, outputs.regenerate_label]


def audio_updates(outputs: Made) -> list:
    """status, player, audio downloads."""
    return [outputs.status, gr.update() if outputs.player is None else outputs.player,
            *files_updates(outputs, len(AUDIO_DOWNLOADS))]


def pdf_updates(outputs: Made) -> list:
    """status, PDF download."""
    return [outputs.status, *files_updates(outputs, 1)]


def status_update(outputs: Unchanged):
    return gr.update() if outputs.status is None else outputs.status


def files_updates(outputs: Made, n_files: int) -> list:
    if outputs.files is None:
        return [gr.update() for _ in range(n_files)]
    return [file_update(path) for path in outputs.files]


def file_update(path: str | None) -> dict:
    """A download button offering `path`, or off (None)."""
    return gr.update(value=path, interactive=True) if path else gr.update(value=None, interactive=False)


def wired(updates, handler, *bound):
    """A Gradio event function: `handler` with `bound` (the composer) first, its outputs as `updates`.

    It keeps the handler's name, and is a generator if the handler is one: Gradio streams those, and
    Stop cancels them."""
    call = partial(handler, *bound)
    if inspect.isgeneratorfunction(handler):
        def run(*inputs):
            for outputs in call(*inputs):
                yield updates(outputs)
    else:
        def run(*inputs):
            return updates(call(*inputs))
    run.__name__ = getattr(handler, "func", handler).__name__
    return run


def measure_clicked(session: Session, evt: gr.EventData) -> list:
    """A click on the score: Gradio passes the `measure_toggle` event's data in `evt`."""
    return lock_updates(handlers.toggle(session, evt._data or {}))


def choices_update(choices: compose.Choices) -> dict:
    return gr.update(choices=choices.options, value=choices.value)


def fields_updates(fields: compose.PromptFields) -> list:
    """period, composer, instrumentation, ensemble (with their choices), key, metre, tempo, then the
    `compose.SETTINGS` fields (those saved as None keep their default)."""
    values = fields.values
    return [values["period"], *(gr.update(choices=choices.options, value=values[name]) for name, choices in
                                (("composer", fields.composers), ("instrumentation", fields.instrumentations),
                                 ("ensemble", fields.ensembles))),
            values["key"], values["metre"], values["tempo"],
            *(gr.update() if values[name] is None else values[name] for name in compose.SETTINGS)]


def session_updates(session: Session) -> list:
    """session, saved."""
    return [session, session.to_browser()]


def build_app(composer: Composer) -> gr.Blocks:
    """The Blocks app over one `Composer` (shared by all sessions; each tab has its own `Session`)."""
    with gr.Blocks(title="NotaGen Composer", fill_width=True, delete_cache=GRADIO_CACHE_CLEANUP) as demo:
        session_state = gr.State(Session())
        saved = gr.JSON(None, visible=False, elem_id="saved-session")
        saved_locks = gr.JSON(None, visible=False, elem_id="saved-locks")
        locks_shown = gr.JSON(None, visible=False, elem_id="locks-shown")
        # The score view's clicks reach Python through this small component (webui/score_view.py CLICK_RELAY_JS).
        score_clicks = gr.HTML("", js_on_load=CLICK_RELAY_JS, visible="hidden", elem_id="score-clicks")
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
                    with gr.Group():
                        with gr.Row():
                            ensemble = gr.Dropdown([compose.MODELS_CHOICE], value=compose.MODELS_CHOICE,
                                                   label="Ensemble", scale=3, elem_id="ensemble")
                            header_tempo = gr.Number(None, precision=0, minimum=10, maximum=400, label="Tempo (bpm)",
                                                     placeholder="model's", scale=2, min_width=90,
                                                     elem_id="header-tempo")
                        with gr.Row():
                            key = gr.Dropdown(compose.KEY_CHOICES, value=compose.MODELS_CHOICE, label="Key",
                                              min_width=100, elem_id="key")
                            metre = gr.Dropdown(compose.METRE_CHOICES, value=compose.MODELS_CHOICE, label="Metre",
                                                min_width=100, elem_id="metre")
                    with gr.Row():
                        max_bars = gr.Number(DEFAULT_MAX_BARS, precision=0, minimum=1, maximum=128, label="Maximum bars",
                                             min_width=100, elem_id="max-bars")
                        seed = gr.Number(-1, precision=0, label="Seed (-1: random)", min_width=100, elem_id="seed")
                    with gr.Accordion("Sampling", open=False):
                        temperature = gr.Slider(0.1, 2.0, value=DEFAULT_TEMPERATURE, step=0.05, label="Temperature",
                                                elem_id="temperature")
                        top_k = gr.Slider(1, 64, value=DEFAULT_TOP_K, step=1, label="Top-k", elem_id="top-k")
                        top_p = gr.Slider(0.05, 1.0, value=DEFAULT_TOP_P, step=0.05, label="Top-p", elem_id="top-p")
                    with gr.Row():
                        generate_button = gr.Button("Generate", variant="primary", interactive=can_compose,
                                                    min_width=100, elem_id="generate")
                        stop_button = gr.Button("Stop", variant="secondary", min_width=100, elem_id="stop")
                    with gr.Row(equal_height=True):
                        continue_bars = gr.Number(8, precision=0, minimum=1, maximum=64, label="Bars to add",
                                                  min_width=100, elem_id="continue-bars")
                        continue_button = gr.Button("Continue", interactive=can_compose, min_width=100, elem_id="continue")
                    regenerate_button = gr.Button(handlers.REGENERATE_FROM_NONE, interactive=can_compose,
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
                    follow = gr.Checkbox(True, label="Follow the playing measure", elem_id="follow")
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
                    part_mode = gr.Checkbox(False, label="Lock single parts (or Alt-click)", scale=2,
                                            min_width=150, elem_id="part-mode")
                    zoom = gr.Slider(40, 200, value=100, step=10, label="Zoom %", scale=0, min_width=190,
                                     elem_id="zoom")
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
                rewrite_all = gr.Checkbox(False, visible=False)
                view = gr.HTML(EMPTY_VIEW, js_on_load=JS_ON_LOAD, part_mode=False, elem_id="score-view")

        version_outputs = [session_state, saved, saved_locks, view, locks_shown, status, lock_summary, regenerate_button,
                           versions, undo, redo, player, *score_downloads, *audio_downloads, pdf_download]
        # A lock change leaves the view out of its outputs (an update of it restyles a long score: seconds) and
        # shows no progress: the page has shown the click already, the answer only confirms it. Every event that
        # changes the locks sets `saved_locks` and `locks_shown`, so they always hold the server's locks.
        lock_outputs = [session_state, saved_locks, locks_shown, lock_summary, regenerate_button]
        shown = partial(wired, version_updates)
        upload.upload(shown(handlers.open_upload, composer), [session_state, upload], version_outputs)
        open_button.click(shown(handlers.open_example, composer), [session_state, example], version_outputs)
        undo.click(shown(handlers.undo, composer), session_state, version_outputs)
        redo.click(shown(handlers.redo, composer), session_state, version_outputs)
        versions.input(shown(handlers.jump, composer), [session_state, versions], version_outputs)
        # Every click goes (Gradio drops clicks while one is pending otherwise) and lock changes run one at
        # a time; each click sends the locks it leaves, so the last one processed is the newest state.
        one_by_one = dict(concurrency_id="locks", concurrency_limit=1)
        quiet = dict(one_by_one, show_progress="hidden")
        score_clicks.measure_toggle(measure_clicked, session_state, lock_outputs, trigger_mode="multiple", **quiet)
        locks_shown.change(None, locks_shown, None, js=SHOW_LOCKS_JS)
        part_mode.change(lambda on: gr.update(part_mode=on), part_mode, view, show_progress="hidden")
        follow.change(None, follow, None, js=FOLLOW_JS)
        zoom.change(None, zoom, None, js=ZOOM_JS)
        lock_all.click(wired(lock_updates, handlers.lock_all), session_state, lock_outputs, **quiet)
        unlock_all.click(wired(lock_updates, handlers.unlock_all), session_state, lock_outputs, **quiet)
        invert.click(wired(lock_updates, handlers.invert_locks), session_state, lock_outputs, **quiet)
        # The model, audio and PDF actions share one limit (app.py's --concurrency): Gradio counts each
        # event on its own otherwise, so N generations, N inpaintings and N renders could all run at once.
        heavy = dict(concurrency_id="heavy")
        listen.click(wired(audio_updates, handlers.render_audio, composer), [session_state, tempo],
                     [status, player, *audio_downloads], **heavy)
        make_pdf_button.click(wired(pdf_updates, handlers.make_pdf, composer), session_state, [status, pdf_download],
                              **heavy)
        demo.load(shown(handlers.restore, composer), [session_state, saved], version_outputs, js=LOAD_SAVED_JS)
        saved.change(None, saved, None, js=STORE_SAVED_JS)
        saved_locks.change(None, saved_locks, None, js=STORE_LOCKS_JS)

        # The fields below a changed one follow it, then the tab's session keeps them all. User changes only
        # (`input`): the fields restored on load must not reset the ones below them.
        fields = [period, composer_name, instrumentation, ensemble, key, metre, header_tempo,
                  max_bars, seed, temperature, top_k, top_p, continue_bars]
        demo.load(wired(fields_updates, compose.restore_fields, composer), [session_state, saved], fields,
                  js=LOAD_FIELDS_JS)
        followers = {  # a field's event, and the one that makes the field below it follow
            period: (wired(choices_update, compose.composers_for, composer), [period], composer_name),
            composer_name: (wired(choices_update, compose.instrumentations_for, composer), [period, composer_name],
                            instrumentation),
            instrumentation: (wired(choices_update, compose.ensembles_of), [period, composer_name, instrumentation],
                              ensemble),
        }
        remember = (wired(session_updates, compose.remember_fields), [session_state, *fields], [session_state, saved])
        for changed in fields:
            event = changed.input
            for field in fields[fields.index(changed) : len(followers)]:
                event = event(*followers[field]).then
            event(*remember, **one_by_one)  # after a lock change, not beside it: each keeps the other's
        sampling_inputs = [temperature, top_k, top_p, seed]
        # A streamed piece shows its progress on the score alone: Gradio's indicator on every visible output
        # (five) redraws its timer each frame; in headless Chromium that took 0.5-0.6 of a core from the
        # model while it wrote the first bar, 0.3 with the score's indicator only.
        streamed = dict(heavy, show_progress_on=[view])
        generate_button.click(shown(compose.generate, composer),
                              [session_state, period, composer_name, instrumentation, *sampling_inputs, max_bars,
                               ensemble, key, metre, header_tempo],
                              version_outputs, **streamed)
        continue_button.click(shown(partial(compose.continue_piece, from_cursor=False), composer),
                              [session_state, continue_bars, *sampling_inputs], version_outputs, **streamed)
        regenerate_button.click(shown(partial(compose.continue_piece, from_cursor=True), composer),
                                [session_state, continue_bars, *sampling_inputs], version_outputs, **streamed)
        stop_button.click(shown(compose.stopped, composer), session_state, version_outputs)
        inpaint_button.click(shown(compose.regenerate_unlocked, composer), [session_state, sweeps, seed, rewrite_all],
                             version_outputs, js=CONFIRM_REWRITE_JS, **heavy)
    return demo
