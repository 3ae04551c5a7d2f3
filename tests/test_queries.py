"""The queries users ask (``include/loaders/queries.py``, documented in ``docs/graph-model.md``), run on a
real Neo4j loaded by the loaders from the offline server over HTTP, against answers computed in Python from
the generated dataset's rows and links (never from Cypher).

The dataset is generated, then a few of its rows are pointed at one motion, one member, one party, so that
each query has a non-trivial answer (several parties voting both ways, several roll-call votes, a submitter
with co-signers, open and closed promises); every query is then checked for every case, member or party.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from typing import Any

import pytest

from include.loaders.entities import ENTITIES
from include.loaders.graph_model import DOC
from include.loaders.queries import OPEN_PROMISE_STATUSES, QUERIES, SUBMITTER_ROLES, render
from include.tk_replay.dataset import Dataset
from tests.loader_fixtures import load_all, make_client, replay

SETS = ("Zaak", "Besluit", "Stemming", "Fractie", "Persoon", "ZaakActor", "Toezegging", "Agendapunt")
SETS += ("Activiteit", "Commissie")


def _edges(ds: Dataset, owner: str, rel_type: str) -> set[tuple[str, str]]:
    rel = next(r for r in ENTITIES[owner].relationships if r.type == rel_type)
    return ds.relationship_edges(owner, rel)


def _live(ds: Dataset, name: str) -> dict[str, dict[str, Any]]:
    return {i: ds.rows[name][i] for i in ds.live_ids(name)}


def _instant(value: Any) -> datetime | None:
    """A DATETIME as an aware Python datetime: the dataset's ISO string or a neo4j DateTime."""
    if value is None:
        return None
    if isinstance(value, str):
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    return value.to_native()


def _shape(ds: Dataset) -> dict[str, str]:
    """Point some rows at one motion, member and party, so that each query's answer has several rows.

    Returns the chosen ``motion`` (Zaak id), ``member`` (Persoon id) and ``party`` (Fractie id).
    """
    zaken, stemmingen = _live(ds, "Zaak"), _live(ds, "Stemming")
    decides = _edges(ds, "Besluit", "DECIDES_ON")
    motion, besluit = next((z, b) for b, z in sorted(decides) if zaken[z]["Soort"] == "Motie")
    member, party = ds.live_ids("Persoon")[0], ds.live_ids("Fractie")[0]
    fracties = ds.live_ids("Fractie")
    party_votes = [i for i, r in stemmingen.items() if not r["Persoon_Id"]]
    for k, sid in enumerate(party_votes[:6]):  # six parties on one decision, both ways
        stemmingen[sid] |= {"Besluit_Id": besluit, "Fractie_Id": fracties[k % len(fracties)]}
        stemmingen[sid]["Soort"] = ("Voor", "Tegen", "Niet deelgenomen")[k % 3]
    for sid in party_votes[6:10]:  # four roll-call votes of one member (one on the motion's decision)
        stemmingen[sid]["Persoon_Id"] = member
    stemmingen[party_votes[6]]["Besluit_Id"] = besluit
    actors = ds.live_ids("ZaakActor")[:4]
    for aid, relatie in zip(actors, ("Medeindiener", "Indiener", "Medeindiener", "Rapporteur"), strict=True):
        ds.rows["ZaakActor"][aid] |= {"Zaak_Id": motion, "Relatie": relatie}
    spec = next(s for s in ds.link_specs if s.left == "Toezegging" and s.left_nav == "ToegezegdAanFractie")
    pairs = ds.links[spec.name]
    promised = ds.live_ids("Toezegging")[:5]
    pairs -= {p for p in pairs if p[0] in promised}  # one party per promise: the chosen one
    for tid, status in zip(
        promised, ("Openstaand", "Voldaan", "Deels Voldaan", "Vervallen", "Openstaand"), strict=True
    ):
        pairs.add((tid, party))
        ds.rows["Toezegging"][tid]["Status"] = status
    ds.touch()
    return {"motion": motion, "member": member, "party": party}


@pytest.fixture(scope="module")
def loaded(neo4j_driver) -> tuple[Any, Dataset, dict[str, str]]:
    """The shaped dataset loaded by the OData loaders of its types into a fresh graph."""
    with neo4j_driver.session() as session:
        session.run("MATCH (n) CALL (n) { DETACH DELETE n } IN TRANSACTIONS OF 10000 ROWS").consume()
    ds = Dataset.generate(120, seed=21, sets=SETS)
    chosen = _shape(ds)
    with replay(ds) as server:
        load_all(make_client(server.url), neo4j_driver, SETS, batch_size=50)
    return neo4j_driver, ds, chosen


def _afkorting(ds: Dataset, fid: str | None) -> str | None:
    return ds.rows["Fractie"][fid]["Afkorting"] if fid else None


def test_docs_section_is_rendered_from_the_queries_module():
    text = DOC.read_text(encoding="utf-8")
    assert render(text) == text, "docs/graph-model.md is stale: run python -m include.loaders.queries"
    for q in QUERIES.values():
        assert f"```cypher\n{q.cypher}\n```" in text


def test_run_names_missing_and_unknown_parameters():
    with pytest.raises(ValueError, match=r"missing \['nummer'\], unknown \['numer'\]"):
        QUERIES["motion_votes"].run(None, numer="2025Z00001")


def test_motion_votes_per_party_with_totals(loaded):
    driver, ds, chosen = loaded
    stemmingen, zaken = _live(ds, "Stemming"), _live(ds, "Zaak")
    by_besluit: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for sid, r in stemmingen.items():
        if r["Fractie_Id"] and not r["Persoon_Id"]:  # party votes only: a roll call is member_votes
            by_besluit[r["Besluit_Id"]].append(
                {
                    "fractie": _afkorting(ds, r["Fractie_Id"]),
                    "fractieId": r["Fractie_Id"],
                    "soort": r["Soort"],
                    "fractieGrootte": r["FractieGrootte"],
                    "vergissing": r["Vergissing"],
                }
            )
    besluiten = _live(ds, "Besluit")
    decided: dict[str, set[str]] = defaultdict(set)
    for b, z in _edges(ds, "Besluit", "DECIDES_ON"):
        decided[z].add(b)
    checked = 0
    for zid in [z for z, r in zaken.items() if r["Soort"] == "Motie"]:
        expected = []
        for b in sorted(decided[zid]):
            if votes := sorted(by_besluit.get(b, []), key=lambda v: (v["fractie"], v["fractieId"])):
                total = {
                    s: sum(v["fractieGrootte"] for v in votes if v["soort"] == s) for s in ("Voor", "Tegen")
                }
                expected.append(
                    {
                        "besluit": b,
                        "besluitSoort": besluiten[b]["BesluitSoort"],
                        "besluitTekst": besluiten[b]["BesluitTekst"],
                        "stemmen": votes,
                        "voor": total["Voor"],
                        "tegen": total["Tegen"],
                        "nietDeelgenomen": sum(
                            v["fractieGrootte"] for v in votes if v["soort"] == "Niet deelgenomen"
                        ),
                    }
                )
        got = QUERIES["motion_votes"].run(driver, nummer=zaken[zid]["Nummer"])
        assert got == expected, zaken[zid]["Nummer"]
        checked += bool(expected)
    got = QUERIES["motion_votes"].run(driver, nummer=zaken[chosen["motion"]]["Nummer"])
    votes = [v for row in got for v in row["stemmen"]]
    assert len({v["fractieId"] for v in votes}) >= 6 and {"Voor", "Tegen"} <= {v["soort"] for v in votes}
    assert all(row["voor"] > 0 and row["tegen"] > 0 for row in got if len(row["stemmen"]) >= 6)
    assert checked >= 2


def test_member_roll_call_votes_newest_first(loaded):
    driver, ds, chosen = loaded
    stemmingen, besluiten = _live(ds, "Stemming"), _live(ds, "Besluit")
    agendapunten, activiteiten = _live(ds, "Agendapunt"), _live(ds, "Activiteit")
    decided: dict[str, list[str]] = defaultdict(list)
    for b, z in _edges(ds, "Besluit", "DECIDES_ON"):
        decided[b].append(ds.rows["Zaak"][z]["Nummer"])

    def datum(besluit: str) -> datetime | None:
        punt = agendapunten.get(besluiten[besluit]["Agendapunt_Id"] or "")
        act = activiteiten.get(punt["Activiteit_Id"] or "") if punt else None
        return _instant(act["Datum"]) if act else None

    members = {r["Persoon_Id"] for r in stemmingen.values() if r["Persoon_Id"]}
    assert chosen["member"] in members
    for pid in members:
        rows = [
            {
                "stemming": sid,
                "soort": r["Soort"],
                "fractie": _afkorting(ds, r["Fractie_Id"]),
                "besluit": r["Besluit_Id"],
                "besluitSoort": besluiten[r["Besluit_Id"]]["BesluitSoort"],
                "datum": datum(r["Besluit_Id"]),
                "zaken": sorted(decided[r["Besluit_Id"]]),
            }
            for sid, r in stemmingen.items()
            if r["Persoon_Id"] == pid
        ]
        rows.sort(
            key=lambda x: (x["datum"] is None, -(x["datum"].timestamp() if x["datum"] else 0), x["stemming"])
        )
        got = QUERIES["member_votes"].run(driver, persoon=pid)
        assert [g | {"datum": _instant(g["datum"])} for g in got] == rows
        if pid == chosen["member"]:
            assert len(got) >= 4 and len({g["datum"] for g in got}) >= 2


def test_motion_submitter_and_cosigners(loaded):
    driver, ds, chosen = loaded
    actors = _live(ds, "ZaakActor")
    zaken = _live(ds, "Zaak")
    for zid, zaak in zaken.items():
        expected = sorted(
            (
                {
                    "actor": aid,
                    "relatie": a["Relatie"],
                    "naam": a["ActorNaam"],
                    "actorFractie": a["ActorFractie"],
                    "persoon": a["Persoon_Id"],
                    "fractieId": a["Fractie_Id"],
                    "fractie": _afkorting(ds, a["Fractie_Id"]),
                }
                for aid, a in actors.items()
                if a["Zaak_Id"] == zid and a["Relatie"] in SUBMITTER_ROLES
            ),
            key=lambda x: (x["relatie"] != "Indiener", x["naam"], x["actor"]),
        )
        assert QUERIES["motion_submitters"].run(driver, nummer=zaak["Nummer"]) == expected
    got = QUERIES["motion_submitters"].run(driver, nummer=zaken[chosen["motion"]]["Nummer"])
    roles = [g["relatie"] for g in got]
    assert roles[0] == "Indiener" and roles.count("Medeindiener") >= 2 and "Rapporteur" not in roles


def test_party_open_promises(loaded):
    driver, ds, chosen = loaded
    promises = _live(ds, "Toezegging")
    at = dict(_edges(ds, "Toezegging", "PROMISED_AT"))
    to_party: dict[str, list[str]] = defaultdict(list)
    for tid, fid in _edges(ds, "Toezegging", "PROMISED_TO_PARTY"):
        to_party[fid].append(tid)
    assert {"Voldaan", "Vervallen"} <= {promises[t]["Status"] for t in to_party[chosen["party"]]}
    for fid in _live(ds, "Fractie"):
        expected = [
            {
                "toezegging": tid,
                "nummer": promises[tid]["Nummer"],
                "status": promises[tid]["Status"],
                "tekst": promises[tid]["Tekst"],
                "minister": promises[tid]["Naam"],
                "functie": promises[tid]["Functie"],
                "ministerie": promises[tid]["Ministerie"],
                "datumNakoming": _instant(promises[tid]["DatumNakoming"]),
                "activiteit": ds.rows["Activiteit"][at[tid]]["Nummer"] if tid in at else None,
            }
            for tid in to_party[fid]
            if promises[tid]["Status"] in OPEN_PROMISE_STATUSES
        ]
        expected.sort(key=lambda x: (x["datumNakoming"] is None, x["datumNakoming"] or 0, x["toezegging"]))
        got = QUERIES["party_open_promises"].run(driver, fractie=fid)
        assert [g | {"datumNakoming": _instant(g["datumNakoming"])} for g in got] == expected
        if fid == chosen["party"]:
            assert {g["status"] for g in got} == set(OPEN_PROMISE_STATUSES) and len(got) >= 3


@pytest.mark.parametrize("label", ["Zaak", "Stemming"])
def test_changed_since_lists_live_rows_only(loaded, label):
    driver, ds, _ = loaded
    rows = ds.rows[label]
    times = sorted(ds.ticks(r["ApiGewijzigdOp"]) for r in rows.values())
    since = next(
        r["ApiGewijzigdOp"] for r in rows.values() if ds.ticks(r["ApiGewijzigdOp"]) == times[len(times) // 2]
    )
    after = [i for i, r in rows.items() if ds.ticks(r["ApiGewijzigdOp"]) >= ds.ticks(since)]
    deleted = {i for i in after if rows[i]["Verwijderd"]}
    assert deleted and len(after) > len(deleted), "the window must hold both live rows and tombstones"
    expected = sorted(
        (i for i in after if i not in deleted), key=lambda i: (ds.ticks(rows[i]["ApiGewijzigdOp"]), i)
    )
    got = QUERIES["changed_since"].run(driver, label=label, since=since)
    assert [g["id"] for g in got] == expected
    assert not deleted & {g["id"] for g in got}
