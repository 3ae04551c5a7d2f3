"""Registers the tk_checkpoint package with Airflow: the listener that maps run outcomes onto checkpoints,
and the checkpoint dashboard (``tk_checkpoint.web``) in the UI's Browse menu and on each DAG run's page.

Every Airflow component imports this file: keep it cheap. The checkpoint engine itself lives in the
``tk_checkpoint`` package next to it (ignored by Airflow's plugin scan, see .airflowignore), which the
CLI imports without Airflow's plugin machinery. The dashboard's FastAPI app is built only when the
api-server asks for ``fastapi_apps``; the scheduler and the task processes never import FastAPI for it.
"""

from __future__ import annotations

from typing import Any

from airflow.plugins_manager import AirflowPlugin
from tk_checkpoint import listener

URL_PREFIX = "/tk-checkpoints"


class TkCheckpointPlugin(AirflowPlugin):
    name = "tk_checkpoint"
    listeners = [listener]  # noqa: RUF012 - the AirflowPlugin interface is a class-level list
    external_views = [  # noqa: RUF012
        {
            "name": "Checkpoints",
            "href": f"{URL_PREFIX}/",
            "destination": "nav",
            "category": "browse",
            "url_route": "tk-checkpoints",
        },
        {
            "name": "Checkpoints",
            "href": f"{URL_PREFIX}/runs/{{RUN_ID}}",
            "destination": "dag_run",
            "url_route": "tk-checkpoints-run",
        },
    ]

    @property
    def fastapi_apps(self) -> list[dict[str, Any]]:  # type: ignore[override]
        """The dashboard app, built on first use (only the api-server reads this)."""
        apps = self.__dict__.get("_fastapi_apps")
        if apps is None:
            from tk_checkpoint.web import create_app

            apps = [{"app": create_app(), "url_prefix": URL_PREFIX, "name": "tk-neo4j-airflow checkpoints"}]
            self.__dict__["_fastapi_apps"] = apps
        return apps
