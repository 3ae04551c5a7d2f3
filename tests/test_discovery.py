"""Issue 10, deliverable 1: ``TK_API_PROFILE=auto`` finds the API version by its ``$metadata``.

Against the offline TK API over real HTTP, serving only v5, only v4/2.0, both or neither: ``auto`` picks
v5 where it answers and v4/2.0 otherwise, and loading the entities into the real Neo4j gives the same
graph whichever answered, also from a v5 that pages without ``@odata.nextLink`` (keyset pages, no
``$skip``). Neither answering is one clear error naming both URLs and why each did not answer; a closed
endpoint (404) is not retried, a failing one (5xx, refused) only a bounded number of times.
"""

from __future__ import annotations

import logging
import re
import signal
import subprocess
import sys
import threading
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import quote

import pytest
import requests

from include.loaders import pipeline
from include.loaders.api import TKClient
from include.loaders.discovery import (
    DISCOVERY_BACKOFF_MAX,
    DISCOVERY_MAX_RETRIES,
    ApiVersionNotFound,
    discover,
)
from include.loaders.entities import CORE_ENTITIES
from include.loaders.settings import ApiSettings
from include.tk_replay.dataset import Dataset
from include.tk_replay.faults import FaultConfig
from include.tk_replay.server import ReplayServer
from tests.conftest import ROOT
from tests.loader_fixtures import dump_graph, load_all, wipe

NOW = datetime(2026, 12, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def dataset() -> Dataset:
    return Dataset.generate(150, seed=23)


def settings_for(url: str, **kw) -> ApiSettings:
    return ApiSettings(base_url=url, **{"max_retries": 1, "backoff_base": 0.01, "read_timeout": 30.0, **kw})


def test_auto_picks_v5_where_it_answers_else_v4_and_the_graph_is_the_same(dataset, neo4j_empty, capture_logs):
    logs = capture_logs("include.loaders.discovery")
    cases = [  # (versions served, versions paging without nextLink, the version auto must pick)
        (None, set(), "v5"),
        (["v5"], set(), "v5"),
        (["v4/2.0"], set(), "v4/2.0"),
        (["v5"], {"v5"}, "v5"),  # the v5 to fear: no nextLink, keyset pages
        (None, {"v5", "v4/2.0"}, "v5"),
    ]
    dumps, chosen = [], []
    for versions, unlinked, want in cases:
        wipe(neo4j_empty)
        with ReplayServer(dataset, versions=versions, next_link=unlinked or True) as server:
            with TKClient(settings_for(server.url)) as client:  # the default profile: auto
                results = load_all(client, neo4j_empty, CORE_ENTITIES)
                chosen.append(client.profile.name)
                assert client.root == server.service_root(want)
            stats = server.stats()
        assert all(r.failed == 0 and r.processed > 0 for r in results.values()), results
        assert stats.get("skip_requests", 0) == 0
        if unlinked:
            assert stats.get("skiptoken_requests", 0) == 0  # every page after the first was a keyset page
        dumps.append(dump_graph(neo4j_empty))
    assert chosen == [want for _, _, want in cases]
    assert dumps[0]["nodes"] and dumps[0]["rels"]
    assert all(d == dumps[0] for d in dumps[1:])  # the same graph whichever version answered
    v4_only = [m for m in logs.messages if "version v4/2.0 answered" in m]
    assert v4_only and "v5 did not answer" in v4_only[0] and "HTTP 404" in v4_only[0]


def test_neither_answering_is_one_clear_error_naming_both_urls_without_retrying_a_404():
    sleeps: list[float] = []
    with ReplayServer(Dataset.generate(5, seed=1, sets=("Zaak",)), versions=[]) as server:
        client = TKClient(settings_for(server.url, max_retries=8), sleep=sleeps.append)
        with pytest.raises(ApiVersionNotFound) as err:
            _ = client.root
        stats = server.stats()
    message = str(err.value)
    for path in ("/OData/v5/$metadata", "/OData/v4/2.0/$metadata"):
        assert f"{server.url}{path}: HTTP 404: No HTTP resource" in message
    assert "TK_API_PROFILE" in message and "TK_API_BASE_URL" in message  # what to do next
    assert [a.profile for a in err.value.attempts] == ["v5", "v4/2.0"]
    assert stats["http_404"] == 2 and sleeps == []  # a closed endpoint answers at once: not retried


def test_a_failing_or_refused_endpoint_is_retried_a_bounded_number_of_times():
    sleeps: list[float] = []
    faults = FaultConfig(error_rate=1.0, include_metadata=True)
    with ReplayServer(Dataset.generate(5, seed=1, sets=("Zaak",)), faults=faults) as server:
        slow = settings_for(server.url, max_retries=8, backoff_base=30.0, backoff_max=120.0)
        with pytest.raises(ApiVersionNotFound) as failing:
            discover(slow, sleep=sleeps.append)
        stats = server.stats()
    tries = DISCOVERY_MAX_RETRIES + 1
    assert stats["http_500"] == 2 * tries
    assert len(sleeps) == 2 * DISCOVERY_MAX_RETRIES and max(sleeps) <= DISCOVERY_BACKOFF_MAX
    assert str(failing.value).count(f"HTTP 500: An error has occurred., after {tries} attempt(s)") == 2

    closed = settings_for(server.url, max_retries=0)  # the server has stopped: nothing listens there
    with pytest.raises(ApiVersionNotFound) as refused:
        discover(closed)
    assert str(refused.value).count("connection refused") == 2
    assert f"{server.url}/OData/v5/$metadata" in str(refused.value)


class _NotOData(BaseHTTPRequestHandler):
    """A web server that answers every URL with an HTML page (a proxy's login page, a wrong host)."""

    def do_GET(self) -> None:
        body = b"<html><body>Welcome</body></html"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


def test_a_200_that_is_not_a_csdl_document_does_not_count_as_an_answer():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _NotOData)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        with pytest.raises(ApiVersionNotFound) as err:
            discover(settings_for(f"http://127.0.0.1:{httpd.server_address[1]}"))
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert [a.reason.startswith("not a CSDL document") for a in err.value.attempts] == [True, True]


def test_an_explicit_profile_or_a_version_path_skips_discovery(dataset):
    with ReplayServer(dataset, versions=["v4/2.0"]) as server:
        explicit = TKClient(settings_for(server.url, profile="v4/2.0"))
        by_path = TKClient(settings_for(server.service_root("v4/2.0") + "/"))
        assert explicit.profile.name == by_path.profile.name == "v4/2.0"
        assert explicit.root == by_path.root == server.service_root("v4/2.0")
        assert explicit.count("Zaak") == by_path.count("Zaak") == len(dataset.rows["Zaak"])
        assert explicit.discovery is None and by_path.discovery is None
        stats = server.stats()
    assert stats.get("http_404", 0) == 0  # nobody asked for the closed v5


def test_discovery_with_credentials_logs_none_of_them(capture_logs):
    logs = capture_logs("include.loaders", level=logging.DEBUG)
    user, password = "reader", "s3cr:t@pw"
    ds = Dataset.generate(5, seed=1, sets=("Zaak",))
    with ReplayServer(ds, versions=["v4/2.0"], basic_auth=(user, password)) as server:
        base = f"http://{user}:{quote(password, safe='')}@{server.host_port}"
        with TKClient(settings_for(base)) as client:
            assert client.profile.name == "v4/2.0" and client.count("Zaak") == 5
    with pytest.raises(ApiVersionNotFound) as err:  # stopped: refused, and the error names no secret
        discover(settings_for(base, max_retries=0))
    text = logs.text + str(err.value)
    assert "v4/2.0 answered" in logs.text
    assert password not in text and quote(password, safe="") not in text and f"{user}:" not in text


def test_setup_chooses_the_version_and_every_later_task_uses_it(dataset, neo4j_empty, monkeypatch, tmp_path):
    """``prepare_run`` (the DAG's setup) finds v4/2.0 where v5 is closed and hands it on in the window
    dicts; the plan tasks' sub-windows carry it; the loader uses it without asking again; an explicit
    TK_API_PROFILE still wins."""
    params = {
        "entities": ["Zaak"],
        "start_date": "2000-01-01",
        "end_date": "2100-01-01",
        "window_days": 36600,
    }
    run = dict(dag_id="tk_ingest", run_id="manual__discovery", checkpoint_base=str(tmp_path))
    with ReplayServer(dataset, versions=["v4/2.0"]) as server:
        monkeypatch.setenv("TK_API_BASE_URL", server.url)
        monkeypatch.setenv("TK_API_MAX_RETRIES", "1")
        monkeypatch.delenv("TK_API_PROFILE", raising=False)
        window = pipeline.prepare_run(
            **run, conf={}, params=params, data_interval_start=None, data_interval_end=None, now=NOW
        )
        after_setup = server.stats().get("http_404", 0)
        [sub] = pipeline.plan_entity("Zaak", window, params)
        summary = pipeline.run_loader(
            **run, entity="Zaak", window=sub, task_id="load_zaken", map_index=-1, try_number=1, params=params
        )
        stats = server.stats()
    assert window[pipeline.API_PROFILE_KEY] == sub[pipeline.API_PROFILE_KEY] == "v4/2.0"
    assert after_setup == 1  # setup asked v5 once (404), then took v4/2.0
    assert stats.get("http_404", 0) == after_setup  # the loader did not ask again
    assert summary["processed"] == len(dataset.rows["Zaak"]) and summary["failed"] == 0
    assert pipeline.api_settings("v4/2.0").profile == "v4/2.0"  # auto in the environment: setup's choice
    monkeypatch.setenv("TK_API_PROFILE", "v5")
    assert pipeline.api_settings("v4/2.0").profile == "v5"  # an explicit profile wins


def test_the_server_refuses_an_unknown_version_name_and_says_which_exist():
    for kwargs in ({"versions": ["v6"]}, {"next_link": ["v4"]}):
        with pytest.raises(ValueError, match=r"version\(s\) \['v[46]'\]: choose from v4/2\.0, v5"):
            ReplayServer(Dataset.generate(1, seed=1, sets=("Zaak",)), **kwargs)


def test_the_command_line_serves_only_the_versions_asked_and_pages_v5_without_links():
    """``python -m include.tk_replay --versions v5 --no-next-link v5``, a real process: v4/2.0 is a closed
    endpoint (404), v5 answers with full pages and no ``@odata.nextLink``; auto finds v5 and reads it all."""
    cmd = [sys.executable, "-m", "include.tk_replay", "--port", "0", "--generate", "250", "--sets", "Zaak"]
    cmd += ["--versions", "v5", "--no-next-link", "v5"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        line = proc.stdout.readline()
        assert "/OData/v5/ (no nextLink)" in line and "v4/2.0" not in line, line
        url = re.search(r"(http://[\d.]+:\d+)/OData/v5/", line).group(1)
        closed = requests.get(f"{url}/OData/v4/2.0/$metadata", timeout=10)
        page = requests.get(f"{url}/OData/v5/Zaak", timeout=10).json()
        with TKClient(settings_for(url)) as client:
            ids = [r["Id"] for p in client.iter_pages("Zaak", select=["Id"]) for r in p]
            assert client.profile.name == "v5"
        stats = requests.get(f"{url}/_stats", timeout=10).json()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    assert closed.status_code == 404 and "error" in closed.json()
    assert "@odata.nextLink" not in page and len(page["value"]) < 250
    assert len(ids) == len(set(ids)) == 250
    assert stats.get("skip_requests", 0) == 0 and stats.get("skiptoken_requests", 0) == 0


def test_an_auto_client_reads_metadata_once():
    """Discovery's ``$metadata`` answer is the client's: ``metadata()`` on a fresh ``auto`` client sends one
    ``$metadata`` request in all, not discovery's and then its own."""
    from include.tk_replay.server import ReplayServer
    from tests.loader_fixtures import make_client

    with ReplayServer() as server:
        with make_client(server.url) as client:
            before = server.stats().get("metadata_requests", 0)
            client.metadata()
            client.metadata()
            assert client.profile.name == "v5"
            assert server.stats().get("metadata_requests", 0) - before == 1
