"""History without a database: windows and bucket sizes, minute summaries and their roll-ups, heartbeat minutes."""

from __future__ import annotations

import importlib.util
import math
from datetime import UTC, datetime

import pytest
from hark_fleet.hub.db.database import MIGRATIONS_DIR
from hark_fleet.hub.db.models import MetricMinute
from hark_fleet.hub.errors import InvalidRequest
from hark_fleet.hub.services.history import (
    COLUMNS,
    METRIC_RANGES_S,
    HeartbeatMinutes,
    MeterSummary,
    MetricFold,
    Window,
    expired_before,
    interval_for,
    merge_meters,
    merge_metrics,
    meter_points,
    window,
)
from hark_fleet.protocol.messages import Clock, Disk, Heartbeat, Memory, OutboxLevel

NOW = datetime(2026, 3, 1, 12, 0, 30, tzinfo=UTC).timestamp()  # 30 s into a minute
T0 = int(NOW) - int(NOW) % 3600  # 12:00:00


def at(unix_s: float) -> datetime:
    return datetime.fromtimestamp(unix_s, UTC).replace(tzinfo=None)


def iso(unix_s: float) -> str:
    return datetime.fromtimestamp(unix_s, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def beat(ts: float, cpu: float | None = 10.0, **extra: object) -> Heartbeat:
    return Heartbeat(msg_id=f"hb-{ts}", ts=iso(ts), seq=1, agent_version="1", uptime_s=1.0, cpu_pct=cpu, **extra)  # type: ignore[arg-type]


# -- windows -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "interval"), [("1h", 60), ("24h", 60), ("7d", 600), ("30d", 3600)])
def test_each_range_gets_its_bucket_size_and_stays_small(name: str, interval: int) -> None:
    win = window(name, None, None, NOW, METRIC_RANGES_S)
    assert (win.range, win.interval_s, win.end, win.end - win.start) == (name, interval, NOW, METRIC_RANGES_S[name])
    assert (win.end - win.start) / win.interval_s <= 1440


def test_bucket_sizes_follow_the_span_up_to_a_year() -> None:
    assert [interval_for(s) for s in (60, 86400, 86401, 7 * 86400, 7 * 86400 + 1, 90 * 86400, 90 * 86400 + 1)] == [
        60,
        60,
        600,
        600,
        3600,
        3600,
        86400,
    ]
    assert 366 * 86400 / interval_for(366 * 86400) <= 2160 >= 90 * 86400 / interval_for(90 * 86400)


def test_from_and_to_choose_the_bucket_by_their_span() -> None:
    win = window(None, at(NOW - 2 * 86400), at(NOW), NOW, METRIC_RANGES_S)
    assert (win.range, win.interval_s, win.start, win.end) == (None, 600, NOW - 2 * 86400, NOW)
    assert window(None, at(NOW - 3600), None, NOW, METRIC_RANGES_S).end == NOW  # `to` defaults to now
    assert window(None, None, at(NOW), NOW, METRIC_RANGES_S).start == NOW - 86400  # `from` to a day before `to`
    assert window(None, None, None, NOW, METRIC_RANGES_S, default="24h").range == "24h"


@pytest.mark.parametrize(
    ("name", "start", "end", "field"),
    [
        ("2d", None, None, "range"),
        (None, None, None, "range"),  # no default
        ("24h", NOW - 60, None, "range"),  # both
        (None, NOW, NOW - 60, "from"),  # empty
        (None, NOW - 367 * 86400, NOW, "from"),  # too long
    ],
)
def test_a_bad_window_is_a_400_naming_the_parameter(name: str | None, start: float | None, end: float | None, field: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        window(name, None if start is None else at(start), None if end is None else at(end), NOW, METRIC_RANGES_S)
    assert field in caught.value.body()["error"]["fields"]


def test_a_window_holds_the_minutes_that_overlap_it() -> None:
    win = Window(T0 + 90, T0 + 600, 60, None)
    assert win.first_minute == T0 + 60
    assert [win.holds(m) for m in (T0, T0 + 60, T0 + 540, T0 + 600)] == [False, True, True, False]


# -- meters ------------------------------------------------------------------------------------


def minute(node: str, start: int, frames: int, peak: float, rms: float, momentary: float, integrated: float) -> MeterSummary:
    return MeterSummary(
        node, start, frames, ((peak, peak - 3, rms, rms - 3), (None, None, None, None)), momentary, -21.0, integrated
    )


def test_minutes_roll_up_into_buckets_with_the_highest_levels_and_the_energy_mean_weighted_by_frames() -> None:
    minutes = [
        minute("n1", T0, 600, -6.0, -10.0, -20.0, -23.0),
        minute("n1", T0 + 60, 200, -12.0, -20.0, -18.0, -22.0),  # fewer frames weigh less
        minute("n1", T0 + 600, 600, -30.0, -40.0, -30.0, -24.0),  # the next 10-minute bucket
    ]
    points = meter_points(minutes, Window(T0, T0 + 3600, 600, "7d"))
    assert [p["ts"] for p in points] == ["2026-03-01T12:00:00Z", "2026-03-01T12:10:00Z"]
    first = points[0]
    left = first["channels"][0]
    assert first["frames"] == 800 and left["peak_dbfs"] == -6.0 and left["rms_max_dbfs"] == -10.0
    expected_rms = 10 * math.log10((600 * 10 ** (-13.0 / 10) + 200 * 10 ** (-23.0 / 10)) / 800)
    assert left["rms_dbfs"] == pytest.approx(expected_rms, abs=0.01)
    assert first["channels"][1] == {"index": 1, "peak_dbfs": None, "peak_mean_dbfs": None, "rms_dbfs": None, "rms_max_dbfs": None}
    assert (first["momentary_lufs"], first["short_term_lufs"], first["integrated_lufs"]) == (-18.0, -21.0, -22.0)


def test_two_summaries_of_one_minute_merge_into_one_as_after_a_restart() -> None:
    merged = merge_meters([minute("n1", T0, 300, -6.0, -10.0, -20.0, -23.0), minute("n1", T0, 300, -9.0, -10.0, -25.0, -22.5)])
    assert len(merged) == 1
    assert merged[0].frames == 600 and merged[0].channels[0][0] == -6.0 and merged[0].channels[0][3] == pytest.approx(-13.0)
    assert merged[0].momentary_lufs_max == -20.0


# -- heartbeat metrics -----------------------------------------------------------------------------


def test_the_metric_columns_are_the_migrations_and_the_models() -> None:
    spec = importlib.util.spec_from_file_location("m0012", MIGRATIONS_DIR / "0012_history.py")
    assert spec is not None and spec.loader is not None
    migration = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(migration)
    assert migration.METRIC_COLUMNS == COLUMNS
    assert set(COLUMNS) < set(MetricMinute._meta.fields)


def test_heartbeats_fold_into_the_minute_of_their_own_time() -> None:
    minutes = HeartbeatMinutes()
    full = {
        "memory": Memory(40.0, 1024),
        "disk": Disk("/", 70.0, 5_000_000_000),
        "temperature_c": 50.0,
        "outbox": OutboxLevel(3, 100),
        "clock": Clock(-4.0, "ntp"),
        "load": [0.5, 0.4, 0.3],
    }
    assert minutes.add("n1", beat(T0 + 5, cpu=10.0, **full), NOW, NOW - 86400)
    assert minutes.add("n1", beat(T0 + 15, cpu=30.0, disk=Disk("/", 71.0, 4_000_000_000), clock=Clock(2.0, "ntp")), NOW, 0)
    assert minutes.add("n1", beat(T0 - 3000, cpu=99.0), NOW, 0)  # replayed from the outbox: its own minute
    assert minutes.add("n2", beat(T0 + 20, cpu=None), NOW, 0)
    assert not minutes.add("n1", beat(NOW + 301), NOW, 0)  # a clock far ahead
    assert not minutes.add("n1", beat(NOW - 100), NOW, NOW - 50)  # past the retention
    pending = minutes.pending("n1")
    assert sorted(s.minute for s in pending) == [T0 - 3000, T0]
    point = MetricFold()
    this_minute = next(s for s in pending if s.minute == T0)
    point.add_summary(this_minute)
    values = point.point(T0)
    assert values["samples"] == 2
    assert values["cpu_pct"] == {"mean": 20.0, "max": 30.0}
    assert values["memory_used_pct"] == {"mean": 40.0, "max": 40.0}  # only the heartbeat that had it
    assert values["disk_used_pct"] == {"mean": 70.5, "max": 71.0} and values["disk_free_bytes"] == {"min": 4_000_000_000}
    assert values["clock_offset_ms"] == {"mean": -1.0, "max_abs": 4.0} and values["load_1m"] == {"mean": 0.5, "max": 0.5}


def test_taking_minutes_leaves_the_one_in_progress_until_it_ends() -> None:
    minutes = HeartbeatMinutes()
    minutes.add("n1", beat(T0 - 10), NOW, 0)
    minutes.add("n1", beat(T0 + 10), NOW, 0)
    taken = minutes.take(NOW)
    assert [(s.node_id, s.minute) for s in taken] == [("n1", T0 - 60)]
    assert [s.minute for s in minutes.take(None)] == [T0]  # a clean stop takes the minute in progress too
    assert minutes.take(None) == []


def test_minutes_merge_weighted_by_their_heartbeats() -> None:
    one, two = MetricFold(), MetricFold()
    for cpu in (10.0, 20.0, 30.0):
        one.add_heartbeat(beat(T0, cpu=cpu))
    two.add_heartbeat(beat(T0, cpu=60.0))
    merged = merge_metrics([one.summary("n1", T0), two.summary("n1", T0)])
    assert len(merged) == 1 and merged[0].samples == 4
    fold = MetricFold()
    fold.add_summary(merged[0])
    assert fold.point(T0)["cpu_pct"] == {"mean": 30.0, "max": 60.0}


def test_minutes_expire_after_the_retention() -> None:
    assert expired_before(NOW, 30 * 86400) == int(NOW) - 30 * 86400
