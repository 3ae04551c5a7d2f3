"""``python -m include.loaders``: load entities into Neo4j without Airflow (settings from the environment).

    python -m include.loaders [ENTITY ...] [--start ISO] [--end ISO] [--run-id ID] [--checkpoint-base BASE]

The TK API from ``TK_API_BASE_URL`` / ``TK_API_PROFILE`` (``ApiSettings.from_env``); Neo4j from the
Airflow connection ``--conn-id`` (default ``neo4j_default``; its ``schema`` names the database);
checkpoints under ``--checkpoint-base`` or ``TK_CHECKPOINT_BASE`` (none when neither is set). The exit
status is 1 when items still fail at the end.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from datetime import datetime

from include.loaders.entities import CORE_ENTITIES
from include.loaders.load import run_loaders
from include.loaders.settings import DEFAULT_BATCH_SIZE, DEFAULT_CONN_ID


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the command line, check the API's ``$metadata``, run the loaders; the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m include.loaders", description="Load TK entities into Neo4j without Airflow."
    )
    parser.add_argument(
        "entities", nargs="*", default=list(CORE_ENTITIES), help="entity names (default: the core five)"
    )
    parser.add_argument("--start", type=datetime.fromisoformat, help="window start (ISO, tz-aware)")
    parser.add_argument("--end", type=datetime.fromisoformat, help="window end, exclusive (ISO, tz-aware)")
    parser.add_argument("--run-id", help="checkpoint run id (reuse it to resume)")
    parser.add_argument("--checkpoint-base", help="checkpoint base (default: TK_CHECKPOINT_BASE, or none)")
    parser.add_argument("--conn-id", default=DEFAULT_CONN_ID, help="Airflow connection of Neo4j")
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    # imported here: --help needs neither Airflow nor the checkpoint engine
    from tk_checkpoint.settings import base_from_env

    from include.loaders.api import TKClient
    from include.loaders.entities import requirements
    from include.loaders.graph import connect, connection_database
    from include.loaders.settings import ApiSettings

    base = args.checkpoint_base or base_from_env()  # no base: no checkpoints
    with TKClient(ApiSettings.from_env()) as client:
        client.check_metadata(requirements(args.entities))
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
    return 1 if any(r.failed for r in results.values()) else 0


if __name__ == "__main__":
    raise SystemExit(main())
