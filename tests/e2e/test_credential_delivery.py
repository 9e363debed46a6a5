"""Credential deliveries end to end (embedded broker and Mosquitto): a stale one never locks a node out."""

from __future__ import annotations

import json
import time

from tests.e2e.conftest import Fleet


def rotate(fleet: Fleet, node_id: str, **body: object) -> str:
    with fleet.hub.admin() as admin:
        response = admin.post(f"/api/v1/nodes/{node_id}/credentials/rotate", json=body)
    assert response.status_code == 201, response.text
    return response.json()["data"]["credential"]


def test_a_stale_delivery_does_not_lock_out_a_node_started_with_a_newer_credential(fleet: Fleet) -> None:
    node = fleet.enroll()
    node.start()
    fleet.wait_status(node, "online")
    assert node.stop() == 0
    assert node.node_id is not None
    rotate(fleet, node.node_id, deliver=True)  # R1: waits for the node in its broker session
    newest = rotate(fleet, node.node_id)  # R2, handed to the node by its installer
    node.credential = newest
    node.start()
    fleet.wait_status(node, "online")
    deadline = time.monotonic() + 4  # long enough for a queued delivery to arrive and be acted on
    while time.monotonic() < deadline:
        assert json.loads(node.state_path.read_text())["credential"] == newest, "the node took a stale credential"
        time.sleep(0.2)
    assert fleet.status(node) == "online"
    with fleet.hub.client(newest) as client:
        assert client.get(f"/api/v1/nodes/{node.node_id}/config").status_code == 200


def test_a_delivery_without_grace_still_reaches_a_connected_node_before_the_old_credential_stops(fleet: Fleet) -> None:
    node = fleet.enroll()
    node.start()
    fleet.wait_status(node, "online")
    old = node.credential
    new = rotate(fleet, node.node_id, grace_s=0, deliver=True)
    deadline = time.monotonic() + 15
    while json.loads(node.state_path.read_text())["credential"] != new:
        assert time.monotonic() < deadline, f"the node never took the delivered credential:\n{node.log()[-2000:]}"
        time.sleep(0.2)
    with fleet.hub.client(new) as client:
        assert client.get(f"/api/v1/nodes/{node.node_id}/config").status_code == 200
    with fleet.hub.client(old) as client:  # kept for the switch-over: at least 30 s with a delivery
        assert client.get(f"/api/v1/nodes/{node.node_id}/config").status_code == 200
    time.sleep(3)  # the node reconnects with what it took
    assert fleet.status(node) == "online"
