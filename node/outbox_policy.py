"""Outbox decisions as pure functions: what to evict when full, when to report a high level."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from hark_fleet.node import const

Kind = Literal["telemetry", "local", "health", "lifecycle", "job"]
# Lowest value first: a new row may push out older rows of its own rank or below, never a job.
KINDS: tuple[Kind, ...] = ("telemetry", "local", "health", "lifecycle", "job")
EVICTABLE: tuple[Kind, ...] = ("telemetry", "local", "health", "lifecycle")


@dataclass(frozen=True, slots=True)
class Admission:
    """Whether a new row goes in, and how many of the oldest rows of each kind leave for it."""

    admit: bool
    evict: dict[str, int] = field(default_factory=dict)
    over_capacity: bool = False


def plan_admission(incoming: str, counts: Mapping[str, int], capacity: int) -> Admission:
    """Make room for one `incoming` row in an outbox holding `counts` rows per kind."""
    need = sum(counts.values()) + 1 - capacity
    if need <= 0:
        return Admission(True)
    rank = KINDS.index(incoming)
    evict: dict[str, int] = {}
    for kind in EVICTABLE[: rank + 1]:
        take = min(need, counts.get(kind, 0))
        if take:
            evict[kind] = take
            need -= take
        if need == 0:
            return Admission(True, evict)
    if incoming == "job":
        return Admission(True, evict, over_capacity=True)  # a job row is never lost
    return Admission(False)


def level_transition(depth: int, capacity: int, was_high: bool) -> bool | None:
    """True when the depth just passed the high mark, False when it fell below the low one, else None."""
    if not was_high and depth > capacity * const.OUTBOX_HIGH_FRACTION:
        return True
    if was_high and depth < capacity * const.OUTBOX_LOW_FRACTION:
        return False
    return None
