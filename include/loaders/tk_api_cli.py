"""``tk-api``: commands about the TK OData API itself (today one: ``tk-api probe``).

    tk-api probe [--base-url URL] [--out DIR] [--timeout S] [--sets Zaak,Document,…] [--retries N]

Exit status of ``probe``: 0 when at least one version answered, 2 when none did (the report is written
all the same), 1 on bad arguments. ``python -m include.loaders.probe [options]`` is the same command.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from include.loaders.api import redact_url
from include.loaders.api_profiles import PROFILES
from include.loaders.entities import ENTITIES
from include.loaders.probe import TOP_TRIALS, ProbeSettings, run_probe
from include.loaders.probe_report import write_report
from include.loaders.settings import ApiSettings

_PROBE_HELP = f"""\
Find out what the TK OData API at the base URL does today, and write it down as a report to attach to
an issue (also: python -m include.loaders.probe).

Every version the project knows is tried by its $metadata: {", ".join(PROFILES)}.
For each one that answers, the report gives:
  - its entity sets and properties against the v4/2.0 reference: missing, new, EDM type changed,
    renamed (the renames the profile knows marked as known, the others as likely renames);
  - paging as measured: rows per page, @odata.nextLink or not and its form, the page after it,
    the $top cap (tried: {", ".join(map(str, TOP_TRIALS))}) and the default order of a first page;
  - the row count of each entity set (--sets);
  - the answer to one request of each kind the loaders send (window query, count, get-by-key,
    keyset page), each with its status, time, rows and error message.

Written into DIR: report.md (Markdown: a summary, then tables), report.json (the same facts) and
metadata-<version>.xml (the raw $metadata of each version that answered). One summary line goes to
stdout, progress to stderr.

No secrets: credentials in the base URL (https://user:password@host) are sent as HTTP basic auth to
that host only and never written; the report lists the request URLs without them and the headers sent
(User-Agent, Accept) without Authorization. Requests are retried (--retries) after a 5xx, a 429 or a
broken connection, never after a timeout; the report names every retried request.

Exit status: 0 when at least one version answered, 2 when none did (the report is still written), 1 on
bad arguments."""


def _sets(value: str) -> tuple[str, ...]:
    names = tuple(s.strip() for s in value.split(",") if s.strip())
    if not names:
        raise argparse.ArgumentTypeError("name at least one entity set, e.g. Zaak,Document")
    return names


def _positive(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number of seconds") from None
    if number <= 0:
        raise argparse.ArgumentTypeError(f"{value!r} must be > 0")
    return number


def _retries(value: str) -> int:
    if not value.isdigit():
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number >= 0")
    return int(value)


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors exit with status 1 (2 means "no version answered")."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        self.exit(1, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    """The ``tk-api`` argument parser."""
    parser = _Parser(prog="tk-api", description="Commands about the TK OData API.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    probe = sub.add_parser(
        "probe",
        help="report what the live API does (versions, model, paging, counts, answers)",
        description=_PROBE_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    probe.add_argument(
        "--base-url",
        metavar="URL",
        help="server root, e.g. https://gegevensmagazijn.tweedekamer.nl (default: TK_API_BASE_URL, as "
        "the loaders use it; a base ending with a version path such as /OData/v4/2.0 is accepted)",
    )
    probe.add_argument(
        "--out",
        metavar="DIR",
        type=Path,
        help="folder for the report (default: ./tk-api-probe-<UTC timestamp>)",
    )
    probe.add_argument(
        "--timeout",
        metavar="S",
        type=_positive,
        default=120.0,
        help="seconds to wait for one answer; some real queries take 20-50 s (default: 120)",
    )
    probe.add_argument(
        "--sets",
        metavar="SETS",
        type=_sets,
        default=tuple(ENTITIES),
        help="comma-separated entity sets to count; those of the entity table also get the loaders' "
        f"requests (default: the table's, {','.join(ENTITIES)})",
    )
    probe.add_argument(
        "--retries",
        metavar="N",
        type=_retries,
        default=2,
        help="retries per request after a 5xx, a 429 or a broken connection (default: 2)",
    )
    return parser


def _default_base_url() -> str:
    """``TK_API_BASE_URL`` as the loaders read it. ``TK_API_PROFILE`` is left out: the probe tries every
    version whatever the loaders are set to use."""
    import os

    env = {k: v for k, v in os.environ.items() if k != "TK_API_PROFILE"}
    return ApiSettings.from_env(env).base_url


def _probe(args: argparse.Namespace) -> int:
    try:
        base_url = args.base_url or _default_base_url()
        settings = ProbeSettings(
            base_url=base_url, sets=args.sets, timeout=args.timeout, retries=args.retries
        )
    except ValueError as e:
        print(f"tk-api probe: error: {e}", file=sys.stderr)
        return 1
    out = args.out or Path(f"tk-api-probe-{datetime.now(UTC):%Y%m%dT%H%M%SZ}")
    if out.exists() and not out.is_dir():
        print(f"tk-api probe: error: --out {out} exists and is not a folder.", file=sys.stderr)
        return 1

    def progress(line: str) -> None:
        print(f"tk-api probe: {line}", file=sys.stderr, flush=True)

    progress(f"probing {redact_url(base_url)}")
    report = run_probe(settings, progress=progress)
    path = write_report(report, out)
    print(f"{report.summary_line()}; report: {path}")
    return 0 if report.answering else 2


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``tk-api`` with ``argv`` (default: the command line); the exit status (``--help``: 0, a bad
    argument: 1, after a message on stderr)."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # argparse exits for --help and for usage errors
        return e.code if isinstance(e.code, int) else 1
    if args.command == "probe":
        return _probe(args)
    return 1  # pragma: no cover - argparse admits no other command


if __name__ == "__main__":
    sys.exit(main())
