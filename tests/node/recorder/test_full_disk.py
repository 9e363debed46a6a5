"""A really full disk (a small tmpfs mounted as the cache): the recording stops cleanly, finalized, with a valid file."""

from __future__ import annotations

import hashlib
import json
import os
import struct
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from hark_fleet.audio.capture import RingBuffer
from hark_fleet.node.recorder import Recorder
from hark_fleet.node.recorder.wav import header_size

from tests.harness import tmpfs
from tests.node.recorder.conftest import RATE, Feeder, pcm16_bytes, profile, ramp, read_back


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """An 8 MB tmpfs (needs root), unmounted at the end."""
    with tmpfs(tmp_path / "cache", "8m") as mount:
        yield mount


@pytest.mark.parametrize("fmt", ["wav", "flac"])
def test_a_full_disk_stops_the_recording_cleanly_with_every_frame_so_far_readable(
    small_disk: Path, feeders: list[Feeder], fmt: str
) -> None:
    signal = ramp(2)
    ring = RingBuffer(2, RATE, seconds=10)
    recorder = Recorder("rec-1", small_disk / "rec-1", RATE, 2, profile(format=fmt, segment_s=5.0))
    recorder.start(ring)
    feeders.append(Feeder(ring, signal).start())
    assert recorder.wait(30), "the recording did not stop on the full disk"
    recorder.join(5)

    result = recorder.result
    directory = small_disk / "rec-1"
    assert result is not None and (result.state, result.stop_reason) == ("finalized", "disk_full")
    assert "no space" in (result.error or "").lower()
    assert result.path == directory / "rec-1.wav" and result.format == "wav"
    if fmt == "flac":  # no room left to transcode: the valid WAV is kept, and the ledger says why
        assert any("kept as WAV" in note for note in result.ledger["notes"])
    assert sorted(os.listdir(directory)) == ["ledger.json", "manifest.json", "rec-1.wav"]  # no temp, no reserve

    frames = result.ledger["frames_written"]
    assert frames > 35 * RATE  # 8 MB holds about 43 s of 48 kHz 16-bit stereo
    raw = result.path.read_bytes()
    data_size = struct.unpack_from("<I", raw, raw.index(b"data") + 4)[0]
    riff_size = struct.unpack_from("<I", raw, 4)[0]
    assert data_size == frames * 4 == len(raw) - header_size(2, 16) and riff_size == len(raw) - 8
    np.testing.assert_array_equal(read_back(result.path), signal(recorder.ring_start or 0, frames))

    ledger = json.loads((directory / "ledger.json").read_text())
    assert (ledger["state"], ledger["stop_reason"], ledger["frames_written"]) == ("finalized", "disk_full", frames)
    assert ledger["file"]["sha256"] == hashlib.sha256(raw).hexdigest() and ledger["file"]["size_bytes"] == len(raw)
    assert sum(s["frames"] for s in ledger["segments"]) == frames
    for segment in ledger["segments"]:
        expected = pcm16_bytes(signal((recorder.ring_start or 0) + segment["start_frame"], segment["frames"]))
        assert segment["sha256"] == hashlib.sha256(expected).hexdigest()
    manifest = json.loads((directory / "manifest.json").read_text())
    assert (manifest["state"], manifest["stop_reason"], manifest["final_file"]) == ("finalized", "disk_full", "rec-1.wav")
