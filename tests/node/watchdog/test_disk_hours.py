"""Disk hours-left: the recording rate, the heartbeat's fields, and the event under the policy's threshold."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
from hark_fleet.node.heartbeat import ClockStatus, HeartbeatWorker
from hark_fleet.node.lifecycle import ActionResult
from hark_fleet.node.outbox import Outbox
from hark_fleet.node.sender import OutboxSender
from hark_fleet.node.topics import NodeTopics
from hark_fleet.node.watchdog.disk import RecordingRate, hours_left
from hark_fleet.node.watchdog.policy import PolicyStore
from hark_fleet.node.watchdog.runtime import Watchdog
from hark_fleet.protocol.messages import Heartbeat
from hark_fleet.protocol.watchdog import Detectors, DiskHoursLeftDetector, NodeWatchdog, PolicyConfig


@dataclass
class Progress:
    bytes: int
    seconds: float


@dataclass
class Recording:
    recording_id: str
    written: Progress

    def progress(self) -> Progress:
        return self.written


def test_the_rate_is_measured_between_readings_of_the_same_recording() -> None:
    now = [100.0]
    current: list[Recording | None] = [None]
    rate = RecordingRate(lambda: current[0], lambda: now[0])
    assert rate.read() is None
    current[0] = Recording("rec_1", Progress(0, 0.2))
    assert rate.read() is None  # too early to tell
    current[0].written = Progress(2_880_000, 10.0)
    now[0] = 110.0
    assert rate.read() == 288_000.0  # 10 s written so far, averaged (the last reading had nothing)
    current[0].written = Progress(2_880_000 + 576_000, 12.0)
    now[0] = 112.0
    assert rate.read() == 288_000.0
    current[0] = None
    assert rate.read() is None
    assert hours_left(288_000 * 3600 * 5, 288_000.0) == 5.0 and hours_left(10**9, None) is None


def test_heartbeats_carry_hours_left_and_the_rate_and_the_policy_threshold_opens_an_event(tmp_path: Path) -> None:
    reports: list[tuple[str, str, str, dict[str, Any]]] = []
    recording = Recording("rec_1", Progress(288_000 * 30, 30.0))
    policy = NodeWatchdog(
        node=PolicyConfig(
            policy_id="wdp_disk",
            version=1,
            detectors=Detectors(disk_hours_left=DiskHoursLeftDetector(warning_hours=9_000, critical_hours=1)),
        )
    )
    PolicyStore(tmp_path).save(policy)  # the policy it kept from the hub

    async def enqueue(topic: str, build: Callable[[str], bytes]) -> None:
        return None

    async def run_action(action: str) -> ActionResult:
        return ActionResult(True, "")

    async def scenario() -> None:
        sender = OutboxSender(tmp_path / "outbox.sqlite3", 100, "boot", lambda t, p: False)
        await sender.open()
        watchdog = Watchdog(
            tmp_path, policy, NodeTopics("n1"), lambda *r: reports.append(r), enqueue, run_action, lambda: recording, [], str
        )
        worker = HeartbeatWorker("hark/v1/nodes/n1/heartbeat", sender, list, tmp_path, ClockStatus(), "1.2.3", lambda: 1.0)
        worker.applied = watchdog.applied
        worker.disk_hours = watchdog.disk_reading
        worker.applied["channel_map"] = {"id": "cmt_1", "version": 4}  # another part of the config puts its own entry
        await worker.beat(1.0)
        await sender.close()

    asyncio.run(scenario())
    outbox = Outbox(tmp_path / "outbox.sqlite3", 100)
    beat = msgspec.json.decode(outbox.after(0, 10)[0].payload, type=Heartbeat)
    outbox.close()
    assert beat.recording_bytes_per_s == 288_000.0 and beat.disk is not None
    assert beat.disk_hours_left == round(beat.disk.free_bytes / 288_000.0 / 3600.0, 2)
    assert beat.applied == {"watchdog": {"id": "wdp_disk", "version": 1}, "channel_map": {"id": "cmt_1", "version": 4}}
    [(kind, state, severity, details)] = reports
    assert (kind, state, severity) == ("disk.hours_left", "open", "warning")  # under 9000 h: any real disk is
    assert details["values"]["hours_left"] == beat.disk_hours_left and details["policy_id"] == "wdp_disk"
    assert details["thresholds"] == {"warning_hours": 9000.0, "critical_hours": 1.0}
