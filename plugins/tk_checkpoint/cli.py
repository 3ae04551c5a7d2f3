"""``tk-checkpoint``: inspect and manage checkpoint runs (list, show, delete, cleanup, resume, unlock) and the
SyncFeed cursors of ``tk_sync`` (cursors, reset-cursor).

Each subcommand is one ``cmd_*`` function plus one :class:`Command` entry in :data:`COMMANDS`; adding a
subcommand is exactly that (``resume`` lives in ``resume.py``). Every command takes ``--json`` and ``--base``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from . import (
    CheckpointError,
    CheckpointManager,
    InvalidNameError,
    RunNotFoundError,
    resolve_base,
    validate_name,
)
from .cursor import FeedCursors
from .manager import check_count
from .present import DAMAGED, format_cursors, format_holder, format_run, format_runs, is_damaged
from .resume import RESUME_ARGUMENTS, cmd_resume

EXIT_OK = 0
EXIT_NOT_FOUND = 1
EXIT_USAGE = 2
EXIT_CHECKPOINT = 3
EXIT_PIPE = 141  # stdout closed early (| head): 128 + SIGPIPE, as for tools that SIGPIPE ends

EPILOG = """\
exit codes:
  0  success (also when there is nothing to list or clean up)
  1  not found or not done: "Run not found", "No incomplete runs found", a declined confirmation
  2  usage: bad arguments, an invalid run id or loader name, delete without --yes and no terminal
  3  checkpoint problem: a damaged or locked checkpoint, a file of a newer schema, storage unreachable
  4  resume: the Airflow API refused or could not be reached
  141 the output was closed early (e.g. `tk-checkpoint list | head`): stopped quietly, as on SIGPIPE

base: --base, else $TK_CHECKPOINT_BASE, else ./checkpoints (a folder, or a URL such as
s3://aws_default@bucket/checkpoints, which needs Airflow and its provider for that store).

The same, in the Airflow UI: Browse -> Checkpoints, and a Checkpoints tab on each DAG run.
"""


# --- output helpers ------------------------------------------------------------------------------


def _emit_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, ensure_ascii=False, default=str))


# --- commands ------------------------------------------------------------------------------------


def cmd_list(args: argparse.Namespace, mgr: CheckpointManager) -> int:
    """Runs newest first, each with its loaders' progress and failures; then, when tk_sync has written any,
    the SyncFeed cursors (as `cursors`; --json lists the runs only, `cursors --json` the cursors)."""
    runs = mgr.list_runs(details=True, incomplete=args.incomplete, limit=args.limit)
    cursors: list[dict[str, Any]] = []
    if args.json:
        _emit_json(runs)
    else:
        if not runs:
            print("No incomplete runs found" if args.incomplete else f"No runs found in {mgr.checkpoint_dir}")
        else:
            print(format_runs(runs))
        cursors = FeedCursors(mgr.base).report()
        if cursors:
            print()
            print(format_cursors(cursors))
    if args.incomplete and not runs:
        return EXIT_NOT_FOUND
    damaged = any(is_damaged(r) for r in runs) or any(c.get("state") == DAMAGED for c in cursors)
    return EXIT_CHECKPOINT if damaged else EXIT_OK


def cmd_show(args: argparse.Namespace, mgr: CheckpointManager) -> int:
    """One run: the run file, each loader's detail, its tries, lock holder and last failures."""
    if args.loader is not None:
        validate_name(args.loader, "loader name")  # '' is not "every loader": a usage error
    if args.loader and args.loader not in mgr.loader_names(args.run_id):
        mgr.get_run(args.run_id, loaders=False)  # "Run not found" first, when that is the problem
        print(f"Loader not found: {args.loader} in run {args.run_id}", file=sys.stderr)
        return EXIT_NOT_FOUND
    run = mgr.describe_run(args.run_id, args.failures, [args.loader] if args.loader else None)
    if args.json:
        _emit_json(run)
    else:
        print(format_run(run))
    return EXIT_CHECKPOINT if is_damaged(run) else EXIT_OK


def cmd_delete(args: argparse.Namespace, mgr: CheckpointManager) -> int:
    """Delete one run and its loader files (asks first unless --yes)."""
    try:
        run = mgr.get_run(args.run_id)
    except CheckpointError:
        if not mgr.has_files(args.run_id):
            raise
        run = {"state": "damaged", "loaders": {}}  # a damaged run file, or files without one: delete them
    if not args.yes:
        if not sys.stdin or not sys.stdin.isatty():
            print(
                f"Refusing to delete run {args.run_id} without confirmation: stdin is not a terminal. "
                "Add --yes to delete it.",
                file=sys.stderr,
            )
            return EXIT_USAGE
        answer = input(f"Delete run {args.run_id} ({run['state']}, {len(run['loaders'])} loaders)? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            print("Nothing deleted.")
            return EXIT_NOT_FOUND
    mgr.delete_run(args.run_id, force=args.force)
    if args.json:
        _emit_json({"deleted": [args.run_id]})
    else:
        print(f"Deleted run {args.run_id}")
    return EXIT_OK


def cmd_cleanup(args: argparse.Namespace, mgr: CheckpointManager) -> int:
    """Delete all but the newest --keep runs; running runs only with --force."""
    plan = mgr.plan_cleanup(args.keep, args.force)  # the engine decides what goes
    doomed, spared = plan.doomed, plan.kept_running
    if not args.dry_run:
        for run_id in doomed:
            mgr.delete_run(run_id, force=args.force)
    if args.json:
        _emit_json({"deleted": doomed, "kept_running": spared, "kept_newest": plan.kept_newest})
        return EXIT_OK
    verb = "Would delete" if args.dry_run else "Deleted"
    for run_id in doomed:
        print(f"{verb} run {run_id}")
    for run_id in spared:
        print(f"Kept run {run_id}: it is still running (use --force to delete it)")
    if not doomed:
        runs = len(plan.kept_newest) + len(spared)
        print(f"Nothing to clean up ({runs} runs, keeping {args.keep}).")
    return EXIT_OK


def cmd_unlock(args: argparse.Namespace, mgr: CheckpointManager) -> int:
    """Break the writer lock of a loader whose writer is gone."""
    mgr.get_run(args.run_id, loaders=False)  # "Run not found" first
    holder = mgr.unlock(args.run_id, args.loader, force=args.force)
    if args.json:
        _emit_json({"run_id": args.run_id, "loader": args.loader, "removed_lock": holder})
    elif holder is None:
        print(f"Loader {args.loader} of run {args.run_id} is not locked.")
    else:
        print(f"Removed the lock of {args.run_id}/{args.loader} held by {format_holder(holder)}")
    return EXIT_OK if holder is not None else EXIT_NOT_FOUND


def cmd_cursors(args: argparse.Namespace, mgr: CheckpointManager) -> int:
    """The SyncFeed cursor of each type tk_sync has synced: its skiptoken (everything up to it is in Neo4j),
    the feed's head as last seen, how far behind it the cursor is, when the type last caught up, and the
    run that wrote it. --type shows one type."""
    cursors = FeedCursors(mgr.base)
    if args.type is not None:
        state = cursors.get(args.type)
        if state is None:
            print(f"No cursor for type {args.type} in {cursors.folder}", file=sys.stderr)
            return EXIT_NOT_FOUND
        rows = [state.to_dict()]
    else:
        rows = cursors.report()
    if args.json:
        _emit_json(rows)
    elif not rows:
        print(f"No SyncFeed cursors in {cursors.folder}")
    else:
        print(format_cursors(rows))
    return EXIT_CHECKPOINT if any(r.get("state") == DAMAGED for r in rows) else EXIT_OK


def cmd_reset_cursor(args: argparse.Namespace, mgr: CheckpointManager) -> int:
    """Set a type's SyncFeed cursor to --skiptoken (default 0: the next sync loads the type from scratch),
    also backwards, which a sync never does (asks first unless --yes). A damaged cursor file is replaced."""
    cursors = FeedCursors(mgr.base)
    try:
        old = cursors.get(args.type)
        now = "no cursor" if old is None else f"skiptoken {old.skiptoken}"
    except InvalidNameError:
        raise
    except CheckpointError:
        now = "a damaged cursor file"
    if not args.yes:
        if not sys.stdin or not sys.stdin.isatty():
            print(
                f"Refusing to reset the cursor of {args.type} without confirmation: stdin is not a "
                "terminal. Add --yes to reset it.",
                file=sys.stderr,
            )
            return EXIT_USAGE
        answer = input(
            f"Reset the cursor of {args.type} ({now}) to skiptoken {args.skiptoken}? The next sync of "
            f"{args.type} then reads the feed from there. [y/N] "
        )
        if answer.strip().lower() not in ("y", "yes"):
            print("Nothing reset.")
            return EXIT_NOT_FOUND
    state = cursors.reset(args.type, args.skiptoken)
    if args.json:
        _emit_json({"reset": state.to_dict(), "was": now})
    else:
        print(f"Reset the cursor of {args.type} from {now} to skiptoken {state.skiptoken}")
    return EXIT_OK


# --- registration --------------------------------------------------------------------------------

Arg = tuple[tuple[str, ...], dict[str, Any]]


def _count(what: str, minimum: int = 0) -> Callable[[str], int]:
    """An argparse type for a count: the engine's :func:`check_count` decides, argparse reports (exit 2)."""

    def parse(text: str) -> int:
        try:
            return check_count(int(text), what, minimum)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(
                f"{what} must be a whole number of {minimum} or more, not {text!r}"
            ) from exc

    parse.__name__ = what  # argparse names the type in its message
    return parse


RUN_ID: Arg = (("--run-id",), {"required": True, "help": "the run id (the Airflow run_id)"})
FORCE: Arg = (
    ("--force",),
    {
        "action": "store_true",
        "help": "even when a live writer holds a loader (it then stops at its next save)",
    },
)


@dataclass(frozen=True)
class Command:
    """A subcommand: its name, one line of help, its function and its arguments (argparse's flags and
    options); the function's docstring is the subcommand's description."""

    name: str
    help: str
    run: Callable[[argparse.Namespace, CheckpointManager], int]
    arguments: Sequence[Arg] = field(default_factory=tuple)


COMMANDS: tuple[Command, ...] = (
    Command(
        "list",
        "list runs, newest first, with per-loader progress",
        cmd_list,
        (
            (("--incomplete",), {"action": "store_true", "help": "only runs that are not completed"}),
            (("--limit",), {"type": _count("limit", 1), "default": None, "help": "show at most N runs"}),
        ),
    ),
    Command(
        "show",
        "show one run: loaders, tries, last failures",
        cmd_show,
        (
            RUN_ID,
            (("--loader",), {"help": "only this loader"}),
            (
                ("--failures",),
                {"type": _count("failures"), "default": 10, "help": "how many recent failures to show (10)"},
            ),
        ),
    ),
    Command(
        "delete",
        "delete a run (asks unless --yes)",
        cmd_delete,
        (RUN_ID, (("--yes", "-y"), {"action": "store_true", "help": "do not ask"}), FORCE),
    ),
    Command(
        "cleanup",
        "delete old runs, keeping the newest N",
        cmd_cleanup,
        (
            (("--keep",), {"type": _count("keep"), "default": 5, "help": "runs to keep (default 5)"}),
            (("--force",), {"action": "store_true", "help": "also delete running runs"}),
            (("--dry-run",), {"action": "store_true", "help": "only say what would be deleted"}),
        ),
    ),
    Command(
        "resume",
        "re-run the failed tasks of the latest unfinished run (or --run-id) through the Airflow REST API",
        cmd_resume,
        RESUME_ARGUMENTS,
    ),
    Command(
        "unlock",
        "break the writer lock of a loader whose writer is gone",
        cmd_unlock,
        (
            RUN_ID,
            (("--loader",), {"required": True, "help": "the loader name, e.g. load_zaak or load_zaak.3"}),
            FORCE,
        ),
    ),
    Command(
        "cursors",
        "show the SyncFeed cursor of each type: skiptoken, behind head, last caught up",
        cmd_cursors,
        ((("--type",), {"help": "only this type, e.g. Persoon"}),),
    ),
    Command(
        "reset-cursor",
        "set a type's SyncFeed cursor to --skiptoken (default 0: from scratch; asks unless --yes)",
        cmd_reset_cursor,
        (
            (("type",), {"metavar": "TYPE", "help": "the SyncFeed type (category), e.g. Persoon"}),
            (
                ("--skiptoken",),
                {"type": _count("skiptoken"), "default": 0, "help": "the new skiptoken (default 0)"},
            ),
            (("--yes", "-y"), {"action": "store_true", "help": "do not ask"}),
        ),
    ),
)


def _common(parser: argparse.ArgumentParser, default: Any) -> None:
    parser.add_argument("--json", action="store_true", default=default, help="machine-readable output")
    parser.add_argument("--base", default=default, help="checkpoint base: folder or URL (see below)")


def build_parser(commands: Sequence[Command] = COMMANDS) -> argparse.ArgumentParser:
    """The ``tk-checkpoint`` parser: one subparser per command, ``--json`` and ``--base`` on each."""
    parser = argparse.ArgumentParser(
        prog="tk-checkpoint",
        description="Inspect and manage the item-level checkpoints of tk_ingest runs.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _common(parser, None)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in commands:
        p = sub.add_parser(
            command.name,
            help=command.help,
            description=command.run.__doc__,
            epilog=EPILOG,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        _common(p, argparse.SUPPRESS)  # so --json / --base work before or after the command
        for flags, options in command.arguments:
            p.add_argument(*flags, **options)
        p.set_defaults(handler=command.run)
    return parser


def _stdout_closed() -> int:
    """The reader of our output went away (``tk-checkpoint show … | head``): stop quietly, as a tool that
    SIGPIPE ends would, and say so with exit code 141 (128 + SIGPIPE, what a shell reports for those)."""
    with contextlib.suppress(OSError, ValueError):
        # what is still buffered cannot be written: point stdout at /dev/null so the exit flush is quiet
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    return EXIT_PIPE


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; the exit code is one of those in :data:`EPILOG`."""
    try:
        return _main(argv)
    except BrokenPipeError:
        return _stdout_closed()


def _main(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        sys.stdout.flush()  # --help into a closed pipe: BrokenPipeError here, handled by main
        return int(exc.code or 0)
    args.json = bool(args.json)
    base = resolve_base(args.base)
    try:
        code = args.handler(args, CheckpointManager(base))
        sys.stdout.flush()  # a closed pipe shows up here, not at exit, so main reports it as such
        return code
    except BrokenPipeError:
        raise  # an OSError, but not one of the checkpoints: main handles it
    except InvalidNameError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except RunNotFoundError as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_NOT_FOUND
    except CheckpointError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return EXIT_CHECKPOINT
    except (OSError, ImportError) as exc:
        print(f"Error: cannot read checkpoints at {base}: {exc}", file=sys.stderr)
        return EXIT_CHECKPOINT
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
