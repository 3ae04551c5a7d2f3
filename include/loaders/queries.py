"""The queries users of TK data ask most (``tk-api/SYNCFEED.md`` section 5), as Cypher on the loaded graph.

One place for each query: the "Queries users ask" section of ``docs/graph-model.md`` is rendered from
:data:`QUERIES` (between two markers, next to the tables of :mod:`include.loaders.graph_model`), and
``tests/test_queries.py`` runs the same :class:`Query` objects against a generated graph whose answers it
computes from the dataset. Regenerate the section after editing a query (the test fails until you do)::

    python -m include.loaders.queries           # rewrite the section in docs/graph-model.md
    python -m include.loaders.queries --check   # exit 1 when it differs from QUERIES
"""

from __future__ import annotations

import argparse
import re
import sys
import textwrap
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from include.loaders.graph_model import DOC

_CMD = "python -m include.loaders.queries"
_BEGIN = "<!-- BEGIN generated queries (" + _CMD + ") -->"
_END = "<!-- END generated queries -->"

OPEN_PROMISE_STATUSES: tuple[str, ...] = ("Openstaand", "Deels Voldaan")
"""The ``Toezegging.status`` values of a promise not (fully) kept; the XSD's other two, ``Voldaan`` and
``Vervallen``, close it (``syncfeed-xsd/tkData-v1-0-toezegging.xsd``, type ``toezeggingstatus``)."""

SUBMITTER_ROLES: tuple[str, ...] = ("Indiener", "Medeindiener")
"""The ``ZaakActor.relatie`` values of a case's submitter and its co-signers (first the submitter)."""


@dataclass(frozen=True)
class Query:
    """One documented, tested query.

    ``name`` is its key in :data:`QUERIES`; ``title`` the question it answers; ``params`` each parameter's
    meaning; ``facts`` the TK facts the query relies on (Markdown); ``cypher`` the statement itself.
    """

    name: str
    title: str
    params: Mapping[str, str]
    facts: str
    cypher: str

    def run(self, driver: Any, **params: Any) -> list[dict[str, Any]]:
        """The rows of this query on ``driver``'s default database, as dicts in the query's order.

        Raises ValueError naming the missing or unknown parameters.
        """
        missing, unknown = set(self.params) - set(params), set(params) - set(self.params)
        if missing or unknown:
            raise ValueError(
                f"Query {self.name!r} takes the parameters {sorted(self.params)}; "
                f"missing {sorted(missing)}, unknown {sorted(unknown)}."
            )
        return [r.data() for r in driver.execute_query(self.cypher, params).records]


_STATUSES = ", ".join(f"'{s}'" for s in OPEN_PROMISE_STATUSES)
_ROLES = ", ".join(f"'{s}'" for s in SUBMITTER_ROLES)

QUERIES: Mapping[str, Query] = {
    q.name: q
    for q in (
        Query(
            name="motion_votes",
            title="How each party voted on a motion, with the totals in seats, per decision",
            params={"nummer": "the case number (`Zaak.nummer`, e.g. `2025Z05057`) of the motion"},
            facts=(
                "A motion (`Zaak` of soort `Motie`) is voted on in a `Besluit` (`DECIDES_ON`, m:n: a "
                "decision can cover several cases, a case can have several decisions: a postponed vote, a"
                " revote). Most votes are a party's: a `Stemming` with `VOTED_BY_PARTY` and "
                "`fractieGrootte`, the party's seats at the time, which the totals add up; only about 8% "
                "of the `Stemming` rows name a member (`VOTED_BY_MEMBER`, a roll call: see "
                "`member_votes`) and they are left out here. `soort` is `Voor`, `Tegen` or `Niet "
                "deelgenomen`; `vergissing` marks a vote the party declared a mistake afterwards (the "
                "result stands)."
            ),
            cypher="""\
MATCH (z:Zaak {nummer: $nummer})<-[:DECIDES_ON]-(b:Besluit)<-[:VOTE_ON]-(s:Stemming)
      -[:VOTED_BY_PARTY]->(f:Fractie)
WHERE NOT (s)-[:VOTED_BY_MEMBER]->(:Persoon)
WITH b, s, f ORDER BY f.afkorting, f.id
RETURN b.id AS besluit, b.besluitSoort AS besluitSoort, b.besluitTekst AS besluitTekst,
       collect({fractie: f.afkorting, fractieId: f.id, soort: s.soort,
                fractieGrootte: s.fractieGrootte, vergissing: s.vergissing}) AS stemmen,
       sum(CASE s.soort WHEN 'Voor' THEN s.fractieGrootte ELSE 0 END) AS voor,
       sum(CASE s.soort WHEN 'Tegen' THEN s.fractieGrootte ELSE 0 END) AS tegen,
       sum(CASE s.soort WHEN 'Niet deelgenomen' THEN s.fractieGrootte ELSE 0 END) AS nietDeelgenomen
ORDER BY besluit""",
        ),
        Query(
            name="member_votes",
            title="A member's roll-call votes, newest first, with the cases voted on",
            params={
                "persoon": "the member's id (`Persoon.id`; find it with `MATCH (p:Persoon {achternaam: …})`)"
            },
            facts=(
                "Only a roll call (hoofdelijke stemming) records members' votes: a `Stemming` with "
                "`VOTED_BY_MEMBER` (and `VOTED_BY_PARTY`, the member's party then). The vote's date is "
                "the date of the activity of the agenda item where the decision was taken (`Besluit "
                "-TAKEN_AT-> Agendapunt -PART_OF-> Activiteit`); a decision covers one or more cases "
                "(`DECIDES_ON`)."
            ),
            cypher="""\
MATCH (p:Persoon {id: $persoon})<-[:VOTED_BY_MEMBER]-(s:Stemming)-[:VOTE_ON]->(b:Besluit)
OPTIONAL MATCH (s)-[:VOTED_BY_PARTY]->(f:Fractie)
OPTIONAL MATCH (b)-[:TAKEN_AT]->(:Agendapunt)-[:PART_OF]->(a:Activiteit)
OPTIONAL MATCH (b)-[:DECIDES_ON]->(z:Zaak)
WITH s, f, b, a, z ORDER BY z.nummer
RETURN s.id AS stemming, s.soort AS soort, f.afkorting AS fractie, b.id AS besluit,
       b.besluitSoort AS besluitSoort, a.datum AS datum, collect(z.nummer) AS zaken
ORDER BY datum IS NULL, datum DESC, stemming""",
        ),
        Query(
            name="motion_submitters",
            title="The submitter and the co-signers of a motion (or any case)",
            params={"nummer": "the case number (`Zaak.nummer`)"},
            facts=(
                "A case's actors are `ZaakActor` rows (`ACTOR_OF_CASE`) with a role in `relatie`: "
                f"{', '.join(f'`{r}`' for r in SUBMITTER_ROLES)} for the submitter and the co-signers "
                "(others: `Rapporteur`, `Volgcommissie`, `Voortouwcommissie`…). The actor is a member "
                "(`CASE_ACTOR_PERSON`) and/or a party (`CASE_ACTOR_PARTY`); `actorNaam` and `actorFractie` "
                "are the names as the API wrote them at the time."
            ),
            cypher=f"""\
MATCH (z:Zaak {{nummer: $nummer}})<-[:ACTOR_OF_CASE]-(a:ZaakActor)
WHERE a.relatie IN [{_ROLES}]
OPTIONAL MATCH (a)-[:CASE_ACTOR_PERSON]->(p:Persoon)
OPTIONAL MATCH (a)-[:CASE_ACTOR_PARTY]->(f:Fractie)
RETURN a.id AS actor, a.relatie AS relatie, a.actorNaam AS naam, a.actorFractie AS actorFractie,
       p.id AS persoon, f.id AS fractieId, f.afkorting AS fractie
ORDER BY relatie <> 'Indiener', naam, actor""",
        ),
        Query(
            name="party_open_promises",
            title="A party's open promises, with the minister and ministry that made them, soonest due first",
            params={
                "fractie": "the party's id (`Fractie.id`; find it with `MATCH (f:Fractie {afkorting: …})`)"
            },
            facts=(
                "A promise (`Toezegging`) is made by a minister (its `naam`, `functie` and `ministerie` "
                "are the minister's) to a party (`PROMISED_TO_PARTY`) or a member (`PROMISED_TO_PERSON`) "
                "during an activity (`PROMISED_AT`). It is open while its `status` is one of "
                f"{', '.join(f'`{s}`' for s in OPEN_PROMISE_STATUSES)}; `datumNakoming` is when it is due."
            ),
            cypher=f"""\
MATCH (t:Toezegging)-[:PROMISED_TO_PARTY]->(f:Fractie {{id: $fractie}})
WHERE t.status IN [{_STATUSES}]
OPTIONAL MATCH (t)-[:PROMISED_AT]->(a:Activiteit)
RETURN t.id AS toezegging, t.nummer AS nummer, t.status AS status, t.tekst AS tekst,
       t.naam AS minister, t.functie AS functie, t.ministerie AS ministerie,
       t.datumNakoming AS datumNakoming, a.nummer AS activiteit
ORDER BY datumNakoming, toezegging""",
        ),
        Query(
            name="changed_since",
            title="Everything of one type that changed since a time, oldest change first",
            params={
                "label": "the node label (= the API entity set, e.g. `Zaak`)",
                "since": "an ISO-8601 instant, e.g. `2025-10-01T00:00:00Z` (compared with `apiGewijzigdOp`)",
            },
            facts=(
                "`apiGewijzigdOp` is when the row last changed in the API (its own `gewijzigdOp` is the "
                "source system's, in local time, and lags). The graph holds live rows only: a tombstone "
                "(`Verwijderd: true`) deletes its node, so a deleted row is never mixed with the live "
                "ones here; the ids deleted by a run are counted in its checkpoint. A placeholder node "
                "(the far end of an edge whose own row is not loaded yet) has no `apiGewijzigdOp` and is "
                "never returned."
            ),
            cypher="""\
MATCH (n:$($label))
WHERE n.apiGewijzigdOp >= datetime($since)
RETURN n.id AS id, n.apiGewijzigdOp AS apiGewijzigdOp
ORDER BY apiGewijzigdOp, id""",
        ),
    )
}
"""Every documented query, by name."""


def _render_query(q: Query) -> str:
    params = "\n".join(f"- `${name}`: {doc}" for name, doc in q.params.items())
    facts = textwrap.fill(q.facts, 110, break_long_words=False, break_on_hyphens=False)
    return f"### {q.title} (`{q.name}`)\n\n{params}\n\n{facts}\n\n```cypher\n{q.cypher}\n```"


def queries_section(queries: Mapping[str, Query] | None = None) -> str:
    """The Markdown of ``queries`` (default :data:`QUERIES`): per query its title, parameters, facts and
    Cypher."""
    queries = QUERIES if queries is None else queries
    return "\n\n".join(_render_query(q) for q in queries.values())


def render(text: str, queries: Mapping[str, Query] | None = None) -> str:
    """``text`` (the page) with the section between the queries markers replaced by
    :func:`queries_section`. Raises ValueError when the markers are missing."""
    pattern = re.compile(re.escape(_BEGIN) + r".*?" + re.escape(_END), re.S)
    if not pattern.search(text):
        raise ValueError(f"{DOC.name}: no markers for the queries (expected a line {_BEGIN!r}).")
    section = queries_section(queries)
    return pattern.sub(lambda _m: f"{_BEGIN}\n{section}\n{_END}", text)


def main(argv: list[str] | None = None) -> int:
    """Rewrite (or ``--check``) the queries section of ``docs/graph-model.md``."""
    p = argparse.ArgumentParser(
        prog=_CMD, description="Rewrite (or check) the queries section of docs/graph-model.md."
    )
    p.add_argument("--check", action="store_true", help="exit 1 when the page differs from QUERIES")
    p.add_argument("--path", type=Path, default=DOC, help=f"the page (default {DOC})")
    args = p.parse_args(argv)
    text = args.path.read_text(encoding="utf-8")
    fresh = render(text)
    if args.check:
        if fresh != text:
            print(
                f"{args.path}: the queries differ from include/loaders/queries.py; run {_CMD}",
                file=sys.stderr,
            )
            return 1
        return 0
    if fresh != text:
        args.path.write_text(fresh, encoding="utf-8")
        print(f"{args.path}: queries regenerated")
    return 0


if __name__ == "__main__":
    sys.exit(main())
