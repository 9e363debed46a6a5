"""MeterEngine: every meter of a multichannel stream, one frame body per block (see API.md, "Meter frame")."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from hark_fleet.audio.meters.const import CLIP_THRESHOLD, SILENCE_HOLD_S, SILENCE_THRESHOLD_DBFS
from hark_fleet.audio.meters.errors import InvalidBlock, InvalidSetup
from hark_fleet.audio.meters.levels import LevelMeter
from hark_fleet.audio.meters.loudness import LoudnessMeter, LoudnessReading, Programme
from hark_fleet.audio.meters.spl import SplMeter
from hark_fleet.audio.meters.true_peak import TruePeakMeter
from hark_fleet.audio.meters.units import amplitude_db, power_db

DEFAULT_NAMES: dict[int, tuple[str, ...]] = {
    1: ("M",),
    2: ("L", "R"),
    6: ("L", "R", "C", "LFE", "Ls", "Rs"),
}

ProgrammeSpec = Programme | tuple[str, Sequence[int]]


def default_names(channels: int) -> list[str | None]:
    """Channel names when none are given: M, L/R, 5.1 in SMPTE order, else none."""
    return list(DEFAULT_NAMES.get(channels, (None,) * channels))


def loudness_fields(reading: LoudnessReading) -> dict[str, float | None]:
    """The frame's loudness fields of a reading."""
    return {
        "momentary_lufs": reading.momentary_lufs,
        "short_term_lufs": reading.short_term_lufs,
        "integrated_lufs": reading.integrated_lufs,
        "lra_lu": reading.lra_lu,
    }


class MeterEngine:
    """Meters a stream block by block on a consumer thread (never the audio callback); no I/O."""

    def __init__(
        self,
        sample_rate: int,
        channels: int,
        names: Sequence[str | None] | None = None,
        programmes: Mapping[str, Sequence[int]] | Sequence[ProgrammeSpec] | None = None,
        calibration: Mapping[int, float] | None = None,
        silence_threshold_dbfs: float = SILENCE_THRESHOLD_DBFS,
        silence_hold_s: float = SILENCE_HOLD_S,
        clip_threshold: float = CLIP_THRESHOLD,
    ) -> None:
        if sample_rate < 8000:
            raise InvalidSetup(f"sample_rate {sample_rate} is under 8000 Hz")
        if channels < 1:
            raise InvalidSetup(f"channels must be at least 1, not {channels}")
        self.sample_rate = sample_rate
        self.channels = channels
        self.names = list(names) if names is not None else default_names(channels)
        if len(self.names) != channels:
            raise InvalidSetup(f"{len(self.names)} names for {channels} channels")
        calibration = dict(calibration or {})
        for index in calibration:
            if not 0 <= index < channels:
                raise InvalidSetup(f"calibration for channel {index}, which does not exist ({channels} channels)")
        self.programmes = self._programmes(programmes)
        everything = Programme.from_names("", range(channels), self.names)
        self._levels = LevelMeter(sample_rate, channels, silence_threshold_dbfs, silence_hold_s, clip_threshold)
        self._true_peak = TruePeakMeter(sample_rate, channels)
        self._loudness = LoudnessMeter(sample_rate, channels, [everything, *self.programmes])
        self._spl = SplMeter(sample_rate, calibration) if calibration else None

    def _programmes(self, spec: Mapping[str, Sequence[int]] | Sequence[ProgrammeSpec] | None) -> list[Programme]:
        items: list[ProgrammeSpec] = list(spec.items()) if isinstance(spec, Mapping) else list(spec or [])
        programmes = [
            item if isinstance(item, Programme) else Programme.from_names(item[0], item[1], self.names) for item in items
        ]
        for programme in programmes:
            if any(not 0 <= c < self.channels for c in programme.channels):
                raise InvalidSetup(f"programme {programme.name!r} names a channel the source does not have")
            if len(programme.weights) != len(programme.channels):
                raise InvalidSetup(
                    f"programme {programme.name!r} has {len(programme.weights)} weights for {len(programme.channels)} channels"
                )
        seen = [p.name for p in programmes]
        if len(set(seen)) != len(seen):
            raise InvalidSetup(f"programme names repeat: {seen}")
        return programmes

    def process(self, block: np.ndarray) -> dict[str, Any]:
        """The frame body (channels, loudness, programmes) for the interval the block covers."""
        samples = self._checked(block)  # (channels, frames): numpy reduces along contiguous rows far faster
        wide = samples.astype(np.float64)
        sums = wide.sum(axis=1)
        if not np.isfinite(sums).all():
            raise InvalidBlock("the block holds NaN or infinite samples")
        levels = self._levels.process(wide, sums)
        true_peak = self._true_peak.process(samples)
        self._loudness.process(samples)  # float32: their filters take it as it is or widen it themselves
        spl = self._spl.process(samples) if self._spl is not None else {}
        peak, mean_square, dc, clip, silent = (
            levels.peak.tolist(),
            levels.mean_square.tolist(),
            levels.dc.tolist(),
            levels.clip.tolist(),
            levels.silent.tolist(),
        )
        tp = true_peak.tolist()
        channels = [
            {
                "index": i,
                "name": self.names[i],
                "peak_dbfs": amplitude_db(peak[i]),
                "rms_dbfs": power_db(mean_square[i]),
                "true_peak_dbtp": amplitude_db(tp[i]),
                "clip": int(clip[i]),
                "dc": round(dc[i], 6),
                "silent": bool(silent[i]),
                "spl": spl.get(i),
            }
            for i in range(self.channels)
        ]
        overall, *readings = self._loudness.readings()
        return {
            "channels": channels,
            "loudness": loudness_fields(overall),
            "programmes": [
                {"name": p.name, "channels": list(p.channels), **loudness_fields(r)}
                for p, r in zip(self.programmes, readings, strict=True)
            ],
        }

    def reset_loudness(self) -> None:
        """Start integrated loudness and LRA again for every programme (e.g. at the start of a recording)."""
        self._loudness.reset_integration()

    def _checked(self, block: np.ndarray) -> np.ndarray:
        if not isinstance(block, np.ndarray):
            raise InvalidBlock(f"a block is a numpy array, not {type(block).__name__}")
        if block.ndim == 1 and self.channels == 1:
            block = block.reshape(-1, 1)
        if block.ndim != 2 or block.shape[1] != self.channels:
            raise InvalidBlock(f"a block is shaped (frames, {self.channels}), not {block.shape}")
        if len(block) == 0:
            raise InvalidBlock("a block needs at least one frame")
        if block.dtype.kind != "f":
            raise InvalidBlock(f"a block holds floats in [-1, 1], not {block.dtype}")
        return np.ascontiguousarray(block.T, dtype=np.float32)
