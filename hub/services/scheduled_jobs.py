"""A node's scheduled jobs: the sync that hands a node the jobs it should hold, and tells it which to drop.

The node keeps every scheduled job it holds in its book and starts each on its own clock at
`start_at`, whether the hub is reachable then or not (issue 19). It syncs at start, on
`cmd/job {"scheduled": true}` and every minute, saying which jobs it holds at which revision.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from hark_fleet.hub.clock import iso
from hark_fleet.hub.db.models import Recording, RecordingJob, database_proxy
from hark_fleet.hub.errors import InvalidRequest
from hark_fleet.hub.events import FleetEvent
from hark_fleet.hub.services.audit import Actor, record
from hark_fleet.hub.services.recording_jobs import NODE_CONTROL, node_profile
from hark_fleet.hub.services.recordings import job_event, job_to_api, recording_to_api

MAX_HELD = 2000
MAX_JOBS = 1000  # handed out per sync, soonest first; the rest come with the next
ENDED = ("cancelled", "missed", "failed")


def _node_job(job: RecordingJob, recording: Recording) -> dict[str, Any]:
    return {"job": job_to_api(job), "recording": {**recording_to_api(recording, job.id), "profile": node_profile(recording)}}


def check_held(held: Sequence[tuple[str, int]]) -> dict[str, int]:
    """The node's `held` list as job id -> revision; 400 with `fields` when it is malformed."""
    if len(held) > MAX_HELD:
        raise InvalidRequest("The node holds too many jobs for one sync.", fields={"held": f"at most {MAX_HELD} jobs"})
    for index, (job_id, revision) in enumerate(held):
        if not 1 <= len(job_id) <= 40:
            raise InvalidRequest("The held jobs are invalid.", fields={f"held[{index}].id": "a job id"})
        if revision < 0:
            raise InvalidRequest("The held jobs are invalid.", fields={f"held[{index}].revision": "a whole number from 0"})
    return dict(held)


def sync(actor: Actor, held: dict[str, int], now: datetime, lead_s: float) -> tuple[dict[str, Any], list[FleetEvent]]:
    """What the node should hold: its scheduled jobs not started, not ended, that it does not hold at this revision
    (queued ones are claimed now: state `claimed`, a new lease epoch), and the held ids it must drop (`withdrawn`).

    A job that started capturing is never withdrawn: the node finishes and uploads it.
    """
    events: list[FleetEvent] = []
    candidates = (
        RecordingJob.select()
        .where(
            RecordingJob.node_id == actor.id,
            RecordingJob.start_at.is_null(False),
            RecordingJob.capture_started == False,  # noqa: E712 - SQL comparison
            RecordingJob.state.in_(("queued", "claimed")),
            RecordingJob.end_at > now,
        )
        .order_by(RecordingJob.start_at, RecordingJob.id)
    )
    jobs: list[dict[str, Any]] = []
    for job in candidates:
        if job.state == "claimed" and held.get(job.id) == job.revision:
            continue
        if job.state == "queued":
            with database_proxy.atomic():
                taken = (
                    RecordingJob.update(
                        state="claimed",
                        lease_epoch=RecordingJob.lease_epoch + 1,
                        claimed_at=now,
                        last_heartbeat_at=now,
                        updated_at=now,
                    )
                    .where(RecordingJob.id == job.id, RecordingJob.state == "queued", RecordingJob.revision == job.revision)
                    .execute()
                )
                if not taken:
                    continue  # changed meanwhile (withdrawn, updated): the next sync hands it out as it is then
                claimed: RecordingJob = RecordingJob.get_by_id(job.id)
                after = job_to_api(claimed)
                record(actor, "recording.job.claimed", permission=NODE_CONTROL, target=("recording_job", job.id), after=after)
            events.append(job_event(after))
            job = claimed
        jobs.append(_node_job(job, Recording.get_by_id(job.recording_id)))
        if len(jobs) >= MAX_JOBS:
            break
    withdrawn: list[dict[str, str]] = []
    if held:
        known = {
            j.id: j
            for j in RecordingJob.select(
                RecordingJob.id, RecordingJob.node_id, RecordingJob.state, RecordingJob.error, RecordingJob.capture_started
            ).where(RecordingJob.id.in_(list(held)))
        }
        for job_id in held:
            found = known.get(job_id)
            if found is None or found.node_id != actor.id:
                withdrawn.append({"id": job_id, "reason": "the hub has no such job for this node"})
            elif found.state in ENDED and not found.capture_started:
                withdrawn.append({"id": job_id, "reason": found.error or f"the job is {found.state}"})
    answer = {"jobs": jobs, "withdrawn": withdrawn, "lead_s": lead_s, "server_time": iso(now)}
    return answer, events
