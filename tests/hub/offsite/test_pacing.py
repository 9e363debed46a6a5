"""The runner's pure pacing: backoff with jitter, token buckets shared by threads, the daily window across midnight and DST."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import pytest
from hark_fleet.hub.offsite import backoff
from hark_fleet.hub.offsite.rate_limit import BucketRegistry, TokenBucket, throttle_for
from hark_fleet.hub.offsite.window import DailyWindow, parse_hhmm


def test_backoff_doubles_from_the_base_up_to_the_cap_with_jitter_between_half_and_one_and_a_half() -> None:
    assert [backoff.delay_s(n, 30, rand=lambda: 0.5) for n in (1, 2, 3, 4)] == [30, 60, 120, 240]
    assert backoff.delay_s(1, 30, rand=lambda: 0.0) == 15
    assert backoff.delay_s(1, 30, rand=lambda: 0.999999) == pytest.approx(45, abs=0.001)
    assert backoff.delay_s(12, 30, rand=lambda: 0.5) == 3600
    assert backoff.delay_s(500, 30, rand=lambda: 0.5) == 3600


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.lock = threading.Lock()

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        with self.lock:
            self.now += seconds


def test_a_bucket_lets_a_burst_through_then_makes_later_bytes_wait_for_the_rate() -> None:
    clock = FakeClock()
    bucket = TokenBucket(1000, clock=clock)
    assert bucket.reserve(1000) == 0.0  # the first second's worth is there
    assert bucket.reserve(500) == pytest.approx(0.5)
    assert bucket.reserve(4000) == pytest.approx(4.5)  # larger than the burst: allowed, the debt is waited off
    clock.now = 4.5
    assert bucket.reserve(0) == pytest.approx(0.0)


def test_threads_sharing_a_bucket_together_get_the_rate_not_each() -> None:
    clock = FakeClock()
    bucket = TokenBucket(1000, burst=1000, clock=clock)
    waits: list[float] = []
    lock = threading.Lock()

    def send() -> None:
        for _ in range(10):
            wait = bucket.reserve(100)
            with lock:
                waits.append(wait)

    threads = [threading.Thread(target=send) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # 4000 bytes at 1000 B/s with 1000 of burst and no time passing: the last reservation waits 3 s
    assert max(waits) == pytest.approx(3.0)


def test_a_waiting_throttle_gives_up_when_cancelled() -> None:
    cancelled = threading.Event()
    bucket = TokenBucket(10)
    throttle = throttle_for([bucket, None], cancelled.is_set)
    throttle(10)
    cancelled.set()
    throttle(10_000)  # would wait 1000 s; returns at once


def test_the_registry_keeps_one_bucket_per_name_and_follows_a_changed_limit() -> None:
    registry = BucketRegistry()
    first = registry.get("prv_1", 1000)
    assert first is registry.get("prv_1", 1000)
    assert registry.get("prv_1", 2000) is first and first is not None and first.rate_bps == 2000
    assert registry.get("prv_1", None) is None
    assert registry.get("prv_1", 1000) is not first


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def test_a_window_that_wraps_midnight_is_open_late_and_early_on_the_sites_clock() -> None:
    window = DailyWindow.parse("22:00", "06:00", "Europe/Paris")  # UTC+1 in winter
    assert window.is_open(utc("2026-12-07T21:30:00"))  # 22:30 in Paris
    assert window.is_open(utc("2026-12-07T04:59:00"))  # 05:59
    assert not window.is_open(utc("2026-12-07T05:00:00"))  # 06:00
    assert not window.is_open(utc("2026-12-07T20:59:00"))  # 21:59
    assert window.describe() == "22:00-06:00 Europe/Paris"


def test_a_window_follows_the_wall_clock_across_daylight_saving_changes() -> None:
    window = DailyWindow.parse("01:00", "05:00", "Europe/Paris")
    # summer (UTC+2): 01:00 local is 23:00 UTC the day before
    assert window.is_open(utc("2026-07-01T23:30:00"))
    assert not window.is_open(utc("2026-07-02T03:00:00"))  # 05:00 local
    # spring forward (29 March 2026, 02:00 -> 03:00): 00:30 UTC is 01:30 CET, 01:30 UTC is 03:30 CEST
    assert window.is_open(utc("2026-03-29T00:30:00"))
    assert window.is_open(utc("2026-03-29T01:30:00"))
    assert not window.is_open(utc("2026-03-29T03:00:00"))  # 05:00 CEST
    # fall back (25 October 2026, 03:00 -> 02:00): 02:30 happens twice, inside both times
    assert window.is_open(utc("2026-10-25T00:30:00")) and window.is_open(utc("2026-10-25T01:30:00"))
    assert not window.is_open(utc("2026-10-25T04:00:00"))  # 05:00 CET


def test_equal_ends_mean_the_whole_day_and_bad_times_are_refused() -> None:
    assert DailyWindow.parse("03:00", "03:00", None).is_open(utc("2026-12-07T12:00:00"))
    for bad in ("24:00", "1:00", "12:60", "", "noon"):
        with pytest.raises(ValueError):
            parse_hhmm(bad)
