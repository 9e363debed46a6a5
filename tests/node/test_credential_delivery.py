"""A real `hark-node` given credentials over MQTT: it takes one only in place of the credential it holds,
and falls back to the one that worked when the new one is refused."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hark_fleet.node.state import credential_digest

from tests.harness import Mosquitto, NodeProcess, wait_for
from tests.node.fakes import ConfigStub, FakeHub, authenticated_mosquitto

pytestmark = pytest.mark.slow

NODE_ID = "cred-box"
OLD = "cred-old-0123456789"


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    """A Mosquitto that lets in the test's hub and the node with `OLD` only."""
    broker = authenticated_mosquitto(tmp_path / "broker", {"hub": "hub-pass", NODE_ID: OLD})
    broker.start()
    yield broker
    broker.stop()


def state(node: NodeProcess) -> dict[str, Any]:
    return json.loads(node.state_path.read_text())


def test_a_delivered_credential_that_is_refused_gives_way_to_the_one_that_worked(
    tmp_path: Path, broker: Mosquitto, no_thread_leak: None
) -> None:
    bogus = "cred-the-hub-never-issued"
    with (
        ConfigStub(NODE_ID, broker.url, {OLD}) as stub,
        FakeHub(broker.host, broker.port, NODE_ID, "hub", "hub-pass") as hub,
    ):
        node = NodeProcess(tmp_path / "node", stub.url, NODE_ID, OLD)
        node.start()
        try:
            hub.wait_status("online", timeout=20)
            hub.send("credentials", {"credential": bogus, "replaces_sha256": credential_digest(OLD)})
            wait_for(lambda: state(node)["credential"] == bogus, 5, "the node to take the delivered credential")
            # The broker refuses it and the hub answers 401: the node goes back to the one that worked.
            hub.wait_status("online", after=1, timeout=20)
            wait_for(lambda: state(node)["credential"] == OLD, 5, "the state file to hold the old credential again")
            assert state(node).get("previous_credential") is None
            fetched = len(stub.requests)
            hub.send("config", {})
            wait_for(lambda: len(stub.requests) > fetched, 10, "the config to be fetched again")
            assert stub.requests[-1][1] == f"Bearer {OLD}"
        finally:
            code = node.stop()
        assert code == 0, node.log()
    log = node.log()
    assert "falling back" in log
    assert bogus not in log and OLD not in log


def test_a_delivery_for_a_credential_the_node_does_not_hold_is_ignored(
    tmp_path: Path, broker: Mosquitto, no_thread_leak: None
) -> None:
    with (
        ConfigStub(NODE_ID, broker.url, {OLD}) as stub,
        FakeHub(broker.host, broker.port, NODE_ID, "hub", "hub-pass") as hub,
    ):
        node = NodeProcess(tmp_path / "node", stub.url, NODE_ID, OLD)
        node.start()
        try:
            hub.wait_status("online", timeout=20)
            hub.send("credentials", {"credential": "cred-stale-1", "replaces_sha256": credential_digest("cred-before-the-seed")})
            hub.send("credentials", {"credential": "cred-stale-2"})  # names nothing it replaces
            fetched = len(stub.requests)
            hub.send("config", {})  # handled after the two deliveries
            wait_for(lambda: len(stub.requests) > fetched, 10, "the config to be fetched again")
            assert stub.requests[-1][1] == f"Bearer {OLD}"
            assert state(node)["credential"] == OLD
            assert [d["state"] for d in hub.documents("status")] == ["online"], "the node reconnected"
        finally:
            code = node.stop()
        assert code == 0, node.log()
    assert "credential rotated" not in node.log()
