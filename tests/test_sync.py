"""The SyncFeed -> graph loader (include/loaders/sync.py, feed_rows.py) against real Neo4j and the
offline server over real HTTP.

- the same data through OData (``load_entity``) and through the feed (``sync_type``) gives equal dumps
  (only the bookkeeping property ``feedSkiptoken`` is left out);
- a full sync, ``mutate()`` and a catch-up from the durable cursors equals a fresh full sync;
- an older entry never overwrites a newer one (live or tombstone);
- a sync stopped by the server's fail-after fault: the cursor is where Neo4j is, and a rerun of the
  run carries on without repeating committed entries.
"""

from __future__ import annotations

import dataclasses

import pytest

from include.loaders.api import ApiError
from include.loaders.entities import CORE_ENTITIES, ENTITIES
from include.loaders.graph import GraphWriter
from include.loaders.settings import ApiSettings
from include.loaders.sync import FEED_POSITION, feed_item, sync_type
from include.loaders.syncfeed import SyncFeedClient
from include.tk_replay.dataset import Dataset
from include.tk_replay.faults import FaultConfig
from include.tk_replay.syncfeed_server import change_log
from tests.loader_fixtures import dump_graph, load_all, make_client, replay, wipe

# the five entities of tk_ingest's mission, and new types with each feed form: votes (skiptoken-first
# links), persons (naive times, "True" tombstones), parties, promises (ns1:, stamped refs), side jobs
# (nested elements), decisions (m:n refs), the files' attributes (Document, Verslag)
TYPES = (
    *CORE_ENTITIES,
    "Stemming",
    "Persoon",
    "Fractie",
    "Toezegging",
    "PersoonNevenfunctie",
    "Besluit",
    "Verslag",
)
FAST = dict(max_retries=2, backoff_base=0.001, backoff_max=0.002, read_timeout=10.0)


def feed_client(url: str) -> SyncFeedClient:
    return SyncFeedClient(ApiSettings(base_url=url, **FAST), sleep=lambda s: None)


def dump_without_bookkeeping(driver) -> dict:
    driver.execute_query(f"MATCH (n) WHERE n.{FEED_POSITION} IS NOT NULL REMOVE n.{FEED_POSITION}")
    return dump_graph(driver)


def sync_all(url: str, driver, types=TYPES, **kw) -> dict:
    with feed_client(url) as client:
        return {t: sync_type(t, client=client, driver=driver, batch_size=64, **kw) for t in types}


def test_odata_and_syncfeed_give_the_same_graph(neo4j_empty):
    driver = neo4j_empty
    ds = Dataset.generate(40, seed=21)
    with replay(ds) as server:
        load_all(make_client(server.url), driver, TYPES, pipeline=False)
        odata = dump_graph(driver)
        wipe(driver)
        results = sync_all(server.url, driver)
        assert all(r.caught_up for r in results.values())
        feed = dump_without_bookkeeping(driver)
    assert len(odata["nodes"]) > 300 and len(odata["rels"]) > 300  # a graph worth comparing
    assert feed["nodes"] == odata["nodes"]
    assert feed["rels"] == odata["rels"]


def test_full_sync_mutate_catch_up_equals_a_fresh_full_sync(neo4j_empty, tmp_path):
    from tk_checkpoint.cursor import FeedCursors

    driver = neo4j_empty
    ds = Dataset.generate(15, seed=22)
    types = tuple(ENTITIES)  # every type: a far end that a mutation tombstones is deleted by its own sync
    with replay(ds) as server:
        cursors = FeedCursors(str(tmp_path / "a"))
        sync_all(server.url, driver, types, cursors=cursors, run_id="full")
        first = {t: cursors.get(t).skiptoken for t in types}
        ds.mutate(seed=5)
        log = change_log(ds)
        results = sync_all(server.url, driver, types, cursors=cursors, run_id="catchup")
        for t in types:
            assert results[t].start_skiptoken == first[t]
            new = [
                tok
                for tok in log.by_category[t]
                if tok > first[t] and log.latest[log.entries[tok - 1]] == tok
            ]
            assert results[t].processed == len(new) > 0  # exactly the changes, re-emissions included
            state = cursors.get(t)
            assert state.skiptoken == log.head and state.caught_up_at is not None and state.behind == 0
        caught_up = dump_without_bookkeeping(driver)
        wipe(driver)
        sync_all(server.url, driver, types, cursors=FeedCursors(str(tmp_path / "b")), run_id="fresh")
        fresh = dump_without_bookkeeping(driver)
    assert sorted(set(caught_up["nodes"]) ^ set(fresh["nodes"]))[:4] == []
    assert sorted(set(caught_up["rels"]) ^ set(fresh["rels"]))[:4] == []
    assert caught_up == fresh


def test_an_older_entry_never_overwrites_a_newer_one(neo4j_empty):
    driver = neo4j_empty
    ds = Dataset.generate(20, seed=23)
    entity = ENTITIES["Zaak"]
    with replay(ds) as server, feed_client(server.url) as client:
        sync_type("Zaak", client=client, driver=driver)
        entry = next(e for p in client.iter_pages("Zaak", 0) for e in p.entries if not e.deleted)
    writer = GraphWriter(driver, guard=FEED_POSITION)

    def titel() -> str | None:
        rec = driver.execute_query("MATCH (n:Zaak {id: $id}) RETURN n.titel AS t", id=entry.id).records
        return rec[0]["t"] if rec else "<gone>"

    before = titel()
    older = dataclasses.replace(entry, skiptoken=entry.skiptoken - 1, fields={**entry.fields, "titel": "old"})
    writer.write_batch(entity, [feed_item(entity, older)])
    assert titel() == before
    tomb = dataclasses.replace(older, deleted=True, fields={}, refs={})
    writer.write_batch(entity, [feed_item(entity, tomb)])
    assert titel() == before  # an older tombstone deletes nothing
    newer = dataclasses.replace(entry, skiptoken=entry.skiptoken + 1, fields={**entry.fields, "titel": "new"})
    writer.write_batch(entity, [feed_item(entity, newer)])
    assert titel() == "new"
    writer.write_batch(entity, [feed_item(entity, dataclasses.replace(tomb, skiptoken=entry.skiptoken + 2))])
    assert titel() == "<gone>"


def test_fail_after_stops_with_the_cursor_at_neo4j_and_the_rerun_repeats_nothing(neo4j_empty, tmp_path):
    from tk_checkpoint import CheckpointManager, LoaderCheckpoint
    from tk_checkpoint.cursor import FeedCursors

    driver = neo4j_empty
    ds = Dataset.generate(700, seed=24, sets=("Stemming", "Besluit", "Fractie", "Persoon"))
    n = 400
    base = str(tmp_path / "cp")
    manager = CheckpointManager(base)
    run_id = manager.start_new_run(run_id="manual__failafter")
    cursors = FeedCursors(base)
    with replay(ds, faults=FaultConfig(fail_after_entity="Stemming", fail_after_items=n)) as server:
        with feed_client(server.url) as client:
            cp = LoaderCheckpoint(manager, "sync_stemmingen")
            with pytest.raises(ApiError):
                sync_type(
                    "Stemming",
                    client=client,
                    driver=driver,
                    ledger=cp,
                    cursors=cursors,
                    run_id=run_id,
                    batch_size=50,
                )
            cp.close()
        cursor = cursors.get("Stemming").skiptoken
        held = driver.execute_query(
            f"MATCH (n:Stemming) WHERE n.{FEED_POSITION} IS NOT NULL RETURN max(n.{FEED_POSITION}) AS m, "
            "count(n) AS c"
        ).records[0]
        log = change_log(ds)
        tokens = log.by_category["Stemming"]
        done = [t for t in tokens if t <= cursor]
        assert 0 < len(done) <= n
        assert held["m"] is not None and held["m"] <= cursor  # nothing in Neo4j beyond what the cursor says
        server.set_faults(FaultConfig())
        with feed_client(server.url) as client:
            cp = LoaderCheckpoint(manager, "sync_stemmingen")
            before = cp.processed_count
            result = sync_type(
                "Stemming",
                client=client,
                driver=driver,
                ledger=cp,
                cursors=cursors,
                run_id=run_id,
                batch_size=50,
            )
            cp.close()
    assert before == len(done)  # the first try's committed entries are on record
    assert result.start_skiptoken == cursor and result.processed == len(tokens) - len(done)
    assert result.caught_up and cursors.get("Stemming").skiptoken == log.head
    count = driver.execute_query("MATCH (n:Stemming) RETURN count(n) AS c").records[0]["c"]
    assert count == len(ds.live_ids("Stemming"))  # the graph is whole: no entry was skipped


# -- SIGKILL at random moments, rerun with the same run id ---------------------------------------------
CRASH_TYPES = ("Zaak", "Stemming", "Persoon", "Besluit")


def _entries_up_to_cursor_are_in_neo4j(driver, ds: Dataset, name: str, cursor: int) -> None:
    """Every current entry of ``name`` at or before ``cursor`` is what Neo4j holds: a live row's node
    carries that entry's skiptoken, a tombstone's node is gone."""
    log = change_log(ds)
    live, dead = [], []
    for tok in log.by_category.get(name, ()):
        if tok > cursor:
            break
        rid = log.entries[tok - 1][1]
        (dead if ds.rows[name][rid].get("Verwijderd") else live).append({"id": rid, "tok": tok})
    q = f"UNWIND $rows AS r MATCH (n:{name} {{id: r.id}}) WHERE n.{FEED_POSITION} = r.tok RETURN count(n)"
    assert driver.execute_query(q, rows=live).records[0][0] == len(live), (name, cursor)
    q = f"UNWIND $ids AS i MATCH (n:{name} {{id: i}}) RETURN count(n)"
    assert driver.execute_query(q, ids=[d["id"] for d in dead]).records[0][0] == 0, (name, cursor)


@pytest.mark.slow
def test_sigkill_at_random_moments_then_rerun_equals_an_uninterrupted_sync(
    neo4j_empty, neo4j_server, tmp_path
):
    import os
    import random
    import signal
    import subprocess
    import sys
    import time

    from tk_checkpoint import CheckpointManager
    from tk_checkpoint.cursor import FeedCursors

    from include.loaders.sync import task_id_of
    from tests.conftest import NEO4J_PASSWORD, ROOT
    from tests.sync_fixtures import sync_with_checkpoints

    driver = neo4j_empty
    batch = 10
    ds = Dataset.generate(150, seed=25, sets=CRASH_TYPES)
    total = sum(len(ds.rows[t]) for t in CRASH_TYPES)
    rng = random.Random(20261202)
    bolt, _ = neo4j_server
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + str(ROOT / "plugins")}
    with replay(ds) as server:

        def child(run_id: str, base: str) -> subprocess.Popen:
            cmd = [
                sys.executable,
                "-m",
                "tests.sync_fixtures",
                "--url",
                server.url,
                "--bolt",
                bolt,
                "--password",
                NEO4J_PASSWORD,
                "--run-id",
                run_id,
                "--base",
                base,
                "--types",
                ",".join(CRASH_TYPES),
                "--batch-size",
                str(batch),
            ]
            proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
            assert proc.stdout.readline().strip() == "READY"
            return proc

        proc = child("reference", str(tmp_path / "reference"))
        t0 = time.monotonic()
        out = proc.communicate(timeout=120)[0]
        duration = time.monotonic() - t0
        assert proc.returncode == 0, out
        reference = dump_without_bookkeeping(driver)

        # kill until 20 kills have landed mid-sync or 60 kills in all (some land before the first commit or
        # after the last; the share varies with the machine's load: 17 of 60 in one CI run, fewer on a
        # quiet machine where the sync is quick); every kill is checked the same way
        partial = trial = 0
        while partial < 20 and trial < 60:
            trial += 1
            wipe(driver)
            base, run_id = str(tmp_path / f"trial{trial}"), f"crash-{trial}"
            proc = child(run_id, base)
            time.sleep(rng.uniform(0.0, 0.9 * duration))
            proc.send_signal(signal.SIGKILL)
            proc.communicate(timeout=30)

            cursors = FeedCursors(base)
            manager = CheckpointManager(base)
            marked = 0
            for name in CRASH_TYPES:
                state = cursors.get(name)
                if state is not None:  # no cursor ahead of what Neo4j holds
                    _entries_up_to_cursor_are_in_neo4j(driver, ds, name, state.skiptoken)
                try:
                    marked += len(manager.read_loader(run_id, task_id_of(ENTITIES[name])).processed)
                except Exception:
                    pass  # killed before this type's checkpoint was written
            partial += 0 < marked < total

            results = sync_with_checkpoints(server.url, driver, base, run_id, list(CRASH_TYPES), batch)
            processed = sum(r.processed for r in results.values())
            skipped = sum(r.skipped for r in results.values())
            # the rerun writes exactly what the first process had not recorded as committed (the entries
            # behind the cursors are not read again; those past them on record are skipped)
            assert processed + marked == total, trial
            assert skipped <= marked, trial
            assert dump_without_bookkeeping(driver) == reference, trial
            for name in CRASH_TYPES:
                assert FeedCursors(base).get(name).skiptoken == change_log(ds).head
    assert partial >= 5, f"only {partial} of {trial} kills landed mid-sync"


def test_the_three_timestamp_forms_give_what_odata_serves():
    """``…Z``, naive UTC and ``+02:00`` of one instant: the same ApiGewijzigdOp (UTC) and GewijzigdOp
    (Amsterdam time), 7 digits kept, as OData writes them."""
    from include.loaders.feed_rows import odata_time

    forms = (
        "2023-08-29T11:10:24.0962032Z",
        "2023-08-29T11:10:24.0962032",
        "2023-08-29T13:10:24.0962032+02:00",
    )
    assert {odata_time(f) for f in forms} == {"2023-08-29T11:10:24.0962032Z"}
    assert {odata_time(f, local=True) for f in forms} == {"2023-08-29T13:10:24.0962032+02:00"}
    assert odata_time("2008-01-02T12:13:04Z", local=True) == "2008-01-02T13:13:04.0000000+01:00"  # winter
    with pytest.raises(ValueError, match="not a SyncFeed timestamp"):
        odata_time("29-08-2023")
