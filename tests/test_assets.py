"""The graph's Airflow Assets in a real `airflow standalone`: a loader's asset event triggers a DAG.

* every loader task declares its label's asset (derived from the entity table) as its one outlet;
* the example DAG `tk_on_zaak_changed` is scheduled on the Zaak asset and paused when created;
* unpaused, it runs when `tk_ingest`'s real `load_zaken` succeeds (offline TK API over HTTP, real Neo4j):
  the asset event names the loader and carries its counts and window in its extra, and the downstream
  task reports the same counts it read from its triggering events.
"""

from __future__ import annotations

import json
import re
import time

import pytest

from include.loaders.assets import EXTRA_COUNTS, graph_uri
from include.loaders.entities import ENTITIES
from include.tk_replay.dataset import Dataset
from include.tk_replay.server import ReplayServer
from tests.conftest import ROOT
from tests.standalone_fixtures import running_standalone
from tests.test_dag import first_day

DOWNSTREAM = "tk_on_zaak_changed"


def test_each_loader_declares_its_labels_asset():
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(ROOT / "dags"))
    assert bag.import_errors == {}
    ingest = bag.dags["tk_ingest"]
    outlets = {t.task_id: [a.uri for a in t.outlets] for t in ingest.tasks if t.outlets}
    assert outlets == {e.loader: [graph_uri(e.label)] for e in ENTITIES.values()}
    # the README's table of assets says the same
    readme = (ROOT / "README.md").read_text()
    rows = re.findall(r"^\| `(tk-graph://[^`]+)` \| `(\w+)` \|", readme, re.M)
    assert dict(rows) == {graph_uri(e.label): e.loader for e in ENTITIES.values()}
    downstream = bag.dags[DOWNSTREAM]
    assert downstream.is_paused_upon_creation is True
    assert [a.uri for a in downstream.timetable.asset_condition.objects] == [graph_uri("Zaak")]


def _downstream_runs(airflow) -> list[dict]:
    return airflow.api("GET", f"/dags/{DOWNSTREAM}/dagRuns").json()["dag_runs"]


@pytest.mark.standalone
def test_a_loaders_asset_event_triggers_the_downstream_dag(neo4j_empty, tmp_path):
    dataset = Dataset.generate(60, seed=31)
    with ReplayServer(dataset) as server:
        env = {"TK_API_BASE_URL": server.url, "TK_CHECKPOINT_BASE": str(tmp_path / "checkpoints")}
        with running_standalone(tmp_path / "airflow", env) as airflow:
            airflow.wait_for_dag(DOWNSTREAM)
            assert airflow.api("GET", f"/dags/{DOWNSTREAM}").json()["is_paused"] is True  # off by default
            airflow.api("PATCH", f"/dags/{DOWNSTREAM}", json={"is_paused": False}).raise_for_status()

            run_id = "manual__assets_test"
            conf = {"start_date": first_day(dataset), "window_days": 3660, "entities": ["Zaak"]}
            airflow.airflow("dags", "trigger", "tk_ingest", "--conf", json.dumps(conf), "-r", run_id)
            airflow.api("PATCH", "/dags/tk_ingest", json={"is_paused": False}).raise_for_status()
            assert airflow.wait_for_run("tk_ingest", run_id, timeout=300) == "success"
            for other in airflow.api("GET", "/dags/tk_ingest/dagRuns").json()["dag_runs"]:
                if other["dag_run_id"] != run_id:  # the scheduled run unpausing started: not needed here
                    path = f"/dags/tk_ingest/dagRuns/{other['dag_run_id']}"
                    airflow.api("PATCH", path, json={"state": "failed"}).raise_for_status()

            # the asset event of the real load_zaken task instance, with its counts
            events = airflow.api("GET", "/assets/events", params={"source_run_id": run_id}).json()
            (event,) = [e for e in events["asset_events"] if e["source_task_id"] == "load_zaken"]
            assert event["uri"] == graph_uri("Zaak") and event["source_map_index"] == 0
            extra = event["extra"]
            assert extra["processed"] == len(dataset.rows["Zaak"]) and extra["failed"] == 0
            assert extra["deleted"] == len(dataset.rows["Zaak"]) - len(dataset.live_ids("Zaak"))
            assert extra["window"]["start"].startswith(first_day(dataset)) and extra["run_id"] == run_id

            # the downstream run it triggered, and what its task read from the event
            deadline, mine = time.monotonic() + 120, None
            while mine is None and time.monotonic() < deadline:
                for run in _downstream_runs(airflow):
                    seen = airflow.api(
                        "GET", f"/dags/{DOWNSTREAM}/dagRuns/{run['dag_run_id']}/upstreamAssetEvents"
                    ).json()["asset_events"]
                    if any(e["id"] == event["id"] for e in seen):
                        mine = run, seen
                time.sleep(2)
            assert mine is not None, f"no {DOWNSTREAM} run was triggered by {event}"
            run, seen = mine
            assert run["run_type"] == "asset_triggered"
            assert airflow.wait_for_run(DOWNSTREAM, run["dag_run_id"], timeout=120) == "success"
            xcom = airflow.api(
                "GET",
                f"/dags/{DOWNSTREAM}/dagRuns/{run['dag_run_id']}/taskInstances/report_zaak_changes"
                "/xcomEntries/return_value",
                params={"deserialize": True},
            ).json()["value"]
            totals = xcom if isinstance(xcom, dict) else json.loads(xcom)
            assert totals == {k: sum(e["extra"][k] for e in seen) for k in EXTRA_COUNTS}
            assert totals["processed"] >= extra["processed"]
