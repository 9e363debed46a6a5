"""The ring's time anchor: wall time of ring frames and the frame of a wall time, and readers opened at a frame."""

from __future__ import annotations

import time

import numpy as np
import pytest
from hark_fleet.audio.capture import RingBuffer
from hark_fleet.audio.capture.base import newest_frame_time

T0 = 1_800_000_000.0  # an epoch time; the tests give each write its own `at`


def ramp(start: int, frames: int) -> np.ndarray:
    """Frames whose sample is their own frame number."""
    return np.arange(start, start + frames, dtype=np.float32)[:, None]


def test_there_is_no_anchor_before_the_first_write() -> None:
    ring = RingBuffer(channels=1, rate=1000, seconds=2.0, max_block_frames=100)
    assert ring.anchor is None and ring.time_at(0) is None and ring.position_at(T0) is None


def test_time_and_position_convert_through_the_newest_write() -> None:
    ring = RingBuffer(channels=1, rate=1000, seconds=2.0, max_block_frames=100)
    ring.write(ramp(0, 500), at=T0 + 0.5)
    ring.write(ramp(500, 250), at=T0 + 0.75)
    assert ring.anchor == (750, T0 + 0.75)
    assert ring.time_at(750) == T0 + 0.75 and ring.time_at(250) == T0 + 0.25
    assert ring.position_at(T0 + 0.25) == 250 and ring.position_at(T0 + 1.0) == 1000  # a future frame
    assert ring.position_at(T0 - 1.0) == -1000  # before the first frame ever written
    for position in (0, 123, 749, 5000):
        time_s = ring.time_at(position)
        assert time_s is not None and ring.position_at(time_s) == position


def test_a_write_without_a_time_anchors_to_now() -> None:
    ring = RingBuffer(channels=1, rate=1000, seconds=2.0, max_block_frames=100)
    before = time.time()
    ring.write(ramp(0, 100))
    anchor = ring.anchor
    assert anchor is not None and anchor[0] == 100 and before <= anchor[1] <= time.time()


def test_a_reader_opened_at_a_past_frame_reads_from_exactly_that_frame() -> None:
    ring = RingBuffer(channels=1, rate=1000, seconds=2.0, max_block_frames=100)
    ring.write(ramp(0, 1500), at=T0 + 1.5)
    position = ring.position_at(T0 + 0.6)
    assert position == 600
    reader = ring.reader_at(position)
    out = reader.read()
    assert out[0, 0] == 600 and len(out) == 900 and reader.overruns == 0


def test_a_reader_opened_at_a_future_frame_waits_for_it() -> None:
    ring = RingBuffer(channels=1, rate=1000, seconds=2.0, max_block_frames=100)
    ring.write(ramp(0, 300), at=T0 + 0.3)
    reader = ring.reader_at(350)
    assert reader.available == -50 and len(reader.read()) == 0 and len(reader.read(10)) == 0
    ring.write(ramp(300, 100), at=T0 + 0.4)
    out = reader.read()
    assert [int(v) for v in out[:, 0]] == list(range(350, 400)) and reader.overruns == 0


def test_a_reader_opened_before_the_ring_reaches_starts_at_its_oldest_readable_frame() -> None:
    ring = RingBuffer(channels=1, rate=1000, seconds=1.0, max_block_frames=100)
    for start in range(0, 3000, 100):
        ring.write(ramp(start, 100), at=T0 + (start + 100) / 1000)
    assert ring.oldest_readable == 3000 - ring.readable_frames
    reader = ring.reader_at(ring.position_at(T0) or 0)
    assert reader.start_position == ring.oldest_readable
    assert reader.read()[0, 0] == ring.oldest_readable and reader.overruns == 0


def test_a_portaudio_block_is_stamped_by_its_converter_time_not_its_arrival() -> None:
    # First frame at the converter 30 ms before the callback ran; 480 frames at 48 kHz.
    at = newest_frame_time(adc_time=100.000, current_time=100.030, frames=480, rate=48_000, now=5_000.0)
    assert at == pytest.approx(5_000.0 - 0.030 + 479 / 48_000)


def test_hosts_without_stream_times_leave_the_ring_to_stamp_blocks_now() -> None:
    assert newest_frame_time(0.0, 0.0, 480, 48_000, now=5_000.0) is None
    assert newest_frame_time(100.0, 99.0, 480, 48_000, now=5_000.0) is None  # a clock that runs backwards
    assert newest_frame_time(100.0, 105.0, 480, 48_000, now=5_000.0) is None  # five seconds of latency is not plausible
