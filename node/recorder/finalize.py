"""Finalizing a closed working WAV, shared by the recorder and recovery: the final file, its digest, the last ledger."""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hark_fleet.node.clock import utc_iso
from hark_fleet.node.recorder.const import FAILED, FINALIZED, RESERVE_FILE, STOP_ERROR, WORKING_SUFFIX
from hark_fleet.node.recorder.errors import TranscodeFailed
from hark_fleet.node.recorder.files import fsync_dir, sha256_file
from hark_fleet.node.recorder.ledger import Ledger
from hark_fleet.node.recorder.manifest import Manifest
from hark_fleet.node.recorder.transcode import transcode_to_flac

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RecordingResult:
    """How a recording ended and where its file is; what the agent reports to the hub and uploads."""

    recording_id: str
    job_id: str | None
    state: str  # finalized (upload it) or failed
    stop_reason: str | None
    error: str | None
    interrupted: bool
    path: Path | None  # the final file, None when there is none
    format: str
    size_bytes: int | None
    sha256: str | None
    ledger: dict[str, Any]

    def recording_fields(self) -> dict[str, Any]:
        """The `recording` object of the job heartbeat sent when capture ends."""
        ledger = self.ledger
        fields = {
            "started_at": ledger.get("started_at"),
            "ended_at": ledger.get("ended_at"),
            "duration_s": ledger.get("duration_s"),
            "sample_rate": ledger.get("sample_rate"),
            "channels": ledger.get("channels"),
            "bit_depth": ledger.get("bit_depth"),
            "format": self.format,
            "integrity": ledger,
            "interrupted": self.interrupted,
            "time_quality": ledger.get("time_quality"),
            "clock_offset_ms": ledger.get("clock_offset_ms"),
        }
        if ledger.get("scheduled_start") is not None:  # a scheduled recording: its plan, and its lateness only when late
            fields["scheduled_start_at"] = ledger["scheduled_start"]
            if ledger.get("late_s"):
                fields["late_s"] = ledger["late_s"]
        return fields


def working_name(recording_id: str) -> str:
    """The working WAV's file name."""
    return f"{recording_id}{WORKING_SUFFIX}"


def final_name(recording_id: str, fmt: str) -> str:
    """The final file's name for a format."""
    return f"{recording_id}.{fmt}"


def release_reserve(directory: Path) -> None:
    """Delete the space reserve (on a full disk, before the last ledger and manifest are written)."""
    (directory / RESERVE_FILE).unlink(missing_ok=True)


def finalize(directory: Path, manifest: Manifest, ledger: Ledger) -> None:
    """Turn the closed, valid working WAV into the final file, record its size and digest, and mark it finalized (or failed)."""
    release_reserve(directory)
    working = directory / manifest.working_file
    if manifest.format == "flac" and working.exists():
        final = directory / final_name(manifest.recording_id, "flac")
        try:
            if shutil.disk_usage(directory).free < working.stat().st_size:
                raise TranscodeFailed("not enough free space to transcode to FLAC")
            transcode_to_flac(working, final, ledger.bit_depth)
        except TranscodeFailed as err:
            log.warning("%s: keeping the WAV: %s", manifest.recording_id, err)
            ledger.notes.append(f"kept as WAV: {err}")
            manifest.format = "wav"
    if manifest.format == "wav" and working.exists():
        os.replace(working, directory / final_name(manifest.recording_id, "wav"))
        fsync_dir(directory)
    manifest.final_file = final_name(manifest.recording_id, manifest.format)
    final = directory / manifest.final_file
    size, digest = final.stat().st_size, sha256_file(final)
    failed = ledger.stop_reason == STOP_ERROR
    ledger.format = manifest.format
    ledger.file = {"name": manifest.final_file, "format": manifest.format, "size_bytes": size, "sha256": digest}
    ledger.state = FAILED if failed else FINALIZED
    ledger.save(directory)
    manifest.state = ledger.state
    manifest.size_bytes, manifest.sha256 = size, digest
    manifest.finalized_at = utc_iso()
    manifest.interrupted = ledger.interrupted
    manifest.stop_reason, manifest.error = ledger.stop_reason, ledger.error
    manifest.save(directory)
    if working.exists():  # the FLAC is durable and the manifest says so: the WAV can go
        working.unlink()
        fsync_dir(directory)


def mark_failed(directory: Path, manifest: Manifest, ledger: Ledger | None, error: str, remove_working: bool = False) -> None:
    """Record a recording as failed (`remove_working`: it has no audio worth keeping)."""
    release_reserve(directory)
    if remove_working:
        (directory / manifest.working_file).unlink(missing_ok=True)
    if ledger is not None:
        ledger.state, ledger.error = FAILED, ledger.error or error
        ledger.stop_reason = ledger.stop_reason or STOP_ERROR
        ledger.save(directory)
    manifest.state, manifest.error = FAILED, error
    manifest.stop_reason = ledger.stop_reason if ledger is not None else STOP_ERROR
    manifest.save(directory)


def result_of(directory: Path, manifest: Manifest, ledger: Ledger | None) -> RecordingResult:
    """The result of a finalized or failed recording."""
    path = directory / manifest.final_file
    has_file = manifest.state != FAILED or path.exists()
    return RecordingResult(
        recording_id=manifest.recording_id,
        job_id=manifest.job_id,
        state=manifest.state,
        stop_reason=manifest.stop_reason,
        error=manifest.error,
        interrupted=manifest.interrupted,
        path=path if has_file and path.exists() else None,
        format=manifest.format,
        size_bytes=manifest.size_bytes,
        sha256=manifest.sha256,
        ledger=ledger.as_dict() if ledger is not None else {},
    )
