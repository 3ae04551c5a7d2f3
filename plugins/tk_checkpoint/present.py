"""Presentation: checkpoint figures as text for people (the task log, the CLI and the dashboard).

Nothing here reads or writes checkpoint files; every function takes the plain dicts the engine reports
(``LoaderState.summary()``, ``LoaderCheckpoint.get_progress()``, ``CheckpointManager.describe_run()``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def format_when(stamp: Any) -> str:
    """A stored timestamp for people: '2026-11-27T22:19:54.749+00:00' -> '2026-11-27 22:19:54' (UTC)."""
    return str(stamp)[:19].replace("T", " ") if stamp else "-"


def format_progress(p: Mapping[str, Any]) -> str:
    """The original system's progress lines: '📊 Progress: 750/1000 (75.0%)' and, when items failed,
    '⚠️ 5 items failed during processing'."""
    done, total = p.get("processed_count", 0), p.get("total_items")
    if total:
        line = f"📊 Progress: {done}/{total} ({100.0 * done / total:.1f}%)"
    else:
        line = f"📊 Progress: {done} processed (total unknown)"
    if p.get("failed_count"):
        line += f"\n⚠️ {p['failed_count']} items failed during processing"
    return line
