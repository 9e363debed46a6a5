"""Several hubs behind Debian's HAProxy on loopback, configured with the README's own HAProxy block.

`HAProxy` takes the ```haproxy block of README.md ("Running more than one hub") and changes only what
loopback needs: the listener (plain HTTP on a free port: TLS is off on loopback), the backend servers
(the test's hubs, plain HTTP), the runtime socket's path and the log target. Every other line
(timeouts, health check, balancing, retries) is the documented one, so a README change that breaks
the deployment breaks the tests.

`SlowLink` is a node's slow network link: a TCP relay in front of HAProxy that passes what the node
sends at a fixed rate, so a hub can be killed in the middle of an upload, and that notes every PUT's
`Content-Range`. `EventStream` reads `GET /api/v1/events/stream` on a thread and, when its hub goes
away, resumes through another URL with `Last-Event-ID`.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from hark_fleet.hub.processes import free_port

from tests.harness import ROOT, port_open, spawn, terminate, wait_for

README = ROOT / "README.md"
HAPROXY_BLOCK = re.compile(r"^```haproxy\n(.*?)^```", re.S | re.M)
TLS_OPTIONS = re.compile(r"\s+(?:ssl|(?:verify|ca-file|crl-file|crt|alpn)\s+\S+)(?=\s|$)")


def readme_haproxy_config() -> str:
    """The README's HAProxy configuration, as documented."""
    blocks = HAPROXY_BLOCK.findall(README.read_text(encoding="utf-8"))
    assert len(blocks) == 1, f"README.md should hold one ```haproxy block, found {len(blocks)}"
    return blocks[0]


def loopback_config(
    documented: str, port: int, servers: dict[str, int], runtime_socket: Path, tls_paths: dict[str, str] | None = None
) -> str:
    """`documented` with the loopback listener, the test's servers, its runtime socket and logs on stderr.

    Plain HTTP unless `tls_paths` (documented path prefix -> the test's) is given: then the TLS options stay,
    with their files moved.
    """
    for documented_path, path in (tls_paths or {}).items():
        documented = documented.replace(documented_path, path)
    out: list[str] = []
    seen = {"bind": 0, "server": 0, "stats socket": 0, "default-server": 0, "log": 0}
    for line in documented.splitlines():
        stripped = line.strip()
        indent = line[: len(line) - len(line.lstrip())]
        if stripped.startswith("bind "):
            seen["bind"] += 1
            address = f"bind 127.0.0.1:{port}"
            out.append(indent + (re.sub(r"bind \S+", address, stripped) if tls_paths else address))
        elif stripped.startswith("server "):
            if seen["server"] == 0:
                out += [f"{indent}server {name} 127.0.0.1:{server_port}" for name, server_port in servers.items()]
            seen["server"] += 1
        elif stripped.startswith("default-server "):
            seen["default-server"] += 1
            out.append(line if tls_paths else TLS_OPTIONS.sub("", line))
        elif stripped.startswith("stats socket "):
            seen["stats socket"] += 1
            out.append(re.sub(r"stats socket \S+", f"stats socket {runtime_socket}", line))
        elif stripped.startswith("log /dev/log"):
            seen["log"] += 1
            out.append(f"{indent}log stderr format raw local0")
        else:
            out.append(line)
    missing = [what for what, count in seen.items() if count == 0]
    assert not missing, f"the README's HAProxy block has no {missing} line: update tests/e2e/multi_hub.py with it"
    return "\n".join(out) + "\n"


@dataclass
class HAProxy:
    """Debian's HAProxy on a free loopback port in front of `servers` (name -> port on 127.0.0.1)."""

    workdir: Path
    servers: dict[str, int]
    port: int = field(default_factory=free_port)
    backend: str = "hark_hubs"
    tls_paths: dict[str, str] | None = None  # keep TLS, its files moved (see loopback_config)
    proc: Any = None

    @property
    def url(self) -> str:
        return f"{'https' if self.tls_paths else 'http'}://127.0.0.1:{self.port}"

    @property
    def runtime_socket(self) -> Path:
        return self.workdir / "admin.sock"

    @property
    def config_path(self) -> Path:
        return self.workdir / "haproxy.cfg"

    @property
    def log_path(self) -> Path:
        return self.workdir / "haproxy.log"

    def start(self) -> None:
        binary = shutil.which("haproxy") or "/usr/sbin/haproxy"
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(
            loopback_config(readme_haproxy_config(), self.port, self.servers, self.runtime_socket, self.tls_paths),
            encoding="utf-8",
        )
        self.proc = spawn([binary, "-db", "-f", str(self.config_path)], log_path=self.log_path)
        wait_for(lambda: port_open("127.0.0.1", self.port) or self.proc.poll() is not None, 15, "haproxy to listen")
        if self.proc.poll() is not None:
            raise RuntimeError(f"haproxy exited with {self.proc.returncode}:\n{self.log()}")

    def stop(self) -> None:
        if self.proc is not None:
            terminate(self.proc)
            self.proc = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def runtime(self, command: str) -> str:
        """One command on HAProxy's runtime API (the `stats socket`)."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(5)
            sock.connect(str(self.runtime_socket))
            sock.sendall(command.encode() + b"\n")
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode()

    def server_states(self) -> dict[str, str]:
        """Each backend server's state as the health checks see it: UP, DOWN, MAINT, DRAIN..."""
        lines = self.runtime("show stat").splitlines()
        header = lines[0].lstrip("# ").split(",")
        rows = [dict(zip(header, line.split(","), strict=False)) for line in lines[1:] if line]
        return {r["svname"]: r["status"] for r in rows if r.get("pxname") == self.backend and r["svname"] in self.servers}

    def wait_states(self, wanted: dict[str, str], timeout: float = 30) -> None:
        wait_for(
            lambda: all(self.server_states().get(name, "").startswith(state) for name, state in wanted.items()),
            timeout,
            f"haproxy servers {wanted} (now {self.server_states()})",
            interval=0.2,
        )

    def set_state(self, server: str, state: str) -> None:
        """`ready`, `drain` or `maint`, as an operator would."""
        answer = self.runtime(f"set server {self.backend}/{server} state {state}")
        assert answer.strip() == "", answer


# -- a node's slow link ------------------------------------------------------------------------------------------------

PUT_HEAD = re.compile(rb"PUT (\S+) HTTP/1\.[01]\r\n(.*?)\r\n\r\n", re.S)


class SlowLink:
    """A TCP relay to `upstream_port` on loopback passing `rate` bytes/s upstream (downstream unlimited)."""

    def __init__(self, upstream_port: int, rate: int) -> None:
        self.upstream_port = upstream_port
        self.rate = rate
        self.port = free_port()
        self.puts: list[tuple[float, str, str]] = []  # (monotonic time, path, Content-Range) of each PUT sent
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.AbstractServer | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, name="slow-link", daemon=True)
        self._tasks: set[asyncio.Task[None]] = set()
        self._open = asyncio.Event()  # cleared: what the node sends is held (the link stalls)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def pause(self) -> None:
        """Hold everything the node sends from now on (a stalled link) until `resume`."""
        asyncio.run_coroutine_threadsafe(self._set(False), self._loop).result(10)

    def resume(self) -> None:
        asyncio.run_coroutine_threadsafe(self._set(True), self._loop).result(10)

    async def _set(self, open_: bool) -> None:
        if open_:
            self._open.set()
        else:
            self._open.clear()

    def start(self) -> None:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._listen(), self._loop).result(10)

    async def _listen(self) -> None:
        self._open.set()
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", self.port)

    async def _relay(self, down_reader: asyncio.StreamReader, down_writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            down_writer.close()
            return
        up = asyncio.ensure_future(self._pipe(down_reader, up_writer, slow=True))
        down = asyncio.ensure_future(self._pipe(up_reader, down_writer, slow=False))
        for task in (up, down):
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        await asyncio.wait({up, down}, return_when=asyncio.FIRST_COMPLETED)
        for task in (up, down):
            task.cancel()
        for writer in (up_writer, down_writer):
            writer.close()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, slow: bool) -> None:
        window = b""
        piece = max(1024, self.rate // 20)
        try:
            while data := await reader.read(piece if slow else 65536):
                if slow:
                    await self._open.wait()
                    window = self._note_puts(window + data)
                    await asyncio.sleep(len(data) / self.rate)
                writer.write(data)
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    def _note_puts(self, window: bytes) -> bytes:
        end = 0
        for match in PUT_HEAD.finditer(window):
            headers = dict(
                (k.strip().lower(), v.strip())
                for k, _, v in (line.partition(":") for line in match.group(2).decode(errors="replace").split("\r\n"))
            )
            self.puts.append((time.monotonic(), match.group(1).decode(), headers.get("content-range", "")))
            end = match.end()
        return window[max(end, len(window) - 8192) :]

    def stop(self) -> None:
        if not self._thread.is_alive():
            return

        async def close() -> None:
            if self._server is not None:
                self._server.close()
            for task in list(self._tasks):
                task.cancel()

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


# -- an SSE client that resumes elsewhere ------------------------------------------------------------------------------


class EventStream:
    """`GET /api/v1/events/stream?type=...` on a thread; when the stream breaks it resumes through `resume_url`.

    `events` holds (id, type, data) in arrival order; `connections` the base URL of every connection made.
    """

    def __init__(self, url: str, resume_url: str, token: str, event_type: str) -> None:
        self.urls = [url, resume_url]
        self.token = token
        self.event_type = event_type
        self.events: list[tuple[int, str, dict[str, Any]]] = []
        self.connections: list[str] = []
        self.first_connection_events = 0  # how many came before the first stream broke
        self.resets = 0  # `event: reset`: the hub could not replay what was missed
        self.errors: list[str] = []
        self.connected = threading.Event()
        self._stop = threading.Event()
        self._response: httpx.Response | None = None
        self._thread = threading.Thread(target=self._run, name="event-stream", daemon=True)

    @property
    def last_id(self) -> int | None:
        return self.events[-1][0] if self.events else None

    def start(self) -> None:
        self._thread.start()
        assert self.connected.wait(10), f"the event stream did not connect: {self.errors}"

    def _run(self) -> None:
        base = self.urls[0]
        while not self._stop.is_set():
            headers = {"Authorization": f"Bearer {self.token}"}
            if self.last_id is not None:
                headers["Last-Event-ID"] = str(self.last_id)
            try:
                self._read(base, headers)
            except httpx.HTTPError as err:
                self.errors.append(f"{base}: {type(err).__name__}: {err}")
            if len(self.connections) == 1 and not self.first_connection_events:
                self.first_connection_events = len(self.events)
            base = self.urls[1]  # the first hub is gone: resume through the balancer
            self._stop.wait(0.2)

    def _read(self, base: str, headers: dict[str, str]) -> None:
        timeout = httpx.Timeout(5.0, read=70.0)  # longer than two keepalives
        with httpx.stream(
            "GET", f"{base}/api/v1/events/stream", params={"type": self.event_type}, headers=headers, timeout=timeout
        ) as response:
            self._response = response
            if response.status_code != 200:
                self.errors.append(f"{base}: {response.status_code} {response.read()[:200]!r}")
                return
            self.connections.append(base)
            self.connected.set()
            event: dict[str, str] = {}
            for line in response.iter_lines():
                if self._stop.is_set():
                    return
                if line == "":
                    if event.get("event") == "reset":
                        self.resets += 1
                    elif "id" in event and "data" in event:
                        self.events.append((int(event["id"]), event.get("event", ""), json.loads(event["data"])))
                    event = {}
                elif not line.startswith(":"):
                    key, _, value = line.partition(":")
                    event[key] = value[1:] if value.startswith(" ") else value

    def stop(self) -> None:
        self._stop.set()
        if self._response is not None:
            self._response.close()  # the reading thread wakes with an error and sees the stop
        self._thread.join(timeout=10)
