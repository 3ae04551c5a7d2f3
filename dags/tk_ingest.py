"""
# tk_ingest — Tweede Kamer open data into Neo4j

Loads **Zaak, Document, Vergadering, Agendapunt, Activiteit** (and **Verslag**, the reports that link
to a Vergadering) and their relationships from the TK OData API into Neo4j (connection
`neo4j_default`), resumable per item.

* **Daily schedule** (no catch-up): each run loads the entities whose `ApiGewijzigdOp` falls in the
  run's data interval — updates, new links and deletions (tombstones) of that day.
* **Backfill**: trigger with conf, e.g.
  `airflow dags trigger tk_ingest --conf '{"start_date": "2024-06-01"}'`
  (`end_date` defaults to now; conf overrides the data interval). A long window is split, per entity,
  into about (length / `window_days`) sub-windows holding similar numbers of changed items (the
  `plan_*` task counts them); each becomes one mapped task instance of that entity's loader, with its
  own checkpoint, so a backfill uses every worker and a failure redoes only its own window.
* **Tasks**: `setup` checks the window, finds the API version (`TK_API_PROFILE=auto`, the default: v5,
  then v4/2.0, by their `$metadata`; its log names the one that answered and why the other did not),
  checks the API `$metadata`, creates the Neo4j constraints and opens the checkpoint run (checkpoint run
  id = this DAG run's `run_id`); the plan and load tasks use the version setup chose. Then one task per
  entity, `load_zaken`, `load_documents`, `load_vergaderingen`, `load_agendapunten`, `load_activiteiten`,
  `load_verslagen` (the original tool's loader names), independent of each other: a failed loader
  does not stop the others, and the run ends failed if any loader failed.
* **Assets**: each loader task declares the asset of its label, `tk-graph://neo4j_default/<Label>`, as
  an outlet; each successful task instance emits an event whose extra holds its counts (processed,
  skipped, failed, deleted) and window. `tk_on_zaak_changed` is an example DAG scheduled on `Zaak`.
* **Reconciliation**: `reconcile` runs after the loaders (whatever their outcome) and compares per
  entity the nodes in Neo4j with the API's count of live rows (the whole set) and counts placeholders;
  a difference above the param `reconcile_tolerance` (default 1%) fails it with the table. The result is
  kept with the checkpoint run (`tk-checkpoint show`, the dashboard's run page).
* **One run at a time** (`max_active_runs=1`): a daily run waits for a running backfill, so two runs
  never write the same nodes at once.
* **Retries and clears** reopen the task instance's checkpoint `(run_id, task_id, map_index)` and skip
  the items already written (the log says how many). `tk-checkpoint resume` clears the failed tasks of
  the latest unfinished run; `tk-checkpoint list` / `show` tell what each run did.

Settings (environment): `TK_API_BASE_URL`, `TK_API_PROFILE` (`auto`, `v5` or `v4/2.0`), `TK_CHECKPOINT_BASE`,
`TK_TASK_RETRIES` (default 3), `TK_TASK_RETRY_DELAY_SECONDS` (default 60, doubled per try).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import timedelta

import pendulum
from airflow.sdk import DAG, CronDataIntervalTimetable, Param, TriggerRule, dag, get_current_context, task

from include.loaders import pipeline
from include.loaders.assets import event_extra, graph_asset, loader_outlets
from include.loaders.entities import ENTITIES, Entity
from include.loaders.reconcile import DEFAULT_TOLERANCE
from include.loaders.settings import DEFAULT_BATCH_SIZE, MAX_BATCH_SIZE

DATE_OR_NULL = {"type": ["null", "string"], "format": "date"}


def build_dag(entities: Mapping[str, Entity] = ENTITIES, dag_id: str = "tk_ingest") -> DAG:
    """The ingest DAG for an entity table: one plan and one loader task per entry (a new entry there is
    a new task here). The module's DAG is built from ``ENTITIES``; tests pass a copy of the table."""
    names = list(entities)

    @dag(
        dag_id=dag_id,
        # A data-interval timetable: each daily run covers [previous midnight, midnight) UTC. (Airflow 3's
        # plain "@daily" gives runs a zero-length interval, which would load nothing.)
        schedule=CronDataIntervalTimetable("@daily", timezone="UTC"),
        start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
        catchup=False,
        max_active_runs=1,
        doc_md=__doc__,
        tags=["tweede-kamer", "neo4j"],
        default_args={
            "owner": "tk-neo4j-airflow",
            "retries": int(os.environ.get("TK_TASK_RETRIES", "3")),
            "retry_delay": timedelta(seconds=float(os.environ.get("TK_TASK_RETRY_DELAY_SECONDS", "60"))),
            "retry_exponential_backoff": True,
            "max_retry_delay": timedelta(minutes=30),
        },
        params={
            "start_date": Param(
                None,
                **DATE_OR_NULL,
                title="Start date",
                description="First day to load (YYYY-MM-DD, by ApiGewijzigdOp). Empty: the data interval.",
            ),
            "end_date": Param(
                None,
                **DATE_OR_NULL,
                title="End date",
                description="Day after the last one to load (exclusive, YYYY-MM-DD). Empty: now.",
            ),
            "entities": Param(
                names,
                type="array",
                items={"type": "string", "enum": names},
                minItems=1,
                uniqueItems=True,
                title="Entities",
                description="Which loaders run.",
            ),
            "window_days": Param(
                pipeline.DEFAULT_WINDOW_DAYS,
                type="integer",
                minimum=1,
                maximum=36600,
                title="Window size (days)",
                description=(
                    "A backfill is split into (its length / window_days) sub-windows per entity, loaded in "
                    "parallel; their boundaries are placed so each holds about as many changed items."
                ),
            ),
            "batch_size": Param(
                DEFAULT_BATCH_SIZE,
                type="integer",
                minimum=1,
                maximum=MAX_BATCH_SIZE,
                description="Items per Neo4j transaction.",
            ),
            "fail_on_item_errors": Param(
                True,
                type="boolean",
                description="Fail a loader task when items still fail after retries (so Airflow retries it).",
            ),
            "reconcile_tolerance": Param(
                DEFAULT_TOLERANCE,
                type="number",
                minimum=0,
                maximum=1,
                title="Reconciliation tolerance",
                description=(
                    "The reconcile task fails when an entity's nodes in Neo4j differ from the API's count "
                    "of live rows by more than this share of that count (0.01 = 1%)."
                ),
            ),
            "cleanup_keep": Param(
                None,
                type=["null", "integer"],
                minimum=1,
                description="When set, keep only this many most recent checkpoint runs (maintenance).",
            ),
        },
    )
    def tk_ingest():
        @task(retries=1)
        def setup() -> dict[str, str]:
            """The run's window and API version (``api_profile``), handed to the plan and load tasks.

            Conf errors (unknown key, wrong type, dates out of range, end before start) fail at once:
            a retry cannot fix them. Others (API or Neo4j unreachable) keep their retry."""
            from airflow.sdk.exceptions import AirflowFailException

            ctx = get_current_context()
            dag_run = ctx["dag_run"]
            try:
                return pipeline.prepare_run(
                    dag_id=dag_run.dag_id,
                    run_id=dag_run.run_id,
                    conf=dag_run.conf or {},
                    params=ctx["params"],
                    data_interval_start=ctx.get("data_interval_start"),
                    data_interval_end=ctx.get("data_interval_end"),
                    now=pendulum.now("UTC"),
                    valid_keys=ctx["dag"].params.keys(),
                )
            except pipeline.ConfError as e:
                raise AirflowFailException(str(e)) from e

        @task
        def plan(entity: str, window: dict[str, str]) -> list[dict[str, str]]:
            """This entity's sub-windows (none when the run leaves the entity out)."""
            return pipeline.plan_entity(entity, window, get_current_context()["params"])

        @task
        def load(entity: str, window: dict[str, str]) -> dict:
            ctx = get_current_context()
            ti = ctx["ti"]
            run_id = ctx["dag_run"].run_id
            summary = pipeline.run_loader(
                entity=entity,
                window=window,
                run_id=run_id,
                dag_id=ti.dag_id,
                task_id=ti.task_id,
                map_index=ti.map_index,
                try_number=ti.try_number,
                params=ctx["params"],
            )
            # the asset event of this task instance (emitted when it succeeds) carries its counts
            extra = event_extra(summary, window, run_id=run_id, map_index=ti.map_index)
            ctx["outlet_events"][graph_asset(entities[entity].label)].extra.update(extra)
            return summary

        @task(trigger_rule=TriggerRule.ALL_DONE)
        def reconcile() -> dict:
            """Per entity: nodes in Neo4j vs the API's count of live rows (include/loaders/reconcile.py)."""
            from airflow.sdk.exceptions import AirflowFailException

            from include.loaders.reconcile import ReconciliationError, run_reconcile

            ctx = get_current_context()
            chosen = (ctx["ti"].xcom_pull(task_ids="setup") or {}).get(pipeline.API_PROFILE_KEY)
            try:
                return run_reconcile(run_id=ctx["dag_run"].run_id, params=ctx["params"], api_profile=chosen)
            except ReconciliationError as e:
                raise AirflowFailException(str(e)) from e  # counts do not change by retrying

        @task
        def cleanup() -> None:
            """Optional maintenance: keep the newest `cleanup_keep` checkpoint runs (skipped when unset)."""
            from airflow.exceptions import AirflowSkipException

            keep = get_current_context()["params"].get("cleanup_keep")
            if not keep:
                raise AirflowSkipException("cleanup_keep is not set")
            pipeline.checkpoint_manager().cleanup_old_runs(keep=int(keep))

        window = setup()
        loads = []
        for entity, spec in entities.items():
            windows = plan.override(task_id=f"plan_{spec.loader.removeprefix('load_')}")(entity, window)
            loader = load.override(task_id=spec.loader, outlets=loader_outlets(spec))
            loads.append(loader.partial(entity=entity).expand(window=windows))
        loads >> reconcile()
        window >> cleanup()

    return tk_ingest()


tk_ingest_dag = build_dag()
