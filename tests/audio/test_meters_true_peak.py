"""True peak against the EBU Tech 3341 true-peak cases 15-23 (generated here) and libebur128 on band-limited noise."""

from __future__ import annotations

import numpy as np
import pyebur128 as ebur128
import pytest
from hark_fleet.audio.meters import MeterEngine, TruePeakMeter
from hark_fleet.audio.meters.true_peak import oversampling_factor
from scipy.signal import butter, sosfilt

from tests.audio.test_meters_signals import meter_frames

HIGH, LOW = 0.2, 0.4  # Tech 3341: expected +0.2 / -0.4 dB


def max_of(frames: list[dict], key: str, channel: int = 0) -> float:
    return max(f["channels"][channel][key] for f in frames if f["channels"][channel][key] is not None)


def tech3341_sine(fraction: float, amplitude: float, phase_deg: float, rate: int = 48000) -> np.ndarray:
    """A stereo sine at `fraction` of the sample rate, 3 s long, at `phase_deg` on sample 0, faded in over 20 ms.

    The fade keeps the measurement on the steady tone: an abrupt start is a step whose band-limited
    reconstruction really does overshoot (case 18 would read 0.7 dB high on its first block).
    """
    n = np.arange(3 * rate)
    fade = np.minimum(1.0, n / (0.02 * rate))
    mono = amplitude * np.sin(np.pi / 2 * fade) ** 2 * np.sin(2 * np.pi * fraction * n + np.deg2rad(phase_deg))
    return np.stack([mono, mono], axis=1).astype(np.float32)


def bandlimited_pulse(offset: float, rate: int = 48000) -> np.ndarray:
    """A stereo 0 dBTP pulse (a Kaiser-windowed sinc, 19.2 kHz wide at 48 kHz) peaking `offset` samples after a sample."""
    n = np.arange(-400, 401)
    mono = np.sinc(0.8 * (n - offset)) * np.kaiser(len(n), 8.0)
    signal = np.zeros(rate)
    signal[rate // 2 - 400 : rate // 2 + 401] = mono
    return np.stack([signal, signal], axis=1).astype(np.float32)


@pytest.mark.parametrize(
    ("case", "fraction", "amplitude", "phase", "true_peak", "sample_peak"),
    [
        (15, 1 / 4, 0.5, 0.0, -6.0, -6.02),
        (16, 1 / 4, 0.5, 45.0, -6.0, -9.03),
        (17, 1 / 6, 0.5, 60.0, -6.0, -7.27),
        (18, 1 / 8, 0.5, 67.5, -6.0, -6.7),
        (19, 1 / 4, 1.41, 45.0, 3.0, -0.03),  # 1.41 x sin(45 deg) = 0.997
    ],
)
def test_tech3341_sines_read_their_true_peak_between_samples(
    case: int, fraction: float, amplitude: float, phase: float, true_peak: float, sample_peak: float
) -> None:
    frames = meter_frames(tech3341_sine(fraction, amplitude, phase))
    assert max_of(frames, "peak_dbfs") == pytest.approx(sample_peak, abs=0.02), case
    got = max_of(frames, "true_peak_dbtp")
    assert true_peak - LOW <= got <= true_peak + HIGH, (case, got)


@pytest.mark.parametrize(("case", "offset"), [(20, 0.0), (21, 0.25), (22, 0.5), (23, 0.75)])
def test_tech3341_style_0_dbtp_pulses_read_0_dbtp_wherever_the_peak_falls(case: int, offset: float) -> None:
    frames = meter_frames(bandlimited_pulse(offset))
    got = max_of(frames, "true_peak_dbtp")
    assert -LOW <= got <= HIGH, (case, got)
    if offset == 0.5:
        assert max_of(frames, "peak_dbfs") < -2.0  # the samples alone miss it by over 2 dB


def test_true_peak_keeps_filter_history_across_block_boundaries() -> None:
    pulse = bandlimited_pulse(0.5)
    centre = 24000  # the peak falls between samples 24000 and 24001
    for boundary in (centre - 3, centre + 1, centre + 4):
        meter = TruePeakMeter(48000, 2)
        first = meter.process(np.ascontiguousarray(pulse[:boundary].T))
        second = meter.process(np.ascontiguousarray(pulse[boundary:].T))
        assert 20 * np.log10(max(first[0], second[0])) >= -LOW, boundary


def test_true_peak_does_not_depend_on_block_size() -> None:
    signal = (bandlimited_pulse(0.25) * 0.5 + tech3341_sine(1 / 6, 0.25, 10.0)[:48000])[20000:28000]
    readings = {size: max_of(meter_frames(signal, block=size), "true_peak_dbtp") for size in (2, 7, 333, 8000)}
    assert len(set(readings.values())) == 1, readings


def test_true_peak_agrees_with_libebur128_on_band_limited_noise() -> None:
    # Both interpolate 4x, through different filters whose delays put their grids 1/8 sample apart:
    # on content under 16 kHz that grid difference bounds the disagreement to about 0.1 dB.
    rng = np.random.default_rng(0)
    signal = sosfilt(butter(8, 16000, fs=48000, output="sos"), rng.standard_normal((48000 * 5, 2)) * 0.2, axis=0)
    signal = signal.astype(np.float32)
    state = ebur128.R128State(2, 48000, ebur128.MeasurementMode.MODE_TRUE_PEAK)
    state.add_frames(signal.reshape(-1), len(signal))
    frames = meter_frames(signal)
    for channel in range(2):
        expected = 20 * np.log10(ebur128.get_true_peak(state, channel))
        assert max_of(frames, "true_peak_dbtp", channel) == pytest.approx(expected, abs=0.15)


def test_oversampling_follows_the_sample_rate() -> None:
    assert [oversampling_factor(rate) for rate in (44100, 48000, 88200, 96000, 192000)] == [4, 4, 4, 2, 1]
    at_96k = meter_frames(tech3341_sine(1 / 4, 0.5, 45.0, rate=96000), block=9600, rate=96000)
    assert -6.0 - LOW <= max_of(at_96k, "true_peak_dbtp") <= -6.0 + HIGH
    at_192k = meter_frames(tech3341_sine(1 / 4, 0.5, 45.0, rate=192000), block=19200, rate=192000)
    assert max_of(at_192k, "true_peak_dbtp") == max_of(at_192k, "peak_dbfs")  # samples are dense enough


def test_true_peak_is_none_in_digital_silence() -> None:
    frame = MeterEngine(48000, 1).process(np.zeros((4800, 1), np.float32))
    assert frame["channels"][0]["true_peak_dbtp"] is None
