"""The reconcile task of tk_ingest: real Neo4j, the offline TK API over HTTP, `airflow dags test`.

* after a full load the counts are equal: the task passes and its result (every entity of the table,
  Neo4j = API = the dataset's live rows) is kept with the checkpoint run, shown by
  `tk-checkpoint show` (text and --json) and the dashboard's run page;
* a Zaak node deleted behind the loader's back (and a placeholder added) fails the next run's
  reconcile with the table naming Zaak and both counts; the placeholder is counted, not loaded.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from datetime import date, timedelta
from pathlib import Path

import pytest

from include.loaders.entities import ENTITIES
from include.tk_replay.dataset import Dataset
from include.tk_replay.server import ReplayServer
from tests.test_dag import airflow_env, dags_test, first_day
from tests.test_web import _app

TK_CHECKPOINT = str(Path(sys.executable).parent / "tk-checkpoint")


@pytest.fixture(scope="module")
def dataset() -> Dataset:
    return Dataset.generate(300, seed=23)


def _show(run_id: str, base: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [TK_CHECKPOINT, "show", "--run-id", run_id, "--base", str(base), *extra],
        capture_output=True,
        text=True,
        timeout=60,
    )


def _latest_run(base: Path) -> str:
    from tk_checkpoint import CheckpointManager

    return CheckpointManager(str(base)).list_runs()[0]["run_id"]


def test_reconcile_passes_then_fails_on_a_node_deleted_behind_the_loaders_back(
    airflow_db, neo4j_empty, dataset, tmp_path
):
    from fastapi.testclient import TestClient

    live = {name: len(dataset.live_ids(name)) for name in ENTITIES}
    with ReplayServer(dataset) as server:
        env = airflow_env(server.url, tmp_path)
        proc = dags_test({"start_date": first_day(dataset), "window_days": 3660}, env)
        out = proc.stdout + proc.stderr
        assert proc.returncode == 0, out[-4000:]

        run_id = _latest_run(tmp_path)
        shown = _show(run_id, tmp_path, "--json")
        assert shown.returncode == 0, shown.stderr
        rec = json.loads(shown.stdout)["reconciliation"]
        assert rec["ok"] is True and rec["run_id"] == run_id
        rows = {r["entity"]: r for r in rec["entities"]}
        assert set(rows) == set(ENTITIES)
        for name, row in rows.items():
            assert row["neo4j"] == row["api"] == live[name], row
            assert row["difference"] == 0 and row["placeholders"] == 0 and row["ok"] is True

        text = _show(run_id, tmp_path).stdout
        assert f"all {len(ENTITIES)} entities within" in text
        zaak_line = next(line for line in text.splitlines() if line.strip().startswith("Zaak "))
        assert zaak_line.split()[:4] == ["Zaak", str(live["Zaak"]), str(live["Zaak"]), "+0"]

        # behind the loaders' back: one Zaak gone, one placeholder Document (an edge's target, only `id`)
        gone = sorted(dataset.live_ids("Zaak"))[0].lower()
        neo4j_empty.execute_query("MATCH (z:Zaak {id: $id}) DETACH DELETE z", id=gone)
        neo4j_empty.execute_query("CREATE (:Document {id: 'placeholder-without-a-row'})")

        # a window before the first change: the loaders write nothing, the reconciliation sees the graph
        day = date.fromisoformat(first_day(dataset))
        conf = {
            "start_date": (day - timedelta(days=2)).isoformat(),
            "end_date": (day - timedelta(days=1)).isoformat(),
            "reconcile_tolerance": 0,
        }
        proc = dags_test(conf, env)
        out = proc.stdout + proc.stderr
        assert proc.returncode != 0, out[-4000:]
        assert "Neo4j and the TK API differ by more than 0.00% for Zaak:" in out, out[-4000:]
        table_row = re.search(
            rf"^\s*Zaak\s+{live['Zaak'] - 1}\s+{live['Zaak']}\s+-1\s+[\d.]+\s+0\s+OVER$", out, re.M
        )
        assert table_row, out[-4000:]

        run_id = _latest_run(tmp_path)
        rec = json.loads(_show(run_id, tmp_path, "--json").stdout)["reconciliation"]
        rows = {r["entity"]: r for r in rec["entities"]}
        assert rec["ok"] is False and rec["tolerance"] == 0
        assert rows["Zaak"]["neo4j"] == live["Zaak"] - 1 and rows["Zaak"]["api"] == live["Zaak"]
        assert rows["Zaak"]["ok"] is False and rows["Zaak"]["share"] == pytest.approx(
            1 / live["Zaak"], abs=1e-6
        )
        assert rows["Document"]["placeholders"] == 1  # counted apart: the loaded Documents still match
        assert rows["Document"]["neo4j"] == live["Document"] and rows["Document"]["ok"] is True
        assert [name for name, row in rows.items() if not row["ok"]] == ["Zaak"]

    client = TestClient(_app(tmp_path), root_path="/tk-checkpoints")
    page = client.get(f"/runs/{run_id}")
    assert page.status_code == 200
    html = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", page.text))
    assert f"1 of {len(ENTITIES)} entities over" in html
    assert f"Zaak {live['Zaak'] - 1} {live['Zaak']} -1" in html
    detail = client.get(f"/api/runs/{run_id}").json()
    assert detail["reconciliation"] == rec  # the dashboard's JSON is the CLI's


def test_a_damaged_reconciliation_file_is_shown_as_damaged(tmp_path, capsys):
    from fastapi.testclient import TestClient
    from tk_checkpoint import CheckpointManager
    from tk_checkpoint.cli import main

    run_id = "manual__damaged_reconciliation"
    CheckpointManager(str(tmp_path)).start_new_run(run_id, dag_id="tk_ingest")
    doc = {"schema_version": 1, "kind": "tk_checkpoint.reconciliation", "run_id": run_id, "checked_at": "x"}
    doc.update(scope="whole set", tolerance=0.01, ok=True, entities=[{"entity": "Zaak", "neo4j": "lots"}])
    (tmp_path / run_id / "reconciliation.json").write_text(json.dumps(doc))

    assert main(["show", "--run-id", run_id, "--base", str(tmp_path), "--json"]) == 0
    rec = json.loads(capsys.readouterr().out)["reconciliation"]
    assert rec["state"] == "damaged"
    assert "reconciliation.json is damaged: Zaak: field 'neo4j' is 'lots'" in rec["error"]
    assert main(["show", "--run-id", run_id, "--base", str(tmp_path)]) == 0
    assert "Reconciliation: DAMAGED" in capsys.readouterr().out

    client = TestClient(_app(tmp_path), root_path="/tk-checkpoints")
    page = client.get(f"/runs/{run_id}")
    assert page.status_code == 200 and "field &#39;neo4j&#39; is &#39;lots&#39;" in page.text
    assert client.get(f"/api/runs/{run_id}").json()["reconciliation"] == rec
