"""The same engine on object storage: ObjectStoragePath against an S3 server (moto) on loopback."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from tk_checkpoint import (
    CheckpointLockedError,
    CheckpointManager,
    CorruptCheckpointError,
    LoaderCheckpoint,
)
from tk_checkpoint.cli import main as cli_main

RUN = "manual__2026-11-27T22:11:54.123+00:00"
CONN_ID = "tk_s3_test"
BUCKET = "tk-checkpoints"


@pytest.fixture(scope="module")
def s3():
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    env = {
        f"AIRFLOW_CONN_{CONN_ID.upper()}": json.dumps(
            {
                "conn_type": "aws",
                "login": "testing",
                "password": "testing",
                "extra": {"endpoint_url": endpoint, "region_name": "us-east-1"},
            }
        ),
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    import boto3

    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    client.create_bucket(Bucket=BUCKET)
    yield client
    server.stop()
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture
def base(s3, request):
    return f"s3://{CONN_ID}@{BUCKET}/{request.node.name}"


def keys(client, prefix):
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    return sorted(o["Key"] for page in pages for o in page.get("Contents", []))


def test_engine_on_object_storage(s3, base):
    prefix = base.split(f"{BUCKET}/", 1)[1]
    mgr = CheckpointManager(base, gzip_threshold=400, compact_min_bytes=100_000, save_interval=10)
    assert mgr.start_new_run(RUN, dag_id="tk_ingest") == RUN
    cp = LoaderCheckpoint(mgr, "load_zaak.0", try_number=1)
    cp.set_total_items(100)
    for n in range(40):
        cp.mark_processed(f"z{n}")
    cp.mark_failed("bad", "boom")
    cp.close()
    objects = keys(s3, f"{prefix}/{RUN}/loaders/")
    segments = [k for k in objects if "/load_zaak.0.journal/" in k]
    assert len(segments) >= 5 and all(k.endswith(".json") for k in segments)  # one immutable object per save
    assert not any(k.endswith(".lock") for k in objects)  # released

    again = CheckpointManager(base, gzip_threshold=400)  # a retry on another worker: the same URL
    again.resume_run(RUN)
    cp = LoaderCheckpoint(again, "load_zaak.0", try_number=2)
    assert cp.processed_count == 40 and set(cp.failed_items()) == {"bad"} and cp.is_processed("z3")
    with pytest.raises(CheckpointLockedError, match="tk-checkpoint unlock"):
        LoaderCheckpoint(CheckpointManager(base, save_interval=10), "load_zaak.0", run_id=RUN, try_number=2)
    cp.mark_processed("bad")
    cp.complete()
    objects = keys(s3, f"{prefix}/{RUN}/loaders/")
    assert objects == [f"{prefix}/{RUN}/loaders/load_zaak.0.json.gz"]  # compacted, gzip above 400 bytes
    run = CheckpointManager(base).get_run(RUN)
    summary = run["loaders"]["load_zaak.0"]
    assert (
        summary["state"] == "completed" and summary["processed_count"] == 41 and summary["failed_count"] == 0
    )
    assert [t["outcome"] for t in CheckpointManager(base).read_loader(RUN, "load_zaak.0").tries] == [
        "closed",
        "completed",
    ]


def test_automatic_compaction_by_segment_count(s3, base):
    mgr = CheckpointManager(base, max_segments=8, save_interval=1)
    mgr.start_new_run(RUN)
    cp = LoaderCheckpoint(mgr, "load_zaak")
    cp.mark_processed_many(range(3))
    for n in range(3, 20):
        cp.mark_processed(n)
    cp.close()
    prefix = base.split(f"{BUCKET}/", 1)[1]
    segments = [k for k in keys(s3, f"{prefix}/{RUN}/loaders/") if ".journal/" in k]
    assert len(segments) < 8
    assert len(CheckpointManager(base).read_loader(RUN, "load_zaak").processed) == 20


def test_damaged_segment_in_the_middle_on_object_storage(s3, base):
    prefix = base.split(f"{BUCKET}/", 1)[1]
    mgr = CheckpointManager(base, save_interval=5)
    mgr.start_new_run(RUN)
    cp = LoaderCheckpoint(mgr, "load_zaak")
    cp.mark_processed_many(f"x{n}" for n in range(30))  # one record
    for n in range(30):
        cp.mark_processed(f"y{n}")
    cp.close()
    segments = [k for k in keys(s3, f"{prefix}/{RUN}/loaders/") if ".journal/" in k]
    victim = segments[3]
    s3.put_object(Bucket=BUCKET, Key=victim, Body=b'{"seq": 4, "p": [')
    with pytest.raises(CorruptCheckpointError) as err:
        LoaderCheckpoint(mgr, "load_zaak")
    assert victim.rsplit("/", 1)[1] in str(err.value) and "set aside" in str(err.value)
    after = keys(s3, f"{prefix}/{RUN}/loaders/")
    assert any(".journal.corrupt-" in k for k in after)  # kept, not deleted
    cp = LoaderCheckpoint(mgr, "load_zaak")  # continues from the last good state
    assert {f"x{n}" for n in range(30)} <= cp._w.state.processed
    assert cp.get_progress()["incidents"]
    cp.close()


KILLED = textwrap.dedent(
    """
    import sys
    from tk_checkpoint import CheckpointManager, LoaderCheckpoint
    mgr = CheckpointManager(sys.argv[1])
    mgr.start_new_run(sys.argv[2])
    cp = LoaderCheckpoint(mgr, "load_doc", try_number=1)
    for n in range(20):
        cp.mark_processed(f"d{n}")
        cp.save_progress()
    print("saved", flush=True)
    import time
    time.sleep(60)
    """
)


def test_a_killed_writer_on_object_storage(s3, base):
    proc = subprocess.Popen([sys.executable, "-c", KILLED, base, RUN], stdout=subprocess.PIPE, text=True)
    try:
        lines = iter(proc.stdout.readline, "")
        assert any(line.strip() == "saved" for line in lines)  # Airflow may log to stdout first
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    mgr = CheckpointManager(base)
    mgr.resume_run(RUN)
    start = time.monotonic()
    cp = LoaderCheckpoint(mgr, "load_doc", try_number=2)  # same host, dead pid: taken over
    assert cp.processed_count == 20
    assert cp._w.try_entry["took_over_lock_from"]["pid"] == proc.pid
    cp.complete()
    assert time.monotonic() - start < 10


def test_cli_on_object_storage(s3, base, capsys):
    mgr = CheckpointManager(base)
    mgr.start_new_run(RUN)
    with LoaderCheckpoint(mgr, "load_zaak") as cp:
        cp.mark_processed_many(["a", "b"])
    assert cli_main(["list", "--base", base, "--json"]) == 0
    runs = json.loads(capsys.readouterr().out)
    assert runs[0]["run_id"] == RUN and runs[0]["loaders"]["load_zaak"]["processed_count"] == 2
    assert cli_main(["delete", "--base", base, "--run-id", RUN, "--yes"]) == 0
    assert cli_main(["show", "--base", base, "--run-id", RUN]) == 1
    assert "Run not found" in capsys.readouterr().err
