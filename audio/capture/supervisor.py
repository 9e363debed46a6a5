"""Keeps a capture running: detects a lost device or a stalled stream, reports it, reopens with backoff.

Nothing raises out of the supervisor: an unplugged USB interface becomes a condition
(`audio.device_lost`, then `resolved` once samples flow again), never a dead agent.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from hark_fleet.audio.capture.backends import open_capture
from hark_fleet.audio.capture.base import Capture, CaptureStats
from hark_fleet.audio.capture.devices import rescan_devices
from hark_fleet.audio.capture.errors import CaptureError
from hark_fleet.audio.capture.ring import RingBuffer
from hark_fleet.audio.source import AudioSource
from hark_fleet.protocol.backoff import backoff_delay

log = logging.getLogger(__name__)

DEVICE_LOST = "audio.device_lost"
NO_DEVICE = "audio.no_device"
MIN_RETRY_S = 0.05  # full jitter may draw ~0: never spin


@dataclass(frozen=True, slots=True)
class CaptureCondition:
    """A capture problem opening or resolving; the node turns it into a health event of the same kind."""

    kind: str
    state: Literal["open", "resolved"]
    severity: Literal["info", "warning", "critical"]
    message: str
    details: dict[str, object] = field(default_factory=dict)


OpenCapture = Callable[[AudioSource, RingBuffer, CaptureStats], Capture]


class CaptureSupervisor:
    """Runs one source's capture in its own thread for as long as it is started, through device loss and back.

    A stream is lost when it ends or delivers nothing for `stall_s` (`first_block_s` after opening:
    PulseAudio and some USB interfaces take a while to deliver their first block).
    """

    def __init__(
        self,
        source: AudioSource,
        ring: RingBuffer,
        on_condition: Callable[[CaptureCondition], None],
        *,
        stall_s: float = 2.0,
        first_block_s: float = 5.0,
        backoff_base_s: float = 0.5,
        backoff_cap_s: float = 30.0,
        poll_s: float = 0.05,
        opener: OpenCapture = open_capture,
    ) -> None:
        self.source = source
        self.ring = ring
        self.stats = CaptureStats()
        self.stall_s = stall_s
        self.first_block_s = first_block_s
        self.backoff_base_s = backoff_base_s
        self.backoff_cap_s = backoff_cap_s
        self.poll_s = poll_s
        self.state = "stopped"
        self.last_error = ""
        self._on_condition = on_condition
        self._opener = opener
        self._open_condition: str | None = None
        self._ever_captured = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.last_tick = time.monotonic()  # the supervisor's thread was last seen alive (for a watchdog)

    @property
    def open_condition(self) -> str | None:
        """The kind of the condition reported open and not yet resolved, if any."""
        return self._open_condition

    def start(self) -> None:
        """Start capturing in the background; problems are reported through `on_condition`, never raised."""
        if self._thread is not None:
            return
        self._stop.clear()
        self.state = "starting"
        self._thread = threading.Thread(target=self._run, name="hark-capture-supervisor", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop capturing and release the device."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout)
            if thread.is_alive():
                log.warning("audio capture did not stop within %gs", timeout)
        self.state = "stopped"

    def _run(self) -> None:
        attempt = 0
        retry = False
        while not self._stop.is_set():
            capture = self._open(retry)
            retry = True
            if capture is None:
                self.state = "waiting"
                self._sleep(max(MIN_RETRY_S, backoff_delay(attempt, self.backoff_base_s, self.backoff_cap_s)))
                attempt += 1
                continue
            flowed = self._watch(capture)
            self._close(capture)
            if self._stop.is_set():
                break
            if flowed:
                attempt = 0
            self._report_open(DEVICE_LOST, f"{capture.describe()}: {self.last_error}")
            self.state = "waiting"
            self._sleep(max(MIN_RETRY_S, backoff_delay(attempt, self.backoff_base_s, self.backoff_cap_s)))
            attempt += 1

    def _sleep(self, seconds: float) -> None:
        """Wait (stop ends it early), showing the thread is alive at least once a second."""
        deadline = time.monotonic() + seconds
        while not self._stop.is_set():
            self.last_tick = time.monotonic()
            left = deadline - self.last_tick
            if left <= 0:
                return
            self._stop.wait(min(1.0, left))

    def _open(self, retry: bool) -> Capture | None:
        try:
            if retry and self.source.kind == "sounddevice":
                rescan_devices()  # PortAudio lists devices once: a (re)plugged interface shows only after a rescan
            self.stats.last_block_at = time.monotonic()
            return self._opener(self.source, self.ring, self.stats)
        except CaptureError as err:
            self.last_error = str(err)
        except Exception as err:  # a library bug must not end capture for good
            log.exception("opening %s failed", self.source.describe())
            self.last_error = f"{type(err).__name__}: {err}"
        kind = DEVICE_LOST if self._ever_captured else NO_DEVICE
        self._report_open(kind, self.last_error)
        return None

    def _watch(self, capture: Capture) -> bool:
        """Wait while blocks arrive; returns whether any did, once the stream ended or stalled (or stop was asked)."""
        blocks_at_open = self.stats.blocks
        flowed = False
        while not self._stop.wait(self.poll_s):
            self.last_tick = time.monotonic()
            if not flowed and self.stats.blocks > blocks_at_open:
                flowed = True
                self._ever_captured = True
                self.state = "capturing"
                self._report_resolved()
            silent_s = time.monotonic() - self.stats.last_block_at
            if not capture.alive():
                self.last_error = "the stream ended"
                break
            if silent_s > (self.stall_s if flowed else max(self.stall_s, self.first_block_s)):
                self.last_error = f"no audio for {silent_s:.1f}s"
                break
        if not self._stop.is_set():
            log.warning("audio capture lost: %s: %s", capture.describe(), self.last_error)
        return flowed

    def _close(self, capture: Capture) -> None:
        try:
            capture.close()
        except Exception:
            log.exception("closing %s failed", capture.describe())

    def _report_open(self, kind: str, message: str) -> None:
        if self._open_condition is not None:
            return  # one open condition at a time: a lost device that stays absent is still the same loss
        self._open_condition = kind
        log.warning("%s: %s", kind, message)
        self._emit(CaptureCondition(kind, "open", "critical", message, {"source": self.source.describe()}))

    def _report_resolved(self) -> None:
        kind, self._open_condition = self._open_condition, None
        if kind is None:
            return
        log.info("%s resolved: capturing %s again", kind, self.source.describe())
        self._emit(CaptureCondition(kind, "resolved", "critical", "capturing again", {"source": self.source.describe()}))

    def _emit(self, condition: CaptureCondition) -> None:
        try:
            self._on_condition(condition)
        except Exception:
            log.exception("the capture condition handler failed on %s", condition.kind)
