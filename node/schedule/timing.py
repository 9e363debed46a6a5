"""Pure decisions of the schedule runner: what a held job needs now, and when the runner must wake next."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

from hark_fleet.node.clock import utc_iso

Action = Literal["wait", "start", "missed"]

MAX_SLEEP_S = 60.0  # the runner looks again at least this often (the wall clock may have been stepped meanwhile)


def decide(start_at: float, end_at: float, now: float) -> Action:
    """`wait` before `start_at`; `start` from it until `end_at` (the recorder picks the planned frame from the
    ring, or starts late when the plan is out of its reach); `missed` once the occurrence is over unrecorded."""
    if now < start_at:
        return "wait"
    if now >= end_at:
        return "missed"
    return "start"


def seconds_until_wake(starts: Iterable[float], now: float, max_sleep_s: float = MAX_SLEEP_S) -> float:
    """How long to sleep: until the soonest future start among `starts` (0 when one is due), at most `max_sleep_s`."""
    delay = max_sleep_s
    for start_at in starts:
        delay = min(delay, max(0.0, start_at - now))
    return delay


def missed_reason(start_at: float, end_at: float) -> str:
    """What the hub is told about a take the node was not running for at all."""
    return f"the node was not running from {utc_iso(start_at)} to {utc_iso(end_at)}: nothing was recorded"
