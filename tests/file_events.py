"""Watch a directory with inotify (through libc): which files were written in place and which arrived whole by a rename.

A reader in another process can open a file at any moment. A file that is created or modified
under its own name can be read empty or half written; one that only ever arrives by a rename
(IN_MOVED_TO) is always whole. Tests use this to prove writes are atomic without racing a reader.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import select
import struct
from dataclasses import dataclass
from pathlib import Path

IN_MODIFY = 0x002
IN_CREATE = 0x100
IN_MOVED_TO = 0x080
IN_NONBLOCK = os.O_NONBLOCK
_HEADER = struct.Struct("iIII")

_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)


@dataclass(frozen=True, slots=True)
class FileEvent:
    name: str
    mask: int

    @property
    def in_place(self) -> bool:
        """Created or written under this name (a reader may see it incomplete)."""
        return bool(self.mask & (IN_CREATE | IN_MODIFY))


class DirectoryWatch:
    """Events on the files of one directory (not recursive), read with `events()`; close when done."""

    def __init__(self, directory: Path) -> None:
        self.fd = _libc.inotify_init1(IN_NONBLOCK)
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1")
        if _libc.inotify_add_watch(self.fd, os.fsencode(directory), IN_CREATE | IN_MODIFY | IN_MOVED_TO) < 0:
            os.close(self.fd)
            raise OSError(ctypes.get_errno(), f"inotify_add_watch {directory}")
        self._seen: list[FileEvent] = []

    def events(self) -> list[FileEvent]:
        """Every event so far."""
        while select.select([self.fd], [], [], 0)[0]:
            try:
                data = os.read(self.fd, 65536)
            except BlockingIOError:
                break
            offset = 0
            while offset < len(data):
                _, mask, _, length = _HEADER.unpack_from(data, offset)
                raw = data[offset + _HEADER.size : offset + _HEADER.size + length]
                self._seen.append(FileEvent(raw.rstrip(b"\0").decode(), mask))
                offset += _HEADER.size + length
        return list(self._seen)

    def written_in_place(self, names: set[str] | None = None) -> list[str]:
        """Files (of `names`, or any not hidden) created or written under their own name."""
        hits = [e.name for e in self.events() if e.in_place and (e.name in names if names else not e.name.startswith("."))]
        return sorted(set(hits))

    def close(self) -> None:
        os.close(self.fd)
