"""Helpers for the loader tests and benchmarks: a replay server, a client on it, graph dumps, expected edges.

Also a child-process entry point (``python -m tests.loader_fixtures …``) that runs the loaders with a
checkpoint: the crash tests SIGKILL it at random points and rerun.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from include.loaders.entities import ENTITIES
from include.tk_replay.dataset import Dataset

ALL_ENTITIES: tuple[str, ...] = tuple(ENTITIES)
"""Every entity of the table, in table order (what ``tk_ingest`` loads by default)."""
ORIGINAL_SIX: tuple[str, ...] = ("Zaak", "Document", "Vergadering", "Agendapunt", "Activiteit", "Verslag")
"""The original tool's entities: what the Airflow standalone tests name (all 35 would be slow for nothing)."""
ALL_SIX = ALL_ENTITIES  # the name the loader tests use (every entry of the table: 35 today)


def make_client(url: str, **overrides: Any) -> Any:
    from include.loaders.api import TKClient
    from include.loaders.settings import ApiSettings

    settings = ApiSettings(base_url=url, max_retries=1, backoff_base=0.01, read_timeout=30.0)
    return TKClient(settings.with_overrides(**overrides) if overrides else settings)


@contextmanager
def replay(dataset: Dataset | None = None, faults: Any = None) -> Iterator[Any]:
    """A started in-process replay server over ``dataset`` (the real samples when None)."""
    from include.tk_replay.server import ReplayServer

    server = ReplayServer(dataset, faults=faults)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def expected_edges(ds: Dataset) -> set[tuple[str, str, str]]:
    """Every ``(type, start id, end id)`` the loaders of ``ds``'s entity table must write for ``ds``:
    each relationship of the table, from the link table or foreign key the dataset holds it in."""
    edges: set[tuple[str, str, str]] = set()
    for entity in ds.entities.values():
        for rel in entity.relationships:
            edges |= {(rel.type, a, b) for a, b in ds.relationship_edges(entity.name, rel)}
    return edges


def _plain(value: Any) -> Any:
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if hasattr(value, "iso_format"):  # neo4j.time values: keep type, instant and offset
        return f"{type(value).__name__}:{value.iso_format()}"
    return value


def dump_graph(driver: Any) -> dict[str, Any]:
    """The whole graph as sorted, comparable data: nodes (labels, properties) and edges (type, ends)."""
    nodes = driver.execute_query("MATCH (n) RETURN labels(n) AS labels, properties(n) AS props").records
    rels = driver.execute_query(
        "MATCH (a)-[r]->(b) RETURN type(r) AS t, a.id AS a, b.id AS b, properties(r) AS props"
    ).records
    node_rows = sorted(
        json.dumps(
            [sorted(r["labels"]), {k: _plain(v) for k, v in sorted(r["props"].items())}], sort_keys=True
        )
        for r in nodes
    )
    rel_rows = sorted(json.dumps([r["t"], r["a"], r["b"], r["props"]], sort_keys=True) for r in rels)
    return {"nodes": node_rows, "rels": rel_rows}


def graph_edges(driver: Any) -> list[tuple[str, str, str]]:
    recs = driver.execute_query("MATCH (a)-[r]->(b) RETURN type(r) AS t, a.id AS a, b.id AS b").records
    return [(r["t"], r["a"], r["b"]) for r in recs]


def wipe(driver: Any) -> None:
    with driver.session() as session:  # CALL … IN TRANSACTIONS needs an auto-commit transaction
        session.run("MATCH (n) CALL (n) { DETACH DELETE n } IN TRANSACTIONS OF 10000 ROWS").consume()


def load_all(
    client: Any, driver: Any, entities: Iterable[str] = ALL_ENTITIES, **kwargs: Any
) -> dict[str, Any]:
    from include.loaders.load import load_entity

    return {e: load_entity(e, client=client, driver=driver, **kwargs) for e in entities}


def _child_main(argv: list[str]) -> int:
    """Run the loaders of ``--entities`` with checkpoints (the process the crash test kills)."""
    p = argparse.ArgumentParser()
    p.add_argument("--url", required=True)
    p.add_argument("--bolt", required=True)
    p.add_argument("--password", required=True)
    p.add_argument("--run-id", required=True)
    p.add_argument("--base", required=True)
    p.add_argument("--batch-size", type=int, default=10)
    p.add_argument("--entities", default=",".join(ALL_ENTITIES))
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    import tk_checkpoint  # noqa: F401 - imported before READY, so kills aim at the load itself
    from neo4j import GraphDatabase

    from include.loaders.load import run_loaders

    driver = GraphDatabase.driver(a.bolt, auth=("neo4j", a.password))
    driver.verify_connectivity()
    client = make_client(a.url)
    _ = client.profile  # the API version found before READY too: the kills aim at the load itself
    print("READY", flush=True)
    results = run_loaders(
        a.entities.split(","),
        client=client,
        driver=driver,
        checkpoint_base=a.base,
        run_id=a.run_id,
        batch_size=a.batch_size,
        progress_seconds=3600,
        count=False,
    )
    print(json.dumps({k: v.to_dict() for k, v in results.items()}), flush=True)
    driver.close()
    return 0


if __name__ == "__main__":
    sys.exit(_child_main(sys.argv[1:]))
