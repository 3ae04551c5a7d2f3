"""Benchmarks of the SyncFeed mirror (issue 11). One run prints every figure, the ratios and a JSON line.

    .venv/bin/python bench/bench_sync.py [--n 365000] [--latency-scale 1] [--nodes 1000000]  (make bench-sync)
    .venv/bin/python bench/bench_sync.py --quick          # a small smoke run (same code, small sizes)

The data: all 35 SyncFeed types generated in the real proportions of ``tk-api/SYNCFEED.md`` §3
(``Dataset.generate(n, proportional=True)``; ``--n 365000`` is the parliament at 1/20), served by the
offline server's SyncFeed in its own process (:func:`feed_process`, loopback HTTP, so it does not share
the loader's GIL). Every ratio is taken against a baseline measured in the same run:

1. **end-to-end ÷ raw Neo4j ceiling** (target >= 0.8): every type synced in turn by
   :func:`include.loaders.sync.sync_type` (``SyncFeedClient`` -> entries -> prepared items -> ``UNWIND``
   batches -> Neo4j, with the run's checkpoint ledger and the durable cursors), entities/s; against the
   same entries fetched and prepared beforehand (``feed_item``, not timed) and written by the same
   ``GraphWriter.write_batch`` batches (no API, no ledger, no cursor).
2. **wall time ÷ the API bound** (target <= 1.1): the same sync with ``2 s x --latency-scale`` added to
   every page and 4 types in flight (a thread each, longest types first, as the ``tk_sync`` pool runs
   them); the bound is ``pages x latency / 4`` with the pages the clients actually asked for. Extrapolated
   to 7.29 M entities (7.29 M / 250 pages x 2 s / 4 x the ratio) beside opentk's 5 h 15 min.
3. **last tenth ÷ first tenth** (target >= 0.8) of a ``--nodes`` load (all live rows, so one node per
   entity): the global skiptoken range cut into ten equal slices, each slice of every type synced in
   turn (``sync_type(start_skiptoken=, until=)``), so each tenth has the same mix of types and only the
   graph's size differs; entities/s per tenth.
4. **peak memory** (target <= 1.2): ``VmHWM`` of a child process (``bench_load._peak_rss_kb``) syncing
   all types of ``--n`` entities ÷ of ``--n / 10``.

Neo4j: the server of ``NEO4J_BOLT_PORT`` (scripts/neo4j.sh; give it ``NEO4J_HEAP=2g`` for figure 3). The
graph is wiped before each measurement. Figures are printed, never asserted: wall clocks on a shared
machine are not test material.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
for p in (ROOT, ROOT / "plugins", ROOT / "bench"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

from bench_load import _driver, _peak_rss_kb, wipe  # noqa: E402

from include.loaders.settings import DEFAULT_BATCH_SIZE  # noqa: E402

PAGE_LATENCY = 2.0
"""Seconds per page of figure 2 (before ``--latency-scale``)."""
IN_FLIGHT = 4
"""Requests in flight of figure 2 (``tk_sync``'s default)."""
OPENTK_ENTITIES = 7_290_000
OPENTK_SECONDS = 5 * 3600 + 15 * 60
"""The best mirror we know: 7.29 M entities of 35 types in 5 h 15 min with 4 requests in flight
(``tk-api/SYNCFEED.md`` §3)."""
FEED_PAGE = 250


# -- the offline SyncFeed in its own process ------------------------------------------------------------
def _serve(n: int, seed: int, tombstone_rate: float) -> None:
    """In a child: the offline server over a proportional dataset; one JSON line when ready, then serve
    until SIGTERM."""
    from include.tk_replay.dataset import Dataset
    from include.tk_replay.server import ReplayServer
    from include.tk_replay.syncfeed_server import change_log

    ds = Dataset.generate(n, seed, proportional=True, tombstone_rate=tombstone_rate)
    log = change_log(ds)  # built now, not on the first timed request
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    server = ReplayServer(ds, port=0)
    url = server.start()
    counts = {s: len(ds.rows[s]) for s in ds.entities if ds.rows.get(s)}
    print(json.dumps({"url": url, "head": log.head, "counts": counts}), flush=True)
    try:
        while not stop.wait(0.2):
            pass
    finally:
        server.stop()


@contextmanager
def feed_process(n: int, seed: int = 1, tombstone_rate: float = 0.2) -> Iterator[dict[str, Any]]:
    """The offline server in its own process; yields ``{"url", "head", "counts"}``."""
    cmd = [sys.executable, __file__, "--serve", str(n), "--seed", str(seed)]
    cmd += ["--tombstone-rate", str(tombstone_rate)]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=_child_env(), stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        if not line:
            raise RuntimeError(f"the offline server exited ({proc.wait()}) before it was ready")
        yield json.loads(line)
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def _child_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "plugins")])}


def set_latency(url: str, seconds: float) -> None:
    """Every data request of the server at ``url`` takes ``seconds`` more (its admin endpoint)."""
    import requests

    requests.post(f"{url}/_faults", json={"latency": seconds}, timeout=10).raise_for_status()


class CountingClient:
    """A ``SyncFeedClient`` of ``url`` that counts the pages it asks for (the API bound of figure 2)."""

    def __new__(cls, url: str) -> Any:
        from include.loaders.settings import ApiSettings
        from include.loaders.syncfeed import SyncFeedClient

        client = SyncFeedClient(ApiSettings(base_url=url, max_retries=2, backoff_base=0.1))
        client.pages = 0
        get_page = client.get_page

        def counted(page_url: str) -> Any:
            client.pages += 1
            return get_page(page_url)

        client.get_page = counted
        return client


def _order(counts: dict[str, int]) -> list[str]:
    """The types, longest first (the order the pool gets them in)."""
    return sorted(counts, key=lambda t: (-counts[t], t))


# -- figure 1 ---------------------------------------------------------------------------------------------
def fetch_prepared(url: str, types: Sequence[str]) -> dict[str, list[Any]]:
    """Every entry of every type, as the sync loop prepares it (not timed)."""
    from include.loaders.entities import get_entity
    from include.loaders.sync import feed_item

    client = CountingClient(url)
    out: dict[str, list[Any]] = {}
    for t in types:
        ent = get_entity(t)
        out[t] = [feed_item(ent, e) for page in client.iter_pages(ent.feed_category, 0) for e in page.entries]
    client.close()
    return out


def raw_ceiling(prepared: dict[str, list[Any]], driver: Any, batch_size: int) -> tuple[int, float]:
    """The prepared rows written by the sync's own writer (guarded on the feed position), batch by batch."""
    from include.loaders.entities import get_entity
    from include.loaders.graph import GraphWriter
    from include.loaders.sync import FEED_POSITION

    wipe(driver)
    writer = GraphWriter(driver, guard=FEED_POSITION)
    writer.ensure_constraints()
    items = 0
    t0 = time.perf_counter()
    for t, rows in prepared.items():
        ent = get_entity(t)
        for i in range(0, len(rows), batch_size):
            writer.write_batch(ent, rows[i : i + batch_size])
        items += len(rows)
    return items, time.perf_counter() - t0


def sync_all(
    url: str,
    driver: Any,
    types: Sequence[str],
    batch_size: int,
    base: str,
    in_flight: int = 1,
) -> dict[str, Any]:
    """Every type from scratch with the run's ledger and the cursors, ``in_flight`` types at a time (a
    client each), in the order given; entities, seconds and pages asked for."""
    from tk_checkpoint import CheckpointManager, LoaderCheckpoint
    from tk_checkpoint.cursor import FeedCursors

    from include.loaders.entities import get_entity
    from include.loaders.sync import sync_type, task_id_of

    mgr = CheckpointManager(base)
    mgr.start_new_run(run_id="bench")
    cursors = FeedCursors(base)
    lock = threading.Lock()
    totals = {"entities": 0, "pages": 0}

    def one(t: str) -> None:
        ent = get_entity(t)
        client = CountingClient(url)
        with LoaderCheckpoint(mgr, task_id_of(ent), meta={"entity": t}) as cp:
            r = sync_type(ent, client=client, driver=driver, ledger=cp, cursors=cursors, run_id="bench",
                          start_skiptoken=0, batch_size=batch_size)  # fmt: skip
        client.close()
        with lock:
            totals["entities"] += r.processed
            totals["pages"] += client.pages

    t0 = time.perf_counter()
    with ThreadPoolExecutor(in_flight) as pool:
        list(pool.map(one, types))  # map re-raises a task's error
    return {**totals, "seconds": time.perf_counter() - t0}


def figure_1_2(a: argparse.Namespace, driver: Any, figures: dict[str, Any]) -> None:
    with feed_process(a.n) as srv:
        url, types = srv["url"], _order(srv["counts"])
        prepared = fetch_prepared(url, types)
        rows = sum(map(len, prepared.values()))
        print(f"dataset: {rows} feed entries of {len(types)} types (--n {a.n}), batch {a.batch_size}")
        warm = {t: rows[: max(1, len(rows) // 10)] for t, rows in prepared.items()}
        raw_ceiling(warm, driver, a.batch_size)  # warm-up (Neo4j's JIT and page cache), not counted
        raw_items, raw_s = raw_ceiling(prepared, driver, a.batch_size)
        del prepared
        wipe(driver)
        with tempfile.TemporaryDirectory() as base:
            e2e = sync_all(url, driver, types, a.batch_size, base)
        raw, on = raw_items / raw_s, e2e["entities"] / e2e["seconds"]
        figures.update(
            entries=rows,
            raw_ceiling_entities_s=round(raw, 1),
            end_to_end_entities_s=round(on, 1),
            end_to_end_seconds=round(e2e["seconds"], 1),
            ratio_end_to_end_vs_raw=round(on / raw, 3),
        )
        print(f"raw Neo4j write ceiling : {raw:9.1f} entities/s ({raw_items} prepared rows, no API/ledger)")
        print(f"end-to-end sync         : {on:9.1f} entities/s ({e2e['entities']} entities, "
              f"{e2e['seconds']:.1f} s)   ratio {on / raw:.3f} (target >= 0.8)")  # fmt: skip
        if a.skip_latency:
            return
        latency = PAGE_LATENCY * a.latency_scale
        set_latency(url, latency)
        wipe(driver)
        with tempfile.TemporaryDirectory() as base:
            lat = sync_all(url, driver, types, a.batch_size, base, in_flight=IN_FLIGHT)
        set_latency(url, 0.0)
    bound = lat["pages"] * latency / IN_FLIGHT
    ratio = lat["seconds"] / bound
    opentk_pages = math.ceil(OPENTK_ENTITIES / FEED_PAGE)
    projected = opentk_pages * PAGE_LATENCY / IN_FLIGHT * ratio
    figures.update(
        latency_s=latency,
        in_flight=IN_FLIGHT,
        latency_pages=lat["pages"],
        latency_entities=lat["entities"],
        latency_wall_s=round(lat["seconds"], 1),
        api_bound_s=round(bound, 1),
        ratio_wall_vs_api_bound=round(ratio, 3),
        projected_7_29M_s=round(projected),
        opentk_7_29M_s=OPENTK_SECONDS,
    )
    print(f"with {latency:.3g} s/page, {IN_FLIGHT} in flight: {lat['pages']} pages, {lat['seconds']:.1f} s; "
          f"API bound {bound:.1f} s   ratio {ratio:.3f} (target <= 1.1)")  # fmt: skip
    print(f"7.29 M entities = {opentk_pages} pages x {PAGE_LATENCY:g} s / {IN_FLIGHT} x {ratio:.3f} = "
          f"{_hms(projected)}   (opentk: {_hms(OPENTK_SECONDS)})")  # fmt: skip


# -- figure 3 ---------------------------------------------------------------------------------------------
def figure_3(a: argparse.Namespace, driver: Any, figures: dict[str, Any]) -> None:
    from tk_checkpoint import CheckpointManager, LoaderCheckpoint
    from tk_checkpoint.cursor import FeedCursors

    from include.loaders.entities import get_entity
    from include.loaders.sync import sync_type, task_id_of

    with feed_process(a.nodes, seed=3, tombstone_rate=0.0) as srv, tempfile.TemporaryDirectory() as base:
        url, types, head = srv["url"], _order(srv["counts"]), srv["head"]
        wipe(driver)
        mgr = CheckpointManager(base)
        mgr.start_new_run(run_id="bench")
        cursors = FeedCursors(base)
        client = CountingClient(url)
        cuts = [round(head * k / 10) for k in range(11)]
        for t in types:  # warm-up on the first 2% (Neo4j's JIT, the writer's queries), then wiped
            sync_type(get_entity(t), client=client, driver=driver, until=head // 50, batch_size=a.batch_size)
        wipe(driver)
        rates: list[float] = []
        for k in range(10):
            done, t0 = 0, time.perf_counter()
            for t in types:
                ent = get_entity(t)
                with LoaderCheckpoint(mgr, f"{task_id_of(ent)}_{k}") as cp:
                    r = sync_type(ent, client=client, driver=driver, ledger=cp, cursors=cursors,
                                  run_id="bench", start_skiptoken=cuts[k], until=cuts[k + 1],
                                  batch_size=a.batch_size)  # fmt: skip
                done += r.processed
            rates.append(done / (time.perf_counter() - t0))
            print(f"  tenth {k + 1}: {done} entities, {rates[-1]:.0f} entities/s")
        client.close()
        nodes = driver.execute_query("MATCH (n) RETURN count(n) AS c").records[0]["c"]
    ratio = rates[-1] / rates[0]
    figures.update(growth_nodes=nodes, growth_tenths_entities_s=[round(r, 1) for r in rates],
                   ratio_last_vs_first_tenth=round(ratio, 3))  # fmt: skip
    print(f"{nodes} nodes: last tenth {rates[-1]:.0f} / first tenth {rates[0]:.0f} entities/s = {ratio:.3f} "
          "(target >= 0.8)")  # fmt: skip


# -- figure 4 ---------------------------------------------------------------------------------------------
def _memory_child(url: str, batch_size: int) -> None:
    """In a child: a full sync of every type the server has (ledger and cursors on); prints its VmHWM."""
    from include.loaders.entities import ENTITIES

    driver = _driver()
    with tempfile.TemporaryDirectory() as base:
        r = sync_all(url, driver, list(ENTITIES), batch_size, base)
    print(json.dumps({**r, "maxrss_mb": _peak_rss_kb() / 1024}))


def memory(n: int, driver: Any, batch_size: int) -> dict[str, Any]:
    with feed_process(n, seed=5) as srv:
        wipe(driver)
        cmd = [sys.executable, __file__, "--memory-child", srv["url"], "--batch-size", str(batch_size)]
        out = subprocess.run(cmd, cwd=ROOT, env=_child_env(), capture_output=True, text=True, check=True)
        return json.loads(out.stdout.strip().splitlines()[-1])


def figure_4(a: argparse.Namespace, driver: Any, figures: dict[str, Any]) -> None:
    small = memory(a.n // 10, driver, a.batch_size)
    large = memory(a.n, driver, a.batch_size)
    ratio = large["maxrss_mb"] / small["maxrss_mb"]
    figures["memory"] = {"small": small, "large": large, "ratio": round(ratio, 3)}
    for m in (small, large):
        print(f"peak RSS syncing {m['entities']} entities: {m['maxrss_mb']:.1f} MB "
              f"({m['entities'] / m['seconds']:.0f} entities/s)")  # fmt: skip
    print(f"memory ratio {large['entities']} / {small['entities']} entities: {ratio:.3f} (target <= 1.2)")


def _hms(seconds: float) -> str:
    s = round(seconds)
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=365_000, help="entities of all types (default 365000 = 1/20)")
    ap.add_argument("--nodes", type=int, default=1_000_000, help="entities of the growth load (figure 3)")
    ap.add_argument("--latency-scale", type=float, default=1.0, help="page latency = 2 s x this (figure 2)")
    ap.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
    ap.add_argument("--quick", action="store_true", help="a smoke run: --n 20000 --nodes 40000, 0.05 scale")
    ap.add_argument("--only", default="1,2,3,4", help="figures to measure (default 1,2,3,4)")
    ap.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--seed", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--tombstone-rate", type=float, default=0.2, help=argparse.SUPPRESS)
    ap.add_argument("--memory-child", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.serve is not None:
        _serve(a.serve, a.seed, a.tombstone_rate)
        return 0
    if a.memory_child:
        _memory_child(a.memory_child, a.batch_size)
        return 0
    if a.quick:
        a.n, a.nodes, a.latency_scale = 20_000, 40_000, 0.05
    only = {s.strip() for s in a.only.split(",")}
    a.skip_latency = "2" not in only
    driver = _driver()
    figures: dict[str, Any] = {"n": a.n, "batch_size": a.batch_size, "latency_scale": a.latency_scale}
    if only & {"1", "2"}:
        figure_1_2(a, driver, figures)
    if "3" in only:
        figure_3(a, driver, figures)
    if "4" in only:
        figure_4(a, driver, figures)
    driver.close()
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
