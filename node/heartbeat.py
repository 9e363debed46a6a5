"""Heartbeats: every interval, one Heartbeat enqueued in the outbox (QoS 1, acked by the hub)."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
from hark_fleet.hw.sensors import LoadReading, PowerFlags, read_load, read_power_flags
from hark_fleet.node.clock import time_quality, utc_iso
from hark_fleet.node.conditions import Change, ConditionWatch
from hark_fleet.node.health import health_payload
from hark_fleet.node.metrics import SystemSnapshot, read_system
from hark_fleet.node.sender import OutboxSender
from hark_fleet.node.worker import stopped
from hark_fleet.protocol.messages import AudioInterface, Clock, Disk, Heartbeat, TimeQuality

log = logging.getLogger(__name__)


@dataclass(slots=True)
class ClockStatus:
    """The latest offset to the hub's clock (from the config request) and the local clock's quality."""

    offset_ms: float | None = None
    quality: TimeQuality = "unsynced"
    gps_offset_ms: float | None = None  # system clock against a GPS fix, when a receiver is attached
    gps_at: float | None = None

    def judge(self, kernel: TimeQuality, now: float) -> TimeQuality:
        """The kernel's verdict, or `gps` when it has none and a GPS fix is recent."""
        if kernel == "unsynced" and self.gps_at is not None and now - self.gps_at <= GPS_FRESH_S:
            return "gps"
        return kernel

    def message(self) -> Clock:
        return Clock(offset_ms=self.offset_ms, quality=self.quality)


@dataclass(frozen=True, slots=True)
class _Reading:
    system: SystemSnapshot
    quality: TimeQuality
    load: LoadReading | None = None
    power: PowerFlags | None = None


GPS_FRESH_S = 60.0
CONDITIONS_FILE = "conditions.json"
FIRST_CPU_WINDOW_S = 0.2  # psutil measures CPU use between calls: the first one needs a window


def _read(data_dir: Path, cpu_window_s: float | None) -> _Reading:
    return _Reading(read_system(data_dir, cpu_window_s), time_quality(), read_load(), read_power_flags())


class HeartbeatWorker:
    """Builds and enqueues heartbeats; sensors are read on an executor, never on the loop."""

    def __init__(
        self,
        topic: str,
        sender: OutboxSender,
        interfaces: Callable[[], list[AudioInterface]],
        data_dir: Path,
        clock: ClockStatus,
        agent_version: str,
        interval_s: Callable[[], float],
        health_topic: str | None = None,
    ) -> None:
        self.topic = topic
        self.sender = sender
        self.data_dir = data_dir
        self.clock = clock
        self.agent_version = agent_version
        self.interval_s = interval_s
        self._interfaces = interfaces
        self.audio_stats: Callable[[], dict[str, Any]] | None = None
        # What the node runs now ({"watchdog": {"id", "version"}, "channel_map": ...}): whoever applies a config sets its entry.
        self.applied: dict[str, object] = {}
        # (hours of recording left on the data disk, recording bytes per second) for this heartbeat's disk reading
        self.disk_hours: Callable[[Disk | None], tuple[float | None, float | None]] | None = None
        self._seq = itertools.count(1)
        self._started = time.monotonic()
        self._first = True
        self.health_topic = health_topic
        self.conditions = ConditionWatch(data_dir / CONDITIONS_FILE)

    async def beat(self, interval_s: float | None = None) -> str | None:
        """Read the sensors and enqueue one heartbeat saying the interval until the next; its msg_id, or None if refused."""
        window = FIRST_CPU_WINDOW_S if self._first else None
        self._first = False
        reading = await asyncio.get_running_loop().run_in_executor(None, _read, self.data_dir, window)
        self.clock.quality = self.clock.judge(reading.quality, time.time())
        seq = next(self._seq)
        system = reading.system
        load, power = reading.load, reading.power
        hours_left, bytes_per_s = self.disk_hours(system.disk) if self.disk_hours is not None else (None, None)
        applied = dict(self.applied) or None

        def build(msg_id: str) -> bytes:
            return msgspec.json.encode(
                Heartbeat(
                    msg_id=msg_id,
                    ts=utc_iso(),
                    seq=seq,
                    agent_version=self.agent_version,
                    uptime_s=round(time.monotonic() - self._started, 3),
                    cpu_pct=system.cpu_pct,
                    memory=system.memory,
                    disk=system.disk,
                    temperature_c=system.temperature_c,
                    interfaces=self._interfaces(),
                    audio=self.audio_stats() if self.audio_stats is not None else None,
                    load=[load.load_1m, load.load_5m, load.load_15m] if load is not None else None,
                    power=_power(power),
                    clock=self.clock.message(),
                    outbox=self.sender.level,  # built on the outbox thread: the depth right now
                    interval_s=interval_s,
                    disk_hours_left=hours_left,
                    recording_bytes_per_s=bytes_per_s,
                    applied=applied,
                )
            )

        msg_id = await self.sender.enqueue("telemetry", self.topic, build)
        if self.health_topic is not None:
            await self.report_conditions(system, reading.quality, power.problems if power is not None else ())
        return msg_id

    async def report_conditions(self, system: SystemSnapshot, quality: TimeQuality, power_problems: tuple[str, ...] = ()) -> None:
        """Disk, temperature and clock conditions that changed since the last reading, through the outbox."""
        assert self.health_topic is not None
        for change in self.conditions.evaluate(system, self.clock.offset_ms, quality, power_problems):
            state = "resolved" if change.severity is None else "open"
            if change.severity is not None:
                log.warning("%s %s: %s", change.kind, change.severity, change.details)

            def build(msg_id: str, change: Change = change, state: str = state) -> bytes:
                return health_payload(msg_id, change.kind, state, change.severity or "warning", change.details)  # type: ignore[arg-type]

            await self.sender.enqueue("health", self.health_topic, build)

    async def run(self, stop: asyncio.Event) -> None:
        """One heartbeat right away, then one per interval (on a fixed schedule, never in bursts)."""
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while not stop.is_set():
            # Read once: the heartbeat tells the hub the very interval the node then waits (the hub judges by it).
            interval = self.interval_s()
            try:
                await self.beat(interval)
            except Exception:
                log.exception("heartbeat failed")
            next_at += interval
            now = loop.time()
            if next_at < now:
                next_at = now
            if await stopped(stop, next_at - now):
                return


def _power(flags: PowerFlags | None) -> dict[str, object] | None:
    """The Pi's throttling flags for the heartbeat (None on boards without `vcgencmd`)."""
    if flags is None:
        return None
    return {"raw": flags.raw, "now": list(flags.problems), "since_boot": list(flags.problems_since_boot)}
