"""Exceptions raised by the checkpoint engine. Every message names the file or run concerned."""

from __future__ import annotations


class CheckpointError(Exception):
    """Base class of every checkpoint error."""


class InvalidNameError(CheckpointError, ValueError):
    """A run id or loader name that is empty or could escape the checkpoint base."""


class RunNotFoundError(CheckpointError, LookupError):
    """The run id names no run under the base."""


class CorruptCheckpointError(CheckpointError):
    """A snapshot, journal or run file cannot be read. ``path`` names it; ``set_aside``: where it went."""

    def __init__(self, message: str, path: str = "", set_aside: str | None = None) -> None:
        super().__init__(message)
        self.path = path
        self.set_aside = set_aside


class UnsupportedSchemaError(CheckpointError):
    """A file written with a ``schema_version`` this code does not know (a newer tk_checkpoint wrote it)."""


class CheckpointLockedError(CheckpointError):
    """Another live writer holds the loader checkpoint. ``holder``: the lock's content (host, pid, since)."""

    def __init__(self, message: str, holder: dict | None = None) -> None:
        super().__init__(message)
        self.holder = holder or {}


class JournalBrokenError(CheckpointError):
    """A journal append failed and could not be rolled back: this writer saves nothing more. Opening the
    loader again (a retry) cuts the incomplete record."""


class WriterDisplacedError(CheckpointLockedError):
    """This writer's lock was removed (``tk-checkpoint unlock``/``delete --force``) or taken by another
    writer: it stops and writes nothing more."""
