"""``python -m include.tk_replay``: run the offline TK OData API server."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import time
from pathlib import Path

from include.loaders.api_profiles import PROFILES
from include.loaders.entities import ENTITIES
from include.tk_replay.dataset import Dataset
from include.tk_replay.faults import FaultConfig
from include.tk_replay.generator import kamerstukdossier_table
from include.tk_replay.server import ReplayServer

EPILOG = """\
examples:
  python -m include.tk_replay --port 8123                       # the real v4/2.0 samples
  python -m include.tk_replay --port 8123 --generate 5000 --seed 1
  python -m include.tk_replay --port 8123 --generate 5000 --save /tmp/tkdata  # save, then serve
  python -m include.tk_replay --port 8123 --data /tmp/tkdata --error-rate 0.1 --throttle-rate 0.05
  python -m include.tk_replay --port 8123 --versions v4/2.0          # v5 closed (404): auto picks v4/2.0
  python -m include.tk_replay --port 8123 --versions v5 --no-next-link v5   # v5 pages without nextLink

then point the loaders at it:
  TK_API_BASE_URL=http://127.0.0.1:8123        (TK_API_PROFILE=auto: v5 if served, else v4/2.0)

any OData v4 client works (the OData v4.01 specification, see include/tk_replay/server.py):
  curl -s 'localhost:8123/OData/v4/2.0/Zaak?$top=1&$format=application/json;odata.metadata=full'
  curl -s 'localhost:8123/OData/v4/2.0/Zaak?$top=5&$expand=Document($select=Id,Titel;$count=true)'
  curl -s 'localhost:8123/OData/v4/2.0/Document(<id>)/resource' -o document.pdf   # the file's bytes

admin (not part of the TK API):
  curl -s localhost:8123/_faults                                  # current faults and counts
  curl -s -XPOST localhost:8123/_faults -d '{"error_rate": 0.2}'  # replace the faults ({} clears)
  curl -s -XPOST localhost:8123/_mutate -d '{"seed": 2, "fraction": 0.05}'   # change data for a delta load
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m include.tk_replay",
        description="Offline TK OData API: serves /OData/v4/2.0/ and /OData/v5/ from the real samples "
        "(default), a data folder or generated data, with optional fault injection.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8123, help="port (default 8123; 0 picks a free one)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--data", type=Path, help="dataset folder (<EntitySet>.json, links.json, metadata.xml)")
    src.add_argument("--generate", type=int, metavar="N", help="generate N entities per entity set")
    p.add_argument("--seed", type=int, default=0, help="generator seed (default 0)")
    p.add_argument(
        "--kamerstukdossier",
        action="store_true",
        help="serve Kamerstukdossier and its links from Zaak and Document too (generated, or in --data)",
    )
    p.add_argument(
        "--sets",
        help=f"comma-separated entity sets to generate (default: the entity table, {','.join(ENTITIES)})",
    )
    p.add_argument("--save", type=Path, help="write the dataset to this folder before serving")
    p.add_argument(
        "--drop",
        action="append",
        default=[],
        metavar="TYPE.PROP",
        help="serve every profile without this property (canonical name, e.g. Zaak.Titel): absent from "
        "$metadata and the data, unknown to queries; repeatable",
    )
    v = p.add_argument_group("API versions")
    v.add_argument(
        "--versions",
        metavar="VERSION",
        nargs="+",
        choices=list(PROFILES),
        help=f"the versions served (default: all, {' '.join(PROFILES)}); the others answer 404",
    )
    v.add_argument(
        "--no-next-link",
        metavar="VERSION",
        nargs="*",
        choices=list(PROFILES),
        help="these versions (none named: all) page WITHOUT @odata.nextLink: a full page and no link, "
        "so only a client that pages by keyset gets every row",
    )
    f = p.add_argument_group("faults (rates are shares of data requests, 0..1)")
    f.add_argument("--fault-seed", type=int, default=0, help="seed of the fault draw (default 0)")
    f.add_argument("--latency", type=float, default=0.0, help="seconds added to every data request")
    f.add_argument("--error-rate", type=float, default=0.0, help="HTTP 500 with the real error body")
    f.add_argument("--throttle-rate", type=float, default=0.0, help="HTTP 429 with Retry-After")
    f.add_argument("--retry-after", type=int, default=1, help="Retry-After seconds for 429 (default 1)")
    f.add_argument("--hang-rate", type=float, default=0.0, help="no answer for --hang-seconds")
    f.add_argument("--hang-seconds", type=float, default=30.0, help="how long a hang lasts (default 30)")
    f.add_argument("--truncate-rate", type=float, default=0.0, help="body cut in half")
    f.add_argument("--reset-rate", type=float, default=0.0, help="connection reset without an answer")
    f.add_argument(
        "--fail-after",
        metavar="ENTITY:N",
        help="every page request of ENTITY reaching beyond item N fails with 500 (resume tests)",
    )
    f.add_argument(
        "--max-skip",
        type=int,
        metavar="N",
        help="a $skip above N answers HTTP 500, as the real API did at skip=16500",
    )
    f.add_argument(
        "--without-id",
        metavar="GUID",
        action="append",
        default=[],
        help="serve the row with this Id without its Id property (a malformed row); repeatable",
    )
    p.add_argument("--log-level", default="INFO", help="logging level (default INFO)")
    return p


STOP_GRACE_SECONDS = 5
"""After SIGTERM the server has this long to shut down; then SIGALRM ends the process regardless."""


class _StopFlag:
    """Set by SIGTERM. A plain attribute, no lock: a handler that takes a lock the main thread holds at
    that moment (an Event's) would deadlock, and one that raises lands wherever the main thread happens
    to be (starting the server thread, inside a ``finally``), where it can be lost."""

    requested = False

    def install(self) -> None:
        """SIGTERM (``make stop``) always ends the process: the first asks the main loop to stop and arms
        an alarm (SIGALRM's default action ends the process) in case the shutdown hangs; a second one
        exits at once."""

        def handler(signum: int, frame: object) -> None:
            if self.requested:
                os._exit(128 + signum)
            self.requested = True
            signal.alarm(STOP_GRACE_SECONDS)

        signal.signal(signal.SIGTERM, handler)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    stop = _StopFlag()
    stop.install()  # first: a SIGTERM while the dataset is built counts too
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    drops: dict[str, list[str]] = {}
    for spec in args.drop:
        entity_type, _, prop = spec.partition(".")
        if not entity_type or not prop:
            print(f"--drop wants TYPE.PROP, e.g. Zaak.Titel, got {spec!r}", file=sys.stderr)
            return 2
        drops.setdefault(entity_type, []).append(prop)
    fail_entity, fail_items = None, 0
    if args.fail_after:
        fail_entity, _, n = args.fail_after.partition(":")
        if not n.isdigit():
            print(f"--fail-after wants ENTITY:N, e.g. Zaak:500, got {args.fail_after!r}", file=sys.stderr)
            return 2
        fail_items = int(n)
    try:
        faults = FaultConfig(
            seed=args.fault_seed,
            latency=args.latency,
            error_rate=args.error_rate,
            throttle_rate=args.throttle_rate,
            retry_after=args.retry_after,
            hang_rate=args.hang_rate,
            hang_seconds=args.hang_seconds,
            truncate_rate=args.truncate_rate,
            reset_rate=args.reset_rate,
            fail_after_entity=fail_entity,
            fail_after_items=fail_items,
            without_id=frozenset(args.without_id),
            max_skip=args.max_skip,
        )
        if args.data:
            dataset = Dataset.load(args.data, kamerstukdossier_table() if args.kamerstukdossier else None)
        elif args.generate is not None:
            extra = {"sets": [s.strip() for s in args.sets.split(",") if s.strip()]} if args.sets else {}
            dataset = Dataset.generate(
                args.generate, args.seed, with_kamerstukdossier=args.kamerstukdossier, **extra
            )
        else:
            dataset = Dataset.samples()
    except (ValueError, FileNotFoundError) as e:
        print(f"tk_replay: {e}", file=sys.stderr)
        return 2
    if args.save:
        dataset.save(args.save)
        print(f"Dataset written to {args.save}")
    if stop.requested:
        return 0
    # ReplayServer's next_link: True (every version links), False (none does) or the versions without
    next_link: bool | list[str] = True if args.no_next_link is None else (args.no_next_link or False)
    server = ReplayServer(
        dataset,
        host=args.host,
        port=args.port,
        faults=faults,
        drops=drops,
        versions=args.versions,
        next_link=next_link,
    )
    try:
        url = server.start()
    except OSError as e:
        print(
            f"tk_replay: cannot listen on {args.host}:{args.port}: {e}. Pick another --port.", file=sys.stderr
        )
        return 1
    roots = " and ".join(
        f"{url}{p.path}/" + ("" if name in server.next_link_versions else " (no nextLink)")
        for name, p in server.profiles.items()
    )
    print(f"TK replay server: {roots}  ({json.dumps(dataset.summary())})", flush=True)
    try:
        while not stop.requested and server.serving:
            time.sleep(0.1)  # a signal interrupts the sleep; the handler only sets the flag
    except KeyboardInterrupt:  # Ctrl-C in a terminal
        pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
