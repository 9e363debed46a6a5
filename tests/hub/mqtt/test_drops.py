"""Log lines about dropped MQTT messages: one per node and reason per window, with what was suppressed."""

from __future__ import annotations

import logging

import pytest
from hark_fleet.hub.mqtt.drops import DropLog


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_one_line_per_node_and_reason_per_window_then_the_count(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    drops = DropLog(logging.getLogger("tests.drops"), window_s=60, clock=clock)
    with caplog.at_level(logging.WARNING, logger="tests.drops"):
        logged = [drops.dropped("n1", "too_deep", "hark/v1/nodes/n1/heartbeat") for _ in range(500)]
        drops.dropped("n1", "invalid_json", "hark/v1/nodes/n1/meters")
        drops.dropped("n2", "too_deep", "hark/v1/nodes/n2/heartbeat")
        clock.now += 61
        drops.dropped("n1", "too_deep", "hark/v1/nodes/n1/heartbeat")
    assert logged == [True] + [False] * 499
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 4
    assert "n1" in lines[0] and "too_deep" in lines[0] and "more like it" not in lines[0]
    assert "499 more like it" in lines[3]


def test_control_characters_stay_on_one_line(caplog: pytest.LogCaptureFixture) -> None:
    drops = DropLog(logging.getLogger("tests.drops"))
    with caplog.at_level(logging.WARNING, logger="tests.drops"):
        drops.dropped("n\n1", "bad_topic", "hark/v1/nodes/\x1b[31mred\nline", detail="x" * 5000)
    (line,) = [r.getMessage() for r in caplog.records]
    assert "\n" not in line and "\x1b" not in line and len(line) < 700


def test_memory_is_bounded_by_forgetting_quiet_pairs() -> None:
    clock = Clock()
    drops = DropLog(logging.getLogger("tests.drops"), window_s=60, clock=clock, max_keys=100)
    for i in range(100):
        drops.dropped(f"n{i}", "too_deep", "t")
    clock.now += 61
    drops.dropped("new", "too_deep", "t")
    assert len(drops._seen) == 1
