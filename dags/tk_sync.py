"""
# tk_sync — the whole parliament from the TK SyncFeed into Neo4j

Mirrors **all 35 SyncFeed types** (the entity table, `include/loaders/entities.py`) into Neo4j (connection
`neo4j_default`) from the SyncFeed's change streams (`Feed?category=<Type>&skiptoken=<n>`): creates,
updates, new and removed links, tombstones and re-emissions, in feed order per type.

* **Hourly schedule** (`TK_SYNC_SCHEDULE`, default `@hourly`; no catch-up): each run carries on from each
  type's **durable cursor** (under the checkpoint base, `<base>/.cursors/<Type>.json`), which advances only
  after the batch it covers is committed to Neo4j: a crash can only repeat entries, never skip them.
* **Tasks**: `setup` checks the params, creates the Neo4j constraints and opens the checkpoint run
  (checkpoint run id = this DAG run's `run_id`); then one task per type, `sync_zaken`, `sync_stemmingen`,
  … (derived from the table), independent of each other. Types run in parallel up to
  `TK_SYNC_IN_FLIGHT` tasks at a time (default 4: the requests in flight), each type in feed order. Set
  `TK_SYNC_POOL` to run them in an Airflow pool as well (`make run` and docker compose create `tk_sync`;
  elsewhere: `airflow pools set tk_sync 4 "SyncFeed"`).
* **Conf**: `types` restricts the run to some types (the others are skipped); `start` resets cursors
  before syncing, `{"*": 0}` (every type from scratch), `{"Persoon": 0, "Stemming": 25000000}` (from a
  skiptoken); `batch_size`. E.g.
  `airflow dags trigger tk_sync --conf '{"types": ["Persoon"], "start": {"Persoon": 0}}'`.
* **Retries and clears** reopen the task instance's checkpoint `(run_id, task_id)` and carry on from the
  cursor: what earlier tries committed is not read again (the log says how many entries that is). The
  cursor is reset by `start` only on a task's first try.
* `tk-checkpoint list` / `show` and the dashboard show each type's cursor, its distance to the feed's head
  and its last catch-up time.

Settings (environment): `TK_API_BASE_URL` (the SyncFeed is at `<base>/SyncFeed/2.0`), `TK_CHECKPOINT_BASE`,
`TK_SYNC_SCHEDULE`, `TK_SYNC_IN_FLIGHT`, `TK_SYNC_POOL`, `TK_TASK_RETRIES` (default 3),
`TK_TASK_RETRY_DELAY_SECONDS` (default 60, doubled per try).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import timedelta

import pendulum
from airflow.sdk import DAG, Param, dag, get_current_context, task

from include.loaders.entities import ENTITIES, Entity
from include.loaders.settings import DEFAULT_BATCH_SIZE, MAX_BATCH_SIZE
from include.loaders.sync import task_id_of

DEFAULT_IN_FLIGHT = 4


def build_dag(entities: Mapping[str, Entity] = ENTITIES, dag_id: str = "tk_sync") -> DAG:
    """The sync DAG for an entity table: a setup task and one sync task per type."""
    names = list(entities)
    in_flight = int(os.environ.get("TK_SYNC_IN_FLIGHT", str(DEFAULT_IN_FLIGHT)))
    pool = os.environ.get("TK_SYNC_POOL") or None

    @dag(
        dag_id=dag_id,
        schedule=os.environ.get("TK_SYNC_SCHEDULE", "@hourly"),
        start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
        catchup=False,
        max_active_runs=1,
        max_active_tasks=in_flight,
        doc_md=__doc__,
        tags=["tweede-kamer", "neo4j", "syncfeed"],
        default_args={
            "owner": "tk-neo4j-airflow",
            "retries": int(os.environ.get("TK_TASK_RETRIES", "3")),
            "retry_delay": timedelta(seconds=float(os.environ.get("TK_TASK_RETRY_DELAY_SECONDS", "60"))),
            "retry_exponential_backoff": True,
            "max_retry_delay": timedelta(minutes=30),
            **({"pool": pool} if pool else {}),
        },
        params={
            "types": Param(
                names,
                type="array",
                items={"type": "string", "enum": names},
                minItems=1,
                uniqueItems=True,
                title="Types",
                description="Which SyncFeed types this run syncs (the others are skipped).",
            ),
            "start": Param(
                {},
                type="object",
                additionalProperties={"type": "integer", "minimum": 0},
                title="Start",
                description=(
                    'Reset cursors before syncing: type (or "*" for all) -> skiptoken; 0 = from scratch. '
                    "Empty: carry on from each type's cursor."
                ),
            ),
            "batch_size": Param(
                DEFAULT_BATCH_SIZE,
                type="integer",
                minimum=1,
                maximum=MAX_BATCH_SIZE,
                description="Entries per Neo4j transaction.",
            ),
        },
    )
    def tk_sync():
        @task(retries=1)
        def setup() -> dict:
            """Bad params fail at once (a retry cannot fix them); Neo4j unreachable keeps its retry."""
            from airflow.sdk.exceptions import AirflowFailException

            from include.loaders.sync import prepare_sync

            ctx = get_current_context()
            dag_run = ctx["dag_run"]
            try:
                return prepare_sync(
                    dag_id=dag_run.dag_id,
                    run_id=dag_run.run_id,
                    conf=dag_run.conf or {},
                    params=ctx["params"],
                )
            except ValueError as e:
                raise AirflowFailException(str(e)) from e

        @task
        def sync(entity: str, checked: dict) -> dict:
            from airflow.exceptions import AirflowSkipException

            from include.loaders.sync import run_sync_task

            if entity not in checked["types"]:
                raise AirflowSkipException(f"{entity} is not among this run's types")
            ctx = get_current_context()
            ti = ctx["ti"]
            return run_sync_task(
                entity=entity,
                run_id=ctx["dag_run"].run_id,
                dag_id=ti.dag_id,
                task_id=ti.task_id,
                try_number=ti.try_number,
                params=ctx["params"],
            )

        checked = setup()
        for entity, spec in entities.items():
            sync.override(task_id=task_id_of(spec))(entity, checked)

    return tk_sync()


tk_sync_dag = build_dag()
