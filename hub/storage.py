"""Where recordings live once uploaded, and where uploads collect until they are complete.

`RecordingStorage` is the small interface the library and the upload path use; `LocalStorage`
keeps files under the hub's data dir. An S3-compatible store plugs in behind the same methods.
Every method blocks: call them on an executor, never on the event loop.

Partial uploads are plain files, `<data_dir>/uploads/<recording_id>.part`, so an upload survives
a hub restart and resumes from the part's size. The running sha256 of each part is kept in
memory while the hub runs; after a restart it is rebuilt by hashing the part once (hashlib's
state cannot be saved), which costs one read of what was already uploaded.

Several hubs may share the data directory (issue 24): the writer of a part holds `<recording_id>.lock`
beside it (a `flock`, dropped when its hub dies), so an upload that moves to another hub continues there
from the part's size, and a hub trusts its running hash only while the part is the file and size it left.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import shutil
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from hark_fleet.hub.errors import HubError
from hark_fleet.protocol.atomic_file import write_atomic
from hark_fleet.protocol.file_lock import LOCK_SUFFIX, TryLock

log = logging.getLogger(__name__)

READ_BLOCK = 1024 * 1024
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


class StorageError(HubError):
    """A stored object is missing or the store failed."""


class ObjectMissing(StorageError):
    """No object under this key."""


def safe_segment(text: str | None) -> str:
    """One path segment made of safe characters (`_` for none), never `.` or `..`."""
    cleaned = _UNSAFE.sub("_", text or "")[:100]
    return cleaned if cleaned.strip(".") else "_"


def recording_key(site: str | None, node_id: str, recording_id: str, fmt: str) -> str:
    """The storage key of a recording's file: `<site or _>/<node_id>/<recording_id>.<ext>`."""
    return f"{safe_segment(site)}/{safe_segment(node_id)}/{safe_segment(recording_id)}.{safe_segment(fmt)}"


class RecordingStorage(Protocol):
    """A store of recording files addressed by key (`site/node/recording.ext`).

    Objects derived from a recording (its waveform peaks) live under keys that start with the
    recording's key and a dot; `delete` removes those too.
    """

    def put_file(self, key: str, source: Path) -> int:
        """Move the local file `source` into the store under `key`; return its size."""
        ...

    def open(self, key: str, start: int = 0) -> BinaryIO:
        """A binary reader of the object positioned at `start` (the caller closes it)."""
        ...

    def size(self, key: str) -> int:
        """The object's size in bytes; ObjectMissing when there is none."""
        ...

    def exists(self, key: str) -> bool: ...

    def delete(self, key: str) -> None:
        """Remove the object and what was derived from it; a missing object is not an error."""
        ...

    def put_bytes(self, key: str, data: bytes) -> None:
        """Store a small object (derived data such as waveform peaks)."""
        ...

    def get_bytes(self, key: str) -> bytes | None:
        """A small object, or None when there is none."""
        ...

    def local_copy(self, key: str) -> contextlib.AbstractContextManager[Path]:
        """A local path holding the object for the duration of the `with` block (for decoders)."""
        ...

    def derived_keys(self, key: str) -> list[str]:
        """Keys of the objects derived from `key` (`<key>.<something>`), oldest first."""
        ...


class LocalStorage:
    """Recording files in a directory tree on the hub's own disk."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, key: str) -> Path:
        """The file of `key`, refusing keys that would leave the root."""
        parts = key.split("/")
        if not key or any(p in ("", ".", "..") or _UNSAFE.search(p) for p in parts):
            raise StorageError(f"not a storage key: {key!r}")
        return self.root.joinpath(*parts)

    def put_file(self, key: str, source: Path) -> int:
        target = self.path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        _fsync_file(source)
        try:
            os.replace(source, target)  # the same filesystem: atomic
        except OSError:
            tmp = target.with_name(target.name + ".tmp")
            shutil.copyfile(source, tmp)
            _fsync_file(tmp)
            os.replace(tmp, target)
            source.unlink()
        _fsync_dir(target.parent)
        return target.stat().st_size

    def open(self, key: str, start: int = 0) -> BinaryIO:
        try:
            handle = self.path(key).open("rb")
        except FileNotFoundError as err:
            raise ObjectMissing(f"no stored object {key}") from err
        handle.seek(start)
        return handle

    def size(self, key: str) -> int:
        try:
            return self.path(key).stat().st_size
        except FileNotFoundError as err:
            raise ObjectMissing(f"no stored object {key}") from err

    def exists(self, key: str) -> bool:
        return self.path(key).is_file()

    def delete(self, key: str) -> None:
        target = self.path(key)
        target.unlink(missing_ok=True)
        if target.parent.is_dir():
            for derived in target.parent.glob(glob_escape(target.name) + ".*"):
                derived.unlink(missing_ok=True)

    def put_bytes(self, key: str, data: bytes) -> None:
        target = self.path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(target, data)

    def get_bytes(self, key: str) -> bytes | None:
        try:
            return self.path(key).read_bytes()
        except FileNotFoundError:
            return None

    def derived_keys(self, key: str) -> list[str]:
        target = self.path(key)
        if not target.parent.is_dir():
            return []
        found = []
        for derived in target.parent.glob(glob_escape(target.name) + ".*"):
            with contextlib.suppress(FileNotFoundError):
                found.append((derived.stat().st_mtime_ns, derived.name))
        prefix = key.rsplit("/", 1)[0] + "/" if "/" in key else ""
        return [prefix + name for _, name in sorted(found)]

    @contextlib.contextmanager
    def local_copy(self, key: str) -> Iterator[Path]:
        path = self.path(key)
        if not path.is_file():
            raise ObjectMissing(f"no stored object {key}")
        yield path


def glob_escape(name: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", name)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):  # not every filesystem lets a directory be fsynced
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


# -- partial uploads ------------------------------------------------------------------


@dataclass(slots=True)
class _RunningHash:
    digest: hashlib._Hash
    offset: int
    inode: int  # of the part hashed: a part another hub dropped and began again is another file


class PartialUploads:
    """`<root>/<recording_id>.part` files and the running sha256 of each.

    Methods block (file I/O and hashing): call them on an executor. One writer per recording
    at a time is the caller's rule (`claim`/`release`, which also hold the part's file lock against
    the other hubs sharing the directory); the hash state is guarded by a lock because the executor
    may run consecutive calls on different threads.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self._hashes: dict[str, _RunningHash] = {}
        self._writers: dict[str, object] = {}
        self._file_locks: dict[str, TryLock] = {}
        self._lock = threading.Lock()

    def path(self, recording_id: str) -> Path:
        return self.root / f"{safe_segment(recording_id)}.part"

    def offset(self, recording_id: str) -> int:
        """Bytes stored so far (0 when nothing yet), as another hub may have left them (an open revalidates on NFS)."""
        try:
            with self.path(recording_id).open("rb") as fh:
                return os.fstat(fh.fileno()).st_size
        except FileNotFoundError:
            return 0

    # The writer slot lives on the event loop (no thread touches it).
    def claim(self, recording_id: str, writer: object, is_alive: Callable[[Any], bool]) -> bool:
        """Become the one writer of `recording_id`; False when a live writer holds it.

        `is_alive` is called with the current holder to decide whether it still writes
        (a handler whose connection closed does not).
        """
        holder = self._writers.get(recording_id)
        if holder is not None and holder is not writer and is_alive(holder):
            return False
        if holder is None:  # this hub does not hold the part's file lock yet: another hub may be writing it
            self.root.mkdir(parents=True, exist_ok=True)
            lock = TryLock(self.root / f"{safe_segment(recording_id)}{LOCK_SUFFIX}")
            if not lock.take():
                return False
            self._file_locks[recording_id] = lock
        self._writers[recording_id] = writer
        return True

    def release(self, recording_id: str, writer: object) -> None:
        if self._writers.get(recording_id) is writer:
            del self._writers[recording_id]
            lock = self._file_locks.pop(recording_id, None)
            if lock is not None:
                lock.release()

    def prepare(self, recording_id: str) -> int:
        """Make sure the running hash covers the whole part (re-hashing it after a restart); return the offset."""
        self.root.mkdir(parents=True, exist_ok=True)
        self.path(recording_id).touch()  # so an empty file, too, has a part to store
        # Sizes from the open file: on NFS an open revalidates what another hub's writes changed, a stat may not.
        with self.path(recording_id).open("rb") as fh:
            part = os.fstat(fh.fileno())
            with self._lock:
                state = self._hashes.get(recording_id)
                if state is not None and state.offset == part.st_size and state.inode == part.st_ino:
                    return state.offset
            digest = hashlib.sha256()
            done, inode = 0, part.st_ino
            while block := fh.read(READ_BLOCK):
                digest.update(block)
                done += len(block)
        with self._lock:
            self._hashes[recording_id] = _RunningHash(digest, done, inode)
        if done:
            log.info("upload of %s resumes at %d bytes (part re-hashed)", recording_id, done)
        return done

    def append(self, recording_id: str, data: bytes) -> int:
        """Append `data` to the part and the running hash; return the new offset."""
        with self._lock:
            state = self._hashes.get(recording_id)
        if state is None:
            raise StorageError(f"upload of {recording_id} was not prepared")
        try:
            with self.path(recording_id).open("ab") as fh:
                if fh.tell() != state.offset or os.fstat(fh.fileno()).st_ino != state.inode:
                    # Written or begun again elsewhere since it was prepared (a hub that lost the part's lock).
                    raise OSError(f"the part of {recording_id} changed under this hub; its upload resumes from the part")
                fh.write(data)
        except OSError:
            self.forget(recording_id)  # the part may hold some of `data`: re-hash next time
            raise
        with self._lock:
            state.digest.update(data)
            state.offset += len(data)
            return state.offset

    def hexdigest(self, recording_id: str) -> str:
        with self._lock:
            state = self._hashes.get(recording_id)
            if state is None:
                raise StorageError(f"upload of {recording_id} was not prepared")
            return state.digest.hexdigest()

    def sync(self, recording_id: str) -> None:
        """fsync the part (before it is handed to the store)."""
        with contextlib.suppress(FileNotFoundError):
            _fsync_file(self.path(recording_id))

    def forget(self, recording_id: str) -> None:
        """Drop the running hash (the part stays)."""
        with self._lock:
            self._hashes.pop(recording_id, None)

    def discard(self, recording_id: str) -> None:
        """Drop the part and its hash."""
        self.forget(recording_id)
        self.path(recording_id).unlink(missing_ok=True)
