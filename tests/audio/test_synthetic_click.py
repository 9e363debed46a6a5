"""The synthetic click source: a 1 ms click captured at every whole multiple of `period` seconds of the wall clock."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hark_fleet.audio.capture import RingBuffer, open_capture
from hark_fleet.audio.capture.synthetic import SignalGenerator
from hark_fleet.audio.source import parse_audio_source

from tests.harness import wait_for

RATE = 48_000
THRESHOLD = 0.1  # what the console's player takes for a click


def click_starts(samples: np.ndarray) -> list[int]:
    """Frames where the first channel rises above THRESHOLD from below it."""
    above = np.abs(samples[:, 0]) > THRESHOLD
    rises = np.flatnonzero(above[1:] & ~above[:-1]) + 1
    return ([0] if above[0] else []) + rises.tolist()


def test_the_click_source_parses_its_period_and_defaults_to_minus_6_dbfs() -> None:
    source = parse_audio_source("synthetic:click?period=0.25&channels=1")
    assert (source.target, source.period, source.dbfs, source.channels) == ("click", 0.25, -6.0, 1)
    assert source.describe() == "synthetic click every 0.25s -6 dBFS"
    assert parse_audio_source("synthetic:click").period == 1.0
    assert parse_audio_source("synthetic:click?dbfs=-12").dbfs == -12.0


@pytest.mark.parametrize("bad", ["synthetic:click?period=0.01", "synthetic:click?period=61", "synthetic:click?period=x"])
def test_a_click_period_out_of_range_is_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="period"):
        parse_audio_source(bad)


def test_period_is_refused_for_other_signals() -> None:
    with pytest.raises(ValueError, match="click only"):
        parse_audio_source("synthetic:sine?period=1")


def test_each_click_starts_at_the_frame_of_its_whole_period_and_lasts_1_ms() -> None:
    now = [1_000_000.0137]  # the wall clock the generator reads: each block is "captured" 20 ms after the previous
    generator = SignalGenerator("click", RATE, dbfs=-6.0, period=0.05, clock=lambda: now[0])
    blocks = []
    for _ in range(30):
        block = np.ones((960, 1), dtype=np.float32)
        generator.fill(block)
        blocks.append(block)
        now[0] += 0.02
    samples = np.concatenate(blocks)
    first_frame_at = 1_000_000.0137 - 959 / RATE
    starts = click_starts(samples)
    assert len(starts) == 12  # 0.6 s of audio, a click every 50 ms
    for start in starts:
        at = first_frame_at + start / RATE
        assert abs(at - round(at / 0.05) * 0.05) <= 0.5 / RATE
        assert np.all(samples[start : start + 48, 0] == pytest.approx(10 ** (-6 / 20)))
        assert samples[start + 48, 0] == 0.0
    assert np.diff(starts).tolist() == [2400] * 11
    assert generator.rebases == 0


def test_a_click_cut_by_the_end_of_a_block_goes_on_in_the_next() -> None:
    now = [2_000_000.0 + 10 / RATE]  # the click at 2 000 000 s starts 10 frames before the first block's end
    generator = SignalGenerator("click", RATE, dbfs=-6.0, period=1.0, clock=lambda: now[0])
    first, second = np.zeros((960, 1), dtype=np.float32), np.zeros((960, 1), dtype=np.float32)
    generator.fill(first)
    now[0] += 0.02
    generator.fill(second)
    samples = np.concatenate([first, second])
    assert click_starts(samples) == [949]
    assert int(np.count_nonzero(samples)) == 48


def test_the_timeline_follows_the_wall_clock_again_after_a_stall() -> None:
    now = [3_000_000.5]
    generator = SignalGenerator("click", RATE, period=1.0, clock=lambda: now[0])
    block = np.zeros((960, 1), dtype=np.float32)
    generator.fill(block)
    now[0] += 2.0  # the capture thread stood still for two seconds
    generator.fill(block)
    assert generator.rebases == 1 and generator.block_at == now[0]


def test_a_captured_click_lies_on_its_whole_period_by_the_rings_clock(capture_threads_stopped: None) -> None:
    """A real paced capture for ~3 s: ring.time_at() of each click's first frame is within 2 ms of a whole period."""
    period = 0.25
    source = parse_audio_source(f"synthetic:click?period={period}&channels=2")
    ring = RingBuffer(2, RATE, seconds=10)
    reader = ring.reader(name="test")
    with open_capture(source, ring):
        wait_for(lambda: ring.frames_written >= 3 * RATE, 15, "3 s of captured clicks")
    samples = reader.read()
    assert reader.lost_frames == 0
    starts = click_starts(samples)
    assert len(starts) >= 10
    for start in starts:
        at = ring.time_at(reader.start_position + start)
        assert at is not None
        assert abs(at - round(at / period) * period) <= 0.002, f"click at {at:.6f} is off its period"
    assert set(np.diff(starts).tolist()) <= {int(period * RATE)}  # none missed, none doubled
    # both channels click together
    assert click_starts(samples[:, 1:]) == starts
    assert math.isclose(float(samples[starts[0], 0]), 10 ** (-6 / 20), rel_tol=1e-6)
