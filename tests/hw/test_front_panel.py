"""The front-panel driver over a pty: LED state, replies, the record button, identify, replugging."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from hark_fleet.hw.errors import ProtocolError
from hark_fleet.hw.front_panel import FrontPanel, identify_command, led_command

from tests.harness import wait_for
from tests.hw.conftest import PtyDevice


@pytest.fixture
def panel(pty_device: PtyDevice) -> Iterator[FrontPanel]:
    front = FrontPanel(pty_device.port, backoff_s=0.02, backoff_max_s=0.1)
    front.start()
    assert front.channel.wait_connected(2)
    yield front
    front.stop()


def test_commands_are_validated() -> None:
    assert led_command("amber") == "LED amber"
    assert led_command("red", blink=True) == "LED red blink"
    assert identify_command(2.2) == "IDENTIFY 3"
    with pytest.raises(ProtocolError):
        led_command("purple")
    with pytest.raises(ProtocolError):
        identify_command(0)
    with pytest.raises(ProtocolError):
        FrontPanel("loop://").set_status("sleepy")


def test_statuses_become_led_colours_and_replies_are_matched(pty_device: PtyDevice, panel: FrontPanel) -> None:
    assert pty_device.read_line() == "LED off"  # the state is sent on connect
    pty_device.write("OK\n")
    panel.set_status("online")
    panel.set_status("degraded")
    panel.set_status("error")
    panel.blink(5)
    assert [pty_device.read_line() for _ in range(4)] == ["LED green", "LED amber", "LED red blink", "IDENTIFY 5"]
    pty_device.write("OK\r\nERR no amber on this board\r\nOK\r\nOK\r\n")
    wait_for(lambda: panel.refused, 2, "the refusal")
    assert panel.refused == [("LED amber", "no amber on this board")]


def test_the_record_button_reaches_the_callback_through_garbage_and_partial_lines(
    pty_device: PtyDevice, panel: FrontPanel
) -> None:
    pressed: list[str] = []
    done = threading.Event()

    def on_button(name: str) -> None:
        pressed.append(name)
        if len(pressed) == 2:
            done.set()

    def broken(name: str) -> None:
        raise RuntimeError("a broken callback")

    panel.on_button(broken)  # must not stop the others
    panel.on_button(on_button)
    # recorded from a panel: a boot banner cut short, line noise, a press split over two reads, a second press
    for chunk in (b"ot v1.2\r\n", b"\x00\x13~~\r\n", b"BT", b"N REC\r\n", b"BTN\r\n", b"FOO BAR\r\nBTN REC\r\n"):
        pty_device.write(chunk)
    assert done.wait(2)
    assert pressed == ["rec", "rec"]
    assert panel.unknown == 4  # the banner tail, the noise, a BTN without a name, FOO BAR


def test_a_panel_plugged_back_gets_the_current_state_and_its_button_still_works(pty_device: PtyDevice, panel: FrontPanel) -> None:
    pressed: list[str] = []
    panel.on_button(pressed.append)
    assert pty_device.read_line() == "LED off"
    panel.set_status("online")
    assert pty_device.read_line() == "LED green"
    pty_device.unplug()
    wait_for(lambda: not panel.connected, 2, "the panel to be gone")
    panel.set_status("offline")  # while unplugged: remembered, not queued
    panel.blink(3)  # while unplugged: dropped (identify only matters while someone looks)
    pty_device.plug()
    assert panel.channel.wait_connected(2)
    assert pty_device.read_line() == "LED red"
    pty_device.write("OK\nBTN REC\n")
    wait_for(lambda: pressed == ["rec"], 2, "the button after the replug")
    assert panel.channel.counters.connects == 2


def test_a_rebooted_panel_saying_hello_gets_the_state_again(pty_device: PtyDevice, panel: FrontPanel) -> None:
    panel.set_status("degraded")
    assert pty_device.read_lines_until("LED amber")[-1] == "LED amber"
    pty_device.write("HELLO fw-2.0\n")
    assert pty_device.read_line() == "LED amber"
