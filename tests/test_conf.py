"""Issue 12, deliverable 5: the run's conf is checked by ``setup``, and a conf error fails it at once.

Before the fix an unknown conf key (``"start-date"``) was ignored, so a backfill with a typo loaded one
day and succeeded; a deterministic conf error (end before start) was retried after 60 s before it
failed; year 1 sent an unpadded year in ``$filter`` (HTTP 400) and ``9999-12-31`` raised OverflowError in
the window split.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from include.loaders.api import format_datetime, window_filter
from include.loaders.pipeline import (
    MAX_DATE,
    MIN_DATE,
    ConfError,
    PipelineError,
    check_conf,
    check_params,
    resolve_window,
)
from tests.test_dag import airflow_env, dags_test

NOW = datetime(2026, 11, 30, 12, tzinfo=UTC)
VALID = ["batch_size", "end_date", "entities", "start_date", "window_days"]


def test_an_unknown_conf_key_is_refused_naming_it_and_the_valid_ones():
    with pytest.raises(ConfError) as e:
        check_conf({"start-date": "2024-06-01", "entities": ["Zaak"]}, VALID)
    assert "['start-date']" in str(e.value) and str(VALID) in str(e.value)
    check_conf({"start_date": "2024-06-01"}, VALID)  # known keys pass


@pytest.mark.parametrize(
    "params, message",
    [
        ({"start_date": "0001-01-01"}, "start_date 0001-01-01T00:00:00+00:00 is out of the supported range"),
        ({"start_date": "2024-01-01", "end_date": "9999-12-31"}, "end_date 9999-12-31T00:00:00+00:00 is out"),
        ({"start_date": "1899-12-31"}, "out of the supported range [1900-01-01, 2100-01-01]"),
        ({"start_date": "2024-06-02", "end_date": "2024-06-01"}, "must be after start"),
        ({"start_date": 20240601}, "20240601 is not a date"),
        ({"start_date": "2024-13-01"}, "'2024-13-01' is not a date"),
    ],
)
def test_bad_dates_are_conf_errors_with_a_message(params, message):
    with pytest.raises(ConfError, match=re.escape(message)):
        resolve_window(params, None, None, NOW)


def test_the_edges_of_the_supported_range_are_accepted():
    window = resolve_window({"start_date": "1900-01-01", "end_date": "2100-01-01"}, None, None, NOW)
    assert (window.start, window.end) == (MIN_DATE, MAX_DATE)
    assert window_filter(window.start, window.end) == (
        "ApiGewijzigdOp ge 1900-01-01T00:00:00Z and ApiGewijzigdOp lt 2100-01-01T00:00:00Z"
    )


def test_odata_literals_pad_the_year():
    assert format_datetime(datetime(1, 1, 1, tzinfo=UTC)) == "0001-01-01T00:00:00Z"
    assert format_datetime(datetime(999, 3, 4, 5, 6, 7, 8, tzinfo=UTC)) == "0999-03-04T05:06:07.000008Z"


@pytest.mark.parametrize(
    "params, message",
    [
        ({"window_days": "30"}, "window_days must be an integer between 1 and 36600, got '30'"),
        ({"batch_size": 0}, "batch_size must be an integer between 1 and 10000, got 0"),
        ({"batch_size": True}, "batch_size must be an integer"),
        ({"fail_on_item_errors": "no"}, "fail_on_item_errors must be true or false, got 'no'"),
        ({"entities": "Zaak"}, "entities must be a list of entity names, got 'Zaak'"),
        ({"cleanup_keep": -1}, "cleanup_keep must be an integer at least 1, got -1"),
    ],
)
def test_params_of_the_wrong_type_are_conf_errors(params, message):
    with pytest.raises(ConfError, match=re.escape(message)):
        check_params(params)


def test_a_conf_error_is_a_pipeline_error():
    assert issubclass(ConfError, PipelineError)  # callers that catch PipelineError still do


# -- under Airflow: `airflow dags test`, a retry delay short enough to see a retry happen -----------------


@pytest.mark.parametrize(
    "conf, message",
    [
        ({"start-date": "2024-06-01"}, "Unknown conf key(s) ['start-date']"),
        ({"start_date": "2024-06-02", "end_date": "2024-06-01"}, "must be after start"),
    ],
)
def test_a_conf_error_fails_setup_at_once_without_a_retry(airflow_db, tmp_path, conf, message):
    env = airflow_env("http://127.0.0.1:9", tmp_path, TK_TASK_RETRY_DELAY_SECONDS="1", TK_TASK_RETRIES="0")
    proc = dags_test(conf, env, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out[-3000:]
    assert message in out, out[-3000:]
    assert "AirflowFailException" in out, out[-3000:]
    assert out.count("starting task_id=setup ") == 1, out[-3000:]  # failed for good at its first try
    assert not list(Path(tmp_path).glob("*/run.json"))  # nothing was started


def test_an_unreachable_api_keeps_its_retry(airflow_db, tmp_path):
    env = airflow_env(
        "http://127.0.0.1:9",
        tmp_path,
        TK_TASK_RETRY_DELAY_SECONDS="1",
        TK_API_MAX_RETRIES="0",
        TK_TASK_RETRIES="0",
    )
    proc = dags_test({"start_date": "2024-06-01", "end_date": "2024-06-02"}, env, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert out.count("starting task_id=setup ") == 2, out[-3000:]  # a transient error: setup retried
    assert "AirflowFailException" not in out
