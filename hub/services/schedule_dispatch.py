"""Schedules into recording jobs: each occurrence in the lead window becomes one job per target node, exactly once.

The node stores its jobs ahead of time and starts each on its own clock at `start_at`, whether or not
the hub is reachable then (issue 19). Here, on the hub:

- `dispatch` expands enabled schedules over the lead window and gives every occurrence a row
  (get-or-create on the unique (schedule_id, start_at)) and every target node a queued job with its
  recording (skipped when the unique (occurrence_id, node_id) already has one, inside a savepoint),
  so running it twice, at once, or again after a crash in the middle never makes a second job.
- `reconcile` brings the unstarted jobs of one schedule in line after an edit, delete, disable,
  skip or unskip: updated in place (`revision` + 1) when still wanted, else cancelled `withdrawn: ...`.
- `run_now` makes a one-off occurrence starting now.
- `sweep_missed` ends scheduled jobs nobody started by their end (+ a grace) as `missed`, with why.

Plain functions run on the database worker; `hub.schedule_dispatcher` calls them in small batches.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, cast
from zoneinfo import ZoneInfo

import peewee
from hark_fleet.hub.clock import iso
from hark_fleet.hub.db.models import (
    ChannelMapTemplate,
    Node,
    Recording,
    RecordingJob,
    RecordingProfile,
    Schedule,
    ScheduleOccurrence,
    Site,
    database_proxy,
)
from hark_fleet.hub.errors import Conflict
from hark_fleet.hub.events import FleetEvent
from hark_fleet.hub.ids import new_id
from hark_fleet.hub.services import recording_profiles
from hark_fleet.hub.services.audit import SYSTEM, Actor, record
from hark_fleet.hub.services.recordings import TERMINAL_STATUSES, end_job, job_event, job_to_api
from hark_fleet.hub.services.schedule_specs import spec_of, target_node_ids
from hark_fleet.hub.services.schedule_times import MAX_DURATION_S, Occurrence, ScheduleSpec, occurrences

LOCK_KEY = 0x68_61_72_6B_19  # "hark" + issue 19: PostgreSQL advisory lock held while dispatching
UNSTARTED = ("queued", "claimed")
NOT_DISPATCHABLE = ("skipped", "withdrawn")
WITHDRAWN = "withdrawn: "
MISSED_BY_HUB = "the node did not start it"
MISSED_BATCH = 500
EXPAND_LIMIT = 5000  # occurrences of one schedule in one window (hourly for a week is 168)
NEXT_PROBES = (timedelta(days=2), timedelta(days=33), timedelta(days=400))


@dataclass
class DispatchResult:
    """What a dispatch step did: events to publish, nodes to tell on `cmd/job {"scheduled": true}`, counts."""

    events: list[FleetEvent] = field(default_factory=list)
    nodes: set[str] = field(default_factory=set)
    occurrences: int = 0  # occurrence rows made
    jobs: int = 0  # jobs made (or changed, for reconcile / missed)
    complete: bool = True  # False: stopped at max_jobs; call again for the rest
    locked_out: bool = False  # another hub holds the dispatch lock (PostgreSQL): nothing was done
    next_start: dict[str, datetime | None] = field(default_factory=dict)  # schedule id -> first start after the window
    resume: dict[str, datetime] = field(default_factory=dict)  # schedule id -> the occurrence to go on from (cut short)

    def add(self, other: DispatchResult) -> DispatchResult:
        self.events += other.events
        self.nodes |= other.nodes
        self.occurrences += other.occurrences
        self.jobs += other.jobs
        self.complete = self.complete and other.complete
        self.locked_out = self.locked_out or other.locked_out
        self.next_start.update(other.next_start)
        self.resume = other.resume
        return self


# -- small helpers ----------------------------------------------------------------------------------


def _naive(value: datetime) -> datetime:
    """Naive UTC, as the database stores it."""
    return value.astimezone(UTC).replace(tzinfo=None) if value.tzinfo is not None else value


def _aware(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


@contextlib.contextmanager
def _transaction() -> Iterator[None]:
    """One write transaction; on SQLite taken as a writer from its start (no upgrade deadlock between two dispatchers)."""
    db = database_proxy.obj
    if isinstance(db, peewee.SqliteDatabase) and not db.in_transaction():
        with db.atomic("IMMEDIATE"):
            yield
        return
    with database_proxy.atomic():
        yield


def _take_lock() -> bool:
    """On PostgreSQL, the deployment-wide dispatch lock for this transaction; False when another hub holds it."""
    db = database_proxy.obj
    if not isinstance(db, peewee.PostgresqlDatabase):
        return True  # SQLite: the data-dir lock already keeps a second hub off this database
    row = db.execute_sql("SELECT pg_try_advisory_xact_lock(%s)", (LOCK_KEY,)).fetchone()
    return bool(row and row[0])


def _local(start: datetime, zone: str) -> str:
    return _aware(start).astimezone(ZoneInfo(zone)).isoformat(timespec="seconds")


def _events_for(occurrence: ScheduleOccurrence, kind: str, node_ids: Sequence[str], **extra: Any) -> FleetEvent:
    data = {
        "schedule_id": occurrence.schedule_id,
        "occurrence_id": occurrence.id,
        "start_utc": iso(occurrence.start_at),
        "end_utc": iso(occurrence.end_at),
        "node_ids": list(node_ids),
        "site": occurrence.site,
        **extra,
    }
    return FleetEvent(f"schedule.occurrence.{kind}", occurrence.site, data)


# -- the recording a job captures -----------------------------------------------------------------------


@dataclass(frozen=True)
class _Take:
    """What every job of one schedule's occurrence records with (from the schedule and its profile)."""

    profile: RecordingProfile | None
    snapshot: dict[str, Any]
    channels: int | None
    problem: str | None


def _take_of(schedule: Schedule, duration_s: float) -> _Take:
    profile = RecordingProfile.get_or_none(RecordingProfile.id == schedule.profile_id)
    if profile is None and schedule.profile_id == recording_profiles.DEFAULT_ID:
        recording_profiles.ensure_default()
        profile = RecordingProfile.get_or_none(RecordingProfile.id == schedule.profile_id)
    if profile is None:
        return _Take(None, {}, None, f"its recording profile {schedule.profile_id} no longer exists")
    snapshot = recording_profiles.snapshot(profile)
    if schedule.channel_map_id:
        snapshot["channel_map_template_id"] = schedule.channel_map_id
    if duration_s > float(snapshot.get("max_duration_s") or 0):
        snapshot["max_duration_s"] = float(duration_s)  # the schedule says how long; the profile's cap is for open takes
    channels = profile.channels
    template_id = snapshot.get("channel_map_template_id")
    if channels is None and template_id is not None:
        template = ChannelMapTemplate.get_or_none(ChannelMapTemplate.id == template_id)
        channels = template.channel_count if template is not None else None
    return _Take(profile, snapshot, channels, None)


def _recording_fields(schedule: Schedule, occurrence: ScheduleOccurrence, take: _Take) -> dict[str, Any]:
    """The recording columns a schedule decides (set when dispatched, and again when an edit changes them)."""
    assert take.profile is not None
    local = occurrence.local_start
    metadata = {**(schedule.metadata or {}), "schedule_id": schedule.id, "occurrence_start": local}
    if schedule.tags:
        metadata.setdefault("tags", list(schedule.tags))
    return {
        "name": f"{schedule.name} {local[:16].replace('T', ' ')}"[:200],
        "profile_id": take.profile.id,
        "profile": take.snapshot,
        "format": take.profile.format,
        "sample_rate": take.profile.sample_rate,
        "bit_depth": take.profile.bit_depth,
        "channels": take.channels,
        "requested_duration_s": (occurrence.end_at - occurrence.start_at).total_seconds(),
        "metadata": metadata,
    }


# -- occurrence rows ----------------------------------------------------------------------------------


def _occurrence_row(schedule: Schedule, occ: Occurrence, at: datetime, run_now: bool = False) -> tuple[ScheduleOccurrence, bool]:
    """The row of (schedule, start): got, or made `planned` (idempotent under concurrency by the unique index)."""
    start, end = _naive(occ.start_utc), _naive(occ.end_utc)
    row = ScheduleOccurrence.get_or_none(ScheduleOccurrence.schedule_id == schedule.id, ScheduleOccurrence.start_at == start)
    if row is not None:
        return row, False
    try:
        with database_proxy.atomic():
            row = ScheduleOccurrence.create(
                id=new_id("sco"),
                schedule_id=schedule.id,
                site=schedule.site,
                start_at=start,
                end_at=end,
                local_start=occ.local_start,
                state="planned",
                reason=occ.note,
                run_now=run_now,
                created_at=at,
                updated_at=at,
            )
        return row, True
    except peewee.IntegrityError:
        found: ScheduleOccurrence = ScheduleOccurrence.get(
            ScheduleOccurrence.schedule_id == schedule.id, ScheduleOccurrence.start_at == start
        )
        return found, False


def _job_rows(
    schedule: Schedule, occurrence: ScheduleOccurrence, node: Node, fields: dict[str, Any], at: datetime
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The recording row and the queued job row of one node's take of the occurrence."""
    recording_id = new_id("rec")
    recording = {
        **fields,
        "id": recording_id,
        "node_id": node.id,
        "site": node.site,
        "status": "queued",
        "created_at": at,
        "created_by": schedule.created_by or {},
        "created_by_id": schedule.created_by_id,
        "updated_at": at,
        "schedule_id": schedule.id,
        "occurrence_id": occurrence.id,
        "scheduled_start_at": occurrence.start_at,
    }
    job = {
        "id": new_id("rjb"),
        "recording_id": recording_id,
        "node_id": node.id,
        "site": node.site,
        "state": "queued",
        "attempts": 1,
        "created_at": at,
        "updated_at": at,
        "schedule_id": schedule.id,
        "occurrence_id": occurrence.id,
        "start_at": occurrence.start_at,
        "end_at": occurrence.end_at,
        "revision": 0,
    }
    return recording, job


def _make_jobs(schedule: Schedule, occurrence: ScheduleOccurrence, nodes: list[Node], take: _Take, at: datetime) -> list[str]:
    """Queued jobs (and recordings) of the occurrence for these nodes; the ids of the nodes that got one.

    All in one insert inside a savepoint; when one of them exists already (another dispatcher was
    faster), one savepoint per job instead, so only the duplicates are left out.
    """
    if not nodes:
        return []
    fields = _recording_fields(schedule, occurrence, take)
    rows = [_job_rows(schedule, occurrence, node, fields, at) for node in nodes]
    try:
        with database_proxy.atomic():
            _insert_many(Recording, [recording for recording, _ in rows])
            _insert_many(RecordingJob, [job for _, job in rows])
        return [node.id for node in nodes]
    except peewee.IntegrityError:
        pass
    made: list[str] = []
    for node, (recording, job) in zip(nodes, rows, strict=True):
        try:
            with database_proxy.atomic():  # a savepoint: a duplicate rolls back this job's rows only
                Recording.insert(recording).execute()
                RecordingJob.insert(job).execute()
            made.append(node.id)
        except peewee.IntegrityError:
            continue
    return made


def _insert_many(model: type[peewee.Model], rows: list[dict[str, Any]]) -> None:
    """Insert rows of one shape with a single prepared statement (peewee's insert_many builds SQL per value: 10x slower)."""
    db = database_proxy.obj
    fields = [f for f in model._meta.sorted_fields if f.name in rows[0] or f.default is not None]
    for f in fields:
        if f.name not in rows[0]:  # the model's defaults, as peewee's own insert would fill them
            for row in rows:
                row[f.name] = f.default() if callable(f.default) else f.default
    columns = ", ".join(f'"{f.column_name}"' for f in fields)
    marks = ", ".join([db.param] * len(fields))
    sql = f'INSERT INTO "{model._meta.table_name}" ({columns}) VALUES ({marks})'
    params = [tuple(f.db_value(row[f.name]) for f in fields) for row in rows]
    with peewee.__exception_wrapper__:  # type: ignore[attr-defined]  # driver errors as peewee's (IntegrityError)
        db.cursor().executemany(sql, params)


def _revive(job_id: str, at: datetime) -> bool:
    """A job withdrawn by an earlier edit whose occurrence is wanted again goes back to `queued` (a new revision)."""
    with database_proxy.atomic():
        moved = (
            RecordingJob.update(state="queued", error=None, revision=RecordingJob.revision + 1, updated_at=at)
            .where(
                RecordingJob.id == job_id,
                RecordingJob.state == "cancelled",
                RecordingJob.capture_started == False,  # noqa: E712 - SQL comparison
                RecordingJob.error.startswith(WITHDRAWN),
            )
            .execute()
        )
        if moved:
            job: RecordingJob = RecordingJob.get_by_id(job_id)
            Recording.update(status="queued", error=None, updated_at=at).where(Recording.id == job.recording_id).execute()
    return bool(moved)


# -- conflicts (on_conflict "skip") ---------------------------------------------------------------------


def _clashing(node_id: str, schedule_id: str, start: datetime, end: datetime) -> RecordingJob | None:
    """Another schedule's live job on the node whose time overlaps [start, end)."""
    found: RecordingJob | None = (
        RecordingJob.select()
        .where(
            RecordingJob.node_id == node_id,
            RecordingJob.schedule_id.is_null(False),
            RecordingJob.schedule_id != schedule_id,
            RecordingJob.start_at < end,
            RecordingJob.end_at > start,
            RecordingJob.state.not_in(("cancelled", "missed", "failed")),
        )
        .first()
    )
    return found


def _schedule_name(schedule_id: str) -> str:
    row = Schedule.select(Schedule.name).where(Schedule.id == schedule_id).first()
    return row.name if row is not None else schedule_id


# -- dispatch -------------------------------------------------------------------------------------------


def due_schedules() -> list[tuple[str, int]]:
    """Enabled schedules as (id, version): the ones resolving conflicts by skipping last, so the others get their slots."""
    rows = Schedule.select(Schedule.id, Schedule.version, Schedule.on_conflict).where(Schedule.enabled == True)  # noqa: E712
    ordered = sorted(rows, key=lambda s: (s.on_conflict == "skip", s.id))
    return [(s.id, s.version) for s in ordered]


def next_start_after(spec: ScheduleSpec, after: datetime) -> datetime | None:
    """The first occurrence start at or after `after` within about a year (None: none that soon)."""
    for probe in NEXT_PROBES:
        found = occurrences(spec, after, after + probe, limit=1).occurrences
        if found:
            return found[0].start_utc
    return None


def dispatch(
    now: datetime,
    lead_s: float,
    schedule_ids: Sequence[str] | None = None,
    *,
    max_jobs: int | None = None,
    lock: bool = True,
    resume: Mapping[str, datetime] | None = None,
    max_seconds: float | None = None,
) -> DispatchResult:
    """Give every occurrence of the (enabled) schedules that has not ended and starts before `now + lead_s` its jobs.

    Idempotent: occurrence rows and jobs that exist are left alone. With `max_jobs`, stops after
    making that many jobs (`complete` False): call again. `next_start` tells, per schedule fully
    done, when its next occurrence after the window starts (the dispatcher need not look before then);
    `resume` tells, for a schedule cut short, the start of the occurrence to go on from: pass it back
    with the next call (occurrences before it were done by this one) to save looking at them again.
    With `max_seconds`, stops before the next schedule once that much time has passed (at least one is done).
    """
    started = time.perf_counter()
    now_aware = _aware(now)
    horizon = now_aware + timedelta(seconds=lead_s)
    at = _naive(now_aware)
    result = DispatchResult()
    with _transaction():
        if lock and not _take_lock():
            result.locked_out = True
            result.complete = False
            return result
        query = Schedule.select().where(Schedule.enabled == True)  # noqa: E712
        if schedule_ids is not None:
            query = query.where(Schedule.id.in_(list(schedule_ids)))
        schedules = sorted(query, key=lambda s: (s.on_conflict == "skip", s.id))
        takes: dict[tuple[Any, ...], _Take] = {}
        sites = {site.id: site for site in Site.select().where(Site.id.in_({s.site for s in schedules if s.site}))}
        for index, schedule in enumerate(schedules):
            if max_seconds is not None and index and time.perf_counter() - started > max_seconds:
                result.complete = False
                break
            budget = None if max_jobs is None else max_jobs - result.jobs
            if budget is not None and budget <= 0:
                result.complete = False
                break
            resume_at = (resume or {}).get(schedule.id)
            done = _dispatch_schedule(
                schedule, now_aware, horizon, at, budget, result, resume_at, takes, sites.get(schedule.site or "")
            )
            if not done:
                result.complete = False
                break
    return result


def _dispatch_schedule(
    schedule: Schedule,
    now: datetime,
    horizon: datetime,
    at: datetime,
    budget: int | None,
    result: DispatchResult,
    resume_at: datetime | None = None,
    takes: dict[tuple[Any, ...], _Take] | None = None,
    site: Site | None = None,
) -> bool:
    """Dispatch one schedule's window; False when the budget ran out first (`result.resume` says where to go on)."""
    try:
        spec = spec_of(schedule, site)
        # Still running occurrences too: a node that boots late records the remainder.
        expansion = occurrences(spec, now - timedelta(seconds=spec.duration_s), horizon, EXPAND_LIMIT)
        following = next_start_after(spec, horizon)
    except ValueError:
        result.next_start[schedule.id] = None  # a schedule the engine refuses: nothing to do until it is edited
        return True
    wanted = [o for o in expansion.occurrences if o.end_utc > now and (resume_at is None or o.start_utc >= resume_at)]
    rows = _occurrence_rows(schedule, wanted, at, result)
    live = [(occ, row) for occ, row in zip(wanted, rows, strict=True) if row.state not in NOT_DISPATCHABLE]
    if live:
        key = (schedule.profile_id, schedule.channel_map_id, spec.duration_s)
        takes = {} if takes is None else takes
        take = takes.get(key)
        if take is None:
            take = takes[key] = _take_of(schedule, spec.duration_s)
        ids = target_node_ids(schedule.target or {})
        nodes = list(Node.select(Node.id, Node.site).where(Node.id.in_(ids)).order_by(Node.id)) if ids else []
        existing = _existing_jobs([row.id for _, row in live])
        pending: list[tuple[ScheduleOccurrence, list[Node]]] = []
        cut: datetime | None = None
        for occ, row in live:
            if not _dispatch_occurrence(schedule, row, nodes, take, at, budget, result, existing.get(row.id, {}), pending):
                cut = occ.start_utc
                break
        _make_pending(schedule, pending, take, at, result)
        if cut is not None:
            result.resume[schedule.id] = cut
            return False
    result.next_start[schedule.id] = following
    return True


def _occurrence_rows(
    schedule: Schedule, wanted: list[Occurrence], at: datetime, result: DispatchResult
) -> list[ScheduleOccurrence]:
    """The rows of the wanted occurrences: read in one query, the missing ones made `planned` in one insert."""
    if not wanted:
        return []
    starts = [_naive(o.start_utc) for o in wanted]
    found = {
        r.start_at: r
        for r in ScheduleOccurrence.select().where(
            ScheduleOccurrence.schedule_id == schedule.id, ScheduleOccurrence.start_at.in_(starts)
        )
    }
    missing = [o for o, start in zip(wanted, starts, strict=True) if start not in found]
    if missing:
        made = [
            {
                "id": new_id("sco"),
                "schedule_id": schedule.id,
                "site": schedule.site,
                "start_at": _naive(o.start_utc),
                "end_at": _naive(o.end_utc),
                "local_start": o.local_start,
                "state": "planned",
                "reason": o.note,
                "run_now": False,
                "created_at": at,
                "updated_at": at,
            }
            for o in missing
        ]
        try:
            with database_proxy.atomic():
                _insert_many(ScheduleOccurrence, made)
            for values, o in zip(made, missing, strict=True):
                found[_naive(o.start_utc)] = ScheduleOccurrence(**values)
            result.occurrences += len(made)
        except peewee.IntegrityError:  # another dispatcher made some: one at a time
            for o in missing:
                row, new = _occurrence_row(schedule, o, at)
                found[row.start_at] = row
                result.occurrences += int(new)
    return [found[start] for start in starts]


def _existing_jobs(occurrence_ids: list[str]) -> dict[str, dict[str, tuple[str, str | None, bool, str]]]:
    """Occurrence id -> node id -> (state, error, capture started, job id) of the jobs there are."""
    if not occurrence_ids:
        return {}
    columns = (
        RecordingJob.occurrence_id,
        RecordingJob.node_id,
        RecordingJob.state,
        RecordingJob.error,
        RecordingJob.capture_started,
        RecordingJob.id,
    )
    found: dict[str, dict[str, tuple[str, str | None, bool, str]]] = {}
    query = RecordingJob.select(*columns).where(RecordingJob.occurrence_id.in_(occurrence_ids)).tuples()
    for occurrence_id, node_id, state, error, started, job_id in cast(list[tuple[str, str, str, str | None, bool, str]], query):
        found.setdefault(occurrence_id, {})[node_id] = (state, error, started, job_id)
    return found


def _dispatch_occurrence(
    schedule: Schedule,
    row: ScheduleOccurrence,
    nodes: list[Node],
    take: _Take,
    at: datetime,
    budget: int | None,
    result: DispatchResult,
    existing: dict[str, tuple[str, str | None, bool, str]],
    pending: list[tuple[ScheduleOccurrence, list[Node]]],
) -> bool:
    """Queue (in `pending`) the nodes of the occurrence that have no job yet; False when the budget ran out first."""
    if take.problem is not None:
        _set_occurrence(row, row.state, f"not dispatched: {take.problem}", at)
        return True
    if not nodes:
        _set_occurrence(row, row.state, "not dispatched: no node was targeted", at)
        return True
    revived: list[str] = []
    skipped: list[str] = []
    missing: list[Node] = []
    complete = True
    future = _aware(row.end_at) > _aware(at)
    waiting = sum(len(n) for _, n in pending)
    for node in nodes:
        found = existing.get(node.id)
        if found is not None:
            state, error, started, job_id = found
            withdrawn = state == "cancelled" and (error or "").startswith(WITHDRAWN) and not started
            if withdrawn and future and _revive(job_id, at):
                revived.append(node.id)
                result.jobs += 1
            continue
        if schedule.on_conflict == "skip":
            clash = _clashing(node.id, schedule.id, row.start_at, row.end_at)
            if clash is not None:
                skipped.append(f"{node.id} (clashes with schedule {_schedule_name(str(clash.schedule_id))!r})")
                continue
        if budget is not None and result.jobs + waiting + len(missing) >= budget:
            complete = False
            break
        missing.append(node)
    if skipped:
        more = f" and {len(skipped) - 20} more" if len(skipped) > 20 else ""
        state = "dispatched" if row.state in ("planned", "dispatched") else row.state
        _set_occurrence(row, state, "not dispatched to " + ", ".join(skipped[:20]) + more, at)
    if revived:
        _occurrences_dispatched([row], at)
        result.nodes.update(revived)
        result.events.append(_events_for(row, "dispatched", revived, jobs=len(revived)))
    if missing:
        pending.append((row, missing))
    elif row.state == "planned" and not skipped:
        _set_occurrence(row, "dispatched", row.reason, at)  # every target has its job already (a crash in between)
    return complete


def _make_pending(
    schedule: Schedule, pending: list[tuple[ScheduleOccurrence, list[Node]]], take: _Take, at: datetime, result: DispatchResult
) -> None:
    """Make the queued jobs of a schedule's occurrences in one insert (one per occurrence if another dispatcher raced us)."""
    if not pending:
        return
    made: dict[str, list[str]] = {}
    rows = [
        (row, node, _job_rows(schedule, row, node, _recording_fields(schedule, row, take), at))
        for row, nodes in pending
        for node in nodes
    ]
    try:
        with database_proxy.atomic():
            _insert_many(Recording, [recording for *_, (recording, _) in rows])
            _insert_many(RecordingJob, [job for *_, (_, job) in rows])
        for row, node, _ in rows:
            made.setdefault(row.id, []).append(node.id)
    except peewee.IntegrityError:
        for row, nodes in pending:
            made[row.id] = _make_jobs(schedule, row, nodes, take, at)
    by_id = {row.id: row for row, _ in pending}
    _occurrences_dispatched([by_id[i] for i, ids in made.items() if ids], at)
    for occurrence_id, node_ids in made.items():
        if node_ids:
            result.jobs += len(node_ids)
            result.nodes.update(node_ids)
            result.events.append(_events_for(by_id[occurrence_id], "dispatched", node_ids, jobs=len(node_ids)))


def _occurrences_dispatched(rows: list[ScheduleOccurrence], at: datetime) -> None:
    """Rows that got jobs: `planned` ones become `dispatched`; the first dispatch time is kept."""
    first = [r.id for r in rows if r.dispatched_at is None]
    planned = [r.id for r in rows if r.state == "planned"]
    if first:
        ScheduleOccurrence.update(dispatched_at=at, updated_at=at).where(ScheduleOccurrence.id.in_(first)).execute()
    if planned:
        ScheduleOccurrence.update(state="dispatched", updated_at=at).where(
            ScheduleOccurrence.id.in_(planned), ScheduleOccurrence.state == "planned"
        ).execute()
    for r in rows:
        r.dispatched_at = r.dispatched_at or at
        r.state = "dispatched" if r.state == "planned" else r.state


def _set_occurrence(row: ScheduleOccurrence, state: str, reason: str | None, at: datetime, dispatched: bool = False) -> None:
    changes: dict[str, Any] = {"state": state, "reason": reason, "updated_at": at}
    if dispatched and row.dispatched_at is None:
        changes["dispatched_at"] = at
    if row.state == state and row.reason == reason and "dispatched_at" not in changes:
        return
    ScheduleOccurrence.update(**changes).where(ScheduleOccurrence.id == row.id).execute()
    row.state, row.reason = state, reason


# -- run now --------------------------------------------------------------------------------------------


def run_now(actor: Actor, schedule: Schedule, now: datetime, duration_s: int | None) -> tuple[dict[str, Any], DispatchResult]:
    """A one-off occurrence of `schedule` starting now (for `duration_s`, default the schedule's), dispatched at once.

    Audited `schedule.run_now`. Raises Conflict when the schedule has no target node or its profile is gone.
    """
    duration = int(duration_s or schedule.duration_s)
    if not 0 < duration <= MAX_DURATION_S:
        raise Conflict(f"A run-now occurrence lasts 1 to {MAX_DURATION_S} s.")
    start = _aware(now).replace(microsecond=0)
    at = _naive(_aware(now))
    result = DispatchResult()
    with _transaction():
        take = _take_of(schedule, duration)
        if take.problem is not None:
            raise Conflict(f"Cannot run the schedule now: {take.problem}.")
        ids = target_node_ids(schedule.target or {})
        nodes = list(Node.select().where(Node.id.in_(ids)).order_by(Node.id)) if ids else []
        if not nodes:
            raise Conflict("Cannot run the schedule now: it targets no node.")
        row: ScheduleOccurrence | None = None
        for shift in range(5):  # two run-nows in one second: the next second
            begin = start + timedelta(seconds=shift)
            occ = Occurrence(begin, begin + timedelta(seconds=duration), _local(begin, schedule.time_zone), "run now")
            row, made = _occurrence_row(schedule, occ, at, run_now=True)
            if made:
                break
            row = None
        if row is None:
            raise Conflict("Too many run-now occurrences at once; try again.")
        result.occurrences = 1
        pending: list[tuple[ScheduleOccurrence, list[Node]]] = []
        _dispatch_occurrence(schedule, row, nodes, take, at, None, result, {}, pending)
        _make_pending(schedule, pending, take, at, result)
        detail = occurrence_to_api(ScheduleOccurrence.get_by_id(row.id))
        record(
            actor,
            "schedule.run_now",
            permission="schedule:manage",
            target=("schedule", schedule.id),
            after={"occurrence": detail, "site": schedule.site},
        )
    return detail, result


def occurrence_to_api(row: ScheduleOccurrence) -> dict[str, Any]:
    """A stored occurrence as the occurrences list shows it (state as stored, with its recordings)."""
    rows = list(Recording.select().where(Recording.occurrence_id == row.id).order_by(Recording.node_id))
    recordings = [
        {"id": r.id, "node_id": r.node_id, "status": r.status, "started_at": iso(r.started_at), "late_s": r.late_s} for r in rows
    ]
    late = any((r.late_s or 0) > 0 for r in rows)
    return {
        "id": row.id,
        "start_utc": iso(row.start_at),
        "end_utc": iso(row.end_at),
        "local_start": row.local_start,
        "state": row.state,
        "reason": row.reason,
        "run_now": bool(row.run_now),
        "late": late,
        "recordings": recordings,
    }


# -- edits: update or withdraw unstarted jobs -----------------------------------------------------------


def reconcile(schedule_id: str, now: datetime) -> DispatchResult:
    """After an edit, delete, disable, skip or unskip: the schedule's unstarted jobs that have not ended follow it.

    A job still wanted (its occurrence in the schedule, not skipped, its node still targeted) is
    updated in place when what it records changed (`revision` + 1); one not wanted is cancelled
    with `withdrawn: <why>`. Occurrences no longer in the schedule become `withdrawn`. Jobs that
    started capturing are never touched. New occurrences are left to `dispatch`.
    """
    at = _naive(_aware(now))
    result = DispatchResult()
    with _transaction():
        schedule = Schedule.get_or_none(Schedule.id == schedule_id)
        jobs = list(
            RecordingJob.select()
            .where(
                RecordingJob.schedule_id == schedule_id,
                RecordingJob.state.in_(UNSTARTED),
                RecordingJob.capture_started == False,  # noqa: E712
                RecordingJob.end_at > at,
            )
            .order_by(RecordingJob.start_at, RecordingJob.node_id)
        )
        rows = {
            r.id: r
            for r in ScheduleOccurrence.select().where(
                ScheduleOccurrence.schedule_id == schedule_id, ScheduleOccurrence.end_at > at
            )
        }
        wanted_times, why_not = _wanted(schedule, list(rows.values()))
        targets = set(target_node_ids(schedule.target or {})) if schedule is not None else set()
        takes: dict[float, _Take] = {}
        for job in jobs:
            row = rows.get(job.occurrence_id or "")
            reason = _unwanted_reason(schedule, row, wanted_times, why_not, targets, job.node_id)
            if reason is not None:
                if _withdraw(job, reason, at):
                    result.jobs += 1
                    result.nodes.add(job.node_id)
                    result.events.append(job_event(job_to_api(RecordingJob.get_by_id(job.id))))
                continue
            assert schedule is not None and row is not None
            end = wanted_times.get(row.start_at, row.end_at)
            duration = (end - row.start_at).total_seconds()
            take = takes.get(duration)
            if take is None:
                take = takes[duration] = _take_of(schedule, duration)
            if take.problem is not None:
                if _withdraw(job, take.problem, at):
                    result.jobs += 1
                    result.nodes.add(job.node_id)
                continue
            if _update_job(schedule, row, job, end, take, at):
                result.jobs += 1
                result.nodes.add(job.node_id)
        _settle_rows(schedule, rows, wanted_times, why_not, at, result)
    return result


def _wanted(schedule: Schedule | None, rows: list[ScheduleOccurrence]) -> tuple[dict[datetime, datetime], str]:
    """Start -> end of the stored future occurrences the schedule still has (run-now ones keep theirs), and why not."""
    if schedule is None:
        return {}, "the schedule was deleted"
    if not schedule.enabled:
        return {}, "the schedule was disabled"
    wanted: dict[datetime, datetime] = {r.start_at: r.end_at for r in rows if r.run_now}
    plain = [r for r in rows if not r.run_now]
    if plain:
        try:
            spec = spec_of(schedule)
            lo = _aware(min(r.start_at for r in plain))
            hi = _aware(max(r.start_at for r in plain)) + timedelta(seconds=1)
            for occ in occurrences(spec, lo, hi, EXPAND_LIMIT).occurrences:
                wanted[_naive(occ.start_utc)] = _naive(occ.end_utc)
        except ValueError:
            pass
    return wanted, "the occurrence is no longer in the schedule"


def _unwanted_reason(
    schedule: Schedule | None,
    row: ScheduleOccurrence | None,
    wanted: dict[datetime, datetime],
    why_not: str,
    targets: set[str],
    node_id: str,
) -> str | None:
    if schedule is None or not schedule.enabled or row is None:
        return why_not
    if row.state == "skipped":
        return "the occurrence was skipped"
    if row.start_at not in wanted:
        return why_not
    if node_id not in targets:
        return "the node is no longer targeted"
    return None


def _withdraw(job: RecordingJob, reason: str, at: datetime) -> bool:
    error = WITHDRAWN + reason
    with database_proxy.atomic():
        if end_job(job, "cancelled", error, at, RecordingJob.capture_started == False) is None:  # noqa: E712
            return False
        record(
            SYSTEM,
            "recording.job.cancelled",
            target=("recording_job", job.id),
            before=job_to_api(job),
            after=job_to_api(RecordingJob.get_by_id(job.id)),
            reason=error,
        )
    return True


def _update_job(schedule: Schedule, row: ScheduleOccurrence, job: RecordingJob, end: datetime, take: _Take, at: datetime) -> bool:
    """Bring an unstarted job and its recording to the schedule as it is now; True when something changed."""
    recording: Recording = Recording.get_by_id(job.recording_id)
    probe = ScheduleOccurrence(**{**row.__data__, "end_at": end})
    fields = _recording_fields(schedule, probe, take)
    changed = {k: v for k, v in fields.items() if getattr(recording, k) != v}
    if not changed and job.end_at == end:
        return False
    with database_proxy.atomic():
        moved = (
            RecordingJob.update(end_at=end, revision=RecordingJob.revision + 1, updated_at=at)
            .where(
                RecordingJob.id == job.id,
                RecordingJob.state.in_(UNSTARTED),
                RecordingJob.capture_started == False,  # noqa: E712
                RecordingJob.revision == job.revision,
            )
            .execute()
        )
        if not moved:
            return False
        Recording.update(**changed, updated_at=at).where(
            Recording.id == recording.id, Recording.status.not_in(TERMINAL_STATUSES)
        ).execute()
        if row.end_at != end:
            ScheduleOccurrence.update(end_at=end, updated_at=at).where(ScheduleOccurrence.id == row.id).execute()
            row.end_at = end
    return True


def _settle_rows(
    schedule: Schedule | None,
    rows: dict[str, ScheduleOccurrence],
    wanted: dict[datetime, datetime],
    why_not: str,
    at: datetime,
    result: DispatchResult,
) -> None:
    """Future rows the schedule no longer has become `withdrawn`; withdrawn ones it has again go back to `planned`."""
    for row in rows.values():
        if row.state == "skipped":
            continue
        live = RecordingJob.select().where(RecordingJob.occurrence_id == row.id, RecordingJob.state.not_in(("cancelled",)))
        if row.start_at in wanted and schedule is not None and schedule.enabled:
            if row.state == "withdrawn" and _aware(row.start_at) > _aware(at):
                _set_occurrence(row, "planned", None, at)
            continue
        if row.state != "withdrawn" and not live.exists():
            _set_occurrence(row, "withdrawn", why_not, at)
            result.events.append(_events_for(row, "withdrawn", [], reason=why_not))


# -- missed -------------------------------------------------------------------------------------------


def sweep_missed(now: datetime, grace_s: float, listening_since: datetime | None = None) -> DispatchResult:
    """Scheduled jobs that never started capturing and whose end (+ `grace_s`) has passed become `missed`.

    Only time the hub could hear the node counts: a job is missed once `grace_s` has passed both
    since its end and since `listening_since` (the hub's start), so a node that recorded while the
    hub was away has the grace to report before its job is called missed.
    """
    at = _naive(_aware(now))
    cutoff = at - timedelta(seconds=grace_s)
    result = DispatchResult()
    if listening_since is not None and _naive(_aware(listening_since)) > cutoff:
        return result
    jobs = list(
        RecordingJob.select()
        .where(
            RecordingJob.start_at.is_null(False),
            RecordingJob.start_at < cutoff,
            RecordingJob.end_at < cutoff,
            RecordingJob.state.in_(UNSTARTED),
            RecordingJob.capture_started == False,  # noqa: E712
        )
        .order_by(RecordingJob.start_at, RecordingJob.id)
        .limit(MISSED_BATCH)
    )
    if not jobs:
        return result
    nodes = {n.id: n for n in Node.select().where(Node.id.in_(list({j.node_id for j in jobs})))}
    touched: set[str] = set()
    for job in jobs:
        reason = _missed_reason(job, nodes.get(job.node_id))
        with _transaction():
            if end_job(job, "missed", reason, at, RecordingJob.capture_started == False) is None:  # noqa: E712
                continue
            after = job_to_api(RecordingJob.get_by_id(job.id))
            record(
                SYSTEM,
                "recording.job.missed",
                target=("recording_job", job.id),
                before=job_to_api(job),
                after=after,
                reason=reason,
            )
        result.jobs += 1
        result.events.append(job_event(after))
        if job.occurrence_id:
            touched.add(job.occurrence_id)
    for occurrence_id in touched:
        refresh_occurrence(occurrence_id, at)
    return result


def _missed_reason(job: RecordingJob, node: Node | None) -> str:
    if node is None:
        return f"{MISSED_BY_HUB}: the node was deleted"
    if job.state == "queued":
        return f"{MISSED_BY_HUB}: it never fetched the job (offline since {iso(node.last_seen_at) or 'it was enrolled'})"
    if (
        node.status in ("offline", "pending")
        or node.last_seen_at is None
        or (job.start_at is not None and node.last_seen_at < job.start_at)
    ):
        return f"{MISSED_BY_HUB}: offline since {iso(node.last_seen_at) or 'it was enrolled'}"
    return f"{MISSED_BY_HUB}: it never reported starting the recording"


def refresh_occurrence(occurrence_id: str, at: datetime) -> None:
    """Store an occurrence's state as its jobs make it (`missed`, `completed`, `failed`, `recording`) with a reason."""
    row = ScheduleOccurrence.get_or_none(ScheduleOccurrence.id == occurrence_id)
    if row is None or row.state in NOT_DISPATCHABLE:
        return
    states = [j.state for j in RecordingJob.select(RecordingJob.state).where(RecordingJob.occurrence_id == occurrence_id)]
    live = [s for s in states if s != "cancelled"]
    if not live:
        return
    reason = row.reason
    if any(s in ("recording", "uploading") for s in live):
        state = "recording"
    elif any(s in UNSTARTED for s in live):
        state = "dispatched"
    elif "completed" in live:
        state = "completed"
    elif all(s == "missed" for s in live):
        state = "missed"
        errors = [j.error for j in RecordingJob.select(RecordingJob.error).where(RecordingJob.occurrence_id == occurrence_id)]
        reason = next((e for e in errors if e), "no node started it")
    else:
        state = "failed"
    _set_occurrence(row, state, reason, at)
