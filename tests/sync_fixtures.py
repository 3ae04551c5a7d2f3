"""The child program the SyncFeed crash test kills (``python -m tests.sync_fixtures …``): the types of
``--types`` synced in turn with the run's checkpoints and the durable cursors under ``--base``."""

from __future__ import annotations

import argparse
import json
import logging
import sys


def sync_with_checkpoints(
    url: str, driver, base: str, run_id: str, types: list[str], batch_size: int
) -> dict:
    """Each type synced from its cursor with its checkpoint of run ``run_id`` (created or reopened)."""
    from tk_checkpoint import CheckpointManager, LoaderCheckpoint
    from tk_checkpoint.cursor import FeedCursors

    from include.loaders.entities import get_entity
    from include.loaders.settings import ApiSettings
    from include.loaders.sync import sync_type, task_id_of
    from include.loaders.syncfeed import SyncFeedClient

    manager = CheckpointManager(base)
    manager.start_new_run(run_id=run_id)
    cursors = FeedCursors(base)
    results = {}
    settings = ApiSettings(base_url=url, max_retries=1, backoff_base=0.01, read_timeout=30.0)
    with SyncFeedClient(settings) as client:
        for name in types:
            with LoaderCheckpoint(manager, task_id_of(get_entity(name))) as cp:
                results[name] = sync_type(
                    name,
                    client=client,
                    driver=driver,
                    ledger=cp,
                    cursors=cursors,
                    run_id=run_id,
                    batch_size=batch_size,
                    prefetch_pages=0,
                )
    return results


def _main(argv: list[str]) -> int:
    p = argparse.ArgumentParser()
    for arg in ("--url", "--bolt", "--password", "--run-id", "--base", "--types"):
        p.add_argument(arg, required=True)
    p.add_argument("--batch-size", type=int, default=10)
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    # imported before READY, so kills aim at the sync itself
    import tk_checkpoint.cursor  # noqa: F401
    from neo4j import GraphDatabase

    import include.loaders.sync
    import include.loaders.syncfeed  # noqa: F401

    driver = GraphDatabase.driver(a.bolt, auth=("neo4j", a.password))
    driver.verify_connectivity()
    print("READY", flush=True)
    results = sync_with_checkpoints(a.url, driver, a.base, a.run_id, a.types.split(","), a.batch_size)
    print(json.dumps({k: v.to_dict() for k, v in results.items()}), flush=True)
    driver.close()
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
