"""Subscriptions: checked with every problem named, matched by event, kind, site and severity, kept quiet by the clock."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hark_fleet.hub.errors import InvalidRequest
from hark_fleet.hub.notify import notices, subscriptions
from hark_fleet.hub.notify.subscriptions import check, matches, quiet_until
from hark_fleet.protocol.watchdog import EVENT_KINDS

HUB = Path(__file__).resolve().parents[3] / "hub"


def problems(value: Any, site: str | None = None) -> dict[str, str]:
    with pytest.raises(InvalidRequest) as err:
        check(value, site=site)
    fields: dict[str, str] = err.value.extra["fields"]
    return fields


def quiet(start: str = "22:00", end: str = "07:00", zone: str = "Europe/London", breaks: bool = True) -> dict[str, Any]:
    return check({"quiet_hours": {"start": start, "end": end, "time_zone": zone, "critical_breaks_through": breaks}}, site=None)


# --- defaults and the known events --------------------------------------------------------------


def test_no_subscription_is_the_default_one() -> None:
    assert check(None, site=None) == subscriptions.DEFAULT
    assert check({}, site="sit_a") == subscriptions.DEFAULT
    assert subscriptions.DEFAULT["min_severity"] == "warning"
    fresh = subscriptions.default()
    fresh["events"].append("x.y")
    assert "x.y" not in subscriptions.DEFAULT["events"]


def test_known_events_are_ones_the_hub_emits() -> None:
    source = "\n".join(p.read_text() for p in HUB.rglob("*.py") if "notify" not in p.parts)
    emitted = set(re.findall(r'FleetEvent\(\s*"([a-z_.]+)"', source))
    prefixes = set(re.findall(r'FleetEvent\(\s*f"([a-z_.]+)\{', source)) | {"recording.job."}
    for event_type in subscriptions.KNOWN_EVENTS:
        derived = event_type in notices.DERIVED
        assert event_type in emitted or derived or any(event_type.startswith(p) for p in prefixes), event_type
    for event_type in subscriptions.DEFAULT["events"]:
        assert event_type in subscriptions.KNOWN_EVENTS
    assert all(description for description in subscriptions.KNOWN_EVENTS.values())


def test_every_watchdog_health_kind_is_known_to_the_editor() -> None:
    assert set(EVENT_KINDS.values()) <= set(subscriptions.KNOWN_HEALTH_KINDS)
    assert "disk.hours_left" in subscriptions.KNOWN_HEALTH_KINDS


# --- checks --------------------------------------------------------------------------------------


def test_a_full_subscription_is_normalised() -> None:
    value = {
        "events": ["health.*", "node.offline", "node.offline", "recording.job.failed", "schedule.occurrence.*"],
        "health_kinds": ["audio.silence", "disk.*"],
        "sites": ["sit_a", "sit_b", "sit_a"],
        "min_severity": "critical",
        "quiet_hours": {"start": "22:00", "end": "07:00", "time_zone": "Europe/London"},
    }
    assert check(value, site=None) == {
        "events": ["health.*", "node.offline", "recording.job.failed", "schedule.occurrence.*"],
        "health_kinds": ["audio.silence", "disk.*"],
        "sites": ["sit_a", "sit_b"],
        "min_severity": "critical",
        "quiet_hours": {"start": "22:00", "end": "07:00", "time_zone": "Europe/London", "critical_breaks_through": True},
    }


def test_a_new_kind_of_event_needs_no_code() -> None:
    assert check({"events": ["backup.failed"]}, site=None)["events"] == ["backup.failed"]


def test_every_problem_is_named_at_once() -> None:
    found = problems(
        {
            "events": ["health"],
            "health_kinds": ["audio silence"],
            "sites": "sit_a",
            "min_severity": "loud",
            "quiet_hours": {"start": "25:00", "end": "7:00", "time_zone": "Mars/Olympus", "critical_breaks_through": "yes"},
            "colour": "red",
        }
    )
    assert set(found) == {
        "subscription.events",
        "subscription.health_kinds",
        "subscription.sites",
        "subscription.min_severity",
        "subscription.quiet_hours.start",
        "subscription.quiet_hours.end",
        "subscription.quiet_hours.time_zone",
        "subscription.quiet_hours.critical_breaks_through",
        "subscription.colour",
    }


def test_a_subscription_must_be_an_object() -> None:
    assert set(problems(["health.opened"])) == {"subscription"}


@pytest.mark.parametrize(
    "event",
    ["health", "Health.opened", "health.", ".opened", "health.*.x", "*", "health.opened.x.y", "health opened", "a.b-c", 5, ""],
)
def test_malformed_event_types_are_named(event: Any) -> None:
    assert set(problems({"events": [event]})) == {"subscription.events"}


@pytest.mark.parametrize("events", [[], "health.opened", [f"a.e{i}" for i in range(51)]])
def test_events_are_a_list_of_one_to_fifty(events: Any) -> None:
    assert set(problems({"events": events})) == {"subscription.events"}


def test_fifty_events_are_fine() -> None:
    assert len(check({"events": [f"a.e{i}" for i in range(50)]}, site=None)["events"]) == 50


@pytest.mark.parametrize("kinds", ["audio.silence", ["audio silence"], ["audio.*.x"], [""], [f"k{i}" for i in range(51)]])
def test_malformed_health_kinds_are_named(kinds: Any) -> None:
    assert set(problems({"health_kinds": kinds})) == {"subscription.health_kinds"}


def test_sites_are_at_most_a_hundred_names() -> None:
    assert len(check({"sites": [f"s{i}" for i in range(100)]}, site=None)["sites"]) == 100
    assert set(problems({"sites": [f"s{i}" for i in range(101)]})) == {"subscription.sites"}
    assert set(problems({"sites": [""]})) == {"subscription.sites"}
    assert set(problems({"sites": [" padded"]})) == {"subscription.sites"}
    assert set(problems({"sites": [3]})) == {"subscription.sites"}


def test_a_site_scoped_channel_may_only_name_its_own_site() -> None:
    assert check({"sites": []}, site="sit_a")["sites"] == []
    assert check({"sites": ["sit_a"]}, site="sit_a")["sites"] == ["sit_a"]
    assert "sit_a" in problems({"sites": ["sit_b"]}, site="sit_a")["subscription.sites"]
    assert set(problems({"sites": ["sit_a", "sit_b"]}, site="sit_a")) == {"subscription.sites"}


@pytest.mark.parametrize(
    ("hours", "field"),
    [
        ({"start": "22:00", "end": "22:00", "time_zone": "UTC"}, "end"),
        ({"end": "07:00", "time_zone": "UTC"}, "start"),
        ({"start": "22:00", "time_zone": "UTC"}, "end"),
        ({"start": "22:00", "end": "24:00", "time_zone": "UTC"}, "end"),
        ({"start": "22:60", "end": "07:00", "time_zone": "UTC"}, "start"),
        ({"start": "22:00:00", "end": "07:00", "time_zone": "UTC"}, "start"),
        ({"start": "22:00", "end": "07:00"}, "time_zone"),
        ({"start": "22:00", "end": "07:00", "time_zone": "../../etc/passwd"}, "time_zone"),
        ({"start": "22:00", "end": "07:00", "time_zone": "Europe/Nowhere"}, "time_zone"),
        ({"start": "22:00", "end": "07:00", "time_zone": 0}, "time_zone"),
        ({"start": "22:00", "end": "07:00", "time_zone": "UTC", "critical_breaks_through": 1}, "critical_breaks_through"),
        ({"start": "22:00", "end": "07:00", "time_zone": "UTC", "until": "x"}, "until"),
    ],
)
def test_bad_quiet_hours_name_their_field(hours: dict[str, Any], field: str) -> None:
    assert set(problems({"quiet_hours": hours})) == {f"subscription.quiet_hours.{field}"}


def test_quiet_hours_must_be_an_object_or_null() -> None:
    assert set(problems({"quiet_hours": "22:00-07:00"})) == {"subscription.quiet_hours"}
    assert check({"quiet_hours": None}, site=None)["quiet_hours"] is None


# --- matching ------------------------------------------------------------------------------------


def match(sub: dict[str, Any], **notice: Any) -> bool:
    values: dict[str, Any] = {
        "event_type": "health.opened",
        "health_kind": "audio.silence",
        "site": "sit_a",
        "severity": "warning",
        "channel_site": None,
    }
    values.update(notice)
    return matches(sub, **values)


def test_events_match_exactly_or_under_a_pattern() -> None:
    sub = check({"events": ["health.*", "node.offline", "recording.job.*"]}, site=None)
    assert match(sub, event_type="health.opened")
    assert match(sub, event_type="health.resolved")
    assert match(sub, event_type="node.offline")
    assert match(sub, event_type="recording.job.failed")
    assert not match(sub, event_type="node.online")
    assert not match(sub, event_type="healthy.opened")
    assert not match(sub, event_type="recording.failed")


def test_a_two_word_pattern_matches_deeper_names() -> None:
    sub = check({"events": ["recording.*"]}, site=None)
    assert match(sub, event_type="recording.job.failed")


def test_health_kinds_filter_only_health_notices() -> None:
    sub = check({"events": ["health.*", "node.*"], "health_kinds": ["audio.*", "disk.hours_left"]}, site=None)
    assert match(sub, health_kind="audio.silence")
    assert match(sub, health_kind="disk.hours_left")
    assert not match(sub, health_kind="temperature.high")
    assert not match(sub, health_kind="audiox.silence")
    assert match(sub, event_type="node.offline", health_kind=None)
    every = check({"events": ["health.*"]}, site=None)
    assert match(every, health_kind="temperature.high")


@pytest.mark.parametrize(
    ("minimum", "severity", "told"),
    [
        ("info", "info", True),
        ("info", "warning", True),
        ("info", "critical", True),
        ("warning", "info", False),
        ("warning", "warning", True),
        ("warning", "critical", True),
        ("critical", "info", False),
        ("critical", "warning", False),
        ("critical", "critical", True),
    ],
)
def test_severity_is_ordered_info_warning_critical(minimum: str, severity: str, told: bool) -> None:
    assert match(check({"min_severity": minimum}, site=None), severity=severity) is told


def test_a_site_scoped_channel_hears_only_its_site() -> None:
    sub = check({}, site="sit_a")
    assert match(sub, site="sit_a", channel_site="sit_a")
    assert not match(sub, site="sit_b", channel_site="sit_a")
    assert not match(sub, site=None, channel_site="sit_a")
    own = check({"sites": ["sit_a"]}, site="sit_a")
    assert match(own, site="sit_a", channel_site="sit_a")


def test_a_hub_wide_channel_hears_every_site_unless_it_names_some() -> None:
    every = check({}, site=None)
    assert match(every, site="sit_a")
    assert match(every, site="sit_z")
    assert match(every, site=None)
    some = check({"sites": ["sit_a", "sit_b"]}, site=None)
    assert match(some, site="sit_b")
    assert not match(some, site="sit_c")
    assert not match(some, site=None), "a hub-wide notice reaches only channels with sites []"


# --- quiet hours ---------------------------------------------------------------------------------


def utc(year: int, month: int, day: int, hour: int, minute: int) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def test_no_quiet_hours_never_holds_back() -> None:
    assert quiet_until(check({}, site=None), "warning", utc(2026, 12, 6, 3, 0)) is None


def test_outside_quiet_hours_nothing_is_held() -> None:
    sub = quiet("22:00", "07:00", "UTC")
    assert quiet_until(sub, "warning", utc(2026, 12, 6, 12, 0)) is None
    assert quiet_until(sub, "warning", utc(2026, 12, 6, 7, 0)) is None, "the end is not quiet"
    assert quiet_until(sub, "warning", utc(2026, 12, 6, 21, 59)) is None


def test_a_window_across_midnight_ends_the_next_morning() -> None:
    sub = quiet("22:00", "07:00", "UTC")
    assert quiet_until(sub, "warning", utc(2026, 12, 6, 22, 0)) == utc(2026, 12, 7, 7, 0)
    assert quiet_until(sub, "warning", utc(2026, 12, 6, 23, 30)) == utc(2026, 12, 7, 7, 0)
    assert quiet_until(sub, "warning", utc(2026, 12, 7, 3, 0)) == utc(2026, 12, 7, 7, 0)


def test_a_window_within_a_day() -> None:
    sub = quiet("12:00", "13:30", "UTC")
    assert quiet_until(sub, "info", utc(2026, 12, 6, 12, 15)) == utc(2026, 12, 6, 13, 30)
    assert quiet_until(sub, "info", utc(2026, 12, 6, 11, 59)) is None
    assert quiet_until(sub, "info", utc(2026, 12, 6, 13, 30)) is None


def test_quiet_hours_are_in_the_channels_time_zone() -> None:
    sub = quiet("22:00", "07:00", "America/New_York")  # EST, UTC-5 in December
    assert quiet_until(sub, "warning", utc(2026, 12, 6, 23, 0)) is None  # 18:00 in New York
    assert quiet_until(sub, "warning", utc(2026, 12, 7, 4, 0)) == utc(2026, 12, 7, 12, 0)  # 23:00 -> 07:00 EST


def test_a_critical_breaks_through_unless_told_not_to() -> None:
    night = utc(2026, 12, 6, 23, 0)
    assert quiet_until(quiet(zone="UTC"), "critical", night) is None
    assert quiet_until(quiet(zone="UTC", breaks=False), "critical", night) == utc(2026, 12, 7, 7, 0)
    assert quiet_until(quiet(zone="UTC"), "warning", night) == utc(2026, 12, 7, 7, 0)


def test_naive_times_are_utc_and_answered_naive() -> None:
    until = quiet_until(quiet(zone="UTC"), "warning", datetime(2026, 12, 6, 23, 0))
    assert until == datetime(2026, 12, 7, 7, 0) and until.tzinfo is None


def test_the_night_the_clocks_go_forward_ends_at_local_seven() -> None:
    # Europe/London, 29 March 2026: 01:00 GMT becomes 02:00 BST; 07:00 BST is 06:00 UTC.
    sub = quiet("22:00", "07:00", "Europe/London")
    assert quiet_until(sub, "warning", utc(2026, 3, 28, 23, 0)) == utc(2026, 3, 29, 6, 0)
    assert quiet_until(sub, "warning", utc(2026, 3, 29, 3, 0)) == utc(2026, 3, 29, 6, 0)
    assert quiet_until(sub, "warning", utc(2026, 3, 29, 6, 0)) is None


def test_the_night_the_clocks_go_back_ends_at_local_seven() -> None:
    # Europe/London, 25 October 2026: 02:00 BST becomes 01:00 GMT; 07:00 GMT is 07:00 UTC.
    sub = quiet("22:00", "07:00", "Europe/London")
    assert quiet_until(sub, "warning", utc(2026, 10, 24, 21, 30)) == utc(2026, 10, 25, 7, 0)  # 22:30 BST
    assert quiet_until(sub, "warning", utc(2026, 10, 24, 20, 59)) is None  # 21:59 BST


def test_an_end_inside_the_spring_gap_is_the_moment_the_clock_jumps() -> None:
    # 01:30 does not exist in London on 29 March 2026: the clock jumps from 01:00 GMT to 02:00 BST at 01:00 UTC.
    sub = quiet("00:30", "01:30", "Europe/London")
    assert quiet_until(sub, "warning", utc(2026, 3, 29, 0, 45)) == utc(2026, 3, 29, 1, 0)


def test_an_end_inside_the_autumn_fold_is_its_next_occurrence() -> None:
    # 01:30 happens twice in London on 25 October 2026: 00:30 UTC (BST) and 01:30 UTC (GMT).
    sub = quiet("00:30", "01:30", "Europe/London")
    assert quiet_until(sub, "warning", utc(2026, 10, 24, 23, 45)) == utc(2026, 10, 25, 0, 30)  # 00:45 BST
    assert quiet_until(sub, "warning", utc(2026, 10, 25, 1, 10)) == utc(2026, 10, 25, 1, 30)  # 01:10 GMT, again quiet
    assert quiet_until(sub, "warning", utc(2026, 10, 25, 0, 40)) is None  # 01:40 BST


def test_a_quiet_hours_reason_reads_well() -> None:
    assert subscriptions.describe_quiet(quiet()) == "quiet hours until 07:00 Europe/London"
