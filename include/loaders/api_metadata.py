"""The OData ``$metadata`` document: parsing and the check of what the loaders rely on."""

from __future__ import annotations

import difflib
import functools
import xml.etree.ElementTree as ET
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources

from include.loaders.api_profiles import ApiProfile

_EDM = "{http://docs.oasis-open.org/odata/ns/edm}"

REFERENCE_METADATA = ("include.tk_replay.data", "motiematcher_odata_v4_2.0_metadata.xml")
"""Package and file of the v4/2.0 reference: the real ``$metadata`` of the v4/2.0 API (Oct 2025), kept
with the samples. What a served model is compared against (missing, renamed, new)."""


@dataclass(frozen=True)
class EntityTypeInfo:
    """One entity type of the model.

    Attributes:
        name: the type's short name (``Zaak``).
        key: the key property names.
        properties: property name -> EDM type (``Edm.Guid``…), in document order.
        navigations: navigation name -> target type short name.
        collections: the navigation names that are collections (``Collection(…)``).
    """

    name: str
    key: tuple[str, ...]
    properties: Mapping[str, str]
    navigations: Mapping[str, str]
    collections: frozenset[str]


@dataclass(frozen=True)
class ODataSchema:
    """The parts of a ``$metadata`` document the loaders use: entity sets and their types."""

    entity_sets: Mapping[str, EntityTypeInfo]
    namespace: str = ""

    @classmethod
    def from_xml(cls, xml: str | bytes) -> ODataSchema:
        """Parse a CSDL (OData v4) ``$metadata`` document; ValueError when it is not one."""
        try:
            root = ET.fromstring(xml)  # noqa: S314 - our own server or the TK API, not user input
        except ET.ParseError as e:
            raise ValueError(f"$metadata is not well-formed XML: {e}") from e
        types: dict[str, EntityTypeInfo] = {}
        namespace = ""
        for schema in root.iter(f"{_EDM}Schema"):
            namespace = schema.get("Namespace", namespace)
            for et in schema.findall(f"{_EDM}EntityType"):
                name = et.get("Name", "")
                key = tuple(p.get("Name", "") for p in et.findall(f"{_EDM}Key/{_EDM}PropertyRef"))
                props = {p.get("Name", ""): p.get("Type", "") for p in et.findall(f"{_EDM}Property")}
                navs: dict[str, str] = {}
                colls: set[str] = set()
                for n in et.findall(f"{_EDM}NavigationProperty"):
                    typ = n.get("Type", "")
                    if typ.startswith("Collection("):
                        typ = typ[len("Collection(") : -1]
                        colls.add(n.get("Name", ""))
                    navs[n.get("Name", "")] = typ.rsplit(".", 1)[-1]
                types[name] = EntityTypeInfo(name, key, props, navs, frozenset(colls))
        sets: dict[str, EntityTypeInfo] = {}
        for es in root.iter(f"{_EDM}EntitySet"):
            type_name = es.get("EntityType", "").rsplit(".", 1)[-1]
            if type_name in types:
                sets[es.get("Name", "")] = types[type_name]
        if not sets:
            raise ValueError("$metadata declares no entity sets: is this an OData v4 CSDL document?")
        return cls(sets, namespace)


@dataclass(frozen=True)
class EntityRequirement:
    """What a loader needs of one entity set, in canonical (v4/2.0) names.

    Attributes:
        properties: properties (foreign keys included, e.g. ``Activiteit_Id``) that must exist.
        navigations: navigation properties that must exist (for ``$expand``).
        key: the key the loader uses as node identity.
        types: property -> the EDM type it must have (``Edm.DateTimeOffset``); a property not listed
            here is checked by name only. The entity table fills it from each property's kind.
    """

    properties: Sequence[str] = ()
    navigations: Sequence[str] = ()
    key: Sequence[str] = ("Id",)
    types: Mapping[str, str] = field(default_factory=dict)


@dataclass
class MetadataReport:
    """The outcome of :func:`check_requirements`: one line per problem."""

    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _score(missing: str, candidate: str) -> float:
    """How likely ``candidate`` is ``missing`` under a new name (1.0: only case or underscores differ)."""
    if missing.lower().replace("_", "") == candidate.lower().replace("_", ""):
        return 1.0
    if missing.endswith(candidate) or candidate.endswith(missing):
        return 0.9
    return difflib.SequenceMatcher(None, missing, candidate).ratio()


def likely_renames(
    missing: Sequence[str], available: Sequence[str], wanted: Collection[str] = ()
) -> dict[str, str]:
    """Missing name -> the served name it was most likely renamed to, pairing each missing name with at
    most one candidate of ``available`` that is not itself ``wanted`` (best scores first; none below 0.5).
    The metadata check's hints, the served model's report (:mod:`include.loaders.model`) and
    ``tk-api probe``'s "likely renames" use it."""
    candidates = [a for a in available if a not in wanted]
    scored = sorted(((_score(m, c), m, c) for m in missing for c in candidates), reverse=True)
    out: dict[str, str] = {}
    used: set[str] = set()
    for score, m, c in scored:
        if score >= 0.5 and m not in out and c not in used:
            out[m] = c
            used.add(c)
    return out


def _hints(missing: list[str], available: Sequence[str], wanted: set[str]) -> dict[str, str]:
    """Missing name -> ' (renamed to 'X'?)' for the names :func:`likely_renames` pairs."""
    return {m: f" (renamed to {c!r}?)" for m, c in likely_renames(missing, available, wanted).items()}


def check_requirements(
    schema: ODataSchema, requirements: Mapping[str, EntityRequirement], profile: ApiProfile
) -> MetadataReport:
    """Every missing or renamed entity set, key, property and navigation the loaders rely on, and every
    property whose EDM type is not the one required: what stops a run before loading. The entity table
    requires only what an edge or the load needs (``Entity.requirement``); every other scalar follows
    the served model (:mod:`include.loaders.model`), which reports differences instead.

    Requirements use canonical names; they are translated with ``profile`` before the lookup, and the
    messages give both names when they differ.
    """
    report = MetadataReport()
    for set_name, req in requirements.items():
        info = schema.entity_sets.get(set_name)
        if info is None:
            hint = _hints([set_name], list(schema.entity_sets), set(requirements)).get(set_name, "")
            report.problems.append(f"entity set {set_name!r} is missing{hint}")
            continue
        wanted_props = {profile.to_profile(info.name, p) for p in req.properties}

        def label(canonical: str, info: EntityTypeInfo = info) -> str:
            actual = profile.to_profile(info.name, canonical)
            return repr(canonical) if actual == canonical else f"{canonical!r} ({profile.name}: {actual!r})"

        key = tuple(profile.to_profile(info.name, k) for k in req.key)
        if tuple(info.key) != key:
            report.problems.append(f"{set_name}: key is {list(info.key)}, expected {list(key)}")
        missing = [p for p in req.properties if profile.to_profile(info.name, p) not in info.properties]
        served = [profile.to_profile(info.name, p) for p in missing]
        hints = _hints(served, list(info.properties), wanted_props)
        for prop in missing:
            hint = hints.get(profile.to_profile(info.name, prop), "")
            report.problems.append(f"{set_name}: property {label(prop)} is missing{hint}")
        for prop in req.properties:
            wanted = req.types.get(prop)
            served_type = info.properties.get(profile.to_profile(info.name, prop))
            if wanted is not None and served_type is not None and served_type != wanted:
                report.problems.append(
                    f"{set_name}: property {label(prop)} is {served_type} in $metadata, "
                    f"but the entity table expects {wanted}"
                )
        missing_navs = [n for n in req.navigations if n not in info.navigations]
        nav_hints = _hints(missing_navs, list(info.navigations), set(req.navigations))
        for nav in missing_navs:
            hint = nav_hints.get(nav, "")
            report.problems.append(f"{set_name}: navigation property {nav!r} is missing{hint}")
    return report


@functools.cache
def reference_schema() -> ODataSchema:
    """The v4/2.0 reference model (:data:`REFERENCE_METADATA`), parsed once."""
    package, name = REFERENCE_METADATA
    return ODataSchema.from_xml(resources.files(package).joinpath(name).read_bytes())
