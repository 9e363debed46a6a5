"""The block filter (runs of samples through matrix products) filters exactly as scipy's sample-by-sample sosfilt."""

from __future__ import annotations

import numpy as np
import pytest
from hark_fleet.audio.meters.iir import BlockIir
from hark_fleet.audio.meters.kweighting import k_weighting_sos
from hark_fleet.audio.meters.spl import a_weighting_sos
from scipy.signal import sosfilt

BLOCK_SIZES = [4800, 1, 31, 32, 33, 1000, 4801, 4410, 7]


@pytest.mark.parametrize("rate", [48000, 44100, 8000])
@pytest.mark.parametrize("weighting", ["K", "A"])
def test_block_filter_equals_sosfilt_for_any_block_sizes(weighting: str, rate: int) -> None:
    sos = k_weighting_sos(rate) if weighting == "K" else a_weighting_sos(rate)
    block_filter = BlockIir(sos, 3)
    state = np.zeros((len(sos), 3, 2))
    rng = np.random.default_rng(21)
    for number in range(200):
        frames = BLOCK_SIZES[number % len(BLOCK_SIZES)]
        block = rng.standard_normal((3, frames)) * 10 ** rng.uniform(-4, 0, (3, 1))
        expected, state = sosfilt(sos, block, axis=1, zi=state)
        got = block_filter.process(block)
        assert np.abs(got - expected).max() <= 1e-8 * np.abs(expected).max()


def test_block_filter_does_not_drift_on_a_long_run_and_resets() -> None:
    sos = k_weighting_sos(48000)
    block_filter = BlockIir(sos, 2)
    state = np.zeros((len(sos), 2, 2))
    tone = np.sin(2 * np.pi * 997.0 * np.arange(4800) / 48000)[None, :].repeat(2, axis=0) * 0.5
    for _ in range(3000):  # 5 minutes at 48 kHz
        expected, state = sosfilt(sos, tone, axis=1, zi=state)
        got = block_filter.process(tone)
    np.testing.assert_allclose(got, expected, atol=1e-9)
    block_filter.reset()
    np.testing.assert_allclose(block_filter.process(tone), sosfilt(sos, tone, axis=1), atol=1e-9)


@pytest.mark.parametrize("weighting", ["K", "A"])
def test_float32_block_filter_within_1e_5_of_full_scale_of_sosfilt_and_a_blocks_power_within_0_01_db(weighting: str) -> None:
    sos = k_weighting_sos(48000) if weighting == "K" else a_weighting_sos(48000)
    block_filter = BlockIir(sos, 3, np.float32)
    state = np.zeros((len(sos), 3, 2))
    rng = np.random.default_rng(23)
    for number in range(300):
        frames = BLOCK_SIZES[number % len(BLOCK_SIZES)]
        block = (rng.standard_normal((3, frames)) * 10 ** rng.uniform(-4, 0, (3, 1))).astype(np.float32)
        expected, state = sosfilt(sos, block.astype(np.float64), axis=1, zi=state)
        got = block_filter.process(block)
        assert got.dtype == np.float32
        assert np.abs(got - expected).max() <= 1e-5  # -100 dB under full scale: float32 rounding of a loud past
        if frames >= 1000:
            power = np.mean(got.astype(np.float64) ** 2, axis=1) / np.mean(expected**2, axis=1)
            assert np.abs(10 * np.log10(power)).max() < 0.01  # the readings' resolution, down to 80 dB under a loud past
