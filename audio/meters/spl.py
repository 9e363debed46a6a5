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
from hark_fleet.audio.meters.iir import BlockIir
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


class FastLevel:
    """IEC 61672 fast time weighting of squared samples, y[n] = c y[n-1] + (1 - c) x[n], kept across blocks.

    A one-pole recursion costs scipy's lfilter a serial pass over every sample. Cut into runs of RUN samples,
    the level k samples into a run is c^(k+1) y_before + sum_{j<=k} (1 - c) c^(k-j) x[j]. The level at each run's
    end from a zero start is one matrix-vector product, the recursion from run to run is lfilter over 1/RUN of
    the samples, and y_before enters as c y_before / (1 - c) added to the run's first square, after which every
    level is one matrix product of the runs with a triangular RUN x RUN matrix (BLAS). Exact up to float64 rounding.
    """

    RUN = 16
    BLAS_SINGLE_THREAD_WORK = 150_000  # rows x RUN x RUN per product: under OpenBLAS's threshold for threading

    def __init__(self, sample_rate: int, channels: int) -> None:
        c = math.exp(-1.0 / (FAST_TIME_CONSTANT_S * sample_rate))
        lag = np.arange(self.RUN)[None, :] - np.arange(self.RUN)[:, None]  # k - j
        self._response = np.where(lag >= 0, (1.0 - c) * c ** np.maximum(lag, 0), 0.0)  # [j, k]: x[j]'s share of y[k]
        self._to_end = np.ascontiguousarray(self._response[:, -1])
        self._run_decay = c**self.RUN
        self._lead_in = c / (1.0 - c)  # a level y before a run acts as y c / (1 - c) added to its first square
        self._channels = channels
        self._chunk = max(1, self.BLAS_SINGLE_THREAD_WORK // self._response.size)
        self._level: np.ndarray | None = None  # the level at the last sample, seeded from the first block
        self._squares = self._levels = np.zeros((channels, 0))

    def squares_buffer(self, frames: int) -> np.ndarray:
        """A (channels, frames) view for the caller to write squares into; `levels(frames)` reads them from there."""
        padded = -(-frames // self.RUN) * self.RUN
        if self._squares.shape[1] != padded:
            self._squares, self._levels = np.zeros((self._channels, padded)), np.zeros((self._channels, padded))
        return self._squares[:, :frames]

    def levels(self, frames: int) -> np.ndarray:
        """The fast level at each square written into `squares_buffer(frames)`, which it overwrites: a (channels, frames) view."""
        squares = self._squares
        squares[:, frames:] = 0.0  # the padding of the last run
        if self._level is None:
            self._level = squares[:, :frames].mean(axis=1)
        runs = squares.reshape(self._channels, -1, self.RUN)
        before = np.empty(runs.shape[:2])  # the level before each run
        before[:, 0] = self._level
        if runs.shape[1] > 1:
            ends = runs[:, :-1] @ self._to_end  # each run's last level from a zero level before it
            decay = self._run_decay
            before[:, 1:] = lfilter([1.0], [1.0, -decay], ends, axis=1, zi=(decay * self._level)[:, None])[0]
        runs[:, :, 0] += before * self._lead_in
        rows, levels = squares.reshape(-1, self.RUN), self._levels.reshape(-1, self.RUN)
        for start in range(0, len(rows), self._chunk):
            np.matmul(rows[start : start + self._chunk], self._response, out=levels[start : start + self._chunk])
        self._level = self._levels[:, frames - 1].copy()
        return self._levels[:, :frames]


def tenth_percentile(values: np.ndarray) -> np.ndarray:
    """Per row, numpy's default (linear) 10th percentile, from a partial sort rather than a full one."""
    count = values.shape[1]
    rank = 0.1 * (count - 1)
    low = int(rank)
    high = min(low + 1, count - 1)
    ordered = np.partition(values, (low, high), axis=1)
    return ordered[:, low] + (ordered[:, high] - ordered[:, low]) * (rank - low)


class SplMeter:
    """A-weighted levels of the calibrated channels of a stream, with filter and time-weighting state across blocks."""

    def __init__(self, sample_rate: int, offsets: Mapping[int, float]) -> None:
        self.channels = tuple(sorted(offsets))
        self._offsets = [float(offsets[c]) for c in self.channels]
        self._rows = list(self.channels)
        self._sos = a_weighting_sos(sample_rate)
        self._zi = np.zeros((len(self._sos), len(self.channels), 2))
        # from 3 channels on, a block filter with float32 products (as K-weighting, audio/meters/kweighting.py)
        self._block = BlockIir(self._sos, len(self.channels), np.float32) if len(self.channels) >= 3 else None
        self._fast = FastLevel(sample_rate, len(self.channels))
        self._step = max(1, round(LA90_STEP_S * sample_rate))
        self._position = 0

    def process(self, block: np.ndarray) -> dict[int, dict[str, float | None]]:
        """For each calibrated channel of a (channels, frames) float block: {laeq_db, lamax_db, la90_db}."""
        frames = block.shape[1]
        selected = block if len(self._rows) == block.shape[0] else block[self._rows]  # every channel: no copy
        if self._block is not None:
            weighted = self._block.process(np.asarray(selected, dtype=np.float32))
        else:
            weighted, self._zi = sosfilt(self._sos, selected, axis=1, zi=self._zi)
        squares = np.multiply(weighted, weighted, out=self._fast.squares_buffer(frames))
        laeq = squares.sum(axis=1) / frames  # before `levels` reuses the squares
        fast = self._fast.levels(frames)
        first = -self._position % self._step  # sample the fast level on a grid counted from the stream's start
        self._position += frames
        sampled = fast[:, first :: self._step]
        lamax = fast.max(axis=1)
        la90 = tenth_percentile(sampled) if sampled.shape[1] else np.full(len(self.channels), np.nan)
        return {
            channel: {
                "laeq_db": power_db(float(laeq[i]), offset),
                "lamax_db": power_db(float(lamax[i]), offset),
                "la90_db": power_db(float(la90[i]), offset),
            }
            for i, (channel, offset) in enumerate(zip(self.channels, self._offsets, strict=True))
        }
