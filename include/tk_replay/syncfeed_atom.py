"""The SyncFeed's wire format, written: Atom feed pages and TK entity documents, as the real feed writes them.

The offline server builds its ``/SyncFeed/2.0`` answers with these functions; tests build pages in every
form the live feed is known to use (``../shared/tk-api/SYNCFEED.md`` §2), each form a switch:

- :func:`entity_element`: the TK entity element (namespace :data:`TK_NS`) in the default-namespace form, or
  ``prefixed`` with ``ns1:`` (Toezegging, Vergadering, Verslag on the live feed); ``tk:bijgewerkt`` as a
  ``Z``, naive or ``+01:00`` time (``time_style``, 7 fractional digits); ``tk:verwijderd`` as ``true`` or
  ``True`` (``deleted_text``); ``xsi:nil="true"`` for None; elements in the order given (``order``: the
  XSD's sequence, since some types interleave references and scalars). A deleted entity has no children.
- :func:`feed_page`: one Atom page: title = GUID, ``id`` = ``…/Entiteiten/<guid>``, author, updated,
  ``<category term>`` in lower camel case, the entry's own ``<link rel="next">`` (its resume point), an
  enclosure for types with a file, ``<content type="application/xml">``; the feed's ``next`` link, or the
  ``resume`` link of the empty caught-up page. Links may echo the category in lower case and put
  ``skiptoken`` first. :func:`feed_page_chunks` writes the same page as a stream of chunks.

Everything is built as text with XML escaping (the server writes thousands of entries a second); the
writer refuses characters XML 1.0 cannot carry instead of writing a page no parser accepts.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Literal
from urllib.parse import quote
from xml.sax.saxutils import escape, quoteattr
from zoneinfo import ZoneInfo

__all__ = [
    "ATOM_NS",
    "AUTHOR",
    "TK_NS",
    "XSI_NS",
    "AtomEntry",
    "TimeStyle",
    "element_name",
    "entity_document",
    "entity_element",
    "feed_link",
    "feed_page",
    "feed_page_chunks",
    "format_feed_time",
]

ATOM_NS = "http://www.w3.org/2005/Atom"
TK_NS = "http://www.tweedekamer.nl/xsd/tkData/v1-0"
XSI_NS = "http://www.w3.org/2001/XMLSchema-instance"
AUTHOR = "Tweede Kamer der Staten-Generaal"

TimeStyle = Literal["z", "z_seconds", "naive", "offset"]
"""``z``: ``2023-08-29T11:10:24.0962032Z``; ``z_seconds``: ``2023-08-29T11:10:24Z`` (whole seconds);
``naive``: the same UTC time without a zone (as the live feed
writes some categories; the reader takes it as UTC); ``offset``: Amsterdam local time with its offset
(``+01:00`` / ``+02:00``)."""

_AMSTERDAM = ZoneInfo("Europe/Amsterdam")
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")
_NS_DECL = f'xmlns:tk="{TK_NS}" xmlns:xsi="{XSI_NS}"'

Value = str | int | float | bool | date | datetime | None


def element_name(type_name: str) -> str:
    """The lower-camel element and category-term name of a type (``FractieZetelPersoon`` ->
    ``fractieZetelPersoon``)."""
    return type_name[:1].lower() + type_name[1:]


def format_feed_time(value: datetime | str, style: TimeStyle = "z") -> str:
    """``value`` (aware) in one of the feed's three forms, with 7 fractional digits (see :data:`TimeStyle`).

    A ``str`` is taken as already written in the wanted form and returned as it is (a server that keeps
    100-ns ticks writes all 7 digits itself; a datetime has only 6).
    Raises ValueError for a naive datetime: the writer must know which instant it writes."""
    if isinstance(value, str):
        return value
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{value!r} has no time zone; pass an aware datetime.")
    when = value.astimezone(_AMSTERDAM if style == "offset" else UTC)
    text = (
        f"{when.year:04d}-{when.month:02d}-{when.day:02d}T{when.hour:02d}:{when.minute:02d}:{when.second:02d}"
    )
    if style == "z_seconds":
        return text + "Z"
    text += f".{when.microsecond:06d}0"
    if style == "z":
        return text + "Z"
    if style == "naive":
        return text
    if style == "offset":
        return text + when.isoformat()[-6:]
    raise ValueError(f"unknown time style {style!r} (expected z, naive or offset)")


def _text(value: Value, name: str, time_style: TimeStyle) -> str:
    """An XSD lexical form of ``value``, escaped for element content."""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, datetime):
        text = format_feed_time(value, time_style)
    elif isinstance(value, date):
        text = value.isoformat()
    else:
        text = str(value)
    if _NOT_XML.search(text):
        raise ValueError(f"element {name!r} holds a character XML 1.0 cannot carry: {text!r}")
    return escape(text)


def entity_element(
    type_name: str,
    entity_id: str,
    *,
    bijgewerkt: datetime | str,
    deleted: bool = False,
    fields: Sequence[tuple[str, Value]] = (),
    refs: Sequence[tuple[str, str] | tuple[str, str, str]] = (),
    prefixed: bool = False,
    order: Sequence[str] | None = None,
    time_style: TimeStyle = "z",
    deleted_text: str | None = None,
    attributes: Mapping[str, str] | None = None,
) -> bytes:
    """One TK entity element (no XML declaration), ready to sit in an entry's ``<content>``.

    Args:
        type_name: the type in PascalCase (``Stemming``); the element is its lower camel form.
        entity_id: the GUID (written in lower case).
        bijgewerkt: the source time (``tk:bijgewerkt``), written in ``time_style``.
        deleted: a tombstone: ``tk:verwijderd`` true and no children (``fields``/``refs`` ignored).
        fields: scalar elements ``(name, value)``; None is written ``xsi:nil="true"``; a name may repeat
            (the live feed's repeated scalars). Datetime values use ``time_style`` too. A name
            ``parent/child`` is written nested, ``<parent><child>…</child></parent>``, the children of one
            parent together at the place of the first (``periode/van`` of persoonNevenfunctie).
        refs: reference elements ``(name, guid)``, written ``<name ref="guid"/>``; a name may repeat.
            ``(name, guid, bijgewerkt)`` adds ``tk:bijgewerkt`` (a ``referentieBijgewerktLiteral``:
            toezegging's ``isHerhalingVan``…), the text as given.
        prefixed: the ``ns1:`` form instead of the default namespace.
        order: element names in the order to write them (the XSD's sequence); elements of other names
            follow. When None: all refs, then all fields, each in the order given (most XSDs' order).
        time_style: see :data:`TimeStyle`.
        deleted_text: how to spell ``tk:verwijderd`` (``"True"`` as live Persoon entries do); default
            ``true``/``false``.
        attributes: further attributes of the element by local name (``contentType``, ``contentLength``),
            written in the TK namespace (``tk:contentType``) as base.xsd declares them.
    """
    name = element_name(type_name)
    tag = f"ns1:{name}" if prefixed else name
    ns = f'xmlns:ns1="{TK_NS}"' if prefixed else f'xmlns="{TK_NS}"'
    flag = deleted_text if deleted_text is not None else ("true" if deleted else "false")
    head = (
        f"<{tag} {ns} {_NS_DECL} id={quoteattr(entity_id.lower())} "
        f"tk:bijgewerkt={quoteattr(format_feed_time(bijgewerkt, time_style))} tk:verwijderd={quoteattr(flag)}"
    )
    for key, value in (attributes or {}).items():  # global attributes of base.xsd: TK-qualified
        head += f" tk:{key}={quoteattr(str(value))}"
    if deleted:
        return (head + "/>").encode()
    prefix = "ns1:" if prefixed else ""
    children: list[tuple[str, str]] = []
    for ref in refs:
        stamp = f" tk:bijgewerkt={quoteattr(ref[2])}" if len(ref) > 2 else ""
        children.append((ref[0], f"<{prefix}{ref[0]} ref={quoteattr(ref[1].lower())}{stamp}/>"))
    nested: dict[str, list[str]] = {}
    for field_name, value in fields:
        parent, _, child = field_name.rpartition("/")
        if value is None:
            xml = f'<{prefix}{child} xsi:nil="true"/>'
        else:
            text = _text(value, field_name, time_style)
            xml = f"<{prefix}{child}>{text}</{prefix}{child}>"
        if not parent:
            children.append((field_name, xml))
        elif parent in nested:
            nested[parent].append(xml)
        else:
            nested[parent] = [xml]
            children.append((parent, ""))  # the parent's place; filled in below
    if nested:
        children = [
            (n, f"<{prefix}{n}>{''.join(nested[n])}</{prefix}{n}>" if n in nested and not x else x)
            for n, x in children
        ]
    if order is not None:
        rank = {n: i for i, n in enumerate(order)}
        children.sort(key=lambda c: rank.get(c[0], len(rank)))  # stable: repeats keep their order
    body = "".join(xml for _, xml in children)
    return f"{head}>{body}</{tag}>".encode()


def entity_document(element: bytes) -> bytes:
    """The answer of ``/Entiteiten/<id>``: the entity element with an XML declaration."""
    return b'<?xml version="1.0" encoding="utf-8"?>\n' + element


def feed_link(
    base_url: str,
    category: str,
    skiptoken: int | None,
    *,
    lower_case: bool = False,
    skiptoken_first: bool = False,
) -> str:
    """A ``Feed`` URL as the feed writes it in links (not yet escaped for an attribute).

    Args:
        base_url: the SyncFeed root (``http://host:port/SyncFeed/2.0``).
        category: the type in PascalCase; in lower case when ``lower_case`` (``category=document``);
            ``""`` for the global stream of all types (no ``category`` parameter).
        skiptoken: None for no skiptoken parameter.
        skiptoken_first: ``?skiptoken=N&category=X`` instead of ``?category=X&skiptoken=N``.
    """
    params = [("category", quote(category.lower() if lower_case else category, safe=""))] if category else []
    if skiptoken is not None:
        params.append(("skiptoken", str(int(skiptoken))))
    if skiptoken_first:
        params.reverse()
    return f"{base_url.rstrip('/')}/Feed?" + "&".join(f"{k}={v}" for k, v in params)


@dataclass(frozen=True)
class AtomEntry:
    """One entry of a feed page.

    Attributes:
        entity_id: the GUID (title and ``…/Entiteiten/<guid>``).
        category: the type in PascalCase (``FractieZetelPersoon``).
        skiptoken: the entry's own resume point (its ``<link rel="next">``).
        updated: the API time of the entry (``<updated>``), aware.
        content: the entity element (:func:`entity_element`).
        enclosure: write ``<link rel="enclosure" href="…/Resources/<id>">`` (types with a file).
        time_style: the form of ``<updated>`` (see :data:`TimeStyle`).
    """

    entity_id: str
    category: str
    skiptoken: int
    updated: datetime | str
    content: bytes
    enclosure: bool = False
    time_style: TimeStyle = "z"


def feed_page(
    base_url: str,
    category: str,
    entries: Sequence[AtomEntry],
    next_skiptoken: int | None = None,
    resume_skiptoken: int | None = None,
    *,
    lower_case_links: bool = False,
    skiptoken_first: bool = False,
    self_skiptoken: int | None = None,
    updated: datetime | None = None,
) -> bytes:
    """One Atom page of ``Feed?category=<category>`` as bytes (UTF-8, with an XML declaration).

    Args:
        base_url: the SyncFeed root the links are built on (``http://host:port/SyncFeed/2.0``).
        category: the type in PascalCase.
        entries: the page's entries in feed order.
        next_skiptoken: the feed-level ``<link rel="next">`` (None: no next link).
        resume_skiptoken: the ``<link rel="resume">`` of the caught-up page (give ``entries`` empty).
        lower_case_links, skiptoken_first: the link quirks of :func:`feed_link`, for every link of the page.
        self_skiptoken: the skiptoken the page was asked with (its ``self`` link and ``id``).
        updated: the feed's ``<updated>`` (default: the newest entry's time, else now).
    """
    newest = updated or max((e.updated for e in entries if isinstance(e.updated, datetime)), default=None)
    return b"".join(
        feed_page_chunks(
            base_url,
            category,
            entries,
            next_skiptoken,
            resume_skiptoken,
            lower_case_links=lower_case_links,
            skiptoken_first=skiptoken_first,
            self_skiptoken=self_skiptoken,
            updated=newest,
        )
    )


def feed_page_chunks(
    base_url: str,
    category: str,
    entries: Iterable[AtomEntry],
    next_skiptoken: int | None = None,
    resume_skiptoken: int | None = None,
    *,
    lower_case_links: bool = False,
    skiptoken_first: bool = False,
    self_skiptoken: int | None = None,
    updated: datetime | None = None,
) -> Iterator[bytes]:
    """:func:`feed_page` as a stream: the head, one chunk per entry (``entries`` may be lazy), the end;
    for a server that writes a page while it reads its rows. ``updated`` defaults to now here."""
    root = base_url.rstrip("/")

    def link(rel: str, skiptoken: int | None) -> str:
        href = feed_link(
            root, category, skiptoken, lower_case=lower_case_links, skiptoken_first=skiptoken_first
        )
        return f"<link rel={quoteattr(rel)} href={quoteattr(href)}/>"

    self_href = feed_link(
        root, category, self_skiptoken, lower_case=lower_case_links, skiptoken_first=skiptoken_first
    )
    head = [
        '<?xml version="1.0" encoding="utf-8"?>\n',
        f'<feed xmlns="{ATOM_NS}">',
        f"<title>{escape(f'Gegevensmagazijn SyncFeed (category: {category})')}</title>",
        f"<id>{escape(self_href)}</id>",
        f"<updated>{format_feed_time(updated or datetime.now(UTC))}</updated>",
        f"<author><name>{AUTHOR}</name></author>",
        link("self", self_skiptoken),
    ]
    if next_skiptoken is not None:
        head.append(link("next", next_skiptoken))
    if resume_skiptoken is not None:
        head.append(link("resume", resume_skiptoken))
    yield "".join(head).encode()
    for e in entries:
        guid = e.entity_id.lower()
        enclosure = (
            f'<link rel="enclosure" href={quoteattr(f"{root}/Resources/{guid}")}/>' if e.enclosure else ""
        )
        yield (
            (
                f"<entry><title>{guid}</title><id>{escape(root)}/Entiteiten/{guid}</id>"
                f"<author><name>{AUTHOR}</name></author>"
                f"<updated>{format_feed_time(e.updated, e.time_style)}</updated>"
                f"<category term={quoteattr(element_name(e.category))}/>"
                f"{link('next', e.skiptoken)}{enclosure}"
                '<content type="application/xml">'
            ).encode()
            + e.content
            + b"</content></entry>"
        )
    yield b"</feed>"
