"""The data a replay server serves: canonical (v4/2.0) rows per entity set, one link table, ``$metadata``.

Rows are stored once, with the v4/2.0 property names; the server renames them per profile on the way
out. A dataset serves the entities of an entity table (``include.loaders.entities.ENTITIES`` unless
another is given): its ``$metadata`` is the real one with the table laid over it, and its link tables
and foreign keys are derived from the table's relationships (:mod:`include.tk_replay.schema`).
Many-to-many navigations (``Document.Zaak`` / ``Zaak.Document`` …) come from ONE link table per pair
(:attr:`Dataset.link_specs`), so both sides always agree. Single-valued navigations follow foreign keys
(a property ``<Nav>_Id``, e.g. ``Agendapunt.Activiteit_Id``), and the collection on the other side
(``Activiteit.Agendapunt``) is the reverse of that key.

A row with ``ContentType`` and ``ContentLength`` (a Document, a Verslag…) has a file, served at
``<Set>(<id>)/resource``: the bytes in :attr:`Dataset.resources` when given, else ``ContentLength``
deterministic bytes derived from the row's Id (:meth:`Dataset.resource_chunks`), generated as they are
sent, never held whole.

On disk a dataset is a folder: ``<EntitySet>.json`` (a JSON array of rows, or an OData page with a
``value`` array), optional ``links.json`` (``{"Document-Zaak": [[document_id, zaak_id], …], …}``) and
optional ``metadata.xml`` (the v4/2.0 ``$metadata``; the real one of Oct 2025 by default). The real samples
(``include/tk_replay/data``) load as they are: a file name containing an entity set name
(``motiematcher_zaak_page1_valuearray_noFK.json``) counts for that set.
"""

from __future__ import annotations

import json
import logging
import random
import re
import threading
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from include.loaders.api_metadata import EntityTypeInfo, ODataSchema
from include.loaders.entities import ENTITIES, TOMBSTONE_FLAG, Entity, Relationship
from include.loaders.odata_values import format_ticks, guid_sort_key, parse_ticks  # noqa: F401 - re-exported
from include.tk_replay import schema as table_schema
from include.tk_replay.schema import ForeignKeySpec, LinkSpec

if TYPE_CHECKING:
    from include.tk_replay.generator import MutationReport

log = logging.getLogger(__name__)

DATA_DIR = Path(__file__).resolve().parent / "data"
METADATA_FILE = "motiematcher_odata_v4_2.0_metadata.xml"

# Fields a tombstone keeps; every other field is null (tk-api/README.md section 3).
TOMBSTONE_FIELDS = ("Id", "GewijzigdOp", "ApiGewijzigdOp", "Verwijderd")


class Dataset:
    """Canonical rows, link tables and ``$metadata`` of one replay server.

    Args:
        rows: entity set -> Id -> canonical row.
        links: link table name -> (left Id, right Id) pairs.
        metadata_xml: the v4/2.0 ``$metadata`` to start from (the real one of Oct 2025 by default).
        entities: the entity table the dataset serves (default ``ENTITIES``): ``$metadata`` declares
            its entities as it says, and its relationships give the link tables and foreign keys.

    Thread safety: the server reads under :attr:`lock`; :meth:`mutate` and the other writers take it
    too, so a page is never computed from a half-applied mutation. :attr:`version` changes with every
    write and invalidates the derived indexes.
    """

    def __init__(
        self,
        rows: dict[str, dict[str, dict[str, Any]]] | None = None,
        links: dict[str, set[tuple[str, str]]] | None = None,
        metadata_xml: str | None = None,
        entities: Mapping[str, Entity] | None = None,
    ):
        self.entities: Mapping[str, Entity] = ENTITIES if entities is None else entities
        base_xml = metadata_xml or (DATA_DIR / METADATA_FILE).read_text(encoding="utf-8")
        self.metadata_xml = table_schema.table_metadata(base_xml, self.entities)
        self.schema = ODataSchema.from_xml(self.metadata_xml)
        self.link_specs: tuple[LinkSpec, ...]
        self.foreign_keys: tuple[ForeignKeySpec, ...]
        self.link_specs, self.foreign_keys = table_schema.derive_links(self.entities, self.schema)
        self.rows: dict[str, dict[str, dict[str, Any]]] = {s: {} for s in self.schema.entity_sets}
        for name, by_id in (rows or {}).items():
            self._require_set(name)
            self.rows[name].update(by_id)
        self.links: dict[str, set[tuple[str, str]]] = {spec.name: set() for spec in self.link_specs}
        for name, pairs in (links or {}).items():
            if name not in self.links:
                raise ValueError(f"Unknown link table {name!r}; known: {', '.join(self.links)}")
            self.links[name].update(pairs)
        self.resources: dict[str, bytes] = {}
        """Id -> the bytes ``<Set>(<id>)/resource`` serves; rows not listed get derived bytes."""
        self.lock = threading.RLock()
        self.version = 0
        self._cache_version = -1
        self._sorted: dict[str, list[str]] = {}
        self._adjacency: dict[tuple[str, str], dict[str, list[str]]] = {}
        self._ticks: dict[str, int] = {}
        self.feed_log: Any = None
        """The SyncFeed's change log (:func:`include.tk_replay.syncfeed_server.change_log`), built on
        first use; :meth:`mutate` appends to it."""

    # -- construction ------------------------------------------------------------------------------
    @classmethod
    def samples(cls, entities: Mapping[str, Entity] | None = None) -> Dataset:
        """The real v4/2.0 sample pages shipped in ``include/tk_replay/data``."""
        return cls.load(DATA_DIR, entities)

    @classmethod
    def generate(cls, n: int, seed: int = 0, **kwargs: Any) -> Dataset:
        """A synthetic dataset: ``n`` entities per set; see :func:`include.tk_replay.generator.generate`."""
        from include.tk_replay.generator import generate

        return generate(n, seed, **kwargs)

    @classmethod
    def load(cls, folder: str | Path, entities: Mapping[str, Entity] | None = None) -> Dataset:
        """Read a dataset folder (see the module docstring) that serves ``entities`` (default
        ``ENTITIES``); unrecognised JSON files are skipped (warning)."""
        folder = Path(folder)
        if not folder.is_dir():
            raise FileNotFoundError(f"Dataset folder {folder} does not exist.")
        meta_path = folder / "metadata.xml"
        if not meta_path.exists() and (folder / METADATA_FILE).exists():
            meta_path = folder / METADATA_FILE
        metadata_xml = meta_path.read_text(encoding="utf-8") if meta_path.exists() else None
        ds = cls(metadata_xml=metadata_xml, entities=entities)
        by_lower = {name.lower(): name for name in ds.schema.entity_sets}
        for path in sorted(folder.glob("*.json")):
            if path.name == "links.json":
                for name, pairs in json.loads(path.read_text(encoding="utf-8")).items():
                    if name not in ds.links:
                        raise ValueError(
                            f"{path}: link table {name!r} holds no relationship of the entity table "
                            f"(known: {', '.join(ds.links)}); load it with the table it was made with "
                            "(Kamerstukdossier links: --kamerstukdossier)."
                        )
                    ds.links[name].update((a, b) for a, b in pairs)
                continue
            set_name = by_lower.get(path.stem.lower())
            if set_name is None:
                tokens = [t for t in re.split(r"[^A-Za-z]+", path.stem.lower()) if t in by_lower]
                set_name = by_lower[tokens[0]] if tokens else None
            if set_name is None:
                log.warning("Skipping %s: its name matches no entity set of $metadata", path)
                continue
            body = json.loads(path.read_text(encoding="utf-8"))
            if isinstance(body, dict):
                body = body.get("value", [body])
            for row in body:
                if not isinstance(row, dict) or "Id" not in row:
                    raise ValueError(f"{path}: every row must be a JSON object with an 'Id'.")
                ds.rows[set_name][row["Id"]] = {k: v for k, v in row.items() if not k.startswith("@odata.")}
        log.info("Loaded dataset %s: %s", folder, ds.summary())
        return ds

    def save(self, folder: str | Path) -> Path:
        """Write the dataset as a folder that :meth:`load` reads back unchanged."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        with self.lock:
            for name, by_id in self.rows.items():
                if by_id:
                    rows = [by_id[i] for i in self.sorted_ids(name)]
                    (folder / f"{name}.json").write_text(
                        json.dumps(rows, ensure_ascii=False), encoding="utf-8"
                    )
            links = {k: sorted(v) for k, v in self.links.items() if v}
            (folder / "links.json").write_text(json.dumps(links), encoding="utf-8")
            (folder / "metadata.xml").write_text(self.metadata_xml, encoding="utf-8")
        return folder

    # -- reading -----------------------------------------------------------------------------------
    def _require_set(self, name: str) -> EntityTypeInfo:
        info = self.schema.entity_sets.get(name)
        if info is None:
            raise KeyError(f"Entity set {name!r} is not in $metadata")
        return info

    def summary(self) -> dict[str, int]:
        """Rows per non-empty entity set, and links per non-empty link table."""
        out = {name: len(by_id) for name, by_id in self.rows.items() if by_id}
        out.update({f"links:{k}": len(v) for k, v in self.links.items() if v})
        return out

    def _check_cache(self) -> None:
        if self._cache_version != self.version:
            self._sorted.clear()
            self._adjacency.clear()
            self._cache_version = self.version

    def touch(self) -> None:
        """Mark the data as changed (call after editing :attr:`rows` or :attr:`links` directly)."""
        with self.lock:
            self.version += 1

    def sorted_ids(self, entity_set: str) -> list[str]:
        """The Ids of ``entity_set`` in the server's default order (:func:`guid_sort_key`)."""
        self._check_cache()
        ids = self._sorted.get(entity_set)
        if ids is None:
            ids = sorted(self.rows[entity_set], key=guid_sort_key)
            self._sorted[entity_set] = ids
        return ids

    def ticks(self, value: str) -> int:
        """:func:`parse_ticks`, memoised per dataset (filters compare the same strings again and again)."""
        t = self._ticks.get(value)
        if t is None:
            t = parse_ticks(value)
            self._ticks[value] = t
        return t

    def _adjacent(self, entity_set: str, nav: str) -> dict[str, list[str]] | None:
        """Id -> target Ids for a link-table or reverse-foreign-key navigation, else None."""
        self._check_cache()
        key = (entity_set, nav)
        if key in self._adjacency:
            return self._adjacency[key]
        adj: dict[str, list[str]] | None = None
        for spec in self.link_specs:
            if spec.left == entity_set and spec.left_nav == nav:
                adj = {}
                for a, b in self.links[spec.name]:
                    adj.setdefault(a, []).append(b)
            elif spec.right == entity_set and spec.right_nav == nav:
                adj = {}
                for a, b in self.links[spec.name]:
                    adj.setdefault(b, []).append(a)
            if adj is not None:
                break
        if adj is None:
            reverse = self.reverse_fk(entity_set, nav)
            if reverse is not None:
                source, column = reverse
                adj = {}
                for rid, row in self.rows.get(source, {}).items():
                    target = row.get(column)
                    if target:
                        adj.setdefault(target, []).append(rid)
        if adj is not None:
            for targets in adj.values():
                targets.sort(key=guid_sort_key)
        self._adjacency[key] = adj  # type: ignore[assignment]
        return adj

    def reverse_fk(self, entity_set: str, nav: str) -> tuple[str, str] | None:
        """``(source set, FK column)`` when ``entity_set.nav`` is the collection side of a foreign key."""
        self._require_set(entity_set)
        return table_schema.reverse_fk(self.schema, entity_set, nav)

    def navigate(self, entity_set: str, row: dict[str, Any], nav: str) -> list[dict[str, Any]] | dict | None:
        """The target(s) of navigation ``nav`` from ``row``: a list for collections, else a row or None."""
        info = self._require_set(entity_set)
        target_set = info.navigations[nav]
        targets = self.rows.get(target_set, {})
        if nav in info.collections:
            adj = self._adjacent(entity_set, nav)
            if not adj:
                return []
            return [targets[i] for i in adj.get(row["Id"], ()) if i in targets]
        fk = row.get(f"{nav}_Id")
        return targets.get(fk) if fk else None

    def resource_length(self, entity_id: str, content_length: int) -> int:
        """How many bytes the resource of ``entity_id`` has: its stored bytes, else ``content_length``."""
        stored = self.resources.get(entity_id)
        return content_length if stored is None else len(stored)

    def resource_chunks(self, entity_id: str, content_length: int, chunk: int = 1 << 16) -> Iterator[bytes]:
        """The bytes of the resource of ``entity_id`` in chunks: the stored ones, else ``content_length``
        bytes derived from the Id (the same on every call and every machine)."""
        stored = self.resources.get(entity_id)
        if stored is not None:
            for i in range(0, len(stored), chunk):
                yield stored[i : i + chunk]
            return
        rng = random.Random(entity_id)  # filler bytes, not a secret
        left = content_length
        while left > 0:
            n = min(chunk, left)
            yield rng.randbytes(n)
            left -= n

    def iter_links(self, entity_set: str) -> Iterator[tuple[LinkSpec, bool]]:
        """The link specs touching ``entity_set`` and whether it is their left side."""
        for spec in self.link_specs:
            if spec.left == entity_set:
                yield spec, True
            if spec.right == entity_set:
                yield spec, False

    def relationship_edges(self, owner: str, rel: Relationship) -> set[tuple[str, str]]:
        """``(owner Id, target Id)`` of every edge of ``rel`` (owned by ``owner``) this data holds: what
        the owner's loader must write. Tombstones hold no edges."""
        rows = self.rows.get(owner, {})
        if rel.foreign_key is not None:
            column = rel.foreign_key
            return {
                (rid, r[column]) for rid, r in rows.items() if not r.get(TOMBSTONE_FLAG) and r.get(column)
            }
        nav = rel.navigation or ""
        for spec in self.link_specs:
            if spec.left == owner and spec.left_nav == nav:
                return set(self.links[spec.name])
        reverse = self.reverse_fk(owner, nav)
        if reverse is None:
            raise KeyError(f"{owner}.{nav} is neither a link table nor the reverse of a foreign key here.")
        source, column = reverse
        return {
            (r[column], rid)
            for rid, r in self.rows.get(source, {}).items()
            if not r.get(TOMBSTONE_FLAG) and r.get(column)
        }

    # -- writing -----------------------------------------------------------------------------------
    def mutate(self, seed: int, **kwargs: Any) -> MutationReport:
        """Apply deterministic changes with later ``ApiGewijzigdOp``s; see :func:`generator.mutate`.

        The SyncFeed's change log gets every row the mutation bumped, then re-emissions of unchanged rows
        (:meth:`include.tk_replay.syncfeed_server.ChangeLog.record_mutation`)."""
        from include.tk_replay.generator import mutate
        from include.tk_replay.syncfeed_server import change_log

        with self.lock:
            feed_log = change_log(self)  # the history up to now, before the change
            report = mutate(self, seed, **kwargs)
            feed_log.record_mutation(report, seed)
        return report

    def live_ids(self, entity_set: str) -> list[str]:
        """Ids of the rows of ``entity_set`` that are not tombstones, in server order."""
        rows = self.rows[entity_set]
        return [i for i in self.sorted_ids(entity_set) if not rows[i].get("Verwijderd")]

    def entity_sets_with_rows(self) -> Iterable[str]:
        return [name for name, rows in self.rows.items() if rows]
