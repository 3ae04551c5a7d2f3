"""A real ``airflow standalone`` for the end-to-end tests (test_standalone, test_browser).

One home per test (its own SQLite DB, a known admin password), every port of its own: the api-server
on a free port and the worker/triggerer log servers too, so two standalones on one machine (parallel
test sessions) do not meet. Stopped by SIGINT to its pid (``scripts.local_stack.Airflow.stop``).
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from scripts.local_stack import Airflow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running_standalone(home: Path, extra_env: dict[str, str], dag_id: str = "tk_ingest") -> Iterator[Airflow]:
    """``airflow standalone`` in ``home`` with ``extra_env``, ready with ``dag_id``; stopped at the end."""
    env = {
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
        "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
        **extra_env,
    }
    airflow = Airflow(home, port=free_port(), extra_env=env)
    airflow.airflow("db", "migrate")
    airflow.start()
    try:
        airflow.wait_for_dag(dag_id)
        yield airflow
    finally:
        airflow.stop()
    assert not airflow.running()
