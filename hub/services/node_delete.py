"""What stands in the way of deleting a node, named one by one, and what a forced delete ends first.

Blockers: recordings in progress or uploading, recording jobs queued or held by the node,
lifecycle jobs waiting or running, uploads not finished, open health events. Each list names
at most LISTED of its kind (the counts say how many there are). A forced delete ends every
one before the node goes, each with its own audit line: recording jobs are cancelled (their
recordings end `cancelled`, or `interrupted` when audio is already stored), lifecycle jobs
waiting for the node expire and running ones fail, open health events are resolved.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from hark_fleet.hub.db.models import HealthEvent, LifecycleJob, Recording, RecordingJob
from hark_fleet.hub.events import FleetEvent
from hark_fleet.hub.services import lifecycle
from hark_fleet.hub.services.audit import Actor, record
from hark_fleet.hub.services.health import apply_action, event_to_api
from hark_fleet.hub.services.recordings import end_job, job_event, job_to_api

LISTED = 50
NAMED_IN_MESSAGE = 5
DELETED = "the node was deleted"
ACTIVE_RECORDING = ("recording", "uploading")
UNFINISHED_RECORDING_JOB = ("queued", "claimed", "recording", "uploading")
UNFINISHED_LIFECYCLE_JOB = ("queued", "sent", "running")


def _number(value: Any) -> int | None:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def find_blockers(node_id: str) -> tuple[dict[str, list[dict[str, Any]]], dict[str, int]]:
    """The blockers by kind (at most LISTED each, oldest first) and how many of each there are."""
    recordings = Recording.select(Recording.id, Recording.name, Recording.status).where(
        Recording.node_id == node_id, Recording.status.in_(ACTIVE_RECORDING)
    )
    recording_jobs: Any = (  # rows as dicts: the job's columns and its recording's name
        RecordingJob.select(RecordingJob.id, RecordingJob.recording_id, RecordingJob.state, RecordingJob.progress, Recording.name)
        .join(Recording, on=(Recording.id == RecordingJob.recording_id))
        .where(RecordingJob.node_id == node_id, RecordingJob.state.in_(UNFINISHED_RECORDING_JOB))
    )
    lifecycle_jobs = LifecycleJob.select(LifecycleJob.id, LifecycleJob.action, LifecycleJob.state).where(
        LifecycleJob.node_id == node_id, LifecycleJob.state.in_(UNFINISHED_LIFECYCLE_JOB)
    )
    uploads: Any = recording_jobs.where(RecordingJob.state == "uploading")
    events = HealthEvent.select(HealthEvent.id, HealthEvent.kind, HealthEvent.severity, HealthEvent.state).where(
        HealthEvent.node_id == node_id, HealthEvent.state != "resolved"
    )
    counts = {
        "active_recordings": recordings.count(),
        "recording_jobs": recording_jobs.count(),
        "lifecycle_jobs": lifecycle_jobs.count(),
        "pending_uploads": uploads.count(),
        "health_events": events.count(),
    }
    oldest_first = (RecordingJob.created_at, RecordingJob.id)
    jobs = [
        {"id": j["id"], "kind": "recording", "state": j["state"], "label": j["name"], "recording_id": j["recording_id"]}
        for j in recording_jobs.order_by(*oldest_first).limit(LISTED).dicts()
    ]
    jobs += [
        {"id": j.id, "kind": "lifecycle", "state": j.state, "label": j.action, "recording_id": None}
        for j in lifecycle_jobs.order_by(LifecycleJob.created_at, LifecycleJob.id).limit(LISTED)
    ]
    blockers = {
        "active_recordings": [
            {"id": r.id, "name": r.name, "status": r.status}
            for r in recordings.order_by(Recording.created_at, Recording.id).limit(LISTED)
        ],
        "jobs": jobs,
        "pending_uploads": [
            {
                "recording_id": j["recording_id"],
                "job_id": j["id"],
                "name": j["name"],
                "bytes_sent": _number((j["progress"] or {}).get("bytes")),
                "bytes_total": _number((j["progress"] or {}).get("total")),
            }
            for j in uploads.order_by(*oldest_first).limit(LISTED).dicts()
        ],
        "health_events": [
            {"id": e.id, "kind": e.kind, "severity": e.severity, "state": e.state}
            for e in events.order_by(HealthEvent.first_seen, HealthEvent.id).limit(LISTED)
        ],
    }
    return blockers, counts


def named(blockers: dict[str, list[dict[str, Any]]]) -> list[str]:
    """Each blocker in a few words with its id (jobs, uploads and events; recordings are named through their jobs)."""
    words = []
    for job in blockers["jobs"]:
        what = f"“{job['label']}”" if job["kind"] == "recording" else job["label"]
        words.append(f"{job['kind']} job {job['id']} ({what}, {job['state']})")
    for upload in blockers["pending_uploads"]:
        words.append(f"upload of recording {upload['recording_id']} (“{upload['name']}”)")
    for event in blockers["health_events"]:
        words.append(f"health event {event['id']} ({event['kind']}, {event['severity']})")
    return words


def message_naming(words: list[str]) -> str:
    """At most NAMED_IN_MESSAGE of `words` in a sentence, and how many more."""
    shown = words[:NAMED_IN_MESSAGE]
    more = len(words) - len(shown)
    return "; ".join(shown) + (f"; and {more} more" if more else "")


def end_blockers(actor: Actor, node_id: str, at: datetime) -> tuple[list[FleetEvent], list[str]]:
    """End every blocker of a node being force-deleted (inside the caller's transaction), each audited.

    Returns the events to publish and the recordings whose partial uploads the hub should drop.
    """
    events: list[FleetEvent] = []
    uploads: list[str] = []
    why = f"{DELETED} (forced)"
    jobs = RecordingJob.select().where(RecordingJob.node_id == node_id, RecordingJob.state.in_(UNFINISHED_RECORDING_JOB))
    for job in jobs.order_by(RecordingJob.id):
        recording = end_job(job, "cancelled", DELETED, at)
        if recording is None:
            continue
        if job.state == "uploading":
            uploads.append(job.recording_id)
        after = job_to_api(RecordingJob.get_by_id(job.id))
        record(
            actor,
            "recording.job.cancelled",
            permission="node:manage",
            target=("recording_job", job.id),
            before=job_to_api(job),
            after={**after, "recording_status": recording.status},
            reason=why,
        )
        events.append(job_event(after))
    for waiting in LifecycleJob.select().where(LifecycleJob.node_id == node_id, LifecycleJob.state.in_(UNFINISHED_LIFECYCLE_JOB)):
        before = lifecycle.job_to_api(waiting)
        waiting.state = "failed" if waiting.state == "running" else "expired"
        waiting.finished_at, waiting.error = at, DELETED
        waiting.save()
        after = lifecycle.job_to_api(waiting)
        record(
            actor,
            f"node.lifecycle.{waiting.state}",
            permission="node:manage",
            target=("node", node_id),
            before=before,
            after=after,
            reason=why,
        )
        events.append(FleetEvent(f"lifecycle.{waiting.state}", waiting.site, after))
    for event in HealthEvent.select().where(HealthEvent.node_id == node_id, HealthEvent.state != "resolved"):
        before = event_to_api(event)
        try:
            after = apply_action(event, "resolve", actor.name or actor.id or "unknown", at, None)
        except ValueError:
            continue  # resolved meanwhile
        record(
            actor,
            "health.resolve",
            permission="node:manage",
            target=("health_event", event.id),
            before=before,
            after=after,
            reason=why,
        )
        events.append(FleetEvent("health.resolved", event.site, after))
    return events, uploads
