"""CheckpointManager and LoaderCheckpoint: the original system's API, crash-safe and O(new items) per save.

Layout under the base (a local folder or an ObjectStoragePath URL), one folder per run::

    <run_id>/run.json                       run file: run_id, dag_id, conf, state, timestamps
    <run_id>/loaders/<loader>.json[.gz]     loader snapshot (gzip above a size threshold)
    <run_id>/loaders/<loader>.journal.jsonl journal, local base: one JSON record per save, append-only
    <run_id>/loaders/<loader>.journal/      journal, object storage: one immutable object per save
    <run_id>/loaders/<loader>.lock          the writer lock (host, pid, try, heartbeat)

See docs/checkpoints.md for the format, the guarantees and the recovery procedures.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from . import fileformat as ff
from .errors import (
    CheckpointError,
    CorruptCheckpointError,
    InvalidNameError,
    RunNotFoundError,
)
from .idset import IdSet
from .lock import WriterLock, break_lock
from .present import format_progress, format_when  # noqa: F401 - re-exported until callers move
from .store import Journal, Store, open_store

log = logging.getLogger(__name__)

DEFAULT_BASE = "checkpoints"
MAX_ERROR_CHARS = 2000
_NAME_RE = re.compile(r"[A-Za-z0-9_.~:+@=,-]+")
_RESERVED_SUFFIXES = (".json", ".gz", ".jsonl", ".journal", ".lock")
_SECRET_KEY_RE = re.compile(r"pass(word|wd)?|secret|token|api[_-]?key|credential|private[_-]?key|auth", re.I)
REDACTED = "***redacted***"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _stamp() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")


def _env_float(name: str, default: float) -> float:
    value = os.environ.get(name)
    return float(value) if value not in (None, "") else default


def validate_name(name: Any, what: str = "run id") -> str:
    """Return ``name`` if it is safe as one path segment under the base, else raise InvalidNameError.

    Allowed: letters, digits and ``_ . ~ : + @ = , -`` (Airflow's run ids fit), at most 200 characters,
    not starting with '.', no '..'. Rejected: empty, '/', '\\', NUL, absolute paths, anything else.
    """
    if not isinstance(name, str) or not name:
        raise InvalidNameError(f"Invalid {what} {name!r}: it must be a non-empty string")
    problem = None
    if "\x00" in name:
        problem = "it contains a NUL character"
    elif "/" in name or "\\" in name:
        problem = "it contains a path separator"
    elif ".." in name:
        problem = "it contains '..'"
    elif name.startswith("."):
        problem = "it starts with '.'"
    elif len(name) > 200:
        problem = "it is longer than 200 characters"
    elif not _NAME_RE.fullmatch(name):
        problem = "only letters, digits and _ . ~ : + @ = , - are allowed"
    elif what == "loader name" and (name.endswith(_RESERVED_SUFFIXES) or ".corrupt-" in name):
        problem = "it ends with a suffix the checkpoint files use"
    if problem:
        raise InvalidNameError(f"Invalid {what} {name!r}: {problem}")
    return name


def loader_name(task_id: str, map_index: int | None = None) -> str:
    """The loader name of an Airflow task instance: ``task_id``, or ``task_id.<map_index>`` when mapped."""
    name = task_id if map_index is None or map_index < 0 else f"{task_id}.{map_index}"
    return validate_name(name, "loader name")


def redact(value: Any) -> Any:
    """A copy of ``value`` with the values of secret-looking keys (password, token, secret...) replaced."""
    if isinstance(value, Mapping):
        return {
            k: (REDACTED if isinstance(k, str) and _SECRET_KEY_RE.search(k) else redact(v))
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [redact(v) for v in value]
    return value


@dataclass
class Settings:
    """Tuning of the engine; each default can be set by environment variable (see docs/checkpoints.md)."""

    fsync: bool = True
    gzip_threshold: int = 1 << 20
    gzip_level: int = 1
    save_interval: int | None = 25
    compact_min_bytes: int = 4 << 20
    compact_ratio: float = 0.5
    max_segments: int = 500
    lock_stale_after: float | None = None

    @classmethod
    def from_env(cls, **overrides: Any) -> Settings:
        s = cls(
            fsync=os.environ.get("TK_CHECKPOINT_FSYNC", "1").lower() not in ("0", "false", "no", "off"),
            gzip_threshold=int(_env_float("TK_CHECKPOINT_GZIP_THRESHOLD", 1 << 20)),
            save_interval=int(_env_float("TK_CHECKPOINT_INTERVAL", 25)) or None,
        )
        for k, v in overrides.items():
            if v is not None:
                setattr(s, k, v)
        return s


# --- keys ----------------------------------------------------------------------------------------


def _run_key(run_id: str) -> str:
    return f"{run_id}/run.json"


def _loader_keys(run_id: str, name: str) -> dict[str, str]:
    prefix = f"{run_id}/loaders/{name}"
    return {
        "plain": prefix + ".json",
        "gzip": prefix + ".json.gz",
        "journal": prefix + ".journal",
        "lock": prefix + ".lock",
    }


def _loader_names(entries: Iterable[str]) -> list[str]:
    names = set()
    for entry in entries:
        if entry.startswith(".") or ".corrupt-" in entry:
            continue
        for suffix in (".json.gz", ".json", ".journal.jsonl", ".journal", ".lock"):
            if entry.endswith(suffix):
                names.add(entry[: -len(suffix)])
                break
    return sorted(names)


# --- the state of one loader file ----------------------------------------------------------------

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
    :class:`~tk_checkpoint.idset.IdSet` (a set of strings, about 18 bytes per GUID)."""

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

    def to_document(self) -> dict[str, Any]:
        """The snapshot as one dict (``processed_ids`` a list: small states only; snapshots are written by
        :meth:`document_chunks`)."""
        return {**self.header(), "processed_ids": list(self.processed)}

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
        """Counts and state, the way ``list``/``show`` and the progress line report them."""
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
            "current_batch": self.current_batch,
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
        items = sorted(
            self.failed.items(), key=lambda kv: str(kv[1].get("last_failed_at") or ""), reverse=True
        )
        return [{"item_id": k, **v} for k, v in items[:n]]


def _rate(entry: dict[str, Any] | None) -> float | None:
    if not entry or not entry.get("started_at"):
        return None
    try:
        start = datetime.fromisoformat(entry["started_at"]).timestamp()
        end = datetime.fromisoformat(entry["ended_at"]).timestamp() if entry.get("ended_at") else time.time()
    except ValueError:
        return None
    return round(entry.get("processed", 0) / max(end - start, 1e-3), 1)


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
                aside = key + ".corrupt-" + _stamp()
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
    keys = _loader_keys(run_id, name)
    journal = journal or store.journal(keys["journal"])
    raw = journal.read()  # journal before snapshot: a compaction in between then still reads consistently
    doc, ids, snap_bytes = _read_snapshot(store, keys, repair=repair)
    state = LoaderState.from_document(doc, run_id, name, ids) if doc else LoaderState(run_id, name)
    prefix = f"{name}."
    state.incidents = [
        store.url(f"{run_id}/loaders/{e}")
        for e in store.list(f"{run_id}/loaders")
        if e.startswith(prefix) and ".corrupt-" in e and _loader_names([e.split(".corrupt-")[0]]) == [name]
    ]
    snapshot_lost = any(
        i.rsplit("/", 1)[-1].split(".corrupt-")[0].endswith((".json", ".json.gz")) for i in state.incidents
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
    aside = journal.set_aside(".corrupt-" + _stamp())
    if isinstance(exc, CorruptCheckpointError):
        exc.set_aside = aside
    exc.args = (
        f"{exc.args[0]}. The {kept} good records before it were kept (state saved as record "
        f"{state.journal_seq}); the journal from there on ({dropped} records) was set aside as {aside}. "
        "Open the loader again (retry the task) to continue from the last good state; the items of the "
        "set-aside records are processed again. See docs/checkpoints.md, 'Recovery'.",
    )


# --- the manager ---------------------------------------------------------------------------------


class CheckpointManager:
    """The runs under one base (a local path or an object-storage URL such as ``s3://conn_id@bucket/prefix``).

    ``base`` defaults to ``$TK_CHECKPOINT_BASE``, else ``./checkpoints``. Keyword settings (``fsync``,
    ``gzip_threshold``, ``save_interval``, ...) override :class:`Settings` from the environment.
    """

    def __init__(self, base: Any = None, **settings: Any) -> None:
        base = base if base not in (None, "") else os.environ.get("TK_CHECKPOINT_BASE") or DEFAULT_BASE
        self.base = base
        self.store: Store = open_store(base)
        self.settings = Settings.from_env(**settings)
        self.current_run_id: str | None = None

    def __repr__(self) -> str:
        return f"CheckpointManager({self.store!r}, current_run_id={self.current_run_id!r})"

    @property
    def checkpoint_dir(self) -> str:
        """Where the checkpoints live (the original's attribute name)."""
        return self.store.url("")

    # runs --------------------------------------------------------------------------------------

    def _read_run(self, run_id: str) -> dict[str, Any]:
        validate_name(run_id)
        key = _run_key(run_id)
        data = self.store.read(key)
        if data is None:
            raise RunNotFoundError(f"Run not found: {run_id} (under {self.checkpoint_dir})")
        where = self.store.url(key)
        return ff.read_run_document(ff.decode_document(data, where), where)

    def _write_run(self, doc: dict[str, Any]) -> None:
        doc["updated_at"] = _now()
        self.store.write(_run_key(doc["run_id"]), ff.encode_document(doc), fsync=self.settings.fsync)

    def start_new_run(
        self,
        run_id: str | None = None,
        dag_id: str | None = None,
        conf: Mapping[str, Any] | None = None,
        description: str | None = None,
    ) -> str:
        """Create the run (or reopen it: idempotent for a retried task) and make it current. Returns its id.

        Without ``run_id`` a new ``run_YYYYmmdd_HHMMSS`` id is made. ``conf`` is stored with secret-looking
        keys redacted; do not put secrets in it anyway.
        """
        if run_id is None:
            run_id = datetime.now().strftime("run_%Y%m%d_%H%M%S")
            candidate, n = run_id, 1
            while self.store.exists(_run_key(candidate)):
                n += 1
                candidate = f"{run_id}_{n}"
            run_id = candidate
        validate_name(run_id)
        try:
            doc = self._read_run(run_id)
        except RunNotFoundError:
            doc = None
        except CorruptCheckpointError as exc:
            # The run file holds no progress (the loader files do): set it aside and write a new one.
            key = _run_key(run_id)
            aside = key + ".corrupt-" + _stamp()
            self.store.move(key, aside)
            log.warning("%s - set aside as %s; writing a new run file", exc, self.store.url(aside))
            doc = None
        if doc is None:
            now = _now()
            doc = {
                "schema_version": ff.SCHEMA_VERSION,
                "kind": ff.RUN_KIND,
                "run_id": run_id,
                "dag_id": dag_id,
                "conf": redact(dict(conf or {})),
                "description": description,
                "state": "running",
                "created_at": now,
                "updated_at": now,
                "completed_at": None,
                "error": None,
                "host": socket.gethostname(),
            }
            self._write_run(doc)
            log.info("Started checkpoint run %s", run_id)
        else:
            changed = doc["state"] != "running"
            updates = {"dag_id": dag_id, "description": description}
            if conf is not None:
                updates["conf"] = redact(dict(conf))
            for key, value in updates.items():
                if value is not None and doc.get(key) != value:
                    doc[key], changed = value, True
            if changed:
                doc.update(state="running", completed_at=None, error=None)
                self._write_run(doc)
            log.info("Reopened checkpoint run %s", run_id)
        self.current_run_id = run_id
        return run_id

    def resume_run(self, run_id: str) -> str:
        """Make an existing run current again and mark it running. Raises RunNotFoundError."""
        doc = self._read_run(run_id)
        if doc["state"] != "running":
            doc.update(state="running", completed_at=None, error=None)
            self._write_run(doc)
        self.current_run_id = run_id
        return run_id

    def _set_run_state(self, run_id: str | None, state: str, error: str | None = None) -> None:
        run_id = run_id or self.current_run_id
        if run_id is None:
            raise CheckpointError("No current run: call start_new_run() or resume_run() first")
        doc = self._read_run(run_id)
        doc.update(
            state=state, completed_at=_now(), error=None if error is None else str(error)[:MAX_ERROR_CHARS]
        )
        self._write_run(doc)

    def complete_run(self, run_id: str | None = None) -> None:
        self._set_run_state(run_id, "completed")

    def fail_run(self, run_id: str | None = None, error: str | None = None) -> None:
        self._set_run_state(run_id, "failed", error)

    def list_runs(self, details: bool = False) -> list[dict[str, Any]]:
        """Runs newest first (by creation time). A damaged run file shows as state 'damaged' with its error.

        With ``details`` each run carries ``loaders``: {name: summary}, as :meth:`get_run`.
        """
        runs = []
        for name in self.store.list(""):
            try:
                validate_name(name)
                runs.append(self.get_run(name) if details else self._read_run(name))
            except (InvalidNameError, RunNotFoundError):
                continue  # not a run folder
            except CheckpointError as exc:
                runs.append({"run_id": name, "state": "damaged", "error": str(exc), "created_at": None})
        runs.sort(key=lambda r: (str(r.get("created_at") or ""), r["run_id"]), reverse=True)
        return runs

    def get_run(self, run_id: str, loaders: bool = True) -> dict[str, Any]:
        """The run file plus ``loaders``: {name: summary}; damaged loader files show ``state: damaged``.

        Summaries read every loader file in full; ``loaders=False`` returns the run file alone (cheap).
        Raises RunNotFoundError ("Run not found").
        """
        doc = dict(self._read_run(run_id))
        if not loaders:
            return doc
        doc["loaders"] = self._report_loaders(run_id, self.loader_names(run_id), LoaderState.summary)
        return doc

    def _report_loaders(
        self, run_id: str, names: Iterable[str], report: Callable[[LoaderState], dict[str, Any]]
    ) -> dict[str, Any]:
        """{name: report(state)} reading each loader file once; a damaged one as ``state: damaged``."""
        out: dict[str, Any] = {}
        for name in names:
            try:
                out[name] = report(self.read_loader(run_id, name))
            except CheckpointError as exc:
                out[name] = {"loader": name, "state": "damaged", "error": str(exc)}
        return out

    def describe_run(
        self, run_id: str, failures: int = 10, loaders: Iterable[str] | None = None
    ) -> dict[str, Any]:
        """The run file plus, per loader (all, or ``loaders``), its summary, its tries and its last
        ``failures`` failed items with their errors: what ``tk-checkpoint show`` and the web page report.
        Damaged loader files show ``state: damaged``. Raises RunNotFoundError ("Run not found")."""
        run = self.get_run(run_id, loaders=False)
        names = self.loader_names(run_id) if loaders is None else list(loaders)

        def detail(state: LoaderState) -> dict[str, Any]:
            return {**state.summary(), "tries": state.tries, "last_failures": state.last_failures(failures)}

        return {**run, "loaders": self._report_loaders(run_id, names, detail)}

    def loader_names(self, run_id: str) -> list[str]:
        validate_name(run_id)
        return _loader_names(self.store.list(f"{run_id}/loaders"))

    def read_loader(self, run_id: str, name: str) -> LoaderState:
        """Read a loader file without taking its lock (for inspection). Never modifies anything."""
        validate_name(run_id)
        validate_name(name, "loader name")
        for attempt in range(3):
            try:
                state = read_loader_state(self.store, run_id, name)[0]
                break
            except CorruptCheckpointError:
                if attempt == 2:
                    raise
                time.sleep(0.05)  # a writer may be compacting right now: read again
        state.locked_by = WriterLock(
            self.store, _loader_keys(run_id, name)["lock"], label="", hint=""
        ).read_holder()
        return state

    def get_latest_incomplete_run(self) -> str | None:
        """The newest run that is not completed (running or failed), or None."""
        for run in self.list_runs():
            if run.get("state") in ("running", "failed"):
                return run["run_id"]
        return None

    def delete_run(self, run_id: str) -> None:
        """Delete a run and all its loader files. Raises RunNotFoundError."""
        validate_name(run_id)
        if not self.store.exists(_run_key(run_id)) and not self.store.list(run_id):
            raise RunNotFoundError(f"Run not found: {run_id} (under {self.checkpoint_dir})")
        self.store.delete_tree(run_id)
        if self.current_run_id == run_id:
            self.current_run_id = None
        log.info("Deleted checkpoint run %s", run_id)

    def cleanup_old_runs(self, keep: int = 5, force: bool = False) -> list[str]:
        """Delete all but the ``keep`` newest runs; running (or damaged) runs only with ``force``.

        Returns the deleted run ids.
        """
        if keep < 0:
            raise ValueError("keep must be 0 or more")
        deleted = []
        for run in self.list_runs()[keep:]:
            if run.get("state") in ("running", "damaged") and not force:
                log.info("Keeping run %s: it is %s (use force to delete it)", run["run_id"], run.get("state"))
                continue
            self.delete_run(run["run_id"])
            deleted.append(run["run_id"])
        return deleted

    def unlock(self, run_id: str, name: str) -> dict[str, Any] | None:
        """Break the writer lock of a loader, whoever holds it. Returns the holder it had, or None."""
        validate_name(run_id)
        validate_name(name, "loader name")
        return break_lock(self.store, _loader_keys(run_id, name)["lock"])


# --- one loader's checkpoint ---------------------------------------------------------------------


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
        self.keys = _loader_keys(run_id, name)
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
            self.journal_close_quietly()
            self.lock.release()
            raise

    def journal_close_quietly(self) -> None:
        journal = getattr(self, "journal", None)
        if journal is not None:
            journal.close()

    def _begin(self, try_number: int | None, meta: Mapping[str, Any] | None) -> None:
        now = _now()
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
        self.dirty: dict[str, Any] = {}
        self.since_save = 0
        self._set(created_at=st.created_at or now, state="in_progress", error=None, completed_at=None)
        if meta:
            self._set(meta={**st.meta, **dict(meta)})
        # record the start of this try at once, and the end of tries that died
        self.save(extra_tries=interrupted)

    # state changes -----------------------------------------------------------------------------

    def _set(self, **fields: Any) -> None:
        for key, value in fields.items():
            setattr(self.state, key, value)
            self.dirty[key] = value

    def check_open(self) -> None:
        if self.closed:
            raise CheckpointError(f"Loader checkpoint {self.run_id}/{self.name} is closed")

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
            self.since_save += new
            if self.save_interval and self.since_save >= self.save_interval:
                self.save()

    def mark_failed(self, errors: Mapping[Any, Any]) -> None:
        with self.mutex:
            self.check_open()
            now = _now()
            for item, error in errors.items():
                key = str(item)
                if key in self.state.processed:
                    log.debug("Ignoring a failure of %s: it is already processed (processed wins)", key)
                    continue
                previous = self.state.failed.get(key) or {}
                info = {
                    "error": str(error)[:MAX_ERROR_CHARS],
                    "attempts": int(previous.get("attempts", 0)) + 1,
                    "first_failed_at": previous.get("first_failed_at") or now,
                    "last_failed_at": now,
                    "try_number": self.try_entry["try_number"],
                }
                self.state.failed[key] = info
                self.pending_f[key] = info
                self.try_entry["failed"] += 1
            self.save()  # failures are saved at once, as in the original

    def count_skipped(self, n: int) -> None:
        with self.mutex:
            self.state.skipped_count += n
            self.try_entry["skipped"] += n
            self.dirty["skipped_count"] = self.state.skipped_count

    # persistence -------------------------------------------------------------------------------

    def save(self, extra_tries: Iterable[dict[str, Any]] = ()) -> bool:
        with self.mutex:
            self.check_open()
            if not (self.pending_p or self.pending_f or self.dirty or extra_tries or self.since_save):
                return False
            self.lock.check()
            now = _now()
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
            record["set"] = self.dirty
            record["try"] = self.try_entry
            self._append(record)
            self.pending_p, self.pending_f, self.dirty, self.since_save = [], {}, {}, 0
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
            st.updated_at = _now()
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
            self.snapshot_bytes, self.journal_bytes, self.journal_records = raw_size, 0, 0
            self.lock.check(beat=True)

    def finish(self, outcome: str, state: str | None = None, error: str | None = None) -> None:
        """End this try: record its outcome, save (compact when completed), release the lock."""
        with self.mutex:
            if self.closed:
                return
            try:
                now = _now()
                self.try_entry.update(ended_at=now, outcome=outcome)
                if state == "completed":
                    self._set(state="completed", completed_at=now, error=None)
                    self.compact()
                else:
                    if state == "failed":
                        self._set(
                            state="failed", error=None if error is None else str(error)[:MAX_ERROR_CHARS]
                        )
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
        try_number: the Airflow try (``ti.try_number``); ``attempt`` is an alias.
        meta: free JSON data kept with the loader (window start/end, ...). No secrets.
        force: take the lock whoever holds it.
        save_interval: save automatically after this many new processed items (default 25; 0 = never).
    """

    def __init__(
        self,
        manager: CheckpointManager,
        name: str,
        *,
        run_id: str | None = None,
        try_number: int | None = None,
        attempt: int | None = None,
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
        self._w = _Writer(
            manager,
            run_id,
            name,
            try_number if try_number is not None else attempt,
            meta,
            force,
            save_interval,
        )
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

    # the original API ----------------------------------------------------------------------------

    def set_total_items(self, total: int | None) -> None:
        with self._w.mutex:
            self._w._set(total_items=total)

    def is_processed(self, item_id: Any) -> bool:
        """True when the item was processed in this run (any try). A True answer counts as one skip."""
        if str(item_id) in self._w.state.processed:
            self._w.count_skipped(1)
            return True
        return False

    def mark_processed(self, item_id: Any) -> None:
        self._w.mark_processed((item_id,))

    def mark_failed(self, item_id: Any, error: Any) -> None:
        """Record a failure with its error (attempts counted). Saved at once. Ignored if already processed."""
        self._w.mark_failed({item_id: error})

    def save_progress(self) -> bool:
        """Make everything marked so far durable (one journal record). False when there was nothing new."""
        return self._w.save()

    # additions -----------------------------------------------------------------------------------

    def mark_processed_many(self, item_ids: Iterable[Any]) -> None:
        self._w.mark_processed(item_ids)

    def mark_failed_many(self, errors: Mapping[Any, Any]) -> None:
        self._w.mark_failed(errors)

    def mark_skipped(self, count: int = 1) -> None:
        """Count items skipped without asking :meth:`is_processed` (for example filtered in bulk)."""
        self._w.count_skipped(count)

    def filter_unprocessed(self, item_ids: Iterable[Any]) -> list[Any]:
        """The ids not yet processed, in order; the others are counted as skipped."""
        ids = list(item_ids)
        processed = self._w.state.processed
        todo = [i for i in ids if str(i) not in processed]
        if len(todo) < len(ids):
            self._w.count_skipped(len(ids) - len(todo))
        return todo

    def set_current_batch(self, batch: int) -> None:
        with self._w.mutex:
            self._w._set(current_batch=batch)

    def update_meta(self, **meta: Any) -> None:
        with self._w.mutex:
            self._w._set(meta={**self._w.state.meta, **meta})

    def failed_items(self) -> dict[str, dict[str, Any]]:
        """{item_id: {error, attempts, first_failed_at, last_failed_at, try_number}} (a copy)."""
        with self._w.mutex:
            return {k: dict(v) for k, v in self._w.state.failed.items()}

    def compact(self) -> None:
        """Fold the journal into the snapshot now (also done when the journal grows, and by complete)."""
        self._w.compact()

    def complete(self) -> None:
        """Loader state ``completed``: saves, compacts, releases the lock."""
        self._w.finish("completed", "completed")

    def fail(self, error: Any = None) -> None:
        """Loader state ``failed`` with ``error``: saves, releases the lock. Processed items stay so."""
        self._w.finish("failed", "failed", None if error is None else str(error))

    def close(self) -> None:
        """Save what is pending and release the lock; the state stays as it is (``in_progress``)."""
        self._w.finish("closed")

    @property
    def closed(self) -> bool:
        return self._w.closed

    # statistics ----------------------------------------------------------------------------------

    @property
    def processed_count(self) -> int:
        return len(self._w.state.processed)

    @property
    def failed_count(self) -> int:
        return len(self._w.state.failed)

    @property
    def skipped_count(self) -> int:
        return self._w.state.skipped_count

    @property
    def total_items(self) -> int | None:
        return self._w.state.total_items

    @property
    def current_batch(self) -> int:
        return self._w.state.current_batch

    @current_batch.setter
    def current_batch(self, value: int) -> None:
        self.set_current_batch(value)

    @property
    def state(self) -> str:
        return self._w.state.state

    @property
    def try_number(self) -> int | None:
        return self._w.try_entry["try_number"]

    def get_progress(self) -> dict[str, Any]:
        """processed_count, total_items, completion_percentage, failed_count, skipped_count, current_batch,
        rate (items/s in this try), state, tries, timestamps."""
        with self._w.mutex:
            progress = self._w.state.summary()
            progress["processed_this_try"] = self._w.try_entry["processed"]
            progress["skipped_this_try"] = self._w.try_entry["skipped"]
            progress["failed_this_try"] = self._w.try_entry["failed"]
            return progress

    def progress_line(self) -> str:
        """The original's lines: '📊 Progress: 750/1000 (75.0%)' and '⚠️ 5 items failed during processing'."""
        return format_progress(self.get_progress())

    def summary_line(self) -> str:
        """'load_zaak: 500 processed, 500 skipped, 5 failed of 1000, 812.3 items/s' (this try's figures)."""
        p = self.get_progress()
        rate = p["rate"] if p["rate"] is not None else 0.0
        return (
            f"{self.loader_name}: {p['processed_this_try']} processed, {p['skipped_this_try']} skipped, "
            f"{p['failed_count']} failed, {p['processed_count']}/{p['total_items'] or '?'} done, "
            f"{rate} items/s"
        )

    def log_progress(self, logger: logging.Logger | None = None) -> None:
        for line in self.progress_line().splitlines():
            (logger or log).info("%s", line)
