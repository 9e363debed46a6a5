"""What a delivery attempt's result means, and how long to wait before the next one."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest
from hark_fleet.hub.notify.retry import (
    BASE_DELAY_S,
    GIVE_UP_AFTER_S,
    MAX_DELAY_S,
    Verdict,
    classify,
    next_delay_s,
    should_give_up,
)

NOW = datetime(2026, 12, 6, 12, 0, 0, tzinfo=UTC)


class Highest:
    """A jitter source that always picks the top of the range."""

    def uniform(self, a: float, b: float) -> float:
        return b


class Lowest:
    def uniform(self, a: float, b: float) -> float:
        return a


@pytest.mark.parametrize("status", [200, 201, 202, 204, 299])
def test_2xx_is_delivered(status: int) -> None:
    assert classify(status, None, {}, NOW) == Verdict("delivered", None, f"HTTP {status}")


@pytest.mark.parametrize("error", ["timed out", "connection refused", None])
def test_no_response_is_retried_with_the_error_as_reason(error: str | None) -> None:
    verdict = classify(None, error, {}, NOW)
    assert verdict.outcome == "retry" and verdict.retry_after_s is None
    assert (error or "unknown") in verdict.reason


@pytest.mark.parametrize("status", [429, 500, 502, 503, 504])
def test_429_and_5xx_are_retried(status: int) -> None:
    verdict = classify(status, None, {}, NOW)
    assert verdict.outcome == "retry" and verdict.retry_after_s is None
    assert str(status) in verdict.reason


@pytest.mark.parametrize("status", [400, 401, 403, 404, 410, 413, 422])
def test_other_4xx_fail_at_once_naming_the_status_and_provider_message(status: int) -> None:
    verdict = classify(status, "invalid_payload", {"Retry-After": "10"}, NOW)
    assert verdict.outcome == "failed" and verdict.retry_after_s is None
    assert str(status) in verdict.reason and "invalid_payload" in verdict.reason


@pytest.mark.parametrize(("value", "seconds"), [("120", 120.0), ("0", 0.0), (" 7 ", 7.0), ("86400", 3600.0)])
def test_retry_after_in_seconds_is_honoured_and_clamped(value: str, seconds: float) -> None:
    assert classify(429, None, {"Retry-After": value}, NOW).retry_after_s == seconds


def test_retry_after_header_name_is_case_insensitive() -> None:
    assert classify(503, None, {"retry-after": "30"}, NOW).retry_after_s == 30.0


def test_retry_after_as_http_date() -> None:
    in_90_s = "Sun, 06 Dec 2026 12:01:30 GMT"
    assert classify(503, None, {"Retry-After": in_90_s}, NOW).retry_after_s == 90.0


def test_retry_after_date_in_the_past_means_now_and_far_future_is_clamped() -> None:
    assert classify(503, None, {"Retry-After": "Sun, 06 Dec 2026 11:00:00 GMT"}, NOW).retry_after_s == 0.0
    assert classify(503, None, {"Retry-After": "Mon, 07 Dec 2026 12:00:00 GMT"}, NOW).retry_after_s == 3600.0


@pytest.mark.parametrize("value", ["soon", "-5", "1.5e3", "", "Sun, 99 Foo 2026", "inf"])
def test_bad_retry_after_is_ignored(value: str) -> None:
    verdict = classify(429, None, {"Retry-After": value}, NOW)
    assert verdict.outcome == "retry" and verdict.retry_after_s is None


def test_backoff_ceiling_doubles_from_the_base_up_to_the_cap() -> None:
    ceilings = [next_delay_s(attempt, None, Highest()) for attempt in range(1, 12)]
    assert ceilings[:4] == [BASE_DELAY_S, 2 * BASE_DELAY_S, 4 * BASE_DELAY_S, 8 * BASE_DELAY_S]
    assert max(ceilings) == MAX_DELAY_S == ceilings[-1]
    assert next_delay_s(10_000, None, Highest()) == MAX_DELAY_S


def test_full_jitter_stays_between_zero_and_the_ceiling() -> None:
    rng = random.Random(21)
    delays = [next_delay_s(4, None, rng) for _ in range(200)]
    assert all(0.0 <= delay <= 8 * BASE_DELAY_S for delay in delays)
    assert len(set(delays)) > 100
    assert next_delay_s(4, None, Lowest()) == 0.0


def test_delay_is_never_shorter_than_retry_after() -> None:
    assert next_delay_s(1, 120.0, Lowest()) == 120.0
    assert next_delay_s(1, 3600.0, Highest()) == 3600.0
    assert next_delay_s(8, 1.0, Highest()) == min(MAX_DELAY_S, BASE_DELAY_S * 2**7)


def test_gives_up_a_day_after_the_first_attempt() -> None:
    assert GIVE_UP_AFTER_S == 24 * 3600
    first = NOW - timedelta(seconds=GIVE_UP_AFTER_S)
    assert should_give_up(first, NOW)
    assert not should_give_up(first + timedelta(seconds=1), NOW)
    assert not should_give_up(NOW, NOW)
