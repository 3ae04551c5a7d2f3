"""OData value semantics shared by the client, ``tk-api probe`` and the offline server.

The order the real API (SQL Server behind ASP.NET OData) gives ``Edm.Guid`` keys, and ``Edm.DateTimeOffset``
values as exact 100-ns ticks (the API writes 7 fractional digits; Python's datetime keeps 6). The offline
server orders and compares with these; the probe checks a live server's default order with them.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime


def guid_sort_key(guid: str) -> tuple[str, str, str, str, str]:
    """The order SQL Server gives ``uniqueidentifier`` values, the order of the real API's pages.

    The last group sorts first (the real Stemming page and its ``$skiptoken`` follow it), so pages are
    not in plain string order. Expects the lower-case 36-character form.
    """
    return (guid[24:], guid[19:23], guid[14:18], guid[9:13], guid[0:8])


_TICKS_PER_SECOND = 10_000_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_DTO_RE = re.compile(r"^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(?::\d{2})?)(?:\.(\d{1,7}))?(Z|[+-]\d{2}:\d{2})$")


def parse_ticks(value: str) -> int:
    """An OData DateTimeOffset string as 100-ns ticks since 1970 UTC (exact to the 7th digit)."""
    m = _DTO_RE.match(value)
    if not m:
        raise ValueError(f"not a DateTimeOffset: {value!r}")
    base, frac, tz = m.groups()
    dt = datetime.fromisoformat(base + ("+00:00" if tz == "Z" else tz))
    delta = dt - _EPOCH
    ticks = (delta.days * 86400 + delta.seconds) * _TICKS_PER_SECOND + delta.microseconds * 10
    return ticks + (int(frac.ljust(7, "0")) if frac else 0)


def format_ticks(ticks: int) -> str:
    """Ticks as the API writes ``ApiGewijzigdOp``: UTC, 7 fractional digits, ``Z``."""
    seconds, frac = divmod(ticks, _TICKS_PER_SECOND)
    dt = datetime.fromtimestamp(seconds, UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S") + f".{frac:07d}Z"
