"""User-facing errors: one line that says what is wrong, shown in the UI or on stderr."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator


class ScoreError(ValueError):
    """A score could not be read, converted or written; the message names the problem."""


class ModelError(RuntimeError):
    """A model could not be loaded or failed while generating; the message names the problem."""


def describe(exc: BaseException, limit: int = 200) -> str:
    """A library exception as one short line, for messages that wrap it."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:limit]


@contextmanager
def out_of_memory_as_model_error(what: str) -> Iterator[None]:
    """Report a model running out of memory as a `ModelError`, so the app shows it and keeps its state
    instead of failing with torch's multi-line message."""
    try:
        yield
    except (MemoryError, RuntimeError) as exc:
        if isinstance(exc, ModelError) or not _is_out_of_memory(exc):
            raise
        raise ModelError(f"{what} ran out of memory; try fewer bars or fewer actions at once") from exc


def _is_out_of_memory(exc: BaseException) -> bool:
    """torch.OutOfMemoryError (CUDA, MPS) or the CPU allocator's RuntimeError."""
    text = str(exc)
    return (isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError"
            or "out of memory" in text or "can't allocate memory" in text)
