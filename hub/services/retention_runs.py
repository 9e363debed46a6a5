"""Retention runs at the hub: the plan (what expires, what an emergency evicts), marking copies evicted, the run's record.

Every function here is database work for `hub.retention_runner` (which measures the disk and deletes the files).
A copy is marked evicted BEFORE its file is deleted, and only while it is still not under legal hold and still not
evicted: a hold placed between the plan and the deletion wins. The recording row stays (the library shows where the
copies are); downloads of it answer 410 naming them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from hark_fleet.hub.clock import iso, utcnow
from hark_fleet.hub.db.models import Recording, RetentionRun, database_proxy
from hark_fleet.hub.errors import NotFound
from hark_fleet.hub.events import FleetEvent
from hark_fleet.hub.ids import new_id
from hark_fleet.hub.services import retention_rules as rules
from hark_fleet.hub.services.audit import SYSTEM, Actor, record
from hark_fleet.hub.services.listing import Filter, ListSpec, one_of
from hark_fleet.hub.services.recording_copies import enabled_policies, iter_copies, light_columns

TRIGGERS = ("schedule", "manual", "emergency")
SHORTFALL_KIND = "hub.retention_shortfall"
DETAIL_CAP = 200  # deleted/held entries kept in a run's details
HEALTH_HELD_CAP = 20
EMERGENCY_REASON = "emergency: free space under the floor; confirmed off the hub"


def run_to_api(run: RetentionRun) -> dict[str, Any]:
    details = run.details or {}
    return {
        "id": run.id,
        "trigger": run.trigger,
        "state": "running" if run.finished_at is None else ("shortfall" if run.shortfall_bytes else "done"),
        "started_at": iso(run.started_at),
        "finished_at": iso(run.finished_at),
        "deleted": run.deleted,
        "freed_bytes": run.freed_bytes,
        "held": run.held,
        "shortfall_bytes": run.shortfall_bytes,
        "free_bytes_before": details.get("free_bytes_before"),
        "free_bytes_after": details.get("free_bytes_after"),
        "floor_bytes": details.get("floor_bytes"),
        "details": details,
        "actor": run.actor or {},
    }


RUN_LIST = ListSpec(
    model=RetentionRun,
    serialize=run_to_api,
    filters=(Filter("trigger", RetentionRun.trigger, one_of(TRIGGERS)),),
    time_field=RetentionRun.started_at,
    export_columns=("id", "trigger", "started_at", "finished_at", "deleted", "freed_bytes", "held", "shortfall_bytes"),
    descending=True,
)


def run_detail(run_id: str) -> dict[str, Any]:
    run = RetentionRun.get_or_none(RetentionRun.id == run_id)
    if run is None:
        raise NotFound(f"No retention run {run_id}.")
    return run_to_api(run)


def start_run(trigger: str, actor: Actor) -> dict[str, Any]:
    """A run row, started now (finished by `finish_run`)."""
    run = RetentionRun.create(
        id=new_id("rtr"),
        trigger=trigger,
        started_at=utcnow(),
        actor={"type": actor.type, "id": actor.id, "name": actor.name},
        details={},
    )
    return run_to_api(run)


@dataclass(frozen=True, slots=True)
class Eviction:
    """One hub copy to delete: which, where its file is, how big, and why."""

    recording_id: str
    storage_key: str
    size_bytes: int
    reason: str
    emergency: bool


@dataclass(frozen=True, slots=True)
class HubPlan:
    evictions: tuple[Eviction, ...]
    held: tuple[tuple[str, str], ...]  # (recording id, reason) of copies kept
    floor_bytes: int
    shortfall_bytes: int  # by the plan's sizes; the runner measures again after deleting


def floor_bytes() -> int:
    """The hub's free-space floor: the largest `min_free_bytes_hub` of the enabled policies."""
    return rules.min_free_floor(enabled_policies(), rules.HUB)


def plan_hub(now: datetime, free_bytes: int, emergency_allowed: bool = True) -> HubPlan:
    """What expires now (`decide_hub`), then, when free space is under the floor, what an emergency evicts (oldest
    confirmed first) among the rest until the floor is met."""
    policies = enabled_policies()
    floor = rules.min_free_floor(policies, rules.HUB)
    stored = (Recording.storage_key.is_null(False), Recording.hub_evicted_at.is_null(True))
    on_hub = Recording.select(*light_columns()).where(*stored)
    keys: dict[str, tuple[str, int]] = {}
    expired: list[Eviction] = []
    rest: list[rules.RecordingCopies] = []
    held: dict[str, str] = {}
    for recording, view in iter_copies(on_hub):
        key = str(recording.storage_key)
        keys[recording.id] = (key, view.size_bytes)
        decision = rules.decide_hub(view, rules.policy_for(view, policies), now)
        if decision.delete:
            expired.append(Eviction(recording.id, key, view.size_bytes, decision.reason, False))
        else:
            rest.append(view)
            held[recording.id] = decision.reason
    freed = sum(e.size_bytes for e in expired)
    needed = floor - (free_bytes + freed)
    evictions = list(expired)
    shortfall = 0
    if emergency_allowed and needed > 0:
        plan = rules.emergency_order(rest, policies, rules.HUB, now, needed)
        for recording_id in plan.evict:
            key, size = keys[recording_id]
            evictions.append(Eviction(recording_id, key, size, EMERGENCY_REASON, True))
            held.pop(recording_id, None)
        for recording_id, reason in plan.held:
            held[recording_id] = reason  # the emergency's reason: what keeps it even now
        shortfall = plan.shortfall_bytes
    return HubPlan(tuple(evictions), tuple(held.items()), floor, shortfall)


def mark_evicted(run_id: str, eviction: Eviction, at: datetime) -> FleetEvent | None:
    """Mark the hub copy evicted (before its file goes) unless it was held or evicted meanwhile; the event to publish."""
    with database_proxy.atomic():
        changed = (
            Recording.update(hub_evicted_at=at, hub_evicted_reason=eviction.reason, updated_at=at)
            .where(
                Recording.id == eviction.recording_id,
                Recording.storage_key == eviction.storage_key,
                Recording.hub_evicted_at.is_null(True),
                Recording.legal_hold == False,  # noqa: E712
            )
            .execute()
        )
        if not changed:
            return None
        recording = Recording.get_by_id(eviction.recording_id)
    return FleetEvent(
        "recording.evicted",
        recording.site,
        {
            "recording_id": recording.id,
            "name": recording.name,
            "site": recording.site,
            "node_id": recording.node_id,
            "place": rules.HUB,
            "size_bytes": eviction.size_bytes,
            "reason": eviction.reason,
            "emergency": eviction.emergency,
            "evicted_at": iso(at),
            "run_id": run_id,
        },
    )


def finish_run(run_id: str, actor: Actor, summary: dict[str, Any]) -> dict[str, Any]:
    """Write the run's outcome and audit it as `retention.run` (the system's runs, or the user who asked)."""
    deleted: list[list[str]] = summary["deleted"]
    held: list[list[str]] = summary["held"]
    details = {
        "deleted": deleted[:DETAIL_CAP],
        "held": held[:DETAIL_CAP],
        "errors": summary["errors"][:DETAIL_CAP],
        "free_bytes_before": summary["free_bytes_before"],
        "free_bytes_after": summary["free_bytes_after"],
        "floor_bytes": summary["floor_bytes"],
    }
    with database_proxy.atomic():
        RetentionRun.update(
            finished_at=utcnow(),
            deleted=len(deleted),
            freed_bytes=summary["freed_bytes"],
            held=len(held),
            shortfall_bytes=summary["shortfall_bytes"],
            details=details,
        ).where(RetentionRun.id == run_id).execute()
        after = run_to_api(RetentionRun.get_by_id(run_id))
        record(
            actor,
            "retention.run",
            permission="settings:manage" if actor.type != SYSTEM.type else None,
            target=("retention_run", run_id),
            after={k: v for k, v in after.items() if k != "details"},
        )
    return after


def shortfall_details(free_bytes: int, floor: int, shortfall: int, held: list[list[str]]) -> dict[str, Any]:
    """The critical health event's details: how much is missing and what is held, and why."""
    reasons: dict[str, int] = {}
    for _, reason in held:
        reasons[reason] = reasons.get(reason, 0) + 1
    return {
        "message": (
            f"The hub's free space ({free_bytes} B) is under the retention floor ({floor} B) and nothing more may be "
            f"evicted: {len(held)} recordings are held because their copies are not all confirmed (or under legal hold)."
        ),
        "free_bytes": free_bytes,
        "floor_bytes": floor,
        "shortfall_bytes": shortfall,
        "held_count": len(held),
        "held": [{"recording_id": rid, "reason": reason} for rid, reason in held[:HEALTH_HELD_CAP]],
        "held_reasons": [{"reason": reason, "count": count} for reason, count in sorted(reasons.items(), key=lambda r: -r[1])],
    }


def close_unfinished(why: str) -> int:
    """Mark runs that never finished (the hub stopped mid-run) as finished, saying why; how many there were."""
    closed = 0
    for run in RetentionRun.select().where(RetentionRun.finished_at.is_null(True)):
        details = {**(run.details or {}), "errors": [*(run.details or {}).get("errors", []), why]}
        closed += RetentionRun.update(finished_at=utcnow(), details=details).where(RetentionRun.id == run.id).execute()
    return closed
