"""The working WAV file: float ring samples in, PCM out, header sizes kept valid, segments checksummed as written."""

from __future__ import annotations

import errno
import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from hark_fleet.node.recorder.errors import DiskFull, WriteFailed
from hark_fleet.node.recorder.files import fsync_dir
from hark_fleet.node.recorder.wav import build_header, close_data, header_size, needs_rf64

log = logging.getLogger(__name__)

NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


@dataclass(frozen=True, slots=True)
class Segment:
    """A checksummed run of frames: `sha256` of exactly the sample bytes written for it."""

    index: int
    start_frame: int
    frames: int
    sha256: str

    def as_dict(self) -> dict[str, Any]:
        """The ledger's form."""
        return {"index": self.index, "start_frame": self.start_frame, "frames": self.frames, "sha256": self.sha256}


def to_pcm(samples: np.ndarray, bit_depth: int) -> bytes:
    """Float samples (frames x channels) as little-endian PCM: scaled by 2**(depth-1), rounded, clipped."""
    scale = float(1 << (bit_depth - 1))
    scaled = np.rint(samples.astype(np.float64) * scale)
    np.clip(scaled, -scale, scale - 1.0, out=scaled)
    if bit_depth == 16:
        return scaled.astype("<i2").tobytes()
    as_int = scaled.astype("<i4")
    if bit_depth == 32:
        return as_int.tobytes()
    return np.ascontiguousarray(as_int.reshape(-1, 1).view(np.uint8)[:, :3]).tobytes()


class WavWriter:
    """Appends PCM to a new WAV file whose header is valid after every `flush()`; one thread only."""

    def __init__(
        self, path: Path, rate: int, channels: int, bit_depth: int, segment_frames: int, *, rf64_after_bytes: int | None = None
    ) -> None:
        self.path = path
        self.rate = rate
        self.channels = channels
        self.bit_depth = bit_depth
        self.segment_frames = max(1, segment_frames)
        self.block_align = channels * (bit_depth // 8)
        self.data_offset = header_size(channels, bit_depth)
        self.frames = 0
        self.segments: list[Segment] = []
        self.rf64 = False
        self._rf64_after = rf64_after_bytes  # tests switch to RF64 early; None: when 32-bit sizes overflow
        self._segment_start = 0
        self._segment_hash = hashlib.sha256()
        self._fd: int | None = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            self._write_all(build_header(rate, channels, bit_depth, 0, False))
            os.fsync(self._fd)
            fsync_dir(path.parent)
        except (OSError, _PartialWrite) as failure:
            err = failure.err if isinstance(failure, _PartialWrite) else failure
            os.close(self._fd)
            self._fd = None
            path.unlink(missing_ok=True)
            raise (DiskFull if err.errno in NO_SPACE else WriteFailed)(f"cannot create {path.name}: {err}") from err

    @property
    def data_bytes(self) -> int:
        """Sample bytes written so far."""
        return self.frames * self.block_align

    @property
    def file_bytes(self) -> int:
        """The working file's size."""
        return self.data_offset + self.data_bytes

    def write(self, samples: np.ndarray) -> list[Segment]:
        """Append float frames; returns the segments this write completed. DiskFull/WriteFailed keep every whole frame."""
        completed: list[Segment] = []
        pos, count = 0, samples.shape[0]
        while pos < count:
            room = self.segment_frames - (self.frames - self._segment_start)
            take = min(room, count - pos)
            self._append(to_pcm(samples[pos : pos + take], self.bit_depth))
            pos += take
            if self.frames - self._segment_start == self.segment_frames:
                completed.append(self._end_segment())
        return completed

    def flush(self) -> None:
        """Rewrite the header's sizes and sync the data, so a crash or power cut loses nothing before this point."""
        self._sync_header()
        os.fdatasync(self._checked_fd())

    def sync(self) -> None:
        """Flush and fsync (at a segment boundary)."""
        self._sync_header()
        os.fsync(self._checked_fd())

    def close(self) -> list[Segment]:
        """End the last segment, write the final header and close; the segments of the whole file."""
        if self._fd is None:
            return self.segments
        if self.frames > self._segment_start:
            self._end_segment()
        fd, self._fd = self._fd, None
        try:
            self.rf64 = self.rf64 or self._past_riff_limit()
            close_data(fd, self.rate, self.channels, self.bit_depth, self.data_bytes, self.rf64)
            os.fsync(fd)
        finally:
            os.close(fd)
        fsync_dir(self.path.parent)
        return self.segments

    def abandon(self) -> None:
        """Close without finishing (the file is left for recovery to repair)."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    def _checked_fd(self) -> int:
        if self._fd is None:
            raise WriteFailed(f"{self.path.name} is closed")
        return self._fd

    def _past_riff_limit(self) -> bool:
        if self._rf64_after is not None and self.data_bytes > self._rf64_after:
            return True
        return needs_rf64(self.channels, self.bit_depth, self.data_bytes)

    def _sync_header(self) -> None:
        fd = self._checked_fd()
        self.rf64 = self.rf64 or self._past_riff_limit()
        os.pwrite(fd, build_header(self.rate, self.channels, self.bit_depth, self.data_bytes, self.rf64), 0)

    def _end_segment(self) -> Segment:
        frames = self.frames - self._segment_start
        segment = Segment(len(self.segments), self._segment_start, frames, self._segment_hash.hexdigest())
        self.segments.append(segment)
        self._segment_start = self.frames
        self._segment_hash = hashlib.sha256()
        return segment

    def _append(self, data: bytes) -> None:
        fd = self._checked_fd()
        try:
            self._write_all(data)
        except _PartialWrite as partial:
            done, err = partial.done, partial.err
            whole = done // self.block_align * self.block_align
            self._commit(data[:whole])
            try:  # drop a torn frame so the file ends on a frame boundary
                os.ftruncate(fd, self.file_bytes)
                os.lseek(fd, self.file_bytes, os.SEEK_SET)
            except OSError:
                log.exception("cannot truncate %s after a failed write", self.path.name)
            if err.errno in NO_SPACE:
                raise DiskFull(f"{self.path.name}: no space left after {self.frames} frames") from err
            raise WriteFailed(f"{self.path.name}: {err}") from err
        self._commit(data)

    def _commit(self, data: bytes) -> None:
        self._segment_hash.update(data)
        self.frames += len(data) // self.block_align

    def _write_all(self, data: bytes) -> int:
        fd = self._checked_fd()
        view = memoryview(data)
        done = 0
        while done < len(view):
            try:
                done += os.write(fd, view[done:])
            except OSError as err:
                raise _PartialWrite(done, err) from err
        return done


class _PartialWrite(Exception):
    """A write that stopped after `done` bytes."""

    def __init__(self, done: int, err: OSError) -> None:
        super().__init__(str(err))
        self.done = done
        self.err = err
