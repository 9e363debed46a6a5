"""The embedded broker admits only who the hub's policy names: deny by default."""

from __future__ import annotations

import asyncio
import hashlib
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from hub.const import HUB_MQTT_USERNAME
from hub.mqtt.access import BrokerAccess
from hub.mqtt.embedded import EmbeddedBroker
from tests.harness import mqtt_login


@pytest.mark.parametrize(
    ("username", "password", "accepted"),
    [
        (HUB_MQTT_USERNAME, "the-secret", True),
        (HUB_MQTT_USERNAME, "a-guess", False),
        (None, None, False),
        ("someone", "the-secret", False),
    ],
)
def test_only_the_hub_credential_logs_in(username: str | None, password: str | None, accepted: bool) -> None:
    async def scenario() -> bool:
        broker = EmbeddedBroker(BrokerAccess("the-secret"))
        _, port = await broker.start("127.0.0.1", 0, fallback_to_free_port=False)
        try:
            return await asyncio.to_thread(mqtt_login, port, username, password)
        finally:
            await broker.stop()

    assert asyncio.run(scenario()) is accepted


def test_policy_denies_topics_to_anyone_but_the_hub() -> None:
    access = BrokerAccess("s")
    assert access.may(HUB_MQTT_USERNAME, "hark/v1/nodes/n1/cmd/config", "publish")
    assert not access.may("n1", "hark/v1/nodes/n1/heartbeat", "publish")
    assert not access.may(None, "#", "subscribe")


# -- sessions: client ids bound to identities, authentication before take-over, queued deliveries --------

HUB_SECRET = "the-secret"
NODE_A, NODE_B = "nod_a", "nod_b"
CREDENTIALS = {NODE_A: "cred-a", NODE_B: "cred-b"}


class Peer:
    """A paho client on the embedded broker, recording its CONNACK, messages (with the retain flag) and drops."""

    def __init__(self, port: int, client_id: str, username: str | None, password: str | None, clean: bool = False) -> None:
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=clean)
        if username is not None:
            self.client.username_pw_set(username, password)
        self.port = port
        self.connacks: queue.Queue[bool] = queue.Queue()
        self.messages: queue.Queue[tuple[str, bytes, bool]] = queue.Queue()
        self.dropped = threading.Event()
        self.subscribed = threading.Event()
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = lambda *args: self.dropped.set()
        self.client.on_subscribe = lambda *args: self.subscribed.set()
        self.client.on_message = lambda c, u, m: self.messages.put((m.topic, bytes(m.payload), bool(m.retain)))

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        self.connacks.put(not reason.is_failure)
        if reason.is_failure:
            client.disconnect()

    def connect(self) -> bool:
        """Connect; whether the broker accepted (paho does not retry: a refusal ends the loop)."""
        self.client.connect("127.0.0.1", self.port, keepalive=30)
        self.client.loop_start()
        try:
            return self.connacks.get(timeout=5)
        except queue.Empty:
            return False

    def subscribe(self, topic: str) -> None:
        self.subscribed.clear()
        self.client.subscribe(topic, qos=1)
        assert self.subscribed.wait(5), f"no SUBACK for {topic}"

    def publish(self, topic: str, payload: bytes) -> None:
        self.client.publish(topic, payload, qos=1).wait_for_publish(5)

    def received(self, seconds: float = 0.5) -> list[tuple[str, bytes, bool]]:
        """What arrives within `seconds`."""
        got: list[tuple[str, bytes, bool]] = []
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            try:
                got.append(self.messages.get(timeout=left))
            except queue.Empty:
                break
        return got

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def node_access(access: BrokerAccess | None = None) -> BrokerAccess:
    access = access or BrokerAccess(HUB_SECRET)
    access.set_node_credentials({node: (hashlib.sha256(c.encode()).hexdigest(), None, None) for node, c in CREDENTIALS.items()})
    return access


def with_broker(scenario: Callable[[EmbeddedBroker, int], Any], access: BrokerAccess | None = None) -> Any:
    """Run the blocking `scenario(broker, port)` on a thread while an embedded broker serves on the loop."""

    async def main() -> Any:
        broker = EmbeddedBroker(node_access(access))
        _, port = await broker.start("127.0.0.1", 0, fallback_to_free_port=False)
        try:
            return await asyncio.to_thread(scenario, broker, port)
        finally:
            await broker.stop()

    return asyncio.run(main())


def leave_offline_session(port: int, node: str) -> None:
    """The node connects with a persistent session, subscribes to its commands and leaves cleanly."""
    peer = Peer(port, node, node, CREDENTIALS[node])
    assert peer.connect()
    peer.subscribe(f"hark/v1/nodes/{node}/cmd/#")
    peer.close()


def hub_publishes(port: int, *messages: tuple[str, bytes]) -> None:
    hub = Peer(port, "hark-hub-test", HUB_MQTT_USERNAME, HUB_SECRET, clean=True)
    assert hub.connect()
    for topic, payload in messages:
        hub.publish(topic, payload)
    hub.close()


@pytest.mark.parametrize(
    ("client_id", "username", "accepted"),
    [(NODE_A, NODE_A, True), (NODE_B, NODE_A, False), ("", NODE_A, False), ("anything-else", NODE_A, False)],
)
def test_a_node_logs_in_only_with_its_own_id_as_client_id(
    client_id: str, username: str, accepted: bool, no_thread_leak: None
) -> None:
    def scenario(broker: EmbeddedBroker, port: int) -> bool:
        peer = Peer(port, client_id, username, CREDENTIALS[username], clean=client_id == "")
        try:
            return peer.connect()
        finally:
            peer.close()

    assert with_broker(scenario) is accepted


def test_a_node_cannot_resume_another_nodes_session_and_read_its_queued_commands(no_thread_leak: None) -> None:
    credentials_topic = f"hark/v1/nodes/{NODE_B}/cmd/credentials"

    def scenario(broker: EmbeddedBroker, port: int) -> None:
        leave_offline_session(port, NODE_B)
        hub_publishes(port, (credentials_topic, b'{"credential": "hkn_for_b_only"}'))
        thief = Peer(port, NODE_B, NODE_A, CREDENTIALS[NODE_A])  # A's login, B's client id, persistent session
        try:
            assert not thief.connect(), "A was let into B's session"
            assert thief.received() == []
        finally:
            thief.close()
        owner = Peer(port, NODE_B, NODE_B, CREDENTIALS[NODE_B])
        try:
            assert owner.connect()
            assert [m[:2] for m in owner.received(2)] == [(credentials_topic, b'{"credential": "hkn_for_b_only"}')]
        finally:
            owner.close()

    with_broker(scenario)


class UnboundAccess(BrokerAccess):
    """The policy without the client-id binding: what is left to stop a resumed session from leaking."""

    def check_connect(self, client_id: str | None, username: str | None, password: str | None) -> bool:
        return self.check_login(username, password)


def test_queued_messages_go_through_the_receive_acl_of_whoever_resumes_the_session(no_thread_leak: None) -> None:
    def scenario(broker: EmbeddedBroker, port: int) -> None:
        leave_offline_session(port, NODE_B)
        hub_publishes(port, (f"hark/v1/nodes/{NODE_B}/cmd/credentials", b'{"credential": "hkn_for_b_only"}'))
        thief = Peer(port, NODE_B, NODE_A, CREDENTIALS[NODE_A])
        try:
            thief.connect()
            assert thief.received(1) == []
        finally:
            thief.close()

    with_broker(scenario, UnboundAccess(HUB_SECRET))


def test_a_queued_command_arrives_as_an_ordinary_message_not_a_retained_one(no_thread_leak: None) -> None:
    topic = f"hark/v1/nodes/{NODE_B}/cmd/config"

    def scenario(broker: EmbeddedBroker, port: int) -> None:
        leave_offline_session(port, NODE_B)
        hub_publishes(port, (topic, b'{"changed": ["heartbeat_interval_s"]}'))
        owner = Peer(port, NODE_B, NODE_B, CREDENTIALS[NODE_B])
        try:
            assert owner.connect()
            assert owner.received(2) == [(topic, b'{"changed": ["heartbeat_interval_s"]}', False)]
        finally:
            owner.close()

    with_broker(scenario)


@pytest.mark.parametrize(
    ("username", "password", "clean"),
    [
        (NODE_B, "a-guess", False),
        (NODE_B, "a-guess", True),
        (None, None, True),
        (NODE_A, CREDENTIALS[NODE_A], False),
        (NODE_A, CREDENTIALS[NODE_A], True),
    ],
    ids=["wrong-password", "wrong-password-clean", "anonymous", "other-node", "other-node-clean"],
)
def test_a_refused_connect_with_a_live_nodes_client_id_leaves_it_connected(
    username: str | None, password: str | None, clean: bool, no_thread_leak: None
) -> None:
    topic = f"hark/v1/nodes/{NODE_B}/cmd/config"

    def scenario(broker: EmbeddedBroker, port: int) -> None:
        owner = Peer(port, NODE_B, NODE_B, CREDENTIALS[NODE_B])
        try:
            assert owner.connect()
            owner.subscribe(f"hark/v1/nodes/{NODE_B}/cmd/#")
            intruder = Peer(port, NODE_B, username, password, clean=clean)
            try:
                assert not intruder.connect()
            finally:
                intruder.close()
            hub_publishes(port, (topic, b"{}"))
            assert not owner.dropped.is_set(), "the live node was dropped by a refused CONNECT"
            assert [m[0] for m in owner.received(2)] == [topic], "the live node's session or subscription is gone"
        finally:
            owner.close()

    with_broker(scenario)


def test_the_node_itself_still_takes_over_its_own_live_session(no_thread_leak: None) -> None:
    def scenario(broker: EmbeddedBroker, port: int) -> None:
        first = Peer(port, NODE_B, NODE_B, CREDENTIALS[NODE_B])
        second = Peer(port, NODE_B, NODE_B, CREDENTIALS[NODE_B])
        try:
            assert first.connect()
            first.client.reconnect_delay_set(60, 60)  # the old connection stays down once replaced
            assert second.connect()
            assert first.dropped.wait(5), "MQTT: a second connection with the same client id replaces the first"
        finally:
            second.close()
            first.close()

    with_broker(scenario)
