"""The TK OData client against the replay server, over real HTTP on loopback, both profiles, every fault."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import pytest
import requests

from include.loaders.api import ApiError, EntityRequirement, MetadataMismatch, TKClient, format_datetime
from include.loaders.api_metadata import ODataSchema, check_requirements
from include.loaders.api_profiles import PROFILES
from include.loaders.settings import ApiSettings
from include.tk_replay import Dataset, FaultConfig, ReplayServer
from include.tk_replay.dataset import parse_ticks

FAST = dict(connect_timeout=2.0, read_timeout=0.4, backoff_base=0.005, backoff_max=0.02, max_retries=10)

REQUIREMENTS = {
    "Zaak": EntityRequirement(
        properties=["Id", "Nummer", "Volgnummer", "ApiGewijzigdOp", "Verwijderd"],
        navigations=["Document", "Agendapunt", "Activiteit"],
    ),
    "Document": EntityRequirement(
        properties=["Id", "DocumentNummer", "Volgnummer", "ApiGewijzigdOp"],
        navigations=["Zaak", "Activiteit", "Agendapunt"],
    ),
    "Agendapunt": EntityRequirement(properties=["Id", "Nummer", "Activiteit_Id"], navigations=["Activiteit"]),
    "Activiteit": EntityRequirement(properties=["Id", "Nummer"], navigations=["Agendapunt"]),
    "Vergadering": EntityRequirement(properties=["Id", "Soort", "Sluiting"], navigations=["Verslag"]),
    "Verslag": EntityRequirement(properties=["Id", "Vergadering_Id"], navigations=["Vergadering"]),
}


def client_for(server: ReplayServer, profile: str = "v4/2.0", **kw) -> TKClient:
    return TKClient(ApiSettings(base_url=server.url, profile=profile, **{**FAST, **kw}))


@pytest.fixture(scope="module")
def dataset() -> Dataset:
    return Dataset.generate(600, seed=7)


@pytest.fixture(scope="module")
def server(dataset):
    with ReplayServer(dataset) as s:
        yield s


# --- acceptance 1: 50,000 Zaak through 20% failing page requests -------------------------------------
def test_50k_zaak_with_20_percent_failing_pages_arrive_exactly_once(caplog):
    ds = Dataset.generate(50_000, seed=11, sets=("Zaak",))
    faults = FaultConfig.mixed(
        0.2, seed=5, kinds=("error", "throttle", "hang", "truncate"), retry_after=0, hang_seconds=3
    )
    caplog.set_level(logging.WARNING, logger="include.loaders.api")
    with ReplayServer(ds, faults=faults) as srv:
        client = client_for(srv)
        seen: list[str] = []
        pages = 0
        for page in client.iter_pages("Zaak"):
            pages += 1
            seen.extend(row["Id"] for row in page)
        injected = srv.stats()["faults"]
    assert len(seen) == 50_000
    assert set(seen) == set(ds.rows["Zaak"])  # none lost, none invented
    assert len(set(seen)) == len(seen)  # none twice
    assert pages == 200
    assert all(injected.get(k, 0) >= 3 for k in ("error", "throttle", "hang", "truncate")), injected
    retries = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(retries) == sum(injected.values())
    assert any("HTTP 500" in m for m in retries)
    assert any("HTTP 429" in m for m in retries)
    assert any("timeout" in m for m in retries)
    assert any("truncated" in m for m in retries)
    assert all("attempt" in m and "/OData/v4/2.0/Zaak" in m for m in retries)


@pytest.mark.parametrize("profile", ["v4/2.0", "v5"])
def test_every_fault_kind_is_survived_on_both_profiles(profile, caplog):
    ds = Dataset.generate(5000, seed=3, sets=("Zaak",))
    faults = FaultConfig.mixed(
        0.5, seed=9, kinds=("error", "throttle", "hang", "truncate", "reset"), retry_after=0, hang_seconds=2
    )
    with ReplayServer(ds, faults=faults) as srv:
        ids = [e["Id"] for e in client_for(srv, profile).iter_entities("Zaak")]
        injected = srv.stats()["faults"]
    assert sorted(ids) == sorted(ds.rows["Zaak"])
    assert set(injected) == {"error", "throttle", "hang", "truncate", "reset"}


def test_retry_after_is_honoured():
    sleeps: list[float] = []
    ds = Dataset.generate(800, seed=1, sets=("Zaak",))
    with ReplayServer(ds, faults=FaultConfig(seed=2, throttle_rate=0.5, retry_after=3)) as srv:
        client = TKClient(ApiSettings(base_url=srv.url, **FAST), sleep=sleeps.append)
        assert len(list(client.iter_entities("Zaak"))) == 800
        throttled = srv.stats()["faults"]["throttle"]
    assert throttled >= 1
    assert sum(1 for s in sleeps if s >= 3) == throttled  # each 429 waited its Retry-After


def test_retry_after_is_capped_and_other_waits_stay_within_the_backoff_cap():
    ds = Dataset.generate(800, seed=1, sets=("Zaak",))
    sleeps: list[float] = []
    faults = FaultConfig(seed=2, throttle_rate=0.5, retry_after=30)
    with ReplayServer(ds, faults=faults) as srv:
        settings = ApiSettings(base_url=srv.url, **{**FAST, "retry_after_max": 0.05})
        with TKClient(settings, sleep=sleeps.append) as client:
            assert len(list(client.iter_entities("Zaak"))) == 800
        throttled = srv.stats()["faults"]["throttle"]
    assert len(sleeps) == throttled >= 1
    assert all(s == 0.05 for s in sleeps)  # Retry-After: 30, capped at retry_after_max

    sleeps.clear()
    with ReplayServer(ds, faults=FaultConfig(seed=2, error_rate=0.5)) as srv:
        with TKClient(ApiSettings(base_url=srv.url, **FAST), sleep=sleeps.append) as client:
            assert len(list(client.iter_entities("Zaak"))) == 800
        errors = srv.stats()["faults"]["error"]
    assert len(sleeps) == errors >= 1
    assert all(0 <= s <= FAST["backoff_max"] for s in sleeps)  # no Retry-After: jittered backoff, capped


def test_gives_up_after_max_retries_naming_the_url():
    with ReplayServer(
        Dataset.generate(10, seed=1, sets=("Zaak",)), faults=FaultConfig(error_rate=1.0)
    ) as srv:
        client = client_for(srv, max_retries=2)
        with pytest.raises(ApiError) as err:
            list(client.iter_pages("Zaak"))
        assert srv.stats()["http_500"] == 3
    assert "3 time(s)" in str(err.value) and "/OData/v4/2.0/Zaak" in str(err.value)
    assert err.value.status == 500


def test_other_4xx_fails_at_once_with_url_and_server_message(server):
    client = client_for(server)
    before = server.stats().get("http_400", 0)
    with pytest.raises(ApiError) as err:
        list(client.iter_pages("Zaak", select=["Id", "Bestaatniet"]))
    assert err.value.status == 400
    assert "Could not find a property named 'Bestaatniet'" in err.value.server_message
    assert err.value.url in str(err.value) and "$select=Id,Bestaatniet" in err.value.url
    assert server.stats()["http_400"] == before + 1  # not retried


# --- acceptance 2: v5 and v4/2.0 give the same entities ----------------------------------------------
@pytest.mark.parametrize(
    "entity_set", ["Zaak", "Document", "Agendapunt", "Activiteit", "Vergadering", "Verslag"]
)
def test_v5_and_v4_yield_the_same_entities(server, entity_set):
    expand = {
        "Zaak": ["Document", "Agendapunt"],
        "Document": ["Zaak", "Activiteit"],
        "Agendapunt": ["Activiteit", "Zaak"],
        "Activiteit": ["Agendapunt"],
    }.get(entity_set)
    v4 = list(client_for(server).iter_entities(entity_set, expand=expand))
    v5_pages = list(client_for(server, "v5").iter_pages(entity_set, expand=expand))
    v5 = [e for page in v5_pages for e in page]
    assert len(v5_pages) == 6 and max(len(p) for p in v5_pages) == 100  # v5 pages hold 100
    if entity_set == "Activiteit":  # a v5-only property passes through under its own name
        assert all("VoortouwCommissieNaam" in e for e in v5)
        v5 = [{k: v for k, v in e.items() if k != "VoortouwCommissieNaam"} for e in v5]
    assert v5 == v4
    assert len(v4) == 600


def test_v5_mapping_applies_to_select_filter_and_rows(server, dataset):
    start = datetime(2024, 1, 1, tzinfo=UTC)
    sel = ["Id", "DocumentNummer", "Volgnummer", "ApiGewijzigdOp"]
    c5 = client_for(server, "v5")
    url = c5.build_url("Document", start, None, select=sel)
    assert "$select=Id,Nummer,Ondernummer,ApiGewijzigdOp" in url
    rows = list(c5.iter_entities("Document", start, select=sel))
    assert rows == list(client_for(server).iter_entities("Document", start, select=sel))
    live = [r for r in rows if r["DocumentNummer"]]
    assert live and all(set(r) == set(sel) for r in rows)
    raw = requests.get(server.service_root("v5") + "/Document?$top=1&$select=Nummer,Ondernummer").json()
    assert set(raw["value"][0]) == {"Nummer", "Ondernummer"}  # the server really speaks the v5 names


# --- acceptance 3: a metadata mismatch fails before loading, naming the property ------------------------
def test_renamed_foreign_key_fails_the_metadata_check_before_any_loading(dataset):
    with ReplayServer(dataset, drift={"Agendapunt": {"Activiteit_Id": "ActiviteitId"}}) as srv:
        client = client_for(srv)
        with pytest.raises(MetadataMismatch) as err:
            client.check_metadata({**REQUIREMENTS, "Besluitje": EntityRequirement()})
        assert srv.stats().get("pages", 0) == 0  # nothing was loaded
    msg = str(err.value)
    assert "Agendapunt: property 'Activiteit_Id' is missing (renamed to 'ActiviteitId'?)" in msg
    assert "entity set 'Besluitje' is missing" in msg  # every problem is listed, not just the first
    assert len(err.value.problems) == 2


@pytest.mark.parametrize("profile", ["v4/2.0", "v5"])
def test_metadata_check_passes_on_the_real_metadata(server, profile):
    schema = client_for(server, profile).check_metadata(REQUIREMENTS)
    assert "Zaak" in schema.entity_sets


def test_v4_profile_against_v5_metadata_names_the_renames(server):
    xml = requests.get(server.service_root("v5") + "/$metadata", timeout=5).text
    report = check_requirements(ODataSchema.from_xml(xml), REQUIREMENTS, PROFILES["v4/2.0"])
    assert "Document: property 'DocumentNummer' is missing (renamed to 'Nummer'?)" in report.problems
    assert "Zaak: property 'Volgnummer' is missing (renamed to 'Ondernummer'?)" in report.problems


# --- windows, tombstones, counts, expands -------------------------------------------------------------
def test_window_is_half_open_and_keeps_tombstones(server, dataset):
    ticks = sorted({parse_ticks(r["ApiGewijzigdOp"]) for r in dataset.rows["Zaak"].values()})
    t0, t1 = ticks[100] // 10 * 10, ticks[400] // 10 * 10  # microsecond precision, as datetimes have
    start = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=t0 // 10)
    end = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=t1 // 10)
    client = client_for(server)
    got = {e["Id"] for e in client.iter_entities("Zaak", start, end)}
    want = {i for i, r in dataset.rows["Zaak"].items() if t0 <= parse_ticks(r["ApiGewijzigdOp"]) < t1}
    assert got == want and len(want) > 100
    assert any(dataset.rows["Zaak"][i]["Verwijderd"] for i in got)  # tombstones pass through
    assert client.count("Zaak", start, end) == len(want)
    assert "Verwijderd" not in client.build_url("Zaak", start, end)


def test_window_bounds_are_unquoted_utc_literals():
    cet = datetime(2024, 6, 1, 2, 0, tzinfo=UTC).astimezone(
        __import__("zoneinfo").ZoneInfo("Europe/Amsterdam")
    )
    assert format_datetime(cet) == "2024-06-01T02:00:00Z"
    client = TKClient(ApiSettings())
    url = client.build_url("Zaak", datetime(2024, 6, 1, tzinfo=UTC), datetime(2024, 7, 1, tzinfo=UTC))
    assert url == (
        "https://gegevensmagazijn.tweedekamer.nl/OData/v4/2.0/Zaak?$filter=ApiGewijzigdOp%20ge%20"
        "2024-06-01T00:00:00Z%20and%20ApiGewijzigdOp%20lt%202024-07-01T00:00:00Z"
    )
    with pytest.raises(ValueError, match="time zone"):
        client.build_url("Zaak", datetime(2024, 6, 1))


def test_expanded_links_are_the_same_from_both_sides(server, dataset):
    client = client_for(server)
    zaak_docs = {
        (z["Id"], d["Id"])
        for z in client.iter_entities("Zaak", select=["Id"], expand=["Document"])
        for d in z["Document"]
    }
    doc_zaken = {
        (z["Id"], d["Id"])
        for d in client.iter_entities("Document", select=["Id"], expand=["Zaak"])
        for z in d["Zaak"]
    }
    assert zaak_docs == doc_zaken == {(z, d) for d, z in dataset.links["Document-Zaak"]}
    ap = next(a for a in client.iter_entities("Agendapunt", expand=["Activiteit"]) if a["Activiteit_Id"])
    assert ap["Activiteit"] == {"Id": ap["Activiteit_Id"]}  # single-valued: a dict


def test_pages_are_streamed_one_request_at_a_time(dataset):
    with ReplayServer(dataset) as srv:
        pages = client_for(srv).iter_pages("Zaak")
        first = next(pages)
        assert len(first) == 250 and srv.stats()["pages"] == 1
        next(pages)
        assert srv.stats()["pages"] == 2


def test_the_client_never_pages_with_skip(dataset):
    """Every page of every entity set arrives from a server that fails any ``$skip`` (as the real API
    fails deep ones): the client follows ``@odata.nextLink`` and its ``$skiptoken`` only."""
    with ReplayServer(dataset, faults=FaultConfig(max_skip=0)) as srv:
        client = client_for(srv, max_retries=0)
        for entity_set, rows in dataset.rows.items():
            got = [r["Id"] for r in client.iter_entities(entity_set, select=["Id"])]
            assert sorted(got) == sorted(rows), entity_set
        assert srv.stats()["pages"] > len(dataset.rows)  # more than one page per set: paging happened
        assert "deep_skip" not in srv.fault_status()["injected"]


def test_get_entity_by_key(server, dataset):
    zid = next(iter(dataset.rows["Document"]))
    doc = client_for(server, "v5").get_entity("Document", zid)
    assert doc["Id"] == zid and "DocumentNummer" in doc and "Nummer" not in doc
    assert client_for(server).get_entity("Document", "00000000-0000-0000-0000-000000000000") is None


# --- settings -----------------------------------------------------------------------------------------
def test_settings_defaults_and_environment():
    s = ApiSettings.from_env({})
    assert s.service_root == "https://gegevensmagazijn.tweedekamer.nl/OData/v4/2.0"
    assert s.read_timeout >= 120
    s = ApiSettings.from_env(
        {
            "TK_API_BASE_URL": "http://x:1/OData/v5/",
            "TK_API_PROFILE": "v5",
            "TK_API_READ_TIMEOUT": "30",
            "TK_API_MAX_RETRIES": "0",
        }
    )
    assert s.service_root == "http://x:1/OData/v5" and s.read_timeout == 30 and s.max_retries == 0
    with pytest.raises(ValueError, match=r"TK_API_PROFILE to one of v4/2\.0, v5"):
        ApiSettings.from_env({"TK_API_PROFILE": "v6"})
    with pytest.raises(ValueError, match="TK_API_READ_TIMEOUT='soon'"):
        ApiSettings.from_env({"TK_API_READ_TIMEOUT": "soon"})


def test_resume_after_fail_after_fault(dataset):
    """The loader's view of "fail after item N": N items arrive, then the same page fails until cleared."""
    with ReplayServer(dataset, faults=FaultConfig(fail_after_entity="Zaak", fail_after_items=500)) as srv:
        client = client_for(srv, max_retries=1)
        got: list[str] = []
        with pytest.raises(ApiError) as err:
            for page in client.iter_pages("Zaak"):
                got.extend(r["Id"] for r in page)
        assert len(got) == 500 and err.value.status == 500
        requests.post(srv.url + "/_faults", json={}, timeout=5).raise_for_status()
        assert len(list(client.iter_entities("Zaak"))) == 600


def test_window_start_after_mutation_sees_every_change():
    ds = Dataset.generate(300, seed=4)
    with ReplayServer(ds) as srv:
        client = client_for(srv)
        report = ds.mutate(seed=1)
        delta = {s: {e["Id"] for e in client.iter_entities(s, report.since)} for s in report.bumped}
    assert delta == {s: set(ids) for s, ids in report.bumped.items()}
    assert report.since > datetime(2025, 10, 1, tzinfo=UTC) - timedelta(days=1)
