"""Benchmark: parallel backfill by dynamic task mapping — 4 windows against 1, in one Airflow.

    .venv/bin/python bench/bench_backfill.py [--n 20000] [--latency 0.5] [--windows 4]

Starts a real ``airflow standalone`` (LocalExecutor, parallelism 4) and the offline TK API with ``--latency``
seconds added to every page request (the real API takes seconds per page). Then, on an emptied graph each
time, triggers ``tk_ingest`` for the Zaak loader over the whole generated history:

1. baseline: ``window_days`` covering everything, i.e. one mapped task instance;
2. parallel: ``window_days`` such that the history splits into ``--windows`` sub-windows.

Prints each run's wall time (DAG-run start to end, from the REST API), the items per window and the
speed-up ratio. Needs the local Neo4j running (``make neo4j-start``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import socket
import sys
import tempfile
import time
from datetime import date, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "plugins")]

from include.tk_replay.dataset import Dataset  # noqa: E402
from include.tk_replay.faults import FaultConfig  # noqa: E402
from include.tk_replay.server import ReplayServer  # noqa: E402
from scripts.local_stack import Airflow  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wipe_neo4j() -> None:
    from neo4j import GraphDatabase

    uri = f"bolt://127.0.0.1:{os.environ.get('NEO4J_BOLT_PORT', '7687')}"
    auth = ("neo4j", os.environ.get("NEO4J_PASSWORD", "tk-local-password"))
    with GraphDatabase.driver(uri, auth=auth) as driver, driver.session() as session:
        session.run("MATCH (n) CALL (n) { DETACH DELETE n } IN TRANSACTIONS OF 10000 ROWS").consume()


def seconds(run: dict) -> float:
    return (
        datetime.fromisoformat(run["end_date"]) - datetime.fromisoformat(run["start_date"])
    ).total_seconds()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=20000, help="generated Zaak (default 20000)")
    p.add_argument("--latency", type=float, default=2.0, help="seconds added per page request (2.0)")
    p.add_argument("--windows", type=int, default=4, help="sub-windows of the parallel run (4)")
    a = p.parse_args()

    ds = Dataset.generate(a.n, seed=3, sets=("Zaak",))
    days = sorted({row["ApiGewijzigdOp"][:10] for row in ds.rows["Zaak"].values()})
    first, last = date.fromisoformat(days[0]), date.fromisoformat(days[-1]) + timedelta(days=1)
    span = (last - first).days
    print(f"{a.n} Zaak changed between {first} and {last} ({span} days); page latency {a.latency} s")

    home = Path(tempfile.mkdtemp(prefix="tk-bench-backfill-"))
    checkpoints = home / "checkpoints"
    from tk_checkpoint import CheckpointManager

    with ReplayServer(ds, faults=FaultConfig(latency=a.latency)) as server:
        airflow = Airflow(
            home / "airflow",
            port=free_port(),
            parallelism=max(4, a.windows),
            extra_env={
                "TK_API_BASE_URL": server.url,
                "TK_CHECKPOINT_BASE": str(checkpoints),
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow/airflow.db",
            },
        )
        airflow.airflow("db", "migrate")
        airflow.start()
        results = {}
        try:
            airflow.wait_for_dag("tk_ingest")
            for label, windows in (("1 window", 1), (f"{a.windows} windows", a.windows)):
                wipe_neo4j()
                conf = {
                    "start_date": first.isoformat(),
                    "end_date": last.isoformat(),
                    "entities": ["Zaak"],
                    "window_days": math.ceil(span / windows),
                }
                run_id = f"manual__bench_{windows}w_{int(time.time())}"
                airflow.airflow("dags", "trigger", "tk_ingest", "--conf", json.dumps(conf), "-r", run_id)
                # unpausing also schedules the latest daily run; triggering first puts ours ahead of it
                airflow.api("PATCH", "/dags/tk_ingest", json={"is_paused": False}).raise_for_status()
                state = airflow.wait_for_run("tk_ingest", run_id, timeout=3600)
                run = airflow.api("GET", f"/dags/tk_ingest/dagRuns/{run_id}").json()
                tis = airflow.api("GET", f"/dags/tk_ingest/dagRuns/{run_id}/taskInstances").json()
                load = [t for t in tis["task_instances"] if t["task_id"] == "load_zaken"]
                loaders = CheckpointManager(str(checkpoints)).get_run(run_id)["loaders"]
                per_window = [loaders[k]["processed_count"] for k in sorted(loaders)]
                load_span = (
                    max(datetime.fromisoformat(t["end_date"]) for t in load)
                    - min(datetime.fromisoformat(t["start_date"]) for t in load)
                ).total_seconds()
                results[windows] = (seconds(run), load_span)
                t0 = datetime.fromisoformat(run["start_date"])
                for t in sorted(load, key=lambda t: t["map_index"]):
                    start = (datetime.fromisoformat(t["start_date"]) - t0).total_seconds()
                    took = datetime.fromisoformat(t["end_date"]) - datetime.fromisoformat(t["start_date"])
                    print(f"    load_zaken[{t['map_index']}]: +{start:5.1f} s, {took.total_seconds():5.1f} s")
                print(
                    f"{label:>10}: run {state}, {seconds(run):7.1f} s (loaders {load_span:6.1f} s), "
                    f"{len(load)} mapped task(s), items per window {per_window}"
                )
        finally:
            airflow.stop()
    base, par = results[1], results[a.windows]
    print(
        f"\nspeed-up {a.windows} windows vs 1: {base[0] / par[0]:.2f}x (whole run), "
        f"{base[1] / par[1]:.2f}x (loader tasks only)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
