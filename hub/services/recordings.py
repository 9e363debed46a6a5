"""Recordings as the API shows them, and starting and stopping them (the node's job does the capture)."""

from __future__ import annotations

from typing import Any

from hub.clock import iso
from hub.db.models import Recording, RecordingJob

STATUSES = ("queued", "recording", "uploading", "completed", "interrupted", "failed", "cancelled")
TERMINAL_STATUSES = ("completed", "interrupted", "failed", "cancelled")
JOB_STATES = ("queued", "claimed", "recording", "uploading", "completed", "failed", "cancelled")
JOB_TERMINAL = ("completed", "failed", "cancelled")
JOB_ACTIVE = ("claimed", "recording", "uploading")  # a node holds the lease


def recording_to_api(recording: Recording, job_id: str | None) -> dict[str, Any]:
    """The recording object of the API; `job_id` is its (latest) job's, if any."""
    return {
        "id": recording.id,
        "node_id": recording.node_id,
        "site": recording.site,
        "name": recording.name,
        "status": recording.status,
        "started_at": iso(recording.started_at),
        "ended_at": iso(recording.ended_at),
        "duration_s": recording.duration_s,
        "requested_duration_s": recording.requested_duration_s,
        "sample_rate": recording.sample_rate,
        "channels": recording.channels,
        "bit_depth": recording.bit_depth,
        "format": recording.format,
        "size_bytes": recording.size_bytes,
        "sha256": recording.sha256,
        "metadata": recording.metadata or {},
        "integrity": recording.integrity or {},
        "interrupted": bool(recording.interrupted),
        "time_quality": recording.time_quality,
        "clock_offset_ms": recording.clock_offset_ms,
        "profile_id": recording.profile_id,
        "error": recording.error,
        "created_at": iso(recording.created_at),
        "created_by": recording.created_by or {},
        "updated_at": iso(recording.updated_at),
        "job_id": job_id,
    }


def job_to_api(job: RecordingJob) -> dict[str, Any]:
    """The recording job object of the API."""
    return {
        "id": job.id,
        "recording_id": job.recording_id,
        "node_id": job.node_id,
        "site": job.site,
        "state": job.state,
        "lease_epoch": job.lease_epoch,
        "stop_requested": bool(job.stop_requested),
        "capture_started": bool(job.capture_started),
        "attempts": job.attempts,
        "claimed_at": iso(job.claimed_at),
        "last_heartbeat_at": iso(job.last_heartbeat_at),
        "progress": job.progress or {},
        "error": job.error,
        "created_at": iso(job.created_at),
        "updated_at": iso(job.updated_at),
    }
