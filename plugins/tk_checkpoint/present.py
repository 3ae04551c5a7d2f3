"""Presentation: checkpoint figures as text for people (the task log, the CLI and the dashboard).

Nothing here reads or writes checkpoint files; every function takes the plain dicts the engine reports
(``LoaderState.summary()``, ``LoaderCheckpoint.get_progress()``, ``CheckpointManager.list_runs()`` and
``describe_run()``). The CLI prints the text these functions make; the dashboard's Jinja2 templates
(``templates/``) use the same functions as filters, so a figure reads the same in both.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

DAMAGED = "damaged"
"""The state the engine reports for a run or loader file it could not read (its ``error`` says why)."""


def format_when(stamp: Any) -> str:
    """A stored timestamp for people: '2026-11-27T22:19:54.749+00:00' -> '2026-11-27 22:19:54' (UTC)."""
    return str(stamp)[:19].replace("T", " ") if stamp else "-"


def percentage(done: int | None, total: int | None) -> float | None:
    """``done`` of ``total`` in percent, one decimal; None while the total is not known (or 0)."""
    return round(100.0 * (done or 0) / total, 1) if total else None


def format_percent(value: float | None) -> str:
    """'75.0', or '-' when there is no percentage."""
    return "-" if value is None else f"{value:.1f}"


def format_progress(p: Mapping[str, Any]) -> str:
    """The original system's progress lines: '📊 Progress: 750/1000 (75.0%)' and, when items failed,
    '⚠️ 5 items failed during processing'."""
    done, total = p.get("processed_count", 0), p.get("total_items")
    if total:
        line = f"📊 Progress: {done}/{total} ({format_percent(percentage(done, total))}%)"
    else:
        line = f"📊 Progress: {done} processed (total unknown)"
    if p.get("failed_count"):
        line += f"\n⚠️ {p['failed_count']} items failed during processing"
    return line


def format_text(value: Any) -> str:
    """A value as text, '-' when there is none (None, '', or a value a template does not have)."""
    text = "" if value is None else str(value)
    return text or "-"


def format_count(value: Any, grouped: bool = False) -> str:
    """A count or a rate: '-' when unknown, an int as it is ('12,345' when ``grouped``, as the dashboard
    shows them), a float with one decimal."""
    if isinstance(value, float):
        return f"{value:,.1f}" if grouped else f"{value:.1f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}" if grouped else str(value)
    return format_text(value)


def format_conf(conf: Any) -> str:
    """A run's conf as one line of JSON, non-ASCII kept readable."""
    return json.dumps(conf, ensure_ascii=False)


def format_holder(holder: Mapping[str, Any]) -> str:
    """Who holds a loader's writer lock: 'host worker-9 pid 77 since 2026-11-27 22:00:00 UTC', and
    ' (stale: …)' when the engine found that writer gone (``alive`` False: a dead pid on this host, or no
    heartbeat for longer than the stale limit)."""
    text = f"host {holder.get('host')} pid {holder.get('pid')} since {format_when(holder.get('since'))} UTC"
    if holder.get("alive") is False:
        text += " (stale: that writer is gone; its try was interrupted, the next try takes the lock over)"
    return text


def first_line(text: Any) -> str:
    """The first line of an error text ('' for none): enough for a table row."""
    return str(text).splitlines()[0] if text else ""


def is_damaged(report: Mapping[str, Any]) -> bool:
    """Whether a run (or one of its loaders) is reported damaged."""
    return report.get("state") == DAMAGED or any(
        s.get("state") == DAMAGED for s in (report.get("loaders") or {}).values()
    )


class Totals(NamedTuple):
    """A run's figures summed over its readable loaders."""

    processed: int
    total: int | None  # None while any loader does not know its total yet
    failed: int


def run_totals(run: Mapping[str, Any]) -> Totals:
    """Processed, total and failed over a run's loaders (damaged loader files left out)."""
    loaders = [s for s in (run.get("loaders") or {}).values() if s.get("state") != DAMAGED]
    totals = [s.get("total_items") for s in loaders]
    return Totals(
        processed=sum(s.get("processed_count") or 0 for s in loaders),
        total=sum(totals) if loaders and all(t is not None for t in totals) else None,
        failed=sum(s.get("failed_count") or 0 for s in loaders),
    )


def try_row(entry: Mapping[str, Any]) -> dict[str, Any]:
    """One try of a loader as shown in a table: timestamps formatted, an unfinished try as 'running'."""
    return {
        "index": entry.get("index"),
        "try_number": entry.get("try_number"),
        "host": entry.get("host"),
        "pid": entry.get("pid"),
        "started": format_when(entry.get("started_at")),
        "ended": format_when(entry.get("ended_at")),
        "outcome": entry.get("outcome") or "running",
        "processed": entry.get("processed"),
        "skipped": entry.get("skipped"),
        "failed": entry.get("failed"),
    }


# --- text for the terminal -----------------------------------------------------------------------


def format_table(headers: Sequence[str], rows: Iterable[Sequence[Any]], right: Iterable[int] = ()) -> str:
    """A plain-text table: columns padded to their widest cell, ``right`` (column numbers) right-aligned,
    None shown as '-'."""
    cells = [[str(c) for c in headers]] + [["-" if c is None else str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    right = set(right)
    lines = []
    for row in cells:
        parts = [
            c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(parts).rstrip())
    return "\n".join(lines)


def _indent(text: str, prefix: str) -> list[str]:
    return [prefix + line for line in text.splitlines()]


def _facts(facts: Iterable[tuple[str, Any]], indent: str = "", width: int = 0) -> list[str]:
    """'Label: value' lines, labels padded to ``width``; a fact without a value is left out."""
    return [f"{indent}{label:<{width}} {value}" for label, value in facts if value]


RUNS_HEADERS = ("RUN / LOADER", "STATE", "PROCESSED", "TOTAL", "%", "FAILED", "SKIPPED", "UPDATED (UTC)")
DAMAGED_ERROR_CHARS = 80  # of a damaged file's error in a table row; ``show`` prints it whole


def _damaged_row(name: str, error: Any) -> list[Any]:
    return [name, DAMAGED.upper(), "", "", "", "", "", str(error or "")[:DAMAGED_ERROR_CHARS]]


def format_runs(runs: Iterable[Mapping[str, Any]]) -> str:
    """``tk-checkpoint list``: a row per run, then a row per loader (indented) with its progress."""
    rows: list[list[Any]] = []
    for run in runs:
        if run.get("state") == DAMAGED:
            rows.append(_damaged_row(run["run_id"], run.get("error")))
            continue
        rows.append([run["run_id"], run["state"], "", "", "", "", "", format_when(run.get("updated_at"))])
        for name, s in (run.get("loaders") or {}).items():
            if s.get("state") == DAMAGED:
                rows.append(_damaged_row("  " + name, s.get("error")))
                continue
            rows.append(
                [
                    "  " + name,
                    s["state"],
                    s["processed_count"],
                    s.get("total_items"),
                    format_percent(percentage(s["processed_count"], s.get("total_items"))),
                    s["failed_count"],
                    s["skipped_count"],
                    format_when(s.get("updated_at")),
                ]
            )
    return format_table(RUNS_HEADERS, rows, right=(2, 3, 4, 5, 6))


TRIES_COLUMNS = (
    ("#", "index"),
    ("TRY", "try_number"),
    ("HOST", "host"),
    ("PID", "pid"),
    ("STARTED", "started"),
    ("ENDED", "ended"),
    ("OUTCOME", "outcome"),
    ("PROCESSED", "processed"),
    ("SKIPPED", "skipped"),
    ("FAILED", "failed"),
)


def _loader_lines(name: str, d: Mapping[str, Any]) -> list[str]:
    if d.get("state") == DAMAGED:
        return [f"Loader {name}: {DAMAGED.upper()}", f"  {d.get('error')}"]
    rate = f", {format_count(d['rate'])} items/s in the last try" if d.get("rate") is not None else ""
    lines = [f"Loader {name}: {d['state']}, {d['skipped_count']} skipped{rate}"]
    lines += _indent(format_progress(d), "  ")
    holder = d.get("locked_by")
    facts = [
        ("Error:", d.get("error")),
        ("Meta:", d.get("meta") and format_conf(d["meta"])),
        ("Locked by", holder and format_holder(holder)),
        *(("Set-aside damaged file:", incident) for incident in d.get("incidents") or ()),
    ]
    lines += _facts(facts, indent="  ")
    if d.get("tries"):
        rows = [[row[key] for _, key in TRIES_COLUMNS] for row in map(try_row, d["tries"])]
        table = format_table([h for h, _ in TRIES_COLUMNS], rows, right=(0, 1, 3, 7, 8, 9))
        lines += ["  Tries:", *_indent(table, "    ")]
    failures = d.get("last_failures") or []
    if failures:
        lines.append(f"  Last failures ({len(failures)} of {d['failed_count']}):")
        for f in failures:
            when = format_when(f.get("last_failed_at"))
            lines.append(f"    {f['item_id']}  attempts {f.get('attempts')}  {when}")
            lines.append(f"      {first_line(f.get('error'))}")
    return lines


def format_run(run: Mapping[str, Any]) -> str:
    """``tk-checkpoint show``: the run's facts, then per loader its progress, tries and last failures."""
    facts = [
        ("Run:", run["run_id"]),
        ("State:", run["state"]),
        ("DAG:", run.get("dag_id") or "-"),
        ("Created:", f"{format_when(run.get('created_at'))} UTC"),
        ("Updated:", f"{format_when(run.get('updated_at'))} UTC"),
        ("Finished:", run.get("completed_at") and f"{format_when(run['completed_at'])} UTC"),
        ("Conf:", run.get("conf") and format_conf(run["conf"])),
        ("Description:", run.get("description")),
        ("Error:", run.get("error")),
    ]
    lines = _facts(facts, width=12)
    loaders: Mapping[str, Any] = run.get("loaders") or {}
    if not loaders:
        lines += ["", "No loaders have recorded progress in this run yet."]
    for name, d in loaders.items():
        lines += ["", *_loader_lines(name, d)]
    if run.get("api_model"):
        lines += ["", format_api_model(run["api_model"])]
    if run.get("reconciliation"):
        lines += ["", format_reconciliation(run["reconciliation"])]
    return "\n".join(lines)


def format_model_entity(d: Mapping[str, Any]) -> str:
    """One entity of a run's ``api_model`` as one line: what the served ``$metadata`` lacks (missing),
    renames, adds (new), types differently or declares with no stored kind, against the reference; then
    how many properties are stored. The setup task's log line says the same (``include.loaders.model``)."""
    parts: list[str] = []
    if d.get("missing"):
        parts.append(f"{len(d['missing'])} missing, not stored ({', '.join(d['missing'])})")
    renamed = d.get("renamed") or {}
    if renamed:
        shown = ", ".join(
            f"{ref} -> {r.get('served')}{'' if r.get('known') else ' (likely)'}" for ref, r in renamed.items()
        )
        parts.append(f"{len(renamed)} renamed ({shown})")
    if d.get("new"):
        parts.append(f"{len(d['new'])} new ({', '.join(d['new'])})")
    changed = d.get("type_changed") or {}
    if changed:
        shown = ", ".join(f"{p} {t.get('reference')} -> {t.get('served')}" for p, t in changed.items())
        parts.append(f"{len(changed)} type changed ({shown})")
    if d.get("skipped"):
        shown = ", ".join(f"{p} {t}" for p, t in d["skipped"].items())
        parts.append(f"{len(d['skipped'])} with no kind, not stored ({shown})")
    stored = f"{len(d.get('stored') or {})} stored"
    return "; ".join([*parts, stored]) if parts else f"as the reference, {stored}"


def model_entity_differs(d: Mapping[str, Any]) -> bool:
    """True when one entity of an ``api_model`` differs from the reference in anything it reports."""
    return any(d.get(k) for k in ("missing", "renamed", "new", "type_changed", "skipped"))


def api_model_heading(doc: Mapping[str, Any]) -> str:
    """'API model (profile v5 at http://…/OData/v5, against v4/2.0): 2 of 6 entities differ'."""
    entities = doc.get("entities") or {}
    differ = sum(1 for d in entities.values() if model_entity_differs(d))
    verdict = (
        f"{differ} of {len(entities)} entities differ" if differ else f"all {len(entities)} as the reference"
    )
    where = f" at {doc['service_root']}" if doc.get("service_root") else ""
    reference = doc.get("reference") or "v4/2.0"
    return f"API model (profile {doc.get('profile')}{where}, against {reference}): {verdict}"


def format_api_model(doc: Mapping[str, Any]) -> str:
    """A run's ``api_model`` as text (``show``): its heading, then one line per entity."""
    lines = [api_model_heading(doc)]
    for name, d in (doc.get("entities") or {}).items():
        lines.append(f"  {name}: {format_model_entity(d)}")
    return "\n".join(lines)


RECONCILE_COLUMNS = (
    ("ENTITY", "entity"),
    ("NEO4J", "neo4j"),
    ("API", "api"),
    ("DIFFERENCE", "difference"),
    ("SHARE %", "share"),
    ("PLACEHOLDERS", "placeholders"),
    ("", "verdict"),
)


def reconcile_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """One entity of a reconciliation as shown: the difference signed (Neo4j minus API), the share in
    percent with two decimals, the verdict ``ok`` or ``OVER`` (above the tolerance)."""
    return {
        "entity": row.get("entity"),
        "neo4j": row.get("neo4j"),
        "api": row.get("api"),
        "difference": f"{row.get('difference', 0):+d}",
        "share": f"{100.0 * float(row.get('share') or 0):.2f}",
        "placeholders": row.get("placeholders"),
        "verdict": "ok" if row.get("ok") else "OVER",
    }


def reconcile_heading(doc: Mapping[str, Any]) -> str:
    """'Reconciliation (2026-12-02 06:10:00 UTC, all live rows, tolerance 1.00%): 1 of 6 entities over'."""
    rows = doc.get("entities") or []
    over = sum(1 for r in rows if not r.get("ok"))
    verdict = f"{over} of {len(rows)} entities over" if over else f"all {len(rows)} entities within"
    return (
        f"Reconciliation ({format_when(doc.get('checked_at'))} UTC, {doc.get('scope')}, "
        f"tolerance {100.0 * float(doc.get('tolerance') or 0):.2f}%): {verdict}"
    )


def format_reconciliation(doc: Mapping[str, Any]) -> str:
    """A reconciliation as text: its heading, then a row per entity (the task's failure message, ``show``)."""
    if doc.get("state") == DAMAGED:
        return f"Reconciliation: {DAMAGED.upper()}\n  {doc.get('error')}"
    rows = [[r[key] for _, key in RECONCILE_COLUMNS] for r in map(reconcile_row, doc.get("entities") or [])]
    table = format_table([h for h, _ in RECONCILE_COLUMNS], rows, right=(1, 2, 3, 4, 5))
    return "\n".join([reconcile_heading(doc), *_indent(table, "  ")])


def format_summary_line(loader: str, p: Mapping[str, Any]) -> str:
    """One loader's end-of-try line from ``LoaderCheckpoint.get_progress()``: 'load_zaak: 500 processed,
    500 skipped, 5 failed, 1000/1000 done, 812.3 items/s' (processed and skipped: this try's figures)."""
    rate = p["rate"] if p.get("rate") is not None else 0.0
    return (
        f"{loader}: {p['processed_this_try']} processed, {p['skipped_this_try']} skipped, "
        f"{p['failed_count']} failed, {p['processed_count']}/{p['total_items'] or '?'} done, "
        f"{rate} items/s"
    )


# --- SyncFeed cursors ----------------------------------------------------------------------------

CURSOR_COLUMNS = (
    ("TYPE", "type_name"),
    ("SKIPTOKEN", "skiptoken"),
    ("HEAD", "head"),
    ("BEHIND HEAD", "behind"),
    ("CAUGHT UP AT (UTC)", "caught_up"),
    ("UPDATED (UTC)", "updated"),
    ("LAST RUN", "last_run_id"),
)


def cursor_row(d: Mapping[str, Any]) -> dict[str, Any]:
    """One type's cursor (``CursorState.to_dict()``, or a damaged entry of ``FeedCursors.report()``) as
    shown in a table: the head and the distance to it '-' when never seen, 'never' when the type has not
    caught up since its cursor was created or reset."""
    if d.get("state") == DAMAGED:
        return {"type_name": d.get("type_name"), "state": DAMAGED, "error": d.get("error")}
    return {
        "type_name": d.get("type_name"),
        "skiptoken": d.get("skiptoken"),
        "head": d.get("head_skiptoken"),
        "behind": d.get("behind"),
        "caught_up": format_when(d["caught_up_at"]) if d.get("caught_up_at") else "never",
        "updated": format_when(d.get("updated_at")),
        "last_run_id": d.get("last_run_id"),
    }


def cursors_heading(rows: Sequence[Mapping[str, Any]]) -> str:
    """'SyncFeed cursors: 35 types, 3 behind the head, 1 damaged' (the counts that are not 0)."""
    behind = sum(1 for r in rows if (r.get("behind") or 0) > 0)
    damaged = sum(1 for r in rows if r.get("state") == DAMAGED)
    parts = [f"{len(rows)} type{'' if len(rows) == 1 else 's'}"]
    if behind:
        parts.append(f"{behind} behind the head")
    if damaged:
        parts.append(f"{damaged} damaged")
    return "SyncFeed cursors: " + ", ".join(parts)


def format_cursors(rows: Sequence[Mapping[str, Any]]) -> str:
    """``tk-checkpoint cursors`` (and the section of ``list``): the heading, then a row per type with its
    skiptoken, the feed's head as last seen, how far behind it is and when it last caught up."""
    shown = []
    for row in map(cursor_row, rows):
        if row.get("state") == DAMAGED:
            error = str(row.get("error") or "")[:DAMAGED_ERROR_CHARS]
            shown.append([row["type_name"], DAMAGED.upper(), "", "", "", "", error])
        else:
            shown.append([row[key] for _, key in CURSOR_COLUMNS])
    table = format_table([h for h, _ in CURSOR_COLUMNS], shown, right=(1, 2, 3))
    return "\n".join([cursors_heading(rows), *_indent(table, "  ")])
