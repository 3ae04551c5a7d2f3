"""What the tasks of the ``tk_ingest`` DAG do, written as plain functions (testable without Airflow).

The DAG file only wires these together; every decision about windows, checkpoints and failure
handling is made here:

* :func:`resolve_window` turns the run's params and data interval into one half-open window
  ``[start, end)`` on ``ApiGewijzigdOp`` (conf overrides the interval);
* :func:`prepare_run` is the setup task: window checks, the API version (``TK_API_PROFILE=auto``: found
  here, once per run, and handed on to every later task as ``api_profile``), the ``$metadata`` check,
  Neo4j constraints and the checkpoint run record;
* :func:`plan_entity` is one entity's plan task: it cuts a long window into sub-windows of about equal
  numbers of items (:func:`balanced_split`), the inputs of that loader's mapped task instances;
* :func:`run_loader` is one mapped loader task: it opens the checkpoint of
  ``(run_id, task_id, map_index)``, runs the one generic load loop and decides the task's outcome.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from tk_checkpoint import loader_name  # checkpoint key of a task instance: load_zaak.3

from include.loaders.settings import DEFAULT_BATCH_SIZE, DEFAULT_CONN_ID, MAX_BATCH_SIZE, ApiSettings

log = logging.getLogger(__name__)

DEFAULT_WINDOW_DAYS = 30
"""Default size of one mapped sub-window in a backfill."""

DEFAULT_LOOKBACK = timedelta(days=1)
"""Window of a manual run with neither ``start_date`` nor a data interval: the last day."""


MIN_DATE = datetime(1900, 1, 1, tzinfo=UTC)
MAX_DATE = datetime(2100, 1, 1, tzinfo=UTC)
"""The supported window: ``start_date`` and ``end_date`` in [1900-01-01, 2100-01-01]. The TK data starts in
the 2000s; outside this range OData literals and the window arithmetic break (year 1, year 9999)."""


API_PROFILE_KEY = "api_profile"
"""Key of the API version setup chose, in the window dicts setup and the plan tasks hand on."""


def api_settings(chosen: str | None = None) -> ApiSettings:
    """A task's ``ApiSettings``: the environment's, with the version setup chose (``chosen``) when the
    environment leaves it to discovery (``auto``); an explicit ``TK_API_PROFILE`` still wins."""
    settings = ApiSettings.from_env()
    if chosen and settings.pinned_profile is None:
        return settings.with_overrides(profile=chosen)
    return settings


def _with_profile(window: Window, chosen: str | None) -> dict[str, str]:
    """``window`` as a dict, with the run's API version when there is one."""
    return {**window.to_dict(), **({API_PROFILE_KEY: chosen} if chosen else {})}


class PipelineError(RuntimeError):
    """A run cannot proceed: bad window, failed items beyond tolerance, … (message says what to do)."""


class ConfError(PipelineError):
    """The run's conf or params are wrong (unknown key, wrong type, a date out of range, end before
    start): deterministic, so the task fails at once instead of being retried."""


@dataclass(frozen=True)
class Window:
    """A half-open interval ``[start, end)`` on ``ApiGewijzigdOp`` (UTC)."""

    start: datetime
    end: datetime

    def __post_init__(self) -> None:
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise ValueError("Window bounds must be timezone-aware.")
        if self.end <= self.start:
            raise ConfError(
                f"end ({self.end.isoformat()}) must be after start ({self.start.isoformat()}); "
                "pass an end_date later than start_date, or leave end_date out."
            )

    def to_dict(self) -> dict[str, str]:
        """JSON-friendly form (XCom, checkpoint meta)."""
        return {"start": self.start.isoformat(), "end": self.end.isoformat()}

    @classmethod
    def from_dict(cls, d: Mapping[str, str]) -> Window:
        return cls(datetime.fromisoformat(d["start"]), datetime.fromisoformat(d["end"]))


def _day_start(value: str | date | datetime) -> datetime:
    """A ``YYYY-MM-DD`` string, date or datetime as an aware UTC datetime (dates at 00:00 UTC)."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, date):
        return datetime.combine(value, time(0), tzinfo=UTC)
    if not isinstance(value, str):
        raise ConfError(f"{value!r} is not a date (expected a string YYYY-MM-DD).")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as e:
        raise ConfError(f"{value!r} is not a date (expected YYYY-MM-DD).") from e
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def in_supported_range(name: str, value: datetime) -> datetime:
    """``value`` when it lies in the supported range [MIN_DATE, MAX_DATE], else a ConfError naming it."""
    if not MIN_DATE <= value <= MAX_DATE:
        raise ConfError(
            f"{name} {value.isoformat()} is out of the supported range "
            f"[{MIN_DATE.date().isoformat()}, {MAX_DATE.date().isoformat()}]; pick a date in it."
        )
    return value


def check_conf(conf: Mapping[str, Any], valid: Iterable[str]) -> None:
    """Refuse conf keys the DAG does not know (a typo such as ``start-date`` would otherwise be ignored
    and the run load the default window), naming the key and the valid ones."""
    known = sorted(valid)
    unknown = sorted(str(k) for k in conf if k not in known)
    if unknown:
        raise ConfError(
            f"Unknown conf key(s) {unknown}; the valid keys are {known}. Nothing was loaded: trigger the "
            "run again with the right key."
        )


def check_params(params: Mapping[str, Any]) -> None:
    """The run's params, checked for type and range (Airflow checks them at trigger time; a run built
    another way, ``dag.test(run_conf=…)`` or the REST API of an older DAG version, may carry anything)."""

    def integer(name: str, low: int, high: int | None = None, optional: bool = False) -> None:
        value = params.get(name)
        if value is None and optional:
            return
        ok = isinstance(value, int) and not isinstance(value, bool) and value >= low
        if not ok or (high is not None and value > high):
            bound = f"between {low} and {high}" if high is not None else f"at least {low}"
            raise ConfError(f"Param {name} must be an integer {bound}, got {value!r}.")

    integer("window_days", 1, 36600, optional=True)
    integer("batch_size", 1, MAX_BATCH_SIZE, optional=True)
    integer("cleanup_keep", 1, optional=True)
    flag = params.get("fail_on_item_errors", True)
    if not isinstance(flag, bool):
        raise ConfError(f"Param fail_on_item_errors must be true or false, got {flag!r}.")
    entities = params.get("entities")
    if entities is not None and (
        not isinstance(entities, list | tuple) or not all(isinstance(e, str) for e in entities)
    ):
        raise ConfError(f"Param entities must be a list of entity names, got {entities!r}.")


def resolve_window(
    params: Mapping[str, Any],
    data_interval_start: datetime | None,
    data_interval_end: datetime | None,
    now: datetime,
) -> Window:
    """The run's window: ``start_date``/``end_date`` from conf win over the data interval.

    A scheduled run loads its data interval (yesterday, for the daily schedule). A triggered run with
    ``start_date`` loads ``[start_date, end_date or now)``. A triggered run without either loads the
    last day before ``now``.
    """
    start_param, end_param = params.get("start_date"), params.get("end_date")
    if start_param:
        start = in_supported_range("start_date", _day_start(start_param))
    elif data_interval_start is not None and data_interval_end is not None and not end_param:
        return Window(data_interval_start, data_interval_end)
    else:
        start = None
    if end_param:
        end = in_supported_range("end_date", _day_start(end_param))
    elif data_interval_end is not None and not start_param:
        end = data_interval_end
    else:
        end = now
    if start is None:
        start = end - DEFAULT_LOOKBACK
    return Window(start, end)


def split_window(window: Window, days: int) -> list[Window]:
    """Consecutive sub-windows of at most ``days`` days covering ``window`` exactly, in order."""
    if days < 1:
        raise ConfError(f"window_days must be at least 1, got {days}.")
    step = timedelta(days=days)
    parts, cursor = [], window.start
    while cursor < window.end:
        nxt = min(cursor + step, window.end)
        parts.append(Window(cursor, nxt))
        cursor = nxt
    return parts


def check_entities(entities: Iterable[str]) -> list[str]:
    """The run's entities, checked against the entity table."""
    from include.loaders.entities import ENTITIES

    chosen = list(entities)
    unknown = set(chosen) - set(ENTITIES)
    if unknown:
        raise ConfError(f"Unknown entities {sorted(unknown)}; choose from {sorted(ENTITIES)}.")
    return chosen


def balanced_split(
    window: Window,
    parts: int,
    count: Callable[[datetime, datetime], int],
    *,
    buckets_per_part: int = 8,
    max_buckets: int = 64,
    threads: int = 32,
) -> list[Window]:
    """Up to ``parts`` consecutive sub-windows of ``window`` holding about the same number of items.

    Changes are not spread evenly in time (recent years change far more), so equal-length windows leave
    some workers idle while one grinds through the busy period. This counts the items in equal-time
    buckets (``count(start, end)``, one cheap ``$count`` query each, run concurrently) and cuts at the
    bucket edges nearest to each quantile. Fewer windows come back when the items sit in fewer buckets;
    an empty window comes back whole.
    """
    if parts <= 1:
        return [window]
    n = min(max_buckets, parts * buckets_per_part)
    step = (window.end - window.start) / n
    edges = [window.start + step * i for i in range(n)] + [window.end]
    with ThreadPoolExecutor(max_workers=min(threads, n)) as pool:
        counts = list(pool.map(lambda i: count(edges[i], edges[i + 1]), range(n)))
    total = sum(counts)
    if total == 0:
        return [window]
    cumulative = list(itertools.accumulate(counts))
    cuts: list[int] = []
    for q in range(1, parts):
        target = total * q / parts
        best = min(range(n - 1), key=lambda i: abs(cumulative[i] - target))  # cut after bucket `best`
        if (not cuts or best > cuts[-1]) and 0 < cumulative[best] < total:
            cuts.append(best)
    bounds = [window.start] + [edges[i + 1] for i in cuts] + [window.end]
    return [Window(a, b) for a, b in itertools.pairwise(bounds)]


def plan_entity(
    entity: str, window: Mapping[str, str], params: Mapping[str, Any], client: Any = None
) -> list[dict[str, str]]:
    """The sub-windows of one loader: what its mapped task instances load (empty: not in this run).

    The number of sub-windows is the window's length divided by ``window_days``; their boundaries are
    placed so that each holds about the same number of changed items (:func:`balanced_split`). ``client``
    answers the ``$count`` queries; when None, one is opened from the environment (with the version of
    ``window[API_PROFILE_KEY]``, setup's choice) and closed again. Each sub-window carries that version on.
    """
    if entity not in check_entities(params.get("entities") or []):
        return []
    win = Window.from_dict(window)
    chosen = window.get(API_PROFILE_KEY)
    parts = len(split_window(win, int(params.get("window_days") or DEFAULT_WINDOW_DAYS)))
    if parts > 1:
        from include.loaders.entities import get_entity

        entity_set = get_entity(entity).entity_set
        with contextlib.ExitStack() as opened:
            if client is None:
                from include.loaders.api import TKClient

                client = opened.enter_context(TKClient(api_settings(chosen)))
            windows = balanced_split(win, parts, lambda a, b: client.count(entity_set, a, b))
    else:
        windows = [win]
    log.info(
        "%s: %d sub-window(s) of [%s, %s)%s",
        entity,
        len(windows),
        win.start.isoformat(),
        win.end.isoformat(),
        "".join(f"\n  [{w.start.isoformat()}, {w.end.isoformat()})" for w in windows) if parts > 1 else "",
    )
    return [_with_profile(w, chosen) for w in windows]


def checkpoint_manager(base: str | None = None):
    """The checkpoint manager of ``base``; None: the configured base (the checkpoint settings resolve
    ``TK_CHECKPOINT_BASE`` and its default, nothing here does)."""
    from tk_checkpoint import CheckpointManager

    return CheckpointManager(base)


def prepare_run(
    *,
    dag_id: str,
    run_id: str,
    conf: Mapping[str, Any],
    params: Mapping[str, Any],
    data_interval_start: datetime | None,
    data_interval_end: datetime | None,
    now: datetime,
    conn_id: str = DEFAULT_CONN_ID,
    checkpoint_base: str | None = None,
    valid_keys: Iterable[str] | None = None,
) -> dict[str, str]:
    """The setup task: validate conf and window, create constraints, check the API, open the checkpoint run.

    Returns the run's window (the per-entity plan tasks split it, see :func:`plan_entity`) and, under
    :data:`API_PROFILE_KEY`, the API version it used (discovered when ``TK_API_PROFILE=auto``), which
    every later task of the run uses (:func:`api_settings`). Fails before
    any loading with :class:`ConfError` when the conf has a key outside ``valid_keys`` (the DAG's params;
    None: not checked), a param of the wrong type, a date outside [MIN_DATE, MAX_DATE] or an empty
    window (the DAG fails those at once, without retries); and with other errors when Neo4j (or the
    database its connection names) is unreachable or the API's ``$metadata`` lacks what the loaders rely on
    (an entity set, key, ``Verwijderd``, ``ApiGewijzigdOp``, or a foreign key or navigation an edge needs).
    Every other difference of the served model from the v4/2.0 reference (a scalar property missing,
    renamed, new or of another type; :mod:`include.loaders.model`) is logged, one WARNING line per entity
    that differs (INFO when none does), and kept in the checkpoint run as ``api_model``.
    """
    from include.loaders.api import TKClient
    from include.loaders.entities import get_entity, requirements
    from include.loaders.graph import connect, connection_database, ensure_constraints
    from include.loaders.model import model_report

    if valid_keys is not None:
        check_conf(conf, valid_keys)
    check_params(params)
    window = resolve_window(params, data_interval_start, data_interval_end, now)
    entities = check_entities(params.get("entities") or [])
    log.info(
        "Run %s loads %s changed in [%s, %s)",
        run_id,
        ", ".join(entities),
        window.start.isoformat(),
        window.end.isoformat(),
    )

    with TKClient(api_settings()) as client:
        schema = client.check_metadata(requirements(entities))  # finds the version first, when auto (logged)
        chosen = client.profile.name
        log.info("API metadata check passed (%s, TK API version %s)", client.root, chosen)
        api_model = model_report([get_entity(e) for e in entities], schema, client.profile, client.root)
        api_model.log(log)

    with connect(conn_id) as driver:
        ensure_constraints(driver, database=connection_database(conn_id))

    manager = checkpoint_manager(checkpoint_base)
    _check_run_owner(manager, run_id, dag_id)
    manager.start_new_run(run_id=run_id, dag_id=dag_id, conf=dict(conf), api_model=api_model.to_dict())
    return _with_profile(window, chosen)


def _check_run_owner(manager: Any, run_id: str, dag_id: str) -> None:
    """Refuse to share a checkpoint run with another DAG that happens to use the same run_id.

    Checkpoints are keyed by run_id (then task_id and map index); the run file records its dag_id. Two DAGs
    on one checkpoint base would collide on scheduled run ids such as ``scheduled__2026-11-27T00:00:00``.
    """
    from tk_checkpoint import RunNotFoundError

    try:
        owner = manager.get_run(run_id, loaders=False).get("dag_id")
    except RunNotFoundError:
        return
    if owner and owner != dag_id:
        raise PipelineError(
            f"Checkpoint run {run_id!r} under {manager.checkpoint_dir} belongs to DAG {owner!r}, "
            f"not {dag_id!r}. Give each DAG its own TK_CHECKPOINT_BASE."
        )


def run_loader(
    *,
    entity: str,
    window: Mapping[str, str],
    run_id: str,
    dag_id: str,
    task_id: str,
    map_index: int | None,
    try_number: int | None,
    params: Mapping[str, Any],
    conn_id: str = DEFAULT_CONN_ID,
    checkpoint_base: str | None = None,
) -> dict[str, Any]:
    """One loader task instance: the load loop over ``window`` with the checkpoint of this task instance.

    The API version is setup's (``window[API_PROFILE_KEY]``, see :func:`api_settings`). The scalar
    properties loaded are the served model's, from the ``$metadata`` of the API (fetched once per
    task; :func:`include.loaders.load.load_entity`), the same model the setup task reported.

    A retry or a clear of the task reopens the same checkpoint and skips what is done. Items that still
    fail after the loop's own retries fail the task (so Airflow retries it) unless the run's
    ``fail_on_item_errors`` param is false.
    """
    from tk_checkpoint import LoaderCheckpoint

    from include.loaders.api import TKClient
    from include.loaders.graph import connect, connection_database
    from include.loaders.load import load_entity

    win = Window.from_dict(window)
    manager = checkpoint_manager(checkpoint_base)
    manager.start_new_run(run_id=run_id, dag_id=dag_id)  # reopens the run of the setup task
    name = loader_name(task_id, map_index)
    meta = {"entity": entity, **win.to_dict()}
    with (
        TKClient(api_settings(window.get(API_PROFILE_KEY))) as client,
        connect(conn_id) as driver,
        LoaderCheckpoint(manager, name, try_number=try_number, meta=meta) as checkpoint,
    ):
        result = load_entity(
            entity,
            client=client,
            driver=driver,
            database=connection_database(conn_id),
            checkpoint=checkpoint,
            start=win.start,
            end=win.end,
            batch_size=int(params.get("batch_size") or DEFAULT_BATCH_SIZE),
        )
    summary = result.to_dict()
    if summary.get("failed") and params.get("fail_on_item_errors", True):
        raise PipelineError(
            f"{summary['failed']} {entity} item(s) in [{win.start.isoformat()}, {win.end.isoformat()}) still "
            f"failed after retries (see `tk-checkpoint show --run-id '{run_id}'`); the task fails so that "
            "Airflow retries them. Set the param fail_on_item_errors to false to accept them."
        )
    return summary
