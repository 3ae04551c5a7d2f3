"""The served model: each entity's stored scalar properties as the live ``$metadata`` declares them.

The entity table (:mod:`include.loaders.entities`) declares what a load relies on: the entity set, the
key, the tombstone flag, the watermark and the relationships (foreign keys and navigations); the metadata
check stops a run when one of those is missing (:meth:`Entity.requirement`). The *scalar* properties of
each node follow the ``$metadata`` the server publishes, so an attribute a new API version renamed,
dropped or added neither crashes a load nor silently vanishes:

* :func:`served_entity` turns a table entry into the :class:`~include.loaders.entities.Entity` the loaders
  write: every served scalar property of the entity type except the key, ``Verwijderd``, the foreign keys
  of the table's relationships and the other ``Edm.Guid`` properties (foreign keys to entities outside
  the graph: reported like any other property, not stored). Each has the kind of its EDM type
  (:data:`~include.loaders.entities.EDM_KINDS`), or the table's kind where the table declares the
  property and its EDM type agrees (``INT_OPT``, ``DATE``). Its name is the canonical (v4/2.0) name where
  the profile knows the rename (v5 ``Document.Nummer`` -> ``DocumentNummer``), else the served name; the
  graph property follows from it by the naming rule of ``docs/graph-model.md``. The client ``$select``s
  exactly these (never a dropped one) and maps the profile's renames back.
* :func:`model_report` says, per entity, what the served model lacks, renames, adds or types differently
  against the v4/2.0 reference (:func:`~include.loaders.api_metadata.reference_schema`): the setup task
  logs it and keeps it in the checkpoint run (``api_model``), ``tk-checkpoint show`` and the dashboard
  show it.

A served name with no known rename that the rename hints of the metadata check pair with a missing
reference property (same EDM type) is reported as a *likely* rename, and stored under the served name:
a guess never decides where data goes.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from include.loaders.api_metadata import EntityTypeInfo, ODataSchema, likely_renames, reference_schema
from include.loaders.api_profiles import ApiProfile
from include.loaders.entities import EDM_KINDS, GUID, KEY, TOMBSTONE_FLAG, Entity, Kind, property_name

log = logging.getLogger(__name__)

REFERENCE_PROFILE = "v4/2.0"
"""The version the reference model (and the entity table's canonical names) comes from."""


@dataclass(frozen=True)
class EntityModel:
    """How one entity's served scalar properties differ from the v4/2.0 reference.

    Names are canonical (v4/2.0) on the reference side and as served on the other.

    Attributes:
        entity: the entity set (``Document``).
        stored: graph property -> served name, every scalar the loader writes.
        missing: reference properties the server does not serve (not stored: dropped, or renamed beyond
            recognition).
        renamed: reference name -> ``{"served": name, "known": bool}``: ``known`` when the profile
            declares the rename (stored under the canonical name), else a likely rename found by the
            rename hints (stored under the served name).
        new: served properties the reference has not (served name -> EDM type); stored when their EDM
            type has a kind.
        type_changed: name -> ``{"reference": EDM type, "served": EDM type}``.
        skipped: served properties whose EDM type has no kind (served name -> EDM type): not stored.
    """

    entity: str
    stored: Mapping[str, str] = field(default_factory=dict)
    missing: tuple[str, ...] = ()
    renamed: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    new: Mapping[str, str] = field(default_factory=dict)
    type_changed: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    skipped: Mapping[str, str] = field(default_factory=dict)

    @property
    def matches_reference(self) -> bool:
        """True when the served scalars are the reference's, by name and type (the rule ``tk-checkpoint
        show`` and the dashboard apply to the stored report)."""
        from tk_checkpoint.present import model_entity_differs

        return not model_entity_differs(self.to_dict())

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form (the checkpoint run's ``api_model.entities[name]``)."""
        return {
            "stored": dict(self.stored),
            "missing": list(self.missing),
            "renamed": {k: dict(v) for k, v in self.renamed.items()},
            "new": dict(self.new),
            "type_changed": {k: dict(v) for k, v in self.type_changed.items()},
            "skipped": dict(self.skipped),
        }

    def line(self) -> str:
        """One log line: ``Document: 1 missing, not stored (Titel); 1 renamed (DocumentNummer -> Nummer);
        18 stored`` (the text ``tk-checkpoint show`` prints for the same report)."""
        from tk_checkpoint.present import format_model_entity

        return f"{self.entity}: {format_model_entity(self.to_dict())}"


@dataclass(frozen=True)
class ModelReport:
    """The served model of one service against the v4/2.0 reference, per entity.

    Attributes:
        profile: the API profile that answered (``v5``).
        service_root: the service root, without credentials.
        entities: entity set -> :class:`EntityModel`.
    """

    profile: str
    service_root: str
    entities: Mapping[str, EntityModel]

    @property
    def matches_reference(self) -> bool:
        return all(e.matches_reference for e in self.entities.values())

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form: what the checkpoint run keeps as ``api_model``."""
        return {
            "profile": self.profile,
            "service_root": self.service_root,
            "reference": REFERENCE_PROFILE,
            "entities": {name: e.to_dict() for name, e in self.entities.items()},
        }

    def log(self, logger: logging.Logger = log) -> None:
        """One line per entity: WARNING when it differs from the reference, INFO when not."""
        for e in self.entities.values():
            level = logging.INFO if e.matches_reference else logging.WARNING
            logger.log(level, "TK API %s (profile %s) model: %s", self.service_root, self.profile, e.line())


# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Served:
    """One entity's served scalars, worked out once for both :func:`served_entity` and the report."""

    properties: dict[str, Kind]  # stored name (canonical where a rename is known) -> kind
    model: EntityModel


def _structural(entity: Entity) -> set[str]:
    """Canonical names that are never scalars of the node: the key, the flag, the table's foreign keys."""
    return {KEY, TOMBSTONE_FLAG, *entity.foreign_keys}


def _served(
    entity: Entity, info: EntityTypeInfo, profile: ApiProfile, reference: EntityTypeInfo | None
) -> _Served:
    to_canonical = profile.to_canonical_map(info.name)
    structural = _structural(entity)
    # served name -> (canonical name or the served one, EDM type)
    served = {
        name: (to_canonical.get(name, name), edm)
        for name, edm in info.properties.items()
        if to_canonical.get(name, name) not in structural
    }
    if reference is not None:
        ref = {p: t for p, t in reference.properties.items() if p not in structural}
    else:  # an entry the reference does not know: the table is the reference
        ref = {p: k.edm for p, k in entity.all_properties.items()}
    by_canonical = {canonical: (name, edm) for name, (canonical, edm) in served.items()}
    missing = [p for p in ref if p not in by_canonical]
    unmatched = [name for name, (canonical, _) in served.items() if canonical not in ref]
    renamed: dict[str, dict[str, Any]] = {}
    for canonical, (name, _) in by_canonical.items():
        if canonical in ref and name != canonical:
            renamed[canonical] = {"served": name, "known": True}
    for canonical in missing:  # likely renames: the check's rename hints, between names of one EDM type
        candidates = [n for n in unmatched if served[n][1] == ref[canonical]]
        guess = likely_renames([canonical], candidates).get(canonical)
        if guess is not None:
            renamed[canonical] = {"served": guess, "known": False}
            unmatched.remove(guess)
    missing = [p for p in missing if p not in renamed]
    type_changed = {
        canonical: {"reference": ref[canonical], "served": edm}
        for canonical, (_, edm) in by_canonical.items()
        if canonical in ref and ref[canonical] != edm
    }
    properties: dict[str, Kind] = {}
    stored: dict[str, str] = {}
    skipped: dict[str, str] = {}
    for name, (canonical, edm) in served.items():
        if edm == GUID:  # a foreign key the table's relationships do not use: its target is not loaded
            continue
        declared = entity.all_properties.get(canonical)
        kind = declared if declared is not None and declared.edm == edm else EDM_KINDS.get(edm)
        if kind is None:
            skipped[name] = edm
            continue
        properties[canonical] = kind
        stored[property_name(canonical)] = name
    model = EntityModel(
        entity=entity.name,
        stored=stored,
        missing=tuple(missing),
        renamed=renamed,
        new={n: served[n][1] for n in unmatched},
        type_changed=type_changed,
        skipped=skipped,
    )
    return _Served(properties, model)


def _info(schema: ODataSchema, entity: Entity) -> EntityTypeInfo:
    info = schema.entity_sets.get(entity.entity_set)
    if info is None:
        raise ValueError(
            f"The served $metadata has no entity set {entity.entity_set!r}; run the metadata check "
            "(TKClient.check_metadata) first, it names what is missing."
        )
    return info


def served_entity(entity: Entity, schema: ODataSchema, profile: ApiProfile) -> Entity:
    """``entity`` with the scalar properties the served ``schema`` declares (see the module docstring);
    its name, loader, relationships and key stay the table's.

    Raises ValueError when ``schema`` lacks the entity set (the metadata check stops a run before that).
    """
    info = _info(schema, entity)
    served = _served(entity, info, profile, reference_schema().entity_sets.get(entity.entity_set))
    return Entity(
        name=entity.name,
        loader=entity.loader,
        properties=served.properties,
        relationships=entity.relationships,
        doc=entity.doc,
        core=entity.core,
        implicit_timestamps=False,
    )


def served_entity_of(client: Any, entity: Entity) -> Entity:
    """:func:`served_entity` for the service ``client`` (a ``TKClient``) talks to: its ``$metadata``
    (fetched once per client) read with its profile."""
    return served_entity(entity, client.metadata(), client.profile)


def model_report(
    entities: Iterable[Entity], schema: ODataSchema, profile: ApiProfile, service_root: str = ""
) -> ModelReport:
    """How the served model of ``entities`` differs from the v4/2.0 reference (see :class:`EntityModel`).

    Entities whose set ``schema`` lacks are left out (the metadata check reports them, and stops the run).
    """
    reference = reference_schema()
    out: dict[str, EntityModel] = {}
    for entity in entities:
        info = schema.entity_sets.get(entity.entity_set)
        if info is not None:
            ref = reference.entity_sets.get(entity.entity_set)
            out[entity.name] = _served(entity, info, profile, ref).model
    return ModelReport(profile=profile.name, service_root=service_root, entities=out)
