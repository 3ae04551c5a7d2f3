"""``tk-api probe``: what the live TK OData API does today, measured, as a report to attach to an issue.

    report = run_probe(ProbeSettings(base_url="https://gegevensmagazijn.tweedekamer.nl"))
    report.answering                     # ["v5"]: the versions whose $metadata answered
    write_report(report, Path("out"))    # include.loaders.probe_report: report.md, report.json, …

For every version of :data:`include.loaders.api_profiles.PROFILES` the probe asks for its ``$metadata``
and, where that answers, finds out (one request group at a time, each timed):

* the model: entity sets, properties, EDM types, navigations and keys diffed against the v4/2.0
  reference (:func:`include.loaders.api_metadata.reference_schema`), the profile's known renames and
  additions marked as known, other missing names paired with their likely new names
  (:func:`include.loaders.api_metadata.likely_renames`);
* counts per entity set (``$count=true&$top=0``);
* paging, as measured: rows on a first page asked without ``$top``, ``@odata.nextLink`` or not and its
  form, a second page followed, the ``$top`` cap (``$top`` 1000, 250 and 100 tried) and the default
  order of the first page (which of the orders checked hold);
* the answer to one request of each kind the loaders send (the window query with ``$filter``,
  ``$select`` and ``$expand`` built by :meth:`include.loaders.api.TKClient.build_url` from the entity
  table, the window count, a get-by-key, a keyset page ``$orderby=ApiGewijzigdOp,Id&$top=…`` and the
  page after it).

What the report says of a version is what its server answered: of a profile the probe takes only its
path, and its renames and additions to tell the changes already known from the new ones (and to spell
the loaders' requests as the loaders do).

Credentials in the base URL are sent as HTTP basic auth to that origin only (as
:class:`~include.loaders.api.TKClient` does) and never written: every URL in the report is the clean
one, and the headers listed are the ones sent minus ``Authorization``. Requests are retried a few times
on 5xx, 429 and broken connections, never on a timeout, so a dead endpoint costs seconds, not minutes;
the report says which requests were retried.
"""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import requests

from include.loaders.api import (  # the client's own readers of an error body and of Retry-After
    TKClient,
    _odata_message,
    _retry_after_seconds,
    format_datetime,
    redact_url,
    split_credentials,
    window_filter,
)
from include.loaders.api_metadata import ODataSchema, likely_renames, reference_schema
from include.loaders.api_profiles import PROFILES, ApiProfile
from include.loaders.entities import ENTITIES, KEY, WATERMARK
from include.loaders.odata_values import guid_sort_key, parse_ticks
from include.loaders.settings import ApiSettings

__all__ = [
    "Exchange",
    "PagingFacts",
    "ProbeReport",
    "ProbeSettings",
    "SchemaDiff",
    "SetDiff",
    "TopTrial",
    "VersionProbe",
    "diff_schema",
    "run_probe",
    "server_root",
]

REFERENCE_VERSION = "v4/2.0"
"""The version every served model is compared with (its ``$metadata`` is kept with the samples)."""

WINDOW_START = datetime(2000, 1, 1, tzinfo=UTC)
"""Start of the window of the probe's window queries (end: the probe's start): all of the TK data, so the
first page is a full one wherever the set holds more rows than a page."""

TOP_TRIALS = (1000, 250, 100)
"""The ``$top`` values tried to find a version's cap (the one reported for v5 is 100)."""

KEYSET_TOP = 100
"""``$top`` of the keyset pages (lowered to a smaller measured cap)."""

_LIMIT_RE = re.compile(r"limit of '?(\d+)'?", re.I)


def _now() -> datetime:
    return datetime.now(UTC)


def server_root(base_url: str) -> str:
    """``base_url`` without a trailing profile path (``…/OData/v4/2.0``, ``…/OData/v5``) or slash: the root
    under which every profile's path is tried. Credentials, if any, stay in it."""
    base = base_url.rstrip("/")
    for profile in PROFILES.values():
        if base.endswith(profile.path):
            return base[: -len(profile.path)]
    return base


@dataclass(frozen=True)
class ProbeSettings:
    """What to probe and how patiently.

    Attributes:
        base_url: the server root (``https://gegevensmagazijn.tweedekamer.nl``), may carry
            ``user:password@`` (sent as HTTP basic auth, never written).
        sets: entity sets to count and to send the loaders' requests for (default: the entity table's).
        timeout: seconds to wait for one answer (not retried when it runs out).
        connect_timeout: seconds to open a connection.
        retries: retries of a request after a 5xx, a 429 or a broken connection.
        backoff: first wait before a retry in seconds (doubles per retry; a ``Retry-After`` up to
            ten times this is honoured).
        user_agent: sent with every request, and listed in the report.
    """

    base_url: str = field(repr=False)  # it may carry credentials
    sets: tuple[str, ...] = tuple(ENTITIES)
    timeout: float = 120.0
    connect_timeout: float = 10.0
    retries: int = 2
    backoff: float = 1.0
    user_agent: str = ApiSettings().user_agent + " tk-api probe"

    def __post_init__(self) -> None:
        if not self.base_url.startswith(("http://", "https://")):
            raise ValueError(f"The base URL must be an http(s) URL, got {redact_url(self.base_url)!r}.")
        if self.timeout <= 0 or self.connect_timeout <= 0:
            raise ValueError("Timeouts must be > 0 seconds.")
        if self.retries < 0 or self.backoff < 0:
            raise ValueError("retries and backoff must be >= 0.")
        if not self.sets or any(not s or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", s) for s in self.sets):
            raise ValueError(f"Entity set names must be OData identifiers, got {list(self.sets)!r}.")


@dataclass
class Exchange:
    """One request of the probe and what came back.

    Attributes:
        kind: what it asks (``metadata``, ``count``, ``window``, ``keyset`` …).
        url: the URL, without credentials.
        entity_set: the set it concerns, if one.
        status: the HTTP status of the last attempt, None when no answer came.
        seconds: the time of all attempts together.
        attempts: 1 when not retried.
        error: why it failed (the server's OData error message, a timeout, a refused connection).
        rows: length of the ``value`` array of a JSON answer.
        first_row: property names of its first row (or of a single entity), control information left out.
        next_link: its ``@odata.nextLink``, without credentials.
        count: its ``@odata.count`` (or the number of a ``/$count`` answer).
        content_type: the ``Content-Type`` of the answer.
    """

    kind: str
    url: str
    entity_set: str | None = None
    status: int | None = None
    seconds: float = 0.0
    attempts: int = 1
    error: str | None = None
    rows: int | None = None
    first_row: list[str] = field(default_factory=list)
    next_link: str | None = None
    count: int | None = None
    content_type: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == 200 and self.error is None

    def outcome(self) -> str:
        """``HTTP 200``, ``HTTP 400: <message>``, ``timeout after 120 s`` …, for tables."""
        if self.status is None:
            return self.error or "no answer"
        text = f"HTTP {self.status}"
        return f"{text}: {self.error}" if self.error else text


@dataclass
class SetDiff:
    """How one entity set of a served model differs from the reference (served names where they differ).

    Attributes:
        entity_set: the reference's set name.
        key: reference key; ``served_key`` the served one (equal when unchanged).
        missing: reference properties the served type lacks (known renames excepted).
        new: served properties the reference lacks, name -> EDM type.
        known_renames: reference name -> served name, renames the profile declares and the server shows.
        known_renames_not_seen: renames the profile declares that the server does not show (it still
            serves the reference name).
        known_new: the members of ``new`` the profile declares as added.
        likely_renames: a missing name -> the new name most like it.
        type_changes: property -> [reference EDM type, served EDM type].
        navigations_missing, navigations_new, likely_navigation_renames: the same for navigations.
    """

    entity_set: str
    key: list[str]
    served_key: list[str]
    missing: list[str] = field(default_factory=list)
    new: dict[str, str] = field(default_factory=dict)
    known_renames: dict[str, str] = field(default_factory=dict)
    known_renames_not_seen: dict[str, str] = field(default_factory=dict)
    known_new: list[str] = field(default_factory=list)
    likely_renames: dict[str, str] = field(default_factory=dict)
    type_changes: dict[str, list[str]] = field(default_factory=dict)
    navigations_missing: list[str] = field(default_factory=list)
    navigations_new: list[str] = field(default_factory=list)
    likely_navigation_renames: dict[str, str] = field(default_factory=dict)

    @property
    def changed(self) -> bool:
        return bool(
            self.key != self.served_key
            or self.missing
            or self.new
            or self.known_renames
            or self.known_renames_not_seen
            or self.type_changes
            or self.navigations_missing
            or self.navigations_new
        )


@dataclass
class SchemaDiff:
    """A served model against the v4/2.0 reference: sets missing and new, and per common set a
    :class:`SetDiff` (only the sets that differ are kept)."""

    sets_served: int
    sets_missing: list[str] = field(default_factory=list)
    sets_new: list[str] = field(default_factory=list)
    likely_set_renames: dict[str, str] = field(default_factory=dict)
    sets: dict[str, SetDiff] = field(default_factory=dict)

    def totals(self) -> dict[str, int]:
        """Counts over all sets: properties missing, new, renamed (known + likely), EDM types changed."""
        d = self.sets.values()
        return {
            "missing": sum(len(s.missing) for s in d),
            "new": sum(len(s.new) for s in d),
            "known_renames": sum(len(s.known_renames) for s in d),
            "likely_renames": sum(len(s.likely_renames) for s in d),
            "type_changes": sum(len(s.type_changes) for s in d),
            "navigations_missing": sum(len(s.navigations_missing) for s in d),
            "navigations_new": sum(len(s.navigations_new) for s in d),
            "key_changes": sum(1 for s in d if s.key != s.served_key),
        }


@dataclass
class TopTrial:
    """The answer to ``$top=<top>``: its status, rows, whether a nextLink came, the server's message."""

    top: int
    status: int | None
    rows: int | None
    next_link: bool
    message: str | None


@dataclass
class PagingFacts:
    """Paging of one version, measured on one entity set.

    Attributes:
        entity_set: the set asked (the first of the probed sets with the most rows).
        set_count: its ``@odata.count`` (None when unknown).
        first_page_rows: rows on the first page asked without ``$top``.
        next_link: whether that page carried ``@odata.nextLink``.
        next_link_form: ``$skiptoken`` (with the token's prefix, e.g. ``$skiptoken=Id-…``), ``$skip=<n>``,
            ``other`` or ``none``.
        second_page_rows, second_page_overlap: rows of the page the link gave and how many of them were
            already on the first page.
        verdict: the finding in one phrase (``nextLink ($skiptoken=Id-…)``, ``no nextLink: a full page of
            100 of 250 rows came without one``, ``the whole set fits on one page`` …).
        top_trials: one :class:`TopTrial` per value of :data:`TOP_TRIALS`.
        top_cap: the largest ``$top`` accepted, from the server's message when it names its limit, else the
            largest value tried that was accepted when a larger one was refused; None: none refused.
        top_cap_note: how ``top_cap`` was found.
        orders_checked: each order checked on the first page -> whether the page is in that order.
        default_order: the first order that holds, ``neither`` or ``unknown (…)``.
    """

    entity_set: str
    set_count: int | None = None
    first_page_rows: int | None = None
    next_link: bool = False
    next_link_form: str = "none"
    second_page_rows: int | None = None
    second_page_overlap: int | None = None
    verdict: str = ""
    top_trials: list[TopTrial] = field(default_factory=list)
    top_cap: int | None = None
    top_cap_note: str = ""
    orders_checked: dict[str, bool] = field(default_factory=dict)
    default_order: str = "unknown"


@dataclass
class VersionProbe:
    """Everything found out about one version (one profile of ``PROFILES``).

    Attributes:
        version: the profile name (``v5``); ``service_root`` its root under the base, without credentials.
        answered: whether its ``$metadata`` came as a CSDL document; ``reason`` why not.
        metadata: the ``$metadata`` request; ``metadata_xml`` its body when it answered (written to
            ``metadata-<version>.xml``, not into report.json).
        diff, paging, counts (set -> count, None when the count failed), requests: see the classes.
    """

    version: str
    service_root: str
    metadata: Exchange
    answered: bool = False
    reason: str | None = None
    metadata_xml: bytes | None = field(default=None, repr=False)
    diff: SchemaDiff | None = None
    paging: PagingFacts | None = None
    counts: dict[str, int | None] = field(default_factory=dict)
    requests: list[Exchange] = field(default_factory=list)

    @property
    def file_name(self) -> str:
        """Where the raw ``$metadata`` goes: ``metadata-v4-2.0.xml``, ``metadata-v5.xml``."""
        return "metadata-" + self.version.replace("/", "-") + ".xml"


@dataclass
class ProbeReport:
    """The whole probe: when, against what, with which headers, and one :class:`VersionProbe` per version."""

    base_url: str
    credentials: bool
    started: str
    finished: str
    user_agent: str
    headers: dict[str, str]
    sets: list[str]
    window: list[str]
    versions: list[VersionProbe]

    @property
    def answering(self) -> list[str]:
        return [v.version for v in self.versions if v.answered]

    def retried(self) -> list[Exchange]:
        """Every request that needed more than one attempt."""
        return [e for v in self.versions for e in [v.metadata, *v.requests] if e.attempts > 1]

    def summary_line(self) -> str:
        """One line for stdout: which versions answered."""
        parts = [f"{v.version} {'answers' if v.answered else 'does not answer'}" for v in self.versions]
        return "tk-api probe of " + self.base_url + ": " + ", ".join(parts)

    def to_json(self) -> dict[str, Any]:
        """The report's facts, machine-readable (the raw ``$metadata`` stays in its own files)."""
        out = asdict(self)
        for v, raw in zip(out["versions"], self.versions, strict=True):
            v.pop("metadata_xml", None)
            v["metadata_file"] = raw.file_name if raw.answered else None
        out["answering"] = self.answering
        out["schema_version"] = 1
        return out


# -- HTTP -------------------------------------------------------------------------------------------
class _Http:
    """GETs with bounded retries, each recorded as an :class:`Exchange`; credentials to their origin only."""

    def __init__(self, settings: ProbeSettings, sleep: Callable[[float], None]):
        self.settings = settings
        clean, self._auth = split_credentials(server_root(settings.base_url))
        self.root = clean
        self._origin = urlsplit(clean)[:2]
        self._sleep = sleep
        self.session = requests.Session()
        self.session.headers["User-Agent"] = settings.user_agent
        self.session.headers["Accept"] = "application/json"

    def shown_headers(self) -> dict[str, str]:
        """The headers every request carries, as the report lists them (never ``Authorization``)."""
        shown = {k: str(v) for k, v in self.session.headers.items() if k.lower() != "authorization"}
        if self._auth is not None:
            shown["Authorization"] = "Basic *** (from the base URL, not shown)"
        return shown

    def get(
        self, kind: str, url: str, entity_set: str | None = None, accept: str | None = None
    ) -> tuple[Exchange, requests.Response | None]:
        """GET ``url``: the exchange (always) and the last response (None when no answer came)."""
        url, _ = split_credentials(url)  # a nextLink that carries credentials is used without them
        auth = self._auth if urlsplit(url)[:2] == self._origin else None
        s = self.settings
        ex = Exchange(kind=kind, url=redact_url(url), entity_set=entity_set, attempts=0)
        resp: requests.Response | None = None
        started = time.monotonic()
        for attempt in range(s.retries + 1):
            ex.attempts = attempt + 1
            wait = s.backoff * 2**attempt
            try:
                resp = self.session.get(
                    url,
                    timeout=(s.connect_timeout, s.timeout),
                    auth=auth,
                    headers={"Accept": accept} if accept else None,
                )
            except requests.Timeout:
                ex.status, ex.error, resp = None, f"timeout: no answer within {s.timeout:g} s", None
                break  # not retried: a slow query stays slow, and a probe must not hang
            except requests.RequestException as e:
                ex.status, ex.error, resp = None, _connection_failure(e), None
            else:
                ex.status, ex.error = resp.status_code, None
                if resp.status_code != 200:
                    ex.error = _odata_message(resp) or resp.reason or ""
                if resp.status_code != 429 and resp.status_code < 500:
                    break
                after = _retry_after_seconds(resp.headers.get("Retry-After"))
                if after is not None:
                    wait = max(wait, min(after, 10 * s.backoff))
            if attempt < s.retries:
                self._sleep(wait)
        ex.seconds = round(time.monotonic() - started, 3)
        if resp is not None:
            ex.content_type = resp.headers.get("Content-Type")
        return ex, resp

    def get_json(
        self, kind: str, url: str, entity_set: str | None = None
    ) -> tuple[Exchange, dict[str, Any] | None]:
        """Like :meth:`get` for a JSON answer: rows, first row's names, nextLink and count filled in."""
        ex, resp = self.get(kind, url, entity_set)
        if resp is None or not ex.ok:
            return ex, None
        try:
            body = resp.json()
        except ValueError:
            ex.error = f"the answer is not JSON ({ex.content_type})"
            return ex, None
        if not isinstance(body, dict):
            ex.error = "the answer is not a JSON object"
            return ex, None
        rows = body.get("value")
        if isinstance(rows, list):
            ex.rows = len(rows)
            first = rows[0] if rows and isinstance(rows[0], dict) else {}
        else:
            first = body
        ex.first_row = [k for k in first if "@" not in k]
        if isinstance(body.get("@odata.nextLink"), str):
            ex.next_link = redact_url(body["@odata.nextLink"])
        if isinstance(body.get("@odata.count"), int):
            ex.count = body["@odata.count"]
        return ex, body


def _connection_failure(e: requests.RequestException) -> str:
    """Why no answer came, in words: refused, host not found, TLS, proxy, or the exception itself."""
    causes: list[BaseException] = []
    cause: BaseException | None = e
    while cause is not None and len(causes) < 10:
        causes.append(cause)
        cause = cause.__cause__ or cause.__context__
    text = " ".join(str(c) for c in causes)
    if isinstance(e, requests.exceptions.SSLError):
        kind = "TLS handshake failed"
    elif isinstance(e, requests.exceptions.ProxyError):
        kind = "the proxy refused or failed"
    elif any(isinstance(c, ConnectionRefusedError) for c in causes) or "Connection refused" in text:
        kind = "connection refused (nothing listens there)"
    elif any(isinstance(c, socket.gaierror) for c in causes) or "NameResolution" in text:
        kind = "host name not found"
    else:
        kind = "connection failed"
    return f"{kind} ({type(e).__name__}: {_short(e)})"


def _short(e: Exception) -> str:
    text = str(e)
    return text if len(text) <= 200 else text[:200] + "…"


# -- the model against the reference ----------------------------------------------------------------
def diff_schema(served: ODataSchema, profile: ApiProfile, reference: ODataSchema | None = None) -> SchemaDiff:
    """``served`` against ``reference`` (default: the v4/2.0 reference), ``profile``'s renames and
    additions marked as known, the remaining missing names paired with likely new names."""
    ref = reference_schema() if reference is None else reference
    diff = SchemaDiff(sets_served=len(served.entity_sets))
    diff.sets_missing = [s for s in ref.entity_sets if s not in served.entity_sets]
    diff.sets_new = [s for s in served.entity_sets if s not in ref.entity_sets]
    diff.likely_set_renames = likely_renames(diff.sets_missing, diff.sets_new)
    for name, want in ref.entity_sets.items():
        got = served.entity_sets.get(name)
        if got is None:
            continue
        known = profile.renames_for(want.name)
        d = SetDiff(name, list(want.key), list(got.key))
        matched: set[str] = set()
        for prop, edm in want.properties.items():
            alias = known.get(prop, prop)
            if alias in got.properties:
                served_name = alias
                if alias != prop:
                    d.known_renames[prop] = alias
            elif prop in got.properties:
                served_name = prop
                if alias != prop:
                    d.known_renames_not_seen[prop] = alias
            else:
                d.missing.append(prop)
                continue
            matched.add(served_name)
            if got.properties[served_name] != edm:
                d.type_changes[prop] = [edm, got.properties[served_name]]
        d.new = {p: t for p, t in got.properties.items() if p not in matched}
        added = profile.added_properties.get(want.name, {})
        d.known_new = [p for p in d.new if p in added]
        d.likely_renames = likely_renames(d.missing, [p for p in d.new if p not in added])
        d.navigations_missing = [n for n in want.navigations if n not in got.navigations]
        d.navigations_new = [n for n in got.navigations if n not in want.navigations]
        d.likely_navigation_renames = likely_renames(d.navigations_missing, d.navigations_new)
        if d.changed:
            diff.sets[name] = d
    return diff


# -- paging -----------------------------------------------------------------------------------------
def _orders(rows: list[dict[str, Any]]) -> dict[str, bool]:
    """Which orders ``rows`` are in (non-decreasing), among those that can be checked on them."""
    checks: dict[str, bool] = {}
    ids = [r.get(KEY) for r in rows]
    if all(isinstance(i, str) and len(i) == 36 for i in ids):
        low = [str(i).lower() for i in ids]
        checks["Id (SQL Server uniqueidentifier order)"] = low == sorted(low, key=guid_sort_key)
        checks["Id (string order)"] = low == sorted(low)
    try:  # rows without a value (the samples have one) are left out of this check
        ticks = [parse_ticks(r[WATERMARK]) for r in rows if isinstance(r.get(WATERMARK), str)]
    except ValueError:
        ticks = []
    if len(ticks) >= 2:
        checks[f"{WATERMARK} ascending"] = ticks == sorted(ticks)
        checks[f"{WATERMARK} descending"] = ticks == sorted(ticks, reverse=True)
    return checks


def _link_form(link: str) -> str:
    params = dict(parse_qsl(urlsplit(link).query, keep_blank_values=True))
    if "$skiptoken" in params:
        token = params["$skiptoken"]
        prefix = token.split("-", 1)[0] + "-…" if "-" in token else "…"
        return f"$skiptoken={prefix}"
    if "$skip" in params:
        return f"$skip={params['$skip']}"
    return "other"


def probe_paging(
    http: _Http, client: TKClient, entity_set: str, set_count: int | None, requests_out: list[Exchange]
) -> PagingFacts:
    """Measure paging on ``entity_set``: a first page without ``$top``, the page its nextLink gives, the
    ``$top`` values of :data:`TOP_TRIALS`, the order of the first page."""
    facts = PagingFacts(entity_set, set_count=set_count)
    ex, body = http.get_json("paging: first page, no $top", client.build_url(entity_set), entity_set)
    requests_out.append(ex)
    rows = body.get("value") if body else None
    if isinstance(rows, list):
        facts.first_page_rows = len(rows)
        link = body.get("@odata.nextLink") if body else None
        facts.next_link = isinstance(link, str)
        dict_rows = [r for r in rows if isinstance(r, dict)]
        facts.orders_checked = _orders(dict_rows)
        holding = [o for o, ok in facts.orders_checked.items() if ok]
        if len(rows) < 2:
            facts.default_order = "unknown (fewer than 2 rows on the page)"
        elif not facts.orders_checked:
            facts.default_order = f"unknown (no {KEY} / {WATERMARK} to check)"
        else:
            facts.default_order = holding[0] if holding else "neither"
        if isinstance(link, str):
            facts.next_link_form = _link_form(link)
            facts.verdict = f"nextLink ({facts.next_link_form})"
            ex2, body2 = http.get_json("paging: the nextLink's page", link, entity_set)
            requests_out.append(ex2)
            rows2 = body2.get("value") if body2 else None
            if isinstance(rows2, list):
                facts.second_page_rows = len(rows2)
                first_ids = {r.get(KEY) for r in dict_rows}
                facts.second_page_overlap = sum(
                    1 for r in rows2 if isinstance(r, dict) and r.get(KEY) in first_ids
                )
        elif set_count is not None and len(rows) >= set_count:
            facts.verdict = f"the whole set ({set_count} rows) fits on one page: no nextLink needed"
        else:
            of = f" of {set_count}" if set_count is not None else ""
            facts.verdict = f"no nextLink: a page of {len(rows)}{of} rows came without one"
    else:
        facts.verdict = f"first page failed: {ex.outcome()}"
    for top in TOP_TRIALS:
        url = client.build_url(entity_set, select=[KEY], extra={"$top": str(top)})
        ex, body = http.get_json(f"paging: $top={top}", url, entity_set)
        requests_out.append(ex)
        facts.top_trials.append(TopTrial(top, ex.status, ex.rows, ex.next_link is not None, ex.error))
    refused = [t for t in facts.top_trials if t.status == 400]
    accepted = [t for t in facts.top_trials if t.status == 200]
    named = [int(m.group(1)) for t in refused if t.message and (m := _LIMIT_RE.search(t.message))]
    if named:
        facts.top_cap = min(named)
        facts.top_cap_note = "named in the server's HTTP 400 message"
    elif refused and accepted:
        smallest_refused = min(t.top for t in refused)
        below = [t.top for t in accepted if t.top < smallest_refused]
        facts.top_cap = max(below) if below else None
        facts.top_cap_note = f"$top={smallest_refused} refused (HTTP 400), " + (
            f"$top={facts.top_cap} accepted: the cap lies between them"
            if below
            else "no smaller one accepted"
        )
    elif accepted and not refused:
        most = max(accepted, key=lambda t: t.top)
        facts.top_cap_note = f"$top={most.top} was accepted and gave {most.rows} rows" + (
            "" if most.rows is None or most.rows >= most.top else ", as many as a page holds"
        )
    else:
        facts.top_cap_note = "not measured: the $top requests failed"
    return facts


# -- the loaders' requests --------------------------------------------------------------------------
def _keyset_filter(window: str | None, last: dict[str, Any], watermark: str) -> str | None:
    """The window, restricted to the rows after ``last`` in ``<watermark>, Id`` order (``watermark``: the
    served name of ``ApiGewijzigdOp``); None when ``last`` lacks either value."""
    stamp, key = last.get(watermark), last.get(KEY)
    if not isinstance(stamp, str) or not isinstance(key, str):
        return None
    past = f"({watermark} gt {stamp} or ({watermark} eq {stamp} and {KEY} gt {key}))"
    return f"{window} and {past}" if window else past


def probe_requests(
    http: _Http, client: TKClient, entity_set: str, window: tuple[datetime, datetime], top: int
) -> list[Exchange]:
    """One request of each kind the loaders send for ``entity_set`` (an entity of the table)."""
    entity = ENTITIES[entity_set]
    out: list[Exchange] = []
    watermark = client.profile.to_profile(entity_set, WATERMARK)
    flt = window_filter(*window, watermark)
    url = client.build_url(entity_set, *window, select=entity.select, expand=entity.expand)
    ex, body = http.get_json("window: $filter + $select + $expand", url, entity_set)
    out.append(ex)
    count_query = {"$filter": flt or "", "$top": "0", "$count": "true"}
    url = client.build_url(entity_set, extra=count_query)
    out.append(http.get_json("window count: $count=true&$top=0", url, entity_set)[0])
    rows = body.get("value") if body else None
    first = rows[0] if isinstance(rows, list) and rows and isinstance(rows[0], dict) else None
    if first is not None and isinstance(first.get(KEY), str):
        select = ",".join(client.profile.to_profile(entity_set, p) for p in entity.select)
        url = f"{client.root}/{entity_set}({first[KEY]})?$select={select}"
        out.append(http.get_json("get by key", url, entity_set)[0])
    keyset = {"$orderby": f"{watermark},{KEY}", "$top": str(top)}
    url = client.build_url(entity_set, *window, select=entity.select, extra=keyset)
    ex, body = http.get_json(f"keyset: $orderby={WATERMARK},{KEY}&$top={top}", url, entity_set)
    out.append(ex)
    rows = body.get("value") if body else None
    if isinstance(rows, list) and len(rows) == top and isinstance(rows[-1], dict):
        past = _keyset_filter(flt, rows[-1], watermark)
        if past is not None:
            url = client.build_url(entity_set, select=entity.select, extra={"$filter": past, **keyset})
            ex, body2 = http.get_json("keyset: the next page (filtered past the last row)", url, entity_set)
            rows2 = body2.get("value") if body2 else None
            if isinstance(rows2, list) and rows2:
                seen = {r.get(KEY) for r in rows if isinstance(r, dict)}
                repeated = sum(1 for r in rows2 if isinstance(r, dict) and r.get(KEY) in seen)
                if repeated:
                    ex.error = f"{repeated} row(s) of the previous keyset page came again"
            out.append(ex)
    return out


def count_set(http: _Http, client: TKClient, entity_set: str, requests_out: list[Exchange]) -> int | None:
    """The size of ``entity_set``: ``$count=true&$top=0``, else (a refusal or no ``@odata.count``, not a
    timeout) ``/$count``; None when neither answers. Every request goes to ``requests_out``."""
    ex, _ = http.get_json("count: $count=true&$top=0", client.build_url(entity_set, extra=_COUNT), entity_set)
    requests_out.append(ex)
    if ex.count is not None or ex.status is None or ex.status >= 500:
        return ex.count
    ex, resp = http.get("count: /$count", f"{client.root}/{entity_set}/$count", entity_set, "text/plain")
    requests_out.append(ex)
    text = resp.text.strip() if resp is not None and ex.ok else ""
    if text.isdigit():
        ex.count = int(text)
    elif ex.ok:
        ex.error = f"the answer is not a number: {text[:50]!r}"
    return ex.count


# -- the probe --------------------------------------------------------------------------------------
def probe_version(
    http: _Http,
    profile: ApiProfile,
    sets: Sequence[str],
    window: tuple[datetime, datetime],
    progress: Callable[[str], None],
) -> VersionProbe:
    """Everything :mod:`probe` finds out about one version (see the module docstring)."""
    with TKClient(ApiSettings(base_url=http.root, profile=profile.name)) as client:
        root = client.root
        progress(f"{profile.name}: $metadata at {root}/$metadata")
        ex, resp = http.get("metadata", f"{root}/$metadata", accept="application/xml")
        probe = VersionProbe(profile.name, root, ex)
        if resp is None or ex.status != 200:
            probe.reason = ex.outcome()
            return probe
        try:
            schema = ODataSchema.from_xml(resp.content)
        except ValueError as e:
            probe.reason = f"HTTP 200 but not a CSDL document ({ex.content_type}): {e}"
            return probe
        probe.answered, probe.metadata_xml = True, resp.content
        probe.diff = diff_schema(schema, profile)
        served = [s for s in sets if s in schema.entity_sets]
        progress(f"{profile.name}: counts of {len(served)} entity set(s)")
        for name in sets:
            if name not in schema.entity_sets:
                probe.counts[name] = None
                continue
            probe.counts[name] = count_set(http, client, name, probe.requests)
        if served:
            paged = max(served, key=lambda s: probe.counts.get(s) or 0)
            progress(f"{profile.name}: paging, measured on {paged}")
            probe.paging = probe_paging(http, client, paged, probe.counts.get(paged), probe.requests)
        top = min(KEYSET_TOP, probe.paging.top_cap or KEYSET_TOP) if probe.paging else KEYSET_TOP
        loaded = [s for s in served if s in ENTITIES]
        progress(f"{profile.name}: the loaders' requests for {', '.join(loaded) or 'no set'}")
        for name in loaded:
            probe.requests.extend(probe_requests(http, client, name, window, top))
        return probe


_COUNT = {"$count": "true", "$top": "0"}


def run_probe(
    settings: ProbeSettings,
    *,
    progress: Callable[[str], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> ProbeReport:
    """Probe every version of ``PROFILES`` under ``settings.base_url``; never raises for what a server
    answers (a version that does not answer is a finding). ``progress`` gets one line per request group."""
    say = progress or (lambda _line: None)
    http = _Http(settings, sleep)
    started = _now().replace(microsecond=0)
    window = (WINDOW_START, started)
    try:
        versions = [probe_version(http, p, settings.sets, window, say) for p in PROFILES.values()]
    finally:
        http.session.close()
    return ProbeReport(
        base_url=http.root,
        credentials=split_credentials(settings.base_url)[1] is not None,
        started=format_datetime(started),
        finished=format_datetime(_now().replace(microsecond=0)),
        user_agent=settings.user_agent,
        headers=http.shown_headers(),
        sets=list(settings.sets),
        window=[format_datetime(window[0]), format_datetime(window[1])],
        versions=versions,
    )


if __name__ == "__main__":  # python -m include.loaders.probe [options]: the same as tk-api probe
    import sys

    from include.loaders.tk_api_cli import main

    sys.exit(main(["probe", *sys.argv[1:]]))
