"""Placeholder, replaced by the tk_ingest DAG (issue 6)."""

from __future__ import annotations

import pendulum
from airflow.sdk import dag, task


@dag(schedule=None, start_date=pendulum.datetime(2024, 1, 1, tz="UTC"), catchup=False, tags=["tk"])
def tk_ingest():
    @task
    def setup() -> None:
        return None

    setup()


tk_ingest()
