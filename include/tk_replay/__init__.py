"""An offline TK OData API: the real samples or generated data, both API profiles (or one; with or
without ``@odata.nextLink``), faults on demand.

Run it with ``python -m include.tk_replay --help``; in tests use :class:`ReplayServer` directly. What
it serves follows the entity table (``include.loaders.entities``): see :mod:`include.tk_replay.schema`.
"""

from include.tk_replay.dataset import Dataset, guid_sort_key
from include.tk_replay.faults import FaultConfig
from include.tk_replay.generator import MutationReport, kamerstukdossier_table
from include.tk_replay.schema import ForeignKeySpec, LinkSpec, derive_links, table_metadata
from include.tk_replay.server import ReplayServer

__all__ = [
    "Dataset",
    "FaultConfig",
    "ForeignKeySpec",
    "LinkSpec",
    "MutationReport",
    "ReplayServer",
    "derive_links",
    "guid_sort_key",
    "kamerstukdossier_table",
    "table_metadata",
]
