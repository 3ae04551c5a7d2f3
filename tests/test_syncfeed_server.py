"""The offline SyncFeed (include/tk_replay/syncfeed_server.py) over real HTTP, read by the real client.

What a mirror relies on: every row of the dataset once per change, with the refs the OData side links;
one global skiptoken counter; history that begins with tombstones; ``mutate()`` appending exactly its
changes and re-emissions; the live feed's quirks; XML that validates against the TK XSDs; the faults.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import requests
from lxml import etree

from include.loaders.api import ApiError
from include.loaders.entities import ENTITIES, TOMBSTONE_FLAG
from include.loaders.settings import ApiSettings
from include.loaders.syncfeed import SyncFeedClient, parse_feed_page
from include.tk_replay.dataset import Dataset
from include.tk_replay.faults import FaultConfig
from include.tk_replay.server import ReplayServer
from include.tk_replay.syncfeed_server import (
    PAGE_SIZE,
    PREFIXED,
    change_log,
    entity_xml,
)

ROOT = Path(__file__).resolve().parents[1]
XSD_MAIN = ROOT.parent / "shared" / "tk-api" / "syncfeed-xsd" / "tkData-v1-0.xsd"
FAST = dict(connect_timeout=2.0, read_timeout=5.0, backoff_base=0.001, backoff_max=0.002, max_retries=3)


@pytest.fixture(scope="module")
def schema() -> etree.XMLSchema:
    if not XSD_MAIN.exists():
        pytest.fail(f"The SyncFeed XSDs are not at {XSD_MAIN.parent}: check out ../shared beside the repo.")
    return etree.XMLSchema(etree.parse(str(XSD_MAIN)))


@pytest.fixture(scope="module")
def dataset() -> Dataset:
    return Dataset.generate(30, seed=11)


def client_for(server: ReplayServer) -> SyncFeedClient:
    return SyncFeedClient(ApiSettings(base_url=server.url, **FAST), sleep=lambda s: None)


def expected_refs(ds: Dataset, name: str, rid: str) -> dict[str, set[str]]:
    """The targets the OData side links from row ``rid`` of ``name``, by the feed's ref name."""
    entity = ds.entities[name]
    out: dict[str, set[str]] = {}
    for rel in entity.relationships:
        pairs = ds.relationship_edges(name, rel)
        targets = {b for a, b in pairs if a == rid}
        if targets:
            out[rel.feed_name] = targets
    return out


def test_every_type_validates_against_the_xsds(schema):
    """Each row of each of the 35 types (live and tombstone, several seeds) is valid TK XML. The one
    deliberate deviation, Persoon tombstones' ``True`` (the live feed's), is checked as such."""
    checked = Counter()
    for seed in (1, 2):
        ds = Dataset.generate(25, seed=seed)
        for name, entity in ENTITIES.items():
            for row in ds.rows[name].values():
                xml = entity_xml(ds, entity, row)
                if name == "Persoon" and row.get(TOMBSTONE_FLAG):
                    assert b'verwijderd="True"' in xml
                    xml = xml.replace(b'verwijderd="True"', b'verwijderd="true"')
                doc = etree.fromstring(xml)
                assert schema.validate(doc), (
                    f"{name} {row['Id']}: {schema.error_log.last_error}\n{xml[:400]!r}"
                )
                assert (doc.prefix == "ns1") == (name in PREFIXED)
                checked[name] += 1
    assert set(checked) == set(ENTITIES)


def test_the_client_reads_every_row_once_with_its_refs(dataset):
    """Per category: every row of the dataset exactly once, tombstones as such, refs = OData's links."""
    with ReplayServer(dataset) as server, client_for(server) as client:
        for name in ENTITIES:
            entries = [e for page in client.iter_pages(name, 0) for e in page.entries]
            ids = [e.id for e in entries]
            assert Counter(ids) == Counter(list(dataset.rows[name])), name
            for e in entries:
                row = dataset.rows[name][e.id]
                assert e.deleted == bool(row.get(TOMBSTONE_FLAG))
                assert e.category == name
                if not e.deleted:
                    refs = {k: set(v) for k, v in e.refs.items()}
                    assert refs == expected_refs(dataset, name, e.id), (name, e.id)


def test_one_global_counter_tombstones_first_and_full_pages(dataset):
    """Skiptokens are one counter over all types; the history begins with tombstones; pages hold 250."""
    log = change_log(dataset)
    assert log.head == sum(len(r) for r in dataset.rows.values() if r)
    first = [dataset.rows[s][i] for s, i in log.entries[:50]]
    assert all(r.get(TOMBSTONE_FLAG) for r in first)
    with ReplayServer(dataset) as server, client_for(server) as client:
        pages = list(client.iter_pages("Stemming", 0))
        tokens = [e.skiptoken for p in pages for e in p.entries]
        assert tokens == sorted(tokens) and len(set(tokens)) == len(tokens)
        # the global stream (no category) holds every entry, PAGE_SIZE a page
        body = requests.get(f"{server.url}/SyncFeed/2.0/Feed", timeout=10).content
        page = parse_feed_page(body)
        assert len(page.entries) == min(PAGE_SIZE, log.head)
        assert len({e.category for e in page.entries}) > 1
        assert [e.skiptoken for e in page.entries] == list(range(1, len(page.entries) + 1))
        assert pages[-1].caught_up and pages[-1].entries == () and pages[-1].resume_skiptoken == log.head


def test_quirks_on_the_wire(dataset):
    """Lower-case category in links, skiptoken first for some, parameters in any order and case, an
    unknown category as an empty caught-up feed."""
    with ReplayServer(dataset) as server:
        base = f"{server.url}/SyncFeed/2.0/Feed"
        a = requests.get(f"{base}?category=Stemming&skiptoken=0", timeout=10)
        b = requests.get(f"{base}?skiptoken=0&CATEGORY=stemming", timeout=10)
        assert a.status_code == b.status_code == 200
        assert parse_feed_page(a.content).entries == parse_feed_page(b.content).entries
        assert b"skiptoken=" in a.content and b"category=stemming" in a.content
        assert b"?skiptoken=" in a.content  # Stemming's links put skiptoken first
        unknown = parse_feed_page(requests.get(f"{base}?category=Stemmingen", timeout=10).content)
        assert unknown.entries == () and unknown.caught_up
        tz = [
            e.updated_text
            for e in parse_feed_page(requests.get(f"{base}?category=Persoon", timeout=10).content).entries
        ]
        assert tz and all(not t.endswith("Z") and "+" not in t for t in tz)  # naive for Persoon


def test_entiteiten_and_resources(dataset):
    with ReplayServer(dataset) as server, client_for(server) as client:
        doc_id = dataset.live_ids("Document")[0]
        entry = client.get_entity(doc_id)
        assert entry is not None and entry.id == doc_id and not entry.deleted
        dead = next(i for i, r in dataset.rows["Zaak"].items() if r.get(TOMBSTONE_FLAG))
        assert client.get_entity(dead).deleted
        assert client.get_entity("00000000-0000-4000-8000-000000000000") is None
        assert client.resource(doc_id).startswith(b"%PDF")
        r = requests.get(f"{server.url}/SyncFeed/2.0/Resources/{dataset.live_ids('Zaak')[0]}", timeout=10)
        assert r.status_code == 404  # a Zaak has no file


def test_mutate_then_reading_from_the_cursor_gives_exactly_the_changes():
    ds = Dataset.generate(30, seed=12)
    with ReplayServer(ds) as server, client_for(server) as client:
        heads = {}
        for name in ("Zaak", "Document", "Stemming"):
            heads[name] = list(client.iter_pages(name, 0))[-1].position
        report = ds.mutate(seed=3)
        log = change_log(ds)
        for name in ("Zaak", "Document", "Stemming"):
            new = [e for p in client.iter_pages(name, heads[name]) for e in p.entries]
            reemitted = {i for s, i in log.reemitted if s == name}
            assert {e.id for e in new} == set(report.bumped.get(name, ())) | reemitted
            assert len(new) == len({e.id for e in new})  # each change once, at its latest position
            for e in new:
                assert e.deleted == (e.id in report.tombstoned.get(name, ()))
            assert reemitted and not reemitted & set(report.bumped.get(name, ()))


def test_fail_after_for_a_category_and_random_faults_are_retried(dataset):
    n = 10
    faults = FaultConfig(fail_after_entity="Stemming", fail_after_items=n)
    with ReplayServer(dataset, faults=faults) as server, client_for(server) as client:
        got = []
        with pytest.raises(ApiError):
            for e in client.iter_entries("Stemming", 0):
                got.append(e)
        assert got == []  # the first page reaches beyond entry n: refused whole, retries included
        assert server.fault_status()["injected"]["fail_after"] == FAST["max_retries"] + 1
        # entries are counted from the start of the category's feed: a later cursor fails as well,
        # until the fault is removed
        tokens = change_log(dataset).by_category["Stemming"]
        with pytest.raises(ApiError):
            next(client.iter_entries("Stemming", tokens[n]))
        server.set_faults(FaultConfig())
        rest = [e.id for e in client.iter_entries("Stemming", tokens[n])]
        assert len(rest) == len(tokens) - n - 1
        server.set_faults(
            FaultConfig.mixed(0.3, seed=4, kinds=("error", "throttle", "truncate"), retry_after=0)
        )
        ids = [e.id for e in client.iter_entries("Zaak", 0)]
        assert Counter(ids) == Counter(list(dataset.rows["Zaak"]))
