"""Acceptance tests of the entity loaders: real Neo4j, the offline TK server (include.tk_replay), the
checkpoint engine. Each test names the acceptance line of issue 5 it proves."""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from collections import Counter

import pytest

from include.loaders.entities import CORE_ENTITIES, ENTITIES, requirements
from include.loaders.graph import connect
from include.loaders.load import load_entity, run_loaders
from include.tk_replay.dataset import Dataset, format_ticks
from include.tk_replay.faults import FaultConfig
from tests.conftest import NEO4J_PASSWORD, ROOT
from tests.loader_fixtures import (
    ALL_SIX,
    dump_graph,
    expected_edges,
    graph_edges,
    load_all,
    make_client,
    replay,
    wipe,
)


@pytest.fixture
def load_log(capture_logs):
    """The load path's log lines (the loop's and its writer's), also once Airflow's logging (structlog,
    no propagation) is configured."""
    return capture_logs("include.loaders.load", "include.loaders.flow")


def _count(driver, query: str, **params) -> int:
    return driver.execute_query(query, **params).records[0][0]


def _node(driver, label: str, rid: str) -> dict | None:
    recs = driver.execute_query(f"MATCH (n:{label} {{id: $id}}) RETURN properties(n) AS p", id=rid).records
    return recs[0]["p"] if recs else None


# -- the real samples load --------------------------------------------------------------------------------


def test_real_samples_load_counts_values_and_no_tombstones(neo4j_empty, load_log):
    driver = neo4j_empty
    ds = Dataset.samples()
    hook_driver = connect("neo4j_default")  # as in Airflow: Neo4jHook, the env-var connection
    with replay(ds) as server:
        client = make_client(server.url)
        client.check_metadata(requirements())
        try:
            results = load_all(client, hook_driver, CORE_ENTITIES, batch_size=100)
        finally:
            hook_driver.close()

    for name in CORE_ENTITIES:
        rows = ds.rows[name]
        live = [rid for rid, r in rows.items() if not r.get("Verwijderd")]
        tombs = [rid for rid, r in rows.items() if r.get("Verwijderd")]
        assert _count(driver, f"MATCH (n:{name}) RETURN count(n)") == len(live), name
        assert results[name].processed == len(rows) and results[name].failed == 0
        assert results[name].deleted == len(tombs)
        assert _count(driver, f"MATCH (n:{name}) WHERE n.id IN $ids RETURN count(n)", ids=tombs) == 0
    assert len([r for r in ds.rows["Activiteit"].values() if r.get("Verwijderd")]) == 70  # the sample's 70

    z = _node(driver, "Zaak", "e2cf50ed-b561-4752-b21a-61c56692c027")
    assert (z["nummer"], z["soort"], z["volgnummer"], z["afgedaan"], z["grootProject"]) == (
        "2025Z05057",
        "Motie",
        447,
        True,
        False,
    )
    assert z["kabinetsappreciatie"] == "Verzocht motie aan te houden" and "citeertitel" not in z
    assert z["gestartOp"].iso_format() == "2025-03-19T00:00:00.000000000+01:00"
    assert z["apiGewijzigdOp"].iso_format() == "2025-10-02T21:14:13.202435000+00:00"
    d = _node(driver, "Document", "438865be-3509-4cfc-831c-1f6c50ab6d2a")
    assert (d["documentNummer"], d["kamer"], d["contentLength"]) == ("2025D43338", 2, 25471)
    assert "volgnummer" not in d  # -1 sentinel
    v = _node(driver, "Vergadering", "7c09ca11-7de9-4cc1-86c6-d13a79eecd40")
    assert "sluiting" not in v and v["vergaderingNummer"] == 9  # 0001-01-01 sentinel
    assert v["aanvangstijd"].iso_format() == "2025-10-02T10:15:00.000000000+02:00"
    p = _node(driver, "Agendapunt", "6c27da20-4739-49f8-b804-308fe52ec7da")
    assert (
        p["nummer"] == "2025P16955" and p["volgorde"] == 11 and p["noot"].startswith("<strong>De Voorzitter")
    )
    a = _node(driver, "Activiteit", "ad15b461-48eb-4607-9f1e-e85498fba16a")
    assert a["nummer"] == "2025A06526" and a["besloten"] is False
    assert a["eindtijd"].iso_format() == "2025-10-02T23:58:00.000000000+02:00"

    # progress lines and the closing summary, as the original showed them
    text = load_log.text
    assert re.search(r"📊 Progress: 250/250 \(100\.0%\)", text)
    assert re.search(r"✅ Activiteit: 251 processed / 0 skipped / 0 failed / 251 total .* items/s", text)

    # the Cypher of docs/graph-model.md runs on the loaded graph (the parameters of every query on the
    # page; the generated "Queries users ask" are checked for their answers in tests/test_queries.py)
    doc = (ROOT / "docs" / "graph-model.md").read_text()
    params = {"persoon": "", "fractie": "", "label": "Zaak", "since": "2025-01-01T00:00:00Z"}
    for query in re.findall(r"```cypher\n(.*?)```", doc, flags=re.S):
        driver.execute_query(query, nummer="2025Z05057", **params)


# -- generated data: every relationship exactly once, in any order; loading twice changes nothing --------


def test_generated_relationships_exactly_once_in_any_loader_order(neo4j_empty):
    driver = neo4j_empty
    ds = Dataset.generate(20, seed=7)  # per type: 35 types
    expected = expected_edges(ds)
    assert {t for t, _, _ in expected} == {r.type for e in ENTITIES.values() for r in e.relationships}
    orders = [list(ALL_SIX), list(reversed(ALL_SIX)), random.Random(3).sample(list(ALL_SIX), len(ALL_SIX))]
    dumps = []
    with replay(ds) as server:
        client = make_client(server.url)
        for order in orders:
            wipe(driver)
            load_all(client, driver, order, batch_size=37)
            counts = Counter(graph_edges(driver))
            assert set(counts) == expected, order
            assert set(counts.values()) == {1}, order  # exactly once
            assert _count(driver, "MATCH (n) WHERE size(labels(n)) = 0 RETURN count(n)") == 0
            # every far end got loaded by its own loader: no placeholder left
            assert _count(driver, "MATCH (n) WHERE n.apiGewijzigdOp IS NULL RETURN count(n)") == 0
            dumps.append(dump_graph(driver))
    assert dumps[0] == dumps[1] == dumps[2]


def test_loading_the_same_data_twice_changes_nothing(neo4j_empty, tmp_path):
    driver = neo4j_empty
    ds = Dataset.generate(20, seed=8)  # per type: 35 types

    def counts():
        return (
            _count(driver, "MATCH (n) RETURN count(n)"),
            _count(driver, "MATCH ()-[r]->() RETURN count(r)"),
            _count(driver, "MATCH (n) RETURN sum(size(keys(n)))"),
        )

    with replay(ds) as server:
        client = make_client(server.url)
        load_all(client, driver, ALL_SIX, batch_size=50)
        first, first_counts = dump_graph(driver), counts()
        # the second load runs with checkpoints in a new run: nothing is skipped, everything rewritten
        results = run_loaders(
            ALL_SIX, client=client, driver=driver, checkpoint_base=str(tmp_path), run_id="again"
        )
        assert all(r.skipped == 0 and r.processed == len(ds.rows[e]) for e, r in results.items())
        assert counts() == first_counts
        assert dump_graph(driver) == first
    assert first_counts[1] == len(expected_edges(ds))


# -- convergence: full load, mutate, delta load == fresh full load of the final data --------------------


def test_convergence_delta_equals_fresh_full_load(neo4j_empty):
    driver = neo4j_empty
    ds = Dataset.generate(30, seed=11)  # per type: 35 types
    with replay(ds) as server:
        client = make_client(server.url)
        load_all(client, driver, ALL_SIX, batch_size=25)
        before = dump_graph(driver)

        report = ds.mutate(seed=5, fraction=0.1)
        # plus a value that becomes null: it must disappear from the node
        zid = next(i for i in ds.live_ids("Zaak") if ds.rows["Zaak"][i].get("Titel"))
        with ds.lock:
            ds.rows["Zaak"][zid]["Titel"] = None
            ds.rows["Zaak"][zid]["ApiGewijzigdOp"] = format_ticks(ds.ticks(report.until.isoformat()) + 10**7)
            ds.touch()
        assert report.tombstoned["Document"] and report.links_removed and report.links_added

        delta = load_all(client, driver, ALL_SIX, start=report.since, batch_size=25)
        after_delta = dump_graph(driver)
        bumped = sum(len(v) for v in report.bumped.values())
        assert 0 < sum(r.processed for r in delta.values()) <= bumped + 1 < sum(map(len, ds.rows.values()))
        assert "titel" not in _node(driver, "Zaak", zid)

        wipe(driver)
        load_all(client, driver, ALL_SIX, batch_size=25)
        fresh = dump_graph(driver)
    assert after_delta != before
    assert after_delta == fresh
    assert set(graph_edges(driver)) == expected_edges(ds)


# -- poison items ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("pipeline", [True, False], ids=["pipeline", "sequential"])
def test_poison_items_are_marked_failed_and_everything_else_loads(neo4j_empty, tmp_path, load_log, pipeline):
    from tk_checkpoint import CheckpointManager, LoaderCheckpoint

    driver = neo4j_empty
    ds = Dataset.generate(60, seed=13, sets=("Zaak", "Document"))
    live = ds.live_ids("Zaak")
    bad_value, bad_date, no_id = live[3], live[17], live[30]
    ds.rows["Zaak"][bad_value]["Titel"] = {"nested": "a map Neo4j refuses"}
    ds.rows["Zaak"][bad_date]["GestartOp"] = "2025-13-45T00:00:00+01:00"
    ds.touch()
    manager = CheckpointManager(str(tmp_path))
    manager.start_new_run(run_id="poison")
    with replay(ds, faults=FaultConfig(without_id={no_id})) as server:  # served without its Id
        client = make_client(server.url)
        with LoaderCheckpoint(manager, "load_zaken") as cp:
            result = load_entity(
                "Zaak",
                client=client,
                driver=driver,
                checkpoint=cp,
                batch_size=8,
                retry_backoff=0.01,
                pipeline=pipeline,
            )
            failed = cp.failed_items()
        assert result.failed == 3 and result.processed == len(ds.rows["Zaak"]) - 3
        assert set(failed) == {bad_value, bad_date} | {k for k in failed if k.startswith("no-Id:")}
        assert "Property values can only be of primitive types" in failed[bad_value]["error"]
        assert failed[bad_value]["attempts"] == 3  # the first try and two automatic retries
        assert "GestartOp='2025-13-45T00:00:00+01:00'" in failed[bad_date]["error"]
        assert "has no Id" in next(v["error"] for k, v in failed.items() if k.startswith("no-Id:"))
        n_live = len(live)
        assert (
            _count(driver, "MATCH (z:Zaak) WHERE z.apiGewijzigdOp IS NOT NULL RETURN count(z)") == n_live - 3
        )
        assert _node(driver, "Zaak", bad_value) is None
        assert "⚠️ 3 items failed during processing" in load_log.text
        assert "splitting it to isolate the bad items" in load_log.text

        # the next try of the task: the data was fixed at the source; only the failed items are redone
        ds.rows["Zaak"][bad_value]["Titel"] = "fixed"
        ds.touch()
        manager.start_new_run(run_id="poison")
        with LoaderCheckpoint(manager, "load_zaken") as cp:
            again = load_entity("Zaak", client=client, driver=driver, checkpoint=cp, retry_backoff=0.01)
            still = set(cp.failed_items())
    assert again.skipped == result.processed and again.processed == 1 and again.failed == 2
    assert bad_value not in still and bad_date in still
    assert _node(driver, "Zaak", bad_value)["titel"] == "fixed"


def test_api_error_propagates_after_saving_the_checkpoint(neo4j_empty, tmp_path):
    """A dead API (after the client's retries) fails the loader, with the committed work on record."""
    from tk_checkpoint import CheckpointManager, LoaderCheckpoint

    from include.loaders.api import ApiError

    ds = Dataset.generate(600, seed=2, sets=("Activiteit",))
    manager = CheckpointManager(str(tmp_path))
    manager.start_new_run(run_id="dead-api")
    with replay(ds) as server:
        # every page request that reaches beyond item 300 of Activiteit answers HTTP 500
        server.set_faults(FaultConfig(fail_after_entity="Activiteit", fail_after_items=300))
        client = make_client(server.url, max_retries=1, profile="v4/2.0")  # its pages hold 250 rows
        cp = LoaderCheckpoint(manager, "load_activiteiten")
        with pytest.raises(ApiError):
            load_entity("Activiteit", client=client, driver=neo4j_empty, checkpoint=cp, batch_size=100)
    state = manager.read_loader("dead-api", "load_activiteiten")
    assert state.state == "failed" and "ApiError" in (state.error or "")
    assert len(state.processed) == 250  # the first page was committed and saved, nothing more


@pytest.mark.parametrize("pipeline", [True, False], ids=["pipeline", "sequential"])
def test_neo4j_lost_mid_load_keeps_marks_equal_to_commits(neo4j_empty, tmp_path, monkeypatch, pipeline):
    """The database goes away at the 4th transaction (injected into the real writer): the loader fails,
    and the checkpoint holds exactly the items whose transactions committed, also the one the writer
    thread ran after the failed one. The next try skips exactly those and completes the graph."""
    from neo4j.exceptions import ServiceUnavailable
    from tk_checkpoint import CheckpointManager, LoaderCheckpoint

    from include.loaders.graph import GraphWriter

    driver = neo4j_empty
    ds = Dataset.generate(400, seed=8, sets=("Zaak",))
    real_write = GraphWriter.write_batch
    calls = []

    def flaky_write(self, entity, items):
        calls.append(len(items))
        if len(calls) == 4:
            raise ServiceUnavailable("injected: the connection to Neo4j was lost")
        return real_write(self, entity, items)

    manager = CheckpointManager(str(tmp_path))
    manager.start_new_run(run_id="lost")
    with replay(ds) as server:
        client = make_client(server.url)
        monkeypatch.setattr(GraphWriter, "write_batch", flaky_write)
        with pytest.raises(ServiceUnavailable), LoaderCheckpoint(manager, "load_zaken") as cp:
            load_entity("Zaak", client=client, driver=driver, checkpoint=cp, batch_size=50, pipeline=pipeline)
        state = manager.read_loader("lost", "load_zaken")
        assert state.state == "failed" and "ServiceUnavailable" in (state.error or "")
        committed = _committed_live(driver, ds, "Zaak")
        live_marked = {i for i in state.processed if not ds.rows["Zaak"][i].get("Verwijderd")}
        assert live_marked == committed  # nothing committed is left unmarked, nothing unmarked is claimed
        assert len(state.processed) == (150 if not pipeline else 200)  # batches 1-3 (and 5 when pipelined)

        monkeypatch.setattr(GraphWriter, "write_batch", real_write)
        manager.start_new_run(run_id="lost")
        with LoaderCheckpoint(manager, "load_zaken") as cp:
            again = load_entity("Zaak", client=client, driver=driver, checkpoint=cp, batch_size=50)
    assert again.skipped == len(state.processed)
    assert again.processed + again.skipped == len(ds.rows["Zaak"])
    # the checkpoint counts each skip once (the loop per streak; is_processed counts nothing)
    assert manager.read_loader("lost", "load_zaken").skipped_count == again.skipped
    assert _committed_live(driver, ds, "Zaak") == set(ds.live_ids("Zaak"))


# -- SIGKILL at random points, rerun with the same run id ------------------------------------------------


def _committed_live(driver, ds: Dataset, entity: str) -> set[str]:
    """Live rows of ``entity`` whose node holds the row's current values (written by its loader)."""
    rows = [
        {"id": rid, "t": r["ApiGewijzigdOp"]} for rid, r in ds.rows[entity].items() if not r.get("Verwijderd")
    ]
    q = (
        f"UNWIND $rows AS row MATCH (n:{entity} {{id: row.id}}) "
        "WHERE n.apiGewijzigdOp = datetime(row.t) RETURN n.id"
    )
    return {r[0] for r in driver.execute_query(q, rows=rows).records}


def _child_command(url: str, bolt: str, run_id: str, base: str, *extra: str) -> list[str]:
    """The command line of the loader child program (``tests.loader_fixtures``) the crash test kills."""
    return [
        sys.executable,
        "-m",
        "tests.loader_fixtures",
        *("--url", url, "--bolt", bolt, "--password", NEO4J_PASSWORD),
        *("--run-id", run_id, "--base", base),
        *extra,
    ]


@pytest.mark.slow
def test_sigkill_at_random_points_then_rerun_equals_uninterrupted_load(neo4j_empty, neo4j_server, tmp_path):
    from tk_checkpoint import CheckpointManager

    driver = neo4j_empty
    batch = 10
    ds = Dataset.generate(10, seed=21)  # per type: 35 types, as many rows in all as six types of 60
    total = sum(len(ds.rows[e]) for e in ALL_SIX)
    rng = random.Random(20261127)
    bolt, _ = neo4j_server
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + str(ROOT / "plugins")}
    with replay(ds) as server:

        def child(run_id: str, base: str) -> subprocess.Popen:
            cmd = _child_command(server.url, bolt, run_id, base, "--batch-size", str(batch))
            proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
            assert proc.stdout.readline().strip() == "READY"
            return proc

        # the reference: one uninterrupted load by the same child program, timed
        proc = child("reference", str(tmp_path / "reference"))
        t0 = time.monotonic()  # from READY (imports done) to the end: the window the kills aim at
        out = proc.communicate(timeout=120)[0]
        duration = time.monotonic() - t0
        assert proc.returncode == 0, out
        reference = dump_graph(driver)
        assert set(graph_edges(driver)) == expected_edges(ds)

        partial = 0
        for trial in range(20):
            wipe(driver)
            base, run_id = str(tmp_path / f"trial{trial}"), f"crash-{trial}"
            proc = child(run_id, base)
            time.sleep(rng.uniform(0.0, 0.9 * duration))
            proc.send_signal(signal.SIGKILL)
            proc.communicate(timeout=30)

            # what the checkpoint holds after the kill was committed; at most two batches (the one being
            # recorded and the one the writer thread runs meanwhile) committed unmarked
            manager = CheckpointManager(base)
            marked: dict[str, set[str]] = {}
            for e in ALL_SIX:
                name = ENTITIES[e].loader
                marked[e] = (
                    manager.read_loader(run_id, name).processed if name in _names(manager, run_id) else set()
                )
                committed = _committed_live(driver, ds, e)
                live_marked = {i for i in marked[e] if not ds.rows[e][i].get("Verwijderd")}
                assert live_marked <= committed, (trial, e)
                dead_marked = marked[e] - live_marked
                assert (
                    _count(driver, f"MATCH (n:{e}) WHERE n.id IN $ids RETURN count(n)", ids=list(dead_marked))
                    == 0
                )
                assert len(committed - live_marked) <= 2 * batch, (trial, e)
            n_marked = sum(map(len, marked.values()))
            partial += 0 < n_marked < total

            results = run_loaders(
                ALL_SIX,
                client=make_client(server.url),
                driver=driver,
                checkpoint_base=base,
                run_id=run_id,
                batch_size=batch,
                count=False,
            )
            assert sum(r.skipped for r in results.values()) == n_marked, trial  # exactly what was committed
            assert sum(r.processed + r.skipped for r in results.values()) == total
            assert dump_graph(driver) == reference, trial
    assert partial >= 8, f"only {partial} of 20 kills landed mid-load"


def _names(manager, run_id: str) -> list[str]:
    try:
        return manager.loader_names(run_id)
    except Exception:  # the run was not created before the kill
        return []


def test_child_entry_point_reports_json(neo4j_empty, neo4j_server, tmp_path):
    """The child program of the crash test, run to the end, prints its results (sanity of the harness)."""
    bolt, _ = neo4j_server
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + str(ROOT / "plugins")}
    with replay(Dataset.generate(10, seed=1, sets=("Zaak",))) as server:
        cmd = _child_command(server.url, bolt, "x", str(tmp_path), "--entities", "Zaak")
        out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.splitlines()[-1])["Zaak"]["processed"] == 10


# -- the ledger contract: the loop's calls, skips counted once, failures without a ledger ----------------


class RecordingLedger:
    """A ledger (include.loaders.ledger.Ledger) in memory that records every call the loop makes."""

    def __init__(self, processed: set[str] | None = None) -> None:
        self.processed: set[str] = set(processed or ())
        self.failed: dict[str, dict] = {}
        self.calls: list[tuple] = []

    @property
    def processed_count(self) -> int:
        return len(self.processed)

    def is_processed(self, item_id: str) -> bool:
        return item_id in self.processed  # pure: no call recorded, nothing counted

    def failed_items(self) -> dict[str, dict]:
        return {k: dict(v) for k, v in self.failed.items()}

    def set_total_items(self, total: int | None) -> None:
        self.calls.append(("total", total))

    def mark_processed_many(self, item_ids) -> None:
        ids = list(item_ids)
        self.processed.update(ids)
        for i in ids:
            self.failed.pop(i, None)
        self.calls.append(("processed", ids))

    def mark_failed(self, item_id: str, error: str) -> None:
        self.failed[item_id] = {"error": error}
        self.calls.append(("failed", item_id))

    def mark_skipped(self, count: int = 1) -> None:
        self.calls.append(("skipped", count))

    def clear_failed(self, item_id: str, reason: str) -> bool:
        self.calls.append(("cleared", item_id))
        return self.failed.pop(item_id, None) is not None

    def save_progress(self) -> bool:
        self.calls.append(("save",))
        return True

    def complete(self) -> None:
        self.calls.append(("complete",))

    def fail(self, error=None) -> None:
        self.calls.append(("fail", error))

    def names(self) -> list[str]:
        return [c[0] for c in self.calls]


@pytest.mark.parametrize("pipeline", [True, False], ids=["pipeline", "sequential"])
def test_the_loop_saves_after_every_batch_and_counts_each_skip_streak_once(neo4j_empty, load_log, pipeline):
    from include.loaders.ledger import Ledger

    ds = Dataset.generate(130, seed=4, sets=("Zaak",))
    n = len(ds.rows["Zaak"])
    first = RecordingLedger()
    assert isinstance(first, Ledger)
    with replay(ds) as server:
        client = make_client(server.url)
        result = load_entity(
            "Zaak", client=client, driver=neo4j_empty, checkpoint=first, batch_size=20, pipeline=pipeline
        )
        assert result.processed == n and result.skipped == 0
        names = first.names()
        # one save after every committed batch, one before the end, then complete
        assert names.count("processed") == -(-n // 20)
        assert all(names[i + 1] == "save" for i, name in enumerate(names) if name == "processed")
        assert names[-2:] == ["save", "complete"] and "skipped" not in names
        order = [i for c in first.calls if c[0] == "processed" for i in c[1]]  # the stream's order

        # a later try holds all but two items in the middle: two streaks, each counted (and logged) once
        load_log.clear()
        again = RecordingLedger(processed=set(order) - set(order[10:12]))
        result = load_entity(
            "Zaak", client=client, driver=neo4j_empty, checkpoint=again, batch_size=20, pipeline=pipeline
        )
    assert [c for c in again.calls if c[0] == "skipped"] == [("skipped", 10), ("skipped", n - 12)]
    assert (result.processed, result.skipped) == (2, n - 2)
    records = {id(r): r for r in load_log.records}.values()  # the handler may see a record twice
    skips = [m[1] for r in records if (m := re.search(r"Skipping (\d+) already-processed", r.getMessage()))]
    assert skips == ["10", str(n - 12)]
    assert again.names()[-2:] == ["save", "complete"]


def test_without_a_ledger_the_failed_count_is_this_calls_failures(neo4j_empty):
    ds = Dataset.generate(40, seed=13, sets=("Zaak",))
    live = ds.live_ids("Zaak")
    ds.rows["Zaak"][live[3]]["Titel"] = {"nested": "a map Neo4j refuses"}
    ds.rows["Zaak"][live[7]]["GestartOp"] = "2025-13-45T00:00:00+01:00"
    ds.touch()
    with replay(ds, faults=FaultConfig(without_id={live[9]})) as server:
        result = load_entity(
            "Zaak", client=make_client(server.url), driver=neo4j_empty, batch_size=8, retry_backoff=0.01
        )
    assert result.failed == 3 and result.processed == len(ds.rows["Zaak"]) - 3
    assert {live[3], live[7]} <= set(result.failed_ids)
    assert sum(k.startswith("no-Id:") for k in result.failed_ids) == 1


def test_the_command_line_is_python_m_include_loaders():
    cmd = [sys.executable, "-m", "include.loaders", "--help"]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "python -m include.loaders" in out.stdout and "--run-id" in out.stdout


# -- the writer pipeline and the prefetch, without Neo4j (include.loaders.flow) ----------------------------


class FakeGraph:
    """A GraphWriter stand-in: records each transaction, fails the ones it is told to, checks overlap."""

    def __init__(self, bad: set[str] = frozenset(), lost_at: int | None = None, seconds: float = 0.0) -> None:
        import threading

        self.bad, self.lost_at, self.seconds = set(bad), lost_at, seconds
        self.batches: list[list[str]] = []
        self.running = 0
        self.overlap = False
        self.mutex = threading.Lock()

    def write_batch(self, entity, items) -> None:
        from neo4j.exceptions import ServiceUnavailable

        from include.loaders.graph import ItemDataError

        with self.mutex:
            self.running += 1
            self.overlap |= self.running > 1
            self.batches.append([i.id for i in items])
            n = len(self.batches)
        try:
            time.sleep(self.seconds)
            if n == self.lost_at:
                raise ServiceUnavailable("injected: the connection to Neo4j was lost")
            if self.bad & {i.id for i in items}:
                raise ItemDataError("injected: bad data")
        finally:
            with self.mutex:
                self.running -= 1


def _batch_writer(graph: FakeGraph, batch_size: int, threaded: bool = True):
    from include.loaders.flow import BatchWriter

    committed: list[str] = []
    failed: list[str] = []
    writer = BatchWriter(
        graph,
        ENTITIES["Zaak"],
        batch_size,
        on_committed=lambda items: committed.extend(i.id for i in items),
        on_failed=lambda item, error: failed.append(item.id),
        threaded=threaded,
    )
    return writer, committed, failed


def _items(n: int):
    from include.loaders.graph import PreparedItem

    return [PreparedItem(id=f"i{k:03d}") for k in range(n)]


@pytest.mark.parametrize("threaded", [True, False], ids=["pipeline", "sequential"])
def test_batch_writer_bisects_data_errors_one_transaction_at_a_time(threaded):
    graph = FakeGraph(bad={"i005", "i033"}, seconds=0.002)
    writer, committed, failed = _batch_writer(graph, 10, threaded)
    for item in _items(45):
        writer.add(item)
    writer.flush()
    writer.close()
    assert sorted(failed) == ["i005", "i033"]
    assert sorted(committed) == [f"i{k:03d}" for k in range(45) if k not in (5, 33)]
    assert not graph.overlap and not writer.failed


def test_batch_writer_records_what_committed_after_a_lost_connection_and_stops():
    from neo4j.exceptions import ServiceUnavailable

    graph = FakeGraph(lost_at=3, seconds=0.01)
    writer, committed, _ = _batch_writer(graph, 10)
    with pytest.raises(ServiceUnavailable):
        for item in _items(100):
            writer.add(item)
    assert writer.failed
    writer.close()  # the pending partial batch is not written: the database is gone
    assert committed == [i.id for i in _items(40) if not "i020" <= i.id < "i030"]  # 1, 2 and 4
    assert len(graph.batches) == 4 and not graph.overlap


def test_batch_writer_close_writes_the_partial_batch_of_a_healthy_writer():
    graph = FakeGraph()
    writer, committed, _ = _batch_writer(graph, 10)
    for item in _items(25):
        writer.add(item)
    writer.close()  # as on an API error mid-window: what was fetched is kept
    assert committed == [i.id for i in _items(25)]


def test_batch_writer_raises_a_connection_error_behind_a_data_error():
    """Batch 1 fails on its data while batch 2, behind it, loses the connection: the load must fail,
    not isolate batch 1 and go on as if batch 2 had been written."""
    from neo4j.exceptions import ServiceUnavailable

    graph = FakeGraph(bad={"i003"}, lost_at=2, seconds=0.01)
    writer, committed, failed = _batch_writer(graph, 10)
    with pytest.raises(ServiceUnavailable):
        for item in _items(30):
            writer.add(item)
        writer.flush()
    writer.close()
    assert writer.failed and "i015" not in committed and not failed  # batch 1 is not isolated either


def test_prefetch_stays_bounded_re_raises_and_closes_the_source():
    from contextlib import closing

    from include.loaders.flow import prefetch

    produced: list[int] = []
    closed: list[bool] = []

    def pages():
        try:
            for k in range(100):
                produced.append(k)
                yield [k]
        finally:
            closed.append(True)

    with closing(prefetch(pages(), 2)) as it:
        assert next(it) == [0]
        time.sleep(0.3)
        assert len(produced) <= 4  # the one consumed, two queued, one waiting to be queued
    time.sleep(0.3)
    assert closed == [True]

    def failing():
        yield [1]
        raise RuntimeError("the API failed")

    with pytest.raises(RuntimeError, match="the API failed"):
        list(prefetch(failing(), 2))
