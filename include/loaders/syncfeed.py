"""TK SyncFeed client: one ordered change stream per entity type, resumable at the entry, read as it streams.

    with SyncFeedClient(ApiSettings.from_env()) as client:
        for entry in client.iter_entries("Persoon", skiptoken=cursor):
            ...                          # upsert entry.fields / entry.refs, or delete when entry.deleted
            cursor = entry.skiptoken     # durable only once the entry's batch is committed
        # or page by page: client.iter_pages(...), FeedPage.position after each page

The feed (``<base>/SyncFeed/2.0/Feed?category=<Type>&skiptoken=<n>``, ``../shared/tk-api/SYNCFEED.md`` §2)
is Atom 1.0 with one TK entity element (namespace :data:`TK_NS`) in each entry's ``<content>``. What this
module tolerates, each a form the live feed is known to write:

- Names are matched by namespace, never by prefix: the default-namespace form and the ``ns1:`` form of
  Toezegging, Vergadering and Verslag parse alike, and so does any other prefix bound to the TK namespace;
  a payload stripped of its namespace declarations reads too; an element of another namespace is refused.
- Each entry's own ``<link rel="next">`` is its resume point (:attr:`FeedEntry.skiptoken`): the cursor
  after that entry. The empty page with ``<link rel="resume">`` is the caught-up page.
- ``verwijderd`` in any case (``true``, ``True``, ``TRUE``, ``1``; absent reads as false); a deleted entity
  has no children and may name an id the feed never showed (the Document feed begins with years of such
  tombstones). Anything else (``ja``) is an error: a deletion is never guessed.
- ``xsi:nil="true"`` is a None value; repeated references are all kept (duplicates removed, document order);
  a repeated scalar element (the XSD says at most one, the live feed sometimes writes two) keeps its last
  value in :attr:`FeedEntry.fields` and every value in :attr:`FeedEntry.repeated`, so nothing is lost.
- Timestamps come as ``…Z``, with an offset (``+01:00``) or naive (``2008-08-26T12:13:04.6270000``), with up
  to 7 fractional digits. A naive time is read as UTC: the XSD documents ``bijgewerkt`` as "aangegeven in
  UTC-formaat" and the known mirrors read it so (djosh34/opentk's payload parser: ``and_utc()``). The
  text as sent stays available (:attr:`FeedEntry.updated_text`, :attr:`FeedEntry.source_time_text`).
- Links echo the category in lower case and put ``category`` and ``skiptoken`` in either order: they are
  followed as given and their parameters compared case-insensitively.

Requests have the OData client's retries, credential handling and metrics
(:class:`include.loaders.api.TKClient`): 5xx, 429 (``Retry-After`` honoured), timeouts, resets and broken or
truncated bodies are retried, a truncated XML page included (a retry, not a parse error). Pages are
parsed while they arrive (``lxml.etree.iterparse`` on the response stream, each entry's elements freed once
read) and :meth:`SyncFeedClient.iter_entries` hands each entry out at once: memory is flat in the feed's
length and in the page's size. An answer that breaks off mid-page is asked again and the entries already
handed out are skipped by their skiptokens, so a retry never repeats or skips an entry.
:meth:`SyncFeedClient.iter_pages` holds one page of parsed entries (never its body or tree).

Metrics are :class:`include.loaders.metrics.ApiMetrics`: their ``entity`` tag is the URL's last path
segment, ``Feed`` for every category (``metrics.url_entity`` does not read ``category=`` yet).
"""

from __future__ import annotations

import io
import logging
import re
import time
from collections.abc import Callable, Generator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import IO, Any, NoReturn, cast
from urllib.parse import parse_qsl, quote, urlsplit

import requests
import urllib3.exceptions
from lxml import etree
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_random_exponential,
)

# The OData client's retry pieces and URL helpers, reused as they are (see the module docstring).
from include.loaders.api import (
    ApiError,
    _failure,
    _odata_message,
    _origin,
    _retry_after_seconds,
    _Retryable,
    _WaitRetryAfter,
    split_credentials,
)
from include.loaders.api_profiles import profile_of_path
from include.loaders.metrics import ApiMetrics
from include.loaders.settings import ApiSettings

__all__ = [
    "ATOM_NS",
    "CATEGORIES",
    "TK_NS",
    "FeedEntry",
    "FeedFormatError",
    "FeedPage",
    "SyncFeedClient",
    "canonical_category",
    "iter_feed_page",
    "parse_bool",
    "parse_entity",
    "parse_feed_page",
    "parse_feed_time",
    "skiptoken_of",
]

log = logging.getLogger(__name__)

ATOM_NS = "http://www.w3.org/2005/Atom"
TK_NS = "http://www.tweedekamer.nl/xsd/tkData/v1-0"
XSI_NS = "http://www.w3.org/2001/XMLSchema-instance"
SYNCFEED_PATH = "/SyncFeed/2.0"

CATEGORIES: tuple[str, ...] = (
    "Activiteit",
    "ActiviteitActor",
    "Agendapunt",
    "Besluit",
    "Commissie",
    "CommissieContactinformatie",
    "CommissieZetel",
    "CommissieZetelVastPersoon",
    "CommissieZetelVastVacature",
    "CommissieZetelVervangerPersoon",
    "CommissieZetelVervangerVacature",
    "Document",
    "DocumentActor",
    "DocumentVersie",
    "Fractie",
    "FractieZetel",
    "FractieZetelPersoon",
    "FractieZetelVacature",
    "Kamerstukdossier",
    "Persoon",
    "PersoonContactinformatie",
    "PersoonGeschenk",
    "PersoonLoopbaan",
    "PersoonNevenfunctie",
    "PersoonNevenfunctieInkomsten",
    "PersoonOnderwijs",
    "PersoonReis",
    "Reservering",
    "Stemming",
    "Toezegging",
    "Vergadering",
    "Verslag",
    "Zaak",
    "ZaakActor",
    "Zaal",
)
"""The 35 SyncFeed categories in their canonical PascalCase (SYNCFEED.md §2, from tkconv's list)."""

_BY_LOWER = {name.lower(): name for name in CATEGORIES}
_TRUE = frozenset({"true", "1"})
_FALSE = frozenset({"false", "0"})
_ATOM = f"{{{ATOM_NS}}}"
# the entry-level elements read; everything else of an entry is skipped
_A_ENTRY, _A_TITLE, _A_UPDATED = f"{_ATOM}entry", f"{_ATOM}title", f"{_ATOM}updated"
_A_CATEGORY, _A_LINK, _A_CONTENT = f"{_ATOM}category", f"{_ATOM}link", f"{_ATOM}content"
_A_FEED = f"{_ATOM}feed"
_ENTITY_ATTRIBUTES = frozenset({"id", "verwijderd", "bijgewerkt"})
# An entity element is in the TK namespace; written without a declaration of its own (a stripped payload)
# it has none, or inherits the feed's default (Atom) namespace. Any other namespace is not TK data.
_ENTITY_NAMESPACES = frozenset({TK_NS, None, ATOM_NS})
_XSI_NIL = f"{{{XSI_NS}}}nil"
_SKIPTOKEN = re.compile(r"[?&]skiptoken=([^&#]*)", re.IGNORECASE)  # one per link; faster than parse_qsl


class FeedFormatError(ApiError):
    """A complete SyncFeed answer that cannot be read as the feed (not retried: the same bytes would come
    again). A truncated body is not this error but a retried request."""


# -- values --------------------------------------------------------------------------------------------
def canonical_category(name: str) -> str:
    """The canonical PascalCase name of a category written in any case (``fractieZetelPersoon``,
    ``FRACTIEZETELPERSOON`` -> ``FractieZetelPersoon``); a name outside :data:`CATEGORIES` comes back
    with its first letter upper-cased (a type the feed added since; the loaders decide what to do)."""
    name = name.strip()
    return _BY_LOWER.get(name.lower()) or name[:1].upper() + name[1:]


def parse_bool(text: str) -> bool:
    """An ``xs:boolean`` in any case (``true``, ``True``, ``TRUE``, ``1``; ``false``, ``0``...).

    Raises ValueError for anything else: a deletion flag must never be guessed."""
    value = text.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError(f"{text!r} is not a boolean (expected true/false/1/0 in any case)")


def parse_feed_time(text: str) -> datetime:
    """A SyncFeed timestamp as an aware datetime in UTC: ``…Z``, ``…+01:00`` or naive (read as UTC, see the
    module docstring), with up to 7 fractional digits (beyond microseconds truncated). Raises ValueError."""
    parsed = datetime.fromisoformat(text.strip())
    return parsed.astimezone(UTC) if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def _query(url: str) -> dict[str, str]:
    """The query parameters of ``url``, names lower-cased (links put them in any case and order)."""
    return {k.lower(): v for k, v in parse_qsl(urlsplit(url).query, keep_blank_values=True)}


def skiptoken_of(url: str) -> int | None:
    """The ``skiptoken`` parameter of a feed link (any case, any position), or None when it has none.

    Raises ValueError when it is there but not a whole number."""
    match = _SKIPTOKEN.search(url)
    value = match.group(1) if match else None
    if not value:
        return None
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"skiptoken {value!r} in {url} is not a whole number") from None


@lru_cache(maxsize=4096)  # a pure function of the few hundred tag names of the 35 types
def _local(tag: object) -> tuple[str | None, str]:
    """Namespace and local name of an lxml tag (``{ns}name`` or a bare name)."""
    if not isinstance(tag, str):
        return None, ""
    if tag.startswith("{"):
        ns, _, name = tag[1:].partition("}")
        return ns, name
    return None, tag


def _attr(element: Any, name: str) -> str | None:
    """Attribute ``name`` in the TK namespace (``tk:bijgewerkt``) or without one (a stripped payload)."""
    value = element.get(f"{{{TK_NS}}}{name}")
    return value if value is not None else element.get(name)


# -- the parsed forms ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FeedEntry:
    """One SyncFeed entry: a version of one entity, or its tombstone.

    Attributes:
        id: the entity GUID in lower case (the entity element's ``id``; the entry's title when absent).
        category: the type in canonical PascalCase (:data:`CATEGORIES`), whatever case the feed used.
        skiptoken: the skiptoken of the entry's own ``<link rel="next">``: the resume point right after this
            entry (the durable cursor once the entry is committed). None only for :meth:`SyncFeedClient.
            get_entity`, whose answer is not a feed position.
        next_url: that link as the server gave it (None with ``skiptoken``).
        updated: the entry's ``<updated>`` (API time), aware; None when the answer had no Atom entry.
        source_time: the entity's ``tk:bijgewerkt`` (source time), aware, or None.
        deleted: ``tk:verwijderd`` read in any case; a tombstone has no fields and no refs.
        element: the entity element's local name (``fractieZetelPersoon``).
        fields: scalar child elements, local name -> text, or None for ``xsi:nil``. Values are the text as
            written (the entity table converts them); a repeated element keeps its last value here. The
            children of a structured element are named ``parent/child`` (``periode/van``).
        repeated: every element that occurred more than once as a scalar, local name -> all its values in
            document order (nothing is silently dropped).
        refs: reference elements (``<persoon ref="…"/>``), local name -> GUIDs in lower case, in document
            order, duplicates removed. A nil reference (``<huidigeDocumentVersie xsi:nil="true"/>``) has no
            ``ref`` and is a None in ``fields``: only the entity table knows the name is a relation.
        attributes: other attributes of the entity element (``contentType``, ``contentLength``).
        enclosure: the ``<link rel="enclosure">`` href (the entity's file), or None.
        updated_text, source_time_text: the two timestamps as sent.
    """

    id: str
    category: str
    skiptoken: int | None
    next_url: str | None
    updated: datetime | None
    source_time: datetime | None
    deleted: bool
    element: str = ""
    fields: dict[str, str | None] = field(default_factory=dict)
    repeated: dict[str, tuple[str | None, ...]] = field(default_factory=dict)
    refs: dict[str, tuple[str, ...]] = field(default_factory=dict)
    attributes: dict[str, str] = field(default_factory=dict)
    enclosure: str | None = None
    updated_text: str | None = None
    source_time_text: str | None = None


@dataclass(frozen=True)
class FeedPage:
    """One page of the feed.

    Attributes:
        url: the URL it was read from.
        entries: its entries in feed order (at most 250 on the real API).
        next_url: the feed-level ``<link rel="next">`` as given, or None.
        next_skiptoken: its skiptoken.
        resume_url, resume_skiptoken: the ``<link rel="resume">`` of the empty caught-up page, or None.
        requested_skiptoken: the skiptoken the page was asked from (None: the start of the feed).
    """

    url: str
    entries: tuple[FeedEntry, ...]
    next_url: str | None = None
    next_skiptoken: int | None = None
    resume_url: str | None = None
    resume_skiptoken: int | None = None
    requested_skiptoken: int | None = None

    @property
    def caught_up(self) -> bool:
        """True when no next page exists: the reader has reached the head of the feed."""
        return self.next_url is None

    @property
    def position(self) -> int | None:
        """Where to continue after this page: the last entry's own skiptoken, else the resume link's, else
        the skiptoken the page was asked from (None: still the start of the feed)."""
        if self.entries:
            return self.entries[-1].skiptoken
        if self.resume_skiptoken is not None:
            return self.resume_skiptoken
        return self.requested_skiptoken


# -- parsing ---------------------------------------------------------------------------------------------
def parse_entity(element: Any, *, category: str | None = None) -> FeedEntry:
    """A TK entity element (an lxml element, any prefix or none) as a :class:`FeedEntry` without a feed
    position (``skiptoken``/``next_url``/``updated`` None; :func:`parse_feed_page` fills them in).

    Raises ValueError naming what is wrong (no id, unreadable ``verwijderd`` or ``bijgewerkt``)."""
    return _feed_entry(element, category, None, None, None, None)


def _feed_entry(
    element: Any,
    category: str | None,
    next_url: str | None,
    skiptoken: int | None,
    updated_text: str | None,
    enclosure: str | None,
) -> FeedEntry:
    """The :class:`FeedEntry` of an entity element and what its Atom entry said around it."""
    own_ns, local = _local(element.tag)
    if own_ns not in _ENTITY_NAMESPACES:
        raise ValueError(
            f"<{local}> is in namespace {own_ns!r}, not the TK namespace {TK_NS!r}: not a TK entity element"
        )
    entity_id = (element.get("id") or "").strip().lower()
    if not entity_id:
        raise ValueError(f"entity element <{local}> has no id")
    flag = _attr(element, "verwijderd")
    stamp = _attr(element, "bijgewerkt")
    attributes = {}
    for key, value in element.attrib.items():
        name = _local(key)[1]
        if name not in _ENTITY_ATTRIBUTES:
            attributes[name] = value
    fields: dict[str, str | None] = {}
    repeated: dict[str, list[str | None]] = {}
    refs: dict[str, list[str]] = {}
    for child in element:
        ns, name = _local(child.tag)
        if not name or ns not in _ENTITY_NAMESPACES:
            continue  # comments, processing instructions, foreign extensions
        ref = child.get("ref")
        if ref is not None:
            targets = refs.setdefault(name, [])
            guid = ref.strip().lower()
            if guid not in targets:
                targets.append(guid)
            continue
        nested = [g for g in child if isinstance(g.tag, str)]
        if nested:  # a structured element (persoonNevenfunctie's periode/van): ``parent/child`` names
            pairs = [(f"{name}/{_local(g.tag)[1]}", g) for g in nested]
        else:
            pairs = [(name, child)]
        for key, node in pairs:
            nil = node.get(_XSI_NIL)
            value = None if nil is not None and nil.strip().lower() in _TRUE else (node.text or "")
            if key in fields:
                repeated.setdefault(key, [fields[key]]).append(value)
            fields[key] = value
    return FeedEntry(
        id=entity_id,
        category=canonical_category(category or local),
        skiptoken=skiptoken,
        next_url=next_url,
        updated=parse_feed_time(updated_text) if updated_text and updated_text.strip() else None,
        source_time=parse_feed_time(stamp) if stamp else None,
        deleted=parse_bool(flag) if flag is not None else False,
        element=local,
        fields=fields,
        repeated={k: tuple(v) for k, v in repeated.items()} if repeated else {},
        refs={k: tuple(v) for k, v in refs.items()},
        attributes=attributes,
        enclosure=enclosure,
        updated_text=updated_text,
        source_time_text=stamp,
    )


def _entry(element: Any) -> FeedEntry:
    """An Atom ``<entry>`` element as a :class:`FeedEntry` (ValueError when it cannot be one)."""
    title = updated_text = term = next_url = enclosure = payload = None
    for child in element:  # one pass over the entry's children, in whatever order they come
        tag = child.tag
        if tag == _A_LINK:
            rel = (child.get("rel") or "").strip().lower()
            if rel == "next" and next_url is None:
                next_url = child.get("href")
            elif rel == "enclosure" and enclosure is None:
                enclosure = child.get("href")
        elif tag == _A_CONTENT:
            payload = next((c for c in child if isinstance(c.tag, str)), None)
        elif tag == _A_UPDATED:
            updated_text = child.text
        elif tag == _A_CATEGORY:
            term = term or child.get("term")
        elif tag == _A_TITLE:
            title = child.text
    if payload is None:
        raise ValueError(f"the entry {(title or '').strip()!r} has no entity element in its <content>")
    if next_url is None:
        raise ValueError(f'the entry {(title or "").strip()!r} has no <link rel="next">: no resume point')
    skiptoken = skiptoken_of(next_url)
    if skiptoken is None:
        raise ValueError(f"the next link of entry {(title or '').strip()!r} has no skiptoken: {next_url}")
    return _feed_entry(payload, term, next_url, skiptoken, updated_text, enclosure)


def iter_feed_page(source: bytes | IO[bytes], url: str = "") -> Generator[FeedEntry, None, FeedPage]:
    """Read one Atom feed page from bytes or a binary stream, yielding each entry as its end tag arrives.

    The entry's elements are freed once it is read, so memory is flat in the page's size; the generator's
    return value (``StopIteration.value``, or ``page = yield from iter_feed_page(...)``) is the page's
    :class:`FeedPage` without entries (its links). Raises ``lxml.etree.XMLSyntaxError`` on broken XML (a
    truncated body: the client retries it) and :class:`FeedFormatError` on a well-formed answer that is
    not a feed page.
    """
    stream: Any = io.BytesIO(source) if isinstance(source, bytes | bytearray) else source
    links: dict[str, str] = {}
    is_feed = False
    for event, element in etree.iterparse(
        stream,
        events=("start", "end"),
        tag=(_A_FEED, _A_ENTRY, _A_LINK),
        remove_comments=True,
        huge_tree=True,
    ):
        parent = element.getparent()
        if event == "start":
            is_feed = is_feed or (parent is None and element.tag == _A_FEED)
            continue
        if parent is None or parent.getparent() is not None:
            continue  # the root, or a link inside an entry: read with the entry
        if element.tag == _A_ENTRY:
            try:
                entry = _entry(element)
            except ValueError as e:
                raise FeedFormatError(f"Cannot read the SyncFeed page {url}: {e}", url, 200) from e
            yield entry
        elif element.tag == _A_LINK:
            rel = (element.get("rel") or "").strip().lower()
            href = element.get("href")
            if rel in ("next", "resume") and href and rel not in links:
                links[rel] = href
        element.clear(keep_tail=False)
        while element.getprevious() is not None:
            del parent[0]
    if not is_feed:
        raise FeedFormatError(
            f"The answer to {url} is not an Atom feed; does TK_API_BASE_URL name the TK API server?", url, 200
        )
    try:
        next_url = links.get("next")
        resume_url = links.get("resume")
        return FeedPage(
            url=url,
            entries=(),
            next_url=next_url,
            next_skiptoken=skiptoken_of(next_url) if next_url else None,
            resume_url=resume_url,
            resume_skiptoken=skiptoken_of(resume_url) if resume_url else None,
            requested_skiptoken=skiptoken_of(url) if url else None,
        )
    except ValueError as e:
        raise FeedFormatError(f"Cannot read the SyncFeed page {url}: {e}", url, 200) from e


def parse_feed_page(source: bytes | IO[bytes], url: str = "") -> FeedPage:
    """One Atom feed page with its entries (:func:`iter_feed_page`, collected)."""
    entries: list[FeedEntry] = []
    page = _drain(iter_feed_page(source, url), entries)
    return replace(page, entries=tuple(entries))


def _drain(gen: Generator[FeedEntry, None, FeedPage], sink: list[FeedEntry]) -> FeedPage:
    """Drain an entry generator into ``sink``; its return value (the page)."""
    while True:
        try:
            sink.append(next(gen))
        except StopIteration as stop:
            return cast(FeedPage, stop.value)


# -- the client ------------------------------------------------------------------------------------------
class SyncFeedClient:
    """A client of the TK SyncFeed (``<TK_API_BASE_URL>/SyncFeed/2.0``).

    Args:
        settings: base URL, timeouts and retry policy (those of the OData client); ``ApiSettings.from_env()``
            when None. A base that already ends with ``/SyncFeed/2.0`` is accepted, and so is one that
            ends with the OData profile's path (``…/OData/v4/2.0``: the server root is taken from it).
        session: a ``requests.Session`` to use (the client creates and owns one when None).
        sleep: how to wait between retries (tests pass a recorder).
        metrics: where requests, retries and backoff are counted (default: Airflow's ``Stats``).

    Retries, backoff, ``Retry-After``, the WARNING line per retry and the credential handling are those of
    :class:`include.loaders.api.TKClient`: credentials in the base URL go (HTTP basic auth) to its origin
    only and appear in no log line and no error. Use it as a context manager.

    A misspelt category is not an error on the real API: it answers an empty, caught-up feed, and the
    client cannot tell that from a type with no changes. Pass names from :data:`CATEGORIES` (any case).
    """

    def __init__(
        self,
        settings: ApiSettings | None = None,
        session: requests.Session | None = None,
        *,
        sleep: Callable[[float], None] = time.sleep,
        metrics: ApiMetrics | None = None,
    ):
        self.settings = s = settings or ApiSettings.from_env()
        base, self._auth = split_credentials(s.base_url.rstrip("/"))
        odata = profile_of_path(base)  # a base given as an OData service root (…/OData/v5): its server
        if odata is not None:
            base = base[: -len(odata.path)]
        self.root = base if base.endswith(SYNCFEED_PATH) else base + SYNCFEED_PATH
        self._auth_origin = _origin(self.root)
        self._own_session = session is None
        self._session = session or requests.Session()
        self._session.headers.setdefault("User-Agent", s.user_agent)
        self._retrying = Retrying(
            retry=retry_if_exception_type(_Retryable),
            stop=stop_after_attempt(s.max_retries + 1),
            wait=_WaitRetryAfter(
                wait_random_exponential(multiplier=s.backoff_base, max=s.backoff_max), s.retry_after_max
            ),
            sleep=sleep,
            before_sleep=self._log_retry,
            retry_error_callback=self._give_up,
        )
        self._metrics = metrics if metrics is not None else ApiMetrics.for_task()

    # -- lifecycle ---------------------------------------------------------------------------------
    def close(self) -> None:
        """Close the HTTP session if the client created it."""
        if self._own_session:
            self._session.close()

    def __enter__(self) -> SyncFeedClient:
        """The client itself; leaving the ``with`` block closes it."""
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- URLs ----------------------------------------------------------------------------------------
    def feed_url(self, category: str, skiptoken: int | None = None) -> str:
        """``<root>/Feed?category=<Category>&skiptoken=<n>`` (no skiptoken for None or 0: the start)."""
        url = f"{self.root}/Feed?category={quote(canonical_category(category), safe='')}"
        return url + (f"&skiptoken={int(skiptoken)}" if skiptoken else "")

    # -- reading -------------------------------------------------------------------------------------
    def get_page(self, url: str) -> FeedPage:
        """One feed page from ``url`` (a :meth:`feed_url` or a link the server gave), with retries."""
        entries: list[FeedEntry] = []
        page = _drain(self._stream_page(url), entries)
        return replace(page, entries=tuple(entries))

    def iter_pages(self, category: str, skiptoken: int | None = 0) -> Iterator[FeedPage]:
        """Yield the pages of ``category`` from ``skiptoken`` (exclusive: the cursor of the last entry
        processed) to the head of the feed, following the server's next links as given.

        The last page yielded is the caught-up one (:attr:`FeedPage.caught_up`; on the real API an empty
        page with ``rel="resume"``). A next link that names another category, or that does not move past
        the page's own skiptoken, raises :class:`FeedFormatError` instead of looping. Memory: one page of
        parsed entries (:meth:`iter_entries` holds none).
        """
        url: str | None = self.feed_url(category, skiptoken)
        position = skiptoken or None
        while url is not None:
            page = self.get_page(url)
            yield page
            url, position = self._next(category, page, position)

    def iter_entries(
        self, category: str, skiptoken: int | None = 0, *, until: int | None = None
    ) -> Iterator[FeedEntry]:
        """Like :meth:`iter_pages`, one entry at a time, each handed out as soon as it is read (memory
        flat in the page's size too). An answer that breaks off mid-page is asked again and its entries
        already handed out are skipped (by their skiptokens): none repeats, none is missed.

        ``until`` bounds a skiptoken range ``(skiptoken, until]``: entries past it are not handed out and
        no page after the one that passes it is asked for (ranges of one long type loaded side by side).
        """
        url: str | None = self.feed_url(category, skiptoken)
        position = skiptoken or None
        while url is not None:
            stream = self._stream_page(url)
            try:  # closing the stream closes its response, also when the caller stops early
                while True:
                    try:
                        entry = next(stream)
                    except StopIteration as stop:
                        page = cast(FeedPage, stop.value)
                        break
                    if until is not None and entry.skiptoken is not None and entry.skiptoken > until:
                        return
                    yield entry
            finally:
                stream.close()
            if until is not None and page.next_skiptoken is not None and page.next_skiptoken >= until:
                return
            url, position = self._next(category, page, position)

    def _next(self, category: str, page: FeedPage, position: int | None) -> tuple[str | None, int | None]:
        """The URL and skiptoken of the page after ``page`` (None at the head), checked not to loop."""
        if page.next_url is None:
            return None, position
        named = _query(page.next_url).get("category")
        if named is not None and named.strip().lower() != canonical_category(category).lower():
            raise FeedFormatError(
                f"The next link of {page.url} names category {named!r}, not {category!r}: {page.next_url}",
                page.url,
                200,
            )
        nxt = page.next_skiptoken
        if nxt is None or (position is not None and nxt <= position):
            raise FeedFormatError(
                f"The SyncFeed's next link does not move past skiptoken {position}: {page.next_url} "
                f"(from {page.url}); stopping instead of reading the same page again.",
                page.url,
                200,
            )
        return page.next_url, nxt

    def get_entity(self, entity_id: str) -> FeedEntry | None:
        """One entity from ``<root>/Entiteiten/<id>`` (its current version or tombstone), or None on HTTP 404.

        The answer may be the bare entity element or an Atom entry/feed holding it; the result has no feed
        position (``skiptoken`` None) unless the answer carried one."""
        url = f"{self.root}/Entiteiten/{quote(entity_id.strip().lower(), safe='')}"
        try:
            body = cast(bytes, self._get(url, lambda resp, u: _read_body(resp)))
        except ApiError as e:
            if e.status == 404:
                return None
            raise
        try:
            root = etree.fromstring(body, parser=etree.XMLParser(remove_comments=True, huge_tree=True))
            if root.tag == _A_FEED:
                page = parse_feed_page(body, url)
                return page.entries[0] if page.entries else None
            if root.tag == _A_ENTRY:
                return _entry(root)
            return parse_entity(root)
        except (etree.XMLSyntaxError, ValueError) as e:
            raise FeedFormatError(f"Cannot read the entity at {url}: {e}", url, 200) from e

    def resource(self, resource_id: str) -> bytes:
        """The file of an entity (``<root>/Resources/<id>``: a document's PDF, a photo, a VLOS XML), whole."""
        url = f"{self.root}/Resources/{quote(resource_id.strip().lower(), safe='')}"
        return cast(bytes, self._get(url, lambda resp, u: _read_body(resp)))

    def save_resource(self, resource_id: str, path: str | Path, chunk_size: int = 1 << 16) -> int:
        """Stream an entity's file to ``path`` (memory flat in its size); the number of bytes written.

        A broken transfer is retried from the start, rewriting the file."""
        url = f"{self.root}/Resources/{quote(resource_id.strip().lower(), safe='')}"
        target = Path(path)

        def write(resp: requests.Response, _url: str) -> int:
            size = 0
            with target.open("wb") as out:
                for chunk in resp.iter_content(chunk_size):
                    out.write(chunk)
                    size += len(chunk)
            return size

        return cast(int, self._get(url, write))

    # -- HTTP with retries -------------------------------------------------------------------------
    def _stream_page(self, url: str) -> Generator[FeedEntry, None, FeedPage]:
        """Yield a page's entries as they arrive; its links as the return value. A retryable failure
        (before or during the body) asks again under the client's retry policy, the same tenacity
        objects as :meth:`_get` driven by hand (a generator cannot sit inside ``Retrying.__call__``),
        and skips the entries already yielded."""
        url, _ = split_credentials(url)
        auth = self._auth if _origin(url) == self._auth_origin else None
        state = RetryCallState(self._retrying, None, (url,), {})
        last: int | None = None
        while True:
            try:
                with self._open(url, auth) as resp, _broken_body_is_retryable():
                    resp.raw.decode_content = True
                    entries = iter_feed_page(resp.raw, url)
                    while True:
                        try:
                            entry = next(entries)
                        except StopIteration as stop:
                            return cast(FeedPage, stop.value)
                        if last is not None and entry.skiptoken is not None and entry.skiptoken <= last:
                            continue  # handed out before the previous answer broke off
                        last = entry.skiptoken
                        yield entry
            except _Retryable as e:
                state.set_exception((type(e), e, e.__traceback__))
                if self._retrying.stop(state):
                    self._give_up(state)
                state.upcoming_sleep = self._retrying.wait(state)
                self._log_retry(state)
                self._retrying.sleep(state.upcoming_sleep)
                state.prepare_for_next_attempt()

    def _get(self, url: str, read: Callable[[requests.Response, str], Any]) -> Any:
        """GET ``url`` and ``read`` its streamed answer; retry what is worth retrying."""
        url, _ = split_credentials(url)
        auth = self._auth if _origin(url) == self._auth_origin else None
        return self._retrying(self._attempt, url, read, auth)

    def _attempt(
        self, url: str, read: Callable[[requests.Response, str], Any], auth: tuple[str, str] | None
    ) -> Any:
        """One GET: what ``read`` makes of the answer, :class:`_Retryable` when another try may succeed."""
        with self._open(url, auth) as resp, _broken_body_is_retryable():
            return read(resp, url)

    def _open(self, url: str, auth: tuple[str, str] | None) -> requests.Response:
        """Send one GET (counted) and return the streamed 200 answer; :class:`_Retryable` for what another
        try may fix (the OData client's rules), :class:`ApiError` for other answers."""
        self._metrics.request(url)
        s = self.settings
        try:
            resp = self._session.get(url, timeout=(s.connect_timeout, s.read_timeout), auth=auth, stream=True)
        except requests.Timeout as e:
            raise _Retryable(f"timeout ({type(e).__name__})") from e
        except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError) as e:
            raise _Retryable(f"connection error or truncated body ({type(e).__name__}: {e})") from e
        status = resp.status_code
        if status == 200:
            return resp
        with resp:
            if status == 429 or status >= 500:
                raise _Retryable(
                    f"HTTP {status}: {_odata_message(resp)}",
                    status,
                    _retry_after_seconds(resp.headers.get("Retry-After")),
                )
            msg = _odata_message(resp)
            raise ApiError(
                f"TK SyncFeed refused {url} with HTTP {status}: {msg}; not retried.", url, status, msg
            )

    def _log_retry(self, state: RetryCallState) -> None:
        """tenacity's ``before_sleep``: one WARNING line per retry; the retry and its wait counted."""
        failure = _failure(state)
        self._metrics.retry(state.args[0], state.upcoming_sleep)
        log.warning(
            "TK SyncFeed request failed (attempt %d/%d): %s: %s; retrying in %.2f s",
            state.attempt_number,
            self.settings.max_retries + 1,
            state.args[0],
            failure.reason,
            state.upcoming_sleep,
        )

    def _give_up(self, state: RetryCallState) -> NoReturn:
        """tenacity's ``retry_error_callback``: the last failure as an ApiError naming the URL."""
        failure = _failure(state)
        url = state.args[0]
        raise ApiError(
            f"TK SyncFeed request failed {state.attempt_number} time(s), giving up: {url}: {failure.reason}. "
            "The API may be down; retry the task later (it resumes from its cursor) or raise "
            "TK_API_MAX_RETRIES.",
            url,
            failure.status,
        ) from failure


@contextmanager
def _broken_body_is_retryable() -> Iterator[None]:
    """A body that breaks off (truncated, reset, timed out, XML cut short) as :class:`_Retryable`."""
    try:
        yield
    except etree.XMLSyntaxError as e:
        raise _Retryable(f"malformed or truncated XML ({e})", 200) from e
    except (requests.RequestException, urllib3.exceptions.HTTPError, ConnectionError, TimeoutError) as e:
        raise _Retryable(f"connection error or truncated body ({type(e).__name__}: {e})", 200) from e


def _read_body(resp: requests.Response) -> bytes:
    """The whole body of a streamed answer (raises the transport's error when it arrives truncated)."""
    return b"".join(resp.iter_content(1 << 16))
