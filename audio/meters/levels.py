"""Sample peak, RMS, DC, clip count and silence per channel over each block."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from hark_fleet.audio.meters.const import CLIP_THRESHOLD, SILENCE_HOLD_S, SILENCE_THRESHOLD_DBFS

TAIL_FRAMES = 64  # where the search for a channel's last loud sample starts


@dataclass(frozen=True, slots=True)
class BlockLevels:
    """Per-channel levels of one block (linear values, one array element per channel)."""

    peak: np.ndarray  # largest |sample|
    mean_square: np.ndarray  # plain mean of squares: a full-scale sine gives 0.5 (-3.01 dBFS)
    dc: np.ndarray  # mean
    clip: np.ndarray  # samples with |sample| >= the clip threshold
    silent: np.ndarray  # bool: no sample reached the silence threshold for the hold time


class LevelMeter:
    """Levels per block; silence is decided sample-exactly, so it does not depend on how the stream is cut into blocks."""

    def __init__(
        self,
        sample_rate: int,
        channels: int,
        silence_threshold_dbfs: float = SILENCE_THRESHOLD_DBFS,
        silence_hold_s: float = SILENCE_HOLD_S,
        clip_threshold: float = CLIP_THRESHOLD,
    ) -> None:
        self.silence_threshold = 10.0 ** (silence_threshold_dbfs / 20.0)
        self.hold_frames = max(1, round(silence_hold_s * sample_rate))
        self.clip_threshold = clip_threshold
        self._quiet = np.zeros(channels, dtype=np.int64)  # frames since a sample last reached the threshold

    def process(self, block: np.ndarray, sums: np.ndarray | None = None) -> BlockLevels:
        """Levels of a (channels, frames) float64 block; `sums` are its per-channel sums when the caller has them."""
        frames = block.shape[1]
        peak = np.maximum(block.max(axis=1), -block.min(axis=1))  # no |block| temporary: two reads, no write
        if sums is None:
            sums = block.sum(axis=1)
        mean_square = np.einsum("ij,ij->i", block, block) / frames
        clip = np.zeros(len(peak), dtype=np.int64)
        if peak.max() >= self.clip_threshold:
            clip = np.count_nonzero(np.abs(block) >= self.clip_threshold, axis=1)
        loud = peak >= self.silence_threshold
        if loud.any():
            self._quiet = np.where(loud, self._since_loud(block, loud), self._quiet + frames)
        else:
            self._quiet += frames
        return BlockLevels(peak, mean_square, sums / frames, clip, self._quiet >= self.hold_frames)

    def _since_loud(self, block: np.ndarray, loud: np.ndarray) -> np.ndarray:
        """Frames after the last sample reaching the threshold, for the loud channels (others read 0).

        A loud channel almost always reached the threshold in the block's last frames, so those are searched first
        and the whole block only for the channels that did not.
        """
        tail = np.abs(block[:, -TAIL_FRAMES:][:, ::-1]) >= self.silence_threshold
        since = np.argmax(tail, axis=1)
        for channel in np.flatnonzero(loud & ~tail.any(axis=1)).tolist():
            reached = np.abs(block[channel, ::-1]) >= self.silence_threshold
            since[channel] = int(np.argmax(reached))
        return since

    def reset(self) -> None:
        """Start the silence hold again."""
        self._quiet[:] = 0
