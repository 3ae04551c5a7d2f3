"""A repeat of issue 12's adversarial pass on the checkpoint side: bad inputs and injected faults against the
`tk-checkpoint` CLI and the engine, each checked against what docs/checkpoints.md promises.

    .venv/bin/python bench/adversarial_checkpoint.py [--seed N] [--kills N]     (make adversarial-checkpoint)

Sections: CLI arguments (negative, huge and non-numeric counts, bad run ids and loader names, path traversal),
damaged files of every kind (truncated, garbage, gzip, every header field with values of the wrong type, try
entries, failed items, journal records, run files, lock files, a newer schema) read by list/show, the
dashboard's pages and JSON models, and reopened by a writer; ENOSPC at every byte offset of a journal append
(and in its sync, and on a real small tmpfs when mounting is permitted); SIGKILL of a writer process at random
moments; concurrent writers (processes racing for one loader, a writer displaced by `unlock --force`, threads
marking in one writer).

What counts:
* inputs tried: every CLI invocation and engine call with a bad input, and every damaged file read;
* faults injected: every ENOSPC, SIGKILL, damaged file and displacement;
* items lost: ids that a save reported saved (it returned) but that are not read back afterwards (target 0);
* unclear errors: a traceback, an exception that is not one of the documented ones, an exit code outside the
  documented set (0 1 2 3 4 141) or not the one documented for that input, or an error without a message
  naming the problem (target 0).

Every check compares against an expected outcome; a mismatch is printed with its input. Exit status 1 when
any item was lost or any error was unclear.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import gzip
import io
import itertools
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PLUGINS = Path(__file__).resolve().parent.parent / "plugins"
sys.path.insert(0, str(PLUGINS))

from adversarial_report import print_report  # noqa: E402  (bench/, the script's own folder)
from tk_checkpoint import (  # noqa: E402  (after the path)
    CheckpointError,
    CheckpointManager,
    CorruptCheckpointError,
    LoaderCheckpoint,
    UnsupportedSchemaError,
)
from tk_checkpoint.cli import main as cli_main  # noqa: E402

DOCUMENTED_EXITS = {0, 1, 2, 3, 4, 141}
RUN = "manual__2026-12-01T10:00:00+00:00"
LOADER = "load_zaak"


@dataclass
class Tally:
    inputs: int = 0
    faults: int = 0
    lost: int = 0
    unclear: list[str] = field(default_factory=list)
    sections: dict[str, tuple[int, int, int, int]] = field(default_factory=dict)

    def problem(self, what: str) -> None:
        self.unclear.append(what)
        print(f"  UNCLEAR: {what}", flush=True)

    def lose(self, n: int, what: str) -> None:
        if n:
            self.lost += n
            print(f"  LOST {n}: {what}", flush=True)

    @contextlib.contextmanager
    def section(self, name: str) -> Iterator[None]:
        before = (self.inputs, self.faults, self.lost, len(self.unclear))
        start = time.monotonic()
        print(f"{name} ...", flush=True)
        yield
        after = (self.inputs, self.faults, self.lost, len(self.unclear))
        figures = tuple(a - b for a, b in zip(after, before, strict=True))
        self.sections[name] = figures  # type: ignore[assignment]
        print(
            f"  {figures[0]} inputs, {figures[1]} faults, {figures[2]} lost, {figures[3]} unclear "
            f"({time.monotonic() - start:.1f} s)",
            flush=True,
        )


T = Tally()


# --- helpers ---------------------------------------------------------------------------------------


def cli(*argv: str) -> tuple[int, str, str]:
    """Run the CLI in this process; a traceback escaping main is reported as (-1, '', traceback)."""
    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = cli_main(list(argv))
    except BaseException as exc:
        import traceback

        return -1, out.getvalue(), err.getvalue() + "".join(traceback.format_exception(exc))
    return code, out.getvalue(), err.getvalue()


def expect_cli(
    argv: tuple[str, ...], allowed: set[int], *, must_say: str | None = None
) -> tuple[int, str, str]:
    """One CLI input: its exit code must be documented and in ``allowed``; an error must have a message."""
    T.inputs += 1
    code, out, err = cli(*argv)
    shown = " ".join(repr(a) if (not a or " " in a or not a.isprintable()) else a for a in argv)
    if code == -1 or "Traceback" in err or "Traceback" in out:
        T.problem(f"traceback from `tk-checkpoint {shown}`: {err.strip().splitlines()[-1:]}")
    elif code not in DOCUMENTED_EXITS:
        T.problem(f"undocumented exit {code} from `tk-checkpoint {shown}`")
    elif code not in allowed:
        T.problem(
            f"exit {code} (expected {sorted(allowed)}) from `tk-checkpoint {shown}`: {err.strip()[:200]}"
        )
    elif code != 0 and not err.strip() and not out.strip():
        T.problem(f"exit {code} without a message from `tk-checkpoint {shown}`")
    elif must_say and must_say not in err + out:
        T.problem(f"`tk-checkpoint {shown}` did not say {must_say!r}: {(err + out).strip()[:200]}")
    return code, out, err


def make_run(base: Path, ids: int = 40, failures: int = 3, journal_tail: int = 5) -> CheckpointManager:
    """A run with one loader: a snapshot (compacted) plus a journal tail; a second loader completed."""
    mgr = CheckpointManager(base, save_interval=0)
    mgr.start_new_run(RUN, dag_id="tk_ingest", conf={"start_date": "2024-06-01"})
    with LoaderCheckpoint(mgr, LOADER, try_number=1, meta={"window_start": "2024-06-01"}) as cp:
        cp.set_total_items(ids + journal_tail)
        cp.mark_processed_many(f"{i:08x}-0000-4000-8000-{i:012x}" for i in range(ids))
        for n in range(failures):
            cp.mark_failed(f"bad-{n}", f"Neo.ClientError: constraint {n}")
        cp.compact()
        cp.mark_processed_many(f"tail-{i}" for i in range(journal_tail))
        cp.save_progress()
    with LoaderCheckpoint(mgr, "load_document", try_number=1) as cp:
        cp.mark_processed_many(["d1", "d2"])
        cp.complete()
    return mgr


def snapshot_path(base: Path) -> Path:
    return base / RUN / "loaders" / f"{LOADER}.json"


def journal_path(base: Path) -> Path:
    return base / RUN / "loaders" / f"{LOADER}.journal.jsonl"


# --- 1. CLI arguments ------------------------------------------------------------------------------

BAD_COUNTS = ["-1", "-999999999999", "abc", "", "1e3", "1.5", "0x10", "NaN", " ", "--", "-٣"]
BAD_NAMES = [
    "",
    ".",
    "..",
    "../x",
    "../../etc",
    "/etc/passwd",
    "a/b",
    "a\\b",
    "a\x00b",
    ".hidden",
    "x" * 201,
    "run id",
    "tab\tid",
    "line\nid",
    "%2e%2e",
    "ü" * 3,
]


def section_cli(base: Path) -> None:
    make_run(base)
    outside = base.parent / f"{base.name}-outside"
    outside.mkdir()
    (outside / "run.json").write_text("{}")  # path traversal must never reach this
    b = ("--base", str(base))
    for value in BAD_COUNTS:
        expect_cli(("list", "--limit", value, *b), {2}, must_say="limit")
        expect_cli(("cleanup", "--keep", value, *b), {2}, must_say="keep")
        expect_cli(("show", "--run-id", RUN, "--failures", value, *b), {2}, must_say="failures")
    expect_cli(("list", "--limit", "0", *b), {2}, must_say="limit")
    for huge in ("1", "3", "٣", str(10**6), str(10**30)):  # valid, however large (٣: int() reads it as 3)
        code, out, _ = expect_cli(("list", "--limit", huge, "--json", *b), {0})
        if code == 0 and len(json.loads(out)) != 1:
            T.problem(f"list --limit {huge} did not list the one run")
        expect_cli(("cleanup", "--keep", huge, "--dry-run", *b), {0})
        expect_cli(("show", "--run-id", RUN, "--failures", huge, *b), {0})
    for name in BAD_NAMES:
        for argv in (
            ("show", "--run-id", name),
            ("delete", "--run-id", name, "--yes"),
            ("delete", "--run-id", name, "--yes", "--force"),
            ("unlock", "--run-id", name, "--loader", LOADER),
            ("unlock", "--run-id", RUN, "--loader", name),
            ("show", "--run-id", RUN, "--loader", name),
            ("resume", "--run-id", name, "--api-url", "http://127.0.0.1:9"),
        ):
            # an invalid name is a usage error (2); a loader name that is merely unknown is "not found" (1)
            allowed = {2} if not (argv[0] == "show" and argv[-1] == name and "--loader" in argv) else {1, 2}
            expect_cli((*argv, *b), allowed)
    for unknown in ("manual__nope", "scheduled__2026-01-01T00:00:00+00:00"):
        expect_cli(("show", "--run-id", unknown, *b), {1}, must_say="Run not found")
        expect_cli(("delete", "--run-id", unknown, "--yes", *b), {1}, must_say="Run not found")
        expect_cli(("unlock", "--run-id", unknown, "--loader", LOADER, *b), {1}, must_say="Run not found")
    expect_cli(("unlock", "--run-id", RUN, "--loader", LOADER, *b), {1}, must_say="not locked")
    for argv in (("frobnicate",), ("list", "--bogus"), ("show",), ("delete", "--run-id")):
        expect_cli((*argv, *b), {2})
    expect_cli(("list", "--base", str(base / "no" / "such" / "base")), {0})
    file_base = base.parent / f"{base.name}-a-file"
    file_base.write_text("not a folder")
    expect_cli(("list", "--base", str(file_base)), {0, 3})
    if not (outside / "run.json").exists() or not snapshot_path(base).exists():
        T.problem("a bad run id reached files outside its run")
    # the engine refuses the same values the CLI does (one place decides)
    mgr = CheckpointManager(base)
    for call in (
        lambda: mgr.list_runs(limit=-1),
        lambda: mgr.list_runs(limit=0),
        lambda: mgr.cleanup_old_runs(keep=-1),
        lambda: mgr.plan_cleanup(keep=True),
        lambda: mgr.describe_run(RUN, failures=-5),
    ):
        T.inputs += 1
        try:
            call()
        except ValueError as exc:
            if "must be a whole number" not in str(exc):
                T.problem(f"engine refused a bad count without saying why: {exc}")
        else:
            T.problem("the engine accepted a negative or zero count")
    if [r["run_id"] for r in mgr.list_runs()] != [RUN]:
        T.problem("a refused cleanup deleted a run")


# --- 2. damaged files ------------------------------------------------------------------------------

WRONG_VALUES: list[Any] = ["lots", -3, 1.5, True, [1], {"a": 1}, "", "[]"]


def damage_kinds(base: Path) -> Iterator[tuple[str, Callable[[Path], None], str]]:
    """(name, how to damage a fresh run, what a writer's reopen should do: 'aside' | 'ok' | 'newer')."""
    snap = snapshot_path(base)

    def snap_edit(fn: Callable[[dict], None]) -> Callable[[Path], None]:
        def apply(b: Path) -> None:
            doc = json.loads(snapshot_path(b).read_text())
            fn(doc)
            snapshot_path(b).write_text(json.dumps(doc))

        return apply

    data = snap.read_bytes()
    # (cutting only the final newline leaves a valid document: the last cut is before the closing brace)
    for cut in sorted({1, 2, 10, len(data) // 3, len(data) // 2, len(data) - 3, len(data) - 2}):
        yield f"snapshot truncated at {cut}", lambda b, c=cut: snapshot_path(b).write_bytes(data[:c]), "aside"
    yield "snapshot empty", lambda b: snapshot_path(b).write_bytes(b""), "aside"
    yield "snapshot garbage", lambda b: snapshot_path(b).write_bytes(os.urandom(300)), "aside"
    yield "snapshot a JSON list", lambda b: snapshot_path(b).write_text("[1, 2]"), "aside"
    yield "snapshot bad gzip", lambda b: snapshot_path(b).write_bytes(b"\x1f\x8b" + os.urandom(50)), "aside"
    yield (
        "snapshot gzip truncated",
        lambda b: snapshot_path(b).write_bytes(gzip.compress(data)[:-9]),
        "aside",
    )
    fields = json.loads(data)
    for key in fields:
        if key in ("processed_ids",):
            continue
        for value in WRONG_VALUES:
            if key in (
                "run_id",
                "loader",
                "created_at",
                "updated_at",
                "completed_at",
                "error",
            ) and isinstance(value, str):
                continue  # a string is the right type there
            if key == "meta" and isinstance(value, dict):
                continue
            if key == "schema_version" and value is True:
                continue  # bool is refused; covered by "lots"
            expected = "aside"
            yield (
                f"snapshot {key} = {value!r}",
                snap_edit(lambda d, k=key, v=value: d.__setitem__(k, v)),
                expected,
            )
    yield (
        "snapshot processed_ids not a list",
        snap_edit(lambda d: d.__setitem__("processed_ids", "abc")),
        "aside",
    )
    yield "snapshot processed_count wrong", snap_edit(lambda d: d.__setitem__("processed_count", 7)), "aside"
    yield "snapshot newer schema", snap_edit(lambda d: d.__setitem__("schema_version", 99)), "newer"
    for key in ("index", "try_number", "host", "pid", "started_at", "outcome", "processed", "failed"):
        for value in ("many", [1], {"x": 1}, -1):
            if key in ("host", "started_at", "outcome") and value == "many":
                continue
            if key in ("try_number", "pid") and value == -1:
                continue  # any whole number is a valid try number or pid
            yield (
                f"try {key} = {value!r}",
                snap_edit(lambda d, k=key, v=value: d["tries"][0].__setitem__(k, v)),
                "aside",
            )
    for value in (1, "text", None, [1]):
        yield f"a try = {value!r}", snap_edit(lambda d, v=value: d["tries"].append(v)), "aside"
    for key in ("error", "attempts", "first_failed_at", "try_number"):
        for value in ([1], {"a": 1}, -2, "x"):
            if key in ("error", "first_failed_at") and value == "x":
                continue
            if key == "try_number" and value == -2:
                continue
            yield (
                f"failed item {key} = {value!r}",
                snap_edit(lambda d, k=key, v=value: next(iter(d["failed_items"].values())).__setitem__(k, v)),
                "aside",
            )
    for value in ("boom", 1, [1]):
        yield (
            f"a failed item = {value!r}",
            snap_edit(lambda d, v=value: d["failed_items"].__setitem__("z", v)),
            "aside",
        )

    def journal_line(line: str, *, newline: bool = True) -> Callable[[Path], None]:
        def apply(b: Path) -> None:
            with journal_path(b).open("a") as f:
                f.write(line + ("\n" if newline else ""))

        return apply

    last = json.loads(journal_path(base).read_text().splitlines()[-1])
    nxt = last["seq"] + 1
    yield "journal garbage line", journal_line("{not json"), "aside"
    yield "journal torn last line", journal_line(f'{{"seq": {nxt}, "p": ["x', newline=False), "ok"
    yield "journal gap in seq", journal_line(json.dumps({"seq": nxt + 3, "p": ["gap"]})), "aside"
    yield "journal seq not a number", journal_line(json.dumps({"seq": "ten"})), "aside"
    yield "journal a list", journal_line("[1]"), "aside"
    yield "journal newer record", journal_line(json.dumps({"seq": nxt, "v": 9})), "newer"
    for member, value in (
        ("p", "abc"),
        ("p", [{"x": 1}]),
        ("f", [1]),
        ("f", {"x": "boom"}),
        ("f", {"x": {"attempts": "two"}}),
        ("set", [1]),
        ("set", {"total_items": "lots"}),
        ("set", {"meta": [1]}),
        ("set", {"state": "exploded"}),
        ("set", {"skipped_count": -1}),
        ("try", [1]),
        ("try", {"processed": "many"}),
        ("try", {"index": "one"}),
    ):
        yield (
            f"journal record {member} = {value!r}",
            journal_line(json.dumps({"seq": nxt, member: value})),
            "aside",
        )

    def run_edit(fn: Callable[[dict], None]) -> Callable[[Path], None]:
        def apply(b: Path) -> None:
            path = b / RUN / "run.json"
            doc = json.loads(path.read_text())
            fn(doc)
            path.write_text(json.dumps(doc))

        return apply

    yield "run file garbage", lambda b: (b / RUN / "run.json").write_text("{ nope"), "ok"
    yield "run file empty", lambda b: (b / RUN / "run.json").write_bytes(b""), "ok"
    for key, value in (
        ("conf", [1]),
        ("state", "exploded"),
        ("dag_id", 5),
        ("created_at", [1]),
        ("run_id", 3),
    ):
        yield f"run file {key} = {value!r}", run_edit(lambda d, k=key, v=value: d.__setitem__(k, v)), "ok"
    yield "run file newer schema", run_edit(lambda d: d.__setitem__("schema_version", 7)), "ok"
    lock = base / RUN / "loaders" / f"{LOADER}.lock"
    yield "lock file garbage", lambda b: (b / RUN / "loaders" / f"{LOADER}.lock").write_text("%%%"), "ok"
    yield "lock file a list", lambda b: (b / RUN / "loaders" / f"{LOADER}.lock").write_text("[1]"), "ok"
    yield (
        "lock of a dead pid",
        lambda b: (b / RUN / "loaders" / f"{LOADER}.lock").write_text(
            json.dumps({"host": os.uname().nodename, "pid": 2**22 + 1, "since": "x", "token": "t"})
        ),
        "ok",
    )
    del lock


def read_everything(base: Path, name: str, allowed_list: set[int]) -> None:
    """list and show (text and JSON), and the dashboard's pages and JSON models, on a damaged base."""
    from pydantic import TypeAdapter
    from tk_checkpoint import web

    b = ("--base", str(base))
    expect_cli(("list", *b), allowed_list)
    code, listed, _ = expect_cli(("list", "--json", *b), allowed_list)
    expect_cli(("show", "--run-id", RUN, *b), allowed_list | {1})
    shown_code, shown, _ = expect_cli(("show", "--run-id", RUN, "--json", *b), allowed_list | {1})
    T.inputs += 1
    try:  # the dashboard: its pages, and its JSON answers (the same reports through its response models)
        mgr = CheckpointManager(base)
        web.runs_page(mgr, "/")
        if code in (0, 3):
            TypeAdapter(list[web.RunEntry]).validate_python(json.loads(listed))
        if shown_code in (0, 3):
            web.run_page(mgr, RUN, "/")
            web.RunDetail.model_validate(json.loads(shown))
    except Exception as exc:
        T.problem(f"dashboard on '{name}': {type(exc).__name__}: {exc}")


def section_damage(work: Path) -> None:
    template = work / "template"
    make_run(template)
    kinds = list(damage_kinds(template))
    for name, damage, expected in kinds:
        base = work / "case"
        shutil.rmtree(base, ignore_errors=True)
        shutil.copytree(template, base)
        damage(base)
        T.faults += 1
        read_everything(base, name, {0, 3})
        # a writer (an Airflow retry) opens it twice: the first open may set the damage aside and raise
        T.inputs += 1
        outcome = []
        for attempt in (1, 2):
            try:
                cp = LoaderCheckpoint(CheckpointManager(base), LOADER, run_id=RUN, try_number=attempt + 1)
            except CorruptCheckpointError as exc:
                if not exc.set_aside or not Path(exc.set_aside).exists() or "damaged" not in str(exc):
                    T.problem(f"'{name}': damage reported without setting it aside: {exc}")
                outcome.append("aside")
                continue
            except UnsupportedSchemaError as exc:
                if "upgrade" not in str(exc):
                    T.problem(f"'{name}': newer schema without saying what to do: {exc}")
                outcome.append("newer")
                continue
            except Exception as exc:
                T.problem(f"'{name}': reopen raised {type(exc).__name__}: {exc}")
                outcome.append("unclear")
                break
            try:
                cp.mark_processed("after-repair")
                cp.close()
            except Exception as exc:
                T.problem(f"'{name}': the writer could not work after reopening: {type(exc).__name__}: {exc}")
            outcome.append("ok")
            break
        want = {"aside": ["aside", "ok"], "ok": ["ok"], "newer": ["newer", "newer"]}[expected]
        if outcome != want:
            T.problem(f"'{name}': reopen gave {outcome}, documented {want}")
        if expected != "newer":
            read_everything(base, name + " (after the writer)", {0, 3})
    print(f"  {len(kinds)} kinds of damage", flush=True)


# --- 3. ENOSPC at every byte offset of an append --------------------------------------------------


@contextlib.contextmanager
def enospc_after(allowed: int, where: str = "write") -> Iterator[dict[str, Any]]:
    """os.write writes ``allowed`` more bytes and then fails with ENOSPC (once); or os.fdatasync fails."""
    real_write, real_sync = os.write, os.fdatasync
    state = {"left": allowed, "armed": True}

    def write(fd: int, data: Any) -> int:
        if not state["armed"]:
            return real_write(fd, data)
        if state["left"] <= 0:
            state["armed"] = False
            raise OSError(errno.ENOSPC, "No space left on device")
        n = real_write(fd, bytes(memoryview(data)[: state["left"]]))
        state["left"] -= n
        return n

    def sync(fd: int) -> None:
        if state["armed"]:
            state["armed"] = False
            raise OSError(errno.ENOSPC, "No space left on device")
        real_sync(fd)

    if where == "write":
        os.write = write  # type: ignore[assignment]
    else:
        os.fdatasync = sync  # type: ignore[assignment]
    try:
        yield state  # state["armed"] is False once the fault fired
    finally:
        os.write, os.fdatasync = real_write, real_sync  # type: ignore[assignment]


def check_read_back(base: Path, saved: set[str], what: str) -> None:
    try:
        state = CheckpointManager(base).read_loader(RUN, LOADER)
    except CheckpointError as exc:
        T.problem(f"{what}: the loader cannot be read back: {exc}")
        T.lose(len(saved), what)
        return
    T.lose(len(saved - set(state.processed)), what)


def section_enospc(work: Path) -> None:
    base = work / "enospc"
    mgr = CheckpointManager(base, save_interval=0)
    mgr.start_new_run(RUN)
    cp = LoaderCheckpoint(mgr, LOADER, try_number=1)
    saved: set[str] = set()
    fired: list[tuple[str, int]] = []
    cp.mark_processed_many(["first"])
    cp.save_progress()
    saved.add("first")
    # the size of a record like the ones below: every offset from 0 to its end, and the sync
    size = len(json.dumps({"seq": 99, "at": "x" * 29, "p": [f"n{0:05d}-{k}" for k in range(3)]})) + 400
    offsets: list[tuple[str, int]] = [("write", n) for n in range(size)] + [("fdatasync", 0)] * 3
    for serial, (where, offset) in enumerate(offsets):
        ids = [f"n{serial:05d}-{k}" for k in range(3)]
        cp.mark_processed_many(ids)
        T.inputs += 1
        failed = False
        with enospc_after(offset, where) as fault:
            try:
                if cp.save_progress():
                    saved.update(ids)  # the fault came too late: this save finished
            except OSError as exc:
                failed = exc.errno == errno.ENOSPC
                if not failed:
                    T.problem(f"ENOSPC at {where}+{offset} became {exc!r}")
            except Exception as exc:
                T.problem(f"ENOSPC at {where}+{offset} raised {type(exc).__name__}: {exc}")
        if not fault["armed"]:
            T.faults += 1  # it fired (offsets past the end of the record let the save finish)
            fired.append((where, offset))
            if not failed:
                T.problem(f"ENOSPC at {where}+{offset} fired but the save reported success")
        if failed:
            try:
                if cp.save_progress():  # the disk has room again: the pending marks go now
                    saved.update(ids)
                else:
                    T.problem(f"after ENOSPC at {where}+{offset} the next save had nothing to write")
            except Exception as exc:
                T.problem(
                    f"after ENOSPC at {where}+{offset} the next save raised {type(exc).__name__}: {exc}"
                )
        if serial % 97 == 0:
            check_read_back(base, saved, f"ENOSPC at {where}+{offset}")
    # fail() and complete() on a full disk: they raise, and what was saved stays saved
    for finish in ("fail", "complete"):
        cp2 = LoaderCheckpoint(CheckpointManager(base, save_interval=0), f"{LOADER}_{finish}", run_id=RUN)
        cp2.mark_processed("x")
        cp2.save_progress()
        cp2.mark_processed("y")
        T.faults += 1
        T.inputs += 1
        with enospc_after(5):
            try:
                getattr(cp2, finish)(*(["boom"] if finish == "fail" else []))
                T.problem(f"{finish}() on a full disk reported success")
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    T.problem(f"{finish}() on a full disk raised {exc!r}")
        st = CheckpointManager(base).read_loader(RUN, f"{LOADER}_{finish}")
        T.lose(len({"x"} - set(st.processed)), f"{finish}() on a full disk")
    cp._w.abandon()  # a crash now: only what was saved counts
    check_read_back(base, saved, "ENOSPC, after the writer died")
    again = LoaderCheckpoint(CheckpointManager(base), LOADER, run_id=RUN, try_number=2)
    T.lose(len(saved - {i for i in saved if again.is_processed(i)}), "ENOSPC, reopened by the next try")
    again.close()
    writes = [offset for where, offset in fired if where == "write"]
    if writes != list(range(len(writes))):
        T.problem(f"ENOSPC fired at write offsets {writes[:5]}…, not at every offset from 0")
    print(
        f"  ENOSPC fired {len(fired)} times: in the write at every offset 0..{len(writes) - 1} of a record "
        f"({len(writes)} bytes), and {len(fired) - len(writes)} times in its sync",
        flush=True,
    )
    section_tmpfs(work)


def section_tmpfs(work: Path) -> None:
    mount = work / "tmpfs"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], capture_output=True
    )
    if done.returncode != 0:
        print("  tmpfs: mounting is not permitted here; skipped", flush=True)
        return
    try:
        mgr = CheckpointManager(mount, save_interval=0)
        mgr.start_new_run(RUN)
        cp = LoaderCheckpoint(mgr, LOADER)
        saved: set[str] = set()
        fulls = 0
        for n in range(20000):
            ids = [f"{n:05d}-{k}-" + "x" * 30 for k in range(4)]
            cp.mark_processed_many(ids)
            T.inputs += 1
            try:
                cp.save_progress()
                saved.update(ids)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    T.problem(f"tmpfs: a full disk gave {exc!r}")
                fulls += 1
                T.faults += 1
                if fulls >= 10:
                    break
        cp._w.abandon()
        check_read_back(mount, saved, "a real full tmpfs")
        print(f"  tmpfs 64 KiB: {len(saved)} ids saved before it was full, {fulls} saves refused", flush=True)
    finally:
        subprocess.run(["umount", str(mount)], check=False)


# --- 4. SIGKILL of a writer mid-save ---------------------------------------------------------------

KILLED_WRITER = """
import sys
from tk_checkpoint import CheckpointManager, LoaderCheckpoint
base, run, loader, start = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
mgr = CheckpointManager(base, save_interval=0)
mgr.start_new_run(run)
cp = LoaderCheckpoint(mgr, loader, try_number=start)
n = 0
while True:
    ids = [f"k{start}-{n}-{j}" for j in range(7)]
    cp.mark_processed_many(ids)
    if n % 5 == 4:
        cp.mark_failed(f"f{start}-{n}", "boom")
    cp.save_progress()
    print(n, flush=True)  # after the save returned: these ids are reported saved
    n += 1
    if n % 40 == 0:
        cp.compact()
"""


def section_sigkill(work: Path, kills: int, rng: random.Random) -> None:
    base = work / "sigkill"
    env = {**os.environ, "PYTHONPATH": str(PLUGINS)}
    saved: set[str] = set()
    for k in range(kills):
        proc = subprocess.Popen(
            [sys.executable, "-c", KILLED_WRITER, str(base), RUN, LOADER, str(k + 1)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        assert proc.stdout is not None
        first = proc.stdout.readline()  # it is writing
        if not first:
            T.problem(f"writer {k + 1} did not start: {proc.stderr.read() if proc.stderr else ''}")
            continue
        time.sleep(rng.uniform(0.0, 0.25))
        proc.send_signal(signal.SIGKILL)
        T.faults += 1
        T.inputs += 1
        out, err = proc.communicate(timeout=60)
        lines = [first, *out.splitlines()]
        for line in lines:
            line = line.strip()
            if line.isdigit():
                saved.update(f"k{k + 1}-{line}-{j}" for j in range(7))
        if "Traceback" in err:
            T.problem(f"writer {k + 1} raised before its SIGKILL: {err.strip().splitlines()[-1]}")
        # the readers show it gone, not running
        code, out, _ = expect_cli(("show", "--run-id", RUN, "--json", "--base", str(base)), {0})
        if code == 0:
            loader = json.loads(out)["loaders"][LOADER]
            holder, last = loader.get("locked_by") or {}, loader["tries"][-1]
            if holder.get("alive") is not False or last.get("outcome") != "interrupted":
                T.problem(
                    f"after SIGKILL {k + 1} show reports holder {holder}, try outcome {last.get('outcome')}"
                )
        check_read_back(base, saved, f"SIGKILL {k + 1}")
    # the next try takes the dead writer's lock over and holds everything reported saved
    cp = LoaderCheckpoint(CheckpointManager(base), LOADER, run_id=RUN, try_number=kills + 1)
    T.lose(len({i for i in saved if not cp.is_processed(i)}), "SIGKILL, reopened by the next try")
    outcomes = [t.get("outcome") for t in cp._w.state.tries[:-1]]
    if any(o != "interrupted" for o in outcomes):
        T.problem(f"tries of killed writers recorded as {set(outcomes)}")
    cp.close()
    print(f"  {kills} writers killed, {len(saved)} ids reported saved", flush=True)


# --- 5. concurrent writers -------------------------------------------------------------------------

RACER = """
import sys, time
from tk_checkpoint import CheckpointManager, LoaderCheckpoint, CheckpointLockedError
base, run, loader, who, go = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], float(sys.argv[5])
mgr = CheckpointManager(base, save_interval=0)
mgr.start_new_run(run)
while time.time() < go:
    time.sleep(0.001)
try:
    cp = LoaderCheckpoint(mgr, loader)
except CheckpointLockedError as exc:
    print("locked", "pid" in str(exc) and "unlock" in str(exc), flush=True)
    sys.exit(0)
print("owner", time.time(), flush=True)
for n in range(int(sys.argv[6])):
    cp.mark_processed_many([f"{who}-{n}-{j}" for j in range(5)])
    try:
        cp.save_progress()
    except CheckpointLockedError as exc:
        print("displaced", type(exc).__name__, "displaced" in str(exc), flush=True)
        cp.fail("displaced")
        sys.exit(0)
    print("saved", n, flush=True)
    time.sleep(0.01)
cp.close()
print("done", time.time(), flush=True)
"""


def _racer(base: Path, who: str, go: float, rounds: int) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", RACER, str(base), RUN, LOADER, who, str(go), str(rounds)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(PLUGINS)},
    )


def _saved_by(who: str, lines: list[str]) -> set[str]:
    return {f"{who}-{ln.split()[1]}-{j}" for ln in lines if ln.startswith("saved ") for j in range(5)}


def section_concurrent(work: Path, rounds: int) -> None:
    saved: set[str] = set()
    for r in range(rounds):  # processes racing to open one loader: exactly one owns it
        base = work / f"race-{r}"
        go = time.time() + 3.0  # all of them past their imports, then they open at once
        procs = {f"w{r}{i}": _racer(base, f"w{r}{i}", go, 3) for i in range(3)}
        results = {}
        for who, proc in procs.items():
            out, err = proc.communicate(timeout=120)
            results[who] = out.splitlines()
            T.inputs += 1
            if "Traceback" in err:
                T.problem(f"racer {who}: {err.strip().splitlines()[-1]}")
        owners = [w for w, lines in results.items() if lines[:1] and lines[0].startswith("owner ")]
        locked = [w for w, lines in results.items() if lines[:1] and lines[0].startswith("locked")]
        T.faults += len(procs) - 1
        # one owner at a time: a writer that started late may own the loader after the first closed it
        held = sorted((float(results[w][0].split()[1]), float(results[w][-1].split()[1])) for w in owners)
        overlap = any(later[0] < earlier[1] for earlier, later in itertools.pairwise(held))
        if not owners or overlap or len(owners) + len(locked) != len(procs):
            T.problem(f"race {r}: owners {owners} holding {held}, refused {locked}, all {results}")
        if any(results[w][0] != "locked True" for w in locked):
            T.problem(f"race {r}: a refused writer was not told who holds the lock and how to break it")
        for w in owners:
            saved |= _saved_by(w, results[w])
        check_read_back(base, saved & _prefixed(saved, f"w{r}"), f"race {r}")
    # a writer displaced by `unlock --force` while it writes; the next writer continues
    base = work / "displaced"
    first = _racer(base, "first", time.time(), 200)
    assert first.stdout is not None
    lines = [first.stdout.readline().strip(), first.stdout.readline().strip()]  # owner …, saved 0
    T.inputs += 1
    expect_cli(("unlock", "--run-id", RUN, "--loader", LOADER, "--base", str(base)), {3}, must_say="is alive")
    T.faults += 1
    expect_cli(("unlock", "--run-id", RUN, "--loader", LOADER, "--force", "--base", str(base)), {0})
    second = _racer(base, "second", time.time(), 5)
    out1, err1 = first.communicate(timeout=120)
    out2, err2 = second.communicate(timeout=120)
    lines1, lines2 = lines + out1.splitlines(), out2.splitlines()
    for who, err in (("first", err1), ("second", err2)):
        if "Traceback" in err:
            T.problem(f"displacement, {who}: {err.strip().splitlines()[-1]}")
    displaced = [ln for ln in lines1 if ln.startswith("displaced")]
    if displaced != ["displaced WriterDisplacedError True"] and not any(
        ln.startswith("done") for ln in lines1
    ):
        T.problem(f"the displaced writer did not say so: {lines1[-3:]}")
    if not lines2 or not (lines2[0].startswith("owner ") or lines2[0] == "locked True"):
        T.problem(f"the next writer after a displacement: {lines2[:2]}")
    saved_here = _saved_by("first", lines1) | _saved_by("second", lines2)
    check_read_back(base, saved_here, "a writer displaced by unlock --force")
    state = CheckpointManager(base).read_loader(RUN, LOADER)
    if any(t.get("outcome") == "failed" and t.get("pid") == first.pid for t in state.tries):
        T.problem("the displaced writer still recorded the end of its try")
    # threads marking into one writer while it saves
    base = work / "threads"
    mgr = CheckpointManager(base, save_interval=7)
    mgr.start_new_run(RUN)
    cp = LoaderCheckpoint(mgr, LOADER)
    errors: list[BaseException] = []

    def worker(t: int) -> None:
        try:
            for n in range(300):
                cp.mark_processed(f"t{t}-{n}")
                if n % 50 == 0:
                    cp.save_progress()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    cp.save_progress()
    T.inputs += 6
    T.faults += 6
    if errors:
        T.problem(f"threads: {errors[0]!r}")
    cp._w.abandon()
    check_read_back(base, {f"t{t}-{n}" for t in range(6) for n in range(300)}, "six threads marking at once")


def _prefixed(ids: set[str], prefix: str) -> set[str]:
    return {i for i in ids if i.startswith(prefix)}


# --- main ------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=12)
    parser.add_argument("--kills", type=int, default=20, help="writers killed with SIGKILL (20)")
    parser.add_argument("--races", type=int, default=3, help="rounds of processes racing for a lock (3)")
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    started = time.monotonic()
    import logging

    logging.disable(logging.CRITICAL)  # the engine's warnings about the damage we cause are expected
    with tempfile.TemporaryDirectory(prefix="tk-adversarial-") as tmp:
        work = Path(tmp)
        with T.section("CLI arguments and names"):
            section_cli(work / "cli")
        with T.section("damaged files"):
            section_damage(work / "damage")
        with T.section("ENOSPC during appends"):
            section_enospc(work)
        with T.section("SIGKILL of a writer"):
            section_sigkill(work, args.kills, rng)
        with T.section("concurrent writers"):
            section_concurrent(work, args.races)
    return print_report(T.sections, started)


if __name__ == "__main__":
    sys.exit(main())
