"""The state of one loader, as its files hold it: the newest valid snapshot plus the journal after it.

:class:`LoaderState` is what a reader gets (``CheckpointManager.read_loader``) and what the writer
(:mod:`tk_checkpoint.loader`) keeps in memory and saves. :func:`read_loader_state` reads it back; with
``repair=True`` (only the lock-holding writer) damaged files are set aside before the error is raised.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from . import fileformat as ff
from .errors import CorruptCheckpointError
from .idset import IdSet
from .names import CORRUPT_MARK, incident_of, loader_keys, loaders_folder, set_aside_suffix
from .store import Journal, Store

log = logging.getLogger(__name__)

# The scalars a journal record may set (its "set" member); anything else in it is ignored.
_SET_FIELDS = (
    "created_at",
    "state",
    "total_items",
    "current_batch",
    "skipped_count",
    "error",
    "completed_at",
    "updated_at",
    "meta",
)


@dataclass
class LoaderState:
    """A loader file read back: snapshot plus journal. Item ids are strings; ``processed`` is an
    :class:`~tk_checkpoint.idset.IdSet` (a set of strings, about 18 bytes per GUID).

    ``current_batch`` is the original system's statistic: kept in the files and reported by
    ``LoaderCheckpoint.get_progress()`` for a loader that sets it; the tk_ingest load loop does not, so
    :meth:`summary` (``list``, ``show``, the dashboard) leaves it out.
    """

    run_id: str
    loader: str
    state: str = "in_progress"
    total_items: int | None = None
    current_batch: int = 0
    skipped_count: int = 0
    created_at: str | None = None
    updated_at: str | None = None
    completed_at: str | None = None
    error: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    journal_seq: int = 0
    tries: list[dict[str, Any]] = field(default_factory=list)
    failed: dict[str, dict[str, Any]] = field(default_factory=dict)
    processed: IdSet = field(default_factory=IdSet)
    incidents: list[str] = field(default_factory=list)
    locked_by: dict[str, Any] | None = None

    @classmethod
    def from_document(
        cls, doc: dict[str, Any], run_id: str, loader: str, processed: IdSet | None = None
    ) -> LoaderState:
        """From a snapshot document; its ``processed_ids`` unless the ids are given as ``processed``."""
        if processed is None:
            processed = IdSet()
            processed.update(doc["processed_ids"])
        return cls(
            run_id=run_id,
            loader=loader,
            state=doc["state"],
            total_items=doc.get("total_items"),
            current_batch=doc.get("current_batch") or 0,
            skipped_count=doc.get("skipped_count") or 0,
            created_at=doc.get("created_at"),
            updated_at=doc.get("updated_at"),
            completed_at=doc.get("completed_at"),
            error=doc.get("error"),
            meta=dict(doc.get("meta") or {}),
            journal_seq=doc.get("journal_seq", 0),
            tries=list(doc.get("tries") or []),
            failed={str(k): dict(v) for k, v in (doc.get("failed_items") or {}).items()},
            processed=processed,
        )

    def document_chunks(self) -> Iterator[bytes]:
        """The snapshot document in chunks, ids streamed (see :func:`fileformat.loader_document_chunks`)."""
        self.processed.finish_bulk()  # exact count for the header
        return ff.loader_document_chunks(self.header(), self.processed)

    def header(self) -> dict[str, Any]:
        """The snapshot document without ``processed_ids``."""
        return {
            "schema_version": ff.SCHEMA_VERSION,
            "kind": ff.LOADER_KIND,
            "run_id": self.run_id,
            "loader": self.loader,
            "state": self.state,
            "total_items": self.total_items,
            "current_batch": self.current_batch,
            "skipped_count": self.skipped_count,
            "processed_count": len(self.processed),
            "failed_count": len(self.failed),
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "completed_at": self.completed_at,
            "error": self.error,
            "meta": self.meta,
            "journal_seq": self.journal_seq,
            "tries": self.tries,
            "failed_items": self.failed,
        }

    def apply(self, record: dict[str, Any], *, bulk: bool = False) -> None:
        """Replay one journal record. Idempotent; processed wins over failed. ``bulk``: one of many (the
        caller calls ``processed.consolidate()`` after the last)."""
        processed, failed = self.processed, self.failed
        add = processed.add_unchecked if bulk else processed.add
        for item in record.get("p", ()):
            item = str(item)
            add(item)
            failed.pop(item, None)
        for item, info in record.get("f", {}).items():
            if item not in processed:
                failed[item] = info
        cleared = record.get("c", ())  # failures the loop cleared (their key never comes back)
        for item in cleared if isinstance(cleared, list) else ():
            failed.pop(str(item), None)
        for key, value in record.get("set", {}).items():
            if key in _SET_FIELDS:
                setattr(self, key, value)
        entry = record.get("try")
        if entry:
            index = entry.get("index", len(self.tries) + 1)
            if 1 <= index <= len(self.tries):
                self.tries[index - 1] = entry
            else:
                self.tries.append(entry)
        self.journal_seq = record["seq"]

    def summary(self) -> dict[str, Any]:
        """Counts and state, the way ``list``/``show``, the dashboard and the progress line report them."""
        done = len(self.processed)
        total = self.total_items
        last = self.tries[-1] if self.tries else None
        return {
            "run_id": self.run_id,
            "loader": self.loader,
            "state": self.state,
            "processed_count": done,
            "total_items": total,
            "completion_percentage": round(100.0 * done / total, 1) if total else None,
            "failed_count": len(self.failed),
            "skipped_count": self.skipped_count,
            "rate": _rate(last),
            "tries": len(self.tries),
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "completed_at": self.completed_at,
            "error": self.error,
            "meta": self.meta,
            "locked_by": self.locked_by,
            "incidents": self.incidents,
        }

    def last_failures(self, n: int = 10) -> list[dict[str, Any]]:
        """The ``n`` most recently failed items, newest first: ``{item_id, error, attempts, …}``."""
        items = sorted(
            self.failed.items(), key=lambda kv: str(kv[1].get("last_failed_at") or ""), reverse=True
        )
        return [{"item_id": k, **v} for k, v in items[:n]]


def _rate(entry: dict[str, Any] | None) -> float | None:
    """Items per second of a try entry (up to now while it runs)."""
    if not entry or not entry.get("started_at"):
        return None
    try:
        start = datetime.fromisoformat(entry["started_at"]).timestamp()
        end = datetime.fromisoformat(entry["ended_at"]).timestamp() if entry.get("ended_at") else time.time()
    except ValueError:
        return None
    return round(entry.get("processed", 0) / max(end - start, 1e-3), 1)


# --- reading -------------------------------------------------------------------------------------


def _read_one_snapshot(store: Store, key: str) -> tuple[dict, IdSet, int] | None:
    """One snapshot file: (document without its ids, the ids, uncompressed size), or None when absent.

    The layout this engine writes is read streaming, chunk by chunk (fast, about 16 bytes per id on top of
    the result); anything else (schema 1, edited files, damage) the general way, which raises the errors.
    """
    chunks = store.read_chunks(key)
    if chunks is None:
        return None
    try:
        return ff.read_loader_stream(chunks)
    except (ff.NotOurLayout, ValueError):
        pass
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()
    data = store.read(key)
    if data is None:
        return None
    where = store.url(key)
    raw = ff.unpack(data, where)
    del data
    doc = ff.read_loader_document(ff.decode_document(raw, where), where)
    ids = IdSet()
    ids.update(doc.pop("processed_ids"))
    return doc, ids, len(raw)


def _read_snapshot(
    store: Store, keys: dict[str, str], *, repair: bool
) -> tuple[dict | None, IdSet | None, int]:
    """The newest valid snapshot (plain or gzip): document without its ids, the ids, uncompressed size."""
    best: dict | None = None
    best_ids: IdSet | None = None
    best_size = 0
    for kind in ("plain", "gzip"):
        key = keys[kind]
        try:
            found = _read_one_snapshot(store, key)
            if found is None:
                continue
            doc, ids, size = found
        except CorruptCheckpointError as exc:
            if repair:
                aside = key + set_aside_suffix()
                store.move(key, aside)
                exc.set_aside = store.url(aside)
                exc.args = (
                    f"{exc} - set aside as {exc.set_aside}. The loader continues from its journal on the "
                    "next open; items recorded only in the damaged snapshot will be processed again. See "
                    "docs/checkpoints.md, 'Recovery'.",
                )
            raise
        if best is None or doc.get("journal_seq", 0) > best.get("journal_seq", 0):
            best, best_ids, best_size = doc, ids, size
    return best, best_ids, best_size


def read_loader_state(
    store: Store, run_id: str, name: str, *, repair: bool = False, journal: Journal | None = None
) -> tuple[LoaderState, int, int, int]:
    """Read snapshot + journal of one loader. Returns (state, snapshot bytes, journal bytes, journal records).

    ``repair=True`` (only the lock-holding writer) sets damaged files aside before raising; readers only
    raise.
    """
    keys = loader_keys(run_id, name)
    journal = journal or store.journal(keys["journal"])
    raw = journal.read()  # journal before snapshot: a compaction in between then still reads consistently
    doc, ids, snap_bytes = _read_snapshot(store, keys, repair=repair)
    state = LoaderState.from_document(doc, run_id, name, ids) if doc else LoaderState(run_id, name)
    folder = loaders_folder(run_id)
    state.incidents = [store.url(f"{folder}/{e}") for e in store.list(folder) if incident_of(e, name)]
    snapshot_lost = any(
        i.rsplit("/", 1)[-1].split(CORRUPT_MARK)[0].endswith((".json", ".json.gz")) for i in state.incidents
    )
    journal_bytes = journal_records = 0
    for i, rec_raw in enumerate(raw):
        if not rec_raw.complete:
            log.warning(
                "Ignoring the incomplete last journal record %s (a crash during a save)", rec_raw.where
            )
            break
        try:
            record = ff.decode_record(rec_raw.data, rec_raw.where)
            seq = record["seq"]
            if seq <= state.journal_seq:
                continue
            if seq != state.journal_seq + 1:
                first = journal_bytes == 0
                if not (first and snapshot_lost):
                    raise CorruptCheckpointError(
                        f"Journal {journal.where} is damaged: record {seq} at {rec_raw.where} follows record "
                        f"{state.journal_seq}; records in between are missing",
                        rec_raw.where,
                    )
                log.warning(
                    "Journal %s continues after a set-aside snapshot, from record %s", journal.where, seq
                )
        except CorruptCheckpointError as exc:
            if repair:
                _salvage(store, keys, journal, state, exc, kept=i, dropped=len(raw) - i)
            raise
        state.apply(record, bulk=True)
        journal_bytes += len(rec_raw.data) + 1
        journal_records += 1
    state.processed.consolidate()
    return state, snap_bytes, journal_bytes, journal_records


def _salvage(
    store: Store,
    keys: dict[str, str],
    journal: Journal,
    state: LoaderState,
    exc: Exception,
    kept: int,
    dropped: int,
) -> None:
    """Writer-side recovery of a damaged journal: keep the good prefix in a snapshot, set the rest aside."""
    store.write_stream(keys["gzip"], ff.PackedStream(state.document_chunks(), -1, gzip=True))
    store.delete(keys["plain"])
    aside = journal.set_aside(set_aside_suffix())
    if isinstance(exc, CorruptCheckpointError):
        exc.set_aside = aside
    exc.args = (
        f"{exc.args[0]}. The {kept} good records before it were kept (state saved as record "
        f"{state.journal_seq}); the journal from there on ({dropped} records) was set aside as {aside}. "
        "Open the loader again (retry the task) to continue from the last good state; the items of the "
        "set-aside records are processed again. See docs/checkpoints.md, 'Recovery'.",
    )
