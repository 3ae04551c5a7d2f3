"""The Airflow Assets of the graph: one per node label, ``tk-graph://<connection>/<Label>``.

Each loader task of ``tk_ingest`` declares the asset of its own label as an outlet (the label it loads and
the edges that label owns, see the entity table), so a downstream DAG can be scheduled on ``Zaak``
changing::

    from include.loaders.assets import graph_asset

    @dag(schedule=[graph_asset("Zaak")], ...)

The scheme is our own: ``airflow`` is reserved by Airflow, ``file`` and the schemes of installed providers
are normalised by their handlers, and ``neo4j://`` is the driver's server address (``host:port``), which
this is not. Airflow only lower-cases the scheme and drops a trailing ``/`` and a fragment of an unknown
scheme, so ``tk-graph://neo4j_default/Zaak`` is stored as it is written. The netloc is the Airflow
connection the loaders write through (one graph per connection).

Every successful loader task instance emits one asset event whose extra is :func:`event_extra`: the
counts of that instance (processed, skipped, failed, deleted) and its window. Under a backfill's mapped
windows that is one event per window, and a downstream run sees all of them
(``triggering_asset_events``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from airflow.sdk import Asset

from include.loaders.entities import Entity
from include.loaders.settings import DEFAULT_CONN_ID

SCHEME = "tk-graph"
GROUP = "tk-graph"
"""The asset group shown in the Airflow UI's asset list."""

EXTRA_COUNTS = ("processed", "skipped", "failed", "deleted")
"""The counts of the load summary an asset event carries."""


def graph_uri(label: str, conn_id: str = DEFAULT_CONN_ID) -> str:
    """``tk-graph://<conn_id>/<label>``: the asset URI of the nodes of ``label``."""
    return f"{SCHEME}://{conn_id}/{label}"


def graph_asset(label: str, conn_id: str = DEFAULT_CONN_ID) -> Asset:
    """The asset of the nodes of ``label`` in the graph of connection ``conn_id`` (name = URI)."""
    uri = graph_uri(label, conn_id)
    return Asset(name=uri, uri=uri, group=GROUP)


def loader_outlets(entity: Entity, conn_id: str = DEFAULT_CONN_ID) -> list[Asset]:
    """The outlets of ``entity``'s loader task: the asset of its label (derived from the entity table)."""
    return [graph_asset(entity.label, conn_id)]


def event_extra(
    summary: Mapping[str, Any], window: Mapping[str, str], *, run_id: str, map_index: int | None
) -> dict[str, Any]:
    """The extra of a loader's asset event: its entity, counts and window, the run and the map index."""
    return {
        "entity": summary["entity"],
        **{k: int(summary.get(k) or 0) for k in EXTRA_COUNTS},
        "window": {"start": window["start"], "end": window["end"]},
        "run_id": run_id,
        "map_index": -1 if map_index is None else map_index,
    }
