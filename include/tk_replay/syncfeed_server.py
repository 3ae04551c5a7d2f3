"""The SyncFeed of the replay server: ``/SyncFeed/2.0/Feed``, ``/Entiteiten/<id>``, ``/Resources/<id>``,
served from the same :class:`~include.tk_replay.dataset.Dataset` as its OData.

The feed is a change log over every row of the dataset (:class:`ChangeLog`): one global skiptoken
counter over all types; every create, update, tombstone and re-emission of any row gets the next
skiptoken. An entity is served at its latest position only (an entry whose row was logged again later
is gone from the feed, as on the live API), so a reader that goes through the feed once sees each row
once, in its current state. The history begins with the dataset's tombstones (ids never seen live:
the live Document feed starts with years of deletion markers), then the live rows, each group in
``ApiGewijzigdOp`` order. :meth:`Dataset.mutate` appends its changes (every row it bumped: updates,
new links, new rows, tombstones) and re-emissions of unchanged rows (data repairs, [ODP#127]).

Rows become entity XML through the entity table's feed mapping (:attr:`Entity.feed_columns`,
:attr:`Entity.feed_refs`) and :mod:`include.tk_replay.syncfeed_atom`, in the XSD's element order
(:func:`xsd_order`, read from the copies of ``tk-api/syncfeed-xsd`` in ``include/tk_replay/data``).
The quirks of the live feed (``../shared/tk-api/SYNCFEED.md`` §2): ``ns1:`` for Toezegging, Vergadering
and Verslag; ``True`` for Persoon tombstones; three timestamp forms by category (:data:`TIME_STYLES`); the
category echoed in lower case in links, some categories with ``skiptoken`` first
(:data:`SKIPTOKEN_FIRST`); request parameters in either order and any case; repeated refs; ``xsi:nil``;
stamped refs (``tk:bijgewerkt`` on toezegging's ``isHerhalingVan``…); an unknown category is an empty,
caught-up feed. 250 entries a page (:data:`PAGE_SIZE`); the empty page past the head has ``rel="resume"``.

Faults (:mod:`include.tk_replay.faults`) apply as to OData: latency and the random kinds per request,
and ``fail_after_entity``/``fail_after_items`` for a category: a page that would reach beyond entry N of
that category's feed (counted from its start) answers HTTP 500.
"""

from __future__ import annotations

import bisect
import hashlib
import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl
from zoneinfo import ZoneInfo

from include.loaders.entities import TOMBSTONE_FLAG, Entity, Kind
from include.tk_replay.dataset import Dataset, format_ticks
from include.tk_replay.syncfeed_atom import (
    AtomEntry,
    TimeStyle,
    element_name,
    entity_document,
    entity_element,
    feed_page,
)

if TYPE_CHECKING:
    from include.tk_replay.generator import MutationReport

PATH = "/SyncFeed/2.0"
PAGE_SIZE = 250
PREFIXED = frozenset({"Toezegging", "Vergadering", "Verslag"})
"""Types the live feed writes with an ``ns1:`` prefix."""
TRUE_CAPITALISED = frozenset({"Persoon"})
"""Types whose tombstones say ``verwijderd="True"``."""
ENCLOSURES = frozenset({"Document", "Persoon", "Fractie", "Verslag"})
"""Types with a file (``<link rel="enclosure">``, ``/Resources/<id>``)."""
TIME_STYLES: Mapping[str, TimeStyle] = {
    **dict.fromkeys(("Persoon", "Fractie", "Commissie", "Zaal"), "naive"),
    **dict.fromkeys(("Activiteit", "Agendapunt", "Reservering", "Vergadering"), "offset"),
}
"""The timestamp form of a category (``z`` for the others): the live feed writes all three."""
SKIPTOKEN_FIRST = frozenset({"Stemming", "Besluit", "Zaak"})
"""Categories whose links put ``skiptoken`` before ``category``."""
REEMIT_FRACTION = 0.02
"""Share of the unchanged live rows of each type that a mutation re-emits."""

_XSD_DIR = Path(__file__).resolve().parent / "data" / "syncfeed-xsd"  # copies of tk-api/syncfeed-xsd
_XS = "{http://www.w3.org/2001/XMLSchema}"
_AMS = ZoneInfo("Europe/Amsterdam")
_TICKS = 10_000_000
_TS_RE = re.compile(r"^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})(?:\.(\d{1,7}))?(Z|[+-]\d{2}:\d{2})?$")


@cache
def _xsd_sequence(type_name: str, xsd_dir: str = str(_XSD_DIR)) -> tuple[tuple[str, str], ...]:
    """``(element name, XSD type)`` of ``type_name``'s sequence, in order (empty without its XSD)."""
    path = Path(xsd_dir) / f"tkData-v1-0-{type_name.lower()}.xsd"
    if not path.exists():
        return ()
    from lxml import etree

    root = etree.parse(str(path)).getroot()
    ctype = root.find(f"{_XS}complexType[@name='{element_name(type_name)}Type']")
    seq = ctype.find(f".//{_XS}sequence") if ctype is not None else None
    if seq is None:
        return ()
    return tuple((e.get("name"), e.get("type") or "") for e in seq.findall(f"{_XS}element"))


def xsd_order(type_name: str) -> tuple[str, ...] | None:
    """The element names of ``type_name``'s XSD sequence, in order (None when the XSD is not at hand:
    then refs come first, then scalars, the order of most XSDs)."""
    return tuple(name for name, _ in _xsd_sequence(type_name)) or None


def stamped_refs(type_name: str) -> frozenset[str]:
    """The ref elements of ``type_name`` that carry the target's ``tk:bijgewerkt``
    (``referentieBijgewerktLiteral`` in its XSD)."""
    return frozenset(n for n, t in _xsd_sequence(type_name) if t == "referentieBijgewerktLiteral")


def _timestamp(text: str | None, style: TimeStyle) -> str:
    """An OData timestamp (``…Z`` or ``…+02:00``, up to 7 digits) in a feed form, all 7 digits kept."""
    m = _TS_RE.match(text or "")
    if m is None:
        return format_ticks(0)
    base, frac, tz = m.groups()
    dt = datetime.fromisoformat(base + ("+00:00" if tz in (None, "Z") else tz))
    digits = (frac or "").ljust(7, "0")
    if style == "offset":
        local = dt.astimezone(_AMS)
        return local.strftime("%Y-%m-%dT%H:%M:%S") + f".{digits}" + local.isoformat()[-6:]
    text = dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S") + f".{digits}"
    return text if style == "naive" else text + "Z"


def _ticks(ds: Dataset, row: Mapping[str, Any]) -> int:
    value = row.get("ApiGewijzigdOp")
    return ds.ticks(value) if value else 0


class ChangeLog:
    """The SyncFeed's change log of one dataset: skiptoken ``n`` is entry ``n - 1`` of :attr:`entries`.

    Build it with :func:`change_log` (one per dataset, kept on it). Thread safety: callers hold the
    dataset's lock.
    """

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset
        self.entries: list[tuple[str, str]] = []
        self.latest: dict[tuple[str, str], int] = {}
        self.by_category: dict[str, list[int]] = {}
        self.reemitted: list[tuple[str, str]] = []
        ds = dataset
        rows = [
            (s, rid, r)
            for s in ds.entity_sets_with_rows()
            if s in ds.entities
            for rid, r in ds.rows[s].items()
        ]
        rows.sort(key=lambda t: (not t[2].get(TOMBSTONE_FLAG), _ticks(ds, t[2]), t[0], t[1]))
        for entity_set, rid, _ in rows:
            self.append(entity_set, rid)

    @property
    def head(self) -> int:
        """The latest skiptoken of the whole feed (0 when empty)."""
        return len(self.entries)

    def append(self, entity_set: str, rid: str) -> int:
        """Log a change of one row; returns its skiptoken."""
        self.entries.append((entity_set, rid))
        token = len(self.entries)
        self.latest[(entity_set, rid)] = token
        self.by_category.setdefault(entity_set, []).append(token)
        return token

    def page(self, category: str | None, after: int, size: int = PAGE_SIZE) -> tuple[list[int], int]:
        """Up to ``size`` current skiptokens after ``after`` (of one category, or of all when None), and
        how many current entries of the category come at or before ``after`` (for ``fail_after``)."""
        tokens = self.by_category.get(category, []) if category else range(1, self.head + 1)
        start = bisect.bisect_right(tokens, after)
        out: list[int] = []
        for token in tokens[start:]:
            if self.latest[self.entries[token - 1]] == token:
                out.append(token)
                if len(out) >= size:
                    break
        return out, start

    def record_mutation(self, report: MutationReport, seed: int, reemit: float = REEMIT_FRACTION) -> None:
        """Log what ``report`` bumped (in ``ApiGewijzigdOp`` order), then re-emit ``reemit`` of the
        unchanged live rows of each type, at least one (same data, new skiptoken)."""
        ds = self.dataset
        bumped = [(s, rid) for s, ids in report.bumped.items() if s in ds.entities for rid in ids]
        bumped.sort(key=lambda t: (_ticks(ds, ds.rows[t[0]][t[1]]), t[0], t[1]))
        for entity_set, rid in bumped:
            self.append(entity_set, rid)
        rng = random.Random(seed)
        touched = set(bumped)
        for entity_set in sorted(report.bumped.keys() | set(self.by_category)):
            if entity_set not in ds.entities:
                continue
            still = [i for i in ds.live_ids(entity_set) if (entity_set, i) not in touched]
            k = min(len(still), max(1, int(len(still) * reemit))) if reemit > 0 else 0
            for rid in rng.sample(still, k):
                self.append(entity_set, rid)
                self.reemitted.append((entity_set, rid))


def change_log(dataset: Dataset) -> ChangeLog:
    """The dataset's change log, built from its rows on first use and kept on the dataset."""
    with dataset.lock:
        log = getattr(dataset, "feed_log", None)
        if log is None:
            log = ChangeLog(dataset)
            dataset.feed_log = log
        return log


def _feed_value(kind_spec: Any, value: Any) -> Any:
    """A canonical (OData) value as the feed writes it: DAY as its calendar day, the rest as they are."""
    if kind_spec is Kind.DAY.spec and isinstance(value, str) and len(value) > 10:
        return value[:10]
    return value


def entity_xml(dataset: Dataset, entity: Entity, row: Mapping[str, Any]) -> bytes:
    """The entity element of ``row`` (a canonical row of ``entity``), in the XSD's order."""
    name = entity.name
    style = TIME_STYLES.get(name, "z")
    common: dict[str, Any] = {
        "bijgewerkt": _timestamp(row.get("GewijzigdOp") or row.get("ApiGewijzigdOp"), style),
        "prefixed": name in PREFIXED,
        "time_style": style,
    }
    if row.get(TOMBSTONE_FLAG):
        text = "True" if name in TRUE_CAPITALISED else None
        return entity_element(name, row["Id"], deleted=True, deleted_text=text, **common)
    fields: list[tuple[str, Any]] = []
    attributes: dict[str, str] = {}
    for feed_name, api, spec in entity.feed_columns:
        value = row.get(api)
        if feed_name.startswith("@"):
            if value is not None:
                attributes[feed_name[1:]] = str(value)
        else:
            fields.append((feed_name, _feed_value(spec, value)))
    refs: list[Any] = []
    stamped = stamped_refs(name)
    for rel in entity.relationships:
        if rel.foreign_key is not None:
            target = row.get(rel.foreign_key)
            found = [dataset.rows.get(rel.target, {}).get(target) or {"Id": target}] if target else []
        else:
            found = dataset.navigate(entity.entity_set, dict(row), rel.navigation or "") or []
        for t in found:
            if t.get(TOMBSTONE_FLAG):
                continue
            if rel.feed_name in stamped:
                stamp = _timestamp(t.get("GewijzigdOp") or t.get("ApiGewijzigdOp"), style)
                refs.append((rel.feed_name, t["Id"], stamp))
            else:
                refs.append((rel.feed_name, t["Id"]))
    order = xsd_order(name)
    return entity_element(
        name, row["Id"], fields=fields, refs=refs, order=order, attributes=attributes, **common
    )


@dataclass(frozen=True)
class FeedAnswer:
    """What the handler sends: status, body, content type (``fault`` names a fault kind to inject)."""

    status: int
    body: bytes
    content_type: str = "application/atom+xml; charset=utf-8"


def _params(query: str) -> dict[str, str]:
    return {k.lower(): v for k, v in parse_qsl(query, keep_blank_values=True)}


def feed(dataset: Dataset, root: str, query: str, faults: Any = None) -> FeedAnswer:
    """The answer of ``Feed?<query>``: one page of a category's (or the global) stream."""
    from include.loaders.syncfeed import canonical_category

    params = _params(query)
    raw_category = params.get("category")
    try:
        skiptoken = int(params.get("skiptoken") or 0)
    except ValueError:
        return FeedAnswer(400, b"skiptoken must be an integer", "text/plain; charset=utf-8")
    category = canonical_category(raw_category) if raw_category else None
    with dataset.lock:
        log = change_log(dataset)
        known = category is None or (category in dataset.entities and category in log.by_category)
        tokens, before = log.page(category, skiptoken) if known else ([], 0)
        cfg = faults.config if faults is not None else None
        if cfg is not None and category and cfg.fail_after_entity == category:
            if before + len(tokens) > cfg.fail_after_items:
                faults.count("fail_after")
                return FeedAnswer(500, b"An error has occurred.", "text/plain; charset=utf-8")
        entries = []
        for token in tokens:
            entity_set, rid = log.entries[token - 1]
            entity = dataset.entities[entity_set]
            row = dataset.rows[entity_set][rid]
            style = TIME_STYLES.get(entity_set, "z")
            entries.append(
                AtomEntry(
                    entity_id=rid,
                    category=entity_set,
                    skiptoken=token,
                    updated=_timestamp(row.get("ApiGewijzigdOp"), style),
                    content=entity_xml(dataset, entity, row),
                    enclosure=entity_set in ENCLOSURES and not row.get(TOMBSTONE_FLAG),
                    time_style=style,
                )
            )
        head = log.head
    name = category or (raw_category or "")
    body = feed_page(
        root,
        name,
        entries,
        next_skiptoken=tokens[-1] if tokens else None,
        resume_skiptoken=None if tokens else max(skiptoken, head),
        lower_case_links=True,
        skiptoken_first=name in SKIPTOKEN_FIRST,
        self_skiptoken=skiptoken or None,
        updated=datetime.now(UTC),
    )
    return FeedAnswer(200, body)


def _find(dataset: Dataset, rid: str) -> tuple[Entity, Mapping[str, Any]] | None:
    rid = rid.strip().lower()
    for name, entity in dataset.entities.items():
        row = dataset.rows.get(name, {}).get(rid)
        if row is not None:
            return entity, row
    return None


def entiteit(dataset: Dataset, rid: str) -> FeedAnswer:
    """``/Entiteiten/<id>``: the entity element of the row's current version (or tombstone)."""
    with dataset.lock:
        found = _find(dataset, rid)
        if found is None:
            return FeedAnswer(404, f"No entity with id {rid}.".encode(), "text/plain; charset=utf-8")
        entity, row = found
        body = entity_document(entity_xml(dataset, entity, row))
    return FeedAnswer(200, body, "application/xml; charset=utf-8")


def resource(dataset: Dataset, rid: str) -> FeedAnswer:
    """``/Resources/<id>``: the file of an entity of a type with files (deterministic bytes)."""
    with dataset.lock:
        found = _find(dataset, rid)
    if found is None or found[0].name not in ENCLOSURES or found[1].get(TOMBSTONE_FLAG):
        return FeedAnswer(404, f"No resource with id {rid}.".encode(), "text/plain; charset=utf-8")
    entity, row = found
    seed = hashlib.sha256(row["Id"].encode()).digest()
    body = b"%PDF-1.4\n% replay resource of " + entity.name.encode() + b" " + row["Id"].encode() + b"\n"
    body += seed * 8
    return FeedAnswer(200, body, str(row.get("ContentType") or "application/octet-stream"))


def answer(dataset: Dataset, root: str, rest: str, query: str, faults: Any = None) -> FeedAnswer:
    """Route a request under ``/SyncFeed/2.0`` (``rest`` is the path after it, without slashes)."""
    if rest.lower() == "feed":
        return feed(dataset, root, query, faults)
    head, _, tail = rest.partition("/")
    if head.lower() == "entiteiten" and tail:
        return entiteit(dataset, tail)
    if head.lower() == "resources" and tail:
        return resource(dataset, tail)
    return FeedAnswer(404, f"No SyncFeed resource at {PATH}/{rest}.".encode(), "text/plain; charset=utf-8")


def log_entries(dataset: Dataset) -> Sequence[tuple[str, str]]:
    """Every logged change as (entity set, Id), skiptoken = position + 1 (for tests and tools)."""
    return change_log(dataset).entries


__all__ = [
    "ENCLOSURES",
    "PAGE_SIZE",
    "PATH",
    "ChangeLog",
    "FeedAnswer",
    "answer",
    "change_log",
    "entity_xml",
    "log_entries",
    "xsd_order",
]
