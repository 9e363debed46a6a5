"""The box's hardware in the agent: watchdogs fed only while the workers live, front panel, UPS and GPS.

Device callbacks arrive on the devices' own threads and are handed to the loop here. The
systemd watchdog (and `/dev/watchdog` when configured) is pinged only while the event loop,
the metering thread and the capture supervisor all check in: a hung capture stops the pings
and systemd restarts the agent.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from hark_fleet.hw.config import HardwareConfig
from hark_fleet.hw.devices import DeviceCallbacks, Devices, start_devices
from hark_fleet.hw.gps import GpsTime
from hark_fleet.hw.ups import PowerState
from hark_fleet.node.audio_path import AudioPath
from hark_fleet.node.heartbeat import ClockStatus
from hark_fleet.node.identify import Identify
from hark_fleet.node.worker import wait_any

log = logging.getLogger(__name__)

TICK_S = 2.0
THREAD_DEADLINE_S = 10.0
GPS_MAX_AGE_S = 5.0

Report = Callable[[str, str, str, dict[str, Any]], None]  # kind, open|resolved, severity, details


class Hardware:
    """Starts the configured devices and keeps the watchdog fed while the agent's workers are alive."""

    def __init__(
        self,
        config: HardwareConfig,
        audio: AudioPath,
        clock: ClockStatus,
        identify: Identify,
        report: Report,
        on_power_failing: Callable[[], None],
        connected: Callable[[], bool],
        tick_s: float = TICK_S,
        deadline_s: float = THREAD_DEADLINE_S,
    ) -> None:
        self.config = config
        self.audio = audio
        self.clock = clock
        self.identify = identify
        self._report = report
        self._on_power_failing = on_power_failing
        self._connected = connected
        self.tick_s = tick_s
        self.deadline_s = deadline_s
        self.devices: Devices | None = None
        self.critical: set[str] = set()  # open critical conditions, for the front panel's colour
        self._loop: asyncio.AbstractEventLoop | None = None
        self._on_battery = False
        self._led = ""

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        callbacks = DeviceCallbacks(
            on_button=lambda name: self._to_loop(self._button, name),
            on_power=lambda state: self._to_loop(self._power, state),
            on_shutdown=lambda state: self._to_loop(self._shutdown, state),
            on_gps_time=lambda fix: self._to_loop(self._gps, fix),
        )
        self.devices = await self._loop.run_in_executor(None, start_devices, self.config, callbacks)
        watchdog = self.devices.watchdog
        for name in ("agent-loop", "meters", "capture"):
            watchdog.register(name, self.deadline_s)
        if self.devices.front_panel is not None:
            panel = self.devices.front_panel

            async def blink(seconds: float) -> None:
                panel.blink(seconds)

            self.identify.blinkers.append(blink)

    def ready(self, status: str) -> None:
        if self.devices is not None:
            self.devices.watchdog.ready(status)

    async def run(self, stop: asyncio.Event) -> None:
        """Check the workers in with the watchdog and keep the front panel's colour current."""
        while not await wait_any(self.tick_s, stop):
            devices = self.devices
            if devices is None:
                continue
            watchdog = devices.watchdog
            watchdog.heartbeat("agent-loop")
            for name, alive in self.audio.alive(time.monotonic(), self.deadline_s).items():
                if alive:
                    watchdog.heartbeat(name)
            self._update_panel()

    async def stop(self) -> None:
        devices, self.devices = self.devices, None
        if devices is not None:
            devices.watchdog.stopping("stopping")
            await asyncio.get_running_loop().run_in_executor(None, devices.stop)

    def condition(self, kind: str, state: str, severity: str) -> None:
        """Every condition the agent reports passes here: critical ones turn the front panel amber."""
        if state == "open" and severity == "critical":
            self.critical.add(kind)
        elif state == "resolved":
            self.critical.discard(kind)
        self._update_panel()

    # -- device events (on the loop) -------------------------------------------------------

    def _to_loop(self, fn: Callable[..., None], *args: Any) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(fn, *args)
            except RuntimeError:
                pass

    def _update_panel(self) -> None:
        devices = self.devices
        if devices is None or devices.front_panel is None:
            return
        status = "offline" if not self._connected() else "degraded" if self.critical else "online"
        if status != self._led:
            self._led = status
            devices.front_panel.set_status(status)

    def _button(self, name: str) -> None:
        log.info("front panel button %s pressed", name)
        self._report("panel.button", "open", "info", {"button": name})
        self._report("panel.button", "resolved", "info", {"button": name})

    def _power(self, state: PowerState) -> None:
        on_battery = state.on_battery
        if on_battery != self._on_battery:
            self._on_battery = on_battery
            details = {"source": state.source, "percent": state.percent, "minutes_left": state.minutes_left}
            self._report("power.on_battery", "open" if on_battery else "resolved", "warning", details)

    def _shutdown(self, state: PowerState) -> None:
        log.error("battery nearly empty (%s%%, %s min left): closing recordings", state.percent, state.minutes_left)
        details = {"percent": state.percent, "minutes_left": state.minutes_left}
        self._report("power.battery_low", "open", "critical", details)
        self._on_power_failing()

    def _gps(self, fix: GpsTime) -> None:
        if fix.valid and time.time() - fix.received_at <= GPS_MAX_AGE_S:
            self.clock.gps_offset_ms = round(fix.offset_ms, 1)
            self.clock.gps_at = fix.received_at
