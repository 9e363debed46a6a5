"""Two hubs applying the same outbox messages at once on one PostgreSQL (issue 24): each applied once, no batch fails.

Each "hub" is a thread with its own connection from the pool. The first holds its transaction open after
claiming the messages until the second is seen waiting on it (pg_stat_activity), so the two really overlap.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import peewee
import pytest
from hark_fleet.hub.clock import iso, utcnow
from hark_fleet.hub.db.models import Node, ReceivedMessage, database_proxy
from hark_fleet.hub.services.telemetry import Ingested, OutboxMessage, ingest_outbox
from hark_fleet.protocol.messages import HealthReport, Heartbeat

from tests.harness import database_on, wait_for


@pytest.fixture
def db(tmp_path: Path) -> Iterator[peewee.Database]:
    with database_on("postgres", tmp_path) as database:
        yield database


def heartbeat(msg_id: str, at: datetime, cpu: float = 10.0) -> Heartbeat:
    return Heartbeat(msg_id=msg_id, ts=iso(at), seq=1, agent_version="1.0", uptime_s=1, cpu_pct=cpu)


def report(msg_id: str, kind: str) -> HealthReport:
    return HealthReport(msg_id=msg_id, ts=iso(utcnow()), kind=kind, state="open", severity="warning")


def waiting_on_a_lock(db: peewee.Database) -> bool:
    """Whether another session of this database waits for a lock (the second hub, on the first's claim)."""
    row = db.execute_sql(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
    ).fetchone()
    return bool(row and row[0])


def apply_overlapping(db: peewee.Database, first: list[OutboxMessage], second: list[OutboxMessage]) -> list[Ingested]:
    """`first` applied in a transaction kept open until `second`'s transaction waits for it; both results."""
    results: dict[str, Ingested] = {}
    errors: list[BaseException] = []
    claimed = threading.Event()
    release = threading.Event()

    def hub_a() -> None:
        try:
            with db.connection_context(), database_proxy.atomic():
                results["a"] = ingest_outbox(first)  # a savepoint of this transaction: nothing committed yet
                claimed.set()
                release.wait(30)
        except BaseException as err:  # noqa: BLE001 - handed to the test
            errors.append(err)
            claimed.set()

    def hub_b() -> None:
        try:
            with db.connection_context():
                results["b"] = ingest_outbox(second)
        except BaseException as err:  # noqa: BLE001 - handed to the test
            errors.append(err)

    a = threading.Thread(target=hub_a)
    a.start()
    assert claimed.wait(30)
    b = threading.Thread(target=hub_b)
    b.start()
    try:
        wait_for(lambda: waiting_on_a_lock(db) or not b.is_alive(), 30, "the second hub to wait for the first")
    finally:
        release.set()
        a.join(30)
        b.join(30)
    assert not errors, errors
    return [results["a"], results["b"]]


def test_one_message_applied_by_two_hubs_at_once_is_applied_once_and_both_acknowledge_it(db: peewee.Database) -> None:
    Node.create(id="nod_a", name="A", site=None, tags=[], credential_hash="x", status="online")
    Node.create(id="nod_b", name="B", site=None, tags=[], credential_hash="x", status="online")
    now = utcnow()
    # a node resent what its first hub had not acknowledged yet: the same ids reach both hubs, with others
    shared = [
        OutboxMessage("nod_a", "hb-1", heartbeat("hb-1", now)),
        OutboxMessage("nod_b", "hr-1", report("hr-1", "test.shared")),
    ]
    only_a = [OutboxMessage("nod_a", "hr-a", report("hr-a", "test.only-a"))]
    only_b = [OutboxMessage("nod_b", "hb-b", heartbeat("hb-b", now))]
    a, b = apply_overlapping(db, shared + only_a, [*reversed(shared), *only_b])

    assert sorted(m for ids in a.acks.values() for m in ids) == ["hb-1", "hr-1", "hr-a"]
    assert sorted(m for ids in b.acks.values() for m in ids) == ["hb-1", "hb-b", "hr-1"]
    applied_heartbeats = [beat.msg_id for _, beat in a.heartbeats + b.heartbeats]
    assert sorted(applied_heartbeats) == ["hb-1", "hb-b"]  # hb-1 once, by the hub that claimed it first
    opened = [e.data["kind"] for e in a.events + b.events if e.type == "health.opened"]
    assert sorted(opened) == ["test.only-a", "test.shared"]
    assert ReceivedMessage.select().count() == 4


def test_a_heartbeat_older_than_one_another_hub_stored_meanwhile_does_not_replace_it(db: peewee.Database) -> None:
    Node.create(id="nod_a", name="A", site=None, tags=[], credential_hash="x", status="online")
    now = utcnow()
    newer = [OutboxMessage("nod_a", "hb-new", heartbeat("hb-new", now, cpu=99.0))]
    older = [OutboxMessage("nod_a", "hb-old", heartbeat("hb-old", now - timedelta(seconds=5), cpu=1.0))]
    apply_overlapping(db, newer, older)  # both read the node before either wrote it
    node: Any = Node.get_by_id("nod_a")
    assert node.metrics["cpu_pct"] == 99.0
    assert ReceivedMessage.select().count() == 2  # both applied (to the history), only the newest on the node


class Deadlock(Exception):
    pgcode = "40P01"  # as psycopg2 raises it: PostgreSQL rolled the transaction back


def test_a_batch_rolled_back_for_a_deadlock_is_applied_again_and_a_refusal_is_not(monkeypatch: pytest.MonkeyPatch) -> None:
    from hark_fleet.hub.services import telemetry

    calls: list[int] = []

    def deadlocks_once(batch: list[OutboxMessage], at: datetime | None = None) -> Ingested:
        calls.append(len(batch))
        if len(calls) == 1:
            raise Deadlock("deadlock detected")
        return Ingested({"nod_a": ["m1"]}, [], [])

    monkeypatch.setattr(telemetry, "apply_outbox", deadlocks_once)
    assert ingest_outbox([]) == Ingested({"nod_a": ["m1"]}, [], [])
    assert len(calls) == 2

    def refuses(batch: list[OutboxMessage], at: datetime | None = None) -> Ingested:
        calls.append(len(batch))
        raise ValueError("refused")

    calls.clear()
    monkeypatch.setattr(telemetry, "apply_outbox", refuses)
    with pytest.raises(ValueError):
        ingest_outbox([])
    assert len(calls) == 1
