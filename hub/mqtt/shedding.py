"""When the in-process broker is overloaded, and what it dropped: it sheds QoS 0 meter frames first.

The in-process broker shares the hub's event loop with the hub's own MQTT intake. Past its
ceiling, every frame it accepts costs the loop more than the hub can ever use: the broadcast
backlog grows, the hub's connection backs up, and the loop falls behind everything else
(heartbeats, HTTP). So the broker asks `Shedder.shed` for every QoS 0 meter frame right after
reading it, before any access check or broadcast, and drops it while the hub is overloaded.
Heartbeats, health, status and job messages (QoS 1, other topics) are never shed.

Overloaded means either of, checked cheaply:

- the broadcast backlog (messages read but not yet handed to subscribers) is above
  `queue_high` (checked on every frame);
- a subscriber's connection (the hub's own, in practice) holds more than `buffer_high` bytes
  its reader has not taken at two ticks running: the hub falls behind what it is sent, for
  longer than a hiccup (a stall shorter than that is absorbed by the socket buffers; frames
  that would overflow them are dropped at delivery, counted the same way).

Both measure work the broker took on and cannot finish. The event loop's lag is not a trigger:
on a machine busy with other processes the loop is late whatever the broker does, and
shedding would then drop frames the hub could still take. Shedding stops when both are back
under a tenth of their high marks, at least HOLD_S after it started, so it does not flap per frame.

The thresholds can be overridden for tests and experiments with environment variables:
HARK_BROKER_SHED_QUEUE (messages) and HARK_BROKER_SHED_BUFFER_KB (KiB).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections import Counter
from collections.abc import Callable

log = logging.getLogger(__name__)

TICK_S = 0.05
HOLD_S = 0.25  # shedding lasts at least this long once started
QUEUE_HIGH = 2000
BUFFER_HIGH = 32 * 1024
LOG_INTERVAL_S = 10.0
SHED_KINDS = ("meters",)  # topic tails whose QoS 0 frames may be shed


def _env_number(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        value = float(raw)
    except ValueError:
        log.warning("%s=%r is not a number: %s used", name, raw, default)
        return default
    return value if value > 0 else default


def shed_kind(topic: str) -> str | None:
    """The kind of message on `topic` that may be shed (`meters`), or None."""
    tail = topic.rpartition("/")[2]
    return tail if tail in SHED_KINDS else None


class Shedder:
    """The overload signal and the count of what was shed, by kind."""

    def __init__(self) -> None:
        self.queue_high = int(_env_number("HARK_BROKER_SHED_QUEUE", QUEUE_HIGH))
        self.buffer_high = int(_env_number("HARK_BROKER_SHED_BUFFER_KB", BUFFER_HIGH / 1024) * 1024)
        self.shedding = False
        self.shed_counts: Counter[str] = Counter()
        self.episodes = 0
        self.buffered = 0  # the largest subscriber send buffer at the last tick
        self._since = 0.0
        self._task: asyncio.Task[None] | None = None
        self._logged_at = 0.0
        self._logged_total = 0

    @property
    def shed_total(self) -> int:
        return sum(self.shed_counts.values())

    def shed(self, kind: str, queued: int) -> bool:
        """Whether to drop this QoS 0 frame of `kind` (counted if so); `queued`: the broadcast backlog now."""
        if not self.shedding and queued > self.queue_high:
            self._start(f"{queued} messages wait for broadcast")
        if self.shedding:
            self.shed_counts[kind] += 1
            return True
        return False

    def _start(self, why: str) -> None:
        self.shedding = True
        self.episodes += 1
        self._since = time.monotonic()
        log.debug("broker overloaded (%s): shedding QoS 0 meter frames", why)

    def update(self, queued: int, buffered: int) -> None:
        """Once a tick: start or stop shedding from the backlog and the largest subscriber's unsent bytes."""
        backed_up = buffered > self.buffer_high and self.buffered > self.buffer_high  # two ticks running: not a hiccup
        self.buffered = buffered
        if not self.shedding:
            if queued > self.queue_high:
                self._start(f"{queued} messages wait for broadcast")
            elif backed_up:
                self._start(f"a subscriber has {buffered // 1024} KiB waiting")
        elif (
            time.monotonic() - self._since >= HOLD_S
            and queued <= self.queue_high // 10
            and self.buffered <= self.buffer_high // 10
        ):
            self.shedding = False
        self._log()

    def _log(self) -> None:
        now = time.monotonic()
        total = self.shed_total
        if total != self._logged_total and now - self._logged_at >= LOG_INTERVAL_S:
            log.warning(
                "embedded broker overloaded: %d QoS 0 meter frames shed in the last %.0f s (%d in all)",
                total - self._logged_total,
                now - self._logged_at if self._logged_at else LOG_INTERVAL_S,
                total,
            )
            self._logged_at, self._logged_total = now, total

    def start(self, queued: Callable[[], int], buffered: Callable[[], int]) -> None:
        """Decide every TICK_S whether shedding goes on: `queued()` gives the broadcast backlog, `buffered()` the
        most bytes a subscriber's connection holds unsent."""
        self._task = asyncio.create_task(self._run(queued, buffered))

    async def _run(self, queued: Callable[[], int], buffered: Callable[[], int]) -> None:
        while True:
            await asyncio.sleep(TICK_S)
            self.update(queued(), buffered())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
