"""A stand-in node for the live listen API tests: logs in to the hub's broker with its own credential, says it is
online, records every `cmd/listen` and publishes chunks (or a stream error) as a node would."""

from __future__ import annotations

import json
import threading
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
import paho.mqtt.client as mqtt
from hark_fleet.protocol.listen import encode_chunk, listen_topic
from hark_fleet.protocol.topics import command_topic, node_prefix
from paho.mqtt.enums import CallbackAPIVersion

from tests.harness import HubProcess, wait_for


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class StandInNode:
    """Enrolled on `hub`, online over MQTT while started; `commands` holds each `cmd/listen` received (decoded)."""

    def __init__(self, hub: HubProcess, site: str | None = None, inputs: int = 2) -> None:
        self.hub = hub
        body: dict[str, Any] = {"name": f"listen-{uuid.uuid4().hex[:6]}"}
        if site is not None:
            body["site"] = site
        with hub.admin() as admin:
            response = admin.post("/api/v1/nodes/enroll", json=body)
        assert response.status_code == 201, response.text
        data = response.json()["data"]
        self.node_id: str = data["node"]["id"]
        self.credential: str = data["credential"]
        self.name: str = body["name"]
        self.inputs = inputs
        self.commands: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._connected = threading.Event()
        self.client: mqtt.Client | None = None

    def start(self) -> StandInNode:
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=self.node_id, clean_session=True)
        client.username_pw_set(self.node_id, self.credential)
        client.on_connect = self._on_connect
        client.on_message = self._on_message
        client.connect("127.0.0.1", self.hub.mqtt_port)
        client.loop_start()
        self.client = client
        assert self._connected.wait(10), "the stand-in node could not log in to the broker"
        self.heartbeat()
        wait_for(lambda: self.status() in ("online", "degraded"), 15, "the stand-in node online", 0.1)
        return self

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        client.subscribe(command_topic(self.node_id, "listen"), qos=1)
        client.publish(f"{node_prefix(self.node_id)}status", json.dumps({"state": "online", "ts": now_iso()}), qos=1, retain=True)
        self._connected.set()

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.commands.append(json.loads(message.payload))

    def heartbeat(self) -> None:
        """Over HTTP: tells the hub how many inputs the node has (its logical channels without a channel map)."""
        beat = {"msg_id": uuid.uuid4().hex, "ts": now_iso(), "seq": 1, "agent_version": "test", "uptime_s": 1.0}
        beat["audio"] = {"inputs": self.inputs, "rate": 48000}
        with self.hub.client(self.credential) as client:
            response = client.post(f"/api/v1/nodes/{self.node_id}/heartbeat", json=beat)
        assert response.status_code == 200, response.text

    def status(self) -> str:
        with self.hub.admin() as admin:
            return str(admin.get(f"/api/v1/nodes/{self.node_id}").json()["data"]["status"])

    def latest(self) -> dict[str, Any] | None:
        with self._lock:
            return self.commands[-1] if self.commands else None

    def streams(self) -> list[dict[str, Any]]:
        latest = self.latest()
        return list(latest["streams"]) if latest else []

    def wait_streams(self, count: int, timeout: float = 10) -> list[dict[str, Any]]:
        wait_for(lambda: len(self.streams()) == count, timeout, f"cmd/listen with {count} streams", 0.05)
        return self.streams()

    def send_chunk(self, stream: dict[str, Any], seq: int, frames: int = 1, capture_us: int = 0) -> bytes:
        """One chunk of `frames` frames of the stream's format on MQTT `listen/{stream_id}`; its bytes."""
        assert self.client is not None
        size = 120 if stream["codec"] == "opus" else stream["sample_rate"] // 50 * len(stream["channels"]) * 2
        payload = encode_chunk(
            stream["codec"],
            len(stream["channels"]),
            stream["sample_rate"],
            seq,
            capture_us,
            [bytes([(seq + i) % 256]) * size for i in range(frames)],
        )
        self.client.publish(listen_topic(self.node_id, stream["stream_id"]), payload, qos=0)
        return payload

    def publish(self, suffix: str, payload: bytes, qos: int = 0) -> None:
        assert self.client is not None
        self.client.publish(f"{node_prefix(self.node_id)}{suffix}", payload, qos=qos)

    def post_chunk(self, stream_id: str, payload: bytes, node_id: str | None = None) -> httpx.Response:
        with self.hub.client(self.credential) as client:
            return client.post(
                f"/api/v1/nodes/{node_id or self.node_id}/listen/chunk",
                params={"stream": stream_id},
                content=payload,
                headers={"Content-Type": "application/octet-stream"},
            )

    def go_offline(self) -> None:
        """Says offline and disconnects (as a node stopping does)."""
        if self.client is None:
            return
        info = self.client.publish(
            f"{node_prefix(self.node_id)}status", json.dumps({"state": "offline", "ts": now_iso()}), qos=1, retain=True
        )
        info.wait_for_publish(5)
        self.stop()

    def stop(self) -> None:
        if self.client is not None:
            self.client.disconnect()
            self.client.loop_stop()
            self.client = None
