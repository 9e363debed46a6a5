"""One recording: reads the ring from its own thread, writes the working WAV, keeps the ledger, finalizes at the end.

The thread never raises: a full disk stops the recording cleanly (finalized, `stop_reason` disk_full),
any other error ends it with `stop_reason` error and the reason in the ledger. `done` is set once the
final file, ledger and manifest are on disk; `result` then says what happened.

Scheduled recordings pass `start_at` (epoch seconds, the node's clock): the reader opens at the ring
frame captured at that instant (through the ring's time anchor), so a recorder opened a little after
the plan still starts exactly on it. When the instant is older than the ring reaches (the node booted
late) the take starts at the oldest safely readable frame and runs until `start_at + duration_s`; the
ledger says `scheduled_start`, `start_error_ms` (the first sample's time minus the plan) and `late_s`
(> 0 only when the start missed the plan by more than START_TOLERANCE_S).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from hark_fleet.audio.capture import RingBuffer, RingReader
from hark_fleet.node.clock import utc_iso
from hark_fleet.node.recorder.const import (
    CLIP_LEVEL,
    FLUSH_INTERVAL_S,
    GAP_OVERRUN,
    GAP_STALL,
    MANIFEST_FILE,
    MAX_READ_S,
    POLL_S,
    RECORDING,
    RESERVE_BYTES,
    RESERVE_FILE,
    STALL_S,
    STOP_DISK_FULL,
    STOP_DURATION,
    STOP_ERROR,
    STOP_REQUESTED,
)
from hark_fleet.node.recorder.errors import DiskFull, RecorderError
from hark_fleet.node.recorder.finalize import (
    RecordingResult,
    final_name,
    finalize,
    mark_failed,
    release_reserve,
    result_of,
    working_name,
)
from hark_fleet.node.recorder.ledger import Gap, Ledger
from hark_fleet.node.recorder.manifest import Manifest
from hark_fleet.node.recorder.profile import RecordingProfile
from hark_fleet.node.recorder.writer import NO_SPACE, WavWriter

log = logging.getLogger(__name__)
PROGRESS_RECENT = 3  # segments and gaps of the ledger in each job heartbeat
START_TOLERANCE_S = 0.05  # the product's start accuracy: a scheduled take starting later than this is `late`
AHEAD_LIMIT_S = 0.5  # a planned frame further ahead than this (a stale anchor: capture paused) starts at the next frame
LATE_MARGIN_S = 1.0  # a take whose plan is out of reach starts this far inside the ring, clear of the writer


@dataclass(frozen=True, slots=True)
class Progress:
    """How far a recording has got: frames in the file, captured seconds (pre-roll excluded), bytes on disk."""

    frames: int
    captured_frames: int
    seconds: float
    bytes: int
    overruns: int
    lost_frames: int
    # The integrity ledger as it grows, bounded for any length of take: how many checksummed segments
    # and gaps so far, and the newest few of each (the whole ledger goes with the upload).
    segments: int = 0
    recent_segments: list[dict[str, Any]] = field(default_factory=list)
    gaps: int = 0
    recent_gaps: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """The job heartbeat's `progress`."""
        return asdict(self)


class Recorder:
    """Records one take from a ring buffer into `directory` (the recording's own, created here)."""

    def __init__(
        self,
        recording_id: str,
        directory: Path,
        rate: int,
        channels: int,
        profile: RecordingProfile,
        *,
        job_id: str | None = None,
        duration_s: float | None = None,
        inputs: Sequence[int] | None = None,
        clock_offset_ms: float | None = None,
        time_quality: str | None = None,
        start_at: float | None = None,
        flush_interval_s: float = FLUSH_INTERVAL_S,
        poll_s: float = POLL_S,
        stall_s: float = STALL_S,
        rf64_after_bytes: int | None = None,
    ) -> None:
        profile.check(channels)
        if inputs is not None and len(inputs) != channels:
            raise RecorderError(f"{len(inputs)} inputs for {channels} channels")
        if duration_s is not None and not duration_s > 0:
            raise RecorderError("duration_s must be positive")
        self.recording_id = recording_id
        self.job_id = job_id
        self.directory = Path(directory)
        self.rate = rate
        self.channels = channels
        self.profile = profile
        self.inputs = list(inputs) if inputs is not None else None
        self.clock_offset_ms = clock_offset_ms
        self.time_quality = time_quality
        self.start_at = start_at
        self.duration_s = duration_s
        self.start_error_ms: float | None = None  # scheduled: set once the first planned frame is read
        self.late_s: float | None = None
        self.flush_interval_s = flush_interval_s
        self.poll_s = poll_s
        self.stall_s = stall_s
        self._rf64_after = rf64_after_bytes
        limit = profile.max_duration_s if duration_s is None else min(duration_s, profile.max_duration_s)
        self.target_frames = int(round(limit * rate))  # pre-roll excluded
        self.done = threading.Event()
        self.result: RecordingResult | None = None
        self.ring_start: int | None = None  # the ring frame that is the file's first frame
        self._stop = threading.Event()
        self._stop_reason = STOP_REQUESTED
        self._stop_position: int | None = None
        self._reader: RingReader | None = None
        self._writer: WavWriter | None = None
        self._ledger: Ledger | None = None
        self._manifest: Manifest | None = None
        self._thread: threading.Thread | None = None
        self.preroll_frames = 0
        self._started_mono = 0.0
        self._started_wall = 0.0
        self._clipped = np.zeros(channels, dtype=np.int64)

    # -- control (any thread) ---------------------------------------------------------------

    def start(self, ring: RingBuffer) -> None:
        """Open a reader `preroll_s` back in the ring and record from it in a new thread."""
        self.open_reader(ring)
        self._thread = threading.Thread(target=self.run, name=f"hark-recorder-{self.recording_id}", daemon=True)
        self._thread.start()

    def open_reader(self, ring: RingBuffer) -> RingReader:
        """Open the ring reader (pre-roll measured now); `run()` then records from it in the caller's thread."""
        if ring.rate != self.rate:
            raise RecorderError(f"the ring runs at {ring.rate} Hz, the recording at {self.rate} Hz")
        width = max(self.inputs) + 1 if self.inputs else self.channels
        if (self.inputs is None and ring.channels != self.channels) or ring.channels < width:
            raise RecorderError(f"the ring has {ring.channels} channels, the recording needs {width}")
        if self.start_at is not None:
            reader = self._open_at(ring, self.start_at)
        else:
            written = ring.frames_written
            reader = ring.reader(preroll_s=self.profile.preroll_s, name=f"recorder-{self.recording_id}")
            wanted = min(int(round(self.profile.preroll_s * self.rate)), ring.readable_frames)
            self.preroll_frames = min(wanted, written) if reader.start_position == 0 else wanted
            self._started_mono = time.monotonic()
            self._started_wall = time.time()
        self.ring_start = reader.start_position
        self._reader = reader
        return reader

    def _open_at(self, ring: RingBuffer, start_at: float) -> RingReader:
        """The reader of a scheduled take: at the frame of `start_at`, or as near after it as the ring allows."""
        written = ring.frames_written
        planned = ring.position_at(start_at)
        margin = min(int(LATE_MARGIN_S * self.rate), ring.readable_frames // 2)
        safe_oldest = max(0, written - ring.readable_frames + margin)
        if planned is None or planned > written + int(AHEAD_LIMIT_S * self.rate):
            start = written  # no audio yet, or capture paused since the anchor: the next frame is the first
        else:
            start = max(planned, safe_oldest)
        preroll = min(int(round(self.profile.preroll_s * self.rate)), max(0, start - max(0, written - ring.readable_frames)))
        reader = ring.reader_at(start - preroll, name=f"recorder-{self.recording_id}")
        self.preroll_frames = start - reader.start_position
        first = ring.time_at(start)
        self._set_start_time(start_at if first is None else first)
        return reader

    def _set_start_time(self, wall_s: float) -> None:
        """The first captured sample's wall time (pre-roll excluded), and the monotonic instant it stands for."""
        self._started_wall = wall_s
        self._started_mono = time.monotonic() - (time.time() - wall_s)

    def stop(self, reason: str = STOP_REQUESTED) -> None:
        """End the recording with the audio up to now (`reason`: stopped, or disk_low from the cache policy)."""
        if self._stop.is_set():
            return
        reader = self._reader
        self._stop_position = reader.ring.frames_written if reader is not None else None
        self._stop_reason = reason
        self._stop.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until the recording is finalized (or failed); True once it is."""
        return self.done.wait(timeout)

    def join(self, timeout: float | None = None) -> None:
        """Wait for the recording thread (started by `start`) to end."""
        if self._thread is not None:
            self._thread.join(timeout)

    def progress(self) -> Progress:
        """Frames, captured seconds and bytes so far (safe from any thread)."""
        writer, reader = self._writer, self._reader
        frames = writer.frames if writer is not None else 0
        captured = max(0, frames - self.preroll_frames)
        # Lists only grow, from the recording thread: a slice of the tail is a consistent enough copy.
        segments = writer.segments if writer is not None else []
        gaps = self._ledger.gaps if self._ledger is not None else []
        return Progress(
            frames=frames,
            captured_frames=captured,
            seconds=captured / self.rate,
            bytes=writer.file_bytes if writer is not None else 0,
            overruns=reader.overruns if reader is not None else 0,
            lost_frames=reader.lost_frames if reader is not None else 0,
            segments=len(segments),
            recent_segments=[segment.as_dict() for segment in segments[-PROGRESS_RECENT:]],
            gaps=len(gaps),
            recent_gaps=[gap.as_dict() for gap in gaps[-PROGRESS_RECENT:]],
        )

    # -- the recording thread -----------------------------------------------------------------

    def run(self) -> None:
        """Record until stopped, the duration is reached or the disk is full, then finalize; never raises."""
        reader = self._reader
        try:
            if reader is None:
                raise RecorderError("run() before open_reader()")
            self._open()
        except Exception as err:
            log.exception("recording %s could not start", self.recording_id)
            self._fail_to_start(f"could not start: {err}")
            if reader is not None:
                reader.close()
            self.done.set()
            return
        assert self._ledger is not None and self._writer is not None
        ledger = self._ledger
        try:
            self._capture(reader, self._writer, ledger)
        except DiskFull as err:
            log.warning("recording %s: disk full: %s", self.recording_id, err)
            ledger.stop_reason, ledger.error = STOP_DISK_FULL, str(err)
        except OSError as err:  # the ledger or a sync can meet the full disk before a sample write does
            log.warning("recording %s stopped: %s", self.recording_id, err)
            full = err.errno in NO_SPACE
            ledger.stop_reason, ledger.error = (STOP_DISK_FULL if full else STOP_ERROR), f"{type(err).__name__}: {err}"
        except Exception as err:
            log.exception("recording %s failed", self.recording_id)
            ledger.stop_reason, ledger.error = STOP_ERROR, f"{type(err).__name__}: {err}"
        finally:
            reader.close()
            self._finish()
            self.done.set()

    def _open(self) -> None:
        profile = self.profile
        if (self.directory / MANIFEST_FILE).exists():
            raise RecorderError(f"{self.recording_id} is already in the cache")
        self.directory.mkdir(parents=True, exist_ok=True)
        self._reserve_space()
        self._manifest = Manifest(
            recording_id=self.recording_id,
            job_id=self.job_id,
            state=RECORDING,
            profile=profile.as_dict(),
            working_file=working_name(self.recording_id),
            final_file=final_name(self.recording_id, profile.format),
            format=profile.format,
        )
        self._manifest.save(self.directory)
        segment_frames = max(1, int(round(profile.segment_s * self.rate)))
        self._writer = WavWriter(
            self.directory / self._manifest.working_file,
            self.rate,
            self.channels,
            profile.bit_depth,
            segment_frames,
            rf64_after_bytes=self._rf64_after,
        )
        self._ledger = Ledger(
            recording_id=self.recording_id,
            sample_rate=self.rate,
            channels=self.channels,
            bit_depth=profile.bit_depth,
            format=profile.format,
            segment_frames=segment_frames,
            started_at=utc_iso(self._started_wall),
            clock_offset_ms=self.clock_offset_ms,
            time_quality=self.time_quality,
            scheduled_start=utc_iso(self.start_at) if self.start_at is not None else None,
            preroll_frames=self.preroll_frames,
            target_frames=self.target_frames,
            clipped_samples=[0] * self.channels,
        )
        self._ledger.save(self.directory)

    def _reserve_space(self) -> None:
        """A few hundred KB set aside so that a full disk still leaves room for the last ledger and manifest."""
        fd = os.open(self.directory / RESERVE_FILE, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.posix_fallocate(fd, 0, RESERVE_BYTES)
            os.fsync(fd)
        finally:
            os.close(fd)

    def _capture(self, reader: RingReader, writer: WavWriter, ledger: Ledger) -> None:
        end_frames = self.preroll_frames + self.target_frames
        first_frame = (self.ring_start or 0) + self.preroll_frames  # the first frame after the pre-roll
        timed = self.start_at is None
        max_read = max(1, int(self.rate * MAX_READ_S))
        last_flush = last_arrival = time.monotonic()
        while True:
            want = min(reader.available, max_read, end_frames - writer.frames)
            stopping = self._stop.is_set()
            if stopping and self._stop_position is not None:
                want = min(want, self._stop_position - reader.position)
            if writer.frames >= end_frames:
                ledger.stop_reason = STOP_DURATION
                return
            if want <= 0:
                if stopping:
                    ledger.stop_reason = self._stop_reason
                    return
                if time.monotonic() - last_flush >= self.flush_interval_s:
                    writer.flush()
                    last_flush = time.monotonic()
                self._stop.wait(self.poll_s)
                continue
            lost_before = reader.lost_frames
            block = reader.read(want)
            now = time.monotonic()
            lost = reader.lost_frames - lost_before
            if lost:
                ledger.gaps.append(Gap(GAP_OVERRUN, writer.frames, lost))
                log.warning("recording %s: fell behind the ring, %d frames lost", self.recording_id, lost)
            if not len(block):
                continue
            silent_s = now - last_arrival
            if silent_s > self.stall_s:
                missing = int(round(silent_s * self.rate)) - len(block)
                if missing > 0:
                    ended = time.time()
                    ledger.gaps.append(
                        Gap(GAP_STALL, writer.frames, missing, round(silent_s, 3), utc_iso(ended - silent_s), utc_iso(ended))
                    )
            last_arrival = now
            if not timed and reader.position > first_frame:
                timed = True
                self._time_start(reader.ring, first_frame, ledger)
                end_frames = self.preroll_frames + self.target_frames
            samples = block if self.inputs is None else block[:, self.inputs]
            self._clipped += np.count_nonzero(np.abs(samples) >= CLIP_LEVEL, axis=0)
            try:
                completed = writer.write(samples)
            finally:
                self._update_ledger(ledger, writer, reader, now)
            if completed:
                writer.sync()
                last_flush = time.monotonic()
                ledger.save(self.directory)
            elif now - last_flush >= self.flush_interval_s:
                writer.flush()
                last_flush = time.monotonic()

    def _time_start(self, ring: RingBuffer, first_frame: int, ledger: Ledger) -> None:
        """A scheduled take's first planned frame is in: its time by the anchor now, the error, lateness and length."""
        assert self.start_at is not None
        first = ring.time_at(first_frame)
        if first is None:
            return
        error_s = first - self.start_at
        self.start_error_ms = round(error_s * 1000.0, 1)
        self.late_s = round(error_s, 3) if error_s > START_TOLERANCE_S else 0.0
        self._set_start_time(first)
        if self.late_s and self.duration_s is not None:  # a late take still ends when the occurrence ends
            left_s = min(self.start_at + self.duration_s - first, self.profile.max_duration_s)
            self.target_frames = max(1, int(round(left_s * self.rate)))
        ledger.started_at = utc_iso(first)
        ledger.start_error_ms, ledger.late_s, ledger.target_frames = self.start_error_ms, self.late_s, self.target_frames
        if self.late_s:
            log.warning("recording %s started %.3f s late (the plan was out of the ring's reach)", self.recording_id, self.late_s)
        else:
            log.info("recording %s started on plan (%+.1f ms)", self.recording_id, self.start_error_ms)

    def _update_ledger(self, ledger: Ledger, writer: WavWriter, reader: RingReader, now: float) -> None:
        ledger.frames_written = writer.frames
        ledger.monotonic_span_s = round(now - self._started_mono, 6)
        ledger.frames_expected = self.preroll_frames + int(round((now - self._started_mono) * self.rate))
        ledger.overruns = reader.overruns
        ledger.lost_frames = reader.lost_frames
        ledger.clipped_samples = [int(n) for n in self._clipped]
        if len(ledger.segments) < len(writer.segments):  # only the new ones: a 12 h take has thousands
            ledger.segments.extend(segment.as_dict() for segment in writer.segments[len(ledger.segments) :])

    def _finish(self) -> None:
        """Close the writer and finalize; a failure leaves it failed (or to recovery when nothing can be written)."""
        writer, ledger, manifest = self._writer, self._ledger, self._manifest
        assert writer is not None and ledger is not None and manifest is not None
        try:
            if ledger.stop_reason == STOP_DISK_FULL:
                release_reserve(self.directory)
            writer.close()
            ledger.segments = [segment.as_dict() for segment in writer.segments]
            ledger.frames_written = writer.frames
            ledger.ended_at = utc_iso()
            if writer.frames == 0:
                mark_failed(self.directory, manifest, ledger, ledger.error or "no audio was captured", remove_working=True)
            else:
                finalize(self.directory, manifest, ledger)
            self.result = result_of(self.directory, manifest, ledger)
        except Exception as err:
            log.exception("recording %s could not be finalized", self.recording_id)
            writer.abandon()
            try:
                mark_failed(self.directory, manifest, ledger, f"could not finalize: {type(err).__name__}: {err}")
            except Exception:
                log.exception("recording %s: the failure cannot be recorded either; recovery will find it", self.recording_id)
            self.result = result_of(self.directory, manifest, ledger)
        log.info("recording %s ended: %s (%s)", self.recording_id, manifest.state, ledger.stop_reason)

    def _fail_to_start(self, error: str) -> None:
        manifest = self._manifest
        if self._writer is not None:
            self._writer.abandon()
        if manifest is not None:
            try:
                mark_failed(self.directory, manifest, self._ledger, error, remove_working=True)
            except Exception:
                log.exception("recording %s: the failure cannot be recorded", self.recording_id)
            self.result = result_of(self.directory, manifest, self._ledger)
        else:
            if self.directory.exists():
                release_reserve(self.directory)
            self.result = RecordingResult(
                self.recording_id, self.job_id, "failed", STOP_ERROR, error, False, None, self.profile.format, None, None, {}
            )
