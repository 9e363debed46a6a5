"""Recording jobs: a node's work for one recording, claimed under a lease and fenced by its epoch.

States: `queued -> claimed -> recording -> uploading -> completed`, or `failed` / `cancelled`.
A claim bumps `lease_epoch`; every later call carries it, and one with an older epoch is refused
(409 `stale_lease`), so a node that lost its lease cannot change the job any more.

A job whose heartbeats stop for the lease timeout is failed by the reaper, unless it had started
capturing: then its node has the lease timeout plus a recovery grace to come back, and `claim-next`
hands a node its own unfinished jobs first (`recovered`), so a restarted node finishes and uploads
what it captured instead of recording again. A job that started capturing is never retried.
"""

from __future__ import annotations

import functools
import json
import math
import operator
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import peewee
from hark_fleet.hub.auth.principal import SiteScope
from hark_fleet.hub.clock import parse_iso, utcnow
from hark_fleet.hub.db.models import Node, Recording, RecordingJob, database_proxy
from hark_fleet.hub.errors import ApiError, Conflict, Forbidden, InvalidRequest, NotFound
from hark_fleet.hub.events import FleetEvent
from hark_fleet.hub.services import upload_queue
from hark_fleet.hub.services.audit import SYSTEM, Actor, record
from hark_fleet.hub.services.listing import Filter, ListSpec, get_scoped, one_of
from hark_fleet.hub.services.recording_profiles import BIT_DEPTHS, FORMATS, RECORDING_FIELDS
from hark_fleet.hub.services.recordings import (
    JOB_ACTIVE,
    JOB_STATES,
    end_job,
    get_recording,
    job_event,
    job_to_api,
    recording_to_api,
    stop_job,
)
from hark_fleet.hub.services.schedule_dispatch import MISSED_BY_HUB, refresh_occurrence

CONTROL = "recording:control"
NODE_CONTROL = "node:control"
MAX_BULK = 500
MAX_PROGRESS_BYTES = 16 * 1024
MAX_ERROR = 2000
MAX_CLAIM_TRIES = 100
REAP_BATCH = 500
RETRYABLE = ("failed", "cancelled")
STOPPABLE = ("queued", "claimed", "recording")

JOB_LIST = ListSpec(
    model=RecordingJob,
    serialize=job_to_api,
    filters=(
        Filter("node_id", RecordingJob.node_id),
        Filter("state", RecordingJob.state, one_of(JOB_STATES)),
        Filter("recording_id", RecordingJob.recording_id, facet=False),
        Filter("schedule_id", RecordingJob.schedule_id, facet=False),
        Filter("site", RecordingJob.site),
    ),
    search=(RecordingJob.node_id, RecordingJob.recording_id, RecordingJob.error),
    time_field=RecordingJob.created_at,
    site_field=RecordingJob.site,
    descending=True,
    export_columns=(
        "id",
        "recording_id",
        "node_id",
        "site",
        "state",
        "lease_epoch",
        "stop_requested",
        "capture_started",
        "attempts",
        "claimed_at",
        "last_heartbeat_at",
        "error",
        "created_at",
        "updated_at",
    ),
)


# -- reads and actions ---------------------------------------------------------------------------------


def _why_not(job: RecordingJob, action: str) -> str | None:
    """Why `action` cannot be taken on `job` now, or None."""
    if action == "retry":
        if job.state not in RETRYABLE:
            return f"only a failed or cancelled job can be retried (this one is {job.state})"
        if job.capture_started:
            return "it started capturing: a job is never recorded twice"
        return None
    if job.state == "uploading":
        return "capture has ended; the recording is uploading"
    if job.state not in STOPPABLE:
        return f"the job has ended ({job.state})"
    return None


def job_actions(job: RecordingJob) -> dict[str, dict[str, Any]]:
    return {a: {"allowed": (why := _why_not(job, a)) is None, "reason": why} for a in ("retry", "stop")}


def _detail(job: RecordingJob) -> dict[str, Any]:
    return {**job_to_api(job), "actions": job_actions(job)}


def get_job(scope: SiteScope, job_id: str) -> RecordingJob:
    job: RecordingJob = get_scoped(RecordingJob, job_id, RecordingJob.site, scope)
    return job


def job_detail(scope: SiteScope, job_id: str) -> dict[str, Any]:
    """A job and what may be done to it now (for a user)."""
    return _detail(get_job(scope, job_id))


def own_job(actor: Actor, job_id: str) -> RecordingJob:
    """The calling node's job: 404 when there is none, 403 `node_mismatch` (audited) when it is another node's."""
    job = RecordingJob.get_or_none(RecordingJob.id == job_id)
    if job is None:
        raise NotFound(f"No recording job {job_id}.")
    if job.node_id != actor.id:
        record(
            actor, "access.denied", permission=NODE_CONTROL, outcome="failure", reason=f"node_mismatch on recording job {job_id}"
        )
        raise Forbidden("This job belongs to another node.", code="node_mismatch")
    return job


def agent_job_detail(actor: Actor, job_id: str) -> dict[str, Any]:
    """A node reading its own job."""
    return _detail(own_job(actor, job_id))


# -- retry and stop by users ----------------------------------------------------------------------------


def retry(actor: Actor, scope: SiteScope, job_id: str) -> tuple[dict[str, Any], list[FleetEvent]]:
    """A failed or cancelled job that never started capturing goes back to `queued` as a new attempt."""
    job = get_job(scope, job_id)
    why = _why_not(job, "retry")
    if why is not None:
        raise Conflict(f"Cannot retry this job: {why}.")
    if Node.get_or_none(Node.id == job.node_id) is None:
        raise Conflict("Cannot retry this job: its node no longer exists.")
    before = job_to_api(job)
    at = utcnow()
    with database_proxy.atomic():
        moved = (
            RecordingJob.update(
                state="queued",
                attempts=RecordingJob.attempts + 1,
                stop_requested=False,
                progress={},
                error=None,
                claimed_at=None,
                last_heartbeat_at=None,
                updated_at=at,
            )
            .where(
                RecordingJob.id == job.id,
                RecordingJob.state == job.state,
                RecordingJob.lease_epoch == job.lease_epoch,
                RecordingJob.capture_started == False,  # noqa: E712 - SQL comparison
            )
            .execute()
        )
        if not moved:
            raise Conflict("The job changed meanwhile; read it again.")
        Recording.update(status="queued", error=None, updated_at=at).where(Recording.id == job.recording_id).execute()
        after = job_to_api(RecordingJob.get_by_id(job.id))
        record(actor, "recording.job.retry", permission=CONTROL, target=("recording_job", job.id), before=before, after=after)
    return {**after, "actions": job_actions(RecordingJob.get_by_id(job.id))}, [job_event(after)]


def _per_id(ids: Sequence[str], act: Any) -> tuple[list[dict[str, Any]], list[FleetEvent], list[dict[str, Any]]]:
    """Run `act(job_id)` for each id; each answers on its own. Results, events, and the jobs that changed."""
    if not 1 <= len(ids) <= MAX_BULK:
        raise InvalidRequest("Too many or no ids.", fields={"ids": f"1 to {MAX_BULK} job ids"})
    results: list[dict[str, Any]] = []
    events: list[FleetEvent] = []
    changed: list[dict[str, Any]] = []
    for job_id in dict.fromkeys(ids):
        try:
            job, caused, notify = act(job_id)
        except ApiError as err:
            results.append({"id": job_id, "ok": False, "error": {"code": err.code, "message": err.message}})
            continue
        results.append({"id": job_id, "ok": True, "job": job})
        events += caused
        if notify:
            changed.append(job)
    return results, events, changed


def bulk_retry(
    actor: Actor, scope: SiteScope, ids: Sequence[str]
) -> tuple[list[dict[str, Any]], list[FleetEvent], list[dict[str, Any]]]:
    """Retry many jobs; the results per id, the events, and the jobs queued again (to tell their nodes)."""

    def act(job_id: str) -> tuple[dict[str, Any], list[FleetEvent], bool]:
        job, events = retry(actor, scope, job_id)
        return job, events, True

    return _per_id(ids, act)


def stop(actor: Actor, scope: SiteScope, job_id: str) -> tuple[dict[str, Any], list[FleetEvent], bool]:
    """Stop a job's recording (see `recordings.stop_job`): the job, the events, whether to tell the node."""
    job = get_job(scope, job_id)
    recording = get_recording(scope, job.recording_id)
    _, after, events, notify = stop_job(actor, recording, job)
    return after, events, notify


def bulk_stop(
    actor: Actor, scope: SiteScope, ids: Sequence[str]
) -> tuple[list[dict[str, Any]], list[FleetEvent], list[dict[str, Any]]]:
    """Stop many jobs; the results per id, the events, and the running jobs asked to stop (to tell their nodes)."""
    return _per_id(ids, lambda job_id: stop(actor, scope, job_id))


# -- the node's side ------------------------------------------------------------------------------------------


def node_profile(recording: Recording) -> dict[str, Any]:
    """The recording fields of the profile snapshot the node records with."""
    snapshot = recording.profile or {}
    fallback = {"format": recording.format, "sample_rate": recording.sample_rate, "bit_depth": recording.bit_depth}
    return {name: snapshot.get(name, fallback.get(name)) for name in RECORDING_FIELDS}


def _claimed(job: RecordingJob, recovered: bool) -> dict[str, Any]:
    recording: Recording = Recording.get_by_id(job.recording_id)
    return {
        "job": {**job_to_api(job), "recovered": recovered},
        "recording": {**recording_to_api(recording, job.id), "profile": node_profile(recording)},
    }


def _recover(actor: Actor, keep: Sequence[str], at: datetime) -> tuple[dict[str, Any] | None, list[FleetEvent]]:
    """Hand the node back one of its own unfinished jobs (not those it says it is running) under a new epoch."""
    query = RecordingJob.select().where(
        RecordingJob.node_id == actor.id,
        RecordingJob.state.in_(JOB_ACTIVE),
        RecordingJob.start_at.is_null(),  # scheduled jobs travel only by the node's sync (the node keeps them in its book)
    )
    if keep:
        query = query.where(RecordingJob.id.not_in(list(keep)))
    for job in query.order_by(RecordingJob.created_at, RecordingJob.id):
        with database_proxy.atomic():
            taken = (
                RecordingJob.update(lease_epoch=RecordingJob.lease_epoch + 1, claimed_at=at, last_heartbeat_at=at, updated_at=at)
                .where(RecordingJob.id == job.id, RecordingJob.state == job.state, RecordingJob.lease_epoch == job.lease_epoch)
                .execute()
            )
            if not taken:
                continue
            after = job_to_api(RecordingJob.get_by_id(job.id))
            record(
                actor,
                "recording.job.recovered",
                permission=NODE_CONTROL,
                target=("recording_job", job.id),
                before=job_to_api(job),
                after=after,
            )
        return _claimed(RecordingJob.get_by_id(job.id), True), [job_event(after, "recovered")]
    return None, []


def claim_next(actor: Actor, keep: Sequence[str] = ()) -> tuple[dict[str, Any] | None, list[FleetEvent]]:
    """The node's next job under a new lease epoch, or None: its own unfinished jobs first, then the oldest queued.

    The claim is a conditional update (`... WHERE id = ? AND state = 'queued'`) checked by its row
    count, so two claims at once never get the same job on SQLite or PostgreSQL; the loser tries
    the next job.
    """
    at = utcnow()
    recovered, events = _recover(actor, keep, at)
    if recovered is not None:
        return recovered, events
    for _ in range(MAX_CLAIM_TRIES):
        candidate = (
            RecordingJob.select(RecordingJob.id)
            .where(RecordingJob.node_id == actor.id, RecordingJob.state == "queued", RecordingJob.start_at.is_null())
            .order_by(RecordingJob.created_at, RecordingJob.id)
            .first()
        )
        if candidate is None:
            return None, []
        with database_proxy.atomic():
            taken = (
                RecordingJob.update(
                    state="claimed",
                    lease_epoch=RecordingJob.lease_epoch + 1,
                    claimed_at=at,
                    last_heartbeat_at=at,
                    updated_at=at,
                )
                .where(RecordingJob.id == candidate.id, RecordingJob.state == "queued")
                .execute()
            )
            if not taken:
                continue  # another claim got it first
            after = job_to_api(RecordingJob.get_by_id(candidate.id))
            record(actor, "recording.job.claimed", permission=NODE_CONTROL, target=("recording_job", candidate.id), after=after)
        return _claimed(RecordingJob.get_by_id(candidate.id), False), [job_event(after)]
    raise Conflict("Too many claims at once; try again.")


def _missed_by_hub(job: RecordingJob) -> bool:
    """A scheduled job the hub called missed while its node, away, may have recorded it after all."""
    held = job.lease_epoch > 0  # the node fetched it (a job never fetched was never recorded)
    return held and job.state == "missed" and job.start_at is not None and (job.error or "").startswith(MISSED_BY_HUB)


def _held(actor: Actor, job_id: str, lease_epoch: int, revive_missed: bool = False) -> RecordingJob:
    """The node's job if it still holds the lease at `lease_epoch`; otherwise 409 `stale_lease`.

    With `revive_missed`, a scheduled job the hub called missed counts as held: its node reports it did record it.
    """
    job = own_job(actor, job_id)
    if job.lease_epoch != lease_epoch:
        raise Conflict(
            f"The job was claimed again (epoch {job.lease_epoch}); this node's lease is stale.",
            code="stale_lease",
            lease_epoch=job.lease_epoch,
        )
    if job.state not in JOB_ACTIVE and not (revive_missed and _missed_by_hub(job)):
        raise Conflict(f"The job is {job.state}; this node no longer holds it.", code="stale_lease", lease_epoch=job.lease_epoch)
    return job


def _check_recording_fields(fields: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """What a node reports about the capture, as recording columns, and every problem with it."""
    problems: dict[str, str] = {}
    clean: dict[str, Any] = {}
    for name in ("started_at", "ended_at"):
        if fields.get(name) is not None:
            try:
                clean[name] = parse_iso(fields[name])
            except ValueError:
                problems[f"recording.{name}"] = "must be an ISO 8601 time with a zone"
    if fields.get("scheduled_start_at") is not None:
        try:
            clean["scheduled_start_at"] = parse_iso(fields["scheduled_start_at"])
        except ValueError:
            problems["recording.scheduled_start_at"] = "must be an ISO 8601 time with a zone"
    for name, low, high in (("duration_s", 0.0, 7 * 86400.0), ("clock_offset_ms", -1e9, 1e9), ("late_s", 0.0, 7 * 86400.0)):
        value = fields.get(name)
        if value is not None:
            if not math.isfinite(value) or not low <= value <= high:
                problems[f"recording.{name}"] = f"from {low:g} to {high:g}"
            else:
                clean[name] = float(value)
    if fields.get("sample_rate") is not None:
        if not 1000 <= fields["sample_rate"] <= 768000:
            problems["recording.sample_rate"] = "from 1000 to 768000 Hz"
        clean["sample_rate"] = fields["sample_rate"]
    if fields.get("channels") is not None:
        if not 1 <= fields["channels"] <= 256:
            problems["recording.channels"] = "from 1 to 256"
        clean["channels"] = fields["channels"]
    if fields.get("bit_depth") is not None:
        if fields["bit_depth"] not in BIT_DEPTHS:
            problems["recording.bit_depth"] = "16, 24 or 32"
        clean["bit_depth"] = fields["bit_depth"]
    if fields.get("format") is not None:
        if fields["format"] not in FORMATS:
            problems["recording.format"] = "wav or flac"
        clean["format"] = fields["format"]
    if fields.get("time_quality") is not None:
        if not 1 <= len(fields["time_quality"]) <= 16:
            problems["recording.time_quality"] = "1-16 characters"
        clean["time_quality"] = fields["time_quality"]
    if fields.get("integrity") is not None:
        if len(json.dumps(fields["integrity"])) > MAX_PROGRESS_BYTES:
            problems["recording.integrity"] = f"at most {MAX_PROGRESS_BYTES} bytes of JSON"
        clean["integrity"] = fields["integrity"]
    if fields.get("interrupted") is not None:
        clean["interrupted"] = bool(fields["interrupted"])
    if "started_at" in clean and "ended_at" in clean and clean["ended_at"] < clean["started_at"]:
        problems["recording.ended_at"] = "is before started_at"
    return clean, problems


def heartbeat(
    actor: Actor,
    job_id: str,
    lease_epoch: int,
    state: str,
    progress: dict[str, Any],
    reported: dict[str, Any] | None,
) -> tuple[dict[str, Any], list[FleetEvent]]:
    """A node's job heartbeat: the job's state moves forward, the recording takes what the node reports.

    The first `recording` heartbeat marks the capture started (the job is never recorded again).
    The answer says whether a stop was requested.
    """
    problems: dict[str, str] = {}
    if len(json.dumps(progress)) > MAX_PROGRESS_BYTES:
        problems["progress"] = f"at most {MAX_PROGRESS_BYTES} bytes of JSON"
    recording_fields, recording_problems = _check_recording_fields(reported or {})
    problems |= recording_problems
    if problems:
        raise InvalidRequest("The job heartbeat is invalid.", fields=problems)
    job = _held(actor, job_id, lease_epoch, revive_missed=True)
    if state == "recording" and job.state == "uploading":
        raise Conflict("The job is uploading; it cannot go back to recording.")
    at = utcnow()
    events: list[FleetEvent] = []
    revived = job.state == "missed"  # recorded away from the hub after all: the job and its recording go on
    with database_proxy.atomic():
        moved = (
            RecordingJob.update(
                state=state,
                capture_started=True,
                progress=progress,
                last_heartbeat_at=at,
                updated_at=at,
                **({"error": None} if revived else {}),
            )
            .where(
                RecordingJob.id == job.id,
                RecordingJob.lease_epoch == lease_epoch,
                RecordingJob.state.in_((*JOB_ACTIVE, "missed") if revived else JOB_ACTIVE),
            )
            .execute()
        )
        if not moved:
            raise Conflict("The job changed meanwhile; this node's lease is stale.", code="stale_lease")
        recording: Recording = Recording.get_by_id(job.recording_id)
        changes: dict[str, Any] = {**recording_fields, "status": state, "updated_at": at}
        if revived:
            changes["error"] = None
        if recording.started_at is None and "started_at" not in changes:
            changes["started_at"] = at  # provisional, on the hub's clock, until the node reports its own
        Recording.update(**changes).where(Recording.id == recording.id).execute()
        updated: RecordingJob = RecordingJob.get_by_id(job.id)
        after = job_to_api(updated)
        if job.state != state:
            record(
                actor,
                f"recording.job.{state}",
                permission=NODE_CONTROL,
                target=("recording_job", job.id),
                before=job_to_api(job),
                after=after,
            )
            events.append(job_event(after))
        if revived and job.occurrence_id:
            refresh_occurrence(job.occurrence_id, at)
    if state == "uploading" and job.state != "uploading":  # capture ended: direct-route uploads may start (issue 20)
        events += upload_queue.enqueue_safely(job.recording_id)
    return {"stop_requested": bool(updated.stop_requested), "job": after}, events


def finish(actor: Actor, job_id: str, lease_epoch: int, state: str, error: str | None) -> tuple[dict[str, Any], list[FleetEvent]]:
    """The node ends its job `cancelled` or `failed`; the recording ends with it (`interrupted` keeps uploaded audio).

    Saying it again with the same epoch answers the same (the node may not have heard the first answer).
    """
    assert state in ("cancelled", "failed")
    if error is not None and len(error) > MAX_ERROR:
        error = error[:MAX_ERROR]
    job = own_job(actor, job_id)
    if job.state == state and job.lease_epoch == lease_epoch:
        return _finished(job), []
    job = _held(actor, job_id, lease_epoch)
    at = utcnow()
    with database_proxy.atomic():
        ended = end_job(job, state, error or None, at)
        if ended is None:
            raise Conflict("The job changed meanwhile; this node's lease is stale.", code="stale_lease")
        done: RecordingJob = RecordingJob.get_by_id(job.id)
        after = job_to_api(done)
        record(
            actor,
            f"recording.job.{state}",
            permission=NODE_CONTROL,
            target=("recording_job", job.id),
            before=job_to_api(job),
            after=after,
            reason=error,
        )
    return _finished(done), [job_event(after)]


def missed(actor: Actor, job_id: str, lease_epoch: int, error: str | None) -> tuple[dict[str, Any], list[FleetEvent]]:
    """The node could not record its scheduled job (off through the whole occurrence, or its profile does not fit).

    Only a scheduled job that has not started capturing; saying it again with the same epoch answers the same.
    """
    reason = (error or "the node could not record it")[:MAX_ERROR]
    job = own_job(actor, job_id)
    if job.start_at is None:
        raise Conflict("Only a scheduled job can be missed; end this job as failed.")
    if job.state == "missed" and job.lease_epoch == lease_epoch:
        return _finished(job), []
    job = _held(actor, job_id, lease_epoch)
    if job.capture_started:
        raise Conflict("The job started capturing; end it as failed (what it captured is kept).")
    at = utcnow()
    with database_proxy.atomic():
        ended = end_job(job, "missed", reason, at, RecordingJob.capture_started == False)  # noqa: E712
        if ended is None:
            raise Conflict("The job changed meanwhile; this node's lease is stale.", code="stale_lease")
        done: RecordingJob = RecordingJob.get_by_id(job.id)
        after = job_to_api(done)
        record(
            actor,
            "recording.job.missed",
            permission=NODE_CONTROL,
            target=("recording_job", job.id),
            before=job_to_api(job),
            after=after,
            reason=reason,
        )
        if job.occurrence_id:
            refresh_occurrence(job.occurrence_id, at)
    return _finished(done), [job_event(after)]


def _finished(job: RecordingJob) -> dict[str, Any]:
    recording: Recording = Recording.get_by_id(job.recording_id)
    return {"job": job_to_api(job), "recording": recording_to_api(recording, job.id)}


# -- the reaper -----------------------------------------------------------------------------------------------


def reap(
    lease_timeout_s: float, recovery_grace_s: float, listening_since: datetime, now: datetime | None = None
) -> list[FleetEvent]:
    """Fail jobs whose node went quiet, and cancel queued jobs whose node was deleted.

    A job that never started capturing is failed once it has had no heartbeat for the lease
    timeout; one that did gets the recovery grace on top, for its node to come back and re-claim it.
    Only silence since `listening_since` (the hub's start) counts: a node cannot reach a hub that is away.
    """
    now = now or utcnow()
    lease_cutoff = now - timedelta(seconds=lease_timeout_s)
    grace_cutoff = lease_cutoff - timedelta(seconds=recovery_grace_s)
    quiet_if: list[Any] = []
    # A scheduled job waits for its start without heartbeats: until it captures, only `schedule_dispatch.sweep_missed`
    # ends it; once it captures, its node may be recording away from the hub until its end.
    ad_hoc = RecordingJob.start_at.is_null()
    if listening_since < lease_cutoff:  # else every job is within its lease counted from the hub's start
        quiet_if += [
            ad_hoc & (RecordingJob.capture_started == False) & (RecordingJob.last_heartbeat_at < lease_cutoff),  # noqa: E712
            ad_hoc & RecordingJob.last_heartbeat_at.is_null(),
        ]
    if listening_since < grace_cutoff:
        quiet_if.append(
            RecordingJob.capture_started
            & (RecordingJob.last_heartbeat_at < grace_cutoff)
            & (ad_hoc | (RecordingJob.end_at < grace_cutoff))
        )
    events: list[FleetEvent] = []
    quiet: list[RecordingJob] = []
    if quiet_if:
        where = functools.reduce(operator.or_, quiet_if)
        quiet = list(
            RecordingJob.select().where(RecordingJob.state.in_(JOB_ACTIVE), where).order_by(RecordingJob.id).limit(REAP_BATCH)
        )
    for job in quiet:
        if job.capture_started:
            error = "the node did not come back for its recording within the recovery grace"
        else:
            error = f"no heartbeat from the node for {lease_timeout_s:g} s"
        # Only if no heartbeat came in meanwhile.
        guard = (
            RecordingJob.last_heartbeat_at.is_null()
            if job.last_heartbeat_at is None
            else RecordingJob.last_heartbeat_at == job.last_heartbeat_at
        )
        events += _end_by_hub(job, "failed", error, now, guard)
    orphans = RecordingJob.select().where(RecordingJob.state == "queued", RecordingJob.node_id.not_in(Node.select(Node.id)))
    for job in orphans.order_by(RecordingJob.id).limit(REAP_BATCH):
        events += _end_by_hub(job, "cancelled", "the node was deleted", now)
    return events


def _end_by_hub(job: RecordingJob, state: str, error: str, at: datetime, *guards: peewee.Expression) -> list[FleetEvent]:
    with database_proxy.atomic():
        if end_job(job, state, error, at, *guards) is None:
            return []
        after = job_to_api(RecordingJob.get_by_id(job.id))
        record(
            SYSTEM,
            f"recording.job.{state}",
            permission=None,
            target=("recording_job", job.id),
            before=job_to_api(job),
            after=after,
            reason=error,
        )
    return [job_event(after)]
