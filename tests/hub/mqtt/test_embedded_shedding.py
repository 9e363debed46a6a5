"""The in-process broker sheds QoS 0 meter frames under overload, keeps heartbeats flowing, and recovers by itself.

A real hub on its in-process (amqtt) broker; enrolled nodes, each on its own connection with its own
credential. Flood nodes (a separate process) send QoS 0 meter frames as fast as their sockets take them,
far above what the hub can take on this machine; heartbeat nodes (paho, here) keep beating at QoS 1 with
a status and a last will, as nodes do. The shed thresholds are lowered (HARK_BROKER_SHED_QUEUE,
HARK_BROKER_SHED_BUFFER_KB) so that a small flood is an overload on any machine.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import re
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hark_fleet.protocol.messages import Heartbeat, MeterChannel, MeterFrame, Status

from tests.harness import ROOT, HubProcess, running_hub, wait_for
from tests.hub.mqtt.peer import Peer

BENCH_DIR = ROOT / "bench"

FLOOD_NODES = 6
BEAT_NODES = 3
OVERLOAD_S = 8.0
RECOVER_DEADLINE_S = 10.0  # the bound: ingest back to normal within 10 s after the overload stops


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def bench_fleet() -> Any:
    """bench/fleet.py, whose raw MQTT clients (one connection and credential per node) the flood reuses."""
    if str(BENCH_DIR) not in sys.path:
        sys.path.insert(0, str(BENCH_DIR))
    import fleet  # bench/fleet.py

    return fleet


def meter_payload(seq: int) -> bytes:
    channels = [MeterChannel(index=0, peak_dbfs=-12.0, rms_dbfs=-15.0, name="L")]
    return msgspec.json.encode(MeterFrame(ts=now_iso(), seq=seq, interval_ms=100, channels=channels, sample_rate=48000))


def flood_main(port: int, nodes: list[tuple[str, str]], stop: Any, sent: Any) -> None:
    """Every flood node on its own raw connection, QoS 0 meter frames as fast as the sockets take them."""
    fleet = bench_fleet()
    socks = fleet.connect_all("127.0.0.1", port, nodes)
    payload = meter_payload(1)
    packets = []
    for node_id, _ in nodes:
        topic = fleet._mqtt_str(f"hark/v1/nodes/{node_id}/meters".encode())
        packets.append((b"\x30" + fleet._varint(len(topic) + len(payload)) + topic + payload) * 50)
    count = 0
    while not stop.is_set():
        for sock, batch in zip(socks, packets, strict=True):
            sock.sendall(batch)
            count += 50
        sent.value = count
    for sock in socks:
        with contextlib.suppress(OSError):
            sock.sendall(b"\xe0\x00")
        sock.close()


def enroll(hub: HubProcess, count: int) -> list[tuple[str, str]]:
    nodes = []
    with hub.admin() as admin:
        for _ in range(count):
            response = admin.post("/api/v1/nodes/enroll", json={"name": f"box-{uuid.uuid4().hex[:6]}"})
            assert response.status_code == 201, response.text
            data = response.json()["data"]
            nodes.append((data["node"]["id"], data["credential"]))
    return nodes


def counters(hub: HubProcess) -> dict[str, float]:
    with hub.admin() as admin:
        text = admin.get("/metrics").text
    return {
        f"{name}{{{kind}}}" if kind else name: float(value)
        for name, kind, value in re.findall(r'^(hark_[a-z_]+_total)(?:\{kind="([^"]*)"\})?\s+(\S+)$', text, re.M)
    }


def broker_load(hub: HubProcess) -> dict[str, Any]:
    with hub.client() as client:
        return client.get("/api/load").json()["data"]["broker"]


class Beater:
    """A node as far as the hub can tell: status online, a retained offline will, a heartbeat every second (QoS 1)."""

    def __init__(self, port: int, node_id: str, credential: str) -> None:
        self.node_id = node_id
        self.peer = Peer(port, node_id, node_id, credential)
        will = msgspec.json.encode(Status(state="offline", ts=now_iso()))
        self.peer.client.will_set(f"hark/v1/nodes/{node_id}/status", will, qos=1, retain=True)
        self.seq = 0

    def start(self) -> None:
        assert self.peer.connect()
        status = msgspec.json.encode(Status(state="online", ts=now_iso(), agent_version="0.1.0"))
        self.peer.client.publish(f"hark/v1/nodes/{self.node_id}/status", status, qos=1, retain=True)

    def beat(self) -> int:
        self.seq += 1
        beat = Heartbeat(msg_id=f"{self.node_id}-{self.seq}", ts=now_iso(), seq=self.seq, agent_version="0.1.0", uptime_s=1.0)
        self.peer.client.publish(f"hark/v1/nodes/{self.node_id}/heartbeat", msgspec.json.encode(beat), qos=1)
        return self.seq

    def close(self) -> None:
        self.peer.client.disconnect()
        self.peer.client.loop_stop()


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubProcess]:
    env = {"HARK_EMBEDDED_BROKER": "in-process", "HARK_BROKER_SHED_QUEUE": "200", "HARK_BROKER_SHED_BUFFER_KB": "16"}
    with running_hub(Path(tmp_path_factory.mktemp("hub-shedding")), env_extra=env) as process:
        yield process


def test_an_overloaded_in_process_broker_sheds_meter_frames_keeps_heartbeats_and_recovers(hub: HubProcess) -> None:
    flood_nodes = enroll(hub, FLOOD_NODES)
    beaters = [Beater(hub.mqtt_port, node_id, credential) for node_id, credential in enroll(hub, BEAT_NODES)]
    for beater in beaters:
        beater.start()
    with hub.admin() as admin:
        for beater in beaters:
            beater.beat()
            wait_for(lambda b=beater: admin.get(f"/api/v1/nodes/{b.node_id}").json()["data"]["status"] == "online", 10, "online")
    before = counters(hub)

    context = multiprocessing.get_context("spawn")
    stop, sent = context.Event(), context.Value("q", 0)
    flood = context.Process(target=flood_main, args=(hub.mqtt_port, flood_nodes, stop, sent), daemon=True)
    flood.start()
    last_seq: dict[str, int] = {}
    try:
        wait_for(lambda: broker_load(hub)["shedding"], 20, "the broker to start shedding")
        ends = time.monotonic() + OVERLOAD_S
        while time.monotonic() < ends:  # heartbeats all through the overload
            for beater in beaters:
                last_seq[beater.node_id] = beater.beat()
            time.sleep(1.0)
        during = counters(hub)
        load_during = broker_load(hub)
    finally:
        stop.set()
        flood.join(10)
        if flood.is_alive():
            flood.kill()
    assert sent.value > 0

    # Meter frames were shed, counted in /metrics and /api/load alike.
    shed = during.get("hark_mqtt_shed_total{meters}", 0.0) - before.get("hark_mqtt_shed_total{meters}", 0.0)
    assert shed > 0, during
    assert load_during["shed_total"] > 0 and load_during["kind"] == "in-process"

    # Every heartbeat node's last heartbeat of the overload was stored, and none went offline.
    with hub.admin() as admin:
        for beater in beaters:
            wait_for(
                lambda b=beater: (
                    admin.get(f"/api/v1/nodes/{b.node_id}").json()["data"]["metrics"].get("seq") == last_seq[b.node_id]
                ),
                RECOVER_DEADLINE_S,
                f"{beater.node_id}'s last heartbeat stored",
            )
        stored = counters(hub).get("hark_heartbeats_stored_total", 0.0) - before.get("hark_heartbeats_stored_total", 0.0)
        assert stored >= len(beaters) * 2
        statuses = {b.node_id: admin.get(f"/api/v1/nodes/{b.node_id}").json()["data"]["status"] for b in beaters}
        assert all(status != "offline" for status in statuses.values()), statuses
        flood_statuses = {n: admin.get(f"/api/v1/nodes/{n}").json()["data"]["status"] for n, _ in flood_nodes}
        assert all(status != "offline" for status in flood_statuses.values()), flood_statuses

    # Recovery: shedding stops by itself, and frames sent after it are all ingested, none shed.
    wait_for(lambda: not broker_load(hub)["shedding"], RECOVER_DEADLINE_S, "shedding to stop after the overload")

    def settled() -> bool:  # what the flood left in the sockets is read: nothing more is shed
        first = broker_load(hub)
        time.sleep(0.5)
        second = broker_load(hub)
        return not second["shedding"] and second["shed_total"] == first["shed_total"]

    wait_for(settled, RECOVER_DEADLINE_S, "the last of the flood to be read")
    shed_before = broker_load(hub)["shed_total"]  # /api/load's is live; /metrics catches up within half a second
    calm = counters(hub)
    probe = beaters[0]
    frames = 20
    for seq in range(1, frames + 1):
        probe.peer.client.publish(f"hark/v1/nodes/{probe.node_id}/meters", meter_payload(seq), qos=0)

    def latest_seq() -> int | None:
        with hub.admin() as admin:
            response = admin.get(f"/api/v1/nodes/{probe.node_id}/meters")
        return response.json()["data"]["seq"] if response.status_code == 200 else None

    wait_for(lambda: latest_seq() == frames, RECOVER_DEADLINE_S, "meter frames ingested again after the overload")
    wait_for(
        lambda: (
            counters(hub).get("hark_mqtt_ingested_total{meters}", 0.0) - calm.get("hark_mqtt_ingested_total{meters}", 0.0)
            >= frames
        ),
        RECOVER_DEADLINE_S,
        "the ingested counter to count them",
    )
    assert broker_load(hub)["shed_total"] == shed_before
    for beater in beaters:
        beater.close()
