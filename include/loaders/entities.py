"""The entity table: one declarative entry per TK entity set the loaders write into Neo4j.

Everything the loop, the writer and the metadata check need to know about an entity lives here and
nowhere else: its entity set and label, its scalar properties with their kinds, and the relationships
it *owns* (writes and replaces), from a foreign key or from a many-to-many navigation. Adding a sixth
entity is one more :class:`Entity` in :data:`ENTITIES`: the DAG's tasks, the constraints, the
``$metadata`` requirements, the replay server's entity sets and link tables, its generated data and the
tables of ``docs/graph-model.md`` all derive from the table. Code that works on another table (a copy
with one more entry, in tests) takes it as an argument; the table itself is read-only.

Each property kind (:class:`Kind`) is one row (:class:`KindSpec`): its EDM type, the Neo4j type, the
validator and the Cypher conversion the writer applies.

The table's scalar properties are those of the v4/2.0 API. What a load writes follows the live
``$metadata`` instead (:mod:`include.loaders.model`, the *served model*): only the entity set, the key,
``Verwijderd``, ``ApiGewijzigdOp`` and the relationships' foreign keys and navigations are required
(:meth:`Entity.requirement`); a scalar the API renamed, dropped or added is reported, not fatal.

Naming rules (``docs/graph-model.md``):

* label = entity set name (``Zaak``); key property ``id`` = the API ``Id``;
* property = API name with its first letter lower-cased (``Nummer`` -> ``nummer``,
  ``ApiGewijzigdOp`` -> ``apiGewijzigdOp``);
* relationship types are UPPER_SNAKE English, written from the owning entity *outwards*:
  ``(owner)-[:TYPE]->(target)``. Each type is owned by exactly one entity, so one loader, and only that
  loader, adds and removes edges of that type.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from enum import Enum
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the API client is imported only where the metadata check runs
    from include.loaders.api import EntityRequirement

KEY = "Id"
"""The API key of every entity set (``Edm.Guid``)."""

TOMBSTONE_FLAG = "Verwijderd"
"""True on a soft-deleted row; every other field but ``Id`` and the two timestamps is then null."""

WATERMARK = "ApiGewijzigdOp"
"""The property incremental windows ``[start, end)`` filter on."""

GUID = "Edm.Guid"
"""The EDM type of the key and of every foreign key."""

_DATETIME_RE = re.compile(r"^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(?::\d{2})?)(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})$")
_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_DATE_SENTINEL = "0001-01-01"  # 0001-01-01(T00:00:00Z) means "unknown" (Vergadering.Sluiting)
_INT_SENTINEL = -1  # Volgnummer -1 means "no number"


def _int_or_sentinel(value: Any) -> Any:
    return None if value == _INT_SENTINEL else value


def _datetime(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError("is not an ISO 8601 DateTimeOffset.")
    if value.startswith(_DATE_SENTINEL):
        return None
    m = _DATETIME_RE.match(value)
    try:
        if m is None:
            raise ValueError("bad format")
        datetime.fromisoformat(m.group(1) + (m.group(3) if m.group(3) != "Z" else "+00:00"))
    except ValueError:
        raise ValueError(
            "is not an ISO 8601 DateTimeOffset (expected e.g. 2025-10-02T20:46:33.5365131Z)."
        ) from None
    return value  # Neo4j's datetime() parses it, keeping the offset and all 7 fractional digits


def parse_datetimeoffset(value: Any) -> datetime | None:
    """An OData DateTimeOffset (``2024-06-01T12:00:00.123+02:00``, ``…Z``; ``ApiGewijzigdOp`` and the other
    DATETIME values) as an aware datetime, or None when it is absent, not a string or not readable."""
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None


def _date(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not _DATE_RE.match(value):
        raise ValueError("is not an ISO 8601 Date (expected e.g. 1975-04-21).")
    if value == _DATE_SENTINEL:
        return None
    try:
        date.fromisoformat(value)
    except ValueError:
        raise ValueError("is not a valid calendar date (expected e.g. 1975-04-21).") from None
    return value


@dataclass(frozen=True)
class KindSpec:
    """Everything about one property kind, in one row.

    Attributes:
        edm: the EDM type of the property in the table (the metadata check compares it for the required
            properties; a served property takes its kind from its EDM type, :data:`EDM_KINDS`).
        neo4j: the Neo4j type of the stored value (for the docs).
        convert: the validator: API value -> query parameter, where None means "no value" (the property
            is removed); raises ``ValueError`` saying what was expected (the writer names the entity,
            the Id and the field). None: the value is passed as it is (Neo4j refuses what it cannot
            store, and the writer isolates that item).
        cypher: the Cypher function that turns the parameter into the stored value (``datetime``,
            ``date``); None stores the parameter as it is.
        doc: what the conversion does, for the docs.
    """

    edm: str
    neo4j: str
    convert: Callable[[Any], Any] | None = None
    cypher: str | None = None
    doc: str = ""


class Kind(Enum):
    """How an API value becomes a Neo4j property value: one :class:`KindSpec` per kind."""

    TEXT = KindSpec("Edm.String", "STRING", doc="as is")
    INT = KindSpec("Edm.Int32", "INTEGER", doc="as is")
    INT_OPT = KindSpec("Edm.Int32", "INTEGER", _int_or_sentinel, doc="-1 means no value: absent (Volgnummer)")
    FLOAT = KindSpec("Edm.Double", "FLOAT", doc="as is")
    BOOL = KindSpec("Edm.Boolean", "BOOLEAN", doc="as is")
    DATETIME = KindSpec(
        "Edm.DateTimeOffset",
        "DATETIME",
        _datetime,
        cypher="datetime",
        doc="zoned, the API's offset and all 7 fractional digits kept; 0001-01-01 means unknown: absent",
    )
    DATE = KindSpec(
        "Edm.Date", "DATE", _date, cypher="date", doc="a calendar day; 0001-01-01 means unknown: absent"
    )

    @property
    def spec(self) -> KindSpec:
        """This kind's row."""
        return self.value

    @property
    def edm(self) -> str:
        """The EDM type of this kind (``Edm.DateTimeOffset``)."""
        return self.value.edm


# Short names for the table below.
T, N, N_OPT, B, DT, D = Kind.TEXT, Kind.INT, Kind.INT_OPT, Kind.BOOL, Kind.DATETIME, Kind.DATE

EDM_KINDS: Mapping[str, Kind] = MappingProxyType(
    {
        "Edm.String": Kind.TEXT,
        "Edm.Int16": Kind.INT,
        "Edm.Int32": Kind.INT,
        "Edm.Int64": Kind.INT,
        "Edm.Byte": Kind.INT,
        "Edm.SByte": Kind.INT,
        "Edm.Boolean": Kind.BOOL,
        "Edm.DateTimeOffset": Kind.DATETIME,
        "Edm.Date": Kind.DATE,
        "Edm.Decimal": Kind.FLOAT,
        "Edm.Double": Kind.FLOAT,
        "Edm.Single": Kind.FLOAT,
    }
)
"""The kind of a property the live ``$metadata`` declares, by its EDM type (the served model,
:mod:`include.loaders.model`). An EDM type not listed (``Edm.Binary``, ``Edm.Duration``, a complex
type…) has no kind: such a property is reported and not stored, never guessed."""

# Every entity set has these two timestamps (tk-api/README.md section 1).
_TIMESTAMPS: dict[str, Kind] = {"GewijzigdOp": DT, "ApiGewijzigdOp": DT}


def property_name(api_name: str) -> str:
    """The graph property for an API property: first letter lower-cased (``VRSNummer`` -> ``vRSNummer``)."""
    return api_name[:1].lower() + api_name[1:]


@dataclass(frozen=True)
class Relationship:
    """Edges ``(owner)-[:type]->(:target {id})`` that one entity's loader owns.

    Exactly one of ``foreign_key`` (a ``*_Id`` property on the owner: 0 or 1 edge) and ``navigation``
    (a collection navigation, expanded as ``Navigation($select=Id)``: 0..n edges) is set. When an owner
    is (re)loaded its edges of this type are *replaced*: the ones to targets no longer listed are deleted.
    """

    type: str
    target: str
    foreign_key: str | None = None
    navigation: str | None = None
    doc: str = ""

    def __post_init__(self) -> None:
        if (self.foreign_key is None) == (self.navigation is None):
            raise ValueError(f"Relationship {self.type}: set exactly one of foreign_key and navigation.")
        if not self.type.replace("_", "").isalnum() or self.type.upper() != self.type:
            raise ValueError(f"Relationship type {self.type!r} must be UPPER_SNAKE.")

    @property
    def source(self) -> str:
        """The API field the edge comes from, for docs and messages (``Activiteit_Id``, ``Document``)."""
        return self.foreign_key or self.navigation or ""


@dataclass(frozen=True)
class Entity:
    """One TK entity set and how it maps onto the graph.

    Attributes:
        name: entity set = entity type = node label (``Zaak``).
        loader: the loader's name, also its checkpoint name and the DAG's task id (``load_zaken``).
        properties: API property name -> :class:`Kind`, the scalars of the node in the v4/2.0 API (not
            ``Id``, not ``Verwijderd``, not foreign keys; the two timestamps are added unless
            ``implicit_timestamps`` is False). What a load stores is the served model built from them
            and the live ``$metadata`` (:func:`include.loaders.model.served_entity`).
        relationships: the edge types this entity owns.
        doc: what the entity is (the graph model's node table shows it).
        core: one of the five entities of the mission: what ``requirements()`` and
            ``python -m include.loaders`` take when no entities are named. The DAG loads every
            entry of the table, core or not.
        implicit_timestamps: add ``GewijzigdOp`` and ``ApiGewijzigdOp`` to ``properties`` (the table's
            entries); False for a served model (:func:`include.loaders.model.served_entity`), whose
            properties are exactly what the live ``$metadata`` declares.
    """

    name: str
    loader: str
    properties: Mapping[str, Kind]
    relationships: tuple[Relationship, ...] = ()
    doc: str = ""
    core: bool = False
    implicit_timestamps: bool = True
    _all_properties: Mapping[str, Kind] = field(init=False, repr=False, compare=False)
    _columns: tuple[tuple[str, str, KindSpec], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        props = dict(self.properties)
        if self.implicit_timestamps:
            props.update(_TIMESTAMPS)
        for reserved in (KEY, TOMBSTONE_FLAG):
            if reserved in props:
                raise ValueError(f"Entity {self.name}: {reserved!r} is implicit, do not list it.")
        object.__setattr__(self, "_all_properties", MappingProxyType(props))
        columns = tuple((api, property_name(api), kind.spec) for api, kind in props.items())
        object.__setattr__(self, "_columns", columns)

    @property
    def label(self) -> str:
        """The node label (the entity set name)."""
        return self.name

    @property
    def entity_set(self) -> str:
        """The OData entity set (named exactly like its type)."""
        return self.name

    @property
    def all_properties(self) -> Mapping[str, Kind]:
        """The stored scalar properties including ``GewijzigdOp`` and ``ApiGewijzigdOp``."""
        return self._all_properties

    @property
    def columns(self) -> tuple[tuple[str, str, KindSpec], ...]:
        """``(API name, graph property, kind row)`` per stored property: what the writer iterates."""
        return self._columns

    @property
    def foreign_keys(self) -> list[str]:
        return [r.foreign_key for r in self.relationships if r.foreign_key]

    @property
    def navigations(self) -> list[str]:
        return [r.navigation for r in self.relationships if r.navigation]

    @property
    def select(self) -> list[str]:
        """``$select``: the key, the tombstone flag, the scalars and the foreign keys."""
        return [KEY, TOMBSTONE_FLAG, *self.all_properties, *self.foreign_keys]

    @property
    def expand(self) -> list[str]:
        """``$expand`` navigations (the client asks each as ``Navigation($select=Id)``)."""
        return self.navigations

    @property
    def target_labels(self) -> set[str]:
        return {r.target for r in self.relationships}

    @property
    def edm_types(self) -> dict[str, str]:
        """Every property of :attr:`select` -> the EDM type ``$metadata`` declares for it in the table."""
        types = {KEY: GUID, TOMBSTONE_FLAG: Kind.BOOL.edm}
        types.update({name: kind.edm for name, kind in self.all_properties.items()})
        types.update({fk: GUID for fk in self.foreign_keys})
        return types

    @property
    def required(self) -> list[str]:
        """The properties a load cannot do without: the key, the tombstone flag, the watermark (windows and
        paging filter on it) and the foreign keys of the owned relationships. Every other scalar follows
        the live ``$metadata`` (:mod:`include.loaders.model`): missing ones are reported, not fatal."""
        return [KEY, TOMBSTONE_FLAG, WATERMARK, *self.foreign_keys]

    def requirement(self) -> EntityRequirement:
        """What the live ``$metadata`` must offer for this entity (for ``TKClient.check_metadata``): the
        names of :attr:`required` with their EDM types, and the navigations of the owned relationships."""
        from include.loaders.api import EntityRequirement

        types = {KEY: GUID, TOMBSTONE_FLAG: Kind.BOOL.edm, WATERMARK: Kind.DATETIME.edm}
        types.update({fk: GUID for fk in self.foreign_keys})
        return EntityRequirement(properties=self.required, navigations=self.navigations, types=types)


def check_table(entities: Mapping[str, Entity]) -> Mapping[str, Entity]:
    """``entities`` as a read-only table, after checking it: keyed by name, loader names unique, each
    relationship type owned by exactly one entity (the REPLACE semantics depend on it)."""
    owner: dict[str, str] = {}
    loaders: dict[str, str] = {}
    for name, e in entities.items():
        if name != e.name:
            raise ValueError(f"Entity table: the entry {e.name} is filed under {name!r}.")
        if e.loader in loaders:
            raise ValueError(f"Loader {e.loader} is used by both {loaders[e.loader]} and {e.name}.")
        loaders[e.loader] = e.name
        for r in e.relationships:
            if r.type in owner:
                raise ValueError(f"Relationship type {r.type} is owned by both {owner[r.type]} and {e.name}.")
            owner[r.type] = e.name
    return MappingProxyType(dict(entities))


# --------------------------------------------------------------------------------------------------
# The table. Property lists follow the v4/2.0 $metadata (tk-api/samples/…metadata.xml); kinds follow
# its EDM types. Foreign keys that point outside the graph (Voortouwcommissie_Id,
# HuidigeDocumentVersie_Id) are not loaded: their targets are not entities of this graph (yet).
# --------------------------------------------------------------------------------------------------

# fmt: off
ENTITIES: Mapping[str, Entity] = check_table(
    {
        e.name: e
        for e in (
            Entity(
                name="Zaak",
                core=True,
                loader="load_zaken",
                doc="A case: motion, bill, amendment, written question…",
                properties={
                    "Nummer": T, "Soort": T, "Titel": T, "Citeertitel": T, "Alias": T, "Status": T,
                    "Onderwerp": T, "GestartOp": DT, "Organisatie": T, "Grondslagvoorhang": T,
                    "Termijn": DT, "Vergaderjaar": T, "Volgnummer": N_OPT, "HuidigeBehandelstatus": T,
                    "Afgedaan": B, "GrootProject": B, "Kabinetsappreciatie": T,
                },
                relationships=(
                    Relationship("HAS_DOCUMENT", "Document", navigation="Document",
                                 doc="the documents of the case (m:n)"),
                    Relationship("ON_AGENDA_ITEM", "Agendapunt", navigation="Agendapunt",
                                 doc="the case is on this agenda item (m:n)"),
                    Relationship("DISCUSSED_IN", "Activiteit", navigation="Activiteit",
                                 doc="an activity about the case (m:n; a manual, content-based link, "
                                     "API issue #49)"),
                ),
            ),
            Entity(
                name="Document",
                core=True,
                loader="load_documents",
                doc="A parliamentary document (the file is at `Document(<id>)/resource`).",
                properties={
                    "Soort": T, "DocumentNummer": T, "Titel": T, "Onderwerp": T, "Datum": DT,
                    "Vergaderjaar": T, "Kamer": N, "Volgnummer": N_OPT, "Citeertitel": T, "Alias": T,
                    "DatumRegistratie": DT, "DatumOntvangst": DT, "Aanhangselnummer": T,
                    "KenmerkAfzender": T, "Organisatie": T, "ContentType": T, "ContentLength": N,
                },
                relationships=(
                    Relationship("FOR_ACTIVITY", "Activiteit", navigation="Activiteit",
                                 doc="the document belongs to this activity (m:n)"),
                    Relationship("FOR_AGENDA_ITEM", "Agendapunt", navigation="Agendapunt",
                                 doc="the document belongs to this agenda item (m:n)"),
                ),
            ),
            Entity(
                name="Vergadering",
                core=True,
                loader="load_vergaderingen",
                doc="A sitting (plenary or committee); the API has no link to Activiteit (#95).",
                properties={
                    "Soort": T, "Titel": T, "Zaal": T, "Vergaderjaar": T, "VergaderingNummer": N,
                    "Datum": DT, "Aanvangstijd": DT, "Sluiting": DT, "Kamer": T,
                },
                relationships=(
                    Relationship("HAS_REPORT", "Verslag", navigation="Verslag",
                                 doc="the (VLOS) reports of the sitting (1:n, the reverse of "
                                     "Verslag.Vergadering_Id)"),
                ),
            ),
            Entity(
                name="Agendapunt",
                core=True,
                loader="load_agendapunten",
                doc="An agenda item of an Activiteit.",
                properties={
                    "Nummer": T, "Onderwerp": T, "Aanvangstijd": DT, "Eindtijd": DT, "Volgorde": N,
                    "Rubriek": T, "Noot": T, "Status": T,
                },
                relationships=(
                    Relationship("PART_OF", "Activiteit", foreign_key="Activiteit_Id",
                                 doc="the activity whose agenda holds this item"),
                ),
            ),
            Entity(
                name="Activiteit",
                core=True,
                loader="load_activiteiten",
                doc="A debate, committee meeting, vote…",
                properties={
                    "Soort": T, "Nummer": T, "Onderwerp": T, "DatumSoort": T, "Datum": DT,
                    "Aanvangstijd": DT, "Eindtijd": DT, "Locatie": T, "Besloten": B, "Status": T,
                    "Vergaderjaar": T, "Kamer": T, "Noot": T, "VRSNummer": T, "SidVoortouw": T,
                    "Voortouwnaam": T, "Voortouwafkorting": T, "Voortouwkortenaam": T,
                    "Aanvraagdatum": DT, "DatumVerzoekEersteVerlenging": DT,
                    "DatumMededelingEersteVerlenging": DT, "DatumVerzoekTweedeVerlenging": DT,
                    "DatumMededelingTweedeVerlenging": DT, "Vervaldatum": DT,
                },
            ),
            Entity(
                name="Verslag",
                loader="load_verslagen",
                doc="A (VLOS) report of a sitting; its edge HAS_REPORT is owned by Vergadering.",
                properties={"Soort": T, "Status": T, "ContentType": T, "ContentLength": N},
            ),
        )
    }
)
# fmt: on
"""Every entity the loaders know, by name: the only list of entities (tasks, constraints, metadata
requirements, the replay server's sets and links, generated data and the graph model derive from it)."""


def table_with(*entries: Entity, table: Mapping[str, Entity] | None = None) -> Mapping[str, Entity]:
    """A checked copy of ``table`` (default :data:`ENTITIES`) with ``entries`` added or replacing the
    entries of the same name; the table itself is not changed."""
    out = dict(ENTITIES if table is None else table)
    out.update({e.name: e for e in entries})
    return check_table(out)


def with_relationship(entity: Entity, *relationships: Relationship) -> Entity:
    """A copy of ``entity`` that also owns ``relationships``."""
    return dataclasses.replace(entity, relationships=(*entity.relationships, *relationships))


CORE_ENTITIES: tuple[str, ...] = tuple(name for name, e in ENTITIES.items() if e.core)
"""The entries flagged ``core`` (the five of the mission), in table order; derived, never edited."""


def get_entity(name: str | Entity, table: Mapping[str, Entity] | None = None) -> Entity:
    """The entry for ``name`` (an entity set name or a loader name) in ``table`` (default
    :data:`ENTITIES`); a clear error otherwise."""
    if isinstance(name, Entity):
        return name
    table = ENTITIES if table is None else table
    if name in table:
        return table[name]
    for e in table.values():
        if name == e.loader:
            return e
    raise KeyError(
        f"Unknown entity {name!r}: known are {', '.join(table)} "
        f"(or their loaders {', '.join(e.loader for e in table.values())})."
    )


def all_labels(entities: Iterable[Entity] | None = None) -> list[str]:
    """Every label the given entities write, their relationship targets included (for constraints)."""
    entities = list(ENTITIES.values()) if entities is None else list(entities)
    labels: set[str] = set()
    for e in entities:
        labels.add(e.label)
        labels |= e.target_labels
    return sorted(labels)


def requirements(
    entities: Iterable[Entity | str] | None = None, table: Mapping[str, Entity] | None = None
) -> dict[str, EntityRequirement]:
    """``{entity_set: EntityRequirement}`` for ``TKClient.check_metadata``: of ``entities`` (names or
    entries), by default the ``core`` entries of ``table`` (default :data:`ENTITIES`)."""
    table = ENTITIES if table is None else table
    if entities is None:
        entities = [e for e in table.values() if e.core]
    chosen = [get_entity(e, table) for e in entities]
    return {e.entity_set: e.requirement() for e in chosen}
