"""Neo4j access for the loaders, through Airflow's Neo4jHook and the ``neo4j_default`` connection."""

from __future__ import annotations

import hashlib
import json
import logging
import random
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from neo4j import Driver
from neo4j.exceptions import AuthError, ClientError, DriverError, Forbidden, Neo4jError, ServiceUnavailable

from include.loaders.entities import (
    KEY,
    TOMBSTONE_FLAG,
    WATERMARK,
    Entity,
    Relationship,
    all_labels,
)
from include.loaders.settings import DEFAULT_CONN_ID

log = logging.getLogger(__name__)

MAX_RETRY_SECONDS = 30.0
"""How long a batch whose transaction failed transiently (deadlock, lost connection) is retried."""


class Neo4jConnectionError(RuntimeError):
    """Neo4j could not be reached, refused the credentials of an Airflow connection, or lacks the
    database the connection names."""


def connection_database(conn_id: str = DEFAULT_CONN_ID) -> str | None:
    """The Neo4j database the Airflow connection ``conn_id`` names in its ``schema`` field, or None for
    the server's default database (the field as ``Neo4jHook.run`` reads it). Pass it as ``database`` to
    the writer (``load_entity``, ``ensure_constraints``, ``GraphWriter``)."""
    from airflow.providers.neo4j.hooks.neo4j import Neo4jHook

    return _schema_database(Neo4jHook(conn_id=conn_id).get_connection(conn_id))


def _schema_database(conn: Any) -> str | None:
    return (conn.schema or "").strip() or None


def connect(conn_id: str = DEFAULT_CONN_ID) -> Driver:
    """Return a verified ``neo4j.Driver`` for the Airflow connection ``conn_id``.

    Fails with :class:`Neo4jConnectionError` naming the connection when the server is unreachable, the
    credentials are wrong or the database the connection names (its ``schema``, see
    :func:`connection_database`) does not exist, instead of the driver's bare error at the first query.
    The driver is the caller's to close (``with connect(conn_id) as driver:``).
    """
    from airflow.providers.neo4j.hooks.neo4j import Neo4jHook

    hook = Neo4jHook(conn_id=conn_id)
    driver = hook.get_conn()
    conn = hook.connection  # the one get_conn read
    where = f"{conn.host}:{conn.port or 7687}"
    database = _schema_database(conn)
    try:
        driver.verify_connectivity()
        if database is not None:  # verify_connectivity does not look at the database
            driver.execute_query("RETURN 1", database_=database)
    except AuthError as e:
        driver.close()
        raise Neo4jConnectionError(
            f"Neo4j authentication failed for Airflow connection '{conn_id}' "
            f"({where}, user '{conn.login}'): check the connection's login and password. "
            f"Server said: {e.message}"
        ) from e
    except (ServiceUnavailable, OSError) as e:
        driver.close()
        raise Neo4jConnectionError(
            f"Cannot reach Neo4j for Airflow connection '{conn_id}' at {where}: {e}. "
            "Is the server running (make neo4j-start)?"
        ) from e
    except ClientError as e:
        if e.code != "Neo.ClientError.Database.DatabaseNotFound":
            driver.close()
            raise
        known = _database_names(driver)
        driver.close()
        raise Neo4jConnectionError(
            f"Airflow connection '{conn_id}' names the Neo4j database '{database}' (its schema field), "
            f"which the server at {where} does not have{f' (it has: {known})' if known else ''}. "
            "Set the connection's schema to an existing database, or leave it empty for the server's "
            "default database."
        ) from e
    return driver


def _database_names(driver: Driver) -> str:
    """The server's databases, comma-separated, for an error message ('' when it will not say)."""
    try:
        records = driver.execute_query("SHOW DATABASES YIELD name RETURN name", database_="system").records
    except (Neo4jError, DriverError):
        return ""
    return ", ".join(sorted({r["name"] for r in records}))


# ==================================================================================================
# The writer: constraints, one transaction per batch of UNWIND MERGE (nodes, edges) and DETACH DELETE.
# ==================================================================================================

# Neo4j ClientError codes that mean "this data cannot be stored" (split the batch, fail the item);
# every other error is a bug, a connection or a server problem and propagates.
_DATA_ERROR_PREFIXES = ("Neo.ClientError.Statement.", "Neo.ClientError.Schema.ConstraintValidationFailed")
_NOT_DATA_ERRORS = ("Neo.ClientError.Statement.SyntaxError", "Neo.ClientError.Statement.ParameterMissing")


class ItemDataError(ValueError):
    """An API row that cannot be written (no Id, a malformed value): the item fails, the load goes on."""


@dataclass(slots=True)
class PreparedItem:
    """One API row, ready for the writer.

    ``props`` holds every property stored as it is (null included: null removes it from the node),
    ``temporals`` the properties whose kind has a Cypher conversion (DATETIME, DATE) as validated ISO
    strings (Neo4j parses them with ``datetime()`` / ``date()``, keeping the offset and all 7 fractional
    digits), ``rels`` the target ids per owned relationship type (an empty list removes every edge of
    that type), ``changed`` the row's ``ApiGewijzigdOp`` as the API sent it (for the lag metric).
    """

    id: str
    deleted: bool = False
    props: dict[str, Any] = field(default_factory=dict)
    temporals: dict[str, str | None] = field(default_factory=dict)
    rels: dict[str, list[str]] = field(default_factory=dict)
    changed: str | None = None

    def as_row(self) -> dict[str, Any]:
        return {"id": self.id, "props": self.props, "t": self.temporals, "rels": self.rels}


def item_key(raw: Mapping[str, Any]) -> str:
    """The checkpoint key of an API row: its Id, or a stable ``no-Id:<hash>`` for a row without one."""
    rid = raw.get(KEY) if isinstance(raw, Mapping) else None
    if isinstance(rid, str) and rid:
        return rid.lower()
    digest = hashlib.sha1(
        json.dumps(raw, sort_keys=True, default=str).encode(), usedforsecurity=False
    ).hexdigest()[:16]
    return f"no-Id:{digest}"


def _target_ids(entity: Entity, rid: str, rel: Relationship, raw: Mapping[str, Any]) -> list[str]:
    if rel.foreign_key is not None:
        value = raw.get(rel.foreign_key)
        values: list[Any] = [] if value is None else [value]
    else:
        value = raw.get(rel.navigation or "")
        if value is None:
            values = []
        elif isinstance(value, list):
            values = []
            for v in value:
                if isinstance(v, Mapping):
                    if v.get(TOMBSTONE_FLAG):  # a far end known to be deleted gets no edge
                        continue
                    values.append(v.get(KEY))
                else:
                    values.append(v)
        else:
            raise ItemDataError(f"{entity.name} {rid}: navigation {rel.navigation} is not a list: {value!r}.")
    out: list[str] = []
    for v in values:
        if not isinstance(v, str) or not v:
            raise ItemDataError(f"{entity.name} {rid}: {rel.source} holds an invalid Id {v!r}.")
        out.append(v.lower())
    return sorted(set(out))


def prepare_item(entity: Entity, raw: Mapping[str, Any], key: str | None = None) -> PreparedItem:
    """Turn one API row of ``entity`` into a :class:`PreparedItem`.

    ``key`` is the row's :func:`item_key` when the caller has derived it already (the load loop derives
    it once per row, for the checkpoint, and passes it in); None derives it here when needed.

    Raises :class:`ItemDataError` (naming the entity, the Id and the field) for a row without an Id or
    with a malformed value; the caller marks that item failed and goes on.
    """
    if not isinstance(raw, Mapping):
        raise ItemDataError(f"{entity.name}: an API row is not an object: {raw!r:.200}.")
    rid = raw.get(KEY)
    if not isinstance(rid, str) or not rid:
        raise ItemDataError(
            f"{entity.name}: a row has no Id (key {key or item_key(raw)}): {dict(raw)!r:.300}."
        )
    # item_key of a row with an Id is that Id lower-cased: the caller's key is the node id.
    rid = key if key is not None else rid.lower()
    changed = raw.get(WATERMARK)
    changed = changed if isinstance(changed, str) else None
    if raw.get(TOMBSTONE_FLAG):
        return PreparedItem(id=rid, deleted=True, changed=changed)
    item = PreparedItem(id=rid, changed=changed)
    props, temporals = item.props, item.temporals
    for api_name, name, spec in entity.columns:  # each kind's row says how: no branch per kind here
        value = raw.get(api_name)
        if spec.convert is not None:
            try:
                value = spec.convert(value)
            except ValueError as e:
                raise ItemDataError(f"{entity.name} {rid}: {api_name}={value!r} {e}") from None
        (temporals if spec.cypher else props)[name] = value
    for rel in entity.relationships:
        item.rels[rel.type] = _target_ids(entity, rid, rel, raw)
    return item


def is_data_error(exc: BaseException) -> bool:
    """True when ``exc`` says the *data* of a batch cannot be stored (split it, fail the bad items).

    Connection, authentication, transient and server errors are not data errors: they propagate.
    """
    if isinstance(exc, ItemDataError):
        return True
    if isinstance(exc, ClientError) and not isinstance(exc, AuthError | Forbidden):
        code = exc.code or ""
        return code.startswith(_DATA_ERROR_PREFIXES) and code not in _NOT_DATA_ERRORS
    return False


def _q(name: str) -> str:
    """A backtick-quoted Cypher identifier (labels and types come from the entity table)."""
    return "`" + name.replace("`", "``") + "`"


def _converted(entity: Entity) -> tuple[tuple[str, str], ...]:
    """``(graph property, Cypher function)`` of the columns whose kind has a conversion (DATETIME ->
    ``datetime(…)``, DATE -> ``date(…)``); the other properties go in as they are (``row.props``)."""
    return tuple((name, spec.cypher) for _, name, spec in entity.columns if spec.cypher)


def upsert_query(entity: Entity, guard: str | None = None) -> str:
    """The Cypher that merges a batch of live rows of ``entity`` with their owned edges (REPLACE).

    ``entity`` is a table entry or its served model (:func:`include.loaders.model.served_entity`): the
    temporal properties it writes are the ones of its columns. ``guard`` names a property that holds the
    row's position in an ordered source (the SyncFeed's ``feedSkiptoken``): a row whose position is
    older than the node's leaves the node and its edges as they are (the latest entry wins, whatever
    the order of loading)."""
    label = _q(entity.label)
    converted = _converted(entity)
    lines = ["UNWIND $rows AS row", f"MERGE (n:{label} {{id: row.id}})"]
    if guard is not None:
        g = _q(guard)
        lines.append(f"WITH n, row WHERE n.{g} IS NULL OR n.{g} <= row.props.{g}")
    lines.append("SET n += row.props")
    if converted:
        sets = ", ".join(f"n.{_q(p)} = {fn}(row.t.{_q(p)})" for p, fn in converted)
        lines.append(f"SET {sets}")
    for rel in entity.relationships:
        rtype, target = _q(rel.type), _q(rel.target)
        lines += [
            "WITH n, row",
            "CALL (n, row) {",
            f"  OPTIONAL MATCH (n)-[old:{rtype}]->(m) WHERE NOT m.id IN row.rels.{rtype}",
            "  DELETE old",
            "}",
            "CALL (n, row) {",
            f"  UNWIND row.rels.{rtype} AS tid",
            f"  MERGE (m:{target} {{id: tid}})",
            f"  MERGE (n)-[:{rtype}]->(m)",
            "}",
        ]
    return "\n".join(lines)


def delete_query(entity: Entity, guard: str | None = None) -> str:
    """The Cypher that removes tombstoned ``entity`` nodes and every edge they have (with ``guard``: only
    nodes whose position is not newer than the tombstone's, ``$positions[id]``)."""
    query = f"UNWIND $ids AS id MATCH (n:{_q(entity.label)} {{id: id}})"
    if guard is not None:
        g = _q(guard)
        query += f" WHERE n.{g} IS NULL OR n.{g} <= $positions[id]"
    return query + " DETACH DELETE n"


def batch_query(entity: Entity, guard: str | None = None) -> str:
    """One statement for a whole batch: the tombstones ``$ids`` deleted first, then the live ``$rows``."""
    return f"CALL () {{\n  {delete_query(entity, guard)}\n}}\n{upsert_query(entity, guard)}"


class GraphWriter:
    """Writes prepared items of the entity table into Neo4j, one transaction per batch.

    Args:
        driver: a ``neo4j.Driver`` (from :func:`connect`, or any driver in tests and benchmarks).
        database: the Neo4j database; None = the server's default (or the connection's schema).
        guard: a property holding each item's position in an ordered source (``feedSkiptoken`` for the
            SyncFeed; in ``props`` of live and deleted items alike): an item older than the node
            changes nothing (:func:`upsert_query`). None: every item is written.
    """

    def __init__(
        self,
        driver: Driver,
        database: str | None = None,
        max_retry_seconds: float = MAX_RETRY_SECONDS,
        guard: str | None = None,
    ) -> None:
        self.driver = driver
        self.database = database
        self.max_retry_seconds = max_retry_seconds
        self.guard = guard
        self._queries: dict[tuple, str] = {}

    def _query_for(self, entity: Entity) -> str:
        # keyed on what the Cypher is built from, not the name alone: the served model of one entity
        # (include.loaders.model) can differ between services, profiles and runs
        key = (entity.label, _converted(entity), entity.relationships)
        if key not in self._queries:
            self._queries[key] = batch_query(entity, self.guard)
        return self._queries[key]

    def ensure_constraints(self, labels: Iterable[str] | None = None) -> list[str]:
        """Create a uniqueness constraint on ``id`` for each label (idempotent; default: every label of the
        entity table, relationship targets included). Returns the labels covered."""
        labels = all_labels() if labels is None else sorted(set(labels))
        # "OFF": no "constraint already exists" notification per label and per loader in the task log.
        with self.driver.session(database=self.database, notifications_min_severity="OFF") as session:
            for label in labels:
                name = _q(f"tk_{label.lower()}_id")
                query = f"CREATE CONSTRAINT {name} IF NOT EXISTS FOR (n:{_q(label)}) REQUIRE n.id IS UNIQUE"
                try:
                    session.run(query).consume()
                except ClientError as e:
                    # A parallel loader created it between our check and our create: that is fine.
                    if "EquivalentSchemaRuleAlreadyExists" not in (e.code or ""):
                        raise
            session.run("CALL db.awaitIndexes(300)").consume()
        log.debug("Uniqueness constraints on id present for %s", ", ".join(labels))
        return list(labels)

    def write_batch(self, entity: Entity, items: Sequence[PreparedItem]) -> None:
        """Write ``items`` in ONE transaction: delete tombstones, merge live rows and their edges.

        Items with the same id: the last one wins. The batch is one auto-commit statement
        (:func:`batch_query`): one round trip to the server instead of two for an explicit transaction
        (BEGIN/RUN, then COMMIT), which the load loop's throughput feels. Because every write is a
        ``MERGE`` or a delete, running it again is harmless, so a transient failure (a deadlock with a
        parallel loader, a dropped connection) is retried here, with backoff, for up to
        ``max_retry_seconds``. Other errors are raised: :func:`is_data_error` tells bad data from a
        connection or server problem.
        """
        latest: dict[str, PreparedItem] = {}
        for item in items:
            latest.pop(item.id, None)
            latest[item.id] = item
        rows = [i.as_row() for i in latest.values() if not i.deleted]
        ids = [i.id for i in latest.values() if i.deleted]
        if not rows and not ids:
            return
        params: dict[str, Any] = {"rows": rows, "ids": ids}
        if self.guard is not None:
            params["positions"] = {i.id: i.props.get(self.guard) for i in latest.values() if i.deleted}
        query = self._query_for(entity)
        deadline = time.monotonic() + self.max_retry_seconds
        delay = 0.2
        while True:
            try:
                with self.driver.session(database=self.database) as session:
                    session.run(query, params).consume()
                return
            except (Neo4jError, DriverError) as e:
                if not e.is_retryable() or time.monotonic() + delay > deadline:
                    raise
                log.warning(
                    "%s: a batch of %d items failed transiently (%s); retrying in %.1f s",
                    entity.name,
                    len(latest),
                    f"{type(e).__name__}: {e}"[:300],
                    delay,
                )
                time.sleep(delay * random.uniform(0.8, 1.2))
                delay = min(delay * 2, 5.0)


def ensure_constraints(
    driver: Driver, labels: Iterable[str] | None = None, database: str | None = None
) -> list[str]:
    """Create the uniqueness constraints on ``id`` (idempotent): :meth:`GraphWriter.ensure_constraints`."""
    return GraphWriter(driver, database).ensure_constraints(labels)
