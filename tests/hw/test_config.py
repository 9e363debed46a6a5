"""Hardware configuration: parsing with named errors, and starting only the devices a box has."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from hark_fleet.hw.config import HardwareConfig, SerialPortConfig, parse_hardware_config, parse_hardware_config_json
from hark_fleet.hw.devices import DeviceCallbacks, start_devices
from hark_fleet.hw.errors import HardwareConfigError
from hark_fleet.hw.ups import PowerState, ShutdownPolicy

from tests.harness import wait_for
from tests.hw.conftest import PtyDevice


def test_ports_objects_and_absent_devices() -> None:
    config = parse_hardware_config(
        {
            "front_panel": "/dev/ttyUSB0",
            "ups": {"port": "/dev/ttyUSB1", "baudrate": 19200, "shutdown_percent": 30, "shutdown_minutes": 8},
            "gps": None,
            "hardware_watchdog": "/dev/watchdog",
        }
    )
    assert config == HardwareConfig(
        front_panel=SerialPortConfig("/dev/ttyUSB0", 115200),
        ups=SerialPortConfig("/dev/ttyUSB1", 19200),
        ups_policy=ShutdownPolicy(30.0, 8.0),
        gps=None,
        hardware_watchdog=Path("/dev/watchdog"),
    )
    assert parse_hardware_config(None) == HardwareConfig()
    assert parse_hardware_config_json("") == HardwareConfig()
    assert parse_hardware_config_json('{"gps": "loop://", "ups": ""}').gps == SerialPortConfig("loop://", 9600)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"front_pannel": "/dev/ttyUSB0"}, "hardware.front_pannel: unknown key"),
        ({"gps": {"port": "/dev/ttyACM0", "baud": 9600}}, "hardware.gps.baud: unknown key"),
        ({"gps": {"port": "/dev/ttyACM0", "baudrate": 9601}}, "hardware.gps.baudrate: expected one of"),
        ({"gps": {"port": "/dev/ttyACM0", "baudrate": True}}, "hardware.gps.baudrate"),
        ({"gps": {"baudrate": 9600}}, "hardware.gps.port: expected a device path"),
        ({"gps": "ttyACM0"}, "hardware.gps: expected an absolute device path or a pyserial URL"),
        ({"ups": 5}, "hardware.ups: expected a port"),
        ({"ups": {"port": "/dev/ttyUSB1", "shutdown_percent": 120}}, "hardware.ups.shutdown_percent: expected a number"),
        ({"front_panel": {"port": "/dev/ttyUSB0", "shutdown_minutes": 5}}, "hardware.front_panel.shutdown_minutes: unknown"),
        ({"hardware_watchdog": "watchdog"}, "hardware.hardware_watchdog: expected an absolute path"),
        (["/dev/ttyUSB0"], "hardware: expected an object"),
    ],
)
def test_errors_name_the_failing_key(data: object, message: str) -> None:
    with pytest.raises(HardwareConfigError, match=message.replace(".", r"\.")):
        parse_hardware_config(data)  # type: ignore[arg-type]


def test_bad_json_is_a_config_error() -> None:
    with pytest.raises(HardwareConfigError, match="HARK_NODE_HARDWARE: not JSON"):
        parse_hardware_config_json("{gps:", where="HARK_NODE_HARDWARE")


def test_only_configured_devices_start_and_stop_stops_them_all(pty_device: PtyDevice, tmp_path: Path) -> None:
    before = set(threading.enumerate())
    pressed = threading.Event()
    powers: list[PowerState] = []
    watchdog_file = tmp_path / "watchdog"
    watchdog_file.write_bytes(b"")
    config = HardwareConfig(
        front_panel=SerialPortConfig(pty_device.port, 115200),
        ups=SerialPortConfig("loop://", 9600),  # loop:// echoes the driver's STATUS back: ignored as unknown
        hardware_watchdog=watchdog_file,
    )
    devices = start_devices(config, DeviceCallbacks(on_button=lambda name: pressed.set(), on_power=powers.append), env={})
    try:
        assert devices.gps is None
        assert devices.front_panel is not None and devices.ups is not None
        assert {t.name for t in set(threading.enumerate()) - before} == {"hw-front-panel", "hw-ups", "hw-watchdog"}
        assert devices.front_panel.channel.wait_connected(2)
        assert pty_device.read_line() == "LED off"
        pty_device.write("BTN REC\n")
        assert pressed.wait(2)
        wait_for(lambda: devices.ups is not None and devices.ups.unknown == 1, 2, "the echoed STATUS")
        assert powers == []
    finally:
        devices.stop()
    assert watchdog_file.read_bytes().endswith(b"V")


def test_a_watchdog_device_that_cannot_be_opened_does_not_stop_the_rest(tmp_path: Path) -> None:
    devices = start_devices(HardwareConfig(hardware_watchdog=tmp_path / "no-watchdog"), env={})
    try:
        assert devices.watchdog.hardware_path is None and devices.watchdog.interval_s is None
    finally:
        devices.stop()
