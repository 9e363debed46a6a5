"""Who uses a data directory: running hubs share an advisory lock on `<data_dir>/hub.lock`; restore and reset need it alone."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

LOCK_FILE = "hub.lock"


class DataDirLock:
    """A `flock` on the data directory's lock file, released when the process exits however it exits."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / LOCK_FILE
        self._fd: int | None = None

    def take(self, exclusive: bool) -> bool:
        """Take the lock without waiting (shared for a hub, exclusive for restore or reset); whether it was free."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None


class SqliteOwner:
    """One hub per SQLite database: an exclusive `flock` on `<database>-hub.lock`, holding the owner's pid.

    SQLite takes one writer on one machine; more than one hub process needs PostgreSQL (issue 24).
    """

    def __init__(self, database: Path) -> None:
        self.database = database
        self.path = database.with_name(database.name + "-hub.lock")
        self._fd: int | None = None

    def take(self) -> str | None:
        """Take it without waiting: None, or what the running owner wrote (its pid) when another hub holds it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            return owner
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return None

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
