"""Item-level, crash-safe JSON checkpoints for the tk_ingest loaders.

The API of the original checkpoint system (``CheckpointManager``, ``LoaderCheckpoint``), backed by a JSON
snapshot plus an append-only journal on a local folder or an object store. Importing this package does not
import Airflow (the CLI stays fast); Airflow is needed only for object-storage bases. See docs/checkpoints.md.
"""

from .checkpoint import (
    CheckpointManager,
    LoaderCheckpoint,
    LoaderState,
    Settings,
    format_progress,
    loader_name,
    redact,
    validate_name,
)
from .errors import (
    CheckpointError,
    CheckpointLockedError,
    CorruptCheckpointError,
    InvalidNameError,
    RunNotFoundError,
    UnsupportedSchemaError,
)
from .fileformat import SCHEMA_VERSION

__all__ = [
    "SCHEMA_VERSION",
    "CheckpointError",
    "CheckpointLockedError",
    "CheckpointManager",
    "CorruptCheckpointError",
    "InvalidNameError",
    "LoaderCheckpoint",
    "LoaderState",
    "RunNotFoundError",
    "Settings",
    "UnsupportedSchemaError",
    "format_progress",
    "loader_name",
    "redact",
    "validate_name",
]
