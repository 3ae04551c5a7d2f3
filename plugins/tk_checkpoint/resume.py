"""``tk-checkpoint resume``: re-run the failed tasks of a DAG run through the Airflow REST API.

The original tool resumed a run by running its loaders again, which skipped the processed items. On
Airflow the same thing is a *clear*: the failed (and upstream-failed) task instances of the run go back
to the scheduler, keep their run id and map index, and their checkpoints make them skip what is done.

Settings (environment, or the matching CLI flags):

| variable | default | meaning |
|---|---|---|
| ``AIRFLOW_API_URL`` | ``http://localhost:8080`` | the api-server (standalone or docker compose) |
| ``AIRFLOW_API_TOKEN`` | | a bearer token; when unset one is fetched with the user and password below |
| ``AIRFLOW_API_USERNAME`` / ``AIRFLOW_API_PASSWORD`` | | login for ``POST /auth/token`` |
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import requests

from .names import validate_name

if TYPE_CHECKING:
    import argparse

    from .manager import CheckpointManager

DEFAULT_API_URL = "http://localhost:8080"


class ResumeError(RuntimeError):
    """The Airflow API refused or could not be reached; the message says which and what to do."""


@dataclass(frozen=True)
class AirflowApi:
    """Where and how to reach the Airflow REST API (v2)."""

    url: str = DEFAULT_API_URL
    token: str | None = None
    username: str | None = None
    password: str | None = None
    timeout: float = 30.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> AirflowApi:
        env = os.environ if env is None else env
        values = {
            "url": env.get("AIRFLOW_API_URL") or DEFAULT_API_URL,
            "token": env.get("AIRFLOW_API_TOKEN") or None,
            "username": env.get("AIRFLOW_API_USERNAME") or None,
            "password": env.get("AIRFLOW_API_PASSWORD") or None,
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


@dataclass
class ResumeResult:
    """What a resume did: the run and the task instances it cleared."""

    run_id: str
    dag_id: str
    cleared: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "dag_id": self.dag_id, "cleared": self.cleared}


def _session(api: AirflowApi) -> requests.Session:
    session = requests.Session()
    token = api.token
    if not token:
        if not (api.username and api.password):
            raise ResumeError(
                "No Airflow API credentials: set AIRFLOW_API_TOKEN, or AIRFLOW_API_USERNAME and "
                "AIRFLOW_API_PASSWORD (or pass --api-user/--api-password)."
            )
        url = api.url.rstrip("/") + "/auth/token"
        try:
            resp = session.post(
                url, json={"username": api.username, "password": api.password}, timeout=api.timeout
            )
        except requests.RequestException as e:
            raise ResumeError(f"Cannot reach the Airflow API at {api.url}: {e}. Is Airflow running?") from e
        if resp.status_code >= 400:
            raise ResumeError(
                f"Airflow refused the login of user '{api.username}' at {url} (HTTP {resp.status_code}); "
                "check AIRFLOW_API_USERNAME / AIRFLOW_API_PASSWORD."
            )
        token = resp.json()["access_token"]
    session.headers["Authorization"] = f"Bearer {token}"
    return session


def _clear(
    session: requests.Session, api: AirflowApi, dag_id: str, run_id: str, *, dry_run: bool
) -> list[dict[str, Any]]:
    url = f"{api.url.rstrip('/')}/api/v2/dags/{quote(dag_id, safe='')}/clearTaskInstances"
    body = {
        "dag_run_id": run_id,
        "only_failed": True,  # failed and upstream_failed
        "include_downstream": True,
        "reset_dag_runs": True,
        "dry_run": dry_run,
    }
    try:
        resp = session.post(url, json=body, timeout=api.timeout)
    except requests.RequestException as e:
        raise ResumeError(f"Cannot reach the Airflow API at {api.url}: {e}. Is Airflow running?") from e
    if resp.status_code == 404:
        raise ResumeError(f"Airflow does not know DAG '{dag_id}' or its run '{run_id}' ({url}).")
    if resp.status_code >= 400:
        raise ResumeError(f"Airflow refused to clear run '{run_id}' (HTTP {resp.status_code}): {resp.text}")
    return list(resp.json().get("task_instances", []))


def clear_failed_tasks(api: AirflowApi, dag_id: str, run_id: str) -> list[dict[str, Any]]:
    """Clear the failed and upstream-failed task instances of one DAG run; return what was cleared, each
    with the ``state`` it had before (``None`` if unknown).

    Airflow answers a clear with the task instances as they are after it (state None: cleared), so a dry
    run first asks which ones will be cleared and in what state they are.
    """
    session = _session(api)
    before = {
        (ti.get("task_id"), ti.get("map_index", -1)): ti.get("state")
        for ti in _clear(session, api, dag_id, run_id, dry_run=True)
    }
    cleared = []
    for ti in _clear(session, api, dag_id, run_id, dry_run=False):
        key = (ti.get("task_id"), ti.get("map_index", -1))
        cleared.append({"task_id": key[0], "map_index": key[1], "state": before.get(key)})
    return cleared


EXIT_AIRFLOW = 4
"""Exit code of ``resume`` when the Airflow API refused or could not be reached."""


def resume_run(
    mgr: CheckpointManager, run_id: str | None, api: AirflowApi, default_dag_id: str = "tk_ingest"
) -> ResumeResult | None:
    """Clear the failed tasks of ``run_id`` (or of the latest unfinished run); None when there is none.

    Raises RunNotFoundError for an unknown ``run_id`` and ResumeError when Airflow refuses.
    """
    if run_id is not None:
        validate_name(run_id)  # before anything asks Airflow: '' is not "the latest run"
    else:
        run_id = mgr.get_latest_incomplete_run()
    if run_id is None:
        return None
    run = mgr.get_run(run_id)
    dag_id = run.get("dag_id") or default_dag_id
    cleared = clear_failed_tasks(api, dag_id, run_id)
    if cleared:
        mgr.resume_run(run_id)
    return ResumeResult(run_id=run_id, dag_id=dag_id, cleared=cleared)


def cmd_resume(args: argparse.Namespace, mgr: CheckpointManager) -> int:
    """Clear the failed and upstream-failed tasks of the latest unfinished run (or --run-id) in Airflow.

    The cleared tasks run again in the same DAG run and skip the items their checkpoints hold.
    """
    api = AirflowApi.from_env(url=args.api_url, username=args.api_user, password=args.api_password)
    try:
        result = resume_run(mgr, args.run_id, api, default_dag_id=args.dag_id)
    except ResumeError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return EXIT_AIRFLOW
    if result is None:
        if args.json:
            print(json.dumps({"run_id": None, "cleared": [], "message": "No incomplete runs found"}))
        else:
            print("No incomplete runs found")
        return 1
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    elif not result.cleared:
        print(f"Run {result.run_id} ({result.dag_id}) has no failed tasks to clear.")
    else:
        print(f"Cleared {len(result.cleared)} task instance(s) of run {result.run_id} ({result.dag_id}):")
        for ti in result.cleared:
            index = "" if ti["map_index"] in (None, -1) else f"[{ti['map_index']}]"
            was = f"  (was {ti['state']})" if ti["state"] else ""
            print(f"  {ti['task_id']}{index}{was}")
        print("They run again and skip the items already processed.")
    return 0


RESUME_ARGUMENTS = (
    (("--run-id",), {"help": "the run to resume (default: the latest unfinished run)"}),
    (("--dag-id",), {"default": "tk_ingest", "help": "DAG of runs whose checkpoint lacks it (tk_ingest)"}),
    (("--api-url",), {"help": f"Airflow api-server (default $AIRFLOW_API_URL or {DEFAULT_API_URL})"}),
    (("--api-user",), {"help": "Airflow user (default $AIRFLOW_API_USERNAME)"}),
    (("--api-password",), {"help": "Airflow password (default $AIRFLOW_API_PASSWORD)"}),
)
