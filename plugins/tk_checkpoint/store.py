"""Bytes at keys under a checkpoint base: a local folder, or any ``ObjectStoragePath`` URL.

Keys are relative POSIX paths built by :mod:`tk_checkpoint.names` from validated names. Two things
differ between the backends and are hidden here:

* atomic replace: locally a temp file, ``fsync``, ``os.replace``, ``fsync`` of the folder; on object storage
  one PUT (objects appear whole or not at all);
* the journal: locally one append-only JSON-lines file; on object storage (no append, no rename) a series of
  small immutable segment objects, one per save, created with "create only if absent".

Airflow is imported only when the base is a URL (``s3://...``), so the CLI stays fast without it.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import secrets
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import CheckpointLockedError, JournalBrokenError
from .process import pid_alive

log = logging.getLogger(__name__)
READ_CHUNK = 1 << 20


@dataclass
class RawRecord:
    """One journal record as stored: its bytes, where it lives (for errors), and whether it is complete."""

    data: bytes
    where: str
    complete: bool = True


class Store:
    """Interface of a checkpoint base. See :class:`LocalStore` and :class:`ObjectStore`."""

    is_local: bool = False

    def url(self, key: str) -> str:
        raise NotImplementedError

    def read(self, key: str) -> bytes | None:
        """The bytes at ``key``, or None when there is no such file."""
        raise NotImplementedError

    def write(self, key: str, data: bytes, *, fsync: bool = True) -> None:
        """Replace ``key`` atomically: readers see the old or the new bytes, never a mix."""
        raise NotImplementedError

    def write_stream(self, key: str, chunks: Iterable[bytes], *, fsync: bool = True) -> None:
        """As :meth:`write`, with the bytes given in chunks (never held whole in memory). If ``chunks``
        raises, ``key`` is left as it was."""
        self.write(key, b"".join(chunks), fsync=fsync)

    def read_chunks(self, key: str, size: int = READ_CHUNK) -> Iterator[bytes | memoryview] | None:
        """The bytes at ``key`` in chunks of about ``size`` bytes, or None when there is no such file.
        The chunks belong to one version of the file even if it is replaced meanwhile."""
        data = self.read(key)
        if data is None:
            return None
        view = memoryview(data)
        return (view[i : i + size] for i in range(0, len(data), size))

    def create(self, key: str, data: bytes) -> bool:
        """Write ``key`` only if it does not exist; False when it already did."""
        raise NotImplementedError

    def exists(self, key: str) -> bool:
        raise NotImplementedError

    def list(self, prefix: str) -> list[str]:
        """Names of the entries directly under the folder ``prefix`` ('' = the base); [] when missing."""
        raise NotImplementedError

    def delete(self, key: str) -> None:
        """Remove ``key``; no error when it is already gone."""
        raise NotImplementedError

    def delete_tree(self, prefix: str) -> None:
        raise NotImplementedError

    def move(self, key: str, new_key: str) -> None:
        """Move a file or a folder (used to set damaged files aside)."""
        raise NotImplementedError

    def journal(self, key: str, *, fsync: bool = True) -> Journal:
        raise NotImplementedError

    def versions(self, keys: Iterable[str]) -> tuple | None:
        """Something that changes whenever one of ``keys`` is written, replaced or removed; None when this
        store cannot tell cheaply (then readers retry as if it had changed)."""
        return None

    def remove_stale_temps(self, prefix: str) -> int:
        return 0  # object stores write whole objects: no temp files

    @contextlib.contextmanager
    def guard(self, prefix: str) -> Iterator[None]:
        """Serialise lock take-overs between processes of this machine (a no-op on object storage)."""
        yield


class Journal:
    """Append-only sequence of records belonging to one loader file."""

    where: str

    def read(self) -> list[RawRecord]:
        raise NotImplementedError

    def append(self, seq: int, data: bytes) -> None:
        raise NotImplementedError

    def clear(self, through_seq: int) -> None:
        """Forget records up to and including ``through_seq`` (after compaction folded them)."""
        raise NotImplementedError

    def truncate_torn(self) -> int:
        """Cut an incomplete last record left by a crash; returns the number of bytes removed."""
        return 0

    def set_aside(self, suffix: str) -> str:
        """Move the whole journal aside (kept for inspection); returns where it went."""
        raise NotImplementedError

    def close(self) -> None:
        return None


# --- local folder --------------------------------------------------------------------------------


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LocalStore(Store):
    is_local = True

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).expanduser().absolute()

    def __repr__(self) -> str:
        return f"LocalStore({str(self.root)!r})"

    def path(self, key: str) -> Path:
        return self.root / key if key else self.root

    def url(self, key: str) -> str:
        return str(self.path(key))

    def read(self, key: str) -> bytes | None:
        try:
            return self.path(key).read_bytes()
        except FileNotFoundError:
            return None

    def read_chunks(self, key: str, size: int = READ_CHUNK) -> Iterator[bytes] | None:
        try:
            f = self.path(key).open("rb")  # the open file stays the same version if it is replaced
        except FileNotFoundError:
            return None

        def chunks() -> Iterator[bytes]:
            with f:
                while chunk := f.read(size):
                    yield chunk

        return chunks()

    def write(self, key: str, data: bytes, *, fsync: bool = True) -> None:
        self.write_stream(key, (data,), fsync=fsync)

    def write_stream(self, key: str, chunks: Iterable[bytes], *, fsync: bool = True) -> None:
        path = self.path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            for chunk in chunks:
                view = memoryview(chunk)
                while view:
                    view = view[os.write(fd, view) :]
            if fsync:
                os.fsync(fd)
        except BaseException:
            os.close(fd)
            tmp.unlink(missing_ok=True)
            raise
        os.close(fd)
        os.replace(tmp, path)
        if fsync:
            _fsync_dir(path.parent)

    def create(self, key: str, data: bytes) -> bool:
        # Written whole to a temp file, then hard-linked into place: link() fails if the name exists, and
        # the file never appears half-written (a crash leaves at most a hidden temp file).
        path = self.path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
        try:
            tmp.write_bytes(data)
            try:
                os.link(tmp, path)
            except FileExistsError:
                return False
        finally:
            tmp.unlink(missing_ok=True)
        _fsync_dir(path.parent)
        return True

    def remove_stale_temps(self, prefix: str) -> int:
        """Delete temp files (``.<name>.tmp-<pid>-<rand>``) left in ``prefix`` by processes that are gone."""
        removed = 0
        for entry in self.list(prefix):
            if not entry.startswith(".") or ".tmp-" not in entry:
                continue
            pid = entry.rsplit(".tmp-", 1)[1].split("-", 1)[0]
            if pid.isdigit() and int(pid) != os.getpid() and not pid_alive(int(pid)):
                self.path(f"{prefix}/{entry}").unlink(missing_ok=True)
                removed += 1
        return removed

    def exists(self, key: str) -> bool:
        return self.path(key).exists()

    def list(self, prefix: str) -> list[str]:
        try:
            return sorted(os.listdir(self.path(prefix)))
        except (FileNotFoundError, NotADirectoryError):
            return []

    def delete(self, key: str) -> None:
        self.path(key).unlink(missing_ok=True)

    def delete_tree(self, prefix: str) -> None:
        import shutil

        path = self.path(prefix)
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)  # a file (or a link): delete_tree of one entry of a folder

    def move(self, key: str, new_key: str) -> None:
        os.replace(self.path(key), self.path(new_key))
        _fsync_dir(self.path(new_key).parent)

    def journal(self, key: str, *, fsync: bool = True) -> Journal:
        return LocalJournal(self.path(key + ".jsonl"), fsync=fsync)

    def versions(self, keys: Iterable[str]) -> tuple:
        out = []
        for key in keys:
            try:
                st = self.path(key).stat()
            except FileNotFoundError:
                out.append(None)
            else:  # os.replace gives a new inode; an append changes size and mtime
                out.append((st.st_ino, st.st_size, st.st_mtime_ns))
        return tuple(out)

    @contextlib.contextmanager
    def guard(self, prefix: str) -> Iterator[None]:
        folder = self.path(prefix)
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(folder, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the flock


class LocalJournal(Journal):
    """One JSON object per line, appended with a single ``write`` (and ``fdatasync`` when fsync is on)."""

    def __init__(self, path: Path, *, fsync: bool) -> None:
        self.path = path
        self.where = str(path)
        self.fsync = fsync
        self._fd: int | None = None
        self._broken: str | None = None  # why appends are refused (a failed append not rolled back)

    def read(self) -> list[RawRecord]:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return []
        records = []
        lines = data.split(b"\n")
        for number, line in enumerate(lines, start=1):
            last = number == len(lines)
            if last and not line:
                break  # the file ends with a newline: nothing after it
            records.append(RawRecord(line, f"{self.path}:{number}", complete=not last))
        return records

    def append(self, seq: int, data: bytes) -> None:
        """Append one record, or leave the file as it was: a write or sync that fails (a full disk) is
        rolled back to the last good length, so no fragment is left for the next record to land on. If even
        that fails, every later append is refused until the loader is opened again (which cuts the tail)."""
        if self._broken:
            raise JournalBrokenError(
                f"Journal {self.where} has an incomplete record this writer could not remove "
                f"({self._broken}); it saves nothing more. Open the loader again (retry the task): the "
                "next writer cuts the incomplete record. See docs/checkpoints.md, 'Recovery'."
            )
        if self._fd is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            existed = self.path.exists()
            self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            if not existed and self.fsync:
                _fsync_dir(self.path.parent)
        good = os.lseek(self._fd, 0, os.SEEK_END)  # the last good length: one writer holds the lock
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(self._fd, view) :]
            if self.fsync:
                os.fdatasync(self._fd)
        except BaseException as exc:
            self._roll_back(good, exc)
            raise

    def _roll_back(self, good: int, cause: BaseException) -> None:
        try:
            os.ftruncate(self._fd, good)  # shrinking needs no free space
            if self.fsync:
                os.fdatasync(self._fd)
        except OSError as exc:
            self._broken = f"{cause!r}, then {exc!r} while cutting it"
            log.error("Journal %s: could not roll back a failed append: %s", self.where, self._broken)
        else:
            log.warning(
                "Journal %s: a failed append (%r) was rolled back to %d bytes", self.where, cause, good
            )

    def clear(self, through_seq: int) -> None:
        self.close()
        self.path.unlink(missing_ok=True)

    def truncate_torn(self) -> int:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return 0
        if not data or data.endswith(b"\n"):
            return 0
        keep = data.rfind(b"\n") + 1
        os.truncate(self.path, keep)
        return len(data) - keep

    def set_aside(self, suffix: str) -> str:
        self.close()
        target = self.path.with_name(self.path.name + suffix)
        os.replace(self.path, target)
        return str(target)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


# --- object storage (ObjectStoragePath) ----------------------------------------------------------


class ObjectStore(Store):
    """A base given as a URL: ``s3://conn_id@bucket/prefix`` or any scheme ObjectStoragePath knows."""

    def __init__(self, url: str | Any) -> None:
        from airflow.sdk import ObjectStoragePath  # lazy: only object-storage bases need Airflow

        self.base = url if isinstance(url, ObjectStoragePath) else ObjectStoragePath(str(url))
        self.fs = self.base.fs
        self.root = self.base.path.rstrip("/")

    def __repr__(self) -> str:
        return f"ObjectStore({str(self.base)!r})"

    def _p(self, key: str) -> str:
        return f"{self.root}/{key}" if key else self.root

    def url(self, key: str) -> str:
        return f"{str(self.base).rstrip('/')}/{key}" if key else str(self.base)

    def read(self, key: str) -> bytes | None:
        try:
            return self.fs.cat_file(self._p(key))
        except FileNotFoundError:
            return None

    def write(self, key: str, data: bytes, *, fsync: bool = True) -> None:
        self.fs.pipe_file(self._p(key), data)
        self.fs.invalidate_cache(self._p(key).rsplit("/", 1)[0])

    def write_stream(self, key: str, chunks: Iterable[bytes], *, fsync: bool = True) -> None:
        # A buffered writer: on S3 one PUT, or a multipart upload for large objects, which appears only
        # when completed at close(). On an error the upload is discarded and never completed.
        path = self._p(key)
        f = self.fs.open(path, "wb")
        try:
            for chunk in chunks:
                f.write(chunk)
        except BaseException:
            with contextlib.suppress(Exception):
                f.discard()
                f.closed = True  # so that neither close() nor the finalizer commits the partial object
            raise
        f.close()
        self.fs.invalidate_cache(path.rsplit("/", 1)[0])

    def create(self, key: str, data: bytes) -> bool:
        path = self._p(key)
        try:
            self.fs.pipe_file(path, data, mode="create")
        except FileExistsError:
            return False
        except (TypeError, NotImplementedError, ValueError):
            # A filesystem without conditional writes: check, then write (best effort, documented).
            self.fs.invalidate_cache(path.rsplit("/", 1)[0])
            if self.fs.exists(path):
                return False
            self.fs.pipe_file(path, data)
        finally:
            self.fs.invalidate_cache(path.rsplit("/", 1)[0])
        return True

    def exists(self, key: str) -> bool:
        self.fs.invalidate_cache(self._p(key))
        return self.fs.exists(self._p(key))

    def list(self, prefix: str) -> list[str]:
        path = self._p(prefix)
        self.fs.invalidate_cache(path)
        try:
            entries = self.fs.ls(path, detail=False, refresh=True)
        except FileNotFoundError:
            return []
        names = {e.rstrip("/").rsplit("/", 1)[-1] for e in entries}
        names.discard("")
        return sorted(n for n in names if f"{path}/{n}" != path)

    def find(self, prefix: str) -> list[str]:
        path = self._p(prefix)
        self.fs.invalidate_cache(path)
        try:
            return sorted(self.fs.find(path))
        except FileNotFoundError:
            return []

    def delete(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm_file(self._p(key))
        self.fs.invalidate_cache(self._p(key).rsplit("/", 1)[0])

    def delete_tree(self, prefix: str) -> None:
        files = self.find(prefix)
        if files:
            self.fs.rm(files)
        self.fs.invalidate_cache(self._p(prefix))

    def move(self, key: str, new_key: str) -> None:
        sources = self.find(key) or [self._p(key)]
        src_root = self._p(key)
        for src in sources:
            dest = self._p(new_key) + src[len(src_root) :]
            self.fs.copy(src, dest)
            self.fs.rm_file(src)
        self.fs.invalidate_cache(self._p(key).rsplit("/", 1)[0])

    def journal(self, key: str, *, fsync: bool = True) -> Journal:
        return SegmentJournal(self, key)


class SegmentJournal(Journal):
    """``<loader>.journal/<seq:012d>.json``: one immutable object per save, never appended to or renamed."""

    def __init__(self, store: ObjectStore, key: str) -> None:
        self.store = store
        self.key = key
        self.where = store.url(key) + "/"

    def _segments(self) -> list[tuple[int, str]]:
        out = []
        for path in self.store.find(self.key):
            name = path.rsplit("/", 1)[-1]
            stem = name[: -len(".json")] if name.endswith(".json") else ""
            if stem.isdigit():
                out.append((int(stem), path))
        return sorted(out)

    def read(self) -> list[RawRecord]:
        segments = self._segments()
        if not segments:
            return []
        blobs = self.store.fs.cat([p for _, p in segments], on_error="return")
        records = []
        for _, path in segments:
            blob = blobs.get(path)
            if isinstance(blob, Exception):
                if isinstance(blob, FileNotFoundError):
                    continue  # cleared by a compaction between list and read
                raise blob
            records.append(
                RawRecord(blob.rstrip(b"\n"), f"{self.store.url('')}/{path[len(self.store.root) + 1 :]}")
            )
        return records

    def append(self, seq: int, data: bytes) -> None:
        if not self.store.create(f"{self.key}/{seq:012d}.json", data):
            raise CheckpointLockedError(
                f"Journal segment {self.where}{seq:012d}.json already exists: another writer has taken over "
                "this loader checkpoint. Stop this writer; the other one owns the file now."
            )

    def clear(self, through_seq: int) -> None:
        doomed = [p for seq, p in self._segments() if seq <= through_seq]
        if doomed:
            self.store.fs.rm(doomed)
            self.store.fs.invalidate_cache(self.store._p(self.key))

    def set_aside(self, suffix: str) -> str:
        self.store.move(self.key, self.key + suffix)
        return self.where.rstrip("/") + suffix + "/"


def open_store(base: str | os.PathLike[str] | Any) -> Store:
    """A store for ``base``: a local path (or ``file://`` URL), an object-storage URL or ObjectStoragePath."""
    if isinstance(base, os.PathLike) and not hasattr(base, "fs"):
        return LocalStore(base)
    text = str(base)
    if text.startswith("file://"):
        return LocalStore(text[len("file://") :])
    if "://" in text:
        return ObjectStore(base)
    return LocalStore(text)
