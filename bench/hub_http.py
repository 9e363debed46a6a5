"""HTTP throughput and latency of the hark hub, against a bare Tornado hello world.

What is measured
----------------
Three targets, one after the other, each with the same load:

* ``bare``     -- a minimal Tornado application (one ``RequestHandler`` whose ``get()``
                  writes ``{"status":"ok"}``), run as its own process. This is the
                  reference: the best a single-process Tornado server on this machine does.
* ``healthz``  -- the hark hub's ``GET /healthz`` (public; hark's handler base, metrics and
                  routing, no database).
* ``nodes``    -- the hark hub's authenticated ``GET /api/v1/nodes`` on an empty database
                  (bearer-token authentication plus a database query, answering
                  ``{"data": [], "meta": {"next_cursor": null}}``).

For each target it prints requests per second, p50 and p99 latency in milliseconds and the
number of errors (non-2xx answers and broken connections), and then the ratios of the hub's
figures to the bare server's: how much of Tornado's raw request rate hark keeps, and how much
longer its tail latency is.

How
---
The hub is a real ``hark-hub run`` process (``python -m hark_fleet.hub run``) on a fresh temporary data
directory (SQLite, embedded MQTT broker) with free ports, a random admin password and
``HARK_LOG_LEVEL=WARNING``; the script waits for ``GET /readyz`` to answer 200 and logs in
with ``POST /api/v1/auth/login`` to get a bearer token. The bare server is a separate Python
process started from an inline script.

The load generator runs in a third process (``multiprocessing``, spawn), so that it shares
no GIL with either server. It is a deliberately thin asyncio client: ``--connections``
keep-alive HTTP/1.1 connections opened with ``asyncio.open_connection``, each sending one
request at a time (closed loop), reading the header block and then ``Content-Length`` bytes
of body. Each target gets a 2 s warm-up whose answers are discarded, then ``--duration``
seconds of measurement; a response counts if it completes inside the measurement window, and
its latency is the ``time.perf_counter`` time from writing the request to reading the last
body byte.

On a small machine the client and the server compete for CPU, so the table also shows the
CPU used by the client process and by the server process during the measurement window
(100 % = one core; the server's figure covers all its threads, so it can exceed 100 %; read
from ``/proc`` where available). A client near 100 % would mean the figures are bounded by the
client, not the server.

Run it from the repository root::

    .venv/bin/python bench/hub_http.py [--duration 10] [--connections 16]

Both server processes are stopped at the end (SIGTERM, then SIGKILL after 10 s), also on
Ctrl-C or an error, and the temporary directory is removed.
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
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from types import FrameType
from typing import Any

import tornado
from hark_fleet.hub.processes import free_port, stop_process

REPO_ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
WARMUP_S = 2.0
READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0
# How long to wait for the load process beyond warm-up plus duration before giving up on it.
LOAD_GRACE_S = 30.0

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


# -- results -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LoadResult:
    """What one load run measured inside its measurement window."""

    requests: int
    errors: int
    duration_s: float
    p50_ms: float
    p99_ms: float
    client_cpu_pct: float
    server_cpu_pct: float | None
    statuses: dict[int, int] = field(default_factory=dict)
    failure: str | None = None

    @property
    def rps(self) -> float:
        return self.requests / self.duration_s if self.duration_s > 0 else 0.0


@dataclass(frozen=True, slots=True)
class Target:
    """One thing to measure: a server address, a path and extra request headers."""

    label: str
    description: str
    port: int
    path: str
    headers: dict[str, str] = field(default_factory=dict)
    server_pid: int | None = None
    method: str = "GET"
    body: bytes = b""

    def request(self) -> bytes:
        """The raw HTTP/1.1 request the load process sends over and over."""
        headers = {"Host": f"{HOST}:{self.port}", "User-Agent": "hark-bench", "Accept": "*/*", **self.headers}
        if self.body:
            headers["Content-Length"] = str(len(self.body))
        lines = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        return f"{self.method} {self.path} HTTP/1.1\r\n{lines}\r\n".encode("latin-1") + self.body


# -- load generator (runs in its own process) ------------------------------------


def _percentile(sorted_values: list[float], fraction: float) -> float:
    """Nearest-rank percentile of an already sorted list (0.0 when empty)."""
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def _process_cpu_s(pid: int) -> float | None:
    """User plus system CPU seconds of a process (all its threads), from /proc; None elsewhere."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            fields = stat.read().rpartition(")")[2].split()
        # After the command name: state is fields[0], utime is field 14 of the full line -> [11], stime [12].
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


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


async def _connection_loop(port: int, request: bytes, state: _LoadState) -> None:
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
                writer.write(request)
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
    port: int, request: bytes, connections: int, warmup_s: float, duration_s: float, server_pid: int | None
) -> LoadResult:
    now = time.perf_counter()
    state = _LoadState(now + warmup_s, now + warmup_s + duration_s)

    async def sample_cpu() -> tuple[float, float | None]:
        """CPU used by this process and by the server between the window's start and end."""
        await asyncio.sleep(max(0.0, state.measure_start - time.perf_counter()))
        client_before, server_before = time.process_time(), _process_cpu_s(server_pid) if server_pid else None
        await asyncio.sleep(max(0.0, state.measure_end - time.perf_counter()))
        client_after, server_after = time.process_time(), _process_cpu_s(server_pid) if server_pid else None
        server = server_after - server_before if server_before is not None and server_after is not None else None
        return client_after - client_before, server

    cpu_task = asyncio.create_task(sample_cpu())
    await asyncio.gather(*(_connection_loop(port, request, state) for _ in range(connections)))
    client_cpu_s, server_cpu_s = await cpu_task
    latencies = sorted(state.latencies)
    return LoadResult(
        requests=len(latencies),
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
    request: bytes,
    connections: int,
    warmup_s: float,
    duration_s: float,
    server_pid: int | None,
) -> None:
    """Entry point of the load process: run the load and send a LoadResult back."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # on Ctrl-C the parent stops this process
    try:
        result = asyncio.run(_run_load(port, request, connections, warmup_s, duration_s, server_pid))
    except Exception as err:  # noqa: BLE001 - reported to the parent instead of a traceback in a child
        result = LoadResult(0, 0, duration_s, 0.0, 0.0, 0.0, None, failure=f"{type(err).__name__}: {err}")
    result_pipe.send(result)
    result_pipe.close()


def measure(target: Target, connections: int, duration_s: float) -> LoadResult:
    """Run the load against one target in a separate process and return what it measured."""
    context = multiprocessing.get_context("spawn")
    receiver, sender = context.Pipe(duplex=False)
    process = context.Process(
        target=load_process_main,
        args=(sender, target.port, target.request(), connections, WARMUP_S, duration_s, target.server_pid),
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


# -- servers ---------------------------------------------------------------------


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


# -- report ----------------------------------------------------------------------


# (title, column names, rows, number of left-aligned leading columns)
_TextTable = tuple[str, list[str], list[list[str]], int]


def _ratio(numerator: float, denominator: float) -> str:
    return f"{numerator / denominator:.2f}x" if denominator > 0 else "n/a"


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0f} %"


def report(context: list[tuple[str, str]], targets: list[Target], results: dict[str, LoadResult]) -> None:
    """Print the context, one row per target, and the hub/bare ratios (rich if available)."""
    columns = ["target", "request", "req/s", "p50 ms", "p99 ms", "errors", "client CPU", "server CPU"]
    rows = []
    for target in targets:
        result = results[target.label]
        rows.append(
            [
                target.label,
                target.description,
                f"{result.rps:,.0f}",
                f"{result.p50_ms:.2f}",
                f"{result.p99_ms:.2f}",
                str(result.errors),
                _pct(result.client_cpu_pct),
                _pct(result.server_cpu_pct),
            ]
        )
    bare = results["bare"]
    ratios = [
        [
            f"{label} / bare",
            _ratio(results[label].rps, bare.rps),
            _ratio(results[label].p99_ms, bare.p99_ms),
        ]
        for label in ("healthz", "nodes")
    ]
    ratio_columns = ["", "req/s ratio", "p99 ratio"]
    notes = [f"{label}: statuses {dict(sorted(result.statuses.items()))}" for label, result in results.items() if result.errors]
    notes += [f"{label}: load process failed: {result.failure}" for label, result in results.items() if result.failure]
    tables: list[_TextTable] = [
        ("results (measurement window only)", columns, rows, 2),
        ("hark vs bare Tornado", ratio_columns, ratios, 1),
    ]
    if not _print_rich(context, tables, notes):
        _print_plain(context, tables, notes)


def _print_rich(context: list[tuple[str, str]], tables: list[_TextTable], notes: list[str]) -> bool:
    """Print with rich tables; False if rich is not installed."""
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        return False
    console = Console()
    if not console.is_terminal:
        console = Console(width=120)  # piped output: rich would otherwise wrap the tables at 80 columns
    info = Table(title="hark hub HTTP benchmark", show_header=False, box=None)
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
    return True


def _print_plain(context: list[tuple[str, str]], tables: list[_TextTable], notes: list[str]) -> None:
    """Print as aligned plain text."""
    print("hark hub HTTP benchmark")
    width = max(len(key) for key, _ in context)
    for key, value in context:
        print(f"  {key.ljust(width)}  {value}")
    for title, header, body, left in tables:
        print(f"\n{title}")
        widths = [max(len(cell) for cell in column) for column in zip(header, *body, strict=True)]
        for line in [header, *body]:
            cells = [cell.ljust(w) if i < left else cell.rjust(w) for i, (cell, w) in enumerate(zip(line, widths, strict=True))]
            print("  " + "  ".join(cells))
    for note in notes:
        print(note)


# -- main ------------------------------------------------------------------------


def _raise_keyboard_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def run(duration_s: float, connections: int) -> int:
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)  # a SIGTERM cleans up like Ctrl-C
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
        status, payload = http_request(hub_port, "/api/v1/nodes", token=token)
        if status != 200:
            print(f"hub: GET /api/v1/nodes answered HTTP {status}: {payload}", file=sys.stderr)
            return 1

        targets = [
            Target("bare", "bare Tornado GET /", bare_port, "/", server_pid=bare.pid),
            Target("healthz", "hark GET /healthz", hub_port, "/healthz", server_pid=hub.pid),
            Target(
                "nodes", "hark GET /api/v1/nodes (auth)", hub_port, "/api/v1/nodes", {"Authorization": f"Bearer {token}"}, hub.pid
            ),
        ]
        results: dict[str, LoadResult] = {}
        for target in targets:
            print(
                f"measuring {target.label}: {target.description} "
                f"({WARMUP_S:.0f} s warm-up + {duration_s:g} s, {connections} connections) ...",
                flush=True,
            )
            results[target.label] = measure(target, connections, duration_s)
            for process, name, log in ((hub, "hub", hub_log), (bare, "bare server", bare_log)):
                if process.poll() is not None:
                    print(f"{name} exited with code {process.returncode} during the run\n{log_tail(log)}", file=sys.stderr)
                    return 1

        usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else "n/a"
        context = [
            ("machine", f"{platform.machine()} {platform.system()} {platform.release()}"),
            ("CPUs", f"{os.cpu_count()} (usable by this process: {usable})"),
            ("Python", f"{platform.python_implementation()} {platform.python_version()}"),
            ("tornado", tornado.version),
            ("parameters", f"duration {duration_s:g} s per target, warm-up {WARMUP_S:g} s, {connections} keep-alive connections"),
            ("load client", "1 process, asyncio raw HTTP/1.1, closed loop (one request in flight per connection)"),
        ]
        print()
        report(context, targets, results)
        return 1 if any(r.failure for r in results.values()) else 0
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
    parser = argparse.ArgumentParser(description="Benchmark hark hub HTTP against a bare Tornado hello world.")
    parser.add_argument(
        "--duration", type=float, default=10.0, help="seconds measured per target, after a 2 s warm-up (default 10)"
    )
    parser.add_argument("--connections", type=int, default=16, help="concurrent keep-alive connections (default 16)")
    args = parser.parse_args(argv)
    if args.duration <= 0 or args.connections < 1:
        parser.error("--duration must be positive and --connections at least 1")
    return run(args.duration, args.connections)


if __name__ == "__main__":
    sys.exit(main())
