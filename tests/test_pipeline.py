"""Windows, sub-windows and task naming of the tk_ingest pipeline (no services needed); at the end, the
setup and loader tasks on a real Neo4j and the offline TK API (the database named by the connection)."""

from __future__ import annotations

import bisect
import itertools
import json
import math
import os
import random
from datetime import UTC, datetime, timedelta

import pytest

from include.loaders.pipeline import (
    PipelineError,
    Window,
    balanced_split,
    loader_name,
    plan_entity,
    resolve_window,
    split_window,
)

NOW = datetime(2026, 11, 27, 22, 0, tzinfo=UTC)
DI_START = datetime(2026, 11, 26, tzinfo=UTC)
DI_END = datetime(2026, 11, 27, tzinfo=UTC)


def test_scheduled_run_loads_its_data_interval():
    assert resolve_window({}, DI_START, DI_END, NOW) == Window(DI_START, DI_END)


def test_conf_start_date_overrides_the_interval_and_runs_until_now():
    w = resolve_window({"start_date": "2024-06-01"}, DI_START, DI_END, NOW)
    assert w == Window(datetime(2024, 6, 1, tzinfo=UTC), NOW)


def test_conf_end_date_is_exclusive_day_start():
    w = resolve_window({"start_date": "2024-06-01", "end_date": "2024-07-01"}, None, None, NOW)
    assert (w.start, w.end) == (datetime(2024, 6, 1, tzinfo=UTC), datetime(2024, 7, 1, tzinfo=UTC))


def test_manual_run_without_dates_loads_the_last_day():
    w = resolve_window({}, None, None, NOW)
    assert w == Window(NOW - timedelta(days=1), NOW)


def test_end_before_start_is_refused_with_a_clear_message():
    with pytest.raises(PipelineError, match="must be after start"):
        resolve_window({"start_date": "2024-06-02", "end_date": "2024-06-01"}, None, None, NOW)


def test_not_a_date_is_refused():
    with pytest.raises(PipelineError, match="not a date"):
        resolve_window({"start_date": "yesterday"}, None, None, NOW)


def test_split_window_covers_exactly_without_overlap():
    w = Window(datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 4, 10, 12, tzinfo=UTC))
    parts = split_window(w, 30)
    assert parts[0].start == w.start and parts[-1].end == w.end
    assert all(a.end == b.start for a, b in itertools.pairwise(parts))
    assert all(p.end - p.start <= timedelta(days=30) for p in parts)
    assert len(parts) == 4


def test_plan_rejects_unknown_entities_and_leaves_out_unselected_ones():
    w = Window(DI_START, DI_END).to_dict()
    with pytest.raises(PipelineError, match="Unknown entities"):
        plan_entity("Zaak", w, {"entities": ["Zaak", "DocumentPublicatie"]})
    assert plan_entity("Zaak", w, {"entities": ["Zaak"], "window_days": 30}) == [w]
    assert plan_entity("Document", w, {"entities": ["Zaak"]}) == []  # no mapped instances at all


def _skewed_counter(stamps: list[datetime]):
    stamps = sorted(stamps)

    def count(a: datetime, b: datetime) -> int:
        return bisect.bisect_left(stamps, b) - bisect.bisect_left(stamps, a)

    return count


def test_balanced_split_gives_windows_of_similar_size_on_skewed_data():
    w = Window(datetime(2019, 1, 1, tzinfo=UTC), datetime(2025, 1, 1, tzinfo=UTC))
    rng = random.Random(1)
    span = (w.end - w.start).total_seconds()
    # most changes are recent: density grows with time
    stamps = [w.start + timedelta(seconds=span * rng.random() ** 0.3) for _ in range(20000)]
    count = _skewed_counter(stamps)
    equal_days = split_window(w, math.ceil((w.end - w.start).days / 4))
    balanced = balanced_split(w, 4, count)
    sizes = [count(p.start, p.end) for p in balanced]
    assert len(balanced) == 4 and sum(sizes) == 20000
    assert balanced[0].start == w.start and balanced[-1].end == w.end
    assert all(a.end == b.start for a, b in itertools.pairwise(balanced))
    assert max(sizes) < 1.15 * 20000 / 4
    assert max(sizes) < 0.6 * max(count(p.start, p.end) for p in equal_days)


def test_balanced_split_of_an_empty_or_concentrated_window():
    w = Window(datetime(2020, 1, 1, tzinfo=UTC), datetime(2024, 1, 1, tzinfo=UTC))
    assert balanced_split(w, 4, lambda a, b: 0) == [w]
    burst = [datetime(2022, 5, 1, tzinfo=UTC)] * 100  # all in one bucket: cannot be split
    parts = balanced_split(w, 4, _skewed_counter(burst))
    assert parts[0].start == w.start and parts[-1].end == w.end
    assert sum(_skewed_counter(burst)(p.start, p.end) for p in parts) == 100


def test_checkpoint_key_of_a_mapped_task_instance():
    assert loader_name("load_zaak", 3) == "load_zaak.3"
    assert loader_name("load_zaak", -1) == "load_zaak"


def test_a_run_id_of_another_dag_is_refused(tmp_path):
    from tk_checkpoint import CheckpointManager

    from include.loaders.pipeline import _check_run_owner

    mgr = CheckpointManager(str(tmp_path))
    mgr.start_new_run("scheduled__2026-11-27T00:00:00+00:00", dag_id="other_dag")
    _check_run_owner(mgr, "scheduled__2026-11-28T00:00:00+00:00", "tk_ingest")  # unknown run: fine
    _check_run_owner(mgr, "scheduled__2026-11-27T00:00:00+00:00", "other_dag")  # its own run: fine
    with pytest.raises(PipelineError, match="belongs to DAG 'other_dag'"):
        _check_run_owner(mgr, "scheduled__2026-11-27T00:00:00+00:00", "tk_ingest")


# -- the tasks on a real Neo4j and the offline API: the database comes from the connection -----------------
def _connection_with_schema(monkeypatch, schema: str) -> None:
    conn = json.loads(os.environ["AIRFLOW_CONN_NEO4J_DEFAULT"])
    conn["schema"] = schema
    monkeypatch.setenv("AIRFLOW_CONN_NEO4J_DEFAULT", json.dumps(conn))


def test_the_tasks_write_to_the_database_the_connection_names(neo4j_empty, monkeypatch, tmp_path):
    from include.loaders import load
    from include.loaders.graph import Neo4jConnectionError
    from include.loaders.pipeline import prepare_run, run_loader
    from include.tk_replay.dataset import Dataset
    from tests.loader_fixtures import replay

    databases: list[str | None] = []
    real_load_entity = load.load_entity

    def recording_load_entity(*args, **kwargs):
        databases.append(kwargs.get("database"))
        return real_load_entity(*args, **kwargs)

    monkeypatch.setattr(load, "load_entity", recording_load_entity)
    params = {"entities": ["Zaak"], "start_date": "2000-01-01", "end_date": "2100-01-01"}
    run = dict(dag_id="tk_ingest", run_id="manual__schema", checkpoint_base=str(tmp_path))
    setup = dict(conf={}, params=params, data_interval_start=None, data_interval_end=None, now=NOW)
    task = dict(entity="Zaak", task_id="load_zaken", map_index=-1, try_number=1, params=params)
    whole = Window(datetime(2000, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC)).to_dict()
    missing = "'neo4j_default' names the Neo4j database 'nosuchdb'"
    with replay() as server:
        monkeypatch.setenv("TK_API_BASE_URL", server.url)
        _connection_with_schema(monkeypatch, "nosuchdb")
        with pytest.raises(Neo4jConnectionError, match=missing):
            prepare_run(**run, **setup)
        with pytest.raises(Neo4jConnectionError, match=missing):
            run_loader(**run, **task, window=whole)
        assert databases == []  # refused before anything was loaded

        _connection_with_schema(monkeypatch, "neo4j")
        window = prepare_run(**run, **setup)
        summary = run_loader(**run, **task, window=window)
    assert window == whole
    assert databases == ["neo4j"]
    rows = Dataset.samples().rows["Zaak"]
    assert summary["processed"] == len(rows) and summary["failed"] == 0
    live = sum(1 for r in rows.values() if not r.get("Verwijderd"))
    count = neo4j_empty.execute_query("MATCH (z:Zaak) RETURN count(z) AS n", database_="neo4j").records
    assert count[0]["n"] == live
