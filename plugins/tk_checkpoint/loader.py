"""LoaderCheckpoint: the item-level record of one loader (one Airflow task instance), and its writer.

A :class:`LoaderCheckpoint` takes the loader's writer lock, records a new try, and then marks items
processed, failed or skipped. It is the load loop's ledger: it satisfies ``include.loaders.ledger.Ledger``
with the names of the original checkpoint system.

When progress is saved (docs/checkpoints.md, "When progress is saved"): automatically after every
``save_interval`` new marks, processed and failed counted together, and by ``save_progress``,
``complete``, ``fail`` and ``close``. A save appends one journal record; the journal is folded into a
new snapshot when it has grown (and by ``complete``).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import weakref
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from . import fileformat as ff
from .errors import CheckpointError, WriterDisplacedError
from .lock import WriterLock
from .names import clip_error, loader_keys, validate_name
from .present import format_progress
from .state import read_loader_state

if TYPE_CHECKING:
    from .manager import CheckpointManager

log = logging.getLogger(__name__)


class _Writer:
    """Everything a LoaderCheckpoint owns. Kept apart so a finalizer can flush it without the facade."""

    def __init__(
        self,
        manager: CheckpointManager,
        run_id: str,
        name: str,
        try_number: int | None,
        meta: Mapping[str, Any] | None,
        force: bool,
        save_interval: int | None,
    ) -> None:
        self.store = manager.store
        self.settings = manager.settings
        self.run_id = run_id
        self.name = name
        self.keys = loader_keys(run_id, name)
        self.save_interval = save_interval if save_interval is not None else self.settings.save_interval
        self.mutex = threading.RLock()
        self.closed = False
        base = manager.base if isinstance(manager.base, str) else str(manager.store.url(""))
        self.lock = WriterLock(
            self.store,
            self.keys["lock"],
            label=f"{run_id}/{name} ({self.store.url(self.keys['lock'])})",
            hint=f"tk-checkpoint unlock --run-id {run_id} --loader {name} --base {base}",
            try_number=try_number,
            stale_after=self.settings.lock_stale_after,
            force=force,
        )
        self.lock.acquire()
        try:
            for prefix in (run_id, f"{run_id}/loaders"):
                self.store.remove_stale_temps(prefix)
            self.journal = self.store.journal(self.keys["journal"], fsync=self.settings.fsync)
            cut = self.journal.truncate_torn()
            if cut:
                log.warning(
                    "Cut an incomplete last journal record (%d bytes) from %s", cut, self.journal.where
                )
            self.state, self.snapshot_bytes, self.journal_bytes, self.journal_records = read_loader_state(
                self.store, run_id, name, repair=True, journal=self.journal
            )
            for incident in self.state.incidents:
                log.warning("Loader %s/%s has a set-aside damaged file: %s", run_id, name, incident)
            self._begin(try_number, meta)
        except BaseException:
            self._close_journal_quietly()
            self.lock.release()
            raise

    def _close_journal_quietly(self) -> None:
        journal = getattr(self, "journal", None)
        if journal is not None:
            journal.close()

    def _begin(self, try_number: int | None, meta: Mapping[str, Any] | None) -> None:
        now = ff.timestamp()
        st = self.state
        for entry in st.tries:
            if entry.get("outcome") is None:
                entry.update(outcome="interrupted")  # that try died without closing its checkpoint
        self.try_entry: dict[str, Any] = {
            "index": len(st.tries) + 1,
            "try_number": try_number,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "started_at": now,
            "ended_at": None,
            "outcome": None,
            "processed": 0,
            "skipped": 0,
            "failed": 0,
        }
        if self.lock.taken_over is not None:
            self.try_entry["took_over_lock_from"] = {
                k: self.lock.taken_over.get(k) for k in ("host", "pid", "try_number", "heartbeat_at")
            }
        interrupted = [t for t in st.tries if t.get("outcome") == "interrupted"]
        st.tries.append(self.try_entry)
        self.pending_p: list[str] = []
        self.pending_f: dict[str, dict[str, Any]] = {}
        self.pending_c: list[str] = []  # failures cleared since the last save
        self.dirty: dict[str, Any] = {}
        self.since_save = 0  # new marks (processed and failed) since the last save
        self.update_state(created_at=st.created_at or now, state="in_progress", error=None, completed_at=None)
        if meta:
            self.update_state(meta={**st.meta, **dict(meta)})
        # record the start of this try at once, and the end of tries that died
        self.save(extra_tries=interrupted)

    # state changes -----------------------------------------------------------------------------

    def update_state(self, **fields: Any) -> None:
        """Change scalars of the state; they are saved with the next save."""
        with self.mutex:
            for key, value in fields.items():
                setattr(self.state, key, value)
                self.dirty[key] = value

    def check_open(self) -> None:
        if self.closed:
            raise CheckpointError(f"Loader checkpoint {self.run_id}/{self.name} is closed")

    def _counted(self, new: int) -> None:
        """``new`` marks were made: save when ``save_interval`` of them have gathered (the one policy)."""
        self.since_save += new
        if self.save_interval and self.since_save >= self.save_interval:
            self.save()

    def mark_processed(self, items: Iterable[Any]) -> None:
        with self.mutex:
            self.check_open()
            processed, failed, pending_f = self.state.processed, self.state.failed, self.pending_f
            new = 0
            for item in items:
                key = str(item)
                if not processed.add_new(key):
                    continue
                self.pending_p.append(key)
                if failed.pop(key, None) is not None:
                    pending_f.pop(key, None)
                new += 1
            self.try_entry["processed"] += new
            self._counted(new)

    def mark_failed(self, item: Any, error: Any) -> None:
        with self.mutex:
            self.check_open()
            key = str(item)
            if key in self.state.processed:
                log.debug("Ignoring a failure of %s: it is already processed (processed wins)", key)
                return
            now = ff.timestamp()
            previous = self.state.failed.get(key) or {}
            info = {
                "error": clip_error(error),
                "attempts": int(previous.get("attempts", 0)) + 1,
                "first_failed_at": previous.get("first_failed_at") or now,
                "last_failed_at": now,
                "try_number": self.try_entry["try_number"],
            }
            self.state.failed[key] = info
            self.pending_f[key] = info
            if key in self.pending_c:  # cleared, then failed again before a save: the failure stands
                self.pending_c.remove(key)
            self.try_entry["failed"] += 1
            self._counted(1)

    def clear_failed(self, item: Any) -> bool:
        """Take a failure off the record (its key will not come back); False when none was on record."""
        with self.mutex:
            self.check_open()
            key = str(item)
            if self.state.failed.pop(key, None) is None:
                return False
            self.pending_f.pop(key, None)
            self.pending_c.append(key)
            self._counted(1)
            return True

    def count_skipped(self, n: int) -> None:
        with self.mutex:
            self.state.skipped_count += n
            self.try_entry["skipped"] += n
            self.dirty["skipped_count"] = self.state.skipped_count

    # persistence -------------------------------------------------------------------------------

    def save(self, extra_tries: Iterable[dict[str, Any]] = ()) -> bool:
        with self.mutex:
            self.check_open()
            pending = self.pending_p or self.pending_f or self.pending_c
            if not (pending or self.dirty or extra_tries or self.since_save):
                return False
            self.lock.check()
            now = ff.timestamp()
            self.state.updated_at = now
            self.dirty["updated_at"] = now
            seq = self.state.journal_seq + 1
            for entry in extra_tries:  # tries closed as 'interrupted' get their own record
                self._append({"seq": seq, "at": now, "try": entry})
                seq += 1
            record: dict[str, Any] = {"seq": seq, "at": now}
            if self.pending_p:
                record["p"] = self.pending_p
            if self.pending_f:
                record["f"] = self.pending_f
            if self.pending_c:
                record["c"] = self.pending_c
            record["set"] = self.dirty
            record["try"] = self.try_entry
            self._append(record)
            self.pending_p, self.pending_f, self.dirty, self.since_save = [], {}, {}, 0
            self.pending_c = []
            threshold = max(
                self.settings.compact_min_bytes, self.settings.compact_ratio * self.snapshot_bytes
            )
            too_many = not self.store.is_local and self.journal_records >= self.settings.max_segments
            if self.journal_bytes >= threshold or too_many:
                self.compact()
            return True

    def _append(self, record: dict[str, Any]) -> None:
        data = ff.encode_record(record)
        self.journal.append(record["seq"], data)
        self.state.journal_seq = record["seq"]
        self.journal_bytes += len(data)
        self.journal_records += 1

    def compact(self) -> None:
        """Fold the journal into a new snapshot (atomic), then drop the folded journal."""
        with self.mutex:
            self.check_open()
            self.lock.check()
            st = self.state
            st.updated_at = ff.timestamp()
            # streamed: the document is never whole in memory (ids, JSON text and gzip go chunk by chunk)
            packed = ff.PackedStream(
                st.document_chunks(), self.settings.gzip_threshold, self.settings.gzip_level
            )
            key, other = (
                (self.keys["gzip"], self.keys["plain"])
                if packed.gzip
                else (self.keys["plain"], self.keys["gzip"])
            )
            if packed.whole is not None:  # small: one write, as before
                self.store.write(key, packed.whole, fsync=self.settings.fsync)
                raw_size = len(packed.whole)
            else:
                self.store.write_stream(key, packed, fsync=self.settings.fsync)
                raw_size = packed.raw_size
            self.store.delete(other)
            self.journal.clear(st.journal_seq)
            self.pending_p, self.pending_f, self.dirty, self.since_save = [], {}, {}, 0
            self.pending_c = []
            self.snapshot_bytes, self.journal_bytes, self.journal_records = raw_size, 0, 0
            self.lock.check(beat=True)

    def finish(self, outcome: str, state: str | None = None, error: str | None = None) -> None:
        """End this try: record its outcome, save (compact when completed), release the lock."""
        with self.mutex:
            if self.closed:
                return
            try:
                if self.lock.displaced:  # another writer owns the files now (or they are gone): hands off
                    if outcome == "failed":
                        log.error(
                            "Not recording the failure of %s/%s: %s",
                            self.run_id,
                            self.name,
                            self.lock.displaced,
                        )
                        return
                    raise WriterDisplacedError(self.lock.displaced)
                now = ff.timestamp()
                self.try_entry.update(ended_at=now, outcome=outcome)
                if state == "completed":
                    self.update_state(state="completed", completed_at=now, error=None)
                    self.compact()
                else:
                    if state == "failed":
                        self.update_state(state="failed", error=clip_error(error))
                    self.dirty["updated_at"] = now
                    self.save()
            finally:
                self.closed = True
                self.journal.close()
                self.lock.release()

    def abandon(self) -> None:
        """Drop everything unsaved and let go of files and lock, as a crash would (for tests)."""
        with self.mutex:
            self.closed = True
            self.journal.close()
            self.lock.release()


def _finalize(writer: _Writer) -> None:
    """A LoaderCheckpoint dropped without close(): flush its marks and release its lock."""
    try:
        writer.finish("closed")
    except Exception:  # a finalizer must not raise; the next open reads what was saved
        log.exception("Could not close loader checkpoint %s/%s", writer.run_id, writer.name)


class LoaderCheckpoint:
    """Item-level progress of one loader (one Airflow task instance) in the manager's current run.

    Opening takes the writer lock (one live writer per loader file) and records a new try. Item ids are
    compared as strings. Marking is thread-safe. Use it as a context manager, or call ``complete()``,
    ``fail(error)`` or ``close()``; a dropped checkpoint is closed (flushed, unlocked) by a finalizer.

    Args:
        manager: the CheckpointManager; its ``current_run_id`` is used unless ``run_id`` is given.
        name: loader name; a mapped task instance is ``task_id.<map_index>`` (see :func:`loader_name`).
        try_number: the Airflow try (``ti.try_number``), recorded with the try and used by the lock.
        meta: free JSON data kept with the loader (window start/end, ...). No secrets.
        force: take the lock whoever holds it.
        save_interval: save automatically after this many new marks, processed and failed together
            (default: the manager's ``save_interval``, 25; 0 = only explicit saves).
    """

    def __init__(
        self,
        manager: CheckpointManager,
        name: str,
        *,
        run_id: str | None = None,
        try_number: int | None = None,
        meta: Mapping[str, Any] | None = None,
        force: bool = False,
        save_interval: int | None = None,
    ) -> None:
        run_id = run_id or manager.current_run_id
        if run_id is None:
            raise CheckpointError(
                f"No current run for loader {name!r}: call start_new_run() or resume_run() on the manager "
                "first"
            )
        validate_name(run_id)
        validate_name(name, "loader name")
        self.manager = manager
        self.run_id = run_id
        self.loader_name = name
        self._w = _Writer(manager, run_id, name, try_number, meta, force, save_interval)
        self._finalizer = weakref.finalize(self, _finalize, self._w)

    def __repr__(self) -> str:
        return f"LoaderCheckpoint({self.run_id!r}, {self.loader_name!r}, {self.progress_line()!r})"

    def __enter__(self) -> LoaderCheckpoint:
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        if exc is not None and not self._w.closed:
            self.fail(f"{exc_type.__name__}: {exc}")
        else:
            self.close()

    # the ledger (include.loaders.ledger.Ledger), by the original system's names -----------------

    @property
    def processed_count(self) -> int:
        """Items on record as processed (by any try of this run)."""
        return len(self._w.state.processed)

    def is_processed(self, item_id: Any) -> bool:
        """True when the item was processed in this run (any try). A pure question: it counts nothing
        (count skips with :meth:`mark_skipped`)."""
        return str(item_id) in self._w.state.processed

    def failed_items(self) -> dict[str, dict[str, Any]]:
        """{item_id: {error, attempts, first_failed_at, last_failed_at, try_number}} (a copy)."""
        with self._w.mutex:
            return {k: dict(v) for k, v in self._w.state.failed.items()}

    def set_total_items(self, total: int | None) -> None:
        """The number of items to process (for the percentage); None = unknown. Saved with the next save."""
        self._w.update_state(total_items=total)

    def mark_processed(self, item_id: Any) -> None:
        """Record one item as processed (after its write committed). Counts toward the automatic save."""
        self._w.mark_processed((item_id,))

    def mark_processed_many(self, item_ids: Iterable[Any]) -> None:
        """Record items as processed (after their batch committed); items already processed count nothing."""
        self._w.mark_processed(item_ids)

    def mark_failed(self, item_id: Any, error: Any) -> None:
        """Record a failure with its error (attempts counted). Counts toward the automatic save like a
        processed mark. Ignored if the item is already processed (processed wins)."""
        self._w.mark_failed(item_id, error)

    def clear_failed(self, item_id: Any, reason: str) -> bool:
        """Take a failure off the record because its key will not come back (``reason`` is the loop's,
        logged there); the next save records it. False when the item had no failure on record."""
        return self._w.clear_failed(item_id)

    def mark_skipped(self, count: int = 1) -> None:
        """Count ``count`` items skipped because they were already processed. Saved with the next save."""
        self._w.count_skipped(count)

    def save_progress(self) -> bool:
        """Make everything marked so far durable (one journal record). False when there was nothing new."""
        return self._w.save()

    def complete(self) -> None:
        """Loader state ``completed``: saves, compacts, releases the lock."""
        self._w.finish("completed", "completed")

    def fail(self, error: Any = None) -> None:
        """Loader state ``failed`` with ``error``: saves, releases the lock. Processed items stay so."""
        self._w.finish("failed", "failed", None if error is None else str(error))

    # more of the original API ------------------------------------------------------------------

    def filter_unprocessed(self, item_ids: Iterable[Any]) -> list[Any]:
        """The ids not yet processed, in order; the others are counted as skipped (bulk skipping)."""
        ids = list(item_ids)
        processed = self._w.state.processed
        todo = [i for i in ids if str(i) not in processed]
        if len(todo) < len(ids):
            self._w.count_skipped(len(ids) - len(todo))
        return todo

    def set_current_batch(self, batch: int) -> None:
        """The original's "current batch" statistic, for a batch-based loader (``get_progress``)."""
        self._w.update_state(current_batch=batch)

    def close(self) -> None:
        """Save what is pending and release the lock; the state stays as it is (``in_progress``)."""
        self._w.finish("closed")

    def compact(self) -> None:
        """Fold the journal into the snapshot now (also done when the journal grows, and by complete)."""
        self._w.compact()

    # statistics ----------------------------------------------------------------------------------

    @property
    def failed_count(self) -> int:
        return len(self._w.state.failed)

    @property
    def skipped_count(self) -> int:
        return self._w.state.skipped_count

    @property
    def state(self) -> str:
        """``in_progress``, ``completed`` or ``failed``."""
        return self._w.state.state

    def get_progress(self) -> dict[str, Any]:
        """The loader's summary (processed_count, total_items, completion_percentage, failed_count,
        skipped_count, rate, state, tries, timestamps, ...), the original's current_batch, and this try's
        figures (processed_this_try, skipped_this_try, failed_this_try)."""
        with self._w.mutex:
            progress = self._w.state.summary()
            progress["current_batch"] = self._w.state.current_batch
            progress["processed_this_try"] = self._w.try_entry["processed"]
            progress["skipped_this_try"] = self._w.try_entry["skipped"]
            progress["failed_this_try"] = self._w.try_entry["failed"]
            return progress

    def progress_line(self) -> str:
        """The original's lines: '📊 Progress: 750/1000 (75.0%)' and '⚠️ 5 items failed during processing'."""
        return format_progress(self.get_progress())
