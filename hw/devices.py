"""Starting and stopping the hardware a box has, from its `HardwareConfig`.

Every callback runs on the thread of the device that caused it: the agent hands the event to
its loop (`loop.call_soon_threadsafe`). A device that is configured but not plugged in is
still started: its thread keeps trying to open the port.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from hark_fleet.hw.config import HardwareConfig
from hark_fleet.hw.errors import WatchdogError
from hark_fleet.hw.front_panel import FrontPanel
from hark_fleet.hw.gps import Gps, GpsTime
from hark_fleet.hw.ups import PowerState, Ups
from hark_fleet.hw.watchdog import Watchdog

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class DeviceCallbacks:
    """What the agent wants to hear about; each runs on a device thread."""

    on_button: Callable[[str], None] | None = None
    on_power: Callable[[PowerState], None] | None = None
    on_shutdown: Callable[[PowerState], None] | None = None
    on_gps_time: Callable[[GpsTime], None] | None = None


@dataclass(slots=True)
class Devices:
    """The started devices (None when absent) and the watchdog, which is always there (it may ping nothing)."""

    watchdog: Watchdog
    front_panel: FrontPanel | None = None
    ups: Ups | None = None
    gps: Gps | None = None

    def stop(self, timeout: float = 2.0) -> None:
        """Stop every device thread, then the watchdog (STOPPING=1, magic close of /dev/watchdog)."""
        for device in (self.front_panel, self.ups, self.gps):
            if device is not None:
                device.stop(timeout)
        self.watchdog.stop(timeout)


def start_devices(
    config: HardwareConfig,
    callbacks: DeviceCallbacks | None = None,
    env: Mapping[str, str] | None = None,
    backoff_s: float = 0.5,
) -> Devices:
    """Start the configured devices and the watchdog (systemd's from `env`, the hardware one from `config`)."""
    callbacks = callbacks or DeviceCallbacks()
    env = os.environ if env is None else env
    watchdog = Watchdog.from_env(env, hardware_path=config.hardware_watchdog)
    try:
        watchdog.start()
    except WatchdogError as err:
        log.error("%s: running without it", err)
        watchdog = Watchdog.from_env(env)
        watchdog.start()
    devices = Devices(watchdog)
    if config.front_panel is not None:
        devices.front_panel = FrontPanel(config.front_panel.port, baudrate=config.front_panel.baudrate, backoff_s=backoff_s)
        if callbacks.on_button is not None:
            devices.front_panel.on_button(callbacks.on_button)
        devices.front_panel.start()
    if config.ups is not None:
        devices.ups = Ups(
            config.ups.port,
            policy=config.ups_policy,
            baudrate=config.ups.baudrate,
            on_power=callbacks.on_power,
            on_shutdown=callbacks.on_shutdown,
            backoff_s=backoff_s,
        )
        devices.ups.start()
    if config.gps is not None:
        devices.gps = Gps(config.gps.port, baudrate=config.gps.baudrate, on_time=callbacks.on_gps_time, backoff_s=backoff_s)
        devices.gps.start()
    started = [name for name in ("front_panel", "ups", "gps") if getattr(devices, name) is not None]
    log.info("hardware: %s; watchdog every %s s", ", ".join(started) or "no serial devices", watchdog.interval_s)
    return devices
