"""Exception types raised by ncf. Each message says what was wrong and what was expected."""

from __future__ import annotations


class NCFError(Exception):
    """Base class for ncf errors."""


class DataError(NCFError, ValueError):
    """Malformed input data. The message names the file, line and field where known."""

    def __init__(
        self,
        message: str,
        *,
        path: str | None = None,
        line: int | None = None,
        field: str | None = None,
    ) -> None:
        self.path = path
        self.line = line
        self.field = field
        where = []
        if path is not None:
            where.append(str(path))
        if line is not None:
            where.append(f"line {line}")
        if field is not None:
            where.append(f"field {field!r}")
        prefix = ", ".join(where)
        super().__init__(f"{prefix}: {message}" if prefix else message)


class DatasetNotFoundError(NCFError, FileNotFoundError):
    """A named dataset is neither on disk nor downloadable."""


class UnknownIdError(NCFError, KeyError):
    """A raw user or item id that the vocabulary does not know."""

    def __str__(self) -> str:  # KeyError quotes its message; we want it plain
        return str(self.args[0]) if self.args else ""


class SplitError(NCFError, ValueError):
    """A split that would leave a user with nothing to train on, or other impossible split."""


class NotFittedError(NCFError, RuntimeError):
    """A model was used before fit."""


class TrainingDivergedError(NCFError, RuntimeError):
    """Loss became NaN or infinite."""


class ModelFileError(NCFError, ValueError):
    """A model directory that is missing, truncated, tampered with or of an unknown format."""
