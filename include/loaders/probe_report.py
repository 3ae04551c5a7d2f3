"""The probe's report as files: ``report.md`` for people (paste it into an issue), ``report.json`` for
machines, ``metadata-<version>.xml`` the raw ``$metadata`` of each version that answered.

    path = write_report(run_probe(settings), Path("tk-api-probe-20261202T210000Z"))   # …/report.md

The facts are :class:`include.loaders.probe.ProbeReport`'s; this module only lays them out: a summary
line per version first, then per version its model against the reference, counts, paging and the
loaders' requests (their URLs folded in a ``<details>`` block), then how the probe asked (window,
headers without ``Authorization``, every retried request).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from include.loaders.entities import WATERMARK
from include.loaders.probe import REFERENCE_VERSION, PagingFacts, ProbeReport, VersionProbe

__all__ = ["render_markdown", "write_report"]


def write_report(report: ProbeReport, folder: Path) -> Path:
    """Write ``report.md``, ``report.json`` and ``metadata-<version>.xml`` of each answering version into
    ``folder`` (created); the path of ``report.md``."""
    folder.mkdir(parents=True, exist_ok=True)
    for v in report.versions:
        if v.answered and v.metadata_xml is not None:
            (folder / v.file_name).write_bytes(v.metadata_xml)
    (folder / "report.json").write_text(json.dumps(report.to_json(), indent=2, ensure_ascii=False) + "\n")
    path = folder / "report.md"
    path.write_text(render_markdown(report), encoding="utf-8")
    return path


def _cell(value: object) -> str:
    text = "" if value is None else str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def _table(head: Sequence[str], rows: Sequence[Sequence[object]]) -> list[str]:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return [*lines, ""]


def _summary(v: VersionProbe) -> str:
    if not v.answered:
        return f"- **{v.version}** (`{v.service_root}`): does not answer: {v.reason}"
    parts = [f"- **{v.version}** (`{v.service_root}`): answers ({v.metadata.seconds:.2f} s)"]
    if v.diff is not None:
        t = v.diff.totals()
        parts.append(
            f"{v.diff.sets_served} entity sets ({len(v.diff.sets_missing)} missing, "
            f"{len(v.diff.sets_new)} new against {REFERENCE_VERSION}); properties: {t['missing']} missing, "
            f"{t['known_renames']} renamed as the profile knows, {t['likely_renames']} likely renamed, "
            f"{t['new']} new, {t['type_changes']} with another EDM type"
        )
    if v.paging is not None:
        p = v.paging
        cap = p.top_cap if p.top_cap is not None else "none found"
        parts.append(
            f"paging on {p.entity_set}: {p.verdict}, {p.first_page_rows} rows on the first page, "
            f"$top cap {cap}, default order {p.default_order}"
        )
    failed = [e for e in v.requests if not e.ok]
    parts.append(f"{len(v.requests)} requests, {len(failed)} failed")
    return "; ".join(parts)


def render_markdown(report: ProbeReport) -> str:
    """The report as Markdown: a summary first, then one section per version, then the requests made."""
    lines = [
        "# TK OData API probe",
        "",
        f"Probed `{report.base_url}` from {report.started} to {report.finished} with `tk-api probe`. "
        f"Versions tried: {', '.join(v.version for v in report.versions)}; reference model: "
        f"{REFERENCE_VERSION} (its `$metadata` of Oct 2025, kept with the project).",
        "",
        "## Summary",
        "",
    ]
    lines += [_summary(v) for v in report.versions]
    lines.append("")
    if not report.answering:
        lines += ["**No version answered.** Check the base URL, the network, or a proxy.", ""]
    for v in report.versions:
        lines += _version_section(v)
    lines += [
        "## How the probe asked",
        "",
        f"- Window of the window queries: [{report.window[0]}, {report.window[1]}) on `{WATERMARK}`.",
        f"- Entity sets counted and queried: {', '.join(report.sets)}.",
        "- Credentials in the base URL: "
        + ("yes, sent as HTTP basic auth, not shown." if report.credentials else "none."),
        "- Headers sent with every request:",
        "",
    ]
    lines += [f"  - `{k}: {v}`" for k, v in report.headers.items()]
    retried = report.retried()
    lines += ["", f"- Requests retried: {len(retried)}" + ("." if not retried else ":")]
    lines += [f"  - {e.attempts} attempts: `{e.url}` ({e.outcome()})" for e in retried]
    lines.append("")
    return "\n".join(lines)


def _version_section(v: VersionProbe) -> list[str]:
    lines = [
        f"## {v.version}",
        "",
        f"`$metadata`: `{v.metadata.url}`: {v.metadata.outcome()}, "
        f"{v.metadata.seconds:.2f} s, {v.metadata.attempts} attempt(s).",
    ]
    if not v.answered:
        return [*lines, "", f"Not answering: {v.reason}", ""]
    lines += [f"Raw model: `{v.file_name}`.", ""]
    lines += _diff_section(v)
    lines += ["### Counts", ""]
    count_rows = []
    by_set = {e.entity_set: e for e in v.requests if e.kind.startswith("count:")}
    for name, n in v.counts.items():
        ex = by_set.get(name)
        count_rows.append(
            [
                name,
                n if n is not None else "—",
                f"{ex.seconds:.2f}" if ex else "",
                ex.outcome() if ex else "not served",
            ]
        )
    lines += _table(["entity set", "rows", "seconds", "answer"], count_rows)
    if v.paging is not None:
        lines += _paging_section(v.paging)
    asked = [e for e in v.requests if not e.kind.startswith(("count:", "paging:"))]
    lines += ["### The loaders' requests", ""]
    lines += _table(
        ["#", "kind", "set", "answer", "s", "rows", "@odata.count", "first row's properties"],
        [
            [
                i,
                e.kind,
                e.entity_set,
                e.outcome(),
                f"{e.seconds:.2f}",
                e.rows,
                e.count,
                ", ".join(e.first_row),
            ]
            for i, e in enumerate(asked, 1)
        ],
    )
    lines += ["<details><summary>Their URLs</summary>", ""]
    lines += [f"{i}. `{e.url}`" for i, e in enumerate(asked, 1)]
    lines += ["", "</details>", ""]
    return lines


def _diff_section(v: VersionProbe) -> list[str]:
    d = v.diff
    assert d is not None
    lines = [f"### Model against {REFERENCE_VERSION}", ""]
    if v.version == REFERENCE_VERSION and not d.sets and not d.sets_missing and not d.sets_new:
        return [*lines, "Identical to the reference.", ""]
    lines.append(f"{d.sets_served} entity sets served.")
    lines.append(f"Sets missing: {', '.join(d.sets_missing) or 'none'}.")
    lines.append(f"Sets new: {', '.join(d.sets_new) or 'none'}.")
    for old, new in d.likely_set_renames.items():
        lines.append(f"Set `{old}` likely renamed to `{new}`.")
    lines.append("")
    rows: list[list[object]] = []
    for name, s in d.sets.items():
        if s.key != s.served_key:
            rows.append([name, "key changed", ", ".join(s.key), ", ".join(s.served_key)])
        for old, new in s.known_renames.items():
            rows.append([name, "renamed (known to the profile)", old, new])
        for old, new in s.known_renames_not_seen.items():
            rows.append([name, "known rename not seen (reference name served)", old, new])
        for old in s.missing:
            hint = s.likely_renames.get(old)
            rows.append([name, "missing" + (" (likely renamed)" if hint else ""), old, hint or ""])
        for new, edm in s.new.items():
            tag = "new (known to the profile)" if new in s.known_new else "new"
            if new in s.likely_renames.values():
                tag += " (likely a rename)"
            rows.append([name, tag, "", f"{new} ({edm})"])
        for prop, (a, b) in s.type_changes.items():
            rows.append([name, "EDM type changed", f"{prop} ({a})", b])
        for nav in s.navigations_missing:
            hint = s.likely_navigation_renames.get(nav)
            rows.append([name, "navigation missing", nav, f"likely renamed to {hint}" if hint else ""])
        for nav in s.navigations_new:
            rows.append([name, "navigation new", "", nav])
    if rows:
        lines += _table(["set", "change", f"{REFERENCE_VERSION} name", "served"], rows)
    else:
        lines += ["The sets both serve have the same keys, properties, EDM types and navigations.", ""]
    return lines


def _paging_section(p: PagingFacts) -> list[str]:
    lines = [f"### Paging (measured on {p.entity_set}, {p.set_count} rows)", ""]
    lines += [
        f"- First page without `$top`: {p.first_page_rows} rows; {p.verdict}.",
    ]
    if p.second_page_rows is not None:
        lines.append(
            f"- The nextLink's page: {p.second_page_rows} rows, {p.second_page_overlap} of them already "
            "on the first page."
        )
    cap = p.top_cap if p.top_cap is not None else "none found"
    lines += [f"- `$top` cap: {cap} ({p.top_cap_note}).", ""]
    lines += _table(
        ["$top", "answer", "rows", "nextLink", "server's message"],
        [[t.top, t.status, t.rows, "yes" if t.next_link else "no", t.message or ""] for t in p.top_trials],
    )
    checked = "; ".join(f"{o}: {'yes' if ok else 'no'}" for o, ok in p.orders_checked.items())
    lines += [
        f"- Default order of the first page: **{p.default_order}** (checked: {checked or 'nothing'}).",
        "",
    ]
    return lines
