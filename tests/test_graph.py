"""The Neo4j writer on a real Neo4j: conversion of API rows, constraints, REPLACE edges, tombstones."""

from __future__ import annotations

import json

import pytest
from neo4j.exceptions import AuthError, ServiceUnavailable
from neo4j.time import DateTime

from include.loaders.entities import ENTITIES, all_labels, get_entity, property_name, requirements
from include.loaders.graph import (
    GraphWriter,
    ItemDataError,
    ensure_constraints,
    is_data_error,
    item_key,
    prepare_item,
)
from tests.conftest import ROOT

SAMPLES = ROOT / "include" / "tk_replay" / "data"


def _sample(name: str) -> list[dict]:
    return json.loads((SAMPLES / f"motiematcher_{name}_page1_valuearray_noFK.json").read_text())


def _row(rows: list[dict], rid: str) -> dict:
    return next(r for r in rows if r["Id"] == rid)


# -- the entity table ---------------------------------------------------------------------------------


def test_entity_table_shape():
    zaak = get_entity("Zaak")
    assert get_entity("load_zaken") is zaak
    assert zaak.select[:2] == ["Id", "Verwijderd"] and "ApiGewijzigdOp" in zaak.select
    assert zaak.expand[:2] == ["Agendapunt", "Activiteit"] and "Document" not in zaak.expand
    assert "Zaak" in get_entity("Document").expand  # the document holds the link (SYNCFEED.md section 4)
    assert get_entity("Agendapunt").select[-1] == "Activiteit_Id"
    assert property_name("ApiGewijzigdOp") == "apiGewijzigdOp" and property_name("Nummer") == "nummer"
    # every relationship type has exactly one owner; every label gets a constraint
    types = [r.type for e in ENTITIES.values() for r in e.relationships]
    assert len(types) == len(set(types))
    assert set(all_labels()) >= {"Zaak", "Document", "Vergadering", "Agendapunt", "Activiteit", "Verslag"}
    reqs = requirements()
    assert set(reqs) == {"Zaak", "Document", "Vergadering", "Agendapunt", "Activiteit"}
    assert "Activiteit_Id" in reqs["Agendapunt"].properties
    assert reqs["Vergadering"].navigations == []  # the report holds the link: Verslag.Vergadering_Id
    with pytest.raises(KeyError, match="Unknown entity 'Zaken'"):
        get_entity("Zaken")


def test_prepare_item_converts_sample_rows():
    zaak = prepare_item(ENTITIES["Zaak"], _row(_sample("zaak"), "e2cf50ed-b561-4752-b21a-61c56692c027"))
    assert zaak.props["nummer"] == "2025Z05057" and zaak.props["volgnummer"] == 447
    assert zaak.props["afgedaan"] is True and zaak.props["citeertitel"] is None
    assert zaak.temporals["apiGewijzigdOp"] == "2025-10-02T21:14:13.202435Z"
    assert zaak.rels == {r.type: [] for r in ENTITIES["Zaak"].relationships}  # the sample has no links
    assert "FOR_CASE" in {r.type for r in ENTITIES["Document"].relationships}  # Document holds the link

    doc = prepare_item(
        ENTITIES["Document"], _row(_sample("document"), "438865be-3509-4cfc-831c-1f6c50ab6d2a")
    )
    assert doc.props["volgnummer"] is None  # the -1 sentinel
    assert doc.props["kamer"] == 2

    verg = prepare_item(
        ENTITIES["Vergadering"], _row(_sample("vergadering"), "7c09ca11-7de9-4cc1-86c6-d13a79eecd40")
    )
    assert verg.temporals["sluiting"] is None  # 0001-01-01T00:00:00Z sentinel
    assert verg.temporals["aanvangstijd"] == "2025-10-02T10:15:00+02:00"

    tomb = next(r for r in _sample("activiteit") if r["Verwijderd"])
    assert prepare_item(ENTITIES["Activiteit"], tomb).deleted


def test_prepare_item_refuses_bad_rows_with_a_clear_message():
    zaak = ENTITIES["Zaak"]
    with pytest.raises(ItemDataError, match="Zaak: a row has no Id"):
        prepare_item(zaak, {"Nummer": "2025Z1"})
    with pytest.raises(ItemDataError, match=r"Zaak 0000.*GestartOp='2025-13-45T00:00:00Z'"):
        prepare_item(zaak, {"Id": "0000", "GestartOp": "2025-13-45T00:00:00Z"})
    with pytest.raises(ItemDataError, match="invalid Id"):
        prepare_item(ENTITIES["Agendapunt"], {"Id": "0001", "Activiteit_Id": 17})
    # a row without Id gets a stable key, so its failure is on record under the same name every try
    assert item_key({"Nummer": "x"}) == item_key({"Nummer": "x"}) != item_key({"Nummer": "y"})
    assert item_key({"Nummer": "x"}).startswith("no-Id:")
    assert item_key({"Id": "ABC"}) == "abc"


def test_prepare_item_takes_the_key_the_loop_derived():
    zaak = ENTITIES["Zaak"]
    row = {"Id": "E2CF50ED-B561-4752-B21A-61C56692C027", "Titel": "t"}
    key = item_key(row)
    assert prepare_item(zaak, row, key).id == key == prepare_item(zaak, row).id
    no_id = {"Titel": "no Id"}
    with pytest.raises(ItemDataError, match=f"key {item_key(no_id)}"):
        prepare_item(zaak, no_id, item_key(no_id))


# -- the writer on a real Neo4j -------------------------------------------------------------------------


def _props(driver, label: str, rid: str) -> dict | None:
    recs = driver.execute_query(f"MATCH (n:{label} {{id: $id}}) RETURN properties(n) AS p", id=rid).records
    return recs[0]["p"] if recs else None


def _targets(driver, rid: str, rtype: str) -> list[str]:
    q = f"MATCH (n {{id: $id}})-[:{rtype}]->(m) RETURN m.id AS id ORDER BY id"
    return [r["id"] for r in driver.execute_query(q, id=rid).records]


def test_constraints_are_created_idempotently(neo4j_empty):
    ensure_constraints(neo4j_empty)
    ensure_constraints(neo4j_empty)  # a second time is a no-op, not an error
    names = {r["name"] for r in neo4j_empty.execute_query("SHOW CONSTRAINTS YIELD name").records}
    assert {f"tk_{label.lower()}_id" for label in all_labels()} <= names


def test_write_batch_merges_replaces_edges_and_removes_nulls(neo4j_empty):
    d = neo4j_empty
    writer = GraphWriter(d)
    writer.ensure_constraints()
    zaak = ENTITIES["Zaak"]
    row = {
        "Id": "z1",
        "Nummer": "2025Z00001",
        "Titel": "eerste",
        "Volgnummer": 3,
        "GestartOp": "2025-03-19T00:00:00+01:00",
        "ApiGewijzigdOp": "2025-10-02T21:14:13.2024351Z",
        "Agendapunt": [{"Id": "d1"}, {"Id": "d2"}],
        "Activiteit": [{"Id": "a1"}],
    }
    writer.write_batch(zaak, [prepare_item(zaak, row)])
    p = _props(d, "Zaak", "z1")
    assert p["titel"] == "eerste" and p["volgnummer"] == 3
    assert p["gestartOp"] == DateTime(2025, 3, 19, 0, 0, 0, 0, tzinfo=p["gestartOp"].tzinfo)
    assert p["gestartOp"].utcoffset().total_seconds() == 3600  # the offset is kept
    assert p["apiGewijzigdOp"].nanosecond == 202435100  # all 7 fractional digits
    assert _targets(d, "z1", "ON_AGENDA_ITEM") == ["d1", "d2"]
    # far ends are placeholders with their label and only an id; never label-less nodes
    assert _props(d, "Agendapunt", "d1") == {"id": "d1"}
    assert d.execute_query("MATCH (n) WHERE size(labels(n)) = 0 RETURN count(n) AS c").records[0]["c"] == 0

    # reload: a link removed, one added, a value nulled, a value set to the -1 sentinel
    row2 = dict(row, Titel=None, Volgnummer=-1, Agendapunt=[{"Id": "d2"}, {"Id": "d3"}], Activiteit=[])
    writer.write_batch(zaak, [prepare_item(zaak, row2)])
    p = _props(d, "Zaak", "z1")
    assert "titel" not in p and "volgnummer" not in p and p["nummer"] == "2025Z00001"
    assert _targets(d, "z1", "ON_AGENDA_ITEM") == ["d2", "d3"]
    assert _targets(d, "z1", "DISCUSSED_IN") == []
    assert _props(d, "Agendapunt", "d1") == {"id": "d1"}  # the node stays (other owners may link it)

    # loading the same row again changes nothing (one edge per pair)
    writer.write_batch(zaak, [prepare_item(zaak, row2), prepare_item(zaak, row2)])
    c = d.execute_query("MATCH (:Zaak {id:'z1'})-[r]->() RETURN count(r) AS c").records[0]["c"]
    assert c == 2


def test_tombstone_is_detach_deleted_with_its_edges(neo4j_empty):
    d = neo4j_empty
    writer = GraphWriter(d)
    writer.ensure_constraints()
    zaak, doc = ENTITIES["Zaak"], ENTITIES["Agendapunt"]
    writer.write_batch(zaak, [prepare_item(zaak, {"Id": "z1", "Agendapunt": [{"Id": "d1"}]})])
    writer.write_batch(doc, [prepare_item(doc, {"Id": "d1", "Onderwerp": "t", "Activiteit_Id": "a1"})])
    writer.write_batch(doc, [prepare_item(doc, {"Id": "d1", "Verwijderd": True, "Onderwerp": None})])
    assert _props(d, "Agendapunt", "d1") is None
    assert _targets(d, "z1", "ON_AGENDA_ITEM") == []
    assert _props(d, "Activiteit", "a1") == {"id": "a1"}
    # a tombstone of something never loaded is fine; a navigation entry flagged deleted gets no edge
    writer.write_batch(doc, [prepare_item(doc, {"Id": "dx", "Verwijderd": True})])
    item = prepare_item(zaak, {"Id": "z2", "Agendapunt": [{"Id": "d9", "Verwijderd": True}, {"Id": "d8"}]})
    assert item.rels["ON_AGENDA_ITEM"] == ["d8"]


def test_data_errors_are_told_apart_from_connection_errors(neo4j_empty):
    writer = GraphWriter(neo4j_empty)
    zaak = ENTITIES["Zaak"]
    bad = prepare_item(zaak, {"Id": "z1", "Titel": {"a map": "Neo4j cannot store"}})
    with pytest.raises(Exception) as err:
        writer.write_batch(zaak, [bad])
    assert is_data_error(err.value)
    assert "Property values can only be of primitive types" in str(err.value)
    assert is_data_error(ItemDataError("x"))
    assert not is_data_error(ServiceUnavailable("down"))
    assert not is_data_error(AuthError("nope"))
    assert not is_data_error(RuntimeError("bug"))


class _FlakyProxy:
    """A loopback TCP proxy to Neo4j that cuts the first ``drop`` connections at once (a real network
    fault for the real driver), then forwards bytes both ways."""

    def __init__(self, target_port: int, drop: int):
        import socket
        import threading

        self.target_port, self.drop, self.accepted = target_port, drop, 0
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        import socket
        import threading

        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            if self.accepted <= self.drop:
                client.close()
                continue
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src, dst) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.close()
                except OSError:
                    pass

    def close(self) -> None:
        self.sock.close()


def test_a_dropped_connection_is_retried_and_the_batch_lands(neo4j_empty, neo4j_server, caplog):
    from neo4j import GraphDatabase

    from tests.conftest import NEO4J_PASSWORD, NEO4J_PORT

    proxy = _FlakyProxy(NEO4J_PORT, drop=2)
    driver = GraphDatabase.driver(f"bolt://127.0.0.1:{proxy.port}", auth=("neo4j", NEO4J_PASSWORD))
    try:
        zaak = ENTITIES["Zaak"]
        item = prepare_item(zaak, {"Id": "a1b2", "Titel": "written after two dropped connections"})
        with caplog.at_level("WARNING", logger="include.loaders.graph"):
            GraphWriter(driver).write_batch(zaak, [item])
        assert proxy.accepted >= 3
        assert "failed transiently" in caplog.text and "retrying" in caplog.text
        titel = neo4j_empty.execute_query("MATCH (z:Zaak {id: 'a1b2'}) RETURN z.titel").records[0][0]
        assert titel == "written after two dropped connections"
    finally:
        driver.close()
        proxy.close()


def test_a_database_that_stays_away_fails_the_batch_after_the_retry_time(neo4j_server):
    import time

    from neo4j import GraphDatabase

    from tests.conftest import NEO4J_PORT

    proxy = _FlakyProxy(NEO4J_PORT, drop=10**6)  # never answers
    driver = GraphDatabase.driver(f"bolt://127.0.0.1:{proxy.port}", auth=("neo4j", "x"))
    try:
        zaak = ENTITIES["Zaak"]
        t0 = time.monotonic()
        with pytest.raises(ServiceUnavailable):
            GraphWriter(driver, max_retry_seconds=1.0).write_batch(zaak, [prepare_item(zaak, {"Id": "z"})])
        # the driver's own retry loop decides when to stop (with jitter: once at 0.49 s of 1 s in CI), so
        # only the bound is checked; the retry itself shows in the proxy's count
        assert time.monotonic() - t0 < 10
        assert proxy.accepted >= 2  # tried more than once
    finally:
        driver.close()
        proxy.close()
