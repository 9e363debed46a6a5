"""Watchdogs: systemd's (sd_notify over `$NOTIFY_SOCKET`) and optionally the hardware one (`/dev/watchdog`).

The agent registers each worker that must keep running with a deadline and has it call
`heartbeat(name)` more often than that; the event loop itself should be one of them (a
small task that checks in every few seconds), so a stalled loop stops the pings too. A
thread pings every `interval_s` (half of `$WATCHDOG_USEC`, or the hardware interval,
whichever is shorter) only while every worker checked in within its deadline: a hung
capture thread stops the pings, systemd (WatchdogSec=) kills and restarts the node, and the
hardware watchdog, if opened, resets the box when even that fails.

The notify protocol is a few lines over a datagram unix socket (a leading `@` means an
abstract name), so no library: `READY=1`, `WATCHDOG=1`, `STATUS=<text>`, `STOPPING=1`. The
hardware watchdog starts counting when opened; each ping writes one byte, and a clean stop
writes the magic `V` before closing so the kernel disarms it (unless built with nowayout).
Only one process may hold `/dev/watchdog`: leave it unset when systemd's RuntimeWatchdogSec
already feeds it.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from hark_fleet.hw.errors import WatchdogError

log = logging.getLogger(__name__)

HARDWARE_PING_S = 5.0  # most hardware watchdogs time out after 10..60 s (the Pi's at most 15 s)
HARDWARE_PING_BYTE = b"."
MAGIC_CLOSE = b"V"


@dataclass(slots=True)
class _Worker:
    deadline_s: float
    last_seen: float


def notify_address(value: str | None) -> str | bytes | None:
    """The socket address in `$NOTIFY_SOCKET` (abstract names start with a NUL byte), or None if unusable."""
    if not value:
        return None
    if value.startswith("@"):
        return b"\0" + value[1:].encode()
    if value.startswith("/"):
        return value
    log.warning("NOTIFY_SOCKET %r is not a unix socket path: systemd notifications are off", value)
    return None


def systemd_ping_interval(env: Mapping[str, str]) -> float | None:
    """Half of `$WATCHDOG_USEC` in seconds when the watchdog is meant for this process, else None."""
    raw = env.get("WATCHDOG_USEC")
    pid = env.get("WATCHDOG_PID")
    if not raw or (pid and pid != str(os.getpid())):
        return None
    try:
        usec = int(raw)
    except ValueError:
        log.warning("WATCHDOG_USEC %r is not a number: systemd watchdog pings are off", raw)
        return None
    return usec / 2 / 1_000_000 if usec > 0 else None


class Watchdog:
    """Pings systemd and the hardware watchdog while every registered worker is alive."""

    def __init__(
        self,
        *,
        notify_socket: str | None = None,
        systemd_interval_s: float | None = None,
        hardware_path: Path | None = None,
        hardware_interval_s: float = HARDWARE_PING_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.address = notify_address(notify_socket)
        self.hardware_path = hardware_path
        intervals = [systemd_interval_s] if systemd_interval_s else []
        if hardware_path is not None:
            intervals.append(hardware_interval_s)
        self.interval_s: float | None = min(intervals) if intervals else None
        self.pings = 0
        self._ping_systemd = systemd_interval_s is not None
        self._clock = clock
        self._lock = threading.Lock()
        self._workers: dict[str, _Worker] = {}
        self._socket: socket.socket | None = None
        self._hardware_fd: int | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._starving: tuple[str, ...] = ()
        self._stopping_sent = False

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, hardware_path: Path | None = None) -> Watchdog:
        """The watchdog systemd set up for this process (`NOTIFY_SOCKET`, `WATCHDOG_USEC`), plus the hardware one."""
        env = os.environ if env is None else env
        return cls(
            notify_socket=env.get("NOTIFY_SOCKET"), systemd_interval_s=systemd_ping_interval(env), hardware_path=hardware_path
        )

    # -- workers ---------------------------------------------------------------

    def register(self, name: str, deadline_s: float) -> None:
        """Watch a worker that must `heartbeat(name)` at least every `deadline_s` seconds (counting from now)."""
        if deadline_s <= 0:
            raise ValueError("deadline_s must be above 0")
        with self._lock:
            self._workers[name] = _Worker(deadline_s, self._clock())

    def unregister(self, name: str) -> None:
        """Stop watching a worker that ended on purpose."""
        with self._lock:
            self._workers.pop(name, None)

    def heartbeat(self, name: str) -> None:
        """A worker says it is alive (thread-safe, cheap: call it from any loop)."""
        now = self._clock()
        with self._lock:
            worker = self._workers.get(name)
            if worker is not None:
                worker.last_seen = now

    def late_workers(self) -> tuple[str, ...]:
        """Workers that missed their deadline, by name."""
        now = self._clock()
        with self._lock:
            return tuple(sorted(name for name, w in self._workers.items() if now - w.last_seen > w.deadline_s))

    # -- systemd notifications -------------------------------------------------

    def ready(self, status: str | None = None) -> None:
        """Tell systemd start-up is done (Type=notify)."""
        self._notify("READY=1" + (f"\nSTATUS={status}" if status else ""))

    def status(self, text: str) -> None:
        """A one-line status shown by `systemctl status`."""
        self._notify(f"STATUS={text}")

    def stopping(self, status: str | None = None) -> None:
        """Tell systemd the process is shutting down on purpose."""
        self._stopping_sent = True
        self._notify("STOPPING=1" + (f"\nSTATUS={status}" if status else ""))

    def _notify(self, message: str) -> None:
        if self.address is None:
            return
        with self._lock:
            try:
                if self._socket is None:
                    self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._socket.sendto(message.encode(), self.address)
            except OSError as err:
                log.warning("systemd notification %r not sent: %s", message.split("\n")[0], err)

    # -- pinging -----------------------------------------------------------------

    def start(self) -> None:
        """Open the hardware watchdog (WatchdogError if it cannot be) and start pinging."""
        if self.hardware_path is not None and self._hardware_fd is None:
            try:
                self._hardware_fd = os.open(self.hardware_path, os.O_WRONLY | os.O_CLOEXEC)
            except OSError as err:
                raise WatchdogError(f"cannot open the hardware watchdog {self.hardware_path}: {err}") from err
            log.info("hardware watchdog %s armed", self.hardware_path)
        if self.interval_s is None or self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="hw-watchdog", daemon=True)
        self._thread.start()

    def ping(self) -> bool:
        """Ping once if every worker is alive; False (and a STATUS naming the late ones) otherwise."""
        late = self.late_workers()
        if late:
            if late != self._starving:
                log.error("watchdog: not pinging, late workers: %s", ", ".join(late))
                self.status(f"workers not responding: {', '.join(late)}")
            self._starving = late
            return False
        if self._starving:
            log.warning("watchdog: workers responding again, pinging")
            self.status("running")
            self._starving = ()
        if self._ping_systemd:
            self._notify("WATCHDOG=1")
        self._write_hardware(HARDWARE_PING_BYTE)
        self.pings += 1
        return True

    def _run(self) -> None:
        assert self.interval_s is not None
        self.ping()
        while not self._stop.wait(self.interval_s):
            self.ping()

    def _write_hardware(self, data: bytes) -> None:
        if self._hardware_fd is None:
            return
        try:
            os.write(self._hardware_fd, data)
        except OSError as err:
            log.error("hardware watchdog write failed: %s", err)

    def stop(self, timeout: float = 2.0) -> None:
        """Stop pinging, tell systemd (STOPPING=1) and disarm the hardware watchdog with the magic close."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        if not self._stopping_sent:
            self.stopping()
        if self._hardware_fd is not None:
            self._write_hardware(MAGIC_CLOSE)
            os.close(self._hardware_fd)
            self._hardware_fd = None
            log.info("hardware watchdog %s disarmed", self.hardware_path)
        with self._lock:
            if self._socket is not None:
                self._socket.close()
                self._socket = None
