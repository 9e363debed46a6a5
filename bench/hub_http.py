"""HTTP throughput and latency of the hark hub's node list, against a bare Tornado JSON handler, in alternating rounds.

What is measured (what issue 22 asks)
-------------------------------------
Four targets, measured in alternating rounds in the same time window (``bench/rounds.py``: every target once per
round, the order reversed every other round, at least 3 rounds):

* ``bare``     -- a minimal Tornado application, run as its own process: one ``RequestHandler`` whose ``get()``
                  writes ``{"status":"ok"}`` (a 15-byte JSON body). The reference the issue names: the best a
                  single-process Tornado JSON handler does on this machine. It is deliberately minimal; it does
                  not serialize a body the size of a 50-node page (the bench prints each target's bytes per
                  answer, so the difference is visible).
* ``healthz``  -- the hark hub's ``GET /healthz`` (public; hark's handler base, metrics and routing, no database).
* ``nodes``    -- the hark hub's authenticated ``GET /api/v1/nodes?limit=50`` (bearer token of the admin's login
                  session) with ``--nodes`` (default 1,000) nodes enrolled, each of which has sent one heartbeat,
                  so the JSON columns a real fleet fills (metrics, interfaces, version, clock) are filled. The
                  answer is a real page: 50 nodes and a ``next_cursor``, checked before the rounds start.
                  This is the issue's figure. The hub may answer a repeated request from its page cache
                  (``hub/api/nodes.py``, checked on the event loop), which holds an answer only while the
                  database is unchanged (SQLite: ``PRAGMA data_version`` on a connection of its own); this
                  fleet is quiet during the rounds, so after the first request every answer of this target
                  comes from that cache.
* ``nodes-paged`` -- the same request with ``&cursor=``, a different cursor each request, in turn over every
                  node that has a full page after it (950 of 1,000): more distinct pages than the cache keeps,
                  so no answer comes from it. Every request reads, converts, encodes and hashes its page:
                  the figure of the uncached path, printed next to the issue's.

Each measurement is ``--connections`` (default 50) keep-alive connections for ``--duration`` seconds (default 10),
after a 2 s warm-up whose answers are discarded. Only 2xx answers count as served; errors are every non-2xx answer,
broken connection and timeout. For each round the bench prints req/s, p50 and p99 in ms, errors, bytes per
answer (headers included), the ratio to ``bare`` in that round, the CPU of the load generator and of the server,
and the 1-minute load average before and after. It then prints, per target, the median and the range over the
rounds, the median and range of the per-round ratios of each hark target to ``bare``, and whether the issue's
figures are met:
``nodes/bare >= 0.5x`` and ``nodes p99 < 50 ms`` (``nodes-paged``'s beside them). A warning is printed when the
machine was already busy before the bench started (load average above half the cores).

The load generator
------------------
``wrk`` (https://github.com/wg/wrk; Debian/Ubuntu: ``apt-get install -y wrk``) when it is on PATH: a C load
generator, so it is not the bottleneck (its CPU is shown per round; ``--threads``, default 1, wrk threads). Its
figures come from a Lua ``done()`` hook (exact request count, duration, bytes, error counts and the p50/p99 of its
latency histogram). Without wrk the bench falls back to a thin asyncio client in a separate process (``--load
python``), which on a 2-core machine takes a core of its own and can bound the figures: the table then says so.
``--load wrk`` refuses to run without wrk.

How
---
The hub is a real ``hark-hub run`` process (``python -m hark_fleet.hub run``) on a fresh temporary data directory
(SQLite, the default embedded broker) with free ports, a random admin password and ``HARK_LOG_LEVEL=WARNING``;
the script waits for ``GET /readyz``, logs in with ``POST /api/v1/auth/login``, enrolls the nodes with ``POST
/api/v1/nodes/enroll`` and sends each one heartbeat with its own credential (``POST
/api/v1/nodes/{id}/heartbeat``, saying a one-hour interval so no node goes offline during the run). The bare
server is a separate Python process.

Run it from the repository root::

    .venv/bin/python bench/hub_http.py [--rounds 3] [--duration 10] [--connections 50] [--nodes 1000]

``--hold`` sets everything up, prints the hub's port, pid and a bearer token, and waits for Ctrl-C (to profile the
hub, e.g. with ``py-spy record --pid <pid>`` while running wrk by hand). Both server processes are stopped at the
end (SIGTERM, then SIGKILL after 10 s), also on Ctrl-C or an error, and the temporary directory is removed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import multiprocessing
import os
import platform
import resource
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.error
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from pathlib import Path
from types import FrameType
from typing import Any

import tornado
from hark_fleet.hub.api.nodes import PAGE_CACHE_MAX
from hark_fleet.hub.processes import free_port, stop_process
from hark_fleet.hub.services.listing import encode_cursor

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import pct, print_table  # noqa: E402
from rounds import (  # noqa: E402
    MIN_ROUNDS,
    Round,
    alternate,
    busy_warning,
    cores,
    load_average,
    load_text,
    process_cpu_s,
    ratios,
    summarize,
)

REPO_ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
WARMUP_S = 2.0
READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0
# How long to wait for the load process beyond warm-up plus duration before giving up on it.
LOAD_GRACE_S = 30.0
PAGE = 50
SUBJECTS = ("bare", "healthz", "nodes", "nodes-paged")
TARGET_RATIO = 0.5  # the issue: nodes at >= 0.5x bare Tornado
TARGET_P99_MS = 50.0  # ... with p99 < 50 ms at 50 connections
SEED_WORKERS = 8

BARE_SERVER_SOURCE = textwrap.dedent(
    """
    import asyncio
    import sys

    import tornado.web


    class HelloHandler(tornado.web.RequestHandler):
        def get(self) -> None:
            self.write({"status": "ok"})


    async def main() -> None:
        app = tornado.web.Application([(r"/", HelloHandler)])
        app.listen(int(sys.argv[1]), address=sys.argv[2])
        await asyncio.Event().wait()


    asyncio.run(main())
    """
)

# wrk's summary as one JSON line (latencies in microseconds); errors.status counts answers with status >= 400.
WRK_SCRIPT = textwrap.dedent(
    """
    done = function(summary, latency, requests)
      local e = summary.errors
      io.write(string.format(
        'HARK_WRK {"requests":%.0f,"duration_us":%.0f,"bytes":%.0f,"connect":%.0f,"read":%.0f,"write":%.0f,' ..
        '"status":%.0f,"timeout":%.0f,"p50_us":%.1f,"p99_us":%.1f}\\n',
        summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
        latency:percentile(50.0), latency:percentile(99.0)))
    end
    """
)

# Each request the next path of PATHS; thread k of wrk starts at its own offset (so threads do not ask in step).
WRK_PATHS_SCRIPT = textwrap.dedent(
    """
    local paths = {
    PATHS
    }
    local started = 0
    setup = function(thread)
      thread:set("offset", started * 997)
      started = started + 1
    end
    local i = nil
    request = function()
      if i == nil then i = offset or 0 end
      i = i + 1
      return wrk.format(nil, paths[(i % #paths) + 1])
    end
    """
)

# -- results -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LoadResult:
    """What one load run measured inside its measurement window."""

    requests: int  # 2xx answers completed inside the window
    errors: int
    duration_s: float
    p50_ms: float
    p99_ms: float
    client_cpu_pct: float
    server_cpu_pct: float | None
    statuses: dict[int, int] = field(default_factory=dict)
    failure: str | None = None
    bytes_per_answer: float | None = None

    @property
    def rps(self) -> float:
        return self.requests / self.duration_s if self.duration_s > 0 else 0.0


@dataclass(frozen=True, slots=True)
class Target:
    """One thing to measure: a server address, a path (or paths taken in turn) and extra request headers."""

    label: str
    description: str
    port: int
    path: str
    headers: dict[str, str] = field(default_factory=dict)
    server_pid: int | None = None
    method: str = "GET"
    body: bytes = b""
    paths: tuple[str, ...] = ()  # when set: each request the next of these, round-robin (instead of `path`)

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}{self.path}"

    def requests(self) -> list[bytes]:
        """The raw HTTP/1.1 requests the load process sends, in turn, over and over."""
        headers = {"Host": f"{HOST}:{self.port}", "User-Agent": "hark-bench", "Accept": "*/*", **self.headers}
        if self.body:
            headers["Content-Length"] = str(len(self.body))
        lines = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        paths = self.paths or (self.path,)
        return [f"{self.method} {path} HTTP/1.1\r\n{lines}\r\n".encode("latin-1") + self.body for path in paths]

    def wrk_script(self) -> str:
        """wrk's Lua: the summary hook, and for `paths` a request function taking them in turn (threads from own offsets)."""
        if not self.paths:
            return WRK_SCRIPT
        listed = ",\n".join(json.dumps(p) for p in self.paths)
        return WRK_SCRIPT + WRK_PATHS_SCRIPT.replace("PATHS", listed)


# -- fallback load generator (Python, runs in its own process) ---------------------


def _percentile(sorted_values: list[float], fraction: float) -> float:
    """Nearest-rank percentile of an already sorted list (0.0 when empty)."""
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


class _LoadState:
    """Counters shared by the connection tasks of one load run."""

    def __init__(self, measure_start: float, measure_end: float) -> None:
        self.measure_start = measure_start
        self.measure_end = measure_end
        self.latencies: list[float] = []
        self.errors = 0
        self.statuses: Counter[int] = Counter()

    def in_window(self, moment: float) -> bool:
        return self.measure_start <= moment <= self.measure_end


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """Read one HTTP/1.1 response; return its status and whether the connection stays open."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    length = 0
    chunked = False
    keep_alive = True
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding":
            chunked = b"chunked" in value.lower()
        elif name == b"connection":
            keep_alive = b"close" not in value.lower()
    if chunked:
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";", 1)[0], 16)
            await reader.readexactly(size + 2)  # chunk data and its CRLF
            if size == 0:
                break
    elif length:
        await reader.readexactly(length)
    return status, keep_alive


async def _connection_loop(port: int, requests: list[bytes], offset: int, state: _LoadState) -> None:
    """One keep-alive connection sending requests back to back until the window closes."""
    perf_counter = time.perf_counter
    reader: asyncio.StreamReader | None = None
    writer: asyncio.StreamWriter | None = None
    try:
        while perf_counter() < state.measure_end:
            if writer is None or reader is None:
                try:
                    reader, writer = await asyncio.open_connection(HOST, port)
                except OSError:
                    if state.in_window(perf_counter()):
                        state.errors += 1
                    await asyncio.sleep(0.05)
                    continue
            started = perf_counter()
            try:
                writer.write(requests[offset % len(requests)])
                offset += 1
                status, keep_alive = await _read_response(reader)
            except (OSError, ValueError, IndexError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                if state.in_window(perf_counter()):
                    state.errors += 1
                writer.close()
                reader = writer = None
                continue
            finished = perf_counter()
            if state.in_window(finished):
                state.latencies.append(finished - started)
                state.statuses[status] += 1
                if not 200 <= status < 300:
                    state.errors += 1
            if not keep_alive:
                writer.close()
                reader = writer = None
    finally:
        if writer is not None:
            writer.close()


async def _run_load(
    port: int, requests: list[bytes], connections: int, warmup_s: float, duration_s: float, server_pid: int | None
) -> LoadResult:
    now = time.perf_counter()
    state = _LoadState(now + warmup_s, now + warmup_s + duration_s)

    async def sample_cpu() -> tuple[float, float | None]:
        """CPU used by this process and by the server between the window's start and end."""
        await asyncio.sleep(max(0.0, state.measure_start - time.perf_counter()))
        client_before, server_before = time.process_time(), process_cpu_s(server_pid) if server_pid else None
        await asyncio.sleep(max(0.0, state.measure_end - time.perf_counter()))
        client_after, server_after = time.process_time(), process_cpu_s(server_pid) if server_pid else None
        server = server_after - server_before if server_before is not None and server_after is not None else None
        return client_after - client_before, server

    cpu_task = asyncio.create_task(sample_cpu())
    spread = max(1, len(requests) // connections)
    await asyncio.gather(*(_connection_loop(port, requests, i * spread, state) for i in range(connections)))
    client_cpu_s, server_cpu_s = await cpu_task
    latencies = sorted(state.latencies)
    return LoadResult(
        requests=sum(n for status, n in state.statuses.items() if 200 <= status < 300),
        errors=state.errors,
        duration_s=duration_s,
        p50_ms=_percentile(latencies, 0.50) * 1000,
        p99_ms=_percentile(latencies, 0.99) * 1000,
        client_cpu_pct=100 * client_cpu_s / duration_s,
        server_cpu_pct=None if server_cpu_s is None else 100 * server_cpu_s / duration_s,
        statuses=dict(state.statuses),
    )


def load_process_main(
    result_pipe: Connection,
    port: int,
    requests: list[bytes],
    connections: int,
    warmup_s: float,
    duration_s: float,
    server_pid: int | None,
) -> None:
    """Entry point of the load process: run the load and send a LoadResult back."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # on Ctrl-C the parent stops this process
    try:
        result = asyncio.run(_run_load(port, requests, connections, warmup_s, duration_s, server_pid))
    except Exception as err:  # noqa: BLE001 - reported to the parent instead of a traceback in a child
        result = LoadResult(0, 0, duration_s, 0.0, 0.0, 0.0, None, failure=f"{type(err).__name__}: {err}")
    result_pipe.send(result)
    result_pipe.close()


def measure_python(target: Target, connections: int, duration_s: float) -> LoadResult:
    """Run the Python load generator against one target in a separate process (warm-up included)."""
    context = multiprocessing.get_context("spawn")
    receiver, sender = context.Pipe(duplex=False)
    process = context.Process(
        target=load_process_main,
        args=(sender, target.port, target.requests(), connections, WARMUP_S, duration_s, target.server_pid),
        name=f"load-{target.label}",
    )
    process.start()
    sender.close()
    try:
        if not receiver.poll(WARMUP_S + duration_s + LOAD_GRACE_S):
            raise RuntimeError(f"the load process for {target.label} did not report in time")
        result: LoadResult = receiver.recv()
        process.join(10)
        return result
    finally:
        receiver.close()
        if process.is_alive():
            process.terminate()
            process.join(5)


# -- wrk --------------------------------------------------------------------------


def wrk_path() -> str | None:
    return shutil.which("wrk")


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _run_wrk(target: Target, connections: int, threads: int, duration_s: float, script: Path) -> dict[str, float]:
    """One wrk run; its summary from the Lua hook."""
    args = [wrk_path() or "wrk", f"-t{max(1, min(threads, connections))}", f"-c{connections}", f"-d{duration_s:g}s"]
    args += ["--timeout", "10s", "-s", str(script)]
    for name, value in target.headers.items():
        args += ["-H", f"{name}: {value}"]
    args.append(target.url)
    done = subprocess.run(args, capture_output=True, text=True, timeout=duration_s + LOAD_GRACE_S, check=False)
    for line in done.stdout.splitlines():
        if line.startswith("HARK_WRK "):
            summary: dict[str, float] = json.loads(line.removeprefix("HARK_WRK "))
            return summary
    raise RuntimeError(f"wrk gave no summary (exit {done.returncode}): {(done.stderr or done.stdout).strip()[-500:]}")


def measure_wrk(target: Target, connections: int, threads: int, duration_s: float, script: Path) -> LoadResult:
    """A discarded warm-up run, then the measured one (wrk's and the server's CPU over the measured run only)."""
    try:
        _run_wrk(target, connections, threads, WARMUP_S, script)
        client_before = _children_cpu_s()
        server_before = process_cpu_s(target.server_pid) if target.server_pid else None
        summary = _run_wrk(target, connections, threads, duration_s, script)
        client_s = _children_cpu_s() - client_before
        server_after = process_cpu_s(target.server_pid) if target.server_pid else None
    except (RuntimeError, OSError, subprocess.TimeoutExpired, ValueError) as err:
        return LoadResult(0, 0, duration_s, 0.0, 0.0, 0.0, None, failure=f"{type(err).__name__}: {err}")
    window_s = summary["duration_us"] / 1e6 or duration_s
    answered = int(summary["requests"])
    failed_status = int(summary["status"])
    broken = int(summary["connect"] + summary["read"] + summary["write"] + summary["timeout"])
    server_s = server_after - server_before if server_before is not None and server_after is not None else None
    return LoadResult(
        requests=answered - failed_status,
        errors=failed_status + broken,
        duration_s=window_s,
        p50_ms=summary["p50_us"] / 1000,
        p99_ms=summary["p99_us"] / 1000,
        client_cpu_pct=100 * client_s / window_s,
        server_cpu_pct=None if server_s is None else 100 * server_s / window_s,
        bytes_per_answer=summary["bytes"] / answered if answered else None,
    )


# -- servers and the fleet ---------------------------------------------------------


def http_request(port: int, path: str, *, body: Any = None, token: str | None = None, timeout: float = 5.0) -> tuple[int, Any]:
    """One small JSON request with urllib (setup and sanity checks only, not the load)."""
    headers = {"Accept": "application/json"}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(f"http://{HOST}:{port}{path}", data=data, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as err:
        payload = err.read()
        with contextlib.suppress(ValueError):
            return err.code, json.loads(payload)
        return err.code, payload.decode(errors="replace")


def wait_for_200(port: int, path: str, process: subprocess.Popen[bytes], timeout: float) -> None:
    """Poll until `path` answers 200; raise if the process exits or time runs out."""
    deadline = time.monotonic() + timeout
    last_error = "no answer"
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with code {process.returncode} before it was ready")
        try:
            status, payload = http_request(port, path, timeout=2)
            if status == 200:
                return
            last_error = f"HTTP {status}: {payload}"
        except (urllib.error.URLError, OSError, ValueError) as err:
            last_error = str(err)
        time.sleep(0.2)
    raise RuntimeError(f"GET {path} on port {port} did not answer 200 within {timeout:.0f} s ({last_error})")


def start_process(args: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    """Start a server in its own session (Ctrl-C reaches only this script), output to a log file."""
    with open(log_path, "wb") as log:
        return subprocess.Popen(
            args, cwd=REPO_ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )


def log_tail(path: Path, lines: int = 20) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
    return ""


def heartbeat(seq: int) -> dict[str, Any]:
    """A heartbeat like a recording node's, saying a one-hour interval (no node goes offline during the bench)."""
    return {
        "msg_id": secrets.token_hex(8),
        "ts": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "seq": seq,
        "agent_version": "0.1.0",
        "uptime_s": 86400.0 + seq,
        "cpu_pct": 12.5,
        "memory": {"used_pct": 41.2, "total_bytes": 4_000_000_000},
        "disk": {"path": "/var/lib/hark", "used_pct": 37.0, "free_bytes": 80_000_000_000},
        "temperature_c": 48.3,
        "interfaces": [
            {"id": "hw:0", "name": "USB Audio Interface", "channels": 8, "rates": [44100, 48000, 96000], "default": True},
            {"id": "hw:1", "name": "bcm2835 Headphones", "channels": 2, "rates": [44100, 48000]},
        ],
        "clock": {"offset_ms": 0.4, "quality": "ntp"},
        "outbox": {"depth": 0, "capacity": 10000},
        "audio": {"state": "idle", "overflows": 0, "lost_frames": 0, "opens": 1},
        "load": [0.31, 0.28, 0.25],
        "interval_s": 3600.0,
    }


def paged_paths(port: int, token: str, path: str) -> list[str]:
    """`path` with the cursor after each node that still has a full page after it: each a different, full page."""
    ids: list[str] = []
    cursor = None
    while True:
        status, payload = http_request(port, "/api/v1/nodes?limit=200" + (f"&cursor={cursor}" if cursor else ""), token=token)
        if status != 200:
            raise RuntimeError(f"GET /api/v1/nodes answered HTTP {status}: {payload}")
        ids += [node["id"] for node in payload["data"]]
        cursor = payload["meta"]["next_cursor"]
        if cursor is None:
            break
    return [f"{path}&cursor={encode_cursor(node_id)}" for node_id in ids[: max(1, len(ids) - PAGE)]]


def seed_fleet(port: int, token: str, count: int) -> None:
    """Enroll `count` nodes through the API; each sends one heartbeat with its own credential."""
    started = time.monotonic()

    def enroll(i: int) -> None:
        status, payload = http_request(
            port, "/api/v1/nodes/enroll", body={"name": f"bench-node-{i:05d}"}, token=token, timeout=30
        )
        if status != 201:
            raise RuntimeError(f"enroll answered HTTP {status}: {payload}")
        node_id, credential = payload["data"]["node"]["id"], payload["data"]["credential"]
        path = f"/api/v1/nodes/{node_id}/heartbeat"
        status, payload = http_request(port, path, body=heartbeat(i + 1), token=credential, timeout=30)
        if status != 200:
            raise RuntimeError(f"heartbeat answered HTTP {status}: {payload}")

    with ThreadPoolExecutor(SEED_WORKERS) as pool:
        for done, _ in enumerate(pool.map(enroll, range(count)), 1):
            if done % 250 == 0 or done == count:
                print(f"  {done}/{count} nodes enrolled, one heartbeat each ({time.monotonic() - started:.0f} s)", flush=True)


# -- report ----------------------------------------------------------------------


def report(context: list[tuple[str, str]], targets: dict[str, Target], rounds: list[Round], results: list[LoadResult]) -> bool:
    """Print the context, every round, the medians and ranges, the ratios and the verdict; True if the figures are met."""
    print("\nhark hub HTTP benchmark")
    width = max(len(key) for key, _ in context)
    for key, value in context:
        print(f"  {key.ljust(width)}  {value}")
    bare_rps = {r.number: r.figures["rps"] for r in rounds if r.subject == "bare"}
    print("\nrounds (measurement window only; ratio = req/s over bare's in the same round)")
    body = []
    for r, result in zip(rounds, results, strict=True):
        base = bare_rps.get(r.number)
        body.append(
            [
                str(r.number + 1),
                r.subject,
                f"{result.rps:,.0f}",
                f"{result.p50_ms:.2f}",
                f"{result.p99_ms:.2f}",
                str(result.errors),
                "n/a" if result.bytes_per_answer is None else f"{result.bytes_per_answer:,.0f}",
                f"{result.rps / base:.2f}x" if base else "n/a",
                pct(result.client_cpu_pct),
                pct(result.server_cpu_pct),
                f"{r.load_before:.2f} -> {r.load_after:.2f}",
            ]
        )
    header = ["round", "target", "req/s", "p50 ms", "p99 ms", "errors", "bytes/answer", "ratio", "load gen CPU"]
    print_table([*header, "server CPU", "load avg"], body, 2)

    print(f"\nmedian (range) over {max(r.number for r in rounds) + 1} rounds")
    body = []
    for label in SUBJECTS:
        errors = sum(res.errors for r, res in zip(rounds, results, strict=True) if r.subject == label)
        body.append(
            [
                label,
                targets[label].description,
                summarize(rounds, label, "rps").text("{:,.0f}"),
                summarize(rounds, label, "p50_ms").text("{:.2f}"),
                summarize(rounds, label, "p99_ms").text("{:.2f}"),
                str(errors),
            ]
        )
    print_table(["target", "request", "req/s", "p50 ms", "p99 ms", "errors"], body, 2)
    nodes_ratio = ratios(rounds, "nodes", "bare", "rps")
    nodes_p99 = summarize(rounds, "nodes", "p99_ms")
    print("\nhark vs bare Tornado (per-round ratios of req/s, median (range))")
    for label in SUBJECTS[1:]:
        print(f"  {label + ' / bare':<20}  {ratios(rounds, label, 'bare', 'rps').text('{:.2f}', 'x')}")
    print(f"  {load_text(rounds)}")
    ratio_ok = nodes_ratio.count > 0 and nodes_ratio.median >= TARGET_RATIO
    p99_ok = nodes_p99.count > 0 and nodes_p99.median < TARGET_P99_MS
    errors = sum(res.errors for r, res in zip(rounds, results, strict=True) if r.subject == "nodes")
    print("\nissue 22's figures for authenticated GET /api/v1/nodes?limit=50")
    print(f"  req/s >= {TARGET_RATIO}x bare Tornado:  {nodes_ratio.text('{:.2f}', 'x')}  {'met' if ratio_ok else 'NOT MET'}")
    print(f"  p99 < {TARGET_P99_MS:.0f} ms:                  {nodes_p99.text('{:.1f}', 'ms')}  {'met' if p99_ok else 'NOT MET'}")
    paged_ratio = ratios(rounds, "nodes-paged", "bare", "rps")
    paged_p99 = summarize(rounds, "nodes-paged", "p99_ms")
    print(
        f"  (never from the hub's page cache, a different page each request: {paged_ratio.text('{:.2f}', 'x')}, "
        f"p99 {paged_p99.text('{:.1f}', 'ms')})"
    )
    if errors:
        print(f"  errors: {errors} (non-2xx answers, broken connections, timeouts)")
    for r, result in zip(rounds, results, strict=True):
        if result.failure:
            print(f"round {r.number + 1} {r.subject}: the load generator failed: {result.failure}")
        elif result.statuses and any(not 200 <= s < 300 for s in result.statuses):
            print(f"round {r.number + 1} {r.subject}: statuses {dict(sorted(result.statuses.items()))}")
        if result.client_cpu_pct > 80:
            busy = f"the load generator used {result.client_cpu_pct:.0f} % of a core: it may bound the figures"
            print(f"round {r.number + 1} {r.subject}: {busy}")
    return ratio_ok and p99_ok and not errors


# -- main ------------------------------------------------------------------------


def _raise_keyboard_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


@dataclass
class Options:
    rounds: int
    duration_s: float
    connections: int
    nodes: int
    threads: int
    load: str
    hold: bool


def run(options: Options) -> int:
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)  # a SIGTERM cleans up like Ctrl-C
    load_at_start = load_average()
    use_wrk = options.load == "wrk" or (options.load == "auto" and wrk_path() is not None)
    if use_wrk and wrk_path() is None:
        print("wrk is not installed (Debian/Ubuntu: apt-get install -y wrk); or run with --load python", file=sys.stderr)
        return 2
    temp_dir = Path(tempfile.mkdtemp(prefix="hark-bench-"))
    processes: list[subprocess.Popen[bytes]] = []
    hub_log = temp_dir / "hub.log"
    bare_log = temp_dir / "bare.log"
    try:
        hub_port, mqtt_port, bare_port = free_port(), free_port(), free_port()
        password = secrets.token_urlsafe(24)
        hub_env = dict(
            os.environ,
            HARK_DATA_DIR=str(temp_dir / "hub"),
            HARK_HTTP_HOST=HOST,
            HARK_HTTP_PORT=str(hub_port),
            HARK_EMBEDDED_MQTT_BIND=f"{HOST}:{mqtt_port}",
            HARK_ADMIN_PASSWORD=password,
            HARK_LOG_LEVEL="WARNING",
        )
        hub = start_process([sys.executable, "-m", "hark_fleet.hub", "run"], hub_env, hub_log)
        processes.append(hub)
        bare = start_process([sys.executable, "-c", BARE_SERVER_SOURCE, str(bare_port), HOST], dict(os.environ), bare_log)
        processes.append(bare)

        print(f"starting servers (hub on :{hub_port}, bare Tornado on :{bare_port}) ...", flush=True)
        try:
            wait_for_200(bare_port, "/", bare, READY_TIMEOUT_S)
        except RuntimeError as err:
            print(f"bare server: {err}\n{log_tail(bare_log)}", file=sys.stderr)
            return 1
        try:
            wait_for_200(hub_port, "/readyz", hub, READY_TIMEOUT_S)
        except RuntimeError as err:
            print(f"hub: {err}\n{log_tail(hub_log)}", file=sys.stderr)
            return 1

        status, payload = http_request(hub_port, "/api/v1/auth/login", body={"username": "admin", "password": password})
        if status != 200:
            print(f"hub: login failed with HTTP {status}: {payload}", file=sys.stderr)
            return 1
        token = payload["data"]["token"]
        print(f"enrolling {options.nodes} nodes ...", flush=True)
        seed_fleet(hub_port, token, options.nodes)
        path = f"/api/v1/nodes?limit={PAGE}"
        status, payload = http_request(hub_port, path, token=token)
        if status != 200:
            print(f"hub: GET {path} answered HTTP {status}: {payload}", file=sys.stderr)
            return 1
        expected = min(PAGE, options.nodes)
        if len(payload["data"]) != expected or (options.nodes > PAGE and not payload["meta"]["next_cursor"]):
            print(f"hub: GET {path} answered {len(payload['data'])} nodes, expected {expected} and a cursor", file=sys.stderr)
            return 1

        paths = paged_paths(hub_port, token, path)
        if len(paths) <= PAGE_CACHE_MAX:
            print(f"note: {len(paths)} distinct pages only: nodes-paged may be answered from the hub's page cache")

        if options.hold:
            print(f"\nhub pid {hub.pid}, http://{HOST}:{hub_port}{path}\nAuthorization: Bearer {token}")
            print(f"bare Tornado pid {bare.pid}, http://{HOST}:{bare_port}/\nwaiting; Ctrl-C stops both", flush=True)
            while hub.poll() is None:
                time.sleep(1)
            return 1

        auth = {"Authorization": f"Bearer {token}"}
        targets = {
            "bare": Target("bare", "bare Tornado GET / (minimal JSON handler)", bare_port, "/", server_pid=bare.pid),
            "healthz": Target("healthz", "hark GET /healthz", hub_port, "/healthz", server_pid=hub.pid),
            "nodes": Target("nodes", f"hark GET {path} (auth, {options.nodes} nodes)", hub_port, path, auth, hub.pid),
            "nodes-paged": Target(
                "nodes-paged",
                f"the same, &cursor= one of {len(paths)} in turn",
                hub_port,
                path,
                auth,
                hub.pid,
                paths=tuple(paths),
            ),
        }
        scripts = {}
        for label, target in targets.items():
            scripts[label] = temp_dir / f"{label}.lua"
            scripts[label].write_text(target.wrk_script(), encoding="utf-8")
        rounds: list[Round] = []
        results: list[LoadResult] = []
        for number, label in alternate(SUBJECTS, options.rounds):
            target = targets[label]
            print(
                f"round {number + 1}/{options.rounds}: {label} ({WARMUP_S:g} s warm-up + {options.duration_s:g} s, "
                f"{options.connections} connections, load {load_average():.2f}) ...",
                flush=True,
            )
            current = Round(label, number)
            if use_wrk:
                result = measure_wrk(target, options.connections, options.threads, options.duration_s, scripts[label])
            else:
                result = measure_python(target, options.connections, options.duration_s)
            rounds.append(current.done(rps=result.rps, p50_ms=result.p50_ms, p99_ms=result.p99_ms, errors=result.errors))
            results.append(result)
            for process, name, log in ((hub, "hub", hub_log), (bare, "bare server", bare_log)):
                if process.poll() is not None:
                    print(f"{name} exited with code {process.returncode} during the run\n{log_tail(log)}", file=sys.stderr)
                    return 1

        usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else "n/a"
        if use_wrk:
            version = subprocess.run([wrk_path() or "wrk", "-v"], capture_output=True, text=True, check=False)
            first_line = (version.stdout or version.stderr).strip().splitlines()[:1]
            generator = f"{first_line[0] if first_line else 'wrk'}, {options.threads} thread(s), closed loop"
        else:
            generator = "Python asyncio raw HTTP/1.1 in its own process, closed loop (wrk not used: it may bound the figures)"
        context = [
            ("machine", f"{platform.machine()} {platform.system()} {platform.release()}"),
            ("CPUs", f"{cores()} (usable by this process: {usable})"),
            ("Python", f"{platform.python_implementation()} {platform.python_version()}"),
            ("tornado", tornado.version),
            (
                "parameters",
                f"{options.rounds} alternating rounds, {options.duration_s:g} s each after {WARMUP_S:g} s warm-up, "
                f"{options.connections} keep-alive connections, {options.nodes} nodes, page of {PAGE}",
            ),
            ("load generator", generator),
            ("load at start", f"{load_at_start:.2f} ({cores()} cores)"),
        ]
        warning = busy_warning(load_at_start)
        if warning:
            print(f"\n{warning}")
        met = report(context, targets, rounds, results)
        if warning:
            print(f"\n{warning}")
        if any(r.failure for r in results):
            return 1
        return 0 if met else 3
    except KeyboardInterrupt:
        print("\ninterrupted; stopping the servers", file=sys.stderr)
        return 130
    finally:
        # Cleanup is bounded (STOP_TIMEOUT_S per server); do not let a second Ctrl-C cut it short.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        for process in processes:
            stop_process(process, STOP_TIMEOUT_S)
        shutil.rmtree(temp_dir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Authenticated GET /api/v1/nodes?limit=50 against a bare Tornado JSON handler.")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds, at least 3 (default 3)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds measured per target and round, after a 2 s warm-up")
    parser.add_argument("--connections", type=int, default=50, help="concurrent keep-alive connections (default 50)")
    parser.add_argument("--nodes", type=int, default=1000, help="enrolled nodes (default 1000)")
    parser.add_argument("--threads", type=int, default=1, help="wrk threads (default 1)")
    parser.add_argument(
        "--load", choices=("auto", "wrk", "python"), default="auto", help="load generator (auto: wrk if installed)"
    )
    parser.add_argument(
        "--hold", action="store_true", help="set up, print the hub's pid, URL and token, and wait (for profiling)"
    )
    args = parser.parse_args(argv)
    if args.duration <= 0 or args.connections < 1 or args.nodes < 1 or args.threads < 1:
        parser.error("--duration must be positive; --connections, --nodes and --threads at least 1")
    if args.rounds < MIN_ROUNDS:
        parser.error(f"--rounds must be at least {MIN_ROUNDS}")
    return run(Options(args.rounds, args.duration, args.connections, args.nodes, args.threads, args.load, args.hold))


if __name__ == "__main__":
    sys.exit(main())
