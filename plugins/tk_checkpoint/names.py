"""Names and keys: what a run id or loader name may be, where a run's files live, what may be stored.

Layout under the base (a local folder or an ObjectStoragePath URL), one folder per run::

    <run_id>/run.json                       run file: run_id, dag_id, conf, state, timestamps
    <run_id>/loaders/<loader>.json[.gz]     loader snapshot (gzip above a size threshold)
    <run_id>/loaders/<loader>.journal.jsonl journal, local base: one JSON record per save, append-only
    <run_id>/loaders/<loader>.journal/      journal, object storage: one immutable object per save
    <run_id>/loaders/<loader>.lock          the writer lock (host, pid, try, heartbeat)

Every key is built here from names that :func:`validate_name` accepted, so no key can leave the base.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from .errors import InvalidNameError

MAX_NAME_CHARS = 200
MAX_ERROR_CHARS = 2000
REDACTED = "***redacted***"
CORRUPT_MARK = ".corrupt-"
_NAME_RE = re.compile(r"[A-Za-z0-9_.~:+@=,-]+")
_LOADER_SUFFIXES = (".json.gz", ".json", ".journal.jsonl", ".journal", ".lock")  # longest first
_RESERVED_SUFFIXES = (".json", ".gz", ".jsonl", ".journal", ".lock")
_SECRET_KEY_RE = re.compile(r"pass(word|wd)?|secret|token|api[_-]?key|credential|private[_-]?key|auth", re.I)


def validate_name(name: Any, what: str = "run id") -> str:
    """Return ``name`` if it is safe as one path segment under the base, else raise InvalidNameError.

    Allowed: letters, digits and ``_ . ~ : + @ = , -`` (Airflow's run ids fit), at most 200 characters,
    not starting with '.', no '..'. Rejected: empty, '/', '\\', NUL, absolute paths, anything else.
    """
    if not isinstance(name, str) or not name:
        raise InvalidNameError(f"Invalid {what} {name!r}: it must be a non-empty string")
    problem = None
    if "\x00" in name:
        problem = "it contains a NUL character"
    elif "/" in name or "\\" in name:
        problem = "it contains a path separator"
    elif ".." in name:
        problem = "it contains '..'"
    elif name.startswith("."):
        problem = "it starts with '.'"
    elif len(name) > MAX_NAME_CHARS:
        problem = f"it is longer than {MAX_NAME_CHARS} characters"
    elif not _NAME_RE.fullmatch(name):
        problem = "only letters, digits and _ . ~ : + @ = , - are allowed"
    elif what == "loader name" and (name.endswith(_RESERVED_SUFFIXES) or CORRUPT_MARK in name):
        problem = "it ends with a suffix the checkpoint files use"
    if problem:
        raise InvalidNameError(f"Invalid {what} {name!r}: {problem}")
    return name


def loader_name(task_id: str, map_index: int | None = None) -> str:
    """The loader name of an Airflow task instance: ``task_id``, or ``task_id.<map_index>`` when mapped."""
    name = task_id if map_index is None or map_index < 0 else f"{task_id}.{map_index}"
    return validate_name(name, "loader name")


def redact(value: Any) -> Any:
    """A copy of ``value`` with the values of secret-looking keys (password, token, secret...) replaced."""
    if isinstance(value, Mapping):
        return {
            k: (REDACTED if isinstance(k, str) and _SECRET_KEY_RE.search(k) else redact(v))
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [redact(v) for v in value]
    return value


def clip_error(error: Any) -> str | None:
    """An error as stored: text, at most MAX_ERROR_CHARS characters (None stays None)."""
    return None if error is None else str(error)[:MAX_ERROR_CHARS]


# --- keys ----------------------------------------------------------------------------------------


def run_key(run_id: str) -> str:
    """The run file of ``run_id``."""
    return f"{run_id}/run.json"


def loaders_folder(run_id: str) -> str:
    """The folder of the loader files of ``run_id``."""
    return f"{run_id}/loaders"


def loader_keys(run_id: str, name: str) -> dict[str, str]:
    """The keys of one loader's files: ``plain`` and ``gzip`` snapshot, ``journal`` (the store adds its
    suffix: ``.jsonl`` file or a folder), ``lock``."""
    prefix = f"{loaders_folder(run_id)}/{name}"
    return {
        "plain": prefix + ".json",
        "gzip": prefix + ".json.gz",
        "journal": prefix + ".journal",
        "lock": prefix + ".lock",
    }


def loader_names_in(entries: Iterable[str]) -> list[str]:
    """The loader names among the entries of a loaders folder (hidden temp files and set-aside damaged
    files left out), sorted."""
    names = set()
    for entry in entries:
        if entry.startswith(".") or CORRUPT_MARK in entry:
            continue
        for suffix in _LOADER_SUFFIXES:
            if entry.endswith(suffix):
                names.add(entry[: -len(suffix)])
                break
    return sorted(names)


def set_aside_suffix() -> str:
    """The suffix a damaged file gets when it is set aside: ``.corrupt-<UTC time>``."""
    return CORRUPT_MARK + datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")


def incident_of(entry: str, name: str) -> bool:
    """Is the loaders-folder entry ``entry`` a set-aside damaged file of loader ``name``?"""
    if CORRUPT_MARK not in entry:
        return False
    return loader_names_in([entry.split(CORRUPT_MARK)[0]]) == [name]
