"""The UPS driver: its line format, the shutdown decision, and a recorded outage over a pty."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from hark_fleet.hw.errors import ProtocolError
from hark_fleet.hw.ups import PowerState, ShutdownPolicy, Ups, parse_power_line, should_shut_down

from tests.harness import wait_for
from tests.hw.conftest import PtyDevice

# A monitor's output through an outage: noise at plug-in, mains, the cut, the battery draining
# (one report with a checksum-less typo, one out of range), then mains again.
OUTAGE = [
    b"\x00\x00PWR AC 10",  # the tail of a line cut at plug-in (joined with the next: not a report)
    b"0 -\r\nPWR AC 100 -\r\n",
    b"PWR AC 100 -\r\n",
    b"PWR BATT 99 58\r\n",
    b"PWR BATT 99.4 57\r\n",  # same whole percent: no event
    b"PWR BAT 80 40\r\n",  # typo: ignored
    b"PWR BATT 140 40\r\n",  # out of range: ignored
    b"PWR BATT 45 22\r\nPWR BATT 30 9\r\n",
    b"PWR BATT 21 4.5\r\n",  # 4.5 min left: time to shut down
    b"PWR BATT 19 3\r\n",  # already asked: not again
    b"PWR AC 19 -\r\n",
]


class Events:
    def __init__(self) -> None:
        self.power: list[PowerState] = []
        self.shutdown: list[PowerState] = []
        self.back_on_ac = threading.Event()

    def on_power(self, state: PowerState) -> None:
        self.power.append(state)
        if len(self.power) > 1 and not state.on_battery:
            self.back_on_ac.set()


@pytest.fixture
def events() -> Events:
    return Events()


@pytest.fixture
def ups(pty_device: PtyDevice, events: Events) -> Iterator[Ups]:
    monitor = Ups(
        pty_device.port,
        policy=ShutdownPolicy(min_percent=20, min_minutes=5),
        on_power=events.on_power,
        on_shutdown=events.shutdown.append,
        backoff_s=0.02,
        backoff_max_s=0.1,
    )
    monitor.start()
    assert monitor.channel.wait_connected(2)
    yield monitor
    monitor.stop()


def test_power_lines_parse_and_bad_ones_are_refused() -> None:
    assert parse_power_line("PWR BATT 55.5 31", 7.0) == PowerState("battery", 55.5, 31.0, 7.0)
    assert parse_power_line("PWR AC 100 -", 7.0).minutes_left is None
    for bad in ("PWR", "PWR DC 50 1", "PWR AC x 1", "PWR AC 101 1", "PWR BATT 50 -1", "PWR AC 50 1 extra", "UPS AC 50 1"):
        with pytest.raises(ProtocolError):
            parse_power_line(bad, 0.0)


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("PWR AC 5 1", False),  # on mains nothing is urgent, whatever the battery says
        ("PWR BATT 60 30", False),
        ("PWR BATT 20 30", True),  # at the charge limit
        ("PWR BATT 60 5", True),  # at the runtime limit
        ("PWR BATT 21 -", False),  # runtime unknown: the charge decides
    ],
)
def test_shutdown_is_decided_by_charge_or_runtime_on_battery_only(line: str, expected: bool) -> None:
    assert should_shut_down(parse_power_line(line, 0.0), ShutdownPolicy(min_percent=20, min_minutes=5)) is expected


def test_a_recorded_outage_gives_source_and_level_events_and_one_shutdown(
    pty_device: PtyDevice, ups: Ups, events: Events
) -> None:
    assert pty_device.read_line() == "STATUS"  # asked on connect
    for chunk in OUTAGE:
        pty_device.write(chunk)
    assert events.back_on_ac.wait(2)
    assert [(s.source, s.percent) for s in events.power] == [
        ("ac", 100.0),
        ("battery", 99.0),
        ("battery", 45.0),
        ("battery", 30.0),
        ("battery", 21.0),
        ("battery", 19.0),
        ("ac", 19.0),
    ]
    assert [(s.percent, s.minutes_left) for s in events.shutdown] == [(21.0, 4.5)]
    assert ups.unknown == 3
    assert ups.state == events.power[-1]


def test_after_mains_returns_a_new_outage_asks_for_shutdown_again(pty_device: PtyDevice, ups: Ups, events: Events) -> None:
    pty_device.write("PWR BATT 10 2\nPWR AC 11 -\nPWR BATT 11 2\n")
    wait_for(lambda: len(events.shutdown) == 2, 2, "a second shutdown request")


def test_a_monitor_plugged_back_is_asked_for_its_state_and_reports_again(pty_device: PtyDevice, ups: Ups, events: Events) -> None:
    assert pty_device.read_line() == "STATUS"
    pty_device.write("PWR AC 100 -\n")
    wait_for(lambda: len(events.power) == 1, 2, "the first report")
    pty_device.unplug()
    wait_for(lambda: not ups.connected, 2, "the monitor to be gone")
    pty_device.plug()
    assert pty_device.read_line() == "STATUS"
    pty_device.write("PWR BATT 80 40\n")
    wait_for(lambda: len(events.power) == 2 and events.power[-1].on_battery, 2, "the report after the replug")
