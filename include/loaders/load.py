"""The one generic load loop of DESIGN.md, "the way of one item", for every entity of the table.

``pages -> skip done -> prepare -> batch -> one transaction per batch -> mark -> save``:

* pages stream from the API client (a bounded prefetch thread overlaps the next HTTP page with the
  current Neo4j transaction; memory does not grow with the result size);
* Ids the checkpoint already holds as processed are skipped and counted ("Skipping N already-processed
  items");
* the rest are written in batches, one Neo4j transaction each (``graph.GraphWriter``); an item is marked
  processed only after its batch committed, and progress is saved after every committed batch;
* writes are pipelined: one transaction runs in a writer thread while the loop prepares the next batch
  and records the previous one, so a crash leaves at most two committed batches unmarked (redone,
  idempotently, by the next try). Transactions never overlap: one runs at a time;
* a batch that fails on its *data* is split in halves until the bad items are isolated; they are marked
  failed with the error, the others proceed. Connection and server errors propagate (the Airflow task
  fails and its retry resumes);
* items that failed get a bounded number of automatic retries with backoff before the loop ends (items of
  earlier tries come back by themselves: they are in the window and not marked processed);
* at the end the checkpoint is completed (the engine compacts its journal) and a summary line is logged:
  processed / skipped / failed / total, items per second.

Usable without Airflow: it needs a client with ``count`` and ``iter_pages`` (``include.loaders.api``), a
``neo4j.Driver`` and optionally a ``tk_checkpoint.LoaderCheckpoint``.
"""

from __future__ import annotations

import argparse
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, Protocol

from neo4j import Driver
from neo4j.exceptions import Neo4jError

from include.loaders.entities import CORE_ENTITIES, Entity, all_labels, get_entity
from include.loaders.graph import (
    GraphWriter,
    ItemDataError,
    PreparedItem,
    is_data_error,
    item_key,
    prepare_item,
)

log = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 500
DEFAULT_CHECKPOINT_INTERVAL = 25
DEFAULT_MAX_RETRIES = 2
DEFAULT_RETRY_BACKOFF = 2.0
DEFAULT_PROGRESS_SECONDS = 30.0
MAX_RETRY_POOL = 10_000
"""At most this many failed items are kept in memory for the in-loop retry; more wait for the next try."""


class PageSource(Protocol):
    """What the loop needs of the API client (``include.loaders.api.TKClient``)."""

    def count(self, entity_set: str, start: datetime | None = None, end: datetime | None = None) -> int: ...

    def iter_pages(
        self,
        entity_set: str,
        start: datetime | None = None,
        end: datetime | None = None,
        select: Sequence[str] | None = None,
        expand: Sequence[str] | None = None,
    ) -> Iterator[list[dict[str, Any]]]: ...


@dataclass
class LoadResult:
    """What one :func:`load_entity` call did.

    Attributes:
        processed: items written (merged or deleted) and marked in this call.
        skipped: items already processed by an earlier try of the same checkpoint.
        failed: items that still fail at the end (on record in the checkpoint with their last error).
        deleted: tombstones among ``processed``.
        total: items in the window by the API's count (None when not counted).
        seen: items the stream delivered.
        retried: item attempts made by the in-loop retry rounds.
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
        return (
            f"✅ {self.entity}: {self.processed} processed / {self.skipped} skipped / {self.failed} failed / "
            f"{total} total ({self.deleted} deleted) in {self.seconds:.1f} s, {self.rate:.1f} items/s"
        )


def _error_text(exc: BaseException) -> str:
    if isinstance(exc, Neo4jError):
        text = f"{exc.code}: {exc.message}"
    else:
        text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= 1000 else text[:997] + "..."


_END = object()


def _prefetch(pages: Iterator[list[dict[str, Any]]], depth: int) -> Iterator[list[dict[str, Any]]]:
    """Iterate ``pages`` in a background thread, at most ``depth`` pages ahead (bounded memory).

    The producer's exception is re-raised in the consumer; when the consumer stops early the producer is
    told to stop and the underlying iterator is closed.
    """
    if depth <= 0:
        yield from pages
        return
    q: queue.Queue[Any] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(obj: Any) -> bool:
        while not stop.is_set():
            try:
                q.put(obj, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for page in pages:
                if not put(page):
                    return
            put(_END)
        except BaseException as e:  # handed to the consumer, which re-raises it
            put(e)
        finally:
            close = getattr(pages, "close", None)
            if close is not None:
                close()

    thread = threading.Thread(target=produce, name="tk-page-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            obj = q.get()
            if obj is _END:
                return
            if isinstance(obj, BaseException):
                raise obj
            yield obj
    finally:
        stop.set()
        thread.join(timeout=5)


class _Loop:
    """State of one :func:`load_entity` call (kept out of module scope)."""

    def __init__(
        self,
        entity: Entity,
        writer: GraphWriter,
        checkpoint: Any,
        result: LoadResult,
        checkpoint_interval: int,
        progress_seconds: float,
    ) -> None:
        self.entity = entity
        self.writer = writer
        self.cp = checkpoint
        self.result = result
        self.checkpoint_interval = max(1, checkpoint_interval)
        self.progress_seconds = progress_seconds
        self.unsaved = 0
        self.retry_pool: dict[str, PreparedItem] = {}
        self.failed_now: set[str] = set()
        self.skip_streak = 0
        self.last_progress_time = time.monotonic()
        self.next_progress_fraction = 0.1
        self.last_progress_done = -1
        self.inflight: deque[tuple[list[PreparedItem], Future[None]]] = deque()
        self.pool: ThreadPoolExecutor | None = None

    # -- checkpoint bookkeeping --------------------------------------------------------------------
    def save(self) -> None:
        if self.cp is not None:
            self.cp.save_progress()
        self.unsaved = 0

    def committed(self, items: Sequence[PreparedItem]) -> None:
        """Mark a committed batch processed and make it durable."""
        keys = [i.id for i in items]
        for key in keys:
            if key in self.failed_now:
                self.failed_now.discard(key)
            self.retry_pool.pop(key, None)
        if self.cp is not None:
            self.cp.mark_processed_many(keys)
        self.result.processed += len(keys)
        self.result.deleted += sum(1 for i in items if i.deleted)
        self.save()

    def failed(self, key: str, error: str, item: PreparedItem | None) -> None:
        """Record a failed item; keep it for the in-loop retry when it reached Neo4j."""
        log.warning("%s %s failed: %s", self.entity.name, key, error)
        self.failed_now.add(key)
        if item is not None and (key in self.retry_pool or len(self.retry_pool) < MAX_RETRY_POOL):
            self.retry_pool[key] = item
        if self.cp is not None:
            self.cp.mark_failed(key, error)
        self.unsaved += 1
        if self.unsaved >= self.checkpoint_interval:
            self.save()

    # -- writing ------------------------------------------------------------------------------------
    def write(self, items: list[PreparedItem]) -> None:
        """One transaction for ``items`` in this thread; on a data error, isolate and fail the bad items."""
        if not items:
            return
        try:
            self.writer.write_batch(self.entity, items)
        except Exception as e:
            if not is_data_error(e):
                raise
            self._isolate(items, e)
            return
        self.committed(items)

    def _isolate(self, items: list[PreparedItem], error: Exception) -> None:
        """A transaction of ``items`` failed on its data: bisect until the bad items are alone."""
        if len(items) == 1:
            self.failed(items[0].id, _error_text(error), items[0])
            return
        log.info(
            "%s: a batch of %d items failed on its data (%s); splitting it to isolate the bad items",
            self.entity.name,
            len(items),
            _error_text(error)[:200],
        )
        mid = len(items) // 2
        self.write(items[:mid])
        self.write(items[mid:])

    # -- pipelined writing ---------------------------------------------------------------------------
    def start_pipeline(self) -> None:
        """Write batches in a writer thread from now on (:meth:`submit`); :meth:`close` ends it."""
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tk-neo4j-writer")

    def submit(self, items: list[PreparedItem]) -> None:
        """Queue ``items`` for one transaction, then record every earlier batch but the newest.

        The writer thread runs one transaction at a time. While it writes batch N+1 this thread marks and
        saves batch N and prepares batch N+2, so the checkpoint's work and the preparation overlap the
        database's. Without a pipeline this is :meth:`write`.
        """
        if not items:
            return
        if self.pool is None:
            self.write(items)
            return
        self.inflight.append((items, self.pool.submit(self.writer.write_batch, self.entity, items)))
        while len(self.inflight) > 1:
            self._settle(*self.inflight.popleft())

    def drain(self) -> None:
        """Wait for every queued batch and record it."""
        while self.inflight:
            self._settle(*self.inflight.popleft())

    def _settle(self, items: list[PreparedItem], future: Future[None]) -> None:
        try:
            future.result()
        except Exception as e:
            self.drain_quietly()  # the later batches finish first: never two transactions at once
            if not is_data_error(e):
                raise
            self._isolate(items, e)  # synchronously, with nothing else in flight
            return
        self.committed(items)

    def drain_quietly(self) -> None:
        """On the way out of a failure: settle the queued batches as :meth:`drain` does, but log the errors
        (a batch that failed on its data is still isolated) instead of raising them."""
        while self.inflight:
            items, future = self.inflight.popleft()
            try:
                self._settle(items, future)
            except Exception as e:
                log.warning("A batch of %d items was not written: %s", len(items), _error_text(e))

    def close(self) -> None:
        """Record what is still queued (quietly) and stop the writer thread."""
        try:
            self.drain_quietly()
        finally:
            if self.pool is not None:
                self.pool.shutdown(wait=True)
                self.pool = None

    # -- skipping and progress ----------------------------------------------------------------------
    def flush_skips(self) -> None:
        if self.skip_streak:
            log.info("⏭️ Skipping %d already-processed items", self.skip_streak)
            self.skip_streak = 0

    def done(self) -> int:
        return self.result.processed + self.result.skipped

    def progress(self, force: bool = False) -> None:
        total = self.result.total
        done = self.done()
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
        n_failed = len(self.failed_now)
        if n_failed:
            log.warning("⚠️ %d items failed during processing", n_failed)


class _Count:
    """``client.count`` of the window, running in its own thread while the pages stream."""

    def __init__(self, client: PageSource, entity_set: str, start: datetime | None, end: datetime | None):
        self._value: int | None = None
        self._error: BaseException | None = None
        self._done = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(client, entity_set, start, end), name="tk-count", daemon=True
        )
        self._thread.start()

    def _run(self, client: PageSource, entity_set: str, start: datetime | None, end: datetime | None) -> None:
        try:
            self._value = client.count(entity_set, start, end)
        except BaseException as e:  # reported by take(); the load itself does not need the count
            self._error = e
        finally:
            self._done.set()

    def take(self, result: LoadResult, checkpoint: Any) -> bool:
        """Record the count if it is known by now (in ``result.total``); True once it is done or failed."""
        if not self._done.is_set():
            return False
        if self._error is not None:
            log.warning("Could not count the window's items (%s); progress shows counts only", self._error)
        else:
            result.total = self._value
            log.info("%s items changed in the window", self._value)
            if checkpoint is not None:
                checkpoint.set_total_items(self._value)
        return True


def _write_quietly(loop: _Loop, batch: list[PreparedItem]) -> None:
    """Write the queued and pending batches on the way out of a failure; their errors must not hide the
    first one."""
    try:
        loop.drain_quietly()
        loop.write(batch)
    except Exception as e:
        log.warning("Could not write %d pending items while stopping: %s", len(batch), _error_text(e))
    batch.clear()


def load_entity(
    entity: str | Entity,
    *,
    client: PageSource,
    driver: Driver,
    checkpoint: Any = None,
    start: datetime | None = None,
    end: datetime | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    checkpoint_interval: int = DEFAULT_CHECKPOINT_INTERVAL,
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

    Args:
        entity: an entity of ``entities.ENTITIES`` (name like ``"Zaak"``, loader name, or the entry).
        client: the TK API client (``TKClient``); its ``ApiError`` propagates after its own retries.
        driver: a ``neo4j.Driver`` (``graph.connect("neo4j_default")`` in Airflow).
        checkpoint: a ``tk_checkpoint.LoaderCheckpoint`` (open, lock held); None loads without one.
        start, end: the half-open window on ``ApiGewijzigdOp`` (tz-aware); None = unbounded.
        batch_size: items per Neo4j transaction.
        checkpoint_interval: failed items recorded between two saves at most (processed items are saved
            after every committed batch anyway).
        max_retries, retry_backoff: in-loop retry rounds for failed items, waiting
            ``retry_backoff * 2**round`` seconds before each.
        progress_seconds: a progress line at least this often (and at every 10 %).
        prefetch_pages: pages fetched ahead by a background thread (0 = none).
        pipeline: run the transactions in a writer thread, overlapping the loop's own work (False: in
            this thread, one batch at a time; at most one committed batch unmarked after a crash).
        count: ask the API for the window's size first (for the progress percentage).
        database: the Neo4j database (None = default).
        sleep: the backoff's sleep (tests pass a no-op).

    Returns the :class:`LoadResult`. Raises the API client's errors and Neo4j connection/server errors
    after saving the checkpoint and marking the loader failed; data errors never raise.
    """
    ent = get_entity(entity)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
    t0 = time.monotonic()
    result = LoadResult(entity=ent.name)
    writer = GraphWriter(driver, database)
    loop = _Loop(ent, writer, checkpoint, result, checkpoint_interval, progress_seconds)
    window = f"[{start.isoformat() if start else '-inf'}, {end.isoformat() if end else '+inf'})"
    pages: Iterator[list[dict[str, Any]]] | None = None
    try:
        writer.ensure_constraints(all_labels([ent]))
        if pipeline:
            loop.start_pipeline()
        # The window's size is only for the progress percentage: ask for it beside the first pages
        # instead of before them ($count is a full extra round trip, and a slow one on the real API).
        total = _Count(client, ent.entity_set, start, end) if count else None
        earlier = dict(checkpoint.failed_items()) if checkpoint is not None else {}
        # Only ids an earlier try processed can be skipped: a first try (nothing on record) need not ask.
        resuming = checkpoint is not None and checkpoint.processed_count > 0
        log.info(
            "▶️ Loading %s changed in %s%s",
            ent.name,
            window,
            f", {len(earlier)} failed in an earlier try will be retried" if earlier else "",
        )

        batch: list[PreparedItem] = []
        pages = _prefetch(
            client.iter_pages(ent.entity_set, start, end, select=ent.select, expand=ent.expand),
            prefetch_pages,
        )
        while True:
            try:
                page = next(pages)
            except StopIteration:
                break
            except BaseException:
                # The API failed (after the client's retries): keep what was already fetched, then fail.
                loop.flush_skips()
                _write_quietly(loop, batch)
                raise
            for raw in page:
                result.seen += 1
                key = item_key(raw)
                if resuming and checkpoint.is_processed(key):
                    result.skipped += 1
                    loop.skip_streak += 1
                    continue
                loop.flush_skips()
                try:
                    item = prepare_item(ent, raw)
                except ItemDataError as e:
                    loop.failed(key, _error_text(e), None)
                    continue
                batch.append(item)
                if len(batch) >= batch_size:
                    loop.submit(batch)
                    batch = []
            if total is not None and total.take(result, checkpoint):
                total = None
            loop.progress()
        pages.close()  # stops the prefetch thread now rather than at garbage collection
        if total is not None:
            total.take(result, checkpoint)
            total = None
        if count and result.total is None:
            # the count is late or failed; the complete stream held the window's size: no need to wait
            result.total = result.seen
            if checkpoint is not None:
                checkpoint.set_total_items(result.seen)
        loop.flush_skips()
        loop.submit(batch)
        batch = []
        loop.drain()
        loop.close()  # the writer thread; the retry rounds below write in this thread

        for attempt in range(1, max_retries + 1):
            if not loop.retry_pool:
                break
            wait = retry_backoff * 2 ** (attempt - 1)
            log.info(
                "🔁 Retrying %d failed %s items (round %d of %d) in %.1f s",
                len(loop.retry_pool),
                ent.name,
                attempt,
                max_retries,
                wait,
            )
            sleep(wait)
            items = list(loop.retry_pool.values())
            result.retried += len(items)
            for i in range(0, len(items), batch_size):
                loop.write(items[i : i + batch_size])

        # Failures on record: this call's, and earlier tries' that this window did not bring back.
        failed_keys = set(checkpoint.failed_items()) if checkpoint is not None else loop.failed_now
        result.failed = len(failed_keys)
        result.failed_ids = sorted(failed_keys)[:20]
        result.seconds = time.monotonic() - t0
        loop.progress(force=True)
        if checkpoint is not None:
            checkpoint.save_progress()
            checkpoint.complete()
        log.info(result.summary_line())
        if result.failed:
            log.warning(
                "⚠️ %d %s items failed and are on record with their error (e.g. %s); a retry or clear of "
                "the task retries them",
                result.failed,
                ent.name,
                ", ".join(result.failed_ids[:5]),
            )
        return result
    except BaseException as e:
        result.seconds = time.monotonic() - t0
        if pages is not None:
            pages.close()  # type: ignore[attr-defined]  # the prefetch generator: stop its thread
        try:
            loop.close()  # the queued batches: recorded when they commit, before the checkpoint is saved
        except Exception:  # the original error matters more
            log.exception("Could not record the queued batches of %s after an error", ent.name)
        if checkpoint is not None:
            try:
                checkpoint.save_progress()
                checkpoint.fail(_error_text(e))
            except Exception:  # the original error matters more than a failing save
                log.exception("Could not save the checkpoint of %s after an error", ent.name)
        log.error(
            "❌ %s load stopped after %d processed / %d skipped / %d failed: %s",
            ent.name,
            result.processed,
            result.skipped,
            len(loop.failed_now),
            _error_text(e),
        )
        raise


# ==================================================================================================
# Running loaders without Airflow (CLI, tests, benchmarks)
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
    The loader checkpoints are named after the entities' loaders (``load_zaken`` …).
    """
    results: dict[str, LoadResult] = {}
    manager = None
    if checkpoint_base is not None:
        from tk_checkpoint import CheckpointManager

        manager = CheckpointManager(checkpoint_base)
        manager.start_new_run(run_id=run_id)
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


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m include.loaders.load``: load entities without Airflow (settings from the environment)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "entities", nargs="*", default=list(CORE_ENTITIES), help="entity names (default: all)"
    )
    parser.add_argument("--start", type=datetime.fromisoformat, help="window start (ISO, tz-aware)")
    parser.add_argument("--end", type=datetime.fromisoformat, help="window end, exclusive (ISO, tz-aware)")
    parser.add_argument("--run-id", help="checkpoint run id (reuse it to resume)")
    parser.add_argument("--checkpoint-base", help="checkpoint base (default: TK_CHECKPOINT_BASE, or none)")
    parser.add_argument("--conn-id", default="neo4j_default", help="Airflow connection of Neo4j")
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    import os

    from include.loaders.api import TKClient
    from include.loaders.entities import requirements
    from include.loaders.graph import connect
    from include.loaders.settings import ApiSettings

    base = args.checkpoint_base or os.environ.get("TK_CHECKPOINT_BASE")
    client = TKClient(ApiSettings.from_env())
    client.check_metadata(requirements(args.entities))
    driver = connect(args.conn_id)
    try:
        results = run_loaders(
            args.entities,
            client=client,
            driver=driver,
            checkpoint_base=base,
            run_id=args.run_id,
            start=args.start,
            end=args.end,
            batch_size=args.batch_size,
        )
    finally:
        driver.close()
        client.close()
    return 1 if any(r.failed for r in results.values()) else 0


if __name__ == "__main__":
    raise SystemExit(main())
