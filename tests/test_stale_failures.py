"""Issue 12, deliverable 5: a failure on record whose key never comes back is cleared, with its reason.

Before the fix a failure of an earlier try stayed on record for ever when the window did not bring its
key back (a row served without ``Id`` and later fixed, an item that moved out of the window, an item the
API no longer serves): with ``fail_on_item_errors`` every retry of the loader task failed although the
graph was complete. Real Neo4j, the offline TK API over HTTP, the checkpoint engine on disk.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from tk_checkpoint import CheckpointManager, LoaderCheckpoint

from include.loaders.load import load_entity
from include.loaders.pipeline import PipelineError, run_loader
from include.tk_replay.dataset import Dataset
from include.tk_replay.faults import FaultConfig
from tests.loader_fixtures import make_client, replay

WHOLE = {"start": "2000-01-01T00:00:00+00:00", "end": "2100-01-01T00:00:00+00:00"}


@pytest.fixture
def load_log(capture_logs):
    return capture_logs("include.loaders.load")


def _zaak_ids(driver) -> set[str]:
    return {r["id"] for r in driver.execute_query("MATCH (z:Zaak) RETURN z.id AS id").records}


def _task(tmp_path, try_number: int) -> dict:
    return dict(
        entity="Zaak",
        window=WHOLE,
        run_id="manual__stale",
        dag_id="tk_ingest",
        task_id="load_zaken",
        map_index=-1,
        try_number=try_number,
        params={"fail_on_item_errors": True},
        checkpoint_base=str(tmp_path),
    )


def test_a_row_served_without_id_then_fixed_no_longer_fails_the_task(
    neo4j_empty, tmp_path, monkeypatch, load_log
):
    ds = Dataset.generate(30, seed=5, sets=("Zaak",))
    live = ds.live_ids("Zaak")
    with replay(ds, faults=FaultConfig(without_id={live[4]})) as server:
        monkeypatch.setenv("TK_API_BASE_URL", server.url)
        with pytest.raises(PipelineError, match="1 Zaak item"):
            run_loader(**_task(tmp_path, 1))
        failed = CheckpointManager(str(tmp_path)).get_run("manual__stale")["loaders"]["load_zaken"]
        assert failed["failed_count"] == 1

        server.set_faults(None)  # the source fixed the row: it now comes with its Id
        summary = run_loader(**_task(tmp_path, 2))  # the Airflow retry: no PipelineError

    assert summary["failed"] == 0 and summary["cleared"] == 1 and summary["processed"] == 1
    assert live[4] in _zaak_ids(neo4j_empty)
    assert "failure cleared: a row served without Id that the window no longer serves" in load_log.text
    # durable: a fresh reader of the checkpoint sees no failure
    again = CheckpointManager(str(tmp_path)).get_run("manual__stale")["loaders"]["load_zaken"]
    assert again["failed_count"] == 0 and again["state"] == "completed"


def test_moved_out_of_the_window_and_gone_are_cleared_a_real_failure_stays(neo4j_empty, tmp_path, load_log):
    ds = Dataset.generate(40, seed=6, sets=("Zaak",))
    live = ds.live_ids("Zaak")
    moved, gone, still = live[1], live[2], live[3]
    for rid in (moved, gone, still):
        ds.rows["Zaak"][rid]["Titel"] = {"nested": "a map Neo4j refuses"}
    ds.touch()
    start, end = datetime(2000, 1, 1, tzinfo=UTC), datetime(2030, 1, 1, tzinfo=UTC)
    manager = CheckpointManager(str(tmp_path))
    manager.start_new_run(run_id="moved")
    with replay(ds) as server:
        client = make_client(server.url)

        def one_try():
            with LoaderCheckpoint(manager, "load_zaken") as cp:
                result = load_entity(
                    "Zaak",
                    client=client,
                    driver=neo4j_empty,
                    checkpoint=cp,
                    start=start,
                    end=end,
                    retry_backoff=0.01,
                )
                return result, set(cp.failed_items())

        first, on_record = one_try()
        assert first.failed == 3 and on_record == {moved, gone, still}

        ds.rows["Zaak"][moved]["Titel"] = "fixed later, so it changed after the window"
        ds.rows["Zaak"][moved]["ApiGewijzigdOp"] = "2031-02-03T04:05:06.0000000Z"
        del ds.rows["Zaak"][gone]  # the API no longer serves it at all
        ds.touch()
        second, on_record = one_try()

    assert on_record == {still}  # a row still served in the window and still failing stays on record
    assert second.failed == 1 and second.cleared == 2 and second.failed_ids == [still]
    text = load_log.text
    assert f"{moved}: failure cleared: it moved out of the window (ApiGewijzigdOp now 2031-02-03" in text
    assert f"{gone}: failure cleared: the API no longer serves it (HTTP 404 for its key)" in text
    assert "2 stale failure(s) cleared" in text
    # the log line about what a retry does is what the code does
    assert "retries those the window still serves and clears those it no longer serves" in text
    assert moved not in _zaak_ids(neo4j_empty)  # not loaded by this window: the later window's run does
