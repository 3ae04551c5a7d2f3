"""Registers the tk_checkpoint package with Airflow (listener, and later the web views).

Every Airflow component imports this file: keep it cheap. The checkpoint engine itself lives in
the ``tk_checkpoint`` package next to it, which the CLI imports without Airflow's plugin machinery.
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin


class TkCheckpointPlugin(AirflowPlugin):
    name = "tk_checkpoint"
