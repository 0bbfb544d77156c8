"""Undo/redo history and measure locks."""
from __future__ import annotations

import pytest

from engine.history import History
from engine.locks import Locks
from engine.score.document import ScoreDocument


def doc(n: int) -> ScoreDocument:
    return ScoreDocument(musicxml=f"<score-partwise>{n}</score-partwise>", title=str(n))


def test_undo_redo_and_branching():
    history = History().push(doc(1), "open").push(doc(2), "inpaint").push(doc(3), "continue")
    assert history.current.document.title == "3"
    history = history.undo().undo()
    assert history.current.action == "open" and not history.can_undo and history.can_redo
    assert history.undo() is history
    history = history.redo()
    assert history.current.document.title == "2"
    history = history.push(doc(4), "generate")  # drops version 3
    assert [v.document.title for v in history.versions] == ["1", "2", "4"]
    assert not history.can_redo
    assert history.labels() == ["1. open", "2. inpaint", "3. generate"]
    assert history.jump(0).current.document.title == "1"
    with pytest.raises(IndexError):
        history.jump(7)


def test_history_is_bounded():
    history = History(limit=3)
    for n in range(10):
        history = history.push(doc(n), f"v{n}")
    assert [v.document.title for v in history.versions] == ["7", "8", "9"]
    assert history.index == 2


def test_column_and_cell_locks():
    locks = Locks(n_parts=4, n_columns=8)
    locks = locks.toggle_column(2).toggle_column(5)
    assert locks.full_columns() == [2, 5]
    locks = locks.toggle_cell(1, 2)  # unlock one part of a locked column
    assert locks.full_columns() == [5]
    assert locks.partial_cells() == [(0, 2), (2, 2), (3, 2)]
    assert locks.toggle_column(2).full_columns() == [2, 5]  # a partly locked column locks fully
    assert locks.toggle_column(5).full_columns() == []
    assert len(locks.all().cells) == 32 and not locks.none().cells
    assert locks.inverted().cells.isdisjoint(locks.cells)
    assert len(locks.inverted().cells) + len(locks.cells) == 32
    assert locks.resized(4, 4).partial_cells() == [(0, 2), (2, 2), (3, 2)]
    with pytest.raises(IndexError):
        locks.toggle_cell(4, 0)
    assert Locks(4, 8).toggle_column(1).describe() == "1 measure locked"
