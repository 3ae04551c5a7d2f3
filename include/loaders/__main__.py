"""``python -m include.loaders``: load entities into Neo4j without Airflow (settings from the environment).

    python -m include.loaders [ENTITY ...] [--start ISO] [--end ISO] [--run-id ID] [--checkpoint-base BASE]

The TK API from ``TK_API_BASE_URL`` / ``TK_API_PROFILE`` (``ApiSettings.from_env``; the default ``auto``
finds the version, v5 then v4/2.0, and logs which one answered); Neo4j from the
Airflow connection ``--conn-id`` (default ``neo4j_default``; its ``schema`` names the database);
checkpoints under ``--checkpoint-base`` or ``TK_CHECKPOINT_BASE`` (none when neither is set). The exit
status is 1 when items still fail at the end, 2 when the load could not run or stopped (the API or Neo4j
unreachable, a bad argument, a checkpoint that cannot be opened): one line on stderr says why.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from datetime import UTC, datetime

from include.loaders.entities import CORE_ENTITIES, get_entity
from include.loaders.load import run_loaders
from include.loaders.settings import DEFAULT_BATCH_SIZE, DEFAULT_CONN_ID, MAX_BATCH_SIZE


def _when(value: str) -> datetime:
    """An ISO date or datetime (UTC when it has no offset) in the supported range of the pipeline."""
    from include.loaders.pipeline import ConfError, in_supported_range

    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not an ISO date or datetime") from None
    try:  # the DAG's range, checked by the DAG's own rule
        return in_supported_range("date", parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC))
    except ConfError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _batch_size(value: str) -> int:
    """Items per transaction: an integer from 1 to MAX_BATCH_SIZE (the DAG param's range)."""
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid int value: {value!r}") from None
    if not 1 <= n <= MAX_BATCH_SIZE:
        raise argparse.ArgumentTypeError(f"batch_size must be between 1 and {MAX_BATCH_SIZE}, got {n}")
    return n


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the command line, check the API's ``$metadata``, run the loaders; the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m include.loaders", description="Load TK entities into Neo4j without Airflow."
    )
    parser.add_argument(
        "entities", nargs="*", default=list(CORE_ENTITIES), help="entity names (default: the core five)"
    )
    parser.add_argument("--start", type=_when, help="window start (ISO; UTC when without offset)")
    parser.add_argument("--end", type=_when, help="window end, exclusive (ISO; UTC when without offset)")
    parser.add_argument("--run-id", help="checkpoint run id (reuse it to resume)")
    parser.add_argument("--checkpoint-base", help="checkpoint base (default: TK_CHECKPOINT_BASE, or none)")
    parser.add_argument("--conn-id", default=DEFAULT_CONN_ID, help="Airflow connection of Neo4j")
    parser.add_argument("--batch-size", type=_batch_size, default=DEFAULT_BATCH_SIZE)
    args = parser.parse_args(argv)
    if args.start and args.end and args.end <= args.start:
        parser.error(f"--end {args.end.isoformat()} must be after --start {args.start.isoformat()}")
    for name in args.entities:
        try:
            get_entity(name)
        except KeyError as e:
            parser.error(str(e.args[0]))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    # imported here: --help needs neither Airflow nor the checkpoint engine
    from tk_checkpoint.settings import base_from_env

    base = args.checkpoint_base or base_from_env()  # no base: no checkpoints
    try:
        results = _load(args, base)
    except Exception as e:  # one line that names the problem; the log above has the details
        if not _expected(e):
            raise
        print(f"python -m include.loaders: {_source(e)}{type(e).__name__}: {e}", file=sys.stderr)
        return 2
    return 1 if any(r.failed for r in results.values()) else 0


def _source(error: Exception) -> str:
    """``"Neo4j "`` for the driver's own errors, whose text names only an address."""
    from neo4j.exceptions import DriverError, Neo4jError

    return "Neo4j " if isinstance(error, (DriverError, Neo4jError)) else ""


def _expected(error: Exception) -> bool:
    """Errors a user can meet (API, Neo4j, checkpoints, settings); anything else is a bug and raises."""
    from neo4j.exceptions import DriverError, Neo4jError
    from tk_checkpoint import CheckpointError

    from include.loaders.api import ApiError
    from include.loaders.graph import Neo4jConnectionError
    from include.loaders.pipeline import PipelineError

    known = (ApiError, Neo4jConnectionError, PipelineError, CheckpointError, DriverError, Neo4jError)
    return isinstance(error, (*known, ValueError))


def _load(args: argparse.Namespace, base: str | None) -> dict:
    """The load itself: the API's ``$metadata`` checked and its model reported, then the loaders in turn."""
    from include.loaders.api import TKClient
    from include.loaders.entities import get_entity, requirements
    from include.loaders.graph import connect, connection_database
    from include.loaders.model import model_report
    from include.loaders.settings import ApiSettings

    with TKClient(ApiSettings.from_env()) as client:
        schema = client.check_metadata(requirements(args.entities))
        entities = [get_entity(e) for e in args.entities]
        model_report(entities, schema, client.profile, client.root).log()
        with connect(args.conn_id) as driver:
            results = run_loaders(
                args.entities,
                client=client,
                driver=driver,
                checkpoint_base=base,
                run_id=args.run_id,
                start=args.start,
                end=args.end,
                batch_size=args.batch_size,
                database=connection_database(args.conn_id),
            )
    return results


if __name__ == "__main__":
    raise SystemExit(main())
