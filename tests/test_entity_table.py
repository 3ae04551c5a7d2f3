"""The entity table is the only list of entities (issue 9, deliverable 4).

* one new entry in a COPY of the table (``DocumentPublicatie``, with a foreign key to ``DocumentVersie``
  and an ``Edm.Date`` property) gets its DAG task, its constraint, its ``$metadata`` requirement, a
  replay-server entity set, generated rows and graph-model rows, and loads into Neo4j, without any other
  edit;
* a scalar property whose kind disagrees with ``$metadata`` (the table says DATETIME, ``$metadata`` says
  ``Edm.Date``) is reported by ``setup`` and stored by its served type (issue 10: the model follows the
  live ``$metadata``); a wrongly typed watermark still fails ``setup``, naming the entity, the property and
  both types;
* ``docs/graph-model.md`` holds exactly the tables generated from the table.
"""

from __future__ import annotations

import dataclasses
import random
from datetime import UTC, datetime

import pytest
import requests
from neo4j.time import Date

from dags.tk_ingest import build_dag
from include.loaders import pipeline
from include.loaders.api import MetadataMismatch
from include.loaders.api_metadata import ODataSchema, check_requirements
from include.loaders.api_profiles import PROFILES
from include.loaders.entities import (
    ENTITIES,
    Entity,
    Kind,
    Relationship,
    all_labels,
    requirements,
    table_with,
)
from include.loaders.graph import ItemDataError, prepare_item, upsert_query
from include.loaders.graph_model import DOC, graph_model_tables, render
from include.loaders.load import load_entity
from include.loaders.model import model_report, served_entity, served_entity_of
from include.tk_replay.dataset import DATA_DIR, METADATA_FILE, Dataset
from include.tk_replay.generator import kind_value
from include.tk_replay.schema import table_metadata
from tests.loader_fixtures import expected_edges, make_client, replay

# One entry, in a copy of the table: DocumentPublicatie is in the OData API but not in the SyncFeed, so
# not in the table. ``PublicatieDag`` is not in the real API: it stands for any Edm.Date property
# (Persoon.Geboortedatum is one), so the overlay of the replay server declares it.
PUBLICATIE = Entity(
    name="DocumentPublicatie",
    loader="load_document_publicaties",
    doc="A publication of a document version.",
    properties={
        "Identifier": Kind.TEXT,
        "DocumentType": Kind.TEXT,
        "FileName": Kind.TEXT,
        "ContentLength": Kind.INT,
        "PublicatieDag": Kind.DATE,
    },
    relationships=(
        Relationship(
            "PUBLISHES", "DocumentVersie", foreign_key="DocumentVersie_Id", doc="the version it publishes"
        ),
    ),
)
TABLE = table_with(PUBLICATIE)
REAL_METADATA = (DATA_DIR / METADATA_FILE).read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def publicatie_data() -> Dataset:
    return Dataset.generate(300, seed=9, entities=TABLE)


# -- the table itself -----------------------------------------------------------------------------------


def test_the_copy_leaves_the_table_alone():
    assert "DocumentPublicatie" in TABLE and "DocumentPublicatie" not in ENTITIES
    assert list(TABLE)[: len(ENTITIES)] == list(ENTITIES)
    with pytest.raises(TypeError):
        ENTITIES["DocumentPublicatie"] = PUBLICATIE  # type: ignore[index]  # the table is read-only
    with pytest.raises(ValueError, match="PART_OF is owned by both Agendapunt and DocumentPublicatie"):
        table_with(dataclasses.replace(PUBLICATIE, relationships=(ENTITIES["Agendapunt"].relationships)))
    # the original tool's loader names (the DAG's task ids and the checkpoint names)
    loaders = {e.loader for e in ENTITIES.values()}
    assert {"load_zaken", "load_documents", "load_vergaderingen", "load_agendapunten"} <= loaders
    assert {"load_activiteiten", "load_verslagen"} <= loaders


def test_the_table_agrees_with_the_real_metadata_names_and_types():
    assert table_metadata(REAL_METADATA, ENTITIES) == REAL_METADATA  # the overlay adds nothing
    schema = ODataSchema.from_xml(REAL_METADATA)
    assert check_requirements(schema, requirements(ENTITIES), PROFILES["v4/2.0"]).problems == []
    assert schema.entity_sets["Persoon"].properties["Geboortedatum"] == Kind.DATE.edm


def test_each_kind_is_one_row():
    for kind in Kind:
        spec = kind.spec
        assert spec.edm.startswith("Edm.") and spec.neo4j.isupper()
        kind_value(kind, random.Random(1), 17_000_000_000_000_000)  # the generator has values of it
    assert (Kind.DATE.edm, Kind.DATE.spec.neo4j, Kind.DATE.spec.cypher) == ("Edm.Date", "DATE", "date")
    besluit = prepare_item(PUBLICATIE, {"Id": "B1", "PublicatieDag": "2025-03-19", "DocumentVersie_Id": "P1"})
    assert besluit.temporals["publicatieDag"] == "2025-03-19" and besluit.rels == {"PUBLISHES": ["p1"]}
    assert "n.`publicatieDag` = date(row.t.`publicatieDag`)" in upsert_query(PUBLICATIE)
    assert (
        prepare_item(PUBLICATIE, {"Id": "B1", "PublicatieDag": "0001-01-01"}).temporals["publicatieDag"]
        is None
    )
    for bad in ("2025-13-45", "2025-03-19T00:00:00Z", 20250319):
        with pytest.raises(ItemDataError, match=rf"DocumentPublicatie b2: PublicatieDag={bad!r} is not"):
            prepare_item(PUBLICATIE, {"Id": "B2", "PublicatieDag": bad})


def test_docs_graph_model_holds_exactly_the_generated_tables():
    text = DOC.read_text(encoding="utf-8")
    assert render(text) == text, "run: python -m include.loaders.graph_model"
    for table in graph_model_tables().values():
        assert table in text


# -- one entry: everything follows ----------------------------------------------------------------------


def test_a_new_entry_gets_its_dag_task_constraint_label_and_requirement():
    dag = build_dag(TABLE, dag_id="tk_ingest_with_besluit")
    tasks = {t.task_id: t for t in dag.tasks}
    assert {"plan_document_publicaties", "load_document_publicaties"} <= set(tasks)
    assert [u.task_id for u in tasks["load_document_publicaties"].upstream_list] == [
        "plan_document_publicaties"
    ]
    assert "DocumentPublicatie" in dag.params["entities"]
    assert "load_document_publicaties" not in {t.task_id for t in build_dag().tasks}  # the table is untouched

    assert "DocumentPublicatie" in all_labels(TABLE.values()) and "DocumentPublicatie" not in all_labels()

    req = requirements(["DocumentPublicatie"], TABLE)["DocumentPublicatie"]
    # what the load needs is required; the scalars (PublicatieDag) follow the served $metadata
    assert "DocumentVersie_Id" in req.properties and "PublicatieDag" not in req.properties
    assert req.types["DocumentVersie_Id"] == "Edm.Guid"
    assert req.types["ApiGewijzigdOp"] == "Edm.DateTimeOffset"


def test_a_new_entry_gets_graph_model_rows():
    tables = graph_model_tables(TABLE)
    assert (
        "| `:DocumentPublicatie` | `DocumentPublicatie` | `load_document_publicaties` "
        "| a publication of a document version |" in tables["nodes"]
    )
    header, _, *rows = [
        [c.strip() for c in line.strip("|").split("|")] for line in tables["properties"].splitlines()
    ]
    row = next(r for r in rows if r[0] == "`:DocumentPublicatie`")
    assert row[header.index("DATE")] == "`publicatieDag`"
    assert "`contentLength`" in row[header.index("INTEGER")]
    assert (
        "| `PUBLISHES` | `(:DocumentPublicatie)-[:PUBLISHES]->(:DocumentVersie)` "
        "| foreign key `DocumentPublicatie.DocumentVersie_Id` (n:1) "
        "| `<documentVersie ref=…/>` in `<documentPublicatie>` | `load_document_publicaties` |"
    ) in tables["relationships"]
    assert "DocumentPublicatie" not in graph_model_tables()["nodes"]


def test_a_new_entry_gets_generated_rows_and_a_replay_entity_set(publicatie_data):
    ds = publicatie_data
    rows = ds.rows["DocumentPublicatie"]
    assert len(rows) == 300
    live_versies = set(ds.live_ids("DocumentVersie"))
    live = [r for r in rows.values() if not r["Verwijderd"]]
    assert 0.7 < len(live) / 300 < 0.9
    assert all(r["DocumentVersie_Id"] in live_versies for r in live)  # the foreign key, to live rows
    assert all(isinstance(r["PublicatieDag"], str) and len(r["PublicatieDag"]) == 10 for r in live)
    assert {t for t, _, _ in expected_edges(ds)} >= {"PUBLISHES", "PART_OF", "FOR_CASE"}

    with replay(ds) as server:
        meta = requests.get(server.service_root() + "/$metadata", timeout=10).text
        assert '<Property Name="PublicatieDag" Type="Edm.Date" />' in meta
        served = requests.get(
            server.service_root()
            + "/DocumentPublicatie?$select=Id,PublicatieDag&$expand=DocumentVersie($select=Id)",
            timeout=10,
        ).json()["value"]
        assert len(served) == 250  # one v4/2.0 page
        for b in served:
            assert b["PublicatieDag"] == rows[b["Id"]]["PublicatieDag"]
            assert (b["DocumentVersie"] or {}).get("Id") == rows[b["Id"]]["DocumentVersie_Id"]
        # the other side of the foreign key, from the same column
        back = requests.get(
            server.service_root() + "/DocumentVersie?$select=Id&$expand=DocumentPublicatie($select=Id)",
            timeout=10,
        ).json()["value"]
        assert any(a["DocumentPublicatie"] for a in back)

        client = make_client(server.url)
        client.check_metadata(requirements(TABLE, TABLE))  # its requirement holds on its server
    with replay(Dataset.generate(5, seed=1, sets=("Zaak",))) as plain:  # the real $metadata
        plain_client = make_client(plain.url)
        plain_client.check_metadata(requirements(["DocumentPublicatie"], TABLE))  # a scalar is not fatal
        served = served_entity_of(plain_client, TABLE["DocumentPublicatie"])
    assert "PublicatieDag" not in served.all_properties  # not served: neither requested nor written
    assert "PublicatieDag" not in served.select and "Identifier" in served.select


def test_a_new_entry_loads_into_neo4j(neo4j_empty, publicatie_data):
    ds = publicatie_data
    with replay(ds) as server:
        result = load_entity(TABLE["DocumentPublicatie"], client=make_client(server.url), driver=neo4j_empty)
    live = ds.live_ids("DocumentPublicatie")
    assert result.processed == len(ds.rows["DocumentPublicatie"]) and result.failed == 0
    got = {
        r["id"]: r["d"]
        for r in neo4j_empty.execute_query(
            "MATCH (b:DocumentPublicatie) RETURN b.id AS id, b.publicatieDag AS d"
        ).records
    }
    assert set(got) == set(live)
    sample = live[0]
    assert got[sample] == Date.from_iso_format(ds.rows["DocumentPublicatie"][sample]["PublicatieDag"])
    edges = neo4j_empty.execute_query(
        "MATCH (b:DocumentPublicatie)-[:PUBLISHES]->(p:DocumentVersie) RETURN b.id AS b, p.id AS p"
    ).records
    assert {("PUBLISHES", r["b"], r["p"]) for r in edges} == {
        e for e in expected_edges(ds) if e[0] == "PUBLISHES"
    }
    names = {r["name"] for r in neo4j_empty.execute_query("SHOW CONSTRAINTS YIELD name").records}
    assert "tk_documentpublicatie_id" in names  # its constraint, created before the load


# -- a wrong kind fails setup ---------------------------------------------------------------------------


def _served_as_date() -> Dataset:
    """A replay dataset whose $metadata says ``Zaak.GestartOp`` is an ``Edm.Date`` (the table: DATETIME)."""
    zaak = ENTITIES["Zaak"]
    wrong = dataclasses.replace(zaak, properties={**zaak.properties, "GestartOp": Kind.DATE})
    return Dataset(entities=table_with(wrong))


def test_a_wrongly_typed_property_is_reported_and_stored_by_its_served_type():
    with replay(_served_as_date()) as server:
        client = make_client(server.url)
        schema = client.check_metadata(requirements())  # a scalar's type is not fatal
        zaak = served_entity(ENTITIES["Zaak"], schema, client.profile)
        report = model_report([ENTITIES["Zaak"]], schema, client.profile, client.root)
    assert zaak.all_properties["GestartOp"] is Kind.DATE  # the served EDM type decides
    assert report.entities["Zaak"].type_changed == {
        "GestartOp": {"reference": "Edm.DateTimeOffset", "served": "Edm.Date"}
    }
    # the other way round: a table that says DATE where the served $metadata says Edm.DateTimeOffset
    zaak = ENTITIES["Zaak"]
    says_date = dataclasses.replace(zaak, properties={**zaak.properties, "Termijn": Kind.DATE})
    with replay(Dataset.generate(5, seed=1, sets=("Zaak",))) as server:
        client = make_client(server.url)
        assert served_entity_of(client, says_date).all_properties["Termijn"] is Kind.DATETIME


def _watermark_as_date() -> Dataset:
    """A replay dataset whose $metadata says ``Zaak.ApiGewijzigdOp`` is an ``Edm.Date``."""
    zaak = ENTITIES["Zaak"]
    props = {**zaak.all_properties, "ApiGewijzigdOp": Kind.DATE}
    wrong = dataclasses.replace(zaak, properties=props, implicit_timestamps=False)
    return Dataset(entities=table_with(wrong))


def test_a_wrongly_typed_watermark_fails_the_metadata_check():
    with replay(_watermark_as_date()) as server:
        with pytest.raises(MetadataMismatch) as err:
            make_client(server.url).check_metadata(requirements(["Zaak"]))
    assert err.value.problems == [
        "Zaak: property 'ApiGewijzigdOp' is Edm.Date in $metadata, but the entity table expects "
        "Edm.DateTimeOffset"
    ]


def test_a_wrongly_typed_watermark_fails_setup(monkeypatch, tmp_path):
    with replay(_watermark_as_date()) as server:
        monkeypatch.setenv("TK_API_BASE_URL", server.url)
        monkeypatch.setenv("TK_API_PROFILE", "v4/2.0")
        monkeypatch.setenv("TK_API_MAX_RETRIES", "1")
        with pytest.raises(MetadataMismatch) as err:
            pipeline.prepare_run(
                dag_id="tk_ingest",
                run_id="manual__wrong_kind",
                conf={},
                params={"entities": ["Zaak"], "start_date": "2024-01-01"},
                data_interval_start=None,
                data_interval_end=None,
                now=datetime.now(UTC),
                checkpoint_base=str(tmp_path),
            )
    message = str(err.value)
    assert "Zaak" in message and "'ApiGewijzigdOp'" in message
    assert "Edm.Date in $metadata" in message and "expects Edm.DateTimeOffset" in message
    assert not list(tmp_path.iterdir())  # setup stopped before it opened a checkpoint run
