"""Storm control: bursts fold into one message, flapping conditions are notified once per hold time."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from hark_fleet.hub.notify.storm import FlapGate, Notice, group

T0 = datetime(2026, 12, 6, 20, 0, tzinfo=UTC)


def notice(
    key: str = "node.offline:nod_1", *, site: str = "sit_a", kind: str = "node.offline", opened: bool = True, s: float = 0
) -> Notice:
    return Notice(key=key, kind=kind, site=site, severity="critical", opened=opened, at=T0 + timedelta(seconds=s), summary=key)


def test_fifty_nodes_of_a_site_going_offline_together_are_one_message_of_fifty() -> None:
    burst = [notice(f"node.offline:nod_{i}", s=i * 0.1) for i in range(50)]
    messages = group(burst, window_s=30, threshold=5)
    assert len(messages) == 1
    (message,) = messages
    assert (message.kind, message.site, message.count, message.opened) == ("node.offline", "sit_a", 50, True)
    assert message.items == tuple(burst)


def test_a_burst_over_two_sites_is_one_message_per_site() -> None:
    burst = [notice(f"node.offline:nod_{i}", site="sit_a" if i % 2 else "sit_b", s=i * 0.1) for i in range(20)]
    messages = group(burst, window_s=30, threshold=5)
    assert [(m.site, m.count) for m in messages] == [("sit_b", 10), ("sit_a", 10)]


def test_a_slow_trickle_gives_a_message_each() -> None:
    trickle = [notice(f"node.offline:nod_{i}", s=i * 60) for i in range(6)]
    messages = group(trickle, window_s=30, threshold=5)
    assert [m.count for m in messages] == [1] * 6
    assert [m.items[0] for m in messages] == trickle


def test_a_burst_below_the_threshold_is_a_message_each_in_time_order() -> None:
    notices = [
        notice("node.offline:nod_2", s=2),
        notice("node.offline:nod_1", s=1),
        notice("health:x", kind="health.opened", s=1.5),
    ]
    messages = group(notices, window_s=30, threshold=5)
    assert [m.items[0].key for m in messages] == ["node.offline:nod_1", "health:x", "node.offline:nod_2"]


def test_openings_and_resolutions_are_never_mixed() -> None:
    notices = [notice(f"node.offline:nod_{i}", opened=i % 2 == 0, s=i) for i in range(10)]
    messages = group(notices, window_s=30, threshold=5)
    assert sorted((m.opened, m.count) for m in messages) == [(False, 5), (True, 5)]
    assert all(item.opened == m.opened for m in messages for item in m.items)


def test_a_notice_past_the_window_starts_the_next_burst() -> None:
    notices = [notice(f"node.offline:nod_{i}", s=i * 10) for i in range(8)]  # 0..70 s, window 30 s
    messages = group(notices, window_s=30, threshold=2)
    assert [m.count for m in messages] == [4, 4]


def test_group_refuses_nonsense_parameters() -> None:
    with pytest.raises(ValueError):
        group([], window_s=-1, threshold=5)
    with pytest.raises(ValueError):
        group([], window_s=30, threshold=0)


def test_flapping_inside_the_hold_time_is_notified_once() -> None:
    gate = FlapGate(hold_s=600)
    admitted = [
        gate.admit(notice(s=0)),
        gate.admit(notice(opened=False, s=20)),
        gate.admit(notice(s=40)),
        gate.admit(notice(opened=False, s=60)),
        gate.admit(notice(s=80)),
        gate.admit(notice(opened=False, s=100)),
    ]
    assert admitted == [True, True, False, False, False, False]


def test_after_the_hold_time_an_opening_is_notified_again() -> None:
    gate = FlapGate(hold_s=600)
    assert gate.admit(notice(s=0))
    assert gate.admit(notice(opened=False, s=20))
    assert not gate.admit(notice(s=40))
    assert not gate.admit(notice(opened=False, s=60))
    assert gate.admit(notice(s=601))
    assert gate.admit(notice(opened=False, s=700))


def test_a_resolution_whose_opening_was_not_notified_is_not_sent() -> None:
    gate = FlapGate(hold_s=600)
    assert not gate.admit(notice(opened=False, s=0))


def test_conditions_are_held_apart_by_key() -> None:
    gate = FlapGate(hold_s=600)
    assert gate.admit(notice("node.offline:nod_1", s=0))
    assert gate.admit(notice("node.offline:nod_2", s=1))


def test_a_condition_that_stays_open_after_flapping_is_due_when_the_hold_ends() -> None:
    gate = FlapGate(hold_s=600)
    gate.admit(notice(s=0))
    gate.admit(notice(opened=False, s=20))
    held = notice(s=40)
    assert not gate.admit(held)
    assert gate.due(T0 + timedelta(seconds=599)) == []
    assert gate.due(T0 + timedelta(seconds=600)) == [held]
    assert gate.due(T0 + timedelta(seconds=1300)) == []
    assert gate.admit(notice(opened=False, s=1400))


def test_a_held_opening_that_resolved_is_not_due() -> None:
    gate = FlapGate(hold_s=600)
    gate.admit(notice(s=0))
    gate.admit(notice(opened=False, s=20))
    gate.admit(notice(s=40))
    gate.admit(notice(opened=False, s=60))
    assert gate.due(T0 + timedelta(seconds=700)) == []


def test_the_gate_survives_a_restart_through_snapshot_and_restore() -> None:
    gate = FlapGate(hold_s=600)
    gate.admit(notice("node.offline:nod_1", s=0))
    gate.admit(notice("node.offline:nod_1", opened=False, s=20))
    held = notice("node.offline:nod_1", s=40)
    gate.admit(held)
    gate.admit(notice("node.offline:nod_2", s=50))
    saved = json.loads(json.dumps(gate.snapshot()))

    restarted = FlapGate(hold_s=600)
    restarted.restore(saved)
    assert not restarted.admit(notice("node.offline:nod_2", s=100))
    assert restarted.admit(notice("node.offline:nod_2", opened=False, s=110))
    assert restarted.due(T0 + timedelta(seconds=600)) == [held]
    assert restarted.snapshot() != {}
