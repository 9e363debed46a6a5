"""The watchdog against a real notify socket: READY, pings at half WATCHDOG_USEC, silence while a worker hangs, STOPPING."""

from __future__ import annotations

import os
import statistics
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hark_fleet.hw.errors import WatchdogError
from hark_fleet.hw.watchdog import Watchdog, notify_address, systemd_ping_interval

from tests.harness import NotifySocket


@pytest.fixture
def watchdogs() -> Iterator[list[Watchdog]]:
    started: list[Watchdog] = []
    yield started
    for watchdog in started:
        watchdog.stop()


def env_for(notify: NotifySocket, usec: int = 200_000) -> dict[str, str]:
    return {"NOTIFY_SOCKET": notify.name, "WATCHDOG_USEC": str(usec), "WATCHDOG_PID": str(os.getpid())}


def test_ready_then_pings_at_half_the_watchdog_timeout(notify: NotifySocket, watchdogs: list[Watchdog]) -> None:
    watchdog = Watchdog.from_env(env_for(notify, usec=200_000))
    watchdogs.append(watchdog)
    assert watchdog.interval_s == pytest.approx(0.1)
    watchdog.ready("listening")
    assert notify.receive()[1] == "READY=1\nSTATUS=listening"
    watchdog.register("capture", deadline_s=5)
    watchdog.start()
    messages = notify.messages_for(1.05)
    assert {text for _, text in messages} == {"WATCHDOG=1"}
    assert 8 <= len(messages) <= 12
    gaps = [b - a for (a, _), (b, _) in zip(messages, messages[1:], strict=False)]
    assert statistics.median(gaps) == pytest.approx(0.1, abs=0.03)


def test_a_hung_worker_stops_the_pings_until_it_checks_in_again(notify: NotifySocket, watchdogs: list[Watchdog]) -> None:
    watchdog = Watchdog.from_env(env_for(notify, usec=100_000))  # a ping every 50 ms
    watchdogs.append(watchdog)
    watchdog.register("capture", deadline_s=0.3)
    watchdog.register("loop", deadline_s=5)
    hang = threading.Event()

    def capture() -> None:  # checks in every 20 ms until it "hangs"
        while not hang.wait(0.02):
            watchdog.heartbeat("capture")

    worker = threading.Thread(target=capture, name="fake-capture")
    worker.start()
    try:
        watchdog.start()
        assert [text for _, text in notify.messages_for(0.4)].count("WATCHDOG=1") >= 5
        hung_at = time.monotonic()
        hang.set()
        worker.join()
        messages = notify.messages_for(1.0)
        status = [(at, text) for at, text in messages if text.startswith("STATUS=")]
        assert [text for _, text in status] == ["STATUS=workers not responding: capture"]
        last_ping = max(at for at, text in messages if text == "WATCHDOG=1")
        assert last_ping - hung_at < 0.3 + 0.1  # pings stop within the deadline plus one interval
        assert status[0][0] > last_ping
        assert watchdog.late_workers() == ("capture",)
        watchdog.heartbeat("capture")  # it recovered (or was restarted)
        after = [text for _, text in notify.messages_for(0.3)]
        assert after[0] == "STATUS=running"
        assert after.count("WATCHDOG=1") >= 3
    finally:
        hang.set()
        worker.join()


def test_stop_says_stopping_and_closes_the_hardware_watchdog_with_the_magic_byte(
    notify: NotifySocket, tmp_path: Path, watchdogs: list[Watchdog]
) -> None:
    device = tmp_path / "watchdog"
    device.write_bytes(b"")  # a plain file standing in for /dev/watchdog
    watchdog = Watchdog.from_env(env_for(notify, usec=10_000_000), hardware_path=device)
    watchdog.start()
    watchdog.stop()
    texts = [text for _, text in notify.messages_for(0.3)]
    assert texts == ["WATCHDOG=1", "STOPPING=1"]
    written = device.read_bytes()
    assert written.endswith(b"V") and written[:-1] == b"." * watchdog.pings and watchdog.pings >= 1


def test_the_hardware_watchdog_alone_is_pinged_at_its_own_interval(tmp_path: Path, watchdogs: list[Watchdog]) -> None:
    device = tmp_path / "watchdog"
    device.write_bytes(b"")
    watchdog = Watchdog(hardware_path=device, hardware_interval_s=0.05)
    watchdogs.append(watchdog)
    watchdog.start()
    time.sleep(0.3)
    watchdog.stop()
    written = device.read_bytes()
    assert 4 <= written.count(b".") <= 8 and written.endswith(b"V")


def test_a_hardware_watchdog_that_cannot_be_opened_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(WatchdogError, match="missing"):
        Watchdog(hardware_path=tmp_path / "missing").start()


def test_abstract_socket_names_work(watchdogs: list[Watchdog]) -> None:
    receiver = NotifySocket(f"@hark-test-{os.getpid()}-{time.monotonic_ns()}")
    try:
        watchdog = Watchdog(notify_socket=receiver.name)
        watchdog.status("recording 2 channels")
        assert receiver.receive()[1] == "STATUS=recording 2 channels"
    finally:
        receiver.close()


def test_without_systemd_nothing_is_sent_and_nothing_fails() -> None:
    watchdog = Watchdog.from_env({})
    assert watchdog.interval_s is None
    watchdog.ready()
    watchdog.start()  # no thread: nothing to ping
    watchdog.register("capture", 0.01)
    watchdog.stop()


def test_the_systemd_interval_needs_this_pid_and_a_usable_value() -> None:
    assert systemd_ping_interval({"WATCHDOG_USEC": "30000000"}) == 15.0
    assert systemd_ping_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}) == 15.0
    assert systemd_ping_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}) is None  # meant for another process
    assert systemd_ping_interval({"WATCHDOG_USEC": "soon"}) is None
    assert systemd_ping_interval({"WATCHDOG_USEC": "0"}) is None
    assert notify_address("vsock:2:1234") is None


def test_a_vanished_notify_socket_is_logged_not_raised(tmp_path: Path) -> None:
    watchdog = Watchdog(notify_socket=str(tmp_path / "gone"))
    watchdog.ready()
    watchdog.stop()
