"""The embedded broker admits only who the hub's policy names: deny by default."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable
from typing import Any

import pytest
from hark_fleet.hub.const import HUB_MQTT_USERNAME
from hark_fleet.hub.mqtt.access import BrokerAccess
from hark_fleet.hub.mqtt.embedded import EmbeddedBroker

from tests.harness import mqtt_login
from tests.hub.mqtt.peer import Peer


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


def test_a_node_publishes_under_its_own_prefix_but_never_into_its_commands() -> None:
    access = node_access()
    assert access.may(NODE_A, f"hark/v1/nodes/{NODE_A}/heartbeat", "publish")
    assert not access.may(NODE_A, f"hark/v1/nodes/{NODE_A}/cmd/credentials", "publish")
    assert not access.may(NODE_A, f"hark/v1/nodes/{NODE_B}/heartbeat", "publish")
    assert access.may(NODE_A, f"hark/v1/nodes/{NODE_A}/cmd/#", "subscribe")
    assert not access.may(NODE_A, "hark/v1/nodes/+/cmd/#", "subscribe")


@pytest.mark.parametrize("username", ["+", "#", "$SYS", "hark/v1/nodes/#", f"{NODE_A}/#", ""])
def test_wildcards_and_dollar_names_are_no_login(username: str) -> None:
    access = node_access()
    assert not access.check_connect(username, username, CREDENTIALS[NODE_A])
    assert not access.may(username, f"hark/v1/nodes/{NODE_A}/cmd/credentials", "receive")


@pytest.mark.parametrize("kind", ["cmd/credentials", "status"])
def test_a_last_will_on_another_nodes_topic_is_refused_at_connect(kind: str, no_thread_leak: None) -> None:
    topic = f"hark/v1/nodes/{NODE_B}/{kind}"

    def scenario(broker: EmbeddedBroker, port: int) -> None:
        hub = Peer(port, "hark-hub-test", HUB_MQTT_USERNAME, HUB_SECRET, clean=True)
        assert hub.connect()
        hub.subscribe("hark/v1/nodes/+/#")
        forger = Peer(port, NODE_A, NODE_A, CREDENTIALS[NODE_A], clean=True)
        forger.client.will_set(topic, b'{"credential": "hkn_forged"}', qos=1, retain=True)
        try:
            accepted = forger.connect()
            forger.client.loop_stop()
            if accepted:
                forger.client.socket().close()  # an abrupt loss: the broker publishes the will
            assert hub.received(1) == []
            assert not accepted, "a will on another node's topic was accepted"
        finally:
            forger.client.loop_stop()
            hub.close()

    with_broker(scenario)


def test_a_last_will_on_the_nodes_own_status_is_published(no_thread_leak: None) -> None:
    topic = f"hark/v1/nodes/{NODE_A}/status"

    def scenario(broker: EmbeddedBroker, port: int) -> None:
        hub = Peer(port, "hark-hub-test", HUB_MQTT_USERNAME, HUB_SECRET, clean=True)
        assert hub.connect()
        hub.subscribe("hark/v1/nodes/+/#")
        node = Peer(port, NODE_A, NODE_A, CREDENTIALS[NODE_A], clean=True)
        node.client.will_set(topic, b'{"state": "offline"}', qos=1, retain=True)
        try:
            assert node.connect()
            node.client.loop_stop()
            node.client.socket().close()
            assert [m[:2] for m in hub.received(2)] == [(topic, b'{"state": "offline"}')]
        finally:
            hub.close()

    with_broker(scenario)


def test_a_forgotten_node_leaves_no_session_or_queued_commands_behind(no_thread_leak: None) -> None:
    async def main() -> tuple[bool, bool, bool, bool]:
        broker = EmbeddedBroker(node_access())
        _, port = await broker.start("127.0.0.1", 0, fallback_to_free_port=False)
        try:
            await asyncio.to_thread(leave_offline_session, port, NODE_B)
            await asyncio.to_thread(hub_publishes, port, (f"hark/v1/nodes/{NODE_B}/cmd/config", b'{"changed": []}'))
            kept = broker.has_session(NODE_B)
            live = Peer(port, NODE_A, NODE_A, CREDENTIALS[NODE_A])
            assert await asyncio.to_thread(live.connect)
            try:
                forgotten = await broker.forget(NODE_B) and await broker.forget(NODE_A)
                return kept, forgotten, broker.has_session(NODE_B), broker.has_session(NODE_A)
            finally:
                await asyncio.to_thread(live.close)
        finally:
            await broker.stop()

    assert asyncio.run(main()) == (True, True, False, False)
