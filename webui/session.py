"""One browser tab's state: its history of versions, its measure locks and the Compose panel's fields.

Held in `gr.State` on the server and mirrored to the browser (sessionStorage for the tab, see
webui/app.py) so a page reload finds the work again. The browser copy keeps the versions nearest the
current one (undo and redo) that fit a size budget: browser storage holds a few MiB per site.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable

from engine.errors import ScoreError
from engine.history import History
from engine.locks import Locks
from engine.score.document import ScoreDocument
from engine.score.limits import MAX_MEASURES, MAX_PARTS

BROWSER_BUDGET_CHARS = 3_000_000
MAX_SAVED_LOCKS = MAX_PARTS * MAX_MEASURES
"""Locked cells a restored session may list: no more than the largest score has cells."""


@dataclass(frozen=True)
class Session:
    history: History = field(default_factory=History)
    locks: Locks = field(default_factory=lambda: Locks(0, 0))
    cursor: int | None = None
    """The measure column clicked last: where "regenerate from here" starts."""
    run: str | None = None
    """The generation streaming into this tab (a key of `webui.compose_handlers.RUNNING`), None when idle."""
    compose: dict = field(default_factory=dict)
    """The Compose panel's fields as the user left them (prompt, header and sampling fields), by name."""

    @property
    def document(self) -> ScoreDocument | None:
        version = self.history.current
        return version.document if version else None

    def with_version(self, document: ScoreDocument, action: str, new_score: bool = False) -> Session:
        """A new version. A `new_score` (opened or generated) starts unlocked; a new version of the same
        score keeps its locks where the grid still has those cells."""
        session = replace(self, locks=Locks(0, 0), cursor=None) if new_score else self
        return session._showing(self.history.push(document, action))

    def with_growing_version(self, document: ScoreDocument, action: str, first: bool, new_score: bool = False) -> Session:
        """A streamed piece: the first preview is a new version, later ones replace it."""
        if first:
            return self.with_version(document, action, new_score)
        return self._showing(self.history.replace_current(document, action))

    def with_history(self, history: History) -> Session:
        return self._showing(history)

    def _showing(self, history: History) -> Session:
        document = history.current.document
        cursor = self.cursor if self.cursor is not None and self.cursor < document.n_measures else None
        return replace(self, history=history, locks=self.locks.resized(document.n_parts, document.n_measures), cursor=cursor)

    def with_locks(self, locks: Locks, cursor: int | None = None) -> Session:
        return replace(self, locks=locks, cursor=self.cursor if cursor is None else cursor)

    def with_compose(self, fields: dict) -> Session:
        return replace(self, compose=dict(fields))

    def to_browser(self) -> dict:
        """A JSON-able copy of the versions nearest the current one (redo branch included) within the
        storage budget: the current one first, then the older and newer ones alternately."""
        history = self.history
        kept, size = set(), 0
        order = sorted(range(len(history.versions)), key=lambda i: (abs(i - history.index), i > history.index))
        for i in order:
            size += len(history.versions[i].document.musicxml)
            if kept and size > BROWSER_BUDGET_CHARS:
                break
            kept.add(i)
        versions = [
            {"musicxml": v.document.musicxml, "title": v.document.title, "action": v.action}
            for i, v in enumerate(history.versions) if i in kept
        ]
        index = sum(1 for i in kept if i < history.index)
        return {"versions": versions, "index": index, "locks": self.saved_locks(), "compose": self.compose}

    def saved_locks(self) -> list[tuple[int, int]]:
        """The locked cells as `to_browser` stores them (webui/app.py also stores them alone)."""
        return sorted(self.locks.cells)

    @classmethod
    def from_browser(cls, stored: dict, open_saved: Callable[[list[tuple[str, str]]], list[ScoreDocument]]) -> Session:
        """The session saved by `to_browser`, its versions read by `open_saved` (`Composer.open_saved`: the
        readers and limits of an upload). A damaged entry raises `ScoreError`, as a bad upload does."""
        try:
            items = [(item["musicxml"], item["title"], item["action"]) for item in stored["versions"]]
            cells = stored.get("locks", [])
            if len(cells) > MAX_SAVED_LOCKS or not all(isinstance(text, str) for item in items for text in item):
                raise ValueError
            cells = frozenset((int(p), int(c)) for p, c in cells)
            index = int(stored.get("index", len(items) - 1))
            if items and not 0 <= index < len(items):
                raise ValueError
        except (KeyError, TypeError, ValueError, AttributeError):
            raise ScoreError("the saved session is damaged or from another version of the app") from None
        compose = compose_fields(stored)
        if not items:
            return Session(compose=compose)
        history = History()
        for document, (_, _, action) in zip(open_saved([(musicxml, title) for musicxml, title, _ in items]), items):
            history = history.push(document, action[:200])
        history = history.jump(index)
        document = history.current.document
        locks = Locks(document.n_parts, document.n_measures, cells).resized(document.n_parts, document.n_measures)
        return Session(history=history, locks=locks, compose=compose)


def compose_fields(stored) -> dict:
    """The Compose fields of a `to_browser` copy: text and number values only ({} if there are none)."""
    fields = stored.get("compose") if isinstance(stored, dict) else None
    if not isinstance(fields, dict):
        return {}
    return {str(name): value for name, value in fields.items() if value is None or isinstance(value, (str, int, float))}
