"""The synthetic backend: a sine, Gaussian noise, silence, a stuck sample value or a log sweep, paced in real time.

A level step (`step_s`, `step_db`) changes the level once, `step_s` seconds into the capture:
tests make a running node's microphone fail that way.
"""

from __future__ import annotations

import math

import numpy as np
from hark_fleet.audio.capture.base import CaptureStats, PacedCapture
from hark_fleet.audio.capture.ring import RingBuffer
from hark_fleet.audio.source import AudioSource

SWEEP_LOW_HZ = 20.0
SWEEP_HIGH_HZ = 20_000.0
SWEEP_PERIOD_S = 10.0
NOISE_SEED = 0x4A524B


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

    def fill(self, block: np.ndarray) -> None:
        """Write the next `len(block)` frames (every channel the same, except noise, which is independent per channel)."""
        frames = block.shape[0]
        if self.signal == "silence":
            block.fill(0.0)
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
            source.target, ring.rate, source.freq, source.dbfs, step_s=source.step_s, step_db=source.step_db
        )

    def fill(self, block: np.ndarray) -> None:
        self.generator.fill(block)
