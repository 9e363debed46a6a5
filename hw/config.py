"""Which hardware a box has and where: parsed from a JSON-like mapping, unknown keys rejected.

    {"front_panel": "/dev/ttyUSB0",
     "ups": {"port": "/dev/ttyUSB1", "baudrate": 9600, "shutdown_percent": 25, "shutdown_minutes": 5},
     "gps": "/dev/ttyACM0",
     "hardware_watchdog": "/dev/watchdog"}

A serial device is a port (a device path or a pyserial URL such as `loop://`) or an object
with `port` and optionally `baudrate` (and the UPS's shutdown limits); null, an empty string
or a missing key means the box does not have it. Errors name the failing key.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hark_fleet.hw import front_panel, gps, ups
from hark_fleet.hw.errors import HardwareConfigError
from hark_fleet.hw.ups import ShutdownPolicy

BAUDRATES = (1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200, 230400, 460800, 921600)
DEVICE_KEYS = ("front_panel", "ups", "gps", "hardware_watchdog")
DEFAULT_BAUDRATES = {"front_panel": front_panel.DEFAULT_BAUDRATE, "ups": ups.DEFAULT_BAUDRATE, "gps": gps.DEFAULT_BAUDRATE}


@dataclass(frozen=True, slots=True)
class SerialPortConfig:
    port: str
    baudrate: int


@dataclass(frozen=True, slots=True)
class HardwareConfig:
    """The devices to start; None means absent."""

    front_panel: SerialPortConfig | None = None
    ups: SerialPortConfig | None = None
    ups_policy: ShutdownPolicy = ShutdownPolicy()
    gps: SerialPortConfig | None = None
    hardware_watchdog: Path | None = None


def parse_hardware_config(data: Mapping[str, Any] | None, where: str = "hardware") -> HardwareConfig:
    """A validated HardwareConfig; HardwareConfigError names the failing key as `<where>.<key>`."""
    if data is None:
        return HardwareConfig()
    if not isinstance(data, Mapping):
        raise HardwareConfigError(f"{where}: expected an object with {', '.join(DEVICE_KEYS)}")
    unknown = sorted(set(data) - set(DEVICE_KEYS))
    if unknown:
        raise HardwareConfigError(f"{where}.{unknown[0]}: unknown key (expected {', '.join(DEVICE_KEYS)})")
    policy = ShutdownPolicy()
    ups_value = data.get("ups")
    if isinstance(ups_value, Mapping):
        policy = _policy(ups_value, f"{where}.ups")
    return HardwareConfig(
        front_panel=_serial(data.get("front_panel"), "front_panel", where, ()),
        ups=_serial(ups_value, "ups", where, ("shutdown_percent", "shutdown_minutes")),
        ups_policy=policy,
        gps=_serial(data.get("gps"), "gps", where, ()),
        hardware_watchdog=_watchdog(data.get("hardware_watchdog"), f"{where}.hardware_watchdog"),
    )


def parse_hardware_config_json(text: str, where: str = "hardware") -> HardwareConfig:
    """The configuration from JSON text (e.g. an environment variable); empty text means no devices."""
    if not text.strip():
        return HardwareConfig()
    try:
        data = json.loads(text)
    except ValueError as err:
        raise HardwareConfigError(f"{where}: not JSON: {err}") from err
    return parse_hardware_config(data, where)


def _serial(value: Any, key: str, where: str, extra_keys: tuple[str, ...]) -> SerialPortConfig | None:
    path = f"{where}.{key}"
    if value is None or value == "":
        return None
    baudrate = DEFAULT_BAUDRATES[key]
    if isinstance(value, str):
        port = value
    elif isinstance(value, Mapping):
        allowed = ("port", "baudrate", *extra_keys)
        unknown = sorted(set(value) - set(allowed))
        if unknown:
            raise HardwareConfigError(f"{path}.{unknown[0]}: unknown key (expected {', '.join(allowed)})")
        raw_port = value.get("port")
        if not isinstance(raw_port, str) or not raw_port.strip():
            raise HardwareConfigError(f"{path}.port: expected a device path or pyserial URL")
        port = raw_port
        raw_baud = value.get("baudrate", baudrate)
        if isinstance(raw_baud, bool) or not isinstance(raw_baud, int) or raw_baud not in BAUDRATES:
            raise HardwareConfigError(f"{path}.baudrate: expected one of {', '.join(map(str, BAUDRATES))}, got {raw_baud!r}")
        baudrate = raw_baud
    else:
        raise HardwareConfigError(f"{path}: expected a port, an object with 'port', or null")
    port = port.strip()
    if not (port.startswith("/") or "://" in port):
        raise HardwareConfigError(f"{path}: expected an absolute device path or a pyserial URL, got {port!r}")
    return SerialPortConfig(port, baudrate)


def _policy(value: Mapping[str, Any], path: str) -> ShutdownPolicy:
    defaults = ShutdownPolicy()
    percent = _number(value.get("shutdown_percent", defaults.min_percent), f"{path}.shutdown_percent", 0, 100)
    minutes = _number(value.get("shutdown_minutes", defaults.min_minutes), f"{path}.shutdown_minutes", 0, 24 * 60)
    return ShutdownPolicy(min_percent=percent, min_minutes=minutes)


def _number(value: Any, path: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise HardwareConfigError(f"{path}: expected a number from {low:g} to {high:g}, got {value!r}")
    return float(value)


def _watchdog(value: Any, path: str) -> Path | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not value.startswith("/"):
        raise HardwareConfigError(f"{path}: expected an absolute path such as /dev/watchdog, or null")
    return Path(value)
