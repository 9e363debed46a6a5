"""The line channel under every driver: framing, garbage, handler errors and reconnection."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from hark_fleet.hw.serial_line import MAX_LINE_BYTES, LineChannel

from tests.harness import wait_for
from tests.hw.conftest import PtyDevice


class Collector:
    def __init__(self) -> None:
        self.lines: list[str] = []
        self.lock = threading.Lock()

    def __call__(self, text: str, received_at: float) -> None:
        with self.lock:
            self.lines.append(text)


@pytest.fixture
def collector() -> Collector:
    return Collector()


@pytest.fixture
def channels() -> Iterator[list[LineChannel]]:
    started: list[LineChannel] = []
    yield started
    for channel in started:
        channel.stop()


def test_lines_sent_on_loop_come_back_whole_and_overlong_ones_are_dropped(
    collector: Collector, channels: list[LineChannel]
) -> None:
    channel = LineChannel("loop", "loop://", collector, backoff_s=0.05)
    channels.append(channel)
    channel.start()
    assert channel.wait_connected(2)
    channel.send("first")
    channel.send("x" * (MAX_LINE_BYTES + 10))
    channel.send("second\r")
    wait_for(lambda: len(collector.lines) >= 2, 2, "two lines back")
    assert collector.lines == ["first", "second"]
    assert channel.counters.dropped == 1


def test_partial_lines_are_joined_and_undecodable_ones_dropped(
    pty_device: PtyDevice, collector: Collector, channels: list[LineChannel]
) -> None:
    channel = LineChannel("pty", pty_device.port, collector, backoff_s=0.05)
    channels.append(channel)
    channel.start()
    assert channel.wait_connected(2)
    for chunk in (b"hel", b"lo\r\nwor", b"ld\n\xff\xfebinary\n", b"x" * 700, b"y" * 100 + b"\nafter\n"):
        pty_device.write(chunk)
    wait_for(lambda: "after" in collector.lines, 2, "the line after the noise")
    assert collector.lines == ["hello", "world", "after"]
    assert channel.counters.dropped == 2  # the undecodable line and the over-long one, counted once


def test_a_failing_handler_is_counted_and_the_thread_goes_on(pty_device: PtyDevice, channels: list[LineChannel]) -> None:
    seen: list[str] = []

    def handler(text: str, received_at: float) -> None:
        if text == "boom":
            raise RuntimeError("driver bug")
        seen.append(text)

    channel = LineChannel("pty", pty_device.port, handler, backoff_s=0.05)
    channels.append(channel)
    channel.start()
    assert channel.wait_connected(2)
    pty_device.write("boom\nfine\n")
    wait_for(lambda: seen == ["fine"], 2, "the line after the failing one")
    assert channel.counters.handler_errors == 1


def test_a_device_plugged_in_later_is_opened_and_one_plugged_back_is_reopened(
    tmp_path: Path, collector: Collector, channels: list[LineChannel]
) -> None:
    device = PtyDevice(tmp_path / "ttyLATE")
    device.unplug()
    try:
        channel = LineChannel("late", device.port, collector, backoff_s=0.02, backoff_max_s=0.1)
        channels.append(channel)
        channel.start()
        assert not channel.wait_connected(0.3)
        device.plug()
        assert channel.wait_connected(2)
        device.write("one\npart")
        wait_for(lambda: collector.lines == ["one"], 2, "the first line")
        device.unplug()
        wait_for(lambda: not channel.connected, 2, "the disconnect")
        device.plug()
        assert channel.wait_connected(2)
        device.write("two\n")
        wait_for(lambda: collector.lines == ["one", "two"], 2, "a line after the replug")
        assert channel.counters.connects == 2
        assert channel.counters.disconnects == 1
        assert channel.counters.dropped == 1  # "part" was cut by the unplug
        channel.send("to the device")
        assert device.read_line() == "to the device"
    finally:
        device.close()
