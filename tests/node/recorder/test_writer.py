"""The working WAV: a valid header after every flush, exact PCM at 16/24/32 bit, RF64, and checksums as written."""

from __future__ import annotations

import hashlib
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
import soundfile
from hark_fleet.node.recorder.transcode import transcode_to_flac
from hark_fleet.node.recorder.wav import header_size, repair
from hark_fleet.node.recorder.writer import WavWriter, to_pcm

from tests.node.recorder.conftest import RATE, pcm16_bytes, ramp, read_back, sine


def declared_sizes(path: Path) -> tuple[bytes, int, int]:
    """(RIFF id, RIFF size, data size) as the header states them (data size from ds64 for RF64)."""
    raw = path.read_bytes()[:200]
    riff_id, riff_size = raw[:4], struct.unpack_from("<I", raw, 4)[0]
    data_at = raw.index(b"data")
    data_size = struct.unpack_from("<I", raw, data_at + 4)[0]
    if riff_id == b"RF64":
        riff_size, data_size = struct.unpack_from("<QQ", raw, 20)
    return riff_id, riff_size, data_size


@pytest.mark.parametrize(("channels", "bit_depth"), [(1, 16), (2, 16), (2, 24), (6, 24), (2, 32)])
def test_a_copy_taken_after_every_flush_reads_back_exactly_what_was_written(
    tmp_path: Path, channels: int, bit_depth: int
) -> None:
    signal = ramp(channels)
    writer = WavWriter(tmp_path / "take.wav", RATE, channels, bit_depth, segment_frames=RATE)
    written = 0
    for block in (1, 4799, 48000, 12345):
        writer.write(signal(written, block))
        written += block
        writer.flush()
        copy = tmp_path / "copy.wav"
        shutil.copy(tmp_path / "take.wav", copy)
        info = soundfile.info(copy)
        assert (info.frames, info.channels, info.samplerate) == (written, channels, RATE)
        np.testing.assert_array_equal(read_back(copy), signal(0, written))
        _, riff_size, data_size = declared_sizes(copy)
        assert data_size == written * channels * bit_depth // 8 and riff_size == copy.stat().st_size - 8
    writer.close()
    assert soundfile.info(tmp_path / "take.wav").subtype == f"PCM_{bit_depth}"


def test_float_samples_become_rounded_clipped_pcm() -> None:
    samples = np.array([[0.0], [1.0], [-1.0], [1.5], [-1.5], [0.5 / 32768], [1.5 / 32768], [-0.75 / 32768]], dtype=np.float32)
    assert np.frombuffer(to_pcm(samples, 16), "<i2").tolist() == [0, 32767, -32768, 32767, -32768, 0, 2, -1]
    as24 = np.frombuffer(to_pcm(samples, 24), np.uint8).reshape(-1, 3)
    values = (as24[:, 0].astype(np.int32) | as24[:, 1].astype(np.int32) << 8 | as24[:, 2].astype(np.int32) << 16) << 8 >> 8
    assert values.tolist() == [0, 8388607, -8388608, 8388607, -8388608, 128, 384, -192]
    assert np.frombuffer(to_pcm(samples[:5], 32), "<i4").tolist() == [0, 2147483647, -2147483648, 2147483647, -2147483648]


def test_segment_checksums_are_of_the_sample_bytes_as_written(tmp_path: Path) -> None:
    signal = sine(2)
    writer = WavWriter(tmp_path / "take.wav", RATE, 2, 16, segment_frames=10_000)
    completed = writer.write(signal(0, 25_000))
    assert [s.frames for s in completed] == [10_000, 10_000]
    segments = writer.close()
    assert [(s.index, s.start_frame, s.frames) for s in segments] == [(0, 0, 10_000), (1, 10_000, 10_000), (2, 20_000, 5_000)]
    for segment in segments:
        expected = pcm16_bytes(signal(segment.start_frame, segment.frames))
        assert segment.sha256 == hashlib.sha256(expected).hexdigest()


def test_a_file_past_the_riff_limit_becomes_rf64_and_stays_readable(tmp_path: Path) -> None:
    signal = ramp(2)
    writer = WavWriter(tmp_path / "take.wav", RATE, 2, 24, segment_frames=RATE, rf64_after_bytes=30_000)
    writer.write(signal(0, 4_000))
    writer.flush()
    assert declared_sizes(tmp_path / "take.wav")[0] == b"RIFF"
    writer.write(signal(4_000, 4_001))
    writer.flush()
    shutil.copy(tmp_path / "take.wav", tmp_path / "copy.wav")
    riff_id, riff_size, data_size = declared_sizes(tmp_path / "copy.wav")
    assert (riff_id, data_size) == (b"RF64", 8_001 * 6) and riff_size == (tmp_path / "copy.wav").stat().st_size - 8
    np.testing.assert_array_equal(read_back(tmp_path / "copy.wav"), signal(0, 8_001))
    writer.close()
    assert soundfile.info(tmp_path / "take.wav").format == "RF64"
    transcode_to_flac(tmp_path / "take.wav", tmp_path / "take.flac", 24)
    np.testing.assert_array_equal(read_back(tmp_path / "take.flac"), signal(0, 8_001))


def test_repair_cuts_a_torn_frame_and_rewrites_the_header_from_the_file_size(tmp_path: Path) -> None:
    signal = ramp(3)
    writer = WavWriter(tmp_path / "take.wav", RATE, 3, 24, segment_frames=RATE)
    writer.write(signal(0, 1_000))
    writer.flush()
    writer.write(signal(1_000, 500))  # written but never flushed: the header still says 1000 frames
    writer.abandon()
    with open(tmp_path / "take.wav", "ab") as handle:
        handle.write(b"\x01\x02\x03\x04")  # a frame torn by the crash (9 bytes a frame)
    layout = repair(tmp_path / "take.wav")
    assert layout.data_bytes == 1_500 * 9 and (tmp_path / "take.wav").stat().st_size == header_size(3, 24) + 1_500 * 9
    np.testing.assert_array_equal(read_back(tmp_path / "take.wav"), signal(0, 1_500))


@pytest.mark.parametrize("bit_depth", [16, 24])
def test_flac_transcode_is_lossless_and_streamed_in_blocks(tmp_path: Path, bit_depth: int) -> None:
    signal = ramp(2) if bit_depth == 16 else (lambda s, n: (ramp(2)(s, n) + np.float32(1 / 2**23)).astype(np.float32))
    writer = WavWriter(tmp_path / "take.wav", RATE, 2, bit_depth, segment_frames=RATE)
    writer.write(signal(0, 30_001))
    writer.close()
    assert transcode_to_flac(tmp_path / "take.wav", tmp_path / "take.flac", bit_depth, block_frames=4096) == 30_001
    info = soundfile.info(tmp_path / "take.flac")
    assert (info.format, info.subtype, info.frames) == ("FLAC", f"PCM_{bit_depth}", 30_001)
    np.testing.assert_array_equal(read_back(tmp_path / "take.flac"), read_back(tmp_path / "take.wav"))
    assert not list(tmp_path.glob(".*part"))
