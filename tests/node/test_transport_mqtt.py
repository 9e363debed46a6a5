"""The node's MQTT session against a real Mosquitto: status, last will, commands, credential rotation."""

from __future__ import annotations

import asyncio
import logging
import threading
from pathlib import Path

import pytest
from hark_fleet.node.topics import NodeTopics
from hark_fleet.node.transport_mqtt import BrokerAddress, MqttTransport

from tests.harness import Mosquitto
from tests.node.fakes import FakeHub, authenticated_mosquitto, reload, retained, write_password_file
from tests.node.test_sender import eventually


def test_broker_urls() -> None:
    assert BrokerAddress.from_url("mqtt://10.0.0.2") == BrokerAddress("10.0.0.2", 1883, False)
    assert BrokerAddress.from_url("mqtts://hub.local:8884") == BrokerAddress("hub.local", 8884, True)
    assert BrokerAddress.from_url("mqtt://user:pw@[::1]:1884").url() == "mqtt://[::1]:1884"  # never the URL's login
    for bad in ("http://hub:1883", "mqtt://", "mqtt://hub:port"):
        with pytest.raises(ValueError):
            BrokerAddress.from_url(bad)


def test_command_topics_of_this_node_only() -> None:
    topics = NodeTopics("n1")
    assert topics.commands_filter == "hark/v1/nodes/n1/cmd/#"
    assert topics.command_kind("hark/v1/nodes/n1/cmd/ack") == "ack"
    assert topics.command_kind("hark/v1/nodes/n2/cmd/ack") is None
    assert topics.command_kind("hark/v1/nodes/n1/heartbeat") is None
    assert topics.command_kind("hark/v1/nodes/n1/cmd") is None


def test_online_status_on_connect_and_retained_offline_on_stop(mosquitto: Mosquitto, no_thread_leak: None) -> None:
    node = "transport-status"
    status_topic = f"hark/v1/nodes/{node}/status"
    received: list[tuple[str, bytes, bool]] = []

    async def scenario() -> None:
        loop_thread = threading.current_thread()

        def on_message(topic: str, payload: bytes) -> None:
            received.append((topic, payload, threading.current_thread() is loop_thread))

        transport = MqttTransport(NodeTopics(node), "cred", "boot-1", "9.9.9", on_message, lambda up: None)
        with FakeHub(mosquitto.host, mosquitto.port, node) as hub:
            transport.start(BrokerAddress(mosquitto.host, mosquitto.port))
            online = await asyncio.to_thread(hub.wait_status, "online")
            assert (online["agent_version"], online["boot_id"]) == ("9.9.9", "boot-1")
            assert online["ts"].endswith("Z")
            probe = await asyncio.to_thread(retained, mosquitto.host, mosquitto.port, status_topic)
            assert probe is not None and probe["state"] == "online"
            hub.send("config", {"changed": ["name"]})
            await eventually(lambda: received, what="the command")
            await transport.stop()
            assert not transport.connected
            offline = await asyncio.to_thread(hub.wait_status, "offline")
            assert offline["boot_id"] == "boot-1"
        probe = await asyncio.to_thread(retained, mosquitto.host, mosquitto.port, status_topic)
        assert probe is not None and probe["state"] == "offline"

    asyncio.run(scenario())
    assert received == [(f"hark/v1/nodes/{node}/cmd/config", b'{"changed": ["name"]}', True)]


def test_a_new_credential_is_used_at_once_on_a_prompt_reconnect(
    tmp_path: Path, no_thread_leak: None, caplog: pytest.LogCaptureFixture
) -> None:
    node = "transport-rotate"
    broker = authenticated_mosquitto(tmp_path / "broker", {"hub": "hub-pass", node: "old-cred"})
    broker.start()
    try:

        async def scenario() -> None:
            transport = MqttTransport(NodeTopics(node), "old-cred", "boot-1", "test", lambda t, p: None, lambda up: None)
            with FakeHub(broker.host, broker.port, node, "hub", "hub-pass") as hub:
                transport.start(BrokerAddress(broker.host, broker.port))
                await asyncio.to_thread(hub.wait_status, "online")
                # the old credential is retired at the broker, which drops the node; its retries are refused
                write_password_file(broker.workdir / "passwords", {"hub": "hub-pass", node: "new-cred"})
                reload(broker)
                await eventually(lambda: "refused node" in caplog.text, what="the old credential to be refused")
                started = asyncio.get_running_loop().time()
                transport.set_credential("new-cred")  # cuts the backoff short
                await asyncio.to_thread(hub.wait_status, "online", 1, 10.0)
                assert asyncio.get_running_loop().time() - started < 2.5
                assert transport.connected
                await transport.stop()

        with caplog.at_level(logging.INFO, logger="hark_fleet.node"):
            asyncio.run(scenario())
        assert "new-cred" not in caplog.text and "old-cred" not in caplog.text
    finally:
        broker.stop()


def test_a_refused_login_is_retried_with_backoff(tmp_path: Path, no_thread_leak: None, caplog: pytest.LogCaptureFixture) -> None:
    node = "transport-refused"
    broker = authenticated_mosquitto(tmp_path / "broker", {"hub": "hub-pass"})
    broker.start()
    try:

        async def scenario() -> None:
            transport = MqttTransport(NodeTopics(node), "not-yet", "boot-1", "test", lambda t, p: None, lambda up: None)
            transport.start(BrokerAddress(broker.host, broker.port))
            await eventually(lambda: "refused node" in caplog.text, what="the refusal to be logged")
            assert not transport.connected
            write_password_file(broker.workdir / "passwords", {"hub": "hub-pass", node: "not-yet"})
            reload(broker)
            await eventually(lambda: transport.connected, timeout=40, what="the retry to succeed")
            await transport.stop()

        with caplog.at_level(logging.INFO, logger="hark_fleet.node"):
            asyncio.run(scenario())
        assert "not-yet" not in caplog.text
    finally:
        broker.stop()


@pytest.mark.slow
def test_a_fleet_losing_its_broker_does_not_reconnect_in_one_burst(own_mosquitto: Mosquitto, no_thread_leak: None) -> None:
    fleet = 20
    reconnected: dict[str, float] = {}

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        transports = []
        for n in range(fleet):
            node = f"fleet-{n:02d}"

            def on_connection(up: bool, node: str = node) -> None:
                if up:
                    reconnected[node] = loop.time()

            transports.append(MqttTransport(NodeTopics(node), "c", "b", "t", lambda t, p: None, on_connection))
        for transport in transports:
            transport.start(BrokerAddress(own_mosquitto.host, own_mosquitto.port))
        await eventually(lambda: all(t.connected for t in transports), what="the fleet to connect")
        await asyncio.sleep(0.5)
        own_mosquitto.stop()
        await eventually(lambda: not any(t.connected for t in transports), what="the fleet to notice")
        reconnected.clear()
        own_mosquitto.start()
        await eventually(lambda: len(reconnected) == fleet, timeout=40, what="the fleet to reconnect")
        for transport in transports:
            await transport.stop()

    asyncio.run(scenario())
    times = sorted(reconnected.values())
    assert times[-1] - times[0] > 0.5  # spread out by the jitter
    busiest = max(sum(1 for t in times if start <= t < start + 0.1) for start in times)
    assert busiest < fleet // 2  # never half the fleet within 100 ms
