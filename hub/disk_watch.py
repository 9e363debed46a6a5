"""The hub's data disk: free space watched, a small reserve kept, and a full disk turned into 507s, readiness and a health event.

Every POLL_S, and at once when a write fails for lack of space, the free space of each
filesystem the hub writes to (data dir, recordings, uploads, the SQLite file) is read. Under
FULL_BELOW_BYTES the disk counts as full: handlers refuse writes up front with 507, `/readyz`
says why, and a critical `hub.storage_full` health event opens (no node, no site). The hub
keeps RESERVE_BYTES in a file beside its SQLite database and deletes it when the disk fills:
room for that event and for the few writes that help an operator recover (logging in,
deleting recordings). Once RECOVER_ABOVE_BYTES are free the reserve is made again, writes
are accepted and the event resolves. Nothing here writes while the disk is simply fine.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hark_fleet.hub.db.integrity import sqlite_path
from hark_fleet.hub.services import health_events

if TYPE_CHECKING:
    from hark_fleet.hub.server import Hub

log = logging.getLogger(__name__)

KIND = "hub.storage_full"
RESERVE_FILE = "disk-reserve"
MIB = 1024 * 1024
RESERVE_BYTES = 4 * MIB
FULL_BELOW_BYTES = 16 * MIB
RECOVER_ABOVE_BYTES = 24 * MIB  # minus the reserve made again, still above FULL_BELOW_BYTES: no flapping
POLL_S = 2.0


@dataclass(frozen=True, slots=True)
class DiskSpace:
    """One filesystem the hub writes to, named by the first of the hub's paths on it."""

    path: Path
    free_bytes: int
    total_bytes: int


def measure(paths: Iterable[Path]) -> list[DiskSpace]:
    """Free and total bytes of each filesystem under `paths` (a path not made yet counts as its parent)."""
    spaces: dict[int, DiskSpace] = {}
    for path in paths:
        existing = next((p for p in (path, *path.parents) if p.exists()), None)
        if existing is None:
            continue
        device = existing.stat().st_dev
        if device in spaces:
            continue
        stats = os.statvfs(existing)
        spaces[device] = DiskSpace(path, stats.f_bavail * stats.f_frsize, stats.f_blocks * stats.f_frsize)
    return list(spaces.values())


def is_full(was_full: bool, free_bytes: int, write_failed: bool) -> bool:
    """Whether the disk counts as full now: under FULL_BELOW_BYTES, or a write failed; full until RECOVER_ABOVE_BYTES."""
    if was_full or write_failed:
        return free_bytes < RECOVER_ABOVE_BYTES
    return free_bytes < FULL_BELOW_BYTES


def ensure_reserve(path: Path) -> bool:
    """Make the reserve file (allocated, not sparse) if it is not there; whether it is there now."""
    try:
        if path.stat().st_size >= RESERVE_BYTES:
            return True
    except FileNotFoundError:
        pass
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            os.posix_fallocate(fd, 0, RESERVE_BYTES)
        finally:
            os.close(fd)
    except OSError as err:
        path.unlink(missing_ok=True)
        log.warning("no room for the disk reserve %s: %s", path, err.strerror or err)
        return False
    return True


def release_reserve(path: Path) -> None:
    """Give the reserve's room to the database."""
    path.unlink(missing_ok=True)


def make_room_to_start(database_url: str | None, data_dir: Path) -> None:
    """On a full disk, give the reserve to SQLite before the hub opens it (it needs room for its -shm and -wal)."""
    database = sqlite_path(database_url, data_dir)
    if database is None:
        return
    reserve = database.with_name(RESERVE_FILE)
    spaces = measure([database.parent])
    if reserve.exists() and spaces and spaces[0].free_bytes < FULL_BELOW_BYTES:
        log.warning("data disk full (%d MiB free): the reserve goes to the database", spaces[0].free_bytes // MIB)
        release_reserve(reserve)


class DiskWatch:
    """Whether the hub's disk is full, for handlers (`full`), readiness and the hub's health event."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        data_dir = hub.config.data_dir
        database = sqlite_path(hub.config.database_url, data_dir)
        self.paths = [data_dir, data_dir / "recordings", data_dir / "uploads"]
        self.reserve = database.with_name(RESERVE_FILE) if database is not None else None
        if database is not None:
            self.paths.append(database.parent)
        self.full = False
        self.space: DiskSpace | None = None
        self._write_failed = False
        self._recorded: bool | None = None  # the state the health event last recorded (None: not yet this run)
        self._record_failed = False
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.check()
        if self.reserve is not None and self.space is not None and self.space.free_bytes >= RECOVER_ABOVE_BYTES:
            await self._io(ensure_reserve, self.reserve)  # otherwise made once the disk has room again
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def write_failed(self) -> None:
        """A write just failed for lack of space: look again now rather than at the next poll."""
        self._write_failed = True
        self._wake.set()

    def readiness(self) -> dict[str, Any]:
        if not self.full or self.space is None:
            return {"ok": True}
        return {
            "ok": False,
            "reason": f"the data disk is full: {self.space.path} has {self.space.free_bytes // MIB} MiB free; "
            f"writes are refused (507) until {RECOVER_ABOVE_BYTES // MIB} MiB are free",
        }

    async def _io(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(None, fn, *args)

    async def _run(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), POLL_S)
            except TimeoutError:
                pass
            self._wake.clear()
            try:
                await self.check()
            except Exception:  # noqa: BLE001 - the watch must outlive any one failed look
                log.exception("disk check failed; trying again")

    async def check(self) -> None:
        """Measure, decide, release or make the reserve, and record the change as the hub's health event."""
        spaces = await self._io(measure, self.paths)
        if not spaces:
            return
        space = min(spaces, key=lambda s: s.free_bytes)
        write_failed, self._write_failed = self._write_failed, False
        full, was_full = is_full(self.full, space.free_bytes, write_failed), self.full
        self.full, self.space = full, space  # handlers refuse writes from now on, before the reserve goes
        if full and not was_full:
            log.error(
                "data disk full: %s has %d MiB free; writes are refused until %d MiB are free",
                space.path,
                space.free_bytes // MIB,
                RECOVER_ABOVE_BYTES // MIB,
            )
            if self.reserve is not None:
                await self._io(release_reserve, self.reserve)
        elif was_full and not full:
            log.info("data disk has room again: %s has %d MiB free; writes are accepted", space.path, space.free_bytes // MIB)
            if self.reserve is not None:
                await self._io(ensure_reserve, self.reserve)
        if self._recorded != full:
            await self._record(full, space)

    async def _record(self, full: bool, space: DiskSpace) -> None:
        details = {
            "path": str(space.path),
            "free_bytes": space.free_bytes,
            "total_bytes": space.total_bytes,
            "recover_above_bytes": RECOVER_ABOVE_BYTES,
        }
        try:
            events = await self.hub.db.run(health_events.hub_condition, KIND, "open" if full else "resolved", "critical", details)
        except Exception as err:  # noqa: BLE001 - no room even for the event: readiness says it; tried again next time
            if not self._record_failed:
                log.warning("could not record the %s health event (%s); trying again at every check", KIND, err)
            self._record_failed = True
            return
        self._recorded, self._record_failed = full, False
        self.hub.ingest.publish_events(events)
