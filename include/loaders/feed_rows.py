"""A SyncFeed entry as the raw row the OData loader writes: one graph, whatever the source.

:func:`entry_row` turns a :class:`~include.loaders.syncfeed.FeedEntry` into the row an OData page holds
for the same data, with the API's canonical (v4/2.0) names, so :func:`include.loaders.graph.prepare_item`
and the writer treat both sources alike:

- ``Id``; ``Verwijderd`` (a tombstone has nothing else but its timestamps);
- ``ApiGewijzigdOp`` = the entry's ``<updated>`` (API time) as OData writes it: UTC, 7 fractional
  digits, ``Z`` (the feed's naive form is UTC, its ``+01:00`` form is converted);
- ``GewijzigdOp`` = the entity's ``tk:bijgewerkt`` (source time) as OData writes it: Amsterdam local time
  with its offset (the feed writes it as ``Z``, naive UTC or with an offset, by category);
- each property from its feed name (:attr:`Entity.feed_columns`: element, ``parent/child`` element or
  ``@attribute``), typed by its kind (integers, numbers, booleans; text and temporals as written: the
  kind's converter validates them as it does OData's);
- foreign keys ``X_Id`` from single refs, collection navigations as ``[{"Id": …}]`` from repeated refs
  (:attr:`Entity.feed_refs`); a ref the entry does not carry is an empty link (the edges go).

Properties the feed does not carry (:attr:`Entity.odata_only`) stay absent, as the table documents.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from include.loaders.entities import KEY, TOMBSTONE_FLAG, WATERMARK, Entity, Kind, KindSpec
from include.loaders.syncfeed import FeedEntry, parse_bool

SOURCE_TIME = "GewijzigdOp"
"""The canonical property the entity's ``tk:bijgewerkt`` fills."""

_AMS = ZoneInfo("Europe/Amsterdam")
_TS_RE = re.compile(r"^\s*(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(?::\d{2})?)(?:\.(\d{1,9}))?(Z|[+-]\d{2}:\d{2})?\s*$")
_INTS = (Kind.INT.spec, Kind.INT_OPT.spec)
_FLOATS = tuple(k.spec for k in Kind if k.spec.neo4j == "FLOAT")


def odata_time(text: str | None, *, local: bool = False) -> str | None:
    """A feed timestamp (``…Z``, naive UTC, or with an offset; up to 7 digits) as OData writes it:
    UTC with ``Z`` (``local``: Amsterdam time with its offset), always 7 fractional digits. None for
    None; ValueError naming the text when it is not a timestamp."""
    if text is None:
        return None
    m = _TS_RE.match(text)
    if m is None:
        raise ValueError(f"{text!r} is not a SyncFeed timestamp (expected e.g. 2023-08-29T11:10:24Z).")
    base, frac, tz = m.groups()
    when = datetime.fromisoformat(base + ("+00:00" if tz in (None, "Z") else tz))
    digits = (frac or "")[:7].ljust(7, "0")
    if local:
        when = when.astimezone(_AMS)
        return when.strftime("%Y-%m-%dT%H:%M:%S") + f".{digits}" + when.isoformat()[-6:]
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S") + f".{digits}Z"


def _typed(spec: KindSpec, text: str | None) -> Any:
    """A feed element's text as the value OData serves for a property of that kind."""
    if text is None:
        return None
    if spec in _INTS:
        return int(text.strip())
    if spec in _FLOATS:
        return float(text.strip())
    if spec is Kind.BOOL.spec:
        return parse_bool(text)
    return text


def entry_row(entity: Entity, entry: FeedEntry) -> dict[str, Any]:
    """The canonical raw row of ``entry`` (an entry of ``entity``'s category), for ``prepare_item``.

    Raises ValueError naming the entity, the id and the element for a value of the wrong form (the
    loop marks that item failed and goes on)."""
    row: dict[str, Any] = {
        KEY: entry.id,
        TOMBSTONE_FLAG: entry.deleted,
        WATERMARK: odata_time(entry.updated_text),
        SOURCE_TIME: odata_time(entry.source_time_text, local=True),
    }
    if entry.deleted:
        return row
    for feed_name, api, spec in entity.feed_columns:
        if feed_name.startswith("@"):
            text = entry.attributes.get(feed_name[1:])
        else:
            text = entry.fields.get(feed_name)
        try:
            row[api] = _typed(spec, text)
        except ValueError as e:
            raise ValueError(f"{entity.name} {entry.id}: <{feed_name}> {text!r}: {e}") from None
    for ref, rel in entity.feed_refs.items():
        targets = entry.refs.get(ref, ())
        if rel.foreign_key is not None:
            row[rel.foreign_key] = targets[-1] if targets else None
        else:
            row[rel.navigation or ""] = [{KEY: t} for t in targets]
    return row


__all__ = ["SOURCE_TIME", "entry_row", "odata_time"]
