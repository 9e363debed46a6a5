"""Conflicts between schedules on shared nodes, and the state an occurrence shows from its row and jobs (SQLite, fixed clock)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import peewee
import pytest
from hark_fleet.hub.db.models import Node, Recording, RecordingJob, Schedule, ScheduleOccurrence
from hark_fleet.hub.services.schedule_conflicts import find_conflicts, shared_nodes
from hark_fleet.hub.services.schedule_occurrences import merged, next_takes, spec_or_none

from tests.harness import database_on

NOW = datetime(2026, 12, 7, 6, 0, tzinfo=UTC)  # a Monday, 07:00 in Berlin
NAIVE_NOW = NOW.replace(tzinfo=None)


@pytest.fixture
def db(tmp_path: Path) -> Iterator[peewee.Database]:
    with database_on("sqlite", tmp_path) as database:
        yield database


def node(node_id: str, site: str | None = "hall", tags: list[str] | None = None) -> Node:
    row: Node = Node.create(id=node_id, name=node_id, site=site, tags=tags or [], credential_hash="x", status="online")
    return row


def schedule(schedule_id: str, **fields: Any) -> Schedule:
    row: dict[str, Any] = {
        "id": schedule_id,
        "name": schedule_id,
        "target": {"node_ids": ["nod_a"]},
        "site": "hall",
        "time_zone": "Europe/Berlin",
        "start_local": "2026-12-07T09:00:00",
        "duration_s": 1800,
        "rrule": "FREQ=DAILY",
        "profile_id": "default",
        "created_at": NAIVE_NOW - timedelta(days=30),
        **fields,
    }
    created: Schedule = Schedule.create(**row)
    return created


def spec(**fields: Any) -> Any:
    probe = Schedule(
        **{
            "id": "probe",
            "name": "probe",
            "time_zone": "Europe/Berlin",
            "start_local": "2026-12-07T09:00:00",
            "duration_s": 1800,
            "rrule": "FREQ=DAILY",
            **fields,
        }
    )
    return spec_or_none(probe)


# -- conflicts ----------------------------------------------------------------------------------------------


def test_a_selector_shares_the_nodes_whose_site_and_tags_it_names() -> None:
    a, b, c = (
        Node(id="a", site="hall", tags=["roof", "east"]),
        Node(id="b", site="hall", tags=[]),
        Node(id="c", site="yard", tags=["roof"]),
    )
    assert shared_nodes({"selector": {"site": "hall", "tags": ["roof"]}}, [a, b, c]) == ["a"]
    assert shared_nodes({"selector": {"site": None, "tags": ["roof"]}}, [a, b, c]) == ["a", "c"]
    assert shared_nodes({"selector": {"site": "hall", "tags": []}}, [a, b, c]) == ["a", "b"]
    assert shared_nodes({"node_ids": ["c", "zz"]}, [a, b, c]) == ["c"]


def test_overlapping_takes_on_a_shared_node_are_named_with_the_first_five_clashes(db: peewee.Database) -> None:
    ours = [node("nod_a"), node("nod_b")]
    schedule("sch_same", target={"node_ids": ["nod_a"]}, start_local="2026-12-07T09:15:00")
    schedule("sch_apart", target={"node_ids": ["nod_b"]}, start_local="2026-12-07T10:00:00")
    schedule("sch_off", target={"node_ids": ["nod_a"]}, enabled=False)
    schedule("sch_other_node", target={"node_ids": ["nod_z"]})
    schedule("sch_selector", target={"selector": {"site": "hall", "tags": []}}, start_local="2026-12-10T09:29:59", rrule=None)
    found = find_conflicts(None, spec(), ours, NOW)
    assert [(c["schedule_id"], c["node_ids"], len(c["clashes"])) for c in found] == [
        ("sch_same", ["nod_a"], 5),
        ("sch_selector", ["nod_a", "nod_b"], 1),
    ]
    first = found[0]["clashes"][0]
    assert first == {
        "this": {"start_utc": "2026-12-07T08:00:00.000Z", "end_utc": "2026-12-07T08:30:00.000Z"},
        "other": {"start_utc": "2026-12-07T08:15:00.000Z", "end_utc": "2026-12-07T08:45:00.000Z"},
    }
    assert find_conflicts("sch_same", spec(), [ours[0]], NOW)[0]["schedule_id"] == "sch_selector"  # itself left out


def test_touching_takes_do_not_clash_and_only_the_next_31_days_count(db: peewee.Database) -> None:
    ours = [node("nod_a")]
    schedule("sch_after", start_local="2026-12-07T09:30:00")  # starts as ours ends
    schedule("sch_later", start_local="2027-01-20T09:00:00")  # beyond the horizon
    assert find_conflicts(None, spec(), ours, NOW) == []


# -- occurrence states ----------------------------------------------------------------------------------------


def occurrence(schedule_id: str, start: datetime, state: str, **fields: Any) -> ScheduleOccurrence:
    row: ScheduleOccurrence = ScheduleOccurrence.create(
        id=f"sco_{schedule_id}_{start:%d%H%M}",
        schedule_id=schedule_id,
        start_at=start,
        end_at=start + timedelta(minutes=30),
        local_start=f"{start.isoformat()}+01:00",
        state=state,
        **fields,
    )
    return row


def job(row: ScheduleOccurrence, node_id: str, state: str, error: str | None = None, late_s: float | None = None) -> None:
    recording = Recording.create(
        id=f"rec_{row.id}_{node_id}",
        node_id=node_id,
        name="take",
        status=state if state not in ("queued", "claimed") else "queued",
        format="wav",
        sample_rate=48000,
        bit_depth=24,
        occurrence_id=row.id,
        schedule_id=row.schedule_id,
        late_s=late_s,
    )
    RecordingJob.create(
        id=f"rjb_{row.id}_{node_id}",
        recording_id=recording.id,
        node_id=node_id,
        state=state,
        error=error,
        occurrence_id=row.id,
        schedule_id=row.schedule_id,
        start_at=row.start_at,
        end_at=row.end_at,
    )


def test_each_occurrence_shows_the_state_its_row_and_jobs_make(db: peewee.Database) -> None:
    sch = schedule("sch_states", start_local="2026-11-30T09:00:00")
    day = datetime(2026, 11, 30, 8, 0)  # 09:00 in Berlin
    rows = [occurrence("sch_states", day + timedelta(days=i), "dispatched") for i in range(6)]
    job(rows[0], "nod_a", "completed", late_s=4.5)
    job(rows[0], "nod_b", "missed", "the node did not start it: offline since ...")
    job(rows[1], "nod_a", "missed", "the node did not start it: offline")
    job(rows[2], "nod_a", "failed", "disk full")
    job(rows[3], "nod_a", "cancelled", "withdrawn: the occurrence is no longer in the schedule")
    ScheduleOccurrence.update(state="skipped", reason="skipped by alice").where(ScheduleOccurrence.id == rows[4].id).execute()
    # rows[5]: dispatched to no node; 2026-12-06 has no row at all; 2026-12-07 is in progress, 2026-12-08 ahead
    today = occurrence("sch_states", datetime(2026, 12, 7, 8, 0), "dispatched")
    job(today, "nod_a", "recording")
    tomorrow = occurrence("sch_states", datetime(2026, 12, 8, 8, 0), "dispatched", reason="not dispatched to nod_b (clashes)")
    job(tomorrow, "nod_a", "queued")
    data, absent = merged(
        sch, None, datetime(2026, 11, 30), datetime(2026, 12, 10), 100, NAIVE_NOW + timedelta(hours=2, minutes=10)
    )
    got = [(o["local_start"][:10], o["state"], o["reason"]) for o in data]
    assert got == [
        ("2026-11-30", "completed", "1 of 2 nodes did not record it: the node did not start it: offline since ..."),
        ("2026-12-01", "missed", "the node did not start it: offline"),
        ("2026-12-02", "failed", "disk full"),
        ("2026-12-03", "withdrawn", "withdrawn: the occurrence is no longer in the schedule"),
        ("2026-12-04", "skipped", "skipped by alice"),
        ("2026-12-05", "missed", "no node was targeted"),
        ("2026-12-06", "missed", "not dispatched"),
        ("2026-12-07", "recording", None),
        ("2026-12-08", "dispatched", "not dispatched to nod_b (clashes)"),
        ("2026-12-09", "planned", None),
    ]
    assert data[0]["late"] is True and [r["node_id"] for r in data[0]["recordings"]] == ["nod_a", "nod_b"]
    assert absent == [] and data[-1]["id"] is None


def test_occurrences_before_the_schedule_existed_are_left_out_and_skipped_ones_are_passed_over(db: peewee.Database) -> None:
    sch = schedule("sch_new", created_at=NAIVE_NOW, start_local="2026-12-01T09:00:00")
    data, _ = merged(sch, None, datetime(2026, 12, 1), datetime(2026, 12, 9), 100, NAIVE_NOW)
    assert [o["local_start"][:10] for o in data] == [f"2026-12-0{d}" for d in (7, 8)]
    occurrence("sch_new", datetime(2026, 12, 7, 8, 0), "skipped")
    first = next_takes(spec_or_none(sch), NOW, 1, {datetime(2026, 12, 7, 8, 0)})
    assert first[0].local_start == "2026-12-08T09:00:00+01:00"
