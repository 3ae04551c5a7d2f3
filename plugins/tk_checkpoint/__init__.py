"""Item-level, crash-safe JSON checkpoints for the tk_ingest loaders.

The API of the original checkpoint system (``CheckpointManager``, ``LoaderCheckpoint``), backed by a JSON
snapshot plus an append-only journal on a local folder or an object store. Importing this package does not
import Airflow (the CLI stays fast); Airflow is needed only for object-storage bases. See docs/checkpoints.md.

Modules, by concept: ``names`` (names, keys, redaction), ``settings`` (``CheckpointSettings``, the base),
``fileformat`` and ``idset`` (the files), ``store`` and ``lock`` (storage, the writer lock), ``state``
(``LoaderState``: a loader's files read back), ``manager`` (``CheckpointManager``: runs), ``loader``
(``LoaderCheckpoint``: one loader's writer, the load loop's ledger), ``present`` (text for people),
``listener`` (Airflow), ``cli``/``web``/``resume`` (the command line and the dashboard), ``cursor``
(``FeedCursors``: the durable per-type SyncFeed cursors of ``tk_sync``).
"""

from .cursor import CursorBackwardsError, CursorState, FeedCursors
from .errors import (
    CheckpointError,
    CheckpointLockedError,
    CorruptCheckpointError,
    InvalidNameError,
    JournalBrokenError,
    RunNotFoundError,
    UnsupportedSchemaError,
    WriterDisplacedError,
)
from .fileformat import SCHEMA_VERSION
from .loader import LoaderCheckpoint
from .manager import CheckpointManager
from .names import loader_name, redact, validate_name
from .present import format_progress
from .settings import CheckpointSettings, Settings, resolve_base
from .state import LoaderState

__all__ = [
    "SCHEMA_VERSION",
    "CheckpointError",
    "CheckpointLockedError",
    "CheckpointManager",
    "CheckpointSettings",
    "CorruptCheckpointError",
    "CursorBackwardsError",
    "CursorState",
    "FeedCursors",
    "InvalidNameError",
    "JournalBrokenError",
    "LoaderCheckpoint",
    "LoaderState",
    "RunNotFoundError",
    "Settings",
    "UnsupportedSchemaError",
    "WriterDisplacedError",
    "format_progress",
    "loader_name",
    "redact",
    "resolve_base",
    "validate_name",
]
