"""Disk, temperature and clock conditions: open at a threshold, clear only once safely back, never flap."""

from __future__ import annotations

from hub.mqtt.messages import Disk
from node.conditions import ConditionWatch
from node.metrics import SystemSnapshot


def reading(used_pct: float = 50.0, temperature_c: float | None = 50.0) -> SystemSnapshot:
    return SystemSnapshot(
        cpu_pct=1.0, memory=None, disk=Disk(path="/", used_pct=used_pct, free_bytes=10**9), temperature_c=temperature_c
    )


def kinds(changes: list) -> list[tuple[str, str | None]]:
    return [(c.kind, c.severity) for c in changes]


def test_the_first_reading_reports_every_condition_once_even_when_clear() -> None:
    watch = ConditionWatch()
    assert kinds(watch.evaluate(reading(), 3.0, "ntp")) == [
        ("disk.low", None),
        ("temperature.high", None),
        ("clock.unsynced", None),
    ]
    assert watch.evaluate(reading(), 3.0, "ntp") == []


def test_disk_opens_escalates_and_clears_with_hysteresis() -> None:
    watch = ConditionWatch()
    watch.evaluate(reading(), None, "ntp")
    assert kinds(watch.evaluate(reading(used_pct=91), None, "ntp")) == [("disk.low", "warning")]
    assert watch.evaluate(reading(used_pct=89.5), None, "ntp") == []  # hovering under the edge: still a warning
    assert kinds(watch.evaluate(reading(used_pct=96), None, "ntp")) == [("disk.low", "critical")]
    assert kinds(watch.evaluate(reading(used_pct=89.5), None, "ntp")) == [("disk.low", "warning")]
    change = watch.evaluate(reading(used_pct=80), None, "ntp")
    assert kinds(change) == [("disk.low", None)] and change[0].details["free_pct"] == 20.0


def test_temperature_and_clock_offsets() -> None:
    watch = ConditionWatch()
    watch.evaluate(reading(), 0.0, "ntp")
    assert kinds(watch.evaluate(reading(temperature_c=92), -1500.0, "unsynced")) == [
        ("temperature.high", "critical"),
        ("clock.unsynced", "warning"),
    ]
    assert kinds(watch.evaluate(reading(temperature_c=78), -700.0, "unsynced")) == [("temperature.high", "warning")]
    assert kinds(watch.evaluate(reading(temperature_c=60), 90_000.0, "unsynced")) == [
        ("temperature.high", None),
        ("clock.unsynced", "critical"),
    ]
    assert kinds(watch.evaluate(reading(temperature_c=None), 10.0, "ntp")) == [("clock.unsynced", None)]
