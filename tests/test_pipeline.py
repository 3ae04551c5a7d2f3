"""Windows, sub-windows and task naming of the tk_ingest pipeline (no services needed)."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest

from include.loaders.pipeline import (
    PipelineError,
    Window,
    loader_name,
    plan,
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


def test_plan_rejects_unknown_entities():
    w = Window(DI_START, DI_END)
    with pytest.raises(PipelineError, match="Unknown entities"):
        plan(w, ["Zaak", "Stemming"], 30)
    assert plan(w, ["Zaak"], 30) == [w.to_dict()]


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
