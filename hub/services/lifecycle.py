"""Lifecycle jobs: an allowlisted action for one node, queued until delivered, reported back by the node.

States: `queued` (waiting for the node to be connected), `sent` (published on `cmd/lifecycle`,
sent again on every reconnect until the node reports), `running`, then `succeeded` or
`failed`; a job not started before its `expires_at` becomes `expired`. A running job the node
never finishes (it died with it) is failed once its timeout and a grace period have passed.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from hark_fleet.hub.auth.principal import SiteScope
from hark_fleet.hub.clock import iso, parse_iso, utcnow
from hark_fleet.hub.db.models import LifecycleJob, Node, database_proxy
from hark_fleet.hub.errors import InvalidRequest, NotFound
from hark_fleet.hub.events import FleetEvent
from hark_fleet.hub.ids import new_id
from hark_fleet.hub.services.audit import SYSTEM, Actor, record
from hark_fleet.hub.services.listening import silent_for
from hark_fleet.hub.services.listing import Filter, ListSpec, get_scoped, one_of
from hark_fleet.protocol.messages import LIFECYCLE_ACTIONS, LifecycleCommand, LifecycleReport

STATES = ("queued", "sent", "running", "succeeded", "failed", "expired")
WAITING = ("queued", "sent")
TERMINAL = ("succeeded", "failed", "expired")
DEFAULT_EXPIRES_S = 3600
MAX_EXPIRES_S = 7 * 86400
MAX_OUTPUT_CHARS = 64 * 1024
RESULT_GRACE = timedelta(minutes=5)  # after a running job's timeout, before the hub gives up on its report
# After the hub starts listening again: a node reconnects (its backoff stops at 30 s) and replays its outbox.
REPLAY_WINDOW = timedelta(seconds=60)
# How long each action may run on the node unless the request says otherwise.
DEFAULT_TIMEOUT_S: dict[str, float] = {
    "restart-agent": 60,
    "restart-audio": 30,
    "reboot": 30,
    "sync-time": 60,
    "collect-diagnostics": 60,
    "identify": 30,
}
MAX_TIMEOUT_S = 3600


def job_to_api(job: LifecycleJob) -> dict[str, Any]:
    return {
        "id": job.id,
        "node_id": job.node_id,
        "site": job.site,
        "action": job.action,
        "state": job.state,
        "created_at": iso(job.created_at),
        "created_by": job.created_by or {},
        "expires_at": iso(job.expires_at),
        "timeout_s": job.timeout_s,
        "sent_at": iso(job.sent_at),
        "deliveries": job.deliveries,
        "started_at": iso(job.started_at),
        "finished_at": iso(job.finished_at),
        "exit_code": job.exit_code,
        "output": job.output or "",
        "error": job.error,
    }


LIFECYCLE_LIST = ListSpec(
    model=LifecycleJob,
    serialize=job_to_api,
    filters=(
        Filter("node_id", LifecycleJob.node_id, facet=False),
        Filter("action", LifecycleJob.action, one_of(LIFECYCLE_ACTIONS)),
        Filter("state", LifecycleJob.state, one_of(STATES)),
    ),
    search=(LifecycleJob.action, LifecycleJob.output),
    time_field=LifecycleJob.created_at,
    site_field=LifecycleJob.site,
    descending=True,
    export_columns=("id", "node_id", "site", "action", "state", "created_at", "started_at", "finished_at", "exit_code"),
)


def check_action(action: str) -> str:
    if action not in LIFECYCLE_ACTIONS:
        choices = ", ".join(LIFECYCLE_ACTIONS)
        raise InvalidRequest(f"Unknown lifecycle action {action[:40]!r}.", fields={"action": f"must be one of {choices}"})
    return action


def _bounded(value: float | None, default: float, high: float, name: str) -> float:
    if value is None:
        return default
    if not 1 <= value <= high:
        raise InvalidRequest(f"{name} is out of range.", fields={name: f"must be from 1 to {high:g} seconds"})
    return float(value)


def is_connected(node: Node) -> bool:
    return node.status in ("online", "degraded")


def create_job(
    actor: Actor,
    scope: SiteScope,
    node_id: str,
    action: str,
    timeout_s: float | None = None,
    expires_in_s: float | None = None,
) -> tuple[dict[str, Any], bool, list[FleetEvent]]:
    """Queue `action` for the node; the job, whether the node is connected now (deliver at once), the events."""
    check_action(action)
    timeout = _bounded(timeout_s, DEFAULT_TIMEOUT_S[action], MAX_TIMEOUT_S, "timeout_s")
    expires = _bounded(expires_in_s, DEFAULT_EXPIRES_S, MAX_EXPIRES_S, "expires_in_s")
    node: Node = get_scoped(Node, node_id, Node.site, scope)
    at = utcnow()
    with database_proxy.atomic():
        job = LifecycleJob.create(
            id=new_id("lcj"),
            node_id=node.id,
            site=node.site,
            action=action,
            state="queued",
            created_at=at,
            created_by={"type": actor.type, "id": actor.id, "name": actor.name},
            expires_at=at + timedelta(seconds=expires),
            timeout_s=timeout,
        )
        after = job_to_api(job)
        record(actor, "node.lifecycle.request", permission="node:manage", target=("node", node.id), after=after)
    return after, is_connected(node), [FleetEvent("lifecycle.queued", node.site, after)]


def get_job(scope: SiteScope, node_id: str, job_id: str) -> dict[str, Any]:
    node: Node = get_scoped(Node, node_id, Node.site, scope)
    job = LifecycleJob.get_or_none(LifecycleJob.id == job_id, LifecycleJob.node_id == node.id)
    if job is None:
        raise NotFound(f"No lifecycle job {job_id} on node {node.id}.")
    return job_to_api(job)


def command_for(job: LifecycleJob) -> LifecycleCommand:
    return LifecycleCommand(job_id=job.id, action=job.action, timeout_s=job.timeout_s, expires_at=iso(job.expires_at))


def deliverable(node_id: str, at: datetime | None = None) -> list[LifecycleCommand]:
    """The node's jobs still waiting for it (queued, or sent without a report), oldest first."""
    at = at or utcnow()
    jobs = (
        LifecycleJob.select()
        .where(LifecycleJob.node_id == node_id, LifecycleJob.state.in_(WAITING), LifecycleJob.expires_at > at)
        .order_by(LifecycleJob.id)
    )
    return [command_for(job) for job in jobs]


def mark_sent(job_ids: list[str], at: datetime | None = None) -> list[FleetEvent]:
    """The jobs were published to their node: `queued` becomes `sent`; every delivery is counted."""
    at = at or utcnow()
    events: list[FleetEvent] = []
    if not job_ids:
        return events
    with database_proxy.atomic():
        for job in LifecycleJob.select().where(LifecycleJob.id.in_(job_ids), LifecycleJob.state.in_(WAITING)):
            first = job.state == "queued"
            LifecycleJob.update(state="sent", sent_at=at, deliveries=LifecycleJob.deliveries + 1).where(
                LifecycleJob.id == job.id
            ).execute()
            if first:
                job.state, job.sent_at, job.deliveries = "sent", at, job.deliveries + 1
                events.append(FleetEvent("lifecycle.sent", job.site, job_to_api(job)))
    return events


def apply_report(node: Node, report: LifecycleReport, at: datetime, events: list[FleetEvent]) -> None:
    """A job's progress from its node (inside the ingest transaction); reports for other nodes' jobs are ignored."""
    job = LifecycleJob.get_or_none(LifecycleJob.id == report.job_id, LifecycleJob.node_id == node.id)
    if job is None or job.state in ("succeeded", "failed"):
        return
    try:
        when = parse_iso(report.ts)
    except ValueError:
        when = at
    before = job_to_api(job)
    if report.state == "running":
        if job.state == "running":
            return
        job.state, job.started_at = "running", when
    else:
        job.state = report.state
        job.started_at = job.started_at or when
        job.finished_at = when
        job.exit_code = report.exit_code
        job.output = report.output[-MAX_OUTPUT_CHARS:]
        job.error = (report.error or "")[:2000] or None
    job.save()
    after = job_to_api(job)
    if job.state in TERMINAL:
        record(
            Actor("node", node.id, node.name),
            f"node.lifecycle.{job.state}",
            permission="node:control",
            target=("node", node.id),
            before=before,
            after={k: v for k, v in after.items() if k != "output"},
            outcome="success" if job.state == "succeeded" else "failure",
        )
    events.append(FleetEvent(f"lifecycle.{job.state}", job.site, after))


def expired(job: LifecycleJob, listening_since: datetime | None, at: datetime) -> bool:
    """Whether a waiting job is past its deadline, and no report that the node took it can still be on its way.

    A queued job never reached the node. A sent one may have: if the hub was not listening at its
    deadline (restarted, or its broker away) the node gets REPLAY_WINDOW to replay its `running` report.
    """
    if job.expires_at > at:
        return False
    if job.state == "queued":
        return True
    return listening_since is not None and (listening_since <= job.expires_at or at - listening_since > REPLAY_WINDOW)


def result_overdue(job: LifecycleJob, listening_since: datetime | None, at: datetime) -> bool:
    """Whether a running job's result is later than its timeout and RESULT_GRACE, counted while the hub could hear it."""
    started = job.started_at or job.created_at
    return silent_for(started, listening_since, at) > timedelta(seconds=job.timeout_s) + RESULT_GRACE


def expire_jobs(listening_since: datetime | None, at: datetime | None = None) -> list[FleetEvent]:
    """Waiting jobs past `expires_at` expire; running jobs with no result long after their timeout fail.

    `listening_since` is when the hub last started hearing its nodes (None while it cannot): a
    report cannot have arrived while it was not listening, so that time does not count.
    """
    at = at or utcnow()
    events: list[FleetEvent] = []
    with database_proxy.atomic():
        past = LifecycleJob.select().where(LifecycleJob.state.in_(WAITING), LifecycleJob.expires_at <= at)
        for job in (job for job in past if expired(job, listening_since, at)):
            before = job_to_api(job)
            job.state, job.finished_at = "expired", at
            job.error = "the node did not take the job before it expired"
            job.save()
            after = job_to_api(job)
            record(SYSTEM, "node.lifecycle.expired", target=("node", job.node_id), before=before, after=after, outcome="failure")
            events.append(FleetEvent("lifecycle.expired", job.site, after))
        for job in LifecycleJob.select().where(LifecycleJob.state == "running"):
            if not result_overdue(job, listening_since, at):
                continue
            before = job_to_api(job)
            job.state, job.finished_at = "failed", at
            job.error = "the node reported no result (it may have restarted while running the job)"
            job.save()
            after = job_to_api(job)
            record(SYSTEM, "node.lifecycle.failed", target=("node", job.node_id), before=before, after=after, outcome="failure")
            events.append(FleetEvent("lifecycle.failed", job.site, after))
    return events
