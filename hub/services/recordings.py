"""Recordings as the API shows them, and starting and stopping them (the node's job does the capture)."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

from hark_fleet.hub.auth.principal import SiteScope
from hark_fleet.hub.clock import iso, utcnow
from hark_fleet.hub.db.models import ChannelMapTemplate, Node, Recording, RecordingJob, database_proxy
from hark_fleet.hub.errors import Conflict, InvalidRequest, NotFound
from hark_fleet.hub.events import FleetEvent
from hark_fleet.hub.ids import new_id
from hark_fleet.hub.services import recording_profiles
from hark_fleet.hub.services.audit import Actor, record
from hark_fleet.hub.services.grants import owner_id
from hark_fleet.hub.services.listing import get_scoped

STATUSES = ("queued", "recording", "uploading", "completed", "interrupted", "failed", "cancelled", "missed")
TERMINAL_STATUSES = ("completed", "interrupted", "failed", "cancelled", "missed")
# `missed`: a scheduled job nobody started before its occurrence ended (issue 19)
JOB_STATES = ("queued", "claimed", "recording", "uploading", "completed", "failed", "cancelled", "missed")
JOB_TERMINAL = ("completed", "failed", "cancelled", "missed")
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
        "schedule_id": recording.schedule_id,
        "occurrence_id": recording.occurrence_id,
        "scheduled_start_at": iso(recording.scheduled_start_at),
        "late_s": recording.late_s,
        "legal_hold": bool(recording.legal_hold),
        "legal_hold_reason": recording.legal_hold_reason,
        "legal_hold_at": iso(recording.legal_hold_at),
        "legal_hold_by": recording.legal_hold_by,
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
        "schedule_id": job.schedule_id,
        "occurrence_id": job.occurrence_id,
        "start_at": iso(job.start_at),
        "end_at": iso(job.end_at),
        "revision": job.revision,
    }


# -- starting and stopping ------------------------------------------------------------------------

CREATE = "recording:create"
CONTROL = "recording:control"
MAX_NAME = 200


def recording_event(kind: str, recording: dict[str, Any]) -> FleetEvent:
    return FleetEvent(f"recording.{kind}", recording["site"], recording)


def job_event(job: dict[str, Any], kind: str | None = None) -> FleetEvent:
    """`recording.job.<state>` (or `recording.job.<kind>`) with the job."""
    return FleetEvent(f"recording.job.{kind or job['state']}", job["site"], job)


def latest_job(recording_id: str) -> RecordingJob | None:
    return (
        RecordingJob.select()
        .where(RecordingJob.recording_id == recording_id)
        .order_by(RecordingJob.created_at.desc(), RecordingJob.id.desc())
        .first()
    )


def get_recording(scope: SiteScope, recording_id: str) -> Recording:
    recording: Recording = get_scoped(Recording, recording_id, Recording.site, scope)
    return recording


def _default_name(node: Node, at: datetime) -> str:
    return f"{node.name[: MAX_NAME - 24]} {at:%Y-%m-%d %H:%M:%S} UTC"


def create_recording(
    actor: Actor,
    scope: SiteScope,
    node_id: str,
    duration_s: float | None,
    profile_id: str | None,
    name: str | None,
) -> tuple[dict[str, Any], dict[str, Any], list[FleetEvent]]:
    """An ad-hoc recording on a node and the job that captures it; the recording, the job, the events.

    Without `duration_s` it runs until stopped or the profile's longest take. The recording keeps a
    snapshot of the profile, so later changes to the profile do not touch it.
    """
    problems: dict[str, str] = {}
    if name is not None and (not 1 <= len(name) <= MAX_NAME or name != name.strip() or not name.isprintable()):
        problems["name"] = f"1-{MAX_NAME} printable characters, no surrounding spaces"
    if duration_s is not None and (not math.isfinite(duration_s) or duration_s <= 0):
        problems["duration_s"] = "a number of seconds above 0"
    if problems:
        raise InvalidRequest("The recording request is invalid.", fields=problems)
    node: Node = get_scoped(Node, node_id, Node.site, scope)
    try:
        profile = recording_profiles.get_profile(profile_id or recording_profiles.DEFAULT_ID)
    except NotFound as err:
        raise InvalidRequest("No such recording profile.", fields={"profile_id": "no recording profile has this id"}) from err
    if duration_s is not None and duration_s > profile.max_duration_s:
        raise InvalidRequest(
            "The recording is longer than its profile allows.",
            fields={"duration_s": f"at most {profile.max_duration_s:g} s (the profile's max_duration_s)"},
        )
    channels = profile.channels
    if channels is None and profile.channel_map_template_id is not None:
        template = ChannelMapTemplate.get_or_none(ChannelMapTemplate.id == profile.channel_map_template_id)
        channels = template.channel_count if template is not None else None
    at = utcnow()
    with database_proxy.atomic():
        recording = Recording.create(
            id=new_id("rec"),
            node_id=node.id,
            site=node.site,
            name=name or _default_name(node, at),
            status="queued",
            profile_id=profile.id,
            profile=recording_profiles.snapshot(profile),
            format=profile.format,
            sample_rate=profile.sample_rate,
            bit_depth=profile.bit_depth,
            channels=channels,
            requested_duration_s=duration_s,
            created_at=at,
            created_by={"type": actor.type, "id": actor.id, "name": actor.name},
            created_by_id=owner_id(actor),  # whose own recording it is (recording:read_own)
            updated_at=at,
        )
        job = RecordingJob.create(
            id=new_id("rjb"),
            recording_id=recording.id,
            node_id=node.id,
            site=node.site,
            state="queued",
            attempts=1,
            created_at=at,
            updated_at=at,
        )
        after = recording_to_api(recording, job.id)
        job_after = job_to_api(job)
        record(
            actor,
            "recording.create",
            permission=CREATE,
            target=("recording", recording.id),
            after={"recording": after, "job": job_after},
        )
    return after, job_after, [recording_event("created", after), job_event(job_after)]


def ended_status(recording: Recording, job_state: str) -> str:
    """The status a recording ends with when its job ends unfinished: `interrupted` keeps uploaded audio."""
    if recording.interrupted and recording.storage_key:
        return "interrupted"
    return job_state


def end_job(job: RecordingJob, state: str, error: str | None, at: datetime, *guards: Any) -> Recording | None:
    """Move an unfinished job, as it was read, to `failed` or `cancelled`, and its recording with it
    (inside the caller's transaction). None when the job changed meanwhile (or a guard no longer holds)."""
    moved = (
        RecordingJob.update(state=state, error=error, updated_at=at)
        .where(RecordingJob.id == job.id, RecordingJob.state == job.state, RecordingJob.lease_epoch == job.lease_epoch, *guards)
        .execute()
    )
    if not moved:
        return None
    recording: Recording = Recording.get_by_id(job.recording_id)
    Recording.update(status=ended_status(recording, state), error=error, updated_at=at).where(
        Recording.id == recording.id, Recording.status.not_in(TERMINAL_STATUSES)
    ).execute()
    refreshed: Recording = Recording.get_by_id(recording.id)
    return refreshed


def stop_job(
    actor: Actor, recording: Recording, job: RecordingJob | None
) -> tuple[dict[str, Any], dict[str, Any], list[FleetEvent], bool]:
    """Stop a recording: a queued job is cancelled at once, a running one is asked to stop.

    Returns the recording, the job, the events, and whether the node must be told (`cmd/job` stop).
    """
    for _ in range(3):  # the job may be claimed between the read and the write: read again
        if job is None or job.state in JOB_TERMINAL or recording.status in TERMINAL_STATUSES:
            raise Conflict(f"The recording has already ended ({recording.status}).")
        if job.state == "uploading":
            raise Conflict("Capture has ended; the recording is uploading.")
        before = recording_to_api(recording, job.id)
        at = utcnow()
        held_ahead = job.start_at is not None and job.state == "claimed" and not job.capture_started
        if job.state == "queued" or held_ahead:  # a scheduled take its node holds is withdrawn at its next sync
            with database_proxy.atomic():
                ended = end_job(job, "cancelled", "stopped before it started", at)
                if ended is not None:
                    job = RecordingJob.get_by_id(job.id)
                    after, job_after = recording_to_api(ended, job.id), job_to_api(job)
                    record(
                        actor,
                        "recording.stop",
                        permission=CONTROL,
                        target=("recording", recording.id),
                        before=before,
                        after=after,
                    )
                    return after, job_after, [recording_event("stopped", after), job_event(job_after)], held_ahead
        elif job.stop_requested:
            return before, job_to_api(job), [], True  # asked already: tell the node again, nothing changes
        else:
            with database_proxy.atomic():
                moved = (
                    RecordingJob.update(stop_requested=True, updated_at=at)
                    .where(RecordingJob.id == job.id, RecordingJob.state.in_(("claimed", "recording")))
                    .execute()
                )
                if moved:
                    job = RecordingJob.get_by_id(job.id)
                    job_after = job_to_api(job)
                    record(
                        actor,
                        "recording.stop",
                        permission=CONTROL,
                        target=("recording", recording.id),
                        before=before,
                        after={**before, "stop_requested": True},
                    )
                    return before, job_after, [recording_event("stopped", {**before, "stop_requested": True})], True
        recording = Recording.get_by_id(recording.id)
        job = RecordingJob.get_or_none(RecordingJob.id == job.id)
    raise Conflict("The recording changed meanwhile; try again.")


def stop_recording(
    actor: Actor, scope: SiteScope, recording_id: str
) -> tuple[dict[str, Any], dict[str, Any], list[FleetEvent], bool]:
    """`POST /recordings/{id}/stop`: see `stop_job`."""
    recording = get_recording(scope, recording_id)
    return stop_job(actor, recording, latest_job(recording.id))
