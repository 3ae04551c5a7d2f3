"""The checkpoint engine on a local base: the original API, states, tries, damage, names, locks, threads."""

from __future__ import annotations

import ast
import gzip
import inspect
import json
import logging
import os
import re
import socket
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest
from tk_checkpoint import (
    CheckpointError,
    CheckpointLockedError,
    CheckpointManager,
    CheckpointSettings,
    CorruptCheckpointError,
    InvalidNameError,
    LoaderCheckpoint,
    RunNotFoundError,
    Settings,
    UnsupportedSchemaError,
    loader_name,
    resolve_base,
)
from tk_checkpoint.present import format_summary_line

from include.loaders.ledger import Ledger
from tests.conftest import ROOT

RUN = "manual__2026-11-27T22:11:54.123+00:00"

# The "Adding Checkpoint Support to New Loaders" example of origin/CHECKPOINT_SYSTEM.md, verbatim except
# for its import line and trailing blanks (checked against the document below when it is present).
ORIGINAL_EXAMPLE = """\
from tk_checkpoint import LoaderCheckpoint, CheckpointManager

def my_loader(conn, checkpoint_manager: CheckpointManager = None):
    # Initialize checkpoint
    checkpoint = None
    if checkpoint_manager:
        checkpoint = LoaderCheckpoint(checkpoint_manager, "my_loader")

    # Set total items
    if checkpoint:
        checkpoint.set_total_items(len(items))

    for item in items:
        # Skip if already processed
        if checkpoint and checkpoint.is_processed(item.id):
            continue

        try:
            # Process item
            process_item(item)

            # Mark as processed
            if checkpoint:
                checkpoint.mark_processed(item.id)

        except Exception as e:
            # Mark as failed
            if checkpoint:
                checkpoint.mark_failed(item.id, str(e))
            continue

        # Save progress every 25 items
        if checkpoint and i % 25 == 0:
            checkpoint.save_progress()
"""
ORIGIN_DOC = ROOT.parent / "shared" / "origin" / "CHECKPOINT_SYSTEM.md"


@pytest.fixture
def mgr(tmp_path):
    m = CheckpointManager(tmp_path / "ck")
    m.start_new_run(RUN, dag_id="tk_ingest", conf={"start_date": "2024-06-01"})
    return m


def loader_files(mgr, run_id=RUN):
    return sorted(p.name for p in (Path(mgr.checkpoint_dir) / run_id / "loaders").iterdir())


def test_original_example_runs_with_only_its_import_changed(tmp_path):
    if ORIGIN_DOC.exists():
        doc = ORIGIN_DOC.read_text()
        block = doc.split("### Adding Checkpoint Support to New Loaders", 1)[1].split("```python\n", 1)[1]
        block = block.split("```", 1)[0]
        original_import = "from checkpoint_manager import LoaderCheckpoint, CheckpointManager"
        block = block.replace(
            original_import, "from tk_checkpoint import LoaderCheckpoint, CheckpointManager"
        )
        assert "\n".join(line.rstrip() for line in block.splitlines()) + "\n" == ORIGINAL_EXAMPLE
    calls = []

    def process_item(item):
        calls.append(item.id)
        if item.id % 10 == 3:
            raise ValueError(f"bad item {item.id}")

    items = [SimpleNamespace(id=n) for n in range(100)]
    namespace = {"items": items, "process_item": process_item, "i": 0}
    exec(compile(ORIGINAL_EXAMPLE, "origin-example", "exec"), namespace)

    mgr = CheckpointManager(tmp_path)
    mgr.start_new_run()
    namespace["my_loader"](None, mgr)
    assert len(calls) == 100
    state = mgr.read_loader(mgr.current_run_id, "my_loader")
    assert len(state.processed) == 90 and set(state.failed) == {str(n) for n in range(3, 100, 10)}
    assert state.total_items == 100
    # A manager without a started or resumed run gives a clear error instead of guessing one.
    calls.clear()
    with pytest.raises(CheckpointError, match="No current run"):
        namespace["my_loader"](None, CheckpointManager(tmp_path))
    assert calls == []


# is_processed is a pure question (issue 9): a loader that skips by asking it counts its skips itself.
COUNTING_EXAMPLE = ORIGINAL_EXAMPLE.replace(
    "is_processed(item.id):\n            continue",
    "is_processed(item.id):\n            checkpoint.mark_skipped()\n            continue",
)


@pytest.mark.parametrize(
    ("example", "skipped"), [(ORIGINAL_EXAMPLE, 0), (COUNTING_EXAMPLE, 59)], ids=["verbatim", "mark_skipped"]
)
def test_original_example_resumes_a_run(tmp_path, example, skipped):
    assert example.count("mark_skipped") == (skipped > 0)
    items = [SimpleNamespace(id=f"zaak-{n}") for n in range(60)]
    seen = []
    hiccups = []

    def process_item(item):
        seen.append(item.id)
        if item.id == "zaak-7" and not hiccups:
            hiccups.append(item.id)
            raise RuntimeError("Neo4j hiccup")

    namespace = {"items": items, "process_item": process_item, "i": 0}
    exec(compile(example, "origin-example", "exec"), namespace)
    mgr = CheckpointManager(tmp_path)
    run_id = mgr.start_new_run()
    assert run_id.startswith("run_") and len(run_id) == len("run_20241201_143022")
    namespace["my_loader"](None, mgr)
    seen.clear()
    again = CheckpointManager(tmp_path)
    assert again.get_latest_incomplete_run() == run_id
    again.resume_run(run_id)
    namespace["my_loader"](None, again)
    assert seen == ["zaak-7"]  # only the failed item is processed again
    state = again.read_loader(run_id, "my_loader")
    assert len(state.processed) == 60 and state.failed == {}
    assert state.skipped_count == skipped
    assert [t["outcome"] for t in state.tries] == ["closed", "closed"]


def test_progress_statistics_and_lines(mgr):
    with LoaderCheckpoint(mgr, "load_zaak", try_number=1) as cp:
        cp.set_total_items(1000)
        cp.mark_processed_many(range(750))
        for n in range(5):
            cp.mark_failed(f"bad-{n}", "boom")
        cp.set_current_batch(30)
        assert cp.is_processed(3) and cp.is_processed("3") and not cp.is_processed(999)
        assert cp.skipped_count == 0  # a pure question: the loop counts its skips with mark_skipped
        cp.mark_skipped(2)
        p = cp.get_progress()
        assert p["processed_count"] == 750 and p["total_items"] == 1000 and p["completion_percentage"] == 75.0
        assert p["failed_count"] == 5 and p["skipped_count"] == 2 and p["current_batch"] == 30
        assert p["rate"] > 0
        assert cp.progress_line() == "📊 Progress: 750/1000 (75.0%)\n⚠️ 5 items failed during processing"
        assert "750 processed, 2 skipped, 5 failed" in format_summary_line(cp.loader_name, p)
        assert cp.filter_unprocessed([1, 2, 999, 1000]) == [999, 1000]
        assert cp.skipped_count == 4


def test_a_loader_checkpoint_is_a_ledger_and_is_processed_counts_nothing(mgr):
    with LoaderCheckpoint(mgr, "load_zaak", try_number=1) as cp:
        assert isinstance(cp, Ledger)
        cp.mark_processed_many(["a", "b"])
        cp.save_progress()
        for _ in range(3):
            assert cp.is_processed("a") and not cp.is_processed("z")
        assert cp.skipped_count == 0 and cp.get_progress()["skipped_this_try"] == 0
        assert cp.save_progress() is False  # asking left nothing to save
        cp.mark_skipped(3)
        assert cp.skipped_count == 3 and cp.save_progress() is True
    st = mgr.read_loader(RUN, "load_zaak")
    assert st.skipped_count == 3 and st.tries[0]["skipped"] == 3


def test_loader_checkpoint_has_the_ledger_signatures():
    # isinstance() on a runtime_checkable Protocol checks the names only: compare the signatures too, so
    # the load loop can call a LoaderCheckpoint and a NullLedger the same way.
    def shape(func):
        return [(p.name, p.kind, p.default) for p in inspect.signature(func).parameters.values()]

    members = [n for n in vars(Ledger) if not n.startswith("_")]
    assert {"is_processed", "mark_skipped", "save_progress", "processed_count"} <= set(members)
    for name in members:
        expected, ours = inspect.getattr_static(Ledger, name), inspect.getattr_static(LoaderCheckpoint, name)
        if isinstance(expected, property):
            assert isinstance(ours, property), name
        else:
            assert shape(ours) == shape(expected), name


def test_one_save_policy_processed_and_failed_marks_count_together(mgr):
    cp = LoaderCheckpoint(mgr, "load_zaak", save_interval=4)
    journal = Path(mgr.checkpoint_dir) / RUN / "loaders" / "load_zaak.journal.jsonl"

    def records():
        return len(journal.read_text().splitlines())

    opened = records()  # the start of the try is recorded at once
    cp.mark_failed("f1", "boom")
    assert records() == opened  # a failure is not saved on its own
    cp.mark_processed_many(["a", "b"])
    assert records() == opened
    cp.mark_failed("f2", "boom")  # the 4th mark: an automatic save
    assert records() == opened + 1
    st = mgr.read_loader(RUN, "load_zaak")
    assert set(st.failed) == {"f1", "f2"} and st.processed == {"a", "b"}
    cp.mark_failed("a", "late")  # ignored (processed wins): not a mark
    cp.mark_processed_many(["a", "b"])  # already processed: no new marks
    cp.mark_failed("f3", "boom")
    assert records() == opened + 1
    assert cp.save_progress() and records() == opened + 2
    cp.close()
    assert set(mgr.read_loader(RUN, "load_zaak").failed) == {"f1", "f2", "f3"}


def test_settings_from_the_environment():
    assert CheckpointSettings.from_env({}) == CheckpointSettings()
    assert CheckpointSettings().base == "checkpoints" and CheckpointSettings().save_interval == 25
    env = {
        "TK_CHECKPOINT_BASE": "s3://conn@bucket/tk",
        "TK_CHECKPOINT_INTERVAL": "0",
        "TK_CHECKPOINT_FSYNC": "off",
        "TK_CHECKPOINT_GZIP_THRESHOLD": "-1",
        "TK_CHECKPOINT_LOCK_STALE_SECONDS": "60",
    }
    s = CheckpointSettings.from_env(env)
    assert (s.base, s.save_interval, s.fsync, s.gzip_threshold, s.lock_stale_after) == (
        "s3://conn@bucket/tk",
        0,
        False,
        -1,
        60.0,
    )
    with pytest.raises(ValueError, match="TK_CHECKPOINT_INTERVAL='often' is not a valid int"):
        CheckpointSettings.from_env({"TK_CHECKPOINT_INTERVAL": "often"})
    with pytest.raises(ValueError, match="TK_CHECKPOINT_FSYNC='maybe'"):
        CheckpointSettings.from_env({"TK_CHECKPOINT_FSYNC": "maybe"})
    with pytest.raises(ValueError, match="save_interval must be >= 0"):
        CheckpointSettings(save_interval=-1)
    changed = s.with_overrides(save_interval=None, fsync=True)  # None: keep the setting
    assert changed == CheckpointSettings(**{**vars(s), "fsync": True})
    with pytest.raises(TypeError, match="Unknown checkpoint settings"):
        s.with_overrides(fsnyc=False)
    assert resolve_base("elsewhere", env) == "elsewhere" and resolve_base(None, env) == "s3://conn@bucket/tk"
    assert resolve_base("", {}) == "checkpoints" and Settings is CheckpointSettings


def test_manager_keywords_override_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("TK_CHECKPOINT_BASE", str(tmp_path / "from-env"))
    monkeypatch.setenv("TK_CHECKPOINT_INTERVAL", "7")
    mgr = CheckpointManager()
    assert mgr.checkpoint_dir == str(tmp_path / "from-env") and mgr.settings.save_interval == 7
    mgr = CheckpointManager(tmp_path / "given", save_interval=3, fsync=None)
    assert mgr.base == mgr.settings.base == tmp_path / "given"
    assert mgr.settings.save_interval == 3 and mgr.settings.fsync is True
    with pytest.raises(TypeError, match="Unknown checkpoint settings"):
        CheckpointManager(tmp_path, save_intervall=3)


def test_the_package_has_no_import_cycle():
    package = ROOT / "plugins" / "tk_checkpoint"
    modules = {p.stem for p in package.glob("*.py")}
    graph: dict[str, set[str]] = {}
    for name in modules:
        edges = graph.setdefault(name, set())
        for node in ast.walk(ast.parse((package / f"{name}.py").read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                if node.module:
                    edges.add(node.module.split(".")[0])
                else:
                    edges.update(a.name if a.name in modules else "__init__" for a in node.names)
    done: set[str] = set()

    def visit(name, path):
        assert name not in path, f"import cycle: {' -> '.join([*path, name])}"
        if name not in done:
            for other in sorted(graph.get(name, ())):
                visit(other, [*path, name])
            done.add(name)

    for name in sorted(graph):
        visit(name, [])
    assert "checkpoint" not in modules  # split by concept (issue 9)


def test_states_tries_and_processed_wins(mgr):
    cp = LoaderCheckpoint(mgr, "load_zaak", try_number=1, meta={"window_start": "2024-06-01"})
    cp.mark_processed("a")
    cp.mark_failed("b", "first")
    cp.mark_failed("a", "late failure of a processed item")  # processed wins: ignored
    cp.fail("RuntimeError: API down")
    st = mgr.read_loader(RUN, "load_zaak")
    assert st.state == "failed" and st.error == "RuntimeError: API down"
    assert st.processed == {"a"} and set(st.failed) == {"b"}
    cp = LoaderCheckpoint(mgr, "load_zaak", try_number=2)
    assert cp.state == "in_progress"
    cp.mark_failed("b", "second")
    assert cp.failed_items()["b"]["attempts"] == 2 and cp.failed_items()["b"]["error"] == "second"
    cp.mark_processed("b")  # a failed item processed later leaves the failed list
    assert cp.failed_items() == {}
    cp.complete()
    with pytest.raises(CheckpointError, match="closed"):
        cp.mark_processed("c")
    st = mgr.read_loader(RUN, "load_zaak")
    assert st.state == "completed" and st.completed_at and st.failed == {}
    assert st.meta == {"window_start": "2024-06-01"}
    tries = st.tries
    assert [(t["try_number"], t["outcome"], t["processed"], t["failed"]) for t in tries] == [
        (1, "failed", 1, 1),
        (2, "completed", 1, 1),
    ]
    assert all(
        t["host"] == socket.gethostname() and t["pid"] == os.getpid() and t["started_at"] for t in tries
    )
    # complete() compacted: only the snapshot is left
    assert loader_files(mgr) == ["load_zaak.json"]


def test_a_try_that_died_shows_as_interrupted(mgr):
    cp = LoaderCheckpoint(mgr, "load_zaak", try_number=1)
    cp.mark_processed_many(["x", "y"])
    cp.save_progress()
    cp._w.abandon()  # as if the process had been killed
    cp = LoaderCheckpoint(mgr, "load_zaak", try_number=2)
    assert cp.processed_count == 2
    cp.close()
    tries = mgr.read_loader(RUN, "load_zaak").tries
    assert [t["outcome"] for t in tries] == ["interrupted", "closed"]


def test_run_lifecycle_is_idempotent_and_redacts_secrets(tmp_path):
    mgr = CheckpointManager(tmp_path)
    conf = {"start_date": "2024-06-01", "neo4j_password": "hunter2", "nested": {"api_token": "t"}}
    assert mgr.start_new_run(RUN, dag_id="tk_ingest", conf=conf) == RUN
    assert mgr.start_new_run(RUN, dag_id="tk_ingest") == RUN  # a retried task: reopens
    run = mgr.get_run(RUN)
    assert run["state"] == "running" and run["dag_id"] == "tk_ingest" and run["loaders"] == {}
    assert "loaders" not in mgr.get_run(RUN, loaders=False)
    assert run["conf"] == {
        "start_date": "2024-06-01",
        "neo4j_password": "***redacted***",
        "nested": {"api_token": "***redacted***"},
    }
    assert "hunter2" not in (tmp_path / RUN / "run.json").read_text()
    mgr.complete_run()
    assert mgr.get_run(RUN)["state"] == "completed" and mgr.get_latest_incomplete_run() is None
    mgr.start_new_run("scheduled__2026-11-28T00:00:00+00:00")
    mgr.fail_run(error="boom")
    assert mgr.get_latest_incomplete_run() == "scheduled__2026-11-28T00:00:00+00:00"
    assert [r["run_id"] for r in mgr.list_runs()] == ["scheduled__2026-11-28T00:00:00+00:00", RUN]
    with pytest.raises(RunNotFoundError, match="Run not found"):
        mgr.resume_run("manual__nope")
    with pytest.raises(CheckpointError, match="No current run"):
        LoaderCheckpoint(CheckpointManager(tmp_path), "load_zaak")


def test_cleanup_keeps_newest_and_running_runs(tmp_path):
    mgr = CheckpointManager(tmp_path)
    for n in range(6):
        mgr.start_new_run(f"run_{n}")
        if n != 1:
            mgr.complete_run()
    assert mgr.cleanup_old_runs(keep=3) == ["run_2", "run_0"]  # run_1 is running: kept
    assert [r["run_id"] for r in mgr.list_runs()] == ["run_5", "run_4", "run_3", "run_1"]
    assert mgr.cleanup_old_runs(keep=3, force=True) == ["run_1"]
    mgr.delete_run("run_5")
    with pytest.raises(RunNotFoundError):
        mgr.delete_run("run_5")


@pytest.mark.parametrize(
    "bad", ["../x", "..", "a/b", "a\\b", "/etc", "x\x00y", "", ".hidden", "a..b", "x" * 201, "a b", "a*b"]
)
def test_names_that_could_escape_the_base_are_rejected(tmp_path, bad):
    mgr = CheckpointManager(tmp_path)
    with pytest.raises(InvalidNameError):
        mgr.start_new_run(bad)
    with pytest.raises(InvalidNameError):
        mgr.get_run(bad)
    with pytest.raises(InvalidNameError):
        mgr.delete_run(bad)
    mgr.start_new_run(RUN)
    with pytest.raises(InvalidNameError):
        LoaderCheckpoint(mgr, bad)
    assert sorted(p.name for p in tmp_path.iterdir()) == [RUN]


def test_loader_names_of_mapped_tasks():
    assert loader_name("load_zaak") == loader_name("load_zaak", -1) == "load_zaak"
    assert loader_name("load_zaak", 3) == "load_zaak.3"
    with pytest.raises(InvalidNameError):
        loader_name("load_zaak.json")


def test_journal_then_compaction_then_gzip(tmp_path):
    mgr = CheckpointManager(tmp_path, gzip_threshold=2000, compact_min_bytes=4000, save_interval=10)
    mgr.start_new_run(RUN)
    cp = LoaderCheckpoint(mgr, "load_zaak")
    cp.mark_processed_many(f"id-{n:05d}" for n in range(20))
    cp.save_progress()
    assert "load_zaak.journal.jsonl" in loader_files(mgr)
    lines = (tmp_path / RUN / "loaders" / "load_zaak.journal.jsonl").read_text().splitlines()
    assert all(json.loads(line)["seq"] for line in lines)
    for n in range(20, 2000):
        cp.mark_processed(f"id-{n:05d}")  # saves every 10 by itself; compacts past the threshold
    names = loader_files(mgr)
    assert "load_zaak.json.gz" in names and "load_zaak.json" not in names
    cp.complete()
    assert loader_files(mgr) == ["load_zaak.json.gz"]
    doc = json.loads(gzip.decompress((tmp_path / RUN / "loaders" / "load_zaak.json.gz").read_bytes()))
    assert doc["schema_version"] == 2 and doc["processed_count"] == 2000 and len(doc["processed_ids"]) == 2000
    assert len(CheckpointManager(tmp_path).read_loader(RUN, "load_zaak").processed) == 2000


def test_marking_is_thread_safe(mgr):
    cp = LoaderCheckpoint(mgr, "load_zaak", save_interval=7)

    def work(t):
        for n in range(2000):
            cp.mark_processed(f"{t}-{n}")
            if n % 50 == 0:
                cp.save_progress()
                cp.is_processed(f"{t}-0")

    threads = [threading.Thread(target=work, args=(t,)) for t in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert cp.processed_count == 12000
    cp.close()
    st = mgr.read_loader(RUN, "load_zaak")
    assert len(st.processed) == 12000 and st.tries[0]["processed"] == 12000


# --- damage -------------------------------------------------------------------------------------


def _loader_with_items(mgr, n=30, compact=True):
    cp = LoaderCheckpoint(mgr, "load_zaak", save_interval=0)
    cp.mark_processed_many(f"a{i}" for i in range(n))
    if compact:
        cp.compact()
    cp.mark_processed_many(f"b{i}" for i in range(n))
    cp.save_progress()
    cp.mark_processed_many(f"c{i}" for i in range(n))
    cp.save_progress()
    cp.close()
    return Path(mgr.checkpoint_dir) / RUN / "loaders"


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty", "truncated-gzip"])
def test_damaged_snapshot_is_named_set_aside_and_recovered(tmp_path, damage):
    mgr = CheckpointManager(tmp_path, gzip_threshold=0 if damage == "truncated-gzip" else 1 << 20)
    mgr.start_new_run(RUN)
    folder = _loader_with_items(mgr)
    snap = folder / ("load_zaak.json.gz" if damage == "truncated-gzip" else "load_zaak.json")
    data = snap.read_bytes()
    snap.write_bytes(
        {"truncated": data[: len(data) // 2], "garbage": os.urandom(300), "empty": b""}.get(
            damage, data[:-40]
        )
    )
    with pytest.raises(CorruptCheckpointError) as read_err:
        mgr.read_loader(RUN, "load_zaak")  # a reader only reports
    assert str(snap) in str(read_err.value) and snap.exists()
    with pytest.raises(CorruptCheckpointError) as err:
        LoaderCheckpoint(mgr, "load_zaak")  # the writer sets it aside
    assert str(snap) in str(err.value) and "set aside" in str(err.value)
    assert not snap.exists() and err.value.set_aside and Path(err.value.set_aside).exists()
    # Next open: continues from the journal, and the incident is on record.
    cp = LoaderCheckpoint(mgr, "load_zaak")
    assert {f"b{i}" for i in range(30)} <= cp._w.state.processed and "a0" not in cp._w.state.processed
    assert cp.get_progress()["incidents"] == [err.value.set_aside]
    cp.close()


def test_garbage_line_in_the_middle_of_the_journal(mgr):
    folder = _loader_with_items(mgr)
    journal = folder / "load_zaak.journal.jsonl"
    lines = journal.read_bytes().splitlines(keepends=True)
    lines.insert(1, b'{"seq": 7, "p": [tru\n')
    journal.write_bytes(b"".join(lines))
    with pytest.raises(CorruptCheckpointError, match=re.escape(f"{journal}:2")):
        mgr.read_loader(RUN, "load_zaak")
    with pytest.raises(CorruptCheckpointError) as err:
        LoaderCheckpoint(mgr, "load_zaak")
    assert "set aside" in str(err.value) and not journal.exists()
    assert Path(err.value.set_aside).exists()
    st = mgr.read_loader(RUN, "load_zaak")  # the good prefix was kept
    assert {"a0", "b0"} <= st.processed and "c0" not in st.processed


def test_a_torn_last_journal_line_is_ignored_and_cut(mgr):
    folder = _loader_with_items(mgr)
    journal = folder / "load_zaak.journal.jsonl"
    journal.write_bytes(journal.read_bytes() + b'{"seq": 99, "p": ["never-saved", "x')
    st = mgr.read_loader(RUN, "load_zaak")
    assert "c0" in st.processed and "never-saved" not in st.processed
    cp = LoaderCheckpoint(mgr, "load_zaak")
    cp.mark_processed("d0")
    cp.close()
    assert all(json.loads(line) for line in journal.read_text().splitlines())
    assert "d0" in mgr.read_loader(RUN, "load_zaak").processed


def test_unknown_schema_version_is_a_clear_error_and_not_set_aside(mgr):
    folder = _loader_with_items(mgr)
    snap = folder / "load_zaak.json"
    doc = json.loads(snap.read_text())
    doc["schema_version"] = 99
    snap.write_text(json.dumps(doc))
    with pytest.raises(UnsupportedSchemaError, match=r"schema_version 99.*upgrade"):
        LoaderCheckpoint(mgr, "load_zaak")
    assert snap.exists()
    (Path(mgr.checkpoint_dir) / RUN / "run.json").write_text('{"schema_version": 7, "run_id": "x"}')
    with pytest.raises(UnsupportedSchemaError):
        mgr.get_run(RUN)


def test_schema_v1_original_files_are_read(mgr):
    folder = Path(mgr.checkpoint_dir) / RUN / "loaders"
    folder.mkdir(parents=True)
    (folder / "load_zaken.json").write_text(
        json.dumps(
            {
                "loader_name": "load_zaken",
                "run_id": RUN,
                "status": "in_progress",
                "total_items": 10,
                "processed_items": [1, 2, 3],
                "failed_items": [{"item_id": 4, "error": "boom", "timestamp": "2024-12-01T14:30:22"}],
                "current_batch": 1,
                "start_time": "2024-12-01T14:30:22",
            }
        )
    )
    st = mgr.read_loader(RUN, "load_zaken")
    assert st.processed == {"1", "2", "3"} and st.failed["4"]["error"] == "boom" and st.total_items == 10
    cp = LoaderCheckpoint(mgr, "load_zaken")
    assert cp.is_processed(2) and cp.failed_items()["4"]["attempts"] == 1
    cp.complete()
    assert json.loads((folder / "load_zaken.json").read_text())["schema_version"] == 2


def test_missing_journal_records_are_an_error(tmp_path):
    mgr = CheckpointManager(tmp_path)
    mgr.start_new_run(RUN)
    folder = _loader_with_items(mgr)
    journal = folder / "load_zaak.journal.jsonl"
    lines = journal.read_bytes().splitlines(keepends=True)
    journal.write_bytes(lines[0] + b"".join(lines[2:]))
    with pytest.raises(CorruptCheckpointError, match="missing"):
        mgr.read_loader(RUN, "load_zaak")


def test_damaged_run_file_is_reported_by_list_and_rebuilt_by_start(mgr):
    run_file = Path(mgr.checkpoint_dir) / RUN / "run.json"
    run_file.write_text('{"run_id": ')
    runs = mgr.list_runs()
    assert runs[0]["state"] == "damaged" and str(run_file) in runs[0]["error"]
    mgr.start_new_run(RUN)
    assert mgr.get_run(RUN)["state"] == "running"
    assert any(".corrupt-" in p.name for p in run_file.parent.iterdir())


# --- the writer lock ----------------------------------------------------------------------------

HOLDER = textwrap.dedent(
    """
    import sys
    from tk_checkpoint import CheckpointManager, LoaderCheckpoint
    mgr = CheckpointManager(sys.argv[1])
    mgr.start_new_run(sys.argv[2])
    cp = LoaderCheckpoint(mgr, "load_zaak", try_number=1)
    cp.mark_processed_many(["p1", "p2"])
    cp.save_progress()
    print("ready", flush=True)
    sys.stdin.readline()
    cp.mark_processed("p3")
    cp.close()
    print("done", flush=True)
    """
)


def test_two_processes_cannot_write_the_same_loader(tmp_path):
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(tmp_path), RUN],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout.readline().strip() == "ready"
        mgr = CheckpointManager(tmp_path)
        mgr.start_new_run(RUN)
        with pytest.raises(CheckpointLockedError) as err:
            LoaderCheckpoint(mgr, "load_zaak", try_number=1)
        msg = str(err.value)
        assert f"pid {proc.pid}" in msg and socket.gethostname() in msg and "tk-checkpoint unlock" in msg
        assert err.value.holder["pid"] == proc.pid
        assert mgr.read_loader(RUN, "load_zaak").locked_by["pid"] == proc.pid
        proc.stdin.write("go\n")
        proc.stdin.flush()
        assert proc.stdout.readline().strip() == "done"
    finally:
        proc.wait(timeout=20)
    cp = LoaderCheckpoint(mgr, "load_zaak", try_number=2)
    assert cp._w.state.processed == {"p1", "p2", "p3"}
    cp.close()


def _write_lock(mgr, **holder):
    lock = Path(mgr.checkpoint_dir) / RUN / "loaders" / "load_zaak.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    base = {"host": socket.gethostname(), "pid": os.getpid(), "since": "2026-11-27T22:00:00+00:00"}
    base["heartbeat_at"] = "2099-01-01T00:00:00+00:00"
    lock.write_text(json.dumps({**base, **holder}))
    return lock


def test_stale_lock_of_a_dead_process_on_this_host_is_taken_over(mgr, caplog):
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    _write_lock(mgr, pid=int(dead.stdout))
    with caplog.at_level(logging.WARNING):
        cp = LoaderCheckpoint(mgr, "load_zaak", try_number=2)
    assert "Taking over the lock" in caplog.text and "is gone" in caplog.text
    assert cp._w.try_entry["took_over_lock_from"]["pid"] == int(dead.stdout)
    cp.close()


def test_lock_of_another_host(mgr):
    lock = _write_lock(mgr, host="worker-7", pid=4242, try_number=1)
    with pytest.raises(CheckpointLockedError, match="worker-7 pid 4242"):
        LoaderCheckpoint(mgr, "load_zaak")
    with pytest.raises(CheckpointLockedError):
        LoaderCheckpoint(mgr, "load_zaak", try_number=1)
    LoaderCheckpoint(mgr, "load_zaak", try_number=2).close()  # a later Airflow try takes over
    _write_lock(mgr, host="worker-7", pid=4242, heartbeat_at="2020-01-01T00:00:00+00:00")
    LoaderCheckpoint(mgr, "load_zaak").close()  # heartbeat older than the stale limit
    _write_lock(mgr, host="worker-7", pid=4242)
    with pytest.raises(CheckpointLockedError, match="is alive"):  # a fresh heartbeat: alive
        mgr.unlock(RUN, "load_zaak")
    assert mgr.unlock(RUN, "load_zaak", force=True)["host"] == "worker-7" and not lock.exists()
    _write_lock(mgr, host="worker-7", pid=4242)
    LoaderCheckpoint(mgr, "load_zaak", force=True).close()
