"""The moving parts under the load loop (``include.loaders.load``): threads and queues, no bookkeeping.

* :func:`prefetch`: iterate the API's pages in a background thread, a bounded number of pages ahead, so
  the next HTTP page is fetched while the current Neo4j transaction runs (memory stays bounded);
* :class:`WindowCount`: the window's ``$count`` in its own thread, beside the first pages (it is only for
  the progress percentage, and a slow extra round trip on the real API);
* :class:`BatchWriter`: prepared items -> batches -> one Neo4j transaction each, in a writer thread that
  runs one transaction at a time while the loop prepares the next batch and records the previous one. A
  batch that fails on its data is bisected until the bad items are alone.

None of them knows the ledger: the :class:`BatchWriter` reports each committed batch and each failed
item to the callbacks the loop gives it, in the loop's own thread, and the loop records them.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Generator, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

from neo4j.exceptions import Neo4jError

from include.loaders.entities import Entity
from include.loaders.graph import GraphWriter, PreparedItem, is_data_error
from include.loaders.metrics import LoaderMetrics

log = logging.getLogger(__name__)

T = TypeVar("T")

_END = object()


def error_text(exc: BaseException) -> str:
    """An error as one line for a log or a checkpoint: Neo4j's code and message, else type and text."""
    if isinstance(exc, Neo4jError):
        text = f"{exc.code}: {exc.message}"
    else:
        text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= 1000 else text[:997] + "..."


def prefetch(pages: Iterator[T], depth: int) -> Generator[T, None, None]:
    """Iterate ``pages`` in a background thread, at most ``depth`` pages ahead (0: in this thread).

    The producer's exception is re-raised in the consumer. Closing the returned generator (the loop
    does, also when it stops early) tells the producer to stop and closes ``pages``.
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


class WindowCount:
    """``count()`` (the API's ``$count`` of the window) running in its own daemon thread.

    Poll :attr:`done`; then :attr:`value` holds the count, or :attr:`error` why there is none.
    """

    def __init__(self, count: Callable[[], int]) -> None:
        self.value: int | None = None
        self.error: BaseException | None = None
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(count,), name="tk-count", daemon=True)
        self._thread.start()

    def _run(self, count: Callable[[], int]) -> None:
        try:
            self.value = count()
        except BaseException as e:  # reported by the loop; the load itself does not need the count
            self.error = e
        finally:
            self._done.set()

    @property
    def done(self) -> bool:
        """True once the count is known or has failed."""
        return self._done.is_set()


class BatchWriter:
    """Prepared items of one entity into Neo4j, ``batch_size`` per transaction, in order.

    Items come in by :meth:`add`; every full batch is queued for the writer thread (``threaded``; else
    written at once in this thread). The writer thread runs one transaction at a time, and at most one
    batch waits behind the running one: each :meth:`add` that queues a batch first settles every earlier
    batch but the newest. So after a crash at most two committed batches are unrecorded (the one being
    recorded and the one running), and the next try redoes them idempotently.

    Settling a batch, in the caller's thread: committed -> ``on_committed(items)``; failed on its data
    (:func:`graph.is_data_error`) -> the queued batches are settled first (never two transactions at
    once), then the batch is bisected in this thread until each bad item is alone -> ``on_failed(item,
    error)``, and the good halves -> ``on_committed``. Any other error (connection, server, or a
    callback's) is raised, and the writer counts as *failed* from then on.

    :meth:`flush` writes the partial batch and waits for all (raising); :meth:`close` ends the writer on
    any path: it settles what is queued and, unless the writer has failed, writes the partial batch too
    (what was fetched is kept when the API stops mid-window), logging errors instead of raising them (the
    error that ended the load matters more), and stops the thread.

    The time of each committed transaction goes to ``metrics`` (``LoaderMetrics.batch_written``).
    """

    def __init__(
        self,
        graph: GraphWriter,
        entity: Entity,
        batch_size: int,
        *,
        on_committed: Callable[[list[PreparedItem]], None],
        on_failed: Callable[[PreparedItem, str], None],
        threaded: bool = True,
        metrics: LoaderMetrics | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
        self.graph = graph
        self.entity = entity
        self.batch_size = batch_size
        self.on_committed = on_committed
        self.on_failed = on_failed
        self.metrics = metrics
        self.failed = False
        self._pending: list[PreparedItem] = []
        self._inflight: deque[tuple[list[PreparedItem], Future[None]]] = deque()
        self._pool = (
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="tk-neo4j-writer") if threaded else None
        )

    def add(self, item: PreparedItem) -> None:
        """Add one item; a full batch is queued (and the batches before it settled)."""
        self._pending.append(item)
        if len(self._pending) >= self.batch_size:
            self._guarded(self._submit_pending)

    def flush(self) -> None:
        """Queue the partial batch, then wait for every queued batch and settle it."""
        self._guarded(self._submit_pending)
        self._guarded(self._drain)

    def close(self) -> None:
        """End the writer (idempotent): settle the queued batches, write the partial one unless the writer
        failed, stop the thread. Errors are logged, not raised."""
        try:
            self._drain_quietly()
            batch, self._pending = self._pending, []
            if batch and not self.failed:
                try:
                    self._write_now(batch)
                except Exception as e:
                    self.failed = True
                    log.warning(
                        "Could not write %d pending items while stopping: %s", len(batch), error_text(e)
                    )
        finally:
            if self._pool is not None:
                self._pool.shutdown(wait=True)
                self._pool = None

    # -- inside ----------------------------------------------------------------------------------------
    def _guarded(self, step: Callable[[], None]) -> None:
        try:
            step()
        except BaseException:
            self.failed = True
            raise

    def _submit_pending(self) -> None:
        batch, self._pending = self._pending, []
        if not batch:
            return
        if self._pool is None:
            self._write_now(batch)
            return
        self._inflight.append((batch, self._pool.submit(self._write, batch)))
        while len(self._inflight) > 1:
            self._settle(*self._inflight.popleft())

    def _write(self, items: list[PreparedItem]) -> None:
        """One transaction (in the thread that runs it), timed for the batch-write metric."""
        t0 = time.monotonic()
        self.graph.write_batch(self.entity, items)
        if self.metrics is not None:
            self.metrics.batch_written(time.monotonic() - t0)

    def _drain(self) -> None:
        while self._inflight:
            self._settle(*self._inflight.popleft())

    def _drain_quietly(self) -> None:
        """Settle the queued batches as :meth:`_drain` does (a batch that failed on its data is still
        isolated), logging the other errors instead of raising them."""
        while self._inflight:
            items, future = self._inflight.popleft()
            try:
                self._settle(items, future)
            except Exception as e:
                self.failed = True
                log.warning("A batch of %d items was not written: %s", len(items), error_text(e))

    def _settle(self, items: list[PreparedItem], future: Future[None]) -> None:
        try:
            future.result()
        except Exception as e:
            if not is_data_error(e):
                self._drain_quietly()  # record what the later batch committed; this error ends the load
                raise
            self._drain()  # the later batches finish first: never two transactions at once
            self._isolate(items, e)  # in this thread, with nothing else in flight
            return
        self.on_committed(items)

    def _write_now(self, items: list[PreparedItem]) -> None:
        """One transaction for ``items`` in this thread; on a data error, isolate the bad items."""
        if not items:
            return
        try:
            self._write(items)
        except Exception as e:
            if not is_data_error(e):
                raise
            self._isolate(items, e)
            return
        self.on_committed(items)

    def _isolate(self, items: list[PreparedItem], error: Exception) -> None:
        """A transaction of ``items`` failed on its data: bisect until the bad items are alone."""
        if len(items) == 1:
            self.on_failed(items[0], error_text(error))
            return
        log.info(
            "%s: a batch of %d items failed on its data (%s); splitting it to isolate the bad items",
            self.entity.name,
            len(items),
            error_text(error)[:200],
        )
        mid = len(items) // 2
        self._write_now(items[:mid])
        self._write_now(items[mid:])
