"""The on-disk format: JSON documents (gzip above a threshold), journal records, schema versions.

Schema history (``schema_version``):

* 1 - the original system's flat loader file (``processed_items`` list, ``failed_items``, ``status``,
  ``start_time``/``last_updated``). Read and migrated in memory; never written.
* 2 - this engine: snapshot + journal, failed items with attempts, tries. Written.

A file with a higher version was written by a newer tk_checkpoint: :class:`UnsupportedSchemaError`.
"""

from __future__ import annotations

import gzip
import json
import zlib
from typing import Any

from .errors import CorruptCheckpointError, UnsupportedSchemaError

SCHEMA_VERSION = 2
LOADER_KIND = "tk_checkpoint.loader"
RUN_KIND = "tk_checkpoint.run"
LOADER_STATES = ("in_progress", "completed", "failed")
RUN_STATES = ("running", "completed", "failed")
GZIP_MAGIC = b"\x1f\x8b"


def encode_document(doc: dict[str, Any], *, big_key: str | None = None) -> bytes:
    """JSON with an indented, readable header; ``big_key`` (the id list) goes last on one compact line."""
    if big_key is None or big_key not in doc:
        return (json.dumps(doc, indent=2, ensure_ascii=False) + "\n").encode()
    head = {k: v for k, v in doc.items() if k != big_key}
    text = json.dumps(head, indent=2, ensure_ascii=False)
    big = json.dumps(doc[big_key], ensure_ascii=False, separators=(",", ":"))
    return f'{text[:-2]},\n  "{big_key}": {big}\n}}\n'.encode()


def maybe_gzip(data: bytes, threshold: int, level: int = 1) -> tuple[bytes, bool]:
    """Compress when ``data`` is larger than ``threshold`` bytes (threshold < 0: never)."""
    if 0 <= threshold < len(data):
        return gzip.compress(data, compresslevel=level, mtime=0), True
    return data, False


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
    try:
        doc = json.loads(data)
    except ValueError as exc:
        raise CorruptCheckpointError(
            f"Checkpoint file {where} is damaged: not valid JSON ({exc})", where
        ) from exc
    if not isinstance(doc, dict):
        raise CorruptCheckpointError(f"Checkpoint file {where} is damaged: expected a JSON object", where)
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


def _migrate_loader_v1(doc: dict[str, Any]) -> dict[str, Any]:
    """The original flat format -> version 2 (in memory)."""
    failed_in = doc.get("failed_items") or {}
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
    processed = [str(i) for i in doc.get("processed_items", doc.get("processed_ids", []))]
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
        doc = _migrate_loader_v1(doc)
    ids = doc.get("processed_ids")
    if not isinstance(ids, list):
        raise _bad(where, "'processed_ids' is missing or not a list")
    if doc.get("state") not in LOADER_STATES:
        raise _bad(where, f"unknown loader state {doc.get('state')!r}")
    if not isinstance(doc.get("failed_items", {}), dict):
        raise _bad(where, "'failed_items' is not an object")
    if not isinstance(doc.get("tries", []), list):
        raise _bad(where, "'tries' is not a list")
    seq = doc.get("journal_seq", 0)
    if not isinstance(seq, int) or seq < 0:
        raise _bad(where, f"'journal_seq' {seq!r} is not a non-negative integer")
    count = doc.get("processed_count")
    if count is not None and count != len(ids):
        raise _bad(where, f"'processed_count' is {count} but {len(ids)} ids are listed")
    return doc


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
    return doc


def encode_record(record: dict[str, Any]) -> bytes:
    return json.dumps(record, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"


def decode_record(data: bytes, where: str) -> dict[str, Any]:
    """Parse one journal record; anything malformed raises CorruptCheckpointError naming it."""
    try:
        record = json.loads(data)
    except ValueError as exc:
        raise CorruptCheckpointError(
            f"Journal record {where} is damaged: not valid JSON ({exc})", where
        ) from exc
    if not isinstance(record, dict):
        raise CorruptCheckpointError(f"Journal record {where} is damaged: expected a JSON object", where)
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
    return record
