"""The synthetic and file backends: levels, looping, pacing, channel mapping and errors."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from hark_fleet.audio.capture import RingBuffer, SourceFileError, open_capture, ring_for_source
from hark_fleet.audio.capture.synthetic import SignalGenerator
from hark_fleet.audio.source import parse_audio_source

pytestmark = pytest.mark.usefixtures("capture_threads_stopped")


def dbfs(value: float) -> float:
    return 20 * np.log10(max(value, 1e-12))


def generate(source_text: str, seconds: float) -> np.ndarray:
    source = parse_audio_source(source_text)
    generator = SignalGenerator(source.target, source.rate, source.freq, source.dbfs)
    block = np.zeros((int(source.rate * seconds), source.channels), dtype=np.float32)
    generator.fill(block)
    return block


@pytest.mark.parametrize("level", [-20.0, -6.0, -60.0])
def test_a_synthetic_sine_peaks_at_its_level(level: float) -> None:
    samples = generate(f"synthetic:sine?freq=1000&dbfs={level}&channels=2", 1.0)
    assert abs(dbfs(np.abs(samples).max()) - level) < 0.1
    assert abs(dbfs(np.sqrt(np.mean(samples**2))) - (level - 3.01)) < 0.1
    assert np.array_equal(samples[:, 0], samples[:, 1])


def test_a_synthetic_sine_has_its_frequency_and_no_seam_between_blocks() -> None:
    source = parse_audio_source("synthetic:sine?freq=440&dbfs=-20&channels=1&rate=48000")
    generator = SignalGenerator(source.target, source.rate, source.freq, source.dbfs)
    blocks = []
    for size in (960, 1000, 37, 46003):  # one second in odd pieces
        block = np.zeros((size, 1), dtype=np.float32)
        generator.fill(block)
        blocks.append(block[:, 0])
    signal = np.concatenate(blocks)
    expected = 0.1 * np.sin(2 * np.pi * 440 * np.arange(48_000) / 48_000)
    assert np.abs(signal - expected).max() < 1e-4
    spectrum = np.abs(np.fft.rfft(signal))
    assert np.argmax(spectrum) == 440  # 1 Hz bins over one second


def test_synthetic_noise_has_its_rms_level_and_independent_channels() -> None:
    samples = generate("synthetic:noise?dbfs=-30&channels=2", 2.0)
    for channel in samples.T:
        assert abs(dbfs(np.sqrt(np.mean(channel**2))) - (-30)) < 0.1
    assert abs(np.corrcoef(samples.T)[0, 1]) < 0.05


def test_synthetic_silence_is_all_zero() -> None:
    assert not generate("synthetic:silence?channels=4", 0.5).any()


def test_a_synthetic_sweep_keeps_its_peak_level_while_climbing() -> None:
    samples = generate("synthetic:sweep?dbfs=-12&channels=1", 10.0)[:, 0]
    assert abs(dbfs(np.abs(samples).max()) - (-12)) < 0.1
    crossings = lambda part: np.count_nonzero(np.diff(np.signbit(part)))  # noqa: E731
    assert crossings(samples[:48_000]) < crossings(samples[-48_000:]) / 50  # low at the start, high at the end


def test_synthetic_capture_is_paced_in_real_time() -> None:
    source = parse_audio_source("synthetic:sine?freq=1000&dbfs=-20&channels=2")
    ring = ring_for_source(source, seconds=5)
    reader = ring.reader()
    started = time.monotonic()
    with open_capture(source, ring) as capture:
        time.sleep(1.0)
        elapsed = time.monotonic() - started
        assert capture.alive()
    frames = reader.read()
    assert abs(len(frames) / ring.rate - elapsed) < 0.1
    assert abs(dbfs(np.abs(frames).max()) - (-20)) < 0.1
    assert capture.stats.blocks > 0 and capture.stats.frames == len(frames)


@pytest.fixture
def music(tmp_path: Path) -> np.ndarray:
    """0.3 s of 16-bit stereo samples (as float) with a distinct ramp so loops are visible."""
    rng = np.random.default_rng(3)
    frames = rng.integers(-30000, 30000, size=(14_400, 2)).astype(np.int16)
    return frames


@pytest.mark.parametrize("suffix", ["wav", "flac"])
def test_a_file_source_loops_its_samples_exactly_in_real_time(tmp_path: Path, music: np.ndarray, suffix: str) -> None:
    import soundfile

    path = tmp_path / f"music.{suffix}"
    soundfile.write(path, music, 48_000, subtype="PCM_16")
    source = parse_audio_source(f"file:{path}")
    ring = ring_for_source(source, seconds=5)
    assert (ring.rate, ring.channels) == (48_000, 2)
    reader = ring.reader()
    started = time.monotonic()
    with open_capture(source, ring):
        time.sleep(1.0)
        elapsed = time.monotonic() - started
    got = reader.read()
    assert abs(len(got) / 48_000 - elapsed) < 0.1
    assert len(got) > 3 * len(music)  # looped at least three times
    expected = np.tile(music, (len(got) // len(music) + 1, 1))[: len(got)]
    assert np.array_equal(got * 32768, expected.astype(np.float32))


def test_a_mono_file_fills_every_channel_and_a_wide_file_gives_its_first(tmp_path: Path, music: np.ndarray) -> None:
    import soundfile

    mono, wide = tmp_path / "mono.wav", tmp_path / "wide.wav"
    soundfile.write(mono, music[:, 0], 48_000, subtype="PCM_16")
    soundfile.write(wide, np.column_stack([music, music[:, ::-1]]), 48_000, subtype="PCM_16")
    for path, channels, expected in ((mono, 2, np.column_stack([music[:, 0], music[:, 0]])), (wide, 1, music[:, :1])):
        source = parse_audio_source(f"file:{path}?channels={channels}")
        ring = ring_for_source(source, seconds=2)
        reader = ring.reader()
        with open_capture(source, ring):
            time.sleep(0.2)
        got = reader.read()[: len(expected)]
        assert ring.channels == channels
        assert np.array_equal(got * 32768, expected[: len(got)].astype(np.float32))


def test_a_file_source_that_cannot_be_captured_says_why(tmp_path: Path, music: np.ndarray) -> None:
    import soundfile

    with pytest.raises(SourceFileError, match="cannot open"):
        open_capture(parse_audio_source(f"file:{tmp_path / 'missing.wav'}"), RingBuffer(2, 48_000))
    path = tmp_path / "cd.wav"
    soundfile.write(path, music, 44_100, subtype="PCM_16")
    with pytest.raises(SourceFileError, match=r"44100 Hz .* 48000 Hz: add \?rate=44100"):
        open_capture(parse_audio_source(f"file:{path}?rate=48000"), RingBuffer(2, 48_000))
    source = parse_audio_source(f"file:{path}")
    assert ring_for_source(source).rate == 44_100  # without a rate option the file's own is used
