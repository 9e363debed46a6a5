"""Times on the wire, the clock offset to the hub and the time quality."""

from __future__ import annotations

import re

from hark_fleet.node.clock import clock_offset_ms, parse_utc, time_quality, utc_iso


def test_times_are_iso_8601_utc_with_z() -> None:
    assert utc_iso(0) == "1970-01-01T00:00:00.000Z"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", utc_iso())
    assert parse_utc("1970-01-01T00:00:01.500Z") == 1.5
    assert parse_utc("1970-01-01T01:00:00+01:00") == 0.0


def test_offset_is_hub_time_minus_the_request_midpoint() -> None:
    assert clock_offset_ms(100.0, 100.2, 100.1) == 0.0
    assert clock_offset_ms(100.0, 100.2, 102.1) == 2000.0
    assert clock_offset_ms(100.0, 100.2, 99.6) == -500.0


def test_time_quality_is_one_of_the_wire_values() -> None:
    assert time_quality() in ("ntp", "unsynced")
