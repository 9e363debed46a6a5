"""Live meter fan-out of the hark hub over SSE: how many clients it serves before delivery falls behind.

What is measured
----------------
``--nodes`` enrolled nodes (default 100) each publish a meter frame at 10 Hz (and a heartbeat
every 10 s), so the hub takes in ``--nodes`` x 10 frames/s (1000 by default). For each count C of
``--clients`` (default 1, 2, 5, 10, 20, 50, 100, 200, 500), C clients open
``GET /api/v1/meter-events`` without a ``node_id`` filter (so each follows every node: 1000
events/s per client), and after a ``--warmup`` (default 10 s: connecting a hundred clients or
more holds up the hub's loop, and on a busy machine the backlog that leaves takes several seconds
to drain; with 5 s, 100 clients failed on a busy machine where 15 s let them keep up) the window
of ``--duration`` seconds (default 10) gives:

* frames/s delivered per client (mean and the slowest client), against the offered rate (meter
  frames the generator published per second in the window), and the total events/s out;
* delay from publish to the client: every frame's ``ts`` is its publish time (epoch microseconds
  as ISO 8601, set by ``bench/fleet.py``'s generator), and a client takes its receive time
  (``time.time()`` when the bytes were read) minus ``ts`` for every frame of a sample of its
  reads (one read per client every 0.1 s or so). Both clocks are this machine's. The delay
  includes the broker's hop to the hub (Mosquitto's default leaves Nagle on; ``--tcp-nodelay``
  turns it off). The drift is the least-squares slope of those delays over the window: a delay
  that keeps growing means the hub falls further behind, however low it still is;
* frames per read: events received over socket reads of all clients, i.e. how many frames the
  hub writes per wake-up of a client. It is about 10 with one client already, as the broker's
  Nagle hands the hub frames in bursts (``--tcp-nodelay`` lowers it), and it rises when the hub's
  loop falls behind and finds more frames queued per client;
* clients dropped: the hub gives every subscriber a queue of ``hub.meters.SUBSCRIBER_QUEUE``
  frames (256: about 0.26 s at 1000 frames/s) and drops one that falls further behind with
  ``event: reset``; any reset or ended stream in the warm-up or the window counts;
* the hub's meter frames received per second (``hark_mqtt_messages_received_total{kind="meters"}``
  from ``GET /metrics``), which shows whether the hub's ingest itself stays level (its MQTT thread
  counts them, and it shares the GIL with the loop);
* CPU (utime + stime from ``/proc``) over the window as % of one core: the hub process, its main
  thread (the asyncio loop: MQTT dispatch and all SSE writes) and its other threads, the client
  processes (all and the busiest), the generator and the broker; "machine busy" is all CPUs from
  ``/proc/stat`` and "others" what processes outside this benchmark used.

A step *falls behind* when a client is dropped (or its stream ends, or it cannot connect), when
the slowest client gets less than 95 % of the offered rate, or when the p99 delay exceeds 1 s.
The headline is the largest client count that kept up below the first step that fell behind.
The ramp stops at the first step that falls behind unless ``--all-steps`` is given. A step that
kept up by that definition but whose delay drifted up by more than 10 ms/s, or whose hub took in
less than 98 % of the offered frames, is flagged in the notes: it would not keep up for long.

How
---
The broker (Mosquitto, anonymous, on a free loopback port), the hub (``python -m hark_fleet.hub run``,
SQLite in a temporary directory, ``HARK_MQTT_URL`` to that broker, log level WARNING), the
enrollment through ``POST /api/v1/nodes/enroll`` and the load generator (a separate process
publishing raw MQTT 3.1.1 as every node on one socket) are ``bench/fleet.py``'s, imported. The
hub's embedded broker is not used: it only lets a node publish under its own topics after
logging in with its credential, while the generator publishes for all nodes on one anonymous
connection; an external broker also keeps the broker's CPU out of the hub's figures.

The SSE clients run in ``--client-procs`` separate processes (default 2), each an asyncio loop
with raw ``asyncio.Protocol`` connections (one HTTP/1.1 request with ``Authorization: Bearer``
of the admin's session, then only reads). A client parses minimally: it counts
``event: meter`` and ``event: reset`` in the raw bytes (Tornado sends every flush as one chunk
of whole events, so chunk headers never split an event line) and looks for the final empty
chunk. The clients of a step are opened together (at most 32 connects at a time), all of them
closed after the window; the next step opens fresh ones. Their processes' CPU is in the report,
so a client side that is short of CPU shows.

Run it from the repository root::

    .venv/bin/python bench/meter_fanout.py [--nodes 100] [--clients 1,2,5,10,20,50,100,200,500]
                                           [--duration 10] [--warmup 10] [--client-procs 2]
                                           [--all-steps] [--tcp-nodelay]
    .venv/bin/python bench/meter_fanout.py --quick    # smoke run: 20 nodes, 1 and 5 clients, 3 s each

It exits 0 when at least one step kept up, 2 when none did, 1 on an error, 130 on Ctrl-C.
The hub, the broker, the generator and the client processes are stopped at the end, also on
Ctrl-C, SIGTERM or an error, and the temporary directory is removed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import os
import platform
import re
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
if str(BENCH_DIR) not in sys.path:
    sys.path.insert(0, str(BENCH_DIR))

import fleet  # noqa: E402  (puts the repository root on sys.path too)
import hub_http  # noqa: E402
from fleet import CpuUse, _f, _p, _pct, _stat_cpu_s, cpu_use, enroll_nodes  # noqa: E402
from hark_fleet.hub.meters import SUBSCRIBER_QUEUE  # noqa: E402
from hub_http import HOST  # noqa: E402

TITLE = "hark hub meter fan-out benchmark (SSE)"
STREAM_PATH = "/api/v1/meter-events"
DEFAULT_CLIENTS = [1, 2, 5, 10, 20, 50, 100, 200, 500]
QUICK_NODES = 20
QUICK_CLIENTS = [1, 5]
QUICK_DURATION_S = 3.0
QUICK_WARMUP_S = 1.0
MIN_RATE_SHARE = 0.95  # a client must get at least this share of the offered frames
MAX_P99_MS = 1000.0
LOAD_WARMUP_S = 3.0  # generator running before the first step: the hub learns every node's site
CONNECT_CONCURRENCY = 32
CONNECT_TIMEOUT_S = 60.0
REPLY_TIMEOUT_S = 60.0
SAMPLE_READS_PER_S = 500.0  # per client process, at most: sampled reads (each gives every frame's delay)
CLIENT_BUSY_PCT = 80.0  # a client process above this % of a core may be part of the bottleneck
DRIFT_MS_PER_S = 10.0  # delay growing faster than this over the window: it would not keep up for long
HUB_IN_SHARE = 0.98  # the hub's ingest below this share of the offered rate: a backlog is building

METER_EVENT = b"event: meter\n"
RESET_EVENT = b"event: reset\n"
TAIL = len(METER_EVENT) - 1  # bytes kept between reads so an event line cut by TCP is counted once
assert len(RESET_EVENT) == len(METER_EVENT)
LAST_CHUNK = b"\r\n0\r\n\r\n"  # the empty chunk that ends a chunked response
TS_RE = re.compile(rb'"ts":"([^"]{1,40})"')


# -- SSE clients (run in their own processes) ------------------------------------------------


class _Sampling:
    """Delay sampling shared by the clients of one process."""

    def __init__(self) -> None:
        self.on = False
        self.interval = 0.1
        self.delays: list[tuple[float, float]] = []  # (receive time, delay s)


class SseClient(asyncio.Protocol):
    """One `GET /api/v1/meter-events` connection: counts meter events, notices resets and the end."""

    def __init__(self, request: bytes, sampling: _Sampling, ready: asyncio.Future[int]) -> None:
        self.request = request
        self.sampling = sampling
        self.ready = ready
        self.transport: asyncio.Transport | None = None
        self.head = b""
        self.status = 0
        self.tail = b""
        self.events = 0
        self.marked = 0
        self.reads = 0
        self.marked_reads = 0
        self.resets = 0
        self.ended = False
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
                if len(self.head) > 65536:
                    self._fail(0)
                return
            try:
                self.status = int(self.head.split(b" ", 2)[1])
            except (IndexError, ValueError):
                self._fail(0)
                return
            data, self.head = self.head[end + 4 :], b""
            if not self.ready.done():
                self.ready.set_result(self.status)
            if self.status != 200:
                self._fail(self.status)
                return
        self.reads += 1
        buf = self.tail + data
        self.events += buf.count(METER_EVENT)
        if RESET_EVENT in buf:
            self.resets += 1
        if buf.endswith(LAST_CHUNK):
            self.ended = True
        self.tail = buf[-TAIL:]
        sampling = self.sampling
        if sampling.on:
            now = time.time()
            if now >= self.next_sample:
                self.next_sample = now + sampling.interval
                for match in TS_RE.finditer(buf):
                    sampling.delays.append((now, now - fleet.parse_iso(match[1].decode())))

    def _fail(self, status: int) -> None:
        if not self.ready.done():
            self.ready.set_result(status)
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.ended = True
        if not self.ready.done():
            self.ready.set_result(0)


async def _open_clients(
    port: int, token: str, count: int, sampling: _Sampling
) -> tuple[list[SseClient], list[asyncio.Transport], list[str]]:
    """Open `count` streams (at most CONNECT_CONCURRENCY connects at a time); the ones that answered 200, and errors."""
    loop = asyncio.get_running_loop()
    request = (
        f"GET {STREAM_PATH} HTTP/1.1\r\nHost: {HOST}:{port}\r\nAuthorization: Bearer {token}\r\nAccept: text/event-stream\r\n\r\n"
    ).encode()
    gate = asyncio.Semaphore(CONNECT_CONCURRENCY)
    clients: list[SseClient] = []
    transports: list[asyncio.Transport] = []
    errors: list[str] = []

    async def open_one() -> None:
        async with gate:
            ready: asyncio.Future[int] = loop.create_future()
            try:
                transport, client = await loop.create_connection(lambda: SseClient(request, sampling, ready), HOST, port)
            except OSError as err:
                errors.append(f"connect: {type(err).__name__}: {err}")
                return
            transports.append(transport)
            try:
                status = await asyncio.wait_for(ready, CONNECT_TIMEOUT_S)
            except TimeoutError:
                errors.append("no response headers in time")
                return
            if status == 200:
                clients.append(client)
            else:
                errors.append(f"HTTP {status}" if status else "connection closed before the response")

    await asyncio.gather(*(open_one() for _ in range(count)))
    return clients, transports, errors


async def _client_loop(conn: Connection, port: int, token: str) -> None:
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
    transports: list[asyncio.Transport] = []
    marked_at = 0.0
    try:
        while True:
            command = await commands.get()
            kind = command[0]
            if kind == "open":
                count = command[1]
                sampling.interval = max(0.1, count / SAMPLE_READS_PER_S)
                clients, transports, errors = await _open_clients(port, token, count, sampling)
                conn.send({"opened": len(clients), "errors": errors})
            elif kind == "mark":
                for client in clients:
                    client.marked, client.marked_reads = client.events, client.reads
                sampling.delays = []
                sampling.on = True
                marked_at = time.monotonic()
                conn.send({"marked": True})
            elif kind == "collect":
                window_s = time.monotonic() - marked_at
                sampling.on = False
                conn.send(
                    {
                        "window_s": window_s,
                        "events": [c.events - c.marked for c in clients],
                        "reads": sum(c.reads - c.marked_reads for c in clients),
                        "resets": sum(1 for c in clients if c.resets),
                        "ended": sum(1 for c in clients if c.ended and not c.resets),
                        "delays": sampling.delays,
                    }
                )
                sampling.delays = []
            elif kind == "close":
                for transport in transports:
                    transport.close()
                clients, transports = [], []
                await asyncio.sleep(0.05)  # let the transports close
                conn.send({"closed": True})
            elif kind == "quit":
                break
    finally:
        for transport in transports:
            transport.close()


def client_main(conn: Connection, port: int, token: str) -> None:
    """Entry point of a client process: obey the parent's commands until "quit"."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # on Ctrl-C the parent stops this process
    try:
        asyncio.run(_client_loop(conn, port, token))
    except Exception as err:  # noqa: BLE001 - reported to the parent instead of a traceback in a child
        with contextlib.suppress(OSError):
            conn.send({"error": f"{type(err).__name__}: {err}"})


# -- results ------------------------------------------------------------------------------------


@dataclass
class StepResult:
    """One client count: what the window measured."""

    clients: int
    connected: int
    connect_errors: list[str]
    window_s: float
    offered_rate: float  # meter frames/s the generator published
    hub_in_rate: float | None  # meter frames/s the hub counted
    client_rates: list[float]  # frames/s each connected client received
    dropped: int  # clients that got `event: reset` (warm-up or window)
    ended: int  # streams that ended without a reset
    delays_ms: list[float]
    drift_ms_per_s: float  # least-squares slope of the delay over the window
    reads: int  # socket reads of all clients in the window
    cpu: CpuUse
    client_procs_cpu: list[float | None] = field(default_factory=list)

    @property
    def mean_rate(self) -> float | None:
        return sum(self.client_rates) / len(self.client_rates) if self.client_rates else None

    @property
    def min_rate(self) -> float | None:
        return min(self.client_rates) if self.client_rates else None

    @property
    def total_rate(self) -> float:
        return sum(self.client_rates)

    @property
    def frames_per_read(self) -> float | None:
        return sum(self.client_rates) * self.window_s / self.reads if self.reads else None

    @property
    def warnings(self) -> list[str]:
        """Signs that a step which kept up by the definition would not for long."""
        out = []
        if self.drift_ms_per_s > DRIFT_MS_PER_S:
            out.append(f"the delay grew {self.drift_ms_per_s:,.0f} ms/s over the window")
        if self.hub_in_rate is not None and self.hub_in_rate < HUB_IN_SHARE * self.offered_rate:
            out.append(f"the hub took in {self.hub_in_rate:,.0f} of {self.offered_rate:,.0f} frames/s offered")
        return out

    @property
    def reasons(self) -> list[str]:
        """Why this step fell behind (empty: it kept up)."""
        out = []
        if self.connected < self.clients:
            out.append(f"{self.clients - self.connected} not connected")
        if self.dropped:
            out.append(f"{self.dropped} dropped")
        if self.ended:
            out.append(f"{self.ended} streams ended")
        low = self.min_rate
        if low is not None and low < MIN_RATE_SHARE * self.offered_rate:
            out.append(f"slowest client {low:,.0f} < {MIN_RATE_SHARE:.0%} of {self.offered_rate:,.0f}/s")
        p99 = _p(self.delays_ms, 0.99)
        if p99 is not None and p99 > MAX_P99_MS:
            out.append(f"p99 {p99:,.0f} ms > {MAX_P99_MS:,.0f} ms")
        if not self.client_rates:
            out.append("no client")
        return out

    @property
    def kept_up(self) -> bool:
        return not self.reasons


# -- the run ----------------------------------------------------------------------------------


class FanoutBench:
    """The processes of one run (fleet.Fleet's broker, hub and generator, plus the client processes)."""

    def __init__(self, args: argparse.Namespace, temp_dir: Path) -> None:
        self.args = args
        self.fleet = fleet.Fleet(argparse.Namespace(tcp_nodelay=args.tcp_nodelay), temp_dir)
        self.context = multiprocessing.get_context("spawn")
        self.clients: list[tuple[multiprocessing.process.BaseProcess, Connection]] = []
        self.node_ids: list[str] = []

    # -- processes -------------------------------------------------------------------------

    def start(self) -> None:
        args = self.args
        print("starting Mosquitto, the generator and the hub ...", flush=True)
        self.fleet.start_broker()
        self.fleet.start_generators(1)
        self.fleet.start_hub()
        client = self.fleet.client
        assert client is not None
        print(f"enrolling {args.nodes} nodes ...", flush=True)
        self.node_ids = enroll_nodes(self.fleet.hub_port, client.token, args.nodes)
        for i in range(args.client_procs):
            receiver, sender = self.context.Pipe()
            process = self.context.Process(
                target=client_main, args=(sender, self.fleet.hub_port, client.token), name=f"sse-clients-{i}"
            )
            process.start()
            sender.close()
            self.clients.append((process, receiver))
        print(
            f"publishing {args.nodes} nodes x {fleet.METER_HZ:g} frames/s, {LOAD_WARMUP_S:g} s before the first step ...",
            flush=True,
        )
        (_, conn, _) = self.fleet.generators[0]
        conn.send(("load", list(enumerate(self.node_ids)), len(self.node_ids)))
        self._sleep_checking(LOAD_WARMUP_S)
        if client.counters().received.get("meters", 0.0) <= 0:
            raise RuntimeError("the hub has not received any meter frame")

    def check_alive(self) -> None:
        self.fleet.check_alive()
        for process, _ in self.clients:
            if not process.is_alive():
                raise RuntimeError(f"client process {process.name} exited with code {process.exitcode}")

    def stop_all(self) -> None:
        for process, conn in self.clients:
            with contextlib.suppress(OSError, ValueError):
                if process.is_alive():
                    conn.send(("quit",))
        for process, conn in self.clients:
            process.join(3)
            if process.is_alive():
                process.terminate()
                process.join(3)
            if process.is_alive():
                process.kill()
                process.join()
            conn.close()
        self.fleet.stop_all()  # a running load gets "stop" there

    def _sleep_checking(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            time.sleep(min(left, 0.25))
            self.check_alive()

    def _ask_all(
        self, command: tuple[Any, ...] | list[tuple[Any, ...]], timeout: float = REPLY_TIMEOUT_S
    ) -> list[dict[str, Any]]:
        """Send one command to every client process (or one per process, from a list) and gather the replies."""
        commands = command if isinstance(command, list) else [command] * len(self.clients)
        for (_, conn), each in zip(self.clients, commands, strict=True):
            conn.send(each)
        replies = []
        for process, conn in self.clients:
            deadline = time.monotonic() + timeout
            while not conn.poll(0.25):
                self.check_alive()
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{process.name} did not answer {commands[0][0]!r} in {timeout:g} s")
            reply = conn.recv()
            if "error" in reply:
                raise RuntimeError(f"{process.name}: {reply['error']}")
            replies.append(reply)
        return replies

    def _client_cpu(self) -> list[float | None]:
        return [_stat_cpu_s(f"/proc/{process.pid}/stat") for process, _ in self.clients]

    def _snapshot(self) -> tuple[fleet.CpuSnapshot, list[float | None]]:
        procs = self._client_cpu()
        snap = self.fleet.snapshot()
        snap.consumer = sum(v for v in procs if v is not None)
        return snap, procs

    # -- one step ----------------------------------------------------------------------------

    def step(self, count: int, warmup_s: float, duration_s: float) -> StepResult:
        client = self.fleet.client
        assert client is not None and self.fleet.hub is not None
        shares = [count // len(self.clients) + (1 if i < count % len(self.clients) else 0) for i in range(len(self.clients))]
        opened = self._ask_all([("open", share) for share in shares], CONNECT_TIMEOUT_S + REPLY_TIMEOUT_S)
        connected = sum(r["opened"] for r in opened)
        errors = [e for r in opened for e in r["errors"]]
        self._sleep_checking(warmup_s)
        (_, _, gen_counters) = self.fleet.generators[0]
        hub_before = client.counters().received.get("meters")
        cpu_before, procs_before = self._snapshot()
        sent_before, t0 = gen_counters[fleet.C_METERS], time.monotonic()
        self._ask_all(("mark",))
        self._sleep_checking(duration_s)
        collected = self._ask_all(("collect",))
        sent_after, t1 = gen_counters[fleet.C_METERS], time.monotonic()
        cpu_after, procs_after = self._snapshot()
        hub_after = client.counters().received.get("meters")
        self._ask_all(("close",))  # on an error or Ctrl-C, stop_all ends the client processes instead
        window_s = t1 - t0
        rates = [events / r["window_s"] for r in collected for events in r["events"]]
        samples = [(at, delay * 1000) for r in collected for at, delay in r["delays"]]
        procs_cpu = [
            None if a is None or b is None else 100 * (b - a) / window_s for a, b in zip(procs_before, procs_after, strict=True)
        ]
        hub_window = cpu_after.at - cpu_before.at
        return StepResult(
            clients=count,
            connected=connected,
            connect_errors=errors,
            window_s=window_s,
            offered_rate=(sent_after - sent_before) / window_s,
            hub_in_rate=None if hub_before is None or hub_after is None else (hub_after - hub_before) / hub_window,
            client_rates=rates,
            dropped=sum(r["resets"] for r in collected),
            ended=sum(r["ended"] for r in collected),
            delays_ms=[delay for _, delay in samples],
            drift_ms_per_s=fleet._slope(samples),
            reads=sum(r["reads"] for r in collected),
            cpu=cpu_use(cpu_before, cpu_after, self.fleet.hub.pid),
            client_procs_cpu=procs_cpu,
        )


# -- report -----------------------------------------------------------------------------------


def _busiest(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return max(known) if known else None


def headline(steps: list[StepResult]) -> tuple[int | None, StepResult | None]:
    """The largest client count that kept up below the first step that fell behind, and that first step."""
    best: int | None = None
    for step in steps:
        if not step.kept_up:
            return best, step
        best = step.clients if best is None else max(best, step.clients)
    return best, None


def _tables(steps: list[StepResult], nodes: int) -> list[hub_http._TextTable]:
    delivery = []
    cpu = []
    for s in steps:
        delivery.append(
            [
                f"{s.clients:,}",
                f"{s.offered_rate:,.0f}",
                _f(s.hub_in_rate, "{:,.0f}"),
                _f(s.mean_rate, "{:,.0f}"),
                _f(s.min_rate, "{:,.0f}"),
                f"{s.total_rate:,.0f}",
                _f(_p(s.delays_ms, 0.50), "{:.1f}"),
                _f(_p(s.delays_ms, 0.99), "{:.1f}"),
                _f(max(s.delays_ms) if s.delays_ms else None, "{:.1f}"),
                f"{s.drift_ms_per_s:+,.0f}",
                f"{len(s.delays_ms):,}" if len(s.delays_ms) < 100_000 else f"{len(s.delays_ms) / 1000:,.0f}k",
                _f(s.frames_per_read, "{:.1f}"),
                f"{s.dropped + s.ended + (s.clients - s.connected):,}",
                "kept up" if s.kept_up else "FELL BEHIND",
            ]
        )
        c = s.cpu
        busiest = f" (busiest {c.hub_busiest_other:.0f} %)" if c.hub_busiest_other is not None else ""
        cpu.append(
            [
                f"{s.clients:,}",
                _pct(c.hub),
                _pct(c.hub_loop),
                _pct(c.hub_other) + busiest,
                _pct(c.consumer) + f" (busiest {_pct(_busiest(s.client_procs_cpu))})",
                _pct(c.generators),
                _pct(c.broker),
                _pct(c.machine),
                _pct(c.others),
            ]
        )
    return [
        (
            f"delivery per client count: every client follows all {nodes} nodes (measurement window)",
            [
                "clients",
                "offered frames/s",
                "hub in frames/s",
                "per client frames/s",
                "slowest client",
                "total events/s out",
                "delay p50 ms",
                "delay p99 ms",
                "max ms",
                "delay drift ms/s",
                "samples",
                "frames per read",
                "dropped",
                "verdict",
            ],
            delivery,
            1,
        ),
        (
            "CPU in the window (% of one core; machine busy and others: % of all cores)",
            [
                "clients",
                "hub",
                "hub loop thread",
                "hub other threads",
                "client processes",
                "generator",
                "broker",
                "machine busy",
                "others",
            ],
            cpu,
            1,
        ),
    ]


def _notes(steps: list[StepResult], best: int | None, first_fail: StepResult | None, nodes: int) -> list[str]:
    notes = []
    offered = nodes * fleet.METER_HZ
    if best is None:
        line = "HEADLINE: not even the first step kept up"
    else:
        line = (
            f"HEADLINE: {best:,} SSE client(s) kept up, each getting all {nodes} nodes at {fleet.METER_HZ:g} frames/s "
            f"({best * offered:,.0f} events/s out)"
        )
    if first_fail is not None:
        line += f"; {first_fail.clients:,} fell behind ({'; '.join(first_fail.reasons)})"
    else:
        line += "; no step fell behind (add larger counts to --clients to find the limit)"
    notes.append(line)
    if first_fail is not None:
        later = [s.clients for s in steps if s.kept_up and s.clients > first_fail.clients]
        if later:
            notes.append(
                f"after {first_fail.clients:,} fell behind, {', '.join(map(str, later))} kept up again: "
                "the machine is noisy, run again"
            )
    for s in steps:
        if not s.kept_up:
            notes.append(f"{s.clients:,} clients fell behind: " + "; ".join(s.reasons))
            catching_up = s.hub_in_rate is not None and s.hub_in_rate > (2 - HUB_IN_SHARE) * s.offered_rate
            if s.drift_ms_per_s < -DRIFT_MS_PER_S and catching_up and not (s.dropped or s.ended):
                notes.append(
                    f"{s.clients:,} clients: the delay fell {-s.drift_ms_per_s:,.0f} ms/s and the hub took in more than was "
                    "offered: it was still working off a backlog from connecting and the warm-up; a longer --warmup "
                    "may let this count keep up"
                )
        if s.connect_errors:
            shown = "; ".join(sorted(set(s.connect_errors))[:3])
            notes.append(f"{s.clients:,} clients: {len(s.connect_errors)} could not connect ({shown})")
        if s.kept_up and s.warnings:
            notes.append(f"{s.clients:,} clients kept up by the definition, but " + " and ".join(s.warnings))
        busy = _busiest(s.client_procs_cpu)
        if busy is not None and busy > CLIENT_BUSY_PCT:
            notes.append(
                f"WARNING {s.clients:,} clients: a client process used {busy:.0f} % of a core; the clients may be part of "
                "the bottleneck (try more --client-procs on a machine with more cores)"
            )
        if s.cpu.others is not None and s.cpu.others > fleet.NOISY_OTHERS_PCT:
            notes.append(
                f"WARNING {s.clients:,} clients: processes outside this benchmark used {s.cpu.others:.0f} % of the machine "
                "during the window; its figures are not reliable, run again on a quieter machine"
            )
    return notes


def _context(args: argparse.Namespace) -> list[tuple[str, str]]:
    cpu_count = os.cpu_count() or 1
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else "n/a"
    return [
        ("machine", f"{platform.machine()} {platform.system()} {platform.release()}"),
        ("CPUs", f"{cpu_count} (usable by this process: {usable}); load average at the end {_f(load and load[0], '{:.2f}')}"),
        ("Python", f"{platform.python_implementation()} {platform.python_version()}; {fleet._versions()}"),
        (
            "broker",
            f"{fleet._mosquitto_version()}, "
            + ("set_tcp_nodelay true" if args.tcp_nodelay else "set_tcp_nodelay false (Mosquitto's default: Nagle on)"),
        ),
        (
            "hub",
            f"python -m hark_fleet.hub run, SQLite, HARK_MQTT_URL to the broker above, log level WARNING; "
            f"SSE queue {SUBSCRIBER_QUEUE}",
        ),
        (
            "load",
            f"{args.nodes} nodes x {fleet.METER_HZ:g} meter frames/s (QoS 0) + a heartbeat every "
            f"{fleet.HEARTBEAT_INTERVAL_S:g} s, one raw MQTT generator process (bench/fleet.py)",
        ),
        (
            "clients",
            f"{args.client_procs} process(es), asyncio raw sockets, GET {STREAM_PATH} without node_id (all nodes), "
            "counting event lines, delay sampled from ts",
        ),
        (
            "parameters",
            f"clients = {', '.join(map(str, args.clients))}; warm-up {args.warmup:g} s, window {args.duration:g} s; "
            f"falls behind: a drop, slowest < {MIN_RATE_SHARE:.0%} of offered, or p99 > {MAX_P99_MS:,.0f} ms"
            + ("; all steps" if args.all_steps else "; stops at the first step that falls behind"),
        ),
    ]


# -- main ---------------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> int:
    signal.signal(signal.SIGTERM, hub_http._raise_keyboard_interrupt)  # a SIGTERM cleans up like Ctrl-C
    temp_dir = Path(tempfile.mkdtemp(prefix="hark-fanout-"))
    bench = FanoutBench(args, temp_dir)
    steps: list[StepResult] = []
    try:
        bench.start()
        for count in args.clients:
            print(f"{count} client(s): {args.warmup:g} s warm-up + {args.duration:g} s ...", flush=True)
            step = bench.step(count, args.warmup, args.duration)
            steps.append(step)
            print(
                f"  per client {_f(step.mean_rate, '{:,.0f}')} frames/s (slowest {_f(step.min_rate, '{:,.0f}')}, "
                f"offered {step.offered_rate:,.0f}), out {step.total_rate:,.0f} events/s, "
                f"delay p50 {_f(_p(step.delays_ms, 0.5), '{:.1f}')} / p99 {_f(_p(step.delays_ms, 0.99), '{:.1f}')} ms, "
                f"dropped {step.dropped}, hub CPU {_pct(step.cpu.hub)}, machine {_pct(step.cpu.machine)}: "
                + ("kept up" if step.kept_up else "FELL BEHIND (" + "; ".join(step.reasons) + ")")
                + "".join(f"; {w}" for w in step.warnings if step.kept_up),
                flush=True,
            )
            if not step.kept_up and not args.all_steps:
                break
        bench.check_alive()
        best, first_fail = headline(steps)
        fleet.print_report(_context(args), _tables(steps, args.nodes), _notes(steps, best, first_fail, args.nodes), TITLE)
        return 0 if best is not None else 2
    except KeyboardInterrupt:
        print("\ninterrupted; stopping everything", file=sys.stderr)
        return 130
    except (RuntimeError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    finally:
        # Cleanup is bounded; do not let a second Ctrl-C cut it short.
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Benchmark the hark hub's SSE fan-out of live meters.")
    parser.add_argument("--nodes", type=int, default=None, help="nodes publishing meters at 10 Hz (default 100; --quick 20)")
    parser.add_argument(
        "--clients",
        type=_counts,
        default=None,
        help=f"SSE client counts, ramped in order (default {','.join(map(str, DEFAULT_CLIENTS))}; --quick 1,5)",
    )
    parser.add_argument("--duration", type=float, default=None, help="seconds measured per step (default 10; --quick 3)")
    parser.add_argument(
        "--warmup", type=float, default=None, help="seconds between connecting and measuring (default 10; --quick 1)"
    )
    parser.add_argument("--client-procs", type=int, default=2, help="processes running the SSE clients (default 2)")
    parser.add_argument("--all-steps", action="store_true", help="run every step, not only up to the first that falls behind")
    parser.add_argument(
        "--tcp-nodelay",
        action="store_true",
        help="set_tcp_nodelay true on the broker (its default leaves Nagle on, which delays small sends to the hub)",
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: 20 nodes, 1 and 5 clients, 1 s + 3 s each")
    args = parser.parse_args(argv)
    defaults = (
        (QUICK_NODES, QUICK_CLIENTS, QUICK_DURATION_S, QUICK_WARMUP_S) if args.quick else (100, DEFAULT_CLIENTS, 10.0, 10.0)
    )
    for name, default in zip(("nodes", "clients", "duration", "warmup"), defaults, strict=True):
        if getattr(args, name) is None:
            setattr(args, name, default)
    if args.nodes < 1 or args.duration <= 0 or args.warmup < 0 or args.client_procs < 1:
        parser.error("--nodes and --client-procs must be at least 1, --duration positive, --warmup not negative")
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
