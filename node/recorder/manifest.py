"""The per-recording manifest (manifest.json): which recording and job, its state, profile and files, for after a restart."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from hark_fleet.node.clock import utc_iso
from hark_fleet.node.recorder.const import MANIFEST_FILE, STATES
from hark_fleet.node.recorder.errors import CorruptRecording
from hark_fleet.node.recorder.files import read_json, write_json_atomic


@dataclass(slots=True)
class Manifest:
    """One recording in the cache; `state` is recording, finalized, uploaded or failed."""

    recording_id: str
    job_id: str | None
    state: str
    profile: dict[str, Any]
    working_file: str  # names inside the recording's directory
    final_file: str
    format: str  # of the final file (wav when a FLAC transcode failed)
    created_at: str = field(default_factory=utc_iso)
    updated_at: str | None = None
    finalized_at: str | None = None
    uploaded_at: str | None = None
    interrupted: bool = False
    stop_reason: str | None = None
    error: str | None = None
    size_bytes: int | None = None
    sha256: str | None = None

    def save(self, directory: Path) -> None:
        """Rewrite manifest.json atomically."""
        self.updated_at = utc_iso()
        write_json_atomic(directory / MANIFEST_FILE, asdict(self))

    def as_dict(self) -> dict[str, Any]:
        """The JSON form."""
        return asdict(self)

    @classmethod
    def load(cls, directory: Path) -> Manifest:
        """manifest.json of a recording directory; CorruptRecording if it cannot be read or has an unknown state."""
        body = read_json(directory / MANIFEST_FILE)
        try:
            manifest = cls(**{k: v for k, v in body.items() if k in cls.__dataclass_fields__})
        except TypeError as err:
            raise CorruptRecording(f"{directory / MANIFEST_FILE}: {err}") from err
        if manifest.state not in STATES:
            raise CorruptRecording(f"{directory / MANIFEST_FILE}: unknown state {manifest.state!r}")
        return manifest
