"""Issue 10, deliverable 3: paging that works on any version, against the offline TK API over real HTTP.

A server that pages with ``@odata.nextLink`` is followed link by link; one that pages without it (the v5
to fear: a full page and nothing saying more exist) is read by keyset pages, ``$orderby=ApiGewijzigdOp,Id``
with the next page filtered past the last row. Both must give every row of the window exactly once, also
when many rows share one ``ApiGewijzigdOp`` (spelt with different offsets, or differing in the 7th
fractional digit only), and neither may send ``$skip``.
"""

from __future__ import annotations

import itertools
import math
import random
from datetime import UTC, datetime

import pytest
import requests

from include.loaders.api import TKClient, keyset_filter
from include.loaders.api_profiles import PROFILES
from include.loaders.settings import ApiSettings
from include.tk_replay.dataset import Dataset, guid_sort_key, parse_ticks
from include.tk_replay.server import ReplayServer

SET = "Zaak"
START, END = datetime(2024, 6, 1, tzinfo=UTC), datetime(2024, 6, 3, tzinfo=UTC)
# Few distinct instants for many rows: ties everywhere. Two spellings of one instant (Z and +02:00), and
# two instants 100 ns apart, so that a client that rounded, or a server that compared strings, would fail.
SPELLINGS = [
    "2024-06-01T12:00:00.1234567Z",
    "2024-06-01T14:00:00.1234567+02:00",  # the same instant as the first
    "2024-06-01T12:00:00.1234568Z",  # 100 ns later
    "2024-06-01T23:59:59.9999999Z",
    "2024-06-02T00:00:00Z",
    "2024-05-31T23:59:59.9999999Z",  # before the window
    "2024-06-03T00:00:00Z",  # at the (exclusive) end of the window
]


@pytest.fixture(scope="module")
def tied() -> Dataset:
    """Zaak rows whose ``ApiGewijzigdOp`` takes only the values of SPELLINGS."""
    ds = Dataset.generate(1234, seed=17, sets=(SET,))
    pick = random.Random(5)
    for row in ds.rows[SET].values():
        row["ApiGewijzigdOp"] = pick.choice(SPELLINGS)
    ds.touch()
    return ds


def expected_ids(ds: Dataset) -> list[str]:
    """The window's Ids in the order ``$orderby=ApiGewijzigdOp,Id`` gives (instants, then Guid order)."""
    lo, hi = parse_ticks("2024-06-01T00:00:00Z"), parse_ticks("2024-06-03T00:00:00Z")
    rows = [r for r in ds.rows[SET].values() if lo <= parse_ticks(r["ApiGewijzigdOp"]) < hi]
    rows.sort(key=lambda r: (parse_ticks(r["ApiGewijzigdOp"]), guid_sort_key(r["Id"])))
    return [r["Id"] for r in rows]


def load(server: ReplayServer, profile: str) -> tuple[list[list[str]], dict]:
    settings = ApiSettings(base_url=server.url, profile=profile, max_retries=0, read_timeout=30.0)
    with TKClient(settings) as client:
        pages = [[r["Id"] for r in page] for page in client.iter_pages(SET, START, END, select=["Id"])]
    return pages, server.stats()


@pytest.mark.parametrize("profile", ["v4/2.0", "v5"])
def test_keyset_and_next_link_give_the_same_rows_in_order_with_ties(tied, profile):
    want = expected_ids(tied)
    with ReplayServer(tied, versions=[profile]) as linked:
        link_pages, link_stats = load(linked, profile)
    with ReplayServer(tied, versions=[profile], next_link=False) as unlinked:
        key_pages, key_stats = load(unlinked, profile)

    cap = PROFILES[profile].page_cap
    for pages in (link_pages, key_pages):
        got = [i for page in pages for i in page]
        assert got == want  # every row once, none twice, in the server's order
        assert all(len(p) <= cap for p in pages)  # the page cap honoured
    # the ties are real: some page ends inside a run of rows with one instant
    when = {i: parse_ticks(r["ApiGewijzigdOp"]) for i, r in tied.rows[SET].items()}
    assert any(when[a[-1]] == when[b[0]] for a, b in itertools.pairwise(key_pages) if a and b)
    assert len(key_pages) == math.floor(len(want) / cap) + 1  # full pages, then a short (or empty) one
    assert link_stats.get("skiptoken_requests", 0) == len(link_pages) - 1  # the links were followed
    for stats in (link_stats, key_stats):
        assert stats.get("skip_requests", 0) == 0  # never a $skip
    assert key_stats.get("skiptoken_requests", 0) == 0  # no link to follow: keyset pages only
    assert key_stats.get("http_400", 0) == 0  # v5's $top cap was respected


def test_a_client_that_only_follows_next_links_gets_one_page_from_the_server_to_fear(tied):
    """What the v5 without nextLink does to a naive client: the server's first page, and silence."""
    profile = PROFILES["v5"]
    with ReplayServer(tied, versions=["v5"], next_link=["v5"]) as server:
        body = requests.get(server.service_root("v5") + f"/{SET}", timeout=10).json()
        too_big = requests.get(server.service_root("v5") + f"/{SET}?$top={profile.max_top + 1}", timeout=10)
    assert len(body["value"]) == profile.page_size < len(tied.rows[SET])
    assert "@odata.nextLink" not in body
    assert too_big.status_code == 400 and "limit" in too_big.json()["error"]["message"]


class RecordingSession(requests.Session):
    """A real HTTP session that keeps the URL of every GET (what the client asked, in order)."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def get(self, url, **kwargs):  # type: ignore[override]
        self.urls.append(url)
        return super().get(url, **kwargs)


def test_the_first_request_has_no_top_and_no_skip_and_asks_for_the_keyset_order(tied):
    """The first request is one the real v4/2.0 serves with its nextLinks: no ``$top`` (with one it gives
    none, TK issue #70), no ``$skip``, ``$orderby=ApiGewijzigdOp,Id``; the keyset pages that follow carry
    ``$top`` = the cap and the filter past the last row (its value exactly as served), in the served
    version's own property names."""
    session = RecordingSession()
    with ReplayServer(tied, versions=["v5"], next_link=False) as server:
        settings = ApiSettings(base_url=server.url, profile="v5", max_retries=0)
        with TKClient(settings, session=session) as client:
            pages = list(client.iter_pages(SET, START, END, select=["Id", "Volgnummer"]))
    first, second = (requests.utils.unquote(u) for u in session.urls[:2])
    assert "$top" not in first and "$skip" not in first and "$orderby=ApiGewijzigdOp,Id" in first
    last = pages[0][-1]
    window = "ApiGewijzigdOp ge 2024-06-01T00:00:00Z and ApiGewijzigdOp lt 2024-06-03T00:00:00Z"
    past = keyset_filter(window, last["ApiGewijzigdOp"], last["Id"])
    assert second.split("$filter=")[1].split("&")[0] == past
    assert "$top=100" in second and "$orderby=ApiGewijzigdOp,Id" in second
    assert "$select=Id,Ondernummer,ApiGewijzigdOp" in second  # v5's name for Volgnummer, the keys added
    assert len(session.urls) == len(pages) and not any("$skip" in u for u in session.urls)


def test_keyset_filter_spelling():
    assert keyset_filter(None, "2024-06-01T12:00:00.1234567+02:00", "a") == (
        "ApiGewijzigdOp gt 2024-06-01T12:00:00.1234567+02:00 or "
        "(ApiGewijzigdOp eq 2024-06-01T12:00:00.1234567+02:00 and Id gt a)"
    )
    assert keyset_filter("X eq 1", None, "a") == (
        "(X eq 1) and ((ApiGewijzigdOp eq null and Id gt a) or ApiGewijzigdOp ne null)"
    )


def test_keyset_pages_without_a_window_pass_rows_without_a_timestamp():
    """Rows whose ``ApiGewijzigdOp`` is null sort first; the keyset page after one of them goes on
    through the other nulls and then every timestamped row."""
    ds = Dataset.generate(450, seed=3, sets=(SET,))
    for i, row in enumerate(ds.rows[SET].values()):
        if i % 3 == 0:
            row["ApiGewijzigdOp"] = None
    ds.touch()
    with ReplayServer(ds, versions=["v5"], next_link=False) as server:
        with TKClient(ApiSettings(base_url=server.url, max_retries=0)) as client:
            got = [r["Id"] for page in client.iter_pages(SET, select=["Id"]) for r in page]
        stats = server.stats()
    assert sorted(got) == sorted(ds.rows[SET]) and len(got) == len(set(got))
    assert stats.get("skip_requests", 0) == 0 and stats.get("http_400", 0) == 0
