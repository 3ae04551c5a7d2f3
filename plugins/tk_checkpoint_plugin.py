"""Registers the tk_checkpoint package with Airflow: the listener that maps run outcomes onto checkpoints.

Every Airflow component imports this file: keep it cheap. The checkpoint engine itself lives in the
``tk_checkpoint`` package next to it (ignored by Airflow's plugin scan, see .airflowignore), which the
CLI imports without Airflow's plugin machinery.
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin
from tk_checkpoint import listener


class TkCheckpointPlugin(AirflowPlugin):
    name = "tk_checkpoint"
    listeners = [listener]  # noqa: RUF012 - the AirflowPlugin interface is a class-level list
