"""The tk_ingest DAG under real Airflow 3.3 (`airflow dags test`), real Neo4j and the offline TK API.

* the whole DAG builds the graph of the loaders' issue;
* a loader that fails persistently from item N fails its task after N items; its retry, with the
  fault gone, processes only the rest and logs that it skipped N; the checkpoint shows both tries;
* bad conf is refused at trigger time with the schema's message.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from include.loaders.entities import ENTITIES
from include.tk_replay.dataset import Dataset
from include.tk_replay.faults import FaultConfig
from include.tk_replay.server import ReplayServer
from tests.conftest import ROOT
from tests.loader_fixtures import expected_edges, graph_edges

AIRFLOW = str(Path(sys.executable).parent / "airflow")
# one Airflow task per entry of the entity table, named by its loader (the original tool's names)
LOADERS = tuple(e.loader for e in ENTITIES.values())


def first_day(ds: Dataset) -> str:
    return min(row["ApiGewijzigdOp"][:10] for rows in ds.rows.values() for row in rows.values())


def airflow_env(server_url: str, checkpoints: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "TK_API_BASE_URL": server_url,
            "TK_CHECKPOINT_BASE": str(checkpoints),
            "TK_API_MAX_RETRIES": "1",
            "TK_API_BACKOFF_BASE": "0.01",
            "TK_API_READ_TIMEOUT": "30",
            "PYTHONWARNINGS": "ignore",
            "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "plugins")]),
        }
    )
    env.update(extra)
    return env


def dags_test(conf: dict, env: dict[str, str], timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [AIRFLOW, "dags", "test", "tk_ingest", "-c", json.dumps(conf)],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def dataset() -> Dataset:
    return Dataset.generate(600, seed=11)


@pytest.fixture
def server(dataset):
    with ReplayServer(dataset) as srv:
        yield srv


def test_dags_test_builds_the_graph(airflow_db, neo4j_empty, server, dataset, tmp_path):
    from tk_checkpoint import CheckpointManager

    old = CheckpointManager(str(tmp_path))
    for i in range(3):  # earlier runs, for the maintenance task (cleanup_keep)
        old.start_new_run(f"manual__old_{i}", dag_id="tk_ingest")
        old.complete_run()
        time.sleep(0.01)
    conf = {"start_date": first_day(dataset), "window_days": 3660, "cleanup_keep": 2}
    proc = dags_test(conf, airflow_env(server.url, tmp_path))
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]

    edges = graph_edges(neo4j_empty)
    assert len(edges) == len(set(edges)), "duplicate relationships"
    assert set(edges) == expected_edges(dataset)
    for label in ENTITIES:
        records = neo4j_empty.execute_query(f"MATCH (n:{label}) RETURN count(n) AS c").records
        assert records[0]["c"] == len(dataset.live_ids(label)), label

    runs = CheckpointManager(str(tmp_path)).list_runs(details=True)
    assert [r["run_id"] for r in runs[1:]] == ["manual__old_2"]  # cleanup kept the newest 2 runs
    run = runs[0]
    assert run["dag_id"] == "tk_ingest"
    assert run["state"] == "completed"  # set by the plugin's listener on DAG-run success
    assert set(run["loaders"]) == {f"{t}.0" for t in LOADERS}
    assert all(s["state"] == "completed" for s in run["loaders"].values())
    zaken = run["loaders"]["load_zaken.0"]
    assert zaken["processed_count"] == len(dataset.rows["Zaak"])  # tombstones count as processed


def test_retry_skips_the_items_done_before_the_failure(airflow_db, neo4j_empty, server, dataset, tmp_path):
    from tk_checkpoint import CheckpointManager

    n = 250  # one v4/2.0 page: the fault fails every page beyond item N
    total = len(dataset.rows["Zaak"])
    assert total > n
    server.set_faults(FaultConfig(fail_after_entity="Zaak", fail_after_items=n))

    def lift_fault_after_first_failure() -> None:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not server.stats()["faults"].get("fail_after"):
            time.sleep(0.05)
        time.sleep(1.0)  # the try fails at its first refused page (no API retries in this test)
        server.set_faults(None)

    lifter = threading.Thread(target=lift_fault_after_first_failure, daemon=True)
    lifter.start()
    env = airflow_env(
        server.url,
        tmp_path,
        TK_API_MAX_RETRIES="0",
        TK_TASK_RETRIES="1",
        TK_TASK_RETRY_DELAY_SECONDS="4",
    )
    proc = dags_test({"start_date": first_day(dataset), "entities": ["Zaak"], "window_days": 3660}, env)
    lifter.join(timeout=5)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert f"Skipping {n} already-processed items" in out

    run = CheckpointManager(str(tmp_path)).list_runs(details=True)[0]
    state = CheckpointManager(str(tmp_path)).read_loader(run["run_id"], "load_zaken.0")
    assert state.state == "completed"
    assert len(state.processed) == total
    assert [t.get("try_number") for t in state.tries] == [1, 2]
    first, second = state.tries
    assert first["outcome"] == "failed" and first["processed"] == n
    assert second["outcome"] == "completed"
    assert second["skipped"] == n and second["processed"] == total - n

    ids = [r["id"] for r in neo4j_empty.execute_query("MATCH (z:Zaak) RETURN z.id AS id").records]
    assert len(ids) == len(set(ids)) == len(dataset.live_ids("Zaak"))


@pytest.mark.parametrize(
    "conf, message",
    [
        ({"start_date": "yesterday"}, "'yesterday' is not a 'date'"),
        ({"entities": ["Zaak", "DocumentPublicatie"]}, "'DocumentPublicatie' is not one of"),
        ({"window_days": 0}, "0 is less than the minimum of 1"),
    ],
)
def test_bad_conf_is_refused_at_trigger_time(airflow_db, conf, message):
    env = airflow_env("http://127.0.0.1:9", Path("/nonexistent"))
    subprocess.run([AIRFLOW, "dags", "reserialize"], env=env, capture_output=True, check=True)

    def runs() -> str:
        return subprocess.run(
            [AIRFLOW, "dags", "list-runs", "tk_ingest", "-o", "json"], env=env, capture_output=True, text=True
        ).stdout.count('"run_id"')

    before = runs()
    proc = subprocess.run(
        [AIRFLOW, "dags", "trigger", "tk_ingest", "--conf", json.dumps(conf)],
        env=env,
        capture_output=True,
        text=True,
    )
    out = proc.stdout + proc.stderr
    assert "ParamValidationError" in out, out[-3000:]
    assert message in out
    assert runs() == before  # no run was created


def test_dag_structure():
    from airflow.dag_processing.dagbag import DagBag

    dag = DagBag(dag_folder=str(ROOT / "dags")).dags["tk_ingest"]
    assert dag.catchup is False
    from airflow.sdk import CronDataIntervalTimetable

    # daily, with a real data interval [yesterday, today): the window a scheduled run loads
    assert isinstance(dag.timetable, CronDataIntervalTimetable)
    assert dag.timetable.expression == "0 0 * * *"
    loaders = [t for t in dag.tasks if t.task_id.startswith("load_")]
    assert Counter(t.task_id for t in loaders) == Counter(LOADERS)
    for t in loaders:
        assert t.retries >= 1 and t.retry_exponential_backoff
        # each loader waits only for its own plan task, which waits only for setup: loaders never
        # wait for each other, so a failed loader does not stop the others
        (plan,) = t.upstream_list
        assert plan.task_id == "plan_" + t.task_id.removeprefix("load_")
        assert {u.task_id for u in plan.upstream_list} == {"setup"}
    # the reconciliation runs once every loader has finished, whatever their outcome
    reconcile = dag.get_task("reconcile")
    assert {u.task_id for u in reconcile.upstream_list} == set(LOADERS)
    assert reconcile.trigger_rule == "all_done"
    assert {t.task_id for t in dag.tasks} == {"setup", "reconcile", "cleanup", *LOADERS} | {
        "plan_" + loader.removeprefix("load_") for loader in LOADERS
    }
    assert dag.params["start_date"] is None
