"""Issue 12, deliverable 5: credentials in ``TK_API_BASE_URL`` stay out of the log and go with every page.

Before the fix ``https://user:pw@host`` was logged as it was, and the pages after the first (the server's
``@odata.nextLink``, built without credentials) were requested without them. The offline TK API here
demands HTTP basic auth on every request, as a protected mirror would.
"""

from __future__ import annotations

import json
import logging
from urllib.parse import quote

import pytest

from include.loaders.api import ApiError, TKClient, redact_url, split_credentials
from include.loaders.settings import ApiSettings
from include.tk_replay.dataset import Dataset
from include.tk_replay.faults import FaultConfig
from include.tk_replay.server import ReplayServer

USER, PASSWORD = "tk reader", "s3cr:t@pw/?"


@pytest.fixture
def api_log(capture_logs):
    return capture_logs("include.loaders", level=logging.DEBUG)


def _base(server: ReplayServer) -> str:
    return f"http://{quote(USER, safe='')}:{quote(PASSWORD, safe='')}@{server.host_port}"


def test_every_page_carries_the_credentials_and_no_log_line_shows_them(api_log):
    ds = Dataset.generate(700, seed=3, sets=("Zaak",))
    # faults make the client log retries (with URLs) and give up once (an error naming the URL)
    faults = FaultConfig(seed=4, error_rate=0.25, throttle_rate=0.1, retry_after=0)
    with ReplayServer(ds, faults=faults, basic_auth=(USER, PASSWORD)) as server:
        settings = ApiSettings(base_url=_base(server), max_retries=20, backoff_base=0.001, backoff_max=0.01)
        with TKClient(settings) as client:
            pages = list(client.iter_pages("Zaak"))
            assert client.get_entity("Zaak", ds.live_ids("Zaak")[0]) is not None
            server.set_faults(FaultConfig(error_rate=1.0))
            with pytest.raises(ApiError) as gave_up:
                client.count("Zaak")
        stats = server.stats()
        with TKClient(settings.with_overrides(base_url=f"http://{server.host_port}")) as anonymous:
            with pytest.raises(ApiError, match="HTTP 401"):  # the server really demands them
                anonymous.count("Zaak")

    assert len(pages) > 1 and sum(len(p) for p in pages) == len(ds.rows["Zaak"])
    assert stats.get("http_401", 0) == 0  # every page of the load, the nextLinks included, was let in
    assert stats["faults"].get("error", 0) > 0 and "attempt" in api_log.text  # retries were logged
    text = api_log.text + str(gave_up.value) + gave_up.value.url
    for secret in (PASSWORD, quote(PASSWORD, safe=""), USER, quote(USER, safe="")):
        assert secret not in text
    assert client.root == f"http://{server.host_port}/OData/v5"  # found by discovery, with the login


class _Recorder:
    """A session stand-in: records (url, auth) of each GET and answers from a list of bodies."""

    def __init__(self, bodies: list[dict]) -> None:
        self.bodies, self.calls, self.headers = list(bodies), [], {}

    def get(self, url, timeout=None, headers=None, auth=None):
        self.calls.append((url, auth))
        body = json.dumps(self.bodies.pop(0)).encode()
        return type("Response", (), {"status_code": 200, "content": body, "headers": {}})()

    def close(self) -> None:
        pass


def test_the_credentials_go_to_their_own_host_only():
    pages = [
        {"value": [{"Id": "a"}], "@odata.nextLink": "https://api.example:443/OData/v4/2.0/Zaak?$skiptoken=1"},
        {
            "value": [{"Id": "b"}],
            "@odata.nextLink": "https://elsewhere.example/OData/v4/2.0/Zaak?$skiptoken=2",
        },
        {"value": [{"Id": "c"}]},
    ]
    session = _Recorder(pages)
    settings = ApiSettings(base_url="https://u:pw@api.example", profile="v4/2.0")
    client = TKClient(settings, session=session)  # type: ignore[arg-type]
    rows = [r["Id"] for page in client.iter_pages("Zaak") for r in page]
    assert rows == ["a", "b", "c"]
    assert [auth for _, auth in session.calls] == [("u", "pw"), ("u", "pw"), None]
    assert all("pw" not in url for url, _ in session.calls)


def test_split_and_redact():
    assert split_credentials("https://a%20b:c%40d@h:8443/x") == ("https://h:8443/x", ("a b", "c@d"))
    assert split_credentials("https://h/x") == ("https://h/x", None)
    assert redact_url("https://a:b@h/x") == "https://***@h/x"
    assert redact_url("https://h/x") == "https://h/x"


def test_the_settings_show_no_credentials():
    assert "pw" not in repr(ApiSettings(base_url="https://u:pw@api.example"))
    with pytest.raises(ValueError, match=r"got 'ftp://\*\*\*@api.example'") as e:
        ApiSettings(base_url="ftp://u:pw@api.example")
    assert "pw" not in str(e.value)
