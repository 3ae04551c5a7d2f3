"""A repeat of issue 12's adversarial pass on the load side: bad confs, credentials in the URL, loads under
injected API faults, a Neo4j outage mid-load and SIGKILLed loaders, against the real Neo4j of
``scripts/neo4j.sh`` and the offline TK API over HTTP.

    source scripts/env.sh && .venv/bin/python bench/adversarial_loader.py [--seed N] [--kills N]
    (make adversarial-loader)

Sections:

* **confs**: the ``setup`` task's checks (``pipeline.prepare_run`` with the DAG's params, on the real
  Neo4j and the offline API): typos of every conf key, wrong types for every param, extreme, malformed,
  reversed and equal dates, and valid confs as controls; the command line's arguments; one bad conf
  through a real ``airflow dags test`` (setup must fail at its first try);
* **credentials**: ``TK_API_BASE_URL=http://user:pw@host`` against a server that demands basic auth on
  every request, under faults that make the client log retries: the command line's whole output and the
  setup task's log lines are grepped for the user and the password;
* **faults**: loads of every entity under random API faults (5xx, 429 with ``Retry-After``, hanging
  requests beyond the read timeout, truncated bodies, connection resets) and rows served without ``Id``;
  then the rows are fixed and the same run is loaded again (its failures on record must clear);
* **neo4j outage**: the command line loads while this script stops the local Neo4j by its pid
  (``scripts/neo4j.sh stop``), then starts it and reruns the same run id;
* **sigkill**: the command line is SIGKILLed at random moments, then rerun with the same run id.

What counts:

* inputs tried: every conf, argument set and load run;
* faults injected: every fault the server drew (its own counters), every row served without Id, every
  Neo4j outage and every SIGKILL;
* items lost: after the last run of a section, every live row of the dataset that is not a loaded node
  in Neo4j, every expected relationship that is missing, every id the checkpoint calls processed that is
  not in Neo4j, and every node or relationship that should not be there (tombstones, extra edges);
* unclear errors: a traceback, an exception of an unexpected type, a refused input whose message does not
  name the problem, a bad input that was accepted, a valid input that was refused, a secret in a log line.

Exit status 1 when anything was lost or unclear.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import os
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

ROOT = Path(__file__).resolve().parent.parent
for _p in (ROOT, ROOT / "plugins"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

from adversarial_report import print_report  # noqa: E402  (bench/, the script's own folder)

from include.loaders.entities import ENTITIES  # noqa: E402
from include.tk_replay.dataset import Dataset  # noqa: E402
from include.tk_replay.faults import FaultConfig  # noqa: E402
from include.tk_replay.server import ReplayServer  # noqa: E402

PY = sys.executable
AIRFLOW = str(Path(PY).parent / "airflow")
NOW = datetime(2026, 11, 30, 12, tzinfo=UTC)
USER, PASSWORD = "tk-adversary", "pw:with@odd/chars?"
QUIET = ("include", "tk_checkpoint", "airflow.task.hooks")


@dataclass
class Tally:
    """The figures of one section."""

    inputs: int = 0
    faults: int = 0
    lost: int = 0
    unclear: list[str] = field(default_factory=list)

    def bad(self, what: str) -> None:
        self.unclear.append(what)
        print(f"    UNCLEAR: {what}", flush=True)


# -- helpers -------------------------------------------------------------------------------------------------


def neo4j_driver() -> Any:
    from neo4j import GraphDatabase

    uri = (
        f"bolt://{os.environ.get('NEO4J_BOLT_HOST', '127.0.0.1')}:{os.environ.get('NEO4J_BOLT_PORT', '7687')}"
    )
    return GraphDatabase.driver(uri, auth=("neo4j", os.environ.get("NEO4J_PASSWORD", "tk-local-password")))


def wipe(driver: Any) -> None:
    with driver.session() as session:
        session.run("MATCH (n) CALL (n) { DETACH DELETE n } IN TRANSACTIONS OF 10000 ROWS").consume()


def graph_differences(driver: Any, ds: Dataset, base: str | None = None, run_id: str | None = None) -> int:
    """Items lost or wrong: live rows not loaded, loaded nodes that should not be, missing or extra
    relationships, and ids the checkpoint run calls processed that are not in Neo4j. Prints each kind."""
    from tests.loader_fixtures import expected_edges

    problems = 0
    loaded_all: set[str] = set()
    for name, entity in ENTITIES.items():
        if not ds.rows.get(name):
            continue
        recs = driver.execute_query(
            f"MATCH (n:`{entity.label}`) WHERE n.apiGewijzigdOp IS NOT NULL RETURN n.id AS id"
        ).records
        loaded = {r["id"] for r in recs}
        loaded_all |= loaded
        live = set(ds.live_ids(name))
        missing, extra = live - loaded, loaded - live
        if missing or extra:
            print(f"    {name}: {len(missing)} live rows missing, {len(extra)} nodes too many", flush=True)
        problems += len(missing) + len(extra)
    recs = driver.execute_query("MATCH (a)-[r]->(b) RETURN type(r) AS t, a.id AS a, b.id AS b").records
    edges = [(r["t"], r["a"], r["b"]) for r in recs]
    want = expected_edges(ds)
    missing_e, extra_e = want - set(edges), set(edges) - want
    duplicates = len(edges) - len(set(edges))
    if missing_e or extra_e or duplicates:
        print(
            f"    edges: {len(missing_e)} missing, {len(extra_e)} extra, {duplicates} duplicated", flush=True
        )
    problems += len(missing_e) + len(extra_e) + duplicates
    if base is not None and run_id is not None:
        from tk_checkpoint import CheckpointManager

        manager = CheckpointManager(base)
        tombstones = {rid for rows in ds.rows.values() for rid, r in rows.items() if r.get("Verwijderd")}
        for loader in manager.get_run(run_id)["loaders"]:
            state = manager.read_loader(run_id, loader)
            gone = [i for i in state.processed if i not in loaded_all and i not in tombstones]
            if gone:
                print(f"    {loader}: {len(gone)} ids on record as processed are not in Neo4j", flush=True)
            problems += len(gone)
    return problems


def injected(server: ReplayServer) -> int:
    return sum(server.stats()["faults"].values())


def cli(url: str, base: str, run_id: str, *args: str, **env: str) -> subprocess.Popen:
    """``python -m include.loaders`` against ``url`` with checkpoints under ``base``."""
    full = {
        **os.environ,
        "TK_API_BASE_URL": url,
        "TK_API_MAX_RETRIES": "30",
        "TK_API_BACKOFF_BASE": "0.01",
        "TK_API_BACKOFF_MAX": "0.05",
        "TK_API_RETRY_AFTER_MAX": "0.2",
        "TK_API_READ_TIMEOUT": "1",
        "PYTHONWARNINGS": "ignore",
        **env,
    }
    cmd = [PY, "-m", "include.loaders", *ENTITIES, *args, "--checkpoint-base", base, "--run-id", run_id]
    return subprocess.Popen(
        cmd, cwd=ROOT, env=full, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def processed_so_far(base: str, run_id: str) -> int:
    from tk_checkpoint import CheckpointError, CheckpointManager

    try:
        run = CheckpointManager(base).get_run(run_id)
    except (CheckpointError, OSError):
        return 0
    return sum(int(s.get("processed_count") or 0) for s in run.get("loaders", {}).values())


@contextlib.contextmanager
def captured_logs() -> Iterator[io.StringIO]:
    """Every log line of every logger, as text."""
    buf = io.StringIO()
    handler = logging.StreamHandler(buf)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    # on each logger itself as well as the root: once Airflow has configured logging, ours may not
    # propagate to the root
    loggers = [logging.getLogger(), *(logging.getLogger(name) for name in QUIET)]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.addHandler(handler)
        logger.setLevel(logging.DEBUG)
    try:
        yield buf
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.removeHandler(handler)
            logger.setLevel(level)


# -- sections ------------------------------------------------------------------------------------------------


def bad_confs(valid: list[str]) -> list[tuple[dict[str, Any], str]]:
    """(conf, text the refusal must contain)."""
    cases: list[tuple[dict[str, Any], str]] = []
    for key in valid:  # a typo of every key
        for typo in {key.replace("_", "-"), key.replace("_", ""), key.title(), key + "s", " " + key}:
            if typo not in valid:
                cases.append(({typo: "x"}, repr(typo)))
    ints = {"window_days": (1, 36600), "batch_size": (1, 10000), "cleanup_keep": (1, None)}
    for key in ints:
        for value in ("30", 0, -1, 10**9, 1.5, True, [3], {"n": 3}):
            if key == "cleanup_keep" and value == 10**9:
                continue  # a valid (large) count
            cases.append(({key: value}, f"{key} must be an integer"))
    for value in ("no", 0, 1, "true", None, [True]):
        cases.append(({"fail_on_item_errors": value}, "fail_on_item_errors must be true or false"))
    for value in ("Zaak", {"Zaak": 1}, [1, 2]):
        cases.append(({"entities": value}, "entities must be a list"))
    cases.append(({"entities": ["Zaak", "Stemming"]}, "Stemming"))
    for key in ("start_date", "end_date"):
        for value in ("0001-01-01", "9999-12-31", "1899-12-31", "2100-01-02", "10000-01-01"):
            other = {"start_date": "2024-01-01"} if key == "end_date" else {}
            needle = "out of the supported range" if len(value) == 10 else "is not a date"
            cases.append(({key: value, **other}, needle))
        for value in ("2024-02-30", "2024-13-01", "yesterday", "01-06-2024", 20240601, ["2024-01-01"]):
            cases.append(({key: value}, "is not a date"))
    cases.append(({"start_date": "2024-06-02", "end_date": "2024-06-01"}, "must be after start"))
    cases.append(({"start_date": "2024-06-01", "end_date": "2024-06-01"}, "must be after start"))
    cases.append(({"start_date": "2099-06-01"}, "must be after start"))  # end = now
    return cases


GOOD_CONFS: list[dict[str, Any]] = [
    {},
    {"start_date": "2024-06-01"},
    {"start_date": "1900-01-01", "end_date": "2100-01-01", "window_days": 36600},
    {"start_date": "2024-01-01", "end_date": "2024-07-01", "entities": ["Zaak", "Document"]},
    {"batch_size": 1, "fail_on_item_errors": False, "cleanup_keep": 3},
]


def section_confs(t: Tally, work: Path, with_airflow: bool) -> None:
    from dags.tk_ingest import build_dag
    from include.loaders.pipeline import ConfError, prepare_run

    dag = build_dag()
    valid = sorted(dag.params.keys())
    defaults = {k: dag.params[k] for k in valid}
    with ReplayServer(Dataset.samples()) as server:
        os.environ["TK_API_BASE_URL"] = server.url

        def setup(conf: dict[str, Any]) -> None:
            prepare_run(
                dag_id="tk_ingest",
                run_id=f"manual__adv_{t.inputs}",
                conf=conf,
                params={**defaults, **conf},  # as Airflow merges them
                data_interval_start=None,
                data_interval_end=None,
                now=NOW,
                checkpoint_base=str(work / "confs"),
                valid_keys=valid,
            )

        for conf, needle in bad_confs(valid):
            t.inputs += 1
            try:
                setup(conf)
            except ConfError as e:
                if needle not in str(e):
                    t.bad(f"setup({conf!r}) refused without naming it: {e}")
            except Exception as e:  # what we look for
                t.bad(f"setup({conf!r}) raised {type(e).__name__}: {e}")
            else:
                t.bad(f"setup({conf!r}) accepted a bad conf")
        for conf in GOOD_CONFS:
            t.inputs += 1
            try:
                setup(conf)
            except Exception as e:
                t.bad(f"setup({conf!r}) refused a valid conf: {type(e).__name__}: {e}")
        del os.environ["TK_API_BASE_URL"]

    cli_cases = [
        (["--start", "0001-01-01"], "out of the supported range"),
        (["--end", "9999-12-31"], "out of the supported range"),
        (["--start", "2024-13-01"], "is not an ISO date"),
        (["--start", "2024-06-02", "--end", "2024-06-01"], "must be after --start"),
        (["Zaken"], "Unknown entity 'Zaken'"),
        (["--batch-size", "x"], "invalid int value"),
        (["--batch-size", "0"], "batch_size must be between 1 and 10000"),
        (["--batch-size", "-5"], "batch_size must be between 1 and 10000"),
        (["Zaak", "--start-date", "2024-01-01"], "unrecognized arguments: --start-date"),
    ]
    for args, needle in cli_cases:
        t.inputs += 1
        env = {**os.environ, "TK_API_BASE_URL": "http://127.0.0.1:9", "TK_API_MAX_RETRIES": "0"}
        cmd = [PY, "-m", "include.loaders", *args, "--checkpoint-base", str(work / "cli")]
        out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
        text = out.stdout + out.stderr
        if "Traceback" in text:
            t.bad(f"python -m include.loaders {args}: a traceback: {text[-500:]}")
        elif out.returncode == 0 or needle not in text:
            t.bad(f"python -m include.loaders {args}: exit {out.returncode}, {text.strip()[-300:]}")

    if with_airflow:
        t.inputs += 1
        env = {
            **os.environ,
            "TK_API_BASE_URL": "http://127.0.0.1:9",
            "TK_CHECKPOINT_BASE": str(work / "airflow-cp"),
            "TK_TASK_RETRIES": "0",
            "TK_TASK_RETRY_DELAY_SECONDS": "1",
            "PYTHONWARNINGS": "ignore",
        }
        conf = '{"start-date": "2024-06-01"}'
        out = subprocess.run(
            [AIRFLOW, "dags", "test", "tk_ingest", "-c", conf],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        text = out.stdout + out.stderr
        tries = text.count("starting task_id=setup ")
        if out.returncode == 0 or tries != 1 or "Unknown conf key(s) ['start-date']" not in text:
            t.bad(f"airflow dags test -c {conf}: exit {out.returncode}, setup tried {tries} time(s)")
    print(f"  {t.inputs} confs and argument sets", flush=True)


def section_credentials(t: Tally, work: Path, driver: Any, seed: int) -> None:
    from include.loaders.pipeline import prepare_run

    ds = Dataset.generate(300, seed=seed)
    faults = FaultConfig.mixed(0.25, seed=seed, kinds=("error", "throttle", "truncate"), retry_after=1)
    secrets = {PASSWORD, quote(PASSWORD, safe=""), USER}
    wipe(driver)
    with ReplayServer(ds, faults=faults, basic_auth=(USER, PASSWORD)) as server:
        url = f"http://{quote(USER, safe='')}:{quote(PASSWORD, safe='')}@{server.host_port}"
        t.inputs += 1
        proc = cli(url, str(work), "creds")
        output, _ = proc.communicate(timeout=600)
        t.inputs += 1
        os.environ["TK_API_BASE_URL"] = url
        with captured_logs() as buf:
            try:
                prepare_run(
                    dag_id="tk_ingest",
                    run_id="manual__creds",
                    conf={"start_date": "2000-01-01"},
                    params={"start_date": "2000-01-01", "entities": list(ENTITIES)},
                    data_interval_start=None,
                    data_interval_end=None,
                    now=NOW,
                    checkpoint_base=str(work),
                )
            except Exception as e:
                t.bad(f"setup with credentials in the URL failed: {type(e).__name__}: {e}")
        del os.environ["TK_API_BASE_URL"]
        refused = server.stats().get("http_401", 0)
        t.faults += injected(server)
    lines = output.splitlines() + sorted(set(buf.getvalue().splitlines()))  # a line per handler it met
    if not any("API metadata check passed" in line for line in lines):
        t.bad("the setup task's log lines were not captured: nothing was really grepped")
    leaked = [line for line in lines if any(s in line for s in secrets)]
    for line in leaked[:5]:
        t.bad(f"a secret in a log line: {line[:200]}")
    if leaked[5:]:
        t.bad(f"... and {len(leaked) - 5} more log lines with a secret")
    if proc.returncode != 0 or refused:
        t.bad(f"the load with credentials ended {proc.returncode}, {refused} request(s) refused (401)")
    retries = sum("retrying in" in line for line in lines)
    t.lost += graph_differences(driver, ds, str(work), "creds")
    print(f"  {len(lines)} log lines grepped ({retries} retry lines with URLs), {len(leaked)} with a secret")


def section_faults(t: Tally, work: Path, driver: Any, seed: int, loads: int) -> None:
    from include.loaders.api import TKClient
    from include.loaders.load import run_loaders
    from include.loaders.settings import ApiSettings

    rng = random.Random(seed)
    for i in range(loads):
        ds = Dataset.generate(400, seed=seed + i)
        without = {rid for name in ("Zaak", "Document") for rid in rng.sample(ds.live_ids(name), 2)}
        rate = rng.uniform(0.2, 0.5)
        config = FaultConfig.mixed(
            rate,
            seed=seed + i,
            kinds=("error", "throttle", "hang", "truncate", "reset"),
            retry_after=1,
            hang_seconds=1.5,
            without_id=frozenset(without),
        )
        settings = ApiSettings(
            max_retries=40, backoff_base=0.01, backoff_max=0.05, retry_after_max=0.2, read_timeout=1.0
        )
        wipe(driver)
        base, run_id = str(work / f"load{i}"), f"faults_{i}"
        with ReplayServer(ds, faults=config) as server:
            with TKClient(settings.with_overrides(base_url=server.url)) as client:
                t.inputs += 1
                try:
                    first = run_loaders(
                        ENTITIES,
                        client=client,
                        driver=driver,
                        checkpoint_base=base,
                        run_id=run_id,
                        batch_size=25,
                    )
                except Exception as e:
                    t.bad(f"load {i} under faults stopped: {type(e).__name__}: {e}")
                    continue
                failed = sum(r.failed for r in first.values())
                if failed != len(without):
                    t.bad(f"load {i}: {failed} items failed, expected the {len(without)} rows without Id")
                t.faults += injected(server) + len(without)
                server.set_faults(None)  # the source fixed its rows; the same run again
                t.inputs += 1
                second = run_loaders(
                    ENTITIES, client=client, driver=driver, checkpoint_base=base, run_id=run_id, batch_size=25
                )
        still = sum(r.failed for r in second.values())
        cleared = sum(r.cleared for r in second.values())
        if still or cleared != len(without):
            t.bad(
                f"load {i} rerun: {still} still failed, {cleared} failures cleared (expected {len(without)})"
            )
        from tk_checkpoint import CheckpointManager

        state = CheckpointManager(base).get_run(run_id)["state"]
        if state != "completed":
            t.bad(f"load {i}: the run is {state!r} after a complete rerun")
        lost = graph_differences(driver, ds, base, run_id)
        t.lost += lost
        print(f"  load {i}: fault rate {rate:.2f}, {lost} lost or wrong", flush=True)


def _neo4j(action: str) -> None:
    subprocess.run(
        ["bash", "scripts/neo4j.sh", action], cwd=ROOT, check=True, capture_output=True, timeout=180
    )


def section_outage(t: Tally, work: Path, driver: Any, seed: int) -> None:
    ds = Dataset.generate(300, seed=seed)
    wipe(driver)
    base, run_id = str(work), "outage"
    with ReplayServer(ds, faults=FaultConfig(latency=0.4)) as server:
        t.inputs += 1
        proc = cli(server.url, base, run_id, "--batch-size", "10")
        deadline = time.monotonic() + 120
        while processed_so_far(base, run_id) < 20 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        done_before = processed_so_far(base, run_id)
        _neo4j("stop")  # by its pid, with this environment's NEO4J_HOME_DIR
        t.faults += 1
        try:
            output, _ = proc.communicate(timeout=300)
        finally:
            _neo4j("start")
        last = (output.strip().splitlines() or [""])[-1]
        names = ("Neo4j", "ServiceUnavailable", "SessionExpired", os.environ.get("NEO4J_BOLT_PORT", "7687"))
        if proc.returncode == 0:
            print(f"  the load finished before the outage mattered ({done_before} items done)")
        elif "Traceback" in output or proc.returncode != 2 or not any(w in last for w in names):
            t.bad(f"the load stopped by the outage ended unclearly (exit {proc.returncode}): {output[-400:]}")
        else:
            print(f"  stopped after {done_before}+ items, exit 2: {last[:200]}", flush=True)
        driver.verify_connectivity()
        t.inputs += 1
        rerun = cli(server.url, base, run_id, "--batch-size", "10")
        out2, _ = rerun.communicate(timeout=600)
    if rerun.returncode != 0:
        t.bad(f"the rerun after the outage ended {rerun.returncode}: {out2.strip()[-300:]}")
    t.lost += graph_differences(driver, ds, base, run_id)


def section_sigkill(t: Tally, work: Path, driver: Any, seed: int, kills: int) -> None:
    rng = random.Random(seed)
    ds = Dataset.generate(300, seed=seed)
    wipe(driver)
    base, run_id = str(work), "sigkill"
    with ReplayServer(ds, faults=FaultConfig(latency=0.25)) as server:  # a load of ~10 s to kill into
        for _ in range(kills):
            t.inputs += 1
            proc = cli(server.url, base, run_id, "--batch-size", "15")
            time.sleep(rng.uniform(1.0, 7.0))
            if proc.poll() is None:
                proc.kill()
                t.faults += 1
            proc.communicate(timeout=60)
        t.inputs += 1
        final = cli(server.url, base, run_id, "--batch-size", "15")
        output, _ = final.communicate(timeout=600)
    if final.returncode != 0:
        t.bad(f"the rerun after {kills} kills ended {final.returncode}: {output.strip()[-300:]}")
    from tk_checkpoint import CheckpointManager

    state = CheckpointManager(base).get_run(run_id)["state"]
    if state != "completed":
        t.bad(f"the run is {state!r} after its complete rerun")
    lost = graph_differences(driver, ds, base, run_id)
    t.lost += lost
    print(
        f"  {t.faults} of {kills} runs killed at random moments, then a rerun: {lost} lost or wrong",
        flush=True,
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seed", type=int, default=12)
    p.add_argument("--kills", type=int, default=8, help="SIGKILLs of the loader (default 8)")
    p.add_argument("--loads", type=int, default=6, help="loads under random API faults (default 6)")
    p.add_argument("--no-airflow", action="store_true", help="skip the airflow dags test of a bad conf")
    args = p.parse_args(argv)
    os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="tk-adv-airflow-"))
    os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    os.environ.setdefault("AIRFLOW__CORE__DAGS_FOLDER", str(ROOT / "dags"))
    os.environ.setdefault("AIRFLOW__CORE__PLUGINS_FOLDER", str(ROOT / "plugins"))
    os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "plugins")])
    logging.basicConfig(level=logging.ERROR)
    for name in QUIET:  # the loaders' INFO lines are not the point here (the credentials section
        logging.getLogger(name).setLevel(logging.WARNING)  # captures them all again)
    if not args.no_airflow:
        subprocess.run([AIRFLOW, "db", "migrate"], env=os.environ, capture_output=True, check=True)
    started = time.monotonic()
    tallies: dict[str, Tally] = {}
    driver = neo4j_driver()
    driver.verify_connectivity()
    with tempfile.TemporaryDirectory(prefix="tk-adversarial-loader-") as tmp:
        work = Path(tmp)
        sections = [
            ("confs", lambda t: section_confs(t, work / "confs", not args.no_airflow)),
            ("credentials", lambda t: section_credentials(t, work / "creds", driver, args.seed)),
            ("api faults", lambda t: section_faults(t, work / "faults", driver, args.seed, args.loads)),
            ("neo4j outage", lambda t: section_outage(t, work / "outage", driver, args.seed)),
            ("sigkill", lambda t: section_sigkill(t, work / "sigkill", driver, args.seed, args.kills)),
        ]
        for name, run in sections:
            print(f"{name}:", flush=True)
            tally = tallies[name] = Tally()
            try:
                run(tally)
            except Exception as e:  # a section that breaks is reported; the rest still run
                tally.bad(f"section {name} broke: {type(e).__name__}: {e}")
    driver.close()
    rows = {name: (t.inputs, t.faults, t.lost, len(t.unclear)) for name, t in tallies.items()}
    return print_report(rows, started)


if __name__ == "__main__":
    sys.exit(main())
