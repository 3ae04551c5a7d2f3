"""Synthetic TK data modelled on the real samples, and deterministic mutations for delta tests.

:func:`generate` makes ``n`` rows per entity of an entity table (``ENTITIES`` by default: the 35 SyncFeed
types), or ``n`` in all in the real proportions, with:

- values shaped like the samples (``2025Z05057``-style numbers, the common ``Soort`` values, local
  ``GewijzigdOp`` with offset, UTC ``ApiGewijzigdOp`` with 7 fractional digits, the sentinels
  ``Volgnummer = -1`` and ``Sluiting = 0001-01-01T00:00:00Z``);
- ``ApiGewijzigdOp`` spread over 2019-2025 with busy days, identical timestamps of bulk re-emits
  (``#127``) and a recent tail;
- ~20% tombstones (``Verwijderd: true``, every field but Id/GewijzigdOp/ApiGewijzigdOp/Verwijderd null);
- the foreign keys and many-to-many links of the table's relationships
  (``Dataset.foreign_keys``, ``Dataset.link_specs``): ``Agendapunt.Activiteit_Id``,
  ``Verslag.Vergadering_Id``, ``Document-Zaak`` …, every one pointing at a generated live row of its
  target (only ~8% of the votes name a member, :data:`_FK_FILL`);
- at least one edge of every relationship whose two ends have live rows, however rare it is;
- with ``proportional=True``, the 35 types in the real proportions (:data:`REAL_SIZES`).

The entities of the mission have hand-written models of their values, and so have the properties the
users' queries look at (:data:`_PROPERTY_VALUES`: vote, actor role, promise status…); every other
property of the table (a new entity's, a new property's) gets a value of its kind (:data:`_KIND_VALUES`),
so a new entry of the table gets generated rows without an edit here.

Invariant kept by :func:`generate` and :func:`mutate`: a tombstone has no links and no foreign keys, and
every link and foreign key of a live row points at a live row. Loads are then order-independent.

:func:`mutate` is the contract for convergence tests (full load, mutate, delta load == fresh full
load): every change it makes gets an ``ApiGewijzigdOp`` later than anything already in the dataset, and
a changed link or foreign key bumps the rows on BOTH ends, so a delta window ``[report.since, …)``
contains every row whose served representation (properties or navigations) changed.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from include.loaders.entities import (
    ENTITIES,
    Entity,
    Kind,
    Relationship,
    table_with,
    with_relationship,
)
from include.tk_replay.dataset import TOMBSTONE_FIELDS, Dataset, format_ticks, parse_ticks

_AMS = ZoneInfo("Europe/Amsterdam")
_START = datetime(2019, 1, 1, tzinfo=UTC)
_END = datetime(2025, 10, 3, tzinfo=UTC)

_ZAAK_SOORT = [("Motie", 60), ("Schriftelijke vragen", 10), ("Amendement", 8), ("Wetgeving", 5)]
_ZAAK_SOORT += [
    ("Brief regering", 8),
    ("Nota van wijziging", 3),
    ("Verzoekschrift", 2),
    ("Initiatiefwetgeving", 1),
]
_DOC_SOORT = [("Motie", 20), ("Bijlage", 18), ("Brief regering", 10), ("Memorie van toelichting", 7)]
_DOC_SOORT += [("Antwoord schriftelijke vragen", 5), ("Lijst van vragen", 5), ("Voorstel van wet", 4)]
_DOC_SOORT += [("Amendement", 6), ("Verslag van een commissiedebat", 5)]
_ACT_SOORT = [("Commissiedebat", 14), ("Procedurevergadering", 14), ("Inbreng feitelijke vragen", 10)]
_ACT_SOORT += [
    ("Plenair debat (tweeminutendebat)", 8),
    ("Inbreng schriftelijk overleg", 5),
    ("Stemmingen", 3),
]
_ACT_STATUS = [("Uitgevoerd", 70), ("Gepland", 15), ("Geannuleerd", 8), ("Verplaatst", 7)]
_WORDS = (
    "begroting defensie onderwijs zorg stikstof woningbouw asiel klimaat energie pensioenen landbouw "
    "jeugdzorg politie digitalisering veiligheid mobiliteit toeslagen gaswinning Groningen onderzoek"
).split()
_PARTIES = ["VVD", "PVV", "GroenLinks-PvdA", "NSC", "D66", "CDA", "SP", "BBB", "PvdD", "DENK", "JA21"]
_COMMISSIES = [("Defensie", "DEF"), ("Financiën", "FIN"), ("Volksgezondheid, Welzijn en Sport", "VWS")]
_COMMISSIES += [("Binnenlandse Zaken", "BIZA"), ("Justitie en Veiligheid", "J&V"), ("Tweede Kamer", "TK")]

_TICKS = 10_000_000


def _weighted(rng: random.Random, table: Sequence[tuple[str, int]]) -> str:
    return rng.choices([v for v, _ in table], weights=[w for _, w in table])[0]


def _guid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _local(ticks: int, rng: random.Random) -> str:
    """``GewijzigdOp``: local Amsterdam time with offset, a little before the API moment, 2-7 digits."""
    lag = rng.choice([2, 5, 30, 300, 3600 * 3]) * rng.random()
    dt = datetime.fromtimestamp(ticks / _TICKS - lag, UTC).astimezone(_AMS)
    frac = f"{dt.microsecond:06d}"[: rng.choice([2, 3, 3, 6])].rstrip("0")
    return dt.strftime("%Y-%m-%dT%H:%M:%S") + (f".{frac}" if frac else "") + dt.strftime("%z")[:3] + ":00"


def _day(ticks: int, rng: random.Random, days: int = 0) -> str:
    dt = datetime.fromtimestamp(ticks / _TICKS, UTC).astimezone(_AMS) - timedelta(days=days)
    dt = dt.replace(hour=0, minute=0, second=0, microsecond=0)
    return dt.isoformat()


def _time(ticks: int, hour: int, minute: int = 0) -> str:
    dt = datetime.fromtimestamp(ticks / _TICKS, UTC).astimezone(_AMS)
    return dt.replace(hour=hour, minute=minute, second=0, microsecond=0).isoformat()


def _vergaderjaar(ticks: int) -> str:
    dt = datetime.fromtimestamp(ticks / _TICKS, UTC)
    y = dt.year if dt.month >= 9 else dt.year - 1
    return f"{y}-{y + 1}"


def _sentence(rng: random.Random, k: int = 6) -> str:
    return " ".join(rng.choice(_WORDS) for _ in range(k)).capitalize()


class _Clock:
    """ApiGewijzigdOp spread like the real API's: uniform years, busy days, bulk re-emits, a recent tail."""

    def __init__(self, rng: random.Random, n: int):
        span = int((_END - _START).total_seconds())
        self.rng = rng
        self.start = int(_START.timestamp()) * _TICKS
        self.span = span * _TICKS
        self.busy = [self.start + rng.randrange(self.span) for _ in range(max(3, n // 400))]
        self.bulk = [self.start + rng.randrange(self.span) + rng.randrange(_TICKS) for _ in range(3)]

    def next(self) -> int:
        r = self.rng.random()
        if r < 0.65:
            return self.start + self.rng.randrange(self.span)
        if r < 0.82:
            return self.rng.choice(self.busy) + self.rng.randrange(3600 * _TICKS)
        if r < 0.92:
            return self.rng.choice(self.bulk)  # identical timestamps: a window edge falls between equals
        return self.start + self.span - self.rng.randrange(2 * 86400 * _TICKS)


def _calendar_day(rng: random.Random, ticks: int) -> str:
    dt = datetime.fromtimestamp(ticks / _TICKS, UTC) - timedelta(days=rng.randrange(0, 20000))
    return dt.date().isoformat()


# Three-word texts drawn once (a fixed seed): one draw per generated text instead of four.
_TEXTS = [_sentence(random.Random(i), 3) for i in range(4096)]

# A value of each kind, for the properties no hand-written model covers.
_KIND_VALUES: dict[Kind, Callable[[random.Random, int], Any]] = {
    Kind.TEXT: lambda rng, ticks: _TEXTS[rng.getrandbits(12)],
    Kind.INT: lambda rng, ticks: rng.randrange(1, 1000),
    Kind.INT_OPT: lambda rng, ticks: rng.randrange(1, 1000) if rng.random() < 0.8 else -1,
    Kind.FLOAT: lambda rng, ticks: round(rng.uniform(0, 1000), 2),
    Kind.DECIMAL: lambda rng, ticks: round(rng.uniform(0, 50_000), 2),
    Kind.BOOL: lambda rng, ticks: rng.random() < 0.5,
    Kind.DATETIME: lambda rng, ticks: _day(ticks, rng, rng.randrange(0, 60)),
    Kind.DATE: _calendar_day,
    Kind.DAY: lambda rng, ticks: _day(ticks, rng, rng.randrange(0, 3000)),
}

# Hand-written values for the properties the queries users ask look at (tk-api/SYNCFEED.md section 5):
# how a party voted and with how many seats, who submitted a case, whether a promise is kept.
_STEMMING_SOORT = [("Voor", 50), ("Tegen", 45), ("Niet deelgenomen", 5)]
_ACTOR_RELATIE = [("Indiener", 30), ("Medeindiener", 40), ("Rapporteur", 5), ("Volgcommissie", 10)]
_ACTOR_RELATIE += [("Voortouwcommissie", 10), ("Ondertekenaar", 5)]
_TOEZEGGING_STATUS = [("Openstaand", 40), ("Voldaan", 45), ("Deels Voldaan", 10), ("Vervallen", 5)]
_PROPERTY_VALUES: dict[tuple[str, str], Callable[[random.Random, int], Any]] = {
    ("Stemming", "Soort"): lambda rng, ticks: _weighted(rng, _STEMMING_SOORT),
    ("Stemming", "ActorFractie"): lambda rng, ticks: rng.choice(_PARTIES),
    ("Stemming", "FractieGrootte"): lambda rng, ticks: rng.randrange(1, 38),
    ("Stemming", "Vergissing"): lambda rng, ticks: rng.random() < 0.01,
    ("ZaakActor", "Relatie"): lambda rng, ticks: _weighted(rng, _ACTOR_RELATIE),
    ("DocumentActor", "Relatie"): lambda rng, ticks: _weighted(rng, _ACTOR_RELATIE),
    ("ZaakActor", "ActorFractie"): lambda rng, ticks: rng.choice(_PARTIES),
    ("Toezegging", "Status"): lambda rng, ticks: _weighted(rng, _TOEZEGGING_STATUS),
    ("Toezegging", "Ministerie"): lambda rng, ticks: f"Ministerie van {rng.choice(_COMMISSIES)[0]}",
    ("Fractie", "Afkorting"): lambda rng, ticks: rng.choice(_PARTIES),
    ("Fractie", "AantalZetels"): lambda rng, ticks: rng.randrange(1, 38),
    ("Persoon", "Geslacht"): lambda rng, ticks: rng.choice(["man", "vrouw"]),
    ("Persoon", "Functie"): lambda rng, ticks: rng.choice(["Tweede Kamerlid", "Oud Kamerlid", "Minister"]),
    ("Commissie", "Afkorting"): lambda rng, ticks: rng.choice(_COMMISSIES)[1],
    ("Commissie", "NaamNL"): lambda rng, ticks: f"Vaste commissie voor {rng.choice(_COMMISSIES)[0]}",
    # text properties the SyncFeed XSD types as a (partial) date, CCYY-MM-DD or CCYY
    **{
        (entity, prop): (lambda rng, ticks: _calendar_day(rng, ticks)[: rng.choice([4, 10])])
        for entity, props in (
            ("PersoonLoopbaan", ("Van", "TotEnMet")),
            ("PersoonOnderwijs", ("Van", "TotEnMet")),
            ("PersoonReis", ("Van", "TotEnMet")),
            ("PersoonNevenfunctie", ("PeriodeVan", "PeriodeTotEnMet")),
        )
        for prop in props
    },
}

REAL_SIZES: Mapping[str, int] = {
    # current entities per type in the opentk full sync of April 2026 (tk-api/SYNCFEED.md section 3)
    "Stemming": 975_940, "ZaakActor": 842_993, "Besluit": 654_018, "Document": 594_708,
    "DocumentVersie": 594_708, "DocumentActor": 579_165, "Agendapunt": 313_422, "Zaak": 295_578,
    "ActiviteitActor": 292_618, "Activiteit": 71_539, "Reservering": 24_880, "Verslag": 22_822,
    "CommissieZetel": 8_756, "Kamerstukdossier": 7_650, "Vergadering": 7_317, "Toezegging": 5_867,
    "Persoon": 3_079, "Fractie": 59, "Zaal": 64,
    # not in section 3: estimates from the sizes of their parents (about 4,500 persons, 150 committees)
    "Commissie": 150, "CommissieContactinformatie": 300, "CommissieZetelVastPersoon": 12_000,
    "CommissieZetelVastVacature": 1_500, "CommissieZetelVervangerPersoon": 10_000,
    "CommissieZetelVervangerVacature": 1_500, "FractieZetel": 3_000, "FractieZetelPersoon": 6_000,
    "FractieZetelVacature": 500, "PersoonContactinformatie": 6_000, "PersoonGeschenk": 4_000,
    "PersoonLoopbaan": 15_000, "PersoonNevenfunctie": 12_000, "PersoonNevenfunctieInkomsten": 6_000,
    "PersoonOnderwijs": 8_000, "PersoonReis": 3_000,
}  # fmt: skip
"""Rows per type in the real data (``proportional`` generation keeps these ratios). A type of a table
that is not listed (a test's copy with a new entry) gets :data:`DEFAULT_SIZE`."""

DEFAULT_SIZE = 1_000


def real_counts(total: int, names: Sequence[str]) -> dict[str, int]:
    """About ``total`` rows split over ``names`` in the proportions of :data:`REAL_SIZES`, at least one of
    each type (so ``total >= len(names)`` gives every type a row; the sum may then exceed ``total``)."""
    sizes = {name: REAL_SIZES.get(name, DEFAULT_SIZE) for name in names}
    whole = sum(sizes.values()) or 1
    return {name: max(1, round(total * size / whole)) if total > 0 else 0 for name, size in sizes.items()}


# Share of live rows whose foreign key is set (default: all): only ~8% of the votes name a member
# (roll-call votes, SYNCFEED.md section 3); an actor is mostly a person or a party, seldom a committee.
_FK_FILL = {
    ("Stemming", "Persoon_Id"): 0.08,
    ("ZaakActor", "Commissie_Id"): 0.15,
    ("DocumentActor", "Commissie_Id"): 0.15,
    ("ActiviteitActor", "Commissie_Id"): 0.15,
    ("Activiteit", "Voortouwcommissie_Id"): 0.8,
}


def kind_value(kind: Kind, rng: random.Random, ticks: int) -> Any:
    """A generated value of ``kind``; a clear error for a kind the generator has no values for."""
    try:
        make = _KIND_VALUES[kind]
    except KeyError:
        raise ValueError(
            f"The generator has no values for kind {kind.name}: add it to _KIND_VALUES."
        ) from None
    return make(rng, ticks)


def kamerstukdossier_table(table: Mapping[str, Entity] | None = None) -> Mapping[str, Entity]:
    """``table`` (default ``ENTITIES``) with Kamerstukdossier and its links from Zaak and Document.

    :data:`ENTITIES` holds Kamerstukdossier (and Zaak's ``IN_DOSSIER``, Document's
    ``DOCUMENT_IN_DOSSIER``): it is returned as it is. A table without it (a test's) gets it added, so
    the replay server's ``--kamerstukdossier`` works for any table.
    """
    table = ENTITIES if table is None else table
    if "Kamerstukdossier" in table:
        return table
    dossier = Entity(
        name="Kamerstukdossier",
        loader="load_kamerstukdossiers",
        doc="A parliamentary file (dossier) of documents and cases.",
        properties={
            "Titel": Kind.TEXT,
            "Citeertitel": Kind.TEXT,
            "Alias": Kind.TEXT,
            "Nummer": Kind.INT,
            "Toevoeging": Kind.TEXT,
            "HoogsteVolgnummer": Kind.INT,
            "Afgesloten": Kind.BOOL,
            "Kamer": Kind.TEXT,
        },
    )
    zaak = with_relationship(table["Zaak"], Relationship("IN_DOSSIER", dossier.name, navigation=dossier.name))
    document = with_relationship(
        table["Document"], Relationship("DOCUMENT_IN_DOSSIER", dossier.name, navigation=dossier.name)
    )
    return table_with(dossier, zaak, document, table=table)


def new_row(
    entity_set: str, rng: random.Random, ticks: int, seq: int, entity: Entity | None = None
) -> dict[str, Any]:
    """One live row of ``entity_set`` with canonical names (foreign keys left None for the caller).

    ``entity`` is its entry in the dataset's table (default: ``ENTITIES[entity_set]``): the properties
    of the entry that the hand-written models do not give get a value of their kind.
    """
    entity = entity if entity is not None else ENTITIES.get(entity_set)
    if entity is None and entity_set not in _MODELLED:
        raise ValueError(
            f"The generator has no model for entity set {entity_set!r}: it is in no entity table."
        )
    year = datetime.fromtimestamp(ticks / _TICKS, UTC).year
    base: dict[str, Any] = {"Id": _guid(rng)}
    if entity_set == "Zaak":
        soort = _weighted(rng, _ZAAK_SOORT)
        base |= {
            "Nummer": f"{year}Z{seq % 100000:05d}",
            "Soort": soort,
            "Titel": _sentence(rng, 4),
            "Citeertitel": None,
            "Alias": None,
            "Status": rng.choice(["Vrijgegeven", "Vrijgegeven", "Onbekend"]),
            "Onderwerp": f"{soort} van het lid {rng.choice(_PARTIES)} over {_sentence(rng, 5).lower()}",
            "GestartOp": _day(ticks, rng, rng.randrange(0, 200)),
            "Organisatie": "Tweede Kamer",
            "Grondslagvoorhang": None,
            "Termijn": _day(ticks, rng, -rng.randrange(10, 60)) if rng.random() < 0.3 else None,
            "Vergaderjaar": _vergaderjaar(ticks),
            "Volgnummer": rng.randrange(1, 900) if rng.random() < 0.8 else -1,
            "HuidigeBehandelstatus": None,
            "Afgedaan": rng.random() < 0.7,
            "GrootProject": rng.random() < 0.01,
        }
    elif entity_set == "Document":
        base |= {
            "Soort": _weighted(rng, _DOC_SOORT),
            "DocumentNummer": f"{year}D{seq % 100000:05d}",
            "Titel": _sentence(rng, 5),
            "Onderwerp": _sentence(rng, 8),
            "Datum": _day(ticks, rng),
            "Vergaderjaar": _vergaderjaar(ticks),
            "Kamer": 2,
            "Volgnummer": rng.randrange(1, 400) if rng.random() < 0.6 else -1,
            "Citeertitel": None,
            "Alias": None,
            "DatumRegistratie": _day(ticks, rng),
            "DatumOntvangst": _day(ticks, rng, 2) if rng.random() < 0.3 else None,
            "Aanhangselnummer": None,
            "KenmerkAfzender": None,
            "Organisatie": "Tweede Kamer",
            "ContentType": "application/pdf",
            "ContentLength": rng.randrange(20_000, 900_000),
            "HuidigeDocumentVersie_Id": None,
        }
    elif entity_set == "Activiteit":
        naam, afk = rng.choice(_COMMISSIES)
        base |= {
            "Soort": _weighted(rng, _ACT_SOORT),
            "Nummer": f"{year}A{seq % 100000:05d}",
            "Onderwerp": _sentence(rng, 6),
            "DatumSoort": "Dag",
            "Datum": _day(ticks, rng),
            "Aanvangstijd": _time(ticks, 10),
            "Eindtijd": _time(ticks, 13),
            "Locatie": rng.choice([None, "Thorbeckezaal", "Plenaire zaal"]),
            "Besloten": rng.random() < 0.2,
            "Status": _weighted(rng, _ACT_STATUS),
            "Vergaderjaar": _vergaderjaar(ticks),
            "Kamer": "Tweede Kamer",
            "Noot": None,
            "VRSNummer": None,
            "SidVoortouw": f"S-1-365867521-{rng.randrange(10**9)}",
            "Voortouwnaam": naam,
            "Voortouwafkorting": afk,
            "Voortouwkortenaam": naam,
            "Voortouwcommissie_Id": None,
            # the deadlines of written procedures: absent on almost every activity of the samples
            "Aanvraagdatum": None,
            "DatumVerzoekEersteVerlenging": None,
            "DatumMededelingEersteVerlenging": None,
            "DatumVerzoekTweedeVerlenging": None,
            "DatumMededelingTweedeVerlenging": None,
            "Vervaldatum": None,
        }
    elif entity_set == "Agendapunt":
        base |= {
            "Nummer": f"{year}P{seq % 100000:05d}",
            "Onderwerp": _sentence(rng, 6),
            "Aanvangstijd": None,
            "Eindtijd": None,
            "Volgorde": rng.randrange(1, 30),
            "Rubriek": None,
            "Noot": f"<strong>{_sentence(rng, 5)}</strong>" if rng.random() < 0.3 else None,
            "Status": "Vrijgegeven",
            "Activiteit_Id": None,
        }
    elif entity_set == "Vergadering":
        plenair = rng.random() < 0.6
        nr = rng.randrange(1, 110)
        base |= {
            "Soort": "Plenair" if plenair else "Commissie",
            "Titel": f"{nr}e vergadering",
            "Zaal": "Plenaire zaal" if plenair else "Thorbeckezaal",
            "Vergaderjaar": _vergaderjaar(ticks),
            "VergaderingNummer": nr,
            "Datum": _day(ticks, rng),
            "Aanvangstijd": _time(ticks, 10, 15),
            "Sluiting": "0001-01-01T00:00:00Z" if rng.random() < 0.1 else _time(ticks, 23, 58),
            "Kamer": "Tweede Kamer",
        }
    elif entity_set == "Verslag":
        base |= {
            "Soort": rng.choice(["Tussenpublicatie", "Eindpublicatie", "Voorpublicatie"]),
            "Status": rng.choice(["Ongecorrigeerd", "Gecorrigeerd"]),
            "ContentType": "text/xml",
            "ContentLength": rng.randrange(5_000, 2_000_000),
            "Vergadering_Id": None,
        }
    elif entity_set == "Kamerstukdossier":
        base |= {
            "Titel": _sentence(rng, 5),
            "Citeertitel": None,
            "Alias": None,
            "Nummer": 30000 + seq % 7000,
            "Toevoeging": rng.choice([None, None, "X", "VI"]),
            "HoogsteVolgnummer": rng.randrange(1, 200),
            "Afgesloten": rng.random() < 0.3,
            "Kamer": "Tweede Kamer",
        }
    base["GewijzigdOp"] = _local(ticks, rng)
    base["ApiGewijzigdOp"] = format_ticks(ticks)
    base["Verwijderd"] = False
    if entity_set == "Zaak":
        base["Kabinetsappreciatie"] = rng.choice([None, None, "Oordeel Kamer", "Ontraden", "Overgenomen"])
    if entity is not None:  # after the models: their random draws stay what they were
        for prop, kind in entity.all_properties.items():
            if prop not in base:
                model = _PROPERTY_VALUES.get((entity_set, prop))
                base[prop] = model(rng, ticks) if model is not None else kind_value(kind, rng, ticks)
        for fk in entity.foreign_keys:
            base.setdefault(fk, None)
    return base


_MODELLED = ("Zaak", "Document", "Activiteit", "Agendapunt", "Vergadering", "Verslag", "Kamerstukdossier")


def tombstone(
    row: dict[str, Any], ticks: int | None = None, gewijzigd_op: str | None = None
) -> dict[str, Any]:
    """``row`` as a tombstone: every field null but Id, GewijzigdOp, ApiGewijzigdOp; Verwijderd true."""
    out = {k: (row[k] if k in TOMBSTONE_FIELDS else None) for k in row}
    out["Verwijderd"] = True
    if ticks is not None:
        out["ApiGewijzigdOp"] = format_ticks(ticks)
    if gewijzigd_op is not None:
        out["GewijzigdOp"] = gewijzigd_op
    return out


# Links per left row: (min, max) right rows, and the chance of having any (other link tables: default).
_LINK_FANOUT = {
    "Document-Zaak": (1, 3, 0.8),
    "Besluit-Zaak": (1, 1, 0.95),
    "Reservering-Activiteit": (1, 1, 0.9),
    "Reservering-Zaal": (1, 1, 0.95),
    "Toezegging-Activiteit": (1, 1, 0.9),
    "Toezegging.ToegezegdAanFractie-Fractie": (1, 1, 0.4),
    "Toezegging.ToegezegdAanPersoon-Persoon": (1, 1, 0.4),
    "Toezegging.IsHerhalingVan-Toezegging": (1, 1, 0.05),
    "Toezegging.IsAanvullingOp-Toezegging": (1, 1, 0.05),
    "Toezegging.IsWijzigingVan-Toezegging": (1, 1, 0.05),
    "Zaak.GerelateerdVanuit-Zaak": (1, 1, 0.1),
    "Zaak.VervangenVanuit-Zaak": (1, 1, 0.02),
    "Activiteit.VoortgezetVanuit-Activiteit": (1, 1, 0.05),
    "Activiteit.VervangenVanuit-Activiteit": (1, 1, 0.05),
    "Document.BronDocument-Document": (1, 1, 0.2),
    "Zaak-Agendapunt": (1, 2, 0.4),
    "Zaak-Activiteit": (1, 2, 0.3),
    "Document-Activiteit": (1, 2, 0.3),
    "Document-Agendapunt": (1, 1, 0.2),
    "Zaak-Kamerstukdossier": (1, 1, 0.5),
    "Document-Kamerstukdossier": (1, 1, 0.5),
}
_DEFAULT_FANOUT = (1, 2, 0.4)


def _current_versions(ds: Dataset, live: Mapping[str, list[str]]) -> None:
    """A document's current version is one of its own versions (the highest number), or none."""
    if "DocumentVersie" not in live or "Document" not in live:
        return
    best: dict[str, tuple[int, str]] = {}
    for vid in live["DocumentVersie"]:
        row = ds.rows["DocumentVersie"][vid]
        doc = row.get("Document_Id")
        if doc is not None and (doc not in best or best[doc][0] < (row.get("Versienummer") or 0)):
            best[doc] = (row.get("Versienummer") or 0, vid)
    for did in live["Document"]:
        row = ds.rows["Document"][did]
        if "HuidigeDocumentVersie_Id" in row:
            row["HuidigeDocumentVersie_Id"] = best[did][1] if did in best else None


def generate(
    n: int,
    seed: int = 0,
    sets: Sequence[str] | None = None,
    tombstone_rate: float = 0.2,
    with_kamerstukdossier: bool = False,
    entities: Mapping[str, Entity] | None = None,
    proportional: bool = False,
) -> Dataset:
    """``n`` rows per entity set, deterministic for (``n``, ``seed``, ``sets``, ``tombstone_rate``, table,
    ``proportional``).

    ``entities`` is the entity table the dataset serves (default ``ENTITIES``); ``sets`` chooses which
    of its entities to fill (default: all; links and foreign keys only among those);
    ``with_kamerstukdossier`` adds Kamerstukdossier (:func:`kamerstukdossier_table`) to both.
    ``proportional``: ``n`` is the total instead, split over the sets in the real proportions
    (:func:`real_counts`; ``generate(365_000, proportional=True)`` is the parliament at 1/20).
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    table = ENTITIES if entities is None else entities
    if with_kamerstukdossier:
        table = kamerstukdossier_table(table)
    sets = tuple(table) if sets is None else tuple(sets)
    if with_kamerstukdossier and "Kamerstukdossier" not in sets:
        sets += ("Kamerstukdossier",)
    unknown = [s for s in sets if s not in table]
    if unknown:
        raise ValueError(f"The generator has no model for {unknown}: the entity table holds {list(table)}")
    rng = random.Random(seed)
    clock = _Clock(rng, n)
    ds = Dataset(entities=table)
    counts = real_counts(n, sets) if proportional else dict.fromkeys(sets, n)
    for name in sets:
        rows = ds.rows[name]
        for seq in range(counts[name]):
            row = new_row(name, rng, clock.next(), seq + 1, table[name])
            rows[row["Id"]] = row
    live = {name: [i for i in ds.sorted_ids(name) if rng.random() >= tombstone_rate] for name in sets}
    for name in sets:
        alive = set(live[name])
        for rid, row in list(ds.rows[name].items()):
            if rid not in alive:
                ds.rows[name][rid] = tombstone(row)
    for fk in ds.foreign_keys:
        if fk.source in sets and fk.target in sets and live[fk.target]:
            fill = _FK_FILL.get((fk.source, fk.column), 1.0)
            rows = ds.rows[fk.source]
            for rid in live[fk.source]:
                if fill >= 1.0 or rng.random() < fill:
                    rows[rid][fk.column] = rng.choice(live[fk.target])
            if live[fk.source] and not any(rows[rid][fk.column] for rid in live[fk.source]):
                rows[live[fk.source][0]][fk.column] = rng.choice(live[fk.target])  # every edge type occurs
    _current_versions(ds, live)
    for spec in ds.link_specs:
        if spec.left in sets and spec.right in sets and live[spec.right]:
            lo, hi, p = _LINK_FANOUT.get(spec.name, _DEFAULT_FANOUT)
            pairs = ds.links[spec.name]
            for rid in live[spec.left]:
                if rng.random() < p:
                    for target in rng.sample(
                        live[spec.right], min(len(live[spec.right]), rng.randint(lo, hi))
                    ):
                        pairs.add((rid, target))
            if not pairs and live[spec.left]:  # every edge type occurs, however rare
                pairs.add((rng.choice(live[spec.left]), rng.choice(live[spec.right])))
    ds.touch()
    return ds


@dataclass
class MutationReport:
    """What :func:`mutate` changed.

    Attributes:
        since: the earliest new ``ApiGewijzigdOp`` (a delta window starting here sees every change).
        until: the latest new ``ApiGewijzigdOp``.
        changed, created, tombstoned: entity set -> Ids whose properties changed, new rows, new tombstones.
        links_added, links_removed: link table name -> (left Id, right Id) pairs.
        fk_changed: entity set -> Ids whose foreign key now points elsewhere.
        bumped: entity set -> every Id that got a new ``ApiGewijzigdOp`` (all of the above plus link ends).
    """

    since: datetime
    until: datetime
    changed: dict[str, list[str]] = field(default_factory=dict)
    created: dict[str, list[str]] = field(default_factory=dict)
    tombstoned: dict[str, list[str]] = field(default_factory=dict)
    links_added: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    links_removed: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    fk_changed: dict[str, list[str]] = field(default_factory=dict)
    bumped: dict[str, list[str]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (the admin endpoint returns it)."""
        return {
            "since": self.since.isoformat(),
            "until": self.until.isoformat(),
            **{
                k: getattr(self, k)
                for k in (
                    "changed",
                    "created",
                    "tombstoned",
                    "links_added",
                    "links_removed",
                    "fk_changed",
                    "bumped",
                )
            },
        }


def mutate(
    ds: Dataset,
    seed: int,
    fraction: float = 0.05,
    at: datetime | None = None,
    sets: Sequence[str] | None = None,
) -> MutationReport:
    """Change ``ds`` in place, deterministically for (dataset, ``seed``, ``fraction``, ``at``).

    Per entity set (``sets``, default: every set with rows that the dataset's entity table holds), about
    ``fraction`` of the live rows get a changed property (``Onderwerp``/``Titel``/``Status``…), half as
    many become tombstones (their links are removed and their referrers re-pointed), half as many new rows
    appear with links; per link table as many links are added and removed; some foreign keys move. Every
    touched row - both ends of each added or removed link, old and new targets of a moved foreign key -
    gets a fresh ``ApiGewijzigdOp``, strictly increasing from ``at`` (default: one hour after the latest
    ``ApiGewijzigdOp`` in the dataset, so ``report.since`` lies after everything already loaded).
    """
    rng = random.Random(seed)
    with ds.lock:
        sets = [s for s in (sets or ds.entity_sets_with_rows()) if s in ds.entities]
        latest = max(
            (
                ds.ticks(r["ApiGewijzigdOp"])
                for s in ds.entity_sets_with_rows()
                for r in ds.rows[s].values()
                if r.get("ApiGewijzigdOp")
            ),
            default=int(_END.timestamp()) * _TICKS,
        )
        tick = [int(at.timestamp() * _TICKS) if at else latest + 3600 * _TICKS]
        first = tick[0]
        bumped: dict[str, set[str]] = {s: set() for s in ds.rows}

        def bump(entity_set: str, rid: str) -> None:
            row = ds.rows[entity_set][rid]
            tick[0] += 10_000  # 1 ms apart: deterministic and strictly increasing
            row["ApiGewijzigdOp"] = format_ticks(tick[0])
            row["GewijzigdOp"] = _local(tick[0], rng)
            bumped[entity_set].add(rid)

        report = MutationReport(since=datetime.now(UTC), until=datetime.now(UTC))
        live = {s: ds.live_ids(s) for s in sets}
        k_of = {s: max(1, int(len(live[s]) * fraction)) if live[s] else 0 for s in sets}

        # 1. property changes
        for s in sets:
            chosen = rng.sample(live[s], k_of[s])
            for rid in chosen:
                row = ds.rows[s][rid]
                for prop in ("Onderwerp", "Titel", "Status", "Soort"):
                    if prop in row:
                        row[prop] = f"{row[prop] or ''} (gewijzigd {seed})".strip()
                        break
                bump(s, rid)
            report.changed[s] = sorted(chosen)

        # 2. tombstones: links go, referrers are re-pointed, both ends bumped
        for s in sets:
            candidates = [i for i in live[s] if i not in report.changed[s]]
            chosen = rng.sample(candidates, min(len(candidates), max(1, k_of[s] // 2)) if k_of[s] else 0)
            for rid in chosen:
                for spec, is_left in ds.iter_links(s):
                    gone = [p for p in ds.links[spec.name] if p[0 if is_left else 1] == rid]
                    for pair in gone:
                        ds.links[spec.name].discard(pair)
                        other_set, other = (spec.right, pair[1]) if is_left else (spec.left, pair[0])
                        bump(other_set, other)
                        report.links_removed.setdefault(spec.name, []).append(pair)
                for fk in ds.foreign_keys:
                    src, column = fk.source, fk.column
                    if fk.target == s and src in ds.rows:
                        others = [i for i in live[s] if i != rid and i not in chosen]
                        for src_id, src_row in ds.rows[src].items():
                            if src_row.get(column) == rid:
                                src_row[column] = rng.choice(others) if others else None
                                bump(src, src_id)
                                if src_row[column]:
                                    bump(s, src_row[column])
                                report.fk_changed.setdefault(src, []).append(src_id)
                tick[0] += 10_000
                ds.rows[s][rid] = tombstone(ds.rows[s][rid], tick[0], _local(tick[0], rng))
                bumped[s].add(rid)
            report.tombstoned[s] = sorted(chosen)
            live[s] = [i for i in live[s] if i not in set(chosen)]

        # 3. new rows, with foreign keys
        for s in sets:
            created = []
            for j in range(max(1, k_of[s] // 2) if k_of[s] else 0):
                tick[0] += 10_000
                row = new_row(s, rng, tick[0], 90000 + j, ds.entities[s])
                for fk in ds.foreign_keys:
                    if fk.source == s and fk.target in live and live[fk.target]:
                        row[fk.column] = rng.choice(live[fk.target])
                        bump(fk.target, row[fk.column])
                ds.rows[s][row["Id"]] = row
                bumped[s].add(row["Id"])
                created.append(row["Id"])
            report.created[s] = created
            live[s] = live[s] + created

        # 4. links added and removed (new rows get links here too)
        for spec in ds.link_specs:
            if spec.left not in live or spec.right not in live or not live[spec.left] or not live[spec.right]:
                continue
            pairs = ds.links[spec.name]
            k = max(1, int(len(pairs) * fraction)) if pairs else max(1, k_of[spec.left])
            added = []
            for left in report.created[spec.left] + rng.sample(live[spec.left], min(k, len(live[spec.left]))):
                pair = (left, rng.choice(live[spec.right]))
                if pair not in pairs:
                    pairs.add(pair)
                    added.append(pair)
                    bump(spec.left, pair[0])
                    bump(spec.right, pair[1])
            removable = sorted(p for p in pairs if p not in set(added))
            removed = rng.sample(removable, min(k, len(removable)))
            for pair in removed:
                pairs.discard(pair)
                bump(spec.left, pair[0])
                bump(spec.right, pair[1])
            report.links_added.setdefault(spec.name, []).extend(added)
            report.links_removed.setdefault(spec.name, []).extend(removed)

        # 5. foreign keys moved: the row and both targets change
        for fk in ds.foreign_keys:
            src, column, target = fk.source, fk.column, fk.target
            if src in live and target in live and len(live[target]) > 1:
                for rid in rng.sample(live[src], min(len(live[src]), k_of[src])):
                    row = ds.rows[src][rid]
                    old = row.get(column)
                    new = rng.choice([t for t in live[target] if t != old])
                    row[column] = new
                    bump(src, rid)
                    bump(target, new)
                    if old:
                        bump(target, old)
                    report.fk_changed.setdefault(src, []).append(rid)

        report.bumped = {s: sorted(ids) for s, ids in bumped.items() if ids}
        report.since = datetime.fromtimestamp(first / _TICKS, UTC)
        report.until = datetime.fromtimestamp(tick[0] / _TICKS, UTC) + timedelta(microseconds=1)
        ds.touch()
    return report


__all__ = [
    "MutationReport",
    "generate",
    "kamerstukdossier_table",
    "kind_value",
    "mutate",
    "new_row",
    "parse_ticks",
    "real_counts",
    "tombstone",
]
