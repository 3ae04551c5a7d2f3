"""The entity table maps every SyncFeed type element by element (issue 11, deliverable 2).

The SyncFeed XSDs (``include/tk_replay/data/syncfeed-xsd``, copied unchanged from the TK's
OpenDataPortaal repository) are parsed with lxml, and for every entry of the table:

* its XSD declares the entity element (``<stemming>``) and every element of it maps to a property of the
  table (by :meth:`Entity.feed_field`), to a relationship's ref (:attr:`Relationship.feed_name`) or to a
  declared ignored element (``feed_ignored``, with a reason);
* every property and relationship of the table is in the XSD, unless declared OData-only;
* the XSD types agree with the kinds: ``xs:date`` -> DATE, ``xs:dateTime`` -> DATETIME, ``xs:boolean`` ->
  BOOL, the integers -> INT, ``xs:decimal`` -> a float; a text type is TEXT unless the OData
  ``$metadata`` types the property otherwise (the feed writes ``Persoon.nummer`` as a token, OData as an
  ``Edm.Int32``: the graph keeps the OData kind, so both sources store the same value);
* a many-valued ref is a collection navigation on the OData side, and each relationship's OData source
  (foreign key and the navigation it backs, or the collection navigation) points at its target in the
  real ``$metadata``: the two sides of the mapping name the same edge.

A second part checks the table against the SyncFeed's list of categories and the §4 relations as the
XSDs give them: each ref element of each XSD is owned by the entity of that XSD (holder -> target).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from lxml import etree

from include.loaders.api_metadata import ODataSchema
from include.loaders.entities import _TIMESTAMPS, EDM_KINDS, ENTITIES, FEED_ATTRIBUTES, Entity, Kind
from include.loaders.graph import ItemDataError, prepare_item, upsert_query
from include.tk_replay.dataset import DATA_DIR, METADATA_FILE

XSD_DIR = DATA_DIR / "syncfeed-xsd"
XS = "{http://www.w3.org/2001/XMLSchema}"
BASE = XSD_DIR / "tkData-v1-0-base.xsd"
SCHEMA = ODataSchema.from_xml((DATA_DIR / METADATA_FILE).read_text(encoding="utf-8"))

# What each XML Schema built-in type must be stored as; text types are handled apart (see the docstring).
_BUILTIN_KINDS: dict[str, set[Kind]] = {
    "date": {Kind.DATE, Kind.DAY},
    "dateTime": {Kind.DATETIME},
    "boolean": {Kind.BOOL},
    "int": {Kind.INT, Kind.INT_OPT},
    "unsignedInt": {Kind.INT, Kind.INT_OPT},
    "short": {Kind.INT, Kind.INT_OPT},
    "long": {Kind.INT, Kind.INT_OPT},
    "decimal": {Kind.DECIMAL, Kind.FLOAT},
}
_TEXT = "text"  # string, token, anyURI, a union of date forms (datum), an enumeration, no type at all
_REF_TYPES = {
    "referentieLiteral",
    "referentieType",
    "referentieBijgewerktLiteral",
    "referentieBijgewerktType",
}


@dataclass
class XsdType:
    """One SyncFeed entity element as its XSD declares it."""

    fields: dict[str, str] = field(default_factory=dict)  # feed name (``periode/van``) -> built-in type
    refs: dict[str, bool] = field(default_factory=dict)  # ref element -> many-valued


def _named(tree: etree._ElementTree, tag: str) -> dict[str, etree._Element]:
    return {el.get("name"): el for el in tree.getroot().iter(XS + tag) if el.get("name")}


_BASE_TREE = etree.parse(str(BASE))
_BASE_COMPLEX = _named(_BASE_TREE, "complexType")
_BASE_SIMPLE = _named(_BASE_TREE, "simpleType")


def _builtin(type_name: str | None, local: dict[str, dict[str, etree._Element]]) -> str:
    """The XML Schema built-in a named type comes down to, or :data:`_TEXT`."""
    if type_name is None:
        return _TEXT
    if type_name.startswith("xs:"):
        name = type_name[3:]
        return name if name in _BUILTIN_KINDS else _TEXT
    for table in (local["complexType"], local["simpleType"], _BASE_COMPLEX, _BASE_SIMPLE):
        if type_name in table:
            return _builtin_of(table[type_name], local)
    raise AssertionError(f"XSD type {type_name!r} is declared nowhere")


def _builtin_of(node: etree._Element, local: dict[str, dict[str, etree._Element]]) -> str:
    for child in node.iter(XS + "extension", XS + "restriction"):
        return _builtin(child.get("base"), local)
    return _TEXT  # a union (datum) or an element without a type


def parse_xsd(entity: Entity) -> XsdType:
    """The fields and refs of ``entity``'s SyncFeed element, from its XSD."""
    path = XSD_DIR / f"tkData-v1-0-{entity.name.lower()}.xsd"
    assert path.exists(), f"{entity.name}: no SyncFeed XSD {path.name}"
    tree = etree.parse(str(path))
    local = {"complexType": _named(tree, "complexType"), "simpleType": _named(tree, "simpleType")}
    top = {el.get("name"): el for el in tree.getroot().findall(XS + "element")}
    assert entity.feed_element in top, f"{path.name} declares no element <{entity.feed_element}>"
    complex_type = local["complexType"][top[entity.feed_element].get("type")]
    out = XsdType()
    extension = complex_type.find(f"{XS}complexContent/{XS}extension")
    if extension is not None and extension.get("base") == "downloadEntiteitType":
        for api, feed_name in FEED_ATTRIBUTES.items():  # attributes of the entity element
            out.fields[feed_name] = "int" if api == "ContentLength" else _TEXT

    def walk(sequence: etree._Element, prefix: str) -> None:
        for el in sequence.findall(XS + "element"):
            name, typ = prefix + el.get("name"), el.get("type")
            nested = el.find(f"{XS}complexType/{XS}sequence")
            if typ in _REF_TYPES:
                out.refs[name] = el.get("maxOccurs") == "unbounded"
            elif nested is not None:
                walk(nested, name + "/")
            elif typ is None:
                inline = el.find(XS + "complexType")
                out.fields[name] = _builtin_of(inline, local) if inline is not None else _TEXT
            else:
                out.fields[name] = _builtin(typ, local)

    for sequence in complex_type.iter(XS + "sequence"):
        if sequence.getparent().tag == XS + "extension":
            walk(sequence, "")
    return out


XSDS = {name: parse_xsd(e) for name, e in ENTITIES.items()}


@pytest.mark.parametrize("name", list(ENTITIES))
def test_every_xsd_element_maps_to_a_property_a_ref_or_a_declared_ignored_one(name):
    entity, xsd = ENTITIES[name], XSDS[name]
    properties = {entity.feed_field(api) for api in entity.all_properties if api not in entity.odata_only}
    unmapped = [
        f
        for f in [*xsd.fields, *xsd.refs]
        if f not in properties | set(entity.feed_refs) | set(entity.feed_ignored)
    ]
    assert unmapped == [], f"{name}: XSD elements the table does not map: {unmapped}"
    for ignored, why in entity.feed_ignored.items():
        assert ignored in xsd.fields or ignored in xsd.refs, f"{name}: ignores {ignored}, not in its XSD"
        assert why.strip(), f"{name}: {ignored} is ignored without a reason"


@pytest.mark.parametrize("name", list(ENTITIES))
def test_every_table_property_and_relationship_is_in_the_xsd(name):
    entity, xsd = ENTITIES[name], XSDS[name]
    for api in entity.all_properties:
        if api in _TIMESTAMPS or api in entity.odata_only:
            continue  # bijgewerkt and the entry's updated are their counterparts
        assert entity.feed_field(api) in xsd.fields, f"{name}.{api}: no {entity.feed_field(api)} in the XSD"
    for api, why in entity.odata_only.items():
        assert api in entity.all_properties and why.strip()
    for rel in entity.relationships:
        assert rel.feed_name in xsd.refs, f"{name} {rel.type}: no ref <{rel.feed_name}> in the XSD"


@pytest.mark.parametrize("name", list(ENTITIES))
def test_the_xsd_types_agree_with_the_kinds(name):
    entity, xsd = ENTITIES[name], XSDS[name]
    served = SCHEMA.entity_sets[name].properties
    for feed_name, api, spec in entity.feed_columns:
        kind = next(k for k in Kind if k.spec is spec)
        builtin = xsd.fields[feed_name]
        if builtin == _TEXT:
            odata = EDM_KINDS[served[api]]
            allowed = {odata, Kind.INT_OPT} if odata is Kind.INT else {odata}
        else:
            allowed = _BUILTIN_KINDS[builtin]
        assert kind in allowed, f"{name}.{api}: XSD {builtin} ({feed_name}) but kind {kind.name}"


@pytest.mark.parametrize("name", list(ENTITIES))
def test_each_relationship_names_the_same_edge_on_both_sides(name):
    entity, xsd = ENTITIES[name], XSDS[name]
    info = SCHEMA.entity_sets[name]
    for rel in entity.relationships:
        if rel.foreign_key is not None:
            assert info.properties.get(rel.foreign_key) == "Edm.Guid", f"{name}.{rel.foreign_key}"
            nav = rel.key_navigation
            assert nav not in info.collections, f"{name}.{nav} backs a foreign key: not a collection"
            assert not xsd.refs[rel.feed_name], f"{name}: <{rel.feed_name}> repeats, {rel.foreign_key} cannot"
        else:
            nav = rel.navigation
            assert nav in info.collections, f"{name}.{nav} is not a collection navigation"
        assert info.navigations.get(nav) == rel.target, f"{name}.{nav} points at {info.navigations.get(nav)}"
        if rel.inverse is not None:
            back = SCHEMA.entity_sets[rel.target]
            assert back.navigations.get(rel.inverse) == name and rel.inverse in back.collections


def test_the_table_holds_every_syncfeed_category_and_only_those():
    """One entry per XSD of an entity (the SyncFeed categories), none for OData-only entity sets."""
    entity_xsds = set()
    for path in XSD_DIR.glob("tkData-v1-0-*.xsd"):
        root = etree.parse(str(path)).getroot()
        for el in root.findall(XS + "element"):
            typ = _named(etree.ElementTree(root), "complexType").get(el.get("type") or "")
            if typ is not None and typ.find(f"{XS}complexContent/{XS}extension") is not None:
                base = typ.find(f"{XS}complexContent/{XS}extension").get("base")
                if base in ("entiteitType", "downloadEntiteitType"):
                    entity_xsds.add(el.get("name"))
    assert entity_xsds == {e.feed_element for e in ENTITIES.values()}
    odata_only = set(SCHEMA.entity_sets) - set(ENTITIES)
    assert odata_only and all(name.startswith("DocumentPublicatie") for name in odata_only)


def test_loader_names_follow_the_rule():
    """``load_`` + the type's words in snake case, the last one in the plural (``load_fractie_zetels``)."""
    for e in ENTITIES.values():
        words = [w.lower() for w in _camel_words(e.name)]
        assert e.loader.startswith("load_" + "_".join(words[:-1])), e.loader
        last = e.loader.removeprefix("load_" + "".join(w + "_" for w in words[:-1]))
        assert "_" not in last and last[:2] == words[-1][:2], f"{e.name}: {e.loader}"  # zaak -> zaken


def _camel_words(name: str) -> list[str]:
    return re.findall(r"[A-Z][a-z]*", name)


def test_the_xsds_are_the_copied_ones():
    origin = (XSD_DIR / "ORIGIN.md").read_text(encoding="utf-8")
    assert "OpenDataPortaal" in origin and "c8f2145" in origin
    assert Path(BASE).exists()


def test_a_day_is_the_same_date_from_either_source():
    """``Fractie.DatumActief``: OData serves local midnight as a DateTimeOffset, the SyncFeed an xs:date;
    both store the DATE of the day as written (the UTC instant would be the day before)."""
    fractie = ENTITIES["Fractie"]
    assert fractie.all_properties["DatumActief"] is Kind.DAY and Kind.DAY.edm == "Edm.DateTimeOffset"
    odata = prepare_item(fractie, {"Id": "F1", "DatumActief": "2002-05-23T00:00:00+02:00"})
    feed = prepare_item(fractie, {"Id": "F1", "DatumActief": "2002-05-23"})
    assert odata.temporals["datumActief"] == feed.temporals["datumActief"] == "2002-05-23"
    assert "n.`datumActief` = date(row.t.`datumActief`)" in upsert_query(fractie)
    assert (
        prepare_item(fractie, {"Id": "F1", "DatumActief": "0001-01-01T00:00:00Z"}).temporals["datumActief"]
        is None
    )
    with pytest.raises(ItemDataError, match="DatumActief"):
        prepare_item(fractie, {"Id": "F2", "DatumActief": "23-05-2002"})
