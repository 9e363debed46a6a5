"""A ring buffer of float32 frames between one writer (the audio callback) and any number of readers.

The writer only copies into the preallocated array and then advances one integer, so it never
waits for a reader and never allocates. Each reader keeps its own position; a reader that falls
more than the buffer behind loses the oldest frames, and that loss is counted on the reader.
Frames are numbered from the first frame ever written, so positions never wrap.

The ring also keeps a time anchor: the wall-clock time (`time.time()`, the node's clock) at which
the newest frame was written, set on every write. `time_at(position)` and `position_at(wall_s)`
convert between ring frames and wall time through it at the nominal rate, so a recording can start
at the frame of a planned instant even when it is opened a little after that instant (scheduled
recordings). The anchor is one tuple replaced whole, so a reader on another thread never sees a
frame count from one write paired with the time of another.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import numpy as np

DEFAULT_MAX_BLOCK_FRAMES = 8192


@dataclass(frozen=True, slots=True)
class ReaderStats:
    """What one reader has lost: `overruns` times, `lost_frames` frames in all."""

    name: str
    position: int
    overruns: int
    lost_frames: int


class RingBuffer:
    """Preallocated float32 frames (`capacity` x `channels`) written by one audio callback."""

    def __init__(self, channels: int, rate: int, seconds: float = 30.0, max_block_frames: int = DEFAULT_MAX_BLOCK_FRAMES) -> None:
        if channels < 1 or rate < 1:
            raise ValueError("a ring buffer needs at least one channel and a positive rate")
        self.channels = channels
        self.rate = rate
        self.capacity = max(int(round(seconds * rate)), 2 * max_block_frames)
        self._data = np.zeros((self.capacity, channels), dtype=np.float32)
        self._written = 0
        # Frames the writer may be overwriting while a reader copies: readers stay this far clear.
        self._max_block = max_block_frames
        self._readers: list[RingReader] = []
        self._readers_lock = threading.Lock()
        self._anchor: tuple[int, float] | None = None  # (frames written, wall time the newest of them was written)

    @property
    def frames_written(self) -> int:
        """Frames written since the buffer was made."""
        return self._written

    @property
    def readable_frames(self) -> int:
        """How far back a reader can reach: the capacity less the block the writer may be writing."""
        return self.capacity - self._max_block

    @property
    def anchor(self) -> tuple[int, float] | None:
        """(frames written, wall time of that write) as of the newest write; None before the first."""
        return self._anchor

    def time_at(self, position: int) -> float | None:
        """The wall time (epoch seconds, node clock) of ring frame `position`, from the anchor; None before any write."""
        anchor = self._anchor
        if anchor is None:
            return None
        written, at = anchor
        return at + (position - written) / self.rate

    def position_at(self, wall_s: float) -> int | None:
        """The ring frame captured at wall time `wall_s` (may be in the future or long gone); None before any write."""
        anchor = self._anchor
        if anchor is None:
            return None
        written, at = anchor
        return written + int(round((wall_s - at) * self.rate))

    @property
    def oldest_readable(self) -> int:
        """The oldest frame a new reader can still be given (0 until the buffer has wrapped)."""
        return max(0, self._written - self.readable_frames)

    def write(self, block: np.ndarray, scale: float | None = None, at: float | None = None) -> None:
        """Copy `block` (frames x channels) in, multiplied by `scale` when given (integer samples); the callback's only work.

        `at` is the wall time of the block's newest frame (default: now) and becomes the time anchor.
        """
        frames = block.shape[0]
        if frames > self._max_block:
            self._max_block = min(frames, self.capacity // 2)
        start_frame = self._written
        if frames > self.capacity:
            block = block[frames - self.capacity :]
            start_frame += frames - self.capacity
        count = block.shape[0]
        start = start_frame % self.capacity
        first = min(count, self.capacity - start)
        _copy(self._data[start : start + first], block[:first], scale)
        if first < count:
            _copy(self._data[: count - first], block[first:], scale)
        self._written += frames
        self._anchor = (self._written, time.time() if at is None else at)

    def reader(self, preroll_s: float = 0.0, name: str = "") -> RingReader:
        """A new reader starting `preroll_s` seconds in the past (as far as the buffer reaches)."""
        written = self._written
        back = min(int(round(preroll_s * self.rate)), written, self.readable_frames)
        reader = RingReader(self, written - back, name or f"reader-{len(self._readers) + 1}")
        with self._readers_lock:
            self._readers.append(reader)
        return reader

    def reader_at(self, position: int, name: str = "") -> RingReader:
        """A new reader starting at ring frame `position`: not before the oldest readable frame; a future one waits for it."""
        reader = RingReader(self, max(position, self.oldest_readable), name or f"reader-{len(self._readers) + 1}")
        with self._readers_lock:
            self._readers.append(reader)
        return reader

    def reader_stats(self) -> list[ReaderStats]:
        """Losses of every open reader."""
        with self._readers_lock:
            readers = list(self._readers)
        return [r.stats() for r in readers]

    def _forget(self, reader: RingReader) -> None:
        with self._readers_lock:
            if reader in self._readers:
                self._readers.remove(reader)


class RingReader:
    """One consumer's position in a RingBuffer, with the frames it lost by falling behind."""

    def __init__(self, ring: RingBuffer, position: int, name: str) -> None:
        self.ring = ring
        self.name = name
        self.position = position
        self.start_position = position
        self.overruns = 0
        self.lost_frames = 0

    @property
    def available(self) -> int:
        """Frames that can be read now (those already lost included); negative while the reader waits for a future frame."""
        return self.ring.frames_written - self.position

    def read(self, max_frames: int | None = None) -> np.ndarray:
        """The next frames (at most `max_frames`) as a new array; frames the writer overwrote are skipped and counted."""
        ring = self.ring
        self._skip_lost(ring.frames_written)
        count = max(0, ring.frames_written - self.position)
        if max_frames is not None:
            count = max(0, min(count, max_frames))
        out = np.empty((count, ring.channels), dtype=np.float32)
        start = self.position % ring.capacity
        first = min(count, ring.capacity - start)
        out[:first] = ring._data[start : start + first]
        if first < count:
            out[first:] = ring._data[: count - first]
        # The writer may have lapped us during the copy: drop what it could have overwritten.
        clobbered = self._oldest_intact(ring.frames_written) - self.position
        if clobbered > 0:
            clobbered = min(clobbered, count)
            self._lose(clobbered)
            out = out[clobbered:]
            count -= clobbered
        self.position += count
        return out

    def skip_to_end(self) -> int:
        """Drop everything unread (not counted as lost); returns how many frames were dropped."""
        written = self.ring.frames_written
        dropped = written - self.position
        self.position = written
        return dropped

    def stats(self) -> ReaderStats:
        """This reader's position and losses."""
        return ReaderStats(self.name, self.position, self.overruns, self.lost_frames)

    def close(self) -> None:
        """Stop being listed by the ring."""
        self.ring._forget(self)

    def _oldest_intact(self, written: int) -> int:
        return written - self.ring.readable_frames

    def _skip_lost(self, written: int) -> None:
        lost = self._oldest_intact(written) - self.position
        if lost > 0:
            self._lose(lost)

    def _lose(self, frames: int) -> None:
        self.overruns += 1
        self.lost_frames += frames
        self.position += frames


def _copy(dst: np.ndarray, src: np.ndarray, scale: float | None) -> None:
    if scale is None:
        np.copyto(dst, src, casting="unsafe")
    else:
        np.multiply(src, scale, out=dst, casting="unsafe")
