"""Node sessions on a running hub's in-process broker: a node reaches no other session, credential or command."""

from __future__ import annotations

import hashlib
import json
import socket
import uuid
from collections.abc import Iterator

import pytest

from tests.harness import HubProcess, running_hub, wait_for
from tests.hub.mqtt.peer import Peer


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubProcess]:
    """One hub with its in-process broker (the database plays no part here).

    Pinned to the in-process broker: these are its behaviours (a node's previous credential valid through the grace,
    superseded deliveries dropped from an offline session). Mosquitto keeps one password per client and cannot drop a
    queued message; its fencing is tested in test_managed_mosquitto.py and its deliveries in e2e/test_credential_delivery.py.
    """
    with running_hub(tmp_path_factory.mktemp("hub-sessions"), env_extra={"HARK_EMBEDDED_BROKER": "in-process"}) as process:
        yield process


def enroll(hub: HubProcess) -> tuple[str, str]:
    with hub.admin() as admin:
        response = admin.post("/api/v1/nodes/enroll", json={"name": f"box-{uuid.uuid4().hex[:6]}"})
    assert response.status_code == 201, response.text
    data = response.json()["data"]
    return data["node"]["id"], data["credential"]


def rotate(hub: HubProcess, node_id: str, **body: object) -> str:
    with hub.admin() as admin:
        response = admin.post(f"/api/v1/nodes/{node_id}/credentials/rotate", json=body)
    assert response.status_code == 201, response.text
    return response.json()["data"]["credential"]


def commands(node_id: str) -> str:
    return f"hark/v1/nodes/{node_id}/cmd/#"


def leave_offline_session(hub: HubProcess, node_id: str, credential: str) -> None:
    """The node connects as a node does (persistent session), subscribes to its commands and leaves cleanly."""
    peer = Peer(hub.mqtt_port, node_id, node_id, credential)
    assert peer.connect()
    peer.subscribe(commands(node_id))
    peer.close()


def digest(credential: str) -> str:
    return hashlib.sha256(credential.encode()).hexdigest()


def test_a_node_cannot_resume_another_nodes_session_to_steal_its_new_credential(hub: HubProcess) -> None:
    node_a, credential_a = enroll(hub)
    node_b, credential_b = enroll(hub)
    leave_offline_session(hub, node_b, credential_b)
    new_b = rotate(hub, node_b, grace_s=60, deliver=True)  # queued in B's session until B is back
    thief = Peer(hub.mqtt_port, node_b, node_a, credential_a)  # A's login with B's client id, persistent session
    try:
        accepted = thief.connect()
        stolen = thief.received(1)
    finally:
        thief.close()
    assert not accepted, "A's login was let into B's session"
    assert stolen == []
    owner = Peer(hub.mqtt_port, node_b, node_b, credential_b)
    try:
        assert owner.connect()
        got = owner.received(2)
    finally:
        owner.close()
    assert [(topic, json.loads(payload)["credential"], retain) for topic, payload, retain in got] == [
        (f"hark/v1/nodes/{node_b}/cmd/credentials", new_b, False)
    ]
    with hub.client(new_b) as client:
        assert client.get(f"/api/v1/nodes/{node_b}/config").status_code == 200


def test_a_node_cannot_log_in_with_the_hubs_own_client_id(hub: HubProcess) -> None:
    assert hub.proc is not None
    bridge_client_id = f"hark-hub-{socket.gethostname()}-{hub.proc.pid}"
    node, credential = enroll(hub)
    intruder = Peer(hub.mqtt_port, bridge_client_id, node, credential)
    try:
        assert not intruder.connect(), "a node took the hub bridge's client id (and its session)"
    finally:
        intruder.close()
    # The hub's own session is untouched: a node's status still reaches it.
    own = Peer(hub.mqtt_port, node, node, credential)
    try:
        assert own.connect()
        own.client.publish(f"hark/v1/nodes/{node}/status", b'{"state": "online", "ts": "2030-01-01T00:00:00Z"}', qos=1)
        with hub.admin() as admin:
            wait_for(lambda: admin.get(f"/api/v1/nodes/{node}").json()["data"]["status"] == "online", 5, "online")
    finally:
        own.close()


def test_a_node_may_not_publish_into_its_own_command_topics(hub: HubProcess) -> None:
    node, credential = enroll(hub)
    peer = Peer(hub.mqtt_port, node, node, credential)
    try:
        assert peer.connect()
        peer.subscribe(commands(node))
        planted = b'{"credential": "hkn_planted", "replaces_sha256": "%s"}' % digest(credential).encode()
        peer.client.publish(f"hark/v1/nodes/{node}/cmd/credentials", planted, qos=1, retain=True).wait_for_publish(5)
        assert peer.received(1) == []
    finally:
        peer.close()
    again = Peer(hub.mqtt_port, node, node, credential, clean=True)
    try:
        assert again.connect()
        again.subscribe(commands(node))
        assert again.received(1) == [], "a planted retained command came back"
    finally:
        again.close()


def test_a_delivery_names_the_credential_it_replaces(hub: HubProcess) -> None:
    node, credential = enroll(hub)
    peer = Peer(hub.mqtt_port, node, node, credential)
    try:
        assert peer.connect()
        peer.subscribe(commands(node))
        new = rotate(hub, node, grace_s=60, deliver=True)
        (delivery,) = [json.loads(payload) for _, payload, _ in peer.received(2)]
    finally:
        peer.close()
    assert (delivery["credential"], delivery["replaces_sha256"]) == (new, digest(credential))


def test_a_rotation_drops_the_deliveries_it_supersedes_from_an_offline_session(hub: HubProcess) -> None:
    node, first = enroll(hub)
    leave_offline_session(hub, node, first)
    rotate(hub, node, deliver=True)  # R1, queued for the node
    second = rotate(hub, node)  # R2, handed to the node by an installer: R1 is stale now
    peer = Peer(hub.mqtt_port, node, node, second)
    try:
        assert peer.connect()
        got = peer.received(2)
    finally:
        peer.close()
    assert [topic for topic, _, _ in got if topic.endswith("/cmd/credentials")] == []


def test_of_successive_deliveries_an_offline_node_gets_the_last_one_only(hub: HubProcess) -> None:
    node, first = enroll(hub)
    leave_offline_session(hub, node, first)
    middle = rotate(hub, node, grace_s=600, deliver=True)
    newest = rotate(hub, node, grace_s=600, deliver=True)
    peer = Peer(hub.mqtt_port, node, node, middle)  # still valid during its grace
    try:
        assert peer.connect()
        got = [json.loads(payload) for topic, payload, _ in peer.received(2) if topic.endswith("/cmd/credentials")]
    finally:
        peer.close()
    # QoS 1 is at least once: under load the broker may hand the same delivery over twice (the node takes it once,
    # the second names a credential it no longer has). What matters is that only the newest one arrives.
    assert {(d["credential"], d.get("replaces_sha256")) for d in got} == {(newest, digest(middle))}
