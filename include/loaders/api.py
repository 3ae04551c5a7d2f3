"""TK OData client: API profiles, a ``$metadata`` check, streaming pages over a window, retries.

    with TKClient(ApiSettings.from_env()) as client:
        client.check_metadata({"Zaak": EntityRequirement(properties=["Id"], navigations=["Document"])})
        for page in client.iter_pages("Zaak", start, end, select=["Id", "Nummer"], expand=["Document"]):
            ...  # one list of canonical-named dicts per server page

Paging works on any version (:meth:`TKClient.iter_pages`): the first request carries no ``$top`` and no
``$skip`` and asks for ``$orderby=ApiGewijzigdOp,Id``; when the server sends ``@odata.nextLink``
(``$skiptoken=…``) it is followed verbatim; when it does not and the page is full, the next page is a
*keyset* page: ``$top`` = the profile's cap and a filter past the last row (``ApiGewijzigdOp gt <t> or
(ApiGewijzigdOp eq <t> and Id gt <id>)``), never a deep ``$skip``. Memory is one page whatever the
result size. Windows are half-open ``[start, end)`` on ``ApiGewijzigdOp``; tombstones (``Verwijderd:
true``) pass through, because a delta that filtered them out would never see a deletion. Retries are
tenacity's (see :class:`TKClient`), honouring the server's ``Retry-After``.

The version (``TK_API_PROFILE``, default ``auto``) is found on first use by
:func:`include.loaders.discovery.discover` unless the settings pin it.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any, NoReturn, cast
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import requests
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_random_exponential,
)
from tenacity.wait import wait_base

from include.loaders.api_metadata import (
    EntityRequirement,
    ODataSchema,
    check_requirements,
)
from include.loaders.api_profiles import ApiProfile, get_profile
from include.loaders.metrics import ApiMetrics
from include.loaders.settings import ApiSettings

if TYPE_CHECKING:
    from include.loaders.discovery import Discovery

__all__ = [
    "KEY",
    "ApiError",
    "EntityRequirement",
    "MetadataMismatch",
    "ODataSchema",
    "TKClient",
    "format_datetime",
    "keyset_filter",
    "redact_url",
    "split_credentials",
    "window_filter",
]

log = logging.getLogger(__name__)

WATERMARK = "ApiGewijzigdOp"
KEY = "Id"
"""The key of every entity: the keyset pages' tie-breaker after :data:`WATERMARK`."""
# true on a deleted row (entities.TOMBSTONE_FLAG; the client does not import the entity table)
TOMBSTONE = "Verwijderd"

# Characters left as they are in query values: readable URLs, and what the real API's clients send.
_SAFE = "$(),:'=/"


class ApiError(RuntimeError):
    """A request to the TK API failed for good.

    Attributes:
        url: the URL of the failing request.
        status: the HTTP status, or None when no response came (connection error, timeout).
        server_message: the message of the OData error body, when there was one.
        attempts: how many times the request was sent before giving up.
    """

    attempts: int = 1

    def __init__(self, message: str, url: str, status: int | None = None, server_message: str | None = None):
        super().__init__(message)
        self.url = url
        self.status = status
        self.server_message = server_message


class MetadataMismatch(ApiError):
    """The API's ``$metadata`` lacks entity sets, keys, properties or navigations the loaders rely on.

    Attributes:
        problems: one line per missing or renamed item, e.g.
            ``"Agendapunt: property 'Activiteit_Id' is missing (renamed to 'ActiviteitId'?)"``.
    """

    def __init__(self, url: str, profile: str, problems: list[str]):
        lines = "\n  - ".join(problems)
        super().__init__(
            f"The TK API at {url} (profile {profile}) does not offer what the loaders need; "  # noqa: S608
            f"nothing was loaded:\n  - {lines}\n"
            "If the API changed, update the profile in include/loaders/api_profiles.py or the entity "
            "table; if the wrong version is configured, set TK_API_PROFILE / TK_API_BASE_URL.",
            url,
        )
        self.problems = problems


def format_datetime(value: datetime) -> str:
    """An unquoted OData DateTimeOffset literal in UTC (``2024-06-01T00:00:00Z``).

    Raises ValueError for naive datetimes: a window must not depend on the machine's time zone.
    """
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"Window bound {value!r} has no time zone; pass an aware datetime (UTC).")
    utc = value.astimezone(UTC)
    # not strftime: its %Y does not pad years below 1000 on every platform (year 1 became "1-01-01")
    text = f"{utc.year:04d}-{utc.month:02d}-{utc.day:02d}T{utc.hour:02d}:{utc.minute:02d}:{utc.second:02d}"
    if utc.microsecond:
        text += f".{utc.microsecond:06d}"
    return text + "Z"


def window_filter(start: datetime | None, end: datetime | None, prop: str = WATERMARK) -> str | None:
    """The ``$filter`` of the half-open window ``[start, end)`` on ``prop``, or None for no bound."""
    parts = []
    if start is not None:
        parts.append(f"{prop} ge {format_datetime(start)}")
    if end is not None:
        parts.append(f"{prop} lt {format_datetime(end)}")
    if start is not None and end is not None and start >= end:
        raise ValueError(f"Empty window: start {start.isoformat()} is not before end {end.isoformat()}.")
    return " and ".join(parts) or None


def keyset_filter(window: str | None, last_value: str | None, last_id: str, prop: str = WATERMARK) -> str:
    """The ``$filter`` of the keyset page after the row ``(last_value, last_id)`` in the order
    ``$orderby=<prop>,Id``: ``(<window>) and (<prop> gt <t> or (<prop> eq <t> and Id gt <id>))``.

    ``last_value`` is the row's value exactly as served (all 7 fractional digits, its offset): the server
    compares instants, and a rounded value would skip or repeat rows that share the second. A null
    value sorts first, so past it come the later Ids with null and every non-null row.
    """
    if last_value is None:
        past = f"({prop} eq null and {KEY} gt {last_id}) or {prop} ne null"
    else:
        past = f"{prop} gt {last_value} or ({prop} eq {last_value} and {KEY} gt {last_id})"
    return f"({window}) and ({past})" if window else past


def split_credentials(url: str) -> tuple[str, tuple[str, str] | None]:
    """``url`` without its ``user:password@`` part, and that part (percent-decoded), or None."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url, None
    userinfo, _, hostport = parts.netloc.rpartition("@")
    user, _, password = userinfo.partition(":")
    return urlunsplit(parts._replace(netloc=hostport)), (unquote(user), unquote(password))


def redact_url(url: str) -> str:
    """``url`` for a log line: a ``user:password@`` part shown as ``***@``."""
    clean, auth = split_credentials(url)
    if auth is None:
        return url
    parts = urlsplit(clean)
    return urlunsplit(parts._replace(netloc=f"***@{parts.netloc}"))


def _origin(url: str) -> tuple[str, str, int | None]:
    """Scheme, host and port of ``url`` (the port made explicit), the unit credentials are bound to."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    return scheme, (parts.hostname or "").lower(), parts.port or {"http": 80, "https": 443}.get(scheme)


def _odata_message(resp: requests.Response) -> str | None:
    """The ``error.message`` of an OData JSON error body, else a short excerpt of the body."""
    try:
        body = resp.json()
        msg = body["error"]["message"]
        return str(msg)
    except (ValueError, KeyError, TypeError):
        text = resp.text.strip()
        return text[:300] if text else None


def _retry_after_seconds(value: str | None) -> float | None:
    """``Retry-After`` as seconds (delta-seconds or an HTTP date), or None."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


class TKClient:
    """A client of the TK OData API for one profile (see :mod:`include.loaders.api_profiles`).

    With ``TK_API_PROFILE=auto`` (the default) the profile is found on first use (the first request,
    or reading :attr:`profile` / :attr:`root`) by :func:`include.loaders.discovery.discover`: v5, then
    v4/2.0; :attr:`discovery` keeps the outcome. An explicit profile, or a base URL ending in a version
    path, skips that.

    Args:
        settings: base URL, profile, timeouts and retry policy; ``ApiSettings.from_env()`` when None.
        session: a ``requests.Session`` to use (the client creates and owns one when None).
        sleep: how to wait between retries (tests pass a recorder).
        metrics: where requests, retries and backoff are counted (default: Airflow's ``Stats``, with
            the task's tags when made inside a task; see :mod:`include.loaders.metrics`).

    Retries (tenacity): 5xx, 429, timeouts, broken connections and bodies are retried up to
    ``settings.max_retries`` times, waiting exponential backoff with full jitter (capped at
    ``backoff_max``) or the server's ``Retry-After`` when it is longer (capped at ``retry_after_max``);
    each retry logs one WARNING line. Other 4xx fail at once.

    Credentials in the base URL (``https://user:pw@host``) are taken out of it: :attr:`root`, every log
    line and every error carry the URL without them, and they are sent (HTTP basic auth) with every
    request to the same scheme, host and port, the server's ``@odata.nextLink`` pages included, and to
    no other host.

    Use it as a context manager (``with TKClient(...) as client:``) so that the HTTP session is closed.
    """

    def __init__(
        self,
        settings: ApiSettings | None = None,
        session: requests.Session | None = None,
        *,
        sleep: Callable[[float], None] = time.sleep,
        metrics: ApiMetrics | None = None,
    ):
        self.settings = settings or ApiSettings.from_env()
        base, self._auth = split_credentials(self.settings.base_url)
        self._auth_origin = _origin(base)
        self._sleep = sleep
        self._profile: ApiProfile | None = None
        self._root = ""
        self._resolve_lock = threading.Lock()
        self.discovery: Discovery | None = None
        """The :class:`~include.loaders.discovery.Discovery` of an ``auto`` client, once resolved."""
        pinned = self.settings.pinned_profile
        if pinned is not None:
            self._use(self.settings.with_overrides(profile=pinned))
        self._own_session = session is None
        self._session = session or requests.Session()
        self._session.headers.setdefault("User-Agent", self.settings.user_agent)
        self._session.headers["Accept"] = "application/json"
        s = self.settings
        # One controller per client: tenacity keeps its per-call state thread-locally, so threads that
        # share the client (plan_entity's concurrent $count queries) do not disturb each other.
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
        self._schema: ODataSchema | None = None
        self._metrics = metrics if metrics is not None else ApiMetrics.for_task()

    # -- the version -------------------------------------------------------------------------------
    def _use(self, settings: ApiSettings) -> None:
        self.settings = settings
        self._root = split_credentials(settings.service_root)[0]
        self._profile = get_profile(settings.profile)

    @property
    def profile(self) -> ApiProfile:
        """The API profile in use (discovered on first use when the settings say ``auto``)."""
        if self._profile is None:
            self._resolve()
        assert self._profile is not None
        return self._profile

    @property
    def root(self) -> str:
        """The OData service root in use, without credentials (e.g. ``…/OData/v5``)."""
        if self._profile is None:
            self._resolve()
        return self._root

    def _resolve(self) -> None:
        """Find the version (``auto``): once per client, whichever thread asks first."""
        from include.loaders.discovery import discover  # it builds clients of its own

        with self._resolve_lock:
            if self._profile is not None:
                return
            found = discover(self.settings, session=self._session, sleep=self._sleep, metrics=self._metrics)
            self.discovery = found
            self._use(found.settings)
            self._schema = found.schema

    # -- lifecycle ---------------------------------------------------------------------------------
    def close(self) -> None:
        """Close the HTTP session if the client created it."""
        if self._own_session:
            self._session.close()

    def __enter__(self) -> TKClient:
        """The client itself; leaving the ``with`` block closes it."""
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- metadata ----------------------------------------------------------------------------------
    def metadata(self, refresh: bool = False) -> ODataSchema:
        """The parsed ``$metadata`` of the service (fetched once, with retries; for an ``auto`` client the
        discovery's own fetch is that once)."""
        root = self.root  # resolves the version first: discovery keeps the $metadata it read
        if self._schema is None or refresh:
            url = f"{root}/$metadata"
            resp = self._get(url, accept="application/xml")
            try:
                self._schema = ODataSchema.from_xml(resp.content)
            except ValueError as e:
                raise ApiError(f"Cannot read $metadata at {url}: {e}", url, resp.status_code) from e
        return self._schema

    def check_metadata(self, requirements: Mapping[str, EntityRequirement]) -> ODataSchema:
        """Fail with :class:`MetadataMismatch` unless every required item exists in ``$metadata``.

        ``requirements`` maps entity set names to :class:`EntityRequirement` in canonical names; the
        check translates them with the profile. Call it before loading anything.
        """
        schema = self.metadata()
        report = check_requirements(schema, requirements, self.profile)
        if not report.ok:
            raise MetadataMismatch(f"{self.root}/$metadata", self.profile.name, report.problems)
        log.info(
            "TK API %s (profile %s): $metadata offers all %d required entity sets",
            self.root,
            self.profile.name,
            len(requirements),
        )
        return schema

    # -- queries -----------------------------------------------------------------------------------
    def _name(self, entity_set: str, canonical: str) -> str:
        return self.profile.to_profile(entity_set, canonical)

    def build_url(
        self,
        entity_set: str,
        start: datetime | None = None,
        end: datetime | None = None,
        select: Sequence[str] | None = None,
        expand: Sequence[str] | None = None,
        extra: Mapping[str, str] | None = None,
    ) -> str:
        """The first URL of a query (canonical names in, profile names out)."""
        flt = window_filter(start, end, self._name(entity_set, WATERMARK))
        return self._query_url(entity_set, flt, select, expand, extra)

    def _query_url(
        self,
        entity_set: str,
        flt: str | None,
        select: Sequence[str] | None = None,
        expand: Sequence[str] | None = None,
        extra: Mapping[str, str] | None = None,
    ) -> str:
        """A query URL with the ``$filter`` ``flt`` (profile names) and canonical ``select``."""
        params: list[tuple[str, str]] = []
        if flt:
            params.append(("$filter", flt))
        if select:
            params.append(("$select", ",".join(self._name(entity_set, p) for p in select)))
        if expand:
            params.append(("$expand", ",".join(f"{nav}($select=Id)" for nav in expand)))
        params.extend((extra or {}).items())
        query = "&".join(f"{k}={quote(v, safe=_SAFE)}" for k, v in params)
        return f"{self.root}/{quote(entity_set)}" + (f"?{query}" if query else "")

    def count(
        self,
        entity_set: str,
        start: datetime | None = None,
        end: datetime | None = None,
        *,
        live_only: bool = False,
    ) -> int:
        """How many entities the window ``[start, end)`` holds: tombstones included, or only the live
        rows (``Verwijderd eq false``) with ``live_only`` (the reconciliation's count)."""
        terms = [window_filter(start, end, self._name(entity_set, WATERMARK))]
        if live_only:
            terms.append(f"{self._name(entity_set, TOMBSTONE)} eq false")
        query = {"$top": "0", "$count": "true"}
        if flt := " and ".join(t for t in terms if t):
            query = {"$filter": flt, **query}
        url = self.build_url(entity_set, extra=query)
        body = self._get_json(url)
        try:
            return int(body["@odata.count"])
        except (KeyError, TypeError, ValueError):
            raise ApiError(f"No @odata.count in the answer to {url}", url, 200) from None

    def iter_pages(
        self,
        entity_set: str,
        start: datetime | None = None,
        end: datetime | None = None,
        select: Sequence[str] | None = None,
        expand: Sequence[str] | None = None,
    ) -> Iterator[list[dict[str, Any]]]:
        """Yield the window's entities one server page at a time, with canonical property names.

        Args:
            entity_set: e.g. ``"Zaak"``.
            start, end: aware datetimes, the half-open window on ``ApiGewijzigdOp``; None = unbounded.
            select: canonical property names to fetch (all when None); ``ApiGewijzigdOp`` and ``Id`` are
                added when missing, because a keyset page starts from them.
            expand: navigation names, each fetched as ``Nav($select=Id)``: a list of ``{"Id": …}``
                for collections, a dict or None for single-valued navigations.

        Rows come in ``ApiGewijzigdOp, Id`` order. Per page: an ``@odata.nextLink`` is followed verbatim;
        without one, a page shorter than asked for ends the query (the first request, without ``$top``,
        counts as asking for the profile's :attr:`~ApiProfile.page_cap`), and a full one is followed
        by the keyset page past its last row (``$top`` = the cap). A server that pages with nextLink
        over the whole query ends it by leaving the link out. No request carries ``$skip``.
        """
        wm, key = self._name(entity_set, WATERMARK), self._name(entity_set, KEY)
        window = window_filter(start, end, wm)
        if select:
            select = [*select, *(p for p in (KEY, WATERMARK) if p not in select)]
        order = {"$orderby": f"{wm},{key}"}
        url: str | None = self._query_url(entity_set, window, select, expand, order)
        cap = self.profile.page_cap
        rename = self.profile.to_canonical_map(entity_set)
        top: int | None = None  # the $top of the current request: None for the first
        got = 0  # rows of the current request (with the nextLinks it led to)
        followed = False  # whether the current request led to a nextLink
        last: dict[str, Any] | None = None
        anchor: str | None = None  # the Id the current keyset page starts after
        pages = keyset_pages = 0
        while url:
            body = self._get_json(url)
            rows = body.get("value") if isinstance(body, dict) else None
            if not isinstance(rows, list):
                raise ApiError(f"The answer to {url} has no 'value' array.", url, 200)
            if rename:
                rows = [{rename.get(k, k): v for k, v in row.items()} for row in rows]
            pages += 1
            got += len(rows)
            last = rows[-1] if rows else last
            yield rows
            next_url = body.get("@odata.nextLink")
            if next_url:
                if next_url == url:
                    raise ApiError(
                        f"The server's @odata.nextLink points at the same page again: {url}", url, 200
                    )
                url, followed = next_url, True
                continue
            if (top is None and followed) or got < (top or cap) or last is None:
                break  # the server's own paging ended, or a short page: nothing more
            if str(last.get(KEY)) == anchor:
                raise ApiError(f"The server ignored the keyset filter past {anchor}: {url}", url, 200)
            anchor = str(last.get(KEY))
            past = keyset_filter(window, last.get(WATERMARK), anchor, wm)
            url = self._query_url(entity_set, past, select, expand, {**order, "$top": str(cap)})
            top, got, followed = cap, 0, False
            keyset_pages += 1
        log.debug(
            "TK API %s: %d page(s) of %s, %d of them keyset pages", self.root, pages, entity_set, keyset_pages
        )

    def iter_entities(
        self,
        entity_set: str,
        start: datetime | None = None,
        end: datetime | None = None,
        select: Sequence[str] | None = None,
        expand: Sequence[str] | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Like :meth:`iter_pages`, one entity at a time."""
        for page in self.iter_pages(entity_set, start, end, select, expand):
            yield from page

    def get_entity(
        self, entity_set: str, entity_id: str, select: Sequence[str] | None = None
    ) -> dict[str, Any] | None:
        """One entity by key (``Zaak(<guid>)``) with canonical names, or None when it does not exist."""
        params = ""
        if select:
            params = "?$select=" + ",".join(self._name(entity_set, p) for p in select)
        url = f"{self.root}/{quote(entity_set)}({entity_id}){params}"
        try:
            body = self._get_json(url)
        except ApiError as e:
            if e.status == 404:
                return None
            raise
        rename = self.profile.to_canonical_map(entity_set)
        return {rename.get(k, k): v for k, v in body.items() if not k.startswith("@odata.")}

    # -- HTTP with retries -------------------------------------------------------------------------
    def _get_json(self, url: str) -> Any:
        return self._get(url, parse_json=True)

    def _get(self, url: str, *, parse_json: bool = False, accept: str | None = None) -> Any:
        """GET ``url``; retry what is worth retrying; the response (or its JSON when ``parse_json``)."""
        # A URL that carries credentials itself (a nextLink built with them) is used and logged without
        # them; the base URL's credentials go to the base URL's origin only.
        url, _ = split_credentials(url)
        auth = self._auth if _origin(url) == self._auth_origin else None
        headers = {"Accept": accept} if accept else None
        return self._retrying(self._attempt, url, parse_json, headers, auth)

    def _attempt(
        self, url: str, parse_json: bool, headers: dict[str, str] | None, auth: tuple[str, str] | None
    ) -> Any:
        """One GET: the answer, :class:`_Retryable` when another try may succeed, ApiError when not."""
        self._metrics.request(url)
        s = self.settings
        try:
            resp = self._session.get(
                url, timeout=(s.connect_timeout, s.read_timeout), headers=headers, auth=auth
            )
        except requests.Timeout as e:
            raise _Retryable(f"timeout ({type(e).__name__})") from e
        except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError) as e:
            raise _Retryable(f"connection error or truncated body ({type(e).__name__}: {e})") from e
        except requests.exceptions.ContentDecodingError as e:
            raise _Retryable(f"undecodable body ({e})") from e
        status = resp.status_code
        if status == 200:
            if not parse_json:
                return resp
            try:
                return json.loads(resp.content)
            except ValueError as e:
                raise _Retryable(f"malformed or truncated JSON ({e})", status) from e
        if status == 429 or status >= 500:
            raise _Retryable(
                f"HTTP {status}: {_odata_message(resp)}",
                status,
                _retry_after_seconds(resp.headers.get("Retry-After")),
            )
        msg = _odata_message(resp)
        raise ApiError(
            f"TK API refused {url} with HTTP {status}: {msg}. A 4xx means the query is wrong "
            "for this API version (check TK_API_PROFILE and the entity table); not retried.",
            url,
            status,
            msg,
        )

    def _log_retry(self, state: RetryCallState) -> None:
        """tenacity's ``before_sleep``: one WARNING line per retry, with the reason and the wait; the
        retry and its wait counted (``tk.api.retries``, ``tk.api.backoff``)."""
        failure = _failure(state)
        self._metrics.retry(state.args[0], state.upcoming_sleep)
        log.warning(
            "TK API request failed (attempt %d/%d): %s: %s; retrying in %.2f s",
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
        error = ApiError(
            f"TK API request failed {state.attempt_number} time(s), giving up: {url}: {failure.reason}. "
            "The API may be down; retry the task later or raise TK_API_MAX_RETRIES.",
            url,
            failure.status,
        )
        error.attempts = state.attempt_number
        raise error from failure


class _Retryable(Exception):
    """One request failed in a way another try may fix: 5xx, 429, timeout, broken connection or body.

    Attributes:
        reason: what went wrong, for the log line and the final error.
        status: the HTTP status, or None when no response came.
        retry_after: the server's ``Retry-After`` in seconds, when it sent one.
    """

    def __init__(self, reason: str, status: int | None = None, retry_after: float | None = None):
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.retry_after = retry_after


def _failure(state: RetryCallState) -> _Retryable:
    """The :class:`_Retryable` of the attempt that just failed (the retry predicate admits no other)."""
    return cast(_Retryable, state.outcome.exception() if state.outcome is not None else None)


class _WaitRetryAfter(wait_base):
    """Wait at least what the server's ``Retry-After`` asked (capped at ``cap``), else ``backoff``.

    The backoff (exponential with full jitter) stays the floor even when the server names a time:
    ``Retry-After: 0`` from many clients at once must not turn into a synchronised stampede.
    """

    def __init__(self, backoff: wait_base, cap: float):
        self.backoff = backoff
        self.cap = cap

    def __call__(self, retry_state: RetryCallState) -> float:
        delay = self.backoff(retry_state)
        exc = retry_state.outcome.exception() if retry_state.outcome is not None else None
        hint = getattr(exc, "retry_after", None)
        if hint is not None:
            delay = max(delay, min(hint, self.cap))
        return delay
