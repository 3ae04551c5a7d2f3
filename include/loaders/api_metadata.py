"""The OData ``$metadata`` document: parsing and the check of what the loaders rely on."""

from __future__ import annotations

import difflib
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from include.loaders.api_profiles import ApiProfile

_EDM = "{http://docs.oasis-open.org/odata/ns/edm}"


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
    """

    properties: Sequence[str] = ()
    navigations: Sequence[str] = ()
    key: Sequence[str] = ("Id",)


@dataclass
class MetadataReport:
    """The outcome of :func:`check_requirements`: one line per problem."""

    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _hint(missing: str, available: Sequence[str], wanted: set[str]) -> str:
    """' (renamed to 'X'?)' when a not-required name looks like ``missing``."""
    candidates = [a for a in available if a not in wanted]
    close = difflib.get_close_matches(missing, candidates, n=1, cutoff=0.6)
    if not close:
        close = [a for a in candidates if a.lower().replace("_", "") == missing.lower().replace("_", "")]
    return f" (renamed to {close[0]!r}?)" if close else ""


def check_requirements(
    schema: ODataSchema, requirements: Mapping[str, EntityRequirement], profile: ApiProfile
) -> MetadataReport:
    """Every missing or renamed entity set, key, property and navigation the loaders rely on.

    Requirements use canonical names; they are translated with ``profile`` before the lookup, and the
    messages give both names when they differ.
    """
    report = MetadataReport()
    for set_name, req in requirements.items():
        info = schema.entity_sets.get(set_name)
        if info is None:
            hint = _hint(set_name, list(schema.entity_sets), set(requirements))
            report.problems.append(f"entity set {set_name!r} is missing{hint}")
            continue
        wanted_props = {profile.to_profile(info.name, p) for p in req.properties}

        def label(canonical: str, info: EntityTypeInfo = info) -> str:
            actual = profile.to_profile(info.name, canonical)
            return repr(canonical) if actual == canonical else f"{canonical!r} ({profile.name}: {actual!r})"

        key = tuple(profile.to_profile(info.name, k) for k in req.key)
        if tuple(info.key) != key:
            report.problems.append(f"{set_name}: key is {list(info.key)}, expected {list(key)}")
        for prop in req.properties:
            actual = profile.to_profile(info.name, prop)
            if actual not in info.properties:
                hint = _hint(actual, list(info.properties), wanted_props)
                report.problems.append(f"{set_name}: property {label(prop)} is missing{hint}")
        for nav in req.navigations:
            if nav not in info.navigations:
                hint = _hint(nav, list(info.navigations), set(req.navigations))
                report.problems.append(f"{set_name}: navigation property {nav!r} is missing{hint}")
    return report
