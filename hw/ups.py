"""A UPS or power monitor on a serial line: on battery or not, battery level, runtime left.

Protocol (ASCII lines ending in `\\n`, a `\\r` before it is ignored; 9600 baud by default):

    monitor -> node, at least every 10 s and at once when the source changes
      PWR AC <percent> <minutes>      on mains; battery charge 0..100 (decimals allowed)
      PWR BATT <percent> <minutes>    on battery; <minutes> is the estimated runtime left
                                      (`-` when the monitor cannot estimate it)
    node -> monitor
      STATUS                          asks for one `PWR` line now (sent on every connect)

Anything else is counted in `Ups.unknown` and ignored. `should_shut_down` is the pure
decision the node uses to close its segments while there is still battery: on battery and
the charge or the runtime left at or under the policy's limits.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from hark_fleet.hw.errors import ProtocolError
from hark_fleet.hw.serial_line import LineChannel, call_safely

log = logging.getLogger(__name__)

DEFAULT_BAUDRATE = 9600
PowerSource = Literal["ac", "battery"]
SOURCES: dict[str, PowerSource] = {"AC": "ac", "BATT": "battery"}


@dataclass(frozen=True, slots=True)
class PowerState:
    """One report: where power comes from, battery charge, runtime left, and when it was read (Unix time)."""

    source: PowerSource
    percent: float
    minutes_left: float | None
    received_at: float

    @property
    def on_battery(self) -> bool:
        return self.source == "battery"


@dataclass(frozen=True, slots=True)
class ShutdownPolicy:
    """Shut down cleanly on battery at or under `min_percent` charge or `min_minutes` runtime left."""

    min_percent: float = 20.0
    min_minutes: float = 5.0


def parse_power_line(text: str, received_at: float) -> PowerState:
    """A `PWR` line as a PowerState; ProtocolError says what is wrong with it."""
    parts = text.split()
    if len(parts) != 4 or parts[0] != "PWR":
        raise ProtocolError(f"expected 'PWR AC|BATT <percent> <minutes>', got {text!r}")
    source = SOURCES.get(parts[1])
    if source is None:
        raise ProtocolError(f"unknown power source {parts[1]!r}")
    try:
        percent = float(parts[2])
        minutes = None if parts[3] == "-" else float(parts[3])
    except ValueError as err:
        raise ProtocolError(f"bad number in {text!r}") from err
    if not 0.0 <= percent <= 100.0:
        raise ProtocolError(f"battery percent {percent} out of 0..100")
    if minutes is not None and minutes < 0:
        raise ProtocolError(f"negative runtime {minutes}")
    return PowerState(source, percent, minutes, received_at)


def should_shut_down(state: PowerState, policy: ShutdownPolicy) -> bool:
    """True when the node should close its segments and stop while the battery still lasts."""
    if not state.on_battery:
        return False
    if state.percent <= policy.min_percent:
        return True
    return state.minutes_left is not None and state.minutes_left <= policy.min_minutes


class Ups:
    """Reads the monitor on its own thread; callbacks run there (hand them to the event loop yourself).

    `on_power(state)` fires when the source changes or the charge moves by a whole percent;
    `on_shutdown(state)` fires once when `should_shut_down` first becomes true, and again only
    after power has come back to AC.
    """

    def __init__(
        self,
        port: str,
        *,
        policy: ShutdownPolicy | None = None,
        baudrate: int = DEFAULT_BAUDRATE,
        on_power: Callable[[PowerState], None] | None = None,
        on_shutdown: Callable[[PowerState], None] | None = None,
        backoff_s: float = 0.5,
        backoff_max_s: float = 10.0,
    ) -> None:
        self.policy = policy or ShutdownPolicy()
        self.channel = LineChannel(
            "ups",
            port,
            self._line,
            baudrate=baudrate,
            on_connect=lambda: self.channel.send("STATUS"),
            backoff_s=backoff_s,
            backoff_max_s=backoff_max_s,
        )
        self.unknown = 0
        self._on_power = on_power
        self._on_shutdown = on_shutdown
        self._lock = threading.Lock()
        self._state: PowerState | None = None
        self._shutdown_sent = False

    def start(self) -> None:
        self.channel.start()

    def stop(self, timeout: float = 2.0) -> None:
        self.channel.stop(timeout)

    @property
    def connected(self) -> bool:
        return self.channel.connected

    @property
    def state(self) -> PowerState | None:
        """The last report, or None before the first one."""
        with self._lock:
            return self._state

    def _line(self, text: str, received_at: float) -> None:
        try:
            state = parse_power_line(text.strip(), received_at)
        except ProtocolError as err:
            self.unknown += 1
            log.debug("ups: ignored line: %s", err)
            return
        with self._lock:
            previous = self._state
            self._state = state
            changed = previous is None or previous.source != state.source or int(previous.percent) != int(state.percent)
            shut_down = should_shut_down(state, self.policy) and not self._shutdown_sent
            if shut_down:
                self._shutdown_sent = True
            elif not state.on_battery:
                self._shutdown_sent = False
        if changed:
            if previous is None or previous.source != state.source:
                log.warning("power: %s, battery %.0f%%", "on battery" if state.on_battery else "on AC", state.percent)
            call_safely("ups", self._on_power, state)
        if shut_down:
            log.warning("power: battery at %.0f%% (%s min left): time to shut down", state.percent, state.minutes_left)
            call_safely("ups", self._on_shutdown, state)
