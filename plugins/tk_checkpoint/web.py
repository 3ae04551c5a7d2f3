"""The checkpoint dashboard and its JSON API, mounted in the Airflow UI by the plugin.

``create_app()`` builds a FastAPI app that the api-server mounts under ``/tk-checkpoints``:

    GET /tk-checkpoints/                   the runs, newest first, with per-loader progress bars
    GET /tk-checkpoints/runs/{run_id}      one run: loaders, tries, last failures with their errors
    GET /tk-checkpoints/api/runs           the runs as JSON (as ``tk-checkpoint list --json``)
    GET /tk-checkpoints/api/runs/{run_id}  one run as JSON (as ``tk-checkpoint show --json``)

Every route needs an Airflow login with read access to DAGs: the api-server's own security dependency
(a Bearer token, or the UI's ``_token`` cookie), so the page works inside the UI and nowhere else. The
pages only read checkpoints (never lock or change them); they refresh themselves every 15 seconds.
The checkpoint base is ``TK_CHECKPOINT_BASE``, as for the loaders and the CLI.

Imported only by the api-server (through ``TkCheckpointPlugin.fastapi_apps``): other Airflow components
never pay for FastAPI.
"""

# No ``from __future__ import annotations`` here: FastAPI must see the route parameters' real types
# (``Request`` is imported inside ``create_app``, so string annotations could not be resolved).
import json
from html import escape
from typing import Any
from urllib.parse import quote

from .checkpoint import CheckpointManager, format_when
from .errors import InvalidNameError, RunNotFoundError

REFRESH_SECONDS = 15
FAILURES_SHOWN = 20

_STATE_COLOURS = {
    "completed": "#1a7f37",
    "running": "#0969da",
    "in_progress": "#0969da",
    "failed": "#cf222e",
    "damaged": "#8250df",
}

_CSS = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 1.5rem; color: #1f2328; }
h1 { font-size: 1.4rem; margin: 0 0 .25rem; } h2 { font-size: 1.1rem; margin: 1.5rem 0 .5rem; }
.muted { color: #59636e; } a { color: #0969da; text-decoration: none; }
a:hover { text-decoration: underline; }
table { border-collapse: collapse; width: 100%; margin: .5rem 0 1rem; }
th, td { text-align: left; padding: .35rem .6rem; border-bottom: 1px solid #d1d9e0; vertical-align: top;
         white-space: nowrap; }
th { font-weight: 600; background: #f6f8fa; }
.num { text-align: right; font-variant-numeric: tabular-nums; }
.state { display: inline-block; padding: 0 .5rem; border-radius: 1rem; color: #fff; font-size: .85em; }
.bar { display: inline-block; width: 7rem; height: .7rem; background: #e6e9ed; border-radius: .35rem;
       overflow: hidden; vertical-align: middle; }
.bar > span { display: block; height: 100%; background: #1a7f37; }
.loader td:first-child { padding-left: 1.6rem; } pre { white-space: pre-wrap; margin: 0; font-size: .85em; }
dl { display: grid; grid-template-columns: max-content auto; gap: .2rem 1rem; } dt { font-weight: 600; }
"""


def _when(stamp: Any) -> str:
    return escape(format_when(stamp))


def _text(value: Any) -> str:
    return "-" if value in (None, "") else escape(str(value))


def _state(state: Any) -> str:
    s = str(state or "-")
    return f'<span class="state" style="background:{_STATE_COLOURS.get(s, "#59636e")}">{escape(s)}</span>'


def _num(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.1f}"
    return f"{value:,}" if isinstance(value, int) else _text(value)


def _bar(done: int | None, total: int | None) -> str:
    if not total:
        return '<span class="muted">total not known yet</span>' if done else "-"
    pct = min(100.0, 100.0 * (done or 0) / total)
    return f'<span class="bar" title="{pct:.1f}%"><span style="width:{pct:.1f}%"></span></span> {pct:.1f}%'


def _pre(text: Any) -> str:
    return f"<pre>{escape(str(text or ''))}</pre>"


class _Num(str):
    """A cell to align right (numbers)."""


def _tr(cells: list[str], cls: str = "") -> str:
    tds = "".join(f"<td class='num'>{c}</td>" if isinstance(c, _Num) else f"<td>{c}</td>" for c in cells)
    return f"<tr class='{cls}'>{tds}</tr>" if cls else f"<tr>{tds}</tr>"


def _table(headers: list[str], rows: list[str]) -> str:
    ths = "".join(
        f"<th class='num'>{escape(h[1:])}</th>" if h.startswith(">") else f"<th>{escape(h)}</th>"
        for h in headers
    )
    return f"<table><thead><tr>{ths}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _page(title: str, body: str, base_href: str) -> str:
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<meta http-equiv='refresh' content='{REFRESH_SECONDS}'>"
        f"<title>{escape(title)}</title><base href='{escape(base_href)}'><style>{_CSS}</style></head>"
        f"<body>{body}</body></html>"
    )


def _run_href(run_id: str) -> str:
    return f"runs/{quote(run_id, safe='')}"


def _run_totals(run: dict[str, Any]) -> tuple[int, int | None, int]:
    """(processed, total or None when a loader does not know its total yet, failed) over the loaders."""
    loaders = [s for s in run.get("loaders", {}).values() if s.get("state") != "damaged"]
    done = sum(s.get("processed_count") or 0 for s in loaders)
    totals = [s.get("total_items") for s in loaders]
    total = sum(totals) if loaders and all(t is not None for t in totals) else None
    return done, total, sum(s.get("failed_count") or 0 for s in loaders)


def _progress_cells(done: Any, total: Any, failed: Any) -> list[str]:
    return [_Num(f"{_num(done)} / {_num(total)}"), _Num(_num(failed)), _bar(done, total)]


def runs_page(mgr: CheckpointManager, base_href: str) -> str:
    """Every run, newest first: a row per run (its loaders' sums) and a row per loader."""
    runs = mgr.list_runs(details=True)
    rows = []
    for run in runs:
        rid = str(run["run_id"])
        link = f'<a href="{_run_href(rid)}">{escape(rid)}</a>'
        if run.get("state") == "damaged":
            rows.append(_tr([link, _state("damaged"), "", "", "", "", "", _pre(run.get("error"))]))
            continue
        done, total, failed = _run_totals(run)
        info = [_text(run.get("dag_id")), _when(run.get("created_at")), _when(run.get("updated_at"))]
        rows.append(_tr([link, _state(run.get("state")), *info, *_progress_cells(done, total, failed)]))
        for name, s in run.get("loaders", {}).items():
            if s.get("state") == "damaged":
                rows.append(
                    _tr([escape(name), _state("damaged"), "", "", "", "", "", _pre(s.get("error"))], "loader")
                )
                continue
            cells = _progress_cells(s.get("processed_count"), s.get("total_items"), s.get("failed_count"))
            updated = _when(s.get("updated_at"))
            rows.append(_tr([escape(name), _state(s.get("state")), "", "", updated, *cells], "loader"))
    headers = [
        "Run / loader",
        "State",
        "DAG",
        "Created (UTC)",
        "Updated (UTC)",
        ">Processed / total",
        ">Failed",
    ]
    where = f"<code>{escape(mgr.checkpoint_dir)}</code>"
    table = _table([*headers, "Progress"], rows) if runs else f"<p>No runs found in {where}.</p>"
    body = (
        "<h1>Checkpoints</h1>"
        f"<p class='muted'>{len(runs)} run(s) in {where}, newest first; this page refreshes every "
        f"{REFRESH_SECONDS} s. As JSON: <a href='api/runs'>api/runs</a>.</p>{table}"
    )
    return _page("Checkpoints", body, base_href)


def _loader_section(run_id: str, name: str, d: dict[str, Any]) -> str:
    parts = [f"<h2 id='{quote(name)}'>{escape(name)}</h2>"]
    if d.get("error"):
        parts.append(f"<p>Error:</p>{_pre(d['error'])}")
    holder = d.get("locked_by")
    if holder:
        parts.append(
            f"<p class='muted'>Locked by host {_text(holder.get('host'))} pid {_text(holder.get('pid'))} "
            f"since {_when(holder.get('since'))} UTC.</p>"
        )
    tries = [
        _tr(
            [
                _Num(_num(t.get("try_number"))),
                _text(t.get("host")),
                _when(t.get("started_at")),
                _when(t.get("ended_at")),
                _state(t.get("outcome") or "running"),
                _Num(_num(t.get("processed"))),
                _Num(_num(t.get("skipped"))),
                _Num(_num(t.get("failed"))),
            ]
        )
        for t in d.get("tries") or []
    ]
    if tries:
        headers = [
            ">Try",
            "Host",
            "Started (UTC)",
            "Ended (UTC)",
            "Outcome",
            ">Processed",
            ">Skipped",
            ">Failed",
        ]
        parts.append(_table(headers, tries))
    failures = d.get("last_failures") or []
    if failures:
        rows = [
            _tr(
                [
                    f"<code>{escape(str(f['item_id']))}</code>",
                    _Num(_num(f.get("attempts"))),
                    _when(f.get("last_failed_at")),
                    _pre(f.get("error")),
                ]
            )
            for f in failures
        ]
        parts.append(f"<p>Last failures ({len(failures)} of {_num(d.get('failed_count'))}):</p>")
        parts.append(_table(["Item", ">Attempts", "Last failed (UTC)", "Error"], rows))
    return "".join(parts)


def run_page(mgr: CheckpointManager, run_id: str, base_href: str) -> str:
    """One run: its facts, a row per loader, then each loader's tries and last failures."""
    run = mgr.describe_run(run_id, failures=FAILURES_SHOWN)
    facts = [
        ("State", _state(run.get("state"))),
        ("DAG", _text(run.get("dag_id"))),
        ("Created (UTC)", _when(run.get("created_at"))),
        ("Updated (UTC)", _when(run.get("updated_at"))),
    ]
    if run.get("completed_at"):
        facts.append(("Finished (UTC)", _when(run["completed_at"])))
    if run.get("conf"):
        facts.append(("Conf", f"<code>{escape(json.dumps(run['conf'], ensure_ascii=False))}</code>"))
    if run.get("error"):
        facts.append(("Error", _pre(run["error"])))
    parts = [
        f"<p><a href='./'>&larr; all runs</a></p><h1>Run {escape(run_id)}</h1>",
        "<dl>" + "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in facts) + "</dl>",
    ]
    loaders: dict[str, Any] = run["loaders"]
    if not loaders:
        parts.append("<p>No loaders have recorded progress in this run yet.</p>")
        return _page(f"Run {run_id}", "".join(parts), base_href)
    rows = []
    for name, d in loaders.items():
        link = f"<a href='{_run_href(run_id)}#{quote(name)}'>{escape(name)}</a>"
        if d.get("state") == "damaged":
            rows.append(_tr([link, _state("damaged"), "", "", "", "", "", "", _pre(d.get("error"))]))
            continue
        done, total = d.get("processed_count"), d.get("total_items")
        rows.append(
            _tr(
                [
                    link,
                    _state(d.get("state")),
                    _Num(_num(done)),
                    _Num(_num(total)),
                    _bar(done, total),
                    _Num(_num(d.get("failed_count"))),
                    _Num(_num(d.get("skipped_count"))),
                    _Num(_num(d.get("rate"))),
                    _when(d.get("updated_at")),
                ]
            )
        )
    headers = [
        "Loader",
        "State",
        ">Processed",
        ">Total",
        "Progress",
        ">Failed",
        ">Skipped",
        ">Items/s (last try)",
    ]
    parts.append(_table([*headers, "Updated (UTC)"], rows))
    parts += [_loader_section(run_id, n, d) for n, d in loaders.items() if d.get("state") != "damaged"]
    return _page(f"Run {run_id}", "".join(parts), base_href)


def create_app(base: Any = None) -> Any:
    """The FastAPI app of the dashboard (``base``: the checkpoint base; default ``TK_CHECKPOINT_BASE``).

    Every route requires the api-server's login and DAG read permission. If Airflow's security dependency
    cannot be imported this raises, rather than serving the pages to anyone.
    """
    from airflow.api_fastapi.core_api.security import requires_access_dag
    from fastapi import Depends, FastAPI, HTTPException, Request
    from fastapi.responses import HTMLResponse

    dependencies = [Depends(requires_access_dag(method="GET"))]

    app = FastAPI(
        title="tk-neo4j-airflow checkpoints",
        description="Item-level checkpoints of the tk_ingest loaders (read only).",
        dependencies=dependencies,
    )

    def manager() -> CheckpointManager:
        return CheckpointManager(base)

    def base_href(request: Request) -> str:
        root = request.scope.get("root_path", "") or ""
        return root.rstrip("/") + "/"

    def not_found(exc: Exception) -> HTTPException:
        return HTTPException(status_code=404, detail=str(exc))

    @app.get("/", response_class=HTMLResponse)
    def runs_html(request: Request) -> str:
        return runs_page(manager(), base_href(request))

    @app.get("/runs/{run_id}", response_class=HTMLResponse)
    def run_html(run_id: str, request: Request) -> str:
        try:
            return run_page(manager(), run_id, base_href(request))
        except (RunNotFoundError, InvalidNameError) as e:
            raise not_found(e) from None

    @app.get("/api/runs")
    def runs_json() -> list[dict[str, Any]]:
        return json.loads(json.dumps(manager().list_runs(details=True), default=str))

    @app.get("/api/runs/{run_id}")
    def run_json(run_id: str, failures: int = FAILURES_SHOWN) -> dict[str, Any]:
        try:
            return json.loads(json.dumps(manager().describe_run(run_id, failures=failures), default=str))
        except (RunNotFoundError, InvalidNameError) as e:
            raise not_found(e) from None

    return app
