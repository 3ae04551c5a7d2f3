"""The loaders' metrics (include/loaders/metrics.py) through Airflow's own Stats.

* the README's table is the module's list, row for row;
* names, tags, the names that carry the entity (Airflow's ``legacy_names_on``) and the lag from
  ``ApiGewijzigdOp`` values with different offsets;
* a load through Airflow's real ``Stats`` facade with a recording backend, on the offline TK API with
  injected HTTP 500s: processed = rows, requests = the server's responses, retries = its 500s, the
  backoff timings = the client's sleeps;
* failures (in preparation, in Neo4j, and again in each retry round), retries and skips counted as
  the load meets them, on a first try and the next;
* a broken metrics backend (raising on every call, or failing to be made) is logged once per loader
  and API client and the load completes;
* OpenTelemetry: with ``[metrics] otel_on`` the same calls reach an OTLP/HTTP receiver on loopback with
  their tags as attributes;
* acceptance: ``airflow dags test tk_ingest`` with Airflow's StatsD client pointed at a UDP listener on
  loopback: every documented name arrives, processed per entity equals the nodes in Neo4j plus the
  tombstones (and the checkpoint's count), failed = 0, requests = the server's responses.
"""

from __future__ import annotations

import logging
import random
import re
import socket
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from include.loaders import metrics as m
from include.loaders.entities import ENTITIES
from include.tk_replay.dataset import Dataset
from include.tk_replay.faults import FaultConfig
from tests.conftest import ROOT
from tests.loader_fixtures import replay
from tests.test_dag import airflow_env, dags_test, first_day

LOADER_METRICS = [x for x in m.METRICS if x.name.startswith("tk.loader.")]
API_METRICS = [x for x in m.METRICS if x.name.startswith("tk.api.")]


# -- the README ---------------------------------------------------------------------------------------
def _readme_section(title: str) -> str:
    text = (ROOT / "README.md").read_text()
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", text, re.S | re.M)
    assert match, f"README.md has no '## {title}' section"
    return match.group(1)


def test_readme_metrics_table_is_the_modules_list():
    section = _readme_section("Metrics")
    assert m.markdown_table() in section  # python -m include.loaders.metrics prints it
    documented = re.findall(r"^\| `([a-z0-9_.]+)` \|", section, re.M)
    assert documented == [x.name for x in m.METRICS]
    assert len(set(documented)) == len(documented)
    assert all(x.name.startswith(m.PREFIX + ".") for x in m.METRICS)
    assert {x.kind for x in m.METRICS} <= {"counter", "timer", "gauge"}


# -- the module -----------------------------------------------------------------------------------------
class Recorder:
    """A metrics backend with the calls of Airflow's StatsD/OTel loggers, recording them."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, Any, dict[str, Any]]] = []
        self.lock = threading.Lock()

    def _add(self, kind: str, stat: str, value: Any, tags: dict[str, Any] | None) -> None:
        with self.lock:
            self.calls.append((kind, stat, value, dict(tags or {})))

    def incr(self, stat: str, count: int = 1, rate: float = 1, *, tags: dict | None = None) -> None:
        self._add("counter", stat, count, tags)

    def decr(self, stat: str, count: int = 1, rate: float = 1, *, tags: dict | None = None) -> None:
        self._add("counter", stat, -count, tags)

    def gauge(self, stat: str, value: float, rate: float = 1, delta: bool = False, *, tags=None) -> None:
        self._add("gauge", stat, value, tags)

    def timing(self, stat: str, dt: Any, *, tags: dict | None = None) -> None:
        self._add("timer", stat, dt, tags)

    def timer(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the loaders send timings, not timers")

    def total(self, stat: str, **tags: str) -> float:
        return sum(
            v
            for k, s, v, t in self.calls
            if k == "counter" and s == stat and all(t.get(a) == b for a, b in tags.items())
        )

    def values(self, stat: str) -> list[Any]:
        return [v for _, s, v, _ in self.calls if s == stat]


def test_loader_metrics_names_tags_and_the_lag():
    rec = Recorder()
    lm = m.LoaderMetrics("Zaak", {"dag_id": "tk_ingest", "task_id": "load_zaken"}, stats=rec, legacy=True)
    # 10:00+02:00 is 08:00Z: the newest is the 09:30Z row, which a comparison of the strings would miss
    lm.processed(["2024-06-01T10:00:00+02:00", "2024-06-01T09:30:00.1234567Z", None])
    lm.skipped(0)  # nothing to count, nothing sent
    lm.batch_written(0.25)
    now = datetime(2024, 6, 1, 10, 30, 0, 123456, tzinfo=UTC)
    lm.finished(now=now)

    tags = {"dag_id": "tk_ingest", "task_id": "load_zaken", "entity": "Zaak"}
    assert ("counter", "tk.loader.items.processed", 3, tags) in rec.calls
    assert ("counter", "tk.loader.items.processed.Zaak", 3, tags) in rec.calls
    assert ("timer", "tk.loader.batch.write", timedelta(seconds=0.25), tags) in rec.calls
    for counter in ("skipped", "failed", "retried"):  # every series exists: 0, not "no data"
        assert rec.values(f"tk.loader.items.{counter}") == [0]
        assert rec.values(f"tk.loader.items.{counter}.Zaak") == [0]
    assert rec.values("tk.loader.lag") == [3600.0]  # 10:30:00.123456 - 09:30:00.123456
    assert {s for _, s, _, _ in rec.calls} == {x.name for x in LOADER_METRICS} | {
        m.legacy_name(x, "Zaak") for x in LOADER_METRICS
    }

    only_tagged = Recorder()  # [metrics] legacy_names_on = False: the tagged names only
    lm = m.LoaderMetrics("Zaak", stats=only_tagged, legacy=False)
    lm.processed(["2024-06-01T10:00:00Z"])
    lm.batch_written(0.1)
    lm.finished()
    assert {s for _, s, _, _ in only_tagged.calls} == {x.name for x in LOADER_METRICS}
    assert all(t == {"entity": "Zaak"} for *_, t in only_tagged.calls)


def test_api_metrics_take_the_entity_set_from_the_url():
    rec = Recorder()
    api = m.ApiMetrics(stats=rec, legacy=True)
    root = "http://127.0.0.1:1/OData/v4/2.0"
    api.request(f"{root}/Zaak?$filter=ApiGewijzigdOp%20ge%202024-01-01T00:00:00Z")
    api.request(f"{root}/Zaak?$skiptoken=Id-0f0e")
    api.request(f"{root}/Document(0f0e-11)?$select=Id")
    api.request(f"{root}/$metadata")
    api.retry(f"{root}/Zaak?$top=0&$count=true", 1.5)
    assert rec.total("tk.api.requests") == 4
    assert rec.total("tk.api.requests.Zaak") == 2
    assert rec.total("tk.api.requests", entity="Document") == 1
    assert rec.total("tk.api.requests.metadata") == 1
    assert rec.total("tk.api.retries.Zaak") == 1
    assert rec.values("tk.api.backoff") == [timedelta(seconds=1.5)]
    assert m.legacy_name(m.API_REQUESTS, "a.b c") == "tk.api.requests.a_b_c"  # a StatsD name stays whole


# -- through Airflow's own Stats facade --------------------------------------------------------------
@pytest.fixture
def airflow_stats() -> Iterator[Any]:
    """Airflow's Stats (the Task SDK's, which task code sees), initialised as Airflow's processes do;
    afterwards back to Airflow's no-op logger."""
    from airflow.sdk._shared.observability.metrics.base_stats_logger import NoStatsLogger
    from airflow.sdk.observability import stats

    assert m.airflow_stats() is stats  # the module the load path sends to
    yield stats
    stats.initialize(factory=NoStatsLogger, export_legacy_names=True)


def _client(url: str, sleeps: list[float], retries: int) -> Any:
    from include.loaders.api import TKClient
    from include.loaders.settings import ApiSettings

    settings = ApiSettings(base_url=url, max_retries=retries, backoff_base=0.01, read_timeout=30.0)
    return TKClient(settings, sleep=sleeps.append)


def _seed_failing_first(rate: float) -> int:
    """A fault seed whose first draw is an error: the first data request fails, so one retry at least."""
    return next(s for s in range(1000) if random.Random(s).random() < rate)


def test_a_load_through_airflows_stats_counts_items_requests_and_retries(airflow_stats, neo4j_empty):
    from include.loaders.load import load_entity

    rec = Recorder()
    airflow_stats.initialize(factory=lambda: rec, export_legacy_names=True)
    ds = Dataset.generate(120, seed=5, sets=("Zaak",))
    rate = 0.3
    faults = FaultConfig(seed=_seed_failing_first(rate), error_rate=rate)
    sleeps: list[float] = []
    with replay(ds, faults) as server, _client(server.url, sleeps, retries=8) as client:
        result = load_entity("Zaak", client=client, driver=neo4j_empty, batch_size=25, sleep=lambda s: None)
        served = server.stats()
    rows = len(ds.rows["Zaak"])
    assert result.processed == rows and result.failed == 0
    assert rec.total("tk.loader.items.processed", entity="Zaak") == rows
    assert rec.total("tk.loader.items.processed.Zaak") == rows
    assert rec.total("tk.loader.items.failed") == 0
    assert len(rec.values("tk.loader.batch.write")) >= rows // 25
    responses = sum(v for k, v in served.items() if k.startswith("http_"))
    assert served["http_500"] >= 1
    assert rec.total("tk.api.requests") == responses
    assert rec.total("tk.api.retries") == served["http_500"] == len(sleeps)
    assert rec.values("tk.api.backoff") == [timedelta(seconds=s) for s in sleeps]
    newest = max(datetime.fromisoformat(r["ApiGewijzigdOp"]) for r in ds.rows["Zaak"].values())
    (lag,) = rec.values("tk.loader.lag")
    assert abs(lag - (datetime.now(UTC) - newest).total_seconds()) < 60


def test_failures_retries_and_skips_are_counted_as_the_load_meets_them(airflow_stats, neo4j_empty, tmp_path):
    from tk_checkpoint import CheckpointManager, LoaderCheckpoint

    from include.loaders.load import DEFAULT_MAX_RETRIES, load_entity

    rec = Recorder()
    airflow_stats.initialize(factory=lambda: rec, export_legacy_names=True)
    ds = Dataset.generate(60, seed=13, sets=("Zaak",))
    live = ds.live_ids("Zaak")
    refused, bad_date, no_id = live[3], live[17], live[30]
    ds.rows["Zaak"][refused]["Titel"] = {"nested": "a map Neo4j refuses"}  # fails in Neo4j: retried
    ds.rows["Zaak"][bad_date]["GestartOp"] = "2025-13-45T00:00:00+01:00"  # fails in preparation
    ds.touch()
    manager = CheckpointManager(str(tmp_path))
    manager.start_new_run(run_id="metrics")
    sleeps: list[float] = []
    with replay(ds, FaultConfig(without_id={no_id})) as server, _client(server.url, sleeps, 1) as client:
        with LoaderCheckpoint(manager, "load_zaken") as cp:
            first = load_entity(
                "Zaak", client=client, driver=neo4j_empty, checkpoint=cp, batch_size=8, retry_backoff=0
            )
        assert first.failed == 3
        assert rec.total("tk.loader.items.processed.Zaak") == first.processed == len(ds.rows["Zaak"]) - 3
        # each failure counts: two in preparation, the refused item's first write and each retry round's
        assert rec.total("tk.loader.items.failed.Zaak") == 2 + 1 + DEFAULT_MAX_RETRIES
        assert rec.total("tk.loader.items.retried.Zaak") == first.retried == DEFAULT_MAX_RETRIES
        assert rec.total("tk.loader.items.skipped.Zaak") == 0

        rec.calls.clear()  # the next try of the task, the data fixed at the source
        ds.rows["Zaak"][refused]["Titel"] = "fixed"
        ds.touch()
        manager.start_new_run(run_id="metrics")
        with LoaderCheckpoint(manager, "load_zaken") as cp:
            again = load_entity("Zaak", client=client, driver=neo4j_empty, checkpoint=cp, retry_backoff=0)
    assert rec.total("tk.loader.items.skipped.Zaak") == again.skipped == first.processed
    assert rec.total("tk.loader.items.processed.Zaak") == again.processed == 1


class Broken:
    """A backend whose every call fails, as a misconfigured client might."""

    def __getattr__(self, name: str) -> Any:
        def fail(*args: Any, **kwargs: Any) -> None:
            raise OSError(f"metrics backend down ({name})")

        return fail


def _cannot_be_made() -> Any:
    raise RuntimeError("cannot make the StatsD client")


@pytest.mark.parametrize("factory", [Broken, _cannot_be_made], ids=["raising", "unmakeable"])
def test_a_broken_metrics_backend_is_logged_once_and_the_load_goes_on(
    airflow_stats, neo4j_empty, caplog, factory
):
    from include.loaders.load import load_entity

    airflow_stats.initialize(factory=factory, export_legacy_names=True)
    ds = Dataset.generate(80, seed=6, sets=("Zaak",))
    caplog.set_level(logging.WARNING, logger="include.loaders.metrics")
    sleeps: list[float] = []
    with replay(ds) as server, _client(server.url, sleeps, retries=1) as client:
        result = load_entity("Zaak", client=client, driver=neo4j_empty, batch_size=10)
    assert result.processed == len(ds.rows["Zaak"]) and result.failed == 0
    count = neo4j_empty.execute_query("MATCH (z:Zaak) RETURN count(z) AS c").records[0]["c"]
    assert count == len(ds.live_ids("Zaak"))
    warnings = [r.getMessage() for r in caplog.records if "Metrics backend failed" in r.getMessage()]
    # once for the loader, once for the API client, however many numbers were dropped
    assert len(warnings) == 2, warnings
    assert any("this loader" in w for w in warnings) and any("this API client" in w for w in warnings)


# -- OpenTelemetry --------------------------------------------------------------------------------------
_OTEL_CHILD = """
import sys
from airflow.sdk.configuration import conf
from airflow.sdk.observability import stats
from airflow.sdk.observability.metrics import stats_utils

# what Airflow's task runner does first: Stats from [metrics]
stats.initialize(factory=stats_utils.get_stats_factory(),
                 export_legacy_names=conf.getboolean("metrics", "legacy_names_on"))
from include.loaders.metrics import ApiMetrics, LoaderMetrics

lm = LoaderMetrics.for_task("Zaak")
lm.processed(["2024-06-01T10:00:00Z"] * int(sys.argv[1]))
lm.batch_written(0.2)
lm.finished()
api = ApiMetrics.for_task()
api.request("http://127.0.0.1:1/OData/v4/2.0/Zaak?$top=1")
api.retry("http://127.0.0.1:1/OData/v4/2.0/Zaak?$top=1", 0.5)
"""  # the exporter sends what it holds when the process exits


class OtlpReceiver:
    """An OTLP/HTTP metrics receiver on loopback: decodes every ``POST /v1/metrics``."""

    def __init__(self) -> None:
        import http.server

        self.requests: list[Any] = []
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                import gzip

                from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
                    ExportMetricsServiceRequest,
                )

                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                if self.path == "/v1/metrics":
                    receiver.requests.append(ExportMetricsServiceRequest.FromString(body))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> OtlpReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def points(self) -> dict[str, list[tuple[dict[str, str], float]]]:
        """``{metric name: [(attributes, value), …]}``: a sum's value, a histogram's sum (plain or
        exponential), a gauge's value."""
        out: dict[str, list[tuple[dict[str, str], float]]] = defaultdict(list)
        for req in self.requests:
            for metric in (x for r in req.resource_metrics for s in r.scope_metrics for x in s.metrics):
                kind = metric.WhichOneof("data")
                for p in getattr(metric, kind).data_points:
                    attrs = {a.key: a.value.string_value for a in p.attributes}
                    value = p.sum if "histogram" in kind else getattr(p, p.WhichOneof("value"))
                    out[metric.name].append((attrs, value))
        return out


def test_opentelemetry_gets_the_metrics_with_their_tags(tmp_path):
    import os
    import subprocess
    import sys

    n = 7
    with OtlpReceiver() as receiver:
        env = dict(
            os.environ,
            AIRFLOW__METRICS__OTEL_ON="True",
            AIRFLOW__METRICS__OTEL_PREFIX="tkotel",
            OTEL_EXPORTER_OTLP_ENDPOINT=receiver.url,
            PYTHONPATH=str(ROOT),
            PYTHONWARNINGS="ignore",
        )
        proc = subprocess.run(
            [sys.executable, "-c", _OTEL_CHILD, str(n)], env=env, capture_output=True, text=True, timeout=120
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
    points = receiver.points()
    for metric in m.METRICS:  # OpenTelemetry keeps the tags, as attributes
        assert f"tkotel.{metric.name}" in points, (metric.name, sorted(points))
        assert all(attrs == {"entity": "Zaak"} for attrs, _ in points[f"tkotel.{metric.name}"])
    assert points["tkotel.tk.loader.items.processed"][-1][1] == n  # cumulative: the last export holds all
    assert points["tkotel.tk.loader.items.failed"][-1][1] == 0
    assert points["tkotel.tk.api.backoff"][-1][1] == pytest.approx(500.0)  # ms, as Airflow's timers


# -- acceptance: airflow dags test with Airflow's StatsD client -------------------------------------------
class StatsdListener:
    """A UDP socket on loopback (a port from the OS) collecting StatsD datagrams in a thread."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.lines: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(65535)
            except TimeoutError:
                continue
            self.lines.extend(data.decode().splitlines())

    def __enter__(self) -> StatsdListener:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        time.sleep(0.5)  # the last datagrams of the run
        self._stop.set()
        self._thread.join(timeout=5)
        self.sock.close()

    def parsed(self, prefix: str) -> dict[str, list[tuple[float, str, dict[str, str]]]]:
        """``{name without prefix: [(value, type, tags), …]}`` of the lines under ``prefix``; tags are
        those an InfluxDB-style line carries after the name (``name,k=v,…:1|c``), else none."""
        out: dict[str, list[tuple[float, str, dict[str, str]]]] = defaultdict(list)
        for line in self.lines:
            head, _, rest = line.partition(":")
            name, *pairs = head.split(",")
            value, _, kind = rest.partition("|")
            if name.startswith(prefix + "."):
                tags = dict(p.split("=", 1) for p in pairs)
                out[name.removeprefix(prefix + ".")].append((float(value), kind.split("|")[0], tags))
        return out


@pytest.mark.parametrize("influxdb", [False, True], ids=["statsd", "statsd-influxdb-tags"])
def test_dags_test_sends_the_documented_metrics_to_statsd(airflow_db, neo4j_empty, tmp_path, influxdb):
    """Plain StatsD (the tags dropped; the names that carry the entity), and with ``[metrics]
    statsd_influxdb_enabled``, where Airflow appends the tags to each line: Airflow's own task tags."""
    from tk_checkpoint import CheckpointManager

    ds = Dataset.generate(150, seed=12)
    rate = 0.25
    faults = FaultConfig(seed=_seed_failing_first(rate), error_rate=rate)  # a few HTTP 500s: retries
    prefix = "tkmetricstest"  # [metrics] statsd_prefix: Airflow's setting decides the names' prefix
    with StatsdListener() as listener, replay(ds, faults) as server:
        env = airflow_env(
            server.url,
            tmp_path,
            TK_API_MAX_RETRIES="8",
            AIRFLOW__METRICS__STATSD_ON="True",
            AIRFLOW__METRICS__STATSD_HOST="127.0.0.1",
            AIRFLOW__METRICS__STATSD_PORT=str(listener.port),
            AIRFLOW__METRICS__STATSD_PREFIX=prefix,
            AIRFLOW__METRICS__STATSD_INFLUXDB_ENABLED=str(influxdb),
        )
        t0 = datetime.now(UTC)
        proc = dags_test({"start_date": first_day(ds), "window_days": 3660}, env, timeout=300)
        t1 = datetime.now(UTC)
        served = server.stats()
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    got = listener.parsed(prefix)
    assert got.get("ti.start"), "Airflow's own metrics did not arrive: the listener is wrong"

    kinds = {"counter": "c", "timer": "ms", "gauge": "g"}
    for metric in m.METRICS:  # every documented name arrives, with its type
        assert {k for _, k, _ in got.get(metric.name, [])} == {kinds[metric.kind]}, metric.name

    def total(name: str) -> float:
        return sum(v for v, _, _ in got.get(name, []))

    run = CheckpointManager(str(tmp_path)).list_runs(details=True)[0]
    for name, entity in ENTITIES.items():
        nodes = neo4j_empty.execute_query(f"MATCH (n:`{entity.label}`) RETURN count(n) AS c").records[0]["c"]
        rows = ds.rows[entity.entity_set]
        tombstones = len(rows) - len(ds.live_ids(entity.entity_set))
        processed = total(m.legacy_name(m.ITEMS_PROCESSED, name))
        assert processed == nodes + tombstones, name
        assert processed == run["loaders"][f"{entity.loader}.0"]["processed_count"], name
        for metric in (m.ITEMS_FAILED, m.ITEMS_SKIPPED, m.ITEMS_RETRIED):
            assert m.legacy_name(metric, name) in got and total(m.legacy_name(metric, name)) == 0
        assert got[m.legacy_name(m.BATCH_WRITE, name)], name
        assert total(m.legacy_name(m.API_REQUESTS, entity.entity_set)) > 0, name
        newest = max(datetime.fromisoformat(r["ApiGewijzigdOp"]) for r in rows.values())
        (lag,) = (v for v, _, _ in got[m.legacy_name(m.LAG, name)])
        assert (t0 - newest).total_seconds() - 1 <= lag <= (t1 - newest).total_seconds() + 1, name
        if influxdb:  # Airflow's task tags (ti.stats_tags) and the entity, on every loader line
            tags = {"dag_id": "tk_ingest", "task_id": entity.loader, "entity": name}
            for metric in LOADER_METRICS:
                assert all(t == tags for *_, t in got[metric.name] if t["entity"] == name), metric.name
            api = [t for *_, t in got[m.API_REQUESTS.name] if t["entity"] == entity.entity_set]
            assert entity.loader in {t["task_id"] for t in api}, name  # its client, in its task

    if influxdb:
        lines = [t for name, values in got.items() if name.startswith("tk.") for *_, t in values]
        assert lines and all(t["dag_id"] == "tk_ingest" and "task_id" in t for t in lines)
        # $metadata: once by setup (the check and the model report), once by each loader task instance
        # (its served model); faults hit data requests only, so no retry adds to these
        metadata = Counter(t["task_id"] for *_, t in got[m.API_REQUESTS.name] if t["entity"] == "metadata")
        assert metadata == Counter({"setup": 1, **{e.loader: 1 for e in ENTITIES.values()}})
    else:
        assert all("," not in name for name in got)  # plain StatsD: no tags on the wire
    # the tagged name carries the sum over the entities (StatsD cannot tell them apart by tags)
    entity_names = {e: m.legacy_name(m.ITEMS_PROCESSED, e) for e in ENTITIES}
    assert total(m.ITEMS_PROCESSED.name) == sum(total(n) for n in entity_names.values())
    assert total(m.ITEMS_FAILED.name) == 0
    responses = sum(v for k, v in served.items() if k.startswith("http_"))
    assert total(m.API_REQUESTS.name) == responses > 0
    assert total(m.API_RETRIES.name) == served["http_500"] == len(got[m.API_BACKOFF.name]) >= 1
