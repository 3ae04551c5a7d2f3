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


# --- SyncFeed cursors ----------------------------------------------------------------------------


@pytest.fixture
def cursors(base):
    from tk_checkpoint import FeedCursors

    feed = FeedCursors(base)
    feed.advance("Persoon", 750, run_id=NEW, head_skiptoken=1000)
    feed.advance("Zaak", 2000, run_id=NEW, caught_up=True)
    return feed


def test_list_shows_a_cursors_section_only_when_there_are_cursors(base, capsys, cursors):
    code, out, _ = run(capsys, "list", "--base", base)
    assert code == 0 and out.index(NEW) < out.index("SyncFeed cursors: 2 types, 1 behind the head")
    persoon = next(line for line in out.splitlines() if line.strip().startswith("Persoon"))
    assert persoon.split()[:5] == ["Persoon", "750", "1000", "250", "never"] and persoon.endswith(NEW)
    zaak = next(line for line in out.splitlines() if line.strip().startswith("Zaak"))
    caught = cursors.get("Zaak").caught_up_at.strftime("%Y-%m-%d %H:%M:%S")
    assert zaak.split()[:4] == ["Zaak", "2000", "2000", "0"] and caught in zaak
    code, out, _ = run(capsys, "list", "--base", base, "--json")  # the runs, as before (and as api/runs)
    assert [r["run_id"] for r in json.loads(out)] == [NEW, OLD]


def test_list_without_cursors_has_no_cursors_section(base, capsys):
    code, out, _ = run(capsys, "list", "--base", base)
    assert code == 0 and "SyncFeed cursors" not in out


def test_cursors_command_text_json_and_one_type(base, capsys, cursors):
    code, out, _ = run(capsys, "cursors", "--base", base)
    assert code == 0 and "BEHIND HEAD" in out and "CAUGHT UP AT (UTC)" in out and "Persoon" in out
    code, out, _ = run(capsys, "cursors", "--base", base, "--json")
    rows = json.loads(out)
    assert rows == [c.to_dict() for c in cursors.all().values()]
    assert [(r["type_name"], r["skiptoken"], r["behind"]) for r in rows] == [
        ("Persoon", 750, 250),
        ("Zaak", 2000, 0),
    ]
    code, out, _ = run(capsys, "cursors", "--type", "Zaak", "--base", base, "--json")
    assert code == 0 and json.loads(out) == [cursors.get("Zaak").to_dict()]
    code, _, err = run(capsys, "cursors", "--type", "Stemming", "--base", base)
    assert code == 1 and "No cursor for type Stemming" in err
    code, _, err = run(capsys, "cursors", "--type", "../x", "--base", base)
    assert code == 2 and "Invalid feed type name" in err
    code, out, _ = run(capsys, "cursors", "--base", str(Path(base) / "empty"))
    assert code == 0 and "No SyncFeed cursors in" in out


def test_cursors_report_a_damaged_file(base, capsys, cursors):
    damaged = Path(base) / ".cursors" / "Zaak.json"
    damaged.write_text("{ torn")
    code, out, _ = run(capsys, "cursors", "--base", base)
    assert code == 3 and "DAMAGED" in out and "Persoon" in out
    code, out, _ = run(capsys, "cursors", "--base", base, "--json")
    assert code == 3 and json.loads(out)[1]["state"] == "damaged"
    code, out, _ = run(capsys, "list", "--base", base)
    assert code == 3 and "1 damaged" in out
    code, out, _ = run(capsys, "reset-cursor", "Zaak", "--skiptoken", "1500", "--yes", "--base", base)
    assert code == 0 and "from a damaged cursor file to skiptoken 1500" in out
    assert cursors.get("Zaak").skiptoken == 1500


def test_reset_cursor_asks_and_goes_back(base, capsys, cursors, monkeypatch):
    code, _, err = run(capsys, "reset-cursor", "Persoon", "--base", base)  # pytest's stdin: no terminal
    assert code == 2 and "--yes" in err and cursors.get("Persoon").skiptoken == 750
    monkeypatch.setattr(sys.stdin, "isatty", lambda: True, raising=False)
    prompts = []
    monkeypatch.setattr("builtins.input", lambda prompt: prompts.append(prompt) or "n")
    code, out, _ = run(capsys, "reset-cursor", "Persoon", "--skiptoken", "100", "--base", base)
    assert code == 1 and "Nothing reset" in out and cursors.get("Persoon").skiptoken == 750
    assert "Persoon (skiptoken 750) to skiptoken 100" in prompts[0]
    monkeypatch.setattr("builtins.input", lambda prompt: "y")
    code, out, _ = run(capsys, "reset-cursor", "Persoon", "--skiptoken", "100", "--base", base)
    assert code == 0 and "from skiptoken 750 to skiptoken 100" in out
    state = cursors.get("Persoon")
    assert state.skiptoken == 100 and state.behind == 900 and state.caught_up_at is None
    code, out, _ = run(capsys, "reset-cursor", "Zaak", "--yes", "--json", "--base", base)
    assert code == 0 and json.loads(out) == {"reset": cursors.get("Zaak").to_dict(), "was": "skiptoken 2000"}
    code, _, err = run(capsys, "reset-cursor", "Zaak", "--skiptoken", "-5", "--yes", "--base", base)
    assert code == 2 and "skiptoken must be a whole number of 0 or more" in err
    assert {"cursors", "reset-cursor"} <= {c.name for c in COMMANDS}
