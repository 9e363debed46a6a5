"""Programme loudness (ITU-R BS.1770-4, EBU Tech 3341/3342): momentary, short-term, integrated and loudness range.

The stream is cut into 100 ms segments counted from its first sample, whatever the block sizes: each
completed segment ends a 400 ms gating block (integrated loudness) and every tenth one, from 3 s on, a
3 s short-term block (LRA), exactly as libebur128 does. Gated blocks go into a histogram of 0.01 LU bins
that keeps each bin's count and exact energy sum, so memory stays bounded on runs of any length and only
the one bin straddling a relative gate is approximated. Momentary and short-term loudness are read over the
window ending at the last sample metered (zero before the stream started), from the segment sums and a ring
of the last 3.1 s of K-weighted squares.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from hark_fleet.audio.meters.const import (
    ABSOLUTE_GATE_LUFS,
    HISTOGRAM_BIN_LU,
    HISTOGRAM_TOP_LUFS,
    LFE_NAMES,
    LRA_HIGH_PERCENTILE,
    LRA_LOW_PERCENTILE,
    LRA_RELATIVE_GATE_LU,
    LRA_STEP_SEGMENTS,
    LUFS_OFFSET,
    MOMENTARY_SEGMENTS,
    RELATIVE_GATE_LU,
    SHORT_TERM_SEGMENTS,
    SURROUND_NAMES,
    SURROUND_WEIGHT,
)
from hark_fleet.audio.meters.errors import InvalidSetup
from hark_fleet.audio.meters.kweighting import KWeightingFilter
from hark_fleet.audio.meters.units import energy_lufs, lufs_energy

HISTOGRAM_BINS = round((HISTOGRAM_TOP_LUFS - ABSOLUTE_GATE_LUFS) / HISTOGRAM_BIN_LU)
ABSOLUTE_GATE_ENERGY = lufs_energy(ABSOLUTE_GATE_LUFS)


def channel_weight(name: str | None) -> float:
    """BS.1770-4 weight of a channel by its name: 1.41 for left/right surrounds, 0 for LFE, else 1."""
    key = (name or "").strip().lower()
    if key in LFE_NAMES:
        return 0.0
    if key in SURROUND_NAMES:
        return SURROUND_WEIGHT
    return 1.0


def segment_frames(sample_rate: int) -> int:
    """Frames in 100 ms, rounded as libebur128 does."""
    return (sample_rate + 5) // 10


@dataclass(frozen=True, slots=True)
class Programme:
    """A named set of channels measured together, each with its BS.1770-4 weight."""

    name: str
    channels: tuple[int, ...]
    weights: tuple[float, ...]

    @classmethod
    def from_names(cls, name: str, channels: Sequence[int], names: Sequence[str | None]) -> Programme:
        """A programme whose weights follow the channels' names."""
        if not channels:
            raise InvalidSetup(f"programme {name!r} has no channels")
        for index in channels:
            if not 0 <= index < len(names):
                raise InvalidSetup(f"programme {name!r}: no channel {index} (the source has {len(names)})")
        return cls(name, tuple(channels), tuple(channel_weight(names[i]) for i in channels))


@dataclass(frozen=True, slots=True)
class LoudnessReading:
    """A programme's loudness at the end of the last block (None when absent or silent)."""

    momentary_lufs: float | None
    short_term_lufs: float | None
    integrated_lufs: float | None
    lra_lu: float | None


class GatedHistogram:
    """Block energies at or over the absolute gate, binned by loudness with exact per-bin counts and sums."""

    def __init__(self) -> None:
        self.counts = np.zeros(HISTOGRAM_BINS, dtype=np.int64)
        self.sums = np.zeros(HISTOGRAM_BINS)
        self._count = 0  # totals kept as blocks come, so a gate needs no pass over every bin
        self._sum = 0.0
        self._integrated: float | None = None
        self._integrated_stale = False

    def add(self, energy: float) -> None:
        """Count one block (blocks under the absolute gate are dropped)."""
        if energy < ABSOLUTE_GATE_ENERGY:
            return
        index = min(HISTOGRAM_BINS - 1, int((LUFS_OFFSET + 10.0 * math.log10(energy) - ABSOLUTE_GATE_LUFS) / HISTOGRAM_BIN_LU))
        self.counts[index] += 1
        self.sums[index] += energy
        self._count += 1
        self._sum += energy
        self._integrated_stale = True

    def clear(self) -> None:
        """Forget every block."""
        self.counts[:] = 0
        self.sums[:] = 0.0
        self._count, self._sum = 0, 0.0
        self._integrated, self._integrated_stale = None, False

    def _gated(self, relative_lu: float) -> tuple[np.ndarray, np.ndarray] | None:
        """Counts and sums of the bins at or over `relative_lu` under the mean energy; None when empty."""
        if self._count == 0:
            return None
        threshold = self._sum / self._count * 10.0 ** (relative_lu / 10.0)
        first = int((LUFS_OFFSET + 10.0 * math.log10(threshold) - ABSOLUTE_GATE_LUFS) / HISTOGRAM_BIN_LU)
        first = max(0, first)
        # the bin holding the threshold counts when its blocks' mean reaches it
        if first < HISTOGRAM_BINS and self.counts[first] and self.sums[first] < threshold * self.counts[first]:
            first += 1
        return self.counts[first:], self.sums[first:]

    def integrated(self) -> float | None:
        """Mean loudness of the blocks over the relative gate (-10 LU)."""
        if self._integrated_stale:
            self._integrated_stale = False
            self._integrated = None
            gated = self._gated(RELATIVE_GATE_LU)
            if gated is not None:
                counts, sums = gated
                count = int(counts.sum())
                self._integrated = energy_lufs(float(sums.sum()) / count) if count else None
        return self._integrated

    def loudness_range(self) -> float | None:
        """10th to 95th percentile spread of the blocks over the relative gate (-20 LU), ranks as libebur128."""
        gated = self._gated(LRA_RELATIVE_GATE_LU)
        if gated is None:
            return None
        counts, sums = gated
        count = int(counts.sum())
        if count == 0:
            return None
        cumulative = np.cumsum(counts)
        low, high = (
            int(np.searchsorted(cumulative, int((count - 1) * share + 0.5), side="right"))
            for share in (LRA_LOW_PERCENTILE, LRA_HIGH_PERCENTILE)
        )
        low_energy = sums[low] / counts[low]
        high_energy = sums[high] / counts[high]
        return round(10.0 * math.log10(high_energy / low_energy), 2)


class LoudnessMeter:
    """Loudness of several programmes over one multichannel stream, fed (channels, frames) float blocks."""

    def __init__(self, sample_rate: int, channels: int, programmes: Sequence[Programme]) -> None:
        self._filter = KWeightingFilter(sample_rate, channels)
        self.programmes = tuple(programmes)
        self._weights = np.zeros((len(self.programmes), channels))
        for row, programme in enumerate(self.programmes):
            self._weights[row, list(programme.channels)] = programme.weights
        self._segment = segment_frames(sample_rate)
        self._ring = np.zeros((channels, (SHORT_TERM_SEGMENTS + 1) * self._segment), dtype=np.float32)
        # completed segment sums, segment k at k mod n and again at that + n, so any n in a row are one slice
        self._segments = np.zeros((2 * (SHORT_TERM_SEGMENTS + 2), channels))
        self._partial = np.zeros(channels)  # sum of the segment in progress
        self._position = 0  # frames metered
        self._completed = 0  # segments completed
        self._origin = 0  # first segment that gated blocks may hold (moves on a reset)
        self._integrated = [GatedHistogram() for _ in self.programmes]
        self._range = [GatedHistogram() for _ in self.programmes]
        self._lra_cache: list[float | None] = [None] * len(self.programmes)
        self._lra_dirty = False

    def process(self, block: np.ndarray) -> None:
        """Meter a block."""
        weighted = self._filter.process(block)
        squares = np.multiply(weighted, weighted, out=weighted)
        self._write_ring(squares)
        frames = squares.shape[1]
        first = self._segment - self._position % self._segment  # index in the block where the current segment ends
        if first >= frames:  # the usual case, a block of at most one segment, needs no split
            total = squares.sum(axis=1, dtype=np.float64)
            if first == frames:
                self._complete_segment(self._partial + total)
                self._partial[:] = 0.0
            else:
                self._partial += total
        else:
            ends = list(range(first, frames + 1, self._segment))
            starts = [0, *(end for end in ends if end < frames)]
            pieces = np.add.reduceat(squares, starts, axis=1, dtype=np.float64).T
            self._complete_segment(self._partial + pieces[0])
            for piece in pieces[1 : len(ends)]:
                self._complete_segment(piece)
            self._partial = pieces[len(ends)].copy() if ends[-1] < frames else np.zeros_like(self._partial)
        self._position += frames

    def readings(self) -> list[LoudnessReading]:
        """Each programme's loudness at the end of the last block."""
        momentary = self._weights @ self._window_sum(MOMENTARY_SEGMENTS) / (MOMENTARY_SEGMENTS * self._segment)
        short_term = self._weights @ self._window_sum(SHORT_TERM_SEGMENTS) / (SHORT_TERM_SEGMENTS * self._segment)
        if self._lra_dirty:
            self._lra_cache = [histogram.loudness_range() for histogram in self._range]
            self._lra_dirty = False
        return [
            LoudnessReading(energy_lufs(float(m)), energy_lufs(float(s)), histogram.integrated(), lra)
            for m, s, histogram, lra in zip(momentary, short_term, self._integrated, self._lra_cache, strict=True)
        ]

    def reset_integration(self) -> None:
        """Start integrated loudness and loudness range again from the next segment (filters and windows keep running)."""
        self._origin = self._completed + (1 if self._position % self._segment else 0)
        for histogram in (*self._integrated, *self._range):
            histogram.clear()
        self._lra_cache = [None] * len(self.programmes)
        self._lra_dirty = False

    def _write_ring(self, squares: np.ndarray) -> None:
        size = self._ring.shape[1]
        tail = squares[:, -size:]
        count = tail.shape[1]
        start = (self._position + squares.shape[1] - count) % size
        first = min(count, size - start)
        self._ring[:, start : start + first] = tail[:, :first]
        self._ring[:, : count - first] = tail[:, first:]

    def _ring_sum(self, begin: int, end: int) -> np.ndarray:
        """Sum of the squares at stream positions [begin, end), positions before the stream counting as zero."""
        begin = max(begin, 0)
        if end <= begin:
            return np.zeros(self._ring.shape[0])
        size = self._ring.shape[1]
        start, stop = begin % size, (end - 1) % size + 1
        if start < stop:
            return self._ring[:, start:stop].sum(axis=1, dtype=np.float64)
        return self._ring[:, start:].sum(axis=1, dtype=np.float64) + self._ring[:, :stop].sum(axis=1, dtype=np.float64)

    def _segments_sum(self, first: int, last: int) -> np.ndarray:
        """Sum of completed segments numbered first..last-1 (numbers under 0 count as zero)."""
        first = max(first, 0)
        start = first % (len(self._segments) // 2)
        return self._segments[start : start + max(last - first, 0)].sum(axis=0)

    def _window_sum(self, segments: int) -> np.ndarray:
        """Per-channel sum of the squares over the `segments` x 100 ms ending at the last sample metered."""
        done = self._completed
        filled = self._position % self._segment
        if filled == 0:
            return self._segments_sum(done - segments, done)
        head_end = (done - segments + 1) * self._segment
        head = self._ring_sum(head_end - (self._segment - filled), head_end)
        return self._partial + self._segments_sum(done - segments + 1, done) + head

    def _complete_segment(self, total: np.ndarray) -> None:
        ring = len(self._segments) // 2
        slot = self._completed % ring
        self._segments[slot] = self._segments[slot + ring] = total
        self._completed += 1
        done = self._completed - self._origin  # segments since the measurement started
        if done >= MOMENTARY_SEGMENTS:
            for histogram, energy in zip(self._integrated, self._last_segments_energy(MOMENTARY_SEGMENTS), strict=True):
                histogram.add(energy)
        if done >= SHORT_TERM_SEGMENTS and (done - SHORT_TERM_SEGMENTS) % LRA_STEP_SEGMENTS == 0:
            for histogram, energy in zip(self._range, self._last_segments_energy(SHORT_TERM_SEGMENTS), strict=True):
                histogram.add(energy)
            self._lra_dirty = True

    def _last_segments_energy(self, segments: int) -> list[float]:
        """Each programme's weighted mean square over the last `segments` completed segments."""
        total = self._segments_sum(self._completed - segments, self._completed)
        return (self._weights @ total / (segments * self._segment)).tolist()
