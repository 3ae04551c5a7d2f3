"""Is a process of this machine still alive? Used by the writer lock and by the clean-up of temp files."""

from __future__ import annotations

import os
from pathlib import Path


def process_start(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (guards against pid reuse), 'Z' for a zombie, None if unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return "Z" if fields[0] in ("Z", "X") else fields[19]


def pid_alive(pid: int, start: str | None = None) -> bool:
    """True while ``pid`` runs on this machine; with ``start`` (its :func:`process_start`), only while it is
    still that same process and not a later one that got the pid again."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, owned by another user
    now_start = process_start(pid)
    if now_start == "Z":
        return False
    return not (start and now_start and start != now_start)
