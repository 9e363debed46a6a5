"""The capture ring buffer: wraparound, several readers, overrun counting, pre-roll."""

from __future__ import annotations

import threading

import numpy as np
from hark_fleet.audio.capture import RingBuffer


def ramp(start: int, frames: int, channels: int = 2) -> np.ndarray:
    """Frames whose every sample is its own frame number (channel c adds c / 10)."""
    numbers = np.arange(start, start + frames, dtype=np.float32)[:, None]
    return numbers + np.arange(channels, dtype=np.float32)[None, :] / 10


def test_frames_come_out_in_order_across_the_wrap() -> None:
    ring = RingBuffer(channels=2, rate=1000, seconds=2.0, max_block_frames=100)
    reader = ring.reader()
    written = 0
    for size in (300, 450, 333, 600, 217):  # 1900 frames through a 2000-frame buffer, read as we go
        ring.write(ramp(written, size))
        written += size
        out = reader.read()
        assert np.array_equal(out, ramp(written - size, size))
    assert reader.overruns == 0 and reader.position == written


def test_each_reader_keeps_its_own_position() -> None:
    ring = RingBuffer(channels=1, rate=1000, seconds=1.0, max_block_frames=50)
    fast, slow = ring.reader(name="meters"), ring.reader(name="recorder")
    ring.write(ramp(0, 120, 1))
    assert len(fast.read()) == 120
    ring.write(ramp(120, 80, 1))
    assert np.array_equal(fast.read()[:, 0], np.arange(120, 200))
    assert np.array_equal(slow.read(max_frames=150)[:, 0], np.arange(0, 150))
    assert np.array_equal(slow.read()[:, 0], np.arange(150, 200))
    assert [s.name for s in ring.reader_stats()] == ["meters", "recorder"]
    slow.close()
    assert [s.name for s in ring.reader_stats()] == ["meters"]


def test_a_reader_that_falls_behind_loses_the_oldest_frames_and_counts_them() -> None:
    ring = RingBuffer(channels=2, rate=1000, seconds=1.0, max_block_frames=100)  # 1000 frames, 900 readable
    lagging, keeping_up = ring.reader(name="lagging"), ring.reader(name="keeping-up")
    for start in range(0, 5000, 250):
        ring.write(ramp(start, 250))
        keeping_up.read()
    out = lagging.read()
    assert len(out) == ring.readable_frames
    assert np.array_equal(out, ramp(5000 - ring.readable_frames, ring.readable_frames))
    stats = {s.name: s for s in ring.reader_stats()}
    assert (stats["lagging"].overruns, stats["lagging"].lost_frames) == (1, 5000 - ring.readable_frames)
    assert (stats["keeping-up"].overruns, stats["keeping-up"].lost_frames) == (0, 0)
    ring.write(ramp(5000, 10))
    assert np.array_equal(lagging.read(), ramp(5000, 10))  # caught up: nothing more lost
    assert lagging.overruns == 1


def test_preroll_starts_in_the_past_as_far_as_the_buffer_reaches() -> None:
    ring = RingBuffer(channels=1, rate=1000, seconds=10.0, max_block_frames=100)
    for start in range(0, 3000, 100):
        ring.write(ramp(start, 100, 1))
    recorder = ring.reader(preroll_s=2.0)
    assert np.array_equal(recorder.read()[:, 0], np.arange(1000, 3000))
    assert len(ring.reader(preroll_s=60.0).read()) == 3000  # asked for more than exists: everything there is
    assert len(ring.reader().read()) == 0  # no pre-roll: only what comes next
    for start in range(3000, 30_000, 100):
        ring.write(ramp(start, 100, 1))
    assert len(ring.reader(preroll_s=60.0).read()) == ring.readable_frames  # capped by the buffer, nothing lost


def test_integer_blocks_are_scaled_into_float() -> None:
    ring = RingBuffer(channels=2, rate=1000, seconds=1.0)
    reader = ring.reader()
    block = np.array([[-32768, 32767], [0, 1]], dtype=np.int16)
    ring.write(block, scale=1 / 32768)
    assert np.array_equal(reader.read() * 32768, block.astype(np.float32))


def test_a_block_larger_than_the_buffer_keeps_its_newest_frames() -> None:
    ring = RingBuffer(channels=1, rate=100, seconds=1.0, max_block_frames=10)  # capacity raised to 100 frames
    reader = ring.reader()
    ring.write(ramp(0, 250, 1))
    out = reader.read()
    assert np.array_equal(out[:, 0], np.arange(250 - len(out), 250))
    assert reader.lost_frames == 250 - len(out) and ring.frames_written == 250


TOTAL = 256 * 8000


def test_a_reader_racing_a_writer_gets_consecutive_frames_or_counted_losses() -> None:
    ring = RingBuffer(channels=1, rate=48_000, seconds=0.05, max_block_frames=256)
    reader = ring.reader()
    done = threading.Event()

    def write() -> None:
        for start in range(0, TOTAL, 256):
            ring.write(ramp(start, 256, 1))
        done.set()

    writer = threading.Thread(target=write, name="ring-writer")
    writer.start()
    expected = 0
    while not done.is_set() or reader.available:
        lost_before = reader.lost_frames
        out = reader.read(max_frames=1000)[:, 0]
        expected += reader.lost_frames - lost_before
        assert np.array_equal(out, np.arange(expected, expected + len(out), dtype=np.float32))
        expected += len(out)
    writer.join()
    assert expected == TOTAL
