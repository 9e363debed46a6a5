"""Fleet ingest of the hark hub over MQTT: N simulated nodes, their meters and heartbeats.

What is measured
----------------
1. For each N of ``--nodes`` (default 100, 500, 1000): N enrolled nodes each send a meter
   frame at 10 Hz (QoS 0, ``hark/v1/nodes/{id}/meters``) and a heartbeat every 10 s (QoS 1,
   ``.../heartbeat``, each with a unique ``msg_id``), offsets spread evenly over both periods:
   the target is N x 10.1 messages/s. After a 3 s warm-up, over ``--duration`` seconds:

   * ingested msg/s: the delta of ``hark_mqtt_messages_received_total`` (meters + heartbeat)
     scraped from the hub's ``GET /metrics`` at the start and the end of the window, and the
     delta of ``hark_mqtt_messages_dropped_total`` per reason;
   * the generator's send rate, and the backlog: messages sent minus messages the hub counted,
     sampled once a second; its growth (least-squares slope, msg/s) says whether the hub falls
     behind. After the window the generator stops and the hub gets up to 15 s to catch up;
     what it still has not counted then is reported as lost (dropped by the broker, or never
     read);
   * delay from publish to the hub's state: every meter frame carries its publish time (epoch
     microseconds, as an ISO 8601 ``ts``) and a per-tick ``seq``. A thread polls
     ``GET /api/v1/nodes/{id}/meters`` for 20 sample nodes round-robin (``--probe-rate``
     requests/s in total, on one keep-alive connection) and, for every frame it has not seen
     before, takes ``received_at`` (stamped by the hub when its event loop handled the frame)
     minus the publish time. Both clocks are this machine's, so no clock offset is involved; the
     polling rate only sets the number of samples, not the delay. The same thread records how
     long the hub took to answer those GETs (an event-loop responsiveness figure). Each GET
     costs the hub a node lookup on its database thread, a few percent of a core at 40/s. The
     delay includes the broker's delivery: with Mosquitto's default ``set_tcp_nodelay false``
     its small sends to the hub can wait for the hub's delayed ACK (up to 40 ms on Linux);
     ``--tcp-nodelay`` turns that off to see the hub's own share;
   * CPU (utime + stime from ``/proc``) over the window, as % of one core (can exceed 100 % for
     a process with several threads) and as % of the machine: the hub process and, within it,
     its main thread (the asyncio loop) and its other threads (paho's network thread, the
     SQLite worker, executors; "busiest" is the largest single one), the load generator
     processes and the broker; "machine busy" is all CPUs from ``/proc/stat`` and "others" what
     processes outside this benchmark used (on a shared machine, a sign the figures are noisy).

2. Ingest ceilings, the same message mix (1 heartbeat per 100 meter frames) sent by one
   generator process as fast as the consumer takes it, for ``--ceiling-duration`` seconds after
   a 1 s warm-up:

   * a bare subscriber: a child process with one paho client (``loop_forever``) subscribed to
     ``hark/v1/nodes/+/#`` at QoS 1 like the hub, doing ``json.loads`` on each payload and
     counting; measured before the hub is started, so it is alone on the broker;
   * the hub: the same load on the enrolled nodes, messages/s from its received counter
     (scraped at the start and end of the window; the window runs between the middles of
     the two scrapes);
   * the hub again with meter frames only, to show what the heartbeats' database work costs.

   It prints the ratio hub ceiling / bare ceiling (both with heartbeats). The generator keeps
   at most ``--ceiling-backlog`` K messages (default 20000) ahead of what the consumer has
   counted (credit refreshed every 100 ms): the consumer always has a queue of thousands of
   messages waiting, so it runs at its own ceiling, while the broker drops nothing and needs
   little CPU. ``--ceiling-backlog 0`` sends purely flat out instead: the broker then takes in
   several times what the consumer can handle and drops the rest (beyond
   ``max_queued_messages``; the consumer still gets 1 % heartbeats), which costs it most of a
   core. On a two-core machine that leaves the consumer short of CPU whenever anything else
   runs, and the ratio swings widely from run to run (0.47-0.80 observed, against 0.47-0.50
   with the default). The table shows everyone's CPU share, so a starved consumer is visible.

3. Machine context and the targets: at N=1000 (~10k msg/s) no growing backlog, p99 delay
   under 250 ms, and an ingest ceiling of at least 70 % of the bare subscriber's.

How
---
Mosquitto (``tests.harness.Mosquitto``) on a free loopback port, anonymous, no persistence,
``max_queued_messages 100000`` and ``max_inflight_messages 65535`` (for QoS 0 Mosquitto then
drops only beyond 100000 queued packets per client; 0 would mean an unbounded queue),
``sys_interval 1`` so that its ``$SYS/broker/publish/messages/dropped`` is read once a second.
The hub is a real ``python -m hark_fleet.hub run`` with ``HARK_MQTT_URL`` pointing at it, SQLite in a
temporary data directory, ``HARK_LOG_LEVEL=WARNING``. ``max(--nodes)`` nodes are enrolled with
``POST /api/v1/nodes/enroll`` from a pool of threads.

The load generator is ``--generators`` separate processes (default 1), each with one raw MQTT
3.1.1 connection (a plain socket, clean session, keep-alive off) publishing on behalf of its
share of the nodes, which the anonymous broker allows. Packets are pre-encoded: per node only
its topic bytes are kept; per 5 ms tick one payload is built from a template (publish time and
seq patched in) and the tick's packets are one ``bytes.join`` and one ``sendall``, so a message
costs well under a microsecond of generator CPU. Heartbeats are patched the same way (msg_id,
ts, seq) and sent at QoS 1; the broker's PUBACKs are counted by a reader thread. Every node
has a meter slot (node index mod 20) in the 100 ms period and a heartbeat phase in the 10 s
one. The generator keeps an absolute schedule; if it falls behind it sends what is due at
once, and it reports how far behind it ever was.

Run it from the repository root::

    .venv/bin/python bench/fleet.py [--nodes 100,500,1000] [--duration 20] [--ceiling-duration 5]
                                    [--ceiling-backlog 20000] [--generators 1] [--probe-rate 40]
                                    [--tcp-nodelay]

It exits 0 when every target measured is met, 2 when one is missed, 1 on an error.

The hub, the broker and every child process are stopped at the end, also on Ctrl-C, SIGTERM
or an error, and the temporary directory is removed.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import multiprocessing
import os
import platform
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import msgspec

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
for _path in (str(REPO_ROOT), str(BENCH_DIR)):
    if _path not in sys.path:
        sys.path.insert(0, _path)

import hub_http  # noqa: E402
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
from hub_http import (  # noqa: E402
    HOST,
    READY_TIMEOUT_S,
    STOP_TIMEOUT_S,
    free_port,
    http_request,
    log_tail,
    start_process,
    stop_process,
    wait_for_200,
)

METER_HZ = 10.0
HEARTBEAT_INTERVAL_S = 10.0
TICK_S = 0.005  # the generator's schedule granularity: 20 meter slots per 100 ms
WARMUP_S = 3.0
CEILING_WARMUP_S = 1.0
HEARTBEATS_PER_METERS = 100  # ceilings: one heartbeat per this many meter frames (the fleet's mix)
SAMPLE_NODES = 20
BACKLOG_SAMPLE_S = 1.0
SETTLE_TIMEOUT_S = 15.0
ENROLL_THREADS = 8
MAX_INFLIGHT = 65535
MAX_QUEUED = 100000
TARGET_P99_MS = 250.0
TARGET_CEILING_RATIO = 0.70
NOISY_OTHERS_PCT = 10.0  # other processes using more than this % of the machine make a window's figures suspect
TARGET_NODES = 1000
BARE_LABEL = "bare paho + json.loads"
HUB_LABEL = "hark hub"
HUB_METERS_LABEL = "hark hub, meters only"
CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

# Counters a generator process shares with the parent (RawArray of int64; aligned reads are atomic).
# C_CREDIT is written by the parent: with --ceiling-backlog, flat out stops sending at that total.
C_METERS, C_HEARTBEATS, C_PUBACK_BYTES, C_ERRORS, C_CREDIT = range(5)
NO_CREDIT_LIMIT = -1
CREDIT_INTERVAL_S = 0.1


# -- raw MQTT 3.1.1 ------------------------------------------------------------------


def _varint(value: int) -> bytes:
    """MQTT remaining-length encoding."""
    out = bytearray()
    while True:
        byte, value = value % 128, value // 128
        out.append(byte | 0x80 if value else byte)
        if not value:
            return bytes(out)


def _mqtt_str(data: bytes) -> bytes:
    return len(data).to_bytes(2, "big") + data


def _connect_packet(client_id: str) -> bytes:
    # Protocol name, level 4 (3.1.1), flags: clean session; keep-alive 0 (off).
    body = _mqtt_str(b"MQTT") + b"\x04\x02\x00\x00" + _mqtt_str(client_id.encode())
    return b"\x10" + _varint(len(body)) + body


def mqtt_connect(host: str, port: int, client_id: str) -> socket.socket:
    """A connected, accepted raw MQTT session (CONNECT sent, CONNACK checked)."""
    sock = socket.create_connection((host, port), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.sendall(_connect_packet(client_id))
    connack = b""
    while len(connack) < 4:
        chunk = sock.recv(4 - len(connack))
        if not chunk:
            raise ConnectionError("the broker closed the connection before CONNACK")
        connack += chunk
    if connack[0] != 0x20 or connack[3] != 0:
        raise ConnectionError(f"the broker refused the connection: {connack.hex()}")
    sock.settimeout(None)
    return sock


def _split_template(raw: bytes, markers: list[bytes]) -> list[bytes]:
    """Cut an encoded template at each marker (in order): len(markers) + 1 parts."""
    parts = []
    for marker in markers:
        before, sep, raw = raw.partition(marker)
        if not sep:
            raise ValueError(f"marker {marker!r} not in the template")
        parts.append(before)
    return [*parts, raw]


def meter_template() -> list[bytes]:
    """A meter frame as a node sends it (two channels, L and R), cut at ts and seq."""
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
    """ISO 8601 UTC with microseconds and a Z: a meter frame's `ts`, which carries the publish time."""
    return datetime.fromtimestamp(at, UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def parse_iso(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


# -- load generator (runs in its own process) ---------------------------------------------


class Generator:
    """One raw MQTT connection publishing meters and heartbeats for a share of the nodes."""

    def __init__(self, sock: socket.socket, counters: Any, label: str) -> None:
        self.sock = sock
        self.counters = counters
        self.label = label
        self.meter = meter_template()
        self.beat = heartbeat_template()
        self.packet_id = 0
        self.beats_made = 0
        self.reader = threading.Thread(target=self._read_acks, name="pubacks", daemon=True)
        self.reader.start()

    def _read_acks(self) -> None:
        """Count what the broker sends back: nothing but 4-byte PUBACKs after the CONNACK."""
        counters = self.counters
        try:
            while True:
                data = self.sock.recv(65536)
                if not data:
                    break
                counters[C_PUBACK_BYTES] += len(data)
        except OSError:
            pass
        counters[C_ERRORS] += 1

    @staticmethod
    def topic_field(node_id: str, kind: str) -> bytes:
        return _mqtt_str(f"{TOPIC_ROOT}/{node_id}/{kind}".encode())

    def meter_packets(self, topic_fields: list[bytes], now: float, seq: int) -> bytes:
        """QoS 0 PUBLISH packets, one per topic, with one payload (publish time `now`, `seq`)."""
        if not topic_fields:
            return b""
        m = self.meter
        payload = b"".join((m[0], b'"', iso_us(now).encode(), b'"', m[1], str(seq).encode(), m[2]))
        # All node topics have the same length (node ids are fixed-length), so one header fits all;
        # group by length anyway in case they do not.
        if len({len(t) for t in topic_fields}) == 1:
            header = b"\x30" + _varint(len(topic_fields[0]) + len(payload))
            return header + (payload + header).join(topic_fields) + payload
        return b"".join(b"\x30" + _varint(len(t) + len(payload)) + t + payload for t in topic_fields)

    def heartbeat_packet(self, topic_field: bytes, now: float, seq: int) -> bytes:
        """One QoS 1 PUBLISH with a unique msg_id."""
        self.beats_made += 1
        self.packet_id = self.packet_id % 65535 + 1
        b = self.beat
        msg_id = f"{self.label}-{self.beats_made}".encode()
        payload = b"".join((b[0], b'"', msg_id, b'"', b[1], b'"', iso_us(now).encode(), b'"', b[2], str(seq).encode(), b[3]))
        variable = topic_field + self.packet_id.to_bytes(2, "big")
        return b"\x32" + _varint(len(variable) + len(payload)) + variable + payload

    def load(self, conn: Connection, nodes: list[tuple[int, str]], total_nodes: int) -> dict[str, Any]:
        """Meters at METER_HZ and heartbeats every HEARTBEAT_INTERVAL_S per node, until "stop" arrives."""
        slots = round(1 / METER_HZ / TICK_S)
        beat_ticks = round(HEARTBEAT_INTERVAL_S / TICK_S)
        meter_slots: list[list[bytes]] = [[] for _ in range(slots)]
        beat_phases: dict[int, list[bytes]] = {}
        for index, node_id in nodes:
            meter_slots[index % slots].append(self.topic_field(node_id, "meters"))
            phase = index * beat_ticks // max(1, total_nodes)
            beat_phases.setdefault(phase, []).append(self.topic_field(node_id, "heartbeat"))
        counters = self.counters
        sock = self.sock
        start = time.monotonic()
        tick = 0
        max_lag = 0.0
        late_ticks = 0
        while True:
            due = start + tick * TICK_S
            now_mono = time.monotonic()
            if due > now_mono:
                time.sleep(due - now_mono)
            else:
                lag = now_mono - due
                if lag > TICK_S:
                    late_ticks += 1
                max_lag = max(max_lag, lag)
            if tick % 20 == 0 and conn.poll():
                break  # "stop"
            now = time.time()
            meters = meter_slots[tick % slots]
            beats = beat_phases.get(tick % beat_ticks, ())
            blob = self.meter_packets(meters, now, tick)
            if beats:
                blob += b"".join(self.heartbeat_packet(t, now, tick) for t in beats)
            if blob:
                sock.sendall(blob)
            counters[C_METERS] += len(meters)
            counters[C_HEARTBEATS] += len(beats)
            tick += 1
        conn.recv()
        return {"ticks": tick, "late_ticks": late_ticks, "max_lag_s": max_lag, "elapsed_s": time.monotonic() - start}

    def flat_out(self, conn: Connection, node_ids: list[str], seconds: float, heartbeats: bool) -> dict[str, Any]:
        """The fleet's message mix (or meters only) as fast as the broker takes it, for `seconds` or until "stop"."""
        meters = [self.topic_field(n, "meters") for n in node_ids]
        beats = [self.topic_field(n, "heartbeat") for n in node_ids]
        batch = HEARTBEATS_PER_METERS * 5
        beats_per_batch = batch // HEARTBEATS_PER_METERS if heartbeats else 0
        cycle = meters * (batch // len(meters) + 2)  # any slice of `batch` from a cursor < len(meters) fits
        counters = self.counters
        sock = self.sock
        cursor = 0
        beat_cursor = 0
        seq = 0
        start = time.monotonic()
        deadline = start + seconds
        while time.monotonic() < deadline:
            if seq % 50 == 0 and conn.poll():
                conn.recv()
                break
            credit = counters[C_CREDIT]
            if credit != NO_CREDIT_LIMIT and counters[C_METERS] + counters[C_HEARTBEATS] >= credit:
                time.sleep(0.0005)  # as far ahead of the consumer as allowed
                seq += 1  # keeps the stop check above going
                continue
            now = time.time()
            seq += 1
            chunk = cycle[cursor : cursor + batch]
            cursor = (cursor + batch) % len(meters)
            parts = [self.meter_packets(chunk, now, seq)]
            for _ in range(beats_per_batch):
                parts.append(self.heartbeat_packet(beats[beat_cursor], now, seq))
                beat_cursor = (beat_cursor + 1) % len(beats)
            sock.sendall(b"".join(parts))
            counters[C_METERS] += batch
            counters[C_HEARTBEATS] += beats_per_batch
        return {"elapsed_s": time.monotonic() - start}


def generator_main(conn: Connection, host: str, port: int, label: str, counters: Any) -> None:
    """Entry point of a generator process: connect, then obey commands from the parent."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # on Ctrl-C the parent stops this process
    try:
        sock = mqtt_connect(host, port, f"hark-bench-{label}-{os.getpid()}")
    except OSError as err:
        conn.send({"error": f"{type(err).__name__}: {err}"})
        return
    generator = Generator(sock, counters, label)
    conn.send({"ready": True})
    try:
        while True:
            command = conn.recv()
            if command[0] == "quit":
                break
            if command[0] == "load":
                conn.send(generator.load(conn, command[1], command[2]))
            elif command[0] == "flat":
                conn.send(generator.flat_out(conn, command[1], command[2], command[3]))
    except (EOFError, OSError) as err:
        with contextlib.suppress(OSError):
            conn.send({"error": f"{type(err).__name__}: {err}"})
    finally:
        with contextlib.suppress(OSError):
            sock.sendall(b"\xe0\x00")  # DISCONNECT
        sock.close()


# -- bare subscriber (runs in its own process) ------------------------------------------


def bare_subscriber_main(host: str, port: int, counters: Any) -> None:
    """A paho client subscribed like the hub, doing json.loads on every message; counters[0] counts them."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    loads = json.loads

    def on_connect(client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        client.subscribe(HUB_SUBSCRIPTION, qos=1)

    def on_subscribe(client: mqtt.Client, userdata: Any, mid: int, reasons: Any, properties: Any) -> None:
        counters[1] = 1  # subscribed

    def on_message(client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        loads(message.payload)
        counters[0] += 1

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"hark-bench-bare-{os.getpid()}", protocol=mqtt.MQTTv311)
    client.max_queued_messages_set(0)
    client.max_inflight_messages_set(100)
    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    client.connect(host, port, keepalive=30)
    client.loop_forever()


# -- CPU accounting -----------------------------------------------------------------------


def _stat_cpu_s(path: str) -> float | None:
    try:
        with open(path, encoding="ascii") as stat:
            fields = stat.read().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK
    except (OSError, ValueError, IndexError):
        return None


def thread_cpu_s(pid: int) -> dict[int, float]:
    """CPU seconds per thread of a process (tid -> seconds); empty where /proc is missing."""
    out: dict[int, float] = {}
    with contextlib.suppress(OSError):
        for tid in os.listdir(f"/proc/{pid}/task"):
            value = _stat_cpu_s(f"/proc/{pid}/task/{tid}/stat")
            if value is not None:
                out[int(tid)] = value
    return out


def machine_busy_s() -> tuple[float, float] | None:
    """(busy, total) CPU seconds of the whole machine since boot, from /proc/stat."""
    try:
        with open("/proc/stat", encoding="ascii") as stat:
            values = [int(v) for v in stat.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    total = sum(values[:8])
    return (total - idle) / CLK_TCK, total / CLK_TCK


@dataclass
class CpuSnapshot:
    """CPU seconds of the processes taking part, at one moment."""

    at: float
    hub: float | None = None
    hub_threads: dict[int, float] = field(default_factory=dict)
    generators: float = 0.0
    broker: float | None = None
    consumer: float | None = None
    bench: float | None = None
    machine: tuple[float, float] | None = None


@dataclass
class CpuUse:
    """CPU over a window, in % of one core (machine: % of all cores)."""

    hub: float | None = None
    hub_loop: float | None = None
    hub_other: float | None = None
    hub_busiest_other: float | None = None
    generators: float | None = None
    broker: float | None = None
    consumer: float | None = None
    bench: float | None = None
    machine: float | None = None  # % of all cores busy, whoever used them
    others: float | None = None  # % of all cores used by processes outside this benchmark

    def of_machine(self, value: float | None) -> float | None:
        return None if value is None else value / (os.cpu_count() or 1)


def cpu_use(before: CpuSnapshot, after: CpuSnapshot, hub_pid: int | None) -> CpuUse:
    wall = after.at - before.at

    def pct(a: float | None, b: float | None) -> float | None:
        return None if a is None or b is None or wall <= 0 else 100 * (b - a) / wall

    use = CpuUse(
        hub=pct(before.hub, after.hub),
        generators=pct(before.generators, after.generators),
        broker=pct(before.broker, after.broker),
        consumer=pct(before.consumer, after.consumer),
        bench=pct(before.bench, after.bench),
    )
    if hub_pid is not None and after.hub_threads:
        deltas = {tid: after.hub_threads[tid] - before.hub_threads.get(tid, 0.0) for tid in after.hub_threads}
        loop = deltas.pop(hub_pid, 0.0)
        use.hub_loop = 100 * loop / wall
        use.hub_other = 100 * sum(deltas.values()) / wall
        use.hub_busiest_other = 100 * max(deltas.values(), default=0.0) / wall
    if before.machine and after.machine and after.machine[1] > before.machine[1]:
        use.machine = 100 * (after.machine[0] - before.machine[0]) / (after.machine[1] - before.machine[1])
        ours = sum(v for v in (use.hub, use.generators, use.broker, use.consumer, use.bench) if v is not None)
        use.others = max(0.0, use.machine - ours / (os.cpu_count() or 1))
    return use


# -- the hub over HTTP ----------------------------------------------------------------------

_SAMPLE_RE = re.compile(r'^(hark_mqtt_messages_(?:received|dropped)_total)\{(\w+)="([^"]*)"\}\s+(\S+)$', re.M)


@dataclass
class HubCounters:
    received: dict[str, float]
    dropped: dict[str, float]

    @property
    def ingested(self) -> float:
        return self.received.get("meters", 0.0) + self.received.get("heartbeat", 0.0)


class HubClient:
    """Keep-alive HTTP to the hub for metrics scrapes (one per thread that uses it)."""

    def __init__(self, port: int, token: str) -> None:
        self.port = port
        self.token = token
        self._local = threading.local()

    def get(self, path: str, timeout: float = 10.0) -> tuple[int, bytes]:
        conn: http.client.HTTPConnection | None = getattr(self._local, "conn", None)
        for attempt in range(2):
            if conn is None:
                conn = self._local.conn = http.client.HTTPConnection(HOST, self.port, timeout=timeout)
            try:
                conn.request("GET", path, headers={"Authorization": f"Bearer {self.token}", "Accept": "*/*"})
                response = conn.getresponse()
                return response.status, response.read()
            except (OSError, http.client.HTTPException):
                conn.close()
                conn = self._local.conn = None
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def counters(self) -> HubCounters:
        status, body = self.get("/metrics")
        if status != 200:
            raise RuntimeError(f"GET /metrics answered HTTP {status}")
        received: dict[str, float] = {}
        dropped: dict[str, float] = {}
        for name, _label, value, number in _SAMPLE_RE.findall(body.decode()):
            (received if name.endswith("received_total") else dropped)[value] = float(number)
        return HubCounters(received, dropped)


class DelaySampler(threading.Thread):
    """Polls the latest meter frame of sample nodes; each new frame gives one publish-to-state delay."""

    def __init__(self, client: HubClient, node_ids: list[str], rate: float) -> None:
        super().__init__(name="delay-sampler", daemon=True)
        self.client = client
        self.node_ids = node_ids
        self.interval = 1.0 / rate if rate > 0 else 0.0
        self.stop_event = threading.Event()
        self.samples: list[tuple[float, float]] = []  # (publish time, delay s)
        self.api: list[tuple[float, float]] = []  # (request start, seconds to answer)
        self.errors = 0
        self._seen: dict[str, int] = {}

    def run(self) -> None:
        index = 0
        next_at = time.monotonic()
        while not self.stop_event.is_set():
            node_id = self.node_ids[index % len(self.node_ids)]
            index += 1
            started_wall, started = time.time(), time.perf_counter()
            try:
                status, body = self.client.get(f"/api/v1/nodes/{node_id}/meters", timeout=30)
            except (OSError, http.client.HTTPException):
                self.errors += 1
                status, body = 0, b""
            self.api.append((started_wall, time.perf_counter() - started))
            if status == 200:
                data = json.loads(body)["data"]
                if self._seen.get(node_id) != data["seq"]:
                    self._seen[node_id] = data["seq"]
                    published = parse_iso(data["ts"])
                    self.samples.append((published, data["received_at"] - published))
            elif status != 404:  # 404: no frame from this node yet
                self.errors += 1
            next_at += self.interval
            delay = next_at - time.monotonic()
            if delay > 0:
                self.stop_event.wait(delay)
            else:
                next_at = time.monotonic()

    def stop(self) -> None:
        self.stop_event.set()
        self.join(35)


def enroll_nodes(port: int, token: str, count: int) -> list[str]:
    """Enroll `count` nodes through the API with a pool of threads, showing progress; their ids in order."""
    ids: list[str | None] = [None] * count
    started = time.monotonic()

    def enroll(i: int) -> tuple[int, str]:
        status, payload = http_request(
            port, "/api/v1/nodes/enroll", body={"name": f"bench-node-{i:05d}", "site": None}, token=token, timeout=30
        )
        if status != 201:
            raise RuntimeError(f"enroll answered HTTP {status}: {payload}")
        return i, payload["data"]["node"]["id"]

    done = 0
    tty = sys.stdout.isatty()
    step = max(1, count // (20 if tty else 4))
    with ThreadPoolExecutor(ENROLL_THREADS) as pool:
        futures = [pool.submit(enroll, i) for i in range(count)]
        try:
            for future in as_completed(futures):
                i, node_id = future.result()
                ids[i] = node_id
                done += 1
                if done % step == 0 or done == count:
                    rate = done / max(1e-9, time.monotonic() - started)
                    line = f"  enrolled {done}/{count} nodes ({rate:.0f}/s)"
                    print("\r" + line if tty else line, end="" if tty else "\n", flush=True)
        except BaseException:
            for future in futures:
                future.cancel()
            raise
    if tty:
        print()
    return [node_id for node_id in ids if node_id is not None]


# -- results ---------------------------------------------------------------------------------


@dataclass
class PhaseResult:
    """One N: what the window measured."""

    nodes: int
    window_s: float
    sent_meters: int
    sent_heartbeats: int
    ingested: float
    ingested_by_kind: dict[str, float]
    dropped: dict[str, float]
    backlog: list[tuple[float, float]]  # (seconds into the window, messages)
    backlog_slope: float
    lost: int
    settle_s: float
    delays_ms: list[float]
    api_ms: list[float]
    sampler_errors: int
    cpu: CpuUse
    generator_max_lag_s: float
    generator_late_ticks: int
    broker_dropped: float | None
    pubacks_missing: int

    @property
    def target_rate(self) -> float:
        return self.nodes * (METER_HZ + 1 / HEARTBEAT_INTERVAL_S)

    @property
    def sent_rate(self) -> float:
        return (self.sent_meters + self.sent_heartbeats) / self.window_s

    @property
    def ingest_rate(self) -> float:
        return self.ingested / self.window_s

    @property
    def growing(self) -> bool:
        """The backlog grows if it rose by more than 1 % of the target rate per second, or messages were lost."""
        return self.backlog_slope > 0.01 * self.target_rate or self.lost > 0


@dataclass
class CeilingResult:
    label: str
    rate: float
    messages: float
    window_s: float
    sent_rate: float
    cpu: CpuUse
    broker_dropped: float | None


def _percentile(values: list[float], fraction: float) -> float:
    return hub_http._percentile(sorted(values), fraction)


def _slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of y over x (0 with fewer than 2 points)."""
    if len(points) < 2:
        return 0.0
    n = len(points)
    mean_x = sum(x for x, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    var = sum((x - mean_x) ** 2 for x, _ in points)
    return sum((x - mean_x) * (y - mean_y) for x, y in points) / var if var else 0.0


# -- the run -----------------------------------------------------------------------------------


class BrokerMonitor:
    """Reads Mosquitto's $SYS/broker/publish/messages/dropped (published once a second)."""

    def __init__(self, host: str, port: int) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.dropped: float | None = None
        self._client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"hark-bench-sys-{os.getpid()}")
        self._client.on_connect = lambda c, *_: c.subscribe("$SYS/broker/publish/messages/dropped")
        self._client.on_message = self._on_message
        self._client.connect(host, port, keepalive=30)
        self._client.loop_start()

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        with contextlib.suppress(ValueError):
            self.dropped = float(message.payload)

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


class Fleet:
    """The processes of one run and the measurements on them."""

    def __init__(self, args: argparse.Namespace, temp_dir: Path) -> None:
        self.args = args
        self.temp_dir = temp_dir
        self.context = multiprocessing.get_context("spawn")
        self.broker: Any = None
        self.broker_monitor: BrokerMonitor | None = None
        self.hub: subprocess.Popen[bytes] | None = None
        self.hub_log = temp_dir / "hub.log"
        self.hub_port = 0
        self.client: HubClient | None = None
        self.generators: list[tuple[multiprocessing.process.BaseProcess, Connection, Any]] = []
        self.children: list[multiprocessing.process.BaseProcess] = []

    # -- processes ---------------------------------------------------------------------

    def start_broker(self) -> None:
        from tests.harness import Mosquitto

        self.broker = Mosquitto(
            self.temp_dir / "mosquitto",
            extra_config=f"max_queued_messages {MAX_QUEUED}\nmax_inflight_messages {MAX_INFLIGHT}\nsys_interval 1\n"
            + ("set_tcp_nodelay true\n" if self.args.tcp_nodelay else ""),
        )
        self.broker.start()
        self.broker_monitor = BrokerMonitor(self.broker.host, self.broker.port)

    def start_hub(self) -> None:
        self.hub_port = free_port()
        password = secrets.token_urlsafe(24)
        env = {k: v for k, v in os.environ.items() if not k.startswith("HARK_")}
        env.update(
            HARK_DATA_DIR=str(self.temp_dir / "hub"),
            HARK_HTTP_HOST=HOST,
            HARK_HTTP_PORT=str(self.hub_port),
            HARK_MQTT_URL=self.broker.url,
            HARK_ADMIN_PASSWORD=password,
            HARK_LOG_LEVEL="WARNING",
        )
        self.hub = start_process([sys.executable, "-m", "hark_fleet.hub", "run"], env, self.hub_log)
        try:
            wait_for_200(self.hub_port, "/readyz", self.hub, READY_TIMEOUT_S)
        except RuntimeError as err:
            raise RuntimeError(f"hub: {err}\n{log_tail(self.hub_log)}") from err
        status, payload = http_request(self.hub_port, "/api/v1/auth/login", body={"username": "admin", "password": password})
        if status != 200:
            raise RuntimeError(f"hub: login failed with HTTP {status}: {payload}")
        self.client = HubClient(self.hub_port, payload["data"]["token"])

    def start_generators(self, count: int) -> None:
        token = secrets.token_hex(3)
        for g in range(count):
            receiver, sender = self.context.Pipe()
            counters = self.context.RawArray("q", 5)
            process = self.context.Process(
                target=generator_main,
                args=(sender, self.broker.host, self.broker.port, f"g{g}-{token}", counters),
                name=f"fleet-generator-{g}",
            )
            process.start()
            sender.close()
            self.children.append(process)
            if not receiver.poll(30):
                raise RuntimeError(f"generator {g} did not start")
            hello = receiver.recv()
            if "error" in hello:
                raise RuntimeError(f"generator {g}: {hello['error']}")
            self.generators.append((process, receiver, counters))

    def check_alive(self) -> None:
        if self.hub is not None and self.hub.poll() is not None:
            raise RuntimeError(f"the hub exited with code {self.hub.returncode}\n{log_tail(self.hub_log)}")
        if self.broker is not None and self.broker.proc is not None and self.broker.proc.poll() is not None:
            raise RuntimeError(f"the broker exited with code {self.broker.proc.returncode}")
        for process, _, counters in self.generators:
            if not process.is_alive() or counters[C_ERRORS]:
                raise RuntimeError(f"{process.name} lost its broker connection or exited")

    def stop_all(self) -> None:
        for process, conn, _ in self.generators:
            with contextlib.suppress(OSError, ValueError):
                if process.is_alive():
                    conn.send(("stop",))  # ends a load or flat run
                    conn.send(("quit",))
        for process in self.children:
            process.join(3)
            if process.is_alive():
                process.terminate()
                process.join(3)
            if process.is_alive():
                process.kill()
                process.join()
        if self.hub is not None:
            stop_process(self.hub, STOP_TIMEOUT_S)
        if self.broker_monitor is not None:
            with contextlib.suppress(Exception):  # noqa: BLE001 - best effort on the way out
                self.broker_monitor.close()
        if self.broker is not None:
            self.broker.stop()

    # -- measurement helpers -----------------------------------------------------------

    def generator_totals(self) -> tuple[int, int, int]:
        """(meters, heartbeats, PUBACKs) sent/received by all generators so far."""
        meters = sum(c[C_METERS] for _, _, c in self.generators)
        beats = sum(c[C_HEARTBEATS] for _, _, c in self.generators)
        pubacks = sum(c[C_PUBACK_BYTES] for _, _, c in self.generators) // 4
        return meters, beats, pubacks

    def snapshot(self, consumer_pid: int | None = None) -> CpuSnapshot:
        gen = 0.0
        for process, _, _ in self.generators:
            gen += _stat_cpu_s(f"/proc/{process.pid}/stat") or 0.0
        hub_pid = self.hub.pid if self.hub is not None else None
        return CpuSnapshot(
            at=time.monotonic(),
            hub=_stat_cpu_s(f"/proc/{hub_pid}/stat") if hub_pid else None,
            hub_threads=thread_cpu_s(hub_pid) if hub_pid else {},
            generators=gen,
            broker=_stat_cpu_s(f"/proc/{self.broker.proc.pid}/stat"),
            consumer=_stat_cpu_s(f"/proc/{consumer_pid}/stat") if consumer_pid else None,
            bench=_stat_cpu_s(f"/proc/{os.getpid()}/stat"),
            machine=machine_busy_s(),
        )

    def broker_dropped(self) -> float | None:
        return self.broker_monitor.dropped if self.broker_monitor else None

    def _sleep_checking(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            time.sleep(min(left, 0.25))
            self.check_alive()

    # -- one N -----------------------------------------------------------------------------

    def run_phase(self, node_ids: list[str], duration_s: float) -> PhaseResult:
        assert self.client is not None and self.hub is not None
        n = len(node_ids)
        client = self.client
        base_counts = client.counters()
        base_sent = self.generator_totals()
        shares: list[list[tuple[int, str]]] = [[] for _ in self.generators]
        for i, node_id in enumerate(node_ids):
            shares[i % len(shares)].append((i, node_id))
        for (_, conn, _), share in zip(self.generators, shares, strict=True):
            conn.send(("load", share, n))
        step = max(1, n // SAMPLE_NODES)
        sampler = DelaySampler(client, node_ids[::step][:SAMPLE_NODES], self.args.probe_rate)
        sampler.start()
        generator_results: list[dict[str, Any]] = []
        try:
            self._sleep_checking(WARMUP_S)

            def backlog_now() -> tuple[float, HubCounters, tuple[int, int, int]]:
                counts = client.counters()
                sent = self.generator_totals()
                backlog = (sent[0] + sent[1] - base_sent[0] - base_sent[1]) - (counts.ingested - base_counts.ingested)
                return backlog, counts, sent

            cpu_before = self.snapshot()
            dropped_before = self.broker_dropped()
            backlog0, counts0, sent0 = backlog_now()
            window_start_wall = time.time()
            t0 = time.monotonic()
            backlog = [(0.0, backlog0)]
            while (elapsed := time.monotonic() - t0) < duration_s:
                time.sleep(min(BACKLOG_SAMPLE_S, duration_s - elapsed))
                self.check_alive()
                value, _, _ = backlog_now()
                backlog.append((time.monotonic() - t0, value))
            cpu_after = self.snapshot()
            _, counts1, sent1 = backlog_now()
            window_s = time.monotonic() - t0
            window_end_wall = time.time()
            dropped_after = self.broker_dropped()
        finally:
            with contextlib.suppress(OSError, EOFError):  # a generator that died is reported by check_alive
                for _, conn, _ in self.generators:
                    conn.send(("stop",))
                for _, conn, _ in self.generators:
                    if conn.poll(30):
                        generator_results.append(conn.recv())
            sampler.stop()
        # Let the hub catch up, then see what never arrived.
        settle_start = time.monotonic()
        sent_total = sum(self.generator_totals()[:2]) - base_sent[0] - base_sent[1]
        last, last_change = -1.0, time.monotonic()
        while time.monotonic() - settle_start < SETTLE_TIMEOUT_S:
            got = client.counters().ingested - base_counts.ingested
            if got >= sent_total:
                break
            if got != last:
                last, last_change = got, time.monotonic()
            elif time.monotonic() - last_change > 3.0:
                break  # no progress: the rest is lost
            time.sleep(0.1)
        settle_s = time.monotonic() - settle_start
        lost = int(sent_total - (client.counters().ingested - base_counts.ingested))
        _, _, pubacks = self.generator_totals()
        delays = [d * 1000 for published, d in sampler.samples if window_start_wall <= published <= window_end_wall]
        api = [s * 1000 for started, s in sampler.api if window_start_wall <= started <= window_end_wall]
        return PhaseResult(
            nodes=n,
            window_s=window_s,
            sent_meters=sent1[0] - sent0[0],
            sent_heartbeats=sent1[1] - sent0[1],
            ingested=counts1.ingested - counts0.ingested,
            ingested_by_kind={k: v - counts0.received.get(k, 0.0) for k, v in counts1.received.items()},
            dropped={k: v - counts0.dropped.get(k, 0.0) for k, v in counts1.dropped.items() if v - counts0.dropped.get(k, 0.0)},
            backlog=backlog,
            backlog_slope=_slope(backlog),
            lost=lost,
            settle_s=settle_s,
            delays_ms=delays,
            api_ms=api,
            sampler_errors=sampler.errors,
            cpu=cpu_use(cpu_before, cpu_after, self.hub.pid),
            generator_max_lag_s=max((r.get("max_lag_s", 0.0) for r in generator_results), default=0.0),
            generator_late_ticks=sum(r.get("late_ticks", 0) for r in generator_results),
            broker_dropped=None if dropped_before is None or dropped_after is None else dropped_after - dropped_before,
            pubacks_missing=sum(self.generator_totals()[1:2]) - pubacks,
        )

    # -- ceilings ----------------------------------------------------------------------------

    def flat_out(
        self,
        node_ids: list[str],
        seconds: float,
        heartbeats: bool,
        consumed: Callable[[], float],
        consumer_pid: int | None,
    ) -> tuple[float, float, float, CpuUse, float | None]:
        """Generator 0 flat out; (consumed in window, window s, sent msg/s, CPU, broker drops) after a warm-up.

        With --ceiling-backlog K the generator never gets more than K messages ahead of what the
        consumer has counted (the credit is refreshed every CREDIT_INTERVAL_S), so the consumer
        always has a queue waiting and the broker neither drops nor spends CPU on what would be dropped.
        """
        process, conn, counters = self.generators[0]
        backlog = self.args.ceiling_backlog
        sent_start = counters[C_METERS] + counters[C_HEARTBEATS]
        consumed_start = consumed()
        counters[C_CREDIT] = sent_start + backlog if backlog else NO_CREDIT_LIMIT
        conn.send(("flat", node_ids, CEILING_WARMUP_S + seconds + 30, heartbeats))

        def read_consumed() -> tuple[float, float]:
            """The consumer's count and when it was taken (the middle of a scrape, which takes a while when busy)."""
            started = time.monotonic()
            count = consumed()
            if backlog:
                counters[C_CREDIT] = sent_start + int(count - consumed_start) + backlog
            return count, (started + time.monotonic()) / 2

        def run_for(duration: float) -> None:
            if not backlog:
                self._sleep_checking(duration)
                return
            deadline = time.monotonic() + duration
            while (left := deadline - time.monotonic()) > 0:
                time.sleep(min(left, CREDIT_INTERVAL_S))
                read_consumed()
                self.check_alive()

        try:
            run_for(CEILING_WARMUP_S)
            cpu_before = self.snapshot(consumer_pid)
            dropped_before = self.broker_dropped()
            sent_before = sum(self.generator_totals()[:2])
            count_before, t0 = read_consumed()
            run_for(seconds)
            count_after, t1 = read_consumed()
            window = t1 - t0
            sent_after = sum(self.generator_totals()[:2])
            cpu_after = self.snapshot(consumer_pid)
            dropped_after = self.broker_dropped()
        finally:
            counters[C_CREDIT] = NO_CREDIT_LIMIT
            with contextlib.suppress(OSError, EOFError):
                conn.send(("stop",))
                if conn.poll(30):
                    conn.recv()
        drops = None if dropped_before is None or dropped_after is None else dropped_after - dropped_before
        return (
            count_after - count_before,
            window,
            (sent_after - sent_before) / window,
            cpu_use(cpu_before, cpu_after, self.hub.pid if self.hub else None),
            drops,
        )

    def bare_ceiling(self, seconds: float, nodes: int) -> CeilingResult:
        counters = self.context.RawArray("q", 2)
        process = self.context.Process(
            target=bare_subscriber_main, args=(self.broker.host, self.broker.port, counters), name="bare-subscriber"
        )
        process.start()
        self.children.append(process)
        try:
            deadline = time.monotonic() + 15
            while not counters[1]:
                if time.monotonic() > deadline or not process.is_alive():
                    raise RuntimeError("the bare subscriber did not subscribe")
                time.sleep(0.05)
            fake_ids = [f"nod_{secrets.token_hex(13)}" for _ in range(nodes)]  # same length as real ids
            count, window, sent_rate, cpu, drops = self.flat_out(fake_ids, seconds, True, lambda: counters[0], process.pid)
        finally:
            process.terminate()
            process.join(5)
        return CeilingResult(BARE_LABEL, count / window, count, window, sent_rate, cpu, drops)

    def hub_ceiling(self, seconds: float, node_ids: list[str], heartbeats: bool) -> CeilingResult:
        assert self.client is not None
        client = self.client
        count, window, sent_rate, cpu, drops = self.flat_out(
            node_ids, seconds, heartbeats, lambda: client.counters().ingested, None
        )
        # The hub works through what the broker queued for it before anything else is measured.
        self._wait_quiet()
        label = HUB_LABEL if heartbeats else HUB_METERS_LABEL
        return CeilingResult(label, count / window, count, window, sent_rate, cpu, drops)

    def _wait_quiet(self) -> None:
        assert self.client is not None
        last, stable_since, deadline = -1.0, time.monotonic(), time.monotonic() + 60
        while time.monotonic() < deadline:
            got = self.client.counters().ingested
            if got != last:
                last, stable_since = got, time.monotonic()
            elif time.monotonic() - stable_since > 1.0:
                return
            time.sleep(0.2)


# -- report -----------------------------------------------------------------------------------

TITLE = "hark hub fleet benchmark (MQTT ingest)"


def _f(value: float | None, fmt: str = "{:.0f}", none: str = "n/a") -> str:
    return none if value is None else fmt.format(value)


def _pct(value: float | None) -> str:
    return _f(value, "{:.0f} %")


def _p(values: list[float], fraction: float) -> float | None:
    return _percentile(values, fraction) if values else None


def _phase_tables(phases: list[PhaseResult]) -> list[hub_http._TextTable]:
    rates = []
    delays = []
    cpu = []
    for p in phases:
        drops = ", ".join(f"{k} {v:,.0f}" for k, v in sorted(p.dropped.items())) or "0"
        rates.append(
            [
                f"{p.nodes:,}",
                f"{p.target_rate:,.0f}",
                f"{p.sent_rate:,.0f}",
                f"{p.ingest_rate:,.0f}",
                drops,
                f"{p.backlog[0][1]:,.0f} → {p.backlog[-1][1]:,.0f} (max {max(v for _, v in p.backlog):,.0f})",
                f"{p.backlog_slope:+,.0f}/s " + ("GROWING" if p.growing else "flat"),
                f"{p.lost:,}",
            ]
        )
        delays.append(
            [
                f"{p.nodes:,}",
                _f(_p(p.delays_ms, 0.50), "{:.1f}"),
                _f(_p(p.delays_ms, 0.99), "{:.1f}"),
                _f(max(p.delays_ms) if p.delays_ms else None, "{:.1f}"),
                f"{len(p.delays_ms):,}",
                _f(_p(p.api_ms, 0.50), "{:.1f}"),
                _f(_p(p.api_ms, 0.99), "{:.1f}"),
                f"{p.generator_max_lag_s * 1000:.1f}",
            ]
        )
        c = p.cpu
        busiest = f" (busiest {c.hub_busiest_other:.0f} %)" if c.hub_busiest_other is not None else ""
        cpu.append(
            [
                f"{p.nodes:,}",
                _pct(c.hub),
                _pct(c.hub_loop),
                _pct(c.hub_other) + busiest,
                _pct(c.of_machine(c.hub)),
                _pct(c.generators),
                _pct(c.broker),
                _pct(c.machine),
                _pct(c.others),
            ]
        )
    return [
        (
            "message rates per N (measurement window)",
            ["N", "target msg/s", "sent msg/s", "ingested msg/s", "hub drops", "backlog start → end", "backlog slope", "lost"],
            rates,
            1,
        ),
        (
            "publish → hub state delay (meter frames of 20 sample nodes), and the hub's GET answer time",
            ["N", "delay p50 ms", "delay p99 ms", "max ms", "samples", "GET p50 ms", "GET p99 ms", "generator max lag ms"],
            delays,
            1,
        ),
        (
            "CPU in the window (% of one core; 'machine' columns: % of all cores)",
            [
                "N",
                "hub",
                "hub loop thread",
                "hub other threads",
                "hub (machine)",
                "generator",
                "broker",
                "machine busy",
                "others",
            ],
            cpu,
            1,
        ),
    ]


def _ceiling_table(ceilings: list[CeilingResult], ratio: float | None, backlog: int) -> hub_http._TextTable:
    rows = []
    for c in ceilings:
        rows.append(
            [
                c.label,
                f"{c.rate:,.0f}",
                _pct(c.cpu.consumer if c.cpu.consumer is not None else c.cpu.hub),
                f"{c.sent_rate:,.0f}",
                _pct(c.cpu.generators),
                _pct(c.cpu.broker),
                _f(c.broker_dropped, "{:,.0f}"),
                _pct(c.cpu.machine),
                _pct(c.cpu.others),
            ]
        )
    if ratio is not None:
        rows.append(["hub / bare (ratio)", f"{ratio:.2f}x", "", "", "", "", "", "", ""])
    columns = [
        "consumer",
        "msg/s",
        "consumer CPU",
        "generator sent msg/s",
        "generator CPU",
        "broker CPU",
        "broker drops",
        "machine busy",
        "others",
    ]
    mode = f"at most {backlog:,} messages ahead of the consumer" if backlog else "flat out"
    return (f"ingest ceiling: generator {mode}, 1 heartbeat per 100 meter frames unless noted", columns, rows, 1)


def _targets(phases: list[PhaseResult], ratio: float | None, ceilings: list[CeilingResult]) -> tuple[list[list[str]], list[bool]]:
    rows: list[list[str]] = []
    verdicts: list[bool] = []
    target = next((p for p in phases if p.nodes == TARGET_NODES), None)
    if target is not None:
        keeps_up = not target.growing and target.ingest_rate >= 0.98 * target.sent_rate
        p99 = _p(target.delays_ms, 0.99)
        verdicts.append(keeps_up)
        rows.append(
            [
                f"N={TARGET_NODES:,}: the hub keeps up, no growing backlog",
                f"ingested {target.ingest_rate:,.0f} of {target.sent_rate:,.0f} msg/s sent, "
                f"backlog slope {target.backlog_slope:+,.0f}/s, lost {target.lost:,}",
                "PASS" if keeps_up else "FAIL",
            ]
        )
        if p99 is not None:
            verdicts.append(p99 < TARGET_P99_MS)
        rows.append(
            [
                f"N={TARGET_NODES:,}: p99 publish → state < {TARGET_P99_MS:.0f} ms",
                _f(p99, "{:.1f} ms") + f" ({len(target.delays_ms):,} samples)",
                "n/a" if p99 is None else ("PASS" if p99 < TARGET_P99_MS else "FAIL"),
            ]
        )
    else:
        rows.append([f"N={TARGET_NODES:,}", "not measured (add it to --nodes)", "n/a"])
    by_label = {c.label: c for c in ceilings}
    if ratio is not None:
        verdicts.append(ratio >= TARGET_CEILING_RATIO)
        rows.append(
            [
                f"ingest ceiling ≥ {TARGET_CEILING_RATIO:.0%} of the bare subscriber's",
                f"{ratio:.0%} ({by_label[HUB_LABEL].rate:,.0f} / {by_label[BARE_LABEL].rate:,.0f} msg/s)",
                "PASS" if ratio >= TARGET_CEILING_RATIO else "FAIL",
            ]
        )
    else:
        rows.append(["ingest ceiling vs the bare subscriber", "not measured (--ceiling-duration 0)", "n/a"])
    return rows, verdicts


def _notes(phases: list[PhaseResult], ceilings: list[CeilingResult]) -> list[str]:
    notes = []
    for p in phases:
        kinds = ", ".join(f"{k} {v:,.0f}" for k, v in sorted(p.ingested_by_kind.items()) if v)
        notes.append(
            f"N={p.nodes:,}: in the {p.window_s:.1f} s window the generator sent {p.sent_meters:,} meter frames and "
            f"{p.sent_heartbeats:,} heartbeats, the hub counted {kinds or 'nothing'}; the broker dropped "
            f"{_f(p.broker_dropped, '{:,.0f}')}; late generator ticks {p.generator_late_ticks}; heartbeats without PUBACK "
            f"{p.pubacks_missing}; failed meter GETs {p.sampler_errors}; after the window the hub caught up in {p.settle_s:.1f} s"
        )
        notes.append(
            f"N={p.nodes:,}: backlog (sent - counted) every {BACKLOG_SAMPLE_S:g} s: "
            + " ".join(f"{v:,.0f}" for _, v in p.backlog)
        )
    for c in ceilings:
        notes.append(f"ceiling {c.label}: {c.messages:,.0f} messages counted in {c.window_s:.2f} s")
    noisy = [(f"N={p.nodes:,}", p.cpu.others) for p in phases] + [(f"ceiling {c.label}", c.cpu.others) for c in ceilings]
    for what, others in noisy:
        if others is not None and others > NOISY_OTHERS_PCT:
            notes.append(
                f"WARNING {what}: processes outside this benchmark used {others:.0f} % of the machine during the window; "
                "its figures are not reliable, run again on a quieter machine"
            )
    if any("unknown_kind" in p.dropped for p in phases):
        notes.append(
            "unknown_kind drops are the hub's own acks: it publishes them on hark/v1/nodes/{id}/cmd/ack, which its "
            "hark/v1/nodes/+/# subscription delivers back to it, and kind 'cmd' has no route"
        )
    return notes


def report(
    context: list[tuple[str, str]], phases: list[PhaseResult], ceilings: list[CeilingResult], ceiling_backlog: int = 0
) -> bool:
    """Print everything; False if a target was missed."""
    by_label = {c.label: c for c in ceilings}
    bare, hub = by_label.get(BARE_LABEL), by_label.get(HUB_LABEL)
    ratio = hub.rate / bare.rate if hub is not None and bare is not None and bare.rate > 0 else None
    tables = _phase_tables(phases)
    if ceilings:
        tables.append(_ceiling_table(ceilings, ratio, ceiling_backlog))
    target_rows, verdicts = _targets(phases, ratio, ceilings)
    tables.append(("targets", ["target", "measured", "result"], target_rows, 2))
    print_report(context, tables, _notes(phases, ceilings))
    return all(verdicts)


def print_report(context: list[tuple[str, str]], tables: list[hub_http._TextTable], notes: list[str], title: str = TITLE) -> None:
    """Like bench/hub_http.py's report printing (rich if available, plain otherwise), under `title` (this benchmark's)."""
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        print(title)
        width = max(len(key) for key, _ in context)
        for key, value in context:
            print(f"  {key.ljust(width)}  {value}")
        for title, header, body, left in tables:
            print(f"\n{title}")
            widths = [max(len(cell) for cell in column) for column in zip(header, *body, strict=True)]
            for line in [header, *body]:
                cells = [c.ljust(w) if i < left else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths, strict=True))]
                print("  " + "  ".join(cells))
        for note in notes:
            print(note)
        return
    console = Console()
    if not console.is_terminal:
        console = Console(width=160)  # piped output: rich would otherwise wrap the tables at 80 columns
    info = Table(title=title, show_header=False, box=None)
    info.add_column(style="bold")
    info.add_column()
    for key, value in context:
        info.add_row(key, value)
    console.print(info)
    for title, header, body, left in tables:
        table = Table(title=title)
        for i, name in enumerate(header):
            table.add_column(name, justify="left" if i < left else "right")
        for row in body:
            table.add_row(*row)
        console.print(table)
    for note in notes:
        console.print(note, style="yellow", markup=False)


# -- main ------------------------------------------------------------------------------------


def _versions() -> str:
    parts = []
    for name in ("paho-mqtt", "msgspec", "tornado", "peewee", "prometheus_client"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            parts.append(f"{name} {metadata.version(name)}")
    return ", ".join(parts)


def _mosquitto_version() -> str:
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run([binary, "-h"], capture_output=True, text=True, timeout=5)
        first = (out.stdout or out.stderr).splitlines()[0]
        return first.strip()
    return "unknown"


def run(args: argparse.Namespace) -> int:
    signal.signal(signal.SIGTERM, hub_http._raise_keyboard_interrupt)  # a SIGTERM cleans up like Ctrl-C
    temp_dir = Path(tempfile.mkdtemp(prefix="hark-fleet-"))
    fleet = Fleet(args, temp_dir)
    try:
        print(f"starting Mosquitto and {args.generators} generator process(es) ...", flush=True)
        fleet.start_broker()
        fleet.start_generators(args.generators)
        ceilings: list[CeilingResult] = []
        max_n = max(args.nodes)
        if args.ceiling_duration > 0:
            print(f"ceiling: bare paho subscriber, {args.ceiling_duration:g} s ...", flush=True)
            ceilings.append(fleet.bare_ceiling(args.ceiling_duration, max_n))
        print("starting the hub ...", flush=True)
        fleet.start_hub()
        assert fleet.client is not None and fleet.hub is not None
        print(f"enrolling {max_n} nodes ...", flush=True)
        node_ids = enroll_nodes(fleet.hub_port, fleet.client.token, max_n)
        phases: list[PhaseResult] = []
        for n in args.nodes:
            print(
                f"N={n}: {n} nodes, target {n * (METER_HZ + 1 / HEARTBEAT_INTERVAL_S):,.0f} msg/s, "
                f"{WARMUP_S:g} s warm-up + {args.duration:g} s ...",
                flush=True,
            )
            phases.append(fleet.run_phase(node_ids[:n], args.duration))
            p = phases[-1]
            print(
                f"  sent {p.sent_rate:,.0f} msg/s, hub ingested {p.ingest_rate:,.0f} msg/s, "
                f"delay p99 {_f(_p(p.delays_ms, 0.99), '{:.1f}')} ms, hub CPU {_pct(p.cpu.hub)}",
                flush=True,
            )
        if args.ceiling_duration > 0:
            print(f"ceiling: hub, {args.ceiling_duration:g} s ...", flush=True)
            ceilings.append(fleet.hub_ceiling(args.ceiling_duration, node_ids, heartbeats=True))
            print(f"ceiling: hub, meters only, {args.ceiling_duration:g} s ...", flush=True)
            ceilings.append(fleet.hub_ceiling(args.ceiling_duration, node_ids, heartbeats=False))
        fleet.check_alive()

        cpu_count = os.cpu_count() or 1
        load = os.getloadavg() if hasattr(os, "getloadavg") else None
        usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else "n/a"
        context = [
            ("machine", f"{platform.machine()} {platform.system()} {platform.release()}"),
            ("CPUs", f"{cpu_count} (usable by this process: {usable}); load average at the end {_f(load and load[0], '{:.2f}')}"),
            ("Python", f"{platform.python_implementation()} {platform.python_version()}; {_versions()}"),
            (
                "broker",
                f"{_mosquitto_version()}, max_queued_messages {MAX_QUEUED}, max_inflight_messages {MAX_INFLIGHT}, "
                + ("set_tcp_nodelay true" if args.tcp_nodelay else "set_tcp_nodelay false (Mosquitto's default: Nagle on)"),
            ),
            ("hub", "python -m hark_fleet.hub run, SQLite, HARK_MQTT_URL to the broker above, log level WARNING"),
            (
                "load",
                f"{args.generators} generator process(es), raw MQTT 3.1.1 over one socket each; per node "
                f"meters {METER_HZ:g} Hz QoS 0 + heartbeat every {HEARTBEAT_INTERVAL_S:g} s QoS 1",
            ),
            (
                "parameters",
                f"N = {', '.join(map(str, args.nodes))}; warm-up {WARMUP_S:g} s, window {args.duration:g} s; "
                f"delay probes {args.probe_rate:g} GET/s over {SAMPLE_NODES} nodes; "
                f"ceilings {CEILING_WARMUP_S:g} s + {args.ceiling_duration:g} s, generator "
                + (f"at most {args.ceiling_backlog:,} messages ahead of the consumer" if args.ceiling_backlog else "flat out"),
            ),
        ]
        return 0 if report(context, phases, ceilings, args.ceiling_backlog) else 2
    except KeyboardInterrupt:
        print("\ninterrupted; stopping everything", file=sys.stderr)
        return 130
    except RuntimeError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    finally:
        # Cleanup is bounded; do not let a second Ctrl-C cut it short.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        fleet.stop_all()
        shutil.rmtree(temp_dir, ignore_errors=True)


def _node_counts(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError as err:
        raise argparse.ArgumentTypeError("expected a comma-separated list of node counts") from err
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError("node counts must be positive")
    return values


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Benchmark the hark hub's MQTT fleet ingest with N simulated nodes.")
    parser.add_argument("--nodes", type=_node_counts, default=[100, 500, 1000], help="node counts (default 100,500,1000)")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds measured per N after a 3 s warm-up (default 20)")
    parser.add_argument(
        "--ceiling-duration",
        type=float,
        default=5.0,
        help="seconds measured per ceiling, after a 1 s warm-up; 0 skips them (default 5)",
    )
    parser.add_argument(
        "--ceiling-backlog",
        type=int,
        default=20000,
        metavar="K",
        help="ceilings: the generator stays at most K messages ahead of the consumer, so the broker drops nothing "
        "and the consumer is not short of CPU (default 20000; 0: purely flat out)",
    )
    parser.add_argument("--generators", type=int, default=1, help="load generator processes (default 1)")
    parser.add_argument(
        "--tcp-nodelay",
        action="store_true",
        help="set_tcp_nodelay true on the broker (its default leaves Nagle on, which delays small sends to the hub)",
    )
    parser.add_argument(
        "--probe-rate", type=float, default=40.0, help="GET /api/v1/nodes/{id}/meters per second for delays (default 40)"
    )
    args = parser.parse_args(argv)
    if args.duration <= 0 or args.generators < 1 or args.probe_rate <= 0 or args.ceiling_duration < 0 or args.ceiling_backlog < 0:
        parser.error(
            "--duration and --probe-rate must be positive, --generators at least 1, "
            "--ceiling-duration and --ceiling-backlog not negative"
        )
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
