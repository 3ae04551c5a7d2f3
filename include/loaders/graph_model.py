"""The tables of ``docs/graph-model.md``, generated from the entity table.

``docs/graph-model.md`` holds each table between two markers; the prose around them is written by hand.
Regenerate after editing the table (``tests/test_entity_table.py`` fails until you do)::

    python -m include.loaders.graph_model           # rewrite the tables in docs/graph-model.md
    python -m include.loaders.graph_model --check   # exit 1 when they differ from the table
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Mapping
from pathlib import Path

from include.loaders.entities import EDM_KINDS, ENTITIES, Entity, Kind, property_name

DOC = Path(__file__).resolve().parents[2] / "docs" / "graph-model.md"
"""The page whose tables this module writes."""

_CMD = "python -m include.loaders.graph_model"
_BEGIN = "<!-- BEGIN generated table: {name} (" + _CMD + ") -->"
_END = "<!-- END generated table: {name} -->"


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def _doc(text: str) -> str:
    """A table's description as a table cell: first letter lower-cased, no final full stop."""
    text = text.strip().rstrip(".")
    return text[:1].lower() + text[1:]


def _nodes(entities: Mapping[str, Entity]) -> str:
    rows = [[f"`:{e.label}`", f"`{e.entity_set}`", f"`{e.loader}`", _doc(e.doc)] for e in entities.values()]
    return _table(["label", "API entity set", "loader (= task id, checkpoint name)", "what it is"], rows)


def _properties(entities: Mapping[str, Entity]) -> str:
    types = list(dict.fromkeys(k.spec.neo4j for k in Kind))
    rows = []
    for e in entities.values():
        by_type: dict[str, list[str]] = {t: [] for t in types}
        for api_name, kind in e.all_properties.items():
            by_type[kind.spec.neo4j].append(f"`{property_name(api_name)}`")
        rows.append([f"`:{e.label}`", *(", ".join(by_type[t]) for t in types)])
    return _table(["label", *types], rows)


def _edm_types(kind: Kind) -> str:
    """The EDM types a served property of ``kind`` can have (:data:`EDM_KINDS`); a table-only kind
    (``INT_OPT``) shows the type it requires."""
    types = [edm for edm, k in EDM_KINDS.items() if k is kind] or [kind.spec.edm]
    return ", ".join(f"`{t}`" for t in types)


def _kinds() -> str:
    rows = [
        [
            f"`{k.name}`",
            _edm_types(k),
            k.spec.neo4j,
            f"`{k.spec.cypher}()`" if k.spec.cypher else "",
            k.spec.doc,
        ]
        for k in Kind
    ]
    return _table(["kind", "API (EDM) type", "Neo4j type", "Cypher conversion", "how"], rows)


def _relationships(entities: Mapping[str, Entity]) -> str:
    rows = []
    for e in entities.values():
        for r in e.relationships:
            if r.foreign_key is not None:
                source = f"foreign key `{e.name}.{r.foreign_key}` (n:1)"
            else:
                source = f"navigation `{e.name}.{r.navigation}`, `$expand={r.navigation}($select=Id)`"
            direction = f"`(:{e.label})-[:{r.type}]->(:{r.target})`"
            feed = f"`<{r.feed_name} ref=…/>` in `<{e.feed_element}>`"
            rows.append([f"`{r.type}`", direction, source, feed, f"`{e.loader}`", _doc(r.doc)])
    header = ["type", "direction (holder -> target)", "OData source", "SyncFeed ref", "owner (loader)"]
    return _table([*header, "meaning"], rows)


def _feed(entities: Mapping[str, Entity]) -> str:
    rows = []
    for e in entities.values():
        renamed = [
            f"`{api}` = `{e.feed_field(api)}`"
            for api in e.all_properties
            if e.feed_field(api) != property_name(api) and api not in e.odata_only
        ]
        skipped = [f"`{name}`: {why}" for name, why in e.feed_ignored.items()]
        skipped += [f"`{api}` (OData only): {why}" for api, why in e.odata_only.items()]
        rows.append(
            [
                f"`:{e.label}`",
                f"`{e.feed_category}` / `<{e.feed_element}>`",
                ", ".join(renamed),
                "; ".join(skipped),
            ]
        )
    header = ["label", "SyncFeed category / element", "names that differ", "not stored"]
    return _table(header, rows)


def graph_model_tables(entities: Mapping[str, Entity] | None = None) -> dict[str, str]:
    """Table name -> Markdown table, for ``entities`` (default ``ENTITIES``): nodes, properties, kinds,
    relationships, the SyncFeed names (feed)."""
    entities = ENTITIES if entities is None else entities
    return {
        "nodes": _nodes(entities),
        "properties": _properties(entities),
        "kinds": _kinds(),
        "relationships": _relationships(entities),
        "feed": _feed(entities),
    }


def render(text: str, entities: Mapping[str, Entity] | None = None) -> str:
    """``text`` (the page) with every generated table replaced by the one of ``entities``.

    Raises ValueError naming the table whose markers are missing.
    """
    for name, table in graph_model_tables(entities).items():
        begin, end = _BEGIN.format(name=name), _END.format(name=name)
        pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
        if not pattern.search(text):
            raise ValueError(f"{DOC.name}: no markers for the table {name!r} (expected a line {begin!r}).")
        text = pattern.sub(lambda _m, t=table, b=begin, e=end: f"{b}\n{t}\n{e}", text)
    return text


def main(argv: list[str] | None = None) -> int:
    """Rewrite (or ``--check``) the generated tables of ``docs/graph-model.md``."""
    p = argparse.ArgumentParser(
        prog=_CMD, description="Rewrite (or check) the generated tables of docs/graph-model.md."
    )
    p.add_argument("--check", action="store_true", help="exit 1 when the page differs from the entity table")
    p.add_argument("--path", type=Path, default=DOC, help=f"the page (default {DOC})")
    args = p.parse_args(argv)
    text = args.path.read_text(encoding="utf-8")
    fresh = render(text)
    if args.check:
        if fresh != text:
            print(f"{args.path}: the tables differ from the entity table; run {_CMD}", file=sys.stderr)
            return 1
        return 0
    if fresh != text:
        args.path.write_text(fresh, encoding="utf-8")
        print(f"{args.path}: tables regenerated")
    return 0


if __name__ == "__main__":
    sys.exit(main())
