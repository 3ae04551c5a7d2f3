"""The tk_sync DAG under real Airflow 3.3 (`airflow dags test`), real Neo4j and the offline SyncFeed.

* the whole DAG builds the same graph as the loaders of the table, and every type's cursor is at the
  feed's head; a second run carries on from the cursors and writes only what changed (mutate());
* a task failed by the server's fail-after fault resumes on retry from its cursor: the two tries
  together wrote each entry once (checkpoint and cursor show it);
* the DAG's structure: one task per type of the table, retries, the in-flight limit.
"""

from __future__ import annotations

import json
import threading
import time

import pytest

from include.loaders.entities import ENTITIES
from include.loaders.sync import task_id_of
from include.tk_replay.dataset import Dataset
from include.tk_replay.faults import FaultConfig
from include.tk_replay.server import ReplayServer
from include.tk_replay.syncfeed_server import change_log
from tests.loader_fixtures import expected_edges, graph_edges
from tests.test_dag import AIRFLOW, airflow_env

TASKS = tuple(task_id_of(e) for e in ENTITIES.values())


def dags_test(conf: dict, env: dict[str, str], timeout: float = 900):
    import subprocess

    return subprocess.run(
        [AIRFLOW, "dags", "test", "tk_sync", "-c", json.dumps(conf)],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_dag_structure(airflow_db):
    from airflow.dag_processing.dagbag import DagBag

    from tests.conftest import ROOT

    bag = DagBag(dag_folder=str(ROOT / "dags"))
    assert bag.import_errors == {}
    dag = bag.get_dag("tk_sync")
    assert {t.task_id for t in dag.tasks} == {"setup", *TASKS}
    assert dag.max_active_tasks == 4 and dag.max_active_runs == 1
    for tid in TASKS:
        t = dag.get_task(tid)
        assert t.retries >= 1 and t.upstream_task_ids == {"setup"}


def test_dags_test_syncs_everything_then_carries_on_from_the_cursors(airflow_db, neo4j_empty, tmp_path):
    from tk_checkpoint import CheckpointManager
    from tk_checkpoint.cursor import FeedCursors

    ds = Dataset.generate(12, seed=31)
    with ReplayServer(ds) as server:
        env = airflow_env(server.url, tmp_path)
        proc = dags_test({}, env)
        assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
        edges = graph_edges(neo4j_empty)
        assert len(edges) == len(set(edges)) and set(edges) == expected_edges(ds)
        for label in ENTITIES:
            rec = neo4j_empty.execute_query(f"MATCH (n:{label}) RETURN count(n) AS c").records
            assert rec[0]["c"] == len(ds.live_ids(label)), label
        cursors = FeedCursors(str(tmp_path)).all()
        assert set(cursors) == set(ENTITIES)
        assert all(c.skiptoken == change_log(ds).head and c.behind == 0 for c in cursors.values())

        ds.mutate(seed=2)
        proc = dags_test({"types": ["Zaak", "Stemming"]}, env)
        assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    runs = CheckpointManager(str(tmp_path)).list_runs(details=True)
    assert [r["state"] for r in runs[:2]] == ["completed", "completed"]
    latest = runs[0]["loaders"]
    log = change_log(ds)
    for name in ("Zaak", "Stemming"):
        changed = {i for s, i in log.entries[cursors[name].skiptoken :] if s == name}
        assert latest[task_id_of(ENTITIES[name])]["processed_count"] == len(changed) > 0
    assert task_id_of(ENTITIES["Persoon"]) not in latest  # skipped: not among the run's types


def test_a_task_failed_by_fail_after_resumes_on_retry_without_repeats(airflow_db, neo4j_empty, tmp_path):
    from tk_checkpoint import CheckpointManager
    from tk_checkpoint.cursor import FeedCursors

    ds = Dataset.generate(600, seed=32, sets=("Stemming", "Besluit", "Persoon", "Fractie"))
    total = len(ds.rows["Stemming"])
    n = 250  # one feed page: the fault refuses every page that reaches beyond entry 250
    with ReplayServer(ds, faults=FaultConfig(fail_after_entity="Stemming", fail_after_items=n)) as server:

        def lift_fault_after_first_failure() -> None:
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline and not server.stats()["faults"].get("fail_after"):
                time.sleep(0.05)
            time.sleep(1.0)
            server.set_faults(None)

        lifter = threading.Thread(target=lift_fault_after_first_failure, daemon=True)
        lifter.start()
        env = airflow_env(
            server.url, tmp_path, TK_API_MAX_RETRIES="0", TK_TASK_RETRIES="1", TK_TASK_RETRY_DELAY_SECONDS="4"
        )
        proc = dags_test({"types": ["Stemming"]}, env)
        lifter.join(timeout=5)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert f"{n} entries committed by earlier tries of this run are not read again" in out
    manager = CheckpointManager(str(tmp_path))
    run = manager.list_runs(details=True)[0]
    state = manager.read_loader(run["run_id"], "sync_stemmingen")
    assert state.state == "completed" and len(state.processed) == total
    first, second = state.tries
    assert first["outcome"] == "failed" and first["processed"] == n
    assert second["outcome"] == "completed" and second["processed"] == total - n  # nothing repeated
    cursor = FeedCursors(str(tmp_path)).get("Stemming")
    assert cursor.skiptoken == change_log(ds).head and cursor.last_run_id == run["run_id"]
    ids = [r["id"] for r in neo4j_empty.execute_query("MATCH (s:Stemming) RETURN s.id AS id").records]
    assert len(ids) == len(set(ids)) == len(ds.live_ids("Stemming"))


@pytest.mark.parametrize(
    "conf, message",
    [
        ({"types": ["Stemmingen"]}, "'Stemmingen' is not one of"),
        ({"start": {"Persoon": -1}}, "-1 is less than the minimum of 0"),
    ],
)
def test_bad_conf_is_refused_at_trigger_time(airflow_db, conf, message):
    import subprocess
    from pathlib import Path

    env = airflow_env("http://127.0.0.1:9", Path("/nonexistent"))
    subprocess.run([AIRFLOW, "dags", "reserialize"], env=env, capture_output=True, check=True)
    proc = subprocess.run(
        [AIRFLOW, "dags", "trigger", "tk_sync", "--conf", json.dumps(conf)],
        env=env,
        capture_output=True,
        text=True,
    )
    out = proc.stdout + proc.stderr
    assert "ParamValidationError" in out, out[-3000:]
    assert message in out
