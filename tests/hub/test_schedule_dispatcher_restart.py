"""Exactly-once dispatch across a crash: a hub killed (SIGKILL) in the middle of dispatching a large batch and started
again ends with exactly one job (and one recording) per occurrence and node, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import peewee
import pytest
from hark_fleet.hub.db.models import Node, Recording, RecordingJob, Schedule, ScheduleOccurrence

from tests.conftest import BACKENDS, hub_database
from tests.harness import HubProcess, create_database, drop_database, wait_for

NODES = 1000
OCCURRENCES = 24  # hourly, over the 24 h lead window
TOTAL = NODES * OCCURRENCES


def seed(hub: HubProcess) -> None:
    """A thousand nodes on one site and an hourly schedule for all of them, written while the hub is stopped."""
    start = (datetime.now(UTC) + timedelta(minutes=30)).replace(second=0, microsecond=0)
    with hub_database(hub) as db, db.atomic():
        Node.insert_many([{"id": f"nod_{i:04d}", "name": f"box {i}", "site": "hall", "tags": []} for i in range(NODES)]).execute()
        Schedule.create(
            id="sch_hourly",
            name="Hourly",
            target={"selector": {"site": "hall", "tags": []}},
            site="hall",
            time_zone="UTC",
            start_local=start.strftime("%Y-%m-%dT%H:%M:%S"),
            duration_s=600,
            rrule="FREQ=HOURLY",
            profile_id="default",
            created_by={"type": "user", "id": "usr_x", "name": "admin"},
        )


def counts(hub: HubProcess) -> tuple[int, int, int]:
    """Jobs, recordings and occurrence rows of the schedule now."""
    with hub_database(hub):
        return (
            RecordingJob.select().where(RecordingJob.schedule_id == "sch_hourly").count(),
            Recording.select().where(Recording.schedule_id == "sch_hourly").count(),
            ScheduleOccurrence.select().where(ScheduleOccurrence.schedule_id == "sch_hourly").count(),
        )


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_hub_killed_while_dispatching_dispatches_each_occurrence_once_per_node_after_it_restarts(
    backend: str, tmp_path: Path
) -> None:
    url = create_database() if backend == "postgres" else None
    hub = HubProcess(tmp_path / "hub", database_url=url)
    try:
        hub.start()  # the schema
        assert hub.stop() == 0
        seed(hub)
        hub.start(wait_ready=False)
        assert hub.proc is not None
        jobs_at_kill = wait_for(lambda: (n := counts(hub)[0]) >= TOTAL // 4 and n, 120, "a quarter dispatched", interval=0.02)
        hub.proc.kill()  # SIGKILL mid-batch: no goodbye, as in a power cut
        hub.proc.wait()
        hub.proc = None
        jobs, recordings, _ = counts(hub)
        assert jobs < TOTAL, "the dispatcher finished before it could be killed; make the batch larger"
        assert jobs == recordings  # a batch's jobs and recordings commit together or not at all
        hub.start()
        wait_for(lambda: counts(hub)[0] == TOTAL, 180, f"{TOTAL} jobs after the restart", interval=0.5)
        with hub_database(hub):
            per_pair = (
                RecordingJob.select(RecordingJob.occurrence_id, RecordingJob.node_id, peewee.fn.COUNT(RecordingJob.id))
                .where(RecordingJob.schedule_id == "sch_hourly")
                .group_by(RecordingJob.occurrence_id, RecordingJob.node_id)
                .tuples()
            )
            assert {n for *_, n in per_pair} == {1} and len(list(per_pair)) == TOTAL
            assert Recording.select().where(Recording.schedule_id == "sch_hourly").count() == TOTAL
            orphans = Recording.select().where(
                Recording.schedule_id == "sch_hourly", Recording.id.not_in(RecordingJob.select(RecordingJob.recording_id))
            )
            assert orphans.count() == 0
            occurrences = list(ScheduleOccurrence.select().where(ScheduleOccurrence.schedule_id == "sch_hourly"))
            assert len(occurrences) == OCCURRENCES and {o.state for o in occurrences} == {"dispatched"}
        print(f"killed at {jobs_at_kill} of {TOTAL} jobs")  # noqa: T201 - shown with -s
        assert hub.stop() == 0, hub.log()
    finally:
        if hub.proc is not None:
            hub.stop()
        if url:
            drop_database(url)
