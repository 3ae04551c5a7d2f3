"""
# tk_on_zaak_changed — an example DAG scheduled on the `Zaak` asset

Runs when `tk_ingest`'s `load_zaken` has written cases: its schedule is the asset
`tk-graph://neo4j_default/Zaak` (see `include/loaders/assets.py`). It logs what each triggering asset
event says — the counts of one loader task instance (processed, skipped, failed, deleted) and its
window — and returns their sums. Copy it as the start of your own DAG that reacts to the graph.

**Paused when created** (`is_paused_upon_creation=True`): unpause it in the UI or with
`airflow dags unpause tk_on_zaak_changed` to have it run.
"""

from __future__ import annotations

import logging

import pendulum
from airflow.sdk import dag, get_current_context, task

from include.loaders.assets import EXTRA_COUNTS, graph_asset

log = logging.getLogger(__name__)

ZAAK = graph_asset("Zaak")


@dag(
    dag_id="tk_on_zaak_changed",
    schedule=[ZAAK],
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    catchup=False,
    is_paused_upon_creation=True,
    doc_md=__doc__,
    tags=["tweede-kamer", "neo4j", "example"],
    default_args={"owner": "tk-neo4j-airflow", "retries": 1},
)
def tk_on_zaak_changed():
    @task
    def report_zaak_changes() -> dict[str, int]:
        """Log each triggering Zaak event's counts and window; return the sums over the events."""
        events = get_current_context()["triggering_asset_events"][ZAAK]
        totals = dict.fromkeys(EXTRA_COUNTS, 0)
        for event in events:
            extra = event.extra or {}
            window = extra.get("window") or {}
            log.info(
                "Zaak changed in run %s (window [%s, %s), map index %s): %s",
                extra.get("run_id"),
                window.get("start"),
                window.get("end"),
                extra.get("map_index"),
                ", ".join(f"{k} {extra.get(k)}" for k in EXTRA_COUNTS),
            )
            for k in EXTRA_COUNTS:
                totals[k] += int(extra.get(k) or 0)
        log.info("%d Zaak asset event(s); in total %s", len(events), totals)
        return totals

    report_zaak_changes()


tk_on_zaak_changed_dag = tk_on_zaak_changed()
