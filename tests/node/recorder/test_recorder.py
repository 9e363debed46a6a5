"""Recordings from a real ring buffer: exact length and level, pre-roll, WAV and FLAC, the ledger, overruns and stalls."""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile
from hark_fleet.audio.capture import RingBuffer
from hark_fleet.node.clock import parse_utc
from hark_fleet.node.recorder import Recorder, RecorderError, RecordingProfile, UnsupportedProfile

from tests.node.recorder.conftest import RATE, Feeder, pcm16_bytes, profile, ramp, read_back, sine


def record(
    tmp_path: Path, feeders: list[Feeder], prof: RecordingProfile, duration_s: float, signal=None, channels: int = 2, **options
) -> tuple[Recorder, Feeder]:
    """Record `duration_s` of `signal` fed as fast as the recorder takes it; the finished recorder and its feeder."""
    ring = RingBuffer(channels, RATE, seconds=10)
    feeder = Feeder(ring, signal or sine(channels))
    feeder.write(RATE)  # one second already in the ring: room for the pre-roll
    recorder = Recorder("rec-1", tmp_path / "rec-1", RATE, channels, prof, job_id="job-1", duration_s=duration_s, **options)
    recorder.start(ring)
    feeders.append(feeder.start())
    assert recorder.wait(20), "the recording did not finish"
    recorder.join(5)
    return recorder, feeder


@pytest.mark.parametrize(("fmt", "bit_depth"), [("wav", 16), ("wav", 24), ("wav", 32), ("flac", 16), ("flac", 24)])
def test_a_sine_is_recorded_sample_accurate_at_its_level(tmp_path: Path, feeders: list[Feeder], fmt: str, bit_depth: int) -> None:
    signal = sine(2, freq=1000.0, dbfs=-6.0)
    recorder, _ = record(tmp_path, feeders, profile(format=fmt, bit_depth=bit_depth, segment_s=0.5), 2.345, signal)
    result = recorder.result
    assert result is not None and result.state == "finalized" and result.stop_reason == "duration"
    assert result.path == tmp_path / "rec-1" / f"rec-1.{fmt}" and result.format == fmt
    assert sorted(p.name for p in (tmp_path / "rec-1").iterdir()) == sorted(["ledger.json", "manifest.json", f"rec-1.{fmt}"])
    info = soundfile.info(result.path)
    assert (info.frames, info.channels, info.samplerate, info.subtype) == (round(2.345 * RATE), 2, RATE, f"PCM_{bit_depth}")
    data = read_back(result.path)
    np.testing.assert_array_equal(data, signal(recorder.ring_start or 0, info.frames))
    peak = np.abs(data).max(axis=0)
    rms = np.sqrt(np.mean(data.astype(np.float64) ** 2, axis=0))
    assert 20 * np.log10(peak) == pytest.approx([-6.0, -6.0], abs=0.01)
    assert 20 * np.log10(rms) == pytest.approx([-9.01, -9.01], abs=0.01)
    assert recorder.progress().seconds == pytest.approx(2.345) and recorder.progress().captured_frames == info.frames
    assert result.sha256 == hashlib.sha256(result.path.read_bytes()).hexdigest()
    assert result.size_bytes == result.path.stat().st_size


def test_the_preroll_comes_from_before_the_start_and_is_not_counted_in_the_duration(
    tmp_path: Path, feeders: list[Feeder]
) -> None:
    signal = ramp(2)
    recorder, _ = record(tmp_path, feeders, profile(preroll_s=0.25), 1.0, signal)
    assert recorder.result is not None
    ledger = recorder.result.ledger
    assert recorder.ring_start == RATE - RATE // 4  # the ring held one second when the recording started
    assert ledger["preroll_frames"] == RATE // 4 and ledger["frames_written"] == RATE // 4 + RATE
    assert ledger["duration_s"] == 1.0 and ledger["target_frames"] == RATE
    np.testing.assert_array_equal(read_back(recorder.result.path), signal(RATE - RATE // 4, RATE + RATE // 4))


def test_a_preroll_longer_than_the_ring_has_captured_takes_what_there_is(tmp_path: Path, no_thread_leak: None) -> None:
    ring = RingBuffer(1, RATE, seconds=10)
    feeder = Feeder(ring, ramp(1))
    feeder.write(RATE // 10)
    recorder = Recorder("rec-1", tmp_path / "rec-1", RATE, 1, profile(preroll_s=2.0), duration_s=0.5)
    recorder.start(ring)
    feeder.write(RATE)
    assert recorder.wait(10)
    recorder.join(5)
    assert recorder.result is not None and recorder.result.ledger["preroll_frames"] == RATE // 10
    assert soundfile.info(recorder.result.path).frames == RATE // 10 + RATE // 2


@pytest.mark.parametrize("reason", ["stopped", "disk_low"])
def test_stop_keeps_the_audio_up_to_the_moment_it_was_called(tmp_path: Path, no_thread_leak: None, reason: str) -> None:
    ring = RingBuffer(2, RATE, seconds=10)
    feeder = Feeder(ring, ramp(2))
    feeder.write(RATE)
    recorder = Recorder("rec-1", tmp_path / "rec-1", RATE, 2, profile())  # no duration: until stopped
    recorder.start(ring)
    feeder.write(3 * RATE + 17)
    recorder.stop(reason)
    feeder.write(RATE)  # after the stop: not recorded
    assert recorder.wait(10)
    recorder.join(5)
    result = recorder.result
    assert result is not None and result.stop_reason == reason and result.state == "finalized"
    np.testing.assert_array_equal(read_back(result.path), ramp(2)(RATE, 3 * RATE + 17))
    assert result.ledger["target_frames"] == 12 * 3600 * RATE  # the profile's maximum


def test_the_ledger_records_frames_segments_clipping_and_clock(tmp_path: Path, feeders: list[Feeder]) -> None:
    def clipping(start: int, count: int) -> np.ndarray:
        block = sine(2, dbfs=-20)(start, count)
        block[(start + np.arange(count)) % 4800 == 0, 0] = 1.0  # ten clipped samples a second on the left only
        return block

    recorder, _ = record(
        tmp_path, feeders, profile(segment_s=0.4), 2.0, clipping, clock_offset_ms=-12.5, time_quality="ntp", flush_interval_s=0.1
    )
    assert recorder.result is not None
    ledger = json.loads((tmp_path / "rec-1" / "ledger.json").read_text())
    assert ledger == recorder.result.ledger | {"updated_at": ledger["updated_at"]}
    start = recorder.ring_start or 0
    assert ledger["frames_written"] == 2 * RATE and ledger["preroll_frames"] == 0
    assert ledger["gaps"] == [] and ledger["overruns"] == 0 and ledger["lost_frames"] == 0
    assert ledger["clipped_samples"] == [int(np.count_nonzero((start + np.arange(2 * RATE)) % 4800 == 0)), 0]
    assert (ledger["clock_offset_ms"], ledger["time_quality"], ledger["sample_rate"], ledger["bit_depth"]) == (
        -12.5,
        "ntp",
        RATE,
        16,
    )
    assert parse_utc(ledger["started_at"]) <= parse_utc(ledger["ended_at"]) <= time.time()
    assert ledger["monotonic_span_s"] > 0 and ledger["frames_expected"] > 0
    assert [(s["index"], s["start_frame"], s["frames"]) for s in ledger["segments"]] == [
        (0, 0, 19200), (1, 19200, 19200), (2, 38400, 19200), (3, 57600, 19200), (4, 76800, 19200),
    ]  # fmt: skip
    for segment in ledger["segments"]:
        expected = pcm16_bytes(clipping(start + segment["start_frame"], segment["frames"]))
        assert segment["sha256"] == hashlib.sha256(expected).hexdigest()
    assert ledger["file"] == {
        "name": "rec-1.wav",
        "format": "wav",
        "size_bytes": (tmp_path / "rec-1" / "rec-1.wav").stat().st_size,
        "sha256": hashlib.sha256((tmp_path / "rec-1" / "rec-1.wav").read_bytes()).hexdigest(),
    }
    assert (ledger["state"], ledger["stop_reason"], ledger["interrupted"]) == ("finalized", "duration", False)
    manifest = json.loads((tmp_path / "rec-1" / "manifest.json").read_text())
    assert (manifest["recording_id"], manifest["job_id"], manifest["state"], manifest["final_file"]) == (
        "rec-1", "job-1", "finalized", "rec-1.wav",
    )  # fmt: skip
    assert manifest["profile"]["segment_s"] == 0.4 and manifest["sha256"] == ledger["file"]["sha256"]
    fields = recorder.result.recording_fields()
    assert fields["duration_s"] == 2.0 and fields["integrity"] is recorder.result.ledger and fields["format"] == "wav"


def test_progress_carries_the_ledger_as_it_grows_bounded_to_the_newest_segments(tmp_path: Path, no_thread_leak: None) -> None:
    ring = RingBuffer(1, RATE, seconds=2)
    feeder = Feeder(ring, ramp(1))
    recorder = Recorder("rec-1", tmp_path / "rec-1", RATE, 1, profile(segment_s=0.1))
    recorder.start(ring)
    seen = []
    for _ in range(6):  # 0.25 s at a time: two or three segments close between looks
        feeder.write(RATE // 4)
        deadline = time.monotonic() + 5
        while recorder.progress().frames < ring.frames_written and time.monotonic() < deadline:
            time.sleep(0.005)
        seen.append(recorder.progress())
    recorder.stop()
    assert recorder.wait(10)
    recorder.join(5)
    counts = [p.segments for p in seen]
    assert counts == sorted(counts) and counts[0] >= 2 and counts[-1] >= 14, counts
    last = seen[-1]
    newest = list(range(last.segments - 3, last.segments))
    assert len(last.recent_segments) == 3 and [s["index"] for s in last.recent_segments] == newest
    assert recorder.result is not None
    assert last.recent_segments == recorder.result.ledger["segments"][last.segments - 3 : last.segments]
    assert last.gaps == 0 and last.recent_gaps == []


def test_a_reader_that_falls_behind_a_small_ring_records_the_overrun_where_it_happened(
    tmp_path: Path, no_thread_leak: None
) -> None:
    signal = ramp(1)
    ring = RingBuffer(1, RATE, seconds=0.5)  # 24000 frames
    feeder = Feeder(ring, signal)
    recorder = Recorder("rec-1", tmp_path / "rec-1", RATE, 1, profile())
    recorder.start(ring)
    feeder.write(6_000)

    def wait_for(frames: int) -> None:
        deadline = time.monotonic() + 5
        while recorder.progress().frames < frames and time.monotonic() < deadline:
            time.sleep(0.005)

    wait_for(6_000)
    feeder.write(60_000)  # one burst longer than the ring: the recorder cannot keep up with it
    readable = ring.readable_frames
    wait_for(6_000 + readable)
    lost = 60_000 - readable
    progress = recorder.progress()  # the job heartbeat's view of the ledger while it records
    assert progress.gaps == 1 and progress.recent_gaps == [{"kind": "overrun", "at_frame": 6_000, "frames": lost}]
    feeder.write(1_000)
    recorder.stop()
    assert recorder.wait(10)
    recorder.join(5)
    assert recorder.result is not None
    ledger = recorder.result.ledger
    assert ledger["gaps"] == [{"kind": "overrun", "at_frame": 6_000, "frames": lost}]
    assert ledger["overruns"] == 1 and ledger["lost_frames"] == lost
    expected = np.concatenate([signal(0, 6_000), signal(6_000 + lost, readable + 1_000)])
    np.testing.assert_array_equal(read_back(recorder.result.path), expected)
    assert ledger["frames_written"] == 6_000 + readable + 1_000


def test_audio_that_stops_arriving_is_recorded_as_a_stall_gap(tmp_path: Path, no_thread_leak: None) -> None:
    ring = RingBuffer(1, RATE, seconds=10)
    feeder = Feeder(ring, ramp(1), speed=1.0).start()
    try:
        recorder = Recorder("rec-1", tmp_path / "rec-1", RATE, 1, profile(), stall_s=0.3)
        recorder.start(ring)
        time.sleep(0.3)
        feeder.paused.set()  # the device goes quiet for 0.6 s
        time.sleep(0.6)
        feeder.paused.clear()
        time.sleep(0.3)
        recorder.stop()
        assert recorder.wait(10)
        recorder.join(5)
    finally:
        feeder.stop()
    assert recorder.result is not None
    gaps = recorder.result.ledger["gaps"]
    assert [g["kind"] for g in gaps] == ["stall"]
    assert 0.2 * RATE < gaps[0]["at_frame"] < 0.5 * RATE
    assert gaps[0]["frames"] == pytest.approx(0.6 * RATE, abs=0.15 * RATE) and gaps[0]["wall_s"] > 0.5


def test_a_copy_of_the_file_taken_mid_recording_is_a_valid_wav(tmp_path: Path, feeders: list[Feeder]) -> None:
    signal = ramp(2)
    ring = RingBuffer(2, RATE, seconds=10)
    feeder = Feeder(ring, signal, speed=4.0)
    recorder = Recorder("rec-1", tmp_path / "rec-1", RATE, 2, profile(bit_depth=24), duration_s=6.0, flush_interval_s=0.1)
    recorder.start(ring)
    feeders.append(feeder.start())
    copies: list[Path] = []
    for _ in range(4):
        time.sleep(0.25)
        copy = tmp_path / f"copy-{len(copies)}.wav"
        shutil.copy(tmp_path / "rec-1" / "rec-1.rec.wav", copy)
        copies.append(copy)
    assert recorder.wait(10)
    recorder.join(5)
    counts = []
    for copy in copies:
        data = read_back(copy)
        counts.append(len(data))
        assert len(data) > 0 and soundfile.info(copy).subtype == "PCM_24"
        np.testing.assert_array_equal(data, signal(0, len(data)))
    assert counts == sorted(counts) and counts[-1] > counts[0]


def test_a_profile_the_recorder_cannot_write_is_refused_before_recording() -> None:
    with pytest.raises(UnsupportedProfile, match="FLAC"):
        profile(format="flac", bit_depth=32)
    with pytest.raises(UnsupportedProfile, match="format"):
        profile(format="mp3")
    with pytest.raises(UnsupportedProfile, match="8 channels"):
        Recorder("rec-1", Path("/nonexistent"), RATE, 12, profile(format="flac"))
    with pytest.raises(RecorderError, match="48000 Hz"):
        Recorder("rec-1", Path("/nonexistent"), RATE, 1, profile()).start(RingBuffer(1, 44_100))


def test_an_id_already_in_the_cache_fails_without_touching_it(tmp_path: Path, no_thread_leak: None) -> None:
    ring = RingBuffer(1, RATE, seconds=10)
    first = Recorder("rec-1", tmp_path / "rec-1", RATE, 1, profile(), duration_s=0.1)
    first.start(ring)
    Feeder(ring, ramp(1)).write(RATE)
    assert first.wait(10)
    first.join(5)
    before = (tmp_path / "rec-1" / "manifest.json").read_bytes()
    second = Recorder("rec-1", tmp_path / "rec-1", RATE, 1, profile(), duration_s=0.1)
    second.start(ring)
    assert second.wait(10)
    second.join(5)
    assert second.result is not None and second.result.state == "failed" and "already in the cache" in (second.result.error or "")
    assert (tmp_path / "rec-1" / "manifest.json").read_bytes() == before
