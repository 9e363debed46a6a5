"""Caches across hub instances (issue 24): `forget_all()` on one instance empties every instance's secret cache
(a cluster message; receivers do not send it on), an instance that lost its listening connection empties its own
once it listens again, and a node moved or deleted on one instance is looked up afresh by the others' meters."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import psycopg2
from hark_fleet.hub.auth.authenticator import Authenticator
from hark_fleet.hub.auth.principal import Grant, user_principal
from hark_fleet.hub.cluster.caches import invalidate_everywhere
from hark_fleet.hub.cluster.messages import ClusterMessages
from hark_fleet.hub.cluster.pg_notify import PgNotify
from hark_fleet.hub.db.database import HubDatabase, open_database
from hark_fleet.hub.events import EventBus
from hark_fleet.hub.meters import MeterStore


class History:
    def __init__(self) -> None:
        self.forgotten: list[str] = []

    def forget(self, node_id: str) -> None:
        self.forgotten.append(node_id)


def make_hub(url: str, name: str, tmp: Path) -> Any:
    """The parts of a hub the invalidations touch, real ones."""
    db = HubDatabase(open_database(url, tmp))
    notify = PgNotify(url)
    hub = SimpleNamespace(instance_id=name, db=db, pg_notify=notify, events=EventBus())
    hub.cluster_messages = ClusterMessages(name, db, notify)
    hub.authenticator = Authenticator(db)
    hub.ingest = SimpleNamespace(meters=MeterStore(), history=History())
    hub.events.share(db, notify)
    invalidate_everywhere(hub)
    return hub


def cache_a_secret(hub: Any) -> None:
    hub.authenticator._cache["digest"] = (user_principal("usr_1", "ada", [Grant(frozenset({"node:read"}))]), time.monotonic())


async def until(predicate: Callable[[], Any], what: str, timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.01)


def with_two(url: str, tmp: Path, body: Callable[[Any, Any], Any]) -> None:
    async def run() -> None:
        one, two = make_hub(url, "hub-1", tmp), make_hub(url, "hub-2", tmp)
        for hub in (one, two):
            await asyncio.get_running_loop().run_in_executor(None, hub.db.start)
            await hub.pg_notify.start()
            await hub.events.start()
        try:
            await body(one, two)
        finally:
            for hub in (one, two):
                await hub.events.stop()
                await hub.cluster_messages.stop()
                await hub.pg_notify.stop()
                hub.db.close()

    asyncio.run(run())


def test_forget_all_on_one_instance_empties_the_others_cache(postgres_url: str, tmp_path: Path) -> None:
    async def body(one: Any, two: Any) -> None:
        sent: list[dict[str, Any]] = []
        two.cluster_messages.on("caches.forget", lambda payload, sender: sent.append({"from": sender}))
        cache_a_secret(one)
        cache_a_secret(two)
        one.authenticator.forget_all()
        assert one.authenticator._cache == {}
        await until(lambda: two.authenticator._cache == {}, "instance two to forget")
        await until(lambda: sent, "the message on instance two")
        cache_a_secret(one)
        await asyncio.sleep(0.3)  # instance two does not send it on: instance one keeps what it cached since
        assert sent == [{"from": "hub-1"}] and one.authenticator._cache

    with_two(postgres_url, tmp_path, body)


def test_an_instance_that_lost_its_listening_connection_forgets_everything(postgres_url: str, tmp_path: Path) -> None:
    async def body(one: Any, two: Any) -> None:
        cache_a_secret(two)
        admin = psycopg2.connect(postgres_url)
        admin.autocommit = True
        with admin.cursor() as cur:
            cur.execute("SELECT pg_terminate_backend(%s)", (two.pg_notify.backend_pid,))
        admin.close()
        await until(lambda: two.pg_notify.connections == 2, "instance two to listen again")
        await until(lambda: two.authenticator._cache == {}, "instance two to forget what it may have missed")

    with_two(postgres_url, tmp_path, body)


def test_a_node_moved_or_deleted_on_one_instance_is_forgotten_by_the_others_meters(postgres_url: str, tmp_path: Path) -> None:
    async def body(one: Any, two: Any) -> None:
        two.ingest.meters.sites.update({"n1": "north", "n2": "north"})
        one.events.publish("node.updated", "north", {"node_id": "n1", "changed": ["name"]})
        one.events.publish("node.updated", "south", {"node_id": "n1", "changed": ["site"]})
        one.events.publish("node.deleted", "north", {"node_id": "n2"})
        await until(lambda: len(two.events._buffer) == 3, "the events on instance two")
        assert "n1" not in two.ingest.meters.sites and "n2" not in two.ingest.meters.sites
        assert two.ingest.history.forgotten == ["n2"]

    with_two(postgres_url, tmp_path, body)
