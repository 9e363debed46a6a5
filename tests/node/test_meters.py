"""Synthetic meter frames: the levels a synthetic signal would read."""

from __future__ import annotations

import msgspec

from hub.mqtt.messages import MeterFrame
from node.audio_source import parse_audio_source
from node.meters import MeterPublisher, synthetic_channels


def levels(text: str) -> list[tuple[int, str | None, float | None, float | None]]:
    return [(c.index, c.name, c.peak_dbfs, c.rms_dbfs) for c in synthetic_channels(parse_audio_source(text))]


def test_sine_peaks_at_its_level_and_reads_3_01_db_lower_rms() -> None:
    assert levels("synthetic:sine?dbfs=-20&channels=2") == [(0, "L", -20.0, -23.01), (1, "R", -20.0, -23.01)]
    assert levels("synthetic:sweep?dbfs=0&channels=1") == [(0, "M", 0.0, -3.01)]


def test_silence_reads_null_never_minus_infinity() -> None:
    assert levels("synthetic:silence?channels=3") == [(0, None, None, None), (1, None, None, None), (2, None, None, None)]


def test_noise_level_is_its_rms_with_a_higher_peak() -> None:
    assert levels("synthetic:noise?dbfs=-30&channels=1") == [(0, "M", -20.0, -30.0)]
    assert levels("synthetic:noise?dbfs=-3&channels=1") == [(0, "M", 0.0, -3.0)]  # peak never above full scale


def test_capture_sources_give_no_frames_yet() -> None:
    assert levels("sounddevice:0") == []


def test_frames_count_up_and_match_the_wire_contract() -> None:
    publisher = MeterPublisher(parse_audio_source("synthetic:sine?rate=44100"), "t", lambda t, p: True, 100)
    first, second = publisher.frame(), publisher.frame()
    assert (first.seq, second.seq) == (1, 2)
    decoded = msgspec.json.decode(msgspec.json.encode(second), type=MeterFrame)
    assert decoded.interval_ms == 100 and decoded.sample_rate == 44100 and len(decoded.channels) == 2
    assert decoded.ts.endswith("Z")
