"""Schedules: recordings on a timetable. List, facets, export, detail with actions, create, change, delete, preview.

Reads need `schedule:read`, writes `schedule:manage`. Scope is the schedule's `site` (the one site all its
targets are in): a site-limited caller sees and changes only its sites' schedules, and a schedule without
a site only hub-wide callers. Creating or changing a schedule whose takes would overlap another enabled
schedule's on a node answers 409 `schedule_conflict` unless it says `on_conflict` skip or allow. Every
write is audited (`schedule.create|update|delete`); the handlers then let the dispatcher reconcile jobs.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from hark_fleet.hub.auth.principal import Principal, SiteScope
from hark_fleet.hub.clock import iso, utcnow
from hark_fleet.hub.db.models import Schedule, Site, database_proxy
from hark_fleet.hub.errors import Conflict, InvalidRequest
from hark_fleet.hub.ids import new_id
from hark_fleet.hub.services import query
from hark_fleet.hub.services.audit import Actor, record
from hark_fleet.hub.services.grants import owner_id
from hark_fleet.hub.services.listing import Filter, ListSpec, one_of
from hark_fleet.hub.services.schedule_checks import FIELDS, ON_CONFLICT, Checked, check, raise_problems
from hark_fleet.hub.services.schedule_conflicts import find_conflicts, refuse
from hark_fleet.hub.services.schedule_occurrences import get_schedule, next_occurrence, preview_takes, spec_or_none
from hark_fleet.hub.services.schedule_specs import target_node_ids
from hark_fleet.hub.services.schedule_times import MAX_DURATION_S
from hark_fleet.hub.services.sites import check_time_zone
from hark_fleet.hub.services.versioning import update_if_unchanged

READ = "schedule:read"
MANAGE = "schedule:manage"


def schedule_to_api(schedule: Schedule, now: datetime | None = None, site: Site | None = None) -> dict[str, Any]:
    return {
        "id": schedule.id,
        "name": schedule.name,
        "description": schedule.description,
        "enabled": bool(schedule.enabled),
        "target": schedule.target or {},
        "site": schedule.site,
        "time_zone": schedule.time_zone,
        "start_local": schedule.start_local,
        "duration_s": schedule.duration_s,
        "rrule": schedule.rrule,
        "exdates": list(schedule.exdates or []),
        "valid_from": iso(schedule.valid_from),
        "valid_until": iso(schedule.valid_until),
        "solar": schedule.solar,
        "profile_id": schedule.profile_id,
        "channel_map_id": schedule.channel_map_id,
        "metadata": schedule.metadata or {},
        "tags": list(schedule.tags or []),
        "on_conflict": schedule.on_conflict,
        "version": schedule.version,
        "created_by": schedule.created_by or {},
        "created_at": iso(schedule.created_at),
        "updated_at": iso(schedule.updated_at),
        "next_occurrence": next_occurrence(schedule, now or utcnow(), site),
    }


def _time_zone(value: str) -> str:
    check_time_zone(value)
    return value


SCHEDULE_LIST = ListSpec(
    model=Schedule,
    serialize=schedule_to_api,
    filters=(
        Filter("site", Schedule.site),
        Filter("enabled", Schedule.enabled, query.boolean),
        Filter("time_zone", Schedule.time_zone, _time_zone),
        Filter("profile_id", Schedule.profile_id),
        Filter("on_conflict", Schedule.on_conflict, one_of(ON_CONFLICT)),
    ),
    search=(Schedule.name, Schedule.description),
    time_field=Schedule.created_at,
    site_field=Schedule.site,
    export_columns=(
        "id",
        "name",
        "description",
        "enabled",
        "site",
        "target",
        "time_zone",
        "start_local",
        "duration_s",
        "rrule",
        "exdates",
        "valid_from",
        "valid_until",
        "solar",
        "profile_id",
        "channel_map_id",
        "on_conflict",
        "tags",
        "metadata",
        "next_occurrence",
        "created_by",
        "created_at",
        "updated_at",
        "version",
    ),
)


def _state(allowed: bool, reason: str | None) -> dict[str, Any]:
    return {"allowed": allowed, "reason": None if allowed else reason}


def schedule_actions(schedule: Schedule, principal: Principal, detail: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """What the caller may do to this schedule now, and why not."""
    may = principal.can(MANAGE) and principal.scope(MANAGE).allows(schedule.site)
    denied = "needs schedule:manage on this schedule's site"
    no_nodes = None if detail["node_ids"] else "the schedule targets no node now"
    no_next = None
    if not schedule.enabled:
        no_next = "the schedule is disabled"
    elif detail["next_occurrence"] is None:
        no_next = "the schedule has no upcoming occurrence"
    return {
        "update": _state(may, denied),
        "run_now": _state(may and no_nodes is None, denied if not may else no_nodes),
        "skip_next": _state(may and no_next is None, denied if not may else no_next),
        "enable": _state(may and not schedule.enabled, denied if not may else "the schedule is enabled"),
        "disable": _state(may and bool(schedule.enabled), denied if not may else "the schedule is disabled"),
        "delete": _state(may, denied),
    }


def schedule_detail(scope: SiteScope, schedule_id: str, principal: Principal, now: datetime) -> dict[str, Any]:
    """The schedule, the nodes it targets now, and its actions."""
    schedule = get_schedule(scope, schedule_id)
    detail = {**schedule_to_api(schedule, now), "node_ids": target_node_ids(schedule.target or {})}
    detail["actions"] = schedule_actions(schedule, principal, detail)
    return detail


def _checked_or_conflict(checked: Checked, schedule_id: str | None, now: datetime) -> None:
    raise_problems(checked)
    f = checked.fields
    if f["enabled"] and f["on_conflict"] == "reject" and checked.spec is not None:
        conflicts = find_conflicts(schedule_id, checked.spec, checked.nodes, now)
        if conflicts:
            refuse(conflicts)


def create_schedule(actor: Actor, scope: SiteScope, values: Mapping[str, Any], now: datetime) -> dict[str, Any]:
    """A new schedule: every problem in one 400; overlapping another's takes on a node is a 409 unless it says how."""
    checked = check(values, scope, now)
    _checked_or_conflict(checked, None, now)
    at = now.replace(tzinfo=None)
    with database_proxy.atomic():
        schedule = Schedule.create(
            id=new_id("sch"),
            **{k: checked.fields[k] for k in (*FIELDS, "site")},
            version=1,
            created_by={"type": actor.type, "id": actor.id, "name": actor.name},
            created_by_id=owner_id(actor),
            created_at=at,
            updated_at=at,
        )
        after = schedule_to_api(schedule, now, checked.site)
        record(actor, "schedule.create", permission=MANAGE, target=("schedule", schedule.id), after=after)
    return after


def update_schedule(
    actor: Actor, scope: SiteScope, schedule_id: str, changes: Mapping[str, Any], now: datetime
) -> tuple[dict[str, Any], bool]:
    """Change the fields given at the `version` read (409 if it moved on); the result is checked whole. Also: changed?"""
    schedule = get_schedule(scope, schedule_id)
    if "version" not in changes:
        raise InvalidRequest("The change needs the version it was made from.", fields={"version": "is required"})
    if changes["version"] != schedule.version:
        raise Conflict(f"The schedule changed meanwhile (version {schedule.version}); read it again.")
    before = schedule_to_api(schedule, now)
    values = {k: before[k] for k in FIELDS} | {k: v for k, v in changes.items() if k in FIELDS}
    checked = check(values, scope, now)
    stored = {k: checked.fields[k] for k in (*FIELDS, "site")}
    current = {k: getattr(schedule, k) for k in stored}
    if not checked.problems and stored == current:
        return before, False
    _checked_or_conflict(checked, schedule.id, now)
    with database_proxy.atomic():
        update_if_unchanged(Schedule, schedule, stored, "schedule")
        after = schedule_to_api(Schedule.get_by_id(schedule.id), now, checked.site)
        record(actor, "schedule.update", permission=MANAGE, target=("schedule", schedule.id), before=before, after=after)
    return after, True


def delete_schedule(actor: Actor, scope: SiteScope, schedule_id: str, now: datetime) -> None:
    """Delete a schedule; the dispatcher then withdraws its jobs that have not started (recordings made stay)."""
    schedule = get_schedule(scope, schedule_id)
    with database_proxy.atomic():
        before = schedule_to_api(schedule, now)
        Schedule.delete().where(Schedule.id == schedule.id).execute()
        record(actor, "schedule.delete", permission=MANAGE, target=("schedule", schedule.id), before=before)


def preview(scope: SiteScope, values: Mapping[str, Any], now: datetime) -> dict[str, Any]:
    """An unsaved schedule's first occurrences and its problems (never a 400 for them: the console shows them live)."""
    checked = check(values, scope, now)
    for key in sorted(set(values) - set(FIELDS))[:20]:
        checked.problems[str(key)[:100]] = "is not a known field"
    takes: list[dict[str, Any]] = []
    absent: list[dict[str, Any]] = []
    if checked.spec is not None:
        takes, absent = preview_takes(checked.spec, now)
    return {
        "occurrences": takes,
        "absent": absent,
        "fields": dict(sorted(checked.problems.items())),
        "time_zone": checked.fields.get("time_zone"),
        "site": checked.fields.get("site"),
        "node_ids": [n.id for n in checked.nodes],
    }


def run_now_target(scope: SiteScope, schedule_id: str, duration_s: int | None) -> Schedule:
    """The schedule to run now, once the request is checked (a duration from 1 s to 7 days; a node to record on)."""
    schedule = get_schedule(scope, schedule_id)
    if duration_s is not None and (isinstance(duration_s, bool) or not 0 < duration_s <= MAX_DURATION_S):
        raise InvalidRequest("Invalid duration.", fields={"duration_s": f"a whole number of seconds from 1 to {MAX_DURATION_S}"})
    if not target_node_ids(schedule.target or {}):
        raise Conflict("The schedule targets no node now: there is nothing to run.")
    if spec_or_none(schedule) is None:
        raise Conflict("The schedule's timing is not usable; change it first.")
    return schedule
