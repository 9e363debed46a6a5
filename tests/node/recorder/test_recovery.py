"""Recovery at start: a recording killed with SIGKILL mid-capture comes back repaired, interrupted and finalized."""

from __future__ import annotations

import hashlib
import json
import shutil
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import soundfile
from hark_fleet.audio.capture import RingBuffer
from hark_fleet.audio.capture.synthetic import SignalGenerator
from hark_fleet.audio.source import parse_audio_source
from hark_fleet.node.clock import parse_utc
from hark_fleet.node.recorder import CacheDirectory, Ledger, Manifest, Recorder, recover_cache
from hark_fleet.node.recorder.writer import WavWriter

from tests.harness import ROOT
from tests.node.recorder import driver
from tests.node.recorder.conftest import RATE, Feeder, profile, ramp, read_back


def expected_sine(first: int, count: int) -> np.ndarray:
    """The driver's synthetic sine from ring frame `first`, as 16-bit samples (made in the capture's 20 ms blocks)."""
    source = parse_audio_source(driver.SOURCE)
    generator = SignalGenerator(source.target, source.rate, source.freq, source.dbfs)
    block = np.zeros((RATE // 50, 2), dtype=np.float32)
    chunks = []
    for _ in range((first + count) // block.shape[0] + 1):
        generator.fill(block)
        chunks.append(block.copy())
    samples = np.concatenate(chunks)[first : first + count].astype(np.float64)
    return np.clip(np.rint(samples * 32768.0), -32768, 32767).astype(np.int16)


def header_frames(path: Path) -> int:
    """Frames the WAV header declares (stereo 16 bit, plain RIFF)."""
    raw = path.read_bytes()[:200]
    return struct.unpack_from("<I", raw, raw.index(b"data") + 4)[0] // 4


def test_a_recording_killed_mid_capture_keeps_all_but_the_last_second_sample_exact(tmp_path: Path) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.node.recorder.driver", str(tmp_path), "flac"], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        start = json.loads(process.stdout.readline())
        printed: list[tuple[float, int]] = []
        while not printed or printed[-1][1] < 2.6 * RATE:
            line = process.stdout.readline()
            assert line, "the driver died"
            printed.append((time.monotonic(), json.loads(line)["frames"]))
        killed_at = time.monotonic()
        process.kill()  # SIGKILL: no finally, no atexit, no flush
        process.wait(5)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(5)
    assert process.returncode == -9
    directory = tmp_path / "rec-1"
    assert Manifest.load(directory).state == "recording"
    assert Ledger.load(directory).segments, "the ledger was written at the segment boundaries"
    # The header on disk was rewritten within the last second: everything flushed by then is declared.
    shutil.copy(directory / "rec-1.rec.wav", tmp_path / "as-left.wav")
    flushed_before = max(frames for at, frames in printed if at <= killed_at - 1.2)
    assert soundfile.info(tmp_path / "as-left.wav").frames == header_frames(tmp_path / "as-left.wav") >= flushed_before

    restarted = time.time()
    results = recover_cache(tmp_path, now=restarted)

    assert len(results) == 1
    result = results[0]
    assert (result.state, result.stop_reason, result.interrupted, result.format) == ("finalized", "interrupted", True, "flac")
    assert result.path == directory / "rec-1.flac" and not (directory / "rec-1.rec.wav").exists()
    audio, rate = soundfile.read(result.path, dtype="int16", always_2d=True)
    frames = len(audio)
    last_printed = printed[-1][1]
    assert rate == RATE and frames >= last_printed >= frames - RATE  # at most the last second lost (here: nothing printed)
    np.testing.assert_array_equal(audio, expected_sine(start["ring_start"], frames))
    ledger = result.ledger
    assert ledger["interrupted"] and ledger["frames_written"] == frames and ledger["preroll_frames"] == start["preroll_frames"]
    gap = ledger["gaps"][-1]
    assert gap["kind"] == "interruption" and gap["at_frame"] == frames
    assert 0 <= gap["wall_s"] < 5 and abs(gap["frames"] - gap["wall_s"] * RATE) <= 0.001 * RATE
    assert abs(parse_utc(gap["ended_at"]) - restarted) < 0.002 and ledger["ended_at"] == gap["started_at"]
    segments = ledger["segments"]
    assert [s["start_frame"] for s in segments] == [i * RATE for i in range(len(segments))]
    assert sum(s["frames"] for s in segments) == frames and segments[-1].get("recovered")
    for segment in segments:  # the checksums are of the 16-bit samples as they were written, ledger or recovered
        samples = audio[segment["start_frame"] : segment["start_frame"] + segment["frames"]]
        assert segment["sha256"] == hashlib.sha256(samples.astype("<i2").tobytes()).hexdigest()
    assert ledger["file"]["sha256"] == hashlib.sha256(result.path.read_bytes()).hexdigest() == result.sha256
    manifest = Manifest.load(directory)
    assert (manifest.state, manifest.interrupted, manifest.final_file) == ("finalized", True, "rec-1.flac")
    assert recover_cache(tmp_path)[0].sha256 == result.sha256, "a second recovery changes nothing"


def crashed_recording(root: Path, frames: int, torn_bytes: bytes = b"", with_ledger: bool = True) -> Path:
    """A recording directory as a crash leaves it: manifest `recording`, a working WAV flushed only partly."""
    directory = root / "rec-2"
    directory.mkdir(parents=True)
    prof = profile(segment_s=0.5)
    manifest = Manifest("rec-2", "job-2", "recording", prof.as_dict(), "rec-2.rec.wav", "rec-2.wav", "wav")
    manifest.save(directory)
    writer = WavWriter(directory / "rec-2.rec.wav", RATE, 2, 16, segment_frames=RATE // 2)
    ledger = Ledger("rec-2", RATE, 2, 16, "wav", RATE // 2, target_frames=None, clipped_samples=[0, 0])
    done = 0
    while done < frames:
        count = min(4_800, frames - done)
        if writer.write(ramp(2)(done, count)) and with_ledger:
            writer.sync()
            ledger.frames_written = writer.frames
            ledger.segments = [s.as_dict() for s in writer.segments]
            ledger.save(directory)
        done += count
    writer.abandon()
    with open(directory / "rec-2.rec.wav", "ab") as handle:
        handle.write(torn_bytes)
    return directory


def test_a_torn_last_frame_is_cut_and_the_rest_finalized(tmp_path: Path) -> None:
    directory = crashed_recording(tmp_path, 60_000, torn_bytes=b"\x01\x02\x03")
    [result] = recover_cache(tmp_path)
    assert result.state == "finalized" and result.path == directory / "rec-2.wav"
    np.testing.assert_array_equal(read_back(result.path), ramp(2)(0, 60_000))
    segments = result.ledger["segments"]
    assert [(s["frames"], bool(s.get("recovered"))) for s in segments] == [(24_000, False), (24_000, False), (12_000, True)]


def test_a_recording_whose_ledger_was_lost_is_recovered_from_the_file(tmp_path: Path) -> None:
    directory = crashed_recording(tmp_path, 30_000, with_ledger=False)
    [result] = recover_cache(tmp_path)
    assert result.state == "finalized" and result.interrupted
    assert any("ledger was lost" in note for note in result.ledger["notes"])
    assert [s["frames"] for s in result.ledger["segments"]] == [24_000, 6_000]
    assert result.ledger["gaps"][0]["kind"] == "interruption"
    np.testing.assert_array_equal(read_back(directory / "rec-2.wav"), ramp(2)(0, 30_000))


def test_a_recording_that_died_before_any_audio_is_marked_failed(tmp_path: Path) -> None:
    directory = crashed_recording(tmp_path, 0)
    (directory / "rec-2.rec.wav").unlink()
    (tmp_path / "rec-3").mkdir()
    (tmp_path / "rec-3" / "reserve").write_bytes(bytes(1024))  # died before its manifest was written
    [result] = recover_cache(tmp_path)
    assert result.state == "failed" and result.path is None and "before any audio" in (result.error or "")
    assert Manifest.load(directory).state == "failed" and not (tmp_path / "rec-3").exists()


def test_finalized_recordings_are_left_for_upload_and_uploaded_ones_skipped(tmp_path: Path, no_thread_leak: None) -> None:
    ring = RingBuffer(1, RATE, seconds=10)
    for rid in ("rec-a", "rec-b"):
        recorder = Recorder(rid, tmp_path / rid, RATE, 1, profile(), duration_s=0.2)
        recorder.start(ring)
        Feeder(ring, ramp(1)).write(RATE // 2)
        assert recorder.wait(10)
        recorder.join(5)
    CacheDirectory(tmp_path).mark_uploaded("rec-b")
    before = {p: p.read_bytes() for p in (tmp_path / "rec-a").iterdir()}
    results = recover_cache(tmp_path)
    assert [(r.recording_id, r.state, r.interrupted) for r in results] == [("rec-a", "finalized", False)]
    assert {p: p.read_bytes() for p in (tmp_path / "rec-a").iterdir()} == before
