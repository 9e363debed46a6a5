"""Node identities on a real Mosquitto through the dynamic security plugin, proven with real clients."""

from __future__ import annotations

import asyncio
import json
import queue
import secrets
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from hark_fleet.hub.mqtt.bridge import BrokerAddress
from hark_fleet.hub.mqtt.dynsec import (
    HUB_ROLE,
    Acl,
    Command,
    CommandResult,
    DynsecClient,
    DynsecError,
    check_results,
    decode_response,
    delete_node_commands,
    encode_request,
    hub_acls,
    node_acls,
    node_role,
    role_commands,
    upsert_node_commands,
    validate_node_id,
)
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from tests.harness import MosquittoDynsec, dynsec_plugin_path


def test_the_dynamic_security_plugin_is_installed() -> None:
    """tests/services.sh installs Debian's mosquitto, which ships the plugin."""
    assert dynsec_plugin_path() is not None


HUB_USER = "hark-hub"
HUB_PASSWORD = "hub-secret-for-tests"
SUBACK_FAILURE = 0x80


# -- helpers -------------------------------------------------------------------------


class Peer:
    """A plain paho client (MQTT 3.1.1) logged in as someone, recording what happens to it."""

    def __init__(self, broker: MosquittoDynsec, username: str, password: str, client_id: str | None = None) -> None:
        # A node's client id is its username (the broker binds them); the hub's peers each get their own.
        client_id = client_id or (username if username != HUB_USER else f"peer-{username}-{secrets.token_hex(3)}")
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id)
        self.client.username_pw_set(username, password)
        self.client.reconnect_delay_set(min_delay=1, max_delay=1)
        self.broker = broker
        self.connacks: queue.Queue[ReasonCode] = queue.Queue()
        self.messages: queue.Queue[tuple[str, bytes]] = queue.Queue()
        self.disconnected = threading.Event()
        self._subacks: dict[int, queue.Queue[list[int]]] = {}
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = lambda *args: self.disconnected.set()
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = lambda client, userdata, message: self.messages.put((message.topic, bytes(message.payload)))

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: ReasonCode, properties: Any) -> None:
        self.connacks.put(reason)
        if reason.is_failure:
            client.disconnect()  # no retrying with credentials the broker refused

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, reasons: list[ReasonCode], properties: Any) -> None:
        self._subacks.setdefault(mid, queue.Queue()).put([r.value for r in reasons])

    def connect(self, timeout: float = 5) -> ReasonCode:
        """Connect and return the broker's CONNACK reason."""
        self.client.connect(self.broker.host, self.broker.port, keepalive=10)
        self.client.loop_start()
        return self.connacks.get(timeout=timeout)

    def subscribe(self, topic: str) -> int:
        """Subscribe at QoS 1; the granted QoS, or 0x80 when refused."""
        _, mid = self.client.subscribe(topic, qos=1)
        assert mid is not None
        return self._subacks.setdefault(mid, queue.Queue()).get(timeout=5)[0]

    def publish(self, topic: str, payload: bytes) -> None:
        self.client.publish(topic, payload, qos=1).wait_for_publish(5)

    def received_until(self, topic: str, timeout: float = 5) -> list[tuple[str, bytes]]:
        """Everything received up to and including the first message on `topic`."""
        got: list[tuple[str, bytes]] = []
        deadline = time.monotonic() + timeout
        while True:
            item = self.messages.get(timeout=max(0.0, deadline - time.monotonic()))
            got.append(item)
            if item[0] == topic:
                return got

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def login(broker: MosquittoDynsec, username: str, password: str) -> Peer:
    """A connected peer; fails the test if the broker refuses it."""
    peer = Peer(broker, username, password)
    reason = peer.connect()
    if reason.is_failure:
        peer.close()
        raise AssertionError(f"{username} was refused: {reason}")
    return peer


def refused(broker: MosquittoDynsec, username: str, password: str, client_id: str | None = None) -> bool:
    peer = Peer(broker, username, password, client_id)
    try:
        return peer.connect().is_failure
    finally:
        peer.close()


def admin_address(broker: MosquittoDynsec, password: str | None = None) -> BrokerAddress:
    return BrokerAddress(broker.host, broker.port, username=broker.admin_username, password=password or broker.admin_password)


def run(broker: MosquittoDynsec, scenario: Callable[[DynsecClient], Awaitable[None]]) -> None:
    """Run `scenario` with a started admin client on an event loop, closing it afterwards."""

    async def main() -> None:
        async with DynsecClient(admin_address(broker)) as dynsec:
            await dynsec.set_default_acl_access()
            await dynsec.ensure_hub_role(HUB_USER, HUB_PASSWORD)
            await scenario(dynsec)

    asyncio.run(main())


def new_node_id() -> str:
    return f"nod_{secrets.token_hex(6)}"


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MosquittoDynsec]:
    """One dynsec Mosquitto for the module's tests that do not restart it."""
    broker = MosquittoDynsec(tmp_path_factory.mktemp("mosquitto-dynsec"))
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[MosquittoDynsec]:
    broker = MosquittoDynsec(tmp_path / "mosquitto-dynsec")
    broker.start()
    yield broker
    broker.stop()


# -- payloads, without a broker ----------------------------------------------------------


def test_roles_allow_a_node_its_own_prefix_and_commands_and_the_hub_every_node() -> None:
    assert node_role("nod_1") == "hark-node-nod_1"
    assert node_acls("nod_1") == (
        Acl("publishClientSend", "hark/v1/nodes/nod_1/cmd/#", allow=False, priority=1),  # commands come from the hub
        Acl("publishClientSend", "hark/v1/nodes/nod_1/#"),
        Acl("subscribePattern", "hark/v1/nodes/nod_1/cmd/#"),
        Acl("publishClientReceive", "hark/v1/nodes/nod_1/cmd/#"),
    )
    assert hub_acls() == (
        Acl("publishClientSend", "hark/v1/nodes/#"),
        Acl("subscribePattern", "hark/v1/nodes/#"),
        Acl("subscribePattern", "$share/hark-hub/hark/v1/nodes/#"),
        Acl("publishClientReceive", "hark/v1/nodes/#"),
    )


@pytest.mark.parametrize("bad", ["", "a/b", "+", "#", "n#", "$SYS", "x" * 200, "hark-hub", "a b", "\x00"])
def test_node_ids_that_are_not_one_safe_topic_level_are_refused(bad: str) -> None:
    with pytest.raises(DynsecError):
        validate_node_id(bad)
    with pytest.raises(DynsecError):
        upsert_node_commands(bad, "pw")


def test_requests_carry_a_correlation_per_command_and_keep_the_bodies() -> None:
    commands = upsert_node_commands("nod_1", "s3cret")
    bodies = [dict(c.body) for c in commands]
    request = json.loads(encode_request(commands, "r1"))
    assert [c["correlationData"] for c in request["commands"]] == [f"r1:{i}" for i in range(len(commands))]
    assert [{k: v for k, v in c.items() if k != "correlationData"} for c in request["commands"]] == bodies
    assert [c.name for c in commands] == ["createRole", "modifyRole", "createClient", "modifyClient", "enableClient"]
    assert [c.body for c in commands] == bodies  # encoding did not touch the commands


def test_commands_never_show_their_password() -> None:
    assert "s3cret" not in repr(upsert_node_commands("nod_1", "s3cret"))


def test_answers_are_matched_by_correlation_and_tolerated_errors_pass() -> None:
    payload = json.dumps(
        {
            "responses": [
                {"command": "deleteClient", "error": "Client not found", "correlationData": "r1:0"},
                {"command": "deleteRole", "correlationData": "r1:1"},
                {"command": "bogus", "error": "Unknown command"},
            ]
        }
    ).encode()
    answers = decode_response(payload)
    assert answers == {
        "r1:0": CommandResult("deleteClient", error="Client not found"),
        "r1:1": CommandResult("deleteRole"),
    }
    check_results(delete_node_commands("nod_1"), [answers["r1:0"], answers["r1:1"]])
    with pytest.raises(DynsecError, match="deleteRole failed: Internal error") as caught:
        check_results(delete_node_commands("nod_1"), [answers["r1:0"], CommandResult("deleteRole", error="Internal error")])
    assert caught.value.reason == "Internal error"


@pytest.mark.parametrize(
    "payload", [b"not json", b"[]", b'{"responses": 3}', b"\xff", b'{"responses": ' + b"[" * 1000 + b"]" * 1000 + b"}"]
)
def test_malformed_answers_are_a_dynsec_error(payload: bytes) -> None:
    with pytest.raises(DynsecError):
        decode_response(payload)


# -- against Mosquitto ----------------------------------------------------------------------


def test_a_node_publishes_under_its_own_prefix_only(broker: MosquittoDynsec, no_thread_leak: None) -> None:
    me, other = new_node_id(), new_node_id()

    async def scenario(dynsec: DynsecClient) -> None:
        await dynsec.upsert_node(me, "pw-me")
        await dynsec.upsert_node(other, "pw-other")
        await asyncio.to_thread(check, me, other)

    def check(me: str, other: str) -> None:
        hub = login(broker, HUB_USER, HUB_PASSWORD)
        shared = login(broker, HUB_USER, HUB_PASSWORD)
        node = login(broker, me, "pw-me")
        try:
            assert hub.subscribe("hark/v1/nodes/+/#") == 1
            assert shared.subscribe("$share/hark-hub/hark/v1/nodes/+/#") == 1
            node.publish(f"hark/v1/nodes/{other}/heartbeat", b"spoofed")
            node.publish("elsewhere/topic", b"outside the root")
            node.publish(f"hark/v1/nodes/{me}/heartbeat", b"mine")
            # One publisher, one subscriber: a forbidden message delivered would arrive before this one.
            for subscriber in (hub, shared):
                assert subscriber.received_until(f"hark/v1/nodes/{me}/heartbeat") == [(f"hark/v1/nodes/{me}/heartbeat", b"mine")]
            time.sleep(0.3)
            assert hub.messages.empty() and shared.messages.empty()
            assert not node.disconnected.is_set(), "MQTT 3.1.1: a forbidden publish is dropped, the session stays"
        finally:
            node.close()
            shared.close()
            hub.close()

    run(broker, scenario)


def test_a_node_subscribes_to_and_receives_only_its_own_commands(broker: MosquittoDynsec, no_thread_leak: None) -> None:
    me, other = new_node_id(), new_node_id()

    async def scenario(dynsec: DynsecClient) -> None:
        await dynsec.upsert_node(me, "pw-me")
        await dynsec.upsert_node(other, "pw-other")
        await asyncio.to_thread(check, me, other)

    def check(me: str, other: str) -> None:
        hub = login(broker, HUB_USER, HUB_PASSWORD)
        node = login(broker, me, "pw-me")
        try:
            assert node.subscribe("#") == SUBACK_FAILURE
            assert node.subscribe(f"hark/v1/nodes/{other}/cmd/#") == SUBACK_FAILURE
            assert node.subscribe(f"hark/v1/nodes/{me}/#") == SUBACK_FAILURE
            assert node.subscribe("hark/v1/nodes/+/cmd/#") == SUBACK_FAILURE
            assert node.subscribe(f"hark/v1/nodes/{me}/cmd/#") == 1
            hub.publish(f"hark/v1/nodes/{other}/cmd/restart", b"not for me")
            hub.publish(f"hark/v1/nodes/{me}/cmd/restart", b'{"reason": "test"}')
            got = node.received_until(f"hark/v1/nodes/{me}/cmd/restart")
            assert got == [(f"hark/v1/nodes/{me}/cmd/restart", b'{"reason": "test"}')]
        finally:
            node.close()
            hub.close()

    run(broker, scenario)


def test_a_node_logs_in_only_with_its_own_id_as_client_id(broker: MosquittoDynsec, no_thread_leak: None) -> None:
    me, other = new_node_id(), new_node_id()

    async def scenario(dynsec: DynsecClient) -> None:
        await dynsec.upsert_node(me, "pw-me")
        await dynsec.upsert_node(other, "pw-other")
        assert await asyncio.to_thread(refused, broker, me, "pw-me", other), "a node logged in with another node's client id"
        assert await asyncio.to_thread(refused, broker, me, "pw-me", f"hark-hub-{secrets.token_hex(3)}")
        assert not await asyncio.to_thread(refused, broker, me, "pw-me", me)
        info = await dynsec.get_client(me)
        assert info is not None and info.clientid == me

    run(broker, scenario)


def test_nodes_made_by_an_earlier_hub_get_todays_acls_and_binding_and_others_are_left_alone(
    broker: MosquittoDynsec, no_thread_leak: None
) -> None:
    old, bound = new_node_id(), new_node_id()

    async def scenario(dynsec: DynsecClient) -> None:
        await dynsec.upsert_node(bound, "pw-bound")
        # As an earlier hub made it: no client id.
        roles = [{"rolename": node_role(old)}]
        await dynsec.execute(role_commands(node_role(old), node_acls(old)))
        await dynsec.execute([Command({"command": "createClient", "username": old, "password": "pw-old", "roles": roles})])
        assert not await asyncio.to_thread(refused, broker, old, "pw-old", f"x-{secrets.token_hex(3)}")
        await dynsec.execute(role_commands(node_role(bound), node_acls(bound)[1:]))  # an earlier hub's ACLs
        node = await asyncio.to_thread(login, broker, bound, "pw-bound")
        try:
            await dynsec.ensure_node_roles([old, bound])
            assert set(await dynsec.get_role_acls(node_role(bound)) or ()) == set(node_acls(bound))
            assert await dynsec.bind_client_ids([old, bound, new_node_id()]) == [old]
            info = await dynsec.get_client(old)
            assert info is not None and info.clientid == old
            assert await asyncio.to_thread(refused, broker, old, "pw-old", f"x-{secrets.token_hex(3)}")
            assert not await asyncio.to_thread(refused, broker, old, "pw-old", old)
            assert not await asyncio.to_thread(node.disconnected.wait, 0.5), "a node already bound was kicked"
        finally:
            await asyncio.to_thread(node.close)

    run(broker, scenario)


def test_a_refused_connect_with_a_live_nodes_client_id_leaves_it_connected(broker: MosquittoDynsec, no_thread_leak: None) -> None:
    me, other = new_node_id(), new_node_id()

    async def scenario(dynsec: DynsecClient) -> None:
        await dynsec.upsert_node(me, "pw-me")
        await dynsec.upsert_node(other, "pw-other")
        await asyncio.to_thread(check)

    def check() -> None:
        hub = login(broker, HUB_USER, HUB_PASSWORD)
        node = login(broker, me, "pw-me")
        try:
            assert node.subscribe(f"hark/v1/nodes/{me}/cmd/#") == 1
            assert refused(broker, me, "a-guess", me)
            assert refused(broker, other, "pw-other", me), "another node's login took over this node's session"
            hub.publish(f"hark/v1/nodes/{me}/cmd/config", b"{}")
            assert node.received_until(f"hark/v1/nodes/{me}/cmd/config") == [(f"hark/v1/nodes/{me}/cmd/config", b"{}")]
            assert not node.disconnected.is_set()
        finally:
            node.close()
            hub.close()

    run(broker, scenario)


def test_a_node_may_not_publish_into_its_own_commands(broker: MosquittoDynsec, no_thread_leak: None) -> None:
    me = new_node_id()

    async def scenario(dynsec: DynsecClient) -> None:
        await dynsec.upsert_node(me, "pw-me")
        await asyncio.to_thread(check)

    def check() -> None:
        hub = login(broker, HUB_USER, HUB_PASSWORD)
        node = login(broker, me, "pw-me")
        try:
            assert hub.subscribe("hark/v1/nodes/+/#") == 1
            node.publish(f"hark/v1/nodes/{me}/cmd/credentials", b'{"credential": "planted"}')
            node.publish(f"hark/v1/nodes/{me}/heartbeat", b"mine")
            assert hub.received_until(f"hark/v1/nodes/{me}/heartbeat") == [(f"hark/v1/nodes/{me}/heartbeat", b"mine")]
        finally:
            node.close()
            hub.close()

    run(broker, scenario)


def test_a_last_will_on_another_nodes_topic_is_never_published(broker: MosquittoDynsec, no_thread_leak: None) -> None:
    me, other = new_node_id(), new_node_id()

    async def scenario(dynsec: DynsecClient) -> None:
        await dynsec.upsert_node(me, "pw-me")
        await dynsec.upsert_node(other, "pw-other")
        await asyncio.to_thread(check)

    def check() -> None:
        hub = login(broker, HUB_USER, HUB_PASSWORD)
        try:
            assert hub.subscribe("hark/v1/nodes/+/#") == 1
            for topic, payload in ((f"hark/v1/nodes/{other}/cmd/credentials", b"forged"), (f"hark/v1/nodes/{me}/status", b"own")):
                node = Peer(broker, me, "pw-me")
                node.client.will_set(topic, payload, qos=1, retain=True)
                if not node.connect().is_failure:
                    node.client.loop_stop()
                    node.client.socket().close()  # an abrupt loss: the broker publishes the will
                node.client.loop_stop()
            assert hub.received_until(f"hark/v1/nodes/{me}/status") == [(f"hark/v1/nodes/{me}/status", b"own")]
        finally:
            hub.close()

    run(broker, scenario)


def test_wrong_passwords_and_unknown_users_are_refused(broker: MosquittoDynsec, no_thread_leak: None) -> None:
    me = new_node_id()

    async def scenario(dynsec: DynsecClient) -> None:
        await dynsec.upsert_node(me, "right")
        assert await asyncio.to_thread(refused, broker, me, "wrong")
        assert await asyncio.to_thread(refused, broker, new_node_id(), "right")
        assert not await asyncio.to_thread(refused, broker, me, "right")

    run(broker, scenario)


def test_a_password_change_with_kick_drops_the_session_and_only_the_new_password_works(
    broker: MosquittoDynsec, no_thread_leak: None
) -> None:
    me = new_node_id()

    async def scenario(dynsec: DynsecClient) -> None:
        await dynsec.upsert_node(me, "old")
        node = await asyncio.to_thread(login, broker, me, "old")
        try:
            await dynsec.set_node_password(me, "new", kick=True)
            assert await asyncio.to_thread(node.disconnected.wait, 5), "the connected node was not kicked"
            # paho reconnects by itself with the old password: the broker must refuse it.
            reconnect = await asyncio.to_thread(node.connacks.get, True, 5)
            assert reconnect.is_failure
        finally:
            await asyncio.to_thread(node.close)
        assert await asyncio.to_thread(refused, broker, me, "old")
        assert not await asyncio.to_thread(refused, broker, me, "new")

    run(broker, scenario)


def test_kick_drops_the_session_and_the_node_may_log_in_again(broker: MosquittoDynsec, no_thread_leak: None) -> None:
    me = new_node_id()

    async def scenario(dynsec: DynsecClient) -> None:
        await dynsec.upsert_node(me, "pw")
        node = await asyncio.to_thread(login, broker, me, "pw")
        try:
            await dynsec.kick(me)
            assert await asyncio.to_thread(node.disconnected.wait, 5), "the connected node was not kicked"
            reconnect = await asyncio.to_thread(node.connacks.get, True, 5)
            assert not reconnect.is_failure, "after a kick the node logs in again"
        finally:
            await asyncio.to_thread(node.close)
        await dynsec.kick(new_node_id())  # nobody to kick is fine
        info = await dynsec.get_client(me)
        assert info is not None and not info.disabled

    run(broker, scenario)


def test_delete_node_removes_access_and_can_be_repeated(broker: MosquittoDynsec, no_thread_leak: None) -> None:
    me = new_node_id()

    async def scenario(dynsec: DynsecClient) -> None:
        await dynsec.upsert_node(me, "pw")
        node = await asyncio.to_thread(login, broker, me, "pw")
        try:
            await dynsec.delete_node(me)
            assert await asyncio.to_thread(node.disconnected.wait, 5), "the deleted node's session was not dropped"
        finally:
            await asyncio.to_thread(node.close)
        await dynsec.delete_node(me)
        await dynsec.delete_node(new_node_id())
        assert await asyncio.to_thread(refused, broker, me, "pw")
        assert await dynsec.get_client(me) is None
        assert await dynsec.get_role_acls(node_role(me)) is None
        assert me not in await dynsec.list_clients()

    run(broker, scenario)


def test_upsert_and_hub_role_can_be_repeated_and_leave_exactly_the_wanted_state(
    broker: MosquittoDynsec, no_thread_leak: None
) -> None:
    me = new_node_id()

    async def scenario(dynsec: DynsecClient) -> None:
        await dynsec.upsert_node(me, "first")
        await dynsec.upsert_node(me, "first")
        # Drift made by hand: an extra ACL and a disabled client are put right by the next upsert.
        await dynsec.execute(
            [
                Command(
                    {
                        "command": "addRoleACL",
                        "rolename": node_role(me),
                        "acltype": "subscribePattern",
                        "topic": "#",
                        "allow": True,
                    }
                ),
                Command({"command": "disableClient", "username": me}),
            ]
        )
        await dynsec.upsert_node(me, "second")
        info = await dynsec.get_client(me)
        assert info is not None
        assert (info.roles, info.disabled) == ((node_role(me),), False)
        assert set(await dynsec.get_role_acls(node_role(me)) or ()) == set(node_acls(me))
        assert await asyncio.to_thread(refused, broker, me, "first")
        assert not await asyncio.to_thread(refused, broker, me, "second")

        await dynsec.ensure_hub_role(HUB_USER, "ignored-for-an-existing-user")
        await dynsec.ensure_hub_role(HUB_USER)
        hub = await dynsec.get_client(HUB_USER)
        assert hub is not None and hub.roles == (HUB_ROLE,)
        assert not await asyncio.to_thread(refused, broker, HUB_USER, HUB_PASSWORD)

    run(broker, scenario)


def test_errors_from_the_broker_are_dynsec_errors(broker: MosquittoDynsec, no_thread_leak: None) -> None:
    async def scenario(dynsec: DynsecClient) -> None:
        with pytest.raises(DynsecError, match="setClientPassword failed: Client not found"):
            await dynsec.set_node_password(new_node_id(), "pw")
        with pytest.raises(DynsecError, match="does not exist"):
            await dynsec.ensure_hub_role("no-such-hub-user")

    run(broker, scenario)


def test_a_refused_admin_login_is_a_dynsec_error(broker: MosquittoDynsec, no_thread_leak: None) -> None:
    async def scenario() -> None:
        with pytest.raises(DynsecError, match="refused"):
            async with DynsecClient(admin_address(broker, password="wrong")):
                pass

    asyncio.run(scenario())


def test_identities_survive_a_broker_restart_and_the_admin_reconnects(own_broker: MosquittoDynsec, no_thread_leak: None) -> None:
    me, other = new_node_id(), new_node_id()

    async def scenario(dynsec: DynsecClient) -> None:
        await dynsec.upsert_node(me, "pw-me")
        await dynsec.upsert_node(other, "pw-other")
        await dynsec.delete_node(other)
        await asyncio.to_thread(own_broker.stop)
        dynsec.timeout = 1
        with pytest.raises(DynsecError, match="no answer|lost the connection"):
            await dynsec.kick(me)
        await asyncio.to_thread(own_broker.start)
        dynsec.timeout = 15  # paho's reconnect backoff
        info = await dynsec.get_client(me)
        assert info is not None and info.roles == (node_role(me),)
        assert await dynsec.get_client(other) is None
        node = await asyncio.to_thread(login, own_broker, me, "pw-me")
        try:
            assert await asyncio.to_thread(node.subscribe, "#") == SUBACK_FAILURE
            assert await asyncio.to_thread(node.subscribe, f"hark/v1/nodes/{me}/cmd/#") == 1
        finally:
            await asyncio.to_thread(node.close)
        assert await asyncio.to_thread(refused, own_broker, other, "pw-other")
        assert "Error saving" not in own_broker.log()

    run(own_broker, scenario)
