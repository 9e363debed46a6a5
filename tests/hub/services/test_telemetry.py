"""Judging node silence without a database: missed heartbeats, counted only while the hub could hear."""

from __future__ import annotations

from datetime import datetime, timedelta

from hark_fleet.hub.services.listening import silent_for
from hark_fleet.hub.services.telemetry import judged_interval_s, missed_heartbeats

T0 = datetime(2026, 3, 1, 12, 0, 0)


def s(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_silence_counts_from_the_last_message_while_the_hub_listens() -> None:
    assert silent_for(s(0), s(-100), s(25)) == timedelta(seconds=25)


def test_silence_before_the_hub_listened_again_does_not_count() -> None:
    assert silent_for(s(0), s(60), s(65)) == timedelta(seconds=5)  # restarted or reconnected at 60
    assert silent_for(None, s(60), s(65)) == timedelta(seconds=5)  # never heard: from when it could


def test_a_deaf_hub_hears_no_silence() -> None:
    assert silent_for(s(0), None, s(1000)) == timedelta(0)


def test_a_node_misses_its_heartbeats_after_three_intervals_of_silence() -> None:
    assert not missed_heartbeats(s(0), 10, s(-100), s(30))
    assert missed_heartbeats(s(0), 10, s(-100), s(30.1))


def test_after_a_restart_the_node_gets_a_full_window_from_the_hub_start() -> None:
    last, started = s(0), s(100)  # the hub was away for 100 s
    assert not missed_heartbeats(last, 10, started, s(102))
    assert not missed_heartbeats(last, 10, started, s(130))
    assert missed_heartbeats(last, 10, started, s(130.1))


def test_while_the_broker_is_away_no_node_is_judged() -> None:
    assert not missed_heartbeats(s(0), 1, None, s(3600))


def test_the_interval_judged_is_what_the_node_reports_else_what_the_hub_asked() -> None:
    assert judged_interval_s(1.5, 10.0) == 10.0  # the node keeps its own 10 s: one source of truth
    assert judged_interval_s(30.0, 5.0) == 5.0
    assert judged_interval_s(1.5, None) == 1.5  # a node that does not say
    assert judged_interval_s(10.0, 0.2) == 1.0  # never finer than the hub can tell apart from its own intake delay
