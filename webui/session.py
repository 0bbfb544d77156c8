"""One browser tab's state: its history of versions and its measure locks.

Held in `gr.State` on the server and mirrored to the browser (sessionStorage for the tab, see
webui/app.py) so a page reload finds the work again. The browser copy keeps the newest versions that fit
a size budget: browser storage holds a few MiB per site.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

from engine.history import History
from engine.locks import Locks
from engine.score.document import ScoreDocument

BROWSER_BUDGET_CHARS = 3_000_000


@dataclass(frozen=True)
class Session:
    history: History = field(default_factory=History)
    locks: Locks = field(default_factory=lambda: Locks(0, 0))
    cursor: int | None = None
    """The measure column clicked last: where "regenerate from here" starts."""
    run: str | None = None
    """The generation streaming into this tab (a key of `webui.compose_handlers.RUNNING`), None when idle."""

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
        return Session(history=history, locks=self.locks.resized(document.n_parts, document.n_measures), cursor=cursor)

    def with_locks(self, locks: Locks, cursor: int | None = None) -> Session:
        return replace(self, locks=locks, cursor=self.cursor if cursor is None else cursor)

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
        return {"versions": versions, "index": index, "locks": sorted(self.locks.cells)}

    @classmethod
    def from_browser(cls, stored: dict | None) -> Session:
        """The session saved by `to_browser`; anything unreadable gives an empty session."""
        try:
            history = History()
            for item in stored["versions"]:
                history = history.push(ScoreDocument(musicxml=item["musicxml"], title=item["title"]), item["action"])
            history = history.jump(int(stored.get("index", len(history.versions) - 1)))
            document = history.current.document
            cells = frozenset((int(p), int(c)) for p, c in stored.get("locks", []))
            locks = Locks(document.n_parts, document.n_measures, cells).resized(document.n_parts, document.n_measures)
            return Session(history=history, locks=locks)
        except Exception:  # an old or damaged localStorage entry must never break the page
            return Session()
