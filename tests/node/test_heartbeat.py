"""Heartbeats as stored in the outbox: every field of the wire contract, in order."""

from __future__ import annotations

import asyncio
from datetime import datetime
from pathlib import Path

import msgspec
from hark_fleet.node.audio_path import AudioPath
from hark_fleet.node.audio_source import parse_audio_source
from hark_fleet.node.heartbeat import ClockStatus, HeartbeatWorker
from hark_fleet.node.outbox import Outbox
from hark_fleet.node.sender import OutboxSender
from hark_fleet.protocol.messages import Heartbeat

SOURCE = "synthetic:sine?freq=440&dbfs=-12&channels=1&rate=44100"


def test_heartbeats_carry_the_contract_fields_in_order(tmp_path: Path, no_thread_leak: None) -> None:
    async def scenario() -> None:
        sender = OutboxSender(tmp_path / "outbox.sqlite3", 100, "boot", lambda t, p: False)
        await sender.open()
        clock = ClockStatus(offset_ms=12.5)
        worker = HeartbeatWorker(
            "hark/v1/nodes/n1/heartbeat",
            sender,
            lambda: AudioPath(parse_audio_source(SOURCE), lambda f: None, lambda *a: None, 100).load_interfaces(),
            tmp_path,
            clock,
            "1.2.3",
            lambda: 0.05,
        )
        stop = asyncio.Event()
        task = asyncio.create_task(worker.run(stop))
        while sender.level.depth < 3:
            await asyncio.sleep(0.02)
        stop.set()
        await task
        await sender.close()

    asyncio.run(scenario())
    outbox = Outbox(tmp_path / "outbox.sqlite3", 100)
    rows = outbox.after(0, 100)
    outbox.close()
    beats = [msgspec.json.decode(r.payload, type=Heartbeat) for r in rows]
    assert {r.kind for r in rows} == {"telemetry"}
    assert {r.topic for r in rows} == {"hark/v1/nodes/n1/heartbeat"}
    assert [b.seq for b in beats] == list(range(1, len(beats) + 1))
    assert [b.msg_id for b in beats] == [r.msg_id for r in rows]
    assert [b.outbox.depth for b in beats if b.outbox] == list(range(len(beats)))  # depth before each was added
    first = beats[0]
    assert first.agent_version == "1.2.3" and first.ts.endswith("Z") and first.uptime_s >= 0
    assert first.clock is not None and first.clock.offset_ms == 12.5 and first.clock.quality in ("ntp", "unsynced")
    assert first.outbox is not None and first.outbox.capacity == 100
    assert first.memory is not None and 0 < first.memory.used_pct <= 100 and first.memory.total_bytes > 0
    assert first.disk is not None and first.disk.path == str(tmp_path) and first.disk.free_bytes > 0
    assert first.cpu_pct is not None and 0 <= first.cpu_pct <= 100
    assert [(i.id, i.name, i.channels, i.rates, i.default) for i in first.interfaces] == [
        ("synthetic", "synthetic sine 440 Hz -12 dBFS", 1, [44100], True)
    ]


def test_each_heartbeat_says_the_interval_until_the_next_one(tmp_path: Path, no_thread_leak: None) -> None:
    intervals = iter([0.05, 0.6, 0.05, 0.05, 0.05, 0.05])

    async def scenario() -> None:
        sender = OutboxSender(tmp_path / "outbox.sqlite3", 100, "boot", lambda t, p: False)
        await sender.open()
        worker = HeartbeatWorker(
            "hark/v1/nodes/n1/heartbeat", sender, lambda: [], tmp_path, ClockStatus(), "1.2.3", lambda: next(intervals)
        )
        stop = asyncio.Event()
        task = asyncio.create_task(worker.run(stop))
        while sender.level.depth < 4:
            await asyncio.sleep(0.01)
        stop.set()
        await task
        await sender.close()

    asyncio.run(scenario())
    outbox = Outbox(tmp_path / "outbox.sqlite3", 100)
    beats = [msgspec.json.decode(r.payload, type=Heartbeat) for r in outbox.after(0, 100)]
    outbox.close()
    assert [b.interval_s for b in beats[:4]] == [0.05, 0.6, 0.05, 0.05]
    sent = [datetime.fromisoformat(b.ts.replace("Z", "+00:00")) for b in beats[:3]]
    assert (sent[1] - sent[0]).total_seconds() < 0.5  # the first said 0.05 s and kept to it
    assert (sent[2] - sent[1]).total_seconds() >= 0.55  # the second said 0.6 s: the hub waits that long for the third
