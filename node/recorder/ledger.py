"""The integrity ledger: what was captured, what was lost and where, checksums per segment; ledger.json next to the audio."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from hark_fleet.node.clock import utc_iso
from hark_fleet.node.recorder.const import LEDGER_FILE
from hark_fleet.node.recorder.files import read_json, write_json_atomic

LEDGER_VERSION = 1


@dataclass(slots=True)
class Gap:
    """Frames lost at `at_frame` of the file (the file continues after them): overrun, stall or interruption."""

    kind: str
    at_frame: int
    frames: int
    wall_s: float | None = None  # stalls and interruptions: how long it lasted by the clock (frames are then an estimate)
    started_at: str | None = None
    ended_at: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """The ledger's form (unset fields left out)."""
        return {k: v for k, v in asdict(self).items() if v is not None}


@dataclass(slots=True)
class Ledger:
    """Everything the hub needs to judge a recording's integrity; rewritten at every segment boundary and at the end."""

    recording_id: str
    sample_rate: int
    channels: int
    bit_depth: int
    format: str
    segment_frames: int
    started_at: str | None = None  # wall clock (UTC) when capture started, pre-roll excluded (scheduled: the first sample's time)
    ended_at: str | None = None
    clock_offset_ms: float | None = None  # the hub's clock minus ours when the job started
    time_quality: str | None = None
    # Scheduled recordings: the planned start (ISO UTC), the first captured sample's time minus it by the node's
    # clock (ms), and how late the take began when the plan was out of the ring's reach (seconds; 0 when on time).
    scheduled_start: str | None = None
    start_error_ms: float | None = None
    late_s: float | None = None
    preroll_frames: int = 0
    target_frames: int | None = None  # pre-roll excluded; None: until stopped
    frames_written: int = 0  # in the file, pre-roll included
    monotonic_span_s: float = 0.0  # capture start to the last ledger point, by the monotonic clock
    frames_expected: int = 0  # pre-roll + monotonic span x rate: what a perfect device would have delivered
    gaps: list[Gap] = field(default_factory=list)
    overruns: int = 0
    lost_frames: int = 0
    clipped_samples: list[int] = field(default_factory=list)
    segments: list[dict[str, Any]] = field(default_factory=list)
    state: str = "recording"
    stop_reason: str | None = None
    error: str | None = None
    interrupted: bool = False
    file: dict[str, Any] | None = None  # once finalized: name, format, size_bytes, sha256
    notes: list[str] = field(default_factory=list)
    updated_at: str | None = None

    @property
    def captured_frames(self) -> int:
        """Frames after the pre-roll."""
        return max(0, self.frames_written - self.preroll_frames)

    @property
    def duration_s(self) -> float:
        """The captured length in seconds, pre-roll excluded."""
        return self.captured_frames / self.sample_rate

    def as_dict(self) -> dict[str, Any]:
        """The JSON form (also what the node sends the hub as the recording's `integrity`)."""
        body = {name: getattr(self, name) for name in self.__dataclass_fields__}
        body["gaps"] = [gap.as_dict() for gap in self.gaps]
        body["version"] = LEDGER_VERSION
        body["duration_s"] = self.duration_s
        return body

    @classmethod
    def from_dict(cls, body: dict[str, Any]) -> Ledger:
        """A ledger read back (recovery)."""
        known = {k: v for k, v in body.items() if k in cls.__dataclass_fields__}
        known["gaps"] = [Gap(**gap) for gap in body.get("gaps", [])]
        return cls(**known)

    def save(self, directory: Path) -> None:
        """Rewrite ledger.json atomically."""
        self.updated_at = utc_iso()
        write_json_atomic(directory / LEDGER_FILE, self.as_dict())

    @classmethod
    def load(cls, directory: Path) -> Ledger:
        """ledger.json of a recording directory; CorruptRecording if it cannot be read."""
        return cls.from_dict(read_json(directory / LEDGER_FILE))
