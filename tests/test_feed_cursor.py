"""The durable per-type SyncFeed cursors of tk_sync (tk_checkpoint.cursor): never backwards, reset, the
file left whole by a crash at any moment of a write, concurrent advances from processes, object storage."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from datetime import UTC, datetime, timedelta

import pytest
from tk_checkpoint import (
    CheckpointManager,
    CorruptCheckpointError,
    CursorBackwardsError,
    CursorState,
    FeedCursors,
    InvalidNameError,
    UnsupportedSchemaError,
)
from tk_checkpoint.cursor import CURSORS_FOLDER

from tests.test_checkpoint_s3 import BUCKET, CONN_ID, keys, s3  # noqa: F401  (the moto server fixture)

RUN = "scheduled__2026-12-02T20:00:00+00:00"
LATER = "scheduled__2026-12-02T21:00:00+00:00"


def test_a_type_never_synced_has_no_cursor(tmp_path):
    cursors = FeedCursors(tmp_path)
    assert cursors.get("Persoon") is None and cursors.all() == {} and cursors.report() == []


def test_advance_stores_the_state_and_reads_it_back_in_a_new_instance(tmp_path):
    before = datetime.now(UTC)
    state = FeedCursors(tmp_path).advance("Persoon", 750, run_id=RUN, head_skiptoken=1000)
    again = FeedCursors(str(tmp_path)).get("Persoon")  # another process would see the same
    assert again == state and isinstance(again, CursorState)
    assert again.skiptoken == 750 and again.head_skiptoken == 1000 and again.behind == 250
    assert again.last_run_id == RUN and again.caught_up_at is None
    assert again.updated_at.tzinfo is not None and again.updated_at >= before - timedelta(seconds=1)
    doc = json.loads((tmp_path / CURSORS_FOLDER / "Persoon.json").read_text())
    assert doc["kind"] == "tk_checkpoint.cursor" and doc["skiptoken"] == 750 and "behind" not in doc
    assert state.to_dict()["behind"] == 250 and state.to_dict()["updated_at"] == doc["updated_at"]


def test_a_cursor_never_moves_backwards(tmp_path):
    cursors = FeedCursors(tmp_path)
    cursors.advance("Zaak", 500, run_id=RUN)
    with pytest.raises(CursorBackwardsError, match=r"from skiptoken 500 .* to 499") as exc:
        cursors.advance("Zaak", 499, run_id=LATER)
    assert "tk-checkpoint reset-cursor Zaak --skiptoken 499" in str(exc.value)
    assert isinstance(exc.value, ValueError)
    assert cursors.get("Zaak").skiptoken == 500 and cursors.get("Zaak").last_run_id == RUN  # unchanged
    same = cursors.advance("Zaak", 500, run_id=LATER, head_skiptoken=900)  # the same again: allowed
    assert same.skiptoken == 500 and same.head_skiptoken == 900 and same.last_run_id == LATER


def test_head_and_caught_up(tmp_path):
    cursors = FeedCursors(tmp_path)
    first = cursors.advance("Besluit", 250, run_id=RUN, head_skiptoken=2000)
    kept = cursors.advance("Besluit", 500, run_id=RUN)  # no head given: the last one seen stays
    assert kept.head_skiptoken == 2000 and kept.behind == 1500 and kept.caught_up_at is None
    caught = cursors.advance("Besluit", 2100, run_id=RUN, caught_up=True)  # the feed grew meanwhile
    assert caught.head_skiptoken == 2100 and caught.behind == 0
    assert caught.caught_up_at is not None and caught.caught_up_at >= first.updated_at
    later = cursors.advance("Besluit", 2200, run_id=LATER, head_skiptoken=2500)
    assert later.caught_up_at == caught.caught_up_at  # the last catch-up time is kept until the next one
    assert later.behind == 300
    fresh = cursors.advance("Stemming", 10, run_id=RUN, caught_up=True)
    assert fresh.head_skiptoken == 10 and fresh.behind == 0  # caught up at its first page
    low_head = cursors.advance("Fractie", 300, run_id=RUN, head_skiptoken=200)
    assert low_head.head_skiptoken == 300  # the head is never below what was read


def test_reset_is_the_only_way_back(tmp_path):
    cursors = FeedCursors(tmp_path)
    cursors.advance("Persoon", 800, run_id=RUN, head_skiptoken=1000, caught_up=True)
    back = cursors.reset("Persoon", 100)
    assert back.skiptoken == 100 and back.behind == 900 and back.caught_up_at is None
    assert back.last_run_id is None and cursors.get("Persoon") == back
    assert cursors.advance("Persoon", 150, run_id=LATER).skiptoken == 150  # advancing from there
    assert cursors.reset("Persoon").skiptoken == 0  # from scratch
    assert cursors.reset("Nieuw", 42, run_id=RUN).last_run_id == RUN  # a type with no cursor yet


def test_bad_arguments_and_names_are_refused(tmp_path):
    cursors = FeedCursors(tmp_path)
    for name in ("../escape", ".hidden", "a/b", ""):
        with pytest.raises(InvalidNameError):
            cursors.advance(name, 1, run_id=RUN)
    with pytest.raises(ValueError, match="skiptoken must be a whole number >= 0"):
        cursors.advance("Zaak", -1, run_id=RUN)
    with pytest.raises(ValueError, match="head_skiptoken"):
        cursors.advance("Zaak", 1, run_id=RUN, head_skiptoken=True)
    with pytest.raises(InvalidNameError):
        cursors.advance("Zaak", 1, run_id="../x")
    assert not (tmp_path / CURSORS_FOLDER).exists() or cursors.all() == {}


def test_cursors_are_not_runs(tmp_path):
    """The cursor folder sits beside the runs: list, cleanup and delete never take it for one."""
    mgr = CheckpointManager(tmp_path)
    mgr.start_new_run(RUN, dag_id="tk_sync")
    FeedCursors(tmp_path).advance("Zaak", 250, run_id=RUN)
    assert [r["run_id"] for r in mgr.list_runs()] == [RUN]
    mgr.complete_run(RUN)
    assert mgr.cleanup_old_runs(keep=0, force=True) == [RUN]
    assert FeedCursors(tmp_path).get("Zaak").skiptoken == 250


def test_a_damaged_file_is_reported_and_reset_repairs_it(tmp_path):
    cursors = FeedCursors(tmp_path)
    cursors.advance("Zaak", 250, run_id=RUN)
    cursors.advance("Persoon", 500, run_id=RUN)
    path = tmp_path / CURSORS_FOLDER / "Zaak.json"
    for content, message in [
        ("{ not json", "not valid JSON"),
        (json.dumps({**json.loads((tmp_path / CURSORS_FOLDER / "Persoon.json").read_text())}), "names type"),
        ('{"schema_version": 1, "kind": "tk_checkpoint.cursor", "type_name": "Zaak"}', "'skiptoken'"),
    ]:
        path.write_text(content)
        with pytest.raises(CorruptCheckpointError, match=message) as exc:
            cursors.get("Zaak")
        assert str(path) in str(exc.value) and "reset-cursor" in str(exc.value)
        rows = cursors.report()  # the damaged one shown, the other still read
        assert [r["type_name"] for r in rows] == ["Persoon", "Zaak"]
        assert rows[0]["skiptoken"] == 500 and rows[1]["state"] == "damaged"
        with pytest.raises(CorruptCheckpointError):
            cursors.advance("Zaak", 300, run_id=RUN)  # never written over a file it cannot read
    path.write_text(json.dumps({"schema_version": 99, "kind": "tk_checkpoint.cursor"}))
    with pytest.raises(UnsupportedSchemaError, match="upgrade"):
        cursors.get("Zaak")
    assert cursors.reset("Zaak", 250).skiptoken == 250 and cursors.get("Zaak").skiptoken == 250


def test_an_injected_crash_during_the_write_leaves_the_old_cursor(tmp_path, monkeypatch):
    """A write that dies between writing the temp file and putting it in place (here: its fsync fails)
    leaves the old cursor whole and no temp file."""
    cursors = FeedCursors(tmp_path)
    cursors.advance("Zaak", 250, run_id=RUN)
    real_fsync = os.fsync

    def crash(fd):
        raise OSError(5, "injected: the disk went away")

    monkeypatch.setattr(os, "fsync", crash)
    with pytest.raises(OSError, match="injected"):
        cursors.advance("Zaak", 500, run_id=LATER)
    monkeypatch.setattr(os, "fsync", real_fsync)
    state = FeedCursors(tmp_path).get("Zaak")
    assert state.skiptoken == 250 and state.last_run_id == RUN
    assert os.listdir(tmp_path / CURSORS_FOLDER) == ["Zaak.json"]


# Advances its type by 1..: prints "W n" before advancing to n and "A n" after advance returned.
CHILD = textwrap.dedent(
    """
    import sys
    from tk_checkpoint import FeedCursors
    base, type_name, steps = sys.argv[1], sys.argv[2], int(sys.argv[4])
    out = open(sys.argv[3], "a", buffering=1)
    cursors = FeedCursors(base)
    state = cursors.get(type_name)
    n = state.skiptoken if state else 0
    out.write("open\\n")
    for _ in range(steps):
        n += 1
        out.write(f"W {n}\\n")
        cursors.advance(type_name, n, run_id="run", head_skiptoken=n + 10)
        out.write(f"A {n}\\n")
    """
)


def test_sigkill_at_random_moments_never_tears_or_loses_an_advance(tmp_path):
    rng = random.Random(20261202)
    folder, log = tmp_path / "ck", tmp_path / "child.log"
    log.touch()
    acked = attempted = 0
    for trial in range(25):
        start = log.stat().st_size
        proc = subprocess.Popen([sys.executable, "-c", CHILD, str(folder), "Zaak", str(log), "100000"])
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and b"open" not in log.read_bytes()[start:]:
            time.sleep(0.005)
        time.sleep(rng.uniform(0.0, 0.15))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        for line in log.read_bytes()[start:].split(b"\n")[:-1]:
            kind, _, value = line.decode().partition(" ")
            if kind == "A":
                acked = max(acked, int(value))
            elif kind == "W":
                attempted = max(attempted, int(value))
        for entry in os.listdir(folder / CURSORS_FOLDER):
            if not entry.startswith("."):  # a killed writer's temp file is hidden and never read
                json.loads((folder / CURSORS_FOLDER / entry).read_text())  # never torn
        state = FeedCursors(folder).get("Zaak")
        assert state is not None, f"trial {trial}: the cursor is gone"
        assert acked <= state.skiptoken <= attempted, f"trial {trial}: {state.skiptoken} out of range"
        assert state.head_skiptoken == state.skiptoken + 10
    assert acked > 25  # the kills landed while it was advancing
    FeedCursors(folder).advance("Zaak", attempted, run_id="after")
    assert os.listdir(folder / CURSORS_FOLDER) == ["Zaak.json"]  # temp files of killed writers removed


SAME_TYPE = textwrap.dedent(
    """
    import json, sys
    from tk_checkpoint import CursorBackwardsError, FeedCursors
    base, start, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    cursors = FeedCursors(base)
    written, refused = [], 0
    for n in range(start, 800, 2):
        cursors.advance(f"Own{start}", n, run_id="run")  # a type of its own
        try:
            written.append(cursors.advance("Shared", n, run_id=f"run{start}").skiptoken)
        except CursorBackwardsError:
            refused += 1
    json.dump({"written": written, "refused": refused}, open(out, "w"))
    """
)


def test_concurrent_advances_from_processes_lose_nothing(tmp_path):
    """Four processes advance a type of their own and one shared type at once: every own type ends at its
    last value, and the shared one at the highest value any of them wrote, never lower."""
    folder = tmp_path / "ck"
    starts = (0, 1, 2, 3)
    procs = [
        subprocess.Popen([sys.executable, "-c", SAME_TYPE, str(folder), str(s), str(tmp_path / f"{s}.json")])
        for s in starts
    ]
    seen, deadline = [], time.monotonic() + 120  # the shared cursor as a reader sees it meanwhile
    while any(p.poll() is None for p in procs) and time.monotonic() < deadline:
        state = FeedCursors(folder).get("Shared")
        if state is not None:
            seen.append(state.skiptoken)
    assert [p.wait(timeout=120) for p in procs] == [0, 0, 0, 0]
    assert seen == sorted(seen), "a reader saw the shared cursor go backwards"
    cursors = FeedCursors(folder).all()
    assert {name: c.skiptoken for name, c in cursors.items() if name.startswith("Own")} == {
        f"Own{s}": max(range(s, 800, 2)) for s in starts
    }
    results = [json.loads((tmp_path / f"{s}.json").read_text()) for s in starts]
    written = [n for r in results for n in r["written"]]
    assert cursors["Shared"].skiptoken == max(written) == 799
    for s, r in zip(starts, results, strict=True):  # each one's writes went up; every advance was answered
        assert r["written"] == sorted(r["written"])
        assert len(r["written"]) + r["refused"] == len(range(s, 800, 2))


@pytest.fixture
def s3_base(s3, request, monkeypatch):  # noqa: F811  (the fixture imported above)
    """A base on this module's moto server, under a connection id of its own: Airflow caches a store per
    connection id, and the one of test_checkpoint_s3 may still point at that module's (stopped) server."""
    conn_id = "tk_s3_cursor_test"
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", os.environ[f"AIRFLOW_CONN_{CONN_ID.upper()}"])
    return f"s3://{conn_id}@{BUCKET}/{request.node.name}"


def test_cursors_on_object_storage(s3, s3_base):  # noqa: F811
    base = s3_base
    cursors = FeedCursors(base)
    cursors.advance("Persoon", 250, run_id=RUN, head_skiptoken=1000)
    with pytest.raises(CursorBackwardsError):
        cursors.advance("Persoon", 10, run_id=RUN)
    cursors.advance("Zaak", 75, run_id=RUN, caught_up=True)
    prefix = base.split(f"{BUCKET}/", 1)[1]
    assert keys(s3, f"{prefix}/") == [f"{prefix}/.cursors/Persoon.json", f"{prefix}/.cursors/Zaak.json"]
    again = FeedCursors(base).all()  # another worker, the same URL
    assert {n: (c.skiptoken, c.behind) for n, c in again.items()} == {"Persoon": (250, 750), "Zaak": (75, 0)}
    assert FeedCursors(base).reset("Persoon").skiptoken == 0
    assert CheckpointManager(base).list_runs() == []  # not a run
