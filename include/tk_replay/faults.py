"""Fault injection for the replay server: the ways the real TK API fails, on demand and reproducible.

Random faults (``error_rate``, ``throttle_rate``, ``hang_rate``, ``truncate_rate``, ``reset_rate``) are drawn
per data request (entity set pages, ``/$count``, single entities; not ``$metadata`` unless
``include_metadata``) from a ``random.Random(seed)``: the same request sequence meets the same faults.
``fail_after_entity``/``fail_after_items`` is deterministic: every page request of that entity set whose
page would reach beyond item N of its query answers HTTP 500, until the fault is removed (resume tests).
``max_skip`` mimics the real API's failure on deep ``$skip`` (an HTTP 500 was seen at skip=16500): a
collection request with a larger ``$skip`` answers HTTP 500. ``without_id`` is deterministic too: the
rows with those ids are served without their ``Id`` (a malformed row, which a loader must isolate
without stopping).
"""

from __future__ import annotations

import random
import threading
from collections import Counter
from dataclasses import asdict, dataclass, fields
from typing import Any

KINDS = ("error", "throttle", "hang", "truncate", "reset")


@dataclass(frozen=True)
class FaultConfig:
    """What a replay server does wrong.

    Attributes:
        seed: seeds the draw of random faults.
        latency: seconds added to every data request.
        error_rate: share of data requests answered with HTTP 500 and the real API's error body.
        throttle_rate: share answered with HTTP 429 and ``Retry-After: retry_after``.
        retry_after: the ``Retry-After`` value in seconds (an integer on the wire).
        hang_rate: share that get no answer for ``hang_seconds`` (longer than the client's read timeout).
        hang_seconds: how long a hanging request hangs before the connection is closed.
        truncate_rate: share whose body is cut in half (alternately: connection closed before the declared
            Content-Length, or a short body with a matching Content-Length, i.e. malformed JSON).
        reset_rate: share whose connection is reset (TCP RST) without an answer.
        fail_after_entity, fail_after_items: every page request of that entity set whose page would go
            beyond item ``fail_after_items`` (0-based count of items before the page + page length) fails
            with HTTP 500.
        include_metadata: draw random faults for ``$metadata`` and the service document too.
        without_id: ids of rows served without their ``Id`` property in collection pages.
        max_skip: a collection request with a ``$skip`` above this answers HTTP 500 (None: any skip).
    """

    seed: int = 0
    latency: float = 0.0
    error_rate: float = 0.0
    throttle_rate: float = 0.0
    retry_after: int = 1
    hang_rate: float = 0.0
    hang_seconds: float = 30.0
    truncate_rate: float = 0.0
    reset_rate: float = 0.0
    fail_after_entity: str | None = None
    fail_after_items: int = 0
    include_metadata: bool = False
    without_id: frozenset[str] = frozenset()
    max_skip: int | None = None

    def __post_init__(self) -> None:
        if isinstance(self.without_id, str):
            raise ValueError("without_id wants a collection of ids, not one string.")
        object.__setattr__(self, "without_id", frozenset(i.lower() for i in self.without_id))
        rates = [self.error_rate, self.throttle_rate, self.hang_rate, self.truncate_rate, self.reset_rate]
        if any(r < 0 for r in rates) or sum(rates) > 1:
            raise ValueError(f"Fault rates must be >= 0 and sum to at most 1, got {rates}.")
        if self.max_skip is not None and self.max_skip < 0:
            raise ValueError("max_skip must be >= 0 (or None).")
        if self.latency < 0 or self.hang_seconds < 0 or self.retry_after < 0 or self.fail_after_items < 0:
            raise ValueError("latency, hang_seconds, retry_after and fail_after_items must be >= 0.")

    @classmethod
    def mixed(
        cls,
        rate: float,
        seed: int = 0,
        kinds: tuple[str, ...] = ("error", "throttle", "hang", "truncate"),
        **kwargs: Any,
    ) -> FaultConfig:
        """``rate`` of data requests fail, split evenly over ``kinds`` (a subset of :data:`KINDS`)."""
        unknown = set(kinds) - set(KINDS)
        if unknown:
            raise ValueError(f"Unknown fault kinds {sorted(unknown)}; known: {KINDS}")
        share = rate / len(kinds)
        return cls(seed=seed, **{f"{k}_rate": share for k in kinds}, **kwargs)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FaultConfig:
        """From a JSON object; unknown keys are an error that names them."""
        names = {f.name for f in fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ValueError(f"Unknown fault options {sorted(unknown)}; known: {sorted(names)}")
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["without_id"] = sorted(self.without_id)  # JSON has no sets
        return data


class FaultInjector:
    """Draws the fault of each request from a :class:`FaultConfig`; thread-safe; counts what it did."""

    def __init__(self, config: FaultConfig | None = None):
        self._lock = threading.Lock()
        self.stats: Counter[str] = Counter()
        self.configure(config or FaultConfig())

    def configure(self, config: FaultConfig) -> None:
        """Replace the configuration and restart the random sequence from its seed."""
        with self._lock:
            self.config = config
            self._rng = random.Random(config.seed)
            self._truncate_toggle = 0

    def draw(self) -> str | None:
        """The fault for the next data request (one of :data:`KINDS`) or None."""
        with self._lock:
            c = self.config
            u = self._rng.random()
            for kind, rate in zip(
                KINDS,
                (c.error_rate, c.throttle_rate, c.hang_rate, c.truncate_rate, c.reset_rate),
                strict=True,
            ):
                if u < rate:
                    self.stats[kind] += 1
                    return kind
                u -= rate
            return None

    def truncate_mode(self) -> str:
        """``"close"`` (short read) or ``"short"`` (malformed JSON), alternately."""
        with self._lock:
            self._truncate_toggle ^= 1
            return "close" if self._truncate_toggle else "short"

    def count(self, kind: str) -> None:
        with self._lock:
            self.stats[kind] += 1
