"""The report both adversarial passes end with (``make adversarial``; the README quotes its figures)."""

from __future__ import annotations

import time
from collections.abc import Mapping


def print_report(sections: Mapping[str, tuple[int, int, int, int]], started: float) -> int:
    """Print one row per section (inputs, faults, lost, unclear) and the totals; the exit status: 1 when
    anything was lost or unclear, else 0. ``started`` is the pass's ``time.monotonic()`` at its start."""
    width = max(len("section"), *(len(name) for name in sections))
    print()
    print(f"{'section':<{width}} {'inputs':>7} {'faults':>7} {'lost':>5} {'unclear':>8}")
    for name, (inputs, faults, lost, unclear) in sections.items():
        print(f"{name:<{width}} {inputs:>7} {faults:>7} {lost:>5} {unclear:>8}")
    inputs, faults, lost, unclear = (sum(column) for column in zip(*sections.values(), strict=True))
    print()
    print(f"inputs tried:    {inputs}")
    print(f"faults injected: {faults}")
    print(f"items lost:      {lost}  (target 0)")
    print(f"unclear errors:  {unclear}  (target 0)")
    print(f"({time.monotonic() - started:.0f} s)")
    return 1 if lost or unclear else 0
