"""Wall-clock time on the wire, the offset to the hub's clock, and whether the clock is synchronized."""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import shutil
import subprocess
from datetime import UTC, datetime

from hark_fleet.protocol.messages import TimeQuality

log = logging.getLogger(__name__)

_TIME_ERROR = 5  # adjtimex(2): the clock is not synchronized
_TIMEX_SIZE = 512  # larger than struct timex on every Linux ABI; modes = 0 reads only


def utc_iso(at: float | None = None) -> str:
    """ISO 8601 UTC with milliseconds and a `Z` (now, or the epoch time `at`)."""
    moment = datetime.now(UTC) if at is None else datetime.fromtimestamp(at, UTC)
    return moment.replace(tzinfo=None).isoformat(timespec="milliseconds") + "Z"


def parse_utc(text: str) -> float:
    """Epoch seconds of an ISO 8601 time with a zone; ValueError otherwise."""
    value = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    if value.tzinfo is None:
        raise ValueError("the time needs a zone")
    return value.timestamp()


def clock_offset_ms(sent_at: float, received_at: float, hub_time: float) -> float:
    """How far the hub's clock is ahead of ours, from one request: hub time minus our midpoint."""
    return round((hub_time - (sent_at + received_at) / 2.0) * 1000.0, 1)


def time_quality() -> TimeQuality:
    """`ntp` when the kernel says the clock is synchronized, else `unsynced`; never blocks for long."""
    synced = _adjtimex_synchronized()
    if synced is None:
        synced = _timedatectl_synchronized()
    return "ntp" if synced else "unsynced"


def _adjtimex_synchronized() -> bool | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name, use_errno=True)
        adjtimex = libc.adjtimex
    except (OSError, AttributeError):
        return None
    buffer = ctypes.create_string_buffer(_TIMEX_SIZE)
    state = adjtimex(buffer)
    if state < 0:
        return None
    return bool(state != _TIME_ERROR)


def _timedatectl_synchronized() -> bool | None:
    binary = shutil.which("timedatectl")
    if binary is None:
        return None
    try:
        done = subprocess.run(
            [binary, "show", "-p", "NTPSynchronized", "--value"], capture_output=True, text=True, timeout=2, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0:
        return None
    return done.stdout.strip() == "yes"
