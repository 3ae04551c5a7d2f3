"""The replay server against the OData v4.01 specifications, over real HTTP with a plain HTTP client.

Each test names the part and section of the OASIS OData v4.01 specification it follows: Part 1
Protocol, Part 2 URL Conventions, and the JSON Format. The server must work for any OData client, so
these tests use ``requests`` and read only what the specification promises (control information,
context URLs, status codes), never the project's own TKClient.
"""

from __future__ import annotations

import json
from urllib.parse import quote

import pytest
import requests

from include.tk_replay import Dataset, ReplayServer, guid_sort_key

NS = "TK.DA.GGM.OData"
JSON_NATIVE = {"Edm.String", "Edm.Boolean", "Edm.Double"}


@pytest.fixture(scope="module")
def ds() -> Dataset:
    """Generated data, plus one Zaak linked to every Document (a related collection that pages)."""
    data = Dataset.generate(
        300, seed=10, sets=("Zaak", "Document", "Activiteit", "Agendapunt", "Vergadering", "Verslag")
    )
    big = data.sorted_ids("Zaak")[0]
    data.links["Document-Zaak"] |= {(d, big) for d in data.rows["Document"]}  # held by Document (FOR_CASE)
    data.touch()
    return data


@pytest.fixture(scope="module")
def server(ds):
    with ReplayServer(ds) as s:
        yield s


def url(server: ReplayServer, rest: str) -> str:
    return server.service_root() + rest


def get(server: ReplayServer, rest: str, **kw) -> requests.Response:
    return requests.get(url(server, rest), timeout=10, **kw)


def big_zaak(ds: Dataset) -> str:
    return ds.sorted_ids("Zaak")[0]


def related_ids(ds: Dataset, entity_set: str, key: str, nav: str) -> list[str]:
    found = ds.navigate(entity_set, ds.rows[entity_set][key], nav)
    return [r["Id"] for r in found]  # type: ignore[union-attr]


def zaak_with_documents(ds: Dataset, at_least: int = 2) -> str:
    """A Zaak (not the big one) with at least ``at_least`` related Documents."""
    for zid in ds.sorted_ids("Zaak")[1:]:
        if len(related_ids(ds, "Zaak", zid, "Document")) >= at_least:
            return zid
    raise AssertionError("the generated data has no Zaak with several Documents")


def assert_odata_error(r: requests.Response, status: int) -> str:
    """JSON Format v4.01 §21.1 Error Response: an ``error`` object with ``code`` and ``message``."""
    assert r.status_code == status, r.text
    assert r.headers["Content-Type"].startswith("application/json")
    body = r.json()
    assert set(body) == {"error"} and isinstance(body["error"]["code"], str)
    assert body["error"]["message"]
    return body["error"]["message"]


def metadata_level(r: requests.Response) -> str:
    params = dict(p.strip().split("=", 1) for p in r.headers["Content-Type"].split(";")[1:])
    return params["odata.metadata"]


# --- 1. $format and Accept ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("fmt", "level"),
    [
        ("json", "minimal"),
        ("application/json", "minimal"),
        ("application/json;odata.metadata=full", "full"),
        (quote("application/json;odata.metadata=full", safe=""), "full"),  # the ';' URL-encoded
        ("application/json;odata.metadata=none;odata.streaming=true", "none"),
        ("application/json;odata.metadata=minimal;IEEE754Compatible=false;charset=utf-8", "minimal"),
        ("application/json;metadata=full", "full"),  # the 4.01 spelling without the odata. prefix
        ("json;odata.metadata=full", "full"),  # not the spec's spelling, but sent by clients: accepted
    ],
)
def test_format_option_with_metadata_parameters(server, fmt, level):
    """URL Conventions v4.01 §5.1.9 System Query Option $format and JSON Format v4.01 §3.1 Controlling the
    Amount of Control Information: ``$format`` takes the media type with its parameters; the response
    Content-Type (JSON Format §4.1 Header Content-Type) carries the level served. A ``$format`` with an
    ``odata.metadata`` parameter was answered 406 before: the first request of a third-party client."""
    r = requests.get(url(server, "/Zaak?$top=1&$format=") + fmt, timeout=10)
    assert r.status_code == 200, r.text
    assert metadata_level(r) == level
    row = r.json()["value"][0]
    assert ("@odata.id" in row) == (level == "full")
    assert ("@odata.context" in r.json()) == (level != "none")


@pytest.mark.parametrize(
    ("accept", "level"),
    [
        ("application/json", "minimal"),
        ("application/json;odata.metadata=full", "full"),
        ("application/json;odata.metadata=none;odata.streaming=false", "none"),
        ("application/json;odata.metadata=full;IEEE754Compatible=true;charset=utf-8", "full"),
        ("text/html, application/json;odata.metadata=none;q=0.9, */*;q=0.1", "none"),
        ("application/json;odata.metadata=full;q=0.5, application/json;odata.metadata=none", "none"),
        ("*/*", "minimal"),
    ],
)
def test_accept_header_chooses_the_metadata_level(server, accept, level):
    """Protocol v4.01 §8.2.1 Header Accept and JSON Format v4.01 §3.1: without ``$format`` the best
    acceptable media range (by q) decides; ``odata.streaming``, ``IEEE754Compatible`` and ``charset``
    are accepted."""
    r = get(server, "/Zaak?$top=1", headers={"Accept": accept})
    assert r.status_code == 200, r.text
    assert metadata_level(r) == level
    assert ("@odata.context" in r.json()) == (level != "none")


def test_format_option_wins_over_accept(server):
    """Protocol v4.01 §11.2.11 System Query Option $format, JSON Format v4.01 §3: "If specified,
    $format overrides any value specified in the Accept header"."""
    r = get(
        server, "/Zaak?$top=1&$format=application/json;odata.metadata=full", headers={"Accept": "text/xml"}
    )
    assert r.status_code == 200 and metadata_level(r) == "full"


@pytest.mark.parametrize(
    ("rest", "accept"),
    [
        ("/Zaak?$format=atom", None),
        ("/Zaak?$format=xml", None),
        ("/Zaak?$format=application/atom%2Bxml", None),
        ("/Zaak?$format=application/json;odata.metadata=verbose", None),
        ("/Zaak", "application/xml"),
        ("/Zaak", "application/atom+xml, text/csv"),
        ("/$metadata?$format=json", None),
        ("/$metadata?$format=application/json", None),
        ("/$metadata", "application/json"),
    ],
)
def test_not_acceptable_only_for_what_cannot_be_served(server, rest, accept):
    """Protocol v4.01 §9.2.3 Response Code 406 Not Acceptable: Atom or XML for data, an unknown
    ``odata.metadata`` level, and CSDL JSON for ``$metadata`` (this service publishes CSDL XML only) are
    406 with the OData error body."""
    r = get(server, rest, headers={"Accept": accept} if accept else {})
    assert "406" in str(r.status_code)
    assert_odata_error(r, 406)


@pytest.mark.parametrize(
    ("rest", "accept"),
    [
        ("/$metadata", None),
        ("/$metadata?$format=xml", None),
        ("/$metadata?$format=application/xml", None),
        ("/$metadata", "application/xml"),
        ("/$metadata", "application/json, application/xml;q=0.5"),
        ("/$metadata", "*/*"),
    ],
)
def test_metadata_is_csdl_xml(server, rest, accept):
    """Protocol v4.01 §11.1.2 Metadata Document Request: ``$metadata`` is the CSDL XML document
    whenever the request accepts XML."""
    r = get(server, rest, headers={"Accept": accept} if accept else {})
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("application/xml")
    assert r.text.startswith("<?xml") and "<edmx:Edmx" in r.text


def test_service_document_honours_the_level(server, ds):
    """JSON Format v4.01 §5 Service Document: ``@odata.context`` is the metadata URL, and is left out
    with ``odata.metadata=none``; every entity set is listed."""
    body = get(server, "/").json()
    assert body["@odata.context"] == url(server, "/$metadata")
    assert {s["name"] for s in body["value"]} == set(ds.schema.entity_sets)
    none = get(server, "/?$format=application/json;odata.metadata=none").json()
    assert "@odata.context" not in none and none["value"] == body["value"]


# --- 2. control information ---------------------------------------------------------------------------
FULL = {"Accept": "application/json;odata.metadata=full"}


def test_full_metadata_entity_control_information(server, ds):
    """JSON Format v4.01 §4.5 Control Information, with ``odata.metadata=full`` (§3.1.2): every entity
    has ``@odata.type`` (``#Namespace.Type``, §4.5.3), ``@odata.id`` (§4.5.8 id), ``@odata.readLink``
    and no ``@odata.editLink`` (§4.5.9 editLink and readLink: "for read-only entities the readLink
    control information is written if metadata=full") and a ``@odata.navigationLink`` and
    ``@odata.associationLink`` per navigation property (§4.5.11); a primitive value whose type JSON
    cannot show (Guid, DateTimeOffset, Int32…) has its ``<Prop>@odata.type`` (§3.1.2, §4.5.3); strings
    and booleans have none."""
    body = get(server, "/Zaak?$top=5", headers=FULL).json()
    info = ds.schema.entity_sets["Zaak"]
    for row in body["value"]:
        entity_url = url(server, f"/Zaak({row['Id']})")
        assert row["@odata.type"] == f"#{NS}.Zaak"
        assert row["@odata.id"] == entity_url and row["@odata.readLink"] == entity_url
        assert "@odata.editLink" not in row
        for nav in info.navigations:
            assert row[f"{nav}@odata.navigationLink"] == f"{entity_url}/{nav}"
            assert row[f"{nav}@odata.associationLink"] == f"{entity_url}/{nav}/$ref"
        assert row["Id@odata.type"] == "#Guid"
        assert row["ApiGewijzigdOp@odata.type"] == "#DateTimeOffset"
        for prop, typ in info.properties.items():
            if typ in JSON_NATIVE:
                assert f"{prop}@odata.type" not in row
            elif row[prop] is not None:
                assert row[f"{prop}@odata.type"] == "#" + typ.removeprefix("Edm.")
    minimal = get(server, "/Zaak?$top=5").json()["value"]
    assert all(not any(k.startswith("@odata.") or "@odata." in k for k in r) for r in minimal)
    assert [r["Id"] for r in minimal] == [r["Id"] for r in body["value"]]


def test_full_metadata_odata_id_is_the_entity(server):
    """URL Conventions v4.01 §4.3.1 Canonical URL: the ``@odata.id`` of a full-metadata entity can be
    read back and gives that entity."""
    row = get(server, "/Document?$top=1", headers=FULL).json()["value"][0]
    again = requests.get(row["@odata.id"], headers=FULL, timeout=10).json()
    assert {k: v for k, v in again.items() if k != "@odata.context"} == row


def test_client_follows_navigation_links_like_expand(server, ds):
    """JSON Format v4.01 §4.5.11 navigationLink: a client that asks for ``odata.metadata=full`` reads
    ``Document@odata.navigationLink`` of each Zaak, follows it (and its ``@odata.nextLink`` pages) and
    gets the same Documents as ``$expand=Document``. (With ``$select`` a navigation property is named
    to get its link: Protocol v4.01 §11.2.5.1 System Query Option $select.)"""
    zaken = get(server, "/Zaak?$top=20&$select=Id,Nummer,Document", headers=FULL).json()["value"]
    assert all("Agendapunt@odata.navigationLink" not in z for z in zaken)  # not selected: no link
    expanded = get(server, "/Zaak?$top=20&$select=Id&$expand=Document($select=Id)").json()["value"]
    via_expand = {z["Id"]: [d["Id"] for d in z["Document"]] for z in expanded}
    followed = 0
    for zaak in zaken:
        link = zaak["Document@odata.navigationLink"]
        ids: list[str] = []
        while link:
            page = requests.get(link, headers=FULL, timeout=10).json()
            ids += [d["Id"] for d in page["value"]]
            link = page.get("@odata.nextLink")
        assert ids == via_expand[zaak["Id"]] == related_ids(ds, "Zaak", zaak["Id"], "Document")
        followed += bool(ids)
    assert followed >= 3


def test_full_metadata_payload_order_and_star_select(server):
    """JSON Format v4.01 §4.4 Payload Ordering Constraints (the response says ``odata.streaming=true``):
    ``@odata.context`` first, then ``@odata.type``, ``@odata.id`` before any property, a property's
    control information right before it, navigation control information after the structural
    properties (4.0 payloads). Protocol v4.01 §11.2.5.1: ``$select=*`` selects the structural
    properties and introduces no navigation links."""
    r = get(server, "/Zaak?$top=3&$expand=Document($select=Id),Agendapunt($select=Id)", headers=FULL)
    assert "odata.streaming=true" in r.headers["Content-Type"]
    assert next(iter(r.json())) == "@odata.context"
    for row in r.json()["value"]:
        keys = list(row)
        assert keys[:3] == ["@odata.type", "@odata.id", "@odata.readLink"]
        for i, k in enumerate(keys):
            name = k.split("@")[0]
            if "@" in k and name in row:  # its control information as a group right before it
                assert i < keys.index(name) and all(
                    x.startswith(name + "@") for x in keys[i : keys.index(name)]
                )
        last_structural = max(i for i, k in enumerate(keys) if "@" not in k and not isinstance(row[k], list))
        first_nav = min(i for i, k in enumerate(keys) if k.endswith("@odata.navigationLink"))
        assert last_structural < first_nav
    star = get(server, "/Zaak?$top=1&$select=*", headers=FULL).json()["value"][0]
    assert not any(k.endswith("@odata.navigationLink") for k in star) and "Nummer" in star


def test_expanded_entities_carry_their_control_information(server):
    """JSON Format v4.01 §8.3 Expanded Navigation Property: expanded entities are entities, with the
    control information of the requested level."""
    rows = get(server, "/Agendapunt?$top=30&$expand=Activiteit,Zaak", headers=FULL).json()["value"]
    acts = [r["Activiteit"] for r in rows if r["Activiteit"]]
    zaken = [z for r in rows for z in r["Zaak"]]
    assert acts and zaken
    for act in acts:
        assert act["@odata.type"] == f"#{NS}.Activiteit"
        assert act["@odata.id"] == url(server, f"/Activiteit({act['Id']})")
        assert act["Agendapunt@odata.navigationLink"].endswith(f"/Activiteit({act['Id']})/Agendapunt")
    assert all(z["@odata.type"] == f"#{NS}.Zaak" for z in zaken)


def test_metadata_none_keeps_only_next_link_and_count(server):
    """JSON Format v4.01 §3.1.3 metadata=none: no control information except ``@odata.nextLink`` and
    ``@odata.count``."""
    body = get(server, "/Document?$count=true&$format=application/json;odata.metadata=none").json()
    assert set(body) == {"@odata.count", "value", "@odata.nextLink"}
    assert body["@odata.count"] == 300 and "odata.metadata=none" in body["@odata.nextLink"]
    assert not any("@odata" in k for r in body["value"] for k in r)
    follow = requests.get(body["@odata.nextLink"], timeout=10)
    assert metadata_level(follow) == "none" and "@odata.context" not in follow.json()


@pytest.mark.parametrize(
    ("rest", "fragment"),
    [
        ("/Zaak", "Zaak"),
        ("/Zaak?$select=Id,Nummer", "Zaak(Id,Nummer)"),
        ("/Zaak?$select=Id&$expand=Document($select=Id,Titel)", "Zaak(Id,Document(Id,Titel))"),
        ("/Zaak?$expand=Document($select=Id)", "Zaak(Document(Id))"),
        ("/Zaak?$expand=Document", "Zaak"),
        ("/Zaak?$select=Id,Document&$expand=Document", "Zaak(Id,Document)"),
        (
            "/Agendapunt?$expand=Activiteit($select=Id;$expand=Zaak($select=Nummer))",
            "Agendapunt(Activiteit(Id,Zaak(Nummer)))",
        ),
        ("/Zaak({zaak})", "Zaak/$entity"),
        ("/Zaak({zaak})?$select=Id,Titel", "Zaak(Id,Titel)/$entity"),
        ("/Zaak({zaak})/Document", "Document"),
        ("/Zaak({zaak})/Document?$select=Id", "Document(Id)"),
        ("/Agendapunt({agendapunt})/Activiteit", "Activiteit/$entity"),
        ("/Zaak({zaak})/Nummer", "Zaak({zaak})/Nummer"),
        ("/Zaak({zaak})/Document/$ref", "Collection($ref)"),
    ],
)
def test_context_urls(server, ds, rest, fragment):
    """Protocol v4.01 §10 Context URL: §10.2 Collection of Entities, §10.3 Entity (``/$entity``),
    §10.7/§10.8 Projected, §10.9/§10.10 Expanded (the 4.0 form, as the service answers
    ``OData-Version: 4.0``: an expansion without nested ``$select``/``$expand`` is left out; a list of
    expansions only means all structural properties), related entities in the entity set the
    navigation is bound to, §10.11 Collection of Entity References and §10.13 Property Value."""
    agendapunt = next(i for i, r in ds.rows["Agendapunt"].items() if r.get("Activiteit_Id"))
    names = {"zaak": zaak_with_documents(ds), "agendapunt": agendapunt}
    r = get(server, rest.format(**names))
    assert r.status_code == 200, r.text
    assert r.json()["@odata.context"] == url(server, "/$metadata#" + fragment.format(**names))


def test_ieee754_compatible_writes_decimals_as_strings():
    """JSON Format v4.01 §3.2 Controlling the Representation of Numbers: with
    ``IEEE754Compatible=true`` Edm.Decimal and Edm.Int64 values, the count included, are JSON strings;
    Edm.Int32 stays a number."""
    data = Dataset.generate(5, seed=1)
    row = {"Id": "0e5c5f8e-1111-4111-8111-000000000001", "Bedrag": 1234.5, "Verwijderd": False}
    data.rows["PersoonNevenfunctieInkomsten"][row["Id"]] = row
    data.touch()
    with ReplayServer(data) as s:
        rest = "/PersoonNevenfunctieInkomsten?$select=Id,Bedrag"
        ieee = requests.get(
            s.service_root() + rest, headers={"Accept": "application/json;IEEE754Compatible=true"}, timeout=10
        )
        plain = requests.get(s.service_root() + rest, timeout=10)
        assert "IEEE754Compatible=true" in ieee.headers["Content-Type"]
        assert ieee.json()["value"][0]["Bedrag"] == "1234.5"
        counted = requests.get(
            s.service_root() + "/Zaak?$top=1&$count=true",
            headers={"Accept": "application/json;IEEE754Compatible=true"},
            timeout=10,
        ).json()
        assert counted["@odata.count"] == str(len(data.rows["Zaak"]))  # the count is an Edm.Int64
        assert plain.json()["value"][0]["Bedrag"] == 1234.5
        zaak = requests.get(
            s.service_root() + "/Zaak?$top=1&$select=Volgnummer",
            headers={"Accept": "application/json;IEEE754Compatible=true"},
            timeout=10,
        ).json()["value"][0]
        assert not isinstance(zaak["Volgnummer"], str)


# --- 3. addressing entities and related entities ----------------------------------------------------------
def test_entity_by_key_forms(server, ds):
    """URL Conventions v4.01 §4.3 Addressing Entities: the key in parentheses, bare or named
    (``Zaak(<guid>)``, ``Zaak(Id=<guid>)``) addresses the same entity; an unknown key is 404 (Protocol
    v4.01 §9.2.1 404 Not Found) and a malformed one 400, with the OData error body."""
    zid = ds.sorted_ids("Zaak")[7]
    bare = get(server, f"/Zaak({zid})").json()
    named = get(server, f"/Zaak(Id={zid})").json()
    upper = get(server, f"/Zaak({zid.upper()})").json()
    assert bare == named == upper and bare["Id"] == zid and bare["Nummer"] == ds.rows["Zaak"][zid]["Nummer"]
    assert "Unknown" not in assert_odata_error(
        get(server, "/Zaak(00000000-0000-0000-0000-000000000000)"), 404
    )
    assert_odata_error(get(server, "/Zaak(Nummer='x')"), 400)
    assert_odata_error(get(server, f"/Zaak({zid})?$top=1"), 400)  # $top does not apply to one entity


def test_related_collection_with_query_options(server, ds):
    """Protocol v4.01 §11.2.7 Requesting Related Entities: ``Zaak(<key>)/Document`` is a collection of
    Documents to which ``$filter``, ``$orderby``, ``$select``, ``$top``, ``$skip`` and ``$count`` apply
    as to an entity set."""
    zid = zaak_with_documents(ds, 3)
    rel = [ds.rows["Document"][i] for i in related_ids(ds, "Zaak", zid, "Document")]
    body = get(server, f"/Zaak({zid})/Document?$select=Id,Soort&$count=true").json()
    assert [d["Id"] for d in body["value"]] == [r["Id"] for r in rel]
    assert body["@odata.count"] == len(rel) and all(set(d) == {"Id", "Soort"} for d in body["value"])
    live = [r["Id"] for r in rel if not r["Verwijderd"]]
    flt = get(server, f"/Zaak({zid})/Document?$filter=Verwijderd eq false&$select=Id&$count=true").json()
    assert [d["Id"] for d in flt["value"]] == live and flt["@odata.count"] == len(live)
    by_id_desc = sorted((r["Id"] for r in rel), key=guid_sort_key, reverse=True)
    top = get(server, f"/Zaak({zid})/Document?$orderby=Id desc&$skip=1&$top=2&$select=Id").json()
    assert [d["Id"] for d in top["value"]] == by_id_desc[1:3]


def test_related_collection_pages_with_next_link(server, ds):
    """Protocol v4.01 §11.2.6.7 Server-Driven Paging on a related collection: pages of the server's
    size, each ``@odata.nextLink`` addressing the same navigation, together every related entity once."""
    zid = big_zaak(ds)
    link = url(server, f"/Zaak({zid})/Document?$select=Id")
    ids, sizes = [], []
    while link:
        page = requests.get(link, timeout=10).json()
        sizes.append(len(page["value"]))
        ids += [d["Id"] for d in page["value"]]
        link = page.get("@odata.nextLink")
        if link:
            assert f"/Zaak({zid})/Document?" in link
    assert len(sizes) >= 2 and sizes[0] == 250
    assert ids == related_ids(ds, "Zaak", zid, "Document") and len(set(ids)) == 300


def test_related_count_segment(server, ds):
    """URL Conventions v4.01 §4.8 Addressing the Count of a Collection: ``Zaak(<key>)/Document/$count``
    is the plain-text count, with ``$filter`` applied; ``/$count`` after a single entity is 400."""
    zid = big_zaak(ds)
    r = get(server, f"/Zaak({zid})/Document/$count")
    assert r.headers["Content-Type"].startswith("text/plain") and r.text == "300"
    tombs = sum(1 for r in ds.rows["Document"].values() if r["Verwijderd"])
    assert get(server, f"/Zaak({zid})/Document/$count?$filter=Verwijderd eq true").text == str(tombs)
    assert_odata_error(get(server, f"/Zaak({zid})/$count"), 400)


def test_single_valued_navigation_entity_or_no_content(server, ds):
    """Protocol v4.01 §11.2.7 Requesting Related Entities and §9.1.4 Response Code 204 No Content: a
    single-valued navigation gives the related entity (``$select`` applies), or 204 when it is null."""
    with_act = next(i for i, r in ds.rows["Agendapunt"].items() if r.get("Activiteit_Id"))
    without = next(i for i, r in ds.rows["Agendapunt"].items() if not r.get("Activiteit_Id"))
    act = get(server, f"/Agendapunt({with_act})/Activiteit?$select=Id,Nummer").json()
    want = ds.rows["Activiteit"][ds.rows["Agendapunt"][with_act]["Activiteit_Id"]]
    assert {k: v for k, v in act.items() if k != "@odata.context"} == {
        "Id": want["Id"],
        "Nummer": want["Nummer"],
    }
    empty = get(server, f"/Agendapunt({without})/Activiteit")
    assert empty.status_code == 204 and empty.content == b""


def test_related_entity_by_key_and_unknown_navigation(server, ds):
    """URL Conventions v4.01 §4.3 Addressing Entities (``Zaak(<key>)/Document(<key>)``): a related
    entity by its key, 404 when it is not related; an unknown navigation or property is 404."""
    zid = zaak_with_documents(ds)
    did = related_ids(ds, "Zaak", zid, "Document")[0]
    assert get(server, f"/Zaak({zid})/Document({did})").json()["Id"] == did
    other = next(d for d in ds.sorted_ids("Document") if d not in related_ids(ds, "Zaak", zid, "Document"))
    assert_odata_error(get(server, f"/Zaak({zid})/Document({other})"), 404)
    assert_odata_error(get(server, f"/Zaak({zid})/Bestaatniet"), 404)
    assert_odata_error(get(server, "/Zaak(00000000-0000-0000-0000-000000000000)/Document"), 404)


def test_association_link_gives_entity_references(server, ds):
    """Protocol v4.01 §11.2.8 Requesting Entity References and JSON Format v4.01 §14 Entity Reference: the
    ``@odata.associationLink`` answers the ``@odata.id`` of each related entity."""
    zid = zaak_with_documents(ds)
    zaak = get(server, f"/Zaak({zid})", headers=FULL).json()
    refs = requests.get(zaak["Document@odata.associationLink"], timeout=10).json()
    assert [r["@odata.id"] for r in refs["value"]] == [
        url(server, f"/Document({i})") for i in related_ids(ds, "Zaak", zid, "Document")
    ]
    assert refs["@odata.context"] == url(server, "/$metadata#Collection($ref)")
    with_act = next(i for i, r in ds.rows["Agendapunt"].items() if r.get("Activiteit_Id"))
    without = next(i for i, r in ds.rows["Agendapunt"].items() if not r.get("Activiteit_Id"))
    one = get(server, f"/Agendapunt({with_act})/Activiteit/$ref").json()
    assert one["@odata.id"] == url(server, f"/Activiteit({ds.rows['Agendapunt'][with_act]['Activiteit_Id']})")
    assert get(server, f"/Agendapunt({without})/Activiteit/$ref").status_code == 204


def test_property_and_raw_value(server, ds):
    """Protocol v4.01 §11.2.4 Requesting Individual Properties (and §11.2.4.1 ``$value``): a property's
    value in a ``value`` object, its raw value as text/plain, 204 when null."""
    zid = next(i for i, r in ds.rows["Zaak"].items() if r.get("Nummer"))
    assert get(server, f"/Zaak({zid})/Nummer").json()["value"] == ds.rows["Zaak"][zid]["Nummer"]
    raw = get(server, f"/Zaak({zid})/Nummer/$value")
    assert raw.text == ds.rows["Zaak"][zid]["Nummer"] and raw.headers["Content-Type"].startswith("text/plain")
    null = next(i for i, r in ds.rows["Zaak"].items() if r.get("Citeertitel") is None)
    assert get(server, f"/Zaak({null})/Citeertitel").status_code == 204
    full = get(server, f"/Zaak({zid})/ApiGewijzigdOp", headers=FULL).json()
    assert (
        full["@odata.type"] == "#DateTimeOffset" and full["value"] == ds.rows["Zaak"][zid]["ApiGewijzigdOp"]
    )


def test_entity_reference_and_paths_not_served(server, ds):
    """URL Conventions v4.01 §4.4 Addressing References between Entities (``Zaak(<key>)/$ref`` is the
    entity reference, Protocol §10.12 context ``#$ref``); Protocol v4.01 §11.2.3: ``/$value`` of an
    entity that is not a media entity is 400; a valid path the service does not serve (a property
    beyond a navigation) is 501."""
    zid = zaak_with_documents(ds)
    ref = get(server, f"/Zaak({zid})/$ref").json()
    assert ref == {
        "@odata.context": url(server, "/$metadata#$ref"),
        "@odata.id": url(server, f"/Zaak({zid})"),
    }
    assert_odata_error(get(server, f"/Zaak({zid})/$value"), 400)
    agendapunt = next(i for i, r in ds.rows["Agendapunt"].items() if r.get("Activiteit_Id"))
    assert_odata_error(get(server, f"/Agendapunt({agendapunt})/Activiteit/Nummer"), 501)


# --- 4. $count ------------------------------------------------------------------------------------------
def test_inline_count_on_sets_and_expanded_collections(server, ds):
    """Protocol v4.01 §11.2.6.5 System Query Option $count and JSON Format v4.01 §4.5.4 count:
    ``$count=true`` adds ``@odata.count`` (of all matching items, not of the page) to a collection, and
    inside ``$expand`` a ``<Nav>@odata.count`` before each expanded collection."""
    body = get(server, "/Zaak?$count=true&$top=3&$filter=Verwijderd eq false").json()
    assert body["@odata.count"] == sum(1 for r in ds.rows["Zaak"].values() if not r["Verwijderd"])
    assert len(body["value"]) == 3
    rows = get(server, "/Zaak?$select=Id&$expand=Document($count=true;$top=1;$select=Id)").json()["value"]
    for z in rows:
        rel = related_ids(ds, "Zaak", z["Id"], "Document")
        assert z["Document@odata.count"] == len(rel) and len(z["Document"]) == min(1, len(rel))
    assert "Document@odata.count" not in get(server, "/Zaak?$top=1&$expand=Document").json()["value"][0]
    upper = get(server, "/Zaak?$count=TRUE&$top=1&$orderby=Nummer DESC").json()  # ABNF literals ignore case
    assert upper["@odata.count"] == len(ds.rows["Zaak"])
    assert upper["value"][0]["Nummer"] == max(r["Nummer"] for r in ds.rows["Zaak"].values() if r["Nummer"])


# --- 5. nested $expand options -----------------------------------------------------------------------------
def test_nested_expand_options(server, ds):
    """URL Conventions v4.01 §5.1.3 System Query Option $expand: options in the parentheses, separated
    by semicolons, apply to the related entities: ``$select``, ``$filter``, ``$orderby``, ``$skip``,
    ``$top``, ``$count`` and a nested ``$expand``."""
    opts = "$select=Id,Soort;$filter=Verwijderd eq false;$orderby=Id desc;$skip=1;$top=2;$count=true"
    rows = get(server, f"/Zaak?$select=Id&$expand=Document({opts})").json()["value"]
    checked = 0
    for z in rows:
        live = [
            i
            for i in related_ids(ds, "Zaak", z["Id"], "Document")
            if not ds.rows["Document"][i]["Verwijderd"]
        ]
        want = sorted(live, key=guid_sort_key, reverse=True)[1:3]
        assert [d["Id"] for d in z["Document"]] == want
        assert z["Document@odata.count"] == len(live)
        assert all(set(d) == {"Id", "Soort"} for d in z["Document"])
        checked += len(want) == 2
    assert checked >= 1
    deep = get(
        server, "/Agendapunt?$select=Id&$expand=Activiteit($select=Id;$expand=Agendapunt($select=Id))"
    ).json()["value"]
    nested = [a for a in deep if a["Activiteit"]]
    assert nested
    for a in nested:
        act = a["Activiteit"]["Id"]
        assert [x["Id"] for x in a["Activiteit"]["Agendapunt"]] == related_ids(
            ds, "Activiteit", act, "Agendapunt"
        )
        assert a["Id"] in {x["Id"] for x in a["Activiteit"]["Agendapunt"]}


def test_expand_star_expands_every_navigation(server, ds):
    """URL Conventions v4.01 §5.1.3 System Query Option $expand: ``$expand=*`` expands every navigation
    property."""
    row = get(server, "/Agendapunt?$top=1&$expand=*").json()["value"][0]
    assert set(ds.schema.entity_sets["Agendapunt"].navigations) <= set(row)


# --- 6. media resources -------------------------------------------------------------------------------------
def test_document_resource_bytes(server, ds):
    """``Document(<id>)/resource``, the TK API's file URL (its bound function ``Resource``, served as a raw
    value in the manner of Protocol v4.01 §11.2.4.1):
    the row's ``ContentType`` as Content-Type and exactly ``ContentLength`` bytes, the same bytes on
    every request and different ones for another document; a row without them is 404."""
    docs = [r for r in ds.rows["Document"].values() if r.get("ContentType") and r.get("ContentLength")]
    a, b = docs[0], docs[1]
    r = get(server, f"/Document({a['Id']})/resource")
    assert r.status_code == 200 and r.headers["Content-Type"] == a["ContentType"]
    assert int(r.headers["Content-Length"]) == len(r.content) == a["ContentLength"]
    assert get(server, f"/Document({a['Id']})/resource").content == r.content
    other = get(server, f"/Document({b['Id']})/resource").content
    assert len(other) == b["ContentLength"] and other[:64] != r.content[:64]
    bare = next(r for r in ds.rows["Document"].values() if not r.get("ContentType"))
    assert_odata_error(get(server, f"/Document({bare['Id']})/resource"), 404)
    assert_odata_error(get(server, "/Document(00000000-0000-0000-0000-000000000000)/resource"), 404)


def test_stored_resource_bytes_are_served():
    """A dataset's own bytes for a row (``Dataset.resources``) are what ``/resource`` serves."""
    data = Dataset.generate(10, seed=2)
    doc = next(r for r in data.rows["Document"].values() if r.get("ContentType"))
    data.resources[doc["Id"]] = b"%PDF-1.7 the real file"
    with ReplayServer(data) as s:
        r = requests.get(f"{s.service_root()}/Document({doc['Id']})/resource", timeout=10)
    assert r.content == b"%PDF-1.7 the real file" and r.headers["Content-Type"] == doc["ContentType"]


# --- 7. errors --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "rest",
    [
        "/Zaak?$foo=1",
        "/Zaak?$top=-1",
        "/Zaak?$skip=x",
        "/Zaak?$count=yes",
        "/Zaak?$top=1&$top=2",
        "/Zaak?$select=",
        "/Zaak?$expand=Document($bogus=1)",
        "/Zaak?$expand=Document($select=Id",
        "/Zaak?$expand=Document($top=-1)",
        "/Zaak?$levels=2",
        "/Zaak?$filter=Nummer eq",
        "/Agendapunt?$expand=Activiteit($top=1)",
        "/Zaak?$expand=Document,Document($select=Id)",
    ],
)
def test_malformed_requests_are_400(server, rest):
    """Protocol v4.01 §9.4 Error Response Body, JSON Format v4.01 §21.1 Error Response: an unknown or
    malformed system query option is 400 Bad Request with the OData error body, never ignored."""
    assert_odata_error(get(server, rest), 400)


@pytest.mark.parametrize(
    "rest",
    [
        "/Zaak?$search=motie",
        "/Zaak?$apply=groupby((Soort))",
        "/Zaak?$compute=Volgnummer add 1 as Next",
        "/Zaak?$expand=Document($levels=2)",
        "/Zaak?$expand=Document($search=x)",
        "/Zaak?$filter=year(GestartOp) eq 2024",
        "/Zaak?$filter=Volgnummer add 1 eq 2",
        "/Zaak?$filter=Soort in ('Motie','Amendement')",
        "/Zaak?$filter=Document/any(d: d/Agendapunt/any(a: a/Nummer eq 'x'))",
        "/Zaak?$select=Document/Id",
        "/Zaak?$orderby=Activiteit/Datum",
        "/Zaak?$expand=Document/$ref",
        "/Zaak?$filter=Nummer eq @n&@n='2025Z00001'",
        "/Zaak?$filter=Document/any(d: $it/Nummer eq d/Titel)",
        "/Zaak?$filter=Termijn eq duration'P1D'",
        f"/Zaak?$select={NS}.*",
    ],
)
def test_valid_but_unimplemented_odata_is_501(server, rest):
    """Protocol v4.01 §9.3.1 Response Code 501 Not Implemented: valid OData the service does not
    implement is refused with the OData error body rather than answered wrongly."""
    assert "not implemented" in assert_odata_error(get(server, rest), 501)


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE"])
def test_writes_are_method_not_allowed(server, ds, method):
    """Protocol v4.01 §9.2.2 Response Code 405 Not Allowed: the TK API is read-only; a write to a
    collection or an entity is 405 with ``Allow: GET`` and the OData error body."""
    zid = ds.sorted_ids("Zaak")[0]
    for rest in ("/Zaak", f"/Zaak({zid})"):
        r = requests.request(method, url(server, rest), json={"Titel": "x"}, timeout=10)
        assert r.headers["Allow"] == "GET"
        assert_odata_error(r, 405)
    assert get(server, f"/Zaak({zid})").json()["Titel"] == ds.rows["Zaak"][zid]["Titel"]
    if method == "POST":  # Protocol v4.01 §11.7 Batch Requests: valid OData, not implemented
        assert_odata_error(requests.post(url(server, "/$batch"), data=b"--x--", timeout=10), 501)


def test_json_abbreviation_case_insensitive_and_read_leniently(server):
    """JSON Format v4.01 §3 Requesting the JSON Format: "the case-insensitive abbreviation json which
    MUST NOT be followed by format parameters". ``JSON`` is accepted; the MUST NOT binds clients, and a
    client that sends ``json;odata.metadata=full`` anyway gets what it asked for (the level it named),
    not a refusal: being strict here would only break clients written for the real API."""
    assert get(server, "/Zaak?$top=1&$format=JSON").status_code == 200
    r = get(server, "/Zaak?$top=1&$format=json;odata.metadata=full")
    assert r.status_code == 200 and metadata_level(r) == "full"
    assert "@odata.id" in r.json()["value"][0]


def test_error_bodies_are_json_whatever_the_format(server):
    """JSON Format v4.01 §21.1: error responses are the JSON error object also for ``$metadata`` and for
    requests that asked for another level."""
    r = get(server, "/Zaak?$foo=1&$format=application/json;odata.metadata=full")
    assert json.loads(r.text)["error"]["message"]
