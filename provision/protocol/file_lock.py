"""Exclusive `flock`s on lock files, for what several hub processes sharing one data directory must do once.

Several hubs may share a data directory (issue 24): two starting at once must not both make the CA or a key,
and two must not rewrite the certificate index or write one partial upload at the same time. A lock file is
never opened for anything else, so the lock also holds on NFS, where Linux turns `flock` into a POSIX lock
that closing any descriptor of the file would drop. The kernel (or the NFS server) drops a lock when its
process dies however it dies.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Callable, Iterator
from pathlib import Path

from hark_fleet.protocol.atomic_file import write_atomic

LOCK_SUFFIX = ".lock"


@contextlib.contextmanager
def exclusive(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on the lock file `path` (made when missing) for the block, waiting for its holder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the descriptor drops the lock


def read_or_create(path: Path, make: Callable[[], bytes], mode: int = 0o600) -> bytes:
    """The bytes of `path`; when it is missing, `make()` written there atomically by one process of those racing."""
    with contextlib.suppress(FileNotFoundError):
        return path.read_bytes()
    lock = path.with_name(f".{path.name}{LOCK_SUFFIX}")
    with exclusive(lock):
        with contextlib.suppress(FileNotFoundError):
            return path.read_bytes()  # made by another process while this one waited
        data = make()
        write_atomic(path, data, mode=mode)
        # Once `path` is there it stays, and whoever takes a lock (this file or a new one) reads it first.
        lock.unlink(missing_ok=True)
        return data


class TryLock:
    """A non-blocking exclusive lock on a lock file that its holder removes on release.

    `take()` opens the file, locks it and checks it is still the file at `path` (a holder may have removed
    it between the open and the lock), trying again if not; `release()` removes the file, then unlocks.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def take(self) -> bool:
        """Take the lock without waiting; whether it was free."""
        if self._fd is not None:
            return True
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                return False
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                self._fd = fd
                return True
            os.close(fd)  # the holder removed that file as it released: lock the new one

    def release(self) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        os.close(self._fd)
        self._fd = None
