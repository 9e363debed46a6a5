"""The front-panel board: a status LED, a record button and an identify blink, over a serial line.

Protocol (ASCII lines ending in `\\n`, a `\\r` before it is ignored; 115200 baud by default):

    node -> panel
      LED <colour> [blink]     colour: green | amber | red | blue | off; `blink` flashes it at 1 Hz
      IDENTIFY <seconds>       blink blue for 1..3600 s, then show the last LED state again
    panel -> node
      OK                       the oldest command not yet answered was done
      ERR <reason>             the oldest command not yet answered was refused (logged with it)
      BTN <name>               a button was pressed: `BTN REC` is the record button
      HELLO [<firmware>]       sent once by the panel when it boots (the node resends its state)

Commands are answered in order. Anything else from the panel is counted in
`FrontPanel.unknown` and ignored. On every (re)connect the node sends the current LED state,
so a panel plugged back in (or rebooted) shows the right colour at once.

Statuses map to colours: online -> green, degraded -> amber, offline and error -> red,
identify -> blue (blinking).
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable

from hark_fleet.hw.errors import ProtocolError
from hark_fleet.hw.serial_line import LineChannel, call_safely

log = logging.getLogger(__name__)

DEFAULT_BAUDRATE = 115200
COLOURS = ("green", "amber", "red", "blue", "off")
STATUS_COLOURS: dict[str, tuple[str, bool]] = {
    "online": ("green", False),
    "degraded": ("amber", False),
    "offline": ("red", False),
    "error": ("red", True),
}
MAX_IDENTIFY_S = 3600


def led_command(colour: str, blink: bool = False) -> str:
    """The `LED` line for a colour; ProtocolError for a colour the panel does not have."""
    if colour not in COLOURS:
        raise ProtocolError(f"unknown LED colour {colour!r} (expected one of {', '.join(COLOURS)})")
    return f"LED {colour} blink" if blink else f"LED {colour}"


def identify_command(seconds: float) -> str:
    """The `IDENTIFY` line for a blink of `seconds` (rounded up, 1..3600)."""
    whole = -int(-seconds // 1)
    if not 1 <= whole <= MAX_IDENTIFY_S:
        raise ProtocolError(f"identify for {seconds!r}s: expected 1..{MAX_IDENTIFY_S} s")
    return f"IDENTIFY {whole}"


class FrontPanel:
    """Drives the panel: `set_status`, `blink` and `on_button` are thread-safe and never block."""

    def __init__(
        self, port: str, *, baudrate: int = DEFAULT_BAUDRATE, backoff_s: float = 0.5, backoff_max_s: float = 10.0
    ) -> None:
        self.channel = LineChannel(
            "front-panel",
            port,
            self._line,
            baudrate=baudrate,
            on_connect=self._connected,
            backoff_s=backoff_s,
            backoff_max_s=backoff_max_s,
        )
        self.unknown = 0
        self.refused: list[tuple[str, str]] = []  # (command, reason), the last few
        self._lock = threading.Lock()
        self._led = led_command("off")
        self._pending: deque[str] = deque()
        self._button_callbacks: list[Callable[[str], None]] = []

    def start(self) -> None:
        self.channel.start()

    def stop(self, timeout: float = 2.0) -> None:
        self.channel.stop(timeout)

    @property
    def connected(self) -> bool:
        return self.channel.connected

    def on_button(self, callback: Callable[[str], None]) -> None:
        """Call `callback(name)` (e.g. "rec") on the driver's thread when a button is pressed."""
        with self._lock:
            self._button_callbacks.append(callback)

    def set_status(self, status: str) -> None:
        """Show a node status (online, degraded, offline, error) as the LED colour."""
        if status not in STATUS_COLOURS:
            raise ProtocolError(f"unknown status {status!r} (expected one of {', '.join(STATUS_COLOURS)})")
        colour, blink = STATUS_COLOURS[status]
        self.set_led(colour, blink)

    def set_led(self, colour: str, blink: bool = False) -> None:
        """Set the LED; remembered and sent again whenever the panel reconnects."""
        command = led_command(colour, blink)
        with self._lock:
            self._led = command
        self._send(command)

    def blink(self, seconds: float) -> None:
        """Blink blue for `seconds` to identify the box, then return to the status colour."""
        self._send(identify_command(seconds))

    def _send(self, command: str) -> None:
        with self._lock:
            if not self.channel.connected:
                return  # sent on connect instead (only the LED state matters then)
            self._pending.append(command)
        self.channel.send(command)

    def _connected(self) -> None:
        with self._lock:
            self._pending.clear()
            led = self._led
            self._pending.append(led)
        self.channel.clear_outgoing()
        self.channel.send(led)

    def _line(self, text: str, received_at: float) -> None:
        word, _, rest = text.strip().partition(" ")
        if word == "OK":
            self._answered()
        elif word == "ERR":
            command = self._answered()
            log.warning("front panel refused %r: %s", command, rest or "no reason")
            with self._lock:
                self.refused = [*self.refused[-9:], (command or "", rest)]
        elif word == "BTN" and rest:
            with self._lock:
                callbacks = list(self._button_callbacks)
            for callback in callbacks:
                call_safely("front-panel", callback, rest.strip().lower())
        elif word == "HELLO":
            log.info("front panel says hello (%s): sending the LED state", rest or "no firmware version")
            self._connected()
        else:
            self.unknown += 1
            log.debug("front panel: ignored %r", text)

    def _answered(self) -> str | None:
        with self._lock:
            return self._pending.popleft() if self._pending else None
