"""What the replay server serves, derived from the entity table: ``$metadata`` and the link structure.

The server's model is the real v4/2.0 ``$metadata`` with the entity table laid over it
(:func:`table_metadata`): every entity of the table is declared with its properties, their EDM types
(the kind's row), its foreign keys and its navigations. For the table of ``include.loaders.entities``
the overlay changes nothing, so the real document is served byte for byte; a copy of the table with a
new entry (or a different kind) gets a ``$metadata`` that declares it.

How each relationship of the table is held in a dataset follows from that model
(:func:`derive_links`): a foreign key (``Agendapunt.Activiteit_Id``) is a column of its rows; a
collection navigation that is the reverse of a foreign key (``Vergadering.Verslag`` of
``Verslag.Vergadering_Id``) is served from that column; every other navigation (``Document.Zaak``) is a
many-to-many pair served from one link table (:class:`LinkSpec`, :func:`link_table_name`), so both sides
always agree; the relationship's ``inverse`` names the target's side where it is not named like the holder
(``Zaak.VervangenVanuit`` / ``Zaak.VervangenDoor``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from include.loaders.api_metadata import ODataSchema
from include.loaders.entities import GUID, KEY, TOMBSTONE_FLAG, Entity, Kind

_TYPE_RE = re.compile(r'<EntityType Name="([^"]+)"([^>]*)>(.*?)</EntityType>', re.S)
_PROP_RE = re.compile(r'<Property Name="([^"]+)" Type="([^"]+)"')
_NAV_RE = re.compile(r'<NavigationProperty Name="([^"]+)"')
_SET_RE = re.compile(r'<EntitySet Name="[^"]+" EntityType="[^"]*?\.?([^".]+)"')
_MINIMAL = {KEY: GUID, "GewijzigdOp": Kind.DATETIME.edm, "ApiGewijzigdOp": Kind.DATETIME.edm}


@dataclass(frozen=True)
class LinkSpec:
    """A many-to-many navigation pair served from one link table (named ``"<left>-<right>"``).

    ``left.left_nav`` lists the right-hand entities, ``right.right_nav`` the left-hand ones.
    """

    name: str
    left: str
    left_nav: str
    right: str
    right_nav: str


@dataclass(frozen=True)
class ForeignKeySpec:
    """A foreign key column: ``source.column`` holds the Id of one ``target`` row (or null)."""

    source: str
    column: str
    target: str


@dataclass
class _TypeWant:
    """What the table needs declared for one entity type."""

    properties: dict[str, str] = field(default_factory=dict)
    navigations: dict[str, str] = field(default_factory=dict)  # name -> Type attribute
    reverse: dict[str, str] = field(default_factory=dict)  # type it points back to -> Type attribute


def _wants(entities: Mapping[str, Entity], ns: str) -> dict[str, _TypeWant]:
    wants: dict[str, _TypeWant] = {}
    for e in entities.values():
        w = wants.setdefault(e.name, _TypeWant())
        w.properties.update({KEY: GUID, **{p: k.edm for p, k in e.all_properties.items()}})
        w.properties[TOMBSTONE_FLAG] = Kind.BOOL.edm
        for rel in e.relationships:
            target = wants.setdefault(rel.target, _TypeWant())
            if rel.foreign_key is not None:
                w.properties[rel.foreign_key] = GUID
                w.navigations[rel.key_navigation or ""] = f"{ns}.{rel.target}"
            else:
                w.navigations[rel.navigation or ""] = f"Collection({ns}.{rel.target})"
            # the other side navigates back (Activiteit.Agendapunt, Document.Zaak, Zaak.VervangenDoor)
            target.reverse[rel.inverse or e.name] = f"Collection({ns}.{e.name})"
    return wants


def _patch_type(body: str, want: _TypeWant) -> str:
    """``body`` of an existing EntityType with the wanted properties, types and navigations."""
    declared = dict(_PROP_RE.findall(body))
    added = []
    for prop, edm in want.properties.items():
        if prop not in declared:
            added.append(f'<Property Name="{prop}" Type="{edm}" />')
        elif declared[prop] != edm:
            old = f'<Property Name="{prop}" Type="{declared[prop]}"'
            body = body.replace(old, f'<Property Name="{prop}" Type="{edm}"')
    if added:  # after the last property (navigations follow properties in CSDL)
        last = body.rfind("<Property ")
        end = body.index("/>", last) + 2 if last >= 0 else body.index("</Key>") + len("</Key>")
        body = body[:end] + "".join(added) + body[end:]
    navs = set(_NAV_RE.findall(body))
    extra = [
        f'<NavigationProperty Name="{n}" Type="{t}" />' for n, t in want.navigations.items() if n not in navs
    ]
    for owner, typ in want.reverse.items():
        if typ not in body and owner not in navs:  # no navigation back to the owner yet
            extra.append(f'<NavigationProperty Name="{owner}" Type="{typ}" />')
    return body + "".join(extra)


def _new_type(name: str, want: _TypeWant) -> str:
    # a relationship target outside the table (a placeholder label) gets the properties of every set
    props = dict(want.properties or _MINIMAL)
    props.setdefault(TOMBSTONE_FLAG, Kind.BOOL.edm)
    body = f'<Key><PropertyRef Name="{KEY}" /></Key>'
    for prop, edm in props.items():
        nullable = ' Nullable="false"' if prop == KEY else ""
        body += f'<Property Name="{prop}" Type="{edm}"{nullable} />'
    body += "".join(f'<NavigationProperty Name="{n}" Type="{t}" />' for n, t in want.navigations.items())
    body += "".join(f'<NavigationProperty Name="{o}" Type="{t}" />' for o, t in want.reverse.items())
    return f'<EntityType Name="{name}">{body}</EntityType>'


def table_metadata(xml: str, entities: Mapping[str, Entity]) -> str:
    """``xml`` (a v4/2.0 ``$metadata``) declaring every entity of ``entities`` as the table says.

    Missing entity types, entity sets, properties and navigations are added; a property whose EDM type
    differs from its kind's is given the kind's type. When the document already agrees with the table
    it is returned unchanged.
    """
    m = re.search(r'<Schema Namespace="([^"]+)"', xml)
    ns = m.group(1) if m else "TK.DA.GGM.OData"
    wants = _wants(entities, ns)
    seen: set[str] = set()

    def patch(match: re.Match[str]) -> str:
        name, attrs, body = match.groups()
        want = wants.get(name)
        if want is None:
            return match.group(0)
        seen.add(name)
        return f'<EntityType Name="{name}"{attrs}>{_patch_type(body, want)}</EntityType>'

    out = _TYPE_RE.sub(patch, xml)
    new_types = "".join(_new_type(name, want) for name, want in wants.items() if name not in seen)
    if new_types:
        at = out.index("<EntityContainer")
        out = out[:at] + new_types + out[at:]
    have_sets = set(_SET_RE.findall(out))
    new_sets = "".join(
        f'<EntitySet Name="{name}" EntityType="{ns}.{name}" />' for name in wants if name not in have_sets
    )
    if new_sets:
        at = out.index("</EntityContainer>")
        out = out[:at] + new_sets + out[at:]
    return out


def reverse_fk(schema: ODataSchema, entity_set: str, nav: str) -> tuple[str, str] | None:
    """``(source set, FK column)`` when ``entity_set.nav`` is the collection side of a foreign key."""
    info = schema.entity_sets.get(entity_set)
    if info is None:
        return None
    target = info.navigations.get(nav)
    if nav not in info.collections or target not in schema.entity_sets:
        return None
    src = schema.entity_sets[target]
    for src_nav, src_target in src.navigations.items():
        if src_target == info.name and src_nav not in src.collections and f"{src_nav}_Id" in src.properties:
            return target, f"{src_nav}_Id"
    return None


def _back_navigation(schema: ODataSchema, owner: str, target: str) -> str:
    """The navigation of ``target`` that lists its ``owner`` entities (``Document.Zaak``)."""
    info = schema.entity_sets.get(target)
    if info is None:
        return owner
    back = [n for n, t in info.navigations.items() if t == owner and n in info.collections]
    return owner if owner in back or not back else back[0]


def link_table_name(holder: str, navigation: str, target: str) -> str:
    """The link table of ``holder.navigation`` -> ``target``: ``"<holder>-<target>"`` (``Document-Zaak``),
    or ``"<holder>.<navigation>-<target>"`` when the navigation is not named after its target (a holder
    may have several to one target: ``Zaak.VervangenVanuit-Zaak``, ``Zaak.GerelateerdVanuit-Zaak``)."""
    return f"{holder}-{target}" if navigation == target else f"{holder}.{navigation}-{target}"


def derive_links(
    entities: Mapping[str, Entity], schema: ODataSchema
) -> tuple[tuple[LinkSpec, ...], tuple[ForeignKeySpec, ...]]:
    """The link tables and foreign keys that hold the table's relationships (see the module docstring).

    Foreign keys come in table order of their source entity (the generator draws them in this order).
    """
    links: list[LinkSpec] = []
    fks: list[ForeignKeySpec] = []
    for e in entities.values():
        for rel in e.relationships:
            if rel.foreign_key is not None:
                fks.append(ForeignKeySpec(e.name, rel.foreign_key, rel.target))
                continue
            nav = rel.navigation or ""
            reverse = reverse_fk(schema, e.name, nav)
            if reverse is not None:
                fks.append(ForeignKeySpec(reverse[0], reverse[1], e.name))
            else:
                back = rel.inverse or _back_navigation(schema, e.name, rel.target)
                links.append(
                    LinkSpec(link_table_name(e.name, nav, rel.target), e.name, nav, rel.target, back)
                )
    order = {name: i for i, name in enumerate(entities)}
    unique = list(dict.fromkeys(fks))
    unique.sort(key=lambda fk: order.get(fk.source, len(order)))
    return tuple(links), tuple(unique)
