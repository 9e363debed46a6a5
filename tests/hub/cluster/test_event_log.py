"""The events bus on PostgreSQL (issue 24): two buses on one database, as two hub instances hold them. Every event
reaches the subscribers of both with the shared log's id, ids commit in increasing order whoever writes, a client
resumes on the other instance from the log, an instance that lost its LISTEN connection catches up, the log is
pruned, and events too big for a NOTIFY travel through the log."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg2
from hark_fleet.hub.auth.principal import ALL_SITES
from hark_fleet.hub.clock import utcnow
from hark_fleet.hub.cluster import event_log
from hark_fleet.hub.cluster.pg_notify import PAYLOAD_MAX, PgNotify
from hark_fleet.hub.db.database import HubDatabase, open_database
from hark_fleet.hub.events import REPLAY, Event, EventBus, Subscription


class Instance:
    """One hub's events: its pool, its LISTEN connection, its bus, and what its listeners saw."""

    def __init__(self, url: str, tmp: Path) -> None:
        self.db = HubDatabase(open_database(url, tmp))
        self.notify = PgNotify(url)
        self.bus = EventBus()
        self.bus.share(self.db, self.notify)
        self.local: list[Event] = []
        self.everywhere: list[Event] = []
        self.bus.add_listener(self.local.append)
        self.bus.add_listener(self.everywhere.append, everywhere=True)

    async def start(self) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self.db.start)
        await self.notify.start()
        await self.bus.start()

    async def stop(self) -> None:
        await self.bus.stop()
        await self.notify.stop()
        self.db.close()

    def watch(self, after: int | None = None) -> Subscription:
        return self.bus.subscribe(ALL_SITES, None, after)[0]


def frames(sub: Subscription) -> list[tuple[int, str]]:
    """(id, type) of what the subscription got so far."""
    out = []
    for chunk in sub.outbox.frames:
        for frame in chunk.decode().split("\n\n"):
            lines = dict(line.split(": ", 1) for line in frame.splitlines() if ": " in line)
            if "id" in lines:
                out.append((int(lines["id"]), lines["event"]))
    return out


async def until(predicate: Callable[[], Any], what: str, timeout: float = 15.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.01)


def with_two(url: str, tmp: Path, body: Callable[[Instance, Instance], Awaitable[None]]) -> None:
    async def run() -> None:
        one, two = Instance(url, tmp), Instance(url, tmp)
        await one.start()
        await two.start()
        try:
            await body(one, two)
        finally:
            await one.stop()
            await two.stop()

    asyncio.run(run())


def log_rows(url: str) -> list[tuple[int, str]]:
    conn = psycopg2.connect(url)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT id, type FROM event_log ORDER BY id")
            return [(int(i), t) for i, t in cur.fetchall()]
    finally:
        conn.close()


def test_an_event_reaches_both_instances_subscribers_with_the_logs_id(postgres_url: str, tmp_path: Path) -> None:
    async def body(one: Instance, two: Instance) -> None:
        here, there = one.watch(), two.watch()
        assert one.bus.publish("node.updated", None, {"node_id": "n1"}) is None  # numbered by the log
        await until(lambda: frames(here) and frames(there), "the event on both instances")
        assert frames(here) == frames(there) == log_rows(postgres_url) == [(frames(here)[0][0], "node.updated")]
        # the publisher's own listeners once, with the log's id; the other's only everywhere
        assert (
            [e.id for e in one.local] == [e.id for e in one.everywhere] == [e.id for e in two.everywhere] == [frames(here)[0][0]]
        )
        assert two.local == []
        assert one.everywhere[0].data["node_id"] == two.everywhere[0].data["node_id"] == "n1"

    with_two(postgres_url, tmp_path, body)


def test_ids_commit_in_increasing_order_whichever_instance_writes(postgres_url: str, tmp_path: Path) -> None:
    async def body(one: Instance, two: Instance) -> None:
        here, there = one.watch(), two.watch()
        for i in range(300):
            (one if i % 2 else two).bus.publish("test.tick", None, {"i": i})
            if i % 7 == 0:
                await asyncio.sleep(0)  # let the writers run between publishes: many batches, interleaved
        await until(lambda: len(frames(here)) == 300 and len(frames(there)) == 300, "300 events on both instances")
        ids = [i for i, _ in frames(here)]
        assert ids == sorted(ids) and len(set(ids)) == 300
        assert frames(here) == frames(there) == log_rows(postgres_url)
        assert len(one.everywhere) == len(two.everywhere) == 300
        assert len(one.local) + len(two.local) == 300

    with_two(postgres_url, tmp_path, body)


def test_a_client_resumes_on_the_other_instance_from_the_log(postgres_url: str, tmp_path: Path) -> None:
    async def body(one: Instance, two: Instance) -> None:
        here = one.watch()
        for i in range(5):
            one.bus.publish("test.tick", None, {"i": i})
        await until(lambda: len(two.everywhere) == 5, "the events on the other instance")
        read = frames(here)[1][0]  # the client read two events on instance one
        two.bus._buffer.clear()  # as an instance started after them: its buffer does not reach back
        sub, backlog, complete = await two.bus.open(ALL_SITES, frozenset({"test.tick"}), read)
        one.bus.publish("test.tick", None, {"i": 5})
        await until(lambda: frames(sub), "the live event after the backlog")
        assert complete
        assert [e.data["i"] for e in backlog] == [2, 3, 4]
        assert [e.id for e in backlog] + [i for i, _ in frames(sub)] == [i for i, _ in log_rows(postgres_url)][2:]
        # the buffer path gives the same
        _, again, complete = await two.bus.open(ALL_SITES, None, read)
        assert complete and [e.data["i"] for e in again] == [2, 3, 4, 5]
        # a client ahead of this instance (it read them on the other) is not sent them twice
        ahead, backlog, _ = await two.bus.open(ALL_SITES, None, frames(sub)[-1][0] + 1_000)
        assert backlog == [] and ahead.after > frames(sub)[-1][0]

    with_two(postgres_url, tmp_path, body)


def test_a_client_resuming_past_the_pruned_log_is_told_it_missed_events(postgres_url: str, tmp_path: Path) -> None:
    async def body(one: Instance, two: Instance) -> None:
        for i in range(4):
            one.bus.publish("test.tick", None, {"i": i})
        await until(lambda: len(two.everywhere) == 4, "the events on the other instance")
        ids = [i for i, _ in log_rows(postgres_url)]
        old = utcnow() - event_log.KEEP_AGE - timedelta(minutes=1)
        conn = psycopg2.connect(postgres_url)
        with conn, conn.cursor() as cur:
            cur.execute("UPDATE event_log SET created_at = %s", (old,))
        conn.close()
        assert await one.db.run(event_log.prune, one.db.db, utcnow()) == 3  # the newest row stays
        assert [i for i, _ in log_rows(postgres_url)] == ids[-1:]
        two.bus._buffer.clear()
        _, backlog, complete = await two.bus.open(ALL_SITES, None, ids[0])
        assert not complete and [e.id for e in backlog] == ids[-1:]

    with_two(postgres_url, tmp_path, body)


def test_an_instance_that_lost_its_listening_connection_catches_up(postgres_url: str, tmp_path: Path) -> None:
    async def body(one: Instance, two: Instance) -> None:
        there = two.watch()
        one.bus.publish("test.tick", None, {"i": 0})
        await until(lambda: len(frames(there)) == 1, "the first event")
        pid = two.notify.backend_pid
        admin = psycopg2.connect(postgres_url)
        admin.autocommit = True
        with admin.cursor() as cur:
            cur.execute("SELECT pg_terminate_backend(%s)", (pid,))
        admin.close()
        await until(lambda: not two.notify.connected.is_set(), "instance two to notice its connection is gone")
        for i in range(1, 4):
            one.bus.publish("test.tick", None, {"i": i})
        await until(lambda: len(frames(there)) == 4, "the events sent while it was not listening")
        assert two.notify.connections == 2
        assert frames(there) == log_rows(postgres_url)

    with_two(postgres_url, tmp_path, body)


def test_an_event_too_big_for_a_notify_is_read_from_the_log(postgres_url: str, tmp_path: Path) -> None:
    async def body(one: Instance, two: Instance) -> None:
        there = two.watch()
        one.bus.publish("test.big", None, {"text": "x" * PAYLOAD_MAX})
        one.bus.publish("test.small", None, {})
        await until(lambda: len(frames(there)) == 2, "both events on the other instance")
        assert frames(there) == log_rows(postgres_url)
        assert two.everywhere[0].data["text"] == "x" * PAYLOAD_MAX

    with_two(postgres_url, tmp_path, body)


def test_a_backlog_longer_than_the_replay_is_cut_to_the_newest(postgres_url: str, tmp_path: Path) -> None:
    async def body(one: Instance, two: Instance) -> None:
        conn = psycopg2.connect(postgres_url)
        with conn, conn.cursor() as cur:
            cur.execute(
                "INSERT INTO event_log (type, site, data, created_at) SELECT 'test.tick', NULL, '{}', now() "
                "FROM generate_series(1, %s)",
                (REPLAY + 10,),
            )
        conn.close()
        one.bus.publish("test.tick", None, {"last": True})
        await until(lambda: two.everywhere and two.everywhere[-1].data.get("last"), "the live event, read from the log")
        assert len(two.everywhere) == REPLAY + 11  # the rows it had not seen, then the live one
        two.bus._buffer.clear()
        _, backlog, complete = await two.bus.open(ALL_SITES, None, 0)
        assert not complete and len(backlog) == REPLAY and backlog[-1].data == two.everywhere[-1].data

    with_two(postgres_url, tmp_path, body)
