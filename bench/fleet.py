"""Fleet ingest of the hark hub over MQTT, against a bare paho subscriber, in alternating rounds.

What is measured
----------------
``--nodes`` nodes (default 1000) are enrolled through the API; each gets its own MQTT connection,
logged in as itself (username and client id = its node id, password = the credential enrollment
returned). Then ``--rounds`` rounds (default 3, at least 3) each measure two subjects in the same
window, the order reversed every other round (``bench/rounds.py``):

* **bare paho**: one paho client (``loop_forever``) subscribed to ``hark/v1/nodes/+/#`` at QoS 1
  like the hub, doing ``json.loads`` on every payload and counting it;
* **hark hub**: a real ``python -m hark_fleet.hub run``; what it applied is the delta of its
  ``hark_mqtt_ingested_total`` (meter frames stored in its latest state, heartbeats counted after
  their commit), scraped from ``GET /metrics``. What it merely read off the wire does not count.

While one subject is measured the other is idle: the bare subscriber's rounds run on a Mosquitto of
the bench's own (same binary, loopback, anonymous), where the nodes connect for those rounds, so the
hub, idle on its own broker meanwhile, neither competes for the messages nor has to be paused. The
hub's broker is, with ``--broker system``, the system Mosquitto (``--system-url``, default
``mqtt://127.0.0.1:1883``); with ``--broker embedded`` its default embedded broker (``HARK_MQTT_URL``
unset; ``--embedded`` sets ``HARK_EMBEDDED_BROKER``: ``auto``, ``mosquitto`` or ``in-process``),
which the nodes log in to with their credentials.

Each subject's round has two parts:

1. **Fleet load**: every node sends a meter frame at 10 Hz (QoS 0) and a heartbeat every 10 s
   (QoS 1, unique ``msg_id``), offsets spread over both periods: N x 10.1 msg/s. After a 3 s
   warm-up, over ``--duration`` seconds: the applied rate, the backlog (sent minus applied, sampled
   each second; its least-squares slope says whether the subject falls behind), the consumer's CPU,
   and the delay from publish to the subject's state. Each frame carries its publish time (``ts``,
   epoch microseconds as ISO 8601; both clocks are this machine's). For the hub: a thread polls
   ``GET /api/v1/nodes/{id}/meters`` of 20 sample nodes (``--probe-rate`` requests/s) and takes
   ``received_at`` (stamped when the hub stored the frame) minus ``ts`` for every frame not seen
   before ("state"), and an SSE client on ``/api/v1/meter-events`` for the same 20 nodes takes
   arrival minus ``ts`` of every frame ("SSE"). For the bare subscriber: receipt minus ``ts`` of one
   meter frame in 20, in its callback.
2. **Ceiling**: the same mix (one heartbeat per 100 meter frames) as fast as the subject applies
   it, for ``--ceiling-duration`` seconds after a 1 s warm-up. The generators keep at most
   ``--ceiling-backlog`` messages (default 20000) ahead of what the subject applied, so the subject
   always has thousands waiting (it runs at its own ceiling) while the broker drops nothing.

The ratio is hub ceiling / bare ceiling of the same round; the figures are the median of the rounds
with their range (low-high), and the 1-minute load average before and after each round is shown.
A warning is printed when the machine was busy before the bench started.

Targets (at 1,000 nodes x 10 Hz): p99 publish -> hub state under 250 ms, no growing backlog, and a
ceiling ratio of at least 0.70.

Two hubs against one (``--hubs 2``)
-----------------------------------
The ingest ceiling of a deployment of two hubs against one hub, in the same run, in alternating
rounds (``1 hub``, ``2 hubs``, the order reversed every other round). Both hubs run as deployed:
on one PostgreSQL database the bench makes (and drops) on 127.0.0.1:5432 (``tests.harness``;
``HARK_TEST_POSTGRES_URL`` overrides the server), one Mosquitto of the bench's own (anonymous on
loopback, queues sized like the hub's own Mosquitto), one shared data directory, and
``HARK_MQTT_SHARED=on``: outbox kinds (heartbeats, ...) reach one hub of the group
(``$share/hark-hub/...``), meter frames reach every hub. Hub A runs throughout (the nodes are
enrolled through it); hub B is started for each two-hub round and stopped after it (a stopped hub
would keep its turn of the shared messages). ``--nodes`` defaults to 200 here, and there is no
bare subscriber and no fleet-load part: each round measures two ceilings, as above (credit of
``--ceiling-backlog`` messages, ``--ceiling-duration`` seconds):

* **meters + heartbeats**, the fleet's mix: every hub must store every frame, so a second hub is
  expected to gain little;
* **heartbeats only** (QoS 1 outbox messages, the kind shared subscriptions spread).

What the deployment applied sums the hubs' ``hark_mqtt_ingested_total``: a heartbeat counts once,
on the hub that took it; a meter frame counts once every hub stored it (the lower of the hubs'
meter counts). For each ceiling window the bench shows the CPU of hub A, hub B, the broker,
PostgreSQL (the backends of its database and the server's own processes) and the whole machine,
says what limits the ceiling, and checks what was applied against what was sent (a heartbeat
applied twice means the subscription was not shared). The ratio two hubs / one hub is taken round
by round. There are no targets; it exits 0 unless something failed.

Load generators: ``--generators`` processes (default 2), each holding the connections of its share
of the nodes (raw MQTT 3.1.1 sockets, clean session, keep-alive off, packets pre-encoded from a
template with the publish time and seq patched in; one ``sendall`` per node per tick).

Run it from the repository root::

    .venv/bin/python bench/fleet.py [--broker system|embedded] [--embedded auto|mosquitto|in-process]
                                    [--nodes 1000] [--rounds 3] [--duration 15] [--ceiling-duration 5]
    .venv/bin/python bench/fleet.py --hubs 2 [--nodes 200] [--rounds 3] [--ceiling-duration 5]

It exits 0 when every target is met, 2 when one is missed, 1 on an error. The hub, the generators
and the bare subscriber are stopped at the end (also on Ctrl-C), the hub's session on the system
broker is removed, and the temporary directory is deleted (with ``--hubs 2``: both hubs, the
broker and the database too).
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import multiprocessing
import os
import re
import secrets
import selectors
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import msgspec

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
for _path in (str(REPO_ROOT), str(BENCH_DIR)):
    if _path not in sys.path:
        sys.path.insert(0, _path)

import rounds as rnd  # noqa: E402
from hark_fleet.protocol.messages import (  # noqa: E402
    AudioInterface,
    Clock,
    Disk,
    Heartbeat,
    Memory,
    MeterChannel,
    MeterFrame,
    OutboxLevel,
)
from hark_fleet.protocol.topics import HUB_SUBSCRIPTION, TOPIC_ROOT  # noqa: E402

HOST = "127.0.0.1"
METER_HZ = 10.0
HEARTBEAT_INTERVAL_S = 10.0
SLOTS = 20  # meter slots per 100 ms: one tick each 5 ms
WARMUP_S = 3.0
CEILING_WARMUP_S = 1.0
HEARTBEATS_PER_METERS = 100
SAMPLE_NODES = 20
BARE_SAMPLE_EVERY = 20
TARGET_P99_MS = 250.0
TARGET_RATIO = 0.70
TARGET_NODES = 1000
GROWING = 0.02  # a backlog growing by more than this share of the offered rate: the consumer falls behind
BARE = "bare paho"
HUB = "hark hub"
ONE_HUB = "1 hub"
TWO_HUBS = "2 hubs"
MIX = "mix"  # the fleet's mix: meter frames, one heartbeat per HEARTBEATS_PER_METERS
BEATS = "beats"  # heartbeats only (QoS 1, outbox messages: the kind shared subscriptions spread)
TWO_HUB_NODES = 200

# shared counters of a generator (RawArray of int64): messages sent, errors, and the credit the parent grants
C_SENT, C_ERRORS, C_CREDIT = range(3)
NO_LIMIT = 1 << 62


# -- raw MQTT 3.1.1 ----------------------------------------------------------------------------


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value % 128, value // 128
        out.append(byte | 0x80 if value else byte)
        if not value:
            return bytes(out)


def _mqtt_str(data: bytes) -> bytes:
    return len(data).to_bytes(2, "big") + data


def connect_packet(client_id: str, username: str, password: str) -> bytes:
    """CONNECT, MQTT 3.1.1, clean session, keep-alive off, with a username and password."""
    body = _mqtt_str(b"MQTT") + b"\x04\xc2\x00\x00" + _mqtt_str(client_id.encode())
    body += _mqtt_str(username.encode()) + _mqtt_str(password.encode())
    return b"\x10" + _varint(len(body)) + body


def connect_all(host: str, port: int, nodes: list[tuple[str, str]]) -> list[socket.socket]:
    """One accepted connection per node (all CONNECTs sent, then every CONNACK checked)."""
    socks = []
    for node_id, credential in nodes:
        sock = socket.create_connection((host, port), timeout=30)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(connect_packet(node_id, node_id, credential))
        socks.append(sock)
    for sock, (node_id, _) in zip(socks, nodes, strict=True):
        connack = b""
        while len(connack) < 4:
            chunk = sock.recv(4 - len(connack))
            if not chunk:
                raise ConnectionError(f"the broker closed {node_id}'s connection before CONNACK")
            connack += chunk
        if connack[0] != 0x20 or connack[3] != 0:
            raise ConnectionError(f"the broker refused {node_id}: {connack.hex()}")
    return socks


def _split_template(raw: bytes, markers: list[bytes]) -> list[bytes]:
    parts = []
    for marker in markers:
        before, sep, raw = raw.partition(marker)
        if not sep:
            raise ValueError(f"marker {marker!r} not in the template")
        parts.append(before)
    return [*parts, raw]


def meter_template() -> list[bytes]:
    """A meter frame as a node sends it (two channels), cut at ts and seq."""
    frame = MeterFrame(
        ts="@@TS@@",
        seq=918273645,
        interval_ms=int(1000 / METER_HZ),
        channels=[
            MeterChannel(index=0, peak_dbfs=-12.0, rms_dbfs=-15.01, name="L"),
            MeterChannel(index=1, peak_dbfs=-12.0, rms_dbfs=-15.01, name="R"),
        ],
        sample_rate=48000,
    )
    return _split_template(msgspec.json.encode(frame), [b'"@@TS@@"', b"918273645"])


def heartbeat_template() -> list[bytes]:
    """A heartbeat as a node sends it, cut at msg_id, ts and seq."""
    beat = Heartbeat(
        msg_id="@@ID@@",
        ts="@@TS@@",
        seq=918273645,
        agent_version="0.1.0",
        uptime_s=86400.125,
        cpu_pct=12.5,
        memory=Memory(used_pct=41.2, total_bytes=4_000_000_000),
        disk=Disk(path="/var/lib/hark", used_pct=23.4, free_bytes=25_000_000_000),
        temperature_c=48.3,
        interfaces=[AudioInterface(id="hw:0", name="USB Audio CODEC", channels=2, rates=[44100, 48000], default=True)],
        clock=Clock(offset_ms=0.4, quality="ntp"),
        outbox=OutboxLevel(depth=0, capacity=10000),
    )
    return _split_template(msgspec.json.encode(beat), [b'"@@ID@@"', b'"@@TS@@"', b"918273645"])


def iso_us(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def parse_iso(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


# -- load generator (its own process) ---------------------------------------------------------


class Generator:
    """The connections of a share of the nodes, publishing meters and heartbeats on each node's own."""

    def __init__(self, nodes: list[tuple[int, str, str]], counters: Any, label: str) -> None:
        self.nodes = nodes  # (global index, node id, credential)
        self.counters = counters
        self.label = label
        self.socks: list[socket.socket] = []
        self.meter = meter_template()
        self.beat = heartbeat_template()
        self.meter_topics = [_mqtt_str(f"{TOPIC_ROOT}/{n}/meters".encode()) for _, n, _ in nodes]
        self.beat_topics = [_mqtt_str(f"{TOPIC_ROOT}/{n}/heartbeat".encode()) for _, n, _ in nodes]
        self.packet_id = 0
        self.beats_made = 0

    def connect(self, host: str, port: int) -> None:
        self.close()
        self.socks = connect_all(host, port, [(n, c) for _, n, c in self.nodes])
        self._drain = selectors.DefaultSelector()
        for sock in self.socks:
            sock.setblocking(False)
            self._drain.register(sock, selectors.EVENT_READ)

    def close(self) -> None:
        for sock in self.socks:
            with contextlib.suppress(OSError):
                sock.setblocking(True)
                sock.sendall(b"\xe0\x00")
            sock.close()
        self.socks = []

    def drain(self) -> None:
        """Read the PUBACKs the broker sent back (and notice a closed connection)."""
        for key, _ in self._drain.select(0):
            sock: Any = key.fileobj
            try:
                if not sock.recv(65536):
                    self.counters[C_ERRORS] += 1
                    self._drain.unregister(sock)
            except BlockingIOError:
                pass
            except OSError:
                self.counters[C_ERRORS] += 1
                self._drain.unregister(sock)

    def send(self, index: int, data: bytes) -> None:
        sock = self.socks[index]
        view = memoryview(data)
        while view:
            try:
                sent = sock.send(view)
            except BlockingIOError:
                selectors.DefaultSelector().select(0.01)
                self.drain()
                continue
            view = view[sent:]

    def meter_payload(self, now: float, seq: int) -> bytes:
        m = self.meter
        return b"".join((m[0], b'"', iso_us(now).encode(), b'"', m[1], str(seq).encode(), m[2]))

    def meter_packet(self, index: int, payload: bytes) -> bytes:
        topic = self.meter_topics[index]
        return b"\x30" + _varint(len(topic) + len(payload)) + topic + payload

    def heartbeat_packet(self, index: int, now: float, seq: int) -> bytes:
        self.beats_made += 1
        self.packet_id = self.packet_id % 65535 + 1
        b = self.beat
        msg_id = f"{self.label}-{self.beats_made}".encode()
        payload = b"".join((b[0], b'"', msg_id, b'"', b[1], b'"', iso_us(now).encode(), b'"', b[2], str(seq).encode(), b[3]))
        variable = self.beat_topics[index] + self.packet_id.to_bytes(2, "big")
        return b"\x32" + _varint(len(variable) + len(payload)) + variable + payload

    def load(self, seconds: float) -> dict[str, Any]:
        """Every node: a meter frame at 10 Hz in its slot, a heartbeat every 10 s at its phase, on an absolute schedule."""
        tick_s = 1.0 / METER_HZ / SLOTS
        beat_ticks = int(HEARTBEAT_INTERVAL_S / tick_s)
        by_slot: list[list[int]] = [[] for _ in range(SLOTS)]
        by_beat: dict[int, list[int]] = {}
        for local, (index, _, _) in enumerate(self.nodes):
            by_slot[index % SLOTS].append(local)
            by_beat.setdefault((index * 7919) % beat_ticks, []).append(local)
        start = time.monotonic()
        ticks = int(seconds / tick_s)
        behind = 0.0
        sent = 0
        for tick in range(ticks):
            due = start + tick * tick_s
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            else:
                behind = max(behind, -delay)
            now = time.time()
            payload = self.meter_payload(now, tick)
            for local in by_slot[tick % SLOTS]:
                self.send(local, self.meter_packet(local, payload))
            sent += len(by_slot[tick % SLOTS])
            for local in by_beat.get(tick % beat_ticks, ()):
                self.send(local, self.heartbeat_packet(local, now, tick))
                sent += 1
            self.counters[C_SENT] = sent
            if tick % 20 == 0:
                self.drain()
        return {"behind_s": behind, "elapsed_s": time.monotonic() - start}

    def flat_out(self, seconds: float, mix: str = MIX) -> dict[str, Any]:
        """The same mix (`MIX`), or heartbeats only (`BEATS`), as fast as the credit allows: one sendall of 10
        messages per node, round-robin."""
        counters = self.counters
        sent = counters[C_SENT]
        per_node = 10
        start = time.monotonic()
        end = start + seconds
        local = 0
        count = len(self.nodes)
        seq = 0
        while time.monotonic() < end:
            if sent + per_node > counters[C_CREDIT]:
                time.sleep(0.001)
                self.drain()
                continue
            now = time.time()
            seq += 1
            if mix == BEATS:
                batch = [self.heartbeat_packet(local, now, seq) for _ in range(per_node)]
            else:
                payload = self.meter_payload(now, seq)
                batch = [self.meter_packet(local, payload)] * per_node
                if seq % (HEARTBEATS_PER_METERS // per_node) == 0:
                    batch.append(self.heartbeat_packet(local, now, seq))
            self.send(local, b"".join(batch))
            sent += len(batch)
            counters[C_SENT] = sent
            local = (local + 1) % count
            if seq % 200 == 0:
                self.drain()
        return {"elapsed_s": time.monotonic() - start}


def generator_main(conn: Connection, nodes: list[tuple[int, str, str]], label: str, counters: Any) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    generator = Generator(nodes, counters, label)
    try:
        while True:
            command = conn.recv()
            try:
                if command[0] == "quit":
                    break
                if command[0] == "connect":
                    generator.connect(command[1], command[2])
                    conn.send({"ok": True})
                elif command[0] == "close":
                    generator.close()
                    conn.send({"ok": True})
                elif command[0] == "load":
                    conn.send(generator.load(command[1]))
                elif command[0] == "flat":
                    conn.send(generator.flat_out(*command[1:]))
            except OSError as err:
                conn.send({"error": f"{type(err).__name__}: {err}"})
    except EOFError:
        pass
    finally:
        generator.close()


# -- bare subscriber (its own process) ----------------------------------------------------------


def bare_main(conn: Connection, host: str, port: int, counters: Any) -> None:
    """paho subscribed like the hub, json.loads on every message; counters[0]: messages, [1]: subscribed.

    One meter frame in BARE_SAMPLE_EVERY gives a delay sample (receipt minus its publish time) while
    counters[2] is 1; the parent asks for them over `conn`.
    """
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    loads = json.loads
    delays: list[float] = []

    def on_connect(client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        client.subscribe(HUB_SUBSCRIPTION, qos=1)

    def on_subscribe(client: mqtt.Client, userdata: Any, mid: int, reasons: Any, properties: Any) -> None:
        counters[1] = 1

    def on_message(client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        value = loads(message.payload)
        count = counters[0] = counters[0] + 1
        if count % BARE_SAMPLE_EVERY == 0 and counters[2] and "interval_ms" in value:
            delays.append(time.time() - parse_iso(value["ts"].rstrip("Z")))

    def answer() -> None:
        with contextlib.suppress(EOFError, OSError):
            while True:
                conn.recv()
                taken = list(delays)
                delays.clear()
                conn.send(taken)

    threading.Thread(target=answer, daemon=True).start()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"hark-bench-bare-{os.getpid()}", protocol=mqtt.MQTTv311)
    client.max_queued_messages_set(0)
    client.max_inflight_messages_set(100)
    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    client.connect(host, port, keepalive=30)
    client.loop_forever()


# -- the hub's HTTP side --------------------------------------------------------------------------


def http_json(
    port: int, method: str, path: str, body: Any = None, token: str | None = None, timeout: float = 30
) -> tuple[int, Any]:
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        headers = {"Content-Type": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        conn.request(method, path, body=None if body is None else json.dumps(body), headers=headers)
        response = conn.getresponse()
        raw = response.read()
        try:
            return response.status, json.loads(raw) if raw else None
        except ValueError:
            return response.status, raw
    finally:
        conn.close()


INGESTED = re.compile(rb'^hark_mqtt_ingested_total\{kind="([^"]+)"\} ([0-9.e+]+)$', re.M)
RECEIVED = re.compile(rb'^hark_mqtt_messages_received_total\{kind="([^"]+)"\} ([0-9.e+]+)$', re.M)


class HubScraper:
    """The hub's applied-message count, from `GET /metrics` on a keep-alive connection."""

    def __init__(self, port: int, token: str) -> None:
        self.port = port
        self.token = token
        self.conn: http.client.HTTPConnection | None = None
        self.received = 0.0  # read off the wire (meters and outbox kinds), as of the last scrape
        self.lock = threading.Lock()  # the ceiling's credit thread scrapes too: one request at a time on the connection

    def applied(self) -> float:
        return sum(self.kinds().values())

    def kinds(self) -> dict[str, float]:
        """Applied messages by topic kind (status left out: retained, not fleet traffic)."""
        with self.lock:
            return self._kinds()

    def _kinds(self) -> dict[str, float]:
        for _ in range(3):
            try:
                if self.conn is None:
                    self.conn = http.client.HTTPConnection(HOST, self.port, timeout=30)
                self.conn.request("GET", "/metrics", headers={"Authorization": f"Bearer {self.token}"})
                response = self.conn.getresponse()
                text = response.read()
                self.received = sum(float(v) for kind, v in RECEIVED.findall(text) if kind != b"status")
                return {kind.decode(): float(v) for kind, v in INGESTED.findall(text) if kind != b"status"}
            except (OSError, http.client.HTTPException):
                self.conn = None
        raise RuntimeError("the hub does not answer GET /metrics")


class Deployment:
    """What the hubs of a deployment applied since it was made: a shared kind (heartbeats and the other outbox kinds)
    counts once on the hub that took it (summed over the hubs), a meter frame once every hub stored it (the lowest
    of the hubs' counts: meters are not shared, every hub gets every frame)."""

    def __init__(self, scrapers: list[HubScraper]) -> None:
        self.scrapers = scrapers
        self.base = [scraper.kinds() for scraper in scrapers]
        self.last = [dict.fromkeys(base, 0.0) for base in self.base]  # per hub, by kind, since the base

    def applied(self) -> float:
        last = [
            {kind: value - base.get(kind, 0.0) for kind, value in scraper.kinds().items()}
            for scraper, base in zip(self.scrapers, self.base, strict=True)
        ]
        self.last = last
        meters = min(hub.get("meters", 0.0) for hub in last)
        return meters + sum(value for hub in last for kind, value in hub.items() if kind != "meters")

    def shared(self) -> list[float]:
        """Per hub, the shared kinds it applied since the base (as of the last `applied`)."""
        return [sum(value for kind, value in hub.items() if kind != "meters") for hub in self.last]


class StateProbe(threading.Thread):
    """Polls the latest frame of the sample nodes: `received_at` (when the hub stored it) minus its publish time."""

    def __init__(self, port: int, token: str, node_ids: list[str], rate: float) -> None:
        super().__init__(name="state-probe", daemon=True)
        self.port, self.token, self.node_ids, self.rate = port, token, node_ids, rate
        self.delays: list[float] = []
        self.recording = False
        self.stopping = threading.Event()
        self.seen: dict[str, int] = {}

    def run(self) -> None:
        conn = http.client.HTTPConnection(HOST, self.port, timeout=30)
        gap = 1.0 / self.rate
        i = 0
        while not self.stopping.is_set():
            node_id = self.node_ids[i % len(self.node_ids)]
            i += 1
            try:
                conn.request("GET", f"/api/v1/nodes/{node_id}/meters", headers={"Authorization": f"Bearer {self.token}"})
                response = conn.getresponse()
                raw = response.read()
            except (OSError, http.client.HTTPException):
                conn = http.client.HTTPConnection(HOST, self.port, timeout=30)
                continue
            if response.status == 200 and self.recording:
                data = json.loads(raw)["data"]
                if self.seen.get(node_id) != data["seq"]:
                    self.seen[node_id] = data["seq"]
                    self.delays.append(data["received_at"] - parse_iso(data["ts"].rstrip("Z")))
            self.stopping.wait(gap)


class SseProbe(threading.Thread):
    """An SSE client on the sample nodes' meter events: arrival minus publish time of every frame.

    The ceiling windows flood it (the sample nodes' share of everything sent flat out), so the hub may drop it as a
    client that lags; it then connects again and counts the reconnection.
    """

    def __init__(self, port: int, token: str, node_ids: list[str]) -> None:
        super().__init__(name="sse-probe", daemon=True)
        self.port, self.token, self.node_ids = port, token, node_ids
        self.delays: list[float] = []
        self.recording = False
        self.reconnects = 0
        self.error = ""
        self.stopping = threading.Event()

    def run(self) -> None:
        query = "&".join(f"node_id={n}" for n in self.node_ids)
        while not self.stopping.is_set():
            try:
                conn = http.client.HTTPConnection(HOST, self.port, timeout=3600)
                conn.request("GET", f"/api/v1/meter-events?{query}", headers={"Authorization": f"Bearer {self.token}"})
                response = conn.getresponse()
                if response.status != 200:
                    self.error = f"HTTP {response.status}"
                    return
                while True:
                    line = response.readline()
                    if not line:
                        break
                    if line.startswith(b"data: ") and self.recording:
                        at = time.time()
                        self.delays.append(at - parse_iso(json.loads(line[6:])["ts"].rstrip("Z")))
            except (OSError, http.client.HTTPException, ValueError) as err:
                self.error = repr(err)
            self.reconnects += 1
            self.stopping.wait(0.2)


# -- CPU ---------------------------------------------------------------------------------------------


def cpu_s(pid: int) -> float:
    return rnd.process_cpu_s(pid) or 0.0


def tree_cpu_s(pid: int) -> float:
    """CPU of a process and its children (the hub and its managed Mosquitto)."""
    total = cpu_s(pid)
    with contextlib.suppress(OSError):
        for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
            total += cpu_s(int(child))
    return total


# -- the run -----------------------------------------------------------------------------------------


def percentile(values: list[float], fraction: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def slope(points: list[tuple[float, float]]) -> float:
    if len(points) < 2:
        return 0.0
    mx = statistics.fmean(p[0] for p in points)
    my = statistics.fmean(p[1] for p in points)
    den = sum((x - mx) ** 2 for x, _ in points)
    return sum((x - mx) * (y - my) for x, y in points) / den if den else 0.0


def listener_pid(port: int) -> int | None:
    """The process listening on a local TCP port (the system broker), from `ss`; None if unknown."""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(["ss", "-ltnpH", f"sport = :{port}"], capture_output=True, text=True, timeout=5).stdout
        found = re.search(r"pid=(\d+)", out)
        if found:
            return int(found.group(1))
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


@dataclass
class Bench:
    args: argparse.Namespace
    temp: Path
    hub: subprocess.Popen[bytes] | None = None
    hub_port: int = 0
    hub_log: Path = field(init=False)
    token: str = ""
    nodes: list[tuple[str, str]] = field(default_factory=list)
    generators: list[tuple[Any, Connection, Any]] = field(default_factory=list)
    bare: tuple[Any, Connection, Any] | None = None
    hub_broker: tuple[str, int] = ("", 0)
    system_broker: tuple[str, int] = ("", 0)
    bare_broker: tuple[str, int] = ("", 0)
    bare_mosquitto: Any = None
    paused: bool = False
    scraper: Any = None
    password: str = ""
    # --hubs 2: hub B (started for the two-hub rounds only), the bench's PostgreSQL database and Mosquitto
    hub_b: subprocess.Popen[bytes] | None = None
    hub_b_port: int = 0
    hub_b_token: str = ""
    hub_b_log: Path = field(init=False)
    database_url: str = ""
    shared_broker: Any = None

    def __post_init__(self) -> None:
        self.hub_log = self.temp / "hub.log"
        self.hub_b_log = self.temp / "hub-b.log"
        self.ctx = multiprocessing.get_context("spawn")
        system = urlsplit(self.args.system_url)
        self.system_broker = (system.hostname or HOST, system.port or 1883)

    # -- processes

    def start_hub(self) -> None:
        self.hub_port = free_port()
        self.password = secrets.token_urlsafe(24)
        env = self.hub_env(self.hub_port)
        if self.args.hubs == 2:
            self.hub_broker = (self.shared_broker.host, self.shared_broker.port)
        elif self.args.broker == "system":
            env["HARK_MQTT_URL"] = self.args.system_url
            self.hub_broker = self.system_broker
        else:
            port = free_port()
            env["HARK_EMBEDDED_MQTT_BIND"] = f"{HOST}:{port}"
            env["HARK_EMBEDDED_BROKER"] = self.args.embedded
            self.hub_broker = (HOST, port)
        self.hub = self.launch_hub(env, self.hub_log)
        self.token = self.ready_and_login(self.hub, self.hub_port, self.hub_log)

    def hub_env(self, port: int) -> dict[str, str]:
        """A hub's environment; with two hubs, both on the bench's PostgreSQL database and Mosquitto, shared ingest."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("HARK_")}
        env.update(
            HARK_DATA_DIR=str(self.temp / "hub"),  # with two hubs: one data directory for both, as deployed
            HARK_HTTP_HOST=HOST,
            HARK_HTTP_PORT=str(port),
            HARK_ADMIN_PASSWORD=self.password,
            HARK_LOG_LEVEL="WARNING",
        )
        if self.args.hubs == 2:
            env.update(HARK_DATABASE_URL=self.database_url, HARK_MQTT_URL=self.shared_broker.url, HARK_MQTT_SHARED="on")
        return env

    def launch_hub(self, env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
        with open(log_path, "ab") as log:
            return subprocess.Popen(
                [sys.executable, "-m", "hark_fleet.hub", "run"], env=env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO_ROOT
            )

    def ready_and_login(self, hub: subprocess.Popen[bytes], port: int, log_path: Path) -> str:
        """Wait for the hub's /readyz, log in as the first admin; the session's token."""
        deadline = time.monotonic() + 60
        while True:
            if hub.poll() is not None:
                raise RuntimeError(f"the hub exited: {self.tail(log_path)}")
            with contextlib.suppress(OSError):
                if http_json(port, "GET", "/readyz", timeout=2)[0] == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"the hub was not ready in 60 s: {self.tail(log_path)}")
            time.sleep(0.2)
        status, body = http_json(port, "POST", "/api/v1/auth/login", {"username": "admin", "password": self.password})
        if status != 200:
            raise RuntimeError(f"login: HTTP {status} {body}")
        return str(body["data"]["token"])

    def tail(self, log_path: Path | None = None) -> str:
        with contextlib.suppress(OSError):
            return "\n".join((log_path or self.hub_log).read_text(errors="replace").splitlines()[-20:])
        return ""

    def enroll(self, count: int) -> None:
        def one(i: int) -> tuple[str, str]:
            status, body = http_json(
                self.hub_port, "POST", "/api/v1/nodes/enroll", {"name": f"bench-node-{i:05d}"}, token=self.token, timeout=60
            )
            if status != 201:
                raise RuntimeError(f"enroll: HTTP {status} {body}")
            return body["data"]["node"]["id"], body["data"]["credential"]

        started = time.monotonic()
        with ThreadPoolExecutor(8) as pool:
            self.nodes = list(pool.map(one, range(count)))
        print(f"  enrolled {count} nodes in {time.monotonic() - started:.1f} s", flush=True)

    def start_generators(self) -> None:
        label = secrets.token_hex(3)
        count = self.args.generators
        for g in range(count):
            share = [(i, n, c) for i, (n, c) in enumerate(self.nodes) if i % count == g]
            receiver, sender = self.ctx.Pipe()
            counters = self.ctx.RawArray("q", 3)
            counters[C_CREDIT] = NO_LIMIT
            process = self.ctx.Process(target=generator_main, args=(sender, share, f"{label}-{g}", counters), daemon=True)
            process.start()
            sender.close()
            self.generators.append((process, receiver, counters))

    def command(self, *command: Any) -> list[dict[str, Any]]:
        for _, conn, _ in self.generators:
            conn.send(command)
        answers = [conn.recv() for _, conn, _ in self.generators]
        for answer in answers:
            if "error" in answer:
                raise RuntimeError(f"generator: {answer['error']}")
        return answers

    def send_all(self, *command: Any) -> None:
        for _, conn, _ in self.generators:
            conn.send(command)

    def collect(self) -> list[dict[str, Any]]:
        answers = [conn.recv() for _, conn, _ in self.generators]
        for answer in answers:
            if "error" in answer:
                raise RuntimeError(f"generator: {answer['error']}")
        return answers

    def sent(self) -> int:
        return sum(c[C_SENT] for _, _, c in self.generators)

    def start_bare(self) -> None:
        receiver, sender = self.ctx.Pipe()
        counters = self.ctx.RawArray("q", 3)
        host, port = self.bare_broker
        process = self.ctx.Process(target=bare_main, args=(sender, host, port, counters), daemon=True)
        process.start()
        deadline = time.monotonic() + 15
        while not counters[1]:
            if time.monotonic() > deadline or not process.is_alive():
                raise RuntimeError(f"the bare subscriber did not subscribe on {host}:{port}")
            time.sleep(0.05)
        self.bare = (process, receiver, counters)

    def stop_bare(self) -> None:
        if self.bare is not None:
            process = self.bare[0]
            process.terminate()
            process.join(5)
            if process.is_alive():
                process.kill()
            self.bare = None

    def start_bare_broker(self) -> None:
        """The bare subscriber's rounds run on a Mosquitto of the bench's own (same binary, loopback, anonymous), so
        that the hub, idle meanwhile on its broker, neither competes for the messages nor has to be paused."""
        from tests.harness import Mosquitto

        self.bare_mosquitto = Mosquitto(self.temp / "bare-mosquitto")
        self.bare_mosquitto.start()
        self.bare_broker = (self.bare_mosquitto.host, self.bare_mosquitto.port)

    def pause_hub(self, paused: bool) -> None:
        if self.hub is not None and self.args.broker == "system" and self.args.hubs == 1 and paused != self.paused:
            self.hub.send_signal(signal.SIGSTOP if paused else signal.SIGCONT)
            self.paused = paused

    def stop_all(self) -> None:
        self.stop_bare()
        self.pause_hub(False)
        for process, conn, _ in self.generators:
            with contextlib.suppress(OSError):
                conn.send(("quit",))
            process.join(5)
            if process.is_alive():
                process.kill()
        self.stop_hub_b()
        if self.hub is not None and self.hub.poll() is None:
            self.hub.send_signal(signal.SIGTERM)
            try:
                self.hub.wait(30)
            except subprocess.TimeoutExpired:
                self.hub.kill()
        if self.args.broker == "system" and self.args.hubs == 1:
            self.remove_hub_session()
        if self.bare_mosquitto is not None:
            self.bare_mosquitto.stop()
        if self.shared_broker is not None:
            self.shared_broker.stop()
        if self.database_url:
            from tests.harness import drop_database

            with contextlib.suppress(Exception):
                drop_database(self.database_url)

    # -- two hubs

    def start_shared(self) -> None:
        """What both hubs share: a PostgreSQL database of the bench's own and a Mosquitto of its own (anonymous on
        loopback, queues sized like the hub's own Mosquitto: the default of 1,000 would drop QoS 1 for a lagging hub)."""
        from hark_fleet.hub.mqtt.mosquitto_conf import MAX_INFLIGHT_MESSAGES, MAX_QUEUED_MESSAGES

        from tests.harness import Mosquitto, create_database

        self.database_url = create_database()
        self.shared_broker = Mosquitto(
            self.temp / "mosquitto",
            extra_config=(
                f"max_queued_messages {MAX_QUEUED_MESSAGES}\nmax_inflight_messages {MAX_INFLIGHT_MESSAGES}\n"
                "set_tcp_nodelay true\n"
            ),
        )
        self.shared_broker.start()

    def start_hub_b(self) -> None:
        self.hub_b_port = free_port()
        self.hub_b = self.launch_hub(self.hub_env(self.hub_b_port), self.hub_b_log)
        self.hub_b_token = self.ready_and_login(self.hub_b, self.hub_b_port, self.hub_b_log)

    def stop_hub_b(self) -> None:
        hub, self.hub_b = self.hub_b, None
        if hub is not None and hub.poll() is None:
            hub.send_signal(signal.SIGTERM)
            try:
                hub.wait(30)
            except subprocess.TimeoutExpired:
                hub.kill()

    def postgres_pids(self) -> list[int]:
        """The backends of the bench's database and the server's own processes (WAL writer, checkpointer, ...)."""
        import psycopg2

        from tests.harness import POSTGRES_ADMIN_URL

        name = urlsplit(self.database_url).path.lstrip("/")
        conn = psycopg2.connect(POSTGRES_ADMIN_URL)
        try:
            with conn.cursor() as cur:
                cur.execute(
                    "SELECT pid FROM pg_stat_activity WHERE (datname = %s OR backend_type <> 'client backend') "
                    "AND pid <> pg_backend_pid()",
                    (name,),
                )
                return [int(row[0]) for row in cur.fetchall()]
        finally:
            conn.close()

    def cluster_cpu(self) -> dict[str, float]:
        """CPU seconds of hub A, hub B (when running), the broker, each PostgreSQL process and the whole machine."""
        assert self.hub is not None
        out = {"hub A": tree_cpu_s(self.hub.pid)}
        if self.hub_b is not None:
            out["hub B"] = tree_cpu_s(self.hub_b.pid)
        out["broker"] = cpu_s(self.shared_broker.proc.pid)
        for pid in self.postgres_pids():
            value = rnd.process_cpu_s(pid)
            if value is not None:
                out[f"pg {pid}"] = value
        out["bench"] = cpu_s(os.getpid()) + sum(cpu_s(process.pid) for process, _, _ in self.generators)
        machine = rnd.machine_busy_s()
        if machine is not None:
            out["machine"] = machine[0]
        return out

    def catch_up(self, applied: Any, target: float, timeout: float = 60.0, still_s: float = 10.0) -> None:
        """Wait until `applied()` reaches `target` (everything sent was applied), or has not moved for `still_s`."""
        deadline = time.monotonic() + timeout
        last, moved = applied(), time.monotonic()
        while last < target and time.monotonic() < deadline and time.monotonic() - moved < still_s:
            time.sleep(0.25)
            now = applied()
            if now != last:
                last, moved = now, time.monotonic()

    def measure_hubs(self, subject: str, number: int) -> rnd.Round:
        """One round of `--hubs 2`: the ceiling of the fleet's mix, then of heartbeats only, on hub A alone (`ONE_HUB`)
        or on hubs A and B (`TWO_HUBS`; B is started for the round and stopped after it)."""
        result = rnd.Round(subject, number)
        try:
            scrapers = [HubScraper(self.hub_port, self.token)]
            if subject == TWO_HUBS:
                self.start_hub_b()
                scrapers.append(HubScraper(self.hub_b_port, self.hub_b_token))
            deployment = Deployment(scrapers)
            self.settle(deployment.applied)
            self.command("connect", *self.hub_broker)
            time.sleep(1.0)
            for mix in (MIX, BEATS):
                self.settle(deployment.applied, timeout=10)
                applied0, sent0, shared0 = deployment.applied(), self.sent(), deployment.shared()
                rate, cpu = self.ceiling(deployment.applied, mix, self.cluster_cpu)
                sent1 = self.sent()
                self.catch_up(deployment.applied, applied0 + (sent1 - sent0))
                applied1, shared1 = deployment.applied(), deployment.shared()
                result.figures[f"{mix} ceiling"] = rate
                postgres = [value for name, value in cpu.items() if name.startswith("pg ")]
                cpu = {name: value for name, value in cpu.items() if not name.startswith("pg ")}
                if postgres:
                    cpu["PostgreSQL"] = sum(postgres)
                if "machine" in cpu:
                    cpu["other"] = cpu["machine"] - sum(value for name, value in cpu.items() if name != "machine")
                result.figures.update({f"{mix} {name}": value for name, value in cpu.items()})
                if sent1 > sent0:
                    result.figures[f"{mix} applied/sent"] = (applied1 - applied0) / (sent1 - sent0)
                taken = [after - before for before, after in zip(shared0, shared1, strict=True)]
                if len(taken) == 2 and sum(taken) > 0:
                    result.figures[f"{mix} hub B share"] = taken[1] / sum(taken)
            self.command("close")
            errors = sum(c[C_ERRORS] for _, _, c in self.generators)
            if errors:
                result.figures["connection_errors"] = errors
        finally:
            self.stop_hub_b()
        return result.done()

    def remove_hub_session(self) -> None:
        """The hub keeps a persistent session; one left on the shared system broker would queue messages forever."""
        from hark_fleet.hub.mqtt.bridge import bridge_client_id

        client_id = bridge_client_id(self.temp / "hub")
        host, port = self.system_broker
        body = _mqtt_str(b"MQTT") + b"\x04\x02\x00\x00" + _mqtt_str(client_id.encode())
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=5) as sock:
            sock.sendall(b"\x10" + _varint(len(body)) + body)
            sock.recv(4)
            sock.sendall(b"\xe0\x00")

    # -- one subject's round

    def applied_counter(self, subject: str) -> Any:
        if subject == HUB:
            scraper = self.scraper = HubScraper(self.hub_port, self.token)
            return scraper.applied
        assert self.bare is not None
        counters = self.bare[2]
        return lambda: float(counters[0])

    def consumer_cpu(self, subject: str) -> float:
        if subject == HUB:
            assert self.hub is not None
            return tree_cpu_s(self.hub.pid)
        assert self.bare is not None
        return cpu_s(self.bare[0].pid)

    def settle(self, applied: Any, quiet_s: float = 1.0, timeout: float = 20.0) -> None:
        """Wait until the consumer's count stops moving (what it still had queued is done)."""
        deadline = time.monotonic() + timeout
        last = applied()
        still = time.monotonic()
        while time.monotonic() < deadline:
            time.sleep(0.25)
            now = applied()
            if now != last:
                last, still = now, time.monotonic()
            elif time.monotonic() - still >= quiet_s:
                return

    def ceiling(self, applied: Any, mix: str, cpu: Any) -> tuple[float, dict[str, float]]:
        """The applied rate of `mix` sent as fast as the consumer applies it, keeping `--ceiling-backlog` messages
        ahead of it; and the CPU over the window, in % of one core, of each process `cpu()` gives seconds of."""
        args = self.args
        base = applied()
        for _, _, c in self.generators:
            c[C_CREDIT] = c[C_SENT] + args.ceiling_backlog // len(self.generators)
        self.send_all("flat", CEILING_WARMUP_S + args.ceiling_duration + 0.5, mix)
        sent_base = self.sent()
        stop_credit = threading.Event()

        def refresh_credit() -> None:
            while not stop_credit.is_set():
                done = applied() - base
                allowed = sent_base + done + args.ceiling_backlog
                share = (allowed - self.sent()) / len(self.generators)
                for _, _, c in self.generators:
                    c[C_CREDIT] = int(c[C_SENT] + max(0.0, share))
                stop_credit.wait(0.1)

        credit = threading.Thread(target=refresh_credit, daemon=True)
        credit.start()
        try:
            time.sleep(CEILING_WARMUP_S)
            a0, c0, t0 = applied(), cpu(), time.monotonic()
            time.sleep(args.ceiling_duration)
            a1, c1, t1 = applied(), cpu(), time.monotonic()
        finally:
            stop_credit.set()
            credit.join()
        self.collect()
        for _, _, c in self.generators:
            c[C_CREDIT] = NO_LIMIT
        elapsed = t1 - t0
        # A process first seen at the end (a database connection opened in the window) counts from zero.
        return (a1 - a0) / elapsed, {name: (c1[name] - c0.get(name, 0.0)) / elapsed * 100 for name in c1}

    def measure(self, subject: str, number: int, probes: tuple[StateProbe, SseProbe] | None) -> rnd.Round:
        args = self.args
        result = rnd.Round(subject, number)
        if subject == BARE:
            self.start_bare()
            host, port = self.bare_broker
        else:
            self.pause_hub(False)
            host, port = self.hub_broker
        applied = self.applied_counter(subject)
        try:
            self.settle(applied)
            self.command("connect", host, port)
            time.sleep(1.0)
            # 1. fleet load
            for _, _, c in self.generators:
                c[C_CREDIT] = NO_LIMIT
            self.send_all("load", WARMUP_S + args.duration)
            time.sleep(WARMUP_S)
            broker_pid = listener_pid(port) if (subject == BARE or args.broker == "system") else None
            broker0 = cpu_s(broker_pid) if broker_pid else 0.0
            sent0, applied0, cpu0, t0 = self.sent(), applied(), self.consumer_cpu(subject), time.monotonic()
            read0 = self.scraper.received if subject == HUB else 0.0
            backlog: list[tuple[float, float]] = []
            if probes is not None and subject == HUB:
                for probe in probes:
                    probe.delays.clear()
                    probe.recording = True
            if subject == BARE:
                assert self.bare is not None
                self.bare[2][2] = 1
            spy = None
            if args.py_spy and subject == HUB and self.hub is not None:
                spy = subprocess.Popen(
                    [args.py_spy_bin, "record", "-p", str(self.hub.pid), "-d", str(int(args.duration - 1)), "-r", "200",
                     "--idle", "-f", "raw", "-o", f"{args.py_spy}.round{number + 1}.txt"],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                )  # fmt: skip
            while time.monotonic() - t0 < args.duration - 0.5:
                time.sleep(1.0)
                backlog.append((time.monotonic() - t0, (self.sent() - sent0) - (applied() - applied0)))
            sent1, applied1, cpu1, t1 = self.sent(), applied(), self.consumer_cpu(subject), time.monotonic()
            read1 = self.scraper.received if subject == HUB else 0.0
            broker1 = cpu_s(broker_pid) if broker_pid else 0.0
            if spy is not None:
                spy.wait(30)
            if subject == HUB and probes is not None:
                for probe in probes:
                    probe.recording = False
                state, sse = list(probes[0].delays), list(probes[1].delays)
            else:
                assert self.bare is not None
                self.bare[2][2] = 0
                self.bare[1].send("delays")
                state, sse = self.bare[1].recv(), []
            behind = max(a.get("behind_s", 0.0) for a in self.collect())
            elapsed = t1 - t0
            result.figures.update(
                offered=(sent1 - sent0) / elapsed,
                applied=(applied1 - applied0) / elapsed,
                backlog_slope=slope(backlog),
                p50_ms=percentile(state, 0.50) * 1000,
                p99_ms=percentile(state, 0.99) * 1000,
                samples=len(state),
                cpu_pct=(cpu1 - cpu0) / elapsed * 100,
                generator_behind_ms=behind * 1000,
            )
            if subject == HUB:
                result.figures["read"] = (read1 - read0) / elapsed  # off the wire, applied or not
            if broker_pid:
                result.figures["broker_cpu_pct"] = (broker1 - broker0) / elapsed * 100
            if sse:
                result.figures.update(sse_p99_ms=percentile(sse, 0.99) * 1000, sse_samples=len(sse))
            self.settle(applied, timeout=10)
            # 2. ceiling
            rate, cpu = self.ceiling(applied, MIX, lambda: {"ceiling_cpu_pct": self.consumer_cpu(subject)})
            result.figures.update(ceiling=rate, **cpu)
            self.command("close")
            errors = sum(c[C_ERRORS] for _, _, c in self.generators)
            if errors:
                result.figures["connection_errors"] = errors
        finally:
            if subject == BARE:
                self.stop_bare()
                self.pause_hub(False)
        return result.done()


def fmt(value: float | None, spec: str = "{:,.0f}") -> str:
    if value is None or value != value:
        return "n/a"
    return spec.format(value)


def report(args: argparse.Namespace, results: list[rnd.Round], load_at_start: float) -> int:
    print()
    broker = "system Mosquitto " + args.system_url if args.broker == "system" else f"embedded ({args.embedded})"
    print(f"hark fleet bench: {args.nodes} nodes x 10 Hz, one connection and credential per node, broker: {broker}")
    print("  (the bare subscriber's rounds run on a Mosquitto of the bench's own, the hub idle meanwhile)")
    warning = rnd.busy_warning(load_at_start)
    if warning:
        print(warning)
    print(
        f"\n{'round':>5} {'subject':<10} {'load':>11} {'offered':>8} {'applied':>8} {'backlog/s':>9} {'p50 ms':>7} "
        f"{'p99 ms':>7} {'SSE p99':>7} {'CPU %':>6} {'broker %':>8} {'gen late':>8} {'ceiling':>8} {'CPU %':>6}"
    )
    grew = []
    for r in results:
        f = r.figures
        print(
            f"{r.number + 1:>5} {r.subject:<10} {r.load_before:>5.2f}-{r.load_after:<5.2f} {fmt(f.get('offered')):>8} "
            f"{fmt(f.get('applied')):>8} {fmt(f.get('backlog_slope'), '{:+,.0f}'):>9} {fmt(f.get('p50_ms'), '{:.1f}'):>7} "
            f"{fmt(f.get('p99_ms'), '{:.1f}'):>7} {fmt(f.get('sse_p99_ms'), '{:.1f}'):>7} {fmt(f.get('cpu_pct')):>6} "
            f"{fmt(f.get('broker_cpu_pct')):>8} {fmt(f.get('generator_behind_ms'), '{:.0f}ms'):>8} "
            f"{fmt(f.get('ceiling')):>8} {fmt(f.get('ceiling_cpu_pct')):>6}"
        )
        if r.subject == HUB and f.get("read", 0.0) - f.get("applied", 0.0) > GROWING * f.get("offered", 0.0):
            print(f"      the hub read {fmt(f.get('read'))} msg/s off the wire but applied {fmt(f.get('applied'))}")
        if f.get("backlog_slope", 0.0) > GROWING * f.get("offered", 0.0):
            grew.append(f"{r.subject} in round {r.number + 1}")
    print(
        "  (CPU %: of one core, the consumer over the load window and over the ceiling window; broker %: the "
        "Mosquitto's the subject reads from (the embedded one, in-process or the hub's Mosquitto child: in the hub's "
        "CPU, which counts its children); gen late: how far the generators fell "
        "behind their schedule)"
    )
    p99 = rnd.summarize(results, HUB, "p99_ms")
    sse = rnd.summarize(results, HUB, "sse_p99_ms")
    slope_hub = rnd.summarize(results, HUB, "backlog_slope")
    applied = rnd.summarize(results, HUB, "applied")
    ceiling_hub = rnd.summarize(results, HUB, "ceiling")
    ceiling_bare = rnd.summarize(results, BARE, "ceiling")
    ratio = rnd.ratios(results, HUB, BARE, "ceiling")
    print(f"\nmedian (low-high) of {ratio.count} rounds, {rnd.load_text(results)}:")
    print(f"  hub applied at load        {applied.text('{:,.0f}', 'msg/s')} (offered {args.nodes * 10.1:,.0f})")
    samples = rnd.summarize(results, HUB, "samples")
    print(
        f"  p99 publish -> hub state   {p99.text('{:.1f}', 'ms')}   (target < {TARGET_P99_MS:.0f} ms; "
        f"{samples.text('{:.0f}')} frames sampled per round)"
    )
    print(f"  p99 publish -> SSE client  {sse.text('{:.1f}', 'ms')}")
    print(f"  hub backlog growth         {slope_hub.text('{:+,.0f}', 'msg/s')}")
    print(f"  ceiling: hub {ceiling_hub.text('{:,.0f}', 'msg/s')}, bare paho {ceiling_bare.text('{:,.0f}', 'msg/s')}")
    print(f"  ceiling ratio hub / bare   {ratio.text('{:.2f}', 'x')}   (target >= {TARGET_RATIO:.2f}x)")
    if grew:
        print(f"  backlog grew (more than {GROWING:.0%} of the offered rate) for: {', '.join(grew)}")
    errors = sum(r.figures.get("connection_errors", 0) for r in results)
    if errors:
        print(f"  WARNING: {errors:.0f} node connections were closed by the broker during the rounds")
    met = p99.median < TARGET_P99_MS and ratio.median >= TARGET_RATIO and slope_hub.median < GROWING * args.nodes * 10
    if args.nodes != TARGET_NODES:
        print(f"  (the targets are stated for {TARGET_NODES} nodes)")
    print(f"\ntargets {'met' if met else 'MISSED'}")
    return 0 if met else 2


def run_hubs(bench: Bench) -> list[rnd.Round]:
    """`--hubs 2`: hub A on the bench's database and broker, the nodes enrolled through it, then the rounds."""
    args = bench.args
    print("starting PostgreSQL database, Mosquitto and hub A ...", flush=True)
    bench.start_shared()
    bench.start_hub()
    bench.enroll(args.nodes)
    bench.start_generators()
    results = []
    for number, subject in rnd.alternate([ONE_HUB, TWO_HUBS], args.rounds):
        print(f"  round {number + 1}: {subject} (load {rnd.load_average():.2f}) ...", flush=True)
        results.append(bench.measure_hubs(subject, number))
        if bench.hub is not None and bench.hub.poll() is not None:
            raise RuntimeError(f"hub A exited: {bench.tail()}")
    for name, log_path in (("hub A", bench.hub_log), ("hub B", bench.hub_b_log)):
        with contextlib.suppress(OSError):
            lines = log_path.read_text(errors="replace").splitlines()
            errors = [line for line in lines if " ERROR " in line and "tornado.access" not in line]
            if errors:
                print(f"  {name} logged {len(errors)} errors; the last: {errors[-1][:300]}")
    return results


MIX_TITLES = {
    MIX: f"meters + heartbeats (one heartbeat per {HEARTBEATS_PER_METERS} meter frames; every hub gets every frame)",
    BEATS: "heartbeats only (QoS 1 outbox messages, spread over the hubs by the shared subscription)",
}
PROCESSES = ("hub A", "hub B", "broker", "PostgreSQL", "bench", "other", "machine")


def limit_text(figures: dict[str, float], mix: str) -> str:
    """What limits a ceiling window: the whole machine when its cores are nearly all busy, else a process at one core."""
    machine = figures.get(f"{mix} machine")
    ranked = sorted(
        ((name, figures[f"{mix} {name}"]) for name in PROCESSES[:-1] if f"{mix} {name}" in figures),
        key=lambda item: -item[1],
    )
    top = ", ".join(f"{name} {value:.0f} %" for name, value in ranked[:3])
    if machine is not None and machine >= 85 * rnd.cores():
        return f"the machine's {rnd.cores()} cores ({machine:.0f} % busy; most: {top})"
    if ranked[0][1] >= 90:
        return f"{ranked[0][0]} at one core ({top}; a hub applies on one event loop)"
    return f"no process at one core (most: {top}): waits (database round trips, locks)"


def report_hubs(args: argparse.Namespace, results: list[rnd.Round], load_at_start: float) -> int:
    """The two-hub mode's report: per mix, each round's ceiling and CPU, then medians, ratios and the limit."""
    print()
    print(
        f"hark fleet bench, two hubs against one: {args.nodes} nodes, one connection each; both hubs on one PostgreSQL "
        "database and one Mosquitto (the bench's own), HARK_MQTT_SHARED=on"
    )
    print("  (the one-hub rounds run hub A alone; for the two-hub rounds hub B is started on the same database, broker")
    print("   and data directory, and stopped after the round)")
    warning = rnd.busy_warning(load_at_start)
    if warning:
        print(warning)
    for mix in (MIX, BEATS):
        print(f"\n{MIX_TITLES[mix]}")
        print(
            f"{'round':>5} {'subject':<7} {'load':>11} {'ceiling':>8} {'applied/sent':>12} {'hub A %':>7} {'hub B %':>7} "
            f"{'broker %':>8} {'PG %':>5} {'bench %':>7} {'other %':>7} {'machine %':>9} {'B share':>7}"
        )
        for r in results:
            f = r.figures
            print(
                f"{r.number + 1:>5} {r.subject:<7} {r.load_before:>5.2f}-{r.load_after:<5.2f} {fmt(f.get(f'{mix} ceiling')):>8} "
                f"{fmt(f.get(f'{mix} applied/sent'), '{:.3f}'):>12} {fmt(f.get(f'{mix} hub A')):>7} "
                f"{fmt(f.get(f'{mix} hub B')):>7} {fmt(f.get(f'{mix} broker')):>8} {fmt(f.get(f'{mix} PostgreSQL')):>5} "
                f"{fmt(f.get(f'{mix} bench')):>7} {fmt(f.get(f'{mix} other')):>7} {fmt(f.get(f'{mix} machine')):>9} "
                f"{fmt(f.get(f'{mix} hub B share'), '{:.0%}'):>7}"
            )
    print(
        "  (ceiling: messages the deployment applied per second: a heartbeat once on the hub that took it, a meter frame "
        "once every hub stored it; applied/sent: over the window and what was still queued, 1.000 = nothing lost or "
        f"doubled; CPU %: of one core over the ceiling window, the machine's of all processes ({rnd.cores()} cores = "
        f"{rnd.cores() * 100} %); PG: the database's backends and PostgreSQL's own processes; bench: the load generators "
        "and the bench; other: the rest of the machine (what else runs on it); B share: of the heartbeats)"
    )
    ratio_count = rnd.ratios(results, TWO_HUBS, ONE_HUB, f"{MIX} ceiling").count
    print(f"\nmedian (low-high) of {ratio_count} rounds, {rnd.load_text(results)}:")
    for mix, label in ((MIX, "meters + heartbeats"), (BEATS, "heartbeats only")):
        one = rnd.summarize(results, ONE_HUB, f"{mix} ceiling")
        two = rnd.summarize(results, TWO_HUBS, f"{mix} ceiling")
        ratio = rnd.ratios(results, TWO_HUBS, ONE_HUB, f"{mix} ceiling")
        print(
            f"  {label:<20} 1 hub {one.text('{:,.0f}', 'msg/s')}, 2 hubs {two.text('{:,.0f}', 'msg/s')}, "
            f"2 hubs / 1 hub {ratio.text('{:.2f}', 'x')}"
        )
    print("  CPU in the ceiling windows (median, % of one core) and what limits the ceiling:")
    for mix, label in ((MIX, "meters + heartbeats"), (BEATS, "heartbeats only")):
        for subject in (ONE_HUB, TWO_HUBS):
            medians = {
                name: rnd.summarize(results, subject, f"{mix} {name}").median
                for name in PROCESSES
                if rnd.summarize(results, subject, f"{mix} {name}").count
            }
            cpu = ", ".join(f"{name} {value:.0f}" for name, value in medians.items())
            print(f"    {label:<20} {subject:<7} {cpu}")
            print(f"    {'':<20} {'':<7} limit: {limit_text({f'{mix} {k}': v for k, v in medians.items()}, mix)}")
    doubled = [r for r in results if r.figures.get(f"{BEATS} applied/sent", 1.0) > 1.05]
    if doubled:
        print(
            "  WARNING: the hubs applied more heartbeats than were sent: each hub got every heartbeat (shared "
            "subscriptions off?), so the two-hub heartbeat ceiling counts them twice"
        )
    errors = sum(r.figures.get("connection_errors", 0) for r in results)
    if errors:
        print(f"  WARNING: {errors:.0f} node connections were closed by the broker during the rounds")
    print("\n(no targets for --hubs 2: the figures say what a second hub gains on this machine)")
    return 0


def run(args: argparse.Namespace) -> int:
    load_at_start = rnd.load_average()
    temp = Path(tempfile.mkdtemp(prefix="hark-fleet-"))
    bench = Bench(args, temp)
    interrupted = False

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    results: list[rnd.Round] = []
    try:
        if args.hubs == 2:
            results = run_hubs(bench)
            bench.stop_all()
            shutil.rmtree(temp, ignore_errors=True)
            return report_hubs(args, results, load_at_start)
        print(f"starting the hub ({args.broker} broker) ...", flush=True)
        bench.start_bare_broker()
        bench.start_hub()
        bench.enroll(args.nodes)
        bench.start_generators()
        sample = [n for n, _ in bench.nodes[:: max(1, len(bench.nodes) // SAMPLE_NODES)]][:SAMPLE_NODES]
        state = StateProbe(bench.hub_port, bench.token, sample, args.probe_rate)
        sse = SseProbe(bench.hub_port, bench.token, sample)
        state.start()
        sse.start()
        for number, subject in rnd.alternate([BARE, HUB], args.rounds):
            print(f"  round {number + 1}: {subject} (load {rnd.load_average():.2f}) ...", flush=True)
            results.append(bench.measure(subject, number, (state, sse)))
            if bench.hub is not None and bench.hub.poll() is not None:
                raise RuntimeError(f"the hub exited: {bench.tail()}")
        state.stopping.set()
        sse.stopping.set()
        if any(r.subject == HUB and r.figures.get("applied", 0.0) < 0.5 * r.figures.get("offered", 0.0) for r in results):
            print(f"  a hub round applied less than half of what was offered; the hub's log ends with:\n{bench.tail()}")
        if sse.reconnects:
            print(f"  (the SSE probe connected again {sse.reconnects} times: the hub drops it when a ceiling window floods it)")
        if sse.error and not sse.delays:
            print(f"  (SSE probe: {sse.error})")
    except KeyboardInterrupt:
        interrupted = True
    except Exception as err:  # noqa: BLE001 - any failure: report it, stop every process, exit 1
        print(f"error: {err}", file=sys.stderr)
        bench.stop_all()
        shutil.rmtree(temp, ignore_errors=True)
        return 1
    bench.stop_all()
    shutil.rmtree(temp, ignore_errors=True)
    if interrupted:
        print("interrupted", file=sys.stderr)
        return 1
    return report(args, results, load_at_start)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--broker", choices=("system", "embedded"), default="system")
    parser.add_argument("--embedded", choices=("auto", "mosquitto", "in-process"), default="auto")
    parser.add_argument("--system-url", default="mqtt://127.0.0.1:1883")
    parser.add_argument(
        "--hubs",
        type=int,
        choices=(1, 2),
        default=1,
        help="2: the ceilings of two hubs against one on PostgreSQL and a shared Mosquitto (no bare subscriber)",
    )
    parser.add_argument("--nodes", type=int, help=f"default {TARGET_NODES}, {TWO_HUB_NODES} with --hubs 2")
    parser.add_argument("--rounds", type=int, default=rnd.MIN_ROUNDS)
    parser.add_argument("--duration", type=float, default=15.0)
    parser.add_argument("--ceiling-duration", type=float, default=5.0)
    parser.add_argument("--ceiling-backlog", type=int, default=20000)
    parser.add_argument("--generators", type=int, default=2)
    parser.add_argument("--probe-rate", type=float, default=10.0)
    parser.add_argument("--py-spy", metavar="PREFIX", help="profile the hub's load windows with py-spy into PREFIX.roundN.txt")
    parser.add_argument("--py-spy-bin", default=str(Path(sys.executable).parent / "py-spy"))
    args = parser.parse_args(argv)
    if args.rounds < rnd.MIN_ROUNDS:
        parser.error(f"--rounds: at least {rnd.MIN_ROUNDS}")
    if args.nodes is None:
        args.nodes = TWO_HUB_NODES if args.hubs == 2 else TARGET_NODES
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
