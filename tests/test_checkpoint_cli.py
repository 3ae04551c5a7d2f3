"""The tk-checkpoint CLI: list / show / delete / cleanup / unlock, tables and --json, messages, exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from tk_checkpoint import CheckpointManager, LoaderCheckpoint
from tk_checkpoint.cli import COMMANDS, main

OLD = "scheduled__2026-11-26T00:00:00+00:00"
NEW = "manual__2026-11-27T22:11:54.123+00:00"


@pytest.fixture
def base(tmp_path):
    mgr = CheckpointManager(tmp_path)
    mgr.start_new_run(OLD, dag_id="tk_ingest")
    with LoaderCheckpoint(mgr, "load_zaak", try_number=1) as cp:
        cp.set_total_items(4)
        cp.mark_processed_many(["a", "b", "c", "d"])
        cp.complete()
    mgr.complete_run()
    mgr.start_new_run(NEW, dag_id="tk_ingest", conf={"start_date": "2024-06-01"})
    with LoaderCheckpoint(mgr, "load_zaak", try_number=1) as cp:
        cp.set_total_items(1000)
        cp.mark_processed_many(range(750))
        for n in range(5):
            cp.mark_failed(f"bad-{n}", f"Neo.ClientError: constraint {n}\nsecond line")
    with LoaderCheckpoint(mgr, "load_document.2", try_number=2) as cp:
        cp.mark_processed("doc-1")
    return str(tmp_path)


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_list_table_newest_first(base, capsys):
    code, out, _ = run(capsys, "list", "--base", base)
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["RUN", "/", "LOADER"]
    assert lines[1].startswith(NEW) and "running" in lines[1]
    zaak = next(line for line in lines if line.strip().startswith("load_zaak") and "750" in line)
    assert zaak.split()[1:7] == ["in_progress", "750", "1000", "75.0", "5", "0"]
    assert any(line.startswith(OLD) and "completed" in line for line in lines)
    assert lines.index(next(line for line in lines if line.startswith(OLD))) > 1


def test_list_json_and_base_before_the_command(base, capsys):
    code, out, _ = run(capsys, "--base", base, "--json", "list")
    runs = json.loads(out)
    assert code == 0 and [r["run_id"] for r in runs] == [NEW, OLD]
    zaak = runs[0]["loaders"]["load_zaak"]
    assert (
        zaak["processed_count"] == 750 and zaak["failed_count"] == 5 and zaak["completion_percentage"] == 75.0
    )


def test_list_incomplete_and_empty(base, tmp_path, capsys):
    CheckpointManager(base).complete_run(NEW)
    code, out, _ = run(capsys, "list", "--incomplete", "--base", base)
    assert code == 1 and "No incomplete runs found" in out
    code, out, _ = run(capsys, "list", "--base", str(tmp_path / "empty"))
    assert code == 0 and "No runs found" in out


def test_show_detail_with_failures_and_tries(base, capsys):
    code, out, _ = run(capsys, "show", "--run-id", NEW, "--base", base, "--failures", "3")
    assert code == 0
    assert f"Run:         {NEW}" in out and '"start_date": "2024-06-01"' in out
    assert "📊 Progress: 750/1000 (75.0%)" in out and "⚠️ 5 items failed during processing" in out
    assert (
        "Last failures (3 of 5)" in out and "Neo.ClientError: constraint" in out and "second line" not in out
    )
    assert "Tries:" in out and "OUTCOME" in out and "closed" in out
    assert "Loader load_document.2: in_progress" in out
    code, out, _ = run(capsys, "show", "--run-id", NEW, "--base", base, "--json", "--loader", "load_zaak")
    detail = json.loads(out)["loaders"]["load_zaak"]
    assert len(detail["last_failures"]) == 5 and detail["last_failures"][0]["attempts"] == 1
    assert detail["tries"][0]["try_number"] == 1 and detail["tries"][0]["processed"] == 750


def test_show_not_found_and_bad_ids(base, capsys):
    code, _, err = run(capsys, "show", "--run-id", "manual__nope", "--base", base)
    assert code == 1 and "Run not found" in err
    code, _, err = run(capsys, "show", "--run-id", "../../etc", "--base", base)
    assert code == 2 and "Invalid run id" in err
    code, _, err = run(capsys, "show", "--run-id", NEW, "--loader", "load_nope", "--base", base)
    assert code == 1 and "Loader not found" in err
    code, _, _ = run(capsys, "show", "--base", base)  # --run-id missing
    assert code == 2


def test_show_and_list_report_damage(base, capsys):
    snap = Path(base) / OLD / "loaders" / "load_zaak.json"
    snap.write_text('{"schema_version": 2, "proc')
    code, out, _ = run(capsys, "show", "--run-id", OLD, "--base", base)
    assert code == 3 and "DAMAGED" in out and str(snap) in out
    code, out, _ = run(capsys, "list", "--base", base)
    assert code == 3 and "DAMAGED" in out
    assert snap.exists()  # readers never move files


def test_delete_asks_and_refuses_without_a_terminal(base, capsys, monkeypatch):
    code, _, err = run(capsys, "delete", "--run-id", OLD, "--base", base)  # pytest's stdin is no terminal
    assert code == 2 and "--yes" in err and (Path(base) / OLD).exists()
    monkeypatch.setattr(sys.stdin, "isatty", lambda: True, raising=False)
    monkeypatch.setattr("builtins.input", lambda prompt: "n")
    code, out, _ = run(capsys, "delete", "--run-id", OLD, "--base", base)
    assert code == 1 and "Nothing deleted" in out and (Path(base) / OLD).exists()
    monkeypatch.setattr("builtins.input", lambda prompt: "y")
    code, out, _ = run(capsys, "delete", "--run-id", OLD, "--base", base)
    assert code == 0 and f"Deleted run {OLD}" in out and not (Path(base) / OLD).exists()
    code, _, err = run(capsys, "delete", "--run-id", OLD, "--base", base, "--yes")
    assert code == 1 and "Run not found" in err


def test_delete_yes_json(base, capsys):
    code, out, _ = run(capsys, "delete", "--run-id", NEW, "--base", base, "--yes", "--json")
    assert code == 0 and json.loads(out) == {"deleted": [NEW]}


def test_cleanup_never_deletes_a_running_run_without_force(base, capsys):
    code, out, _ = run(capsys, "cleanup", "--keep", "0", "--base", base, "--dry-run")
    assert code == 0 and f"Would delete run {OLD}" in out and "still running" in out
    assert (Path(base) / OLD).exists()
    code, out, _ = run(capsys, "cleanup", "--keep", "0", "--base", base, "--json")
    assert json.loads(out)["deleted"] == [OLD] and json.loads(out)["kept_running"] == [NEW]
    code, out, _ = run(capsys, "cleanup", "--base", base)
    assert code == 0 and "Nothing to clean up" in out
    code, out, _ = run(capsys, "cleanup", "--keep", "0", "--force", "--base", base)
    assert f"Deleted run {NEW}" in out and not (Path(base) / NEW).exists()


def test_unlock(base, capsys):
    lock = Path(base) / NEW / "loaders" / "load_zaak.lock"
    lock.write_text(json.dumps({"host": "worker-9", "pid": 77, "since": "2026-11-27T22:00:00+00:00"}))
    code, out, _ = run(capsys, "unlock", "--run-id", NEW, "--loader", "load_zaak", "--base", base)
    assert code == 0 and "worker-9 pid 77" in out and not lock.exists()
    code, out, _ = run(capsys, "unlock", "--run-id", NEW, "--loader", "load_zaak", "--base", base)
    assert code == 1 and "not locked" in out


def test_base_from_environment_and_module_entry_point(base, monkeypatch):
    monkeypatch.setenv("TK_CHECKPOINT_BASE", base)
    proc = subprocess.run(
        [sys.executable, "-m", "tk_checkpoint", "list", "--json"], capture_output=True, text=True
    )
    assert proc.returncode == 0 and json.loads(proc.stdout)[0]["run_id"] == NEW
    console = Path(sys.executable).with_name("tk-checkpoint")
    proc = subprocess.run([str(console), "--help"], capture_output=True, text=True)
    assert proc.returncode == 0 and "exit codes:" in proc.stdout
    assert {"list", "show", "delete", "cleanup"} <= {c.name for c in COMMANDS}
    # fast and free of Airflow: the CLI must not import it for a local base
    code = "import sys, tk_checkpoint.cli; assert 'airflow' not in sys.modules"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
