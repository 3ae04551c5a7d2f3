"""The on-disk format: JSON documents (gzip above a threshold), journal records, schema versions.

Schema history (``schema_version``):

* 1 - the original system's flat loader file (``processed_items`` list, ``failed_items``, ``status``,
  ``start_time``/``last_updated``). Read and migrated in memory; never written.
* 2 - this engine: snapshot + journal, failed items with attempts, tries. Written. Since the compact id set
  (:mod:`tk_checkpoint.idset`) the snapshot lists the GUIDs ascending, then the other ids ascending; the
  schema is unchanged (the order still has no meaning to a reader), but a file in exactly the layout written
  here is read by a streaming fast path (:func:`read_loader_stream`) without one Python object per id.

A file with a higher version was written by a newer tk_checkpoint: :class:`UnsupportedSchemaError`.
"""

from __future__ import annotations

import gzip
import json
import zlib
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from itertools import chain
from typing import Any

from .errors import CorruptCheckpointError, UnsupportedSchemaError
from .idset import GUID_TEXT, KEY, IdSet, guid_key, parse_guids_json, strictly_ascending

SCHEMA_VERSION = 2
LOADER_KIND = "tk_checkpoint.loader"
RUN_KIND = "tk_checkpoint.run"
LOADER_STATES = ("in_progress", "completed", "failed")
RUN_STATES = ("running", "completed", "failed", "deleting")  # deleting: a delete began (see delete_run)
GZIP_MAGIC = b"\x1f\x8b"
IDS_KEY = "processed_ids"
_IDS_MARK = b'\n  "processed_ids": ['  # how encode_document/loader_document_chunks start the id list
_HEADER_LIMIT = 64 << 20  # a header (everything before the id list) larger than this: not our layout


def timestamp() -> str:
    """Now, as every checkpoint file writes a time: ISO 8601 in UTC with milliseconds."""
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def encode_document(doc: dict[str, Any], *, big_key: str | None = None) -> bytes:
    """JSON with an indented, readable header; ``big_key`` (the id list) goes last on one compact line."""
    if big_key is None or big_key not in doc:
        return (json.dumps(doc, indent=2, ensure_ascii=False) + "\n").encode()
    head = {k: v for k, v in doc.items() if k != big_key}
    text = json.dumps(head, indent=2, ensure_ascii=False)
    big = json.dumps(doc[big_key], ensure_ascii=False, separators=(",", ":"))
    return f'{text[:-2]},\n  "{big_key}": {big}\n}}\n'.encode()


def loader_document_chunks(head: dict[str, Any], ids: IdSet) -> Iterator[bytes]:
    """A loader snapshot as :func:`encode_document` with ``big_key="processed_ids"`` writes it, in chunks:
    the header (``head``, without the ids), then the ids of ``ids`` (GUIDs ascending, then the others)."""
    text = json.dumps(head, indent=2, ensure_ascii=False)
    yield f'{text[:-2]},\n  "{IDS_KEY}": ['.encode()
    yield from ids.json_chunks()
    yield b"]\n}\n"


class PackedStream:
    """The chunks of a document, gzip-compressed (as one gzip member) when larger than ``threshold`` bytes.

    The constructor reads ahead until it knows: ``gzip`` tells whether the output is compressed, ``whole``
    holds the document when it ended within the threshold (then nothing is compressed); ``threshold`` < 0:
    never compressed, ``gzip=True``: always. Iterate for the bytes to store; afterwards ``raw_size`` is the
    uncompressed size.
    """

    def __init__(
        self, chunks: Iterable[bytes], threshold: int, level: int = 1, *, gzip: bool = False
    ) -> None:
        self._source = iter(chunks)
        self._head: list[bytes] = []
        self.level = level
        self.gzip = gzip  # True: always compressed
        self.whole: bytes | None = None
        self.raw_size = 0
        if threshold < 0 or gzip:
            return
        size = 0
        for chunk in self._source:
            self._head.append(chunk)
            size += len(chunk)
            if size > threshold:
                self.gzip = True
                return
        self.whole = b"".join(self._head)
        self._head = [self.whole]

    def __iter__(self) -> Iterator[bytes]:
        source = chain(self._head, self._source)
        self._head = []
        if not self.gzip:
            for chunk in source:
                self.raw_size += len(chunk)
                yield chunk
            return
        compressor = zlib.compressobj(self.level, zlib.DEFLATED, 31)  # 31: a gzip member, mtime 0
        for chunk in source:
            self.raw_size += len(chunk)
            out = compressor.compress(chunk)
            if out:
                yield out
        yield compressor.flush()


class NotOurLayout(Exception):
    """The snapshot is not in the exact layout :func:`loader_document_chunks` writes (or it is damaged):
    read it the general way (:func:`unpack`, :func:`decode_document`, :func:`read_loader_document`)."""


def _unpacked(chunks: Iterator[bytes | memoryview]) -> Iterator[bytes | memoryview]:
    first = next(chunks, b"")
    if bytes(first[:2]) != GZIP_MAGIC:
        yield first
        yield from chunks
        return
    inflater = zlib.decompressobj(31)
    try:
        for chunk in chain((first,), chunks):
            out = inflater.decompress(chunk)
            if out:
                yield out
        out = inflater.flush()
    except zlib.error as exc:
        raise NotOurLayout(str(exc)) from exc
    if out:
        yield out
    if not inflater.eof or inflater.unused_data:
        raise NotOurLayout("truncated gzip data, or more than one gzip member")


def read_loader_stream(chunks: Iterable[bytes | memoryview]) -> tuple[dict[str, Any], IdSet, int]:
    """Fast reading of a loader snapshot in the layout this engine writes, gzip or not, chunk by chunk:
    (the document without its ids, the ids, the uncompressed size). GUID entries are decoded by the bulk
    (:func:`tk_checkpoint.idset.parse_guids_json`); other ids by ``json``. Raises :class:`NotOurLayout`
    for anything else (another layout, schema version, or damage): the caller then reads it the general way,
    which also gives the proper errors.
    """
    buf = bytearray()
    size = 0
    head: dict[str, Any] | None = None
    run = bytearray()  # the 16-byte keys, in file order
    ascending = True
    generic: bytearray | None = None  # the rest of the list from the first entry that is not a GUID
    count = 0
    for text in _unpacked(iter(chunks)):
        size += len(text)
        if generic is not None:
            generic += text
            continue
        buf += text
        if head is None:
            at = buf.find(_IDS_MARK, max(0, len(buf) - len(text) - len(_IDS_MARK)))
            if at < 0:
                if len(buf) > _HEADER_LIMIT:
                    raise NotOurLayout("no id list where expected")
                continue
            head = _read_head(bytes(buf[:at]))
            del buf[: at + len(_IDS_MARK)]
        usable = (len(buf) - 64) // GUID_TEXT  # keep the end: the last entry has no comma after it
        if usable > 0:
            taken, ascending = _take_guids(buf, usable, run, ascending)
            count += taken
            del buf[: taken * GUID_TEXT]
            if taken < usable:
                generic, buf = buf, bytearray()
    if head is None:
        raise NotOurLayout("no id list")
    rest = generic if generic is not None else buf
    end = len(rest.rstrip())
    if not end or rest[end - 1] != ord("}"):
        raise NotOurLayout("the document does not end after the id list")
    end = len(rest[: end - 1].rstrip())
    if not end or rest[end - 1] != ord("]"):
        raise NotOurLayout("the id list is not the last member")
    body = rest[: end - 1]
    others: list[Any] = []
    if body:
        body += b","
        n = len(body) // GUID_TEXT if generic is None and len(body) % GUID_TEXT == 0 else 0
        taken = 0
        if n:
            taken, ascending = _take_guids(body, n, run, ascending)
            count += taken
        if taken < n or not n:
            others = json.loads(b"[" + body[taken * GUID_TEXT : -1] + b"]")
            if not isinstance(others, list):
                raise NotOurLayout("the id list is not a list")
            count += len(others)
    if head.get("processed_count") is not None and head["processed_count"] != count:
        raise NotOurLayout("processed_count does not match the list")
    strings = []
    for item in map(str, others):
        key = guid_key(item)
        if key is None:
            strings.append(item)
        else:  # a GUID after the other ids: not the order this engine writes
            run += key
            ascending = False
    del others
    if ascending:
        return head, IdSet.from_sorted_keys(run, strings), size
    # written by an older version of this engine (in set order): sort once
    data = bytes(run)
    del run
    return head, IdSet.from_keys((data[i : i + KEY] for i in range(0, len(data), KEY)), strings), size


def _take_guids(buf: bytearray, n: int, run: bytearray, ascending: bool) -> tuple[int, bool]:
    """Decode the longest prefix (up to n entries) of ``"guid",`` entries of ``buf`` onto ``run``."""
    keys = parse_guids_json(memoryview(buf)[: n * GUID_TEXT])
    if keys is None:  # the first entry that is not a GUID: bisect for it
        lo, hi = 0, n - 1
        while lo < hi:
            mid = (lo + hi + 1) >> 1
            if parse_guids_json(memoryview(buf)[: mid * GUID_TEXT]) is None:
                hi = mid - 1
            else:
                lo = mid
        n = lo
        keys = parse_guids_json(memoryview(buf)[: n * GUID_TEXT]) if n else b""
    if keys:
        if ascending:
            ascending = strictly_ascending(keys, bytes(run[-KEY:]) if run else None)
        run += keys
    return n, ascending


def _read_head(data: bytes) -> dict[str, Any]:
    data = data.rstrip()
    if not data.endswith(b","):
        raise NotOurLayout("the id list is not a member of the top-level object")
    head = json.loads(data[:-1] + b"\n}")
    if not isinstance(head, dict):
        raise NotOurLayout("not an object")
    if head.get("schema_version") != SCHEMA_VERSION or head.get("kind") != LOADER_KIND:
        raise NotOurLayout("another schema version")
    head.pop(IDS_KEY, None)
    try:
        _check_loader(head, "", None)
    except CorruptCheckpointError as exc:
        raise NotOurLayout(str(exc)) from exc
    return head


def unpack(data: bytes, where: str) -> bytes:
    """The bytes of a document, gunzipped when they start with the gzip magic."""
    if data[:2] != GZIP_MAGIC:
        return data
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as exc:
        raise CorruptCheckpointError(
            f"Checkpoint file {where} is damaged: gzip data is truncated or invalid ({exc})", where
        ) from exc


def decode_document(data: bytes, where: str) -> dict[str, Any]:
    """Parse a document (gzip detected by its magic bytes). Damage raises CorruptCheckpointError naming it."""
    data = unpack(data, where)
    if not data.strip():
        raise CorruptCheckpointError(f"Checkpoint file {where} is damaged: it is empty", where)
    return _json_object(data, f"Checkpoint file {where}", where)


def _json_object(data: bytes | str, what: str, where: str) -> dict[str, Any]:
    """``data`` parsed as a JSON object; anything else raises CorruptCheckpointError naming ``what``."""
    try:
        doc = json.loads(data)
    except ValueError as exc:
        raise CorruptCheckpointError(f"{what} is damaged: not valid JSON ({exc})", where) from exc
    if not isinstance(doc, dict):
        raise CorruptCheckpointError(f"{what} is damaged: expected a JSON object", where)
    return doc


def _version(doc: dict[str, Any], where: str) -> int:
    version = doc.get("schema_version", 1)
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise CorruptCheckpointError(
            f"Checkpoint file {where} is damaged: schema_version {version!r} is not a positive integer", where
        )
    if version > SCHEMA_VERSION:
        raise UnsupportedSchemaError(
            f"Checkpoint file {where} has schema_version {version}; this tk_checkpoint reads versions 1 to "
            f"{SCHEMA_VERSION}. It was written by a newer tk_checkpoint: upgrade this installation."
        )
    return version


def _bad(where: str, what: str) -> CorruptCheckpointError:
    return CorruptCheckpointError(f"Checkpoint file {where} is damaged: {what}", where)


def _migrate_loader_v1(doc: dict[str, Any], where: str) -> dict[str, Any]:
    """The original flat format -> version 2 (in memory)."""
    failed_in = doc.get("failed_items") or {}
    if not isinstance(failed_in, (dict, list)):
        raise _bad(where, f"'failed_items' is {_shown(failed_in)}, expected a list or an object")
    ids_in = doc.get("processed_items", doc.get("processed_ids", []))
    if not isinstance(ids_in, list):
        raise _bad(where, f"'processed_items' is {_shown(ids_in)}, expected a list")
    failed: dict[str, dict[str, Any]] = {}
    if isinstance(failed_in, dict):
        items = failed_in.items()
    else:
        items = ((f.get("item_id", f.get("id")), f) for f in failed_in if isinstance(f, dict))
    for item_id, info in items:
        error = info.get("error", "") if isinstance(info, dict) else str(info)
        when = info.get("timestamp") if isinstance(info, dict) else None
        failed[str(item_id)] = {
            "error": str(error),
            "attempts": 1,
            "first_failed_at": when,
            "last_failed_at": when,
        }
    processed = [str(i) for i in ids_in]
    return {
        "schema_version": SCHEMA_VERSION,
        "kind": LOADER_KIND,
        "run_id": doc.get("run_id"),
        "loader": doc.get("loader_name", doc.get("loader")),
        "state": doc.get("status", doc.get("state", "in_progress")),
        "total_items": doc.get("total_items"),
        "current_batch": doc.get("current_batch", 0) or 0,
        "skipped_count": doc.get("skipped_count", 0) or 0,
        "created_at": doc.get("start_time", doc.get("created_at")),
        "updated_at": doc.get("last_updated", doc.get("updated_at")),
        "completed_at": doc.get("end_time"),
        "error": doc.get("error"),
        "meta": {"migrated_from_schema_version": 1},
        "journal_seq": 0,
        "tries": [],
        "failed_items": failed,
        "processed_count": len(processed),
        "processed_ids": processed,
    }


def read_loader_document(doc: dict[str, Any], where: str) -> dict[str, Any]:
    """Validate a loader snapshot of any known version and return it as version 2."""
    if _version(doc, where) == 1:
        doc = _migrate_loader_v1(doc, where)
    ids = doc.get("processed_ids")
    if not isinstance(ids, list):
        raise _bad(where, "'processed_ids' is missing or not a list")
    _check_loader(doc, where, len(ids))
    return doc


# The type of every field a reader uses, checked on every read (snapshot header, journal record, run file),
# so that a file with a field of the wrong type is damage like any other (named, set aside by a writer)
# and never a TypeError later in a report, the dashboard or a retry. A field may be absent or null.
def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


_KINDS: dict[str, tuple[str, Callable[[Any], bool]]] = {
    "text": ("a string", lambda v: isinstance(v, str)),
    "count": ("a whole number of 0 or more", lambda v: _is_int(v) and v >= 0),
    "number": ("a whole number", _is_int),
    "object": ("a JSON object", lambda v: isinstance(v, dict)),
}
LOADER_FIELDS = {
    "run_id": "text",
    "loader": "text",
    "total_items": "count",
    "current_batch": "count",
    "skipped_count": "count",
    "processed_count": "count",
    "failed_count": "count",
    "created_at": "text",
    "updated_at": "text",
    "completed_at": "text",
    "error": "text",
    "meta": "object",
}
TRY_FIELDS = {
    "index": "count",
    "try_number": "number",
    "host": "text",
    "pid": "number",
    "pid_start": "text",
    "started_at": "text",
    "ended_at": "text",
    "outcome": "text",
    "processed": "count",
    "skipped": "count",
    "failed": "count",
    "took_over_lock_from": "object",
}
FAILURE_FIELDS = {
    "error": "text",
    "attempts": "count",
    "first_failed_at": "text",
    "last_failed_at": "text",
    "try_number": "number",
}
RUN_FIELDS = {
    "dag_id": "text",
    "conf": "object",
    "description": "text",
    "created_at": "text",
    "updated_at": "text",
    "completed_at": "text",
    "error": "text",
    "api_model": "object",  # the setup task's report of the served API model (optional)
}


def field_problem(doc: dict[str, Any], fields: dict[str, str], what: str = "") -> str | None:
    """The first field of ``doc`` whose value is not of its kind in ``fields``: a sentence, or None."""
    for key, kind in fields.items():
        value = doc.get(key)
        if value is None:
            continue
        expected, ok = _KINDS[kind]
        if not ok(value):
            return f"{what}'{key}' is {_shown(value)}, expected {expected}"
    return None


def _shown(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


def try_problem(entry: Any, where: str = "") -> str | None:
    """What is wrong with one try entry (a snapshot's ``tries`` member, a record's ``try``), or None."""
    if not isinstance(entry, dict):
        return f"a try{where} is {_shown(entry)}, expected a JSON object"
    return field_problem(entry, TRY_FIELDS, f"try{where} ")


def failures_problem(failed: Any) -> str | None:
    """What is wrong with a failed-items map ({item id: failure}), or None."""
    if not isinstance(failed, dict):
        return f"'failed_items' is {_shown(failed)}, expected a JSON object"
    for item, info in failed.items():
        if not isinstance(info, dict):
            return f"failed item {_shown(item)} is {_shown(info)}, expected a JSON object"
        problem = field_problem(info, FAILURE_FIELDS, f"failed item {_shown(item)}: ")
        if problem:
            return problem
    return None


def _check_loader(doc: dict[str, Any], where: str, id_count: int | None) -> None:
    if doc.get("state") not in LOADER_STATES:
        raise _bad(where, f"unknown loader state {doc.get('state')!r}")
    seq = doc.get("journal_seq", 0)
    if not _is_int(seq) or seq < 0:
        raise _bad(where, f"'journal_seq' {seq!r} is not a non-negative integer")
    if doc.get("kind", LOADER_KIND) != LOADER_KIND:
        raise _bad(where, f"'kind' is {_shown(doc.get('kind'))}, expected {LOADER_KIND!r}")
    tries = doc.get("tries")
    tries = [] if tries is None else tries
    failed = doc.get("failed_items")
    problem = field_problem(doc, LOADER_FIELDS) or failures_problem({} if failed is None else failed)
    if not problem and not isinstance(tries, list):
        problem = f"'tries' is {_shown(tries)}, expected a list"
    for n, entry in enumerate(tries if not problem else (), start=1):
        problem = problem or try_problem(entry, f" {n}")
    if problem:
        raise _bad(where, problem)
    count = doc.get("processed_count")
    if id_count is not None and count is not None and count != id_count:
        raise _bad(where, f"'processed_count' is {count} but {id_count} ids are listed")


def read_run_document(doc: dict[str, Any], where: str) -> dict[str, Any]:
    """Validate a run file of any known version and return it as version 2."""
    if _version(doc, where) == 1:
        doc = {
            "schema_version": SCHEMA_VERSION,
            "kind": RUN_KIND,
            "run_id": doc.get("run_id"),
            "dag_id": None,
            "conf": {k: v for k, v in doc.items() if k in ("start_date", "end_date")},
            "description": None,
            "state": doc.get("status", doc.get("state")),
            "created_at": doc.get("start_time"),
            "updated_at": doc.get("last_updated", doc.get("start_time")),
            "completed_at": doc.get("end_time"),
            "error": doc.get("error"),
        }
    if not isinstance(doc.get("run_id"), str):
        raise _bad(where, "'run_id' is missing")
    if doc.get("state") not in RUN_STATES:
        raise _bad(where, f"unknown run state {doc.get('state')!r}")
    problem = field_problem(doc, RUN_FIELDS)
    if doc.get("kind", RUN_KIND) != RUN_KIND:
        problem = problem or f"'kind' is {_shown(doc.get('kind'))}, expected {RUN_KIND!r}"
    if problem:
        raise _bad(where, problem)
    return doc


def encode_record(record: dict[str, Any]) -> bytes:
    return json.dumps(record, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"


def decode_record(data: bytes, where: str) -> dict[str, Any]:
    """Parse one journal record; anything malformed raises CorruptCheckpointError naming it."""
    record = _json_object(data, f"Journal record {where}", where)
    seq = record.get("seq")
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 1:
        raise CorruptCheckpointError(f"Journal record {where} is damaged: bad 'seq' {seq!r}", where)
    version = record.get("v", SCHEMA_VERSION)
    if not isinstance(version, int) or version > SCHEMA_VERSION:
        raise UnsupportedSchemaError(
            f"Journal record {where} has schema_version {version!r}; this tk_checkpoint reads up to "
            f"{SCHEMA_VERSION}: upgrade it."
        )
    if not isinstance(record.get("p", []), list) or not isinstance(record.get("f", {}), dict):
        raise CorruptCheckpointError(f"Journal record {where} is damaged: bad 'p' or 'f'", where)
    if not isinstance(record.get("set", {}), dict) or not isinstance(record.get("try", {}), dict):
        raise CorruptCheckpointError(f"Journal record {where} is damaged: bad 'set' or 'try'", where)
    ids = record.get("p", ())
    problem = next((f"an id is {_shown(i)}" for i in ids if not isinstance(i, (str, int))), None)
    if problem is None and "set" in record:
        state = record["set"].get("state")
        if state is not None and state not in LOADER_STATES:
            problem = f"unknown loader state {state!r}"
        problem = problem or field_problem(record["set"], LOADER_FIELDS, "set ")
    problem = problem or failures_problem(record.get("f", {}))
    if problem is None and record.get("try"):
        problem = try_problem(record["try"])
    if problem:
        raise CorruptCheckpointError(f"Journal record {where} is damaged: {problem}", where)
    return record
