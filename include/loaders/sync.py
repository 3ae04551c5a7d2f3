"""The SyncFeed sync loop: one type's change stream -> the graph, resumable at the entry.

:func:`sync_type` is the way of one item (``DESIGN.md``) for the SyncFeed: the feed's pages from the
type's durable cursor (prefetched by a bounded thread) -> each entry becomes the OData row of the same
data (:func:`include.loaders.feed_rows.entry_row`) and the same prepared item
(:func:`include.loaders.graph.prepare_item`) -> entries the run's ledger holds are skipped ("Skipping N
already-processed items") -> batches, one Neo4j transaction each, through the OData loader's
:class:`~include.loaders.flow.BatchWriter` (one transaction in flight) -> only after a batch commits:
its entries marked in the ledger (item key ``<id>@<skiptoken>``), the ledger saved, then the cursor
advanced to the batch's last skiptoken. A crash can therefore only repeat entries, never skip them: the
cursor is never ahead of what Neo4j holds, and a rerun of the same run skips what the ledger holds.

Every node written from the feed keeps its entry's skiptoken in :data:`FEED_POSITION` (a bookkeeping
property, ``docs/graph-model.md``), and the writer is guarded on it (``GraphWriter(guard=…)``): an
entry older than the node changes nothing, so the latest entry of an id wins whatever the order of
loading (a restart from scratch over an existing graph, ranges loaded side by side).

An entry that cannot be written (a malformed value, a batch Neo4j refuses on its data) is marked failed
in the ledger with its error, as in ``tk_ingest``, and the cursor moves on past it (else one bad entry
would stop the type for good); the summary and the task log name it.

When the feed's caught-up page comes (no next link; on the live API an empty page with
``rel="resume"``), the cursor records the head and the catch-up time (``tk-checkpoint list`` and the
dashboard show both).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping
from contextlib import closing
from dataclasses import asdict, dataclass
from typing import Any

from neo4j import Driver

from include.loaders.entities import Entity, all_labels, get_entity
from include.loaders.feed_rows import entry_row
from include.loaders.flow import BatchWriter, error_text, prefetch
from include.loaders.graph import GraphWriter, ItemDataError, PreparedItem, prepare_item
from include.loaders.ledger import Ledger, NullLedger
from include.loaders.settings import DEFAULT_BATCH_SIZE, DEFAULT_CONN_ID
from include.loaders.syncfeed import FeedEntry, FeedPage, SyncFeedClient

log = logging.getLogger(__name__)

FEED_POSITION = "feedSkiptoken"
"""The node property holding the skiptoken of the entry that last wrote the node (bookkeeping: the
guard that lets the latest entry win; not an API property)."""


def entry_key(entity_id: str, skiptoken: int | None) -> str:
    """The ledger key of one feed entry: ``<id>@<skiptoken>`` (a re-emission is a new item)."""
    return f"{entity_id}@{skiptoken}"


@dataclass
class SyncResult:
    """What one :func:`sync_type` call did.

    Attributes:
        entity: the type.
        start_skiptoken: where it started (exclusive).
        cursor: the durable cursor at the end (the last committed entry's skiptoken).
        head: the feed's head as the caught-up page gave it (None when not caught up).
        caught_up: the stream reached the feed's head.
        seen, processed, skipped, failed, deleted: entries read, written, skipped as already written by
            an earlier try of this run, failed (on record with their error), tombstones among processed.
        failed_ids: up to 20 failed ledger keys.
        seconds: wall time.
    """

    entity: str
    start_skiptoken: int
    cursor: int
    head: int | None = None
    caught_up: bool = False
    seen: int = 0
    processed: int = 0
    skipped: int = 0
    failed: int = 0
    deleted: int = 0
    failed_ids: list[str] | None = None
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary_line(self) -> str:
        """One line for the task log."""
        rate = self.processed / self.seconds if self.seconds > 0 else 0.0
        behind = f", {self.head - self.cursor} behind the head" if self.head is not None else ""
        return (
            f"✅ {self.entity} synced: skiptoken {self.start_skiptoken} -> {self.cursor}"
            f"{' (caught up' + behind + ')' if self.caught_up else ''}; {self.processed} processed / "
            f"{self.skipped} skipped / {self.failed} failed / {self.seen} entries ({self.deleted} "
            f"tombstones), {rate:.0f} entries/s"
        )


def feed_item(entity: Entity, entry: FeedEntry) -> PreparedItem:
    """The prepared item of one entry: the same as OData's for the same data, plus its skiptoken in
    :data:`FEED_POSITION`. Raises :class:`ItemDataError` for a value of the wrong form."""
    try:
        raw = entry_row(entity, entry)
    except ValueError as e:
        raise ItemDataError(str(e)) from None
    item = prepare_item(entity, raw)
    item.props[FEED_POSITION] = entry.skiptoken
    return item


class _Sync:
    """One :func:`sync_type` call: its counters and every ledger and cursor call."""

    def __init__(
        self,
        entity: Entity,
        *,
        ledger: Ledger,
        cursors: Any,
        run_id: str,
        start_skiptoken: int,
        writer: GraphWriter,
        batch_size: int,
    ) -> None:
        self.t0 = time.monotonic()
        self.entity = entity
        self.ledger = ledger
        self.cursors = cursors
        self.run_id = run_id
        self.result = SyncResult(entity=entity.name, start_skiptoken=start_skiptoken, cursor=start_skiptoken)
        self.failed: list[str] = []
        self.skip_streak = 0
        self.last_seen = start_skiptoken
        self.batches = BatchWriter(
            writer,
            entity,
            batch_size,
            on_committed=self._committed,
            on_failed=lambda item, error: self._failed(_key(item), error),
        )

    def take(self, page: FeedPage, resuming: bool, until: int | None) -> bool:
        """One page into the batches; False once past ``until``."""
        for entry in page.entries:
            if until is not None and entry.skiptoken is not None and entry.skiptoken > until:
                return False
            self.result.seen += 1
            key = entry_key(entry.id, entry.skiptoken)
            if resuming and self.ledger.is_processed(key):
                self.skip_streak += 1
                self.last_seen = entry.skiptoken or self.last_seen
                continue
            self._flush_skips()
            try:
                item = feed_item(self.entity, entry)
            except ItemDataError as e:
                self._failed(key, error_text(e))
                continue
            self.batches.add(item)
            self.last_seen = entry.skiptoken or self.last_seen
        return True

    def end(self, head: int | None) -> None:
        """Everything written and settled; the cursor at the last entry read (and the head, if seen)."""
        self._flush_skips()
        self.batches.flush()
        self.ledger.save_progress()
        # caught up: every entry of the type up to the head is in; the head is the cursor
        self._advance(max(self.last_seen, head or 0), head=head)

    def _committed(self, items: list[PreparedItem]) -> None:
        keys = [_key(i) for i in items]
        self.ledger.mark_processed_many(keys)
        self.result.processed += len(keys)
        self.result.deleted += sum(1 for i in items if i.deleted)
        self.ledger.save_progress()  # the ledger before the cursor: a rerun of the run skips these
        self._advance(max(int(i.props[FEED_POSITION]) for i in items))

    def _failed(self, key: str, error: str) -> None:
        log.warning("%s %s failed: %s", self.entity.name, key, error)
        self.failed.append(key)
        self.ledger.mark_failed(key, error)

    def _flush_skips(self) -> None:
        if self.skip_streak:
            log.info("⏭️ Skipping %d already-processed items", self.skip_streak)
            self.ledger.mark_skipped(self.skip_streak)
            self.result.skipped += self.skip_streak
            self.skip_streak = 0

    def _advance(self, skiptoken: int, head: int | None = None) -> None:
        if skiptoken < self.result.cursor and head is None:
            return
        skiptoken = max(skiptoken, self.result.cursor)
        if self.cursors is not None:
            self.cursors.advance(
                self.entity.name,
                skiptoken,
                run_id=self.run_id,
                head_skiptoken=head,
                caught_up=head is not None,
            )
        self.result.cursor = skiptoken
        if head is not None:
            self.result.head = max(head, skiptoken)
            self.result.caught_up = True


def _key(item: PreparedItem) -> str:
    return entry_key(item.id, item.props.get(FEED_POSITION))


def sync_type(
    entity: str | Entity,
    *,
    client: SyncFeedClient,
    driver: Driver,
    ledger: Ledger | None = None,
    cursors: Any = None,
    run_id: str = "manual",
    start_skiptoken: int | None = None,
    until: int | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    database: str | None = None,
    prefetch_pages: int = 1,
) -> SyncResult:
    """Sync one type from the SyncFeed into Neo4j, from its cursor to the head (or to ``until``).

    Args:
        entity: an entity of the table (name, loader name or entry); its category is its name.
        client: the SyncFeed client (its errors propagate after its own retries).
        driver: a ``neo4j.Driver``.
        ledger: the run's item-level checkpoint (``tk_checkpoint.LoaderCheckpoint``); None: none.
        cursors: the durable cursors (``tk_checkpoint.cursor.FeedCursors``); None: no cursor is kept.
        run_id: the run the cursor writes are made by.
        start_skiptoken: where to start (exclusive); None: the type's cursor (0 when it has none).
        until: stop after this skiptoken (a range ``(start, until]``; the head is then not recorded).
        batch_size: entries per Neo4j transaction.
        database: the Neo4j database (None = default).
        prefetch_pages: pages fetched ahead by a background thread (0 = none).

    Returns the :class:`SyncResult`. On an error (the API's after retries, Neo4j's), what committed is
    recorded (ledger saved, cursor advanced), the ledger marked failed, and the error re-raised.
    """
    ent = get_entity(entity)
    ledger = ledger if ledger is not None else NullLedger()
    state = cursors.get(ent.name) if cursors is not None else None
    if start_skiptoken is None:
        start_skiptoken = state.skiptoken if state is not None else 0
    writer = GraphWriter(driver, database, guard=FEED_POSITION)
    writer.ensure_constraints(all_labels([ent]))
    sync = _Sync(
        ent,
        ledger=ledger,
        cursors=cursors,
        run_id=run_id,
        start_skiptoken=start_skiptoken,
        writer=writer,
        batch_size=batch_size,
    )
    if state is not None and state.skiptoken > start_skiptoken:
        # a range below the cursor (re-read on purpose): the cursor never moves back (reset() does that)
        sync.result.cursor = state.skiptoken
    resuming = ledger.processed_count > 0
    log.info(
        "▶️ Syncing %s from skiptoken %d%s%s",
        ent.name,
        start_skiptoken,
        f" up to {until}" if until is not None else "",
        f" ({ledger.processed_count} entries already processed in this run)" if resuming else "",
    )
    try:
        head: int | None = None
        pages: Iterator[FeedPage] = client.iter_pages(ent.feed_category, start_skiptoken)
        with closing(prefetch(pages, prefetch_pages)) as prefetched:
            for page in prefetched:
                if not sync.take(page, resuming, until):
                    break
                if page.caught_up and until is None:
                    head = page.position
        sync.end(head)
    except BaseException as e:
        try:
            sync._flush_skips()
            sync.batches.close()
            ledger.save_progress()
            ledger.fail(error_text(e))
        except Exception:
            log.exception("Could not record the committed entries of %s after an error", ent.name)
        log.error(
            "❌ %s sync stopped at skiptoken %d after %d processed / %d skipped: %s",
            ent.name,
            sync.result.cursor,
            sync.result.processed,
            sync.result.skipped,
            error_text(e),
        )
        raise
    result = sync.result
    result.failed = len(ledger.failed_items()) or len(sync.failed)
    result.failed_ids = sorted(ledger.failed_items() or sync.failed)[:20]
    result.seconds = time.monotonic() - sync.t0
    ledger.complete()
    log.info(result.summary_line())
    return result


# ==================================================================================================
# In Airflow: the tk_sync DAG's tasks (dags/tk_sync.py)
# ==================================================================================================


def task_id_of(entity: Entity) -> str:
    """The tk_sync task (and checkpoint loader) name of a type: ``sync_`` + its loader's suffix
    (``load_zaken`` -> ``sync_zaken``)."""
    return "sync_" + entity.loader.removeprefix("load_")


def check_sync_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """The tk_sync params, checked: ``types`` (known names), ``start`` (type or ``"*"`` -> skiptoken >= 0).

    Raises ValueError naming the bad value and what is allowed (the setup task fails at once on it)."""
    from include.loaders.entities import ENTITIES

    types = list(params.get("types") or ENTITIES)
    unknown = sorted(set(types) - set(ENTITIES))
    if unknown:
        raise ValueError(f"Unknown types {unknown}; the SyncFeed types are {sorted(ENTITIES)}.")
    start = dict(params.get("start") or {})
    for name, value in start.items():
        if name != "*" and name not in ENTITIES:
            raise ValueError(f"start names the unknown type {name!r}; use a type name or '*' for all.")
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ValueError(f"start[{name!r}] must be a skiptoken >= 0 (0: from scratch), got {value!r}.")
    return {"types": types, "start": start}


def prepare_sync(
    *,
    dag_id: str,
    run_id: str,
    conf: Mapping[str, Any],
    params: Mapping[str, Any],
    conn_id: str = DEFAULT_CONN_ID,
    checkpoint_base: str | None = None,
) -> dict[str, Any]:
    """The setup task: params checked, Neo4j reached and its constraints made, the checkpoint run opened
    (its id is the DAG run's ``run_id``). Returns the checked params."""
    from include.loaders.graph import connect, connection_database, ensure_constraints
    from include.loaders.pipeline import _check_run_owner, checkpoint_manager

    checked = check_sync_params(params)
    with connect(conn_id) as driver:
        ensure_constraints(driver, database=connection_database(conn_id))
    manager = checkpoint_manager(checkpoint_base)
    _check_run_owner(manager, run_id, dag_id)
    manager.start_new_run(run_id=run_id, dag_id=dag_id, conf=dict(conf))
    return checked


def run_sync_task(
    *,
    entity: str,
    run_id: str,
    dag_id: str,
    task_id: str,
    try_number: int | None,
    params: Mapping[str, Any],
    conn_id: str = DEFAULT_CONN_ID,
    checkpoint_base: str | None = None,
) -> dict[str, Any]:
    """One tk_sync task instance: :func:`sync_type` from the type's durable cursor, with the checkpoint
    of this task instance.

    The first try of a run whose ``start`` param names the type (or ``"*"``) first resets the cursor to
    that skiptoken (0: from scratch); a retry or a clear never does: it carries on from the cursor, so
    what earlier tries committed is not read again, and the log says how many entries that is. Entries
    that fail on their data are on record in the checkpoint and logged; the task does not fail for them
    (the cursor has passed them, so a retry would not read them again).
    """
    from tk_checkpoint import LoaderCheckpoint
    from tk_checkpoint.cursor import FeedCursors

    from include.loaders.graph import connect, connection_database
    from include.loaders.pipeline import checkpoint_manager
    from include.loaders.settings import ApiSettings

    ent = get_entity(entity)
    checked = check_sync_params(params)
    manager = checkpoint_manager(checkpoint_base)
    manager.start_new_run(run_id=run_id, dag_id=dag_id)  # reopens the run of the setup task
    cursors = FeedCursors(checkpoint_base)
    start = checked["start"].get(ent.name, checked["start"].get("*"))
    if start is not None and (try_number or 1) <= 1:
        cursors.reset(ent.name, start, run_id=run_id)
        log.info("🔄 %s: cursor reset to skiptoken %d by the run's start param", ent.name, start)
    with (
        SyncFeedClient(ApiSettings.from_env()) as client,
        connect(conn_id) as driver,
        LoaderCheckpoint(manager, task_id, try_number=try_number, meta={"entity": ent.name}) as checkpoint,
    ):
        if checkpoint.processed_count:
            state = cursors.get(ent.name)
            log.info(
                "⏭️ Resuming %s at skiptoken %s: %d entries committed by earlier tries of this run are "
                "not read again",
                ent.name,
                state.skiptoken if state else 0,
                checkpoint.processed_count,
            )
        result = sync_type(
            ent,
            client=client,
            driver=driver,
            ledger=checkpoint,
            cursors=cursors,
            run_id=run_id,
            batch_size=int(params.get("batch_size") or DEFAULT_BATCH_SIZE),
            database=connection_database(conn_id),
        )
    if result.failed:
        log.warning(
            "⚠️ %d %s entries failed on their data and are on record with their error (`tk-checkpoint show "
            "--run-id '%s'`); the cursor has passed them: a sync from an earlier skiptoken (the start param) "
            "reads them again",
            result.failed,
            ent.name,
            run_id,
        )
    summary = result.to_dict()
    return summary


__all__ = [
    "FEED_POSITION",
    "SyncResult",
    "check_sync_params",
    "entry_key",
    "feed_item",
    "prepare_sync",
    "run_sync_task",
    "sync_type",
    "task_id_of",
]
