"""docker-compose.yaml keeps the official Airflow 3.3 layout plus Neo4j, checkpoints and the connection.

No Docker engine runs on the build machines, so the file is kept honest by checking its structure.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
AIRFLOW_SERVICES = {
    "airflow-apiserver": "api-server",
    "airflow-scheduler": "scheduler",
    "airflow-dag-processor": "dag-processor",
    "airflow-triggerer": "triggerer",
    "airflow-worker": "celery worker",
}


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yaml").read_text())


def _env(service: dict) -> dict:
    env = service.get("environment", {})
    return env if isinstance(env, dict) else dict(item.split("=", 1) for item in env)


def test_official_airflow_services_and_backends(compose):
    services = compose["services"]
    for name, command in AIRFLOW_SERVICES.items():
        assert services[name]["command"] == command, name
        assert services[name]["image"].startswith("${AIRFLOW_IMAGE_NAME:-apache/airflow:3.3"), name
        assert "healthcheck" in services[name], name
        depends = services[name]["depends_on"]
        assert {"postgres", "redis", "neo4j"} <= set(depends), name
        assert depends["airflow-init"]["condition"] == "service_completed_successfully", name
    assert services["postgres"]["image"].startswith("postgres:16")
    assert services["redis"]["image"].startswith("redis:")
    init_env = _env(services["airflow-init"])
    assert init_env["_AIRFLOW_DB_MIGRATE"] == "true"
    assert init_env["_AIRFLOW_WWW_USER_CREATE"] == "true"


def test_common_airflow_environment(compose):
    for name in AIRFLOW_SERVICES:
        env = _env(compose["services"][name])
        assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
        assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql")
        assert env["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://")
        assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://airflow-apiserver:8080/execution/"
        assert env["AIRFLOW__CORE__LOAD_EXAMPLES"] == "false"
        assert "AIRFLOW__API_AUTH__JWT_SECRET" in env


def test_neo4j_service_matches_the_local_server_major_version(compose):
    neo4j = compose["services"]["neo4j"]
    assert neo4j["image"] == "neo4j:5.26-community"
    pom = (ROOT / "tools" / "neo4j" / "pom.xml").read_text()
    assert re.search(r"<neo4j.version>5\.26\.\d+</neo4j.version>", pom)
    assert "7687:7687" in neo4j["ports"]
    assert _env(neo4j)["NEO4J_AUTH"].startswith("neo4j/")
    assert any(v.endswith(":/data") for v in neo4j["volumes"])


def test_neo4j_connection_is_wired_into_every_airflow_service(compose):
    neo4j_pw = _env(compose["services"]["neo4j"])["NEO4J_AUTH"].split("/", 1)[1]
    for name in [*AIRFLOW_SERVICES, "airflow-init"]:
        env = _env(compose["services"][name])
        conn = json.loads(env["AIRFLOW_CONN_NEO4J_DEFAULT"])
        assert conn["conn_type"] == "neo4j"
        assert conn["host"] == "neo4j"
        assert conn["port"] == 7687
        assert conn["password"] == neo4j_pw  # the same setting feeds both sides


def test_checkpoint_volume_is_shared_by_all_airflow_services(compose):
    assert "checkpoints" in compose["volumes"]
    for name in [*AIRFLOW_SERVICES, "airflow-init"]:
        service = compose["services"][name]
        mounts = {v.rsplit(":", 1)[1]: v.rsplit(":", 1)[0] for v in service["volumes"]}
        base = _env(service)["TK_CHECKPOINT_BASE"]
        assert mounts.get(base) == "checkpoints", name
        for folder in ("dags", "plugins", "include"):
            assert f"/opt/airflow/{folder}" in mounts, (name, folder)


def test_env_example_covers_the_variables_compose_reads():
    text = (ROOT / "docker-compose.yaml").read_text()
    used = set(re.findall(r"(?<!\$)\$\{([A-Z_][A-Z0-9_]*)", text))  # $${X} is an escaped $
    example = {
        line.split("=", 1)[0]
        for line in (ROOT / ".env.example").read_text().splitlines()
        if line and not line.startswith("#")
    }
    optional = {"AIRFLOW_PROJ_DIR", "_PIP_ADDITIONAL_REQUIREMENTS", "AIRFLOW_UID"}
    assert used - optional <= example, used - optional - example


def test_extra_requirements_pin_what_the_local_install_pins(compose):
    """The image installs the project's extra packages at start; every version it pins is the one
    constraints.txt pins (the Rust packstream must match the driver the provider pulls in)."""
    default = re.search(
        r"\$\{_PIP_ADDITIONAL_REQUIREMENTS:-([^}]*)\}", (ROOT / "docker-compose.yaml").read_text()
    )
    packages = default.group(1).split()
    pins = dict(
        line.split("==", 1) for line in (ROOT / "constraints.txt").read_text().splitlines() if "==" in line
    )
    pinned = [p for p in packages if "==" in p]
    assert {"apache-airflow-providers-neo4j", "neo4j-rust-ext"} <= {p.split("==")[0] for p in pinned}
    for package in pinned:
        name, version = package.split("==")
        assert pins[name.split("[")[0]] == version, package
    for name in ("apache-airflow-providers-neo4j", "neo4j-rust-ext"):
        assert f"{name}=={pins[name]}" in (ROOT / "requirements.txt").read_text()


def test_tk_sync_runs_in_a_pool_that_airflow_init_creates(compose):
    """tk_sync's tasks run in the Airflow pool TK_SYNC_POOL (dags/tk_sync.py); airflow-init creates it with
    TK_SYNC_IN_FLIGHT slots, so no user has to before the first run."""
    for name in [*AIRFLOW_SERVICES, "airflow-init"]:
        env = _env(compose["services"][name])
        assert env["TK_SYNC_POOL"] == "tk_sync", name
        assert env["TK_SYNC_IN_FLIGHT"] == "${TK_SYNC_IN_FLIGHT:-4}", name
    script = "\n".join(compose["services"]["airflow-init"]["command"])
    assert 'airflow pools set tk_sync "$${TK_SYNC_IN_FLIGHT:-4}"' in script


def test_tk_sync_dag_uses_the_pool_named_by_the_environment(monkeypatch):
    """With TK_SYNC_POOL set, every per-type task of tk_sync is in that pool (the DAG file loaded as
    Airflow loads it, then built again under the setting)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("tk_sync_pool_test", ROOT / "dags" / "tk_sync.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setenv("TK_SYNC_POOL", "tk_sync")
    sync_tasks = [t for t in module.build_dag().tasks if t.task_id.startswith("sync_")]
    assert len(sync_tasks) == 35
    assert {t.pool for t in sync_tasks} == {"tk_sync"}
