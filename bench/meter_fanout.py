"""Live meter fan-out of the hark hub over SSE, against a bare Tornado SSE server fed the same frames, in alternating rounds.

What is measured
----------------
``--nodes`` enrolled nodes (default 100) each publish a meter frame at 10 Hz, QoS 0, through a Mosquitto of the
bench's own, so ``--nodes`` x 10 frames/s are offered (1,000 by default). For each client count of ``--clients``
(default 100 and 200), two subjects take turns, ``--rounds`` times (default 3; the order reversed every other round,
``bench/rounds.py``):

* ``bare``: a bare Tornado server in a process of its own, reading the same MQTT topics on a raw socket, that wraps
  every PUBLISH payload in the hub's SSE frame (``event: meter``, ``data: {"node_id":...,<payload>}``) and writes it
  to every client, one write and one unawaited flush per client per socket read. No authentication, no decoding, no
  store, no bound on what a client leaves unsent: a ceiling, not a product;
* ``hub``: ``python -m hark_fleet.hub run`` (SQLite, ``HARK_MQTT_URL`` to the same broker), its
  ``GET /api/v1/meter-events`` without a ``node_id`` filter, with the admin's bearer token.

In a round, C clients (``--client-procs`` processes of raw asyncio connections, opened at most 32 at a time) open the
subject's stream; after ``--warmup`` seconds (default 5) the window of ``--duration`` seconds (default 10) gives:

* delivery %: the ``event: meter`` lines the readers received per second of the window (each client process times
  its own window) over what they were due, the generator's published frames per second for each of the C readers (a
  reader that never connected counts as 0). Only delivered frames count. The slowest reader's delivery % too;
* delay p50 / p99: every frame's ``ts`` is its publish time; a client takes its receive time minus ``ts`` for every
  frame of a sample of its reads (at most ``SAMPLE_READS_PER_S`` reads a second per process). Same machine, same clock;
* dropped: clients the subject dropped or whose stream ended in the warm-up or the window (the hub's
  ``event: reset``, a closed connection), and the hub's ``hark_sse_clients_dropped_total`` over the round;
* the hub's intake: ``hark_mqtt_messages_received_total{kind="meters"}`` per second over the window, against what was
  published (a hub whose intake falls behind while it serves clients shows it here);
* CPU of the subject's process over the window (% of one core), its memory (RSS) at the end, the busiest client
  process's CPU (near 100 %: the clients, not the subject, set the limit), and the load average before and after the
  round.

With ``--stalled N``, every round also opens N clients that read the response headers and then nothing more (a 4 KiB
receive buffer, reading paused). They are not in the delivery figures: the question is whether the others still get
everything. The hub drops such a client once its outbox is full (``hark_sse_clients_dropped_total`` rises); the bare
server keeps buffering for it (its RSS grows).

Each figure is reported as the median of the rounds with its range; the hub's delivery and delay also round by round
against bare (the ratio of the pair measured in the same round). The bare server stays subscribed between its rounds
(a few % of a core); the hub always is (it is the product).

Coalesced mode
--------------
``--mode coalesced`` compares, on the same hub in alternating rounds, its two meter streams with ``--clients`` readers
(default 1,000) following every one of ``--nodes`` (default 100) at 10 Hz:

* ``per-frame``: ``GET /api/v1/meter-events`` as above (every frame, no ``max_rate``);
* ``coalesced``: ``GET /api/v1/meter-events?coalesce=100ms`` (``--coalesce``): one ``event: meters`` per tick with the
  latest frame of every node that sent one since the last tick.

For ``coalesced``, delivery % is the share of the ticks due in the window that each reader received, by tick number
(``"tick"`` in the event: milliseconds since the epoch over the interval, so a tick the hub skipped because its loop
was late counts as lost too); a tick is due when it falls from the window's start to ``TICK_GRACE_S`` (1 s) before its
end. Its delay is from the tick's ``ts`` (the hub's clock when it encoded the tick, on the loop) to the reader's receipt;
its frame age is from each frame's publish time to receipt (that includes up to one interval of coalescing). For
``per-frame`` both are publish -> receipt as above. The bare server is not started in this mode.

It exits 0 when the coalesced stream delivered at least 99 % of its ticks with a tick p99 delay under 500 ms at every
client count (median of the rounds), 2 otherwise.

Run it from the repository root::

    .venv/bin/python bench/meter_fanout.py [--nodes 100] [--clients 100,200] [--rounds 3] [--duration 10]
                                           [--warmup 5] [--client-procs 2] [--stalled 0]
    .venv/bin/python bench/meter_fanout.py --quick    # smoke run: 20 nodes, 10 clients, 3 rounds of 2 s
    .venv/bin/python bench/meter_fanout.py --mode coalesced [--coalesce 100ms] [--clients 1000] [--quick]

In the default mode it exits 0 when the hub delivered at least 99 % with a p99 delay under 250 ms at every client count
(median of the rounds), 2 otherwise; either mode 1 on an error, 130 on Ctrl-C. Every process it started is stopped at
the end and the temporary directory removed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import multiprocessing
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
for path in (BENCH_DIR, REPO_ROOT):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

import rounds  # noqa: E402

HOST = "127.0.0.1"
STREAM_PATH = "/api/v1/meter-events"
METER_HZ = 10.0
TOPIC = "hark/v1/nodes/{}/meters"
DEFAULT_CLIENTS = [100, 200]
CONNECT_CONCURRENCY = 32
CONNECT_TIMEOUT_S = 60.0
REPLY_TIMEOUT_S = 90.0
READY_TIMEOUT_S = 60.0
SAMPLE_READS_PER_S = 500.0
STALLED_RCVBUF = 4096
TARGET_DELIVERY = 0.99
TARGET_P99_MS = 250.0
SUBJECTS = ("bare", "hub")
# --mode coalesced: the hub's per-frame stream against its coalesced one (`?coalesce=`), both on the same hub.
COALESCED_SUBJECTS = ("per-frame", "coalesced")
DEFAULT_COALESCED_CLIENTS = [1000]
DEFAULT_COALESCE = "100ms"
TARGET_TICK_P99_MS = 500.0
TICK_GRACE_S = 1.0  # a tick is counted due if it was due at least this long before the window closed
TICK_HEAD = b'event: meters\ndata: {"tick":'
TICK_HEAD_SKIP = len(b"event: meters\ndata: {")
TICK_RE = re.compile(rb'"tick":(\d+),"snapshot":(true|false),"ts":"([^"]{1,40})"')
TICK_TAIL = 160  # bytes kept between reads so that a tick's header cut by TCP is read whole (ticks are deduplicated)
FRAME_TS_RE = re.compile(rb'\{"ts":"([^"]{1,40})"')  # a frame's own `ts` in a coalesced event (the tick's is `,"ts"`)

METER_EVENT = b"event: meter\n"
RESET_EVENT = b"event: reset\n"
TAIL = len(METER_EVENT) - 1  # bytes kept between reads so an event line cut by TCP is counted once
LAST_CHUNK = b"\r\n0\r\n\r\n"
TS_RE = re.compile(rb'"ts":"([^"]{1,40})"')


def iso_us(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


_MINUTES: dict[str, float] = {}


def parse_iso(text: str) -> float:
    """`2026-12-07T04:00:00.123456Z` (fractions of 1 to 6 digits): the minute parsed once, then cached."""
    minute = text[:17]
    base = _MINUTES.get(minute)
    if base is None:
        base = _MINUTES[minute] = datetime.strptime(minute, "%Y-%m-%dT%H:%M:").replace(tzinfo=UTC).timestamp()
    return base + float(text[17:].rstrip("Z"))


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _mqtt_str(data: bytes) -> bytes:
    return len(data).to_bytes(2, "big") + data


def connect_packet(client_id: str) -> bytes:
    # 3.1.1, clean session, keepalive 0: the bare server only reads, and the broker would drop it after 1.5 keepalives
    variable = _mqtt_str(b"MQTT") + b"\x04\x02" + (0).to_bytes(2, "big")
    body = variable + _mqtt_str(client_id.encode())
    return b"\x10" + _varint(len(body)) + body


def cpu_s(pid: int) -> float | None:
    """utime + stime of a process, in seconds."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


# -- the load generator (its own process) -------------------------------------------------------


def frame_payload(seq: int, now: float) -> bytes:
    """A node's meter frame (two channels and loudness, as a node sends it), `ts` its publish time."""
    channel = (
        '{{"index":{},"name":"{}","peak_dbfs":-12.0,"rms_dbfs":-15.01,"true_peak_dbtp":-11.8,"clip":0,"dc":0.0,"silent":false}}'
    )
    return (
        f'{{"ts":"{iso_us(now)}","seq":{seq},"interval_ms":100,"sample_rate":48000,'
        f'"channels":[{channel.format(0, "L")},{channel.format(1, "R")}],'
        '"loudness":{"momentary_lufs":-20.1,"short_term_lufs":-21.0,"integrated_lufs":-22.3,"lra_lu":4.1}}'
    ).encode()


def generator_main(host: str, port: int, node_ids: list[str], published: Any, errors: Any) -> None:
    """Publish every node's frame at METER_HZ, QoS 0, spread over each 100 ms, on one connection, until terminated."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        sock = socket.create_connection((host, port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(connect_packet(f"fanout-gen-{secrets.token_hex(3)}"))
        if sock.recv(4)[:1] != b"\x20":
            raise OSError("no CONNACK")
        topics = [_mqtt_str(TOPIC.format(node_id).encode()) for node_id in node_ids]
        period = 1.0 / METER_HZ
        slots = 20
        per_slot = [topics[i::slots] for i in range(slots)]
        start = time.monotonic()
        tick = 0
        seq = 0
        while True:
            due = start + tick * period / slots
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            group = per_slot[tick % slots]
            if tick % slots == 0:
                seq += 1
            if group:
                payload = frame_payload(seq, time.time())
                sock.sendall(b"".join(b"\x30" + _varint(len(t) + len(payload)) + t + payload for t in group))
                published.value += len(group)
            tick += 1
    except OSError:
        errors.value += 1


# -- the bare Tornado SSE server (its own process) ------------------------------------------------


def bare_main(port: int, broker_host: str, broker_port: int) -> None:
    """A Tornado server that fans every meter PUBLISH out as the hub's SSE frame to every client, unbounded."""
    import tornado.web

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    clients: set[Any] = set()

    class Stream(tornado.web.RequestHandler):
        async def get(self) -> None:
            self.set_header("Content-Type", "text/event-stream; charset=utf-8")
            self.write(b"retry: 2000\n\n")
            self.flush()
            self.gone: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            clients.add(self)
            await self.gone

        def on_connection_close(self) -> None:
            clients.discard(self)
            if hasattr(self, "gone") and not self.gone.done():
                self.gone.set_result(None)

    class Intake(asyncio.Protocol):
        def __init__(self) -> None:
            self.buffer = bytearray()
            self.transport: asyncio.Transport | None = None

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            assert isinstance(transport, asyncio.Transport)
            self.transport = transport
            transport.write(connect_packet(f"fanout-bare-{secrets.token_hex(3)}"))

        def data_received(self, data: bytes) -> None:
            buf = self.buffer
            buf += data
            frames: list[bytes] = []
            pos = 0
            while len(buf) - pos >= 2:
                first, length, shift, i = buf[pos], 0, 0, pos + 1
                while i < len(buf):
                    byte = buf[i]
                    length |= (byte & 0x7F) << shift
                    i += 1
                    shift += 7
                    if not byte & 0x80:
                        break
                else:
                    break
                if i + length > len(buf):
                    break
                if first & 0xF0 == 0x30:
                    topic_end = i + 2 + (buf[i] << 8 | buf[i + 1])
                    start = topic_end + (2 if first & 0x06 else 0)
                    node_id = bytes(buf[i + 2 : topic_end]).split(b"/")[3]
                    payload = bytes(buf[start : i + length])
                    frames.append(b'event: meter\ndata: {"node_id":"' + node_id + b'",' + payload[1:] + b"\n\n")
                elif first == 0x20 and self.transport is not None:  # CONNACK: subscribe
                    body = (1).to_bytes(2, "big") + _mqtt_str(TOPIC.format("+").encode()) + b"\x00"
                    self.transport.write(b"\x82" + _varint(len(body)) + body)
                pos = i + length
            del buf[:pos]
            if frames and clients:
                chunk = b"".join(frames)
                for client in list(clients):
                    client.write(chunk)
                    client.flush()

    async def main() -> None:
        app = tornado.web.Application([(STREAM_PATH, Stream)])
        app.listen(port, HOST)
        loop = asyncio.get_running_loop()
        await loop.create_connection(Intake, broker_host, broker_port)
        await asyncio.Event().wait()

    asyncio.run(main())


# -- SSE clients (their own processes) -------------------------------------------------------------


class _Sampling:
    def __init__(self) -> None:
        self.on = False
        self.interval = 0.1
        self.delays: list[float] = []  # per-frame: publish -> receipt; coalesced: the tick's `ts` (emitted) -> receipt
        self.ages: list[float] = []  # coalesced: each frame's publish -> receipt


class SseClient(asyncio.Protocol):
    """One stream: counts meter events, notices a reset and the end; a stalled one reads the headers only."""

    def __init__(
        self, request: bytes, sampling: _Sampling, ready: asyncio.Future[int], stalled: bool, coalesced: bool = False
    ) -> None:
        self.request, self.sampling, self.ready, self.stalled = request, sampling, ready, stalled
        self.coalesced = coalesced
        self.ticks: set[int] = set()  # coalesced: the tick numbers received (snapshots left out)
        self.transport: asyncio.Transport | None = None
        self.head = b""
        self.status = 0
        self.tail = b""
        self.events = self.marked = self.reads = 0
        self.reset = self.ended = False
        self.next_sample = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        if not self.status:
            self.head += data
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                return
            try:
                self.status = int(self.head.split(b" ", 2)[1])
            except (IndexError, ValueError):
                self.status = -1
            data, self.head = self.head[end + 4 :], b""
            if not self.ready.done():
                self.ready.set_result(self.status)
            if self.stalled and self.transport is not None:
                self.transport.pause_reading()
                return
        self.reads += 1
        buf = self.tail + data
        if self.coalesced:
            self._ticks(buf, data)
            return
        self.events += buf.count(METER_EVENT)
        if RESET_EVENT in buf:
            self.reset = True
        if buf.endswith(LAST_CHUNK):
            self.ended = True
        self.tail = buf[-TAIL:]
        sampling = self.sampling
        if sampling.on:
            now = time.time()
            if now >= self.next_sample:
                self.next_sample = now + sampling.interval
                sampling.delays.extend(now - parse_iso(m[1].decode()) for m in TS_RE.finditer(buf))

    def _ticks(self, buf: bytes, data: bytes) -> None:
        """A coalesced stream's read: the ticks whose header it holds (each counted once), sampled delays and ages."""
        if RESET_EVENT in buf:
            self.reset = True
        if buf.endswith(LAST_CHUNK):
            self.ended = True
        sampling = self.sampling
        now = time.time()
        sample = sampling.on and now >= self.next_sample
        if sample:
            self.next_sample = now + sampling.interval
            sampling.ages.extend(now - parse_iso(m[1].decode()) for m in FRAME_TS_RE.finditer(data))
        ticks = self.ticks
        pos = buf.find(TICK_HEAD)
        while pos >= 0:
            found = TICK_RE.match(buf, pos + TICK_HEAD_SKIP)
            if found is not None and found[2] == b"false":
                tick = int(found[1])
                if tick not in ticks:
                    ticks.add(tick)
                    self.events += 1
                    if sample:
                        sampling.delays.append(now - parse_iso(found[3].decode()))
            pos = buf.find(TICK_HEAD, pos + 1)
        self.tail = buf[-TICK_TAIL:]

    def connection_lost(self, exc: Exception | None) -> None:
        self.ended = True
        if not self.ready.done():
            self.ready.set_result(0)


async def _open(
    port: int, token: str, count: int, stalled: int, sampling: _Sampling, path: str = STREAM_PATH, coalesced: bool = False
) -> tuple[list[SseClient], list[str]]:
    loop = asyncio.get_running_loop()
    request = (
        f"GET {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nAuthorization: Bearer {token}\r\nAccept: text/event-stream\r\n\r\n"
    ).encode()
    gate = asyncio.Semaphore(CONNECT_CONCURRENCY)
    clients: list[SseClient] = []
    errors: list[str] = []

    async def open_one(stall: bool) -> None:
        async with gate:
            ready: asyncio.Future[int] = loop.create_future()
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            if stall:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, STALLED_RCVBUF)
            sock.setblocking(False)
            try:
                await loop.sock_connect(sock, (HOST, port))
                _, client = await loop.create_connection(lambda: SseClient(request, sampling, ready, stall, coalesced), sock=sock)
                status = await asyncio.wait_for(ready, CONNECT_TIMEOUT_S)
            except (OSError, TimeoutError) as err:
                sock.close()
                errors.append(f"{type(err).__name__}: {err}")
                return
            clients.append(client)
            if status != 200:
                errors.append(f"HTTP {status}")

    await asyncio.gather(*(open_one(i < stalled) for i in range(count + stalled)))
    return clients, errors


async def _client_loop(conn: Connection) -> None:
    loop = asyncio.get_running_loop()
    commands: asyncio.Queue[tuple[Any, ...]] = asyncio.Queue()

    def on_command() -> None:
        try:
            commands.put_nowait(conn.recv())
        except (EOFError, OSError):
            loop.remove_reader(conn.fileno())
            commands.put_nowait(("quit",))

    loop.add_reader(conn.fileno(), on_command)
    sampling = _Sampling()
    clients: list[SseClient] = []
    marked_at = marked_wall = 0.0
    interval_ms = 0  # 0: a per-frame stream
    try:
        while True:
            command = await commands.get()
            kind = command[0]
            if kind == "open":
                _, port, token, count, stalled, path, interval_ms = command
                sampling.interval = max(0.1, count / SAMPLE_READS_PER_S)
                clients, errors = await _open(port, token, count, stalled, sampling, path, interval_ms > 0)
                conn.send({"errors": errors})
            elif kind == "mark":
                for client in clients:
                    client.marked = client.events
                sampling.delays, sampling.ages, sampling.on = [], [], True
                marked_at, marked_wall = time.monotonic(), time.time()
                conn.send({})
            elif kind == "collect":
                sampling.on = False
                readers = [c for c in clients if not c.stalled]
                first = last = 0
                if interval_ms:  # the ticks due in the window: from its start to TICK_GRACE_S before its end
                    first = math.ceil(marked_wall * 1000 / interval_ms)
                    last = math.floor((time.time() - TICK_GRACE_S) * 1000 / interval_ms)
                conn.send(
                    {
                        "window_s": time.monotonic() - marked_at,
                        "events": [c.events - c.marked for c in readers],
                        "dropped": sum(1 for c in readers if c.reset or c.ended),
                        "delays": sampling.delays,
                        "ages": sampling.ages,
                        "ticks_due": max(0, last - first + 1),
                        "ticks": [sum(1 for t in c.ticks if first <= t <= last) for c in readers] if interval_ms else [],
                        "ticks_seen": sorted({t for c in readers for t in c.ticks if first <= t <= last}),
                    }
                )
            elif kind == "close":
                for client in clients:
                    if client.transport is not None:
                        client.transport.abort()
                clients = []
                await asyncio.sleep(0.1)
                conn.send({})
            elif kind == "quit":
                break
    finally:
        for client in clients:
            if client.transport is not None:
                client.transport.abort()


def client_main(conn: Connection) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        asyncio.run(_client_loop(conn))
    except Exception as err:  # noqa: BLE001 - reported to the parent instead of a traceback in a child
        with contextlib.suppress(OSError):
            conn.send({"error": f"{type(err).__name__}: {err}"})


# -- the run --------------------------------------------------------------------------------------


def http(port: int, path: str, body: Any = None, token: str | None = None, timeout: float = 30.0) -> tuple[int, Any]:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"http://{HOST}:{port}{path}", data=data, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            raw = response.read()
            status = response.status
    except urllib.error.HTTPError as err:
        raw, status = err.read(), err.code
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode(errors="replace")


def free_port() -> int:
    from tests.harness import free_port as harness_free_port

    return harness_free_port()


class Bench:
    """The broker, the hub, the bare server, the generator and the client processes of one run."""

    def __init__(self, args: argparse.Namespace, temp_dir: Path) -> None:
        self.args = args
        self.temp_dir = temp_dir
        self.context = multiprocessing.get_context("spawn")
        self.broker: Any = None
        self.hub: subprocess.Popen[bytes] | None = None
        self.hub_port = free_port()
        self.bare: Any = None
        self.bare_port = free_port()
        self.generator: Any = None
        self.published = self.context.RawValue("q", 0)
        self.gen_errors = self.context.RawValue("q", 0)
        self.clients: list[tuple[Any, Connection]] = []
        self.token = ""

    def start(self) -> None:
        from tests.harness import Mosquitto

        print("starting Mosquitto, the hub and the bare server ...", flush=True)
        self.broker = Mosquitto(self.temp_dir / "mosquitto", extra_config="max_queued_messages 100000\n")
        self.broker.start()
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
        with open(self.temp_dir / "hub.log", "wb") as log:
            self.hub = subprocess.Popen([sys.executable, "-m", "hark_fleet.hub", "run"], env=env, stdout=log, stderr=log)
        deadline = time.monotonic() + READY_TIMEOUT_S
        while http_status(self.hub_port, "/readyz") != 200:
            if self.hub.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the hub did not become ready:\n" + (self.temp_dir / "hub.log").read_text()[-3000:])
            time.sleep(0.2)
        status, payload = http(self.hub_port, "/api/v1/auth/login", {"username": "admin", "password": password})
        if status != 200:
            raise RuntimeError(f"login: HTTP {status} {payload}")
        self.token = payload["data"]["token"]
        if "bare" in self.args.subjects:
            self.bare = self.context.Process(
                target=bare_main, args=(self.bare_port, self.broker.host, self.broker.port), name="bare"
            )
            self.bare.start()
        print(f"enrolling {self.args.nodes} nodes ...", flush=True)
        node_ids = []
        for i in range(self.args.nodes):
            status, payload = http(self.hub_port, "/api/v1/nodes/enroll", {"name": f"fanout-{i:04d}"}, self.token)
            if status != 201:
                raise RuntimeError(f"enroll: HTTP {status} {payload}")
            node_ids.append(payload["data"]["node"]["id"])
        self.generator = self.context.Process(
            target=generator_main,
            args=(self.broker.host, self.broker.port, node_ids, self.published, self.gen_errors),
            name="generator",
        )
        self.generator.start()
        for i in range(self.args.client_procs):
            receiver, sender = self.context.Pipe()
            process = self.context.Process(target=client_main, args=(sender,), name=f"sse-clients-{i}")
            process.start()
            sender.close()
            self.clients.append((process, receiver))
        self.sleep(3.0)  # the hub learns every node's site from the first frames
        if self.hub_meters() <= 0:
            raise RuntimeError("the hub has not received any meter frame")

    def check_alive(self) -> None:
        if self.hub is not None and self.hub.poll() is not None:
            raise RuntimeError(f"the hub exited with {self.hub.returncode}")
        for process in [self.bare, self.generator, *(p for p, _ in self.clients)]:
            if process is not None and not process.is_alive():
                raise RuntimeError(f"{process.name} exited with {process.exitcode}")
        if self.gen_errors.value:
            raise RuntimeError("the generator lost its broker connection")

    def sleep(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            time.sleep(min(left, 0.25))
            self.check_alive()

    def stop_all(self) -> None:
        for _, conn in self.clients:
            with contextlib.suppress(OSError, ValueError):
                conn.send(("quit",))
        for process in [*(p for p, _ in self.clients), self.generator, self.bare]:
            if process is None:
                continue
            process.join(3)
            if process.is_alive():
                process.terminate()
                process.join(3)
            if process.is_alive():
                process.kill()
                process.join()
        if self.hub is not None and self.hub.poll() is None:
            self.hub.terminate()
            try:
                self.hub.wait(20)
            except subprocess.TimeoutExpired:
                self.hub.kill()
                self.hub.wait()
        if self.broker is not None:
            self.broker.stop()

    def metric(self, name: str, label: str = "") -> float:
        status, text = http(self.hub_port, "/metrics", token=self.token)
        found = re.search(rf"^{name}{re.escape(label)} (\S+)$", text if isinstance(text, str) else "", re.M)
        return float(found[1]) if found else 0.0

    def hub_meters(self) -> float:
        return self.metric("hark_mqtt_messages_received_total", '{kind="meters"}')

    def ask(self, commands: list[tuple[Any, ...]], timeout: float = REPLY_TIMEOUT_S) -> list[dict[str, Any]]:
        for (_, conn), command in zip(self.clients, commands, strict=True):
            conn.send(command)
        replies = []
        for process, conn in self.clients:
            deadline = time.monotonic() + timeout
            while not conn.poll(0.25):
                self.check_alive()
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{process.name} did not answer {commands[0][0]!r}")
            reply = conn.recv()
            if "error" in reply:
                raise RuntimeError(f"{process.name}: {reply['error']}")
            replies.append(reply)
        return replies

    def round(self, subject: str, number: int, count: int) -> rounds.Round:
        """One subject with `count` reading clients (and the stalled ones): its figures."""
        args = self.args
        measured = rounds.Round(subject, number)
        on_hub = subject != "bare"
        port = self.hub_port if on_hub else self.bare_port
        pid = self.hub.pid if on_hub and self.hub is not None else self.bare.pid
        interval_ms = args.interval_ms if subject == "coalesced" else 0
        path = f"{STREAM_PATH}?coalesce={args.coalesce}" if interval_ms else STREAM_PATH
        procs = len(self.clients)
        share = [count // procs + (1 if i < count % procs else 0) for i in range(procs)]
        stalled = [args.stalled // procs + (1 if i < args.stalled % procs else 0) for i in range(procs)]
        dropped_before = self.metric("hark_sse_clients_dropped_total", '{stream="meters"}')
        opened = self.ask(
            [("open", port, self.token, share[i], stalled[i], path, interval_ms) for i in range(procs)], CONNECT_TIMEOUT_S * 3
        )
        errors = [e for r in opened for e in r["errors"]]
        self.sleep(args.warmup)
        hub_before, cpu_before = self.hub_meters(), cpu_s(pid)
        sent_before, sent_t0 = self.published.value, time.monotonic()
        clients_before = [cpu_s(p.pid) for p, _ in self.clients]
        self.ask([("mark",)] * procs)
        self.sleep(args.duration)
        collected = self.ask([("collect",)] * procs)
        sent_after, sent_t1 = self.published.value, time.monotonic()
        hub_after, cpu_after = self.hub_meters(), cpu_s(pid)
        window = sent_t1 - sent_t0  # the CPU readings are taken right around it
        clients_after = [cpu_s(p.pid) for p, _ in self.clients]
        client_cpu = [100 * (b - a) / window for a, b in zip(clients_before, clients_after, strict=True) if a is not None and b]
        rss = rss_mb(pid)
        self.ask([("close",)] * procs)
        dropped_by_hub = self.metric("hark_sse_clients_dropped_total", '{stream="meters"}') - dropped_before
        published = sent_after - sent_before
        offered = published / (sent_t1 - sent_t0)  # frames/s the generator published, each client's due
        rates = [e / r["window_s"] for r in collected for e in r["events"]]  # frames/s each connected reader got
        delays = sorted(d * 1000 for r in collected for d in r["delays"])
        extra: dict[str, float] = {}
        if interval_ms:  # the share of the ticks due in the window that each reader got
            shares = [got / r["ticks_due"] for r in collected for got in r["ticks"] if r["ticks_due"]]
            delivery = 100 * sum(shares) / count  # a reader never connected: 0
            slowest = 100 * min(shares, default=0.0)
            # The ticks the hub emitted: those some reader got (a tick it skipped, its loop late, nobody got).
            due = min((r["ticks_due"] for r in collected), default=0)
            emitted = len({t for r in collected for t in r["ticks_seen"]})
            extra["emitted_pct"] = 100 * emitted / due if due else 0.0
            extra["of_emitted_pct"] = (
                100 * sum(r_got for r in collected for r_got in r["ticks"]) / (emitted * count) if emitted else 0.0
            )
            ages = sorted(a * 1000 for r in collected for a in r["ages"])
        else:
            delivery = 100 * sum(rates) / (offered * count) if offered else 0.0
            slowest = 100 * min(rates) / offered if rates and offered else 0.0
            ages = delays
        figures: dict[str, float] = {
            "delivery_pct": delivery,
            "slowest_pct": slowest,
            "age_p50_ms": _percentile(ages, 0.50),
            "age_p99_ms": _percentile(ages, 0.99),
            "events_per_s": sum(rates) / len(rates) if rates else 0.0,  # per reader: frames, or ticks when coalesced
            **extra,
            "p50_ms": _percentile(delays, 0.50),
            "p99_ms": _percentile(delays, 0.99),
            "dropped": sum(r["dropped"] for r in collected) + max(0, count - len(rates)),  # ... or never connected
            "connect_errors": len(errors),
            "published_per_s": offered,
            "cpu_pct": 100 * (cpu_after - cpu_before) / window if cpu_before is not None and cpu_after is not None else -1,
            "rss_mb": rss if rss is not None else -1,
            "client_cpu_pct": max(client_cpu, default=-1.0),  # the busiest client process: near 100 %, the clients limit
        }
        if on_hub:
            figures["intake_pct"] = 100 * (hub_after - hub_before) / published if published else 0.0
            figures["hub_dropped"] = dropped_by_hub
        return measured.done(**figures)


def http_status(port: int, path: str) -> int:
    try:
        return http(port, path, timeout=2)[0]
    except OSError:
        return 0


def _percentile(values: list[float], fraction: float) -> float:
    if not values:
        return float("nan")
    return values[min(len(values) - 1, int(fraction * len(values)))]


# -- report -----------------------------------------------------------------------------------------


def report(done: list[rounds.Round], counts: list[int], args: argparse.Namespace, load_at_start: float) -> bool:
    """Print the figures; whether the hub met the targets at every count."""
    print()
    print(f"hark hub meter fan-out (SSE): {args.nodes} nodes x {METER_HZ:g} Hz, {args.rounds} alternating rounds per count")
    print(f"  {rounds.load_text(done)}; load before the bench started {load_at_start:.2f}")
    warning = rounds.busy_warning(load_at_start)
    if warning:
        print("  " + warning)
    if args.stalled:
        print(f"  every round also had {args.stalled} stalled client(s) (headers read, then nothing), not counted below")
    ok = True
    print()
    header = f"{'clients':>7}  {'subject':<5}  {'delivery %':<22} {'slowest %':<22} {'p50 ms':<20} {'p99 ms':<22} "
    header += f"{'dropped':<9} {'cpu % core':<18} {'rss MB':<14} {'hub intake %':<20}"
    print(header)
    for count in counts:
        of_count = [r for r in done if r.figures.get("clients") == count]
        for subject in SUBJECTS:

            def s(figure: str, fmt: str = "{:.1f}", subject: str = subject, of_count: list[rounds.Round] = of_count) -> str:
                return rounds.summarize(of_count, subject, figure).text(fmt)

            print(
                f"{count:>7}  {subject:<5}  {s('delivery_pct', '{:.2f}'):<22} {s('slowest_pct', '{:.2f}'):<22} "
                f"{s('p50_ms'):<20} {s('p99_ms'):<22} {s('dropped', '{:.0f}'):<9} {s('cpu_pct', '{:.0f}'):<18} "
                f"{s('rss_mb', '{:.0f}'):<14} {s('intake_pct', '{:.2f}') if subject == 'hub' else '':<20}"
            )
        delivery = rounds.summarize(of_count, "hub", "delivery_pct")
        p99 = rounds.summarize(of_count, "hub", "p99_ms")
        met = delivery.median >= 100 * TARGET_DELIVERY and p99.median < TARGET_P99_MS
        ok = ok and met
        ratio = rounds.ratios(of_count, "hub", "bare", "delivery_pct")
        print(
            f"         hub/bare delivery per round {ratio.text('{:.3f}')}; hub {'MEETS' if met else 'MISSES'} "
            f">= {100 * TARGET_DELIVERY:.0f} % delivered and p99 < {TARGET_P99_MS:.0f} ms (medians)"
            + (
                f"; hub dropped {rounds.summarize(of_count, 'hub', 'hub_dropped').text('{:.0f}')} client(s) per round"
                if args.stalled
                else ""
            )
        )
    print()
    print("per round (load average before -> after):")
    for r in done:
        f = r.figures
        print(
            f"  round {r.number + 1} {r.subject:<4} {int(f['clients']):>5} clients: delivery {f['delivery_pct']:.2f} %, "
            f"p99 {f['p99_ms']:.0f} ms, dropped {f['dropped']:.0f}, cpu {f['cpu_pct']:.0f} % (busiest client process "
            f"{f['client_cpu_pct']:.0f} %), published {f['published_per_s']:,.0f}/s, connect errors {f['connect_errors']:.0f}, "
            f"load {r.load_before:.2f} -> {r.load_after:.2f}"
        )
    return ok


def report_coalesced(done: list[rounds.Round], counts: list[int], args: argparse.Namespace, load_at_start: float) -> bool:
    """--mode coalesced: the hub's per-frame stream against its coalesced one; whether the coalesced one met the targets."""
    print()
    print(
        f"hark hub meter stream, per-frame against coalesced ({args.coalesce}): {args.nodes} nodes x {METER_HZ:g} Hz, "
        f"{args.rounds} alternating rounds per count"
    )
    print(f"  {rounds.load_text(done)}; load before the bench started {load_at_start:.2f}")
    warning = rounds.busy_warning(load_at_start)
    if warning:
        print("  " + warning)
    print("  delivery: per-frame, the frames each reader got of those published; coalesced, the ticks each reader got of")
    print(f"  those due in the window (tick numbers, so a tick the hub skipped counts as lost; due up to {TICK_GRACE_S:g} s")
    print("  before the window closed). delay: per-frame, frame published -> received; coalesced, tick emitted (its `ts`,")
    print("  the hub's clock when it encoded the tick) -> received. frame age: every sampled frame, published -> received.")
    if args.stalled:
        print(f"  every round also had {args.stalled} stalled client(s) (headers read, then nothing), not counted below")
    ok = True
    print()
    header = f"{'clients':>7}  {'subject':<9}  {'delivery %':<22} {'slowest %':<22} {'delay p50 ms':<18} {'delay p99 ms':<20} "
    header += f"{'frame age p99 ms':<20} {'events/s':<18} {'dropped':<12} {'hub cpu %':<16} {'rss MB':<14} {'intake %':<20}"
    print(header)
    for count in counts:
        of_count = [r for r in done if r.figures.get("clients") == count]
        for subject in COALESCED_SUBJECTS:

            def s(figure: str, fmt: str = "{:.1f}", subject: str = subject, of_count: list[rounds.Round] = of_count) -> str:
                return rounds.summarize(of_count, subject, figure).text(fmt)

            print(
                f"{count:>7}  {subject:<9}  {s('delivery_pct', '{:.2f}'):<22} {s('slowest_pct', '{:.2f}'):<22} "
                f"{s('p50_ms'):<18} {s('p99_ms'):<20} {s('age_p99_ms'):<20} {s('events_per_s', '{:.0f}'):<18} "
                f"{s('dropped', '{:.0f}'):<12} {s('cpu_pct', '{:.0f}'):<16} {s('rss_mb', '{:.0f}'):<14} "
                f"{s('intake_pct', '{:.2f}'):<20}"
            )
        delivery = rounds.summarize(of_count, "coalesced", "delivery_pct")
        emitted = rounds.summarize(of_count, "coalesced", "emitted_pct")
        of_emitted = rounds.summarize(of_count, "coalesced", "of_emitted_pct")
        p99 = rounds.summarize(of_count, "coalesced", "p99_ms")
        met = delivery.median >= 100 * TARGET_DELIVERY and p99.median < TARGET_TICK_P99_MS
        ok = ok and met
        cpu = rounds.ratios(of_count, "coalesced", "per-frame", "cpu_pct")
        print(
            f"         coalesced: the hub emitted {emitted.text('{:.2f}')} % of the ticks due (a late loop skips ticks) and "
            f"the readers got {of_emitted.text('{:.2f}')} % of those it emitted"
        )
        print(
            f"         coalesced/per-frame hub CPU per round {cpu.text('{:.2f}')}; coalesced {'MEETS' if met else 'MISSES'} "
            f">= {100 * TARGET_DELIVERY:.0f} % of the ticks due delivered and tick p99 < {TARGET_TICK_P99_MS:.0f} ms (medians)"
        )
    print()
    print("per round (load average before -> after):")
    for r in done:
        f = r.figures
        print(
            f"  round {r.number + 1} {r.subject:<9} {int(f['clients']):>5} clients: delivery {f['delivery_pct']:.2f} % "
            f"(slowest {f['slowest_pct']:.1f} %"
            + (f", hub emitted {f['emitted_pct']:.1f} % of the ticks due" if "emitted_pct" in f else "")
            + f"), delay p99 {f['p99_ms']:.0f} ms, frame age p99 {f['age_p99_ms']:.0f} ms, "
            f"dropped {f['dropped']:.0f}, hub cpu {f['cpu_pct']:.0f} % (busiest client process {f['client_cpu_pct']:.0f} %), "
            f"connect errors {f['connect_errors']:.0f}, load {r.load_before:.2f} -> {r.load_after:.2f}"
        )
    return ok


# -- main -------------------------------------------------------------------------------------------


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def run(args: argparse.Namespace) -> int:
    signal.signal(signal.SIGTERM, _interrupt)  # a SIGTERM cleans up like Ctrl-C
    load_at_start = rounds.load_average()
    temp_dir = Path(tempfile.mkdtemp(prefix="hark-fanout-"))
    bench = Bench(args, temp_dir)
    done: list[rounds.Round] = []
    try:
        bench.start()
        for count in args.clients:
            for number, subject in rounds.alternate(args.subjects, args.rounds):
                print(f"{count} clients, round {number + 1}, {subject}: {args.warmup:g} s + {args.duration:g} s ...", flush=True)
                measured = bench.round(subject, number, count)
                measured.figures["clients"] = count
                f = measured.figures
                print(
                    f"  delivery {f['delivery_pct']:.2f} % (slowest {f['slowest_pct']:.1f} %), p99 {f['p99_ms']:.0f} ms, "
                    f"dropped {f['dropped']:.0f}, cpu {f['cpu_pct']:.0f} %, load {measured.load_before:.2f}",
                    flush=True,
                )
                done.append(measured)
        bench.check_alive()
        summary = report_coalesced if args.mode == "coalesced" else report
        return 0 if summary(done, args.clients, args, load_at_start) else 2
    except KeyboardInterrupt:
        print("\ninterrupted; stopping everything", file=sys.stderr)
        return 130
    except (RuntimeError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        bench.stop_all()
        shutil.rmtree(temp_dir, ignore_errors=True)


def _counts(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError as err:
        raise argparse.ArgumentTypeError("expected a comma-separated list of client counts") from err
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError("client counts must be positive")
    return values


def _coalesce_ms(text: str) -> int:
    found = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s)", text)
    if found is None:
        raise argparse.ArgumentTypeError("a duration such as 100ms or 0.5s")
    return round(float(found[1]) * (1 if found[2] == "ms" else 1000))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="The hark hub's SSE fan-out of live meters against a bare Tornado server (--mode fanout), or its "
        "per-frame meter stream against its coalesced one (--mode coalesced)."
    )
    parser.add_argument(
        "--mode",
        choices=("fanout", "coalesced"),
        default="fanout",
        help="fanout: bare against hub (default); coalesced: the hub's per-frame stream against ?coalesce= "
        "(defaults 1,000 clients, 100 nodes)",
    )
    parser.add_argument("--coalesce", default=DEFAULT_COALESCE, help="--mode coalesced: the tick (default 100ms)")
    parser.add_argument("--nodes", type=int, default=None, help="nodes publishing meters at 10 Hz (default 100; --quick 20)")
    parser.add_argument(
        "--clients",
        type=_counts,
        default=None,
        help="reading client counts (default 100,200, with --mode coalesced 1000; --quick 10, coalesced 50)",
    )
    parser.add_argument("--rounds", type=int, default=rounds.MIN_ROUNDS, help="alternating rounds per count (default 3)")
    parser.add_argument("--duration", type=float, default=None, help="seconds measured per round (default 10; --quick 2)")
    parser.add_argument(
        "--warmup", type=float, default=None, help="seconds between connecting and measuring (default 5; --quick 1)"
    )
    parser.add_argument("--client-procs", type=int, default=2, help="processes running the SSE clients (default 2)")
    parser.add_argument("--stalled", type=int, default=0, help="clients per round that read the headers and then nothing")
    parser.add_argument("--quick", action="store_true", help="smoke run: 20 nodes, 10 clients, 3 rounds of 1 s + 2 s")
    args = parser.parse_args(argv)
    coalesced = args.mode == "coalesced"
    if args.quick:
        defaults = (20, [50] if coalesced else [10], 2.0, 1.0)
    else:
        defaults = (100, DEFAULT_COALESCED_CLIENTS if coalesced else DEFAULT_CLIENTS, 10.0, 5.0)
    args.subjects = COALESCED_SUBJECTS if coalesced else SUBJECTS
    try:
        args.interval_ms = _coalesce_ms(args.coalesce) if coalesced else 0
    except argparse.ArgumentTypeError as err:
        parser.error(f"--coalesce: {err}")
    for name, default in zip(("nodes", "clients", "duration", "warmup"), defaults, strict=True):
        if getattr(args, name) is None:
            setattr(args, name, default)
    if args.nodes < 1 or args.duration <= 0 or args.warmup < 0 or args.client_procs < 1 or args.stalled < 0:
        parser.error("--nodes and --client-procs at least 1, --duration positive, --warmup and --stalled not negative")
    if args.rounds < rounds.MIN_ROUNDS:
        parser.error(f"--rounds at least {rounds.MIN_ROUNDS}")
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
