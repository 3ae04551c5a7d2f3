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


def test_dagbag_imports_without_errors():
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(ROOT / "dags"))
    assert bag.import_errors == {}
    assert "tk_ingest" in bag.dag_ids


def test_neo4j_driver_packs_bolt_in_rust():
    """requirements.txt installs neo4j-rust-ext and the driver picks it up (bench/bench_load.py: the gain)."""
    from neo4j._codec.packstream import v1

    assert v1._rust_pack is not None and v1._rust_unpack is not None
