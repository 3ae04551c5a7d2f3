"""The local stack without Docker: ``airflow standalone``, the offline TK API, a trigger, a summary.

The TK API is found as the DAG's ``setup`` finds it (``include.loaders.discovery``: v5, then v4/2.0, by
their ``$metadata``, unless ``TK_API_PROFILE`` pins one); when no version answers, the offline TK API
(real samples) is started instead. The summary names the version the run used.

Used by ``make run`` (``python scripts/local_stack.py run``) and by the end-to-end tests. Processes are
started in their own session and stopped by their process id: ``airflow standalone`` only shuts down
cleanly on SIGINT (``shared/notes/airflow-3.3.md``).

    python scripts/local_stack.py run [--start-date D] [--keep-running/--stop]
    python scripts/local_stack.py stop
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests

from include.loaders.api import redact_url
from include.loaders.api_profiles import DISCOVERY_ORDER, PROFILES
from include.loaders.discovery import ApiVersionNotFound, Discovery, discover, probe_version
from include.loaders.entities import ENTITIES
from include.loaders.settings import ApiSettings

ROOT = Path(__file__).resolve().parent.parent
STATE = Path(os.environ.get("TK_STATE_DIR", ROOT / ".local"))
PY = sys.executable
SYNC_POOL = "tk_sync"
"""The Airflow pool `make run` creates for tk_sync (TK_SYNC_IN_FLIGHT slots, default 4)."""


@dataclass
class Airflow:
    """An ``airflow standalone`` in ``home`` on ``port`` with a known admin password."""

    home: Path
    port: int = 8080
    host: str = "127.0.0.1"
    """The api-server's listening address: loopback unless asked otherwise (TK_AIRFLOW_HOST), because the
    demo login admin/admin is documented in the README."""
    password: str = "admin"  # noqa: S105 - local demo login, documented in the README
    parallelism: int = 4
    extra_env: dict[str, str] | None = None
    _proc: subprocess.Popen | None = field(default=None, init=False, repr=False)
    _token: str | None = field(default=None, init=False, repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pidfile(self) -> Path:
        return self.home / "standalone.pid"

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            {
                "AIRFLOW_HOME": str(self.home),
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
                "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
                "AIRFLOW__CORE__PARALLELISM": str(self.parallelism),
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(self.home / "passwords.json"),
                "AIRFLOW__API__HOST": self.host,
                "AIRFLOW__API__PORT": str(self.port),
                "AIRFLOW__API__BASE_URL": self.url,
                "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.url}/execution/",
                "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
                "AIRFLOW__SCHEDULER__MIN_FILE_PROCESS_INTERVAL": "5",
                "PYTHONWARNINGS": "ignore",
                # standalone starts its components as `airflow …` found on PATH
                "PATH": os.pathsep.join([str(Path(PY).parent), os.environ.get("PATH", "")]),
                "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "plugins")]),
            }
        )
        env.update(self.extra_env or {})
        return env

    def airflow(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        """Run an ``airflow`` CLI command against this home."""
        return subprocess.run(
            [str(Path(PY).parent / "airflow"), *args],
            env=self.env(),
            capture_output=True,
            text=True,
            check=check,
        )

    def running(self) -> bool:
        if self._proc is not None:  # our own child: poll() also reaps it (a zombie still answers kill 0)
            return self._proc.poll() is None
        try:
            pid = int(self.pidfile.read_text())
            os.kill(pid, 0)
        except (OSError, ValueError):
            return False
        return True

    def start(self, timeout: float = 180.0) -> None:
        if self.running():
            print(f"airflow standalone already running at {self.url}")
            return
        self.home.mkdir(parents=True, exist_ok=True)
        (self.home / "passwords.json").write_text(json.dumps({"admin": self.password}))
        with open(self.home / "standalone.log", "ab") as log:  # the child keeps its own copy
            proc = subprocess.Popen(
                [str(Path(PY).parent / "airflow"), "standalone"],
                env=self.env(),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # its own process group: SIGINT reaches it, not us
                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
            )
        self.pidfile.write_text(str(proc.pid))
        self._proc = proc
        try:
            self._wait_ready(proc, timeout)
        except BaseException:  # not ready, or interrupted while waiting: leave nothing behind
            self.stop()
            raise

    def _wait_ready(self, proc: subprocess.Popen, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"airflow standalone exited early; see {self.home / 'standalone.log'}")
            try:
                if requests.get(f"{self.url}/api/v2/monitor/health", timeout=2).status_code == 200:
                    self.token()
                    print(f"airflow standalone ready at {self.url} (pid {proc.pid})")
                    return
            except requests.RequestException:
                pass
            time.sleep(1)
        raise RuntimeError(f"airflow standalone not ready in {timeout:.0f} s; see {self.home}/standalone.log")

    def stop(self, timeout: float = 60.0) -> None:
        if not self.running():
            self.pidfile.unlink(missing_ok=True)
            return
        pid = int(self.pidfile.read_text())
        started = time.monotonic()
        os.kill(pid, signal.SIGINT)  # the parent only: it shuts its components down in order
        if not self._wait_exit(pid, timeout):
            # standalone joins each component's output pipe; a worker that keeps the pipe open
            # holds it up (seen once on a loaded CI machine). Say so, then end the group.
            print(
                f"airflow standalone did not stop {timeout:.0f} s after SIGINT; killing its process group "
                f"(see {self.home / 'standalone.log'})",
                file=sys.stderr,
            )
        # LocalExecutor workers can outlive the parent (they ignore SIGTERM): end whatever is left of
        # the process group that start() created for this standalone, and only that group.
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        if not self._wait_exit(pid, 30.0):  # SIGKILL cannot be ignored; reaping it can take a moment
            raise RuntimeError(f"airflow standalone (pid {pid}) still running after SIGKILL")
        self.pidfile.unlink(missing_ok=True)
        self._token = None  # a restarted api-server may not accept it
        print(f"airflow standalone stopped in {time.monotonic() - started:.1f} s")

    def _wait_exit(self, pid: int, timeout: float) -> bool:
        """Wait until the standalone parent has exited (and, if it is our child, been reaped)."""
        if self._proc is not None and self._proc.pid == pid:
            try:
                self._proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                return False
            return True
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.running():
                return True
            time.sleep(0.5)
        return not self.running()

    def token(self) -> str:
        """A bearer token for the admin user, fetched once (it is valid for 24 h)."""
        if self._token is None:
            resp = requests.post(
                f"{self.url}/auth/token", json={"username": "admin", "password": self.password}, timeout=10
            )
            resp.raise_for_status()
            self._token = resp.json()["access_token"]
        return self._token

    def api(self, method: str, path: str, **kwargs) -> requests.Response:
        headers = {"Authorization": f"Bearer {self.token()}"}
        return requests.request(method, f"{self.url}/api/v2{path}", headers=headers, timeout=30, **kwargs)

    def wait_for_dag(self, dag_id: str, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.api("GET", f"/dags/{dag_id}").status_code == 200:
                return
            time.sleep(2)
        raise RuntimeError(
            f"DAG {dag_id} did not appear in {timeout:.0f} s; check `airflow dags list-import-errors`"
        )

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float = 1800.0) -> str:
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            resp = self.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}")
            if resp.status_code == 200:
                state = resp.json()["state"]
                if state != last:
                    print(f"  run {run_id}: {state}")
                    last = state
                if state in ("success", "failed"):
                    return state
            time.sleep(3)
        raise TimeoutError(f"run {run_id} not finished in {timeout:.0f} s")


def api_reachable(service_root: str) -> bool:
    """Whether the OData service at ``service_root`` answers its ``$metadata``."""
    try:
        resp = requests.get(f"{service_root}/$metadata", timeout=10)
    except requests.RequestException:
        return False
    return resp.status_code == 200


def start_replay(port: int) -> subprocess.Popen:
    with open(STATE / "tk_replay.log", "ab") as log:  # the child keeps its own copy
        proc = subprocess.Popen(
            [PY, "-m", "include.tk_replay", "--port", str(port)],
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    (STATE / "tk_replay.pid").write_text(str(proc.pid))
    root = f"http://127.0.0.1:{port}{PROFILES[DISCOVERY_ORDER[-1]].path}"  # it serves every version
    for _ in range(100):
        if api_reachable(root):
            return proc
        if proc.poll() is not None:
            break
        time.sleep(0.2)
    raise RuntimeError(f"the offline TK API did not start; see {STATE / 'tk_replay.log'}")


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie of ours is reaped, and so no longer counts)."""
    try:
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    except ChildProcessError:  # not our child: ask the kernel
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stop_pidfile(path: Path, sig: int = signal.SIGTERM, timeout: float = 15.0) -> bool:
    """Stop the process of a pid file and wait until it has gone (SIGKILL after ``timeout``).

    True when a process was stopped. The pid file goes only once the process has: a ``make stop`` that
    returns leaves nothing running (the offline TK API exits within a few seconds of SIGTERM)."""
    try:
        pid = int(path.read_text())
    except (OSError, ValueError):
        path.unlink(missing_ok=True)
        return False
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        path.unlink(missing_ok=True)
        return False
    deadline = time.monotonic() + timeout
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if _alive(pid):
        print(
            f"pid {pid} ({path.name}) still running {timeout:.0f} s after SIGTERM; killing it",
            file=sys.stderr,
        )
        os.kill(pid, signal.SIGKILL)
        while _alive(pid):
            time.sleep(0.1)
    path.unlink(missing_ok=True)
    return True


def earliest_change(service_root: str) -> str:
    """The earliest ``ApiGewijzigdOp`` date among the entity sets of the table (the demo's start_date)."""
    dates = []
    for entity in ENTITIES.values():
        url = f"{service_root}/{entity.entity_set}"
        params = {"$select": "Id,ApiGewijzigdOp", "$orderby": "ApiGewijzigdOp", "$top": "1"}
        rows = requests.get(url, params=params, timeout=60).json().get("value", [])
        dates += [r["ApiGewijzigdOp"][:10] for r in rows if r.get("ApiGewijzigdOp")]
    return min(dates)


def find_api(settings: ApiSettings) -> Discovery | None:
    """The TK API version ``settings`` reach (as ``setup`` finds it), or None when none answers; a pinned
    version (``TK_API_PROFILE=v5``, a version path in the base URL) is asked for its ``$metadata`` too."""
    pinned = settings.pinned_profile
    if pinned is not None:
        attempt = probe_version(settings, pinned)
        if attempt.answered:
            return Discovery(settings.with_overrides(profile=pinned), (attempt,), pinned=True)
        attempts: tuple = (attempt,)
    else:
        try:
            return discover(settings)
        except ApiVersionNotFound as e:
            attempts = e.attempts
    for attempt in attempts:
        print(f"  {attempt.profile}: {attempt.url}: {attempt.reason}")
    return None


def run_api_version(airflow: Airflow, dag_id: str, run_id: str) -> str | None:
    """The API version the run's ``setup`` task used (its return value's ``api_profile``), if it ran."""
    try:
        resp = airflow.api(
            "GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/setup/xcomEntries/return_value"
        )
        value = resp.json().get("value") if resp.status_code == 200 else None
        if isinstance(value, str):
            value = json.loads(value)
        return value.get("api_profile") if isinstance(value, dict) else None
    except (requests.RequestException, ValueError):
        return None


def neo4j_summary() -> dict[str, int]:
    from neo4j import GraphDatabase

    uri = (
        f"bolt://{os.environ.get('NEO4J_BOLT_HOST', '127.0.0.1')}:{os.environ.get('NEO4J_BOLT_PORT', '7687')}"
    )
    auth = ("neo4j", os.environ.get("NEO4J_PASSWORD", "tk-local-password"))
    with GraphDatabase.driver(uri, auth=auth) as driver:
        counts = {}
        for label in ENTITIES:
            records, _, _ = driver.execute_query(f"MATCH (n:`{label}`) RETURN count(n) AS c")
            counts[label] = records[0]["c"]
        records, _, _ = driver.execute_query("MATCH ()-[r]->() RETURN type(r) AS t, count(r) AS c ORDER BY t")
        counts.update({f"-[:{r['t']}]->": r["c"] for r in records})
    return counts


def run(args: argparse.Namespace) -> int:
    STATE.mkdir(parents=True, exist_ok=True)
    settings = ApiSettings.from_env()  # the loaders' own TK_API_BASE_URL / TK_API_PROFILE and defaults
    base, profile = settings.base_url, settings.profile
    start_date = args.start_date
    found = find_api(settings)
    if found is not None:
        print(f"TK API: {found.describe()}")
        start_date = start_date or time.strftime("%Y-%m-%d", time.gmtime(time.time() - 86400))
        offline = False
    else:
        port = int(os.environ.get("TK_REPLAY_PORT", "8765"))
        print(
            f"TK API {redact_url(base)}: no version answered; "
            f"starting the offline TK API (real samples) on port {port}"
        )
        start_replay(port)
        base = f"http://127.0.0.1:{port}"
        found = discover(settings.with_overrides(base_url=base))
        print(f"Offline TK API: {found.describe()}")
        start_date = start_date or earliest_change(found.settings.service_root)
        offline = True
    airflow = Airflow(
        STATE / "airflow",
        port=int(os.environ.get("TK_AIRFLOW_PORT", "8080")),
        host=os.environ.get("TK_AIRFLOW_HOST") or "127.0.0.1",
        extra_env={"TK_API_BASE_URL": base, "TK_API_PROFILE": profile, "TK_SYNC_POOL": SYNC_POOL},
    )
    airflow.airflow("db", "migrate")
    # tk_sync's SyncFeed requests in flight: an Airflow pool (dags/tk_sync.py runs its tasks in it)
    in_flight = os.environ.get("TK_SYNC_IN_FLIGHT", "4")
    airflow.airflow("pools", "set", SYNC_POOL, in_flight, "SyncFeed requests in flight (tk_sync)")
    airflow.start()
    airflow.wait_for_dag("tk_ingest")
    airflow.api("PATCH", "/dags/tk_ingest", json={"is_paused": False}).raise_for_status()
    conf = {"start_date": start_date, "window_days": args.window_days}
    run_id = f"manual__demo_{time.strftime('%Y%m%dT%H%M%S')}"
    print(f"airflow dags trigger tk_ingest --conf '{json.dumps(conf)}' -r {run_id}")
    airflow.airflow("dags", "trigger", "tk_ingest", "--conf", json.dumps(conf), "-r", run_id)
    state = airflow.wait_for_run("tk_ingest", run_id, timeout=args.timeout)
    used = run_api_version(airflow, "tk_ingest", run_id) or found.profile
    where = "the offline TK API (real samples)" if offline else redact_url(base)
    print(f"\nRun {run_id}: {state}\nTK API version used: {used}, on {where}\n\nIn Neo4j:")
    for key, count in neo4j_summary().items():
        print(f"  {key:<28} {count:>8}")
    print("\nCheckpoints (tk-checkpoint list):")
    subprocess.run([str(Path(PY).parent / "tk-checkpoint"), "list"], check=False)
    if args.stop:  # this Airflow object started standalone: its stop() also reaps the child
        try:
            airflow.stop()
        finally:
            stop_pidfile(STATE / "tk_replay.pid")
    else:
        print(f"\nAirflow UI: {airflow.url} (admin / {airflow.password}).")
        print(f"Checkpoints: Browse -> Checkpoints in the UI ({airflow.url}/tk-checkpoints/).")
        print("Stop everything with `make stop`.")
    return 0 if state == "success" else 1


def stop(_args: argparse.Namespace | None = None) -> int:
    try:
        Airflow(STATE / "airflow").stop()
    finally:  # an Airflow that would not stop must not keep the offline TK API running too
        stop_pidfile(STATE / "tk_replay.pid")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p_run = sub.add_parser("run", help="start the stack, trigger tk_ingest, wait, summarise")
    p_run.add_argument(
        "--start-date", help="conf start_date (default: yesterday, or the offline data's first day)"
    )
    p_run.add_argument("--window-days", type=int, default=3660, help="conf window_days (default 3660)")
    p_run.add_argument("--timeout", type=float, default=1800.0, help="seconds to wait for the run")
    p_run.add_argument("--stop", action="store_true", help="stop Airflow and the offline API afterwards")
    sub.add_parser("stop", help="stop airflow standalone and the offline TK API")
    args = parser.parse_args(argv)
    return run(args) if args.command == "run" else stop(args)


if __name__ == "__main__":
    sys.exit(main())
