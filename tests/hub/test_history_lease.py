"""The history recorder on one of several hubs (issue 24): meter minutes only while holding the history lease,
a backlog stored after a takeover where no row is, heartbeat minutes always. A real PostgreSQL; the lease is a stub."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import peewee
import pytest
from hark_fleet.hub.cluster.leases import HISTORY, LeaseLost
from hark_fleet.hub.db.models import MeterMinute, MetricMinute
from hark_fleet.hub.history import HistoryRecorder
from hark_fleet.hub.meters import MeterStore
from hark_fleet.hub.services import history
from hark_fleet.protocol.messages import Heartbeat

from tests.harness import database_on
from tests.hub.test_meters import frame


def recent_minute() -> int:
    """Three minutes ago: recent (a takeover stores kept minutes of the last 5) and all in the past. Taken when the
    test runs, not at import: under xdist a module may be imported minutes before its test runs."""
    return int(time.time()) // 60 * 60 - 180


class Leases:
    """The history lease as a test sets it."""

    on_postgres = True

    def __init__(self) -> None:
        self.held = False
        self.valid = True  # what the fence check in the transaction finds

    def holds(self, name: str) -> bool:
        return name == HISTORY and self.held

    def check_fence(self, name: str) -> None:
        if not self.valid:
            raise LeaseLost(f"lease {name} is no longer held")

    def live_instances(self) -> set[str]:
        return {"me", "other"}

    def role(self, *args: Any) -> None:
        pass


@pytest.fixture
def db(tmp_path: Path) -> Iterator[peewee.Database]:
    with database_on("postgres", tmp_path) as database:
        yield database


def recorder() -> tuple[HistoryRecorder, Leases, MeterStore]:
    async def run(fn: Any, *args: Any) -> Any:
        return fn(*args)  # on the test's own connection: the database calls are the real ones

    leases = Leases()
    hub: Any = SimpleNamespace(
        config=SimpleNamespace(history_retention_days=3650),
        db=SimpleNamespace(run=run),
        disk=SimpleNamespace(full=False),
        leases=leases,
        instance_id="me",
    )
    meters = MeterStore()
    return HistoryRecorder(hub, meters), leases, meters


def frames(meters: MeterStore, node_id: str, minute: int, count: int) -> None:
    for i in range(count):
        meters.add(node_id, frame(i), now=minute + i * 0.1)


def beat(minute: int) -> Heartbeat:
    ts = history._iso(minute + 1)
    return Heartbeat(msg_id=f"hb-{minute}", ts=ts, seq=1, agent_version="1", uptime_s=1, cpu_pct=5.0)


def test_meter_minutes_are_stored_by_the_lease_holder_alone_and_a_takeover_fills_what_no_hub_stored(
    db: peewee.Database,
) -> None:
    async def scenario() -> None:
        minute = recent_minute()
        rec, leases, meters = recorder()
        frames(meters, "n1", minute, 5)
        rec.add_heartbeats([("n1", beat(minute))])
        await rec.flush(everything=True)  # not holding the lease: heartbeat minutes only
        assert MeterMinute.select().count() == 0 and MetricMinute.select().count() == 1

        history.store_minutes([meters_row("n2", minute, 7)], [])  # the holder stored n2's minute, then died
        frames(meters, "n2", minute, 6)
        await rec.flush(everything=True)
        leases.held = True  # this hub takes the lease over
        frames(meters, "n1", minute + 60, 3)
        await rec.flush(everything=True)
        stored = {(r.node_id, r.minute): r.frames for r in MeterMinute.select()}
        assert stored == {("n1", minute): 5, ("n2", minute): 7, ("n1", minute + 60): 3}

        leases.valid = False  # lost between holds() and the write: nothing of the meters is stored
        frames(meters, "n1", minute + 120, 4)
        rec.add_heartbeats([("n1", beat(minute + 120))])
        await rec.flush(everything=True)
        assert MeterMinute.select().where(MeterMinute.minute == minute + 120).count() == 0
        assert MetricMinute.select().where(MetricMinute.minute == minute + 120).count() == 1
        leases.valid = True  # held again: the minute kept from the lost write is stored
        await rec.flush(everything=True)
        assert MeterMinute.get(MeterMinute.minute == minute + 120).frames == 4

    asyncio.run(scenario())


def meters_row(node_id: str, minute: int, count: int) -> history.MeterSummary:
    return history.MeterSummary(node_id, minute, count, ((-6.0, -9.0, -9.0, -9.0),))
