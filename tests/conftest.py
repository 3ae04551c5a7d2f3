"""Test scaffolding shared by every test.

The Airflow environment is set here, at import time, before anything imports ``airflow``:
a throw-away ``AIRFLOW_HOME``, no example DAGs, the project's own dags/ and plugins/ folders, and the
``neo4j_default`` connection in its JSON form pointing at the local Neo4j of ``scripts/neo4j.sh``.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# --- Airflow environment: must happen before any `import airflow` -------------------------------
# Once per test process: this module also runs a second time when a test imports ``tests.conftest``
# (pytest itself imports it as ``conftest``); a second home would leave an ``airflow`` imported in
# between on the first home's database while the environment (and every subprocess) names the second.
_HOME_KEY = f"TK_TEST_AIRFLOW_HOME_{os.getpid()}"
_AIRFLOW_HOME = os.environ.get(_HOME_KEY) or tempfile.mkdtemp(prefix="tk-airflow-home-")
os.environ[_HOME_KEY] = _AIRFLOW_HOME
os.environ["AIRFLOW_HOME"] = _AIRFLOW_HOME
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(ROOT / "dags")
os.environ["AIRFLOW__CORE__PLUGINS_FOLDER"] = str(ROOT / "plugins")
os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = f"sqlite:///{_AIRFLOW_HOME}/airflow.db"
os.environ.setdefault("AIRFLOW__LOGGING__LOGGING_LEVEL", "INFO")

NEO4J_HOST = os.environ.setdefault("NEO4J_BOLT_HOST", "127.0.0.1")
NEO4J_PORT = int(os.environ.setdefault("NEO4J_BOLT_PORT", "7687"))
NEO4J_PASSWORD = os.environ.setdefault("NEO4J_PASSWORD", "tk-local-password")
os.environ["AIRFLOW_CONN_NEO4J_DEFAULT"] = json.dumps(
    {
        "conn_type": "neo4j",
        "host": NEO4J_HOST,
        "port": NEO4J_PORT,
        "login": "neo4j",
        "password": NEO4J_PASSWORD,
    }
)
for p in (ROOT, ROOT / "plugins"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))


def _port_open(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


@pytest.fixture(scope="session")
def neo4j_server():
    """A real Neo4j 5 server on Bolt; started by scripts/neo4j.sh when none is listening.

    Yields ``(uri, auth)``. A server this fixture started is stopped at the end of the session.
    """
    started = False
    if not _port_open(NEO4J_HOST, NEO4J_PORT):
        subprocess.run(["bash", str(ROOT / "scripts" / "neo4j.sh"), "start"], check=True)
        started = True
    yield f"bolt://{NEO4J_HOST}:{NEO4J_PORT}", ("neo4j", NEO4J_PASSWORD)
    if started:
        subprocess.run(["bash", str(ROOT / "scripts" / "neo4j.sh"), "stop"], check=True)


@pytest.fixture(scope="session")
def neo4j_driver(neo4j_server):
    from neo4j import GraphDatabase

    uri, auth = neo4j_server
    driver = GraphDatabase.driver(uri, auth=auth)
    driver.verify_connectivity()
    yield driver
    driver.close()


@pytest.fixture
def neo4j_empty(neo4j_driver):
    """An empty graph (nodes and relationships deleted; constraints kept, they are idempotent)."""
    with neo4j_driver.session() as session:  # CALL … IN TRANSACTIONS needs an implicit transaction
        session.run("MATCH (n) CALL (n) { DETACH DELETE n } IN TRANSACTIONS OF 10000 ROWS").consume()
    return neo4j_driver


@pytest.fixture(scope="session")
def airflow_db():
    """A fresh Airflow metadata DB (SQLite in the temporary AIRFLOW_HOME)."""
    from airflow.utils.db import resetdb

    resetdb()
    return _AIRFLOW_HOME


@pytest.fixture
def capture_logs(caplog):
    """``capture_logs(*logger_names, level=logging.INFO)`` puts caplog's handler on those loggers and
    returns caplog; undone after the test. Needed because Airflow's logging config (structlog) stops
    propagation to the root logger, where caplog listens by default."""
    attached: list[tuple[logging.Logger, int]] = []

    def capture(*names: str, level: int = logging.INFO):
        for name in names:
            logger = logging.getLogger(name)
            attached.append((logger, logger.level))
            logger.addHandler(caplog.handler)
            logger.setLevel(level)
        return caplog

    yield capture
    for logger, old_level in reversed(attached):
        logger.removeHandler(caplog.handler)
        logger.setLevel(old_level)
