"""The ledger: what the load loop needs of a checkpoint, and nothing more.

The loop (``include.loaders.load``) is the only code that talks to a ledger. It asks whether an item is
already done, records each committed batch and each failed item, counts skips once per streak, takes
failures off the record whose key never comes back (``clear_failed``), makes its records durable
(``save_progress``) and ends the ledger with ``complete`` or ``fail``.

Two implementations:

* ``tk_checkpoint.LoaderCheckpoint`` (the checkpoint engine; it satisfies this protocol structurally, with
  the names of the original checkpoint system);
* :class:`NullLedger`, for loads without checkpoints (a benchmark baseline, a one-off CLI load): it
  remembers nothing, so every item is new.

Save policy (``docs/checkpoints.md``, "When progress is saved"): the loop calls ``save_progress`` after
every committed batch, after an isolated failure, and before it ends; the ledger itself may save more
often but never less.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class Ledger(Protocol):
    """Item-level bookkeeping of one loader run (one Airflow task instance)."""

    @property
    def processed_count(self) -> int:
        """Items on record as processed (by any earlier try, and this one so far)."""
        ...

    def is_processed(self, item_id: str) -> bool:
        """Is the item on record as processed? A pure question: it counts nothing."""
        ...

    def failed_items(self) -> Mapping[str, Mapping[str, Any]]:
        """The items on record as failed (a copy), ``{item_id: {"error": …, "attempts": …, …}}``."""
        ...

    def set_total_items(self, total: int | None) -> None:
        """The window's size as the API counts it (for the progress percentage)."""
        ...

    def mark_processed_many(self, item_ids: Iterable[str]) -> None:
        """Record items whose batch has committed to Neo4j (never before the commit)."""
        ...

    def mark_failed(self, item_id: str, error: str) -> None:
        """Record a failed item with its error (attempts are counted)."""
        ...

    def mark_skipped(self, count: int = 1) -> None:
        """Count ``count`` items skipped because they were already processed."""
        ...

    def clear_failed(self, item_id: str, reason: str) -> bool:
        """Take a failure off the record because its key will not come back (``reason`` says why: the
        API no longer serves it in the window, …); False when the item had no failure on record."""
        ...

    def save_progress(self) -> bool:
        """Make everything recorded so far durable; False when there was nothing new."""
        ...

    def complete(self) -> None:
        """End the ledger as completed (saved, compacted, released)."""
        ...

    def fail(self, error: Any = None) -> None:
        """End the ledger as failed with ``error`` (saved, released); what is processed stays so."""
        ...


class NullLedger:
    """A ledger that remembers nothing: every item is new, nothing is saved. For loads without checkpoints."""

    processed_count = 0

    def is_processed(self, item_id: str) -> bool:
        return False

    def failed_items(self) -> Mapping[str, Mapping[str, Any]]:
        return {}

    def set_total_items(self, total: int | None) -> None:
        pass

    def mark_processed_many(self, item_ids: Iterable[str]) -> None:
        pass

    def mark_failed(self, item_id: str, error: str) -> None:
        pass

    def mark_skipped(self, count: int = 1) -> None:
        pass

    def clear_failed(self, item_id: str, reason: str) -> bool:
        return False

    def save_progress(self) -> bool:
        return False

    def complete(self) -> None:
        pass

    def fail(self, error: Any = None) -> None:
        pass
