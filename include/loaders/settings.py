"""Settings of the loaders: the TK API client (read from the environment), the Neo4j connection, batches.

Each is decided here and only here; the DAG, the pipeline, the load loop and its command line import
them. The checkpoint side has its own settings object (``tk_checkpoint.settings.CheckpointSettings``,
the one resolver of ``TK_CHECKPOINT_BASE``): callers pass ``None`` for "the configured base".

| name | default | meaning |
|---|---|---|
| :data:`DEFAULT_CONN_ID` | ``neo4j_default`` | the Airflow connection of Neo4j; its ``schema`` field, |
| | | when set, names the database (as ``Neo4jHook.run`` uses it) |
| :data:`DEFAULT_BATCH_SIZE` | ``500`` | items per Neo4j transaction (the DAG param ``batch_size``) |
| :data:`MAX_BATCH_SIZE` | ``10_000`` | the largest ``batch_size`` accepted |

The TK API client (:class:`ApiSettings`):

| variable | default | meaning |
|---|---|---|
| ``TK_API_BASE_URL`` | ``https://gegevensmagazijn.tweedekamer.nl`` | server root; the profile adds its |
| | | path. A base that already ends with it (``…/OData/v4/2.0``) is accepted too. |
| ``TK_API_PROFILE`` | ``auto`` | API version: ``auto`` tries ``v5``, then ``v4/2.0``, by their |
| | | ``$metadata`` (``include.loaders.discovery``); ``v5`` or ``v4/2.0`` pins one. A base URL |
| | | ending in a version path picks that version. |
| ``TK_API_CONNECT_TIMEOUT`` | ``15`` | seconds to open a connection |
| ``TK_API_READ_TIMEOUT`` | ``180`` | seconds to wait for an answer (some real queries take 23-48 s) |
| ``TK_API_MAX_RETRIES`` | ``8`` | retries per request (5xx, 429, timeouts, broken bodies) |
| ``TK_API_BACKOFF_BASE`` | ``2`` | first backoff in seconds; doubles per attempt, with full jitter |
| ``TK_API_BACKOFF_MAX`` | ``120`` | cap on one backoff |
| ``TK_API_RETRY_AFTER_MAX`` | ``600`` | cap on a server's ``Retry-After`` |
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from include.loaders.api_profiles import (
    AUTO,
    DEFAULT_PROFILE,
    ApiProfile,
    check_profile_name,
    get_profile,
    profile_of_path,
)

DEFAULT_BASE_URL = "https://gegevensmagazijn.tweedekamer.nl"

DEFAULT_CONN_ID = "neo4j_default"
"""The Airflow connection of Neo4j (host, port, login, password; ``schema``: the database)."""

DEFAULT_BATCH_SIZE = 500
"""Items per Neo4j transaction (the DAG param ``batch_size``, ``--batch-size`` of the command line)."""

MAX_BATCH_SIZE = 10_000
"""The largest ``batch_size`` the DAG param, its check in ``setup`` and ``--batch-size`` accept."""


@dataclass(frozen=True)
class ApiSettings:
    """How to reach the TK OData API and how hard to try.

    Attributes:
        base_url: server root (``https://gegevensmagazijn.tweedekamer.nl``) or the full service root.
        profile: API profile name, a key of ``api_profiles.PROFILES``, or ``auto`` (the default): found
            at run time (:meth:`pinned_profile`, ``include.loaders.discovery``).
        connect_timeout, read_timeout: seconds, passed to ``requests``.
        max_retries: retries per request after the first attempt; 0 disables retries.
        backoff_base, backoff_max: exponential backoff with full jitter, in seconds.
        retry_after_max: the longest ``Retry-After`` honoured, in seconds.
        user_agent: sent with every request.
    """

    base_url: str = field(default=DEFAULT_BASE_URL, repr=False)  # it may carry credentials
    profile: str = DEFAULT_PROFILE
    connect_timeout: float = 15.0
    read_timeout: float = 180.0
    max_retries: int = 8
    backoff_base: float = 2.0
    backoff_max: float = 120.0
    retry_after_max: float = 600.0
    user_agent: str = "tk-neo4j-airflow (+https://github.com/; TK open data loader)"

    def __post_init__(self) -> None:
        check_profile_name(self.profile)  # fails early with the list of known profiles
        if not self.base_url.startswith(("http://", "https://")):
            shown = re.sub(r"//[^/@]*@", "//***@", self.base_url)  # no credentials in an error
            raise ValueError(f"TK_API_BASE_URL must be an http(s) URL, got {shown!r}.")
        for name in ("connect_timeout", "read_timeout", "backoff_max", "retry_after_max"):
            if getattr(self, name) <= 0:
                raise ValueError(f"API setting {name} must be > 0, got {getattr(self, name)!r}.")
        if self.max_retries < 0 or self.backoff_base < 0:
            raise ValueError("API settings max_retries and backoff_base must be >= 0.")

    @property
    def pinned_profile(self) -> str | None:
        """The profile chosen without asking the server: an explicit :attr:`profile`, else the version
        path the base URL ends with (``…/OData/v5``); None when ``auto`` must ask (discovery)."""
        if self.profile != AUTO:
            return self.profile
        found = profile_of_path(self.base_url)
        return found.name if found else None

    @property
    def api_profile(self) -> ApiProfile:
        """The :class:`ApiProfile` of :attr:`pinned_profile`; a ValueError when ``auto`` is unresolved."""
        return get_profile(self.pinned_profile or AUTO)

    @property
    def service_root(self) -> str:
        """The OData service root, e.g. ``https://gegevensmagazijn.tweedekamer.nl/OData/v4/2.0``."""
        return self.service_root_of(self.api_profile)

    def service_root_of(self, profile: ApiProfile) -> str:
        """The service root of ``profile`` on :attr:`base_url` (a version path already there is replaced)."""
        base = self.base_url.rstrip("/")
        there = profile_of_path(base)
        if there is not None:
            base = base[: -len(there.path)]
        return base + profile.path

    def with_overrides(self, **changes: object) -> ApiSettings:
        """A copy with some fields changed (tests, CLI flags)."""
        return replace(self, **changes)  # type: ignore[arg-type]

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ApiSettings:
        """Settings from ``TK_API_*`` environment variables (or ``env``), defaults for the rest.

        Raises ValueError naming the variable when a value cannot be parsed.
        """
        env = os.environ if env is None else env
        kwargs: dict[str, object] = {}
        specs: list[tuple[str, str, type]] = [
            ("TK_API_BASE_URL", "base_url", str),
            ("TK_API_PROFILE", "profile", str),
            ("TK_API_CONNECT_TIMEOUT", "connect_timeout", float),
            ("TK_API_READ_TIMEOUT", "read_timeout", float),
            ("TK_API_MAX_RETRIES", "max_retries", int),
            ("TK_API_BACKOFF_BASE", "backoff_base", float),
            ("TK_API_BACKOFF_MAX", "backoff_max", float),
            ("TK_API_RETRY_AFTER_MAX", "retry_after_max", float),
        ]
        for var, attr, typ in specs:
            raw = env.get(var)
            if raw is None or raw.strip() == "":
                continue
            try:
                kwargs[attr] = typ(raw.strip())
            except ValueError:
                raise ValueError(
                    f"Environment variable {var}={raw!r} is not a valid {typ.__name__}; "
                    f"fix or unset it (default: {getattr(cls, attr)!r})."
                ) from None
        return cls(**kwargs)  # type: ignore[arg-type]
