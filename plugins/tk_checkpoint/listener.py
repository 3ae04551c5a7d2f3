"""Airflow listener: DAG-run and task-instance outcomes onto checkpoint run and loader states.

* ``on_dag_run_running`` / ``on_dag_run_success`` / ``on_dag_run_failed`` fire in the scheduler (and in
  ``dags test``): the checkpoint run of the same ``run_id`` becomes ``running`` / ``completed`` /
  ``failed``. Runs without a checkpoint (other DAGs, or a run whose setup never ran) are left alone.
* ``on_task_instance_failed`` fires in the task's own process, also for a try that will be retried:
  the loader of that task instance is marked ``failed`` when the task left it open (for example when it
  failed outside the load loop).

A listener must never break the component that calls it: every hook logs and swallows its errors.
"""

from __future__ import annotations

import logging
from typing import Any

from airflow.listeners import hookimpl

log = logging.getLogger(__name__)


def _manager():
    from tk_checkpoint import CheckpointManager

    return CheckpointManager()


def _set_run_state(dag_run: Any, state: str, msg: str | None = None) -> None:
    from tk_checkpoint import RunNotFoundError

    run_id = getattr(dag_run, "run_id", None)
    if not run_id:
        return
    try:
        mgr = _manager()
        try:
            mgr.get_run(run_id, loaders=False)  # cheap: the run file only
        except RunNotFoundError:
            return  # not one of ours
        if state == "completed":
            mgr.complete_run(run_id)
        elif state == "failed":
            mgr.fail_run(run_id, msg or "DAG run failed")
        else:
            mgr.resume_run(run_id)
        log.info("Checkpoint run %s is now %s", run_id, state)
    except Exception:
        log.exception("tk_checkpoint listener could not set run %s to %s", run_id, state)


@hookimpl
def on_dag_run_running(dag_run, msg: str):
    _set_run_state(dag_run, "running")


@hookimpl
def on_dag_run_success(dag_run, msg: str):
    _set_run_state(dag_run, "completed")


@hookimpl
def on_dag_run_failed(dag_run, msg: str):
    _set_run_state(dag_run, "failed", msg)


@hookimpl
def on_task_instance_failed(previous_state, task_instance, error):
    from tk_checkpoint import LoaderCheckpoint, RunNotFoundError, loader_name

    run_id = getattr(task_instance, "run_id", None)
    task_id = getattr(task_instance, "task_id", "")
    if not run_id or not task_id.startswith("load_"):
        return
    name = loader_name(task_id, getattr(task_instance, "map_index", -1))
    try:
        mgr = _manager()
        try:
            if name not in mgr.loader_names(run_id):
                return
            state = mgr.read_loader(run_id, name)
        except RunNotFoundError:
            return
        if state.state != "in_progress":
            return  # the load loop already recorded its outcome
        mgr.resume_run(run_id)
        with LoaderCheckpoint(mgr, name, run_id=run_id, force=True) as cp:
            cp.fail(f"task failed: {error}" if error else "task failed")
        log.info("Checkpoint loader %s of run %s marked failed", name, run_id)
    except Exception:
        log.exception("tk_checkpoint listener could not mark loader %s of run %s failed", name, run_id)
