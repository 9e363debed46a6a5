"""The fleet end to end: real `hark-hub` and `hark-node` processes, the embedded broker and Mosquitto."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
from hark_fleet.hub.db.models import HealthEvent, ReceivedMessage
from paho.mqtt.enums import CallbackAPIVersion

from tests.conftest import hub_database
from tests.e2e.conftest import Fleet
from tests.harness import MosquittoDynsec, NodeProcess, mqtt_login, wait_for


def enqueued_total(node: NodeProcess) -> int:
    """How many messages the node has ever put in its outbox (SQLite's autoincrement counter)."""
    with sqlite3.connect(node.workdir / "data" / "outbox.sqlite3") as db:
        row = db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'outbox'").fetchone()
        depth = db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]
    return (row[0] if row else 0) - depth


def applied(fleet: Fleet, node: NodeProcess) -> list[str]:
    with hub_database(fleet.hub):
        return [r.msg_id for r in ReceivedMessage.select().where(ReceivedMessage.node_id == node.node_id)]


def outbox_depth(node: NodeProcess) -> int:
    with sqlite3.connect(node.workdir / "data" / "outbox.sqlite3") as db:
        return db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]


def test_a_node_enrolls_and_goes_online_within_seconds(fleet: Fleet) -> None:
    node = fleet.enroll()
    started = time.monotonic()
    node.start()
    fleet.wait_status(node, "online", timeout=15)
    took = time.monotonic() - started
    wait_for(lambda: fleet.detail(node)["metrics"].get("uptime_s") is not None, 10, "a heartbeat")
    detail = fleet.detail(node)
    assert detail["version"] and detail["time_quality"] in ("ntp", "gps", "rtc", "unsynced")
    assert detail["metrics"]["outbox"]["capacity"] > 0
    with fleet.hub.admin() as admin:
        wait_for(lambda: admin.get(f"/api/v1/nodes/{node.node_id}/meters").status_code == 200, 10, "a meter frame")
    assert took < 15
    assert node.stop() == 0
    fleet.wait_status(node, "offline", timeout=10)


def test_kill_9_turns_the_node_offline(fleet: Fleet) -> None:
    node = fleet.enroll()
    node.start()
    fleet.wait_status(node, "online")
    node.kill()
    fleet.wait_status(node, "offline", timeout=15)


def test_a_hub_restart_loses_nothing_and_the_node_comes_back_by_itself(fleet: Fleet) -> None:
    node = fleet.enroll()
    node.start()
    fleet.wait_status(node, "online")
    assert fleet.hub.stop() == 0
    time.sleep(4)  # heartbeats pile up in the node's outbox meanwhile
    fleet.hub.start()
    fleet.wait_status(node, "online", timeout=40)
    wait_for(lambda: outbox_depth(node) == 0, 40, "the outbox to drain")
    ids = applied(fleet, node)
    assert len(ids) == len(set(ids)) == enqueued_total(node)


def test_a_broker_restart_loses_nothing_and_the_node_comes_back_by_itself(tmp_path: Path) -> None:
    broker = MosquittoDynsec(tmp_path / "mosquitto")
    broker.start()
    fleet = Fleet(tmp_path, broker)
    fleet.hub.start()
    try:
        node = fleet.enroll()
        node.start()
        fleet.wait_status(node, "online")
        broker.stop()
        time.sleep(3)
        broker.start()
        wait_for(lambda: fleet.hub.client().get("/readyz").status_code == 200, 40, "the hub to reconnect")
        fleet.wait_status(node, "online", timeout=40)
        wait_for(lambda: outbox_depth(node) == 0, 40, "the outbox to drain")
        ids = applied(fleet, node)
        assert len(ids) == len(set(ids)) == enqueued_total(node)
    finally:
        fleet.stop()


def test_a_node_keeping_its_own_interval_does_not_flap_at_the_hub(tmp_path: Path) -> None:
    fleet = Fleet(tmp_path, None)
    fleet.hub.start()
    try:
        node = fleet.enroll(HARK_HEARTBEAT_INTERVAL_S="6")  # set on the box: the hub's wish does not override it
        with fleet.hub.admin() as admin:
            assert admin.patch(f"/api/v1/nodes/{node.node_id}", json={"heartbeat_interval_s": 1}).status_code == 200
        node.start()
        fleet.wait_status(node, "online")
        wait_for(lambda: fleet.detail(node)["metrics"].get("seq") is not None, 10, "a heartbeat")
        before = len(fleet.detail(node)["status_changes"])
        deadline = time.monotonic() + 13  # two of the node's intervals; the hub's 3 s would have run out in each
        while time.monotonic() < deadline:
            assert fleet.status(node) == "online", fleet.detail(node)["status_changes"][:3]
            time.sleep(0.5)
        detail = fleet.detail(node)
        assert len(detail["status_changes"]) == before
        assert detail["heartbeat_interval_s"] == 1 and detail["reported_heartbeat_interval_s"] == 6
        with hub_database(fleet.hub):
            missed = HealthEvent.select().where(HealthEvent.node_id == node.node_id, HealthEvent.kind == "heartbeat.missed")
            assert not missed.exists()
    finally:
        fleet.stop()


def status_messages_received(fleet: Fleet) -> float:
    """How many `status` messages the hub's bridge has taken in (from its /metrics)."""
    with fleet.hub.admin() as admin:
        text = admin.get("/metrics").text
    prefix = 'hark_mqtt_messages_received_total{kind="status"} '
    return sum(float(line[len(prefix) :]) for line in text.splitlines() if line.startswith(prefix))


def test_a_retained_online_status_does_not_bring_back_a_node_whose_credential_is_refused(tmp_path: Path) -> None:
    broker = MosquittoDynsec(tmp_path / "mosquitto")
    broker.start()
    fleet = Fleet(tmp_path, broker)
    fleet.hub.start()
    try:
        node = fleet.enroll()
        with fleet.hub.admin() as admin:
            assert admin.patch(f"/api/v1/nodes/{node.node_id}", json={"heartbeat_interval_s": 1}).status_code == 200
        # The node connects and says `online` (retained), then leaves without its last will being sent.
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=node.node_id)
        client.username_pw_set(node.node_id, node.credential)
        client.connect("127.0.0.1", broker.port)
        client.loop_start()
        online = {"state": "online", "ts": "2026-01-01T00:00:00Z", "agent_version": "0.1.0"}
        status_topic = f"hark/v1/nodes/{node.node_id}/status"
        client.publish(status_topic, json.dumps(online), qos=1, retain=True).wait_for_publish(5)
        fleet.wait_status(node, "online", timeout=10)
        client.disconnect()
        client.loop_stop()
        with fleet.hub.admin() as admin:
            assert admin.post(f"/api/v1/nodes/{node.node_id}/credentials/rotate").status_code == 201
        assert not mqtt_login(broker.port, node.node_id, node.credential)
        fleet.wait_status(node, "offline", timeout=10)  # no heartbeats
        before = len(fleet.detail(node)["status_changes"])
        assert fleet.hub.stop() == 0
        fleet.hub.start()  # the broker hands the new hub the node's retained `online`
        wait_for(lambda: status_messages_received(fleet) >= 1, 10, "the retained status at the hub")
        time.sleep(1)
        changes = fleet.detail(node)["status_changes"]
        assert [(c["to"], c["reason"]) for c in changes[: len(changes) - before]] == []
        assert fleet.status(node) == "offline"
    finally:
        fleet.stop()


def test_with_the_hub_away_the_outbox_passes_80_percent_and_everything_arrives_after(tmp_path: Path) -> None:
    fleet = Fleet(tmp_path, None)
    fleet.hub.start()
    try:
        node = fleet.enroll(HARK_OUTBOX_CAPACITY="20", HARK_HEARTBEAT_INTERVAL_S="0.2")
        node.start()
        fleet.wait_status(node, "online")
        fleet.hub.stop()
        wait_for(lambda: outbox_depth(node) > 16, 30, "the outbox past 80%")
        fleet.hub.start()
        wait_for(lambda: outbox_depth(node) < 5, 40, "the outbox to drain")
        with hub_database(fleet.hub):
            events = list(HealthEvent.select().where(HealthEvent.node_id == node.node_id, HealthEvent.kind == "outbox.high"))
        assert len(events) == 1
        assert events[0].details["capacity"] == 20
        wait_for(lambda: fleet.detail(node)["status"] == "online", 20, "online")
        ids = applied(fleet, node)
        assert len(ids) == len(set(ids))
    finally:
        fleet.stop()


def test_rotation_with_grace_and_delivery_keeps_the_node_online(fleet: Fleet) -> None:
    node = fleet.enroll()
    node.start()
    fleet.wait_status(node, "online")
    changes_before = len(fleet.detail(node)["status_changes"])
    with fleet.hub.admin() as admin:
        rotated = admin.post(f"/api/v1/nodes/{node.node_id}/credentials/rotate", json={"grace_s": 4, "deliver": True})
    assert rotated.status_code == 201
    new = rotated.json()["data"]["credential"]
    state = node.workdir / "data" / "state.json"
    wait_for(lambda: json.loads(state.read_text())["credential"] == new, 10, "the node to store the new credential")
    deadline = time.monotonic() + 6
    while time.monotonic() < deadline:  # through the overlap and past its end
        assert fleet.status(node) == "online"
        time.sleep(0.3)
    assert len(fleet.detail(node)["status_changes"]) == changes_before
    with fleet.hub.client(node.credential) as old:
        assert old.get(f"/api/v1/nodes/{node.node_id}/config").status_code == 401
    assert "credential rotated" in node.log() and new not in node.log() and node.credential not in node.log()


def test_rotation_without_grace_refuses_the_old_credential_on_the_broker(fleet: Fleet) -> None:
    node = fleet.enroll()
    with fleet.hub.admin() as admin:
        rotated = admin.post(f"/api/v1/nodes/{node.node_id}/credentials/rotate")
    assert rotated.status_code == 201
    port = fleet.broker.port if fleet.broker else fleet.hub.mqtt_port
    assert not mqtt_login(port, node.node_id, node.credential)
    assert mqtt_login(port, node.node_id, rotated.json()["data"]["credential"])


def test_on_mosquitto_a_node_cannot_act_for_another(tmp_path: Path) -> None:
    broker = MosquittoDynsec(tmp_path / "mosquitto")
    broker.start()
    fleet = Fleet(tmp_path, broker)
    fleet.hub.start()
    try:
        a, b = fleet.enroll(), fleet.enroll()
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=a.node_id)
        client.username_pw_set(a.node_id, a.credential)
        granted: list[int] = []
        done = threading.Event()

        def on_subscribe(c, u, mid, reason_codes, properties) -> None:
            granted.extend(rc.value for rc in reason_codes)
            done.set()

        client.on_subscribe = on_subscribe
        client.connect("127.0.0.1", broker.port)
        client.loop_start()
        for topic in ("#", f"hark/v1/nodes/{b.node_id}/cmd/#"):
            done.clear()
            client.subscribe(topic, qos=1)
            assert done.wait(5)
        forged = {"msg_id": "forged", "ts": "2026-01-01T00:00:00Z", "seq": 1, "agent_version": "x", "uptime_s": 1}
        client.publish(f"hark/v1/nodes/{b.node_id}/heartbeat", json.dumps(forged), qos=1).wait_for_publish(5)
        own = {**forged, "msg_id": "own"}
        client.publish(f"hark/v1/nodes/{a.node_id}/heartbeat", json.dumps(own), qos=1).wait_for_publish(5)
        wait_for(lambda: applied(fleet, a) == ["own"], 10, "A's own heartbeat")
        client.disconnect()
        client.loop_stop()
        assert granted == [128, 128]
        assert applied(fleet, b) == []
    finally:
        fleet.stop()
