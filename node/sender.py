"""The outbox sender: publishes stored rows in order while connected, drops what the hub acks.

Every outbox call runs on one dedicated thread (SQLite work never stalls the loop or paho).
A row is "in flight" from its publish until the hub's `cmd/ack` names it; at most
`max_in_flight` rows are, and one not acknowledged within `resend_after_s` is published
again, as is everything after a reconnect. The hub deduplicates by `msg_id`.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from hark_fleet.node import const
from hark_fleet.node.outbox import Outbox, OutboxRow
from hark_fleet.node.outbox_policy import level_transition
from hark_fleet.node.worker import wait_any
from hark_fleet.protocol.messages import OutboxLevel

log = logging.getLogger(__name__)
T = TypeVar("T")

Publish = Callable[[str, bytes], bool]  # topic, payload -> queued (QoS 1)
BuildPayload = Callable[[str], bytes]  # msg_id -> payload
LevelReport = Callable[[str, bool, int, int], tuple[str, bytes]]  # msg_id, high, depth, capacity -> topic, payload


class OutboxSender:
    """The outbox and the worker that drains it to the broker."""

    def __init__(
        self,
        path: Path,
        capacity: int,
        boot_id: str,
        publish: Publish,
        level_report: LevelReport | None = None,
        max_in_flight: int = const.OUTBOX_MAX_IN_FLIGHT,
        resend_after_s: float = const.OUTBOX_RESEND_AFTER_S,
        poll_s: float = const.OUTBOX_SEND_POLL_S,
    ) -> None:
        self.path = path
        self.capacity = capacity
        self.boot_id = boot_id
        self._publish = publish
        self._level_report = level_report
        self.max_in_flight = max_in_flight
        self.resend_after_s = resend_after_s
        self.poll_s = poll_s
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hark-node-outbox")
        self._outbox: Outbox | None = None
        self._ids = itertools.count(1)
        self._depth = 0
        self._connected = False
        self._generation = 0  # bumped on every connection change; stale sends are discarded
        self._cursor = 0  # the highest seq published since the last (re)connect
        self._in_flight: dict[str, float] = {}  # msg_id -> monotonic time of its last publish
        self._wake = asyncio.Event()

    # -- lifecycle ---------------------------------------------------------------

    async def open(self) -> None:
        """Open (or create) the outbox file and check its level."""
        self._outbox = await self._call(Outbox, self.path, self.capacity)
        self._depth = self._outbox.depth
        log.info("outbox %s: %d rows waiting, capacity %d", self.path, self._depth, self.capacity)
        await self._call(self._check_level_sync)

    @property
    def damaged_moved_to(self) -> Path | None:
        """Where a damaged outbox file was moved when it was opened (None: it was sound)."""
        return self._outbox.damaged_moved_to if self._outbox is not None else None

    async def close(self) -> None:
        if self._outbox is not None:
            await self._call(self._outbox.close)
            self._outbox = None
        await asyncio.get_running_loop().run_in_executor(None, self._executor.shutdown)

    # -- what other workers use ---------------------------------------------------

    @property
    def level(self) -> OutboxLevel:
        return OutboxLevel(depth=self._depth, capacity=self.capacity)

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    async def enqueue(self, kind: str, topic: str, build: BuildPayload) -> str | None:
        """Store one message (its payload built for its new `msg_id`); the msg_id, or None if refused."""
        msg_id = f"{self.boot_id}-{next(self._ids)}"
        stored = await self._call(self._enqueue_sync, msg_id, kind, topic, build)
        self._wake.set()
        return msg_id if stored else None

    async def ack(self, msg_ids: Sequence[str]) -> int:
        """The hub stored these messages: drop them; return how many the outbox still held."""
        for msg_id in msg_ids:
            self._in_flight.pop(msg_id, None)
        removed = await self._call(self._ack_sync, list(msg_ids))
        self._wake.set()
        return removed

    def set_connected(self, connected: bool) -> None:
        """Called on every connection change: after a reconnect everything unacknowledged goes again."""
        self._connected = connected
        self._generation += 1
        self._cursor = 0
        self._in_flight.clear()
        self._wake.set()

    # -- the worker ------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Publish due rows whenever connected, until `stop` is set."""
        while not stop.is_set():
            self._wake.clear()
            if self._connected:
                try:
                    await self.send_due()
                except Exception:
                    log.exception("outbox send failed")
            await wait_any(self.poll_s, stop, self._wake)

    async def send_due(self) -> int:
        """Publish expired in-flight rows again and new rows in order, within the in-flight bound."""
        assert self._outbox is not None
        generation = self._generation
        now = time.monotonic()
        expired = [msg_id for msg_id, sent in self._in_flight.items() if now - sent >= self.resend_after_s]
        rows: list[OutboxRow] = []
        if expired:
            rows = await self._call(self._outbox.rows, expired)
            held = {row.msg_id for row in rows}
            for msg_id in expired:
                if msg_id not in held:  # evicted meanwhile
                    self._in_flight.pop(msg_id, None)
            if rows:
                log.info("outbox: %d rows not acknowledged in %.0fs, publishing again", len(rows), self.resend_after_s)
        room = self.max_in_flight - len(self._in_flight)
        if room > 0:
            rows += await self._call(self._outbox.after, self._cursor, room)
        if generation != self._generation or not rows:
            return 0
        sent: list[str] = []
        for row in rows:
            if not self._publish(row.topic, row.payload):
                break
            self._in_flight[row.msg_id] = now
            self._cursor = max(self._cursor, row.seq)
            sent.append(row.msg_id)
        if sent:
            await self._call(self._outbox.mark_sent, sent, time.time())
        return len(sent)

    # -- on the outbox thread -------------------------------------------------------------

    def _enqueue_sync(self, msg_id: str, kind: str, topic: str, build: BuildPayload) -> bool:
        assert self._outbox is not None
        stored = self._outbox.enqueue(msg_id, topic, build(msg_id), kind, time.time())
        self._check_level_sync()
        return stored

    def _ack_sync(self, msg_ids: list[str]) -> int:
        assert self._outbox is not None
        removed = self._outbox.remove(msg_ids)
        self._check_level_sync()
        return removed

    def _check_level_sync(self) -> None:
        """Report `outbox.high` once past 80 % and resolve it once under 50 % (the flag survives restarts)."""
        outbox = self._outbox
        assert outbox is not None
        self._depth = outbox.depth
        transition = level_transition(outbox.depth, outbox.capacity, outbox.is_high())
        if transition is None:
            return
        if transition:
            log.warning("outbox high: %d of %d rows waiting for the hub", outbox.depth, outbox.capacity)
        else:
            log.info("outbox back to normal: %d of %d rows", outbox.depth, outbox.capacity)
        if self._level_report is not None:
            msg_id = f"{self.boot_id}-{next(self._ids)}"
            topic, payload = self._level_report(msg_id, transition, outbox.depth, outbox.capacity)
            outbox.enqueue(msg_id, topic, payload, "health", time.time())
        outbox.set_high(transition)
        self._depth = outbox.depth

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, partial(fn, *args))
