"""A run's count reconciliation: ``<run_id>/reconciliation.json``, written by the DAG's ``reconcile`` task.

One document per run (a repeat of the task replaces it), written atomically like every checkpoint file
and validated field by field on read, so a damaged file shows as damaged instead of a traceback::

    {"schema_version": 1, "kind": "tk_checkpoint.reconciliation", "run_id": "...",
     "checked_at": "2026-12-02T06:10:00.000+00:00", "scope": "...", "tolerance": 0.01, "ok": true,
     "entities": [{"entity": "Zaak", "neo4j": 159, "api": 159, "difference": 0, "share": 0.0,
                   "placeholders": 0, "ok": true}, ...]}

``neo4j`` counts the nodes of the entity's label that carry data, ``placeholders`` the nodes of that label
holding only ``id`` (targets of edges whose own row is not loaded), ``api`` the API's ``$count`` of live
rows; ``share`` is ``|difference| / api``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from . import fileformat as ff
from .errors import CorruptCheckpointError
from .names import validate_name
from .store import Store

KIND = "tk_checkpoint.reconciliation"
VERSION = 1
_NUMBERS = {"neo4j": int, "api": int, "difference": int, "placeholders": int, "share": (int, float)}


def reconciliation_key(run_id: str) -> str:
    """The reconciliation file of ``run_id`` (next to its run file)."""
    return f"{validate_name(run_id)}/reconciliation.json"


def _problem(doc: Any, run_id: str) -> str | None:
    """What is wrong with a reconciliation document, or None."""
    if not isinstance(doc, Mapping):
        return "it is not a JSON object"
    if doc.get("kind") != KIND or doc.get("schema_version") != VERSION:
        return f"it is not a version-{VERSION} reconciliation (kind {doc.get('kind')!r})"
    if doc.get("run_id") != run_id:
        return f"it belongs to run {doc.get('run_id')!r}"
    for key, types in (("checked_at", str), ("scope", str), ("tolerance", (int, float)), ("ok", bool)):
        if not isinstance(doc.get(key), types) or (key == "tolerance" and isinstance(doc[key], bool)):
            return f"field {key!r} is {doc.get(key)!r}"
    rows = doc.get("entities")
    if not isinstance(rows, list):
        return "field 'entities' is not a list"
    for row in rows:
        if not isinstance(row, Mapping) or not isinstance(row.get("entity"), str):
            return f"an entry of 'entities' is {row!r:.100}"
        for key, types in _NUMBERS.items():
            value = row.get(key)
            if not isinstance(value, types) or isinstance(value, bool):
                return f"{row['entity']}: field {key!r} is {value!r}"
        if not isinstance(row.get("ok"), bool):
            return f"{row['entity']}: field 'ok' is {row.get('ok')!r}"
    return None


def write_reconciliation(store: Store, doc: Mapping[str, Any], *, fsync: bool = True) -> None:
    """Store ``doc`` (as :func:`read_reconciliation` returns it) for its run, replacing an earlier one."""
    doc = {"schema_version": VERSION, "kind": KIND, **doc}
    problem = _problem(doc, str(doc.get("run_id")))
    if problem:
        raise ValueError(f"Not a reconciliation document: {problem}")
    store.write(reconciliation_key(doc["run_id"]), ff.encode_document(doc), fsync=fsync)


def read_reconciliation(store: Store, run_id: str) -> dict[str, Any] | None:
    """The run's reconciliation, or None when it has none. Damage raises CorruptCheckpointError naming it."""
    key = reconciliation_key(run_id)
    data = store.read(key)
    if data is None:
        return None
    where = store.url(key)
    doc = ff.decode_document(data, where)
    problem = _problem(doc, run_id)
    if problem:
        raise CorruptCheckpointError(f"Reconciliation file {where} is damaged: {problem}", where)
    return doc
