"""Which version of the TK OData API answers: ``TK_API_PROFILE=auto``.

    found = discover(ApiSettings.from_env())   # tries v5, then v4/2.0, by their $metadata
    found.profile                              # "v5"
    settings = found.settings                  # the same settings with that profile pinned

``auto`` (the default) asks each profile of :data:`~include.loaders.api_profiles.DISCOVERY_ORDER` for its
``$metadata`` and takes the first that answers with a CSDL document; one INFO line names it and says, for
every version that did not answer, why (HTTP status and the server's message, timeout, connection
refused, not a CSDL document). Neither answering is :class:`ApiVersionNotFound`, naming both URLs.

A closed endpoint answers 404 at once, so a 4xx means "not there" and is not retried; 5xx, 429 and
timeouts are retried with the client's policy, bounded to :data:`DISCOVERY_MAX_RETRIES` retries of at
most :data:`DISCOVERY_BACKOFF_MAX` seconds each and a read timeout of :data:`DISCOVERY_READ_TIMEOUT`:
discovery takes seconds, not the minutes a load may wait out. An explicit profile (``v5``,
``v4/2.0``) or a base URL ending in a version path (``…/OData/v5``) pins the version without a request.

Credentials in the base URL stay out of every URL, log line and error here (``TKClient`` strips them).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import requests

from include.loaders.api import ApiError, TKClient
from include.loaders.api_metadata import ODataSchema
from include.loaders.api_profiles import DISCOVERY_ORDER, get_profile
from include.loaders.metrics import ApiMetrics
from include.loaders.settings import ApiSettings

__all__ = [
    "DISCOVERY_BACKOFF_MAX",
    "DISCOVERY_MAX_RETRIES",
    "DISCOVERY_READ_TIMEOUT",
    "ApiVersionNotFound",
    "Discovery",
    "VersionAttempt",
    "discover",
    "probe_version",
]

log = logging.getLogger(__name__)

DISCOVERY_MAX_RETRIES = 2
"""Retries of one version's ``$metadata`` on 5xx, 429 or a timeout (never more than ``max_retries``)."""
DISCOVERY_BACKOFF_MAX = 5.0
"""Longest wait between two of those tries, in seconds (a server's ``Retry-After`` capped the same)."""
DISCOVERY_READ_TIMEOUT = 60.0
"""Read timeout of a ``$metadata`` request during discovery (never more than ``read_timeout``)."""


@dataclass(frozen=True)
class VersionAttempt:
    """What one version's ``$metadata`` answered.

    Attributes:
        profile: the profile name (``v5``).
        url: the ``$metadata`` URL asked, without credentials.
        answered: True when it answered with a CSDL document.
        reason: for a version that did not answer, why (``HTTP 404: No HTTP resource…``, ``timeout
            (ReadTimeout) after 3 attempt(s)``, ``connection refused…``, ``not a CSDL document: …``);
            for one that did, how many entity sets it declares.
        status: the HTTP status of the last answer, None when none came.
        schema: the parsed ``$metadata`` of a version that answered.
    """

    profile: str
    url: str
    answered: bool
    reason: str
    status: int | None = None
    schema: ODataSchema | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, object]:
        """JSON-friendly form (a probe report, a checkpoint run), without the schema."""
        return {
            "profile": self.profile,
            "url": self.url,
            "answered": self.answered,
            "reason": self.reason,
            "status": self.status,
        }


@dataclass(frozen=True)
class Discovery:
    """The outcome of :func:`discover`.

    Attributes:
        settings: the settings asked with, the chosen profile pinned (``profile`` no longer ``auto``).
        attempts: one :class:`VersionAttempt` per version asked, in order; empty when pinned.
        pinned: True when the settings chose the version (explicit profile, version path in the base).
    """

    settings: ApiSettings
    attempts: tuple[VersionAttempt, ...] = ()
    pinned: bool = False

    @property
    def profile(self) -> str:
        """The chosen profile name."""
        return self.settings.profile

    @property
    def schema(self) -> ODataSchema | None:
        """The ``$metadata`` the chosen version answered with (None when pinned: not fetched here)."""
        return next((a.schema for a in self.attempts if a.profile == self.profile and a.answered), None)

    def describe(self) -> str:
        """One line for a log or a summary: the version used and why the others were not."""
        if self.pinned:
            return f"TK API version {self.profile} (set by TK_API_PROFILE or the base URL; not discovered)"
        chosen = next(a for a in self.attempts if a.profile == self.profile and a.answered)
        others = [f"{a.profile} did not answer at {a.url}: {a.reason}" for a in self.attempts[:-1]]
        text = f"TK API version {self.profile} answered at {chosen.url} ({chosen.reason})"
        return text + ("; " + "; ".join(others) if others else "")


class ApiVersionNotFound(ApiError):
    """No version of the TK API answered its ``$metadata``.

    Attributes:
        attempts: one :class:`VersionAttempt` per version asked, each with its URL and reason.
    """

    def __init__(self, attempts: Sequence[VersionAttempt]):
        lines = "\n  - ".join(f"{a.profile}: {a.url}: {a.reason}" for a in attempts)
        super().__init__(
            f"No version of the TK API answered (TK_API_PROFILE=auto tried {len(attempts)}):\n  - {lines}\n"
            "Check TK_API_BASE_URL and the network; when one version is known to work, set "
            "TK_API_PROFILE to it (v5 or v4/2.0) to skip discovery.",
            attempts[0].url if attempts else "",
            attempts[-1].status if attempts else None,
        )
        self.attempts = tuple(attempts)


def _bounded(settings: ApiSettings, profile: str) -> ApiSettings:
    """``settings`` for one discovery request: ``profile`` pinned, retries and waits bounded."""
    return settings.with_overrides(
        profile=profile,
        max_retries=min(settings.max_retries, DISCOVERY_MAX_RETRIES),
        backoff_max=min(settings.backoff_max, DISCOVERY_BACKOFF_MAX),
        backoff_base=min(settings.backoff_base, DISCOVERY_BACKOFF_MAX),
        retry_after_max=min(settings.retry_after_max, DISCOVERY_BACKOFF_MAX),
        read_timeout=min(settings.read_timeout, DISCOVERY_READ_TIMEOUT),
    )


def _reason(error: ApiError) -> str:
    """A short reason for a version that did not answer, from the client's error."""
    cause = error.__cause__
    retry_reason = getattr(cause, "reason", None)
    if retry_reason is not None:  # gave up after retries: the last failure, and how often it was tried
        text = str(retry_reason)
        if "refused" in text.lower():
            text = f"connection refused ({text})"
        return f"{text}, after {error.attempts} attempt(s)"
    if error.status is not None and error.status != 200:
        return f"HTTP {error.status}: {error.server_message or 'no message'}"
    if isinstance(cause, ValueError):
        return f"not a CSDL document: {cause}"
    return str(error)


def probe_version(
    settings: ApiSettings,
    profile: str,
    *,
    session: requests.Session | None = None,
    sleep: Callable[[float], None] = time.sleep,
    metrics: ApiMetrics | None = None,
) -> VersionAttempt:
    """Ask ``profile``'s ``$metadata`` on ``settings.base_url`` (bounded retries); never raises ApiError."""
    bounded = _bounded(settings, get_profile(profile).name)
    with TKClient(bounded, session=session, sleep=sleep, metrics=metrics) as client:
        url = f"{client.root}/$metadata"
        try:
            schema = client.metadata()
        except ApiError as e:
            return VersionAttempt(profile, url, False, _reason(e), e.status)
    return VersionAttempt(profile, url, True, f"{len(schema.entity_sets)} entity sets", 200, schema)


def discover(
    settings: ApiSettings,
    *,
    session: requests.Session | None = None,
    sleep: Callable[[float], None] = time.sleep,
    metrics: ApiMetrics | None = None,
    candidates: Sequence[str] = DISCOVERY_ORDER,
) -> Discovery:
    """The version ``settings`` mean: the pinned one, else the first of ``candidates`` that answers.

    Logs one INFO line with the outcome (:meth:`Discovery.describe`); raises :class:`ApiVersionNotFound`
    naming every URL asked and its reason when none answers.
    """
    pinned = settings.pinned_profile
    if pinned is not None:
        return Discovery(settings.with_overrides(profile=pinned), pinned=True)
    attempts: list[VersionAttempt] = []
    for name in candidates:
        attempt = probe_version(settings, name, session=session, sleep=sleep, metrics=metrics)
        attempts.append(attempt)
        if attempt.answered:
            found = Discovery(settings.with_overrides(profile=name), tuple(attempts))
            log.info("%s", found.describe())
            return found
    raise ApiVersionNotFound(attempts)
