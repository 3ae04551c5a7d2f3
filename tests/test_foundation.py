"""The foundation: real Neo4j reached through Airflow's Neo4jHook, the DAG folder imports cleanly."""

from __future__ import annotations

import json
import os
import uuid

import pytest

from tests.conftest import ROOT


def test_neo4j_hook_writes_and_reads_a_node(neo4j_empty):
    from airflow.providers.neo4j.hooks.neo4j import Neo4jHook

    conn = json.loads(os.environ["AIRFLOW_CONN_NEO4J_DEFAULT"])
    assert conn["conn_type"] == "neo4j"  # the JSON form of the connection, by environment variable
    hook = Neo4jHook(conn_id="neo4j_default")
    marker = str(uuid.uuid4())
    hook.run("CREATE (:Probe {id: $id, n: 42})", {"id": marker})
    rows = hook.run("MATCH (p:Probe {id: $id}) RETURN p.n AS n", {"id": marker})
    assert rows == [{"n": 42}]
    version = hook.run("CALL dbms.components() YIELD name, versions RETURN versions[0] AS v")
    assert version[0]["v"].startswith("5.26")


def test_wrong_password_names_the_connection(neo4j_server, monkeypatch):
    from include.loaders.graph import connect

    conn = json.loads(os.environ["AIRFLOW_CONN_NEO4J_DEFAULT"])
    conn["password"] = "definitely-wrong"
    monkeypatch.setenv("AIRFLOW_CONN_NEO4J_DEFAULT", json.dumps(conn))
    with pytest.raises(Exception) as err:
        connect("neo4j_default")
    msg = str(err.value)
    assert "neo4j_default" in msg
    assert "authentication" in msg.lower()


def _connection_with_schema(monkeypatch, schema: str) -> None:
    conn = json.loads(os.environ["AIRFLOW_CONN_NEO4J_DEFAULT"])
    conn["schema"] = schema
    monkeypatch.setenv("AIRFLOW_CONN_NEO4J_DEFAULT", json.dumps(conn))


def test_the_connection_schema_names_the_database(neo4j_empty, monkeypatch):
    from include.loaders.graph import GraphWriter, connect, connection_database
    from include.loaders.settings import DEFAULT_CONN_ID

    assert DEFAULT_CONN_ID == "neo4j_default"
    assert connection_database(DEFAULT_CONN_ID) is None  # no schema: the server's default database
    _connection_with_schema(monkeypatch, "neo4j")
    assert connection_database(DEFAULT_CONN_ID) == "neo4j"
    with connect(DEFAULT_CONN_ID) as driver:
        GraphWriter(driver, database=connection_database(DEFAULT_CONN_ID)).ensure_constraints(["Zaak"])
        rows = driver.execute_query("SHOW CONSTRAINTS YIELD labelsOrTypes RETURN labelsOrTypes").records
    assert ["Zaak"] in [r["labelsOrTypes"] for r in rows]


def test_a_connection_naming_a_missing_database_fails_with_a_clear_error(neo4j_server, monkeypatch):
    from include.loaders.graph import Neo4jConnectionError, connect

    _connection_with_schema(monkeypatch, "nosuchdb")
    with pytest.raises(Neo4jConnectionError) as err:
        connect("neo4j_default")
    msg = str(err.value)
    assert "'neo4j_default'" in msg and "'nosuchdb'" in msg
    assert "schema" in msg and "it has: neo4j, system" in msg
    assert err.value.__cause__.code == "Neo.ClientError.Database.DatabaseNotFound"  # what the driver raised


def test_dagbag_imports_without_errors():
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(ROOT / "dags"))
    assert bag.import_errors == {}
    assert "tk_ingest" in bag.dag_ids


def test_neo4j_driver_packs_bolt_in_rust():
    """requirements.txt installs neo4j-rust-ext and the driver picks it up (bench/bench_load.py: the gain)."""
    from neo4j._codec.packstream import v1

    assert v1._rust_pack is not None and v1._rust_unpack is not None
