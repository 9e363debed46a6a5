"""Disk, temperature and clock conditions: open at a threshold, clear only once safely back, never flap."""

from __future__ import annotations

from pathlib import Path

from hark_fleet.node.conditions import ConditionWatch
from hark_fleet.node.metrics import SystemSnapshot
from hark_fleet.protocol.messages import Disk


def reading(used_pct: float = 50.0, temperature_c: float | None = 50.0) -> SystemSnapshot:
    return SystemSnapshot(
        cpu_pct=1.0, memory=None, disk=Disk(path="/", used_pct=used_pct, free_bytes=10**9), temperature_c=temperature_c
    )


def kinds(changes: list) -> list[tuple[str, str | None]]:
    return [(c.kind, c.severity) for c in changes]


def test_a_condition_left_open_by_the_last_run_is_resolved_by_the_next_and_nothing_else_is_reported(tmp_path: Path) -> None:
    first = ConditionWatch(tmp_path / "conditions.json")
    assert first.evaluate(reading(), 3.0, "ntp") == []  # all clear: nothing to say
    assert kinds(first.evaluate(reading(used_pct=96), 3.0, "ntp")) == [("disk.low", "critical")]
    again = ConditionWatch(tmp_path / "conditions.json")  # the node restarted; the disk was cleaned meanwhile
    assert kinds(again.evaluate(reading(), 3.0, "ntp")) == [("disk.low", None)]
    assert ConditionWatch(tmp_path / "conditions.json").evaluate(reading(), 3.0, "ntp") == []


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
    assert watch.evaluate(reading(temperature_c=None), 10.0, "ntp") == []


def test_under_voltage_opens_while_the_firmware_flags_it_and_resolves_after() -> None:
    watch = ConditionWatch()
    assert watch.evaluate(reading(), None, "ntp", ()) == []
    assert kinds(watch.evaluate(reading(), None, "ntp", ("under_voltage", "throttled"))) == [("power.under_voltage", "warning")]
    assert watch.evaluate(reading(), None, "ntp", ("under_voltage",)) == []
    assert kinds(watch.evaluate(reading(), None, "ntp", ("throttled",))) == [("power.under_voltage", None)]
