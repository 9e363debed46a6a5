"""Schedule occurrences without a database: daylight saving in three zones, rules, windows, solar, validation, overlaps."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from astral import Observer
from astral import sun as astral_sun
from hark_fleet.hub.services.schedule_times import (
    ScheduleSpec,
    SolarAnchor,
    occurrences,
    overlaps,
    validate,
)

HOUR = 3600
BERLIN = (52.52, 13.40)
LONGYEARBYEN = (78.22, 15.65)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def expand(spec: ScheduleSpec, start: datetime, end: datetime, limit: int = 1000):
    return occurrences(spec, start, end, limit).occurrences


def one_on(spec: ScheduleSpec, day: date):
    """The occurrence whose local start falls on `day`."""
    found = [o for o in expand(spec, utc(day.year, 1, 1), utc(day.year + 1, 1, 1)) if o.local_start.startswith(day.isoformat())]
    assert len(found) == 1, found
    return found[0]


# -- daylight saving: (zone, spring-forward day, a time in its gap, first valid wall time after the gap,
#    fall-back day, a time that occurs twice, its first UTC instant)
DST = [
    (
        "Europe/Berlin",
        date(2027, 3, 28),
        (2, 30),
        "03:00",
        utc(2027, 3, 28, 1, 0),
        date(2027, 10, 31),
        (2, 30),
        utc(2027, 10, 31, 0, 30),
    ),
    (
        "America/New_York",
        date(2027, 3, 14),
        (2, 15),
        "03:00",
        utc(2027, 3, 14, 7, 0),
        date(2027, 11, 7),
        (1, 30),
        utc(2027, 11, 7, 5, 30),
    ),
    (
        "Australia/Lord_Howe",
        date(2027, 10, 3),
        (2, 10),
        "02:30",
        utc(2027, 10, 2, 15, 30),
        date(2027, 4, 4),
        (1, 45),
        utc(2027, 4, 3, 14, 45),
    ),
]
ZONES = [row[0] for row in DST]


@pytest.mark.parametrize(("zone", "gap_day", "gap_time", "after_gap", "gap_utc", "_d", "_t", "_u"), DST, ids=ZONES)
def test_a_start_inside_the_spring_forward_gap_starts_at_the_first_instant_after_it(
    zone, gap_day, gap_time, after_gap, gap_utc, _d, _t, _u
):
    spec = ScheduleSpec(zone, datetime(gap_day.year, 1, 1, *gap_time), HOUR, "FREQ=DAILY")
    occ = one_on(spec, gap_day)
    assert occ.start_utc == gap_utc
    assert occ.local_start[11:16] == after_gap
    assert occ.note == f"shifted: {gap_time[0]:02d}:{gap_time[1]:02d} does not exist on {gap_day} in {zone}, started {after_gap}"
    # the days around keep their wall time
    for other in (gap_day - timedelta(days=1), gap_day + timedelta(days=1)):
        assert one_on(spec, other).local_start[11:16] == f"{gap_time[0]:02d}:{gap_time[1]:02d}"
        assert one_on(spec, other).note is None


@pytest.mark.parametrize(("zone", "_g", "_gt", "_a", "_gu", "fold_day", "fold_time", "first_utc"), DST, ids=ZONES)
def test_a_start_that_occurs_twice_at_fall_back_starts_once_at_the_first(zone, _g, _gt, _a, _gu, fold_day, fold_time, first_utc):
    spec = ScheduleSpec(zone, datetime(fold_day.year, 1, 1, *fold_time), HOUR, "FREQ=DAILY")
    occ = one_on(spec, fold_day)
    assert occ.start_utc == first_utc
    assert occ.note is not None and occ.note.startswith("ambiguous:")
    second = first_utc + timedelta(minutes=30 if zone == "Australia/Lord_Howe" else 60)
    day_window = expand(spec, first_utc - timedelta(hours=12), first_utc + timedelta(hours=12))
    assert [o.start_utc for o in day_window] == [first_utc]
    assert second not in [o.start_utc for o in day_window]


@pytest.mark.parametrize(("zone", "gap_day", "_gt", "_a", "_gu", "fold_day", "_ft", "_fu"), DST, ids=ZONES)
def test_an_eight_hour_take_from_23_00_across_either_change_lasts_eight_real_hours(
    zone, gap_day, _gt, _a, _gu, fold_day, _ft, _fu
):
    tz = ZoneInfo(zone)
    spec = ScheduleSpec(zone, datetime(gap_day.year, 1, 1, 23, 0), 8 * HOUR, "FREQ=DAILY")
    shift = {"Australia/Lord_Howe": 30}.get(zone, 60)
    for change_day, wall_delta in ((gap_day, +shift), (fold_day, -shift)):
        occ = one_on(spec, change_day - timedelta(days=1))
        assert occ.end_utc - occ.start_utc == timedelta(hours=8)
        end_local = occ.end_utc.astimezone(tz)
        # the wall clock shows 07:00 shifted by the change, because the take lasts 8 elapsed hours
        assert end_local.replace(tzinfo=None) == datetime.combine(change_day, datetime.min.time()).replace(hour=7) + timedelta(
            minutes=wall_delta
        )


def test_every_hour_for_ten_minutes_through_both_berlin_changes_never_starts_twice_at_one_instant():
    spec = ScheduleSpec("Europe/Berlin", datetime(2027, 1, 1, 0, 0), 600, "FREQ=HOURLY")
    spring = expand(spec, utc(2027, 3, 27, 22), utc(2027, 3, 28, 4))  # 23:00 CET .. 06:00 CEST
    assert [o.local_start[11:16] for o in spring] == ["23:00", "00:00", "01:00", "03:00", "04:00", "05:00"]
    assert all(o.end_utc - o.start_utc == timedelta(minutes=10) for o in spring)
    autumn = expand(spec, utc(2027, 10, 30, 22), utc(2027, 10, 31, 4))  # 00:00 CEST .. 05:00 CET
    assert [o.local_start for o in autumn] == [
        "2027-10-31T00:00:00+02:00",
        "2027-10-31T01:00:00+02:00",
        "2027-10-31T02:00:00+02:00",
        "2027-10-31T03:00:00+01:00",
        "2027-10-31T04:00:00+01:00",
    ]


def test_weekly_byday_picks_weekdays_and_exdate_removes_one_local_day():
    spec = ScheduleSpec(
        "America/New_York",
        datetime(2027, 3, 1, 9, 0),
        8 * HOUR,
        "FREQ=WEEKLY;BYDAY=MO,WE,FR",
        exdates=(datetime(2027, 3, 10, 9, 0),),
    )
    found = expand(spec, utc(2027, 3, 1), utc(2027, 3, 20))
    assert [o.local_start[:10] for o in found] == [
        "2027-03-01",
        "2027-03-03",
        "2027-03-05",
        "2027-03-08",
        "2027-03-12",
        "2027-03-15",
        "2027-03-17",
        "2027-03-19",
    ]
    # 09:00 local on both sides of the 14 March change: 14:00 UTC before, 13:00 UTC after
    assert found[4].start_utc == utc(2027, 3, 12, 14, 0)
    assert found[5].start_utc == utc(2027, 3, 15, 13, 0)


def test_exdate_inside_the_rrule_text_is_honoured_too():
    spec = ScheduleSpec("Europe/Berlin", datetime(2027, 5, 1, 6, 0), HOUR, "RRULE:FREQ=DAILY;COUNT=3\nEXDATE:20270502T060000")
    assert [o.local_start[:10] for o in expand(spec, utc(2027, 1, 1), utc(2028, 1, 1))] == ["2027-05-01", "2027-05-03"]


def test_the_validity_window_bounds_the_starts_and_limit_caps_the_count():
    spec = ScheduleSpec(
        "Europe/Berlin",
        datetime(2027, 5, 1, 6, 0),
        HOUR,
        "FREQ=DAILY",
        valid_from=utc(2027, 5, 3, 0, 0),
        valid_until=utc(2027, 5, 6, 4, 0),  # 06:00 CEST: the 6th's start is excluded (the end is exclusive)
    )
    assert [o.local_start[:10] for o in expand(spec, utc(2027, 5, 1), utc(2027, 6, 1))] == [
        "2027-05-03",
        "2027-05-04",
        "2027-05-05",
    ]
    assert [o.local_start[:10] for o in expand(spec, utc(2027, 5, 1), utc(2027, 6, 1), limit=2)] == ["2027-05-03", "2027-05-04"]
    assert expand(spec, utc(2027, 6, 1), utc(2027, 7, 1)) == []


def test_without_a_rule_a_spec_is_a_single_take():
    spec = ScheduleSpec("Europe/Berlin", datetime(2027, 5, 1, 6, 0), HOUR)
    assert [o.start_utc for o in expand(spec, utc(2027, 1, 1), utc(2028, 1, 1))] == [utc(2027, 5, 1, 4, 0)]


def test_thirty_minutes_before_sunrise_in_berlin_matches_astral_within_a_minute():
    tz = ZoneInfo("Europe/Berlin")
    spec = ScheduleSpec(
        "Europe/Berlin", datetime(2027, 5, 1), 2 * HOUR, solar=SolarAnchor("sunrise", -30, *BERLIN, elevation_m=34.0)
    )
    found = occurrences(spec, utc(2027, 5, 1), utc(2027, 5, 4), 10)
    assert found.absent == []
    assert len(found.occurrences) == 3
    for occ in found.occurrences:
        day = datetime.fromisoformat(occ.local_start).date()
        expected = astral_sun.sunrise(Observer(*BERLIN, 34.0), day, tzinfo=tz) - timedelta(minutes=30)
        assert abs(occ.start_utc - expected) < timedelta(minutes=1)
        assert occ.end_utc - occ.start_utc == timedelta(hours=2)
        assert occ.note is not None and occ.note.startswith("sunrise ") and occ.note.endswith("- 30 min")
    # early May in Berlin: sunrise around 05:30 CEST, so the take starts around 05:00
    assert "04:40" < found.occurrences[0].local_start[11:16] < "05:20"


def test_a_solar_rule_picks_days_like_any_rule():
    spec = ScheduleSpec(
        "Europe/Berlin", datetime(2027, 5, 1), HOUR, "FREQ=WEEKLY;BYDAY=SA", solar=SolarAnchor("dusk_civil", 0, *BERLIN)
    )
    assert [o.local_start[:10] for o in expand(spec, utc(2027, 5, 1), utc(2027, 5, 20))] == [
        "2027-05-01",
        "2027-05-08",
        "2027-05-15",
    ]


def test_polar_day_at_longyearbyen_gives_no_sunrise_and_says_why():
    spec = ScheduleSpec("Arctic/Longyearbyen", datetime(2027, 6, 1), HOUR, solar=SolarAnchor("sunrise", -30, *LONGYEARBYEN))
    found = occurrences(spec, utc(2027, 6, 20, 12), utc(2027, 6, 22, 12), 10)
    assert found.occurrences == []
    assert [a.reason for a in found.absent] == [
        "no sunrise on 2027-06-21 at 78.2N: the sun stays up (polar day)",
        "no sunrise on 2027-06-22 at 78.2N: the sun stays up (polar day)",
    ]


def test_polar_night_at_longyearbyen_gives_no_sunset_or_civil_dawn_and_says_why():
    sunset = ScheduleSpec("Arctic/Longyearbyen", datetime(2027, 12, 1), HOUR, solar=SolarAnchor("sunset", 0, *LONGYEARBYEN))
    found = occurrences(sunset, utc(2027, 12, 21), utc(2027, 12, 22), 10)
    assert found.occurrences == []
    assert [a.reason for a in found.absent] == ["no sunset on 2027-12-21 at 78.2N: the sun stays down (polar night)"]
    dawn = ScheduleSpec("Arctic/Longyearbyen", datetime(2027, 12, 1), HOUR, solar=SolarAnchor("dawn_civil", 0, *LONGYEARBYEN))
    reasons = [a.reason for a in occurrences(dawn, utc(2027, 12, 21), utc(2027, 12, 22), 10).absent]
    assert reasons == ["no civil dawn on 2027-12-21 at 78.2N: the sun stays more than 6° below the horizon all day"]


def test_longyearbyen_has_sunrises_again_in_march():
    spec = ScheduleSpec("Arctic/Longyearbyen", datetime(2027, 3, 1), HOUR, solar=SolarAnchor("sunrise", 0, *LONGYEARBYEN))
    found = occurrences(spec, utc(2027, 3, 20), utc(2027, 3, 23), 10)
    assert found.absent == []
    assert len(found.occurrences) == 3


def test_validation_names_every_bad_field():
    bad = ScheduleSpec(
        "Mars/Olympus_Mons", datetime(2027, 1, 1), 0, "FREQ=SOMETIMES", solar=SolarAnchor("noon", 2000, None, 200.0)
    )
    problems = validate(bad)
    assert set(problems) == {
        "time_zone",
        "duration_s",
        "rrule",
        "solar.event",
        "solar.offset_minutes",
        "solar.latitude",
        "solar.longitude",
    }
    assert "IANA" in problems["time_zone"]
    assert "needs the latitude" in problems["solar.latitude"]
    assert "-180" in problems["solar.longitude"]
    with pytest.raises(ValueError, match="time_zone"):
        occurrences(bad, utc(2027, 1, 1), utc(2027, 2, 1), 10)


def test_validation_rejects_a_dtstart_in_the_rule_an_aware_start_and_a_reversed_window():
    problems = validate(
        ScheduleSpec(
            "Europe/Berlin",
            datetime(2027, 1, 1, tzinfo=UTC),
            8 * 86400,
            "DTSTART:20270101T000000\nRRULE:FREQ=DAILY",
            valid_from=utc(2027, 2, 1),
            valid_until=utc(2027, 1, 1),
        )
    )
    assert set(problems) == {"start_local", "duration_s", "rrule", "valid_until"}


def test_a_utc_until_is_refused_with_a_message_saying_the_rule_is_local():
    problems = validate(ScheduleSpec("Europe/Berlin", datetime(2027, 1, 1, 6), HOUR, "FREQ=DAILY;UNTIL=20270110T000000Z"))
    assert "local wall time without Z" in problems["rrule"]
    local_until = ScheduleSpec("Europe/Berlin", datetime(2027, 1, 1, 6), HOUR, "FREQ=DAILY;UNTIL=20270103T060000")
    assert validate(local_until) == {}
    assert len(expand(local_until, utc(2027, 1, 1), utc(2027, 2, 1))) == 3


def test_a_good_spec_has_no_problems():
    assert validate(ScheduleSpec("Australia/Lord_Howe", datetime(2027, 1, 1, 6), HOUR, "FREQ=WEEKLY;BYDAY=MO")) == {}
    assert validate(ScheduleSpec("Europe/Berlin", datetime(2027, 1, 1), HOUR, solar=SolarAnchor("sunrise", -30, *BERLIN))) == {}


def test_overlaps_lists_the_first_clashing_pairs_and_back_to_back_takes_do_not_clash():
    weekdays = ScheduleSpec("Europe/Berlin", datetime(2027, 5, 3, 9, 0), 8 * HOUR, "FREQ=WEEKLY;BYDAY=MO,TU,WE,TH,FR")
    hourly = ScheduleSpec("Europe/Berlin", datetime(2027, 5, 3, 0, 0), 600, "FREQ=HOURLY")
    clashes = overlaps(weekdays, hourly, utc(2027, 5, 3), utc(2027, 5, 10), limit=3)
    assert [(a.local_start[11:16], b.local_start[11:16]) for a, b in clashes] == [
        ("09:00", "09:00"),
        ("09:00", "10:00"),
        ("09:00", "11:00"),
    ]
    evening = ScheduleSpec("Europe/Berlin", datetime(2027, 5, 3, 17, 0), HOUR, "FREQ=DAILY")
    assert overlaps(weekdays, evening, utc(2027, 5, 3), utc(2027, 6, 3)) == []
    weekend = ScheduleSpec("Europe/Berlin", datetime(2027, 5, 1, 10, 0), HOUR, "FREQ=WEEKLY;BYDAY=SA,SU")
    assert overlaps(weekdays, weekend, utc(2027, 5, 1), utc(2027, 6, 1)) == []


def test_overlaps_catch_a_dawn_take_running_into_a_fixed_one():
    dawn = ScheduleSpec("Europe/Berlin", datetime(2027, 5, 1), 2 * HOUR, solar=SolarAnchor("sunrise", -30, *BERLIN))
    six = ScheduleSpec("Europe/Berlin", datetime(2027, 5, 1, 6, 0), HOUR, "FREQ=DAILY")
    clashes = overlaps(dawn, six, utc(2027, 5, 1), utc(2027, 5, 3))
    assert [b.local_start[:16] for _, b in clashes] == ["2027-05-01T06:00", "2027-05-02T06:00"]


def test_a_five_minute_rule_begun_years_ago_expands_the_same_as_one_begun_today():
    old = ScheduleSpec(
        time_zone="Europe/Berlin", start_local=datetime(2019, 3, 1, 0, 2), duration_s=60, rrule="FREQ=MINUTELY;INTERVAL=5"
    )
    new = ScheduleSpec(
        time_zone="Europe/Berlin", start_local=datetime(2026, 3, 1, 0, 2), duration_s=60, rrule="FREQ=MINUTELY;INTERVAL=5"
    )
    window = (datetime(2026, 3, 28, 23, 0, tzinfo=UTC), datetime(2026, 3, 29, 3, 0, tzinfo=UTC))  # across spring forward
    starts = [o.local_start for o in occurrences(old, *window).occurrences]
    assert starts == [o.local_start for o in occurrences(new, *window).occurrences]
    # 00:02-01:57 and 03:02-04:57, and the twelve walls inside the gap start once, at 03:00.
    assert starts[0] == "2026-03-29T00:02:00+01:00" and len(starts) == 24 + 1 + 24


def test_weekly_rules_keep_their_days_and_interval_when_the_walk_is_shortened():
    spec = ScheduleSpec(
        time_zone="America/New_York",
        start_local=datetime(2015, 1, 5, 7, 30),
        duration_s=600,
        rrule="FREQ=WEEKLY;INTERVAL=2;BYDAY=MO,FR",
    )
    got = [
        o.local_start[:10]
        for o in occurrences(spec, datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 31, tzinfo=UTC)).occurrences
    ]
    # 2015-01-05 is a Monday; every other week from it: the weeks of 2026-01-05 and 2026-01-19.
    assert got == ["2026-01-05", "2026-01-09", "2026-01-19", "2026-01-23"]
