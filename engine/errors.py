"""User-facing errors: one line that says what is wrong, shown in the UI or on stderr."""


class ScoreError(ValueError):
    """A score could not be read, converted or written; the message names the problem."""


class ModelError(RuntimeError):
    """A model could not be loaded or failed while generating; the message names the problem."""


def describe(exc: BaseException, limit: int = 200) -> str:
    """A library exception as one short line, for messages that wrap it."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:limit]
