"""IdSet: the processed item ids of a loader, about 18 bytes per GUID instead of about 120.

Item ids are strings. Almost all are lower-case GUIDs (``28e3a47e-1c0b-4d4e-9a8f-0123456789ab``); a Python
``set`` of them costs about 85 bytes per ``str`` plus its hash-table slots. Here a GUID-shaped id is kept as
its 16 bytes:

* ``run``: one ``bytearray`` of 16-byte keys in ascending order, never changed once published, with a
  sparse index (every 64th key, a ``list`` of ``bytes``). A lookup bisects the index (C) and ``find``-s the
  key in one 1 KiB block (C): about a microsecond.
* ``recent``: a ``set`` of the 16-byte keys added since the last merge. When it reaches
  ``max(4096, len(run) / 64)`` keys it is merged into a new run (one pass of ``memcpy`` plus a binary search
  per new key), so merging costs O(1) amortized per id and ``recent`` stays a small fraction of the whole.

Any other string (``"item-5"``, upper-case GUIDs, ...) goes to a plain ``set`` of ``str``: ids are compared as
strings, and the upper-case and lower-case spelling of a GUID are different ids.

Thread safety: writers (``add``, ``update``, ``consolidate``) must be serialised by the caller (the
checkpoint's mutex). Readers (``in``) may run concurrently with one writer: a merge publishes the new
(run, index) pair with one assignment and only then replaces ``recent``, and a reader reads ``recent``
before the run, so a key is always found in one of the two.

The JSON helpers turn a run into the text of a JSON array (``"…","…"``) and back, a chunk at a time and
without one Python object per id: both are a handful of C-level passes over ``bytes``.
"""

from __future__ import annotations

import binascii
import json
import operator
import struct
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Iterator, Set, Sized
from functools import partial
from itertools import islice
from typing import Any

KEY = 16  # bytes per GUID key
BLOCK = 64  # keys per index entry
BLOCK_BYTES = KEY * BLOCK
MIN_MERGE = 4096  # recent keys before a merge (at least)
MERGE_FRACTION = 32  # ... or len(run) / MERGE_FRACTION, whichever is larger
BULK_MERGE = 65536  # the same for add_unchecked (bulk loads)
BULK_FRACTION = 4
MERGE_CHUNK = 4096  # run keys per step of a merge by chunks
CHUNK_KEYS = 8192  # keys per JSON chunk when writing (about 320 KB of text)
GUID_TEXT = 39  # '"' + 36 + '"' + ','
_HEX_DIGITS = b"0123456789abcdef"
_KEY_STRUCT = struct.Struct(f"{KEY}s")
_GUID_PUNCT = ((0, 34), (9, 45), (14, 45), (19, 45), (24, 45), (37, 34), (38, 44))  # '"', '-', ','


def guid_key(item: str) -> bytes | None:
    """The 16 bytes of a lower-case GUID string, or None when ``item`` is anything else."""
    if len(item) == 36 and item[8] == "-" and item[13] == "-" and item[18] == "-" and item[23] == "-":
        h = item.replace("-", "")
        try:
            key = bytes.fromhex(h)
        except ValueError:
            return None
        if len(key) == KEY and key.hex() == h:  # rejects upper case and whitespace (fromhex skips it)
            return key
    return None


def guid_str(key: bytes) -> str:
    h = key.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def guids_json(keys: bytes | bytearray | memoryview) -> bytes:
    """``"g1","g2",…,"gn"`` (JSON strings, comma separated, no brackets) for n 16-byte keys, n >= 1."""
    m = len(keys) // KEY
    # hex('-', 2) gives 8 groups of 4 hex digits per key, all separated by '-': 40 characters per key with
    # one more '-' appended. A GUID keeps the separators at 9, 14, 19, 24 of each 40; those at 4, 29 and 34
    # are deleted and the one at 39 becomes '","'.
    text = bytearray(bytes(keys).hex("-", 2).encode("ascii"))
    text += b"-"
    drop = b"\x00" * m
    text[4::40] = drop
    text[29::40] = drop
    text[34::40] = drop
    text[39::40] = b"|" * m
    text = text.translate(None, b"\x00")
    return b'"' + bytes(text[:-1]).replace(b"|", b'","') + b'"'


def parse_guids_json(text: bytes | bytearray | memoryview) -> bytes | None:
    """The inverse of :func:`guids_json` for whole entries each followed by a comma (39 bytes per GUID):
    the concatenated 16-byte keys, or None unless every entry is a lower-case GUID string."""
    m, rest = divmod(len(text), GUID_TEXT)
    if rest:
        return None
    text = bytes(text)
    for offset, char in _GUID_PUNCT:
        if text[offset::GUID_TEXT] != bytes((char,)) * m:
            return None
    digits = text.translate(None, b'",-')
    if len(digits) != 32 * m or digits.translate(None, _HEX_DIGITS):
        return None
    return binascii.unhexlify(digits)


def strictly_ascending(keys: bytes | bytearray, before: bytes | None = None) -> bool:
    """True when the 16-byte keys ascend strictly (and all follow ``before``)."""
    if not keys:
        return True
    seq = [keys[i : i + KEY] for i in range(0, len(keys), KEY)]
    if before is not None and not before < seq[0]:
        return False
    return all(map(operator.lt, seq, islice(seq, 1, None)))


def _index(run: bytearray | bytes) -> list[bytes]:
    return [bytes(run[o : o + KEY]) for o in range(0, len(run), BLOCK_BYTES)]


class IdSet(Set):
    """A set of item id strings, compact for GUIDs. See the module docstring.

    Supports ``in``, ``len``, iteration (strings; GUIDs in ascending order first), ``add``, ``update`` and the
    comparisons of :class:`collections.abc.Set` (``ids == {"a", "b"}``, ``{"a"} <= ids``).
    """

    __slots__ = ("_merge_at", "_other", "_recent", "_run", "_unchecked")
    __hash__ = None  # type: ignore[assignment]  # mutable

    def __init__(self, items: Iterable[Any] = ()) -> None:
        self._run: tuple[bytearray | bytes, list[bytes]] = (b"", [])
        self._recent: set[bytes] = set()
        self._other: set[str] = set()
        self._merge_at = MIN_MERGE
        self._unchecked = False  # recent may hold keys of the run (add_unchecked)
        if items:
            self.update(items)

    @classmethod
    def from_sorted_keys(cls, run: bytes | bytearray, other: Iterable[str] = ()) -> IdSet:
        """An IdSet of the strictly ascending 16-byte ``run`` (not checked) plus the non-GUID ``other``."""
        ids = cls()
        ids._publish(run)
        for item in other:
            ids.add(item)
        return ids

    @classmethod
    def from_keys(cls, keys: Iterable[bytes], other: Iterable[str] = ()) -> IdSet:
        """An IdSet of 16-byte keys in any order, with repeats."""
        return cls.from_sorted_keys(b"".join(sorted(set(keys))), other)

    # reading -------------------------------------------------------------------------------------

    def _in_run(self, key: bytes) -> bool:
        run, index = self._run
        i = bisect_right(index, key)
        if not i:
            return False
        start = (i - 1) * BLOCK_BYTES
        end = start + BLOCK_BYTES
        pos = run.find(key, start, end)
        while pos >= 0:
            if not pos % KEY:
                return True
            pos = run.find(key, pos + 1, end)  # matched across two keys: look further
        return False

    def __contains__(self, item: object) -> bool:
        if not isinstance(item, str):
            return False
        key = guid_key(item)
        if key is None:
            return item in self._other
        recent = self._recent  # before the run: see "Thread safety"
        return key in recent or self._in_run(key)

    def __len__(self) -> int:
        return len(self._run[0]) // KEY + len(self._recent) + len(self._other)

    def __iter__(self) -> Iterator[str]:
        run = self._run[0]
        for start in range(0, len(run), CHUNK_KEYS * KEY):
            yield from guids_json(run[start : start + CHUNK_KEYS * KEY]).decode("ascii")[1:-1].split('","')
        for key in list(self._recent):
            yield guid_str(key)
        yield from list(self._other)

    def __repr__(self) -> str:
        return f"IdSet({len(self)} ids: {len(self._run[0]) // KEY} packed, {len(self._recent)} recent, " + (
            f"{len(self._other)} other)"
        )

    @property
    def guid_count(self) -> int:
        return len(self._run[0]) // KEY + len(self._recent)

    def nbytes(self) -> int:
        """Approximate memory held (the run, its index, the recent and other sets, their items)."""
        import sys

        run, index = self._run
        return (
            sys.getsizeof(run)
            + sys.getsizeof(index)
            + sum(map(sys.getsizeof, index))
            + sys.getsizeof(self._recent)
            + sum(map(sys.getsizeof, self._recent))
            + sys.getsizeof(self._other)
            + sum(map(sys.getsizeof, self._other))
        )

    # writing -------------------------------------------------------------------------------------

    def add_new(self, item: str) -> bool:
        """Add ``item`` (a string); True when it was not there yet."""
        key = guid_key(item)
        if key is None:
            other = self._other
            if item in other:
                return False
            other.add(item)
            return True
        recent = self._recent
        if key in recent or self._in_run(key):
            return False
        recent.add(key)
        if len(recent) >= self._merge_at:
            self.consolidate()
        return True

    def add(self, item: str) -> None:
        self.add_new(item)

    def add_unchecked(self, item: str) -> None:
        """Add ``item`` without looking it up in the packed run: faster in bulk (replaying a journal). Until
        :meth:`consolidate` (which the caller must call after the last one) ``len`` may count an id twice;
        ``in`` is right all along."""
        key = guid_key(item)
        if key is None:
            self._other.add(item)
            return
        recent = self._recent
        recent.add(key)
        self._unchecked = True
        if len(recent) >= BULK_MERGE and len(recent) >= len(self._run[0]) // KEY // BULK_FRACTION:
            self.consolidate()

    def update(self, items: Iterable[Any]) -> None:
        """Add every item (converted with ``str``). Large inputs go in bulk (see :meth:`add_unchecked`)."""
        if isinstance(items, Sized) and len(items) * BULK_FRACTION >= max(len(self), MIN_MERGE):
            add = self.add_unchecked
            for item in items:
                add(str(item))
            self.consolidate()
            return
        add_new = self.add_new
        for item in items:
            add_new(str(item))

    def consolidate(self) -> None:
        """Merge the recent keys into the run (done automatically when they are many)."""
        recent = self._recent
        if not recent:
            return
        new = sorted(recent)
        run = self._run[0]
        if self._unchecked or len(new) * 16 > len(run) // KEY:
            out = self._merged_by_chunks(run, new)
        else:
            out = self._merged_by_points(run, new)
        self._publish(out)
        self._recent = set()  # after the new run is published: see "Thread safety"
        self._unchecked = False

    def _merged_by_points(self, run: bytes | bytearray, new: list[bytes]) -> bytearray:
        """``run`` with the sorted keys ``new`` (none in ``run``) inserted: O(len(new) log n) + a memcpy."""
        index = self._run[1]
        n = len(run) // KEY
        # insertion point of each new key: bisect the index, then the 64-key block, all in C: the block's
        # keys are read by struct as 1-tuples (key,) and compared with (key,)
        points = []
        offsets = range(0, n * KEY, KEY)
        key_at = partial(_KEY_STRUCT.unpack_from, run)
        for key in new:
            i = bisect_right(index, key)
            if i:
                lo = (i - 1) * BLOCK
                points.append(bisect_left(offsets, (key,), lo, min(lo + BLOCK, n), key=key_at))
            else:
                points.append(0)
        out = bytearray(len(run) + len(new) * KEY)
        view = memoryview(run)
        prev = o = 0
        for key, point in zip(new, points, strict=True):
            if point > prev:
                size = (point - prev) * KEY
                out[o : o + size] = view[prev * KEY : point * KEY]
                o += size
                prev = point
            out[o : o + KEY] = key
            o += KEY
        out[o:] = view[prev * KEY :]
        view.release()
        return out

    @staticmethod
    def _merged_by_chunks(run: bytes | bytearray, new: list[bytes]) -> bytearray:
        """``run`` merged with the sorted keys ``new``, dropping repeats (see :func:`_merge_chunks`)."""
        out = bytearray(len(run) + len(new) * KEY)
        o = 0
        for chunk in _merge_chunks(run, new):
            out[o : o + len(chunk)] = chunk
            o += len(chunk)
        del out[o:]
        return out

    def finish_bulk(self) -> None:
        """After :meth:`add_unchecked`: merge, so that ``len`` is exact again (a no-op otherwise)."""
        if self._unchecked:
            self.consolidate()

    def _publish(self, run: bytes | bytearray) -> None:
        self._run = (run, _index(run))
        self._merge_at = max(MIN_MERGE, len(run) // KEY // MERGE_FRACTION)

    # JSON ----------------------------------------------------------------------------------------

    def json_chunks(self) -> Iterator[bytes]:
        """The ids as the inside of a JSON array (no brackets), in chunks: the GUIDs ascending (all
        ``"…",`` entries of 39 bytes), then the other ids ascending. The recent keys are merged into the
        output on the fly: no second copy of the run is made."""
        self.finish_bulk()
        run, new = self._run[0], sorted(self._recent)
        first = True
        for keys in _merge_chunks(run, new):
            for start in range(0, len(keys), CHUNK_KEYS * KEY):
                chunk = guids_json(keys[start : start + CHUNK_KEYS * KEY])
                yield chunk if first else b"," + chunk
                first = False
        other = sorted(self._other)
        for start in range(0, len(other), CHUNK_KEYS):
            text = json.dumps(other[start : start + CHUNK_KEYS], ensure_ascii=False, separators=(",", ":"))
            chunk = text[1:-1].encode()
            yield chunk if first else b"," + chunk
            first = False


def _merge_chunks(run: bytes | bytearray, new: list[bytes]) -> Iterator[bytes]:
    """The keys of ``run`` merged with the sorted keys ``new``, ascending and without repeats, as ``bytes``
    chunks: the run ``MERGE_CHUNK`` keys at a time, each sorted with the new keys that fall in it (C sorts).
    O(len(run) + len(new)) with small transients."""
    j = 0
    size = MERGE_CHUNK * KEY
    for start in range(0, len(run), size):
        chunk = bytes(run[start : start + size])
        j_end = bisect_right(new, chunk[-KEY:], j) if start + size < len(run) else len(new)
        if j_end > j:
            keys = [chunk[i : i + KEY] for i in range(0, len(chunk), KEY)]
            keys += new[j:j_end]
            keys.sort()
            if any(map(operator.eq, keys, islice(keys, 1, None))):  # repeats: only after add_unchecked
                keys = list(dict.fromkeys(keys))
            chunk = b"".join(keys)
        yield chunk
        j = j_end
    if not run:
        for start in range(0, len(new), MERGE_CHUNK):  # sorted, without repeats (a set's)
            yield b"".join(new[start : start + MERGE_CHUNK])
