"""Fuzzing one node's intake: garbage on every topic and route of one node never stalls the others, never a 500.

A real hub (embedded broker), real paho clients with real node credentials and HTTP over
sockets. One node sends malformed, oversized and deeply nested payloads on every topic
kind and every agent route while another node keeps sending heartbeats and meter frames.
"""

from __future__ import annotations

import json
import random
import re
import threading
import time
import uuid
from typing import Any

import httpx
from hark_fleet.hub.app import ROUTES

from tests.harness import HubProcess, wait_for
from tests.hub.api.test_fleet import close, enroll, heartbeat, mqtt_client, node_detail, now_iso

SEED = 20260509
TOPIC_KINDS = (
    "status",
    "heartbeat",
    "health",
    "meters",
    "lifecycle/{job}",
    "listen/{job}",
    "jobs/{job}",
    "no-such-kind",
    "cmd/ack",
)
DEEP = 1000


def meter_frame(seq: int) -> dict[str, Any]:
    channel = {"index": 0, "name": "L", "peak_dbfs": -6.0, "rms_dbfs": -18.0, "clip": 0, "silent": False}
    return {"ts": now_iso(), "seq": seq, "interval_ms": 100, "sample_rate": 48000, "channels": [channel]}


def random_json(rng: random.Random, depth: int = 0) -> Any:
    """A random JSON value of any shape, at most a few levels deep."""
    pick = rng.randrange(8 if depth < 4 else 5)
    if pick == 0:
        return None
    if pick == 1:
        return rng.choice([True, False])
    if pick == 2:
        return rng.choice([0, -1, 2**63, -(2**70), 10**30, 1.5e308, -0.0])
    if pick == 3:
        return "".join(chr(rng.randrange(0, 0x2FFF)) for _ in range(rng.randrange(20)))
    if pick == 4:
        return rng.randrange(-1000, 1000)
    if pick in (5, 6):
        return {f"k{rng.randrange(50)}": random_json(rng, depth + 1) for _ in range(rng.randrange(6))}
    return [random_json(rng, depth + 1) for _ in range(rng.randrange(6))]


def hostile_payloads(rng: random.Random) -> list[bytes]:
    """Every kind of bad payload the issue names, from a seeded generator."""
    wrong_types = {"msg_id": 5, "ts": [], "seq": "x", "state": 7, "kind": {}, "job_id": None, "channels": "L", "interval_ms": "x"}
    deep_inside = heartbeat(f"deep-{uuid.uuid4().hex}", audio={"state": json.loads('{"a":' * 100 + "1" + "}" * 100)})
    return [
        b"",
        bytes(rng.randrange(256) for _ in range(rng.randrange(1, 2000))),  # random bytes
        b'{"msg_id": "\xff\xfe", "ts": "\xc3\x28"}',  # invalid UTF-8
        b'{"a":' * DEEP + b"1" + b"}" * DEEP,
        b"[" * DEEP + b"]" * DEEP,
        json.dumps(deep_inside).encode(),  # decodable, but deeper than the hub keeps
        json.dumps(wrong_types).encode(),
        json.dumps({"channels": [{"index": i} for i in range(20_000)], "ts": now_iso(), "seq": 1, "interval_ms": 1}).encode(),
        b"[" + b"{}," * 60_000 + b"{}]",  # a huge array
        b'{"seq": 1e999, "ts": NaN, "interval_ms": -Infinity}',
        b"{" + b" " * 600_000 + b"}",  # oversized for MQTT
        json.dumps(random_json(rng)).encode(),
        json.dumps(random_json(rng)).encode(),
    ]


def database_refusals(rng: random.Random) -> list[bytes]:
    """Well-formed messages PostgreSQL refuses (NUL, an over-long kind); SQLite stores them."""
    return [
        json.dumps(heartbeat(f"nul-\u0000{rng.randrange(10**9)}", agent_version="\u0000" * 300)).encode(),
        json.dumps({"msg_id": f"h-{rng.randrange(10**9)}", "ts": now_iso(), "kind": "k" * 5000, "state": "open"}).encode(),
    ]


class HealthyNode:
    """A node that keeps sending heartbeats (every 0.5 s) and meter frames (10 Hz) on a thread."""

    def __init__(self, hub: HubProcess, node_id: str, credential: str) -> None:
        self.node_id = node_id
        self.client, connected = mqtt_client(hub, node_id, credential)
        assert connected == [True]
        self.prefix = f"hark/v1/nodes/{node_id}"
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="healthy-node")
        self.client.publish(f"{self.prefix}/status", json.dumps({"state": "online", "ts": now_iso()}), qos=1, retain=True)

    def _run(self) -> None:
        seq = 0
        while not self.stop.wait(0.1):
            seq += 1
            self.client.publish(f"{self.prefix}/meters", json.dumps(meter_frame(seq)), qos=0)
            if seq % 5 == 0:
                self.client.publish(f"{self.prefix}/heartbeat", json.dumps(heartbeat(f"hb-{seq}", seq=seq)), qos=1)

    def __enter__(self) -> HealthyNode:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(5)
        close(self.client)


def agent_routes(node_id: str) -> list[tuple[str, str]]:
    """Every route a node credential may call with a body, on this node."""
    found = []
    for path, handler in ROUTES:
        for method, permission in handler.permissions.items():
            if permission == "node:control" and method in ("post", "put"):
                found.append((method.upper(), re.sub(r"\{\w+\}", "missing", path.replace("/nodes/{id}/", f"/nodes/{node_id}/"))))
    return found


def meters_are_fresh(hub: HubProcess, node_id: str) -> bool:
    with hub.admin() as admin:
        response = admin.get(f"/api/v1/nodes/{node_id}/meters")
    if response.status_code == 404:  # no frame yet
        return False
    assert response.status_code == 200, response.text
    return time.time() - response.json()["data"]["received_at"] < 2.0


def dropped_total(hub: HubProcess) -> float:
    with hub.admin() as admin:
        text = admin.get("/metrics").text
    return sum(
        float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith("hark_mqtt_messages_dropped_total{")
    )


def test_one_node_fuzzing_its_topics_and_routes_never_stalls_the_others(hub: HubProcess) -> None:
    rng = random.Random(SEED)
    attacker, attacker_credential = enroll(hub)
    healthy, healthy_credential = enroll(hub)
    with hub.admin() as admin:  # missed after 3 intervals: a stall of 6 s shows as offline
        assert admin.patch(f"/api/v1/nodes/{healthy['id']}", json={"heartbeat_interval_s": 2}).status_code == 200
    log_before = len(hub.log().splitlines())
    dropped_before = dropped_total(hub)
    payloads = hostile_payloads(rng)
    refusals = database_refusals(rng)
    statuses: list[tuple[str, int]] = []  # what the hub answered to the payloads no route may accept
    with HealthyNode(hub, healthy["id"], healthy_credential):
        wait_for(lambda: node_detail(hub, healthy["id"])["status"] == "online", 10, "the healthy node online")
        wait_for(lambda: meters_are_fresh(hub, healthy["id"]), 10, "the healthy node's meters")
        bad, _ = mqtt_client(hub, attacker["id"], attacker_credential)
        prefix = f"hark/v1/nodes/{attacker['id']}"
        sent = 0
        try:
            for round_ in range(2):
                for kind in TOPIC_KINDS:
                    topic = f"{prefix}/{kind.format(job=f'j{round_}-{rng.randrange(10**6)}')}"
                    for payload in payloads + refusals:
                        info = bad.publish(topic, payload, qos=1)
                        sent += 0 if kind.startswith("cmd/") else 1  # the hub ignores its own command topics
                    info.wait_for_publish(10)
                    assert meters_are_fresh(hub, healthy["id"]), f"meters went stale while fuzzing {kind}"
            flood = [bad.publish(f"{prefix}/heartbeat", payloads[3], qos=1) for _ in range(500)]  # the incident: a loop
            sent += len(flood)
            flood[-1].wait_for_publish(20)
            with httpx.Client(base_url=hub.url, headers={"Authorization": f"Bearer {attacker_credential}"}, timeout=30) as agent:
                for method, path in agent_routes(attacker["id"]):
                    for payload in [*payloads, b"{" + b" " * 1_100_000 + b"}", *refusals]:
                        response = agent.request(method, path, content=payload, headers={"Content-Type": "application/json"})
                        if payload not in refusals:
                            statuses.append((f"{method} {path}", response.status_code))
                        assert response.status_code < 500, (method, path, payload[:40], response.text)
                        if response.status_code >= 400:
                            assert set(response.json()) == {"error"}, response.text
                    assert meters_are_fresh(hub, healthy["id"]), f"meters went stale while posting to {path}"
            wait_for(lambda: dropped_total(hub) - dropped_before >= sent * 0.9, 20, "the hostile messages counted as dropped")
        finally:
            close(bad)
        assert meters_are_fresh(hub, healthy["id"])
        assert node_detail(hub, healthy["id"])["status"] == "online"
    assert hub.proc is not None and hub.proc.poll() is None, "the hub died"
    assert httpx.get(f"{hub.url}/healthz").status_code == 200
    with hub.admin() as admin:
        events = admin.get("/api/v1/health-events", params={"node_id": healthy["id"]}).json()["data"]
    assert not [e for e in events if e["kind"] == "heartbeat.missed"]
    telemetry_refusals = [s for route, s in statuses if re.search(r"/(heartbeat|health-events|meter-frame)$", route)]
    assert telemetry_refusals and set(telemetry_refusals) <= {400, 413}, statuses
    new_lines = hub.log().splitlines()[log_before:]
    about_attacker = [line for line in new_lines if attacker["id"] in line and "dropped" in line]
    assert 0 < len(about_attacker) <= 12, about_attacker  # one per reason, not one per message
    assert len(new_lines) < 400, f"{len(new_lines)} log lines"
    assert "RecursionError" not in "\n".join(new_lines)
