"""A live stream client that stops reading is dropped, and nobody else notices: not the other clients, not MQTT intake."""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from tests.harness import HubProcess, running_hub, wait_for
from tests.hub.api.test_fleet import close, enroll, mqtt_client
from tests.hub.api.test_meters import Stream, frame

NODES = 4
CHANNELS = 16  # large frames fill a stalled client's buffers in a few seconds
PUBLISH_HZ = 50


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubProcess]:
    """One hub (the database plays no part in the live streams)."""
    with running_hub(tmp_path_factory.mktemp("hub-stream-lag")) as process:
        yield process


def metric(hub: HubProcess, name: str, label: str) -> float:
    with hub.admin() as admin:
        text = admin.get("/metrics").text
    found = re.search(rf"^{name}\{{{label}\}} (\S+)$", text, re.M)
    return float(found[1]) if found else 0.0


def big_frame(seq: int) -> dict:
    body = frame(seq)
    body["channels"] = [{**body["channels"][0], "index": i, "name": f"input {i}"} for i in range(CHANNELS)]
    return body


class Publisher:
    """Every node publishes big meter frames over MQTT at PUBLISH_HZ, in a thread, until stopped."""

    def __init__(self, hub: HubProcess, nodes: list[tuple[dict, str]]) -> None:
        self.clients = [(node["id"], mqtt_client(hub, node["id"], credential)[0]) for node, credential in nodes]
        self.seq = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(1 / PUBLISH_HZ):
            self.seq += 1
            for node_id, client in self.clients:
                client.publish(f"hark/v1/nodes/{node_id}/meters", json.dumps(big_frame(self.seq)), qos=0)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        for _, client in self.clients:
            close(client)


def stalled_stream(hub: HubProcess, token: str, query: str = "") -> socket.socket:
    """A `GET /api/v1/meter-events{query}` on a socket with a small receive buffer, read up to the headers and then no more."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", hub.port))
    sock.sendall(f"GET /api/v1/meter-events{query} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n\r\n".encode())
    sock.settimeout(10)
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)  # one byte at a time: nothing past the headers is read
    assert head.startswith(b"HTTP/1.1 200"), head
    return sock


def read_to_the_end(sock: socket.socket, deadline_s: float) -> bytes:
    """Everything the hub still sends until it closes the connection (AssertionError if it does not in time)."""
    sock.settimeout(1)
    received = bytearray()
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        except ConnectionResetError:
            return bytes(received)
        if not chunk:
            return bytes(received)
        received += chunk
    raise AssertionError("the hub did not close the stalled stream")


def latest_seq(hub: HubProcess, node_id: str) -> int:
    with hub.admin() as admin:
        response = admin.get(f"/api/v1/nodes/{node_id}/meters")
    return response.json()["data"]["seq"] if response.status_code == 200 else -1


def test_a_client_that_stops_reading_is_dropped_while_the_others_and_mqtt_intake_go_on(hub: HubProcess) -> None:
    nodes = [enroll(hub, site="north") for _ in range(NODES)]
    token = hub.login()
    reader = Stream(hub, token, [])
    wait_for(lambda: reader.status is not None, 10, "the reading client's stream to open")
    assert reader.status == 200
    dropped_before = metric(hub, "hark_sse_clients_dropped_total", 'stream="meters"')
    stalled = stalled_stream(hub, token)
    publisher = Publisher(hub, nodes)
    first = nodes[0][0]["id"]
    try:
        wait_for(
            lambda: metric(hub, "hark_sse_clients_dropped_total", 'stream="meters"') > dropped_before,
            60,
            "the stalled client to be dropped",
        )
        received_at_drop = len(reader.frames)
        intake_at_drop = metric(hub, "hark_mqtt_messages_received_total", 'kind="meters"')
        seq_at_drop = latest_seq(hub, first)
        assert received_at_drop > 0 and seq_at_drop > 0
        read_to_the_end(stalled, 30)  # the hub closed it: what its socket still held, then the end
        wait_for(lambda: len(reader.frames) >= received_at_drop + 10 * NODES, 20, "the reading client to go on receiving")
        wait_for(lambda: latest_seq(hub, first) >= seq_at_drop + 10, 20, "the latest frame to go on advancing")
        wait_for(
            lambda: metric(hub, "hark_mqtt_messages_received_total", 'kind="meters"') >= intake_at_drop + 10 * NODES,
            20,
            "MQTT intake to go on",
        )
    finally:
        publisher.stop()
        stalled.close()
        reader.close()
    # The reader never fell behind: for each node it got an unbroken run of frames, up to the last it was sent.
    for node, _ in nodes:
        seqs = [f["seq"] for f in reader.frames if f["node_id"] == node["id"]]
        assert seqs and seqs == list(range(seqs[0], seqs[0] + len(seqs))), (node["id"], seqs[:5], len(seqs))
    assert metric(hub, "hark_sse_clients_dropped_total", 'stream="meters"') == dropped_before + 1


def test_the_metrics_count_open_streams(hub: HubProcess) -> None:
    publisher = Publisher(hub, [enroll(hub, site="north")])  # a client that went away is noticed at the next write
    token = hub.login()
    before = metric(hub, "hark_sse_clients", 'stream="meters"')
    try:
        reader = Stream(hub, token, [])
        try:
            wait_for(lambda: metric(hub, "hark_sse_clients", 'stream="meters"') == before + 1, 10, "the stream counted")
        finally:
            reader.close()
        wait_for(lambda: metric(hub, "hark_sse_clients", 'stream="meters"') == before, 10, "the closed stream uncounted")
    finally:
        publisher.stop()


def test_a_coalesced_client_that_stops_reading_is_dropped_while_the_others_go_on_getting_ticks(hub: HubProcess) -> None:
    """The ticks a coalesced stream writes straight to an idle client's socket still bound what a stalled client lags."""
    nodes = [enroll(hub, site="north") for _ in range(NODES)]
    token = hub.login()
    reader = Stream(hub, token, [("coalesce", "50ms")])
    wait_for(lambda: reader.status is not None, 10, "the reading client's stream to open")
    assert reader.status == 200
    dropped_before = metric(hub, "hark_sse_clients_dropped_total", 'stream="meters"')
    stalled = stalled_stream(hub, token, "?coalesce=50ms")
    publisher = Publisher(hub, nodes)
    try:
        wait_for(
            lambda: metric(hub, "hark_sse_clients_dropped_total", 'stream="meters"') > dropped_before,
            60,
            "the stalled client to be dropped",
        )
        ticks_at_drop = len(reader.ticks)
        assert ticks_at_drop > 0
        read_to_the_end(stalled, 30)  # the hub closed it: what its socket still held, then the end
        wait_for(lambda: len(reader.ticks) >= ticks_at_drop + 10, 20, "the reading client to go on getting ticks")
    finally:
        publisher.stop()
        stalled.close()
        reader.close()
    numbers = [tick["tick"] for tick in reader.ticks]
    assert numbers == sorted(set(numbers)), numbers[:20]  # in order, none twice
    assert metric(hub, "hark_sse_clients_dropped_total", 'stream="meters"') == dropped_before + 1
