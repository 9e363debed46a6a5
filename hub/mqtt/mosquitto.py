"""The hub's own Mosquitto: started as a child, watched, restarted with backoff, stopped with the hub.

The hub writes its configuration and first identities (`mosquitto_conf`), starts it, and counts it
up once it accepts connections. Its output goes into the hub's log. If it dies, it comes back on the
same addresses after a jittered backoff; the bridge and the dynamic security client reconnect by
themselves, and persistence brings back the QoS 1 sessions. The child gets SIGTERM when the hub
process dies, however it dies (PR_SET_PDEATHSIG), so a hub killed with -9 leaves no broker behind.
Node identities go through the dynamic security plugin, as on an external Mosquitto.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import logging
import os
import signal
import subprocess
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from hark_fleet.hub.errors import StartupError
from hark_fleet.hub.mqtt import mosquitto_conf as conf
from hark_fleet.hub.mqtt.listen import port_available
from hark_fleet.hub.processes import free_port
from hark_fleet.protocol.atomic_file import write_atomic
from hark_fleet.protocol.backoff import backoff_delay

log = logging.getLogger(__name__)

READY_TIMEOUT_S = 10.0  # from exec to accepting connections (it takes some 20 ms)
STOP_GRACE_S = 5.0  # SIGTERM, then SIGKILL
STABLE_S = 60.0  # up this long, the next death starts the backoff from the beginning again
RESTART_BACKOFF_BASE_S = 0.5
RESTART_BACKOFF_CAP_S = 30.0
PR_SET_PDEATHSIG = 1
OUTPUT_KEPT = 30  # last lines of its output, for the error when it does not start


@dataclass(frozen=True, slots=True)
class ServerTls:
    """The hub's TLS identity for the node listener: CA and CRL files, server certificate and key."""

    ca_file: Path
    crl_file: Path
    cert_pem: str
    key_pem: str


def _die_with_parent(parent: int) -> Callable[[], None]:
    """In the child, before exec: get SIGTERM when the hub dies (and exit if it is gone already)."""

    def preexec() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent:
            os._exit(1)

    return preexec


def describe_exit(code: int | None) -> str:
    if code is None:
        return "still running"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


class ManagedMosquitto:
    """A Mosquitto the hub runs: `start()` once, then it is kept up until `stop()`."""

    kind = "mosquitto"

    def __init__(self, binary: Path, data_dir: Path, username: str, password: str, tls: ServerTls | None = None) -> None:
        self.binary = binary
        self.directory = data_dir / conf.DIRECTORY
        self.username = username
        self.password = password
        self.tls = tls
        self.host = ""
        self.port = 0
        self.local_port = 0  # with TLS: the plain loopback listener of the hub's own clients
        self.restarts = 0
        self._proc: asyncio.subprocess.Process | None = None
        self._pump: asyncio.Task[None] | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._accepting = False
        self._stopping = False
        self._started_at = 0.0
        self._reason = "not started"
        self._output: deque[str] = deque(maxlen=OUTPUT_KEPT)

    # -- state ---------------------------------------------------------------------

    @property
    def running(self) -> bool:
        """Up and accepting connections."""
        return self._accepting and self._proc is not None and self._proc.returncode is None

    @property
    def reason(self) -> str:
        """Why it is not running (for `/readyz`)."""
        return "running" if self.running else self._reason

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None and self._proc.returncode is None else None

    @property
    def config_path(self) -> Path:
        return self.directory / conf.CONFIG_FILE

    @property
    def dynsec_path(self) -> Path:
        return self.directory / conf.DYNSEC_FILE

    # -- lifecycle -------------------------------------------------------------------

    async def start(self, host: str, port: int, fallback_to_free_port: bool) -> tuple[str, int]:
        """Write the configuration, start the broker on `host:port` (or a free port when allowed) and wait for it."""
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(None, self._prepare, host, port, fallback_to_free_port)
        except (conf.MosquittoSetupError, OSError) as err:
            raise StartupError(f"the embedded Mosquitto cannot start: {err}") from err
        if not await self._spawn():
            output = "\n".join(self._output)
            await self.stop()
            raise StartupError(f"the embedded Mosquitto ({self.binary}) did not start: {self._reason}\n{output}")
        self._supervisor = asyncio.create_task(self._supervise())
        return self.host, self.port

    def _prepare(self, host: str, port: int, fallback_to_free_port: bool) -> None:
        """Ports, TLS files, the dynamic security file and `mosquitto.conf` (blocking: run on an executor)."""
        plugin = conf.find_dynsec_plugin(self.binary)
        if plugin is None:
            raise conf.MosquittoSetupError(f"no dynamic security plugin found beside {self.binary}")
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        if port == 0 or not port_available(host, port):
            if port != 0 and not fallback_to_free_port:
                raise StartupError(f"HARK_EMBEDDED_MQTT_BIND {host}:{port} is already in use; free it or choose another address")
            if port != 0:
                log.warning("mqtt port %s:%d is taken (another broker?); the embedded Mosquitto uses a free port", host, port)
            port = free_port(host if host not in ("", "::") else "0.0.0.0")
        self.host, self.port = host, port
        self._write_dynsec()
        listeners = [conf.Listener(host, port, self._write_tls() if self.tls is not None else None)]
        if self.tls is not None:
            self.local_port = free_port("127.0.0.1")
            listeners.append(conf.Listener("127.0.0.1", self.local_port))
        text = conf.render_config(
            listeners=listeners,
            plugin=plugin,
            dynsec_file=self.dynsec_path,
            persistence_dir=self.directory,
            user=conf.current_user(),
        )
        write_atomic(self.config_path, text, mode=0o600)

    def _write_dynsec(self) -> None:
        """The plugin's identities, kept from the last run, with the hub user's password of this run."""
        document = conf.read_dynsec(self.dynsec_path)
        salt = os.urandom(conf.SALT_BYTES)
        if document is None:
            document = conf.initial_dynsec(self.username, self.password, salt)
        else:
            document = conf.with_admin_password(document, self.username, self.password, salt)
        write_atomic(self.dynsec_path, json.dumps(document, indent=1), mode=0o600)

    def _write_tls(self) -> conf.TlsFiles:
        assert self.tls is not None
        tls_dir = self.directory / "tls"
        tls_dir.mkdir(mode=0o700, exist_ok=True)
        certfile, keyfile = tls_dir / "server.pem", tls_dir / "server.key"
        write_atomic(certfile, self.tls.cert_pem, mode=0o644)
        write_atomic(keyfile, self.tls.key_pem, mode=0o600)
        return conf.TlsFiles(self.tls.ca_file, certfile, keyfile, self.tls.crl_file)

    async def _spawn(self) -> bool:
        """Start the process and wait until it accepts connections; False (and it is gone) if it does not."""
        self._accepting = False
        self._output.clear()
        proc = await asyncio.create_subprocess_exec(
            str(self.binary),
            "-c",
            str(self.config_path),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C in a terminal reaches the hub only, which stops it in order
            env={k: v for k, v in os.environ.items() if not k.startswith("HARK_")},  # the hub's secrets stay with the hub
            preexec_fn=_die_with_parent(os.getpid()),
        )
        self._proc = proc
        self._pump = asyncio.create_task(self._forward_output(proc))
        self._started_at = time.monotonic()
        if await self._wait_accepting(proc):
            self._accepting = True
            log.info("embedded Mosquitto (pid %d) accepting connections on %s:%d", proc.pid, self.host, self.port)
            return True
        if proc.returncode is None:
            self._reason = f"not accepting connections within {READY_TIMEOUT_S:.0f}s"
            await self._terminate(proc)
        else:
            self._reason = f"it exited at start ({describe_exit(proc.returncode)})"
            await asyncio.gather(self._pump, return_exceptions=True)
        return False

    async def _wait_accepting(self, proc: asyncio.subprocess.Process) -> bool:
        host = "127.0.0.1" if self.local_port or self.host in ("", "0.0.0.0") else "::1" if self.host == "::" else self.host
        port = self.local_port or self.port
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if proc.returncode is not None:
                return False
            try:
                _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout=1.0)
            except (OSError, TimeoutError):
                await asyncio.sleep(0.02)
                continue
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            return proc.returncode is None
        return False

    async def _forward_output(self, proc: asyncio.subprocess.Process) -> None:
        """Its output into the hub's log, one line at a time, each at the level its content calls for."""
        assert proc.stdout is not None
        while True:
            try:
                raw = await proc.stdout.readline()
            except (OSError, ValueError):  # ValueError: a line past the stream's limit
                continue
            if not raw:
                return
            line = raw.decode(errors="replace").rstrip()
            if not line:
                continue
            self._output.append(line)
            level = conf.log_level_of(line)
            log.log(logging.getLevelName(level.upper()), "mosquitto: %s", line)

    async def _supervise(self) -> None:
        """Restart the broker whenever it dies, with jittered backoff (reset once it stayed up STABLE_S)."""
        attempt = 0
        while not self._stopping:
            proc = self._proc
            assert proc is not None
            code = await proc.wait()
            if self._pump is not None:
                await asyncio.gather(self._pump, return_exceptions=True)
            if self._stopping:
                return
            self._accepting = False
            if time.monotonic() - self._started_at >= STABLE_S:
                attempt = 0
            log.error("the embedded Mosquitto stopped (%s); restarting it", describe_exit(code))
            while not self._stopping:
                delay = backoff_delay(attempt, RESTART_BACKOFF_BASE_S, RESTART_BACKOFF_CAP_S)
                attempt += 1
                self._reason = f"restarting after it stopped ({describe_exit(code)})"
                await asyncio.sleep(delay)
                try:
                    if await self._spawn():
                        self.restarts += 1
                        break
                except OSError as err:
                    self._reason = f"cannot start {self.binary}: {err.strerror or err}"
                log.error("the embedded Mosquitto did not come back: %s; trying again", self._reason)

    def reload_tls(self) -> None:
        """Have it reread its certificate, key and CRL (SIGHUP) after the CRL changed."""
        proc = self._proc
        if proc is not None and proc.returncode is None:
            proc.send_signal(signal.SIGHUP)

    async def _terminate(self, proc: asyncio.subprocess.Process) -> None:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), STOP_GRACE_S)
            except TimeoutError:
                log.warning("the embedded Mosquitto did not stop within %.0fs; killing it", STOP_GRACE_S)
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        if self._pump is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(self._pump, return_exceptions=True), 2.0)

    async def stop(self) -> None:
        """SIGTERM (it saves its persistence), SIGKILL after a grace; no restart from here on."""
        self._stopping = True
        self._accepting = False
        self._reason = "stopped"
        if self._supervisor is not None:
            self._supervisor.cancel()
            await asyncio.gather(self._supervisor, return_exceptions=True)
        if self._proc is not None:
            await self._terminate(self._proc)
