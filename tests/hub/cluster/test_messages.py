"""Cluster messages (issue 24): a NOTIFY every hub instance on one PostgreSQL gets, the sender's id with it; too big
for one NOTIFY refused before anything is sent; on SQLite the local handlers are called directly."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from hark_fleet.hub.cluster.messages import ClusterMessages, MessageTooBig
from hark_fleet.hub.cluster.pg_notify import PAYLOAD_MAX, PgNotify
from hark_fleet.hub.db.database import HubDatabase, open_database


class Instance:
    """What a hub holds for messages: its database pool, its LISTEN connection and its messages."""

    def __init__(self, url: str, name: str, tmp: Path) -> None:
        self.db = HubDatabase(open_database(url, tmp))
        self.notify = PgNotify(url)
        self.messages = ClusterMessages(name, self.db, self.notify)
        self.got: list[tuple[dict[str, Any], str]] = []
        self.messages.on("hello", lambda payload, sender: self.got.append((payload, sender)))

    async def stop(self) -> None:
        await self.messages.stop()
        await self.notify.stop()
        self.db.close()


async def wait_until(predicate: Any, timeout: float, what: str) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.01)


def test_a_message_reaches_every_instance_with_its_sender(postgres_url: str, tmp_path: Path) -> None:
    async def run() -> None:
        one, two = Instance(postgres_url, "hub-1", tmp_path), Instance(postgres_url, "hub-2", tmp_path)
        await one.notify.start()
        await two.notify.start()
        try:
            await one.messages.send("hello", {"n": 1, "text": "ünïcode"})
            two.messages.send_soon("hello", {"n": 2})
            expected = [({"n": 1, "text": "ünïcode"}, "hub-1"), ({"n": 2}, "hub-2")]
            await wait_until(lambda: len(one.got) == 2 and len(two.got) == 2, 10, "both messages on both instances")
            assert one.got == expected and two.got == expected
        finally:
            await one.stop()
            await two.stop()

    asyncio.run(run())


def test_a_message_too_big_for_one_notify_is_refused_and_nothing_is_sent(postgres_url: str, tmp_path: Path) -> None:
    async def run() -> None:
        one = Instance(postgres_url, "hub-1", tmp_path)
        await one.notify.start()
        try:
            fits = {"text": "x" * (PAYLOAD_MAX - len(one.messages.encode("hello", {"text": ""})))}
            with pytest.raises(MessageTooBig):
                await one.messages.send("hello", {"text": fits["text"] + "y"})
            with pytest.raises(MessageTooBig):
                one.messages.send_soon("hello", {"text": fits["text"] + "y"})
            await one.messages.send("hello", fits)  # exactly at the limit: PostgreSQL takes it
            await wait_until(lambda: one.got, 10, "the message that fits")
            assert one.got == [(fits, "hub-1")]
        finally:
            await one.stop()

    asyncio.run(run())


def test_on_sqlite_send_calls_the_local_handlers(tmp_path: Path) -> None:
    async def run() -> None:
        db = HubDatabase(open_database(None, tmp_path))
        messages = ClusterMessages("only-hub", db, None)
        got: list[tuple[dict[str, Any], str]] = []
        messages.on("hello", lambda payload, sender: got.append((payload, sender)))
        await messages.send("hello", {"n": 1})
        assert got == [({"n": 1}, "only-hub")]
        messages.send_soon("hello", {"n": 2})
        assert got[-1] == ({"n": 2}, "only-hub")
        db.close()

    asyncio.run(run())
