"""Clear and resume through a real `airflow standalone` (scheduler, api-server, LocalExecutor).

Trigger with conf by the CLI; the Zaak loader fails after N items (the offline API refuses every page
beyond item N) while the other loaders succeed; `tk-checkpoint resume` clears it through the REST API; the
run ends in success and the cleared task skipped the N items done before the failure.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from include.loaders.entities import ENTITIES
from include.tk_replay.dataset import Dataset
from include.tk_replay.faults import FaultConfig
from include.tk_replay.server import ReplayServer
from tests.loader_fixtures import ORIGINAL_SIX as NAMED
from tests.standalone_fixtures import running_standalone
from tests.test_dag import first_day

pytestmark = pytest.mark.standalone


TK_CHECKPOINT = str(Path(sys.executable).parent / "tk-checkpoint")


def test_clear_and_resume_through_airflow_standalone(neo4j_empty, tmp_path):
    from tk_checkpoint import CheckpointManager

    n = 300  # whole pages: a multiple of v5's page cap of 100 (auto finds v5 on the offline server)
    dataset = Dataset.generate(400, seed=5, sets=NAMED)
    checkpoints = tmp_path / "checkpoints"
    with ReplayServer(dataset, faults=FaultConfig(fail_after_entity="Zaak", fail_after_items=n)) as server:
        env = {
            "TK_API_BASE_URL": server.url,
            "TK_CHECKPOINT_BASE": str(checkpoints),
            "TK_TASK_RETRIES": "0",  # fail at once: this test resumes by hand
            "TK_API_MAX_RETRIES": "0",
            # no scheduled run beside ours: its reconcile would fail on the graph this test leaves short
            "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
        }
        with running_standalone(tmp_path / "airflow", env) as airflow:
            run_id = "manual__resume_test"
            conf = {"start_date": first_day(dataset), "window_days": 3660, "entities": list(NAMED)}
            airflow.airflow("dags", "trigger", "tk_ingest", "--conf", json.dumps(conf), "-r", run_id)
            airflow.api("PATCH", "/dags/tk_ingest", json={"is_paused": False}).raise_for_status()
            assert airflow.wait_for_run("tk_ingest", run_id, timeout=600) == "failed"

            tis = airflow.api("GET", f"/dags/tk_ingest/dagRuns/{run_id}/taskInstances?limit=1000").json()
            states = {ti["task_id"]: ti["state"] for ti in tis["task_instances"]}
            assert states.pop("load_zaken") == "failed"
            assert states.pop("setup") == "success"
            assert states.pop("cleanup") == "skipped"
            assert states.pop("reconcile") == "failed"  # Zaak short of the API's count: it says so
            named = {ENTITIES[e].loader for e in NAMED} | {"plan_" + ENTITIES[e].loader[5:] for e in NAMED}
            assert {states[t] for t in named if t in states} == {"success"}, states  # not stopped
            assert set(states.values()) <= {"success", "skipped"}, states  # the others: nothing to do

            mgr = CheckpointManager(str(checkpoints))
            assert mgr.get_run(run_id, loaders=False)["state"] == "failed"  # listener, in the scheduler
            failed_try = mgr.read_loader(run_id, "load_zaken.0")
            assert failed_try.state == "failed" and len(failed_try.processed) == n

            server.set_faults(None)
            env = dict(
                os.environ,
                TK_CHECKPOINT_BASE=str(checkpoints),
                AIRFLOW_API_URL=airflow.url,
                AIRFLOW_API_USERNAME="admin",
                AIRFLOW_API_PASSWORD=airflow.password,
            )
            resume = subprocess.run([TK_CHECKPOINT, "resume"], env=env, capture_output=True, text=True)
            assert resume.returncode == 0, resume.stderr
            assert f"of run {run_id}" in resume.stdout
            assert "load_zaken[0]" in resume.stdout

            assert airflow.wait_for_run("tk_ingest", run_id, timeout=600) == "success"
            state = mgr.read_loader(run_id, "load_zaken.0")
            assert state.state == "completed"
            assert len(state.processed) == len(dataset.rows["Zaak"])
            assert [t["outcome"] for t in state.tries] == ["failed", "completed"]
            assert state.tries[1]["skipped"] == n
            assert state.tries[1]["processed"] == len(dataset.rows["Zaak"]) - n
            assert mgr.get_run(run_id, loaders=False)["state"] == "completed"

            by_id = subprocess.run(
                [TK_CHECKPOINT, "resume", "--run-id", run_id], env=env, capture_output=True, text=True
            )
            assert by_id.returncode == 0 and "has no failed tasks to clear" in by_id.stdout

            # the checkpoint dashboard, mounted in the api-server by the plugin, behind Airflow's login
            dashboard = f"{airflow.url}/tk-checkpoints"
            assert requests.get(f"{dashboard}/", timeout=30).status_code == 401
            auth = {"Authorization": f"Bearer {airflow.token()}"}
            page = requests.get(f"{dashboard}/runs/{run_id}", headers=auth, timeout=30)
            assert (
                page.status_code == 200 and "load_zaken.0" in page.text and "Last failures" not in page.text
            )
            detail = requests.get(f"{dashboard}/api/runs/{run_id}", headers=auth, timeout=30).json()
            assert detail["state"] == "completed"
            assert detail["loaders"]["load_zaken.0"]["processed_count"] == len(dataset.rows["Zaak"])
            assert run_id in requests.get(f"{dashboard}/", headers=auth, timeout=30).text
            missing = requests.get(f"{dashboard}/api/runs/no_such_run", headers=auth, timeout=30)
            assert missing.status_code == 404 and "Run not found" in missing.json()["detail"]
            plugins = airflow.api("GET", "/plugins").json()["plugins"]
            routes = {v["url_route"] for p in plugins for v in p["external_views"]}
            assert {"tk-checkpoints", "tk-checkpoints-run"} <= routes  # Browse menu and the DAG run tab

            for other in airflow.api("GET", "/dags/tk_ingest/dagRuns").json()["dag_runs"]:
                airflow.wait_for_run("tk_ingest", other["dag_run_id"], timeout=300)  # every run has ended
            again = subprocess.run([TK_CHECKPOINT, "resume"], env=env, capture_output=True, text=True)
            assert again.returncode == 1 and "No incomplete runs found" in again.stdout


def test_tk_sync_runs_in_airflow_standalone_in_its_pool(neo4j_empty, tmp_path):
    """tk_sync under a real scheduler (LocalExecutor): the pool ``tk_sync`` created by the CLI as ``make run``
    does, a triggered run of three types completes, each type's nodes are the dataset's live rows and each
    cursor stands at the feed's head, caught up."""
    from tk_checkpoint.cursor import FeedCursors

    from include.loaders.sync import task_id_of
    from include.tk_replay.syncfeed_server import change_log

    types = ["Fractie", "Persoon", "Stemming"]
    dataset = Dataset.generate(150, seed=9)
    checkpoints = tmp_path / "checkpoints"
    with ReplayServer(dataset) as server:
        env = {
            "TK_API_BASE_URL": server.url,
            "TK_CHECKPOINT_BASE": str(checkpoints),
            "TK_SYNC_POOL": "tk_sync",
            "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",  # only the run this test triggers
        }
        with running_standalone(tmp_path / "airflow", env, dag_id="tk_sync") as airflow:
            airflow.airflow("pools", "set", "tk_sync", "4", "SyncFeed requests in flight (tk_sync)")
            run_id = "manual__sync_test"
            conf = json.dumps({"types": types})
            airflow.airflow("dags", "trigger", "tk_sync", "--conf", conf, "-r", run_id)
            airflow.api("PATCH", "/dags/tk_sync", json={"is_paused": False}).raise_for_status()
            assert airflow.wait_for_run("tk_sync", run_id, timeout=600) == "success"
            tis = airflow.api("GET", f"/dags/tk_sync/dagRuns/{run_id}/taskInstances?limit=1000").json()
            ran = {ti["task_id"]: ti for ti in tis["task_instances"] if ti["state"] == "success"}
            for name in types:
                assert ran[task_id_of(ENTITIES[name])]["pool"] == "tk_sync", name
        head = change_log(dataset).head
    for name in types:
        # loaded nodes (an edge to a type not synced leaves a bare target node with only its id)
        q = f"MATCH (n:{name}) WHERE n.apiGewijzigdOp IS NOT NULL RETURN count(n) AS c"
        assert neo4j_empty.execute_query(q).records[0]["c"] == len(dataset.live_ids(name)) > 0, name
        cursor = FeedCursors(str(checkpoints)).get(name)
        assert cursor is not None and cursor.skiptoken == head and cursor.caught_up_at is not None, name
