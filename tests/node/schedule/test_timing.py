"""The runner's pure decisions: wait, start or missed for a held job, and when to wake next."""

from __future__ import annotations

from hark_fleet.node.schedule.timing import MAX_SLEEP_S, decide, missed_reason, seconds_until_wake

T0 = 1_800_000_000.0


def test_a_held_job_waits_before_its_start() -> None:
    assert decide(T0, T0 + 60, T0 - 0.001) == "wait"


def test_a_held_job_starts_from_its_start_until_its_end() -> None:
    assert decide(T0, T0 + 60, T0) == "start"
    assert decide(T0, T0 + 60, T0 + 59.999) == "start"  # booted mid-occurrence: the rest, late


def test_a_held_job_whose_end_has_passed_is_missed() -> None:
    assert decide(T0, T0 + 60, T0 + 60) == "missed"
    assert decide(T0, T0 + 60, T0 + 86_400) == "missed"


def test_the_runner_wakes_at_the_soonest_future_start_and_at_least_every_minute() -> None:
    assert seconds_until_wake([T0 + 5, T0 + 2, T0 + 90], T0) == 2
    assert seconds_until_wake([T0 - 3, T0 + 2], T0) == 0  # one is due now
    assert seconds_until_wake([], T0) == MAX_SLEEP_S
    assert seconds_until_wake([T0 + 3600], T0) == MAX_SLEEP_S


def test_the_missed_reason_names_the_occurrence() -> None:
    assert (
        missed_reason(T0, T0 + 60)
        == "the node was not running from 2027-01-15T08:00:00.000Z to 2027-01-15T08:01:00.000Z: nothing was recorded"
    )
