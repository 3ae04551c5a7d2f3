"""One live writer per loader file: a lock file naming its holder, with documented stale-lock recovery.

The lock ``<loader>.lock`` is created with "create only if absent" (``O_EXCL`` locally, a conditional PUT on
object storage) and holds ``{host, pid, pid_start, try_number, since, heartbeat_at, token}``. The writer
refreshes ``heartbeat_at`` while it saves. Another writer takes the lock over, with a warning, only when

* the holder ran on this host and its process is gone (dead pid, or the pid now belongs to another process);
* the holder was an earlier Airflow try of the same task on another host (Airflow starts try k+1 only after
  try k ended);
* the holder's heartbeat is older than ``stale_after`` seconds (``CheckpointSettings.lock_stale_after``:
  ``TK_CHECKPOINT_LOCK_STALE_SECONDS``, default 1800);
* or the caller passes ``force=True`` (``tk-checkpoint unlock`` does the same by hand).

Otherwise :class:`CheckpointLockedError` says who holds it and how to break it.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import socket
import time
from datetime import datetime
from typing import Any

from .errors import CheckpointLockedError, WriterDisplacedError
from .fileformat import timestamp
from .process import pid_alive, process_start
from .settings import DEFAULT_STALE_AFTER
from .store import Store

log = logging.getLogger(__name__)

HEARTBEAT_EVERY = 60.0


def _age(stamp: str | None) -> float | None:
    try:
        return time.time() - datetime.fromisoformat(str(stamp)).timestamp()
    except ValueError:
        return None


def read_holder(store: Store, key: str) -> dict[str, Any] | None:
    """The content of the lock at ``key``: None when there is no lock, {} when it is unreadable."""
    data = store.read(key)
    if data is None:
        return None
    try:
        holder = json.loads(data)
    except ValueError:
        return {}
    return holder if isinstance(holder, dict) else {}


def holder_alive(holder: dict[str, Any] | None, stale_after: float = DEFAULT_STALE_AFTER) -> bool | None:
    """Whether the writer holding a lock still runs: None when there is no lock. On this host its pid
    decides (and the pid's start time, against reuse); on another host a heartbeat newer than
    ``stale_after`` seconds counts as alive. An empty or unreadable lock has no live holder."""
    if holder is None:
        return None
    if not holder:
        return False
    pid = holder.get("pid")
    if holder.get("host") == socket.gethostname() and isinstance(pid, int) and not isinstance(pid, bool):
        start = holder.get("pid_start")
        return pid_alive(pid, start if isinstance(start, str) else None)
    age = _age(holder.get("heartbeat_at"))
    return age is not None and age <= stale_after


def describe_holder(holder: dict[str, Any]) -> str:
    if not holder:
        return "an unknown holder (the lock file is empty or unreadable)"
    text = f"host {holder.get('host')} pid {holder.get('pid')}"
    if holder.get("try_number") is not None:
        text += f" (try {holder['try_number']})"
    return text + f" since {holder.get('since')}, last heartbeat {holder.get('heartbeat_at')}"


class WriterLock:
    """The writer lock of one loader file. ``hint`` is the command that breaks it, for error messages."""

    def __init__(
        self,
        store: Store,
        key: str,
        *,
        label: str,
        hint: str,
        try_number: int | None = None,
        stale_after: float = DEFAULT_STALE_AFTER,
        force: bool = False,
    ) -> None:
        self.store = store
        self.key = key
        self.label = label
        self.hint = hint
        self.try_number = try_number
        self.stale_after = stale_after
        self.force = force
        self.held = False
        self.info: dict[str, Any] = {}
        self.taken_over: dict[str, Any] | None = None
        self.displaced: str | None = None  # why this writer lost its lock (it then writes nothing more)
        self._last_beat = 0.0

    def read_holder(self) -> dict[str, Any] | None:
        """The lock's content; None when there is no lock, {} when it is unreadable."""
        return read_holder(self.store, self.key)

    def _takeover_reason(self, holder: dict[str, Any]) -> str | None:
        if self.force:
            return "force=True"
        if not holder:
            return "the lock file is empty or unreadable (its writer died while creating it)"
        same_host = holder.get("host") == socket.gethostname()
        pid = holder.get("pid")
        if same_host and isinstance(pid, int) and pid != os.getpid():
            if not pid_alive(pid, holder.get("pid_start")):
                return f"its holder, pid {pid} on this host, is gone"
        held_try, my_try = holder.get("try_number"), self.try_number
        if not same_host and isinstance(held_try, int) and my_try is not None and held_try < my_try:
            return f"it was held by try {held_try} of this task, and this is try {my_try}"
        age = _age(holder.get("heartbeat_at"))
        if age is not None and age > self.stale_after:
            return f"its last heartbeat is {age:.0f} s old (more than {self.stale_after:.0f} s)"
        return None

    def acquire(self) -> None:
        folder = self.key.rsplit("/", 1)[0]
        for _ in range(5):
            now = timestamp()
            self.info = {
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "pid_start": process_start(os.getpid()),
                "try_number": self.try_number,
                "since": now,
                "heartbeat_at": now,
                "token": secrets.token_hex(8),
            }
            if self.store.create(self.key, json.dumps(self.info).encode()):
                self.held = True
                self._last_beat = time.monotonic()
                return
            holder = self.read_holder()
            if holder is None:
                continue  # released in between: try again
            reason = self._takeover_reason(holder)
            if reason is None:
                if holder.get("pid") == os.getpid() and holder.get("host") == socket.gethostname():
                    extra = " (this process: another LoaderCheckpoint for it is still open; close() it first)"
                else:
                    extra = ""
                raise CheckpointLockedError(
                    f"Loader checkpoint {self.label} is locked by {describe_holder(holder)}{extra}. Only one "
                    f"writer may own a loader file. If that writer is gone, break the lock with "
                    f"`{self.hint}` "
                    "or open the checkpoint with force=True.",
                    holder,
                )
            if not holder:
                time.sleep(0.2)  # a writer may be between creating the file and filling it
            with self.store.guard(folder):
                if self.read_holder() != holder:
                    continue  # it changed under us: look again
                log.warning(
                    "Taking over the lock of %s from %s: %s", self.label, describe_holder(holder), reason
                )
                self.taken_over = holder
                self.store.delete(self.key)
        raise CheckpointLockedError(f"Could not take the lock of {self.label}: it keeps changing hands.")

    def check(self, *, beat: bool = False) -> None:
        """Fail if this writer lost its lock (removed, or taken over by another writer): it is displaced and
        must write nothing more. Refresh the heartbeat when due (or when ``beat``)."""
        if self.displaced:
            raise WriterDisplacedError(self.displaced)
        if not self.held:
            return
        due = beat or time.monotonic() - self._last_beat >= HEARTBEAT_EVERY
        if not due and not self.store.is_local:
            return  # on object storage a read per save is too dear: check with the heartbeat
        holder = self.read_holder()
        if holder is None:
            self._displace(
                f"This writer of {self.label} was displaced: its lock was removed (`tk-checkpoint unlock` "
                "or `delete`, or the run's files were deleted). It stops and writes nothing more; what it "
                "marked since its last save is not recorded. Retry the task to continue from the last save.",
                holder,
            )
        if holder.get("token") != self.info["token"]:
            self._displace(
                f"This writer of {self.label} was displaced: its lock was taken over by "
                f"{describe_holder(holder)}. It stops and writes nothing more so that only one writer owns "
                "the file; what it marked since its last save is not recorded.",
                holder,
            )
        if due:
            self.info["heartbeat_at"] = timestamp()
            self.store.write(self.key, json.dumps(self.info).encode(), fsync=False)
            self._last_beat = time.monotonic()

    def _displace(self, message: str, holder: dict[str, Any] | None) -> None:
        self.held = False
        self.displaced = message
        log.error("%s", message)
        raise WriterDisplacedError(message, holder)

    def release(self) -> None:
        if not self.held:
            return
        self.held = False
        holder = self.read_holder()
        if holder and holder.get("token") == self.info["token"]:
            self.store.delete(self.key)
        elif holder is None:
            log.warning("The lock of %s was removed while this writer held it (it was displaced)", self.label)
        else:
            log.warning(
                "The lock of %s is no longer ours (%s); leaving it", self.label, describe_holder(holder)
            )


def refuse_if_alive(holder: dict[str, Any] | None, label: str, action: str, stale_after: float) -> None:
    """Raise CheckpointLockedError naming the holder when a live writer holds the lock ``action`` would
    break (``unlock``, ``delete``); ``--force`` skips this check."""
    if holder_alive(holder, stale_after):
        assert holder is not None
        raise CheckpointLockedError(
            f"Refusing to {action}: loader {label} is locked by {describe_holder(holder)}, and that writer "
            "is alive (same host: its pid runs; another host: its heartbeat is recent). Stop it first (or "
            "let it finish), or add --force to go ahead anyway: the writer then stops at its next save "
            "without recording what it marked since its last one.",
            holder,
        )


def break_lock(
    store: Store, key: str, *, label: str = "", force: bool = False, stale_after: float = DEFAULT_STALE_AFTER
) -> dict[str, Any] | None:
    """Remove a lock (``tk-checkpoint unlock``); returns what it held. A live holder is refused
    (:func:`refuse_if_alive`) unless ``force``."""
    holder = read_holder(store, key)
    if holder is not None:
        if not force:
            refuse_if_alive(holder, label or key, "unlock it", stale_after)
        store.delete(key)
    return holder
