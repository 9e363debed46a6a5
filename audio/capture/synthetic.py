"""The synthetic backend: a sine, Gaussian noise, silence, a stuck sample value, a log sweep or clicks, paced in real time.

A level step (`step_s`, `step_db`) changes the level once, `step_s` seconds into the capture:
tests make a running node's microphone fail that way.

Clicks (`synthetic:click?period=1&dbfs=-6`) are silence with a 1 ms pulse at `dbfs` whose first
sample is captured at every whole multiple of `period` seconds of the wall clock (`time.time()`):
a listener that knows the period knows when each click it hears was captured, so it measures the
delay from capture to playback. The generator keeps its own timeline of the frames (the wall time
of the first block, then the nominal rate) and the capture stamps each block into the ring with
that timeline's time of its newest frame, so `ring.time_at()` of a click's first sample is its
whole multiple of `period`. The timeline starts again from the wall clock when the two drift
apart by more than REBASE_S (the capture fell behind and resynchronised, the clock was stepped).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import numpy as np
from hark_fleet.audio.capture.base import CaptureStats, PacedCapture
from hark_fleet.audio.capture.ring import RingBuffer
from hark_fleet.audio.source import AudioSource

SWEEP_LOW_HZ = 20.0
SWEEP_HIGH_HZ = 20_000.0
SWEEP_PERIOD_S = 10.0
NOISE_SEED = 0x4A524B
CLICK_S = 0.001  # a click lasts this long
REBASE_S = 0.1  # the click timeline follows the wall clock again when they differ by more than this


class SignalGenerator:
    """Consecutive blocks of one synthetic signal; sine and sweep peak at `dbfs`, noise has RMS `dbfs`, stuck sits at it."""

    def __init__(
        self,
        signal: str,
        rate: int,
        freq: float = 1000.0,
        dbfs: float = -20.0,
        seed: int = NOISE_SEED,
        step_s: float | None = None,
        step_db: float = 0.0,
        period: float = 1.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.signal = signal
        self.rate = rate
        self.freq = freq
        self.level = 10.0 ** (dbfs / 20.0)
        self.step_frame = round(step_s * rate) if step_s is not None and step_db else None
        self.step_gain = 10.0 ** (step_db / 20.0)
        self.frame = 0
        self._rng = np.random.default_rng(seed)
        self._phase = 0.0
        self._sweep_high = min(SWEEP_HIGH_HZ, 0.45 * rate)
        # clicks: the timeline (wall time of frame 0), the next click's number, what is left of a click cut by a block
        self.period = period
        self._clock = clock
        self._click_frames = max(1, round(CLICK_S * rate))
        self._base: float | None = None
        self._next_click = 0
        self._click_left = 0
        self.block_at: float | None = None  # clicks: the wall time of the last block's newest frame, for the ring
        self.rebases = 0

    def fill(self, block: np.ndarray) -> None:
        """Write the next `len(block)` frames (every channel the same, except noise, which is independent per channel)."""
        frames = block.shape[0]
        if self.signal == "silence":
            block.fill(0.0)
        elif self.signal == "click":
            self._clicks(block)
        elif self.signal == "stuck":
            block.fill(min(1.0, self.level))
        elif self.signal == "noise":
            noise = self._rng.standard_normal(block.shape) * self.level
            np.clip(noise, -1.0, 1.0, out=block, casting="unsafe")
        else:
            block[:] = (self.level * np.sin(self._phases(frames)))[:, None]
        if self.step_frame is not None and self.frame + frames > self.step_frame:
            after = block[max(0, self.step_frame - self.frame) :]
            after *= self.step_gain
            if self.step_gain > 1.0:
                np.clip(after, -1.0, 1.0, out=after)
        self.frame += frames

    def _clicks(self, block: np.ndarray) -> None:
        """Silence, and a click starting at the frame of every whole multiple of `period` on the frames' timeline."""
        frames = block.shape[0]
        block.fill(0.0)
        now = self._clock()
        newest = now if self._base is None else self._base + (self.frame + frames - 1) / self.rate
        if self._base is None or abs(newest - now) > REBASE_S:
            if self._base is not None:
                self.rebases += 1
            self._base = now - (self.frame + frames - 1) / self.rate
            newest = now
            first = self._base + self.frame / self.rate
            self._next_click = math.ceil((first - 0.5 / self.rate) / self.period)
            self._click_left = 0
        first = self._base + self.frame / self.rate
        self.block_at = newest
        level = min(1.0, self.level)
        if self._click_left:
            count = min(self._click_left, frames)
            block[:count] = level
            self._click_left -= count
        # the click of number k starts at the frame nearest k * period; each click once, none skipped
        while self._next_click * self.period < first + (frames - 0.5) / self.rate:
            start = max(0, round((self._next_click * self.period - first) * self.rate))
            end = min(frames, start + self._click_frames)
            block[start:end] = level
            self._click_left = self._click_frames - (end - start)
            self._next_click += 1

    def _phases(self, frames: int) -> np.ndarray:
        if self.signal == "sine":
            step = 2.0 * math.pi * self.freq / self.rate
            phases = self._phase + step * np.arange(frames)
            self._phase = (self._phase + step * frames) % (2.0 * math.pi)
            return phases
        # Log sweep: the instantaneous frequency climbs from SWEEP_LOW_HZ to the top every SWEEP_PERIOD_S.
        t = ((self.frame + np.arange(frames)) % int(SWEEP_PERIOD_S * self.rate)) / self.rate
        freqs = SWEEP_LOW_HZ * (self._sweep_high / SWEEP_LOW_HZ) ** (t / SWEEP_PERIOD_S)
        steps = 2.0 * math.pi * freqs / self.rate
        phases = self._phase + np.cumsum(steps) - steps
        self._phase = float(phases[-1] + steps[-1]) % (2.0 * math.pi)
        return phases


class SyntheticCapture(PacedCapture):
    """A synthetic source (`synthetic:sine?freq=1000&dbfs=-20`) captured like a device."""

    kind = "synthetic"

    def __init__(self, source: AudioSource, ring: RingBuffer, stats: CaptureStats | None = None) -> None:
        super().__init__(source, ring, stats)
        self.generator = SignalGenerator(
            source.target,
            ring.rate,
            source.freq,
            source.dbfs,
            step_s=source.step_s,
            step_db=source.step_db,
            period=source.period,
        )

    def fill(self, block: np.ndarray) -> None:
        self.generator.fill(block)

    def _deliver(
        self,
        block: np.ndarray,
        scale: float | None = None,
        overflow: bool = False,
        underflow: bool = False,
        at: float | None = None,
    ) -> None:
        """Clicks: the block goes into the ring stamped with the click timeline's time of its newest frame."""
        if at is None and self.generator.signal == "click":
            at = self.generator.block_at
        super()._deliver(block, scale, overflow, underflow, at)
