"""History in a real database (SQLite and PostgreSQL): one row per node and minute, merges, bounded prunes, roll-ups."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import peewee
import pytest
from hark_fleet.hub.db.models import MeterMinute, MetricMinute
from hark_fleet.hub.services import history
from hark_fleet.hub.services.history import MeterSummary, MetricFold, MetricSummary, Window
from hark_fleet.protocol.messages import Heartbeat

from tests.harness import database_on

T0 = 1_800_000_000  # a minute boundary (and an hour's: 1_800_000_000 % 3600 == 0)


@pytest.fixture(params=["sqlite", "postgres"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[peewee.Database]:
    with database_on(request.param, tmp_path) as database:
        yield database


def meters(node: str, minute: int, frames: int = 600, peak: float = -6.0) -> MeterSummary:
    return MeterSummary(node, minute, frames, ((peak, peak - 3, -12.0, -15.0),), -20.0, -21.0, -23.0)


def metrics(node: str, minute: int, *cpus: float | None) -> MetricSummary:
    fold = MetricFold()
    for cpu in cpus:
        fold.add_heartbeat(Heartbeat(msg_id="x", ts="2026-01-01T00:00:00Z", seq=1, agent_version="1", uptime_s=1, cpu_pct=cpu))
    return fold.summary(node, minute)


def test_a_minute_of_every_node_is_one_row_each(db: peewee.Database) -> None:
    nodes = [f"nod_{i}" for i in range(1000)]
    history.store_minutes([meters(n, T0) for n in nodes], [metrics(n, T0, 10.0) for n in nodes])
    assert MeterMinute.select().count() == 1000 and MetricMinute.select().count() == 1000
    stored = history.meter_summaries("nod_7", Window(T0, T0 + 60, 60, None))
    assert stored == [meters("nod_7", T0)]


def test_levels_are_stored_rounded_to_a_hundredth_of_a_db(db: peewee.Database) -> None:
    summary = MeterSummary("n1", T0, 10, ((-6.004, -9.3333, None, -29.999999999999996),), -20.016, None, -23.0049)
    history.store_minutes([summary], [])
    (row,) = history.meter_summaries("n1", Window(T0, T0 + 60, 60, None))
    assert row.channels == ((-6.0, -9.33, None, -30.0),)
    assert (row.momentary_lufs_max, row.short_term_lufs_max, row.integrated_lufs) == (-20.02, None, -23.0)


def test_a_minute_stored_twice_is_merged_into_its_row(db: peewee.Database) -> None:
    history.store_minutes([meters("n1", T0, frames=300, peak=-6.0)], [metrics("n1", T0, 10.0, 20.0)])
    # after a restart within the same minute; and two summaries of one minute in one batch (a clock stepping back)
    history.store_minutes(
        [meters("n1", T0, frames=200, peak=-3.0), meters("n1", T0, frames=100, peak=-9.0), meters("n2", T0)],
        [metrics("n1", T0, 60.0)],
    )
    assert MeterMinute.select().count() == 2 and MetricMinute.select().count() == 1
    (row,) = history.meter_summaries("n1", Window(T0, T0 + 60, 60, None))
    assert row.frames == 600 and row.channels[0][0] == -3.0 and row.channels[0][3] == pytest.approx(-15.0)
    fold = history.metric_folds("n1", Window(T0, T0 + 60, 60, None))[T0]
    assert fold.point(T0)["samples"] == 3 and fold.point(T0)["cpu_pct"] == {"mean": 30.0, "max": 60.0}


def test_the_database_rolls_minutes_up_into_buckets_weighted_by_heartbeats(db: peewee.Database) -> None:
    history.store_minutes(
        [],
        [
            metrics("n1", T0, 10.0, 10.0, 10.0),
            metrics("n1", T0 + 60, 50.0),
            metrics("n1", T0 + 120, None),  # heartbeats without the metric do not pull the mean down
            metrics("n1", T0 + 600, 90.0),
            metrics("n2", T0, 99.0),
        ],
    )
    folds = history.metric_folds("n1", Window(T0, T0 + 3600, 600, "7d"))
    points = history.metric_points(folds)
    assert [(p["ts"], p["samples"], p["cpu_pct"]) for p in points] == [
        ("2027-01-15T08:00:00Z", 5, {"mean": 20.0, "max": 50.0}),
        ("2027-01-15T08:10:00Z", 1, {"mean": 90.0, "max": 90.0}),
    ]
    assert points[0]["temperature_c"] == {"mean": None, "max": None}


def test_a_minute_being_written_as_a_read_runs_counts_once_whether_committed_or_not(db: peewee.Database) -> None:
    win = Window(T0, T0 + 120, 60, None)
    in_memory_meters, in_memory_metrics = [meters("n1", T0, frames=600)], [metrics("n1", T0, 10.0)]
    before = history.meter_history("n1", win, in_memory_meters, [T0]), history.metric_history("n1", win, in_memory_metrics, [T0])
    history.store_minutes(in_memory_meters, in_memory_metrics)  # the write commits
    after = history.meter_history("n1", win, in_memory_meters, [T0]), history.metric_history("n1", win, in_memory_metrics, [T0])
    assert before == after
    assert [p["frames"] for p in after[0]] == [600] and [p["samples"] for p in after[1]] == [1]
    assert [p["frames"] for p in history.meter_history("n1", win, [])] == [600]  # once written: from the database alone


def test_prune_removes_only_expired_minutes_a_bounded_batch_at_a_time(db: peewee.Database) -> None:
    old = [meters("n1", T0 - 60 * i) for i in range(1, 26)]  # 25 minutes before T0
    history.store_minutes(old + [meters("n1", T0)], [metrics("n1", T0 - 60, 1.0), metrics("n1", T0, 1.0)])
    assert history.prune(T0, limit=10) == (10, 1)
    assert history.prune(T0, limit=10) == (10, 0)
    assert history.prune(T0, limit=10) == (5, 0)
    assert history.prune(T0, limit=10) == (0, 0)
    assert [r.minute for r in MeterMinute.select()] == [T0] and [r.minute for r in MetricMinute.select()] == [T0]


def test_deleting_a_node_deletes_its_history(db: peewee.Database) -> None:
    history.store_minutes([meters("n1", T0), meters("n2", T0)], [metrics("n1", T0, 1.0)])
    history.delete_node_history("n1")
    assert [r.node_id for r in MeterMinute.select()] == ["n2"] and MetricMinute.select().count() == 0
