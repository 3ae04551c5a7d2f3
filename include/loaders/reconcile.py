"""The daily count reconciliation: per entity, the nodes in Neo4j against the API's own count of live rows.

The ``reconcile`` task of ``tk_ingest`` runs after the loaders (whether they succeeded or not) and
compares, for each entity of the run:

* **Neo4j**: the nodes of the entity's label that carry data (loaded from an API row);
* **placeholders**: the nodes of that label holding only ``id``, created by an edge of another entity
  to a target whose own row is not loaded (yet); reported, not counted as loaded;
* **API**: the ``$count`` of the entity set with ``Verwijderd eq false``, over the **whole set**, not
  the run's window. The graph mirrors every live row, and the nodes changed outside the window were
  written by earlier runs, so a window's count has nothing in the graph to compare with.

``share`` is ``|Neo4j - API| / API``. Above the run's ``reconcile_tolerance`` the task fails with the
table (:func:`tk_checkpoint.present.format_reconciliation`). The API's counts drift (ODP#190, rows
created or deleted after the window's end are counted on one side only), which the tolerance absorbs.
The result is kept with the checkpoint run (``<run_id>/reconciliation.json``) whether it passed or not.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from include.loaders.entities import ENTITIES, Entity
from include.loaders.settings import DEFAULT_CONN_ID

log = logging.getLogger(__name__)

DEFAULT_TOLERANCE = 0.01
"""The share (of the API's count) by which Neo4j may differ before the task fails: 1 %."""

SCOPE = "whole set: nodes with data vs the API's $count of live rows (Verwijderd eq false)"


class ReconciliationError(RuntimeError):
    """Neo4j and the API differ by more than the tolerance; the message is the table."""


@dataclass(frozen=True)
class EntityCount:
    """One entity's figures (see the module docstring)."""

    entity: str
    neo4j: int
    api: int
    placeholders: int

    @property
    def difference(self) -> int:
        """Neo4j minus API: positive when the graph holds more (deletions missed), negative when less."""
        return self.neo4j - self.api

    @property
    def share(self) -> float:
        """``|difference| / api``; with nothing in the API, 0 for an empty label and 1 otherwise."""
        if self.api:
            return abs(self.difference) / self.api
        return 0.0 if self.neo4j == 0 else 1.0

    def to_dict(self, tolerance: float) -> dict[str, Any]:
        return {
            **asdict(self),
            "difference": self.difference,
            "share": round(self.share, 6),
            "ok": self.share <= tolerance,
        }


def count_graph(driver: Any, entity: Entity, database: str | None = None) -> tuple[int, int]:
    """``(nodes with data, placeholders)`` of ``entity``'s label; a placeholder's only property is ``id``."""
    label = "`" + entity.label.replace("`", "``") + "`"
    query = (
        f"MATCH (n:{label}) "
        "RETURN count(n) AS nodes, count(CASE WHEN keys(n) = ['id'] THEN 1 END) AS placeholders"
    )
    record = driver.execute_query(query, database_=database).records[0]
    return record["nodes"] - record["placeholders"], record["placeholders"]


def count_entities(
    entities: Iterable[str], *, client: Any, driver: Any, database: str | None = None
) -> list[EntityCount]:
    """The figures of each of ``entities`` (names of the entity table), in the order given."""
    out = []
    for name in entities:
        entity = ENTITIES[name]
        nodes, placeholders = count_graph(driver, entity, database)
        api = client.count(entity.entity_set, live_only=True)
        out.append(EntityCount(name, nodes, api, placeholders))
    return out


def reconciliation_document(
    run_id: str, counts: Iterable[EntityCount], tolerance: float, checked_at: str
) -> dict[str, Any]:
    """The document kept with the run (:mod:`tk_checkpoint.reconciliation`)."""
    rows = [c.to_dict(tolerance) for c in counts]
    return {
        "run_id": run_id,
        "checked_at": checked_at,
        "scope": SCOPE,
        "tolerance": tolerance,
        "ok": all(r["ok"] for r in rows),
        "entities": rows,
    }


def run_reconcile(
    *,
    run_id: str,
    params: Mapping[str, Any],
    conn_id: str = DEFAULT_CONN_ID,
    checkpoint_base: str | None = None,
    api_profile: str | None = None,
) -> dict[str, Any]:
    """The ``reconcile`` task: count, keep the result with the checkpoint run, fail beyond tolerance.

    ``api_profile`` is the API version the run's setup chose (``pipeline.api_settings``); None: found again.

    Returns the document; raises :class:`ReconciliationError` (its message the table) when an entity
    differs by more than ``params["reconcile_tolerance"]`` (default :data:`DEFAULT_TOLERANCE`).
    """
    from tk_checkpoint import fileformat
    from tk_checkpoint.present import format_reconciliation

    from include.loaders.api import TKClient
    from include.loaders.graph import connect, connection_database
    from include.loaders.pipeline import api_settings, check_entities, checkpoint_manager

    tolerance = params.get("reconcile_tolerance")
    tolerance = DEFAULT_TOLERANCE if tolerance is None else float(tolerance)
    entities = check_entities(params.get("entities") or list(ENTITIES))
    with TKClient(api_settings(api_profile)) as client, connect(conn_id) as driver:
        counts = count_entities(entities, client=client, driver=driver, database=connection_database(conn_id))
    doc = reconciliation_document(run_id, counts, tolerance, fileformat.timestamp())
    checkpoint_manager(checkpoint_base).save_reconciliation(doc)
    text = format_reconciliation(doc)
    if not doc["ok"]:
        raise ReconciliationError(
            f"Neo4j and the TK API differ by more than {tolerance:.2%} for "
            f"{', '.join(r['entity'] for r in doc['entities'] if not r['ok'])}:\n{text}\n"
            "A node deleted or added behind the loaders' back, a load that failed, or a graph not "
            "backfilled from the start: reload the entity (trigger tk_ingest with an early start_date), "
            "or raise the param reconcile_tolerance. `tk-checkpoint show --run-id "
            f"'{run_id}'` shows this table."
        )
    log.info("%s", text)
    return doc
