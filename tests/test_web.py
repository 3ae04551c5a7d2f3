"""The checkpoint dashboard's pages, rendered from real checkpoint files (the api-server side, with its
login, is exercised by tests/test_standalone.py)."""

from __future__ import annotations

import json
import re

import pytest

from tests.conftest import ROOT  # noqa: F401  (the Airflow test environment, before any plugin import)


@pytest.fixture
def manager(tmp_path):
    from tk_checkpoint import CheckpointManager, LoaderCheckpoint

    mgr = CheckpointManager(str(tmp_path))
    mgr.start_new_run(run_id="scheduled__2026-11-26T00:00:00+00:00", dag_id="tk_ingest")
    with LoaderCheckpoint(mgr, "load_zaken.0") as cp:
        cp.set_total_items(8)
        cp.mark_processed_many([f"z{i}" for i in range(6)])
        cp.mark_failed("z-bad", "Neo.ClientError: <script>alert(1)</script> & more")
        cp.save_progress()
    with LoaderCheckpoint(mgr, "load_documents.0") as cp:
        cp.mark_processed_many(["d1", "d2"])  # total not known yet
        cp.complete()
    return mgr


def _text(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


def test_runs_page_lists_runs_with_loader_progress(manager):
    from tk_checkpoint.web import runs_page

    html = runs_page(manager, "/tk-checkpoints/")
    text = _text(html)
    assert "<base href='/tk-checkpoints/'>" in html
    assert 'href="runs/scheduled__2026-11-26T00%3A00%3A00%2B00%3A00"' in html
    stamp = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d"
    assert re.search(rf"load_zaken\.0 in_progress {stamp} 6 / 8 1 75\.0%", text)
    assert re.search(rf"load_documents\.0 completed {stamp} 2 / - 0 total not known yet", text)
    assert "1 run(s)" in text and "tk_ingest" in text


def test_run_page_shows_loaders_tries_and_escaped_failures(manager):
    from tk_checkpoint.web import run_page

    html = run_page(manager, "scheduled__2026-11-26T00:00:00+00:00", "/tk-checkpoints/")
    text = _text(html)
    assert "<script>" not in html  # errors come from the data: escaped, never markup
    assert "Neo.ClientError: &lt;script&gt;alert(1)&lt;/script&gt; &amp; more" in html
    assert "Last failures (1 of 1)" in text and "z-bad" in text
    assert re.search(r"load_zaken\.0 in_progress 6 8 75\.0% 1 0", text)
    assert "id='load_zaken.0'" in html and "#load_zaken.0'" in html  # the loader links land on its section
    assert text.count("completed") >= 2  # the Documents loader, and its try's outcome


def test_damaged_loader_file_is_shown_not_hidden(manager, tmp_path):
    from tk_checkpoint.web import run_page, runs_page

    run_id = "scheduled__2026-11-26T00:00:00+00:00"
    snapshot = next(
        p for p in (tmp_path / run_id / "loaders").iterdir() if p.name.startswith("load_documents")
    )
    snapshot.write_text("{ not json")
    for html in (runs_page(manager, "/"), run_page(manager, run_id, "/")):
        assert "damaged" in html and "load_documents.0" in html


def test_no_runs_says_where_it_looked(tmp_path):
    from tk_checkpoint import CheckpointManager
    from tk_checkpoint.web import runs_page

    assert f"No runs found in <code>{tmp_path}" in runs_page(CheckpointManager(str(tmp_path)), "/")


def test_plugin_registers_views_and_builds_the_app_only_when_asked():
    import importlib
    import sys

    sys.modules.pop("tk_checkpoint.web", None)
    plugin_module = importlib.import_module("tk_checkpoint_plugin")
    plugin = plugin_module.TkCheckpointPlugin()
    assert {v["destination"] for v in plugin.external_views} == {"nav", "dag_run"}
    assert "tk_checkpoint.web" not in sys.modules  # the scheduler and the tasks never import FastAPI for it
    (app,) = plugin.fastapi_apps
    assert app["url_prefix"] == "/tk-checkpoints" and "tk_checkpoint.web" in sys.modules
    assert plugin.fastapi_apps[0]["app"] is app["app"]  # built once


RUN_ID = "scheduled__2026-11-26T00:00:00+00:00"


def _cli_json(capsys, *argv):
    from tk_checkpoint.cli import main

    main([*argv, "--json"])
    return json.loads(capsys.readouterr().out)


def _app(base):
    """The dashboard app with the api-server's login dependency answered as a logged-in reader."""
    from tk_checkpoint.web import create_app

    app = create_app(str(base))
    (login,) = app.router.dependencies
    app.dependency_overrides[login.dependency] = lambda: None
    return app


def test_json_api_equals_the_cli_json(manager, tmp_path, capsys):
    from fastapi.testclient import TestClient

    damaged_run = tmp_path / "manual__damaged" / "run.json"  # a run file nobody can read, listed anyway
    damaged_run.parent.mkdir()
    damaged_run.write_text("{ not json")
    client = TestClient(_app(tmp_path))

    runs = client.get("/api/runs")
    assert runs.status_code == 200
    assert runs.json() == _cli_json(capsys, "list", "--base", str(tmp_path))
    assert {r["state"] for r in runs.json()} == {"running", "damaged"}

    detail = client.get(f"/api/runs/{RUN_ID}", params={"failures": 10})
    assert detail.status_code == 200
    assert detail.json() == _cli_json(capsys, "show", "--run-id", RUN_ID, "--base", str(tmp_path))
    zaken = detail.json()["loaders"]["load_zaken.0"]
    assert zaken["last_failures"][0]["error"].startswith("Neo.ClientError: <script>")  # JSON is data

    snapshot = next(p for p in (tmp_path / RUN_ID / "loaders").iterdir() if p.name.startswith("load_docum"))
    snapshot.write_text("{ not json")  # a damaged loader file: in both answers, as in the CLI's
    assert client.get("/api/runs").json() == _cli_json(capsys, "list", "--base", str(tmp_path))
    detail = client.get(f"/api/runs/{RUN_ID}", params={"failures": 10}).json()
    assert detail == _cli_json(capsys, "show", "--run-id", RUN_ID, "--base", str(tmp_path))
    assert detail["loaders"]["load_documents.0"]["state"] == "damaged"


def test_app_pages_and_not_found(manager, tmp_path):
    from fastapi.testclient import TestClient

    client = TestClient(_app(tmp_path), root_path="/tk-checkpoints")
    page = client.get("/")
    assert page.status_code == 200 and "<base href='/tk-checkpoints/'>" in page.text
    assert "load_zaken.0" in client.get(f"/runs/{RUN_ID}").text
    for path in ("/api/runs/no_such_run", "/runs/no_such_run"):
        missing = client.get(path)
        assert missing.status_code == 404 and "Run not found" in missing.json()["detail"]


def test_app_fails_closed_without_a_login(manager, tmp_path):
    from fastapi.testclient import TestClient
    from tk_checkpoint.web import create_app

    client = TestClient(create_app(str(tmp_path)))
    for path in ("/", f"/runs/{RUN_ID}", "/api/runs", f"/api/runs/{RUN_ID}", "/api/cursors"):
        assert client.get(path).status_code == 401, path


@pytest.mark.parametrize(
    ("field", "value"),
    [("total_items", "lots"), ("tries", [1]), ("failed_items", {"z-bad": "boom"}), ("meta", [1])],
)
def test_a_snapshot_field_of_the_wrong_type_shows_damaged_not_500(manager, tmp_path, field, value):
    """Issue 12: such a file answered 500 on every page (a TypeError while reporting it)."""
    from fastapi.testclient import TestClient

    snapshot = next(p for p in (tmp_path / RUN_ID / "loaders").iterdir() if p.name.startswith("load_docum"))
    doc = json.loads(snapshot.read_text())
    doc[field] = value
    snapshot.write_text(json.dumps(doc))
    client = TestClient(_app(tmp_path))
    for path in ("/", f"/runs/{RUN_ID}"):
        page = client.get(path)
        assert page.status_code == 200 and "damaged" in page.text and "load_documents.0" in page.text
        assert f"&#39;{field}&#39; is" in page.text or "try 1 is" in page.text or "failed item" in page.text
    for path in ("/api/runs", f"/api/runs/{RUN_ID}"):
        answer = client.get(path)
        assert answer.status_code == 200
        run = answer.json()[0] if path == "/api/runs" else answer.json()
        assert run["loaders"]["load_documents.0"]["state"] == "damaged"
        assert run["loaders"]["load_zaken.0"]["state"] == "in_progress"  # the other loader still reads


def test_a_negative_failures_count_is_a_client_error(manager, tmp_path):
    from fastapi.testclient import TestClient

    client = TestClient(_app(tmp_path))
    assert client.get(f"/api/runs/{RUN_ID}", params={"failures": -1}).status_code == 422
    assert client.get(f"/api/runs/{RUN_ID}", params={"failures": 0}).status_code == 200


def test_runs_page_shows_the_cursors_table_only_when_there_are_cursors(manager, tmp_path):
    from tk_checkpoint import FeedCursors
    from tk_checkpoint.web import runs_page

    assert "SyncFeed cursors" not in runs_page(manager, "/")
    cursors = FeedCursors(tmp_path)
    cursors.advance("Persoon", 750, run_id=RUN_ID, head_skiptoken=12000)
    caught = cursors.advance("Zaak", 2000, run_id=RUN_ID, caught_up=True).caught_up_at
    text = _text(runs_page(manager, "/"))
    assert "SyncFeed cursors: 2 types, 1 behind the head" in text and "api/cursors" in text
    stamp = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d"
    assert re.search(rf"Persoon 750 12,000 11,250 never {stamp} {re.escape(RUN_ID)}", text)
    assert re.search(rf"Zaak 2,000 2,000 0 {caught:%Y-%m-%d %H:%M:%S} {stamp} {re.escape(RUN_ID)}", text)
    doc = json.loads((tmp_path / ".cursors" / "Zaak.json").read_text())
    doc["type_name"] = "<b>Zaak</b>"  # a damaged file whose error quotes markup: shown as text
    (tmp_path / ".cursors" / "Zaak.json").write_text(json.dumps(doc))
    html = runs_page(manager, "/")
    assert "1 damaged" in _text(html) and "<b>Zaak" not in html and "&lt;b&gt;Zaak&lt;/b&gt;" in html
    assert re.search(r"Persoon 750", _text(html))  # the other cursor still shown


def test_cursors_json_api_equals_the_cli_json(manager, tmp_path, capsys):
    from fastapi.testclient import TestClient
    from tk_checkpoint import FeedCursors

    client = TestClient(_app(tmp_path))
    assert client.get("/api/cursors").json() == []
    cursors = FeedCursors(tmp_path)
    cursors.advance("Persoon", 750, run_id=RUN_ID, head_skiptoken=1000)
    cursors.advance("Zaak", 2000, run_id=RUN_ID, caught_up=True)
    answer = client.get("/api/cursors")
    assert answer.status_code == 200
    assert answer.json() == _cli_json(capsys, "cursors", "--base", str(tmp_path))
    assert [(c["type_name"], c["behind"]) for c in answer.json()] == [("Persoon", 250), ("Zaak", 0)]
    (tmp_path / ".cursors" / "Zaak.json").write_text("{ torn")
    answer = client.get("/api/cursors")
    assert answer.status_code == 200 and answer.json()[1]["state"] == "damaged"
    assert answer.json() == _cli_json(capsys, "cursors", "--base", str(tmp_path))
    assert "SyncFeed cursors" in TestClient(_app(tmp_path)).get("/").text
