"""Dispatch in a real database (SQLite and PostgreSQL): one job per node per occurrence, whatever runs it twice or at once;
edits update or withdraw unstarted jobs; run-now; missed jobs and their reasons."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import peewee
import pytest
from hark_fleet.hub.db.models import AuditEvent, Node, Recording, RecordingJob, Schedule, ScheduleOccurrence
from hark_fleet.hub.services import schedule_dispatch
from hark_fleet.hub.services.audit import Actor
from hark_fleet.hub.services.schedule_dispatch import LOCK_KEY, dispatch, reconcile, run_now, sweep_missed

from tests.harness import database_on

NOW = datetime(2026, 12, 7, 6, 0, tzinfo=UTC)  # a Monday, 07:00 in Berlin
DAY = 86400.0
CREATOR = {"type": "user", "id": "usr_1", "name": "alice"}


@pytest.fixture(params=["sqlite", "postgres"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[peewee.Database]:
    with database_on(request.param, tmp_path) as database:
        yield database


def nodes(*ids: str, site: str | None = "hall", tags: list[str] | None = None) -> list[str]:
    for node_id in ids:
        Node.create(id=node_id, name=node_id, site=site, tags=tags or [], credential_hash="x", status="online", last_seen_at=NOW)
    return list(ids)


def schedule(schedule_id: str = "sch_1", **fields: Any) -> Schedule:
    row: dict[str, Any] = {
        "id": schedule_id,
        "name": "Dawn chorus",
        "target": {"node_ids": ["nod_a", "nod_b"]},
        "site": "hall",
        "time_zone": "Europe/Berlin",
        "start_local": "2026-12-01T09:00:00",
        "duration_s": 1800,
        "rrule": "FREQ=HOURLY",
        "profile_id": "default",
        "metadata": {"project": "birds"},
        "tags": ["roof"],
        "created_by": CREATOR,
        "created_by_id": "usr_1",
        **fields,
    }
    created: Schedule = Schedule.create(**row)
    return created


def jobs_per_occurrence_and_node() -> list[tuple[str, str, int]]:
    query = (
        RecordingJob.select(RecordingJob.occurrence_id, RecordingJob.node_id, peewee.fn.COUNT(RecordingJob.id).alias("n"))
        .group_by(RecordingJob.occurrence_id, RecordingJob.node_id)
        .tuples()
    )
    return list(query)


def utc(row_time: datetime) -> datetime:
    return row_time.replace(tzinfo=UTC)


# -- dispatch -------------------------------------------------------------------------------------------


def test_each_occurrence_in_the_lead_window_gets_one_queued_job_and_recording_per_node(db: peewee.Database) -> None:
    nodes("nod_a", "nod_b", "nod_c")
    schedule()
    result = dispatch(NOW, 6 * 3600)
    # hourly at :00 for 30 min: 06:00 ... 11:00 UTC starts in [now - 30 min, now + 6 h)
    assert (result.occurrences, result.jobs, result.complete) == (6, 12, True)
    assert result.nodes == {"nod_a", "nod_b"}
    assert [e.type for e in result.events] == ["schedule.occurrence.dispatched"] * 6
    assert result.next_start["sch_1"] == NOW + timedelta(hours=6)
    first = ScheduleOccurrence.get(ScheduleOccurrence.start_at == NOW.replace(tzinfo=None))
    assert (first.state, first.local_start, first.end_at) == (
        "dispatched",
        "2026-12-07T07:00:00+01:00",
        datetime(2026, 12, 7, 6, 30),
    )
    job = RecordingJob.get(RecordingJob.occurrence_id == first.id, RecordingJob.node_id == "nod_a")
    assert (job.state, job.attempts, job.revision, job.schedule_id, job.site) == ("queued", 1, 0, "sch_1", "hall")
    assert (utc(job.start_at), utc(job.end_at)) == (NOW, NOW + timedelta(minutes=30))
    recording = Recording.get_by_id(job.recording_id)
    assert recording.name == "Dawn chorus 2026-12-07 07:00"
    assert recording.status == "queued" and recording.requested_duration_s == 1800
    assert recording.metadata == {
        "project": "birds",
        "schedule_id": "sch_1",
        "occurrence_start": first.local_start,
        "tags": ["roof"],
    }
    assert (recording.schedule_id, recording.occurrence_id, utc(recording.scheduled_start_at)) == ("sch_1", first.id, NOW)
    assert recording.created_by == CREATOR and recording.created_by_id == "usr_1"
    assert recording.profile["id"] == "default" and recording.format == "wav"


def test_dispatching_again_makes_nothing_new(db: peewee.Database) -> None:
    nodes("nod_a", "nod_b")
    schedule()
    assert dispatch(NOW, DAY).jobs == 48
    again = dispatch(NOW, DAY)
    assert (again.occurrences, again.jobs, again.nodes, again.events) == (0, 0, set(), [])
    later = dispatch(NOW + timedelta(hours=1), DAY)  # the window moved by an hour: one more occurrence
    assert (later.occurrences, later.jobs) == (1, 2)
    assert {n for *_, n in jobs_per_occurrence_and_node()} == {1}


def test_two_dispatchers_at_once_make_each_job_exactly_once(db: peewee.Database) -> None:
    nodes(*(f"nod_{i:02d}" for i in range(20)))
    schedule(target={"selector": {"site": "hall", "tags": []}})
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def run() -> None:
        try:
            with db.connection_context():
                barrier.wait()
                while not dispatch(NOW, DAY, max_jobs=50, lock=False).complete:
                    pass
        except BaseException as err:  # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    counts = jobs_per_occurrence_and_node()
    assert len(counts) == 24 * 20 and {n for *_, n in counts} == {1}
    assert ScheduleOccurrence.select().count() == 24
    assert Recording.select().count() == 24 * 20  # a duplicate's recording was rolled back with it


def test_batches_stop_at_max_jobs_and_finish_the_same_set(db: peewee.Database) -> None:
    nodes("nod_a", "nod_b", "nod_c")
    schedule(target={"node_ids": ["nod_a", "nod_b", "nod_c"]})
    steps = []
    while True:
        step = dispatch(NOW, DAY, max_jobs=10)
        steps.append(step.jobs)
        if step.complete:
            break
    assert sum(steps) == 72 and max(steps) == 10 and len(steps) >= 8
    assert len(jobs_per_occurrence_and_node()) == 72


def test_on_postgresql_a_second_hub_skips_the_pass_while_another_holds_the_lock(db: peewee.Database) -> None:
    if isinstance(db, peewee.SqliteDatabase):
        pytest.skip("SQLite: the data-dir lock keeps a second hub away")
    nodes("nod_a", "nod_b")
    schedule()
    holder = threading.Event()
    release = threading.Event()

    def hold() -> None:
        with db.connection_context(), db.atomic():
            db.execute_sql("SELECT pg_advisory_xact_lock(%s)", (LOCK_KEY,))
            holder.set()
            release.wait(30)

    thread = threading.Thread(target=hold)
    thread.start()
    try:
        assert holder.wait(30)
        blocked = dispatch(NOW, DAY)
        assert blocked.locked_out and blocked.jobs == 0 and RecordingJob.select().count() == 0
    finally:
        release.set()
        thread.join(30)
    assert dispatch(NOW, DAY).jobs == 48


def test_disabled_schedules_and_skipped_occurrences_are_not_dispatched(db: peewee.Database) -> None:
    nodes("nod_a", "nod_b")
    schedule(enabled=False)
    schedule("sch_2", start_local="2026-12-07T08:00:00", rrule=None)  # once, 07:00 UTC
    ScheduleOccurrence.create(
        id="sco_x",
        schedule_id="sch_2",
        start_at=datetime(2026, 12, 7, 7, 0),
        end_at=datetime(2026, 12, 7, 7, 30),
        local_start="2026-12-07T08:00:00+01:00",
        state="skipped",
        skipped_by=CREATOR,
    )
    result = dispatch(NOW, DAY)
    assert (result.jobs, RecordingJob.select().count()) == (0, 0)


def test_an_occurrence_already_running_is_dispatched_for_the_remainder_and_an_ended_one_is_not(db: peewee.Database) -> None:
    nodes("nod_a")
    schedule(target={"node_ids": ["nod_a"]}, rrule=None, start_local="2026-12-07T06:50:00", duration_s=1800)  # 05:50-06:20 UTC
    schedule("sch_2", target={"node_ids": ["nod_a"]}, rrule=None, start_local="2026-12-07T06:00:00", duration_s=1800)
    dispatch(NOW, DAY)
    assert [j.schedule_id for j in RecordingJob.select()] == ["sch_1"]


def test_a_selector_includes_a_node_added_to_the_site_later_from_its_next_dispatch(db: peewee.Database) -> None:
    nodes("nod_a", tags=["roof"])
    nodes("nod_other", site="yard", tags=["roof"])
    schedule(target={"selector": {"site": "hall", "tags": ["roof"]}}, rrule=None, start_local="2026-12-07T12:00:00")
    dispatch(NOW, DAY)
    nodes("nod_new", tags=["roof", "north"])
    nodes("nod_untagged")
    result = dispatch(NOW, DAY)
    assert result.jobs == 1 and result.nodes == {"nod_new"}
    assert sorted(j.node_id for j in RecordingJob.select()) == ["nod_a", "nod_new"]


def test_with_on_conflict_skip_a_node_already_taken_by_another_schedule_is_left_out_with_a_reason(db: peewee.Database) -> None:
    nodes("nod_a", "nod_b")
    schedule("sch_skip", name="Late", on_conflict="skip", rrule=None, start_local="2026-12-07T12:15:00")
    schedule("sch_main", name="Main", target={"node_ids": ["nod_a"]}, rrule=None, start_local="2026-12-07T12:00:00")
    dispatch(NOW, DAY)
    by_schedule = {(j.schedule_id, j.node_id) for j in RecordingJob.select()}
    assert by_schedule == {("sch_main", "nod_a"), ("sch_skip", "nod_b")}
    row = ScheduleOccurrence.get(ScheduleOccurrence.schedule_id == "sch_skip")
    assert row.state == "dispatched" and row.reason == "not dispatched to nod_a (clashes with schedule 'Main')"


def test_a_schedule_without_targets_or_profile_records_why_its_occurrences_were_not_dispatched(db: peewee.Database) -> None:
    schedule(target={"node_ids": ["nod_gone"]}, rrule=None, start_local="2026-12-07T12:00:00")
    nodes("nod_a")
    schedule("sch_2", target={"node_ids": ["nod_a"]}, rrule=None, start_local="2026-12-07T12:00:00", profile_id="rpf_gone")
    assert dispatch(NOW, DAY).jobs == 0
    reasons = {r.schedule_id: r.reason for r in ScheduleOccurrence.select()}
    assert reasons == {
        "sch_1": "not dispatched: no node was targeted",
        "sch_2": "not dispatched: its recording profile rpf_gone no longer exists",
    }


# -- edits ------------------------------------------------------------------------------------------------


def test_an_edit_updates_unstarted_jobs_in_place_with_a_new_revision(db: peewee.Database) -> None:
    nodes("nod_a", "nod_b")
    schedule()
    dispatch(NOW, 3 * 3600)
    Schedule.update(duration_s=900, name="Dawn", metadata={"project": "owls"}, version=2).execute()
    started = RecordingJob.get(RecordingJob.start_at == NOW.replace(tzinfo=None), RecordingJob.node_id == "nod_a")
    RecordingJob.update(state="recording", capture_started=True).where(RecordingJob.id == started.id).execute()
    result = reconcile("sch_1", NOW + timedelta(minutes=1))
    assert result.jobs == 5 and result.nodes == {"nod_a", "nod_b"}
    assert RecordingJob.get_by_id(started.id).revision == 0  # started capturing: never touched
    job = RecordingJob.get(RecordingJob.start_at == datetime(2026, 12, 7, 7, 0), RecordingJob.node_id == "nod_b")
    assert (job.state, job.revision, utc(job.end_at)) == ("queued", 1, NOW + timedelta(hours=1, minutes=15))
    recording = Recording.get_by_id(job.recording_id)
    assert recording.requested_duration_s == 900 and recording.name == "Dawn 2026-12-07 08:00"
    assert recording.metadata["project"] == "owls"
    assert reconcile("sch_1", NOW + timedelta(minutes=1)).jobs == 0  # nothing changed since


def test_a_node_no_longer_targeted_and_a_skipped_occurrence_have_their_jobs_withdrawn(db: peewee.Database) -> None:
    nodes("nod_a", "nod_b")
    schedule()
    dispatch(NOW, 3 * 3600)
    Schedule.update(target={"node_ids": ["nod_a"]}).execute()
    ScheduleOccurrence.update(state="skipped", skipped_by=CREATOR).where(
        ScheduleOccurrence.start_at == datetime(2026, 12, 7, 8, 0)
    ).execute()
    result = reconcile("sch_1", NOW)
    assert result.nodes == {"nod_a", "nod_b"}
    errors = {(j.node_id, j.start_at.hour): (j.state, j.error) for j in RecordingJob.select()}
    assert errors[("nod_b", 6)] == ("cancelled", "withdrawn: the node is no longer targeted")
    assert errors[("nod_a", 8)] == ("cancelled", "withdrawn: the occurrence was skipped")
    assert errors[("nod_a", 7)] == ("queued", None)
    assert Recording.get_by_id(RecordingJob.get(RecordingJob.node_id == "nod_b").recording_id).status == "cancelled"
    assert ScheduleOccurrence.get(ScheduleOccurrence.start_at == datetime(2026, 12, 7, 8, 0)).state == "skipped"
    assert AuditEvent.select().where(AuditEvent.action == "recording.job.cancelled").count() == 4


def test_deleting_a_schedule_withdraws_every_unstarted_job_and_its_future_occurrences(db: peewee.Database) -> None:
    nodes("nod_a", "nod_b")
    schedule()
    dispatch(NOW, 3 * 3600)
    Schedule.delete().execute()
    result = reconcile("sch_1", NOW)
    assert result.jobs == 6
    assert {(j.state, j.error) for j in RecordingJob.select()} == {("cancelled", "withdrawn: the schedule was deleted")}
    assert {(r.state, r.reason) for r in ScheduleOccurrence.select()} == {("withdrawn", "the schedule was deleted")}


def test_a_time_change_withdraws_the_old_occurrences_and_dispatch_makes_the_new_ones(db: peewee.Database) -> None:
    nodes("nod_a")
    schedule(target={"node_ids": ["nod_a"]}, rrule="FREQ=DAILY", start_local="2026-12-01T12:00:00")
    dispatch(NOW, DAY)
    Schedule.update(start_local="2026-12-01T13:00:00", version=2).execute()
    reconcile("sch_1", NOW)
    dispatch(NOW, DAY)
    states = {(r.start_at.hour, r.state) for r in ScheduleOccurrence.select()}
    assert states == {(11, "withdrawn"), (12, "dispatched")}
    assert {(j.start_at.hour, j.state) for j in RecordingJob.select()} == {(11, "cancelled"), (12, "queued")}
    # and back: the withdrawn occurrence is wanted again, its job comes back as a new revision
    Schedule.update(start_local="2026-12-01T12:00:00", version=3).execute()
    reconcile("sch_1", NOW)
    dispatch(NOW, DAY)
    assert {(j.start_at.hour, j.state, j.revision) for j in RecordingJob.select()} == {(11, "queued", 1), (12, "cancelled", 0)}


# -- run now ----------------------------------------------------------------------------------------------


def test_run_now_dispatches_a_one_off_occurrence_at_once_and_audits_it(db: peewee.Database) -> None:
    nodes("nod_a", "nod_b")
    row = schedule(enabled=False)
    actor = Actor("user", "usr_2", "bob")
    detail, result = run_now(actor, row, NOW + timedelta(microseconds=1500), 600)
    assert (detail["start_utc"], detail["end_utc"], detail["run_now"], detail["state"]) == (
        "2026-12-07T06:00:00.000Z",
        "2026-12-07T06:10:00.000Z",
        True,
        "dispatched",
    )
    assert len(detail["recordings"]) == 2 and result.jobs == 2 and result.nodes == {"nod_a", "nod_b"}
    second, _ = run_now(actor, row, NOW, None)
    assert second["start_utc"] == "2026-12-07T06:00:01.000Z" and second["end_utc"] == "2026-12-07T06:30:01.000Z"
    assert AuditEvent.select().where(AuditEvent.action == "schedule.run_now").count() == 2
    assert reconcile("sch_1", NOW).jobs == 4  # a disabled schedule keeps no jobs, run-now ones included


# -- missed -----------------------------------------------------------------------------------------------


def test_jobs_nobody_started_are_missed_after_their_end_and_the_grace(db: peewee.Database) -> None:
    nodes("nod_a", "nod_b")
    schedule(rrule=None, start_local="2026-12-07T07:00:00")  # 06:00-06:30 UTC
    dispatch(NOW, DAY)
    claimed = RecordingJob.get(RecordingJob.node_id == "nod_a")
    RecordingJob.update(state="claimed", lease_epoch=1).where(RecordingJob.id == claimed.id).execute()
    Node.update(status="offline", last_seen_at=datetime(2026, 12, 7, 5, 0)).where(Node.id == "nod_a").execute()
    end = NOW + timedelta(minutes=30)
    assert sweep_missed(end + timedelta(seconds=59), 60).jobs == 0
    back = end + timedelta(seconds=30)  # the hub just came back: the nodes get the grace from then
    assert sweep_missed(end + timedelta(seconds=61), 60, listening_since=back).jobs == 0
    result = sweep_missed(end + timedelta(seconds=61), 60)
    assert result.jobs == 2 and {e.type for e in result.events} == {"recording.job.missed"}
    errors = {j.node_id: (j.state, j.error) for j in RecordingJob.select()}
    assert errors["nod_a"] == ("missed", "the node did not start it: offline since 2026-12-07T05:00:00.000Z")
    assert errors["nod_b"][0] == "missed" and "never fetched the job" in str(errors["nod_b"][1])
    assert {r.status for r in Recording.select()} == {"missed"}
    row = ScheduleOccurrence.get()
    assert row.state == "missed" and row.reason is not None and row.reason.startswith(schedule_dispatch.MISSED_BY_HUB)


def test_a_job_that_started_capturing_is_never_missed(db: peewee.Database) -> None:
    nodes("nod_a")
    schedule(target={"node_ids": ["nod_a"]}, rrule=None, start_local="2026-12-07T07:00:00")
    dispatch(NOW, DAY)
    RecordingJob.update(state="recording", capture_started=True).execute()
    assert sweep_missed(NOW + timedelta(days=1), 60).jobs == 0
