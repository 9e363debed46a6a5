"""Calibrated sound pressure level: A-weighting, LAeq, LAmax (fast) and LA90 per frame interval."""

from __future__ import annotations

import numpy as np
import pytest
from hark_fleet.audio.meters import MeterEngine, calibration_offset
from hark_fleet.audio.meters.spl import FastLevel, a_weighting_sos, tenth_percentile
from scipy.signal import lfilter, sosfreqz

from tests.audio.test_meters_signals import sine

RMS_TO_PEAK_DB = 3.0103  # a sine's peak sits 3.01 dB over its RMS

# IEC 61672-1: nominal A-weighting (dB) and class 1 limits (+, -) at some centre frequencies
A_WEIGHTING_CLASS_1 = [
    (31.5, -39.4, 1.5, 1.5),
    (63.0, -26.2, 1.0, 1.0),
    (125.0, -16.1, 1.0, 1.0),
    (250.0, -8.6, 1.0, 1.0),
    (500.0, -3.2, 1.0, 1.0),
    (1000.0, 0.0, 0.7, 0.7),
    (2000.0, 1.2, 1.0, 1.0),
    (4000.0, 1.0, 1.0, 1.0),
    (8000.0, -1.1, 1.5, 2.5),
    (12500.0, -4.3, 2.0, 5.0),
    (16000.0, -6.6, 3.5, 17.0),
]


def tone(seconds: float, rms_dbfs: float, frequency: float = 1000.0) -> np.ndarray:
    """A mono (frames, 1) sine whose RMS reads `rms_dbfs`."""
    return sine(seconds, rms_dbfs + RMS_TO_PEAK_DB, frequency).reshape(-1, 1)


@pytest.mark.parametrize("rate", [48000, 44100])
def test_a_weighting_meets_iec_61672_class_1(rate: int) -> None:
    frequencies = [f for f, *_ in A_WEIGHTING_CLASS_1]
    _, response = sosfreqz(a_weighting_sos(rate), worN=frequencies, fs=rate)
    for (frequency, nominal, plus, minus), gain in zip(A_WEIGHTING_CLASS_1, 20 * np.log10(np.abs(response)), strict=True):
        assert nominal - minus <= gain <= nominal + plus, (frequency, gain)


def test_calibration_offset_is_the_reference_level_minus_the_tone_rms() -> None:
    assert calibration_offset(tone(1.0, -20.0)) == pytest.approx(114.0, abs=0.01)
    assert calibration_offset(tone(1.0, -26.0), reference_db=114.0) == pytest.approx(140.0, abs=0.01)
    with pytest.raises(ValueError):
        calibration_offset(np.zeros(100))


def test_a_1_khz_tone_at_minus_20_dbfs_with_offset_114_reads_94_db() -> None:
    engine = MeterEngine(48000, 1, calibration={0: 114.0})
    signal = tone(1.0, -20.0)
    for start in range(0, len(signal), 4800):
        frame = engine.process(signal[start : start + 4800])
    channel = frame["channels"][0]
    assert channel["rms_dbfs"] == pytest.approx(-20.0, abs=0.01)
    spl = channel["spl"]
    assert spl["laeq_db"] == pytest.approx(94.0, abs=0.05)
    assert spl["lamax_db"] == pytest.approx(94.0, abs=0.1)
    assert spl["la90_db"] == pytest.approx(94.0, abs=0.1)


def test_a_low_tone_is_a_weighted_down() -> None:
    engine = MeterEngine(48000, 1, calibration={0: 114.0})
    engine.process(tone(1.0, -20.0, frequency=100.0))
    spl = engine.process(tone(0.1, -20.0, frequency=100.0))["channels"][0]["spl"]
    assert spl["laeq_db"] == pytest.approx(94.0 - 19.1, abs=0.3)


def test_a_burst_lifts_lamax_and_laeq_while_la90_stays_on_the_background() -> None:
    engine = MeterEngine(48000, 1, calibration={0: 100.0})
    engine.process(tone(1.0, -40.0))  # settle on the 60 dB background
    interval = tone(1.0, -40.0)
    interval[400 * 48 : 600 * 48] = tone(0.2, -20.0)[:, :]  # 200 ms at 80 dB
    spl = engine.process(interval)["channels"][0]["spl"]
    expected_leq = 10 * np.log10(0.8 * 10**6 + 0.2 * 10**8)
    assert spl["laeq_db"] == pytest.approx(expected_leq, abs=0.1)
    # fast weighting (125 ms) reaches 1 - exp(-200/125) of a 200 ms burst: about 1 dB under its level
    assert spl["lamax_db"] == pytest.approx(80.0 + 10 * np.log10(1 - np.exp(-1.6)), abs=0.2)
    assert spl["la90_db"] == pytest.approx(60.0, abs=0.5)


def test_each_calibrated_channel_uses_its_own_offset_and_others_have_none() -> None:
    engine = MeterEngine(48000, 3, calibration={0: 110.0, 2: 120.0})
    frame = engine.process(np.repeat(tone(0.5, -30.0), 3, axis=1))
    spl = [c["spl"] for c in frame["channels"]]
    assert spl[1] is None
    assert spl[0]["laeq_db"] == pytest.approx(80.0, abs=0.05)
    assert spl[2]["laeq_db"] == pytest.approx(90.0, abs=0.05)


def test_spl_of_silence_is_none_inside_the_spl_object() -> None:
    engine = MeterEngine(48000, 1, calibration={0: 114.0})
    spl = engine.process(np.zeros((4800, 1), np.float32))["channels"][0]["spl"]
    assert spl == {"laeq_db": None, "lamax_db": None, "la90_db": None}


def test_fast_level_in_runs_equals_the_sample_by_sample_recursion_for_any_block_sizes() -> None:
    rate = 48000
    c = np.exp(-1.0 / (0.125 * rate))
    fast = FastLevel(rate, 2)
    rng = np.random.default_rng(11)
    state = None
    for frames in [4800, 1, 15, 16, 17, 1000, 4801, 4800, 33]:
        squares = (rng.standard_normal((2, frames)) * 10 ** rng.uniform(-5, 0, (2, 1))) ** 2
        if state is None:
            state = c * squares.mean(axis=1, keepdims=True)
        expected, state = lfilter([1.0 - c], [1.0, -c], squares, axis=1, zi=state)
        fast.squares_buffer(frames)[:] = squares
        np.testing.assert_allclose(fast.levels(frames), expected, rtol=1e-10)


def test_tenth_percentile_is_numpys_linear_percentile() -> None:
    rng = np.random.default_rng(12)
    for count in (1, 2, 9, 10, 11, 100, 101):
        values = rng.random((3, count))
        np.testing.assert_allclose(tenth_percentile(values), np.percentile(values, 10.0, axis=1), rtol=1e-12)
