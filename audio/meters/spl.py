"""Sound pressure level of calibrated channels: LAeq, LAmax (fast) and LA90 over each block.

dB SPL = dBFS + the channel's calibration offset, where dBFS is the plain RMS level (the API's convention):
a calibrator's 94 dB tone that reads -20 dBFS RMS gives an offset of 114 dB. The A-weighting is the IEC 61672
analog filter through the bilinear transform, normalised to 0 dB at 1 kHz (close to the class 1 limits up to
about 10 kHz at 48 kHz; above that the bilinear warping pulls it low, which matters little for field levels).
LAmax is the largest fast (125 ms exponential) A-weighted level in the interval; LA90 is the 10th percentile
of that fast level sampled every 1 ms over the interval, i.e. the level exceeded 90 % of the time.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
from hark_fleet.audio.meters.const import FAST_TIME_CONSTANT_S, LA90_STEP_S, REFERENCE_SPL_DB
from hark_fleet.audio.meters.units import power_db
from scipy.signal import bilinear_zpk, lfilter, sosfilt, sosfreqz, zpk2sos

# IEC 61672-1 A-weighting poles (Hz): 20.6 (double), 107.7, 737.9, 12194 (double); four zeros at 0 Hz.
A_WEIGHTING_POLES_HZ = (20.598997, 20.598997, 107.65265, 737.86223, 12194.217, 12194.217)


def a_weighting_sos(sample_rate: int) -> np.ndarray:
    """A-weighting as second-order sections at `sample_rate`, 0 dB at 1 kHz."""
    poles = [-2.0 * math.pi * f for f in A_WEIGHTING_POLES_HZ]
    zeros, poles_z, gain = bilinear_zpk([0.0] * 4, poles, 1.0, sample_rate)
    sos = zpk2sos(zeros, poles_z, gain)
    _, response = sosfreqz(sos, worN=[1000.0], fs=sample_rate)
    sos[0, :3] /= abs(response[0])
    return np.asarray(sos)


def calibration_offset(tone: np.ndarray, reference_db: float = REFERENCE_SPL_DB) -> float:
    """The offset (dB) that makes a recorded reference tone read `reference_db` SPL: reference minus its RMS dBFS."""
    samples = np.asarray(tone, dtype=np.float64)
    mean_square = float(np.mean(samples * samples))
    if not mean_square > 0.0:
        raise ValueError("the reference tone is silent")
    return reference_db - 10.0 * math.log10(mean_square)


class SplMeter:
    """A-weighted levels of the calibrated channels of a stream, with filter and time-weighting state across blocks."""

    def __init__(self, sample_rate: int, offsets: Mapping[int, float]) -> None:
        self.channels = tuple(sorted(offsets))
        self._offsets = [float(offsets[c]) for c in self.channels]
        self._sos = a_weighting_sos(sample_rate)
        self._zi = np.zeros((len(self._sos), len(self.channels), 2))
        self._alpha = 1.0 - math.exp(-1.0 / (FAST_TIME_CONSTANT_S * sample_rate))
        self._fast: np.ndarray | None = None  # time-weighting filter state, seeded from the first block
        self._step = max(1, round(LA90_STEP_S * sample_rate))
        self._position = 0

    def process(self, block: np.ndarray) -> dict[int, dict[str, float | None]]:
        """For each calibrated channel of a (channels, frames) float64 block: {laeq_db, lamax_db, la90_db}."""
        selected = block[list(self.channels)]
        weighted, self._zi = sosfilt(self._sos, selected, axis=1, zi=self._zi)
        squares = weighted * weighted
        if self._fast is None:
            self._fast = (1.0 - self._alpha) * squares.mean(axis=1, keepdims=True)
        fast, self._fast = lfilter([self._alpha], [1.0, self._alpha - 1.0], squares, axis=1, zi=self._fast)
        first = -self._position % self._step  # sample the fast level on a grid counted from the stream's start
        self._position += block.shape[1]
        sampled = fast[:, first :: self._step]
        laeq = squares.mean(axis=1)
        lamax = fast.max(axis=1)
        la90 = np.percentile(sampled, 10.0, axis=1) if sampled.shape[1] else np.full(len(self.channels), np.nan)
        return {
            channel: {
                "laeq_db": power_db(float(laeq[i]), offset),
                "lamax_db": power_db(float(lamax[i]), offset),
                "la90_db": power_db(float(la90[i]), offset),
            }
            for i, (channel, offset) in enumerate(zip(self.channels, self._offsets, strict=True))
        }
