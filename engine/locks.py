"""Measure locks: which cells of the measure grid (part, column) the models must leave alone.

Cells are indices into `ScoreDocument.grid`; the measure model reads the same rows and columns
(`engine.score.grid.measure_layout`), so inpainting keeps exactly the locked measures
(tests/test_measure_grid_locks.py).

A click on a measure column locks every part of it; a part-level lock addresses one cell. Locks are
an immutable set, so they travel with the session state and undo cleanly.
"""
from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class Locks:
    n_parts: int
    n_columns: int
    cells: frozenset[tuple[int, int]] = frozenset()

    def _column(self, column: int) -> frozenset[tuple[int, int]]:
        return frozenset((part, column) for part in range(self.n_parts))

    def _check(self, part: int, column: int) -> None:
        if not (0 <= part < self.n_parts and 0 <= column < self.n_columns):
            raise IndexError(f"no measure at part {part + 1}, column {column + 1}")

    def toggle_column(self, column: int) -> Locks:
        """Lock every part of the column, or unlock it if it is already fully locked."""
        self._check(0, column)
        whole = self._column(column)
        cells = self.cells - whole if whole <= self.cells else self.cells | whole
        return replace(self, cells=cells)

    def toggle_cell(self, part: int, column: int) -> Locks:
        self._check(part, column)
        return replace(self, cells=self.cells ^ {(part, column)})

    def all(self) -> Locks:
        return replace(self, cells=frozenset((p, c) for p in range(self.n_parts) for c in range(self.n_columns)))

    def none(self) -> Locks:
        return replace(self, cells=frozenset())

    def inverted(self) -> Locks:
        return replace(self, cells=self.all().cells - self.cells)

    def full_columns(self) -> list[int]:
        """Columns locked in every part (shown as a locked measure)."""
        return [c for c in range(self.n_columns) if self._column(c) <= self.cells]

    def partial_cells(self) -> list[tuple[int, int]]:
        """Locked cells of columns that are not fully locked (shown per staff)."""
        full = set(self.full_columns())
        return sorted(cell for cell in self.cells if cell[1] not in full)

    def resized(self, n_parts: int, n_columns: int) -> Locks:
        """The same locks on a grid of another shape (e.g. after a continuation adds measures)."""
        kept = frozenset((p, c) for p, c in self.cells if p < n_parts and c < n_columns)
        return Locks(n_parts, n_columns, kept)

    def describe(self) -> str:
        if not self.cells:
            return "no measures locked"
        full, partial = len(self.full_columns()), len(self.partial_cells())
        parts = [f"{full} measure{'s' * (full != 1)} locked"] if full else []
        if partial:
            parts.append(f"{partial} single-part cell{'s' * (partial != 1)} locked")
        return ", ".join(parts)
