"""The SyncFeed format both ways: the reader (include/loaders/syncfeed.py) and the writer
(include/tk_replay/syncfeed_atom.py).

Each quirk of the live feed (../shared/tk-api/SYNCFEED.md §2) has its own test, on the verbatim examples of
SYNCFEED.md and on pages the writer builds; writer output validates against the official XSDs.

The HTTP tests of :class:`SyncFeedClient` (retries, credentials, streaming memory) run against a minimal
real HTTP server defined here, which serves only pages made by the writer: the offline server's SyncFeed
routes do not exist yet. They are meant to move to ``include/tk_replay``'s server once it serves the feed.
"""

from __future__ import annotations

import base64
import io
import itertools
import logging
import socket
import struct
import threading
import time
import tracemalloc
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import pytest
from lxml import etree

from include.loaders.api import ApiError
from include.loaders.metrics import ApiMetrics
from include.loaders.settings import ApiSettings
from include.loaders.syncfeed import (
    CATEGORIES,
    FeedFormatError,
    SyncFeedClient,
    canonical_category,
    iter_feed_page,
    parse_entity,
    parse_feed_page,
    parse_feed_time,
)
from include.tk_replay.syncfeed_atom import (
    AtomEntry,
    entity_document,
    entity_element,
    feed_page,
    feed_page_chunks,
    format_feed_time,
)

ROOT = Path(__file__).resolve().parent.parent
XSD_DIR = ROOT.parent / "shared" / "tk-api" / "syncfeed-xsd"
XS = "{http://www.w3.org/2001/XMLSchema}"
BASE = "https://gegevensmagazijn.tweedekamer.nl/SyncFeed/2.0"
T0 = datetime(2023, 8, 29, 11, 10, 24, 96203, tzinfo=UTC)
HANG = 1.0  # seconds the test server stays silent for the hang faults
FAST = dict(connect_timeout=2.0, read_timeout=2.0, backoff_base=0.001, backoff_max=0.002, max_retries=6)

# --- the verbatim examples of SYNCFEED.md §2 ---------------------------------------------------------
WETSUITE_ENTRY = """<entry>
  <title>808fcd50-a0dc-4f60-8b9d-c404a2eb5b2e</title>
  <id>https://gegevensmagazijn.tweedekamer.nl/SyncFeed/2.0/Entiteiten/808fcd50-a0dc-4f60-8b9d-c404a2eb5b2e</id>
  <author><name>Tweede Kamer der Staten-Generaal</name></author>
  <updated>2023-08-29T13:23:13Z</updated>
  <category term="fractieZetelPersoon"/>
  <link rel="next" href="https://gegevensmagazijn.tweedekamer.nl/SyncFeed/2.0/Feed?category=FractieZetelPersoon&amp;skiptoken=16687327"/>
  <content type="application/xml">
    <fractieZetelPersoon id="808fcd50-a0dc-4f60-8b9d-c404a2eb5b2e" bijgewerkt="2023-08-29T11:10:24Z" verwijderd="false">
      <fractieZetel ref="ca826e72-cf57-4cca-b090-d5c444ec6c2d"/>
      <persoon ref="ec273841-069f-408b-b434-8524904ae314"/>
      <functie>Lid</functie>
      <van>2002-05-23</van>
      <totEnMet>2010-10-11</totEnMet>
    </fractieZetelPersoon>
  </content>
</entry>"""  # noqa: E501

MONITOR_PAYLOAD = """<commissieZetelVastPersoon xmlns:tk="http://www.tweedekamer.nl/xsd/tkData/v1-0" xmlns="http://www.tweedekamer.nl/xsd/tkData/v1-0" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" id="c8db0181-90e3-4df3-a150-4c004584b160" tk:bijgewerkt="2023-08-29T11:09:59Z" tk:verwijderd="false">
<commissieZetel ref="b668259b-ff96-49b5-9796-9dd303625aaf"/>
<persoon ref="16ed90a7-8b21-43a5-916c-76f07231325a"/>
<functie>Lid</functie>
<van>1996-05-07</van>
<totEnMet>2006-11-29</totEnMet>
</commissieZetelVastPersoon>"""  # noqa: E501


def guid(n: int) -> str:
    return f"{n:08x}-0000-4000-8000-{n:012x}"


def xsd_order(type_name: str) -> list[str]:
    """The element sequence of a type in its XSD (what the offline server passes as ``order``)."""
    tree = etree.parse(str(XSD_DIR / f"tkData-v1-0-{type_name.lower()}.xsd"))
    return [e.get("name") for e in tree.iter(f"{XS}element") if e.getparent().tag == f"{XS}sequence"]


@pytest.fixture(scope="module")
def schema() -> etree.XMLSchema:
    main = XSD_DIR / "tkData-v1-0.xsd"
    if not main.exists():
        pytest.fail(f"The SyncFeed XSDs are not at {XSD_DIR}: check out ../shared beside the repository.")
    return etree.XMLSchema(etree.parse(str(main)))


def page_of(*entries: AtomEntry, category: str, next_skiptoken: int | None = None, **kw) -> bytes:
    return feed_page(BASE, category, entries, next_skiptoken, **kw)


def atom(category: str, n: int, skiptoken: int, content: bytes, **kw) -> AtomEntry:
    return AtomEntry(guid(n), category, skiptoken, T0, content, **kw)


# --- the verbatim examples ------------------------------------------------------------------------------
def test_the_real_entry_of_syncfeed_md_reads_with_its_resume_point_and_refs():
    body = f'<feed xmlns="http://www.w3.org/2005/Atom">{WETSUITE_ENTRY}</feed>'.encode()
    page = parse_feed_page(body, f"{BASE}/Feed?category=FractieZetelPersoon")
    (entry,) = page.entries
    assert entry.id == "808fcd50-a0dc-4f60-8b9d-c404a2eb5b2e"
    assert entry.category == "FractieZetelPersoon"
    assert entry.skiptoken == 16687327
    assert entry.updated == datetime(2023, 8, 29, 13, 23, 13, tzinfo=UTC)
    assert entry.source_time == datetime(2023, 8, 29, 11, 10, 24, tzinfo=UTC)
    assert entry.deleted is False
    assert entry.refs == {
        "fractieZetel": ("ca826e72-cf57-4cca-b090-d5c444ec6c2d",),
        "persoon": ("ec273841-069f-408b-b434-8524904ae314",),
    }
    assert entry.fields == {"functie": "Lid", "van": "2002-05-23", "totEnMet": "2010-10-11"}
    assert page.position == 16687327
    assert page.caught_up  # the example page has no feed-level next link


def test_the_real_payload_with_its_namespaces_reads():
    entry = parse_entity(etree.fromstring(MONITOR_PAYLOAD.encode()))
    assert (entry.id, entry.category, entry.deleted) == (
        "c8db0181-90e3-4df3-a150-4c004584b160",
        "CommissieZetelVastPersoon",
        False,
    )
    assert entry.source_time == datetime(2023, 8, 29, 11, 9, 59, tzinfo=UTC)
    assert entry.refs["commissieZetel"] == ("b668259b-ff96-49b5-9796-9dd303625aaf",)
    assert entry.fields == {"functie": "Lid", "van": "1996-05-07", "totEnMet": "2006-11-29"}


# --- the quirks of deliverable 1, one test each -----------------------------------------------------------
def test_default_namespace_and_ns1_forms_read_alike():
    kw = dict(
        bijgewerkt=T0,
        fields=[("nummer", "TZ202301-001"), ("status", "Open"), ("ministerie", "Financiën")],
        refs=[("toegezegdAanFractie", guid(7)), ("activiteit", guid(8))],
    )
    plain = entity_element("Toezegging", guid(1), **kw)
    prefixed = entity_element("Toezegging", guid(1), prefixed=True, **kw)
    assert b"<ns1:toezegging" in prefixed and b"<ns1:nummer>" in prefixed and b'xmlns="' not in prefixed
    a = parse_feed_page(page_of(atom("Toezegging", 1, 5, plain), category="Toezegging")).entries[0]
    b = parse_feed_page(page_of(atom("Toezegging", 1, 5, prefixed), category="Toezegging")).entries[0]
    assert a == b
    assert a.fields["ministerie"] == "Financiën" and a.refs["activiteit"] == (guid(8),)


def test_names_are_read_by_namespace_not_by_prefix():
    tk = "http://www.tweedekamer.nl/xsd/tkData/v1-0"
    odd = f'<x:zaal xmlns:x="{tk}" id="{guid(1)}" x:bijgewerkt="2023-08-29T11:10:24Z" x:verwijderd="false"><x:naam>A</x:naam></x:zaal>'  # noqa: E501
    entry = parse_entity(etree.fromstring(odd.encode()))
    assert (entry.category, entry.fields, entry.source_time) == (
        "Zaal",
        {"naam": "A"},
        T0.replace(microsecond=0),
    )
    foreign = (
        f'<ns1:zaal xmlns:ns1="http://example.org/not-tk" id="{guid(1)}"><ns1:naam>A</ns1:naam></ns1:zaal>'
    )
    with pytest.raises(ValueError, match="not a TK entity element"):
        parse_entity(etree.fromstring(foreign.encode()))
    mixed = f'<zaal xmlns="{tk}" xmlns:o="urn:o" id="{guid(1)}"><naam>A</naam><o:naam>B</o:naam></zaal>'
    assert parse_entity(etree.fromstring(mixed.encode())).fields == {"naam": "A"}


def test_a_prefix_for_the_atom_namespace_reads_too():
    inner = entity_element("Zaal", guid(1), bijgewerkt=T0, fields=[("naam", "A")]).decode()
    body = f"""<a:feed xmlns:a="http://www.w3.org/2005/Atom"><a:title>t</a:title>
<a:link rel="next" href="{BASE}/Feed?category=Zaal&amp;skiptoken=3"/>
<a:entry><a:title>{guid(1)}</a:title><a:updated>2023-08-29T13:23:13Z</a:updated><a:category term="zaal"/>
<a:link rel="next" href="{BASE}/Feed?category=Zaal&amp;skiptoken=3"/>
<a:content type="application/xml">{inner}</a:content></a:entry></a:feed>"""
    page = parse_feed_page(body.encode())
    (entry,) = page.entries
    assert (entry.id, entry.skiptoken, entry.fields, page.next_skiptoken) == (guid(1), 3, {"naam": "A"}, 3)


def test_each_entry_carries_its_own_resume_point():
    entries = [
        atom("Zaak", i, tok, entity_element("Zaak", guid(i), bijgewerkt=T0))
        for i, tok in [(1, 101), (2, 157), (3, 990)]
    ]
    page = parse_feed_page(page_of(*entries, category="Zaak", next_skiptoken=990))
    assert [e.skiptoken for e in page.entries] == [101, 157, 990]
    assert [e.id for e in page.entries] == [guid(1), guid(2), guid(3)]
    assert page.next_skiptoken == 990 and page.position == 990 and not page.caught_up


def test_the_empty_resume_page_is_caught_up():
    body = feed_page(BASE, "Zaak", [], None, resume_skiptoken=25_400_123, self_skiptoken=25_400_123)
    page = parse_feed_page(body, f"{BASE}/Feed?category=Zaak&skiptoken=25400123")
    assert page.entries == () and page.caught_up
    assert page.resume_skiptoken == 25_400_123 and page.position == 25_400_123


@pytest.mark.parametrize(
    ("text", "deleted"),
    [
        ("true", True),
        ("True", True),
        ("TRUE", True),
        ("1", True),
        ("false", False),
        ("False", False),
        ("0", False),
    ],
)
def test_verwijderd_in_any_case(text, deleted):
    el = entity_element("Persoon", guid(1), bijgewerkt=T0, deleted=deleted, deleted_text=text)
    (entry,) = parse_feed_page(page_of(atom("Persoon", 1, 4, el), category="Persoon")).entries
    assert entry.deleted is deleted


def test_an_unreadable_verwijderd_is_an_error_not_a_guess():
    el = entity_element("Persoon", guid(1), bijgewerkt=T0, deleted_text="ja")
    with pytest.raises(FeedFormatError, match="'ja' is not a boolean"):
        parse_feed_page(page_of(atom("Persoon", 1, 4, el), category="Persoon"), "http://x/Feed")


def test_xsi_nil_is_none_and_kept_apart_from_an_empty_string():
    el = entity_element("Persoon", guid(1), bijgewerkt=T0, fields=[("roepnaam", None), ("titels", "")])
    assert b'<roepnaam xsi:nil="true"/>' in el
    (entry,) = parse_feed_page(page_of(atom("Persoon", 1, 4, el), category="Persoon")).entries
    assert entry.fields == {"roepnaam": None, "titels": ""}


def test_repeated_refs_keep_document_order_without_duplicates():
    refs = [
        ("zaak", guid(9)),
        ("zaak", guid(3)),
        ("zaak", guid(9).upper()),
        ("zaak", guid(5)),
        ("kamerstukdossier", guid(4)),
    ]
    el = entity_element("Document", guid(1), bijgewerkt=T0, refs=refs)
    (entry,) = parse_feed_page(page_of(atom("Document", 1, 4, el), category="Document")).entries
    assert entry.refs == {"zaak": (guid(9), guid(3), guid(5)), "kamerstukdossier": (guid(4),)}


def test_repeated_scalars_last_wins_and_every_value_is_kept():
    el = entity_element(
        "Zaak",
        guid(1),
        bijgewerkt=T0,
        fields=[("onderwerp", "eerste"), ("nummer", "2023Z1"), ("onderwerp", None), ("onderwerp", "derde")],
    )
    (entry,) = parse_feed_page(page_of(atom("Zaak", 1, 4, el), category="Zaak")).entries
    assert entry.fields["onderwerp"] == "derde"
    assert entry.repeated == {"onderwerp": ("eerste", None, "derde")}
    assert "nummer" not in entry.repeated


@pytest.mark.parametrize("style", ["z", "z_seconds", "naive", "offset"])
def test_the_timestamp_forms_give_the_same_instant(style):
    when = datetime(2024, 1, 15, 9, 30, 5, 123456, tzinfo=UTC)  # winter: Amsterdam is +01:00
    el = entity_element("Vergadering", guid(1), bijgewerkt=when, time_style=style, prefixed=True)
    entry = AtomEntry(guid(1), "Vergadering", 4, when, el, time_style=style)
    (parsed,) = parse_feed_page(page_of(entry, category="Vergadering")).entries
    expected = when.replace(microsecond=0) if style == "z_seconds" else when
    assert parsed.source_time == expected and parsed.updated == expected
    assert parsed.source_time.utcoffset() == timedelta(0)  # every form comes back in UTC
    assert parsed.source_time_text == format_feed_time(when, style)
    if style == "offset":
        assert parsed.source_time_text.endswith("+01:00")


def test_the_naive_seven_digit_form_of_the_live_feed_is_utc():
    assert parse_feed_time("2008-08-26T12:13:04.6270000") == datetime(
        2008, 8, 26, 12, 13, 4, 627000, tzinfo=UTC
    )
    assert parse_feed_time("2023-08-29T11:10:11.0962032Z") == datetime(
        2023, 8, 29, 11, 10, 11, 96203, tzinfo=UTC
    )
    assert parse_feed_time("2023-08-29T13:10:11+02:00") == datetime(2023, 8, 29, 11, 10, 11, tzinfo=UTC)


def test_a_tombstone_has_no_children_and_may_name_an_id_never_seen():
    el = entity_element(
        "Document", guid(77), bijgewerkt=T0, deleted=True, fields=[("titel", "x")], refs=[("zaak", guid(2))]
    )
    assert b"<titel" not in el and el.endswith(b"/>")
    (entry,) = parse_feed_page(
        page_of(atom("Document", 77, 12, el, enclosure=True), category="Document")
    ).entries
    assert entry.deleted and entry.id == guid(77)
    assert entry.fields == {} and entry.refs == {} and entry.repeated == {}
    assert entry.enclosure == f"{BASE}/Resources/{guid(77)}"


def test_lower_case_categories_and_either_parameter_order_read_alike():
    el = entity_element("FractieZetelPersoon", guid(1), bijgewerkt=T0)
    forms = [
        page_of(
            atom("FractieZetelPersoon", 1, 44, el),
            category="FractieZetelPersoon",
            next_skiptoken=44,
            lower_case_links=lower,
            skiptoken_first=first,
        )
        for lower in (False, True)
        for first in (False, True)
    ]
    assert b"category=fractiezetelpersoon" in forms[3] and b"?skiptoken=44&amp;category=" in forms[3]
    pages = [parse_feed_page(f) for f in forms]
    assert {(p.entries[0].skiptoken, p.next_skiptoken, p.entries[0].category) for p in pages} == {
        (44, 44, "FractieZetelPersoon")
    }
    assert canonical_category("FRACTIEZETELPERSOON") == "FractieZetelPersoon"
    assert len(set(CATEGORIES)) == 35


def test_values_are_escaped_and_unwritable_characters_refused():
    text = 'Motie "Klaver" <over> A & B'
    el = entity_element(
        "Zaak", guid(1), bijgewerkt=T0, fields=[("titel", text)], attributes={"contentType": 'a"b'}
    )
    entry = parse_entity(etree.fromstring(el))
    assert entry.fields["titel"] == text and entry.attributes == {"contentType": 'a"b'}
    with pytest.raises(ValueError, match="titel"):
        entity_element("Zaak", guid(1), bijgewerkt=T0, fields=[("titel", "bel\x07")])


# --- the writer against the XSDs ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("type_name", "fields", "refs", "prefixed"),
    [
        (
            "Stemming",
            [
                ("soort", "Voor"),
                ("fractieGrootte", 15),
                ("actorNaam", "GL-PvdA"),
                ("vergissing", False),
                ("sidActorLid", None),
            ],
            [("besluit", guid(2)), ("fractie", guid(3))],
            False,
        ),
        (
            "FractieZetelPersoon",
            [("functie", "Lid"), ("van", datetime(2002, 5, 23).date()), ("totEnMet", None)],
            [("fractieZetel", guid(4)), ("persoon", guid(5))],
            False,
        ),
        (
            "Toezegging",
            [
                ("nummer", "TZ1"),
                ("tekst", "Wij komen terug"),
                ("status", "Openstaand"),
                ("aanmaakdatum", T0),
                ("activiteitNummer", "2023A1"),
            ],
            [("toegezegdAanFractie", guid(6)), ("activiteit", guid(7))],
            True,
        ),
        (
            "Zaak",
            [("nummer", "2023Z00001"), ("onderwerp", "x"), ("afgedaan", True), ("volgnummer", 3)],
            [("kamerstukdossier", guid(8)), ("agendapunt", guid(9)), ("agendapunt", guid(10))],
            False,
        ),
        ("Vergadering", [], [], True),
        ("Verslag", [("soort", "Eindpublicatie"), ("status", None)], [("vergadering", guid(11))], True),
        (
            "Document",
            [("soort", "Motie"), ("documentNummer", "2023D1"), ("datum", T0), ("volgnummer", 2)],
            [("huidigeDocumentVersie", guid(12)), ("zaak", guid(13)), ("zaak", guid(14))],
            False,
        ),
    ],
)
@pytest.mark.parametrize("style", ["z", "naive", "offset"])
def test_writer_output_validates_against_the_xsds(schema, type_name, fields, refs, prefixed, style):
    el = entity_element(
        type_name,
        guid(1),
        bijgewerkt=T0,
        fields=fields,
        refs=refs,
        prefixed=prefixed,
        order=xsd_order(type_name),
        time_style=style,
        attributes={"contentType": "application/pdf", "contentLength": "1234"}
        if type_name in ("Document", "Verslag")
        else None,
    )
    doc = etree.fromstring(entity_document(el))
    assert schema.validate(doc), schema.error_log
    tomb = etree.fromstring(
        entity_element(type_name, guid(1), bijgewerkt=T0, deleted=True, prefixed=prefixed)
    )
    assert schema.validate(tomb), schema.error_log


def test_the_xsd_check_catches_a_wrong_element_order(schema):
    el = entity_element(
        "Stemming",
        guid(1),
        bijgewerkt=T0,
        fields=[("soort", "Voor")],
        refs=[("besluit", guid(2))],
        order=["soort", "besluit"],
    )
    assert not schema.validate(etree.fromstring(el))


# --- a minimal real HTTP server of writer pages (to move to the offline server) ---------------------------
@dataclass
class FeedFixture:
    """A feed of ``count`` entries of one category, skiptokens ``first + gap*i`` (a global counter seen
    through one category), pages of ``page_size`` built by the writer on demand."""

    category: str = "Stemming"
    count: int = 600
    first: int = 1000
    gap: int = 3
    page_size: int = 250
    lower_case_links: bool = False
    skiptoken_first: bool = False
    loop: bool = False
    entity_form: str = "element"
    faults: list[str] = field(default_factory=list)
    credentials: tuple[str, str] | None = None
    requests: list[str] = field(default_factory=list)
    auth_seen: list[str | None] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def token(self, i: int) -> int:
        return self.first + self.gap * i

    def entity(self, i: int) -> bytes:
        return entity_element(
            self.category,
            guid(i),
            bijgewerkt=T0 + timedelta(seconds=i),
            fields=[("soort", "Voor"), ("fractieGrootte", i % 150), ("actorNaam", f"Fractie {i}")],
            refs=[("besluit", guid(10**6 + i // 10))],
        )

    def page(self, base: str, skiptoken: int) -> bytes:
        start = max(0, -(-(skiptoken - self.first + 1) // self.gap)) if skiptoken >= self.first else 0
        idx = range(start, min(self.count, start + self.page_size))
        entries = [
            AtomEntry(guid(i), self.category, self.token(i), T0 + timedelta(seconds=i), self.entity(i))
            for i in idx
        ]
        if not entries:
            return feed_page(
                base, self.category, [], None, resume_skiptoken=skiptoken, self_skiptoken=skiptoken
            )
        nxt = skiptoken if self.loop else entries[-1].skiptoken
        return feed_page(
            base,
            self.category,
            entries,
            nxt,
            self_skiptoken=skiptoken,
            lower_case_links=self.lower_case_links,
            skiptoken_first=self.skiptoken_first,
        )


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    fixture: FeedFixture

    def log_message(self, *args):  # keep test output clean
        pass

    def handle(self):
        try:
            super().handle()
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up on a hang fault first

    def _send(self, status: int, body: bytes, ctype: str = "application/atom+xml", headers=None, length=None):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body) if length is None else length))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        fx = self.fixture
        with fx.lock:
            fx.requests.append(self.path)
            fx.auth_seen.append(self.headers.get("Authorization"))
            fault = fx.faults.pop(0) if fx.faults else None
        if fx.credentials:
            want = "Basic " + base64.b64encode(":".join(fx.credentials).encode()).decode()
            if self.headers.get("Authorization") != want:
                return self._send(401, b"unauthorized", "text/plain")
        base = f"http://{self.headers['Host']}/SyncFeed/2.0"
        parts = urlsplit(self.path)
        if parts.path.endswith("/Feed"):
            q = {k.lower(): v for k, v in parse_qsl(parts.query)}
            if q.get("category", "").lower() != fx.category.lower():
                body = feed_page(base, q.get("category", ""), [], None, resume_skiptoken=0)
            else:
                body = fx.page(base, int(q.get("skiptoken", "0")))
        elif "/Entiteiten/" in parts.path:
            i = next((i for i in range(fx.count) if guid(i) == parts.path.rsplit("/", 1)[-1]), None)
            if i is None:
                return self._send(404, b"not found", "text/plain")
            body = entity_document(fx.entity(i))
            if fx.entity_form == "feed":  # the entity wrapped in a one-entry Atom page
                body = fx.page(base, fx.token(i - 1) if i else 0)
                body = body[: body.index(b"</entry>") + 8] + b"</feed>"
        elif "/Resources/" in parts.path:
            body = bytes(range(256)) * 1000
        else:
            return self._send(404, b"no such route", "text/plain")
        if fault == "500":
            return self._send(500, b"Internal Server Error", "text/plain")
        if fault == "429":
            return self._send(429, b"slow down", "text/plain", {"Retry-After": "0.05"})
        if fault == "400":
            return self._send(400, b"bad request: no such parameter", "text/plain")
        if fault == "truncate":  # the connection closes before the declared Content-Length
            self._send(200, body[: len(body) // 2], length=len(body))
            self.close_connection = True
            return None
        if fault == "short":  # a short body with a matching length: broken XML
            return self._send(200, body[: len(body) // 2])
        if fault == "hang":  # no answer within the client's read timeout
            time.sleep(HANG)
            return None
        if fault == "stall":  # half a page, then silence beyond the read timeout
            self._send(200, body[: len(body) // 2], length=len(body))
            self.wfile.flush()
            time.sleep(HANG)
            self.close_connection = True
            return None
        if fault == "reset":
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.close_connection = True
            return None
        return self._send(200, body)


@pytest.fixture
def feed_server():
    servers = []

    def start(fx: FeedFixture) -> str:
        handler = type("H", (_Handler,), {"fixture": fx})
        srv = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        srv.daemon_threads = True
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        servers.append(srv)
        return f"http://127.0.0.1:{srv.server_address[1]}"

    yield start
    for srv in servers:
        srv.shutdown()
        srv.server_close()


def client(url: str, sleeps: list[float] | None = None, **kw) -> SyncFeedClient:
    rec = sleeps if sleeps is not None else []
    return SyncFeedClient(ApiSettings(base_url=url, **{**FAST, **kw}), sleep=rec.append)


def test_the_client_reads_every_entry_once_and_ends_on_the_caught_up_page(feed_server):
    fx = FeedFixture(count=600)
    with client(feed_server(fx)) as c:
        pages = list(c.iter_pages("stemming"))
    assert [len(p.entries) for p in pages] == [250, 250, 100, 0]
    assert pages[-1].caught_up and pages[-1].resume_skiptoken == fx.token(599)
    ids = [e.id for p in pages for e in p.entries]
    assert ids == [guid(i) for i in range(600)]
    assert [e.skiptoken for p in pages for e in p.entries] == [fx.token(i) for i in range(600)]
    assert fx.requests[0] == "/SyncFeed/2.0/Feed?category=Stemming"


def test_resuming_from_an_entry_cursor_yields_exactly_the_rest(feed_server):
    fx = FeedFixture(count=600, lower_case_links=True, skiptoken_first=True)
    url = feed_server(fx)
    with client(url) as c:
        first = list(c.iter_entries("Stemming"))
        cursor = first[411].skiptoken
        rest = list(c.iter_entries("Stemming", skiptoken=cursor))
    assert [e.id for e in rest] == [e.id for e in first[412:]]
    assert any("category=stemming" in r and r.index("skiptoken") < r.index("category") for r in fx.requests)


def test_a_next_link_that_does_not_move_is_an_error_not_a_loop(feed_server):
    fx = FeedFixture(count=600, loop=True)
    with client(feed_server(fx)) as c, pytest.raises(FeedFormatError, match="does not move past"):
        list(c.iter_pages("Stemming", skiptoken=2000))
    assert len(fx.requests) == 1


@pytest.mark.parametrize("fault", ["500", "429", "truncate", "short", "reset", "hang", "stall"])
def test_each_broken_answer_is_retried_and_no_entry_repeats_or_goes_missing(feed_server, fault, caplog):
    fx = FeedFixture(count=600, faults=[None, fault, fault, None, fault])  # type: ignore[list-item]
    sleeps: list[float] = []
    caplog.set_level(logging.WARNING, logger="include.loaders.syncfeed")
    with client(feed_server(fx), sleeps, read_timeout=HANG / 4) as c:
        ids = [e.id for e in c.iter_entries("Stemming")]
    assert ids == [guid(i) for i in range(600)]
    assert len(sleeps) == 3 and len(fx.requests) == 4 + 3
    assert len([r for r in caplog.records if "TK SyncFeed request failed" in r.getMessage()]) == 3
    if fault == "429":
        assert min(sleeps) >= 0.05  # Retry-After honoured above the tiny backoff


def test_giving_up_names_the_url_and_a_4xx_is_not_retried(feed_server):
    fx = FeedFixture(faults=["500"] * 10)
    url = feed_server(fx)
    with client(url, max_retries=2) as c, pytest.raises(ApiError, match="failed 3 time") as err:
        list(c.iter_pages("Stemming"))
    assert err.value.status == 500 and "Feed?category=Stemming" in err.value.url
    fx.faults[:] = ["400"]
    fx.requests.clear()
    with client(url) as c, pytest.raises(ApiError, match="HTTP 400") as err:
        list(c.iter_pages("Stemming"))
    assert err.value.status == 400 and len(fx.requests) == 1


def test_credentials_are_sent_and_never_shown(feed_server, caplog):
    fx = FeedFixture(count=300, credentials=("tk-user", "s3cret-pw"), faults=[None, "500"])
    url = feed_server(fx).replace("http://", "http://tk-user:s3cret-pw@")
    caplog.set_level(logging.DEBUG)
    with client(url) as c:
        assert c.root.startswith("http://127.0.0.1:") and "s3cret" not in c.root
        assert len(list(c.iter_entries("Stemming"))) == 300
    assert all(a and a.startswith("Basic ") for a in fx.auth_seen)
    assert "s3cret" not in caplog.text and "tk-user" not in caplog.text


@pytest.mark.parametrize("form", ["element", "feed"])
def test_get_entity_resource_and_the_base_url_forms(feed_server, tmp_path, form):
    fx = FeedFixture(count=20, entity_form=form)
    url = feed_server(fx)
    roots = {client(u).root for u in (url, f"{url}/", f"{url}/SyncFeed/2.0", f"{url}/OData/v4/2.0")}
    assert roots == {f"{url}/SyncFeed/2.0"}
    with client(url) as c:
        entry = c.get_entity(guid(7).upper())
        assert entry is not None and entry.id == guid(7) and entry.category == "Stemming"
        assert entry.fields["actorNaam"] == "Fractie 7"
        assert entry.skiptoken == (None if form == "element" else fx.token(7))
        assert c.get_entity(guid(999)) is None
        assert c.resource(guid(7)) == bytes(range(256)) * 1000
        fx.faults[:] = ["truncate"]
        assert c.save_resource(guid(7), tmp_path / "file.bin") == 256_000
        assert (tmp_path / "file.bin").read_bytes() == bytes(range(256)) * 1000


def test_a_misspelt_category_is_an_empty_caught_up_feed(feed_server):
    with client(feed_server(FeedFixture())) as c:
        pages = list(c.iter_pages("Stemmingen"))
    assert len(pages) == 1 and pages[0].caught_up and pages[0].entries == ()


def test_memory_is_flat_in_the_length_of_the_feed(feed_server):
    """Peak traced memory while reading 20,000 entries is about that of 2,000 (pages of 250 each)."""

    def peak(count: int) -> int:
        fx = FeedFixture(count=count)
        url = feed_server(fx)
        with client(url) as c:
            tracemalloc.start()
            try:
                n = sum(1 for _ in c.iter_entries("Stemming"))
                return tracemalloc.get_traced_memory()[1]
            finally:
                tracemalloc.stop()
                assert n == count

    small, large = peak(2_000), peak(20_000)
    assert large / small < 1.3, (small, large)


def test_entries_are_handed_out_while_the_page_arrives(feed_server):
    """The first entry reaches the caller before the broken first answer is asked again: the page is
    streamed, not read whole; the retry then skips what was handed out."""
    fx = FeedFixture(count=300, faults=["truncate"])
    requests_at_first_entry = None
    ids = []
    with client(feed_server(fx)) as c:
        for entry in c.iter_entries("Stemming"):
            if requests_at_first_entry is None:
                requests_at_first_entry = len(fx.requests)
            ids.append(entry.id)
    assert requests_at_first_entry == 1
    assert ids == [guid(i) for i in range(300)] and len(fx.requests) == 4  # page 1 twice, 2, caught-up


class _ChunkStream(io.RawIOBase):
    """A binary stream over an iterator of byte chunks (a page that is written while it is read)."""

    def __init__(self, chunks):
        self._chunks, self._buf = iter(chunks), b""

    def readable(self):
        return True

    def readinto(self, b):
        while not self._buf:
            self._buf = next(self._chunks, None)
            if self._buf is None:
                self._buf = b""
                return 0
        n = min(len(b), len(self._buf))
        b[:n], self._buf = self._buf[:n], self._buf[n:]
        return n


def test_the_chunked_writer_writes_the_same_page():
    fx = FeedFixture(count=5)
    entries = [
        AtomEntry(guid(i), "Stemming", fx.token(i), T0, fx.entity(i), enclosure=i == 2) for i in range(5)
    ]
    whole = feed_page(BASE, "Stemming", entries, 99, lower_case_links=True, updated=T0)
    assert (
        b"".join(feed_page_chunks(BASE, "Stemming", entries, 99, lower_case_links=True, updated=T0)) == whole
    )


def test_memory_is_flat_in_the_size_of_a_page():
    """Peak traced memory while parsing a page of 5,000 entries, written lazily, is about that of 250."""
    fx = FeedFixture()

    def peak(size: int) -> int:
        lazy = (AtomEntry(guid(i), "Stemming", fx.token(i), T0, fx.entity(i)) for i in range(size))
        stream = _ChunkStream(feed_page_chunks(BASE, "Stemming", lazy, fx.token(size), updated=T0))
        tracemalloc.start()
        try:
            n = sum(1 for _ in iter_feed_page(stream))
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
            assert n == size

    small, large = peak(250), peak(5_000)
    assert large / small < 1.3, (small, large)


class _Stats:
    """A metrics backend recording what the client sends (the calls of Airflow's Stats)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, object, dict]] = []

    def incr(self, stat, count=1, rate=1, *, tags=None):
        self.calls.append((stat, count, dict(tags or {})))

    def gauge(self, stat, value, rate=1, delta=False, *, tags=None):
        self.calls.append((stat, value, dict(tags or {})))

    def timing(self, stat, dt, *, tags=None):
        self.calls.append((stat, dt, dict(tags or {})))


def test_requests_retries_and_backoff_are_counted(feed_server):
    fx = FeedFixture(count=300, faults=["500", None, "429"])
    stats = _Stats()
    sleeps: list[float] = []
    settings = ApiSettings(base_url=feed_server(fx), **FAST)
    with SyncFeedClient(settings, sleep=sleeps.append, metrics=ApiMetrics(stats=stats, legacy=False)) as c:
        assert sum(1 for _ in c.iter_entries("Stemming")) == 300
    sent = [s for s, _, _ in stats.calls]
    assert sent.count("tk.api.requests") == len(fx.requests) == 5  # page 1 twice, page 2 twice, caught-up
    assert sent.count("tk.api.retries") == 2
    backoff = [v for s, v, _ in stats.calls if s == "tk.api.backoff"]
    assert [round(b.total_seconds(), 6) for b in backoff] == [round(x, 6) for x in sleeps]


def test_a_skiptoken_range_yields_exactly_its_entries_and_asks_no_page_beyond(feed_server):
    fx = FeedFixture(count=900)
    with client(feed_server(fx)) as c:
        every = list(c.iter_entries("Stemming"))
        cuts = [0, every[249].skiptoken, every[400].skiptoken, every[-1].skiptoken]
        fx.requests.clear()
        parts = [list(c.iter_entries("Stemming", a, until=b)) for a, b in itertools.pairwise(cuts)]
    assert [e.id for part in parts for e in part] == [e.id for e in every]
    assert [len(p) for p in parts] == [250, 151, 499]
    # each range ends on a page's last entry or inside a page: no request beyond the page holding `until`
    assert len(fx.requests) == 1 + 1 + 2


def test_a_re_emitted_entity_comes_through_again_in_feed_order():
    """Data repairs push an entity through again: the reader hands out every version, in feed order
    (the loader's "latest skiptoken wins" needs them all), and does not deduplicate by id."""
    v1 = entity_element("Document", guid(1), bijgewerkt=T0, fields=[("titel", "oud")])
    v2 = entity_element("Document", guid(1), bijgewerkt=T0 + timedelta(days=400), fields=[("titel", "nieuw")])
    other = entity_element("Document", guid(2), bijgewerkt=T0)
    page = parse_feed_page(
        page_of(
            atom("Document", 1, 10, v1),
            atom("Document", 2, 11, other),
            atom("Document", 1, 25, v2),
            category="Document",
        )
    )
    assert [(e.id, e.skiptoken, e.fields.get("titel")) for e in page.entries] == [
        (guid(1), 10, "oud"),
        (guid(2), 11, None),
        (guid(1), 25, "nieuw"),
    ]
