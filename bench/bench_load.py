"""Benchmarks of the entity loaders (issue 5). One run prints every figure and the ratios.

    .venv/bin/python bench/bench_load.py [--n 10000] [--mem-large 200000]     (or: make bench-load)

``--n`` matters for the old pattern: without an index each of its MERGEs scans the whole label, so its
cost grows with the graph. 10,000 rows per entity (50,000 in all) is still 34 times fewer than the real
API's 339,911 Zaak; at 4,000 per entity the old pattern looks about 40% less slow than at 10,000.

Measured, in the same run, on the same generated rows (five entities with their relationships):

1. **end-to-end**: the offline TK server (``python -m include.tk_replay``, its own process, loopback HTTP)
   -> ``TKClient`` -> ``load_entity`` -> Neo4j, checkpoints on;
2. **raw Neo4j write ceiling**: the same rows fetched beforehand and prepared beforehand (not timed), written
   by the same ``UNWIND … MERGE`` batches; no API, no checkpoints;
3. **checkpoints off**: as 1 without a checkpoint (the loop's ``NullLedger``); **pipeline off**: as 1 with
   every transaction in the loop's own thread (``load_entity(pipeline=False)``), to show what the writer
   thread gains;
4. **one transaction per item** (the old loader's pattern) on a subset of the same rows (it is slow; the
   subset size is printed), re-writing them into the fully loaded graph: once as the original did it, with
   no index (the constraints dropped for the measurement), and once with the constraints in place;
5. **peak memory** (``VmHWM`` of a child process, see :func:`_peak_rss_kb`) loading ``--mem-small`` and
   ``--mem-large`` Zaak rows end to end with checkpoints on.

Neo4j: the server of ``NEO4J_BOLT_PORT`` (start one with scripts/neo4j.sh). The graph is wiped between runs.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
for p in (ROOT, ROOT / "plugins"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

from include.loaders.settings import DEFAULT_BATCH_SIZE  # noqa: E402

BOLT = f"bolt://{os.environ.get('NEO4J_BOLT_HOST', '127.0.0.1')}:{os.environ.get('NEO4J_BOLT_PORT', '7687')}"
AUTH = ("neo4j", os.environ.get("NEO4J_PASSWORD", "tk-local-password"))
CORE = ("Zaak", "Document", "Vergadering", "Agendapunt", "Activiteit")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def replay_process(n: int, seed: int, sets: str | None = None):
    """The offline TK server in its own process (so it does not share the loader's GIL)."""
    port = _free_port()
    cmd = [sys.executable, "-m", "include.tk_replay", "--port", str(port), "--generate", str(n)]
    cmd += ["--seed", str(seed), "--log-level", "WARNING"] + (["--sets", sets] if sets else [])
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 600
        while True:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if proc.poll() is not None:
                raise RuntimeError(f"replay server exited: {proc.stderr.read().decode()[-2000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError("replay server did not start in 600 s")
            time.sleep(0.2)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _client(url: str) -> Any:
    from include.loaders.api import TKClient
    from include.loaders.settings import ApiSettings

    return TKClient(ApiSettings(base_url=url, max_retries=2, backoff_base=0.1))


def _driver() -> Any:
    from neo4j import GraphDatabase

    d = GraphDatabase.driver(BOLT, auth=AUTH)
    d.verify_connectivity()
    return d


def wipe(driver: Any) -> None:
    with driver.session() as s:
        s.run("MATCH (n) CALL (n) { DETACH DELETE n } IN TRANSACTIONS OF 10000 ROWS").consume()


def end_to_end(
    url: str, driver: Any, checkpoints: bool, batch_size: int, pipeline: bool = True
) -> tuple[int, float]:
    from include.loaders.load import load_entity

    client = _client(url)
    wipe(driver)
    items = 0
    with tempfile.TemporaryDirectory() as base:
        mgr = None
        if checkpoints:
            from tk_checkpoint import CheckpointManager, LoaderCheckpoint

            mgr = CheckpointManager(base)
            mgr.start_new_run(run_id="bench")
        t0 = time.perf_counter()
        for e in CORE:
            cp = LoaderCheckpoint(mgr, f"load_{e.lower()}") if mgr else None
            r = load_entity(
                e,
                client=client,
                driver=driver,
                checkpoint=cp,
                batch_size=batch_size,
                progress_seconds=3600,
                pipeline=pipeline,
            )
            if cp is not None:
                cp.close()
            items += r.processed
        seconds = time.perf_counter() - t0
    client.close()
    return items, seconds


def fetch_prepared(url: str) -> dict[str, list[Any]]:
    from include.loaders.entities import ENTITIES
    from include.loaders.graph import item_key, prepare_item

    client = _client(url)
    out = {}
    for e in CORE:
        ent = ENTITIES[e]
        rows = client.iter_entities(e, select=ent.select, expand=ent.expand)
        out[e] = [prepare_item(ent, r, key=item_key(r)) for r in rows]  # as the load loop does
    client.close()
    return out


def raw_ceiling(prepared: dict[str, list[Any]], driver: Any, batch_size: int) -> tuple[int, float]:
    from include.loaders.entities import ENTITIES
    from include.loaders.graph import GraphWriter

    wipe(driver)
    writer = GraphWriter(driver)
    writer.ensure_constraints()
    t0 = time.perf_counter()
    items = 0
    for e in CORE:
        rows = prepared[e]
        for i in range(0, len(rows), batch_size):
            writer.write_batch(ENTITIES[e], rows[i : i + batch_size])
        items += len(rows)
    return items, time.perf_counter() - t0


def per_item(prepared: dict[str, list[Any]], driver: Any, per_entity: int, index: bool) -> tuple[int, float]:
    """One transaction per item on the first ``per_entity`` rows of each entity, into a graph that already
    holds the whole dataset (an incremental reload). ``index=False`` is the original loader's situation:
    no uniqueness constraint, so every MERGE scans its label; ``index=True`` keeps the constraints."""
    from include.loaders.entities import ENTITIES, all_labels
    from include.loaders.graph import GraphWriter

    raw_ceiling(prepared, driver, DEFAULT_BATCH_SIZE)  # the graph as a full load leaves it
    writer = GraphWriter(driver)
    if not index:
        for label in all_labels():
            driver.execute_query(f"DROP CONSTRAINT tk_{label.lower()}_id IF EXISTS")
    try:
        t0 = time.perf_counter()
        items = 0
        for e in CORE:
            for item in prepared[e][:per_entity]:
                writer.write_batch(ENTITIES[e], [item])
                items += 1
        return items, time.perf_counter() - t0
    finally:
        writer.ensure_constraints()


def _memory_child(url: str, entity: str, base: str | None) -> None:
    """In a child: one end-to-end load (checkpoints on unless ``base`` is None); prints items, peak RSS."""
    from include.loaders.load import load_entity

    driver = _driver()
    client = _client(url)
    if base is None:
        r = load_entity(entity, client=client, driver=driver, progress_seconds=3600)
    else:
        from tk_checkpoint import CheckpointManager, LoaderCheckpoint

        mgr = CheckpointManager(base)
        mgr.start_new_run(run_id="mem")
        with LoaderCheckpoint(mgr, "load_mem") as cp:
            r = load_entity(entity, client=client, driver=driver, checkpoint=cp, progress_seconds=3600)
    print(json.dumps({"items": r.processed, "seconds": r.seconds, "maxrss_mb": _peak_rss_kb() / 1024}))


def _peak_rss_kb() -> int:
    """Peak RSS of this process image. ``VmHWM`` on Linux: ``ru_maxrss`` would also count the parent's
    pages this child had between fork and exec (Linux keeps that high-water mark across execve), so a
    child of a big parent reports the parent's size."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def memory(n: int, driver: Any, checkpoints: bool = True) -> dict[str, Any]:
    with replay_process(n, seed=5, sets="Zaak") as url, tempfile.TemporaryDirectory() as base:
        wipe(driver)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "plugins")])}
        cmd = [sys.executable, __file__, "--memory-child", url, "--entity", "Zaak"]
        cmd += ["--base", base] if checkpoints else []
        out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=True)
        return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=10000, help="rows per entity set (default 10000)")
    ap.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
    ap.add_argument("--repeat", type=int, default=3, help="interleaved runs of raw/on/off (median)")
    ap.add_argument("--per-item", type=int, default=200, help="rows per entity for the old pattern")
    ap.add_argument("--mem-small", type=int, default=20_000)
    ap.add_argument("--mem-large", type=int, default=200_000)
    ap.add_argument("--skip-memory", action="store_true")
    ap.add_argument("--only-memory", action="store_true")
    ap.add_argument("--memory-child", help=argparse.SUPPRESS)
    ap.add_argument("--entity", help=argparse.SUPPRESS)
    ap.add_argument("--base", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.memory_child:
        _memory_child(a.memory_child, a.entity, a.base)
        return 0

    driver = _driver()
    figures: dict[str, Any] = {"n_per_set": a.n, "batch_size": a.batch_size}
    if not a.only_memory:
        throughput(a, driver, figures)
    if not a.skip_memory:
        for checkpoints in (True, False):
            small = memory(a.mem_small, driver, checkpoints)
            large = memory(a.mem_large, driver, checkpoints)
            ratio = large["maxrss_mb"] / small["maxrss_mb"]
            key = "checkpoints_on" if checkpoints else "checkpoints_off"
            figures[f"memory_{key}"] = {"small": small, "large": large, "ratio": round(ratio, 3)}
            for label, m in ((a.mem_small, small), (a.mem_large, large)):
                print(
                    f"peak RSS {label} items, {key}: {m['maxrss_mb']:.1f} MB "
                    f"({m['items'] / m['seconds']:.0f} items/s)"
                )
            print(f"memory ratio, {key}: {ratio:.3f} (target <= 1.2)")
    driver.close()
    print(json.dumps(figures))
    return 0


def throughput(a: argparse.Namespace, driver: Any, figures: dict[str, Any]) -> None:
    """Figures 1-4 of the module docstring, into ``figures``."""
    with replay_process(a.n, seed=1) as url:
        prepared = fetch_prepared(url)
        total = sum(map(len, prepared.values()))
        print(f"dataset: {total} rows of {', '.join(CORE)} (+ Verslag as far ends), batch {a.batch_size}")
        end_to_end(url, driver, True, a.batch_size)  # warm-up (JIT, page cache, connections)
        runs: dict[str, list[float]] = {"raw": [], "on": [], "off": [], "sequential": []}
        for _ in range(a.repeat):  # interleaved, so drifts of the machine hit all three alike
            items, secs = raw_ceiling(prepared, driver, a.batch_size)
            runs["raw"].append(items / secs)
            items, secs = end_to_end(url, driver, True, a.batch_size)
            runs["on"].append(items / secs)
            items, secs = end_to_end(url, driver, False, a.batch_size)
            runs["off"].append(items / secs)
            items, secs = end_to_end(url, driver, True, a.batch_size, pipeline=False)
            runs["sequential"].append(items / secs)
        one_items, one_s = per_item(prepared, driver, a.per_item, index=False)
        idx_items, idx_s = per_item(prepared, driver, a.per_item, index=True)
    raw, on, off, seq = (statistics.median(runs[k]) for k in ("raw", "on", "off", "sequential"))
    one, one_idx = one_items / one_s, idx_items / idx_s
    figures.update(
        raw_ceiling_items_s=round(raw, 1),
        end_to_end_items_s=round(on, 1),
        checkpoints_off_items_s=round(off, 1),
        one_tx_per_item_no_index_items_s=round(one, 1),
        one_tx_per_item_with_index_items_s=round(one_idx, 1),
        one_tx_per_item_subset=one_items,
        ratio_end_to_end_vs_raw=round(on / raw, 3),
        ratio_vs_one_tx_per_item_no_index=round(on / one, 1),
        ratio_vs_one_tx_per_item_with_index=round(on / one_idx, 1),
        ratio_checkpoints_on_vs_off=round(on / off, 3),
        pipeline_off_items_s=round(seq, 1),
        ratio_pipeline_on_vs_off=round(on / seq, 3),
        runs={k: [round(v, 1) for v in vs] for k, vs in runs.items()},
    )
    print(
        f"raw Neo4j write ceiling : {raw:9.1f} items/s (UNWIND MERGE, prepared rows, no API, no checkpoints)"
    )
    print(f"end-to-end, checkpoints : {on:9.1f} items/s   ratio to ceiling {on / raw:.3f} (target >= 0.7)")
    print(f"end-to-end, no checkpts : {off:9.1f} items/s   on/off {on / off:.3f} (target >= 0.95)")
    print(f"end-to-end, no pipeline : {seq:9.1f} items/s   writer thread gains {on / seq:.2f}x")
    print(f"one tx per item, no index (old pattern, {one_items} rows): {one:8.1f} items/s -> {on / one:.1f}x")
    print(f"one tx per item, with index ({idx_items} rows): {one_idx:8.1f} items/s -> {on / one_idx:.1f}x")


if __name__ == "__main__":
    raise SystemExit(main())
