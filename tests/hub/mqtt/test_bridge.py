"""The hub's MQTT bridge against real brokers: the embedded one and Mosquitto."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import msgspec
import paho.mqtt.client as mqtt
import pytest
from hark_fleet.hub.const import HUB_MQTT_USERNAME
from hark_fleet.hub.metrics import HubMetrics
from hark_fleet.hub.mqtt.access import BrokerAccess
from hark_fleet.hub.mqtt.bridge import BrokerAddress, InvalidMessage, MqttBridge
from hark_fleet.hub.mqtt.embedded import EmbeddedBroker
from hark_fleet.protocol.topics import NodeTopic, command_topic
from paho.mqtt.enums import CallbackAPIVersion

from tests.harness import Mosquitto

SECRET = "bridge-test-secret"


class Heartbeat(msgspec.Struct):
    seq: int


def client(address: BrokerAddress, client_id: str) -> mqtt.Client:
    """A plain paho client, connected, with its network loop on a thread."""
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id)
    if address.username:
        c.username_pw_set(address.username, address.password)
    connected = threading.Event()
    c.on_connect = lambda *args: connected.set()
    c.connect(address.host, address.port)
    c.loop_start()
    assert connected.wait(5), "test client could not connect"
    return c


def close(c: mqtt.Client) -> None:
    c.disconnect()
    c.loop_stop()


@asynccontextmanager
async def broker_address(kind: str, mosquitto: Mosquitto) -> AsyncIterator[BrokerAddress]:
    if kind == "mosquitto":
        yield BrokerAddress(mosquitto.host, mosquitto.port)
        return
    broker = EmbeddedBroker(BrokerAccess(SECRET))
    host, port = await broker.start("127.0.0.1", 0, fallback_to_free_port=False)
    try:
        yield BrokerAddress(host, port, username=HUB_MQTT_USERNAME, password=SECRET)
    finally:
        await broker.stop()


async def eventually(predicate: Callable[[], Any], timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


def counter(metrics: HubMetrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


@pytest.mark.parametrize("kind", ["embedded", "mosquitto"])
def test_valid_messages_are_dispatched_and_bad_ones_counted_and_dropped(
    kind: str, mosquitto: Mosquitto, no_thread_leak: None
) -> None:
    async def scenario() -> None:
        async with broker_address(kind, mosquitto) as address:
            metrics = HubMetrics()
            bridge = MqttBridge(address, client_id=f"hub-test-{kind}", metrics=metrics)
            received: list[tuple[str, int, str]] = []
            loop_thread = threading.get_ident()

            def on_heartbeat(topic: NodeTopic, message: Heartbeat) -> None:
                assert threading.get_ident() == loop_thread, "handlers run on the event loop"
                if message.seq < 0:
                    raise RuntimeError("handler bug")
                received.append((topic.node_id, message.seq, topic.rest))

            async def on_health(topic: NodeTopic, message: Any) -> None:
                raise InvalidMessage("no such health kind")

            bridge.route("heartbeat", on_heartbeat, Heartbeat)
            bridge.route("health", on_health)
            bridge.start()
            assert await bridge.wait_connected(5)
            publisher = await asyncio.to_thread(client, address, f"node-sim-{kind}")
            try:
                prefix = "hark/v1/nodes"
                messages = [
                    (f"{prefix}/n1/heartbeat", b'{"seq": 1}'),
                    (f"{prefix}/n1/heartbeat", b"{not json"),
                    (f"{prefix}/n1/heartbeat", b'{"seq": "one"}'),
                    (f"{prefix}/n1/heartbeat", b'{"seq": -1}'),
                    (f"{prefix}/n1/unknown-kind", b"{}"),
                    (f"{prefix}/n1", b"{}"),
                    (f"{prefix}/n1/health", b"{}"),
                    (f"{prefix}/n2/heartbeat/extra", b'{"seq": 2}'),
                ]
                for topic, payload in messages:
                    await asyncio.to_thread(publisher.publish(topic, payload, qos=1).wait_for_publish, 5)
                await eventually(
                    lambda: (
                        len(received) == 2 and counter(metrics, "hark_mqtt_messages_dropped_total", reason="invalid_payload") == 2
                    )
                )
                await eventually(lambda: counter(metrics, "hark_mqtt_messages_dropped_total", reason="bad_topic") == 1)
            finally:
                await asyncio.to_thread(close, publisher)
                await bridge.stop()
            assert received == [("n1", 1, ""), ("n2", 2, "extra")]
            dropped = {
                r: counter(metrics, "hark_mqtt_messages_dropped_total", reason=r)
                for r in ("invalid_json", "invalid_payload", "handler_error", "unknown_kind", "bad_topic")
            }
            assert dropped == {"invalid_json": 1, "invalid_payload": 2, "handler_error": 1, "unknown_kind": 1, "bad_topic": 1}
            assert counter(metrics, "hark_mqtt_messages_received_total", kind="heartbeat") == 5

    asyncio.run(scenario())


@pytest.mark.parametrize("kind", ["embedded", "mosquitto"])
def test_commands_reach_the_node_topic(kind: str, mosquitto: Mosquitto, no_thread_leak: None) -> None:
    async def scenario() -> None:
        async with broker_address(kind, mosquitto) as address:
            bridge = MqttBridge(address, client_id=f"hub-cmd-{kind}", metrics=HubMetrics())
            bridge.start()
            assert await bridge.wait_connected(5)
            got: list[tuple[str, bytes, int]] = []
            subscriber = await asyncio.to_thread(client, address, f"node-cmd-{kind}")
            subscribed = threading.Event()
            subscriber.on_subscribe = lambda *args: subscribed.set()
            subscriber.on_message = lambda c, u, m: got.append((m.topic, m.payload, m.qos))
            subscriber.subscribe("hark/v1/nodes/n7/cmd/#", qos=1)
            assert await asyncio.to_thread(subscribed.wait, 5)
            try:
                assert bridge.publish(command_topic("n7", "config"), {"changed": ["meters"]})
                await eventually(lambda: bool(got))
            finally:
                await asyncio.to_thread(close, subscriber)
                await bridge.stop()
            assert got == [("hark/v1/nodes/n7/cmd/config", b'{"changed":["meters"]}', 1)]

    asyncio.run(scenario())


def test_the_bridge_reconnects_and_resubscribes_after_a_broker_restart(own_mosquitto: Mosquitto, no_thread_leak: None) -> None:
    async def scenario() -> None:
        address = BrokerAddress(own_mosquitto.host, own_mosquitto.port)
        metrics = HubMetrics()
        bridge = MqttBridge(address, client_id="hub-restart", metrics=metrics)
        seqs: list[int] = []
        bridge.route("heartbeat", lambda topic, message: seqs.append(message.seq), Heartbeat)
        bridge.start()
        try:
            assert await bridge.wait_connected(5)
            await asyncio.to_thread(own_mosquitto.stop)
            await eventually(lambda: not bridge.connected)
            assert counter(metrics, "hark_mqtt_connected") == 0
            await asyncio.to_thread(own_mosquitto.start)
            await eventually(lambda: bridge.connected, timeout=40)
            publisher = await asyncio.to_thread(client, address, "node-after-restart")
            try:
                await asyncio.to_thread(publisher.publish("hark/v1/nodes/n1/heartbeat", b'{"seq": 9}', qos=1).wait_for_publish, 5)
                await eventually(lambda: seqs == [9])
            finally:
                await asyncio.to_thread(close, publisher)
        finally:
            await bridge.stop()

    asyncio.run(scenario())


class Report(msgspec.Struct):
    seq: int
    details: dict[str, object] = {}


DEEP = b'{"a":' * 1000 + b"1" + b"}" * 1000  # the 6 KB message that stalled the fleet


def nested_report(levels: int) -> bytes:
    return b'{"seq": 1, "details": ' + b'{"a":' * levels + b"1" + b"}" * levels + b"}"


@pytest.mark.parametrize("kind", ["embedded", "mosquitto"])
def test_one_nodes_hostile_messages_are_dropped_once_and_never_stall_the_others(
    kind: str, mosquitto: Mosquitto, no_thread_leak: None, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario() -> None:
        async with broker_address(kind, mosquitto) as address:
            metrics = HubMetrics()
            bridge = MqttBridge(address, client_id=f"hub-hostile-{kind}", metrics=metrics)
            received: list[tuple[str, int]] = []
            bridge.route("heartbeat", lambda topic, message: received.append((topic.node_id, message.seq)), Report)
            bridge.route("meters", lambda topic, message: received.append((topic.node_id, message.seq)), Report)
            bridge.start()
            assert await bridge.wait_connected(5)
            bad = await asyncio.to_thread(client, address, f"bad-node-{kind}")
            good = await asyncio.to_thread(client, address, f"good-node-{kind}")
            prefix = "hark/v1/nodes"
            try:
                hostile = [DEEP] * 20 + [nested_report(40), b"{" + b" " * 300_000 + b"}"]
                for payload in hostile:
                    bad.publish(f"{prefix}/bad/heartbeat", payload, qos=1)
                bad.publish(f"{prefix}/bad/meters", DEEP, qos=0)
                for seq in range(1, 4):
                    sent = good.publish(f"{prefix}/good/heartbeat", b'{"seq": %d}' % seq, qos=1)
                    await asyncio.to_thread(sent.wait_for_publish, 5)
                    good.publish(f"{prefix}/good/meters", b'{"seq": %d}' % seq, qos=0)
                await eventually(lambda: len([r for r in received if r[0] == "good"]) == 6)
                await eventually(lambda: counter(metrics, "hark_mqtt_messages_dropped_total", reason="too_deep") == 22)
                await eventually(lambda: counter(metrics, "hark_mqtt_messages_dropped_total", reason="too_large") == 1)
                await asyncio.sleep(1.0)  # acknowledged: nothing comes back
                assert counter(metrics, "hark_mqtt_messages_dropped_total", reason="too_deep") == 22
            finally:
                await asyncio.to_thread(close, bad)
                await asyncio.to_thread(close, good)
                await bridge.stop()
            assert sorted(received) == [("good", 1), ("good", 1), ("good", 2), ("good", 2), ("good", 3), ("good", 3)]

    with caplog.at_level("INFO", logger="hark_fleet.hub.mqtt"):
        asyncio.run(scenario())
    about_bad = [r for r in caplog.records if "bad" in r.getMessage() and r.levelname != "DEBUG"]
    assert 0 < len(about_bad) <= 2, [r.getMessage() for r in about_bad]  # once per reason (too_deep, too_large)
    assert not [r for r in caplog.records if r.exc_info and "RecursionError" in str(r.exc_info[0])]
