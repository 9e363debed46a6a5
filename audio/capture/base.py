"""The capture interface every backend implements, its counters, and the paced thread the file and synthetic backends share."""

from __future__ import annotations

import logging
import threading
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import numpy as np
from hark_fleet.audio.capture.errors import CaptureError
from hark_fleet.audio.capture.ring import RingBuffer
from hark_fleet.audio.source import AudioSource

log = logging.getLogger(__name__)

SCALES = {"int16": 1.0 / 32768.0, "int32": 1.0 / 2147483648.0, "float32": None}


@dataclass(slots=True)
class CaptureStats:
    """Counters the backends bump from the audio callback; they outlive any one stream."""

    blocks: int = 0
    frames: int = 0
    input_overflows: int = 0
    input_underflows: int = 0
    opened: int = 0
    last_block_at: float = field(default_factory=time.monotonic)

    def as_dict(self) -> dict[str, int]:
        """The counters, for status reports."""
        return {
            "blocks": self.blocks,
            "frames": self.frames,
            "input_overflows": self.input_overflows,
            "input_underflows": self.input_underflows,
            "opened": self.opened,
        }


class Capture(ABC):
    """One input stream writing blocks into a ring buffer; `start` opens it, `close` releases it."""

    kind = ""

    def __init__(self, source: AudioSource, ring: RingBuffer, stats: CaptureStats | None = None) -> None:
        self.source = source
        self.ring = ring
        self.stats = stats or CaptureStats()
        self._ended = False

    @abstractmethod
    def start(self) -> None:
        """Open the device and start delivering blocks; raises CaptureError."""

    @abstractmethod
    def close(self) -> None:
        """Stop and release the device; never raises."""

    def alive(self) -> bool:
        """False once the stream has ended on its own (device gone, file unreadable)."""
        return not self._ended

    def describe(self) -> str:
        """What is being captured, for logs and health events."""
        return self.source.describe()

    def _deliver(
        self,
        block: np.ndarray,
        scale: float | None = None,
        overflow: bool = False,
        underflow: bool = False,
        at: float | None = None,
    ) -> None:
        """The audio callback's whole job: copy into the ring (`at`: wall time of its newest frame, default now) and count."""
        self.ring.write(block, scale, at)
        stats = self.stats
        stats.blocks += 1
        stats.frames += block.shape[0]
        if overflow:
            stats.input_overflows += 1
        if underflow:
            stats.input_underflows += 1
        stats.last_block_at = time.monotonic()

    def __enter__(self) -> Capture:
        """`with open_capture(...) as capture:` closes the (already started) capture on the way out."""
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def newest_frame_time(adc_time: float, current_time: float, frames: int, rate: int, now: float) -> float | None:
    """The wall time a callback block's newest frame was captured, from PortAudio's stream clock.

    `adc_time` is when the block's first frame reached the converter and `current_time` the callback's
    time, both on the stream's clock; their difference is the input latency, taken off `now` (the wall
    clock). None when the host API gives no times (zeros) or implausible ones: the ring then uses now.
    """
    latency = current_time - adc_time
    if adc_time <= 0 or current_time <= 0 or not 0 <= latency < 1.0:
        return None
    return min(now, now - latency + (frames - 1) / rate)


class PacedCapture(Capture):
    """A capture fed by a thread that makes blocks and paces them in real time."""

    block_s = 0.02
    resync_after_s = 1.0  # further behind than this (machine suspended, debugger): start the clock again

    def __init__(self, source: AudioSource, ring: RingBuffer, stats: CaptureStats | None = None) -> None:
        super().__init__(source, ring, stats)
        self.block_frames = max(1, int(ring.rate * self.block_s))
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def prepare(self) -> None:
        """Open what the blocks come from; raises CaptureError."""

    @abstractmethod
    def fill(self, block: np.ndarray) -> None:
        """Write the next `len(block)` frames into `block`."""

    def release(self) -> None:
        """Close what `prepare` opened."""

    def start(self) -> None:
        self.prepare()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=f"hark-capture-{self.kind}", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        try:
            self.release()
        except Exception:
            log.exception("closing %s failed", self.describe())

    def alive(self) -> bool:
        return not self._ended and self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        block = np.zeros((self.block_frames, self.ring.channels), dtype=np.float32)
        started = time.monotonic()
        sent = 0
        while not self._stop.is_set():
            try:
                self.fill(block)
            except (CaptureError, RuntimeError, OSError, ValueError) as err:  # soundfile errors are RuntimeErrors
                log.warning("%s stopped: %s", self.describe(), err)
                self._ended = True
                return
            self._deliver(block)
            sent += self.block_frames
            ahead = started + sent / self.ring.rate - time.monotonic()
            if ahead > 0:
                self._stop.wait(ahead)
            elif ahead < -self.resync_after_s:
                started, sent = time.monotonic(), 0
