"""The model follows the live ``$metadata`` (issue 10, deliverable 2).

Keys and relationships stay declared in the entity table; the scalar properties of each node come from the
``$metadata`` the server publishes (:mod:`include.loaders.model`). Against an offline server whose
``$metadata`` renames 5 and drops 10 scalar properties of the five entities and adds one (``drift=``,
``drops=`` and a dataset with one property more than the loaders' table), with the explicit profiles v4/2.0
and v5: setup reports what is missing, renamed and new (its log, the checkpoint run, ``tk-checkpoint show``
text and ``--json``, the dashboard's run page), every entity loads through the DAG's task functions with
no failed row, dropped properties are absent from the nodes, renamed ones are stored under the served
name, the new one is stored, no request pages by ``$skip``, and both profiles give the same graph. A
renamed foreign key still stops setup before anything is loaded. Unit tests cover the mapping itself:
kinds from EDM types, names, the profile's known renames, what is never a scalar, and the writer's
query cache.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from datetime import UTC, datetime

import pytest
from fastapi.testclient import TestClient
from tk_checkpoint import CheckpointManager
from tk_checkpoint.cli import main as checkpoint_cli
from tk_checkpoint.web import run_page

from include.loaders.api import MetadataMismatch
from include.loaders.api_metadata import EntityTypeInfo, ODataSchema, reference_schema
from include.loaders.api_profiles import PROFILES
from include.loaders.entities import CORE_ENTITIES, ENTITIES, Kind, property_name, requirements, table_with
from include.loaders.graph import GraphWriter, PreparedItem
from include.loaders.model import model_report, served_entity
from include.loaders.pipeline import prepare_run, run_loader
from include.tk_replay.dataset import Dataset
from include.tk_replay.faults import FaultConfig
from include.tk_replay.server import ReplayServer
from tests.loader_fixtures import dump_graph
from tests.test_web import _app

# Five renames the profiles do not know (canonical -> served), one per entity: the rename hints find each.
DRIFT = {
    "Zaak": {"Titel": "ZaakTitel"},
    "Document": {"Onderwerp": "DocumentOnderwerp"},
    "Vergadering": {"Zaal": "VergaderZaal"},
    "Agendapunt": {"Onderwerp": "AgendapuntOnderwerp"},
    "Activiteit": {"Locatie": "ActiviteitLocatie"},
}
# Ten dropped scalar properties, two per entity, of several kinds (in the reference's order).
DROPS = {
    "Zaak": ["Afgedaan", "Kabinetsappreciatie"],
    "Document": ["Kamer", "ContentType"],
    "Vergadering": ["VergaderingNummer", "Sluiting"],
    "Agendapunt": ["Volgorde", "Noot"],
    "Activiteit": ["DatumSoort", "Besloten"],
}
NEW = ("Zaak", "Samenvatting")  # served (with values) but neither in the reference nor in the table
START, END = "2000-01-01", "2100-01-01"


def _dataset() -> Dataset:
    """Generated rows of the five entities (and Verslag), whose Zaak has one property the table lacks."""
    zaak = ENTITIES["Zaak"]
    more = dataclasses.replace(zaak, properties={**zaak.properties, NEW[1]: Kind.TEXT})
    return Dataset.generate(60, seed=7, entities=table_with(more))


@pytest.fixture(scope="module")
def dataset() -> Dataset:
    return _dataset()


def _values(ds: Dataset, entity: str, prop: str) -> dict[str, object]:
    """Id -> the dataset's value of ``prop`` for the live rows of ``entity`` that have one."""
    rows = ds.rows[entity].values()
    return {r["Id"]: r[prop] for r in rows if not r.get("Verwijderd") and r.get(prop) is not None}


def _setup_and_load(server: ReplayServer, profile: str, base: str, run_id: str, monkeypatch) -> dict:
    """``setup`` and every core loader task, as the DAG runs them; the loaders' summaries."""
    monkeypatch.setenv("TK_API_BASE_URL", server.url)
    monkeypatch.setenv("TK_API_PROFILE", profile)
    monkeypatch.setenv("TK_API_MAX_RETRIES", "1")
    params = {"entities": list(CORE_ENTITIES), "start_date": START, "end_date": END}
    run = dict(dag_id="tk_ingest", run_id=run_id, checkpoint_base=base)
    window = prepare_run(
        **run, conf={}, params=params, data_interval_start=None, data_interval_end=None, now=datetime.now(UTC)
    )
    return {
        name: run_loader(
            **run,
            entity=name,
            task_id=ENTITIES[name].loader,
            map_index=-1,
            try_number=1,
            params=params,
            window=window,
        )
        for name in CORE_ENTITIES
    }


def test_a_drifted_api_loads_every_entity_and_reports_what_changed(
    neo4j_empty, dataset, tmp_path, monkeypatch, capture_logs, capsys
):
    ds = dataset
    for entity, props in DROPS.items():  # the data has values for what the server no longer serves
        assert all(_values(ds, entity, p) for p in props), entity
    graphs = {}
    for profile in ("v4/2.0", "v5"):
        neo4j_empty.execute_query("MATCH (n) DETACH DELETE n")
        logs = capture_logs("include.loaders.pipeline")
        logs.clear()
        base, run_id = str(tmp_path / profile.replace("/", "_")), "manual__drifted"
        # max_skip=0: a request with a $skip answers HTTP 500, so a loader that paged by $skip fails here
        server = ReplayServer(ds, drift=DRIFT, drops=DROPS, faults=FaultConfig(max_skip=0))
        server.start()
        try:
            summaries = _setup_and_load(server, profile, base, run_id, monkeypatch)
        finally:
            server.stop()

        # every entity loads, no row fails
        for name, summary in summaries.items():
            assert summary["failed"] == 0, (profile, name)
            assert summary["processed"] == len(ds.rows[name]), (profile, name)
            live = len(ds.live_ids(name))
            count = neo4j_empty.execute_query(
                f"MATCH (n:{name}) WHERE n.apiGewijzigdOp IS NOT NULL RETURN count(n)"
            )
            assert count.records[0][0] == live, (profile, name)

        # dropped: absent from every node; renamed: under the served name; new: stored
        for entity, props in DROPS.items():
            for prop in props:
                q = f"MATCH (n:{entity}) WHERE n.`{property_name(prop)}` IS NOT NULL RETURN count(n)"
                assert neo4j_empty.execute_query(q).records[0][0] == 0, (profile, entity, prop)
        for entity, renames in DRIFT.items():
            for canonical, served in renames.items():
                new_name, old_name = property_name(served), property_name(canonical)
                q = f"MATCH (n:{entity}) RETURN n.id AS id, n.`{new_name}` AS v, n.`{old_name}` AS old"
                got = {r["id"]: r["v"] for r in neo4j_empty.execute_query(q).records if r["v"] is not None}
                assert got == _values(ds, entity, canonical), (profile, entity, served)
                assert all(r["old"] is None for r in neo4j_empty.execute_query(q).records)
        new_name = property_name(NEW[1])
        q = f"MATCH (n:{NEW[0]}) WHERE n.`{new_name}` IS NOT NULL RETURN n.id AS id, n.`{new_name}` AS v"
        assert {r["id"]: r["v"] for r in neo4j_empty.execute_query(q).records} == _values(ds, *NEW)
        numbers = neo4j_empty.execute_query("MATCH (d:Document) RETURN d.id AS id, d.documentNummer AS v")
        # v5 serves it as Nummer: a rename the profile knows, stored under the canonical name
        assert {r["id"]: r["v"] for r in numbers.records if r["v"]} == _values(
            ds, "Document", "DocumentNummer"
        )

        # setup's log: one WARNING line per entity that differs, naming what is missing and renamed
        warnings = [r.getMessage() for r in logs.records if r.levelno == logging.WARNING]
        for entity, props in DROPS.items():
            line = next(m for m in warnings if f"model: {entity}:" in m)
            assert f"2 missing, not stored ({', '.join(props)})" in line, line
            ((canonical, served),) = DRIFT[entity].items()
            assert f"{canonical} -> {served} (likely)" in line, line
        assert f"1 new ({NEW[1]})" in next(m for m in warnings if "model: Zaak:" in m)

        # the checkpoint run keeps the report: tk-checkpoint show --json, the text, the dashboard
        capsys.readouterr()  # what the tasks printed
        assert checkpoint_cli(["show", "--run-id", run_id, "--base", base, "--json"]) == 0
        shown = json.loads(capsys.readouterr().out)["api_model"]
        assert shown["profile"] == profile and shown["service_root"] == server.service_root(profile)
        for entity, props in DROPS.items():
            model = shown["entities"][entity]
            assert model["missing"] == props, (profile, entity)
            ((canonical, served),) = DRIFT[entity].items()
            assert model["renamed"][canonical] == {"served": served, "known": False}
            assert property_name(served) in model["stored"]
            assert not set(map(property_name, props)) & set(model["stored"])
        assert NEW[1] in shown["entities"]["Zaak"]["new"]
        if profile == "v5":
            assert shown["entities"]["Document"]["renamed"]["DocumentNummer"] == {
                "served": "Nummer",
                "known": True,
            }
            assert "VoortouwCommissieNaam" in shown["entities"]["Activiteit"]["new"]
        assert checkpoint_cli(["show", "--run-id", run_id, "--base", base]) == 0
        text = capsys.readouterr().out
        assert f"API model (profile {profile} at {server.service_root(profile)}" in text
        assert "  Agendapunt: 2 missing, not stored (Volgorde, Noot)" in text
        assert TestClient(_app(base)).get(f"/api/runs/{run_id}").json()["api_model"] == shown  # JSON API
        html = run_page(CheckpointManager(base), run_id, "/")
        assert "API model" in html and "2 missing, not stored (DatumSoort, Besloten)" in html
        graphs[profile] = dump_graph(neo4j_empty)
    assert graphs["v4/2.0"] == graphs["v5"]  # the same graph through either version


def test_a_renamed_foreign_key_stops_setup_before_loading(neo4j_empty, dataset, tmp_path, monkeypatch):
    drift = {**DRIFT, "Agendapunt": {"Activiteit_Id": "ActiviteitId"}}
    for profile in ("v4/2.0", "v5"):
        with ReplayServer(dataset, drift=drift, drops=DROPS) as server:
            with pytest.raises(MetadataMismatch) as err:
                _setup_and_load(server, profile, str(tmp_path), "manual__fk", monkeypatch)
        assert err.value.problems == [
            "Agendapunt: property 'Activiteit_Id' is missing (renamed to 'ActiviteitId'?)"
        ], profile
        assert "nothing was loaded" in str(err.value)
    assert neo4j_empty.execute_query("MATCH (n) RETURN count(n)").records[0][0] == 0
    assert not list(tmp_path.iterdir())  # no checkpoint run was opened


# -- the mapping, without a server ------------------------------------------------------------------------


def _schema(entity: str, props: dict[str, str], navigations: dict[str, str] | None = None) -> ODataSchema:
    """A served model with one entity type: the key, the flag, the watermark and ``props``."""
    base = {"Id": "Edm.Guid", "Verwijderd": "Edm.Boolean", "ApiGewijzigdOp": "Edm.DateTimeOffset"}
    navs = navigations or {}
    info = EntityTypeInfo(entity, ("Id",), {**base, **props}, navs, frozenset(navs))
    return ODataSchema({entity: info})


def test_kinds_follow_the_edm_types_and_keep_the_tables_special_kinds():
    served = {
        "Titel": "Edm.String",
        "Kamer": "Edm.Int64",
        "Volgnummer": "Edm.Int32",  # INT_OPT in the table, and the served type agrees: kept
        "Bedrag": "Edm.Decimal",
        "Gewicht": "Edm.Double",
        "Afgedaan": "Edm.Boolean",
        "GestartOp": "Edm.Date",  # DATETIME in the table, Edm.Date served: the served type decides
        "Termijn": "Edm.DateTimeOffset",
        "Bestand": "Edm.Binary",  # no kind: reported, not stored
        "Eigenaar_Id": "Edm.Guid",  # a foreign key to something outside the graph: never a scalar
    }
    zaak = served_entity(ENTITIES["Zaak"], _schema("Zaak", served), PROFILES["v4/2.0"])
    assert dict(zaak.all_properties) == {
        "ApiGewijzigdOp": Kind.DATETIME,
        "Titel": Kind.TEXT,
        "Kamer": Kind.INT,
        "Volgnummer": Kind.INT_OPT,
        "Bedrag": Kind.DECIMAL,
        "Gewicht": Kind.FLOAT,
        "Afgedaan": Kind.BOOL,
        "GestartOp": Kind.DATE,
        "Termijn": Kind.DATETIME,
    }
    assert zaak.select[:2] == ["Id", "Verwijderd"] and "Bestand" not in zaak.select
    assert zaak.relationships == ENTITIES["Zaak"].relationships and zaak.loader == "load_zaken"
    model = model_report([ENTITIES["Zaak"]], _schema("Zaak", served), PROFILES["v4/2.0"]).entities["Zaak"]
    assert model.skipped == {"Bestand": "Edm.Binary"}
    assert model.type_changed == {"GestartOp": {"reference": "Edm.DateTimeOffset", "served": "Edm.Date"}}
    assert set(model.new) == {"Kamer", "Bedrag", "Gewicht", "Bestand", "Eigenaar_Id"}
    assert "GewijzigdOp" in model.missing and "Nummer" in model.missing and "Titel" not in model.missing
    assert model.stored["volgnummer"] == "Volgnummer" and "bestand" not in model.stored


def test_a_known_rename_is_stored_under_its_canonical_name():
    xml = ReplayServer(Dataset()).metadata("v5")  # the v5 of the profile table, not started
    schema = ODataSchema.from_xml(xml)
    document = served_entity(ENTITIES["Document"], schema, PROFILES["v5"])
    assert set(document.columns) == set(ENTITIES["Document"].columns)  # names, graph properties, kinds
    assert "documentNummer" in dict((g, a) for a, g, _ in document.columns)
    model = model_report([ENTITIES["Document"]], schema, PROFILES["v5"]).entities["Document"]
    assert model.renamed == {
        "DocumentNummer": {"served": "Nummer", "known": True},
        "Volgnummer": {"served": "Ondernummer", "known": True},
    }
    assert model.stored["documentNummer"] == "Nummer" and model.stored["volgnummer"] == "Ondernummer"
    assert not model.missing and not model.new
    # and v4/2.0 serves exactly the reference: nothing to report for any entity
    v4 = ODataSchema.from_xml(ReplayServer(Dataset()).metadata("v4/2.0"))
    assert model_report(ENTITIES.values(), v4, PROFILES["v4/2.0"]).matches_reference


def test_keys_flags_and_the_tables_foreign_keys_are_never_scalars():
    agendapunt = ENTITIES["Agendapunt"]
    ref = reference_schema().entity_sets["Agendapunt"]
    served = served_entity(agendapunt, ODataSchema({"Agendapunt": ref}), PROFILES["v4/2.0"])
    names = set(served.all_properties)
    assert not names & {"Id", "Verwijderd", "Activiteit_Id"}
    assert served.select.count("Activiteit_Id") == 1  # requested once, as the edge's foreign key
    assert names == set(agendapunt.all_properties)


def test_only_what_the_load_needs_is_required():
    req = requirements(["Agendapunt"])["Agendapunt"]
    assert set(req.properties) == {"Id", "Verwijderd", "ApiGewijzigdOp", "Activiteit_Id"}
    assert req.types["Activiteit_Id"] == "Edm.Guid" and req.types["ApiGewijzigdOp"] == "Edm.DateTimeOffset"
    assert set(requirements(["Zaak"])["Zaak"].navigations) == set(ENTITIES["Zaak"].navigations)
    assert "Agendapunt" in requirements(["Zaak"])["Zaak"].navigations


def test_the_writer_builds_its_query_from_the_served_model(neo4j_empty):
    """One writer, two served models of one entity: the second's DATETIME property is written as one
    (a query cached by the entity's name alone would not set it at all)."""
    vergadering = ENTITIES["Vergadering"]
    without = served_entity(vergadering, _schema("Vergadering", {"Titel": "Edm.String"}), PROFILES["v4/2.0"])
    with_sluiting = served_entity(
        vergadering,
        _schema("Vergadering", {"Titel": "Edm.String", "Sluiting": "Edm.DateTimeOffset"}),
        PROFILES["v4/2.0"],
    )
    writer = GraphWriter(neo4j_empty)
    rels: dict[str, list[str]] = {}
    writer.write_batch(without, [PreparedItem(id="v-1", props={"titel": "a"}, rels=rels)])
    t = {"sluiting": "2025-01-02T03:04:05Z", "apiGewijzigdOp": "2025-01-02T03:04:05Z"}
    writer.write_batch(with_sluiting, [PreparedItem(id="v-2", props={"titel": "b"}, temporals=t, rels=rels)])
    row = neo4j_empty.execute_query(
        "MATCH (v:Vergadering {id: 'v-2'}) RETURN v.sluiting AS s, v.titel AS t"
    ).records[0]
    assert row["t"] == "b" and row["s"] is not None and row["s"].year == 2025


# -- the offline server's drops= ----------------------------------------------------------------------


def test_a_dropped_property_is_gone_from_metadata_data_and_queries(dataset):
    """``ReplayServer(drops=)``: what the server does not serve, it does not accept either (HTTP 400
    naming the property, as for any unknown name), on every profile; a renamed one only by its new name."""
    import requests

    with ReplayServer(dataset, drift=DRIFT, drops=DROPS) as server:
        for profile in ("v4/2.0", "v5"):
            root = server.service_root(profile)
            zaak = ODataSchema.from_xml(requests.get(f"{root}/$metadata", timeout=10).text).entity_sets[
                "Zaak"
            ]
            assert not {"Afgedaan", "Kabinetsappreciatie", "Titel"} & set(zaak.properties)
            assert zaak.properties["ZaakTitel"] == "Edm.String"
            row = requests.get(f"{root}/Zaak?$top=1", timeout=10).json()["value"][0]
            assert "Afgedaan" not in row and "Titel" not in row and "ZaakTitel" in row
            for query in ("$select=Id,Afgedaan", "$filter=Afgedaan eq true", "$orderby=Kabinetsappreciatie"):
                answer = requests.get(f"{root}/Zaak?{query}", timeout=10)
                assert answer.status_code == 400, (profile, query)
                message = answer.json()["error"]["message"]
                assert "Could not find a property named" in message and "on type" in message
            assert requests.get(f"{root}/Zaak?$select=Id,ZaakTitel", timeout=10).status_code == 200


def test_the_replay_command_refuses_a_malformed_drop(capsys):
    import signal

    from include.tk_replay.__main__ import main

    handler = signal.getsignal(signal.SIGTERM)  # main installs its own
    try:
        assert main(["--drop", "Zaak"]) == 2
    finally:
        signal.signal(signal.SIGTERM, handler)
    assert "--drop wants TYPE.PROP, e.g. Zaak.Titel, got 'Zaak'" in capsys.readouterr().err
