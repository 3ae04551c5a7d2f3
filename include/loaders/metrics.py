"""The loaders' metrics, sent through Airflow's own ``Stats`` (``airflow.sdk.observability.stats``).

Airflow configures that object from its ``[metrics]`` section in every process it starts (the task
runner, ``airflow dags test``): StatsD, Datadog's DogStatsD or OpenTelemetry get these numbers beside
Airflow's own, with no setting of this project. Where nothing configured it (a plain Python process),
Airflow's default is a logger that drops everything, and so is this module's.

Every metric is in :data:`METRICS` (the README's table is :func:`markdown_table`, and a test keeps the
two equal). Tags are Airflow's own for task metrics (``dag_id``, ``task_id``: ``ti.stats_tags``, inside
a task) plus ``entity``. Plain StatsD drops tags; as Airflow does for its own metrics when ``[metrics]
legacy_names_on`` is true (its default: ``ti.finish`` is also sent as ``ti.finish.<dag_id>.<task_id>.
<state>``), each metric is then also sent under a name that carries the entity, for example
``tk.loader.items.processed.Zaak``.

Metrics never break a load: an error of the backend is logged once (per loader or API client) and the
numbers are dropped from then on.

    metrics = LoaderMetrics.for_task("Zaak")   # in the load loop
    metrics.processed(items)                   # a committed batch
    metrics.finished()                         # the lag gauge
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol
from urllib.parse import urlsplit

from include.loaders.entities import parse_datetimeoffset

log = logging.getLogger(__name__)

PREFIX = "tk"
"""Every name starts with this (after StatsD's own ``[metrics] statsd_prefix``, ``airflow`` by default)."""

TASK_TAGS = ("dag_id", "task_id")
"""The tags of Airflow's task metrics (``ti.stats_tags``), set when the code runs inside a task."""


@dataclass(frozen=True)
class Metric:
    """One documented metric: its name, type (``counter``, ``timer``, ``gauge``), tags and meaning."""

    name: str
    kind: str
    meaning: str
    tags: tuple[str, ...] = ("entity", *TASK_TAGS)


ITEMS_PROCESSED = Metric(
    f"{PREFIX}.loader.items.processed",
    "counter",
    "items written to Neo4j (merged or deleted) and marked processed, per committed batch",
)
ITEMS_SKIPPED = Metric(
    f"{PREFIX}.loader.items.skipped",
    "counter",
    "items skipped because an earlier try of the same task had processed them",
)
ITEMS_FAILED = Metric(
    f"{PREFIX}.loader.items.failed",
    "counter",
    "item failures: a row that cannot be prepared, or an item Neo4j refused (alone, after bisecting its "
    "batch); each failure counts, also one a retry round then writes",
)
ITEMS_RETRIED = Metric(
    f"{PREFIX}.loader.items.retried",
    "counter",
    "item attempts made by the loop's retry rounds for items that failed in Neo4j",
)
BATCH_WRITE = Metric(
    f"{PREFIX}.loader.batch.write",
    "timer",
    "one batch's Neo4j transaction, its transient retries included (committed batches)",
)
LAG = Metric(
    f"{PREFIX}.loader.lag",
    "gauge",
    "seconds from the newest `ApiGewijzigdOp` this load wrote to now; set when the load ends",
)
API_REQUESTS = Metric(
    f"{PREFIX}.api.requests",
    "counter",
    "HTTP requests to the TK API, each attempt (`entity` is the URL's entity set, `metadata` for "
    "`$metadata`)",
)
API_RETRIES = Metric(
    f"{PREFIX}.api.retries",
    "counter",
    "TK API requests retried (5xx, 429, timeout, broken connection or body)",
)
API_BACKOFF = Metric(
    f"{PREFIX}.api.backoff",
    "timer",
    "the wait before each retry of a TK API request (its sum is the time spent backing off)",
)

METRICS: tuple[Metric, ...] = (
    ITEMS_PROCESSED,
    ITEMS_SKIPPED,
    ITEMS_FAILED,
    ITEMS_RETRIED,
    BATCH_WRITE,
    LAG,
    API_REQUESTS,
    API_RETRIES,
    API_BACKOFF,
)
"""Every metric this project sends, in the README's order."""

LOADER_COUNTERS = (ITEMS_PROCESSED, ITEMS_SKIPPED, ITEMS_FAILED, ITEMS_RETRIED)


class StatsBackend(Protocol):
    """What this module uses of Airflow's ``Stats`` (the module ``airflow.sdk.observability.stats``)."""

    def incr(self, stat: str, count: int | None = None, *, tags: dict[str, Any] | None = None) -> None: ...

    def gauge(self, stat: str, value: float, *, tags: dict[str, Any] | None = None) -> None: ...

    def timing(self, stat: str, dt: timedelta, *, tags: dict[str, Any] | None = None) -> None: ...


class _Dropped:
    """The backend where Airflow has not configured one: every number is dropped (Airflow's default)."""

    def incr(self, stat: str, count: int | None = None, *, tags: dict[str, Any] | None = None) -> None:
        pass

    def gauge(self, stat: str, value: float, *, tags: dict[str, Any] | None = None) -> None:
        pass

    def timing(self, stat: str, dt: timedelta, *, tags: dict[str, Any] | None = None) -> None:
        pass


def airflow_stats() -> StatsBackend:
    """Airflow's ``Stats`` when this process runs Airflow code, else a backend that drops everything.

    Airflow initialises its Stats from ``[metrics]`` in the processes it runs tasks in; a process that
    never imported the Task SDK has no configured backend, and importing Airflow (seconds) only to reach
    its no-op default would slow the command line, the tests and the benchmarks.
    """
    if "airflow.sdk" not in sys.modules:
        return _Dropped()
    from airflow.sdk.observability import stats

    return stats


def legacy_names_on() -> bool:
    """Airflow's ``[metrics] legacy_names_on`` (default true): also send names that carry the entity."""
    if "airflow.sdk" not in sys.modules:
        return False
    from airflow.sdk.configuration import conf

    return conf.getboolean("metrics", "legacy_names_on", fallback=True)


def task_tags() -> dict[str, str]:
    """The tags Airflow puts on its own task metrics (``dag_id``, ``task_id``…) inside a running task,
    else none."""
    if "airflow.sdk" not in sys.modules:
        return {}
    from airflow.sdk import get_current_context

    try:
        ti = get_current_context()["ti"]
        tags = getattr(ti, "stats_tags", None)  # Airflow's own tags of this task instance
        if isinstance(tags, Mapping):
            return {str(k): str(v) for k, v in tags.items()}
        return {"dag_id": str(ti.dag_id), "task_id": str(ti.task_id)}
    except Exception:  # not inside a task (no context), or a context without a task instance
        return {}


_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


def legacy_name(metric: Metric, entity: str) -> str:
    """The name that carries the entity, for backends that drop tags: ``tk.loader.items.processed.Zaak``
    (characters a StatsD name cannot hold become ``_``; a ``.`` too, so that the name keeps its segments,
    which Airflow's own legacy names also guard)."""
    return f"{metric.name}.{_UNSAFE.sub('_', entity)}"


class _Emitter:
    """Sends metrics with fixed tags; never raises (the first error is logged, then numbers dropped)."""

    def __init__(self, tags: Mapping[str, str], stats: StatsBackend | None, legacy: bool | None) -> None:
        self.tags = dict(tags)
        self.broken = False
        try:
            self.stats = stats if stats is not None else airflow_stats()
            self.legacy = legacy if legacy is not None else legacy_names_on()
        except Exception:  # e.g. a [metrics] value Airflow cannot read: no metrics, but the load goes on
            log.warning("Cannot set up the metrics backend; no metrics are sent", exc_info=True)
            self.stats, self.legacy, self.broken = _Dropped(), False, True

    def send(self, metric: Metric, value: float, entity: str) -> None:
        if self.broken:
            return
        tags = {**self.tags, "entity": entity}
        try:
            for name in (metric.name, legacy_name(metric, entity)) if self.legacy else (metric.name,):
                if metric.kind == "counter":
                    self.stats.incr(name, int(value), tags=tags)
                elif metric.kind == "timer":
                    self.stats.timing(name, timedelta(seconds=value), tags=tags)
                else:
                    self.stats.gauge(name, value, tags=tags)
        except Exception:
            self.broken = True
            log.warning(
                "Metrics backend failed on %s; this %s sends no more metrics (the load goes on)",
                metric.name,
                "loader" if metric.name.startswith(f"{PREFIX}.loader.") else "API client",
                exc_info=True,
            )


class LoaderMetrics:
    """The metrics of one loader (one ``load_entity`` call): item counts, batch time, lag.

    Args:
        entity: the entity's name (the ``entity`` tag).
        tags: more tags (:meth:`for_task` adds Airflow's task tags).
        stats: the backend (default: Airflow's ``Stats``, see :func:`airflow_stats`).
        legacy: also send names that carry the entity (default: ``[metrics] legacy_names_on``).
    """

    def __init__(
        self,
        entity: str,
        tags: Mapping[str, str] | None = None,
        *,
        stats: StatsBackend | None = None,
        legacy: bool | None = None,
    ) -> None:
        self.entity = entity
        self.newest: datetime | None = None
        """The newest ``ApiGewijzigdOp`` among the items written (for :data:`LAG`)."""
        self._emitter = _Emitter(tags or {}, stats, legacy)
        self._sent: set[str] = set()

    @classmethod
    def for_task(cls, entity: str, **kwargs: Any) -> LoaderMetrics:
        """Metrics tagged as Airflow tags its task metrics when called inside a task."""
        return cls(entity, task_tags(), **kwargs)

    def _send(self, metric: Metric, value: float) -> None:
        self._sent.add(metric.name)
        self._emitter.send(metric, value, self.entity)

    def processed(self, changed: Iterable[str | None]) -> None:
        """A batch committed: one item per ``ApiGewijzigdOp`` value (the rows' as sent, None when absent)."""
        count = 0
        for value in changed:
            count += 1
            when = parse_datetimeoffset(value)
            if when is not None and (self.newest is None or when > self.newest):
                self.newest = when
        if count:
            self._send(ITEMS_PROCESSED, count)

    def skipped(self, count: int) -> None:
        """``count`` items skipped as already processed."""
        if count:
            self._send(ITEMS_SKIPPED, count)

    def failed(self, count: int = 1) -> None:
        """An item failed (could not be prepared, or Neo4j refused it)."""
        if count:
            self._send(ITEMS_FAILED, count)

    def retried(self, count: int) -> None:
        """A retry round sends ``count`` failed items again."""
        if count:
            self._send(ITEMS_RETRIED, count)

    def batch_written(self, seconds: float) -> None:
        """One batch's transaction committed after ``seconds``."""
        self._send(BATCH_WRITE, seconds)

    def finished(self, now: datetime | None = None) -> None:
        """The load ended (either way): the lag gauge, and a 0 for each item counter not sent yet, so that
        every series exists (a dashboard then shows 0 failures, not "no data")."""
        for metric in LOADER_COUNTERS:
            if metric.name not in self._sent:
                self._send(metric, 0)
        if self.newest is not None:
            lag = ((now or datetime.now(UTC)) - self.newest).total_seconds()
            self._send(LAG, max(0.0, lag))


def url_entity(url: str) -> str:
    """The entity set a TK API URL asks for (``…/Zaak?$filter=…`` -> ``Zaak``, ``…/Zaak(<id>)`` ->
    ``Zaak``, ``…/$metadata`` -> ``metadata``): the ``entity`` tag of the API metrics."""
    segment = urlsplit(url).path.rstrip("/").rsplit("/", 1)[-1]
    return segment.split("(", 1)[0].lstrip("$") or "unknown"


class ApiMetrics:
    """The metrics of one TK API client: requests, retries and the backoff before each retry.

    Args are those of :class:`LoaderMetrics` but the entity, which each call takes from its URL.
    """

    def __init__(
        self,
        tags: Mapping[str, str] | None = None,
        *,
        stats: StatsBackend | None = None,
        legacy: bool | None = None,
    ) -> None:
        self._emitter = _Emitter(tags or {}, stats, legacy)

    @classmethod
    def for_task(cls, **kwargs: Any) -> ApiMetrics:
        """Metrics tagged as Airflow tags its task metrics when the client is made inside a task."""
        return cls(task_tags(), **kwargs)

    def request(self, url: str) -> None:
        """One HTTP request (an attempt) to ``url``."""
        self._emitter.send(API_REQUESTS, 1, url_entity(url))

    def retry(self, url: str, wait: float) -> None:
        """The request to ``url`` failed and is retried after ``wait`` seconds."""
        entity = url_entity(url)
        self._emitter.send(API_RETRIES, 1, entity)
        self._emitter.send(API_BACKOFF, wait, entity)


def markdown_table() -> str:
    """The README's metrics table (name, type, tags, meaning), from :data:`METRICS`."""
    lines = ["| name | type | tags | meaning |", "|---|---|---|---|"]
    for m in METRICS:
        tags = ", ".join(f"`{t}`" for t in m.tags)
        lines.append(f"| `{m.name}` | {m.kind} | {tags} | {m.meaning} |")
    return "\n".join(lines)


if __name__ == "__main__":  # python -m include.loaders.metrics: the README's table
    print(markdown_table())
