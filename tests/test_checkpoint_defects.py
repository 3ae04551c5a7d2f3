"""The checkpoint-side defects of issue 12 (deliverable 5), each with the test that would have caught it:
negative counts in the CLI, a failed journal append on a full disk, snapshot fields of the wrong type,
removing the lock of a live writer, a delete that fails half-way, a SIGKILLed writer shown as running,
a closed stdout pipe, and resume's "(was None)"."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tk_checkpoint import (
    CheckpointLockedError,
    CheckpointManager,
    CorruptCheckpointError,
    LoaderCheckpoint,
)
from tk_checkpoint.cli import main

PLUGINS = Path(__file__).resolve().parents[1] / "plugins"
RUN = "manual__2026-12-01T10:00:00+00:00"


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def three_runs(tmp_path):
    mgr = CheckpointManager(tmp_path)
    for n in range(3):
        mgr.start_new_run(f"run_{n}", dag_id="tk_ingest")
        mgr.complete_run()
        time.sleep(0.002)  # distinct creation times: newest first is run_2, run_1, run_0
    return mgr


# --- 1. negative counts --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ("cleanup", "--keep", "-1"),
        ("cleanup", "--keep", "many"),
        ("list", "--limit", "-1"),
        ("list", "--limit", "0"),
        ("list", "--limit", "1e3"),
        ("show", "--run-id", "run_0", "--failures", "-5"),
    ],
)
def test_negative_or_bad_counts_are_refused_and_nothing_is_deleted(three_runs, capsys, argv):
    code, out, err = run_cli(capsys, *argv, "--base", three_runs.checkpoint_dir)
    assert code == 2, (out, err)
    assert "must be a whole number" in err and "Traceback" not in err
    assert [r["run_id"] for r in three_runs.list_runs()] == ["run_2", "run_1", "run_0"]


def test_the_engine_decides_limit_and_keep(three_runs, capsys):
    assert [r["run_id"] for r in three_runs.list_runs(limit=2)] == ["run_2", "run_1"]
    for bad in (-1, 0, True, "2"):
        with pytest.raises(ValueError, match="limit must be"):
            three_runs.list_runs(limit=bad)
    with pytest.raises(ValueError, match="keep must be"):
        three_runs.cleanup_old_runs(keep=-1)
    plan = three_runs.plan_cleanup(keep=1)
    assert (plan.kept_newest, plan.doomed) == (["run_2"], ["run_1", "run_0"])
    code, out, _ = run_cli(capsys, "list", "--limit", "2", "--json", "--base", three_runs.checkpoint_dir)
    assert code == 0 and [r["run_id"] for r in json.loads(out)] == ["run_2", "run_1"]
    code, out, _ = run_cli(capsys, "cleanup", "--keep", "1", "--json", "--base", three_runs.checkpoint_dir)
    assert json.loads(out) == {"deleted": ["run_1", "run_0"], "kept_running": [], "kept_newest": ["run_2"]}


# --- 2. a full disk during a journal append ------------------------------------------------------


def _fail_writes_after(monkeypatch, allowed: int) -> None:
    """os.write writes ``allowed`` more bytes, then fails with ENOSPC (as a full disk does), once."""
    real = os.write
    budget = {"left": allowed, "armed": True}

    def write(fd, data):
        if not budget["armed"]:
            return real(fd, data)
        if budget["left"] <= 0:
            budget["armed"] = False
            raise OSError(errno.ENOSPC, "No space left on device")
        n = real(fd, bytes(memoryview(data)[: budget["left"]]))
        budget["left"] -= n
        return n

    monkeypatch.setattr(os, "write", write)


@pytest.mark.parametrize("allowed", [0, 1, 17, 60])
def test_a_failed_append_is_rolled_back_so_saved_means_durable(tmp_path, monkeypatch, allowed):
    mgr = CheckpointManager(tmp_path, save_interval=0)
    mgr.start_new_run(RUN)
    cp = LoaderCheckpoint(mgr, "load_zaak")
    cp.mark_processed_many(["a", "b"])
    assert cp.save_progress()
    journal = tmp_path / RUN / "loaders" / "load_zaak.journal.jsonl"
    good = journal.read_bytes()
    cp.mark_processed_many(["c", "d"])
    _fail_writes_after(monkeypatch, allowed)
    with pytest.raises(OSError, match="No space left"):
        cp.save_progress()
    assert journal.read_bytes() == good  # no fragment left behind
    monkeypatch.undo()
    cp.mark_processed("e")
    assert cp.save_progress()  # the ids of the failed save go with this one
    cp.fail("stopped")
    state = CheckpointManager(tmp_path).read_loader(RUN, "load_zaak")  # no damage on the next read
    assert sorted(state.processed) == ["a", "b", "c", "d", "e"] and state.state == "failed"
    reopened = LoaderCheckpoint(CheckpointManager(tmp_path), "load_zaak", run_id=RUN)
    assert reopened.processed_count == 5 and not reopened.get_progress()["incidents"]
    reopened.close()


def test_an_append_that_cannot_be_rolled_back_refuses_further_saves(tmp_path, monkeypatch):
    mgr = CheckpointManager(tmp_path, save_interval=0)
    mgr.start_new_run(RUN)
    cp = LoaderCheckpoint(mgr, "load_zaak")
    cp.mark_processed("a")
    _fail_writes_after(monkeypatch, 9)

    def no_truncate(fd, length):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "ftruncate", no_truncate)
    with pytest.raises(OSError, match="No space left"):
        cp.save_progress()
    monkeypatch.undo()
    cp.mark_processed("b")
    with pytest.raises(Exception, match="saves nothing more") as refused:
        cp.save_progress()
    assert type(refused.value).__name__ == "JournalBrokenError"
    cp._w.abandon()
    # the next writer cuts the fragment; nothing it reports was lost (a and b were never reported saved)
    again = LoaderCheckpoint(CheckpointManager(tmp_path), "load_zaak", run_id=RUN)
    assert again.processed_count == 0
    again.mark_processed_many(["a", "b"])
    again.complete()
    assert sorted(CheckpointManager(tmp_path).read_loader(RUN, "load_zaak").processed) == ["a", "b"]


@pytest.fixture
def small_tmpfs(tmp_path):
    mount = tmp_path / "tmpfs"
    mount.mkdir()
    if shutil.which("mount") is None:
        pytest.skip("no mount command")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], capture_output=True, text=True
    )
    if done.returncode != 0:
        pytest.skip(f"mounting a tmpfs is not permitted here: {done.stderr.strip()}")
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


def test_a_really_full_disk_loses_nothing_reported_saved(small_tmpfs):
    mgr = CheckpointManager(small_tmpfs, save_interval=0, fsync=True)
    mgr.start_new_run(RUN)
    cp = LoaderCheckpoint(mgr, "load_zaak")
    saved: list[str] = []
    failures = 0
    for n in range(5000):
        ids = [f"{n:05d}-{k}-" + "x" * 40 for k in range(5)]
        cp.mark_processed_many(ids)
        try:
            cp.save_progress()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
            failures += 1
            if failures == 3:
                break
        else:
            saved.extend(ids)
    assert failures == 3 and saved  # the disk did fill up, after some saves
    cp._w.abandon()
    state = CheckpointManager(small_tmpfs).read_loader(RUN, "load_zaak")
    assert set(saved) <= set(state.processed)  # read back without damage, every id reported saved
    assert state.incidents == []


# --- 3. snapshot fields of the wrong type --------------------------------------------------------

WRONG_FIELDS = [
    ("total_items", "lots"),
    ("tries", [1]),
    ("tries", "many"),
    ("failed_items", {"z-bad": "boom"}),
    ("failed_items", [1]),
    ("meta", [1]),
    ("skipped_count", -3),
    ("error", {"no": "text"}),
    ("updated_at", 12),
    ("tries", ""),  # found by bench/adversarial_checkpoint.py: an empty string passed as "no tries"
    ("failed_items", ""),
    ("kind", "tk_checkpoint.run"),  # a run file where a loader snapshot belongs
]


def damaged_loader(base: Path, field: str, value) -> CheckpointManager:
    """A run whose loader snapshot holds ``field: value``; its journal holds one more item."""
    mgr = CheckpointManager(base, save_interval=0)
    mgr.start_new_run(RUN, dag_id="tk_ingest")
    with LoaderCheckpoint(mgr, "load_zaak", try_number=1) as cp:
        cp.set_total_items(4)
        cp.mark_processed_many(["a", "b"])
        cp.mark_failed("z-bad", "Neo.ClientError")
        cp.compact()
        cp.mark_processed("c")  # in the journal only
    snapshot = base / RUN / "loaders" / "load_zaak.json"
    doc = json.loads(snapshot.read_text())
    doc[field] = value
    snapshot.write_text(json.dumps(doc))
    return mgr


@pytest.mark.parametrize(("field", "value"), WRONG_FIELDS)
def test_a_snapshot_field_of_the_wrong_type_is_damage(tmp_path, capsys, field, value):
    mgr = damaged_loader(tmp_path, field, value)
    base = str(tmp_path)
    code, out, err = run_cli(capsys, "list", "--base", base)
    assert code == 3 and "DAMAGED" in out and "Traceback" not in out + err
    code, out, err = run_cli(capsys, "show", "--run-id", RUN, "--base", base)
    assert code == 3 and any(what in out for what in (f"'{field}' is", "try 1 is", "failed item"))
    assert "is damaged" in out and "Traceback" not in out + err
    code, out, _ = run_cli(capsys, "show", "--run-id", RUN, "--json", "--base", base)
    assert json.loads(out)["loaders"]["load_zaak"]["state"] == "damaged"
    # the writer (an Airflow retry) sets the snapshot aside, as for any damaged snapshot ...
    with pytest.raises(CorruptCheckpointError) as raised:
        LoaderCheckpoint(mgr, "load_zaak", run_id=RUN, try_number=2)
    assert raised.value.set_aside and Path(raised.value.set_aside).exists()
    # ... and the next try continues from the journal (the set-aside snapshot's items are done again)
    with LoaderCheckpoint(CheckpointManager(tmp_path), "load_zaak", run_id=RUN, try_number=3) as cp:
        assert cp.is_processed("c") and cp.get_progress()["incidents"]
        cp.mark_processed_many(["a", "b", "d"])
        cp.complete()
    code, out, _ = run_cli(capsys, "show", "--run-id", RUN, "--base", base)
    assert code == 0 and "completed" in out and "Set-aside damaged file" in out


@pytest.mark.parametrize(
    ("member", "value"),
    [("set", {"total_items": "lots"}), ("f", {"x": "boom"}), ("try", {"processed": "many"}), ("p", [{}])],
)
def test_a_journal_record_field_of_the_wrong_type_is_damage(tmp_path, capsys, member, value):
    mgr = CheckpointManager(tmp_path, save_interval=0)
    mgr.start_new_run(RUN)
    with LoaderCheckpoint(mgr, "load_zaak") as cp:
        cp.mark_processed("a")
    journal = tmp_path / RUN / "loaders" / "load_zaak.journal.jsonl"
    last = json.loads(journal.read_text().splitlines()[-1])
    bad = {"seq": last["seq"] + 1, "at": last["at"], member: value}
    with journal.open("a") as f:
        f.write(json.dumps(bad) + "\n")
    code, out, err = run_cli(capsys, "list", "--base", str(tmp_path))
    assert code == 3 and "DAMAGED" in out and "Traceback" not in out + err
    with pytest.raises(CorruptCheckpointError, match="good records before it were kept"):
        LoaderCheckpoint(mgr, "load_zaak", run_id=RUN)
    with LoaderCheckpoint(mgr, "load_zaak", run_id=RUN) as cp:
        assert cp.is_processed("a")


def test_a_run_file_field_of_the_wrong_type_is_damage(tmp_path, capsys):
    mgr = CheckpointManager(tmp_path)
    mgr.start_new_run(RUN, conf={"start_date": "2024-06-01"})
    run_file = tmp_path / RUN / "run.json"
    doc = json.loads(run_file.read_text())
    doc["conf"] = ["start_date"]
    run_file.write_text(json.dumps(doc))
    code, out, err = run_cli(capsys, "list", "--base", str(tmp_path))
    assert code == 3 and "DAMAGED" in out and "Traceback" not in err
    code, out, _ = run_cli(capsys, "list", "--json", "--base", str(tmp_path))
    assert "'conf' is" in json.loads(out)[0]["error"]
    mgr.start_new_run(RUN)  # the run file holds no progress: set aside, a new one written
    assert mgr.get_run(RUN)["state"] == "running"


# --- 4. unlock / delete of a loader whose writer is alive; the displaced writer --------------------


def _journal_bytes(base: Path) -> bytes:
    return (base / RUN / "loaders" / "load_zaak.journal.jsonl").read_bytes()


@pytest.fixture
def live_writer(tmp_path):
    mgr = CheckpointManager(tmp_path, save_interval=0)
    mgr.start_new_run(RUN)
    cp = LoaderCheckpoint(mgr, "load_zaak", try_number=1)
    cp.mark_processed("a")
    cp.save_progress()
    yield cp
    cp._w.abandon()


@pytest.mark.parametrize("command", [("unlock", "--loader", "load_zaak"), ("delete", "--yes")])
def test_a_live_writer_is_not_unlocked_or_deleted_without_force(live_writer, tmp_path, capsys, command):
    base = str(tmp_path)
    code, _, err = run_cli(capsys, command[0], "--run-id", RUN, *command[1:], "--base", base)
    assert code == 3 and "Traceback" not in err
    assert f"pid {os.getpid()}" in err and "is alive" in err and "--force" in err
    assert (tmp_path / RUN / "loaders" / "load_zaak.lock").exists()
    live_writer.mark_processed("b")
    assert live_writer.save_progress()  # undisturbed

    code, _, err = run_cli(capsys, command[0], "--run-id", RUN, *command[1:], "--force", "--base", base)
    assert code == 0, err
    before = _journal_bytes(tmp_path) if command[0] == "unlock" else None
    live_writer.mark_processed("c")
    with pytest.raises(CheckpointLockedError, match="displaced") as displaced:
        live_writer.save_progress()
    assert type(displaced.value).__name__ == "WriterDisplacedError"
    assert "removed" in str(displaced.value) and "empty or unreadable" not in str(displaced.value)
    with pytest.raises(CheckpointLockedError, match="displaced"):
        live_writer.complete()  # says so again, and records nothing
    live_writer.fail("it went on")
    if command[0] == "unlock":
        assert _journal_bytes(tmp_path) == before
        state = CheckpointManager(tmp_path).read_loader(RUN, "load_zaak")
        assert sorted(state.processed) == ["a", "b"] and state.state == "in_progress"
    else:
        assert not (tmp_path / RUN).exists()  # the displaced writer did not bring the folder back


def test_a_writer_whose_lock_was_taken_says_so_and_appends_nothing(live_writer, tmp_path):
    lock = tmp_path / RUN / "loaders" / "load_zaak.lock"
    lock.write_text(json.dumps({"host": "worker-9", "pid": 1, "token": "other", "heartbeat_at": "x"}))
    before = _journal_bytes(tmp_path)
    live_writer.mark_processed("b")
    with pytest.raises(CheckpointLockedError, match="displaced: its lock was taken over by host worker-9"):
        live_writer.save_progress()
    live_writer.fail("boom")
    assert _journal_bytes(tmp_path) == before and json.loads(lock.read_text())["token"] == "other"


def test_another_hosts_lock_is_alive_while_its_heartbeat_is_fresh(tmp_path, capsys):
    from tk_checkpoint.fileformat import timestamp

    mgr = CheckpointManager(tmp_path)
    mgr.start_new_run(RUN)
    LoaderCheckpoint(mgr, "load_zaak").close()
    lock = tmp_path / RUN / "loaders" / "load_zaak.lock"
    argv = ("unlock", "--run-id", RUN, "--loader", "load_zaak", "--base", str(tmp_path))
    lock.write_text(json.dumps({"host": "worker-9", "pid": 77, "heartbeat_at": timestamp()}))
    code, _, err = run_cli(capsys, *argv)
    assert code == 3 and "host worker-9 pid 77" in err
    lock.write_text(json.dumps({"host": "worker-9", "pid": 77, "heartbeat_at": "2020-01-01T00:00:00+00:00"}))
    code, out, _ = run_cli(capsys, *argv)
    assert code == 0 and "Removed the lock" in out and not lock.exists()


# --- 5. a delete that fails half-way --------------------------------------------------------------


def _rmtree_that_fails_after_one_file(monkeypatch) -> None:
    """shutil.rmtree removes one file (the run file first, when it is in the tree: the worst case), then
    fails as a permission problem or an I/O error would."""

    def rmtree(path, *args, **kwargs):
        files = sorted((p for p in Path(path).rglob("*") if p.is_file()), key=lambda p: p.name != "run.json")
        if files:
            files[0].unlink()
        raise PermissionError(errno.EACCES, "Permission denied", str(path))

    monkeypatch.setattr(shutil, "rmtree", rmtree)


def test_a_delete_that_fails_half_way_is_shown_and_finished(tmp_path, capsys, monkeypatch):
    mgr = CheckpointManager(tmp_path)
    mgr.start_new_run(RUN)
    for name in ("load_zaak", "load_document"):
        with LoaderCheckpoint(mgr, name) as cp:
            cp.mark_processed_many(["a", "b"])
    base = str(tmp_path)
    _rmtree_that_fails_after_one_file(monkeypatch)
    code, _, err = run_cli(capsys, "delete", "--run-id", RUN, "--yes", "--base", base)
    assert code == 3 and "Permission denied" in err
    monkeypatch.undo()
    code, out, _ = run_cli(capsys, "list", "--json", "--base", base)
    (listed,) = json.loads(out)
    assert listed["run_id"] == RUN and listed["state"] in ("deleting", "damaged")
    code, out, _ = run_cli(capsys, "cleanup", "--keep", "5", "--base", base)  # cleanup finishes it
    assert code == 0 and f"Deleted run {RUN}" in out and not (tmp_path / RUN).exists()


def test_delete_finishes_a_half_deleted_run_and_removes_a_folder_without_run_file(
    tmp_path, capsys, monkeypatch
):
    mgr = CheckpointManager(tmp_path)
    mgr.start_new_run(RUN)
    LoaderCheckpoint(mgr, "load_zaak").close()
    _rmtree_that_fails_after_one_file(monkeypatch)
    with pytest.raises(PermissionError):
        mgr.delete_run(RUN)
    monkeypatch.undo()
    assert mgr.get_run(RUN, loaders=False)["state"] == "deleting"
    mgr.delete_run(RUN)
    assert not (tmp_path / RUN).exists()
    orphan = tmp_path / "manual__orphan" / "loaders"  # what an older version's failed delete left
    orphan.mkdir(parents=True)
    (orphan / "load_zaak.journal.jsonl").write_text("")
    code, out, _ = run_cli(capsys, "list", "--base", str(tmp_path))
    assert code == 3 and "manual__orphan" in out and "DAMAGED" in out
    code, out, _ = run_cli(capsys, "delete", "--run-id", "manual__orphan", "--yes", "--base", str(tmp_path))
    assert code == 0 and not orphan.parent.exists()


# --- 6. a SIGKILLed writer is shown as gone, not running ------------------------------------------

WRITER = """
import sys, time
from tk_checkpoint import CheckpointManager, LoaderCheckpoint
mgr = CheckpointManager(sys.argv[1], save_interval=0)
mgr.start_new_run(sys.argv[2])
cp = LoaderCheckpoint(mgr, "load_zaak", try_number=1)
cp.mark_processed_many(["a", "b", "c"])
cp.save_progress()
print("saved", flush=True)
time.sleep(120)
"""


def _writer_process(base: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(PLUGINS)}
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(base), RUN], stdout=subprocess.PIPE, text=True, env=env
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "saved"
    return proc


def test_a_sigkilled_writer_is_shown_interrupted_not_running(tmp_path, capsys):
    from fastapi.testclient import TestClient

    from tests.test_web import _app  # the dashboard with the login answered, as in test_web.py

    proc = _writer_process(tmp_path)
    argv = ("show", "--run-id", RUN, "--json", "--base", str(tmp_path))
    try:
        _, out, _ = run_cli(capsys, *argv)
        loader = json.loads(out)["loaders"]["load_zaak"]
        assert loader["locked_by"]["pid"] == proc.pid and loader["locked_by"]["alive"] is True
        assert loader["tries"][-1]["outcome"] is None  # running
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        proc.stdout.close()
    _, out, _ = run_cli(capsys, *argv)
    loader = json.loads(out)["loaders"]["load_zaak"]
    assert loader["locked_by"]["alive"] is False and loader["tries"][-1]["outcome"] == "interrupted"
    code, out, _ = run_cli(capsys, "show", "--run-id", RUN, "--base", str(tmp_path))
    assert code == 0 and "interrupted" in out and "running" not in out.split("Tries:")[1]
    assert f"pid {proc.pid}" in out and "stale: that writer is gone" in out

    client = TestClient(_app(tmp_path))
    page = client.get(f"/runs/{RUN}")
    assert (
        page.status_code == 200 and "interrupted" in page.text and "stale: that writer is gone" in page.text
    )
    detail = client.get(f"/api/runs/{RUN}").json()["loaders"]["load_zaak"]
    assert detail["locked_by"]["alive"] is False and detail["tries"][-1]["outcome"] == "interrupted"
    # nothing was written by the readers: the next try takes the lock over and records the same
    with LoaderCheckpoint(CheckpointManager(tmp_path), "load_zaak", run_id=RUN, try_number=2) as cp:
        assert cp.processed_count == 3 and cp.get_progress()["tries"] == 2
    tries = CheckpointManager(tmp_path).read_loader(RUN, "load_zaak").tries
    assert [t["outcome"] for t in tries] == ["interrupted", "closed"]


# --- 7. a closed stdout pipe; resume's "(was None)" -----------------------------------------------

TK_CHECKPOINT = str(Path(sys.executable).with_name("tk-checkpoint"))


def test_a_reader_that_closes_the_pipe_early_is_not_an_error(tmp_path):
    mgr = CheckpointManager(tmp_path, save_interval=0)
    mgr.start_new_run(RUN)
    with LoaderCheckpoint(mgr, "load_zaak") as cp:
        for n in range(3000):  # far more output than a pipe buffer holds
            cp.mark_failed(f"item-{n}", "Neo.ClientError: " + "x" * 100)
    argv = [TK_CHECKPOINT, "show", "--run-id", RUN, "--failures", "3000", "--base", str(tmp_path)]
    for extra in ([], ["--json"]):
        proc = subprocess.Popen(argv + extra, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert proc.stdout is not None and proc.stdout.readline()  # the reader takes one line ...
        proc.stdout.close()  # ... and goes away, as `| head -1` does
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 141, err
        assert err == b""  # quiet: no "cannot read checkpoints", no traceback
    # a shell pipeline with pipefail sees 141 (as for any tool ended by SIGPIPE); head got its line
    shell = subprocess.run(
        ["bash", "-c", f"set -o pipefail; {' '.join(argv)} | head -1"], capture_output=True, text=True
    )
    assert shell.returncode == 141 and shell.stdout.startswith("Run:") and shell.stderr == ""


class _AirflowClear:
    """A loopback stand-in for Airflow 3.3's ``POST /api/v2/dags/{dag_id}/clearTaskInstances``, answering
    as its route does (airflow/api_fastapi/core_api/routes/public/task_instances.py): a dry run lists the
    task instances as they are; a real clear lists them re-read after clearing, so with state None."""

    def __init__(self) -> None:
        import http.server
        import threading

        self.bodies: list[dict] = []
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                owner.bodies.append(body)
                state = "failed" if body["dry_run"] else None
                tis = [
                    {"task_id": "load_zaken", "map_index": 0, "state": state},
                    {"task_id": "cleanup", "map_index": -1, "state": "upstream_failed" if state else None},
                ]
                data = json.dumps({"task_instances": tis, "total_entries": 2}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_resume_says_what_state_the_cleared_tasks_were_in(tmp_path, capsys, monkeypatch):
    mgr = CheckpointManager(tmp_path)
    mgr.start_new_run(RUN, dag_id="tk_ingest")
    mgr.fail_run(error="load_zaken failed")
    airflow = _AirflowClear()
    monkeypatch.setenv("AIRFLOW_API_TOKEN", "test-token")
    try:
        code, out, err = run_cli(capsys, "resume", "--api-url", airflow.url, "--base", str(tmp_path))
    finally:
        airflow.close()
    assert code == 0, err
    assert "None" not in out
    assert "load_zaken[0]  (was failed)" in out and "cleanup  (was upstream_failed)" in out
    assert [b["dry_run"] for b in airflow.bodies] == [True, False]
    assert mgr.get_run(RUN, loaders=False)["state"] == "running"


# --- found by bench/adversarial_checkpoint.py -------------------------------------------------------


def test_an_empty_loader_name_or_run_id_is_a_usage_error(tmp_path, capsys, monkeypatch):
    mgr = CheckpointManager(tmp_path)
    mgr.start_new_run(RUN)
    mgr.fail_run(error="boom")
    LoaderCheckpoint(mgr, "load_zaak").close()
    base = str(tmp_path)
    code, _, err = run_cli(capsys, "show", "--run-id", RUN, "--loader", "", "--base", base)
    assert code == 2 and "loader name" in err  # was: every loader, exit 0
    monkeypatch.delenv("AIRFLOW_API_TOKEN", raising=False)
    code, _, err = run_cli(
        capsys, "resume", "--run-id", "", "--api-url", "http://127.0.0.1:9", "--base", base
    )
    assert code == 2 and "run id" in err  # was: the latest run, then exit 4 asking for credentials


def test_a_damaged_run_file_is_reported_by_show_and_the_dashboard_with_its_loaders(tmp_path, capsys):
    from fastapi.testclient import TestClient

    from tests.test_web import _app

    mgr = CheckpointManager(tmp_path)
    mgr.start_new_run(RUN)
    with LoaderCheckpoint(mgr, "load_zaak") as cp:
        cp.mark_processed_many(["a", "b"])
    (tmp_path / RUN / "run.json").write_text("{ nope")
    code, out, _ = run_cli(capsys, "show", "--run-id", RUN, "--base", str(tmp_path))
    assert code == 3 and "damaged" in out and "run.json is damaged" in out and "Loader load_zaak" in out
    client = TestClient(_app(tmp_path))
    page = client.get(f"/runs/{RUN}")
    assert page.status_code == 200 and "run.json is damaged" in page.text  # was: 500
    detail = client.get(f"/api/runs/{RUN}")
    assert detail.status_code == 200 and detail.json()["state"] == "damaged"
    assert detail.json()["loaders"]["load_zaak"]["processed_count"] == 2
    _, out, _ = run_cli(capsys, "show", "--run-id", RUN, "--json", "--base", str(tmp_path))
    assert json.loads(out) == detail.json()
