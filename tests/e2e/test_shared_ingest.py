"""Two real hark-hub processes share the ingest through MQTT shared subscriptions (issue 24).

One PostgreSQL, one Mosquitto with dynamic security (the hubs manage node identities on it), each hub its own
data directory and HARK_MQTT_SHARED=on. Node-like clients log in with credentials enrolled through hub 1 and
behave like a node's outbox: every report has its msg_id, is published at QoS 1, and is published again until
a hub acknowledges it on `cmd/ack`. Both hubs get a share; one is killed with -9 while the nodes send; every
msg_id is then applied exactly once (the database's counts), and meter frames still reach an SSE client on the
survivor.
"""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import psycopg2
import pytest
from hark_fleet.hub.clock import iso, utcnow
from paho.mqtt.enums import CallbackAPIVersion

from tests.harness import HubProcess, MosquittoDynsec, create_database, drop_database, mqtt_login, wait_for
from tests.hub.api.test_fleet import enroll
from tests.hub.api.test_meters import Stream, frame

RESEND_AFTER_S = 3.0  # a node's outbox waits 15 s; the test's nodes are quicker
KIND = "test.shared-ingest"


class OutboxNode:
    """A node as the hub sees it: reports with msg_ids until acknowledged, meter frames at 10 Hz."""

    def __init__(self, broker: MosquittoDynsec, node_id: str, credential: str) -> None:
        self.node_id = node_id
        self.sent: dict[str, float] = {}  # msg_id -> when last published (until acknowledged)
        self.acked: set[str] = set()
        self.all_ids: list[str] = []
        self.frames = 0
        self.resent = 0  # reports published again (not acknowledged in time: in flight to a hub that died)
        self.lock = threading.Lock()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=node_id)
        self.client.username_pw_set(node_id, credential)
        connected = threading.Event()

        def on_connect(client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
            client.subscribe(f"hark/v1/nodes/{node_id}/cmd/#", qos=1)
            connected.set()

        self.client.on_connect = on_connect
        self.client.on_message = self._on_message
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        assert connected.wait(10), f"node {node_id} could not connect"

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        if message.topic.endswith("/cmd/ack"):
            ids = json.loads(message.payload)["ids"]
            with self.lock:
                self.acked.update(ids)
                for msg_id in ids:
                    self.sent.pop(msg_id, None)

    def report(self) -> None:
        msg_id = f"hr-{uuid.uuid4().hex}"
        with self.lock:
            self.all_ids.append(msg_id)
        self._publish(msg_id)

    def _publish(self, msg_id: str) -> None:
        body = {"msg_id": msg_id, "ts": iso_now(), "kind": KIND, "state": "open", "severity": "warning"}
        with self.lock:
            self.sent[msg_id] = time.monotonic()
        self.client.publish(f"hark/v1/nodes/{self.node_id}/health", json.dumps(body), qos=1)

    def meter(self) -> None:
        self.frames += 1
        self.client.publish(f"hark/v1/nodes/{self.node_id}/meters", json.dumps(frame(self.frames)), qos=0)

    def resend_due(self) -> None:
        now = time.monotonic()
        with self.lock:
            due = [msg_id for msg_id, at in self.sent.items() if now - at >= RESEND_AFTER_S]
        for msg_id in due:
            self.resent += 1
            self._publish(msg_id)

    def unacknowledged(self) -> int:
        with self.lock:
            return len(set(self.all_ids) - self.acked)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def iso_now() -> str:
    return iso(utcnow())


class Fleet:
    """Nodes sending on a thread: a report per node every 50 ms, meters every 100 ms, resends when due."""

    def __init__(self, nodes: list[OutboxNode]) -> None:
        self.nodes = nodes
        self.reporting = threading.Event()
        self.reporting.set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        tick = 0
        while not self._stop.is_set():
            for node in self.nodes:
                if self.reporting.is_set():
                    node.report()
                if tick % 2 == 0:
                    node.meter()
                node.resend_due()
            tick += 1
            time.sleep(0.05)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)


def ingested(hub: HubProcess, kind: str) -> float:
    """`hark_mqtt_ingested_total{kind}` of one hub."""
    with hub.admin() as admin:
        text = admin.get("/metrics").text
    match = re.search(rf'^hark_mqtt_ingested_total{{kind="{kind}"}} ([0-9.e+]+)$', text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


@pytest.fixture
def database_url() -> Iterator[str]:
    url = create_database()
    yield url
    drop_database(url)


@pytest.mark.timeout(300)
def test_two_hubs_share_the_ingest_and_a_killed_one_loses_or_doubles_nothing(tmp_path: Path, database_url: str) -> None:
    broker = MosquittoDynsec(tmp_path / "mosquitto")
    broker.start()
    env = {"HARK_MQTT_DYNSEC": "true", "HARK_MQTT_SHARED": "on", "HARK_MQTT_SHARE_GROUP": "hark-hub"}
    hubs = [HubProcess(tmp_path / f"hub{i}", database_url=database_url, mqtt_url=broker.admin_url, env_extra=env) for i in (1, 2)]
    nodes: list[OutboxNode] = []
    fleet: Fleet | None = None
    stream: Stream | None = None
    try:
        hubs[0].start()
        hubs[1].start()
        survivor, victim = hubs
        enrolled = [enroll(survivor) for _ in range(3)]
        for node, credential in enrolled:
            wait_for(lambda n=node, c=credential: mqtt_login(broker.port, n["id"], c), 15, "the node's broker login")
        nodes = [OutboxNode(broker, node["id"], credential) for node, credential in enrolled]
        fleet = Fleet(nodes)

        wait_for(lambda: ingested(survivor, "health") > 0 and ingested(victim, "health") > 0, 60, "a share on each hub")
        stream = Stream(survivor, survivor.login(), [])
        wait_for(lambda: len(stream.frames) > 0, 30, "meter frames on the survivor's stream")

        assert victim.proc is not None
        victim.proc.kill()  # kill -9 while the nodes send
        victim.proc.wait()
        victim.proc = None
        frames_at_kill = {node.node_id: node.frames for node in nodes}
        time.sleep(3)  # the nodes go on reporting, to the survivor alone
        fleet.reporting.clear()

        wait_for(lambda: all(node.unacknowledged() == 0 for node in nodes), 90, "every report acknowledged")

        def after_kill(node: OutboxNode) -> bool:
            return any(f["node_id"] == node.node_id and f["seq"] > frames_at_kill[node.node_id] for f in list(stream.frames))

        wait_for(lambda: all(after_kill(node) for node in nodes), 30, "meters sent after the kill on the survivor's stream")
        fleet.stop()

        with psycopg2.connect(database_url) as conn, conn.cursor() as cur:
            for node in nodes:
                sent = set(node.all_ids)
                cur.execute("SELECT msg_id FROM received_message WHERE node_id = %s", (node.node_id,))
                assert {row[0] for row in cur.fetchall()} == sent  # every msg_id stored, nothing else
                cur.execute("SELECT sum(count) FROM health_event WHERE node_id = %s AND kind = %s", (node.node_id, KIND))
                (applied,) = cur.fetchone()
                assert applied == len(sent), f"{node.node_id}: {len(sent)} reports sent, applied {applied} times"
        assert sum(len(node.all_ids) for node in nodes) > 100
    finally:
        if fleet is not None:
            fleet.stop()
        if stream is not None:
            stream.close()
        for node in nodes:
            node.close()
        for hub in hubs:
            if hub.proc is not None:
                assert hub.stop() == 0, hub.log()
        broker.stop()
