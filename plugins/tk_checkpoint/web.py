"""The checkpoint dashboard and its JSON API, mounted in the Airflow UI by the plugin.

``create_app()`` builds a FastAPI app that the api-server mounts under ``/tk-checkpoints``:

    GET /tk-checkpoints/                   the runs, newest first, with per-loader progress bars
    GET /tk-checkpoints/runs/{run_id}      one run: loaders, tries, last failures with their errors
    GET /tk-checkpoints/api/runs           the runs as JSON (as ``tk-checkpoint list --json``)
    GET /tk-checkpoints/api/runs/{run_id}  one run as JSON (as ``tk-checkpoint show --json``)
    GET /tk-checkpoints/api/cursors        tk_sync's SyncFeed cursors (as ``tk-checkpoint cursors --json``)

The runs page also shows the cursors table (type, skiptoken, the feed's head, behind head, caught up at)
when tk_sync has written any.

Every route needs an Airflow login with read access to DAGs: the api-server's own security dependency
(a Bearer token, or the UI's ``_token`` cookie), so the page works inside the UI and nowhere else. The
pages only read checkpoints (never lock or change them); they refresh themselves every 15 seconds.
The checkpoint base is ``TK_CHECKPOINT_BASE``, as for the loaders and the CLI.

The pages are Jinja2 templates (``templates/``, autoescaped: every value from a checkpoint is text, never
markup) whose figures are formatted by :mod:`tk_checkpoint.present`, as the CLI's. The JSON answers are
the pydantic models below: the engine's reports as they are (fields the models do not declare are kept),
so ``api/runs`` equals ``tk-checkpoint list --json`` and ``api/runs/{run_id}`` equals ``show --json``.

Imported only by the api-server (through ``TkCheckpointPlugin.fastapi_apps``): other Airflow components
never pay for FastAPI.
"""

# No ``from __future__ import annotations`` here: FastAPI must see the route parameters' real types
# (``Request`` is imported inside ``create_app``, so string annotations could not be resolved).
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import quote

import jinja2
from pydantic import BaseModel, ConfigDict, Discriminator, Tag

from . import CheckpointManager, FeedCursors, InvalidNameError, RunNotFoundError, present

REFRESH_SECONDS = 15
FAILURES_SHOWN = 20
TEMPLATES = Path(__file__).with_name("templates")


# --- the JSON answers ----------------------------------------------------------------------------


class Report(BaseModel):
    """A report of the engine. Open: what it reports beyond the declared fields stays in the answer (run
    files of other versions, try entries that took over a lock, fields added later)."""

    model_config = ConfigDict(extra="allow")


class TryReport(Report):
    """One try of a loader task: who ran it, when, and what it processed, skipped and failed."""

    index: int | None = None
    try_number: int | None = None
    host: str | None = None
    pid: int | None = None
    started_at: str | None = None
    ended_at: str | None = None
    outcome: str | None = None  # None while the try runs
    processed: int = 0
    skipped: int = 0
    failed: int = 0


class FailureReport(Report):
    """A failed item with its last error."""

    item_id: str
    error: str | None = None
    attempts: int | None = None
    first_failed_at: str | None = None
    last_failed_at: str | None = None
    try_number: int | None = None


class LockHolder(Report):
    """The writer holding a loader's lock."""

    host: str | None = None
    pid: int | None = None
    since: str | None = None
    alive: bool | None = None  # False: its writer is gone (a dead pid on this host, or a stale heartbeat)


class LoaderSummary(Report):
    """A loader's counts and state (``LoaderState.summary()``); ``tries`` is how many there were."""

    run_id: str
    loader: str
    state: str
    processed_count: int
    total_items: int | None = None
    completion_percentage: float | None = None
    failed_count: int
    skipped_count: int
    rate: float | None = None  # items/s of the last try
    tries: int = 0
    created_at: str | None = None
    updated_at: str | None = None
    completed_at: str | None = None
    error: str | None = None
    meta: dict[str, Any] = {}  # pydantic copies mutable defaults per instance
    locked_by: LockHolder | None = None
    incidents: list[str] = []


class LoaderDetail(LoaderSummary):
    """A loader's summary with its tries and its last failed items (``describe_run``)."""

    tries: list[TryReport] = []  # type: ignore[assignment]
    last_failures: list[FailureReport] = []


class DamagedFile(Report):
    """A run or loader file that could not be read: shown with the error, never hidden."""

    state: Literal["damaged"]
    error: str
    loader: str | None = None
    run_id: str | None = None


def _readable_or_damaged(report: Any) -> str:
    state = report.get("state") if isinstance(report, dict) else getattr(report, "state", None)
    return "damaged" if state == present.DAMAGED else "readable"


def _or_damaged(model: type[Report]) -> Any:
    """``model``, or :class:`DamagedFile` when the report says ``state: damaged``."""
    return Annotated[
        Annotated[model, Tag("readable")] | Annotated[DamagedFile, Tag("damaged")],
        Discriminator(_readable_or_damaged),
    ]


class ModelEntity(Report):
    """One entity of a run's API model: what the served ``$metadata`` lacks, renames, adds, retypes."""

    stored: dict[str, str] = {}
    missing: list[str] = []
    renamed: dict[str, dict[str, Any]] = {}
    new: dict[str, str] = {}
    type_changed: dict[str, dict[str, str]] = {}
    skipped: dict[str, str] = {}


class ApiModel(Report):
    """The setup task's report of the API model a run loads, against the v4/2.0 reference."""

    profile: str | None = None
    service_root: str | None = None
    reference: str | None = None
    entities: dict[str, ModelEntity] = {}


class RunFile(Report):
    """A run file: the DAG run it follows, its conf and state, and the API model its setup found."""

    run_id: str
    state: str
    dag_id: str | None = None
    conf: dict[str, Any] = {}
    description: str | None = None
    created_at: str | None = None
    updated_at: str | None = None
    completed_at: str | None = None
    error: str | None = None
    api_model: ApiModel | None = None


class RunSummary(RunFile):
    """A run with its loaders' summaries (an entry of ``api/runs``)."""

    loaders: dict[str, _or_damaged(LoaderSummary)] = {}  # type: ignore[valid-type]


class ReconciledEntity(Report):
    """One entity of a reconciliation: nodes with data in Neo4j, the API's live rows, placeholders."""

    entity: str
    neo4j: int
    api: int
    difference: int
    share: float
    placeholders: int
    ok: bool


class Reconciliation(Report):
    """The ``reconcile`` task's result kept with the run (:mod:`tk_checkpoint.reconciliation`)."""

    run_id: str
    checked_at: str
    scope: str
    tolerance: float
    ok: bool
    entities: list[ReconciledEntity] = []


class RunDetail(RunFile):
    """A run with its loaders' details (``api/runs/{run_id}``) and its reconciliation, when it has one."""

    loaders: dict[str, _or_damaged(LoaderDetail)] = {}  # type: ignore[valid-type]
    reconciliation: _or_damaged(Reconciliation) | None = None  # type: ignore[valid-type]


RunEntry = _or_damaged(RunSummary)
"""An entry of ``api/runs``: a run, or a run file that could not be read."""


class CursorReport(Report):
    """One type's SyncFeed cursor (``CursorState.to_dict()``): everything up to ``skiptoken`` is in Neo4j;
    ``behind`` is the feed's head as last seen minus it; ``caught_up_at`` the last time a sync reached it."""

    type_name: str
    skiptoken: int
    updated_at: str
    head_skiptoken: int | None = None
    caught_up_at: str | None = None
    last_run_id: str | None = None
    behind: int | None = None


class DamagedCursor(Report):
    """A cursor file that could not be read: shown with its error, never hidden."""

    type_name: str
    state: Literal["damaged"]
    error: str


CursorEntry = Annotated[
    Annotated[CursorReport, Tag("readable")] | Annotated[DamagedCursor, Tag("damaged")],
    Discriminator(_readable_or_damaged),
]
"""An entry of ``api/cursors``: a cursor, or a cursor file that could not be read."""


# --- the pages -----------------------------------------------------------------------------------


def run_href(run_id: str) -> str:
    """The page of one run, relative to the dashboard's root (the pages set ``<base href>``)."""
    return f"runs/{quote(run_id, safe='')}"


def templates() -> jinja2.Environment:
    """The dashboard's templates, autoescaped, with :mod:`present`'s formatting as filters."""
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True)
    env.filters.update(
        when=present.format_when,
        count=lambda value: present.format_count(value, grouped=True),
        percent=present.format_percent,
        text=present.format_text,
        conf=present.format_conf,
        holder=present.format_holder,
        try_row=present.try_row,
        reconcile_row=present.reconcile_row,
        reconcile_heading=present.reconcile_heading,
        cursor_row=present.cursor_row,
        cursors_heading=present.cursors_heading,
        model_entity=present.format_model_entity,
        model_heading=present.api_model_heading,
        anchor=quote,
    )
    env.globals.update(
        percentage=present.percentage,
        totals=present.run_totals,
        model_differs=present.model_entity_differs,
        run_href=run_href,
        refresh_seconds=REFRESH_SECONDS,
    )
    return env


def runs_page(mgr: CheckpointManager, base_href: str, env: jinja2.Environment | None = None) -> str:
    """Every run, newest first: a row per run (its loaders' sums) and a row per loader; then the SyncFeed
    cursors, when there are any."""
    page = (env or templates()).get_template("runs.html")
    return page.render(
        runs=mgr.list_runs(details=True),
        cursors=FeedCursors(mgr.base).report(),
        where=mgr.checkpoint_dir,
        base_href=base_href,
    )


def run_page(
    mgr: CheckpointManager, run_id: str, base_href: str, env: jinja2.Environment | None = None
) -> str:
    """One run: its facts, a row per loader, then each loader's tries and last failures."""
    page = (env or templates()).get_template("run.html")
    return page.render(run=mgr.describe_run(run_id, failures=FAILURES_SHOWN), base_href=base_href)


# --- the app -------------------------------------------------------------------------------------


def create_app(base: Any = None) -> Any:
    """The FastAPI app of the dashboard (``base``: the checkpoint base; default ``TK_CHECKPOINT_BASE``).

    Every route requires the api-server's login and DAG read permission. If Airflow's security dependency
    cannot be imported this raises, rather than serving the pages to anyone.
    """
    from airflow.api_fastapi.core_api.security import requires_access_dag
    from fastapi import Depends, FastAPI, HTTPException, Query, Request
    from fastapi.responses import HTMLResponse

    app = FastAPI(
        title="tk-neo4j-airflow checkpoints",
        description="Item-level checkpoints of the tk_ingest loaders (read only).",
        dependencies=[Depends(requires_access_dag(method="GET"))],
    )
    env = templates()  # one per app: templates compile once

    def manager() -> CheckpointManager:
        return CheckpointManager(base)

    def base_href(request: Request) -> str:
        root = request.scope.get("root_path", "") or ""
        return root.rstrip("/") + "/"

    def not_found(exc: Exception) -> HTTPException:
        return HTTPException(status_code=404, detail=str(exc))

    @app.get("/", response_class=HTMLResponse)
    def runs_html(request: Request) -> str:
        return runs_page(manager(), base_href(request), env)

    @app.get("/runs/{run_id}", response_class=HTMLResponse)
    def run_html(run_id: str, request: Request) -> str:
        try:
            return run_page(manager(), run_id, base_href(request), env)
        except (RunNotFoundError, InvalidNameError) as e:
            raise not_found(e) from None

    # exclude_unset: a field the engine did not report stays out of the answer (as in the CLI's JSON)
    # instead of appearing as null.
    @app.get("/api/runs", response_model=list[RunEntry], response_model_exclude_unset=True)
    def runs_json() -> list[dict[str, Any]]:
        return manager().list_runs(details=True)

    @app.get("/api/runs/{run_id}", response_model=RunDetail, response_model_exclude_unset=True)
    def run_json(run_id: str, failures: Annotated[int, Query(ge=0)] = FAILURES_SHOWN) -> dict[str, Any]:
        try:
            return manager().describe_run(run_id, failures=failures)
        except (RunNotFoundError, InvalidNameError) as e:
            raise not_found(e) from None

    @app.get("/api/cursors", response_model=list[CursorEntry], response_model_exclude_unset=True)
    def cursors_json() -> list[dict[str, Any]]:
        return FeedCursors(base).report()

    return app
