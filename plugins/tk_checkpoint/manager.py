"""CheckpointManager: the runs under one base, and reading (never writing) their loader files.

A run is a folder named after the Airflow ``run_id`` with a run file and one set of files per loader (see
:mod:`tk_checkpoint.names`). Writing a loader's files is :class:`~tk_checkpoint.loader.LoaderCheckpoint`'s
job; the manager creates, lists, reports, cleans up and unlocks.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from . import fileformat as ff
from .errors import CheckpointError, CorruptCheckpointError, InvalidNameError, RunNotFoundError
from .lock import break_lock, holder_alive, read_holder, refuse_if_alive
from .names import (
    clip_error,
    loader_keys,
    loader_names_in,
    loaders_folder,
    redact,
    run_key,
    set_aside_suffix,
    validate_name,
)
from .reconciliation import read_reconciliation, write_reconciliation
from .settings import CheckpointSettings
from .state import LoaderState, read_loader_state
from .store import Store, open_store

log = logging.getLogger(__name__)


def check_count(value: Any, what: str, minimum: int = 0) -> int:
    """A count a user gives (``keep``, ``limit``): an int of at least ``minimum``. The one place that decides;
    the CLI's arguments use it too. Anything else raises ValueError saying what is allowed."""
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{what} must be a whole number of {minimum} or more, not {value!r}")
    return value


@dataclass
class CleanupPlan:
    """What a cleanup keeps and deletes (run ids, newest first)."""

    kept_newest: list[str] = field(default_factory=list)
    doomed: list[str] = field(default_factory=list)
    kept_running: list[str] = field(default_factory=list)


class CheckpointManager:
    """The runs under one base (a local path or an object-storage URL such as ``s3://conn_id@bucket/prefix``).

    ``base`` defaults to ``$TK_CHECKPOINT_BASE``, else ``./checkpoints`` (:func:`settings.resolve_base`).
    Keyword settings (``fsync``, ``gzip_threshold``, ``save_interval``, ...) override
    :class:`~tk_checkpoint.settings.CheckpointSettings` from the environment; ``None`` keeps a setting.
    """

    def __init__(self, base: Any = None, **settings: Any) -> None:
        self.settings = CheckpointSettings.from_env().with_overrides(
            base=None if base == "" else base, **settings
        )
        self.base = self.settings.base
        self.store: Store = open_store(self.base)
        self.current_run_id: str | None = None

    def __repr__(self) -> str:
        return f"CheckpointManager({self.store!r}, current_run_id={self.current_run_id!r})"

    @property
    def checkpoint_dir(self) -> str:
        """Where the checkpoints live (the original's attribute name)."""
        return self.store.url("")

    # runs --------------------------------------------------------------------------------------

    def _read_run(self, run_id: str) -> dict[str, Any]:
        validate_name(run_id)
        key = run_key(run_id)
        data = self.store.read(key)
        if data is None:
            raise RunNotFoundError(f"Run not found: {run_id} (under {self.checkpoint_dir})")
        where = self.store.url(key)
        return ff.read_run_document(ff.decode_document(data, where), where)

    def _write_run(self, doc: dict[str, Any]) -> None:
        doc["updated_at"] = ff.timestamp()
        self.store.write(run_key(doc["run_id"]), ff.encode_document(doc), fsync=self.settings.fsync)

    def start_new_run(
        self,
        run_id: str | None = None,
        dag_id: str | None = None,
        conf: Mapping[str, Any] | None = None,
        description: str | None = None,
        api_model: Mapping[str, Any] | None = None,
    ) -> str:
        """Create the run (or reopen it: idempotent for a retried task) and make it current. Returns its id.

        Without ``run_id`` a new ``run_YYYYmmdd_HHMMSS`` id is made. ``conf`` is stored with secret-looking
        keys redacted; do not put secrets in it anyway. ``api_model`` is the setup task's report of the
        API model the run loads (``include.loaders.model.ModelReport.to_dict()``: profile, service root,
        per entity what is missing, renamed, new); None keeps the one the run has.
        """
        if run_id is None:
            run_id = datetime.now().strftime("run_%Y%m%d_%H%M%S")
            candidate, n = run_id, 1
            while self.store.exists(run_key(candidate)):
                n += 1
                candidate = f"{run_id}_{n}"
            run_id = candidate
        validate_name(run_id)
        try:
            doc = self._read_run(run_id)
        except RunNotFoundError:
            doc = None
        except CorruptCheckpointError as exc:
            # The run file holds no progress (the loader files do): set it aside and write a new one.
            key = run_key(run_id)
            aside = key + set_aside_suffix()
            self.store.move(key, aside)
            log.warning("%s - set aside as %s; writing a new run file", exc, self.store.url(aside))
            doc = None
        if doc is None:
            now = ff.timestamp()
            doc = {
                "schema_version": ff.SCHEMA_VERSION,
                "kind": ff.RUN_KIND,
                "run_id": run_id,
                "dag_id": dag_id,
                "conf": redact(dict(conf or {})),
                "description": description,
                "state": "running",
                "created_at": now,
                "updated_at": now,
                "completed_at": None,
                "error": None,
            }
            if api_model is not None:
                doc["api_model"] = dict(api_model)
            self._write_run(doc)
            log.info("Started checkpoint run %s", run_id)
        else:
            changed = doc["state"] != "running"
            updates: dict[str, Any] = {"dag_id": dag_id, "description": description}
            if conf is not None:
                updates["conf"] = redact(dict(conf))
            if api_model is not None:
                updates["api_model"] = dict(api_model)
            for key, value in updates.items():
                if value is not None and doc.get(key) != value:
                    doc[key], changed = value, True
            if changed:
                doc.update(state="running", completed_at=None, error=None)
                self._write_run(doc)
            log.info("Reopened checkpoint run %s", run_id)
        self.current_run_id = run_id
        return run_id

    def resume_run(self, run_id: str) -> str:
        """Make an existing run current again and mark it running. Raises RunNotFoundError."""
        doc = self._read_run(run_id)
        if doc["state"] != "running":
            doc.update(state="running", completed_at=None, error=None)
            self._write_run(doc)
        self.current_run_id = run_id
        return run_id

    def _set_run_state(self, run_id: str | None, state: str, error: str | None = None) -> None:
        run_id = run_id or self.current_run_id
        if run_id is None:
            raise CheckpointError("No current run: call start_new_run() or resume_run() first")
        doc = self._read_run(run_id)
        doc.update(state=state, completed_at=ff.timestamp(), error=clip_error(error))
        self._write_run(doc)

    def complete_run(self, run_id: str | None = None) -> None:
        """Run state ``completed`` (the current run unless ``run_id``)."""
        self._set_run_state(run_id, "completed")

    def fail_run(self, run_id: str | None = None, error: str | None = None) -> None:
        """Run state ``failed`` with ``error`` (the current run unless ``run_id``)."""
        self._set_run_state(run_id, "failed", error)

    def list_runs(
        self, details: bool = False, *, incomplete: bool = False, limit: int | None = None
    ) -> list[dict[str, Any]]:
        """Runs newest first (by creation time). A damaged run file shows as state 'damaged' with its error.

        With ``details`` each run carries ``loaders``: {name: summary}, as :meth:`get_run`. ``incomplete``:
        only runs that are not completed; ``limit``: at most that many (``None``: all; see
        :func:`check_count`, a negative limit is refused).
        """
        if limit is not None:
            check_count(limit, "limit", minimum=1)
        runs = []
        for name in self.store.list(""):
            try:
                validate_name(name)
                runs.append(self.get_run(name) if details else self._read_run(name))
            except InvalidNameError:
                continue  # not a run folder
            except RunNotFoundError:
                if self.store.list(name):  # files without a run file: shown, so delete can remove them
                    runs.append(self._orphan(name))
            except CheckpointError as exc:
                runs.append({"run_id": name, "state": "damaged", "error": str(exc), "created_at": None})
        runs.sort(key=lambda r: (str(r.get("created_at") or ""), r["run_id"]), reverse=True)
        if incomplete:
            runs = [r for r in runs if r.get("state") != "completed"]
        return runs if limit is None else runs[:limit]

    def _orphan(self, name: str) -> dict[str, Any]:
        return {
            "run_id": name,
            "state": "damaged",
            "error": f"Run folder {self.store.url(name)} has files but no run file (a delete that did not "
            f"finish, or files put there by hand); `tk-checkpoint delete --run-id {name}` removes them.",
            "created_at": None,
        }

    def get_run(self, run_id: str, loaders: bool = True) -> dict[str, Any]:
        """The run file plus ``loaders``: {name: summary}; damaged loader files show ``state: damaged``.

        Summaries read every loader file in full; ``loaders=False`` returns the run file alone (cheap).
        Raises RunNotFoundError ("Run not found").
        """
        doc = dict(self._read_run(run_id))
        if not loaders:
            return doc
        doc["loaders"] = self._report_loaders(run_id, self.loader_names(run_id), LoaderState.summary)
        return doc

    def _report_loaders(
        self, run_id: str, names: Iterable[str], report: Callable[[LoaderState], dict[str, Any]]
    ) -> dict[str, Any]:
        """{name: report(state)} reading each loader file once; a damaged one as ``state: damaged``."""
        out: dict[str, Any] = {}
        for name in names:
            try:
                out[name] = report(self.read_loader(run_id, name))
            except CheckpointError as exc:
                out[name] = {"loader": name, "state": "damaged", "error": str(exc)}
        return out

    def describe_run(
        self, run_id: str, failures: int = 10, loaders: Iterable[str] | None = None
    ) -> dict[str, Any]:
        """The run file plus, per loader (all, or ``loaders``), its summary, its tries and its last
        ``failures`` failed items with their errors: what ``tk-checkpoint show`` and the web page report.
        Damaged loader files (and a damaged run file) show ``state: damaged``. Raises RunNotFoundError
        ("Run not found")."""
        check_count(failures, "failures")
        try:
            run = self.get_run(run_id, loaders=False)
        except RunNotFoundError:
            if not self.has_files(run_id):
                raise
            run = self._orphan(run_id)  # loader files without a run file: shown, as list shows them
        except CheckpointError as exc:  # a damaged run file: reported with its loaders, as list does
            run = {"run_id": run_id, "state": "damaged", "error": str(exc), "created_at": None}
        names = self.loader_names(run_id) if loaders is None else list(loaders)

        def detail(state: LoaderState) -> dict[str, Any]:
            return {**state.summary(), "tries": state.tries, "last_failures": state.last_failures(failures)}

        return {**run, "loaders": self._report_loaders(run_id, names, detail), **self._reconciliation(run_id)}

    def save_reconciliation(self, doc: Mapping[str, Any]) -> None:
        """Keep the ``reconcile`` task's result with its run (``doc["run_id"]``), replacing an earlier one."""
        write_reconciliation(self.store, doc, fsync=self.settings.fsync)

    def _reconciliation(self, run_id: str) -> dict[str, Any]:
        """``{"reconciliation": doc}`` when the run has one (damaged: ``state: damaged``), else {}."""
        try:
            doc = read_reconciliation(self.store, run_id)
        except CheckpointError as exc:
            return {"reconciliation": {"state": "damaged", "error": str(exc)}}
        return {} if doc is None else {"reconciliation": doc}

    def loader_names(self, run_id: str) -> list[str]:
        """The loaders that have files in run ``run_id``, sorted."""
        validate_name(run_id)
        return loader_names_in(self.store.list(loaders_folder(run_id)))

    def read_loader(self, run_id: str, name: str) -> LoaderState:
        """Read a loader file without taking its lock (for inspection). Never modifies anything."""
        validate_name(run_id)
        validate_name(name, "loader name")
        keys = loader_keys(run_id, name)
        files = [keys["plain"], keys["gzip"], keys["journal"] + ".jsonl"]
        for attempt in range(3):
            before = self.store.versions(files)
            try:
                state = read_loader_state(self.store, run_id, name)[0]
                break
            except CorruptCheckpointError:
                # A writer may have been compacting while we read: read again, unless the files are
                # known not to have changed (then the damage is real, and waiting cannot help).
                if attempt == 2 or (before is not None and self.store.versions(files) == before):
                    raise
                time.sleep(0.05)
        holder = read_holder(self.store, loader_keys(run_id, name)["lock"])
        alive = holder_alive(holder, self._stale_after)
        if holder is not None:
            holder = {**holder, "alive": alive}
            if not alive:
                # Its writer is gone (a SIGKILL, a lost worker): report its try as interrupted, as the next
                # try will record it, instead of 'running' locked by a dead pid. Nothing is written here.
                for entry in state.tries:
                    if entry.get("outcome") is None:
                        entry["outcome"] = "interrupted"
        state.locked_by = holder
        return state

    def get_latest_incomplete_run(self) -> str | None:
        """The newest run that is not completed (running or failed), or None."""
        for run in self.list_runs():
            if run.get("state") in ("running", "failed"):
                return run["run_id"]
        return None

    def delete_run(self, run_id: str, force: bool = False) -> None:
        """Delete a run and all its loader files. Raises RunNotFoundError, and CheckpointLockedError when a
        live writer holds one of its loaders (unless ``force``: that writer then stops at its next save)."""
        if not self.has_files(run_id):
            raise RunNotFoundError(f"Run not found: {run_id} (under {self.checkpoint_dir})")
        if not force:
            for name in self.loader_names(run_id):
                holder = read_holder(self.store, loader_keys(run_id, name)["lock"])
                refuse_if_alive(holder, f"{run_id}/{name}", f"delete run {run_id}", self._stale_after)
        # Mark, then remove, the run file last: a delete that fails half-way leaves a run that list shows
        # as 'deleting' and that delete and cleanup finish, never a folder nothing can see.
        self._mark_deleting(run_id)
        for entry in self.store.list(run_id):
            if entry != run_key(run_id).rsplit("/", 1)[-1]:
                self.store.delete_tree(f"{run_id}/{entry}")
        self.store.delete_tree(run_id)
        if self.current_run_id == run_id:
            self.current_run_id = None
        log.info("Deleted checkpoint run %s", run_id)

    def plan_cleanup(self, keep: int = 5, force: bool = False) -> CleanupPlan:
        """What :meth:`cleanup_old_runs` would do: the ``keep`` newest runs stay, the older ones go unless
        they are running (or damaged) and ``force`` is not given. ``keep`` below 0 is refused."""
        check_count(keep, "keep")
        runs = self.list_runs()
        unfinished = [r["run_id"] for r in runs if r.get("state") == "deleting"]  # always finished
        runs = [r for r in runs if r.get("state") != "deleting"]
        plan = CleanupPlan(kept_newest=[r["run_id"] for r in runs[:keep]], doomed=unfinished)
        for run in runs[keep:]:
            spare = run.get("state") in ("running", "damaged") and not force
            (plan.kept_running if spare else plan.doomed).append(run["run_id"])
        return plan

    def has_files(self, run_id: str) -> bool:
        """Whether anything is stored under run ``run_id`` (a run file or not)."""
        validate_name(run_id)
        return self.store.exists(run_key(run_id)) or bool(self.store.list(run_id))

    def _mark_deleting(self, run_id: str) -> None:
        try:
            doc = self._read_run(run_id)
        except CheckpointError:  # damaged or missing: a minimal run file carries the mark
            now = ff.timestamp()
            doc = {"schema_version": ff.SCHEMA_VERSION, "kind": ff.RUN_KIND, "run_id": run_id}
            doc.update(dag_id=None, conf={}, description=None, created_at=now, completed_at=None)
        doc.update(state="deleting", error=None)
        self._write_run(doc)

    def cleanup_old_runs(self, keep: int = 5, force: bool = False) -> list[str]:
        """Delete all but the ``keep`` newest runs; running (or damaged) runs only with ``force``.

        Returns the deleted run ids.
        """
        plan = self.plan_cleanup(keep, force)
        for run_id in plan.kept_running:
            log.info("Keeping run %s: it is running or damaged (use force to delete it)", run_id)
        for run_id in plan.doomed:
            self.delete_run(run_id, force=force)
        return plan.doomed

    def unlock(self, run_id: str, name: str, force: bool = False) -> dict[str, Any] | None:
        """Break the writer lock of a loader whose writer is gone. Returns the holder it had, or None.

        A live holder (same host: its pid runs; another host: a recent heartbeat) is refused with
        CheckpointLockedError naming it, unless ``force``: that writer then stops at its next save."""
        validate_name(run_id)
        validate_name(name, "loader name")
        key = loader_keys(run_id, name)["lock"]
        return break_lock(
            self.store, key, label=f"{run_id}/{name}", force=force, stale_after=self._stale_after
        )

    @property
    def _stale_after(self) -> float:
        return float(self.settings.lock_stale_after)
