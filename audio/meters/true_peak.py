"""True peak (ITU-R BS.1770-4 Annex 2): 4x oversampling through the published 48-tap polyphase FIR.

The polyphase filter runs as one matrix product per block over all channels: each row holds a run of
ROW input samples plus the 11 before it, and a banded matrix maps it to the 4 x ROW interpolated
values. That keeps the work in BLAS instead of per-sample Python; products are issued in chunks small
enough that OpenBLAS keeps them on the calling thread (its worker threads would spin on the other core).
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import as_strided

# BS.1770-4 Annex 2: phase p interpolates the point p/4 of a sample period; 12 taps each, newest sample first.
ANNEX2_PHASES = np.array(
    [
        [0.0017089843750, 0.0109863281250, -0.0196533203125, 0.0332031250000, -0.0594482421875, 0.1373291015625,
         0.9721679687500, -0.1022949218750, 0.0476074218750, -0.0266113281250, 0.0148925781250, -0.0083007812500],
        [-0.0291748046875, 0.0292968750000, -0.0517578125000, 0.0891113281250, -0.1665039062500, 0.4650878906250,
         0.7797851562500, -0.2003173828125, 0.1015625000000, -0.0582275390625, 0.0330810546875, -0.0189208984375],
        [-0.0189208984375, 0.0330810546875, -0.0582275390625, 0.1015625000000, -0.2003173828125, 0.7797851562500,
         0.4650878906250, -0.1665039062500, 0.0891113281250, -0.0517578125000, 0.0292968750000, -0.0291748046875],
        [-0.0083007812500, 0.0148925781250, -0.0266113281250, 0.0476074218750, -0.1022949218750, 0.9721679687500,
         0.1373291015625, -0.0594482421875, 0.0332031250000, -0.0196533203125, 0.0109863281250, 0.0017089843750],
    ]
)  # fmt: skip
TAPS = ANNEX2_PHASES.shape[1]
HISTORY = TAPS - 1
ROW = 8  # input samples per matrix row: 8 keeps the banded matrix small (19 x 32) and the product cheap
BLAS_SINGLE_THREAD_WORK = 150_000  # rows x inner x outer under OpenBLAS's threshold for threading a GEMM


def oversampling_factor(sample_rate: int) -> int:
    """4x under 96 kHz, 2x under 192 kHz, none from there (as libebur128)."""
    if sample_rate < 96000:
        return 4
    if sample_rate < 192000:
        return 2
    return 1


def banded_interpolator(phases: np.ndarray, row: int) -> np.ndarray:
    """The (row + 11, phases x row) matrix taking a row of input (oldest first) to its interpolated values."""
    count = len(phases)
    matrix = np.zeros((row + HISTORY, count * row), dtype=np.float32)
    for n in range(row):
        for p in range(count):
            for k in range(TAPS):
                matrix[HISTORY + n - k, count * n + p] = phases[p, k]
    return matrix


class TruePeakMeter:
    """Largest magnitude of the oversampled signal per channel and block, with the filter history carried across blocks."""

    def __init__(self, sample_rate: int, channels: int) -> None:
        self.factor = oversampling_factor(sample_rate)
        self._channels = channels
        self._matrix = banded_interpolator(ANNEX2_PHASES[:: 4 // self.factor], ROW)
        self._chunk = max(1, BLAS_SINGLE_THREAD_WORK // self._matrix.size)
        self._history = np.zeros((channels, HISTORY), dtype=np.float32)
        self._padded = np.zeros((channels, 0), dtype=np.float32)  # history + block + zeros to whole rows, reused
        self._out = np.zeros((0, self._matrix.shape[1]), dtype=np.float32)

    def process(self, block: np.ndarray) -> np.ndarray:
        """Per-channel true peak (linear) of a (channels, frames) float32 block."""
        if self.factor == 1:
            return np.asarray(np.abs(block).max(axis=1), dtype=np.float64)
        frames = block.shape[1]
        rows = -(-frames // ROW)
        if self._padded.shape[1] != HISTORY + rows * ROW:
            self._padded = np.zeros((self._channels, HISTORY + rows * ROW), dtype=np.float32)
            self._out = np.empty((self._channels * rows, self._matrix.shape[1]), dtype=np.float32)
        padded, out = self._padded, self._out
        padded[:, :HISTORY] = self._history
        padded[:, HISTORY : HISTORY + frames] = block
        padded[:, HISTORY + frames :] = 0.0
        self._history[:] = padded[:, frames : frames + HISTORY]
        step = padded.strides[1]
        windows = as_strided(
            padded, (self._channels, rows, ROW + HISTORY), (padded.strides[0], ROW * step, step), writeable=False
        )
        windows = windows.reshape(-1, ROW + HISTORY)  # one copy: the rows overlap by HISTORY samples
        for start in range(0, len(windows), self._chunk):
            np.matmul(windows[start : start + self._chunk], self._matrix, out=out[start : start + self._chunk])
        values = out.reshape(self._channels, -1)[:, : frames * self.factor]
        return np.maximum(values.max(axis=1), -values.min(axis=1)).astype(np.float64)

    def reset(self) -> None:
        """Forget the signal so far."""
        self._history[:] = 0.0
