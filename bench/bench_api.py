"""Benchmark: TK client + replay server on loopback, and the replay server alone.

    .venv/bin/python bench/bench_api.py [--n 50000] [--profile v4/2.0]

Starts ``python -m include.tk_replay`` in a separate process (so server and client do not share a GIL),
then measures:

- server alone: raw keep-alive GETs following ``@odata.nextLink`` without parsing JSON (pages/s, MB/s);
- server + client: ``TKClient.iter_pages`` over the same query (pages/s, entities/s) and the client's own
  CPU time per 1,000 entities (``time.thread_time`` of the client thread);
- the ratio: how much faster the server is than the client needs it to be.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from include.loaders.api import TKClient  # noqa: E402
from include.loaders.settings import ApiSettings  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(n: int, port: int) -> subprocess.Popen:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "include.tk_replay",
            "--port",
            str(port),
            "--generate",
            str(n),
            "--seed",
            "1",
            "--sets",
            "Zaak,Document",
            "--log-level",
            "WARNING",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    line = proc.stdout.readline() if proc.stdout else ""
    if "TK replay server" not in line:
        proc.kill()
        raise SystemExit(f"replay server did not start: {line!r}")
    return proc


def raw_pages(root: str, path: str) -> tuple[int, int, float]:
    """Follow nextLinks with one keep-alive connection, no JSON parsing: (pages, bytes, seconds)."""
    u = urlsplit(root)
    url: str | None = u.path + path
    pages = size = 0
    t0 = time.perf_counter()
    with contextlib.closing(http.client.HTTPConnection(u.hostname, u.port, timeout=60)) as conn:
        while url:
            conn.request("GET", url)
            body = conn.getresponse().read()
            pages += 1
            size += len(body)
            i = body.rfind(b'"@odata.nextLink":"')
            url = None
            if i >= 0:
                link = body[i + 19 : body.index(b'"', i + 19)].decode()
                url = link[len(f"http://{u.netloc}") :]
    return pages, size, time.perf_counter() - t0


def client_pages(base: str, profile: str, entity_set: str, **kw) -> tuple[int, int, float, float]:
    """(pages, entities, seconds, client CPU seconds) through TKClient."""
    with TKClient(ApiSettings(base_url=base, profile=profile)) as client:
        pages = entities = 0
        t0, c0 = time.perf_counter(), time.thread_time()
        for page in client.iter_pages(entity_set, **kw):
            pages += 1
            entities += len(page)
        wall, cpu = time.perf_counter() - t0, time.thread_time() - c0
    return pages, entities, wall, cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=50_000, help="entities per set (Zaak, Document)")
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = ap.parse_args()
    port = free_port()
    t0 = time.perf_counter()
    proc = start_server(args.n, port)
    base = f"http://127.0.0.1:{port}"
    results = {"n": args.n, "server_start_s": round(time.perf_counter() - t0, 2), "runs": []}
    try:
        for profile, prefix in (("v4/2.0", "/OData/v4/2.0"), ("v5", "/OData/v5")):
            raw_pages(base + prefix, "/Zaak?$top=1")  # warm-up
            cases = [
                ("Zaak", {}, "/Zaak"),
                (
                    "Document +expand Zaak",
                    {"expand": ["Zaak"], "select": ["Id", "DocumentNummer", "Titel"]},
                    None,
                ),
            ]
            for label, kw, raw_path in cases:
                entity_set = label.split()[0]
                if raw_path is None:
                    with TKClient(ApiSettings(base_url=base, profile=profile)) as client:
                        raw_path = client.build_url(entity_set, **kw)[len(base + prefix) :]
                cold_p, _, cold_sec = raw_pages(base + prefix, raw_path)  # first pass encodes the rows
                rp, rbytes, rsec = raw_pages(base + prefix, raw_path)
                cp, ce, csec, ccpu = client_pages(base, profile, entity_set, **kw)
                run = {
                    "profile": profile,
                    "query": label,
                    "server_alone_cold_pages_per_s": round(cold_p / cold_sec, 1),
                    "server_alone_pages_per_s": round(rp / rsec, 1),
                    "server_alone_MB_per_s": round(rbytes / rsec / 1e6, 1),
                    "client_pages_per_s": round(cp / csec, 1),
                    "client_entities_per_s": round(ce / csec),
                    "client_cpu_ms_per_1000_entities": round(ccpu / ce * 1e6, 1),
                    "pages": cp,
                    "entities": ce,
                    "server_to_client_speed_ratio": round((rp / rsec) / (cp / csec), 2),
                }
                results["runs"].append(run)
    finally:
        proc.terminate()
        proc.wait(10)
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(f"replay server: {args.n} Zaak + {args.n} Document, started in {results['server_start_s']} s")
    head = (
        f"{'profile':7} {'query':24} {'srv cold':>8} {'srv pages/s':>11} {'srv MB/s':>8} {'cli pages/s':>11} "
        f"{'cli ent/s':>9} {'cli CPU ms/1k':>13} {'ratio':>6}"
    )
    print(head)
    for r in results["runs"]:
        print(
            f"{r['profile']:7} {r['query']:24} {r['server_alone_cold_pages_per_s']:>8} "
            f"{r['server_alone_pages_per_s']:>11} "
            f"{r['server_alone_MB_per_s']:>8} "
            f"{r['client_pages_per_s']:>11} {r['client_entities_per_s']:>9} "
            f"{r['client_cpu_ms_per_1000_entities']:>13} {r['server_to_client_speed_ratio']:>6}"
        )
    print("srv cold = first pass (rows encoded); srv pages/s = later passes (rows cached)")
    print("ratio = server-alone pages/s / client pages/s (client CPU: JSON parse and renames)")


if __name__ == "__main__":
    main()
