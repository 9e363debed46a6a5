"""Disk hours-left: the data disk's free bytes over the bytes per second the node is recording now."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

MIN_RATE_WINDOW_S = 1.0  # a rate needs at least this much recording behind it


class _Progress(Protocol):
    bytes: int
    seconds: float


class _Recording(Protocol):
    recording_id: str

    def progress(self) -> _Progress: ...


class RecordingRate:
    """Bytes per second of the running recording: between two readings, else over what it wrote so far."""

    def __init__(self, current: Callable[[], _Recording | None], clock: Callable[[], float] = time.monotonic) -> None:
        self._current = current
        self._clock = clock
        self._last: tuple[str, float, int] | None = None  # recording id, when, bytes
        self.bytes_per_s: float | None = None

    def read(self) -> float | None:
        """The rate now (None: not recording, or too early to tell)."""
        recording = self._current()
        if recording is None:
            self._last, self.bytes_per_s = None, None
            return None
        progress = recording.progress()
        now = self._clock()
        rate: float | None = None
        last = self._last
        same = last is not None and last[0] == recording.recording_id
        if last is not None and same and now - last[1] >= MIN_RATE_WINDOW_S and progress.bytes > last[2]:
            rate = (progress.bytes - last[2]) / (now - last[1])
        elif progress.seconds >= MIN_RATE_WINDOW_S and progress.bytes > 0:
            rate = progress.bytes / progress.seconds
        self._last = (recording.recording_id, now, progress.bytes)
        self.bytes_per_s = None if rate is None else round(rate, 1)
        return self.bytes_per_s


def hours_left(free_bytes: int | None, bytes_per_s: float | None) -> float | None:
    """Hours of recording `free_bytes` hold at `bytes_per_s` (None when either is unknown)."""
    if free_bytes is None or not bytes_per_s:
        return None
    return round(free_bytes / bytes_per_s / 3600.0, 2)
