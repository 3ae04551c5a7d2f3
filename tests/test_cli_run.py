"""Issue 12, deliverable 5: ``python -m include.loaders`` finishes its checkpoint run.

Before the fix the run stayed ``running`` for ever after every loader completed, so ``list`` and the
dashboard filled with stale running runs and ``resume`` took them for unfinished work. Real processes:
the command line against the offline TK API over HTTP and the real Neo4j.
"""

from __future__ import annotations

import os
import subprocess
import sys

from tk_checkpoint import CheckpointManager

from include.tk_replay.dataset import Dataset
from include.tk_replay.faults import FaultConfig
from tests.conftest import ROOT
from tests.loader_fixtures import replay


def _cli(url: str, base: str, run_id: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "TK_API_BASE_URL": url, "TK_API_MAX_RETRIES": "1", "TK_API_BACKOFF_BASE": "0.01"}
    cmd = [sys.executable, "-m", "include.loaders", "Zaak", "Document"]
    cmd += ["--checkpoint-base", base, "--run-id", run_id]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def test_the_command_line_completes_its_run_and_fails_it_when_items_fail(neo4j_empty, tmp_path):
    ds = Dataset.generate(60, seed=21, sets=("Zaak", "Document"))
    base = str(tmp_path)
    with replay(ds) as server:
        ok = _cli(server.url, base, "cli_ok")
        server.set_faults(FaultConfig(without_id={ds.live_ids("Zaak")[0]}))
        bad = _cli(server.url, base, "cli_bad")
    assert ok.returncode == 0, ok.stderr[-3000:]
    assert bad.returncode == 1, bad.stderr[-3000:]

    manager = CheckpointManager(base)
    done = manager.get_run("cli_ok")
    assert done["state"] == "completed"
    assert {s["state"] for s in done["loaders"].values()} == {"completed"}
    failed = manager.get_run("cli_bad")
    assert failed["state"] == "failed" and "items still fail" in (failed.get("error") or "")
    # nothing is left looking like unfinished work: list --incomplete shows only the failed run
    assert [r["run_id"] for r in manager.list_runs(incomplete=True)] == ["cli_bad"]


def test_the_command_line_says_in_one_line_why_it_could_not_load(tmp_path):
    """No traceback for what a user can meet: bad arguments (exit 2 from argparse) and an unreachable
    Neo4j or API (exit 2, one line naming it)."""
    env = {**os.environ, "TK_API_BASE_URL": "http://127.0.0.1:9", "TK_API_MAX_RETRIES": "0"}
    cmd = [sys.executable, "-m", "include.loaders"]
    cases = [
        (["--start", "0001-01-01"], "out of the supported range"),
        (["--start", "2024-06-02", "--end", "2024-06-01"], "must be after --start"),
        (["Zaken"], "Unknown entity 'Zaken'"),
        (["--batch-size", "0"], "batch_size must be between 1 and 10000, got 0"),
        (["Zaak"], "ApiVersionNotFound: No version of the TK API answered"),
        (["Zaak"], "v5: http://127.0.0.1:9/OData/v5/$metadata: connection refused"),
        (["Zaak"], "v4/2.0: http://127.0.0.1:9/OData/v4/2.0/$metadata: connection refused"),
    ]
    for extra, message in cases:
        argv = [*cmd, *extra, "--checkpoint-base", str(tmp_path)]
        out = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
        assert out.returncode == 2, (extra, out.stderr[-2000:])
        assert message in out.stderr and "Traceback" not in out.stderr, (extra, out.stderr[-2000:])


def test_a_neo4j_error_is_named_as_one():
    """The driver's errors name only an address (a Neo4j outage mid-load: 'Failed to establish connection
    to ResolvedIPv4Address(...)'); the one line says it is Neo4j."""
    from neo4j.exceptions import ServiceUnavailable

    from include.loaders.__main__ import _source
    from include.loaders.api import ApiError

    assert _source(ServiceUnavailable("Failed to establish connection")) == "Neo4j "
    assert _source(ApiError("TK API request failed", url="http://127.0.0.1:9/")) == ""
