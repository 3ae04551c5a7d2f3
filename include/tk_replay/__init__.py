"""An offline TK OData API: the real samples or generated data, both API profiles, faults on demand.

Run it with ``python -m include.tk_replay --help``; in tests use :class:`ReplayServer` directly.
"""

from include.tk_replay.dataset import LINKS, Dataset, LinkSpec, guid_sort_key
from include.tk_replay.faults import FaultConfig
from include.tk_replay.generator import FOREIGN_KEYS, MutationReport
from include.tk_replay.server import ReplayServer

__all__ = [
    "FOREIGN_KEYS",
    "LINKS",
    "Dataset",
    "FaultConfig",
    "LinkSpec",
    "MutationReport",
    "ReplayServer",
    "guid_sort_key",
]
