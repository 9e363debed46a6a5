"""A schedule's occurrences as the API shows them: the engine's expansion merged with the stored rows and their jobs.

State of one occurrence: a row `skipped`/`withdrawn` as stored; no jobs and not yet ended -> `planned`;
else from its jobs: any recording/uploading -> `recording`; any queued/claimed -> `dispatched`; all ended:
any completed -> `completed`, else any failed -> `failed`, else any missed -> `missed` (reason from the
jobs), else `withdrawn`; an ended occurrence without jobs -> `missed` ("no node was targeted" when it was
dispatched to none, else "not dispatched"). Expanded occurrences before the schedule existed are left out.
Also: skip the next occurrence and undo it, the preview of an unsaved schedule, the week view.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import peewee
from hark_fleet.hub.auth.principal import SiteScope
from hark_fleet.hub.clock import iso
from hark_fleet.hub.db.models import Node, Recording, RecordingJob, Schedule, ScheduleOccurrence, Site, database_proxy
from hark_fleet.hub.errors import Conflict, InvalidRequest, NotFound
from hark_fleet.hub.ids import new_id
from hark_fleet.hub.services.audit import Actor, record
from hark_fleet.hub.services.listing import get_scoped, site_in_scope
from hark_fleet.hub.services.schedule_specs import spec_of
from hark_fleet.hub.services.schedule_times import Expansion, Occurrence, ScheduleSpec, occurrences

MANAGE = "schedule:manage"
DEFAULT_BACK = timedelta(days=7)
DEFAULT_AHEAD = timedelta(days=14)
DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
MAX_WINDOW = timedelta(days=400)
UPCOMING_DEFAULT = timedelta(days=7)
UPCOMING_MAX = timedelta(days=8)
UPCOMING_MAX_ITEMS = 5000
PREVIEW_COUNT = 10
# Growing look-ahead windows for "the next occurrences": an hourly rule is found in the first, a yearly one in the third.
_WINDOWS = (timedelta(days=2), timedelta(days=35), timedelta(days=400), timedelta(days=3700))
_STOPPED = ("skipped", "withdrawn")


def aware(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def naive(value: datetime) -> datetime:
    return value.astimezone(UTC).replace(tzinfo=None) if value.tzinfo is not None else value


def next_takes(spec: ScheduleSpec, now: datetime, count: int, excluded: Iterable[datetime] = ()) -> list[Occurrence]:
    """The first `count` occurrences starting after `now` whose start (naive UTC) is not in `excluded`."""
    start = aware(now)
    skip = set(excluded)
    first_local = aware(spec.start_local) - timedelta(days=2)  # its zone is at most 14 h from UTC
    base = max(start, first_local)
    found: list[Occurrence] = []
    for window in _WINDOWS:
        expansion = occurrences(spec, start, base + window, count + len(skip))
        found = [o for o in expansion.occurrences if naive(o.start_utc) not in skip and o.start_utc > start]
        if len(found) >= count:
            break
    return found[:count]


def spec_or_none(schedule: Schedule, site: Site | None = None) -> ScheduleSpec | None:
    try:
        return spec_of(schedule, site)
    except (TypeError, ValueError):
        return None


def stopped_starts(schedule_id: str, after: datetime) -> set[datetime]:
    rows = ScheduleOccurrence.select(ScheduleOccurrence.start_at).where(
        ScheduleOccurrence.schedule_id == schedule_id,
        ScheduleOccurrence.start_at > naive(after),
        ScheduleOccurrence.state.in_(_STOPPED),
    )
    return {r.start_at for r in rows}


def take_to_api(o: Occurrence) -> dict[str, Any]:
    return {"start_utc": iso(o.start_utc), "end_utc": iso(o.end_utc), "local_start": o.local_start}


def next_occurrence(schedule: Schedule, now: datetime, site: Site | None = None) -> dict[str, Any] | None:
    """The next occurrence that will record (not skipped), or None (also while the schedule is disabled)."""
    if not schedule.enabled:
        return None
    spec = spec_or_none(schedule, site)
    if spec is None:
        return None
    takes = next_takes(spec, now, 1, stopped_starts(schedule.id, now))
    return take_to_api(takes[0]) if takes else None


# -- merging expansion, rows and jobs -------------------------------------------------------------


@dataclass
class _Slot:
    start: datetime  # naive UTC
    end: datetime
    local_start: str
    note: str | None
    row: ScheduleOccurrence | None


def _jobs_state(live: Sequence[RecordingJob], row_reason: str | None) -> tuple[str, str | None]:
    states = [j.state for j in live]
    errors = [j.error for j in live if j.error]
    if any(s in ("recording", "uploading") for s in states):
        return "recording", row_reason
    if any(s in ("queued", "claimed") for s in states):
        return "dispatched", row_reason
    done = states.count("completed")
    if done:
        others = len(states) - done
        if not others:
            return "completed", row_reason
        why = f": {errors[0]}" if errors else ""
        return "completed", f"{others} of {len(states)} nodes did not record it{why}"
    if all(s == "missed" for s in states):
        return "missed", errors[0] if errors else "no node started it"
    return "failed", errors[0] if errors else row_reason


def _state(slot: _Slot, jobs: Sequence[RecordingJob], now: datetime) -> tuple[str, str | None]:
    row = slot.row
    row_reason = row.reason if row is not None else None
    if row is not None and row.state in _STOPPED:
        return row.state, row_reason
    live = [j for j in jobs if j.state != "cancelled"]
    if live:
        return _jobs_state(live, row_reason)
    if slot.end > now:
        if slot.start <= now and row is None:
            return "planned", "due now, not dispatched yet"
        return "planned", row_reason
    if jobs:  # every job was withdrawn or stopped before it recorded
        return "withdrawn", next((j.error for j in jobs if j.error), row_reason)
    if row is not None and row.state in ("missed", "failed") and row_reason:
        return "missed", row_reason
    if row is not None and (row.state == "dispatched" or row.run_now):
        return "missed", row_reason if row_reason and row_reason.startswith("not dispatched") else "no node was targeted"
    return "missed", "not dispatched"


def _recording_to_api(r: Recording) -> dict[str, Any]:
    return {"id": r.id, "node_id": r.node_id, "status": r.status, "started_at": iso(r.started_at), "late_s": r.late_s}


def _slots_to_api(slots: list[_Slot], now: datetime, disabled: bool = False) -> list[dict[str, Any]]:
    row_ids = [s.row.id for s in slots if s.row is not None]
    jobs: dict[str, list[RecordingJob]] = defaultdict(list)
    recordings: dict[str, list[Recording]] = defaultdict(list)
    for i in range(0, len(row_ids), 500):
        chunk = row_ids[i : i + 500]
        for job in RecordingJob.select().where(RecordingJob.occurrence_id.in_(chunk)).order_by(RecordingJob.node_id):
            jobs[str(job.occurrence_id)].append(job)
        for rec in Recording.select().where(Recording.occurrence_id.in_(chunk)).order_by(Recording.node_id, Recording.id):
            recordings[str(rec.occurrence_id)].append(rec)
    result = []
    for slot in slots:
        row_id = slot.row.id if slot.row is not None else None
        state, reason = _state(slot, jobs.get(row_id, []) if row_id else [], now)
        if state == "planned" and disabled and reason is None:
            reason = "the schedule is disabled: it is not dispatched"
        recs = recordings.get(row_id, []) if row_id else []
        result.append(
            {
                "id": row_id,
                "start_utc": iso(slot.start),
                "end_utc": iso(slot.end),
                "local_start": slot.local_start,
                "state": state,
                "reason": reason,
                "note": slot.note,
                "run_now": bool(slot.row.run_now) if slot.row is not None else False,
                "late": any((r.late_s or 0) > 0 for r in recs),
                "recordings": [_recording_to_api(r) for r in recs],
            }
        )
    return result


def merged(
    schedule: Schedule, site: Site | None, start: datetime, end: datetime, limit: int, now: datetime
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The occurrences starting in [start, end) (at most `limit`, in time order) and the days without one."""
    spec = spec_or_none(schedule, site)
    expansion = occurrences(spec, aware(start), aware(end), limit) if spec is not None else Expansion()
    rows = list(
        ScheduleOccurrence.select()
        .where(
            ScheduleOccurrence.schedule_id == schedule.id,
            ScheduleOccurrence.start_at >= naive(start),
            ScheduleOccurrence.start_at < naive(end),
        )
        .order_by(ScheduleOccurrence.start_at)
        .limit(limit)
    )
    by_start = {r.start_at: r for r in rows}
    created = schedule.created_at
    slots: dict[datetime, _Slot] = {}
    for o in expansion.occurrences:
        at = naive(o.start_utc)
        row = by_start.get(at)
        if row is None and created is not None and at < created.replace(microsecond=0):
            continue  # before the schedule existed: never due
        slots[at] = _Slot(at, naive(o.end_utc), o.local_start, o.note, row)
    for row in rows:
        if row.start_at not in slots:
            slots[row.start_at] = _Slot(row.start_at, row.end_at, row.local_start, None, row)
    ordered = [slots[k] for k in sorted(slots)][:limit]
    absent = [{"day": a.day.isoformat(), "reason": a.reason} for a in expansion.absent]
    return _slots_to_api(ordered, naive(now), disabled=not schedule.enabled), absent


def get_schedule(scope: SiteScope, schedule_id: str) -> Schedule:
    schedule: Schedule = get_scoped(Schedule, schedule_id, Schedule.site, scope)
    return schedule


def _window(
    time_from: datetime | None, time_to: datetime | None, back: timedelta, ahead: timedelta, most: timedelta, now: datetime
) -> tuple[datetime, datetime]:
    start = time_from if time_from is not None else naive(now) - back
    end = time_to if time_to is not None else (start + ahead + back if time_from is not None else naive(now) + ahead)
    if not start < end:
        raise InvalidRequest("The time range is empty.", fields={"to": "must be after from"})
    if end - start > most:
        raise InvalidRequest("The time range is too long.", fields={"to": f"at most {most.days} days after from"})
    return start, end


def list_occurrences(
    scope: SiteScope, schedule_id: str, time_from: datetime | None, time_to: datetime | None, limit: int, now: datetime
) -> dict[str, Any]:
    """`GET /schedules/{id}/occurrences`: default from a week back to two weeks ahead."""
    schedule = get_schedule(scope, schedule_id)
    start, end = _window(time_from, time_to, DEFAULT_BACK, DEFAULT_AHEAD, MAX_WINDOW, now)
    data, absent = merged(schedule, None, start, end, limit, now)
    return {"data": data, "absent": absent, "meta": {"from": iso(start), "to": iso(end), "limit": limit}}


def occurrence_api(schedule: Schedule, row: ScheduleOccurrence, now: datetime) -> dict[str, Any]:
    slot = _Slot(row.start_at, row.end_at, row.local_start, None, row)
    return _slots_to_api([slot], naive(now), disabled=not schedule.enabled)[0]


# -- skipping --------------------------------------------------------------------------------------


def skip_next(actor: Actor, scope: SiteScope, schedule_id: str, now: datetime) -> dict[str, Any]:
    """Skip the next occurrence that would record (its row `skipped`; the dispatcher then withdraws its jobs)."""
    schedule = get_schedule(scope, schedule_id)
    if not schedule.enabled:
        raise Conflict("The schedule is disabled: it has no next occurrence to skip.")
    spec = spec_or_none(schedule)
    takes = next_takes(spec, now, 1, stopped_starts(schedule.id, now)) if spec is not None else []
    if not takes:
        raise Conflict("The schedule has no upcoming occurrence to skip.")
    take = takes[0]
    by = {"type": actor.type, "id": actor.id, "name": actor.name}
    reason = f"skipped by {actor.name or actor.type}"
    at = naive(take.start_utc)
    with database_proxy.atomic():
        row = ScheduleOccurrence.get_or_none(ScheduleOccurrence.schedule_id == schedule.id, ScheduleOccurrence.start_at == at)
        if row is None:
            try:
                with database_proxy.atomic():
                    row = ScheduleOccurrence.create(
                        id=new_id("occ"),
                        schedule_id=schedule.id,
                        site=schedule.site,
                        start_at=at,
                        end_at=naive(take.end_utc),
                        local_start=take.local_start,
                        state="skipped",
                        reason=reason,
                        skipped_by=by,
                        created_at=naive(now),
                        updated_at=naive(now),
                    )
            except peewee.IntegrityError:  # the dispatcher made it meanwhile
                row = ScheduleOccurrence.get(ScheduleOccurrence.schedule_id == schedule.id, ScheduleOccurrence.start_at == at)
        if row.state != "skipped":
            ScheduleOccurrence.update(state="skipped", reason=reason, skipped_by=by, updated_at=naive(now)).where(
                ScheduleOccurrence.id == row.id
            ).execute()
        row = ScheduleOccurrence.get_by_id(row.id)
        after = occurrence_api(schedule, row, now)
        record(
            actor, "schedule.skip", permission=MANAGE, target=("schedule", schedule.id), after={"site": schedule.site, **after}
        )
    return after


def unskip(actor: Actor, scope: SiteScope, schedule_id: str, occurrence_id: str, now: datetime) -> dict[str, Any]:
    """Undo a skip while the occurrence has not started (409 after); the dispatcher picks it up again."""
    schedule = get_schedule(scope, schedule_id)
    row = ScheduleOccurrence.get_or_none(ScheduleOccurrence.id == occurrence_id, ScheduleOccurrence.schedule_id == schedule.id)
    if row is None:
        raise NotFound(f"No occurrence {occurrence_id} of schedule {schedule.id}.")
    if row.state != "skipped":
        raise Conflict(f"The occurrence is not skipped (it is {row.state}).")
    if row.start_at <= naive(now):
        raise Conflict("The occurrence has started or passed: a skip is undone only before it starts.")
    with database_proxy.atomic():
        before = occurrence_api(schedule, row, now)
        ScheduleOccurrence.update(state="planned", reason=None, skipped_by=None, updated_at=naive(now)).where(
            ScheduleOccurrence.id == row.id, ScheduleOccurrence.state == "skipped"
        ).execute()
        after = occurrence_api(schedule, ScheduleOccurrence.get_by_id(row.id), now)
        record(
            actor,
            "schedule.unskip",
            permission=MANAGE,
            target=("schedule", schedule.id),
            before={"site": schedule.site, **before},
            after={"site": schedule.site, **after},
        )
    return after


# -- the week view ------------------------------------------------------------------------------


def _targets(schedule: Schedule, nodes: Mapping[str, Node]) -> list[str]:
    target = schedule.target or {}
    if "node_ids" in target:
        return sorted(x for x in target.get("node_ids") or [] if x in nodes)
    selector = target.get("selector") or {}
    site, tags = selector.get("site"), set(selector.get("tags") or [])
    return sorted(n.id for n in nodes.values() if (site is None or n.site == site) and tags <= set(n.tags or []))


def upcoming(
    scope: SiteScope,
    site: str | None,
    node_id: str | None,
    time_from: datetime | None,
    time_to: datetime | None,
    now: datetime,
) -> dict[str, Any]:
    """Every visible enabled schedule's occurrences in the window (default the next 7 days, at most 8), in time order."""
    start = time_from if time_from is not None else naive(now)
    end = time_to if time_to is not None else start + UPCOMING_DEFAULT
    if not start < end:
        raise InvalidRequest("The time range is empty.", fields={"to": "must be after from"})
    if end - start > UPCOMING_MAX:
        raise InvalidRequest("The time range is too long.", fields={"to": "at most 8 days after from"})
    if site is not None and (Site.get_or_none(Site.id == site) is None or not scope.allows(site)):
        raise InvalidRequest("Unknown site.", fields={"site": f"no site {site}"})
    nodes = {n.id: n for n in Node.select(Node.id, Node.site, Node.tags)}
    if node_id is not None and (node_id not in nodes or not scope.allows(nodes[node_id].site)):
        raise InvalidRequest("Unknown node.", fields={"node_id": f"no node {node_id}"})
    query = Schedule.select().where(Schedule.enabled == True)  # noqa: E712 (SQL)
    if not scope.everywhere:
        query = query.where(site_in_scope(Schedule.site, scope))
    sites = {s.id: s for s in Site.select()}
    items: list[dict[str, Any]] = []
    truncated = False
    for schedule in query.order_by(Schedule.id):
        node_ids = _targets(schedule, nodes)
        if node_id is not None and node_id not in node_ids:
            continue
        if site is not None and schedule.site != site and not any(nodes[n].site == site for n in node_ids):
            continue
        data, _ = merged(schedule, sites.get(schedule.site or ""), start, end, MAX_LIMIT, now)
        for occurrence in data:
            items.append({"schedule_id": schedule.id, "schedule_name": schedule.name, "node_ids": node_ids, **occurrence})
        if len(items) > UPCOMING_MAX_ITEMS:
            truncated = True
            break
    items.sort(key=lambda x: (x["start_utc"], x["schedule_name"], x["schedule_id"]))
    return {"data": items[:UPCOMING_MAX_ITEMS], "meta": {"from": iso(start), "to": iso(end), "truncated": truncated}}


def preview_takes(spec: ScheduleSpec, now: datetime) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The first occurrences from now (or from valid_from, if later), and the days without one among them."""
    start = aware(now)
    if spec.valid_from is not None and spec.valid_from > start:
        start = spec.valid_from - timedelta(seconds=1)
    takes = next_takes(spec, start, PREVIEW_COUNT)
    horizon = takes[-1].start_utc + timedelta(seconds=1) if len(takes) == PREVIEW_COUNT else aware(now) + timedelta(days=35)
    absent = occurrences(spec, aware(now), horizon, PREVIEW_COUNT).absent if spec.solar is not None else []
    shown = [{**take_to_api(t), "note": t.note} for t in takes]
    return shown, [{"day": a.day.isoformat(), "reason": a.reason} for a in absent]
