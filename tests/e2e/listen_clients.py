"""Clients of live listen for the end-to-end tests: listeners on the hub's WebSocket, the hub's meter stream, and a
sniffer of what a node publishes for listen on the broker.

Each runs in a thread of its own and only records what it sees; the tests decide what it means.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
from hark_fleet.protocol.listen import chunk_header, parse_chunk
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from tests.harness import HubProcess, wait_for


def open_session(hub: HubProcess, token: str, node_id: str, **body: Any) -> dict[str, Any]:
    """`POST /api/v1/nodes/{id}/listen` -> the new session (201 asserted)."""
    with hub.client(token) as client:
        response = client.post(f"/api/v1/nodes/{node_id}/listen", json=body)
    assert response.status_code == 201, response.text
    return response.json()["data"]


def session(hub: HubProcess, session_id: str) -> dict[str, Any]:
    """`GET /api/v1/listen-sessions/{id}` as the admin."""
    with hub.admin() as admin:
        response = admin.get(f"/api/v1/listen-sessions/{session_id}")
    assert response.status_code == 200, response.text
    return response.json()["data"]


def listen_settings(hub: HubProcess, **values: Any) -> dict[str, Any]:
    """`PUT /api/v1/settings/listen` as the admin (limits and the grace for a test)."""
    with hub.admin() as admin:
        response = admin.put("/api/v1/settings/listen", json=values)
    assert response.status_code == 200, response.text
    return response.json()["data"]


@dataclass
class Window:
    """What a listener had received at one instant (to take differences over a window)."""

    at: float
    chunks: int
    frames: int
    bytes: int


@dataclass
class Listener:
    """A WebSocket listener of one session: the hello, every chunk's header (seq continuity), the texts and the end."""

    hub: HubProcess
    token: str
    stream_url: str  # the session's `stream_url`
    name: str = "listener"
    hello: dict[str, Any] | None = None
    texts: list[dict[str, Any]] = field(default_factory=list)
    end: dict[str, Any] | None = None
    chunks: int = 0
    chunks_before_hello: int = 0  # the contract: the hello comes first, even when the stream already runs
    frames: int = 0
    bytes: int = 0
    first_seq: int | None = None
    next_seq: int | None = None
    gaps: list[tuple[int, int]] = field(default_factory=list)  # (expected seq, received seq)
    discontinuities: int = 0
    bad_chunks: list[str] = field(default_factory=list)
    formats: set[tuple[str, int, int]] = field(default_factory=set)  # (codec, channels, sample_rate) seen in chunks
    closed: threading.Event = field(default_factory=threading.Event)
    close_code: int | None = None
    error: BaseException | None = None
    _ws: ClientConnection | None = None
    _thread: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def ws_url(self) -> str:
        return self.hub.url.replace("http", "ws", 1) + self.stream_url

    def start(self) -> Listener:
        """Connect (the handshake in this thread: a refusal raises InvalidStatus here) and receive in a thread."""
        self._ws = connect(
            self.ws_url,
            additional_headers={"Authorization": f"Bearer {self.token}"},
            open_timeout=10,
            max_size=None,
            compression=None,
            proxy=None,
        )
        self._thread = threading.Thread(target=self._receive, name=f"listen-{self.name}", daemon=True)
        self._thread.start()
        return self

    def _receive(self) -> None:
        ws = self._ws
        assert ws is not None
        try:
            for message in ws:
                if isinstance(message, str):
                    self._text(json.loads(message))
                else:
                    self._chunk(message)
        except ConnectionClosed:
            pass
        except Exception as err:  # noqa: BLE001 -- recorded for the test to see
            self.error = err
        finally:
            self.close_code = ws.close_code
            self.closed.set()

    def _text(self, body: dict[str, Any]) -> None:
        if body.get("type") == "hello" and self.hello is None:
            self.hello = body
        elif body.get("type") == "end":
            self.end = body
        self.texts.append(body)

    def _chunk(self, data: bytes) -> None:
        if self.hello is None:
            self.chunks_before_hello += 1
        try:
            codec, channels, _frame_ms, flags, rate, seq, _capture_us = chunk_header(data)
            count = len(parse_chunk(data).frames)
        except ValueError as err:
            self.bad_chunks.append(str(err))
            return
        with self._lock:
            self.formats.add((codec, channels, rate))
            if self.first_seq is None:
                self.first_seq = seq
            elif seq != self.next_seq:
                self.gaps.append((self.next_seq or 0, seq))
            if flags & 1:
                self.discontinuities += 1
            self.next_seq = seq + count
            self.chunks += 1
            self.frames += count
            self.bytes += len(data)

    def window(self) -> Window:
        with self._lock:
            return Window(time.monotonic(), self.chunks, self.frames, self.bytes)

    def wait_frames(self, frames: int, timeout: float = 20) -> None:
        wait_for(lambda: self.frames >= frames or self.closed.is_set(), timeout, f"{self.name} to receive {frames} frames")
        assert self.frames >= frames, (self.name, self.frames, self.end, self.close_code, self.error)

    def close(self) -> None:
        """Close the socket as a client that goes away, and wait for the receiving thread."""
        if self._ws is not None:
            self._ws.close()
        if self._thread is not None:
            self._thread.join(timeout=15)

    def summary(self) -> str:
        return (
            f"{self.name}: {self.chunks} chunks, {self.frames} frames, {self.bytes} bytes, "
            f"seq {self.first_seq}..{self.next_seq}, "
            f"gaps {self.gaps[:5]}, discontinuities {self.discontinuities}, bad {self.bad_chunks[:3]}, end {self.end}, "
            f"close {self.close_code}, error {self.error!r}"
        )


def refused_status(hub: HubProcess, token: str | None, stream_url: str) -> int:
    """The HTTP status the hub answers a WebSocket handshake with (101 when it accepts; the socket is closed again)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        ws = connect(hub.url.replace("http", "ws", 1) + stream_url, additional_headers=headers, open_timeout=10, proxy=None)
    except InvalidStatus as err:
        return err.response.status_code
    ws.close()
    return 101


class MeterWatch:
    """The hub's meter stream of one node (`GET /api/v1/meter-events?node_id=`): every frame's seq as it arrives."""

    def __init__(self, hub: HubProcess, token: str, node_id: str) -> None:
        self.hub, self.token, self.node_id = hub, token, node_id
        self.frames: list[tuple[float, int]] = []  # (monotonic arrival, seq)
        self._stop = threading.Event()
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._run, name="meter-watch", daemon=True)
        self.error: BaseException | None = None

    def start(self) -> MeterWatch:
        self._thread.start()
        wait_for(lambda: self.frames or self.error, 20, "the first meter frame")
        assert self.error is None, self.error
        return self

    def _run(self) -> None:
        try:
            with self.hub.client(self.token) as client:
                with client.stream(
                    "GET", "/api/v1/meter-events", params={"node_id": self.node_id}, timeout=httpx.Timeout(10, read=30)
                ) as stream:
                    for line in stream.iter_lines():
                        if line.startswith("data: "):
                            frame = json.loads(line[6:])
                            if frame.get("node_id") == self.node_id:
                                self.frames.append((time.monotonic(), int(frame["seq"])))
                        if self._stop.is_set():
                            return
        except Exception as err:  # noqa: BLE001 -- recorded for the test to see
            if not self._stop.is_set():
                self.error = err

    def seqs_between(self, start: float, end: float) -> list[int]:
        return [seq for at, seq in list(self.frames) if start <= at <= end]

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=15)


class ListenSniffer:
    """A broker client that counts what a node publishes on `hark/v1/nodes/{id}/listen/#`, per stream id.

    It logs in as the broker's administrator (the test's own Mosquitto), which may subscribe anywhere.
    """

    def __init__(self, host: str, port: int, username: str, password: str, node_id: str) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.node_id = node_id
        self.bytes: dict[str, int] = {}
        self.messages: dict[str, int] = {}
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.granted: list[int] = []
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"listen-sniffer-{node_id[-6:]}")
        self.client.username_pw_set(username, password)
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe
        self.client.on_connect = lambda c, u, f, reason, p: c.subscribe(f"hark/v1/nodes/{node_id}/listen/#", qos=0)
        self.client.connect(host, port)
        self.client.loop_start()
        if not self._subscribed.wait(10) or any(code >= 128 for code in self.granted):
            self.stop()
            raise AssertionError(f"the sniffer could not subscribe: {self.granted}")

    def _on_subscribe(self, client: Any, userdata: Any, mid: Any, reason_codes: Any, properties: Any) -> None:
        self.granted = [rc.value for rc in reason_codes]
        self._subscribed.set()

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        stream = message.topic.rsplit("/listen/", 1)[1]
        with self._lock:
            self.bytes[stream] = self.bytes.get(stream, 0) + len(message.payload)
            self.messages[stream] = self.messages.get(stream, 0) + 1

    def snapshot(self) -> tuple[float, dict[str, int]]:
        with self._lock:
            return time.monotonic(), dict(self.bytes)

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
