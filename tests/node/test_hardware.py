"""The agent's watchdog feeding: pings flow while capture and metering live, and stop when the capture thread hangs."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import hark_fleet.node.audio_path as audio_path_module
import pytest
from hark_fleet.audio.capture import CaptureSupervisor, open_capture
from hark_fleet.hw.config import HardwareConfig
from hark_fleet.node.audio_path import AudioPath
from hark_fleet.node.audio_source import parse_audio_source
from hark_fleet.node.hardware import Hardware
from hark_fleet.node.heartbeat import ClockStatus
from hark_fleet.node.identify import Identify

from tests.harness import NotifySocket


class HangingOpener:
    """Opens the real capture, or, once `hang` is set, blocks inside the open like a wedged USB driver."""

    def __init__(self) -> None:
        self.hang = threading.Event()
        self.release = threading.Event()

    def __call__(self, source, ring, stats):  # type: ignore[no-untyped-def]
        if self.hang.is_set():
            self.release.wait(30)
        return open_capture(source, ring, stats)


@pytest.fixture
def opener(monkeypatch: pytest.MonkeyPatch) -> Iterator[HangingOpener]:
    hanging = HangingOpener()

    def supervisor(source, ring, on_condition):  # type: ignore[no-untyped-def]
        return CaptureSupervisor(source, ring, on_condition, opener=hanging)

    monkeypatch.setattr(audio_path_module, "CaptureSupervisor", supervisor)
    yield hanging
    hanging.release.set()


def pings(notify_socket: NotifySocket, seconds: float) -> int:
    """WATCHDOG=1 datagrams sent in the next `seconds` (older ones waiting in the socket are dropped first)."""
    notify_socket.messages_for(0.02)
    return sum(1 for _, text in notify_socket.messages_for(seconds) if "WATCHDOG=1" in text)


def test_a_hung_capture_thread_stops_the_watchdog_pings_until_it_recovers(
    notify: NotifySocket,
    opener: HangingOpener,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", notify.name)
    monkeypatch.setenv("WATCHDOG_USEC", "400000")  # a ping every 0.2 s while everyone checks in
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    path = AudioPath(parse_audio_source("synthetic:sine?channels=1"), lambda frame: None, lambda *r: None, 100)

    async def scenario() -> tuple[int, int, int, list[str]]:
        loop = asyncio.get_running_loop()
        hardware = Hardware(
            HardwareConfig(), path, ClockStatus(), Identify(), lambda *r: None, lambda: None, lambda: True, 0.1, 0.8
        )
        path.start(loop)
        await hardware.start()
        stop = asyncio.Event()
        runner = asyncio.create_task(hardware.run(stop))
        hardware.ready("up")
        first = await loop.run_in_executor(None, notify.messages_for, 0.3)
        alive = await loop.run_in_executor(None, pings, notify, 1.0)
        opener.hang.set()
        await loop.run_in_executor(None, path.restart)  # the new capture thread wedges in its open
        await asyncio.sleep(2.0)  # past both deadlines: the thread check (0.8 s), then the watchdog's (0.8 s)
        hung = await loop.run_in_executor(None, pings, notify, 1.0)
        opener.release.set()
        await asyncio.sleep(0.5)
        back = await loop.run_in_executor(None, pings, notify, 1.0)
        stop.set()
        await runner
        await hardware.stop()
        await loop.run_in_executor(None, path.stop)
        return alive, hung, back, [text for _, text in first]

    alive, hung, back, first = asyncio.run(scenario())
    assert any(text.startswith("READY=1") for text in first), first
    assert alive >= 3, alive
    assert hung == 0, hung
    assert back >= 3, back
