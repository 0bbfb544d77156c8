"""What each click on the page does: open, undo/redo, restore, lock, listen, make a PDF.

A handler takes the `Composer` and the tab's `Session` (both first, the composer bound by webui/app.py)
plus the user's inputs, makes one facade call, and returns named outputs; webui/app.py turns them into
Gradio's component order. A failing action hands back the session unchanged and says why, so the score
on screen and the history are never lost. Composing with the models is in webui/compose_handlers.py.
"""
from __future__ import annotations

import html
from dataclasses import dataclass

import gradio as gr

from engine.errors import ModelError, ScoreError
from engine.locks import Locks
from engine.service import Composer
from webui.score_view import locks_shown, player_html, score_html, unengraved_html
from webui.session import Session

SCORE_DOWNLOADS = (("musicxml", "MusicXML"), ("mid", "MIDI"), ("abc", "ABC"), ("svg", "SVG"))
AUDIO_DOWNLOADS = (("ogg", "Ogg"), ("wav", "WAV"))
REQUESTED_DOWNLOADS = (*AUDIO_DOWNLOADS, ("pdf", "PDF"))
"""Made on request (Render audio, Make PDF: each takes seconds), so every new version clears them."""
USER_ERRORS = (ScoreError, ModelError)
REGENERATE_FROM_NONE = "Regenerate from a clicked measure"


@dataclass(frozen=True)
class LockView:
    """New locks: the session, its copy for the browser, the view's highlight and the summary beside it."""
    session: Session

    @property
    def saved(self) -> dict:
        return self.session.to_browser()

    @property
    def saved_locks(self) -> list:
        """The locks alone for the browser's copy: a lock change leaves the versions (MiBs) as they are."""
        return self.session.saved_locks()

    @property
    def locks(self) -> dict:
        return locks_shown(self.session.locks)

    @property
    def lock_summary(self) -> str:
        return self.session.locks.describe()

    @property
    def regenerate_label(self) -> str:
        """The regenerate-from button names the measure it starts at, and why (`regenerate_start`)."""
        cursor, document = self.session.cursor, self.session.document
        if cursor is None or document is None:
            return REGENERATE_FROM_NONE
        start, clicked = _first_rewritten(self.session), document.grid.columns[cursor].number
        if start >= document.n_measures:
            return f"{REGENERATE_FROM_NONE} (measure {clicked}, the last, is locked)"
        if start == cursor:
            return f"Regenerate from measure {clicked} (clicked last)"
        return f"Regenerate from measure {document.grid.columns[start].number} (keeps measure {clicked}, locked)"


def _first_rewritten(session: Session) -> int:
    """The measure clicked last, or the one after it when the click left it locked (it is kept)."""
    return session.cursor + 1 if any(column == session.cursor for _, column in session.locks.cells) else session.cursor


def regenerate_start(session: Session) -> tuple[int | None, str | None]:
    """The column "Regenerate from" starts at, or None and why it cannot start.

    A click both picks the measure and toggles its lock. NotaGen keeps what comes before the start and
    rewrites everything after it, so a clicked measure the click left locked is kept (the start is the
    one after it), and a locked measure further on refuses the action: nothing locked is ever rewritten."""
    document = session.document
    if session.cursor is None or document is None:
        return None, "click the measure to regenerate from first"
    start = _first_rewritten(session)
    if start >= document.n_measures:
        return None, "the measure clicked last is locked and the last one: there is nothing after it to regenerate"
    later = sorted({column for _, column in session.locks.cells if column >= start})
    if later:
        numbers = ", ".join(str(document.grid.columns[c].number) for c in later[:5]) + (", ..." if len(later) > 5 else "")
        return None, (f"measure{'s' * (len(later) > 1)} {numbers} locked after measure {document.grid.columns[start].number}: "
                      "regenerating from there rewrites every measure to the end. Unlock them, or use Regenerate unlocked")
    return start, None


@dataclass(frozen=True)
class VersionView(LockView):
    """A version on screen: as `LockView`, and the status line, the engraved score and its downloads.

    Every new version also clears the player and the `REQUESTED_DOWNLOADS` made for the one before."""
    status: str
    view: str
    """The engraved score (HTML), or why it could not be engraved."""
    downloads: tuple[str | None, ...] | None
    """A file per `SCORE_DOWNLOADS` format (None: that export failed); None for a preview (a piece still
    being generated), whose buttons stay off until its final version makes the files."""

    @property
    def versions(self) -> list[str]:
        return self.session.history.labels()

    @property
    def version(self) -> str:
        return self.versions[self.session.history.index]

    @property
    def can_undo(self) -> bool:
        return self.session.history.can_undo

    @property
    def can_redo(self) -> bool:
        return self.session.history.can_redo


@dataclass(frozen=True)
class Unchanged:
    """An action that changes nothing on screen but its message (None: not even that); the tab keeps
    `session`, the very object it had. The message goes where the action reports: the status line, or
    the lock summary for a lock action."""
    session: Session
    status: str | None = None


@dataclass(frozen=True)
class Made:
    """Files made on request (Render audio: Ogg, WAV and the player; Make PDF: the PDF) and the status.

    `files` None: nothing was made (the status says why) and the files and player on screen stay."""
    status: str
    files: tuple[str, ...] | None = None
    player: str | None = None


def summary(session: Session) -> str:
    document = session.document
    return f"**{html.escape(document.title)}**: {document.n_parts} parts, {document.n_measures} measures"


def show(composer: Composer, session: Session, message: str, preview: bool = False) -> VersionView:
    """The session's current version on screen, with its downloads unless it is a `preview`."""
    document = session.document
    downloads = None
    if not preview:
        downloads = []
        for fmt, label in SCORE_DOWNLOADS:
            try:
                downloads.append(str(composer.export_file(document, fmt)))
            except USER_ERRORS as exc:
                downloads.append(None)
                message += f"  \n{label} export is unavailable for this score: {exc}"
        downloads = tuple(downloads)
    try:
        view = score_html(composer.engrave(document))
    except ScoreError as exc:  # the version is kept (history, downloads); only its picture is missing
        view = unengraved_html(str(exc))
        message += f"  \nThis version could not be engraved: {exc}"
    return VersionView(session, message, view, downloads)


def failed(session: Session, message: str) -> Unchanged:
    """The user sees `message` as a toast and in the status line; the tab keeps its session."""
    gr.Warning(message)
    return Unchanged(session, f"**Error:** {html.escape(message)}")


def open_upload(composer: Composer, session: Session, path: str | None) -> VersionView | Unchanged:
    if not path:
        return failed(session, "no file was received")
    try:
        document = composer.open_file(path)
        session = session.with_version(document, f"Opened {document.title}", new_score=True)
        return show(composer, session, summary(session))
    except USER_ERRORS as exc:
        return failed(session, f"could not open the file: {exc}")


def open_example(composer: Composer, session: Session, title: str | None) -> VersionView | Unchanged:
    if not title:
        return failed(session, "pick an example first")
    try:
        session = session.with_version(composer.open_example(title), f"Opened {title}", new_score=True)
        return show(composer, session, summary(session))
    except USER_ERRORS as exc:
        return failed(session, f"could not open the example: {exc}")


def undo(composer: Composer, session: Session) -> VersionView | Unchanged:
    return move(composer, session, lambda history: history.undo())


def redo(composer: Composer, session: Session) -> VersionView | Unchanged:
    return move(composer, session, lambda history: history.redo())


def jump(composer: Composer, session: Session, label: str | None) -> VersionView | Unchanged:
    """The version picked by its `label` in the Versions list."""
    return move(composer, session,
                lambda history: history.jump(history.labels().index(label)) if label in history.labels() else history)


def move(composer: Composer, session: Session, step) -> VersionView | Unchanged:
    """Show the version `step(history)` moves to; nothing changes if it stays where it was."""
    history = session.history
    if not history.versions:
        return failed(session, "there is nothing to undo yet")
    history = step(history)
    if history is session.history or history.index == session.history.index:
        return Unchanged(session)
    session = session.with_history(history)
    return show(composer, session, summary(session))


def restore(composer: Composer, session: Session, saved: dict | None) -> VersionView | Unchanged:
    """On page load: bring back the tab's work from the browser's storage, read as an upload is (the
    browser's copy is user input: the same readers, limits and budget)."""
    if session.document is None and saved:
        try:
            session = Session.from_browser(saved, composer.open_saved)
        except USER_ERRORS as exc:
            return failed(session, f"could not restore the saved work: {exc}")
    if session.document is None:
        return Unchanged(session)
    return show(composer, session, summary(session) + " (restored)")


def change_locks(session: Session, make, cursor: int | None = None) -> LockView | Unchanged:
    """The locks `make(locks)` returns; `cursor` is the measure column just clicked, if any."""
    if session.document is None:
        return Unchanged(session, "open a score first")
    return LockView(session.with_locks(make(session.locks), cursor))


def lock_all(session: Session) -> LockView | Unchanged:
    return change_locks(session, Locks.all)


def unlock_all(session: Session) -> LockView | Unchanged:
    return change_locks(session, Locks.none)


def invert_locks(session: Session) -> LockView | Unchanged:
    return change_locks(session, Locks.inverted)


def toggle(session: Session, click: dict) -> LockView | Unchanged:
    """A click on the score (the `measure_toggle` event data the view sends through `score_clicks`): `locks`,
    the locks the view shows after it (as `locks_shown` writes them: whole columns and single cells), and the
    `column` clicked.

    The view works the click out itself (a measure, a Shift-click or drag range, one part's cell) so it
    shows at once; sending the result, not the click, keeps the locks right however quick the clicks."""
    shown = click.get("locks") or {}
    locks = session.locks
    try:
        cells = {(int(p), int(c)) for p, c in shown.get("cells", [])}
        cells |= {(p, int(c)) for c in shown.get("columns", []) for p in range(locks.n_parts)}
        outside = [cell for cell in cells if not (0 <= cell[0] < locks.n_parts and 0 <= cell[1] < locks.n_columns)]
        if outside:
            raise IndexError(f"no measure at part {outside[0][0] + 1}, column {outside[0][1] + 1}")
        column = int(click.get("column", 0))
    except (IndexError, TypeError, ValueError) as exc:
        return Unchanged(session, str(exc))
    return change_locks(session, lambda old: Locks(old.n_parts, old.n_columns, frozenset(cells)),
                        column if 0 <= column < locks.n_columns else None)


def request_failed(message: str) -> Made:
    """A Render audio or Make PDF that could not be done: the status says why, its outputs stay."""
    gr.Warning(message)
    return Made(f"**Error:** {html.escape(message)}")


def render_audio(composer: Composer, session: Session, tempo: float) -> Made:
    if session.document is None:
        return request_failed("open a score first")
    try:
        paths = [composer.export_file(session.document, fmt, tempo=tempo) for fmt, _ in AUDIO_DOWNLOADS]
    except USER_ERRORS as exc:
        return request_failed(str(exc))
    onsets = composer.measure_onsets(session.document)
    player = player_html(f"gradio_api/file={paths[0]}", tempo, onsets)
    return Made(summary(session), tuple(str(p) for p in paths), player)


def make_pdf(composer: Composer, session: Session) -> Made:
    if session.document is None:
        return request_failed("open a score first")
    try:
        path = composer.export_file(session.document, "pdf")
    except USER_ERRORS as exc:
        return request_failed(str(exc))
    return Made(summary(session) + ". The PDF is ready.", (str(path),))
