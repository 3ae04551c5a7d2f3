"""Crash test: a writer killed with SIGKILL at random moments never loses a saved item nor invents one."""

from __future__ import annotations

import gzip
import json
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from tk_checkpoint import CheckpointManager, LoaderCheckpoint

RUN = "scheduled__2026-11-27T00:00:00+00:00"
TRIALS = 50

# Marks item-1, item-2, ... (every 7th fails), saving every 5; prints "M n" before marking n and
# "S n" after a save returned. Tiny thresholds so kills also land in compactions and gzip switches.
CHILD = textwrap.dedent(
    """
    import sys
    from tk_checkpoint import CheckpointManager, LoaderCheckpoint
    base, run_id, trial = sys.argv[1], sys.argv[2], int(sys.argv[3])
    out = open(sys.argv[4], "a", buffering=1)
    mgr = CheckpointManager(base, gzip_threshold=3000, compact_min_bytes=4000, save_interval=0)
    mgr.start_new_run(run_id)
    cp = LoaderCheckpoint(mgr, "load_zaak", try_number=trial)
    out.write("open\\n")
    n = 0
    while n < 10**6:
        n += 1
        item = f"item-{n}"
        if cp.is_processed(item):
            continue
        out.write(f"M {n}\\n")
        if n % 7 == 0:
            cp.mark_failed(item, f"error of {n} in try {trial}")
        else:
            cp.mark_processed(item)
        if n % 5 == 0:
            cp.save_progress()
            out.write(f"S {n}\\n")
    """
)


def _parse_every_file(base: Path) -> None:
    for path in base.rglob("*"):
        if path.is_dir() or path.name.startswith("."):
            continue  # hidden temp files of a killed writer: removed by the next writer
        assert ".corrupt-" not in path.name, f"a file was set aside: {path}"
        data = path.read_bytes()
        if path.name.endswith(".gz"):
            json.loads(gzip.decompress(data))
        elif path.name.endswith(".jsonl"):
            lines = data.split(b"\n")
            for line in lines[:-1]:
                json.loads(line)  # every complete line parses; the last may be torn
        else:
            json.loads(data)


def test_sigkill_at_random_moments_loses_nothing_saved(tmp_path):
    rng = random.Random(20261127)
    base = tmp_path / "ck"
    log = tmp_path / "child.log"
    log.touch()
    marked: set[int] = set()
    saved_upto = 0
    kills_after_open = 0
    for trial in range(1, TRIALS + 1):
        start = log.stat().st_size
        proc = subprocess.Popen([sys.executable, "-c", CHILD, str(base), RUN, str(trial), str(log)])
        if trial % 2:  # anywhere, including start-up, lock take-over and the reading of the files
            time.sleep(rng.uniform(0.05, 0.3))
        else:  # while working
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and b"open" not in log.read_bytes()[start:]:
                time.sleep(0.005)
            time.sleep(rng.uniform(0.0, 0.12))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        for line in log.read_bytes()[start:].split(b"\n")[:-1]:  # complete lines only
            kind, _, value = line.decode().partition(" ")
            if kind == "M":
                marked.add(int(value))
            elif kind == "S":
                saved_upto = max(saved_upto, int(value))
            elif kind == "open":
                kills_after_open += 1

        _parse_every_file(base)
        state = CheckpointManager(base).read_loader(RUN, "load_zaak")
        processed = {int(i.split("-")[1]) for i in state.processed}
        failed = {int(i.split("-")[1]) for i in state.failed}
        for n in range(1, saved_upto + 1):  # everything saved before the kill is there
            assert (n in failed) if n % 7 == 0 else (n in processed), f"trial {trial}: item-{n} lost"
        assert processed <= {n for n in marked if n % 7}, f"trial {trial}: an item never marked is processed"
        assert failed <= {n for n in marked if n % 7 == 0}
        assert all(
            info["attempts"] >= 1 and info["error"].startswith("error of") for info in state.failed.values()
        )

    assert saved_upto > 500 and kills_after_open >= TRIALS // 2
    mgr = CheckpointManager(base)
    mgr.resume_run(RUN)
    cp = LoaderCheckpoint(mgr, "load_zaak", try_number=TRIALS + 1)  # the dead writer's lock is taken over
    tries = cp.get_progress()["tries"]
    cp.close()
    assert tries == TRIALS + 1 or tries <= TRIALS + 1  # a kill before the try was recorded leaves no entry
    assert not [p for p in base.rglob(".*tmp-*")], "temp files of dead writers are cleaned up"
