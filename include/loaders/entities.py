"""The entity table: one declarative entry per TK entity set the loaders write into Neo4j.

Everything the loop, the writer and the metadata check need to know about an entity lives here and
nowhere else: its entity set and label, its scalar properties with their kinds, and the relationships
it *owns* (writes and replaces), from a foreign key or from a many-to-many navigation. Adding a sixth
entity is one more :class:`Entity` in :data:`ENTITIES`.

Naming rules (``docs/graph-model.md``):

* label = entity set name (``Zaak``); key property ``id`` = the API ``Id``;
* property = API name with its first letter lower-cased (``Nummer`` -> ``nummer``,
  ``ApiGewijzigdOp`` -> ``apiGewijzigdOp``);
* relationship types are UPPER_SNAKE English, written from the owning entity *outwards*:
  ``(owner)-[:TYPE]->(target)``. Each type is owned by exactly one entity, so one loader, and only that
  loader, adds and removes edges of that type.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from types import MappingProxyType
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the API client is imported only where the metadata check runs
    from include.loaders.api import EntityRequirement

KEY = "Id"
"""The API key of every entity set (``Edm.Guid``)."""

TOMBSTONE_FLAG = "Verwijderd"
"""True on a soft-deleted row; every other field but ``Id`` and the two timestamps is then null."""

WATERMARK = "ApiGewijzigdOp"
"""The property incremental windows ``[start, end)`` filter on."""


class Kind(Enum):
    """How an API value becomes a Neo4j property value."""

    TEXT = "text"  # Edm.String: as is
    INT = "int"  # Edm.Int32: as is
    INT_OPT = "int_opt"  # Edm.Int32 where -1 means "no value" (Volgnummer): -1 -> null
    BOOL = "bool"  # Edm.Boolean: as is
    DATETIME = "datetime"  # Edm.DateTimeOffset: Neo4j DATETIME with its offset; 0001-01-01 -> null


# Short names for the table below.
T, N, N_OPT, B, DT = Kind.TEXT, Kind.INT, Kind.INT_OPT, Kind.BOOL, Kind.DATETIME

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
        properties: API property name -> :class:`Kind`, the scalars stored on the node (not ``Id``,
            not ``Verwijderd``, not foreign keys; the two timestamps are added for every entity).
        relationships: the edge types this entity owns.
    """

    name: str
    loader: str
    properties: Mapping[str, Kind]
    relationships: tuple[Relationship, ...] = ()
    doc: str = ""
    _all_properties: Mapping[str, Kind] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        props = dict(self.properties)
        props.update(_TIMESTAMPS)
        for reserved in (KEY, TOMBSTONE_FLAG):
            if reserved in props:
                raise ValueError(f"Entity {self.name}: {reserved!r} is implicit, do not list it.")
        object.__setattr__(self, "_all_properties", MappingProxyType(props))

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

    def requirement(self) -> EntityRequirement:
        """What the live ``$metadata`` must offer for this entity (for ``TKClient.check_metadata``)."""
        from include.loaders.api import EntityRequirement

        return EntityRequirement(properties=self.select, navigations=self.navigations)


# --------------------------------------------------------------------------------------------------
# The table. Property lists follow the v4/2.0 $metadata (tk-api/samples/…metadata.xml); kinds follow
# its EDM types. Foreign keys that point outside the graph (Voortouwcommissie_Id,
# HuidigeDocumentVersie_Id) are not loaded: their targets are not entities of this graph (yet).
# --------------------------------------------------------------------------------------------------

# fmt: off
ENTITIES: Mapping[str, Entity] = MappingProxyType(
    {
        e.name: e
        for e in (
            Entity(
                name="Zaak",
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
                                 doc="the documents of the case"),
                    Relationship("ON_AGENDA_ITEM", "Agendapunt", navigation="Agendapunt",
                                 doc="the case is on this agenda item"),
                    Relationship("DISCUSSED_IN", "Activiteit", navigation="Activiteit",
                                 doc="an activity about the case (a manual, content-based link, #49)"),
                ),
            ),
            Entity(
                name="Document",
                loader="load_documents",
                doc="A parliamentary document; the file itself is at Document(<id>)/resource.",
                properties={
                    "Soort": T, "DocumentNummer": T, "Titel": T, "Onderwerp": T, "Datum": DT,
                    "Vergaderjaar": T, "Kamer": N, "Volgnummer": N_OPT, "Citeertitel": T, "Alias": T,
                    "DatumRegistratie": DT, "DatumOntvangst": DT, "Aanhangselnummer": T,
                    "KenmerkAfzender": T, "Organisatie": T, "ContentType": T, "ContentLength": N,
                },
                relationships=(
                    Relationship("FOR_ACTIVITY", "Activiteit", navigation="Activiteit",
                                 doc="the document belongs to this activity"),
                    Relationship("FOR_AGENDA_ITEM", "Agendapunt", navigation="Agendapunt",
                                 doc="the document belongs to this agenda item"),
                ),
            ),
            Entity(
                name="Vergadering",
                loader="load_vergaderingen",
                doc="A sitting. The API has no link to Activiteit (#95); its reports (Verslag) are linked.",
                properties={
                    "Soort": T, "Titel": T, "Zaal": T, "Vergaderjaar": T, "VergaderingNummer": N,
                    "Datum": DT, "Aanvangstijd": DT, "Sluiting": DT, "Kamer": T,
                },
                relationships=(
                    Relationship("HAS_REPORT", "Verslag", navigation="Verslag",
                                 doc="the (VLOS) reports of the sitting"),
                ),
            ),
            Entity(
                name="Agendapunt",
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
                doc="A (VLOS) report of a Vergadering; its edge HAS_REPORT is owned by Vergadering.",
                properties={"Soort": T, "Status": T, "ContentType": T, "ContentLength": N},
            ),
        )
    }
)
# fmt: on
"""Every entity the loaders know, by name."""

CORE_ENTITIES: tuple[str, ...] = ("Zaak", "Document", "Vergadering", "Agendapunt", "Activiteit")
"""The five entities of the mission, in the DAG's default order (any order gives the same graph)."""


def get_entity(name: str | Entity) -> Entity:
    """The entry for ``name`` (an entity set name or a loader name); a clear error otherwise."""
    if isinstance(name, Entity):
        return name
    if name in ENTITIES:
        return ENTITIES[name]
    for e in ENTITIES.values():
        if name == e.loader:
            return e
    raise KeyError(
        f"Unknown entity {name!r}: known are {', '.join(ENTITIES)} "
        f"(or their loaders {', '.join(e.loader for e in ENTITIES.values())})."
    )


def all_labels(entities: Iterable[Entity] | None = None) -> list[str]:
    """Every label the given entities write, their relationship targets included (for constraints)."""
    entities = list(ENTITIES.values()) if entities is None else list(entities)
    labels: set[str] = set()
    for e in entities:
        labels.add(e.label)
        labels |= e.target_labels
    return sorted(labels)


def requirements(entities: Iterable[Entity | str] | None = None) -> dict[str, EntityRequirement]:
    """``{entity_set: EntityRequirement}`` for ``TKClient.check_metadata``."""
    chosen = [get_entity(e) for e in (CORE_ENTITIES if entities is None else entities)]
    return {e.entity_set: e.requirement() for e in chosen}


def _check_table(entities: Mapping[str, Entity]) -> None:
    """Each relationship type owned by exactly one entity (the REPLACE semantics depend on it)."""
    owner: dict[str, str] = {}
    for e in entities.values():
        for r in e.relationships:
            if r.type in owner:
                raise ValueError(f"Relationship type {r.type} is owned by both {owner[r.type]} and {e.name}.")
            owner[r.type] = e.name


_check_table(ENTITIES)
