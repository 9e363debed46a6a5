"""A serial port that carries ASCII lines, owned by one thread that reopens it with backoff.

Every driver in `hw/` sits on a `LineChannel`: the thread opens the port with
`serial.serial_for_url` (so `/dev/ttyUSB0`, a pty path or `loop://` all work), splits what
it reads into lines on `\\n` (a trailing `\\r` is dropped), hands each complete line to the
driver, and writes the lines the driver queued. When the device disappears (read or write
fails, the port cannot be opened) the partial line is dropped, the port is closed, and the
thread tries again after a backoff that doubles up to `backoff_max_s`; a successful open
resets it. Nothing here raises into the caller: `send` only queues, and errors in the
driver's line handler are logged and counted.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import serial

log = logging.getLogger(__name__)

MAX_LINE_BYTES = 512  # longer means noise or a wrong baud rate: dropped up to the next newline
READ_TIMEOUT_S = 0.05  # how long a read waits: the latency of queued writes and of `stop`
WRITE_TIMEOUT_S = 1.0


@dataclass(slots=True)
class LineCounters:
    """What the channel saw since it started (read by other threads: plain ints, no lock needed)."""

    lines: int = 0
    dropped: int = 0  # over-long, undecodable, or cut short by a disconnect
    connects: int = 0
    disconnects: int = 0
    handler_errors: int = 0


class LineChannel:
    """A line-oriented serial port on its own thread: `on_line(text, received_at)` for every line read."""

    def __init__(
        self,
        name: str,
        url: str,
        on_line: Callable[[str, float], None],
        *,
        baudrate: int = 9600,
        on_connect: Callable[[], None] | None = None,
        on_disconnect: Callable[[], None] | None = None,
        backoff_s: float = 0.5,
        backoff_max_s: float = 10.0,
    ) -> None:
        self.name = name
        self.url = url
        self.baudrate = baudrate
        self.backoff_s = backoff_s
        self.backoff_max_s = backoff_max_s
        self.counters = LineCounters()
        self._on_line = on_line
        self._on_connect = on_connect
        self._on_disconnect = on_disconnect
        self._outgoing: queue.SimpleQueue[bytes] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._connected = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def wait_connected(self, timeout: float) -> bool:
        """True once the port is open (tests and start-up logs)."""
        return self._connected.wait(timeout)

    def start(self) -> None:
        """Start the port's thread (it keeps trying until `stop`)."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name=f"hw-{self.name}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        """Stop the thread and close the port."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("%s: port thread did not stop within %.1fs", self.name, timeout)
            self._thread = None

    def send(self, line: str) -> None:
        """Queue one line for the device (thread-safe, never blocks); lost if the device is away when it is written."""
        self._outgoing.put(line.encode("ascii", "replace") + b"\n")

    def clear_outgoing(self) -> None:
        """Forget lines queued but not yet written (a driver resends its state on connect instead)."""
        while True:
            try:
                self._outgoing.get_nowait()
            except queue.Empty:
                return

    def _run(self) -> None:
        delay = self.backoff_s
        while not self._stop.is_set():
            port = self._open()
            if port is None:
                self._stop.wait(delay)
                delay = min(delay * 2, self.backoff_max_s)
                continue
            delay = self.backoff_s
            self.counters.connects += 1
            self._connected.set()
            log.info("%s: connected on %s", self.name, self.url)
            self._call(self._on_connect)
            try:
                self._pump(port)
            except (serial.SerialException, OSError) as err:
                log.warning("%s: %s lost (%s): reconnecting", self.name, self.url, err)
            finally:
                self._connected.clear()
                _close(port)
            if not self._stop.is_set():
                self.counters.disconnects += 1
                self._call(self._on_disconnect)
                self._stop.wait(delay)

    def _open(self) -> serial.SerialBase | None:
        try:
            return serial.serial_for_url(self.url, baudrate=self.baudrate, timeout=READ_TIMEOUT_S, write_timeout=WRITE_TIMEOUT_S)
        except (serial.SerialException, OSError, ValueError) as err:
            log.debug("%s: cannot open %s: %s", self.name, self.url, err)
            return None

    def _pump(self, port: serial.SerialBase) -> None:
        """Read and write until the port fails or `stop` is set."""
        buffer = bytearray()
        overflowing = False
        try:
            while not self._stop.is_set():
                self._write_queued(port)
                chunk = port.read(max(1, port.in_waiting))
                if not chunk:
                    continue
                received_at = time.time()
                buffer += chunk
                while True:
                    end = buffer.find(b"\n")
                    if end < 0:
                        break
                    raw = bytes(buffer[:end])
                    del buffer[: end + 1]
                    if overflowing:  # the tail of an over-long line
                        overflowing = False
                        continue
                    self._deliver(raw, received_at)
                if len(buffer) > MAX_LINE_BYTES:
                    buffer.clear()
                    if not overflowing:
                        self.counters.dropped += 1
                    overflowing = True
        finally:
            if buffer and not overflowing:
                self.counters.dropped += 1  # a partial line when the device went away

    def _write_queued(self, port: serial.SerialBase) -> None:
        while True:
            try:
                data = self._outgoing.get_nowait()
            except queue.Empty:
                return
            port.write(data)

    def _deliver(self, raw: bytes, received_at: float) -> None:
        if len(raw) > MAX_LINE_BYTES:
            self.counters.dropped += 1
            return
        try:
            text = raw.decode("ascii").rstrip("\r")
        except UnicodeDecodeError:
            self.counters.dropped += 1
            return
        self.counters.lines += 1
        try:
            self._on_line(text, received_at)
        except Exception:  # noqa: BLE001 - a driver bug must not end the port's thread
            self.counters.handler_errors += 1
            log.exception("%s: line handler failed on %r", self.name, text)

    def _call(self, callback: Callable[[], None] | None) -> None:
        if callback is None:
            return
        try:
            callback()
        except Exception:  # noqa: BLE001 - same: the thread outlives driver bugs
            self.counters.handler_errors += 1
            log.exception("%s: connect/disconnect handler failed", self.name)


def _close(port: serial.SerialBase) -> None:
    try:
        port.close()
    except (serial.SerialException, OSError) as err:
        log.debug("closing port: %s", err)


def call_safely(name: str, callback: Callable[..., None] | None, *args: object) -> None:
    """Call a user callback from a driver thread; its exceptions are logged, never raised into the thread."""
    if callback is None:
        return
    try:
        callback(*args)
    except Exception:  # noqa: BLE001 - the agent's callback must not stop the driver
        log.exception("%s: callback %r failed", name, callback)
