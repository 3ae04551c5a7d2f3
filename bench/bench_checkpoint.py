"""Benchmark of the checkpoint engine against the original's rewrite-everything-every-25 pattern.

    .venv/bin/python bench/bench_checkpoint.py [--items 1000000] [--naive-items 20000] [--dir /tmp/x]

Prints, all measured in this run on the local disk:

1. N items marked one by one with ``save_progress()`` every 25: time and bytes written (``wchar`` of
   /proc/self/io: every byte handed to write()), against a re-implementation of the original pattern
   (the whole processed list rewritten as JSON every 25 items). The naive pattern is quadratic, so it runs
   on a smaller N and is extrapolated with its exact formula:
   bytes(N) = sum over saves k of (header + k*25*bytes_per_id), time(N) = bytes(N) / its measured
   throughput. Both engines are also compared at the naive's N, measured.
2. Median (and p99, max) cost of one save of 25 new items once N items are done, with fsync on (the default)
   and off.
3. Reopening a checkpoint of N processed ids (gzip snapshot, plain snapshot, snapshot + journal).
4. Size on disk of N ids: plain JSON and gzip.
5. Memory (tracemalloc) of the processed ids of N items, per id, as held and at the peak of a compaction
   (streamed snapshot), against a Python ``set`` of the same ``str`` ids.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import sys
import tempfile
import time
import tracemalloc
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "plugins"))

from tk_checkpoint import CheckpointManager, LoaderCheckpoint

RUN = "manual__2026-11-27T22:11:54.123+00:00"
EVERY = 25


def wchar() -> int:
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("wchar:"):
            return int(line.split()[1])
    return 0


def ids(n: int, seed: int = 1) -> list[str]:
    rng = random.Random(seed)
    return [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(n)]


def human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000:
            return f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} PB"


def naive(items: list[str], folder: Path) -> tuple[float, int, int]:
    """The original pattern: every 25 items, the whole growing list is rewritten as one JSON file."""
    path = folder / "run_X_load_zaken.json"
    processed: list[str] = []
    w0, t0 = wchar(), time.perf_counter()
    header = 0
    for i, item in enumerate(items, start=1):
        processed.append(item)
        if i % EVERY == 0:
            doc = {
                "loader_name": "load_zaken",
                "run_id": "run_X",
                "status": "in_progress",
                "processed_items": processed,
                "failed_items": [],
                "total_items": len(items),
                "current_batch": i // EVERY,
                "last_updated": "2026-11-27T22:11:54.123456",
            }
            with open(path, "w") as f:
                json.dump(doc, f, indent=2)
            if not header:
                header = path.stat().st_size - len(json.dumps(processed, indent=2)) + 2
    return time.perf_counter() - t0, wchar() - w0, header


def ours(items: list[str], base: Path, **settings) -> tuple[float, int, CheckpointManager]:
    mgr = CheckpointManager(base, save_interval=0, **settings)
    mgr.start_new_run(RUN)
    w0, t0 = wchar(), time.perf_counter()
    cp = LoaderCheckpoint(mgr, "load_zaak", try_number=1)
    cp.set_total_items(len(items))
    for i, item in enumerate(items, start=1):
        cp.mark_processed(item)
        if i % EVERY == 0:
            cp.save_progress()
    cp.close()
    return time.perf_counter() - t0, wchar() - w0, mgr


def save_costs(mgr: CheckpointManager, fresh: list[str], fsync: bool, saves: int) -> list[float]:
    mgr.settings = mgr.settings.with_overrides(fsync=fsync)  # the settings are frozen
    cp = LoaderCheckpoint(mgr, "load_zaak", try_number=2)
    cp._w.journal.fsync = fsync
    costs = []
    for k in range(saves):
        cp.mark_processed_many(fresh[k * EVERY : (k + 1) * EVERY])
        t = time.perf_counter()
        cp.save_progress()
        costs.append(time.perf_counter() - t)
    cp.close()
    return costs


def reopen(mgr: CheckpointManager, repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        cp = LoaderCheckpoint(CheckpointManager(mgr.store.url(""), **_settings(mgr)), "load_zaak", run_id=RUN)
        times.append(time.perf_counter() - t)
        assert cp.processed_count
        cp._w.abandon()
    return statistics.median(times)


def _settings(mgr: CheckpointManager) -> dict:
    s = mgr.settings
    return {"gzip_threshold": s.gzip_threshold, "compact_min_bytes": s.compact_min_bytes}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", type=int, default=1_000_000)
    ap.add_argument("--naive-items", type=int, default=20_000)
    ap.add_argument("--saves", type=int, default=2000, help="saves timed once all items are done")
    ap.add_argument("--dir", default=None, help="work folder (default: a temp folder, removed at the end)")
    args = ap.parse_args()
    work = Path(args.dir or tempfile.mkdtemp(prefix="tk-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    n, small = args.items, args.naive_items
    print(
        f"# tk_checkpoint benchmark, {n:,} items, save every {EVERY}; folder {work}; "
        f"python {sys.version.split()[0]}"
    )
    all_ids = ids(n + args.saves * EVERY)
    items, fresh = all_ids[:n], all_ids[n:]

    # 1a. same N for both, measured
    (work / "naive").mkdir()
    t_naive, b_naive, header = naive(items[:small], work / "naive")
    t_small, b_small, _ = ours(items[:small], work / "ours-small")
    print(f"\n## 1. {small:,} items, both measured")
    print(f"naive rewrite-all : {t_naive:8.2f} s  {human(b_naive):>10} written")
    print(f"tk_checkpoint     : {t_small:8.2f} s  {human(b_small):>10} written")
    print(f"ratio             : {t_naive / t_small:8.1f}x faster, {b_naive / b_small:.0f}x fewer bytes")

    # 1b. full N: ours measured, naive extrapolated with its formula
    t_ours, b_ours, mgr = ours(items, work / "ours")
    per_id = (b_naive - header * (small // EVERY)) / sum(k * EVERY for k in range(1, small // EVERY + 1))
    saves = n // EVERY
    b_naive_n = header * saves + per_id * EVERY * saves * (saves + 1) / 2
    t_naive_n = b_naive_n / (b_naive / t_naive)
    print(f"\n## 1. {n:,} items")
    print(f"tk_checkpoint     : {t_ours:8.2f} s  {human(b_ours):>10} written (measured; fsync on)")
    print(
        f"naive rewrite-all : {t_naive_n:8.0f} s  {human(b_naive_n):>10} written "
        f"(extrapolated from {small:,}: "
        f"{per_id:.1f} B/id, {header} B header, {human(b_naive / t_naive)}/s)"
    )
    print(
        f"ratio             : {t_naive_n / t_ours:8.0f}x faster, {b_naive_n / b_ours:.0f}x fewer bytes "
        "(target >= 100x)"
    )

    # 2. one save once N are done
    print(f"\n## 2. one save of {EVERY} new items after {n:,} are done ({args.saves} saves each)")
    half = args.saves // 2
    for fsync, chunk in ((True, fresh[: half * EVERY]), (False, fresh[half * EVERY :])):
        costs = sorted(save_costs(mgr, chunk, fsync, half))
        med, p99, worst = statistics.median(costs), costs[int(len(costs) * 0.99)], costs[-1]
        label = "fsync on (default)" if fsync else "fsync off"
        print(
            f"{label:19}: median {med * 1000:.3f} ms, p99 {p99 * 1000:.2f} ms, max {worst * 1000:.1f} ms "
            "(target median <= 2 ms)"
        )
    mgr.settings = mgr.settings.with_overrides(fsync=True)

    # 3 + 4. reopen and size
    loaders = work / "ours" / RUN / "loaders"
    t_journal = reopen(mgr)
    journal_size = sum(p.stat().st_size for p in loaders.glob("load_zaak.journal*"))
    cp = LoaderCheckpoint(mgr, "load_zaak", try_number=3)
    count = cp.processed_count
    cp.complete()
    gz = loaders / "load_zaak.json.gz"
    t_gz = reopen(mgr)
    gz_size = gz.stat().st_size
    plain_mgr = CheckpointManager(work / "ours", gzip_threshold=-1)
    plain_mgr.resume_run(RUN)
    LoaderCheckpoint(plain_mgr, "load_zaak").complete()
    plain = loaders / "load_zaak.json"
    t_plain = reopen(plain_mgr)
    print(f"\n## 3. reopening a checkpoint of {count:,} processed ids (median of 3; target <= 1 s)")
    print(f"gzip snapshot              : {t_gz:.3f} s")
    print(f"plain snapshot             : {t_plain:.3f} s")
    print(f"snapshot + {human(journal_size):>8} journal : {t_journal:.3f} s")
    print(f"\n## 4. size on disk of {count:,} ids (36-character GUIDs)")
    print(f"plain JSON : {human(plain.stat().st_size)} ({plain.stat().st_size / count:.1f} B/id)")
    print(f"gzip       : {human(gz_size)} ({gz_size / count:.1f} B/id)")

    # 5. memory of the processed ids
    print(f"\n## 5. memory of {n:,} processed ids")
    tracemalloc.start()
    as_set = set(items)
    held = tracemalloc.get_traced_memory()[0]
    del as_set
    tracemalloc.stop()
    str_size = sys.getsizeof(items[0])
    print(f"set of str   : {held / n + str_size:6.1f} B/id ({held / n:.1f} set + {str_size} str)")
    mem_mgr = CheckpointManager(work / "mem", save_interval=0)
    mem_mgr.start_new_run(RUN)
    cp = LoaderCheckpoint(mem_mgr, "load_zaak", try_number=1)
    for start in range(0, n, 500):
        cp.mark_processed_many(items[start : start + 500])
        cp.save_progress()
    held = cp._w.state.processed.nbytes()
    tracemalloc.start()
    cp.complete()  # compaction: the snapshot is streamed
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    print(f"tk_checkpoint: {held / n:6.1f} B/id (IdSet, sys.getsizeof of its parts)")
    print(f"compaction   : {human(peak)} allocated at its peak (tracemalloc)")
    if not args.dir:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
