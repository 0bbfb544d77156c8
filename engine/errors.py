"""User-facing errors: one line that says what is wrong, shown in the UI or on stderr."""


class ScoreError(ValueError):
    """A score could not be read, converted or written; the message names the problem."""


class ModelError(RuntimeError):
    """A model could not be loaded or failed while generating; the message names the problem."""
