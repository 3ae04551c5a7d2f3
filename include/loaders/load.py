"""The one generic load loop of DESIGN.md, "the way of one item", for every entity of the table.

:func:`load_entity` reads as its three steps, each a method of :class:`_Loop`:

1. **stream the window**: pages of ``[start, end)`` from the API client, fetched ahead by a bounded
   prefetch thread; each row's key is derived once (``graph.item_key``); keys the ledger holds as
   processed are skipped, counted once per streak ("Skipping N already-processed items"); the rest are
   prepared (``graph.prepare_item``) and written in batches, one Neo4j transaction each, by the
   :class:`~include.loaders.flow.BatchWriter` (a writer thread; one transaction at a time). A batch is
   marked processed in the ledger only after it committed, and the ledger is saved after every committed
   batch. A batch that fails on its *data* is bisected until the bad items are alone; they are marked
   failed with the error, the others proceed;
2. **retry the failures**: items that failed in Neo4j get a bounded number of retry rounds with backoff
   (items of earlier tries come back by themselves: they are in the window and not marked processed).
   A failure on record whose key the complete stream did not bring back is checked with the API (the
   row by its key): when the API no longer serves it, or serves it changed outside the window, or the
   key is a row without ``Id`` (which has no key to ask for), the failure is cleared from the ledger
   with the reason logged and counted (``LoadResult.cleared``); one the API still serves in the window
   stays on record (``docs/checkpoints.md``, "What clears a failure");
3. **finish**: the ledger is saved and completed, a summary line logged (processed / skipped / failed /
   total, items per second).

Any error on the way (the API client's after its own retries, a Neo4j connection or server error) takes
the one abort path, :meth:`_Loop.abort`: what is queued is recorded, the ledger saved and failed, and the
error re-raised (the Airflow task fails; its retry resumes from the ledger). Data errors never raise.

The threads and queues are in ``include.loaders.flow``; the ledger contract in ``include.loaders.ledger``
(this loop is the only code that talks to a ledger); the command line in ``include.loaders.__main__``.
Usable without Airflow: it needs a client with ``count`` and ``iter_pages`` (``include.loaders.api``), a
``neo4j.Driver`` and optionally a ledger (``tk_checkpoint.LoaderCheckpoint``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import closing
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, Protocol

from neo4j import Driver

from include.loaders.api_metadata import ODataSchema
from include.loaders.api_profiles import ApiProfile
from include.loaders.entities import CORE_ENTITIES, Entity, all_labels, get_entity, parse_datetimeoffset
from include.loaders.flow import BatchWriter, WindowCount, error_text, prefetch
from include.loaders.graph import GraphWriter, ItemDataError, PreparedItem, item_key, prepare_item
from include.loaders.ledger import Ledger, NullLedger
from include.loaders.metrics import LoaderMetrics
from include.loaders.model import served_entity_of
from include.loaders.settings import DEFAULT_BATCH_SIZE

log = logging.getLogger(__name__)

DEFAULT_MAX_RETRIES = 2
DEFAULT_RETRY_BACKOFF = 2.0
DEFAULT_PROGRESS_SECONDS = 30.0
MAX_RETRY_POOL = 10_000
"""At most this many failed items are kept in memory for the in-loop retry; more wait for the next try."""
MAX_STALE_LOOKUPS = 1_000
"""At most this many stale failures are checked with the API per call; more wait for the next try."""
WATERMARK = "ApiGewijzigdOp"
NO_ID_PREFIX = "no-Id:"


class PageSource(Protocol):
    """What the loop needs of the API client (``include.loaders.api.TKClient``): its ``profile`` and
    ``metadata()`` for the served model (:func:`include.loaders.model.served_entity_of`), and pages."""

    profile: ApiProfile

    def metadata(self, refresh: bool = False) -> ODataSchema: ...

    def count(self, entity_set: str, start: datetime | None = None, end: datetime | None = None) -> int: ...

    def iter_pages(
        self,
        entity_set: str,
        start: datetime | None = None,
        end: datetime | None = None,
        select: Sequence[str] | None = None,
        expand: Sequence[str] | None = None,
    ) -> Iterator[list[dict[str, Any]]]: ...

    def get_entity(
        self, entity_set: str, entity_id: str, select: Sequence[str] | None = None
    ) -> dict[str, Any] | None: ...


@dataclass
class LoadResult:
    """What one :func:`load_entity` call did.

    Attributes:
        processed: items written (merged or deleted) and marked in this call.
        skipped: items already processed by an earlier try of the same ledger.
        failed: items that still fail at the end: on record in the ledger with their last error (earlier
            tries' included), or, without a ledger, this call's.
        deleted: tombstones among ``processed``.
        total: items in the window by the API's count (None when not counted).
        seen: items the stream delivered.
        retried: item attempts made by the in-loop retry rounds.
        cleared: failures of earlier tries taken off the record because their key never comes back.
        seconds: wall time of the call.
        failed_ids: up to 20 of the failed keys, for messages.
    """

    entity: str
    processed: int = 0
    skipped: int = 0
    failed: int = 0
    deleted: int = 0
    total: int | None = None
    seen: int = 0
    retried: int = 0
    cleared: int = 0
    seconds: float = 0.0
    failed_ids: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        """Items written per second."""
        return self.processed / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["rate"] = round(self.rate, 1)
        return d

    def summary_line(self) -> str:
        total = self.total if self.total is not None else self.seen
        cleared = f", {self.cleared} stale failure(s) cleared" if self.cleared else ""
        return (
            f"✅ {self.entity}: {self.processed} processed / {self.skipped} skipped / {self.failed} failed / "
            f"{total} total ({self.deleted} deleted{cleared}) in {self.seconds:.1f} s, "
            f"{self.rate:.1f} items/s"
        )


def load_entity(
    entity: str | Entity,
    *,
    client: PageSource,
    driver: Driver,
    checkpoint: Ledger | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    max_retries: int = DEFAULT_MAX_RETRIES,
    retry_backoff: float = DEFAULT_RETRY_BACKOFF,
    progress_seconds: float = DEFAULT_PROGRESS_SECONDS,
    prefetch_pages: int = 2,
    pipeline: bool = True,
    count: bool = True,
    database: str | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> LoadResult:
    """Load the rows of ``entity`` changed in ``[start, end)`` into Neo4j (the way of one item).

    The scalar properties requested and written are the served model's: those the ``$metadata`` of the
    client's service declares (:func:`include.loaders.model.served_entity_of`; fetched once per client),
    so a property the API dropped is neither requested nor written, and one it added is stored.

    Args:
        entity: an entity of ``entities.ENTITIES`` (name like ``"Zaak"``, loader name, or the entry).
        client: the TK API client (``TKClient``); its ``ApiError`` propagates after its own retries.
        driver: a ``neo4j.Driver`` (``graph.connect("neo4j_default")`` in Airflow).
        checkpoint: the ledger of this loader run, for example a ``tk_checkpoint.LoaderCheckpoint``
            (open, lock held); None loads without one (:class:`~include.loaders.ledger.NullLedger`).
        start, end: the half-open window on ``ApiGewijzigdOp`` (tz-aware); None = unbounded.
        batch_size: items per Neo4j transaction.
        max_retries, retry_backoff: in-loop retry rounds for failed items, waiting
            ``retry_backoff * 2**round`` seconds before each.
        progress_seconds: a progress line at least this often (and at every 10 %).
        prefetch_pages: pages fetched ahead by a background thread (0 = none).
        pipeline: run the transactions in a writer thread, overlapping the loop's own work (False: in
            this thread, one batch at a time; at most one committed batch unmarked after a crash).
        count: ask the API for the window's size (beside the first pages; for the progress percentage).
        database: the Neo4j database (None = default).
        sleep: the backoff's sleep (tests pass a no-op).

    Returns the :class:`LoadResult`. Raises the API client's errors and Neo4j connection/server errors
    after saving the ledger and marking it failed; data errors never raise.
    """
    loop = _Loop(  # a batch_size below 1 raises ValueError here (BatchWriter)
        served_entity_of(client, get_entity(entity)),
        client=client,
        graph=GraphWriter(driver, database),
        ledger=checkpoint if checkpoint is not None else NullLedger(),
        start=start,
        end=end,
        batch_size=batch_size,
        pipeline=pipeline,
        progress_seconds=progress_seconds,
    )
    try:
        loop.stream_window(prefetch_pages=prefetch_pages, count=count)
        loop.retry_failures(max_retries=max_retries, backoff=retry_backoff, sleep=sleep)
        return loop.finish()
    except BaseException as e:
        loop.abort(e)
        raise


class _Loop:
    """One :func:`load_entity` call: its steps, its counters, and the only code that talks to the ledger.

    The :class:`BatchWriter` reports back through :meth:`_committed` and :meth:`_failed` (in this
    thread); those, :meth:`_flush_skips`, :meth:`_take_count` and the steps' ends are every ledger call.
    """

    def __init__(
        self,
        entity: Entity,
        *,
        client: PageSource,
        graph: GraphWriter,
        ledger: Ledger,
        start: datetime | None,
        end: datetime | None,
        batch_size: int,
        pipeline: bool,
        progress_seconds: float,
    ) -> None:
        self.t0 = time.monotonic()
        self.entity = entity
        self.client = client
        self.graph = graph
        self.ledger = ledger
        self.start = start
        self.end = end
        self.progress_seconds = progress_seconds
        self.result = LoadResult(entity=entity.name)
        self.metrics = LoaderMetrics.for_task(entity.name)  # Airflow's Stats; never raises
        self.batches = BatchWriter(
            graph,
            entity,
            batch_size,
            on_committed=self._committed,
            on_failed=lambda item, error: self._failed(item.id, error, item),
            threaded=pipeline,
            metrics=self.metrics,
        )
        self.retry_pool: dict[str, PreparedItem] = {}
        """Items that failed in Neo4j in this call, for the retry rounds (at most MAX_RETRY_POOL)."""
        self.failing: set[str] = set()
        """Keys that failed in this call and have not committed since."""
        self.unseen_failures: set[str] = set()
        """Keys on record as failed by earlier tries that the stream has not brought back (yet)."""
        self.skip_streak = 0
        self.count: WindowCount | None = None
        self.last_progress_time = time.monotonic()
        self.next_progress_fraction = 0.1
        self.last_progress_done = -1

    # -- the steps ----------------------------------------------------------------------------------
    def stream_window(self, *, prefetch_pages: int, count: bool) -> None:
        """Step 1: every row of the window -> skip what is done -> prepare -> batches; all settled."""
        ent = self.entity
        self.graph.ensure_constraints(all_labels([ent]))
        if count:
            # Beside the first pages rather than before them: $count is a full extra round trip, and a
            # slow one on the real API, and only the progress percentage needs it.
            self.count = WindowCount(lambda: self.client.count(ent.entity_set, self.start, self.end))
        earlier = self.ledger.failed_items()
        self.unseen_failures = set(earlier)
        # Only ids an earlier try processed can be skipped: a first try (nothing on record) need not ask.
        resuming = self.ledger.processed_count > 0
        lo, hi = (t.isoformat() if t else None for t in (self.start, self.end))
        window = f"[{lo or '-inf'}, {hi or '+inf'})"
        log.info(
            "▶️ Loading %s changed in %s%s",
            ent.name,
            window,
            f", {len(earlier)} failed in an earlier try will be retried" if earlier else "",
        )
        pages = self.client.iter_pages(
            ent.entity_set, self.start, self.end, select=ent.select, expand=ent.expand
        )
        with closing(prefetch(pages, prefetch_pages)) as prefetched:  # closing stops the prefetch thread
            for page in prefetched:
                self._take_page(page, resuming)
                self._take_count()
                self._progress()
        self._take_count()
        if count and self.result.total is None:
            # the count is late or failed; the complete stream held the window's size: no need to wait
            self.result.total = self.result.seen
            self.ledger.set_total_items(self.result.seen)
        self._flush_skips()
        self.batches.flush()

    def retry_failures(self, *, max_retries: int, backoff: float, sleep: Callable[[float], None]) -> None:
        """Step 2: stale failures cleared (:meth:`clear_stale_failures`); then bounded retry rounds, with
        backoff, for the items that failed in Neo4j in this call."""
        self.clear_stale_failures()
        for attempt in range(1, max_retries + 1):
            if not self.retry_pool:
                return
            wait = backoff * 2 ** (attempt - 1)
            log.info(
                "🔁 Retrying %d failed %s items (round %d of %d) in %.1f s",
                len(self.retry_pool),
                self.entity.name,
                attempt,
                max_retries,
                wait,
            )
            sleep(wait)
            items = list(self.retry_pool.values())
            self.result.retried += len(items)
            self.metrics.retried(len(items))
            for item in items:
                self.batches.add(item)
            self.batches.flush()

    def clear_stale_failures(self) -> None:
        """Take off the record the earlier tries' failures whose key the complete stream did not bring
        back and never will: each is checked with the API by its key (:meth:`_stale_reason`)."""
        stale = sorted(self.unseen_failures - self.failing)
        self.unseen_failures = set()
        if not stale:
            return
        log.info(
            "🔎 %d %s failure(s) on record did not come back in the window; checking them with the API",
            len(stale),
            self.entity.name,
        )
        if len(stale) > MAX_STALE_LOOKUPS:
            log.warning("Checking the first %d of them; the rest wait for the next try", MAX_STALE_LOOKUPS)
        for key in stale[:MAX_STALE_LOOKUPS]:
            reason = self._stale_reason(key)
            if reason is None:
                continue
            if self.ledger.clear_failed(key, reason):
                self.result.cleared += 1
                log.info("🧹 %s %s: failure cleared: %s", self.entity.name, key, reason)
        if self.result.cleared:
            self.ledger.save_progress()

    def _stale_reason(self, key: str) -> str | None:
        """Why the failure of ``key`` will never come back in this window, or None to keep it on record."""
        if key.startswith(NO_ID_PREFIX):
            return (
                "a row served without Id that the window no longer serves (fixed or gone); "
                "it has no key to ask the API for"
            )
        if self.ledger.is_processed(key):
            return "already processed"
        from include.loaders.api import ApiError  # the client's error; a fake client raises none

        try:
            row = self.client.get_entity(self.entity.entity_set, key, select=["Id", WATERMARK])
        except ApiError as e:
            log.warning(
                "%s %s: could not check the failure with the API (%s); kept", self.entity.name, key, e
            )
            return None
        if row is None:
            return "the API no longer serves it (HTTP 404 for its key)"
        changed = parse_datetimeoffset(row.get(WATERMARK))
        if changed is None:
            log.warning(
                "%s %s: the API serves it without a readable %s; kept", self.entity.name, key, WATERMARK
            )
            return None
        before = self.start is not None and changed < self.start
        if before or (self.end is not None and changed >= self.end):
            return (
                f"it moved out of the window ({WATERMARK} now {changed.isoformat()}); "
                "the run of the window it moved to loads it"
            )
        log.warning(
            "%s %s: the API serves it in the window but the stream did not bring it; kept on record",
            self.entity.name,
            key,
        )
        return None

    def finish(self) -> LoadResult:
        """Step 3: the ledger saved and completed, the summary logged."""
        self.batches.close()
        result = self.result
        # Failures on record: the ledger's (earlier tries' that this window did not bring back, and this
        # call's), and this call's own, which a NullLedger does not keep.
        failed = set(self.ledger.failed_items()) | self.failing
        result.failed = len(failed)
        result.failed_ids = sorted(failed)[:20]
        result.seconds = time.monotonic() - self.t0
        self._progress(force=True)
        self.ledger.save_progress()
        self.ledger.complete()
        self.metrics.finished()
        log.info(result.summary_line())
        if result.failed:
            log.warning(
                "⚠️ %d %s items failed and are on record with their error (e.g. %s); a retry or clear of "
                "the task retries those the window still serves and clears those it no longer serves",
                result.failed,
                self.entity.name,
                ", ".join(result.failed_ids[:5]),
            )
        return result

    def abort(self, error: BaseException) -> None:
        """The one way out on an error (the caller re-raises it): record what the writer still holds,
        save the ledger and mark it failed. Errors on the way are logged: ``error`` matters more."""
        self.result.seconds = time.monotonic() - self.t0
        try:
            self._flush_skips()
            self.batches.close()  # queued batches recorded when they commit; the partial one written
        except Exception:
            log.exception("Could not record the queued batches of %s after an error", self.entity.name)
        try:
            self.ledger.save_progress()
            self.ledger.fail(error_text(error))
        except Exception:
            log.exception("Could not save the checkpoint of %s after an error", self.entity.name)
        self.metrics.finished()
        log.error(
            "❌ %s load stopped after %d processed / %d skipped / %d failed: %s",
            self.entity.name,
            self.result.processed,
            self.result.skipped,
            len(self.failing),
            error_text(error),
        )

    # -- one row, one page --------------------------------------------------------------------------
    def _take_page(self, page: list[dict[str, Any]], resuming: bool) -> None:
        for raw in page:
            self.result.seen += 1
            key = item_key(raw)  # derived once: the ledger's key and the node's id
            if self.unseen_failures:
                self.unseen_failures.discard(key)  # an earlier failure that came back
            if resuming and self.ledger.is_processed(key):
                self.skip_streak += 1
                continue
            self._flush_skips()
            try:
                item = prepare_item(self.entity, raw, key=key)
            except ItemDataError as e:
                self._failed(key, error_text(e), None)
                continue
            self.batches.add(item)

    # -- the ledger ---------------------------------------------------------------------------------
    def _committed(self, items: list[PreparedItem]) -> None:
        """A batch committed: mark it processed and make it durable."""
        keys = [i.id for i in items]
        for key in keys:
            self.failing.discard(key)
            self.retry_pool.pop(key, None)
        self.ledger.mark_processed_many(keys)
        self.metrics.processed(i.changed for i in items)
        self.result.processed += len(keys)
        self.result.deleted += sum(1 for i in items if i.deleted)
        self.ledger.save_progress()

    def _failed(self, key: str, error: str, item: PreparedItem | None) -> None:
        """Record a failed item; keep it for the retry rounds when it reached Neo4j (it was prepared)."""
        log.warning("%s %s failed: %s", self.entity.name, key, error)
        self.failing.add(key)
        if item is not None and (key in self.retry_pool or len(self.retry_pool) < MAX_RETRY_POOL):
            self.retry_pool[key] = item
        self.ledger.mark_failed(key, error)
        self.metrics.failed()

    def _flush_skips(self) -> None:
        """End a streak of skipped items: counted here, once, and logged."""
        if self.skip_streak:
            log.info("⏭️ Skipping %d already-processed items", self.skip_streak)
            self.ledger.mark_skipped(self.skip_streak)
            self.metrics.skipped(self.skip_streak)
            self.result.skipped += self.skip_streak
            self.skip_streak = 0

    def _take_count(self) -> None:
        """Record the window's count once its thread has it (or log why there is none)."""
        count = self.count
        if count is None or not count.done:
            return
        self.count = None
        if count.error is not None:
            log.warning("Could not count the window's items (%s); progress shows counts only", count.error)
            return
        self.result.total = count.value
        log.info("%s items changed in the window", count.value)
        self.ledger.set_total_items(count.value)

    # -- progress -----------------------------------------------------------------------------------
    def _progress(self, force: bool = False) -> None:
        """A progress line at every 10 % of the count and at least every ``progress_seconds``."""
        total = self.result.total
        done = self.result.processed + self.result.skipped + self.skip_streak
        now = time.monotonic()
        due = force or now - self.last_progress_time >= self.progress_seconds
        if total:
            fraction = done / total
            if fraction >= self.next_progress_fraction:
                due = True
                while self.next_progress_fraction <= fraction:
                    self.next_progress_fraction += 0.1
        if not due or (force and done == self.last_progress_done):
            return
        self.last_progress_time = now
        self.last_progress_done = done
        if total:
            log.info("📊 Progress: %d/%d (%.1f%%)", done, total, min(100.0, 100.0 * done / total))
        else:
            log.info("📊 Progress: %d items", done)
        if self.failing:
            log.warning("⚠️ %d items failed during processing", len(self.failing))


# ==================================================================================================
# Several loaders in turn, without Airflow (the command line, tests, benchmarks)
# ==================================================================================================


def run_loaders(
    entities: Iterable[str] = CORE_ENTITIES,
    *,
    client: PageSource,
    driver: Driver,
    checkpoint_base: str | None = None,
    run_id: str | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    **options: Any,
) -> dict[str, LoadResult]:
    """Run :func:`load_entity` for each entity in turn, with checkpoints under ``checkpoint_base``.

    The checkpoint run ``run_id`` is created or reopened, so a rerun with the same id skips what is done.
    The loader checkpoints are named after the entities' loaders (``load_zaken`` …). At the end the run
    is finished as its loaders ended (there is no Airflow listener to do it): ``completed``, or ``failed``
    when a loader raised (the error is re-raised) or items still fail, so ``list``, the dashboard and
    ``resume`` do not take it for unfinished work. Only a killed process leaves it ``running``.
    """
    if checkpoint_base is None:
        return _run_loaders(entities, None, client=client, driver=driver, start=start, end=end, **options)
    from tk_checkpoint import CheckpointManager

    manager = CheckpointManager(checkpoint_base)
    run_id = manager.start_new_run(run_id=run_id)
    try:
        results = _run_loaders(
            entities, manager, client=client, driver=driver, start=start, end=end, **options
        )
    except BaseException as e:
        manager.fail_run(run_id, error_text(e))
        raise
    failing = {name: r.failed for name, r in results.items() if r.failed}
    if failing:
        manager.fail_run(run_id, f"items still fail: {failing}")
    else:
        manager.complete_run(run_id)
    return results


def _run_loaders(
    entities: Iterable[str],
    manager: Any,
    *,
    client: PageSource,
    driver: Driver,
    start: datetime | None,
    end: datetime | None,
    **options: Any,
) -> dict[str, LoadResult]:
    """The loaders of :func:`run_loaders` in turn, each with its checkpoint when ``manager`` is set."""
    results: dict[str, LoadResult] = {}
    for name in entities:
        ent = get_entity(name)
        if manager is None:
            results[ent.name] = load_entity(
                ent, client=client, driver=driver, start=start, end=end, **options
            )
            continue
        from tk_checkpoint import LoaderCheckpoint

        meta = {"entity": ent.name, "start": start.isoformat() if start else None}
        meta["end"] = end.isoformat() if end else None
        cp = LoaderCheckpoint(manager, ent.loader, meta=meta)
        try:
            results[ent.name] = load_entity(
                ent, client=client, driver=driver, checkpoint=cp, start=start, end=end, **options
            )
        finally:
            cp.close()
    return results
