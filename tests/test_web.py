"""The checkpoint dashboard's pages, rendered from real checkpoint files (the api-server side, with its
login, is exercised by tests/test_standalone.py)."""

from __future__ import annotations

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
