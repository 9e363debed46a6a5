"""Ingest shared between hubs with MQTT shared subscriptions (issue 24): the filters, topic parsing, and real Mosquitto.

What a real Mosquitto 2 does, and the bridge relies on: a message of a shared kind goes to one hub of the group,
meters and listen audio to every hub; a hub whose connection drops (clean session) leaves the group at once, so
the others get every message from then on.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import socket
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import msgspec
import pytest
from hark_fleet.hub.ingest import FleetIngest
from hark_fleet.hub.metrics import HubMetrics
from hark_fleet.hub.mqtt.bridge import BrokerAddress, MqttBridge, Publish, shared_client_id, split_packets
from hark_fleet.hub.mqtt.dynsec import DynsecClient
from hark_fleet.protocol.topics import HUB_SUBSCRIPTION, NodeTopic, hub_subscriptions, shared_filter, unshared

from tests.harness import Mosquitto, MosquittoDynsec
from tests.hub.mqtt.test_bridge import client, close
from tests.hub.mqtt.test_bridge_batching import publish_packet

ROOT = "hark/v1/nodes"


class Seq(msgspec.Struct):
    seq: int


# -- filters and topics ------------------------------------------------------------------------


def test_alone_a_hub_subscribes_to_everything_with_one_filter() -> None:
    assert hub_subscriptions(["heartbeat", "meters"], None) == [HUB_SUBSCRIPTION] == [f"{ROOT}/+/#"]


def test_shared_every_kind_goes_through_the_group_but_meters_and_listen_reach_every_hub() -> None:
    assert hub_subscriptions(["status", "meters", "lifecycle", "listen", "heartbeat"], "hark-hub") == [
        f"$share/hark-hub/{ROOT}/+/heartbeat/#",
        f"$share/hark-hub/{ROOT}/+/lifecycle/#",
        f"{ROOT}/+/listen/#",
        f"{ROOT}/+/meters/#",
        f"$share/hark-hub/{ROOT}/+/status/#",
    ]


@pytest.mark.parametrize("bad", ["", "a/b", "+", "#"])
def test_a_share_group_that_is_not_one_topic_level_is_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        shared_filter(bad, f"{ROOT}/+/status/#")


def test_a_share_prefix_is_read_past() -> None:
    assert unshared(f"$share/g/{ROOT}/n1/status") == f"{ROOT}/n1/status"
    assert unshared(f"{ROOT}/n1/status") == f"{ROOT}/n1/status"


def fleet_ingest(bridge: MqttBridge) -> FleetIngest:
    """The hub's real ingest, registering its routes on `bridge` (a hub of parts: nothing else is used)."""
    hub: Any = SimpleNamespace(bridge=bridge, listen=SimpleNamespace(on_chunk=lambda topic, payload: None))
    hub.config = SimpleNamespace(history_retention_days=1)
    ingest = FleetIngest(hub)
    ingest.register()
    return ingest


def test_the_hub_shares_what_it_ingests_and_takes_every_meter_frame_and_listen_chunk() -> None:
    bridge = MqttBridge(BrokerAddress("127.0.0.1", 1), "shared-test", HubMetrics(), share_group="hark-hub")
    fleet_ingest(bridge)
    filters = bridge.subscriptions()
    plain = sorted(f for f in filters if not f.startswith("$share/"))
    assert plain == [f"{ROOT}/+/listen/#", f"{ROOT}/+/meters/#"]
    shared = {f.split("/")[-2] for f in filters if f.startswith("$share/hark-hub/")}
    assert {"status", "heartbeat", "health", "lifecycle", "watchdog", "applied"} <= shared
    assert len(shared) + len(plain) == len(filters) == len(bridge.routes)  # each routed kind once, nothing else
    alone = MqttBridge(BrokerAddress("127.0.0.1", 1), "alone-test", HubMetrics())
    fleet_ingest(alone)
    assert alone.subscriptions() == [HUB_SUBSCRIPTION]


def test_each_hub_process_has_its_own_client_id() -> None:
    base = "hark-hub-" + "h" * 40 + "-0123abcd"
    first, second = shared_client_id(base, "host-100-a1b2c3"), shared_client_id(base, "host-100-d4e5f6")
    assert first != second and first.startswith("hark-hub-") and len(first) <= 64


def test_a_message_delivered_with_a_share_prefix_is_parsed_as_its_real_topic() -> None:
    bridge = MqttBridge(BrokerAddress("127.0.0.1", 1), "shared-test", HubMetrics(), share_group="g")
    got: list[tuple[str, str, int]] = []
    bridge.route("heartbeat", lambda topic, beat: got.append((topic.node_id, topic.kind, beat.seq)), Seq)
    buffer = bytearray(
        publish_packet(f"$share/g/{ROOT}/n1/heartbeat", b'{"seq": 1}') + publish_packet(f"{ROOT}/n2/heartbeat", b'{"seq": 2}')
    )
    publishes: list[Publish] = []
    assert split_packets(buffer, publishes, []) == len(buffer)
    bridge.handle_batch(publishes)
    assert got == [("n1", "heartbeat", 1), ("n2", "heartbeat", 2)]


# -- on a real Mosquitto ------------------------------------------------------------------------------


class Hub:
    """A bridge like a hub's, recording which heartbeats (shared) and meter frames (every hub) it got."""

    def __init__(self, address: BrokerAddress, group: str, name: str) -> None:
        self.bridge = MqttBridge(address, shared_client_id(f"hark-hub-{name}", secrets.token_hex(3)), HubMetrics(), group)
        self.beats: list[int] = []
        self.frames: list[int] = []
        self.bridge.route("heartbeat", self.on_beat, Seq)
        self.bridge.route("meters", lambda items: self.frames.extend(f.seq for _, f in items) or len(items), Seq, batch=True)

    def on_beat(self, topic: NodeTopic, beat: Seq) -> None:
        self.beats.append(beat.seq)


async def wait(predicate: Any, what: str, timeout: float = 15.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


async def publish(sender: Any, topic: str, seq: int, qos: int = 1) -> None:
    await asyncio.to_thread(sender.publish(topic, json.dumps({"seq": seq}).encode(), qos=qos).wait_for_publish, 5)


async def subscribed(hubs: list[Hub], sender: Any) -> None:
    """Until each hub gets meter frames (its subscriptions are in place); what came meanwhile is forgotten."""
    probe = -1
    while not all(-1 in hub.frames for hub in hubs):
        await publish(sender, f"{ROOT}/probe/meters", probe, qos=0)
        await asyncio.sleep(0.05)
    for hub in hubs:
        hub.frames.clear()


def test_each_report_reaches_one_hub_each_meter_frame_every_hub_and_a_dead_hub_leaves_the_group(mosquitto: Mosquitto) -> None:
    asyncio.run(share_and_die(BrokerAddress(mosquitto.host, mosquitto.port)))


async def share_and_die(address: BrokerAddress) -> None:
    group = f"test-{secrets.token_hex(3)}"
    a, b = Hub(address, group, "a"), Hub(address, group, "b")
    sender = await asyncio.to_thread(client, address, f"node-{secrets.token_hex(3)}")
    try:
        for hub in (a, b):
            hub.bridge.start()
            assert await hub.bridge.wait_connected(10)
        await subscribed([a, b], sender)
        for seq in range(20):
            await publish(sender, f"{ROOT}/n{seq % 3}/heartbeat", seq)
            await publish(sender, f"{ROOT}/n{seq % 3}/meters", seq, qos=0)
        await wait(lambda: len(a.beats) + len(b.beats) == 20 and len(a.frames) == len(b.frames) == 20, "the first 20")
        assert sorted(a.beats + b.beats) == list(range(20))  # each once
        assert a.beats and b.beats  # both had a share
        assert a.frames == b.frames == list(range(20))

        # b dies: its connection drops without a DISCONNECT, as with kill -9
        sock = b.bridge._client.socket()
        assert sock is not None
        sock.shutdown(socket.SHUT_RDWR)
        await b.bridge.stop()
        a.beats.clear()
        for seq in range(20, 40):
            await publish(sender, f"{ROOT}/n{seq % 3}/heartbeat", seq)
        # A persistent session would stay in the group and queue every other one for b.
        await wait(lambda: len(a.beats) == 20, "every later heartbeat on the hub left")
        assert sorted(a.beats) == list(range(20, 40))
    finally:
        await asyncio.to_thread(close, sender)
        for hub in (a, b):
            await hub.bridge.stop()


# -- ACLs of the hub role (dynamic security) -------------------------------------------------------


@pytest.fixture(scope="module")
def dynsec_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MosquittoDynsec]:
    broker = MosquittoDynsec(tmp_path_factory.mktemp("mosquitto-dynsec-shared"))
    broker.start()
    yield broker
    broker.stop()


def test_the_hub_role_lets_the_hub_share_in_its_configured_group_only(
    dynsec_broker: MosquittoDynsec, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    asyncio.run(role_and_groups(dynsec_broker, caplog))


async def role_and_groups(broker: MosquittoDynsec, caplog: pytest.LogCaptureFixture) -> None:
    admin = BrokerAddress(broker.host, broker.port, username=broker.admin_username, password=broker.admin_password)
    hub_user, hub_password = "hark-hub", secrets.token_urlsafe(12)
    async with DynsecClient(admin) as dynsec:
        await dynsec.set_default_acl_access()
        await dynsec.ensure_hub_role(hub_user, hub_password, share_group="site-hubs")
    address = BrokerAddress(broker.host, broker.port, username=hub_user, password=hub_password)
    allowed, refused = Hub(address, "site-hubs", "allowed"), Hub(address, "other-group", "refused")
    sender = await asyncio.to_thread(client, address, f"sender-{secrets.token_hex(3)}")
    try:
        with caplog.at_level(logging.ERROR, logger="hark_fleet.hub.mqtt.bridge"):
            for hub in (allowed, refused):
                hub.bridge.start()
                assert await hub.bridge.wait_connected(10)
            await subscribed([allowed, refused], sender)  # meter frames: not shared, so allowed for both
            await wait(lambda: "refused the subscription" in caplog.text, "the refused filter to be said")
        assert f"$share/other-group/{ROOT}/+/heartbeat/#" in caplog.text
        assert "site-hubs" not in caplog.text
        for seq in range(5):
            await publish(sender, f"{ROOT}/n1/heartbeat", seq)
        await wait(lambda: len(allowed.beats) == 5, "the heartbeats in the allowed group")
        assert refused.beats == []
    finally:
        await asyncio.to_thread(close, sender)
        for hub in (allowed, refused):
            await hub.bridge.stop()
