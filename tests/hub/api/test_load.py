"""`GET /api/load`: this hub process's load for a load balancer, open to anyone, from figures kept in memory;
they move when a stream opens and closes and when nodes publish."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as mqtt
import pytest
from hark_fleet.protocol.topics import node_prefix
from paho.mqtt.enums import CallbackAPIVersion

from tests.harness import HubProcess, running_hub, wait_for

LOAD = "/api/load"
FIGURES = {
    "requests_in_flight",
    "streams",
    "event_loop_lag_ms",
    "event_loop_lag_max_ms",
    "mqtt_messages_per_s",
    "mqtt_connected",
    "db_queue_depth",
    "window_s",
    "uptime_s",
    "broker",
}


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubProcess]:
    with running_hub(Path(tmp_path_factory.mktemp("load-hub"))) as process:
        yield process


def load(hub: HubProcess) -> dict[str, Any]:
    response = httpx.get(f"{hub.url}{LOAD}", timeout=10)
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    data: dict[str, Any] = response.json()["data"]
    return data


def test_the_load_needs_no_credentials_and_has_every_figure(hub: HubProcess) -> None:
    data = load(hub)
    assert set(data) == FIGURES
    assert data["requests_in_flight"] == 0  # the asking request is left out
    assert data["mqtt_connected"] is True and isinstance(data["db_queue_depth"], int)  # 0 unless a sweep is queued
    assert data["event_loop_lag_max_ms"] >= data["event_loop_lag_ms"]
    assert 0 < data["uptime_s"] and data["window_s"] == 5.0
    assert httpx.post(f"{hub.url}{LOAD}", timeout=10).status_code == 405


def test_an_open_event_stream_counts_as_a_stream_and_a_request_in_flight(hub: HubProcess) -> None:
    before = load(hub)
    token = hub.login()
    with httpx.Client(base_url=hub.url, headers={"Authorization": f"Bearer {token}"}, timeout=10) as client:
        with client.stream("GET", "/api/v1/events/stream") as stream:
            assert stream.status_code == 200
            chunks = stream.iter_raw()  # kept: a dropped iterator closes the connection
            next(chunks)  # the stream's first bytes: the hub counts it from here
            during = load(hub)
            assert during["streams"] == before["streams"] + 1
            assert during["requests_in_flight"] == before["requests_in_flight"] + 1
    wait_for(lambda: load(hub)["streams"] == before["streams"], 10, "the closed stream to be let go")
    assert load(hub)["requests_in_flight"] == before["requests_in_flight"]


def test_the_mqtt_ingest_rate_rises_while_a_node_publishes(hub: HubProcess) -> None:
    with hub.admin() as admin:
        response = admin.post("/api/v1/nodes/enroll", json={"name": "publisher"})
    assert response.status_code == 201, response.text
    node_id, credential = response.json()["data"]["node"]["id"], response.json()["data"]["credential"]
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=node_id)
    client.username_pw_set(node_id, credential)
    connected = threading.Event()
    client.on_connect = lambda *args: connected.set()
    client.connect("127.0.0.1", hub.mqtt_port)
    client.loop_start()
    try:
        assert connected.wait(10)
        for seq in range(1, 41):
            ts = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
            beat = {"msg_id": f"load-{seq}", "ts": ts, "seq": seq, "agent_version": "0.1.0", "uptime_s": float(seq)}
            client.publish(f"{node_prefix(node_id)}heartbeat", json.dumps(beat), qos=1).wait_for_publish(5)
        rate = wait_for(lambda: load(hub)["mqtt_messages_per_s"] or None, 10, "the ingest rate to show the heartbeats")
        assert 0 < rate
    finally:
        client.disconnect()
        client.loop_stop()
