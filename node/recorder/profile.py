"""The recording profile as the hub hands it over with a claimed job, checked for what the recorder can write."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from hark_fleet.node.recorder.const import BIT_DEPTHS, FLAC_BIT_DEPTHS, FLAC_MAX_CHANNELS, FORMATS
from hark_fleet.node.recorder.errors import UnsupportedProfile


@dataclass(frozen=True, slots=True)
class RecordingProfile:
    """Format, depth and timing of one recording (`channels` None: the source's)."""

    format: str = "wav"
    sample_rate: int = 48_000
    bit_depth: int = 24
    channels: int | None = None
    segment_s: float = 10.0
    preroll_s: float = 0.0
    max_duration_s: float = 12 * 3600.0
    channel_map_template_id: str | None = None

    @classmethod
    def from_dict(cls, body: dict[str, Any]) -> RecordingProfile:
        """The profile from the claim's `recording.profile` (unknown keys ignored: the hub may add some)."""
        known = {k: body[k] for k in cls.__dataclass_fields__ if k in body and body[k] is not None}
        try:
            profile = cls(**known)
        except TypeError as err:
            raise UnsupportedProfile(f"bad profile: {err}") from err
        profile.check()
        return profile

    def as_dict(self) -> dict[str, Any]:
        """The profile as JSON (for the manifest)."""
        return asdict(self)

    def check(self, channels: int | None = None) -> None:
        """Raise UnsupportedProfile when this recorder cannot write it (with `channels` the actual channel count)."""
        if self.format not in FORMATS:
            raise UnsupportedProfile(f"format {self.format!r} is not one of {', '.join(FORMATS)}")
        if self.bit_depth not in BIT_DEPTHS:
            raise UnsupportedProfile(f"bit_depth {self.bit_depth} is not one of {BIT_DEPTHS}")
        if self.format == "flac" and self.bit_depth not in FLAC_BIT_DEPTHS:
            raise UnsupportedProfile(f"FLAC is written at {' or '.join(map(str, FLAC_BIT_DEPTHS))} bit, not {self.bit_depth}")
        count = channels if channels is not None else self.channels
        if count is not None and count < 1:
            raise UnsupportedProfile("a recording needs at least one channel")
        if self.format == "flac" and count is not None and count > FLAC_MAX_CHANNELS:
            raise UnsupportedProfile(f"FLAC holds at most {FLAC_MAX_CHANNELS} channels, not {count}")
        for name in ("segment_s", "max_duration_s"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise UnsupportedProfile(f"{name} must be a positive number")
        if not (math.isfinite(self.preroll_s) and self.preroll_s >= 0):
            raise UnsupportedProfile("preroll_s must be zero or more")
        if self.sample_rate < 1:
            raise UnsupportedProfile("sample_rate must be positive")
