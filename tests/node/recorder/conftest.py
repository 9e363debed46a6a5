"""Fixtures and helpers of the recorder tests: known signals fed into a real ring buffer, and reading files back."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile
from hark_fleet.audio.capture import RingBuffer
from hark_fleet.node.recorder import RecordingProfile

RATE = 48_000
Signal = Callable[[int, int], np.ndarray]  # (first frame, count) -> float32 (count, channels)


def sine(channels: int = 2, freq: float = 997.0, dbfs: float = -6.0, rate: int = RATE) -> Signal:
    """A sine (channel c at freq * (c + 1)) quantized to 16-bit steps, so every PCM depth stores it exactly."""
    level = 10.0 ** (dbfs / 20.0)

    def make(start: int, count: int) -> np.ndarray:
        t = (start + np.arange(count))[:, None] / rate
        freqs = freq * (1 + np.arange(channels))[None, :]
        return (np.round(level * np.sin(2 * math.pi * freqs * t) * 32768.0) / 32768.0).astype(np.float32)

    return make


def ramp(channels: int = 2) -> Signal:
    """Every frame different: exact 16-bit values that say which frame they are (to find gaps to the frame)."""

    def make(start: int, count: int) -> np.ndarray:
        frames = (start + np.arange(count, dtype=np.int64))[:, None] * 7 + 1000 * np.arange(channels)[None, :]
        return ((frames % 65536 - 32768) / 32768.0).astype(np.float32)

    return make


def pcm16_bytes(samples: np.ndarray) -> bytes:
    """The little-endian 16-bit PCM of exactly representable float samples, +1.0 clipped (independent of the recorder's code)."""
    return np.minimum(samples.astype(np.float64) * 32768.0, 32767.0).astype("<i2").tobytes()


def profile(**fields: object) -> RecordingProfile:
    """A test profile: WAV 16 bit, 1 s segments, no pre-roll, unless told."""
    base: dict[str, object] = {"format": "wav", "sample_rate": RATE, "bit_depth": 16, "segment_s": 1.0, "preroll_s": 0.0}
    base.update(fields)
    return RecordingProfile.from_dict(base)


def read_back(path: Path | None) -> np.ndarray:
    """A recording's samples as float32 (frames x channels)."""
    assert path is not None, "the recording has no file"
    data, _ = soundfile.read(path, dtype="float32", always_2d=True)
    return data


class Feeder:
    """Writes a known signal into a ring from its own thread: faster than real time, never lapping the slowest reader."""

    def __init__(self, ring: RingBuffer, signal: Signal, block: int = 960, speed: float | None = None) -> None:
        self.ring = ring
        self.signal = signal
        self.block = block
        self.speed = speed  # None: as fast as the readers allow; else this many times real time
        self.paused = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="test-feeder", daemon=True)

    def write(self, frames: int) -> None:
        """Write `frames` now, from the caller's thread."""
        start = self.ring.frames_written
        self.ring.write(self.signal(start, frames))

    def start(self) -> Feeder:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        began, sent = time.monotonic(), 0
        while not self._stop.is_set():
            if self.paused.is_set():
                self._stop.wait(0.005)
                began, sent = time.monotonic(), 0
                continue
            positions = [s.position for s in self.ring.reader_stats()]
            behind = self.ring.frames_written - min(positions) if positions else 0
            if behind + self.block > self.ring.readable_frames // 2:
                self._stop.wait(0.001)
                continue
            if self.speed is not None:
                ahead = began + sent / (self.ring.rate * self.speed) - time.monotonic()
                if ahead > 0:
                    self._stop.wait(ahead)
                    continue
            self.write(self.block)
            sent += self.block


@pytest.fixture
def feeders(no_thread_leak: None) -> Iterator[list[Feeder]]:
    """Feeders a test starts; all stopped at its end, before the check that no thread is left."""
    started: list[Feeder] = []
    yield started
    for feeder in started:
        feeder.stop()
