"""The replay server against the behaviour of the real API (tk-api/README.md), with raw HTTP requests."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from include.loaders.entities import ENTITIES
from include.tk_replay import Dataset, FaultConfig, ReplayServer, guid_sort_key
from include.tk_replay.dataset import DATA_DIR, METADATA_FILE, parse_ticks

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def samples():
    with ReplayServer() as s:
        yield s


@pytest.fixture(scope="module")
def gen_ds() -> Dataset:
    ds = Dataset.generate(600, seed=21)
    zid = ds.sorted_ids("Zaak")[5]
    ds.rows["Zaak"][zid]["Titel"] = "Motie van het lid 't Hart"
    ds.touch()
    return ds


@pytest.fixture(scope="module")
def gen(gen_ds):
    with ReplayServer(gen_ds) as s:
        yield s


def get(server: ReplayServer, rest: str, profile: str = "v4/2.0") -> requests.Response:
    return requests.get(server.service_root(profile) + rest, timeout=10)


def ids_where(ds: Dataset, entity_set: str, pred) -> list[str]:
    return [i for i in ds.sorted_ids(entity_set) if pred(ds.rows[entity_set][i])]


# --- the real samples ---------------------------------------------------------------------------------
def test_samples_are_served_by_default_in_sql_server_guid_order(samples):
    body = get(samples, "/Zaak").json()
    real = json.loads((DATA_DIR / "motiematcher_zaak_page1_valuearray_noFK.json").read_text())
    assert body["@odata.context"].endswith("/OData/v4/2.0/$metadata#Zaak")
    assert len(body["value"]) == 250 and "@odata.nextLink" not in body
    assert sorted(r["Id"] for r in body["value"]) == sorted(r["Id"] for r in real)
    assert [r["Id"] for r in body["value"]] == sorted((r["Id"] for r in real), key=guid_sort_key)
    by_id = {r["Id"]: r for r in real}
    assert all(row == by_id[row["Id"]] for row in body["value"])  # values byte-for-byte as recorded


def test_real_stemming_page_order_is_the_servers_order(samples):
    real = json.loads((DATA_DIR / "motiematcher_stemming_raw_page_with_nextLink.json").read_text())
    served = get(samples, "/Stemming").json()["value"]
    assert [r["Id"] for r in served] == [r["Id"] for r in real["value"]]
    assert served[0]["Besluit_Id"] == real["value"][0]["Besluit_Id"]


def test_v4_metadata_is_the_real_document_and_v5_has_the_renames(samples):
    v4 = get(samples, "/$metadata")
    assert v4.headers["Content-Type"].startswith("application/xml")
    assert v4.text == (DATA_DIR / METADATA_FILE).read_text(encoding="utf-8")
    v5 = get(samples, "/$metadata", "v5").text
    doc = v5[v5.index('<EntityType Name="Document">') :]
    doc = doc[: doc.index("</EntityType>")]
    assert '<Property Name="Nummer"' in doc and "DocumentNummer" not in doc and "Ondernummer" in doc


def test_single_entity_by_key(samples):
    real = json.loads((DATA_DIR / "gegevensmagazijn-rs_singular.activiteit.json").read_text())
    r = get(samples, f"/Activiteit({real['Id']})?$select=Id,Onderwerp")
    assert r.status_code == 200
    assert r.json()["@odata.context"].endswith("$metadata#Activiteit/$entity")
    assert {k: v for k, v in r.json().items() if k != "@odata.context"} == {
        "Id": real["Id"],
        "Onderwerp": real["Onderwerp"],
    }
    assert get(samples, "/Activiteit(00000000-0000-0000-0000-000000000000)").status_code == 404
    bad = get(samples, f"/Activiteit(guid'{real['Id']}')")
    assert bad.status_code == 400 and "error" in bad.json()


# --- paging --------------------------------------------------------------------------------------------
def test_server_driven_paging_with_skiptoken(gen, gen_ds):
    url = gen.service_root() + "/Zaak?$filter=Verwijderd eq false or Verwijderd eq true&foo=bar"
    sizes, ids = [], []
    while url:
        body = requests.get(url, timeout=10).json()
        sizes.append(len(body["value"]))
        ids += [r["Id"] for r in body["value"]]
        url = body.get("@odata.nextLink")
        if url:
            assert url.endswith(f"&$skiptoken=Id-{ids[-1]}")
            assert "foo=bar" in url  # other parameters are echoed, as by the real API
    assert sizes == [250, 250, 100]
    assert ids == gen_ds.sorted_ids("Zaak")


def test_top_disables_next_link_and_is_capped_by_the_page_size(gen):
    body = get(gen, "/Zaak?$top=1000").json()
    assert len(body["value"]) == 250 and "@odata.nextLink" not in body  # the #70 trap
    assert len(get(gen, "/Zaak?$top=3").json()["value"]) == 3


def test_v5_pages_hold_100_and_top_above_100_is_400(gen):
    body = get(gen, "/Zaak", "v5").json()
    assert len(body["value"]) == 100 and "$skiptoken=Id-" in body["@odata.nextLink"]
    assert "/OData/v5/Zaak?" in body["@odata.nextLink"]
    r = get(gen, "/Zaak?$top=101", "v5")
    assert r.status_code == 400 and "100" in r.json()["error"]["message"]
    assert get(gen, "/Zaak?$top=100", "v5").status_code == 200


def test_count_forms(gen, gen_ds):
    tomb = len(ids_where(gen_ds, "Zaak", lambda r: r["Verwijderd"]))
    body = get(gen, "/Zaak?$top=0&$count=true&$filter=Verwijderd eq true").json()
    assert body == {"@odata.context": body["@odata.context"], "@odata.count": tomb, "value": []}
    r = get(gen, "/Zaak/$count?$filter=Verwijderd eq true")
    assert r.text == str(tomb) and r.headers["Content-Type"].startswith("text/plain")
    assert 0.1 < tomb / 600 < 0.3  # tombstones in the range the real API shows


def test_orderby_desc_with_paging_and_skip(gen, gen_ds):
    url = gen.service_root() + "/Document?$orderby=ApiGewijzigdOp desc&$select=Id,ApiGewijzigdOp"
    rows = []
    while url:
        body = requests.get(url, timeout=10).json()
        rows += body["value"]
        url = body.get("@odata.nextLink")
    stamps = [parse_ticks(r["ApiGewijzigdOp"]) for r in rows]
    assert stamps == sorted(stamps, reverse=True) and len({r["Id"] for r in rows}) == 600
    skipped = get(gen, "/Document?$orderby=ApiGewijzigdOp desc&$select=Id&$skip=10&$top=5").json()["value"]
    assert [r["Id"] for r in skipped] == [r["Id"] for r in rows[10:15]]


# --- filters -------------------------------------------------------------------------------------------
def filtered(server, entity_set, flt, profile="v4/2.0") -> list[str]:
    r = get(server, f"/{entity_set}?$filter={requests.utils.quote(flt)}&$select=Id", profile)
    assert r.status_code == 200, r.text
    return [x["Id"] for x in r.json()["value"]]


@pytest.mark.parametrize("op", ["eq", "ne", "gt", "ge", "lt", "le"])
def test_date_comparisons_unquoted(gen, gen_ds, op):
    ordered = sorted(
        (r for r in gen_ds.rows["Vergadering"].values()), key=lambda r: parse_ticks(r["ApiGewijzigdOp"])
    )
    pivot = ordered[300]["ApiGewijzigdOp"]
    t = parse_ticks(pivot)
    py = {"eq": t.__eq__, "ne": t.__ne__, "gt": t.__lt__, "ge": t.__le__, "lt": t.__gt__, "le": t.__ge__}[op]
    want = ids_where(gen_ds, "Vergadering", lambda r: py(parse_ticks(r["ApiGewijzigdOp"])))
    got = filtered(gen, "Vergadering", f"ApiGewijzigdOp {op} {pivot}")
    assert got == want[:250]


def test_guid_string_boolean_and_or_parentheses(gen, gen_ds):
    zid = gen_ds.sorted_ids("Zaak")[5]
    assert filtered(gen, "Zaak", f"Id eq {zid}") == [zid]
    assert filtered(gen, "Zaak", "Titel eq 'Motie van het lid ''t Hart'") == [zid]
    row = gen_ds.rows["Zaak"][zid]
    flt = (
        f"(Soort eq '{row['Soort']}' or Soort eq 'Bestaat niet') and Verwijderd eq false and Afgedaan ne null"
    )
    want = ids_where(
        gen_ds,
        "Zaak",
        lambda r: r["Soort"] == row["Soort"] and r["Verwijderd"] is False and r["Afgedaan"] is not None,
    )
    assert filtered(gen, "Zaak", flt) == want
    assert filtered(gen, "Zaak", "not (Verwijderd eq false)") == ids_where(
        gen_ds, "Zaak", lambda r: r["Verwijderd"]
    )


def test_any_lambda_over_the_link_table(gen, gen_ds):
    did = next(iter(sorted(gen_ds.links["Document-Zaak"])))[0]
    want = sorted((z for d, z in gen_ds.links["Document-Zaak"] if d == did), key=guid_sort_key)
    assert filtered(gen, "Zaak", f"Document/any(d: d/Id eq {did})") == want
    nested = get(gen, "/Zaak?$filter=Document/any(d: d/Zaak/any(z: z/Id eq 1))")
    assert nested.status_code == 400


def test_v5_filters_use_v5_names(gen, gen_ds):
    did = gen_ds.live_ids("Document")[0]
    nummer = gen_ds.rows["Document"][did]["DocumentNummer"]
    assert did in filtered(gen, "Document", f"Nummer eq '{nummer}'", "v5")
    assert get(gen, f"/Document?$filter=DocumentNummer eq '{nummer}'", "v5").status_code == 400


@pytest.mark.parametrize(
    ("query", "status", "message"),
    [
        ("/Zaak?$filter=ApiGewijzigdOp ge '2024-06-01T00:00:00Z'", 400, "incompatible types"),
        ("/Zaak?$filter=ApiGewijzigdOp ge datetimeoffset'2024-06-01T00:00:00Z'", 400, "Unrecognized"),
        ("/Zaak?$filter=Id eq guid'0e5c5f8e-0000-0000-0000-000000000000'", 400, "Unrecognized"),
        ("/Zaak?$filter=Nummer eq", 400, "Syntax error"),
        ("/Zaak?$filter=(Nummer eq '1'", 400, "Syntax error"),
        ("/Zaak?$filter=Bestaatniet eq 1", 400, "Could not find a property named 'Bestaatniet'"),
        ("/Zaak?$select=Id,Bestaatniet", 400, "Could not find a property named 'Bestaatniet'"),
        ("/Zaak?$expand=Bestaatniet", 400, "Could not find a property named 'Bestaatniet'"),
        ("/Zaak?$top=-1", 400, "$top"),
        ("/Zaak?$skiptoken=abc", 400, "skiptoken"),
        ("/Zaak?$bogus=1", 400, "'$bogus' is not supported"),
        ("/Zaken", 404, "No HTTP resource was found"),
        ("/Zaak(1)", 400, "not a valid Edm.Guid"),
    ],
)
def test_malformed_queries_get_odata_error_bodies(gen, query, status, message):
    r = get(gen, query)
    assert r.status_code == status
    assert r.headers["Content-Type"].startswith("application/json")
    body = r.json()
    assert set(body) == {"error"} and body["error"]["code"] == ""
    assert message in body["error"]["message"]


def test_unknown_parameters_without_dollar_are_ignored(gen):
    assert (
        get(gen, "/Zaak?$top=2&Verwijderd eq false=&bogus").json()["value"]
        == get(gen, "/Zaak?$top=2").json()["value"]
    )


def test_select_and_expand_with_nested_select(gen, gen_ds):
    body = get(
        gen, "/Agendapunt?$select=Id,Nummer&$expand=Activiteit($select=Id,Nummer),Zaak($select=Id)"
    ).json()
    for row in body["value"]:
        assert set(row) == {"Id", "Nummer", "Activiteit", "Zaak"}
        fk = gen_ds.rows["Agendapunt"][row["Id"]].get("Activiteit_Id")
        assert (row["Activiteit"] or {}).get("Id") == fk
        want = sorted((z for z, a in gen_ds.links["Zaak-Agendapunt"] if a == row["Id"]), key=guid_sort_key)
        assert [z["Id"] for z in row["Zaak"]] == want
    rev = get(gen, "/Activiteit?$select=Id&$expand=Agendapunt($select=Id)").json()["value"]
    for act in rev:  # the collection side of the foreign key, served from the same data
        want = sorted(
            (i for i, a in gen_ds.rows["Agendapunt"].items() if a.get("Activiteit_Id") == act["Id"]),
            key=guid_sort_key,
        )
        assert [a["Id"] for a in act["Agendapunt"]] == want
    assert any(act["Agendapunt"] for act in rev)


# --- generator and mutations ----------------------------------------------------------------------------
def test_generator_is_deterministic_and_consistent():
    a, b = Dataset.generate(200, seed=5), Dataset.generate(200, seed=5)
    assert a.rows == b.rows and a.links == b.links
    assert a.rows != Dataset.generate(200, seed=6).rows
    for name in ("Zaak", "Document", "Vergadering", "Agendapunt", "Activiteit", "Verslag"):
        tombs = [r for r in a.rows[name].values() if r["Verwijderd"]]
        assert 0.1 < len(tombs) / 200 < 0.3
        keep = {"Id", "GewijzigdOp", "ApiGewijzigdOp", "Verwijderd"}
        assert all(v is None for t in tombs for k, v in t.items() if k not in keep)
    live = {s: set(a.live_ids(s)) for s in a.rows if a.rows[s]}
    assert set(live) == set(ENTITIES)  # every type of the table, Kamerstukdossier included
    for spec in a.link_specs:  # every link between live rows of its two types
        pairs = a.links[spec.name]
        assert all(x in live[spec.left] and y in live[spec.right] for x, y in pairs), spec.name
    assert all(a.links[spec.name] for spec in a.link_specs if spec.left == "Zaak")
    for fk in a.foreign_keys:  # every foreign key of a live row names a live row of its target
        values = [r[fk.column] for r in a.rows[fk.source].values() if not r["Verwijderd"]]
        assert any(values) and all(v in live[fk.target] for v in values if v is not None), fk
    assert all(
        r["Activiteit_Id"] in live["Activiteit"] for r in a.rows["Agendapunt"].values() if not r["Verwijderd"]
    )
    assert any(r["Sluiting"] == "0001-01-01T00:00:00Z" for r in a.rows["Vergadering"].values())
    assert any(r["Volgnummer"] == -1 for r in a.rows["Document"].values())


def test_mutation_bumps_both_ends_and_keeps_invariants(tmp_path):
    ds = Dataset.generate(300, seed=8)
    before = {s: {i: dict(r) for i, r in ds.rows[s].items()} for s in ds.entity_sets_with_rows()}
    links_before = {k: set(v) for k, v in ds.links.items()}
    report = ds.mutate(seed=3, fraction=0.05)
    assert report == Dataset.generate(300, seed=8).mutate(seed=3, fraction=0.05)  # deterministic
    since = parse_ticks(report.since.strftime("%Y-%m-%dT%H:%M:%S.%fZ"))
    for s, ids in report.bumped.items():
        assert all(parse_ticks(ds.rows[s][i]["ApiGewijzigdOp"]) >= since for i in ids)
    changed = {
        (s, i) for s in before for i, r in ds.rows[s].items() if before[s].get(i) is None or before[s][i] != r
    }
    for spec in ds.link_specs:
        for x, y in ds.links[spec.name] ^ links_before[spec.name]:
            changed |= {(spec.left, x), (spec.right, y)}
    assert changed == {(s, i) for s, ids in report.bumped.items() for i in ids}  # nothing changed unbumped
    assert all(report.tombstoned[s] and report.created[s] for s in report.changed)
    assert any(report.links_added.values()) and any(report.links_removed.values())
    for spec in ds.link_specs:
        assert all(
            not ds.rows[spec.left][x]["Verwijderd"] and not ds.rows[spec.right][y]["Verwijderd"]
            for x, y in ds.links[spec.name]
        )
    again = Dataset.load(ds.save(tmp_path / "ds"))
    assert again.rows == ds.rows and again.links == ds.links


# --- faults and admin --------------------------------------------------------------------------------------
def test_fault_sequence_is_deterministic_and_changeable_at_run_time():
    ds = Dataset.generate(50, seed=1, sets=("Zaak",))

    def statuses(srv):
        return [get(srv, "/Zaak?$top=1").status_code for _ in range(30)]

    cfg = FaultConfig(seed=4, error_rate=0.3, throttle_rate=0.2, retry_after=7)
    with ReplayServer(ds, faults=cfg) as a, ReplayServer(ds, faults=cfg) as b:
        sa = statuses(a)
        assert sa == statuses(b) and {200, 500, 429} == set(sa)
        r = requests.post(a.url + "/_faults", json={"throttle_rate": 1.0, "retry_after": 7}, timeout=5)
        assert r.json()["config"]["throttle_rate"] == 1.0
        t = get(a, "/Zaak")
        assert t.status_code == 429 and t.headers["Retry-After"] == "7"
        assert get(a, "/$metadata").status_code == 200  # metadata is spared by default
        a.set_faults(None)
        assert set(statuses(a)) == {200}


def test_hanging_request_outlasts_a_short_timeout_and_stop_releases_it():
    srv = ReplayServer(
        Dataset.generate(5, seed=1, sets=("Zaak",)), faults=FaultConfig(hang_rate=1.0, hang_seconds=60)
    )
    srv.start()
    t0 = time.monotonic()
    with pytest.raises(requests.Timeout):
        requests.get(srv.service_root() + "/Zaak", timeout=0.3)
    srv.stop()
    assert time.monotonic() - t0 < 10


def test_reset_and_truncate_break_the_response():
    ds = Dataset.generate(300, seed=1, sets=("Zaak",))
    with ReplayServer(ds, faults=FaultConfig(reset_rate=1.0)) as srv, pytest.raises(requests.ConnectionError):
        requests.get(srv.service_root() + "/Zaak", timeout=5)
    with ReplayServer(ds, faults=FaultConfig(truncate_rate=1.0)) as srv:
        with pytest.raises(requests.exceptions.ChunkedEncodingError):
            requests.get(srv.service_root() + "/Zaak", timeout=5)
        short = requests.get(srv.service_root() + "/Zaak", timeout=5)  # the other mode: malformed JSON
        with pytest.raises(ValueError):
            short.json()


def test_fail_after_item_n_fails_every_later_page_until_removed(gen_ds):
    with ReplayServer(gen_ds, faults=FaultConfig(fail_after_entity="Zaak", fail_after_items=250)) as srv:
        first = get(srv, "/Zaak").json()
        assert len(first["value"]) == 250
        for _ in range(3):
            assert requests.get(first["@odata.nextLink"], timeout=5).status_code == 500
        assert get(srv, "/Document").status_code == 200  # other entity sets are untouched
        srv.set_faults(FaultConfig())
        assert requests.get(first["@odata.nextLink"], timeout=5).status_code == 200


def test_without_id_serves_those_rows_without_their_id(gen_ds):
    with ReplayServer(gen_ds) as srv:
        before = get(srv, "/Zaak?$top=20").json()["value"]
        victim = before[7]["Id"]
        body = requests.post(srv.url + "/_faults", json={"without_id": [victim.upper()]}, timeout=5)
        assert body.status_code == 200
        after = get(srv, "/Zaak?$top=20").json()["value"]
    assert [r.get("Id") for r in after] == [None if r["Id"] == victim else r["Id"] for r in before]
    assert {k: v for k, v in before[7].items() if k != "Id"} == after[7]  # only the Id is missing


def test_max_skip_fails_deep_skip_like_the_real_api(gen_ds):
    with ReplayServer(gen_ds, faults=FaultConfig(max_skip=250)) as srv:
        assert get(srv, "/Zaak?$skip=250&$top=5").status_code == 200
        deep = get(srv, "/Zaak?$skip=251&$top=5")
        assert deep.status_code == 500 and "error" in deep.json()
        first = get(srv, "/Zaak").json()  # server-driven paging uses $skiptoken, never $skip
        assert requests.get(first["@odata.nextLink"], timeout=5).status_code == 200
        assert srv.fault_status()["injected"]["deep_skip"] == 1


def test_mutate_admin_endpoint(gen_ds):
    ds = Dataset.generate(100, seed=2)
    with ReplayServer(ds) as srv:
        report = requests.post(srv.url + "/_mutate", json={"seed": 1}, timeout=10).json()
        since = report["since"].replace("+00:00", "Z")
        got = get(srv, f"/Zaak/$count?$filter=ApiGewijzigdOp ge {since}").text
        assert int(got) == len(report["bumped"]["Zaak"]) > 0


# --- the command line ---------------------------------------------------------------------------------------
def test_cli_help_and_serving():
    help_text = subprocess.run(
        [sys.executable, "-m", "include.tk_replay", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert (
        "--generate" in help_text
        and "--fail-after" in help_text
        and "--without-id" in help_text
        and "/_faults" in help_text
    )
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "include.tk_replay", "--port", str(port), "--generate", "30", "--seed", "1"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline()
        assert f"http://127.0.0.1:{port}/OData/v4/2.0/" in line
        body = requests.get(f"http://127.0.0.1:{port}/OData/v5/Zaak/$count", timeout=5)
        assert body.text == "30"
    finally:
        proc.terminate()
        proc.wait(10)
    assert proc.returncode == 0
