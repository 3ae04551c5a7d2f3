"""Settings of the checkpoint engine, read from the environment with documented defaults.

| variable | default | meaning |
|---|---|---|
| ``TK_CHECKPOINT_BASE`` | ``checkpoints`` | base folder or URL (``s3://conn_id@bucket/prefix``); relative |
| | | paths are relative to the working directory |
| ``TK_CHECKPOINT_INTERVAL`` | ``25`` | save automatically after this many new marks, processed and failed |
| | | counted together (0: only explicit saves) |
| ``TK_CHECKPOINT_FSYNC`` | ``1`` | ``fdatasync`` each journal append, ``fsync`` each snapshot (0: off) |
| ``TK_CHECKPOINT_GZIP_THRESHOLD`` | ``1048576`` | snapshots larger than this many bytes are gzip; -1: never |
| ``TK_CHECKPOINT_LOCK_STALE_SECONDS`` | ``1800`` | a lock without heartbeat this long may be taken over |

The other fields (``gzip_level``, ``compact_min_bytes``, ``compact_ratio``, ``max_segments``) are keyword
arguments of ``CheckpointManager`` only. :func:`resolve_base` is the one place where the default base is
decided; callers pass ``None`` for "the configured base".
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

DEFAULT_BASE = "checkpoints"
DEFAULT_STALE_AFTER = 1800.0
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def base_from_env(env: Mapping[str, str] | None = None) -> str | None:
    """``TK_CHECKPOINT_BASE`` when it is set and not empty, else None (for callers to which "no base"
    means "no checkpoints", such as ``python -m include.loaders``)."""
    env = os.environ if env is None else env
    return (env.get("TK_CHECKPOINT_BASE") or "").strip() or None


def resolve_base(base: Any = None, env: Mapping[str, str] | None = None) -> Any:
    """The checkpoint base: ``base`` when given, else ``TK_CHECKPOINT_BASE``, else ``./checkpoints``."""
    if base not in (None, ""):
        return base
    return base_from_env(env) or DEFAULT_BASE


def _flag(raw: str) -> bool:
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError(raw)


@dataclass(frozen=True)
class CheckpointSettings:
    """Where checkpoints live and how the engine writes them.

    Attributes:
        base: base folder (a path), ``file://`` URL, object-storage URL or ``ObjectStoragePath`` (see
            :func:`resolve_base`).
        fsync: make every save durable against a machine crash (``fdatasync``/``fsync``), not only
            against a process crash.
        gzip_threshold: snapshots larger than this many bytes are written gzip; -1: never.
        gzip_level: zlib level of gzip snapshots (1: fast).
        save_interval: automatic save after this many new marks (processed and failed together); 0: only
            ``save_progress``/``complete``/``fail``/``close`` save.
        compact_min_bytes, compact_ratio: fold the journal into the snapshot when it is larger than
            ``max(compact_min_bytes, compact_ratio * snapshot size)``.
        max_segments: on object storage, also fold it when it has this many segment objects.
        lock_stale_after: seconds without heartbeat after which another writer may take a lock over.
    """

    base: Any = DEFAULT_BASE
    fsync: bool = True
    gzip_threshold: int = 1 << 20
    gzip_level: int = 1
    save_interval: int = 25
    compact_min_bytes: int = 4 << 20
    compact_ratio: float = 0.5
    max_segments: int = 500
    lock_stale_after: float = DEFAULT_STALE_AFTER

    def __post_init__(self) -> None:
        checks = [
            ("gzip_threshold", self.gzip_threshold >= -1, ">= -1"),
            ("gzip_level", 0 <= self.gzip_level <= 9, "between 0 and 9"),
            ("save_interval", self.save_interval >= 0, ">= 0"),
            ("compact_min_bytes", self.compact_min_bytes >= 0, ">= 0"),
            ("compact_ratio", self.compact_ratio > 0, "> 0"),
            ("max_segments", self.max_segments >= 1, ">= 1"),
            ("lock_stale_after", self.lock_stale_after > 0, "> 0"),
        ]
        for name, ok, rule in checks:
            if not ok:
                raise ValueError(f"Checkpoint setting {name} must be {rule}, got {getattr(self, name)!r}.")

    def with_overrides(self, **changes: Any) -> CheckpointSettings:
        """A copy with the given fields changed; ``None`` values leave a field as it is (so keyword
        arguments passed through as None mean "the configured value"). Unknown names raise TypeError."""
        known = {f.name for f in fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise TypeError(f"Unknown checkpoint settings {unknown}; known: {sorted(known)}")
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> CheckpointSettings:
        """Settings from ``TK_CHECKPOINT_*`` environment variables (or ``env``), defaults for the rest.

        Raises ValueError naming the variable when a value cannot be parsed.
        """
        env = os.environ if env is None else env
        kwargs: dict[str, Any] = {"base": resolve_base(None, env)}
        specs: list[tuple[str, str, Any]] = [
            ("TK_CHECKPOINT_INTERVAL", "save_interval", int),
            ("TK_CHECKPOINT_FSYNC", "fsync", _flag),
            ("TK_CHECKPOINT_GZIP_THRESHOLD", "gzip_threshold", int),
            ("TK_CHECKPOINT_LOCK_STALE_SECONDS", "lock_stale_after", float),
        ]
        for var, attr, parse in specs:
            raw = env.get(var)
            if raw is None or raw.strip() == "":
                continue
            try:
                kwargs[attr] = parse(raw.strip())
            except ValueError:
                kind = "flag (1/0, true/false, yes/no, on/off)" if parse is _flag else parse.__name__
                raise ValueError(
                    f"Environment variable {var}={raw!r} is not a valid {kind}; "
                    f"fix or unset it (default: {getattr(cls, attr)!r})."
                ) from None
        return cls(**kwargs)


Settings = CheckpointSettings  # the name of earlier releases
