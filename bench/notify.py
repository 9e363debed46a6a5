"""Notification delivery (issue 21): the hub's throughput and CPU with 1,000 queued notifications to a local webhook,
and the lag of its event loop meanwhile.

What is measured
----------------
Each round puts ``--count`` notifications (default 1,000) into the hub's outbox at once and lets the hub deliver
them to a webhook receiver on loopback:

* throughput, from the hub's own timestamps: notifications delivered / (the last ``delivered_at`` - the
  ``created_at`` the router gave them), read from the hub's database after the round; and the receiver's view,
  requests received / (its last arrival - the same ``created_at``);
* the hub process's CPU over that interval (psutil, user + system of every thread, sampled every 50 ms and
  interpolated at both ends), as % of one core and as CPU milliseconds per notification;
* the event loop's lag meanwhile, seen from outside: ``GET /healthz`` on a keep-alive connection every 10 ms
  (one at a time), its latency p50/p99/max while the hub delivers, against an idle phase of the same length
  in the same round (the hub then has nothing to do; the probes are its only load).

Rounds alternate the order (idle then delivery, delivery then idle) so that a drift of the machine shows as
spread, not as a difference; the summary gives the median of the rounds and their range (min-max). The load
average is printed before and after; a warm-up round of 100 notifications is not counted.

How the 1,000 are made
----------------------
The real way a notification is born: a health event. ``--nodes`` (200) nodes are enrolled in 4 sites; each round
POSTs ``--count`` distinct health events (``POST /api/v1/health-events``, severity warning, kind ``bench.r<N>``,
nodes round-robin so the sites interleave) from 8 threads. One webhook channel (hub-wide) subscribes to
``health.opened`` at any severity. The notification settings (``PUT /api/v1/settings/notifications``) are:

* ``storm_window_s`` = ``--window`` (20 s, at most 120): the router routes a burst once its window has passed since
  its first notice, so every notice of a round (the POSTs take a few seconds) is routed in the same pass, after
  the POSTs ended: the outbox then holds all 1,000 as ``queued`` at the same moment, which is what is measured
  (the script checks the POSTs ended inside the window and that the round's ``created_at`` are within 2 s);
* ``storm_threshold`` 1000: a storm folds a burst of one event type and site, and a site gets 250 a round, so
  nothing is folded: 1,000 notices, 1,000 notifications, 1,000 requests;
* ``flap_hold_s`` 0 and ``allow_private_destinations`` true (the receiver is on loopback).

After its delivery phase a round resolves its 1,000 health events (``POST /api/v1/health-events/bulk-lifecycle``;
no channel subscribes to resolutions, so that makes no notifications), so every round runs with the same 1,000
open events rather than 1,000 more than the last. ``--keep-open`` leaves them open, to check that the cost of a
delivery does not grow with the number of open health events: each delivered notification asks whether its
channel's ``notify.failed`` is open, which walked every open event until migration 0019 indexed health events by
kind and state (3.2-4.0 ms of CPU per notification in rounds 1-3, 5-6.7 ms in rounds 5-10 with 11,000 open;
with the index 3.3-4.0 ms in all of 6 rounds).

The receiver is this script run as ``--serve PORT`` in its own process: an asyncio HTTP/1.1 server answering
every POST with 200 at once (keep-alive when asked), noting the arrival time (``time.time()``); it does not check
the signature (the hub signs every body anyway). ``GET /stats`` gives its count and first/last arrival,
``POST /reset`` clears them. The hub is a real ``python -m hark_fleet.hub run`` (SQLite in a temporary data
directory, embedded broker, ``HARK_LOG_LEVEL=WARNING``).

Run it from the repository root::

    .venv/bin/python bench/notify.py [--rounds 5] [--count 1000] [--nodes 200] [--window 20] [--keep-open]

The hub and the receiver are stopped at the end, also on Ctrl-C or an error, and the temporary directory removed.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import secrets
import shutil
import signal
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from hub_http import HOST, READY_TIMEOUT_S, free_port, http_request, log_tail, start_process, stop_process, wait_for_200  # noqa: E402
from report import print_report  # noqa: E402

TITLE = "hark notification delivery benchmark (queued notifications -> a loopback webhook)"
SITES = ("bench-a", "bench-b", "bench-c", "bench-d")
POST_THREADS = 8
PROBE_EVERY_S = 0.010
CPU_EVERY_S = 0.050
DELIVERY_TIMEOUT_S = 600.0
SETTLE_S = 1.0
BULK = 500  # health events resolved per bulk-lifecycle request


# -- the receiver (its own process) ----------------------------------------------------------------------


class Receiver:
    def __init__(self) -> None:
        self.count = 0
        self.first: float | None = None
        self.last: float | None = None

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, path = lines[0].split(" ")[:2]
                headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
                length = int(headers.get("content-length", "0"))
                if length:
                    await reader.readexactly(length)
                close = headers.get("connection", "").lower() == "close"
                body = b"ok"
                if method == "POST" and path == "/hook":
                    now = time.time()
                    self.count += 1
                    self.first = now if self.first is None else self.first
                    self.last = now
                elif path == "/stats":
                    body = json.dumps({"count": self.count, "first": self.first, "last": self.last}).encode()
                elif path == "/reset":
                    self.count, self.first, self.last = 0, None, None
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n%s\r\n%s"
                    % (len(body), b"Connection: close\r\n" if close else b"", body)
                )
                await writer.drain()
                if close:
                    break
        except (asyncio.IncompleteReadError, ConnectionError, ValueError):
            pass
        finally:
            writer.close()


async def _serve(port: int) -> None:
    receiver = Receiver()
    server = await asyncio.start_server(receiver.handle, HOST, port, backlog=1024)
    async with server:
        await server.serve_forever()


# -- samplers (threads in this process) ------------------------------------------------------------------


class LagProbe:
    """`GET /healthz` every PROBE_EVERY_S on one keep-alive connection: (wall time sent, latency ms)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.samples: list[tuple[float, float]] = []
        self.errors = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        conn = http.client.HTTPConnection(HOST, self.port, timeout=10)
        tick = time.monotonic()
        while not self._stop.is_set():
            sent = time.time()
            began = time.perf_counter()
            try:
                conn.request("GET", "/healthz")
                response = conn.getresponse()
                response.read()
                if response.status == 200:
                    self.samples.append((sent, (time.perf_counter() - began) * 1000.0))
                else:
                    self.errors += 1
            except (OSError, http.client.HTTPException):
                self.errors += 1
                conn.close()
                conn = http.client.HTTPConnection(HOST, self.port, timeout=10)
            tick += PROBE_EVERY_S
            delay = tick - time.monotonic()
            if delay > 0:
                self._stop.wait(delay)
            else:
                tick = time.monotonic()  # late: no burst of catch-up probes
        conn.close()

    def between(self, start: float, end: float) -> list[float]:
        return [latency for sent, latency in list(self.samples) if start <= sent <= end]

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


class CpuSampler:
    """The hub process's CPU seconds (user + system), sampled every CPU_EVERY_S: (wall time, cpu_s)."""

    def __init__(self, pid: int) -> None:
        self.process = psutil.Process(pid)
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                times = self.process.cpu_times()
            except psutil.Error:
                return
            self.samples.append((time.time(), float(times.user + times.system)))
            self._stop.wait(CPU_EVERY_S)

    def at(self, when: float) -> float:
        """CPU seconds at `when`, interpolated between the samples around it."""
        samples = list(self.samples)
        before = max((s for s in samples if s[0] <= when), default=samples[0])
        after = min((s for s in samples if s[0] >= when), default=samples[-1])
        if after[0] == before[0]:
            return before[1]
        return before[1] + (after[1] - before[1]) * (when - before[0]) / (after[0] - before[0])

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


# -- the bench --------------------------------------------------------------------------------------------


@dataclass
class Phase:
    round: int
    what: str  # "delivery" | "idle"
    start: float
    end: float
    lags: list[float]
    count: int = 0
    receiver_count: int = 0
    receiver_last: float | None = None
    cpu_s: float = 0.0
    created_spread_s: float = 0.0
    attempts: int = 0

    @property
    def seconds(self) -> float:
        return self.end - self.start

    @property
    def rate(self) -> float:
        return self.count / self.seconds if self.seconds > 0 else 0.0

    @property
    def receiver_rate(self) -> float | None:
        if self.receiver_last is None or self.receiver_last <= self.start:
            return None
        return self.receiver_count / (self.receiver_last - self.start)

    @property
    def cpu_pct(self) -> float:
        return 100.0 * self.cpu_s / self.seconds if self.seconds > 0 else 0.0


def _parse_db_time(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


class Bench:
    def __init__(self, workdir: Path, hub_port: int, token: str, receiver_port: int) -> None:
        self.workdir = workdir
        self.port = hub_port
        self.token = token
        self.receiver_port = receiver_port
        self.node_ids: list[str] = []
        self.channel_id = ""

    def api(self, path: str, body: Any = None, method: str | None = None) -> Any:
        if method == "PUT":
            return self._put(path, body)
        status, payload = http_request(self.port, path, body=body, token=self.token, timeout=30)
        if status >= 300:
            raise RuntimeError(f"{path}: HTTP {status}: {payload}")
        return payload["data"] if isinstance(payload, dict) and "data" in payload else payload

    def _put(self, path: str, body: Any) -> Any:
        conn = http.client.HTTPConnection(HOST, self.port, timeout=30)
        headers = {"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"}
        conn.request("PUT", path, body=json.dumps(body), headers=headers)
        response = conn.getresponse()
        payload = json.loads(response.read() or b"null")
        conn.close()
        if response.status >= 300:
            raise RuntimeError(f"PUT {path}: HTTP {response.status}: {payload}")
        return payload

    def receiver(self, path: str) -> dict[str, Any]:
        conn = http.client.HTTPConnection(HOST, self.receiver_port, timeout=10)
        conn.request("POST" if path == "/reset" else "GET", path)
        response = conn.getresponse()
        data = response.read()
        conn.close()
        return json.loads(data) if path == "/stats" else {}

    def setup(self, nodes: int, window_s: float) -> None:
        for site in SITES:
            self.api("/api/v1/sites", {"id": site, "name": site, "time_zone": "UTC"})

        def enroll(i: int) -> str:
            body = {"name": f"bench-{i:04d}", "site": SITES[i % len(SITES)]}
            return str(self.api("/api/v1/nodes/enroll", body)["node"]["id"])

        with ThreadPoolExecutor(POST_THREADS) as pool:
            self.node_ids = list(pool.map(enroll, range(nodes)))
        settings = {"allow_private_destinations": True, "storm_window_s": window_s, "storm_threshold": 1000, "flap_hold_s": 0}
        self.api("/api/v1/settings/notifications", settings, method="PUT")
        channel = {
            "name": "bench webhook",
            "kind": "webhook",
            "config": {"url": f"http://{HOST}:{self.receiver_port}/hook"},
            "secrets": {},
            "subscription": {"events": ["health.opened"], "min_severity": "info"},
        }
        self.channel_id = self.api("/api/v1/notification-channels", channel)["id"]

    def post_events(self, count: int, label: str) -> tuple[float, float, list[str]]:
        """`count` distinct health events, nodes round-robin: the wall times of the first and last POST, their ids."""

        def post(i: int) -> tuple[float, str]:
            node_id = self.node_ids[i % len(self.node_ids)]
            event = self.api("/api/v1/health-events", {"node_id": node_id, "kind": f"bench.{label}", "severity": "warning"})
            return time.time(), str(event["id"])

        began = time.time()
        with ThreadPoolExecutor(POST_THREADS) as pool:
            posted = list(pool.map(post, range(count)))
        return began, max(at for at, _ in posted), [event_id for _, event_id in posted]

    def resolve(self, event_ids: list[str]) -> None:
        """Resolve the round's health events (nobody subscribes to resolutions: no notifications)."""
        for start in range(0, len(event_ids), BULK):
            self.api("/api/v1/health-events/bulk-lifecycle", {"ids": event_ids[start : start + BULK], "action": "resolve"})

    def outbox(self, since: float) -> tuple[int, int, float | None, float | None, float | None, int]:
        """The channel's notifications made after `since`: (total, delivered, min created_at, max created_at,
        max delivered_at, delivery attempts), from the hub's database (read-only)."""
        db = sqlite3.connect(f"file:{self.workdir / 'hub' / 'hark.sqlite3'}?mode=ro", uri=True, timeout=30)
        try:
            stamp = datetime.fromtimestamp(since, UTC).replace(tzinfo=None).isoformat(sep=" ")
            row = db.execute(
                "SELECT count(*), sum(state = 'delivered'), min(created_at), max(created_at), max(delivered_at), sum(attempts)"
                " FROM notification WHERE channel_id = ? AND created_at >= ?",
                (self.channel_id, stamp),
            ).fetchone()
        finally:
            db.close()
        total, delivered, first, last, done, attempts = row
        return (
            int(total or 0),
            int(delivered or 0),
            _parse_db_time(first) if first else None,
            _parse_db_time(last) if last else None,
            _parse_db_time(done) if done else None,
            int(attempts or 0),
        )

    def delivery(self, round_no: int, count: int, window_s: float, probe: LagProbe, cpu: CpuSampler, keep_open: bool) -> Phase:
        self.receiver("/reset")
        label = f"r{round_no}"
        since = time.time()
        first_post, last_post, event_ids = self.post_events(count, label)
        if last_post - first_post > window_s - 1.0:
            took = last_post - first_post
            raise RuntimeError(f"the POSTs took {took:.1f} s, not inside the {window_s:g} s storm window: raise --window")
        deadline = time.monotonic() + DELIVERY_TIMEOUT_S
        while True:
            total, delivered, first, last, done, attempts = self.outbox(since)
            if delivered >= count:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"round {round_no}: {delivered} of {count} delivered ({total} made) in time")
            time.sleep(0.2)
        assert first is not None and last is not None and done is not None
        if total != count:
            raise RuntimeError(f"round {round_no}: {total} notifications made of {count} health events (folded?)")
        stats = self.receiver("/stats")
        if not keep_open:
            self.resolve(event_ids)
        time.sleep(SETTLE_S)
        return Phase(
            round=round_no,
            what="delivery",
            start=first,
            end=done,
            lags=probe.between(first, done),
            count=delivered,
            receiver_count=int(stats["count"]),
            receiver_last=stats["last"],
            cpu_s=cpu.at(done) - cpu.at(first),
            created_spread_s=last - first,
            attempts=attempts,
        )

    def idle(self, round_no: int, seconds: float, probe: LagProbe, cpu: CpuSampler) -> Phase:
        start = time.time()
        time.sleep(seconds)
        end = time.time()
        return Phase(round_no, "idle", start, end, probe.between(start, end), cpu_s=cpu.at(end) - cpu.at(start))


# -- report -----------------------------------------------------------------------------------------------


def _pctl(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))] if ordered else float("nan")


def _spread(values: list[float], fmt: str = "{:.1f}") -> str:
    if not values:
        return "n/a"
    return f"{fmt.format(statistics.median(values))} ({fmt.format(min(values))}-{fmt.format(max(values))})"


def report(phases: list[Phase], load_before: tuple[float, ...], load_after: tuple[float, ...], args: argparse.Namespace) -> None:
    rows = []
    for p in phases:
        rows.append(
            [
                str(p.round),
                p.what,
                f"{p.seconds:.2f}",
                str(p.count) if p.what == "delivery" else "",
                f"{p.rate:.0f}" if p.what == "delivery" else "",
                f"{p.receiver_rate:.0f}" if p.receiver_rate is not None else "",
                f"{p.cpu_pct:.0f}",
                f"{1000.0 * p.cpu_s / p.count:.2f}" if p.count else "",
                str(len(p.lags)),
                f"{_pctl(p.lags, 0.5):.2f}",
                f"{_pctl(p.lags, 0.99):.2f}",
                f"{max(p.lags, default=float('nan')):.1f}",
                f"{p.created_spread_s:.2f}" if p.what == "delivery" else "",
            ]
        )
    columns = ["round", "phase", "seconds", "delivered", "notif/s", "recv/s", "hub CPU %", "CPU ms/notif", "probes"]
    columns += ["lag p50 ms", "lag p99 ms", "lag max ms", "created spread s"]
    loaded = [p for p in phases if p.what == "delivery"]
    idle = [p for p in phases if p.what == "idle"]
    summary = [
        ["delivery throughput, notifications/s (hub timestamps)", _spread([p.rate for p in loaded], "{:.0f}")],
        ["delivery throughput, requests/s (receiver arrivals)", _spread([p.receiver_rate or 0.0 for p in loaded], "{:.0f}")],
        [f"time to deliver {args.count}, s", _spread([p.seconds for p in loaded], "{:.2f}")],
        ["hub CPU while delivering, % of one core", _spread([p.cpu_pct for p in loaded], "{:.0f}")],
        ["hub CPU per notification, ms", _spread([1000.0 * p.cpu_s / p.count for p in loaded], "{:.2f}")],
        ["hub CPU idle (probes only), % of one core", _spread([p.cpu_pct for p in idle], "{:.1f}")],
        ["/healthz latency p50 ms, delivering", _spread([_pctl(p.lags, 0.5) for p in loaded], "{:.2f}")],
        ["/healthz latency p50 ms, idle", _spread([_pctl(p.lags, 0.5) for p in idle], "{:.2f}")],
        ["/healthz latency p99 ms, delivering", _spread([_pctl(p.lags, 0.99) for p in loaded], "{:.2f}")],
        ["/healthz latency p99 ms, idle", _spread([_pctl(p.lags, 0.99) for p in idle], "{:.2f}")],
        ["/healthz latency max ms, delivering", _spread([max(p.lags, default=0.0) for p in loaded], "{:.1f}")],
        ["/healthz latency max ms, idle", _spread([max(p.lags, default=0.0) for p in idle], "{:.1f}")],
        ["delivery attempts per notification", _spread([p.attempts / p.count for p in loaded], "{:.2f}")],
    ]
    context = [
        ("notifications a round", f"{args.count} (distinct health events on {args.nodes} nodes in {len(SITES)} sites)"),
        ("receiver", "asyncio HTTP/1.1 server in its own process on loopback, 200 at once"),
        ("rounds", f"{args.rounds}, alternating idle/delivery order; storm window {args.window:g} s"),
        ("health events", "left open, piling up (--keep-open)" if args.keep_open else "each round's resolved after its delivery"),
        ("load average before", " ".join(f"{v:.2f}" for v in load_before)),
        ("load average after", " ".join(f"{v:.2f}" for v in load_after)),
        ("cpus", str(os.cpu_count())),
    ]
    tables = [("phases (in run order)", columns, rows, 2), ("summary: median (min-max) of the rounds", ["", "value"], summary, 1)]
    notes = [
        "delivery: from the router's created_at of the round's notifications to the last delivered_at (the hub's clock); "
        "recv/s: requests the receiver counted over its last arrival - that created_at.",
        "hub CPU: user + system of the whole hub process over the phase (100 % = one core), with the probes' share in it.",
        "lag: GET /healthz latency from this script, one request every 10 ms on a keep-alive connection; the idle phase "
        "is as long as a delivery and only the probes run then.",
    ]
    print_report(context, tables, notes, title=TITLE)


# -- main -------------------------------------------------------------------------------------------------


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def run(args: argparse.Namespace) -> int:
    signal.signal(signal.SIGTERM, _interrupt)
    workdir = Path(tempfile.mkdtemp(prefix="hark-notify-bench-"))
    processes = []
    probe: LagProbe | None = None
    cpu: CpuSampler | None = None
    try:
        receiver_port, hub_port, mqtt_port = free_port(), free_port(), free_port()
        serve = [sys.executable, str(Path(__file__).resolve()), "--serve", str(receiver_port)]
        receiver = start_process(serve, dict(os.environ), workdir / "receiver.log")
        processes.append(receiver)
        password = secrets.token_urlsafe(18)
        env = {k: v for k, v in os.environ.items() if not k.startswith("HARK_")}
        env.update(
            HARK_DATA_DIR=str(workdir / "hub"),
            HARK_HTTP_HOST=HOST,
            HARK_HTTP_PORT=str(hub_port),
            HARK_EMBEDDED_MQTT_BIND=f"{HOST}:{mqtt_port}",
            HARK_ADMIN_PASSWORD=password,
            HARK_LOG_LEVEL="WARNING",
            HARK_MDNS_INTERFACES="127.0.0.1",
        )
        hub = start_process([sys.executable, "-m", "hark_fleet.hub", "run"], env, workdir / "hub.log")
        processes.append(hub)
        wait_for_200(hub_port, "/readyz", hub, READY_TIMEOUT_S)
        wait_for_200(receiver_port, "/stats", receiver, READY_TIMEOUT_S)
        status, payload = http_request(hub_port, "/api/v1/auth/login", body={"username": "admin", "password": password})
        if status != 200:
            raise RuntimeError(f"login: HTTP {status}: {payload}")
        bench = Bench(workdir, hub_port, payload["data"]["token"], receiver_port)
        print(f"enrolling {args.nodes} nodes, one webhook channel ...", flush=True)
        bench.setup(args.nodes, args.window)
        probe, cpu = LagProbe(hub_port), CpuSampler(hub.pid)
        load_before = os.getloadavg()
        print("warm-up: 100 notifications ...", flush=True)
        warm = bench.delivery(0, 100, args.window, probe, cpu, args.keep_open)
        phases: list[Phase] = []
        idle_s = max(3.0, warm.seconds * args.count / 100)
        for round_no in range(1, args.rounds + 1):
            order = ("idle", "delivery") if round_no % 2 else ("delivery", "idle")
            for what in order:
                print(f"round {round_no}: {what} ...", flush=True)
                if what == "delivery":
                    phase = bench.delivery(round_no, args.count, args.window, probe, cpu, args.keep_open)
                    idle_s = phase.seconds
                else:
                    phase = bench.idle(round_no, idle_s, probe, cpu)
                phases.append(phase)
        load_after = os.getloadavg()
        report(phases, load_before, load_after, args)
        return 0
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001 - any failure is reported with the hub's log, then cleaned up
        print(f"bench failed: {err}\n--- hub log ---\n{log_tail(workdir / 'hub.log', 40)}", file=sys.stderr)
        return 1
    finally:
        for sampler in (probe, cpu):
            if sampler is not None:
                sampler.stop()
        for process in reversed(processes):
            stop_process(process, 10)
        shutil.rmtree(workdir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--count", type=int, default=1000, help="notifications a round")
    parser.add_argument("--nodes", type=int, default=200, help="enrolled nodes the health events are spread over")
    parser.add_argument("--window", type=float, default=20.0, help="storm window, s (<= 120): must cover a round's POSTs")
    parser.add_argument("--keep-open", action="store_true", help="leave each round's health events open (they pile up)")
    parser.add_argument("--serve", type=int, metavar="PORT", help=argparse.SUPPRESS)  # the receiver's process
    args = parser.parse_args(argv)
    if args.serve:
        asyncio.run(_serve(args.serve))
        return 0
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
