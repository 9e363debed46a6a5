"""The generated test signals of the meter tests (EBU tone sequences, noise, envelopes), and proof they are what they claim."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pytest
from hark_fleet.audio.meters import MeterEngine

RATE = 48000


def sine(seconds: float, dbfs: float, frequency: float = 1000.0, rate: int = RATE, phase: float = 0.0) -> np.ndarray:
    """A mono float32 sine with its peak at `dbfs`."""
    t = np.arange(round(seconds * rate)) / rate
    return (10.0 ** (dbfs / 20.0) * np.sin(2.0 * np.pi * frequency * t + phase)).astype(np.float32)


def stereo_tones(steps: Sequence[tuple[float, float]], frequency: float = 1000.0, rate: int = RATE) -> np.ndarray:
    """Stereo in-phase sines, one (seconds, dBFS peak) step after the other, as the EBU sequences."""
    mono = np.concatenate([sine(seconds, dbfs, frequency, rate) for seconds, dbfs in steps])
    return np.stack([mono, mono], axis=1)


def noise(seconds: float, rate: int = RATE, channels: int = 2, pink: bool = False, seed: int = 0) -> np.ndarray:
    """White or pink (1/f power) Gaussian float64 noise at -20 dBFS RMS."""
    rng = np.random.default_rng(seed)
    frames = round(seconds * rate)
    white = rng.standard_normal((frames, channels))
    if pink:
        spectrum = np.fft.rfft(white, axis=0)
        freqs = np.fft.rfftfreq(frames, 1.0 / rate)
        spectrum[1:] /= np.sqrt(freqs[1:, None])
        spectrum[0] = 0.0
        white = np.fft.irfft(spectrum, n=frames, axis=0)
    return 0.1 * white / white.std(axis=0)


def envelope(frames: int, rate: int, step_s: float, low_db: float, high_db: float, seed: int = 1) -> np.ndarray:
    """A (frames, 1) gain jumping to a random level in [low_db, high_db] every `step_s`, ramped over 10 ms."""
    rng = np.random.default_rng(seed)
    step = round(step_s * rate)
    levels = 10.0 ** (rng.uniform(low_db, high_db, frames // step + 1) / 20.0)
    gain = np.repeat(levels, step)[:frames]
    ramp = max(1, rate // 100)
    smoothed = np.convolve(np.pad(gain, ramp, mode="edge"), np.ones(ramp) / ramp, mode="same")[ramp:-ramp]
    return smoothed[:, None]


def blocks(signal: np.ndarray, size: int) -> Iterator[np.ndarray]:
    """The signal cut into blocks of `size` frames (the last one shorter)."""
    for start in range(0, len(signal), size):
        yield signal[start : start + size]


def meter_frames(signal: np.ndarray, block: int = 4800, rate: int = RATE, **options: Any) -> list[dict[str, Any]]:
    """Every frame of a fresh engine fed the signal in blocks of `block` frames."""
    engine = MeterEngine(rate, signal.shape[1], **options)
    return [engine.process(part) for part in blocks(signal, block)]


def meter_last(signal: np.ndarray, block: int = 4800, rate: int = RATE, **options: Any) -> dict[str, Any]:
    """The frame after the whole signal."""
    engine = MeterEngine(rate, signal.shape[1], **options)
    frame: dict[str, Any] = {}
    for part in blocks(signal, block):
        frame = engine.process(part)
    return frame


def test_sine_peaks_at_its_level_and_tone_steps_last_their_durations() -> None:
    tones = stereo_tones([(1.0, -20.0), (0.5, -6.0)])
    assert tones.shape == (72000, 2) and tones.dtype == np.float32
    assert np.abs(tones[:48000]).max() == pytest.approx(0.1, rel=1e-4)
    assert np.abs(tones[48000:]).max() == pytest.approx(10 ** (-6 / 20), rel=1e-4)


def test_pink_noise_falls_3_db_per_octave_and_white_noise_is_flat() -> None:
    def octave_drop(signal: np.ndarray) -> float:
        power = np.abs(np.fft.rfft(signal[:, 0])) ** 2
        freqs = np.fft.rfftfreq(len(signal), 1 / RATE)
        band = lambda lo: power[(freqs >= lo) & (freqs < 2 * lo)].mean()  # noqa: E731
        return float(10 * np.log10(band(1000) / band(2000)))

    assert octave_drop(noise(4.0, pink=True)) == pytest.approx(3.0, abs=0.3)
    assert octave_drop(noise(4.0)) == pytest.approx(0.0, abs=0.3)
    assert float(np.sqrt(np.mean(noise(1.0, pink=True) ** 2))) == pytest.approx(0.1, rel=1e-6)


def test_envelope_holds_each_level_for_its_step() -> None:
    gain = envelope(48000 * 4, RATE, 1.0, -30.0, 0.0)
    steps = 20 * np.log10(gain[[24000, 72000, 120000, 168000], 0])
    assert np.all((steps >= -30.0) & (steps <= 0.0)) and np.ptp(steps) > 3.0
