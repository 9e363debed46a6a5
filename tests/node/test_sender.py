"""The outbox sender against a real Mosquitto: order, the in-flight bound, re-sends, hub acks."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from hark_fleet.node.commands import decode_command
from hark_fleet.node.sender import OutboxSender
from hark_fleet.node.topics import NodeTopics
from hark_fleet.node.transport_mqtt import BrokerAddress, MqttTransport

from tests.harness import Mosquitto
from tests.node.fakes import FakeHub


async def eventually(predicate: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


@asynccontextmanager
async def linked_sender(tmp_path: Path, broker: Mosquitto, node_id: str, **kwargs: Any) -> AsyncIterator[OutboxSender]:
    """An OutboxSender publishing through a real MqttTransport, acks from `cmd/ack` applied."""
    topics = NodeTopics(node_id)
    sender: OutboxSender

    def on_message(topic: str, payload: bytes) -> None:
        kind = topics.command_kind(topic)
        command = decode_command(kind, payload) if kind else None
        if command is not None and kind == "ack":
            asyncio.ensure_future(sender.ack(command.ids))  # type: ignore[union-attr]

    transport = MqttTransport(topics, "unused", "boot", "test", on_message, lambda up: sender.set_connected(up))
    sender = OutboxSender(tmp_path / "outbox.sqlite3", kwargs.pop("capacity", 1000), "boot", _qos1(transport), **kwargs)
    await sender.open()
    transport.start(BrokerAddress(broker.host, broker.port))
    stop = asyncio.Event()
    task = asyncio.create_task(sender.run(stop))
    try:
        await eventually(lambda: transport.connected, what="the node to connect")
        yield sender
    finally:
        stop.set()
        await task
        await transport.stop()
        await sender.close()


def _qos1(transport: MqttTransport) -> Callable[[str, bytes], bool]:
    return lambda topic, payload: transport.publish(topic, payload, qos=1)


def msg_ids(hub: FakeHub) -> list[str]:
    return [d["msg_id"] for d in hub.documents("heartbeat")]


async def enqueue(sender: OutboxSender, node_id: str, count: int) -> list[str]:
    ids = []
    for n in range(count):
        msg_id = await sender.enqueue(
            "telemetry", f"hark/v1/nodes/{node_id}/heartbeat", lambda m, n=n: f'{{"msg_id": "{m}", "n": {n}}}'.encode()
        )
        assert msg_id is not None
        ids.append(msg_id)
    return ids


def test_rows_go_out_in_order_and_hub_acks_empty_the_outbox(tmp_path: Path, mosquitto: Mosquitto, no_thread_leak: None) -> None:
    async def scenario() -> None:
        with FakeHub(mosquitto.host, mosquitto.port, "sender-order") as hub:
            async with linked_sender(tmp_path, mosquitto, "sender-order") as sender:
                ids = await enqueue(sender, "sender-order", 10)
                await eventually(lambda: len(msg_ids(hub)) >= 10, what="10 rows")
                assert msg_ids(hub) == ids
                assert {r.qos for r in hub.received("heartbeat")} == {1}
                assert sender.level.depth == 10  # the broker has them; the hub has not acked
                hub.ack(ids[:4])
                await eventually(lambda: sender.level.depth == 6, what="the ack to drop 4 rows")
                hub.ack(ids)
                await eventually(lambda: sender.level.depth == 0, what="the outbox to empty")
                assert sender.in_flight == 0

    asyncio.run(scenario())


def test_unacknowledged_rows_are_published_again_after_the_timeout(
    tmp_path: Path, mosquitto: Mosquitto, no_thread_leak: None
) -> None:
    async def scenario() -> None:
        with FakeHub(mosquitto.host, mosquitto.port, "sender-resend") as hub:
            async with linked_sender(tmp_path, mosquitto, "sender-resend", resend_after_s=0.5, poll_s=0.1) as sender:
                ids = await enqueue(sender, "sender-resend", 2)
                await eventually(lambda: msg_ids(hub).count(ids[1]) >= 3, what="re-sends")
                assert msg_ids(hub)[:2] == ids  # first in order; the same ids again after
                hub.ack(ids)
                await eventually(lambda: sender.level.depth == 0, what="the outbox to empty")
                seen = len(msg_ids(hub))
                await asyncio.sleep(1.2)
                assert len(msg_ids(hub)) <= seen + 2  # at most the copies already on their way

    asyncio.run(scenario())


def test_in_flight_rows_are_bounded(tmp_path: Path, mosquitto: Mosquitto, no_thread_leak: None) -> None:
    async def scenario() -> None:
        with FakeHub(mosquitto.host, mosquitto.port, "sender-bound") as hub:
            async with linked_sender(tmp_path, mosquitto, "sender-bound", max_in_flight=5) as sender:
                ids = await enqueue(sender, "sender-bound", 12)
                await eventually(lambda: len(msg_ids(hub)) >= 5, what="the first five")
                await asyncio.sleep(0.7)
                assert msg_ids(hub) == ids[:5]
                assert sender.in_flight == 5
                hub.ack(ids[:5])
                await eventually(lambda: len(msg_ids(hub)) >= 10, what="the next five")
                await asyncio.sleep(0.7)
                assert msg_ids(hub) == ids[:10]
                hub.ack(ids[5:10])
                await eventually(lambda: len(msg_ids(hub)) >= 12, what="the last two")
                assert msg_ids(hub) == ids
                hub.ack(ids[10:])
                await eventually(lambda: sender.level.depth == 0, what="the outbox to empty")

    asyncio.run(scenario())


def test_nothing_is_lost_across_a_broker_restart(tmp_path: Path, own_mosquitto: Mosquitto, no_thread_leak: None) -> None:
    async def scenario() -> None:
        async with linked_sender(tmp_path, own_mosquitto, "sender-restart", resend_after_s=2.0) as sender:
            with FakeHub(own_mosquitto.host, own_mosquitto.port, "sender-restart") as hub:
                before = await enqueue(sender, "sender-restart", 3)
                await eventually(lambda: len(msg_ids(hub)) >= 3, what="the first rows")
            own_mosquitto.stop()
            await eventually(lambda: not sender._connected, what="the node to notice")  # noqa: SLF001
            during = await enqueue(sender, "sender-restart", 3)  # stored while the broker is away
            assert sender.level.depth == 6
            own_mosquitto.start()
            with FakeHub(own_mosquitto.host, own_mosquitto.port, "sender-restart") as hub:
                await eventually(lambda: set(before + during) <= set(msg_ids(hub)), timeout=30, what="every row again")
                hub.ack(before + during)
                await eventually(lambda: sender.level.depth == 0, what="the outbox to empty")

    asyncio.run(scenario())
