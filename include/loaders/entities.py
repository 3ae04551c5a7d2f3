"""The entity table: one declarative entry per TK entity set the loaders write into Neo4j.

Everything the loop, the writer and the metadata check need to know about an entity lives here and
nowhere else: its entity set and label, its scalar properties with their kinds, and the relationships
it *owns* (writes and replaces), from a foreign key or from a many-to-many navigation, and how each of
them is named in the SyncFeed. The table holds the 35 SyncFeed types (``tk-api/SYNCFEED.md`` section 2);
adding an entity is one more :class:`Entity` in :data:`ENTITIES`: the DAG's tasks, the constraints, the
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
* loader = ``load_`` + the type's words in snake case, the last one in the Dutch plural
  (``load_zaken``, ``load_fractie_zetel_personen``, ``load_persoon_onderwijs``); ``load_documents`` keeps
  the original tool's name (loader names are checkpoint names: a rename would orphan existing runs);
* relationship types are UPPER_SNAKE English, written from the holder *outwards*:
  ``(holder)-[:TYPE]->(target)``. The holder is the entity whose SyncFeed element carries the ref
  (section 4), so OData (the holder's foreign key or collection navigation) and the SyncFeed (its
  ``<target ref=…/>``) give the same edges. Each type is owned by exactly one entity, so one loader, and
  only that loader, adds and removes edges of that type;
* SyncFeed names (:meth:`Entity.feed_field`, :attr:`Relationship.feed_name`): the lower-camel form of the
  API name unless the entry says otherwise (``feed_names``, ``feed_ref``); the elements the graph does not
  store are declared with a reason (``feed_ignored``). ``tests/test_feed_mapping.py`` checks the table
  against every XSD (``include/tk_replay/data/syncfeed-xsd``).
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


def _day(value: Any) -> str | None:
    if isinstance(value, str) and len(value) > 10 and value[10] == "T":
        _datetime(value)  # a DateTimeOffset at local midnight (OData): its calendar day as written
        value = value[:10]
    return _date(value)


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
    DECIMAL = KindSpec("Edm.Decimal", "FLOAT", doc="as is, a float (PersoonNevenfunctieInkomsten.Bedrag)")
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
    DAY = KindSpec(
        "Edm.DateTimeOffset",
        "DATE",
        _day,
        cypher="date",
        doc="a calendar day that OData serves as a DateTimeOffset at local midnight and the SyncFeed as "
        "an xs:date: its day as written (2002-05-23T00:00:00+02:00 -> 2002-05-23); 0001-01-01: absent",
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
T, N, N_OPT, DEC, B, DT, D, DAY = (
    Kind.TEXT,
    Kind.INT,
    Kind.INT_OPT,
    Kind.DECIMAL,
    Kind.BOOL,
    Kind.DATETIME,
    Kind.DATE,
    Kind.DAY,
)

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
        "Edm.Decimal": Kind.DECIMAL,
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
    """Edges ``(holder)-[:type]->(:target {id})`` that one entity's loader owns.

    The holder is the entity whose SyncFeed element carries the ref (``<besluit ref="…"/>`` in a
    ``stemming``, ``tk-api/SYNCFEED.md`` section 4), so the OData and the SyncFeed loads of the same data
    write the same edges. On the OData side exactly one of ``foreign_key`` (a ``*_Id`` property of the
    holder: 0 or 1 edge) and ``navigation`` (a collection navigation of the holder, expanded as
    ``Navigation($select=Id)``: 0..n edges) is set. When a holder is (re)loaded its edges of this type
    are *replaced*: the ones to targets no longer listed are deleted.

    Attributes:
        type: the relationship type, English UPPER_SNAKE, owned by this entity only.
        target: the entity the edge points at.
        foreign_key: the holder's foreign key (``Besluit.Agendapunt_Id``; the API's names are not uniform:
            ``PersoonNevenfunctie.PersoonId``, ``PersoonNevenfunctieInkomsten.Nevenfunctie_Id``).
        navigation: the holder's collection navigation (``Document.Zaak``).
        doc: what the edge means.
        feed_ref: the ref element of the holder in the SyncFeed XSD; None: the lower-camel form of the
            navigation, or of the navigation the foreign key backs (:attr:`feed_name`).
        fk_navigation: the single-valued navigation the foreign key backs in ``$metadata``; None: the key
            without ``_Id`` (``PersoonId`` backs ``Persoon``).
        inverse: the target's collection navigation that lists the holders (``Zaak.VervangenDoor`` for
            ``Zaak.VervangenVanuit``); None: the one named like the holder (the replay server serves both
            sides of a navigation pair from one link table).
    """

    type: str
    target: str
    foreign_key: str | None = None
    navigation: str | None = None
    doc: str = ""
    feed_ref: str | None = None
    fk_navigation: str | None = None
    inverse: str | None = None

    def __post_init__(self) -> None:
        if (self.foreign_key is None) == (self.navigation is None):
            raise ValueError(f"Relationship {self.type}: set exactly one of foreign_key and navigation.")
        if not self.type.replace("_", "").isalnum() or self.type.upper() != self.type:
            raise ValueError(f"Relationship type {self.type!r} must be UPPER_SNAKE.")

    @property
    def source(self) -> str:
        """The API field the edge comes from, for docs and messages (``Activiteit_Id``, ``Document``)."""
        return self.foreign_key or self.navigation or ""

    @property
    def key_navigation(self) -> str | None:
        """The single-valued navigation behind :attr:`foreign_key` (None for a collection navigation)."""
        if self.foreign_key is None:
            return None
        return self.fk_navigation or self.foreign_key.removesuffix("_Id")

    @property
    def feed_name(self) -> str:
        """The SyncFeed ref element (``huidigeDocumentVersie``; repeated for a many-valued link)."""
        if self.feed_ref is not None:
            return self.feed_ref
        return property_name(self.navigation or self.key_navigation or "")


FEED_ATTRIBUTES: Mapping[str, str] = MappingProxyType(
    {"ContentType": "@contentType", "ContentLength": "@contentLength"}
)
"""Properties that the SyncFeed writes as attributes of the entity element (the file of a
``downloadEntiteitType``: document, persoon, fractie, verslag), by API name -> feed name."""


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
        feed_names: API property -> its SyncFeed name where that is not the lower-camel form
            (:func:`property_name`) of the API name: an element (``vrsNummer``), a nested element
            (``periode/van``) or an attribute of the entity element (``@contentType``,
            :data:`FEED_ATTRIBUTES`, added to every entry). The XSDs in ``tk-api/syncfeed-xsd`` decide.
        feed_ignored: SyncFeed elements of this type the graph does not store -> why.
        odata_only: properties of :attr:`all_properties` the SyncFeed does not carry -> why (a SyncFeed
            load leaves them absent). ``GewijzigdOp`` and ``ApiGewijzigdOp`` are never in the feed: the
            entity's ``bijgewerkt`` attribute and the entry's ``updated`` are their counterparts.
    """

    name: str
    loader: str
    properties: Mapping[str, Kind]
    relationships: tuple[Relationship, ...] = ()
    doc: str = ""
    core: bool = False
    implicit_timestamps: bool = True
    feed_names: Mapping[str, str] = field(default_factory=dict)
    feed_ignored: Mapping[str, str] = field(default_factory=dict)
    odata_only: Mapping[str, str] = field(default_factory=dict)
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
    def feed_element(self) -> str:
        """The SyncFeed entity element and ``category`` term (``fractieZetelPersoon``)."""
        return property_name(self.name)

    @property
    def feed_category(self) -> str:
        """The SyncFeed ``category`` of the ``Feed`` request (the type name, ``FractieZetelPersoon``)."""
        return self.name

    def feed_field(self, api_name: str) -> str:
        """The SyncFeed name of property ``api_name`` (see :attr:`feed_names`)."""
        if api_name in self.feed_names:
            return self.feed_names[api_name]
        return FEED_ATTRIBUTES.get(api_name) or property_name(api_name)

    @property
    def feed_columns(self) -> tuple[tuple[str, str, KindSpec], ...]:
        """``(SyncFeed name, API name, kind row)`` per stored property the SyncFeed carries: what a
        SyncFeed load maps back to the API's canonical names (timestamps and :attr:`odata_only` left out)."""
        return tuple(
            (self.feed_field(api), api, spec)
            for api, _, spec in self.columns
            if api not in _TIMESTAMPS and api not in self.odata_only
        )

    @property
    def feed_refs(self) -> Mapping[str, Relationship]:
        """SyncFeed ref element -> the relationship it gives (``besluit`` -> ``VOTE_ON``)."""
        return MappingProxyType({r.feed_name: r for r in self.relationships})

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
# The table: one entry per SyncFeed type (tk-api/SYNCFEED.md section 2). Property lists follow the v4/2.0
# $metadata (include/tk_replay/data/motiematcher_odata_v4_2.0_metadata.xml), kinds its EDM types, except
# that a DateTimeOffset the SyncFeed XSD declares an xs:date is a DAY. Relationships follow section 4:
# the entity whose SyncFeed element holds the ref owns the edge. DocumentPublicatie and
# DocumentPublicatieMetadata exist only in OData: they are not loaded.
# --------------------------------------------------------------------------------------------------


def _actor(
    name: str,
    loader: str,
    subject: str,
    subject_type: str,
    doc: str,
    prefix: str,
    properties: Mapping[str, Kind],
) -> Entity:
    """ZaakActor, DocumentActor, ActiviteitActor: a person, party or committee in a role on a subject."""
    return Entity(
        name=name,
        loader=loader,
        doc=doc,
        properties=properties,
        relationships=(
            Relationship(
                subject_type,
                subject,
                foreign_key=f"{subject}_Id",
                doc=f"the {subject.lower()} this actor takes part in",
            ),
            Relationship(
                f"{prefix}_ACTOR_PERSON",
                "Persoon",
                foreign_key="Persoon_Id",
                doc="the member or person who is the actor",
            ),
            Relationship(
                f"{prefix}_ACTOR_PARTY",
                "Fractie",
                foreign_key="Fractie_Id",
                doc="the party that is the actor, or the actor's party",
            ),
            Relationship(
                f"{prefix}_ACTOR_COMMITTEE",
                "Commissie",
                foreign_key="Commissie_Id",
                doc="the committee that is the actor",
            ),
        ),
    )


def _of_persoon(
    name: str, loader: str, rel: str, doc: str, rel_doc: str, properties: Mapping[str, Kind], **kwargs: Any
) -> Entity:
    """A fact about one person (contact, gift, career, side job, education, trip)."""
    key = kwargs.pop("foreign_key", "Persoon_Id")
    return Entity(
        name=name,
        loader=loader,
        doc=doc,
        properties=properties,
        relationships=(Relationship(rel, "Persoon", foreign_key=key, fk_navigation="Persoon", doc=rel_doc),),
        **kwargs,
    )


def _zetel_bezetting(
    name: str, loader: str, seat: str, seat_rel: str, other: str, other_rel: str, doc: str, other_doc: str
) -> Entity:
    """Who (a person) or what (a vacancy for a party) fills a committee or party seat, from when to when."""
    seat_fk = f"{seat}_Id"
    rels = [Relationship(seat_rel, seat, foreign_key=seat_fk, doc=f"the seat ({seat}) this fills")]
    if other:
        rels.append(Relationship(other_rel, other, foreign_key=f"{other}_Id", doc=other_doc))
    return Entity(
        name=name,
        loader=loader,
        doc=doc,
        properties={"Functie": T, "Van": DAY, "TotEnMet": DAY},
        relationships=tuple(rels),
    )


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
                    Relationship("ON_AGENDA_ITEM", "Agendapunt", navigation="Agendapunt",
                                 doc="the case is on this agenda item (m:n)"),
                    Relationship("DISCUSSED_IN", "Activiteit", navigation="Activiteit",
                                 doc="an activity about the case (m:n; a manual, content-based link, "
                                     "API issue #49)"),
                    Relationship("IN_DOSSIER", "Kamerstukdossier", navigation="Kamerstukdossier",
                                 doc="the parliamentary file of the case"),
                    Relationship("RELATED_FROM_CASE", "Zaak", navigation="GerelateerdVanuit",
                                 inverse="GerelateerdNaar", doc="a case this one is related from (m:n)"),
                    Relationship("REPLACES_CASE", "Zaak", navigation="VervangenVanuit",
                                 inverse="VervangenDoor", doc="a case this one replaces (m:n)"),
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
                    Relationship("FOR_CASE", "Zaak", navigation="Zaak",
                                 doc="the document belongs to this case (m:n)"),
                    Relationship("DOCUMENT_IN_DOSSIER", "Kamerstukdossier", navigation="Kamerstukdossier",
                                 doc="the parliamentary file the document is part of"),
                    Relationship("CURRENT_VERSION", "DocumentVersie", foreign_key="HuidigeDocumentVersie_Id",
                                 doc="the current version of the document"),
                    Relationship("HAS_SOURCE_DOCUMENT", "Document", navigation="BronDocument",
                                 inverse="BijlageDocument",
                                 doc="the document this one is an annex of (m:n)"),
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
                relationships=(
                    Relationship("LED_BY_COMMITTEE", "Commissie", foreign_key="Voortouwcommissie_Id",
                                 doc="the committee in the lead (voortouwcommissie)"),
                    Relationship("CONTINUES", "Activiteit", navigation="VoortgezetVanuit",
                                 inverse="VoortgezetIn", feed_ref="voortgezetVanuit",
                                 doc="the activity this one continues"),
                    Relationship("REPLACES_ACTIVITY", "Activiteit", navigation="VervangenVanuit",
                                 inverse="VervangenDoor", doc="the activity this one replaces"),
                ),
                feed_names={"VRSNummer": "vrsNummer"},
            ),
            Entity(
                name="Verslag",
                loader="load_verslagen",
                doc="A (VLOS) report of a sitting (the XML file is at `Verslag(<id>)/resource`).",
                properties={"Soort": T, "Status": T, "ContentType": T, "ContentLength": N},
                relationships=(
                    Relationship("REPORT_OF", "Vergadering", foreign_key="Vergadering_Id",
                                 doc="the sitting this is the report of"),
                ),
            ),
            _actor("ActiviteitActor", "load_activiteit_actoren", "Activiteit", "ACTOR_OF_ACTIVITY",
                   "A person, party or committee taking part in an activity (speaker, participant…).",
                   "ACTIVITY", {"ActorNaam": T, "ActorFractie": T, "Relatie": T, "Volgorde": N,
                                "Functie": T, "Spreektijd": T, "SidActor": T}),
            Entity(
                name="Besluit",
                loader="load_besluiten",
                doc="A decision taken on an agenda item (a vote's outcome, a procedure…).",
                properties={
                    "StemmingsSoort": T, "BesluitSoort": T, "BesluitTekst": T, "Opmerking": T,
                    "Status": T, "AgendapuntZaakBesluitVolgorde": N,
                },
                relationships=(
                    Relationship("TAKEN_AT", "Agendapunt", foreign_key="Agendapunt_Id",
                                 doc="the agenda item the decision was taken at"),
                    Relationship("DECIDES_ON", "Zaak", navigation="Zaak", doc="the cases decided on (m:n)"),
                ),
            ),
            Entity(
                name="Commissie",
                loader="load_commissies",
                doc="A parliamentary committee.",
                properties={
                    "Nummer": N, "Soort": T, "Afkorting": T, "NaamNL": T, "NaamEN": T, "NaamWebNL": T,
                    "NaamWebEN": T, "Inhoudsopgave": T, "DatumActief": DAY, "DatumInactief": DAY,
                },
                feed_names={"NaamNL": "naamNl", "NaamEN": "naamEn", "NaamWebNL": "naamWebNl",
                            "NaamWebEN": "naamWebEn"},
            ),
            Entity(
                name="CommissieContactinformatie",
                loader="load_commissie_contactinformaties",
                doc="A contact detail (address, phone, e-mail…) of a committee.",
                properties={"Soort": T, "Waarde": T},
                relationships=(
                    Relationship("CONTACT_OF_COMMITTEE", "Commissie", foreign_key="Commissie_Id",
                                 doc="the committee this contact detail is of"),
                ),
                feed_ignored={"gewicht": "not in the OData $metadata of CommissieContactinformatie: storing "
                                         "it would make the two sources differ"},
            ),
            Entity(
                name="CommissieZetel",
                loader="load_commissie_zetels",
                doc="A seat on a committee; who fills it, from when to when, hangs off it.",
                properties={"Gewicht": N},
                relationships=(
                    Relationship("SEAT_OF_COMMITTEE", "Commissie", foreign_key="Commissie_Id",
                                 doc="the committee the seat belongs to"),
                ),
            ),
            _zetel_bezetting("CommissieZetelVastPersoon", "load_commissie_zetel_vast_personen",
                             "CommissieZetel", "OCCUPIES_COMMITTEE_SEAT", "Persoon", "COMMITTEE_MEMBER",
                             "A member holding a committee seat (chair, member…) for a period.",
                             "the person holding the seat"),
            _zetel_bezetting("CommissieZetelVastVacature", "load_commissie_zetel_vast_vacatures",
                             "CommissieZetel", "VACANCY_OF_COMMITTEE_SEAT", "Fractie", "VACANCY_FOR_PARTY",
                             "A vacant committee seat, reserved for a party, for a period.",
                             "the party the vacant seat is reserved for"),
            _zetel_bezetting("CommissieZetelVervangerPersoon", "load_commissie_zetel_vervanger_personen",
                             "CommissieZetel", "SUBSTITUTES_ON_COMMITTEE_SEAT", "Persoon",
                             "COMMITTEE_SUBSTITUTE",
                             "A member who is the substitute on a committee seat for a period.",
                             "the substitute member"),
            _zetel_bezetting("CommissieZetelVervangerVacature", "load_commissie_zetel_vervanger_vacatures",
                             "CommissieZetel", "SUBSTITUTE_VACANCY_OF_COMMITTEE_SEAT", "Fractie",
                             "SUBSTITUTE_VACANCY_FOR_PARTY",
                             "A vacant substitute place on a committee seat, reserved for a party.",
                             "the party the vacant substitute place is reserved for"),
            _actor("DocumentActor", "load_document_actoren", "Document", "ACTOR_OF_DOCUMENT",
                   "A person, party or committee in a role on a document (submitter, co-signer, addressee…).",
                   "DOCUMENT", {"ActorNaam": T, "ActorFractie": T, "Functie": T, "Relatie": T,
                                "SidActor": T}),
            Entity(
                name="DocumentVersie",
                loader="load_document_versies",
                doc="A version of a document (its file's size and extension).",
                properties={
                    "Status": T, "Versienummer": N, "Bestandsgrootte": N, "Extensie": T, "Datum": DT,
                    "ExterneIdentifier": T,
                },
                relationships=(
                    Relationship("VERSION_OF", "Document", foreign_key="Document_Id",
                                 doc="the document this is a version of"),
                ),
                feed_names={"ExterneIdentifier": "externeidentifier"},
            ),
            Entity(
                name="Fractie",
                loader="load_fracties",
                doc="A parliamentary party (group); its logo is at `Fractie(<id>)/resource`.",
                properties={
                    "Nummer": N, "Afkorting": T, "NaamNL": T, "NaamEN": T, "AantalZetels": N,
                    "AantalStemmen": N, "DatumActief": DAY, "DatumInactief": DAY, "ContentType": T,
                    "ContentLength": N,
                },
                feed_names={"NaamNL": "naamNl", "NaamEN": "naamEn"},
            ),
            Entity(
                name="FractieZetel",
                loader="load_fractie_zetels",
                doc="A seat of a party; who fills it, from when to when, hangs off it.",
                properties={"Gewicht": N},
                relationships=(
                    Relationship("SEAT_OF_PARTY", "Fractie", foreign_key="Fractie_Id",
                                 doc="the party the seat belongs to"),
                ),
            ),
            _zetel_bezetting("FractieZetelPersoon", "load_fractie_zetel_personen", "FractieZetel",
                             "OCCUPIES_PARTY_SEAT", "Persoon", "PARTY_MEMBER",
                             "A member holding a party seat (member, chair…) for a period.",
                             "the person holding the seat"),
            _zetel_bezetting("FractieZetelVacature", "load_fractie_zetel_vacatures", "FractieZetel",
                             "VACANCY_OF_PARTY_SEAT", "", "",
                             "A vacant party seat for a period.", ""),
            Entity(
                name="Kamerstukdossier",
                loader="load_kamerstukdossiers",
                doc="A parliamentary file (dossier) of documents and cases.",
                properties={
                    "Titel": T, "Citeertitel": T, "Alias": T, "Nummer": N, "Toevoeging": T,
                    "HoogsteVolgnummer": N, "Afgesloten": B, "Kamer": T,
                },
            ),
            Entity(
                name="Persoon",
                loader="load_personen",
                doc="A person: member of parliament, minister…; the photo is at `Persoon(<id>)/resource`.",
                properties={
                    "Nummer": N, "Titels": T, "Initialen": T, "Tussenvoegsel": T, "Achternaam": T,
                    "Voornamen": T, "Roepnaam": T, "Geslacht": T, "Functie": T, "Geboortedatum": D,
                    "Geboorteplaats": T, "Geboorteland": T, "Overlijdensdatum": D, "Overlijdensplaats": T,
                    "Woonplaats": T, "Land": T, "ContentType": T, "ContentLength": N, "Fractielabel": T,
                },
            ),
            _of_persoon("PersoonContactinformatie", "load_persoon_contactinformaties", "CONTACT_OF_PERSON",
                        "A contact detail of a person.", "the person this contact detail is of",
                        {"Soort": T, "Waarde": T, "Gewicht": N}),
            _of_persoon("PersoonGeschenk", "load_persoon_geschenken", "GIFT_TO",
                        "A gift a member declared.", "the member who received the gift",
                        {"Omschrijving": T, "Datum": DAY, "Gewicht": N}),
            _of_persoon("PersoonLoopbaan", "load_persoon_loopbanen", "CAREER_OF",
                        "A position in a person's career.", "the person whose career this is",
                        {"Functie": T, "Werkgever": T, "OmschrijvingNl": T, "OmschrijvingEn": T,
                         "Plaats": T, "Van": T, "TotEnMet": T, "Gewicht": N}),
            _of_persoon("PersoonNevenfunctie", "load_persoon_nevenfuncties", "SIDE_JOB_OF",
                        "A side job (nevenfunctie) a member declared.", "the member with the side job",
                        {"Omschrijving": T, "PeriodeVan": T, "PeriodeTotEnMet": T, "IsActief": B,
                         "VergoedingSoort": T, "VergoedingToelichting": T, "Gewicht": N},
                        foreign_key="PersoonId",
                        feed_names={"PeriodeVan": "periode/van", "PeriodeTotEnMet": "periode/totEnMet",
                                    "VergoedingSoort": "vergoeding/soort",
                                    "VergoedingToelichting": "vergoeding/toelichting"}),
            Entity(
                name="PersoonNevenfunctieInkomsten",
                loader="load_persoon_nevenfunctie_inkomsten",
                doc="The income of a side job in one year.",
                properties={
                    "Jaar": T, "BedragSoort": T, "BedragVoorvoegsel": T, "BedragValuta": T, "Bedrag": DEC,
                    "BedragAchtervoegsel": T, "Frequentie": T, "FrequentieBeschrijving": T, "Opmerking": T,
                },
                relationships=(
                    Relationship("INCOME_OF", "PersoonNevenfunctie", foreign_key="Nevenfunctie_Id",
                                 fk_navigation="PersoonNevenfunctie", doc="the side job the income is of"),
                ),
            ),
            _of_persoon("PersoonOnderwijs", "load_persoon_onderwijs", "EDUCATION_OF",
                        "A person's education.", "the person who followed it",
                        {"OpleidingNl": T, "OpleidingEn": T, "Instelling": T, "Plaats": T, "Van": T,
                         "TotEnMet": T, "Gewicht": N}),
            _of_persoon("PersoonReis", "load_persoon_reizen", "TRIP_OF",
                        "A trip a member declared (paid by a third party).", "the member who travelled",
                        {"Doel": T, "Bestemming": T, "Van": T, "TotEnMet": T, "BetaaldDoor": T,
                         "Gewicht": N}),
            Entity(
                name="Reservering",
                loader="load_reserveringen",
                doc="A room booking for an activity.",
                properties={"Nummer": T, "StatusCode": T, "StatusNaam": T, "ActiviteitNummer": T},
                relationships=(
                    Relationship("RESERVED_FOR", "Activiteit", navigation="Activiteit",
                                 doc="the activity the room is booked for"),
                    Relationship("RESERVES_ROOM", "Zaal", navigation="Zaal", doc="the room booked"),
                ),
            ),
            Entity(
                name="Stemming",
                loader="load_stemmingen",
                doc="A vote on a decision: a party's (with `fractieGrootte`) or, in a roll call, a member's.",
                properties={
                    "Soort": T, "FractieGrootte": N, "ActorNaam": T, "ActorFractie": T, "Vergissing": B,
                    "SidActorLid": T, "SidActorFractie": T,
                },
                relationships=(
                    Relationship("VOTE_ON", "Besluit", foreign_key="Besluit_Id", doc="the decision voted on"),
                    Relationship("VOTED_BY_MEMBER", "Persoon", foreign_key="Persoon_Id",
                                 doc="the member who voted (roll-call votes only)"),
                    Relationship("VOTED_BY_PARTY", "Fractie", foreign_key="Fractie_Id",
                                 doc="the party that voted, or the member's party"),
                ),
            ),
            Entity(
                name="Toezegging",
                loader="load_toezeggingen",
                doc="A promise a minister made to parliament, and whether it is kept.",
                properties={
                    "Aanmaakdatum": DT, "Nummer": T, "ActiviteitNummer": T, "Naam": T, "Achternaam": T,
                    "Initialen": T, "Voornaam": T, "Achtervoegsel": T, "Titulatuur": T, "Functie": T,
                    "Status": T, "DatumNakoming": DT, "KamerbriefNakoming": T, "Ministerie": T, "Tekst": T,
                    "Tussenvoegsel": T,
                },
                relationships=(
                    Relationship("PROMISED_TO_PARTY", "Fractie", navigation="ToegezegdAanFractie",
                                 inverse="Toezegging", doc="the party the promise was made to"),
                    Relationship("PROMISED_TO_PERSON", "Persoon", navigation="ToegezegdAanPersoon",
                                 inverse="Toezegging", doc="the member the promise was made to"),
                    Relationship("PROMISED_AT", "Activiteit", navigation="Activiteit",
                                 doc="the activity (debate) where the promise was made"),
                    Relationship("REPEATS", "Toezegging", navigation="IsHerhalingVan",
                                 inverse="IsHerhaaldDoor", doc="an earlier promise this one repeats (m:n)"),
                    Relationship("SUPPLEMENTS", "Toezegging", navigation="IsAanvullingOp",
                                 inverse="IsAangevuldVanuit",
                                 doc="an earlier promise this one supplements (m:n)"),
                    Relationship("AMENDS", "Toezegging", navigation="IsWijzigingVan",
                                 inverse="IsGewijzigdDoor", doc="an earlier promise this one amends (m:n)"),
                ),
            ),
            _actor("ZaakActor", "load_zaak_actoren", "Zaak", "ACTOR_OF_CASE",
                   "A person, party or committee in a role on a case (submitter, co-signer, rapporteur…).",
                   "CASE", {"ActorNaam": T, "ActorFractie": T, "ActorAfkorting": T, "Functie": T,
                            "Relatie": T, "SidActor": T}),
            Entity(
                name="Zaal",
                loader="load_zalen",
                doc="A meeting room.",
                properties={"Naam": T, "SysCode": N},
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
