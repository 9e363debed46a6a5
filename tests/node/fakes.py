"""Stand-ins for the hub in node tests: an MQTT client that plays the hub, and an HTTP config route.

Both are real network peers (paho against a real broker, an HTTP server on loopback); the
real hub routes are tested with the hub.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from hark_fleet.protocol.topics import HUB_SUBSCRIPTION, command_topic, parse_node_topic
from paho.mqtt.enums import CallbackAPIVersion

from tests.harness import Mosquitto, wait_for


@dataclass(frozen=True)
class Received:
    topic: str
    kind: str
    payload: bytes
    qos: int
    retain: bool
    at: float

    def json(self) -> Any:
        return json.loads(self.payload)


def mqtt_client(
    host: str, port: int, username: str | None = None, password: str | None = None, client_id: str | None = None
) -> mqtt.Client:
    """A plain paho client, connected, its network loop on a thread (stop it with `close`)."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id or f"test-{uuid.uuid4().hex[:8]}")
    if username:
        client.username_pw_set(username, password)
    connected = threading.Event()
    client.on_connect = lambda c, u, f, reason, p: connected.set() if not reason.is_failure else None
    client.connect(host, port)
    client.loop_start()
    if not connected.wait(5):
        close(client)
        raise AssertionError("test MQTT client could not connect")
    return client


def close(client: mqtt.Client) -> None:
    client.disconnect()
    client.loop_stop()


class FakeHub:
    """Subscribes to `hark/v1/nodes/+/#` like the hub, records messages of `node_id`, sends commands and acks.

    Other tests' nodes leave retained statuses on a shared broker: only `node_id`'s messages are kept.
    """

    def __init__(self, host: str, port: int, node_id: str, username: str | None = None, password: str | None = None) -> None:
        self.host, self.port = host, port
        self.node_id = node_id
        self.username, self.password = username, password
        self.auto_ack = False
        self._lock = threading.Lock()
        self._received: list[Received] = []
        self._client: mqtt.Client | None = None

    def __enter__(self) -> FakeHub:
        subscribed = threading.Event()
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"fake-hub-{uuid.uuid4().hex[:8]}")
        if self.username:
            client.username_pw_set(self.username, self.password)
        client.on_connect = lambda c, u, f, reason, p: c.subscribe(HUB_SUBSCRIPTION, qos=1)
        client.on_subscribe = lambda *args: subscribed.set()
        client.on_message = self._on_message
        client.connect(self.host, self.port)
        client.loop_start()
        self._client = client
        if not subscribed.wait(5):
            self.__exit__()
            raise AssertionError("fake hub could not subscribe")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._client is not None:
            close(self._client)
            self._client = None

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        parsed = parse_node_topic(message.topic)
        if parsed is None or parsed.node_id != self.node_id:
            return
        kind = parsed.kind
        item = Received(message.topic, kind, bytes(message.payload), message.qos, bool(message.retain), time.monotonic())
        with self._lock:
            self._received.append(item)
        if self.auto_ack and kind in ("heartbeat", "health"):
            self.ack([item.json()["msg_id"]])

    # -- what the tests look at -----------------------------------------------------

    def received(self, kind: str | None = None) -> list[Received]:
        with self._lock:
            return [r for r in self._received if kind is None or r.kind == kind]

    def documents(self, kind: str) -> list[dict[str, Any]]:
        return [r.json() for r in self.received(kind)]

    def wait_documents(self, kind: str, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        wait_for(lambda: len(self.received(kind)) >= count, timeout, f"{count} {kind} messages")
        return self.documents(kind)

    def wait_status(self, state: str, after: int = 0, timeout: float = 10.0) -> dict[str, Any]:
        """The first status message in `state` among those received after the first `after` ones."""

        def found() -> dict[str, Any] | None:
            for document in self.documents("status")[after:]:
                if document["state"] == state:
                    return document
            return None

        return wait_for(found, timeout, f"status {state}")

    # -- what the hub sends ------------------------------------------------------------

    def send(self, kind: str, payload: bytes | dict[str, Any]) -> None:
        """Publish `cmd/{kind}` to the node (QoS 1), as the hub does."""
        assert self._client is not None
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        info = self._client.publish(command_topic(self.node_id, kind), data, qos=1)
        if threading.current_thread() is not getattr(self._client, "_thread", None):
            info.wait_for_publish(5)

    def ack(self, ids: list[str]) -> None:
        self.send("ack", {"ids": ids})


def retained(host: str, port: int, topic: str, timeout: float = 5.0) -> dict[str, Any] | None:
    """The retained message on `topic`, as a fresh subscriber sees it (None after `timeout` without one)."""
    got: list[bytes] = []
    ready = threading.Event()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"probe-{uuid.uuid4().hex[:8]}")

    def on_message(c: mqtt.Client, u: Any, message: mqtt.MQTTMessage) -> None:
        if message.retain:
            got.append(bytes(message.payload))
            ready.set()

    client.on_connect = lambda c, u, f, reason, p: c.subscribe(topic, qos=1)
    client.on_message = on_message
    client.connect(host, port)
    client.loop_start()
    try:
        ready.wait(timeout)
    finally:
        close(client)
    return json.loads(got[-1]) if got else None


class ConfigStub:
    """A tiny HTTP server answering `GET /api/v1/nodes/{id}/config` the way the hub will."""

    def __init__(self, node_id: str, mqtt_url: str, credentials: set[str], heartbeat_interval_s: float = 10) -> None:
        self.node_id = node_id
        self.mqtt_url = mqtt_url
        self.credentials = credentials
        self.heartbeat_interval_s = heartbeat_interval_s
        self.meter_interval_ms = 100
        self.status_override: int | None = None
        self.body_override: bytes | None = None
        self.hub_time_shift_s = 0.0
        self.requests: list[tuple[str, str | None]] = []  # path, authorization
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> ConfigStub:
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's name
                pass

            def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
                stub.requests.append((self.path, self.headers.get("Authorization")))
                status, body = stub.answer(self.path, self.headers.get("Authorization"))
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="config-stub", kwargs={"poll_interval": 0.05})
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(5)

    def answer(self, path: str, authorization: str | None) -> tuple[int, bytes]:
        if self.status_override is not None:
            return self.status_override, b'{"error": {"code": "unavailable", "message": "down"}}'
        if path != f"/api/v1/nodes/{self.node_id}/config":
            return 404, b'{"error": {"code": "not_found", "message": "Not found."}}'
        if authorization not in {f"Bearer {c}" for c in self.credentials}:
            return 401, b'{"error": {"code": "unauthenticated", "message": "Authentication is required."}}'
        if self.body_override is not None:
            return 200, self.body_override
        hub_time = datetime.fromtimestamp(time.time() + self.hub_time_shift_s, UTC)
        data = {
            "node_id": self.node_id,
            "name": "test box",
            "site": "north",
            "tags": ["test"],
            "mqtt_url": self.mqtt_url,
            "heartbeat_interval_s": self.heartbeat_interval_s,
            "meter_interval_ms": self.meter_interval_ms,
            "hub_time": hub_time.replace(tzinfo=None).isoformat(timespec="milliseconds") + "Z",
        }
        return 200, json.dumps({"data": data}).encode()


def write_password_file(path: Path, users: dict[str, str]) -> None:
    """A Mosquitto password file with `users` (name -> password)."""
    binary = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
    path.unlink(missing_ok=True)
    path.touch(mode=0o600)
    for name, password in users.items():
        subprocess.run([binary, "-b", str(path), name, password], check=True, capture_output=True, timeout=10)


def authenticated_mosquitto(workdir: Path, users: dict[str, str]) -> Mosquitto:
    """A Mosquitto (not started) that lets in only `users`; rewrite the file and `reload` to change them."""
    password_file = workdir / "passwords"
    workdir.mkdir(parents=True, exist_ok=True)
    write_password_file(password_file, users)
    # Run as whoever runs the tests: started as root, Mosquitto would switch to a user who cannot read tmp_path.
    user = pwd.getpwuid(os.getuid()).pw_name
    return Mosquitto(workdir, extra_config=f"allow_anonymous false\npassword_file {password_file}\nuser {user}\n")


def reload(broker: Mosquitto) -> None:
    """SIGHUP: Mosquitto reads its password file again (connected clients stay)."""
    assert broker.proc is not None
    broker.proc.send_signal(signal.SIGHUP)
    time.sleep(0.3)
