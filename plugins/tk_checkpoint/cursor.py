"""Durable per-type SyncFeed cursors: where the next sync of each entity type carries on.

A cursor is the ``skiptoken`` of the SyncFeed (``Feed?category=<Type>&skiptoken=<n>``) up to which the
entries of one type are committed to Neo4j. The sync loop advances it only *after* the batch it covers is
committed, so a crash can only make the next sync repeat entries, never skip them. It lives beside the
runs, one small JSON file per type::

    <base>/.cursors/<Type>.json     {"schema_version", "kind", "type_name", "skiptoken", "updated_at",
                                     "head_skiptoken", "caught_up_at", "last_run_id"}

The folder name starts with '.', which no run id may (:func:`tk_checkpoint.names.validate_name`), so
``list``, ``cleanup`` and ``delete`` never take it for a run. Guarantees:

* durable: each write is the store's atomic replace (temp file, ``fsync``, ``os.replace``, ``fsync`` of the
  folder; one PUT on object storage): a crash at any moment leaves the old or the new cursor, never a torn
  file (``TK_CHECKPOINT_FSYNC=0`` keeps the atomicity, drops the machine-crash durability);
* never backwards: :meth:`FeedCursors.advance` to a lower skiptoken raises :class:`CursorBackwardsError`
  naming both values; :meth:`FeedCursors.reset` is the only way back;
* concurrent: one file per type, so advances of different types never lose each other; on a local base the
  read-check-write of one type is also serialised between processes (a ``flock`` on the folder).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from . import fileformat as ff
from .errors import CheckpointError, CorruptCheckpointError, UnsupportedSchemaError
from .names import validate_name
from .settings import CheckpointSettings
from .store import Store, open_store

CURSORS_FOLDER = ".cursors"
CURSOR_KIND = "tk_checkpoint.cursor"
CURSOR_SCHEMA_VERSION = 1
_SUFFIX = ".json"


class CursorBackwardsError(CheckpointError, ValueError):
    """``advance`` was asked to move a cursor to a lower skiptoken than it holds (use ``reset``)."""


def cursor_key(type_name: str) -> str:
    """The key of the cursor file of ``type_name`` under the base (the name validated first)."""
    return f"{CURSORS_FOLDER}/{validate_name(type_name, 'feed type name')}{_SUFFIX}"


def _parse_time(value: Any, field: str, where: str) -> datetime | None:
    if value is None:
        return None
    try:
        stamp = datetime.fromisoformat(str(value))
    except ValueError:
        raise _bad(where, f"'{field}' is {value!r}, not an ISO 8601 time") from None
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)


def _bad(where: str, what: str) -> CorruptCheckpointError:
    return CorruptCheckpointError(
        f"Cursor file {where} is damaged: {what}. Set it again with `tk-checkpoint reset-cursor TYPE "
        "--skiptoken N` (N: the last skiptoken known to be in Neo4j; 0 syncs the type from scratch).",
        where,
    )


def _now() -> datetime:
    """Now in UTC, to the millisecond: what a cursor file stores, so a returned state equals the one read
    back."""
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class CursorState:
    """One type's cursor as stored.

    Attributes:
        type_name: the SyncFeed category (the entity type), e.g. ``Persoon``.
        skiptoken: every entry up to this skiptoken is committed to Neo4j; the next sync asks for
            ``Feed?category=<type_name>&skiptoken=<skiptoken>``.
        updated_at: when the cursor was last written (aware, UTC).
        head_skiptoken: the feed's head as last seen (the highest skiptoken the feed then had), or None.
        caught_up_at: the last time a sync reached the feed's head (an empty page with ``rel="resume"``),
            or None when it never did since the cursor was created or reset.
        last_run_id: the run that wrote the cursor last (None for a reset by hand without one).
    """

    type_name: str
    skiptoken: int
    updated_at: datetime
    head_skiptoken: int | None = None
    caught_up_at: datetime | None = None
    last_run_id: str | None = None

    @property
    def behind(self) -> int | None:
        """How far the cursor is behind the feed's head as last seen (``head - skiptoken``); None when the
        head was never seen."""
        return None if self.head_skiptoken is None else self.head_skiptoken - self.skiptoken

    def to_dict(self) -> dict[str, Any]:
        """The state as JSON-ready values (times ISO 8601 with milliseconds), with ``behind``."""
        out = asdict(self)
        for field in ("updated_at", "caught_up_at"):
            if out[field] is not None:
                out[field] = out[field].isoformat(timespec="milliseconds")
        out["behind"] = self.behind
        return out

    def document(self) -> dict[str, Any]:
        """The cursor file's content."""
        doc = {"schema_version": CURSOR_SCHEMA_VERSION, "kind": CURSOR_KIND, **self.to_dict()}
        doc.pop("behind")
        return doc

    @classmethod
    def from_document(cls, doc: dict[str, Any], where: str) -> CursorState:
        """A cursor file's content read back; anything malformed raises CorruptCheckpointError naming it."""
        version = doc.get("schema_version")
        if not _is_int(version) or version < 1:
            raise _bad(where, f"schema_version {version!r} is not a positive integer")
        if version > CURSOR_SCHEMA_VERSION:
            raise UnsupportedSchemaError(
                f"Cursor file {where} has schema_version {version}; this tk_checkpoint reads cursor files up "
                f"to version {CURSOR_SCHEMA_VERSION}. It was written by a newer tk_checkpoint: upgrade it."
            )
        if doc.get("kind") != CURSOR_KIND:
            raise _bad(where, f"'kind' is {doc.get('kind')!r}, expected {CURSOR_KIND!r}")
        if not isinstance(doc.get("type_name"), str):
            raise _bad(where, "'type_name' is missing")
        skiptoken, head = doc.get("skiptoken"), doc.get("head_skiptoken")
        if not _is_int(skiptoken) or skiptoken < 0:
            raise _bad(where, f"'skiptoken' is {skiptoken!r}, expected a whole number >= 0")
        if head is not None and not _is_int(head):
            raise _bad(where, f"'head_skiptoken' is {head!r}, expected a whole number or null")
        run_id = doc.get("last_run_id")
        if run_id is not None and not isinstance(run_id, str):
            raise _bad(where, f"'last_run_id' is {run_id!r}, expected text or null")
        updated = _parse_time(doc.get("updated_at"), "updated_at", where)
        if updated is None:
            raise _bad(where, "'updated_at' is missing")
        return cls(
            type_name=doc["type_name"],
            skiptoken=skiptoken,
            updated_at=updated,
            head_skiptoken=head,
            caught_up_at=_parse_time(doc.get("caught_up_at"), "caught_up_at", where),
            last_run_id=run_id,
        )


def _check_token(value: Any, what: str) -> int:
    if not _is_int(value) or value < 0:
        raise ValueError(f"{what} must be a whole number >= 0, got {value!r}")
    return value


class FeedCursors:
    """The SyncFeed cursors under one checkpoint base (``None``: ``TK_CHECKPOINT_BASE``, as the runs)."""

    def __init__(self, base: Any = None, *, fsync: bool | None = None) -> None:
        self.settings = CheckpointSettings.from_env().with_overrides(
            base=None if base == "" else base, fsync=fsync
        )
        self.base = self.settings.base
        self.store: Store = open_store(self.base)

    def __repr__(self) -> str:
        return f"FeedCursors({self.store!r})"

    @property
    def folder(self) -> str:
        """Where the cursor files live (a path or URL)."""
        return self.store.url(CURSORS_FOLDER)

    def _read(self, type_name: str) -> CursorState | None:
        key = cursor_key(type_name)
        data = self.store.read(key)
        if data is None:
            return None
        where = self.store.url(key)
        try:
            doc = ff.decode_document(data, where)
        except CorruptCheckpointError as exc:  # not JSON: the same message, with the fix
            what = str(exc).split(" is damaged: ", 1)[-1]
            raise _bad(where, what) from exc
        state = CursorState.from_document(doc, where)
        if state.type_name != type_name:
            raise _bad(where, f"it names type {state.type_name!r}, not {type_name!r}")
        return state

    def _write(self, state: CursorState) -> CursorState:
        self.store.remove_stale_temps(CURSORS_FOLDER)  # left by writers that were killed mid-write
        self.store.write(
            cursor_key(state.type_name), ff.encode_document(state.document()), fsync=self.settings.fsync
        )
        return state

    def get(self, type_name: str) -> CursorState | None:
        """The cursor of ``type_name``, or None when that type was never synced (start from 0).

        Raises InvalidNameError for a name that cannot be a file name, CorruptCheckpointError for a damaged
        file (its message names the file and the command that sets it again)."""
        return self._read(type_name)

    def advance(
        self,
        type_name: str,
        skiptoken: int,
        *,
        run_id: str,
        head_skiptoken: int | None = None,
        caught_up: bool = False,
    ) -> CursorState:
        """Move the cursor of ``type_name`` to ``skiptoken`` (call it once the entries up to there are
        committed to Neo4j) and return the new state.

        ``head_skiptoken``: the feed's head, when the caller saw it (else the last one seen is kept; a head
        below ``skiptoken`` is raised to it, as the head can be no lower than what was read). ``caught_up``:
        the sync reached the head (the feed's empty ``rel="resume"`` page): ``caught_up_at`` becomes now and
        the head, when not given, ``skiptoken``. The same skiptoken again is allowed (it refreshes the head
        and the times); a lower one raises :class:`CursorBackwardsError` naming both, leaving the file as it
        was."""
        _check_token(skiptoken, "skiptoken")
        if head_skiptoken is not None:
            _check_token(head_skiptoken, "head_skiptoken")
        validate_name(run_id)
        with self._serialised():
            old = self._read(type_name)
            if old is not None and skiptoken < old.skiptoken:
                raise CursorBackwardsError(
                    f"Refusing to move the cursor of {type_name} backwards, from skiptoken {old.skiptoken} "
                    f"(written by run {old.last_run_id}) to {skiptoken} (run {run_id}): entries up to "
                    f"{old.skiptoken} are already committed. To sync again from {skiptoken}, reset it: "
                    f"`tk-checkpoint reset-cursor {type_name} --skiptoken {skiptoken}`."
                )
            now = _now()
            head = head_skiptoken if head_skiptoken is not None else (old.head_skiptoken if old else None)
            if head is None and caught_up:
                head = skiptoken
            if head is not None:
                head = max(head, skiptoken)
            return self._write(
                CursorState(
                    type_name=type_name,
                    skiptoken=skiptoken,
                    updated_at=now,
                    head_skiptoken=head,
                    caught_up_at=now if caught_up else (old.caught_up_at if old else None),
                    last_run_id=run_id,
                )
            )

    def reset(self, type_name: str, skiptoken: int = 0, *, run_id: str | None = None) -> CursorState:
        """Set the cursor of ``type_name`` to ``skiptoken`` whatever it holds (0: sync the type from
        scratch), the only way to move it back. The head as last seen is kept; ``caught_up_at`` is cleared
        (the type is not caught up from there until a sync says so)."""
        _check_token(skiptoken, "skiptoken")
        if run_id is not None:
            validate_name(run_id)
        with self._serialised():
            try:
                old = self._read(type_name)
            except CheckpointError:
                old = None  # a damaged file: reset is how it is repaired
            return self._write(
                CursorState(
                    type_name=type_name,
                    skiptoken=skiptoken,
                    updated_at=_now(),
                    head_skiptoken=old.head_skiptoken if old else None,
                    caught_up_at=None,
                    last_run_id=run_id,
                )
            )

    def type_names(self) -> list[str]:
        """The types that have a cursor file, sorted (hidden temp files left out)."""
        return [
            entry[: -len(_SUFFIX)]
            for entry in self.store.list(CURSORS_FOLDER)
            if entry.endswith(_SUFFIX) and not entry.startswith(".")
        ]

    def all(self) -> dict[str, CursorState]:
        """Every cursor, by type name, sorted. A damaged file raises (see :meth:`report` to list them)."""
        out: dict[str, CursorState] = {}
        for name in self.type_names():
            state = self._read(name)
            if state is not None:  # removed in between
                out[name] = state
        return out

    def report(self) -> list[dict[str, Any]]:
        """Every cursor as a dict (:meth:`CursorState.to_dict`), sorted by type; a file that cannot be read
        shows as ``{"type_name", "state": "damaged", "error"}`` instead of hiding the others (the CLI and
        the dashboard show this)."""
        rows: list[dict[str, Any]] = []
        for name in self.type_names():
            try:
                state = self._read(name)
            except CheckpointError as exc:
                rows.append({"type_name": name, "state": "damaged", "error": str(exc)})
                continue
            if state is not None:
                rows.append(state.to_dict())
        return rows

    def _serialised(self) -> Any:
        """One read-check-write of a cursor at a time between the processes of this machine (a ``flock``
        on the folder; a no-op on object storage, which has no such lock)."""
        return self.store.guard(CURSORS_FOLDER)
