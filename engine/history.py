"""Undo/redo: an immutable list of document versions with a cursor.

Every user action pushes a version; undo and redo move the cursor; pushing after an undo drops the
versions ahead of the cursor, as in every editor. The oldest versions fall off past `limit`, which
bounds a session's memory.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from engine.score.document import ScoreDocument


@dataclass(frozen=True)
class Version:
    """One state of the score and the action that made it (shown in the version list)."""

    document: ScoreDocument
    action: str


@dataclass(frozen=True)
class History:
    versions: tuple[Version, ...] = ()
    index: int = -1
    limit: int = 50

    @property
    def current(self) -> Version | None:
        return self.versions[self.index] if self.versions else None

    @property
    def can_undo(self) -> bool:
        return self.index > 0

    @property
    def can_redo(self) -> bool:
        return self.index < len(self.versions) - 1

    def push(self, document: ScoreDocument, action: str) -> History:
        """A new version after the current one; versions ahead of the cursor are dropped."""
        versions = (*self.versions[: self.index + 1], Version(document, action))[-self.limit :]
        return replace(self, versions=versions, index=len(versions) - 1)

    def replace_current(self, document: ScoreDocument, action: str) -> History:
        """Update the current version in place (a piece growing bar by bar is one version)."""
        versions = (*self.versions[: self.index], Version(document, action), *self.versions[self.index + 1 :])
        return replace(self, versions=versions)

    def undo(self) -> History:
        return self.jump(self.index - 1) if self.can_undo else self

    def redo(self) -> History:
        return self.jump(self.index + 1) if self.can_redo else self

    def jump(self, index: int) -> History:
        """Make version `index` current without dropping anything (the list stays for redo)."""
        if not 0 <= index < len(self.versions):
            raise IndexError(f"there is no version {index + 1}")
        return replace(self, index=index)

    def labels(self) -> list[str]:
        """'1. Opened Bach ...' for the version list, in order."""
        return [f"{i + 1}. {v.action}" for i, v in enumerate(self.versions)]
