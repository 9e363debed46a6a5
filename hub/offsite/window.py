"""A policy's daily upload window in its site's time zone (issue 20), pure.

The window is two wall-clock times `HH:MM`; it may wrap midnight (`22:00-06:00`), and equal ends mean
the whole day. Whether it is open compares the site's wall clock now with the two ends, so it stays
right across daylight-saving changes: on a spring-forward night a window that starts in the skipped
hour opens when the clock jumps past it, and on a fall-back night the repeated hour is inside or
outside the window both times.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, time
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

_HHMM = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")


def parse_hhmm(text: str) -> time:
    """`"01:30"` -> time(1, 30); ValueError for anything else."""
    match = _HHMM.match(text or "")
    if match is None:
        raise ValueError(f"expected HH:MM (00:00 to 23:59), got {text!r}")
    return time(int(match.group(1)), int(match.group(2)))


def zone_of(name: str | None) -> ZoneInfo:
    """The zone named `name`, UTC for none or an unknown name (a site's zone is checked when it is saved)."""
    try:
        return ZoneInfo(name or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


@dataclass(frozen=True, slots=True)
class DailyWindow:
    start: time
    end: time
    zone: str

    @classmethod
    def parse(cls, start: str, end: str, zone: str | None) -> DailyWindow:
        return cls(parse_hhmm(start), parse_hhmm(end), zone or "UTC")

    def is_open(self, now: datetime) -> bool:
        """Whether `now` (aware, any zone) falls inside the window on the site's wall clock."""
        if now.tzinfo is None:
            now = now.replace(tzinfo=UTC)
        wall = now.astimezone(zone_of(self.zone)).time().replace(tzinfo=None)
        if self.start == self.end:
            return True
        if self.start < self.end:
            return self.start <= wall < self.end
        return wall >= self.start or wall < self.end  # wraps midnight

    def describe(self) -> str:
        """`01:00-05:00 Europe/Paris`, as the queue's state_reason says it."""
        return f"{self.start:%H:%M}-{self.end:%H:%M} {self.zone}"
