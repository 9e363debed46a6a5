"""Storm control: pure functions over plain dataclasses, so the delivery worker decides nothing itself.

- :func:`group` folds a burst (50 boxes of a site going offline when its switch dies) into one message with
  the count and the list, instead of 50.
- :class:`FlapGate` notifies a flapping condition once per hold time; its state is a plain dict
  (:meth:`FlapGate.snapshot` / :meth:`FlapGate.restore`) so it survives a hub restart.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any


@dataclass(frozen=True, slots=True)
class Notice:
    """One thing worth telling: a condition opening or resolving."""

    key: str  # the condition, e.g. "node.offline:nod_1"
    kind: str  # e.g. "node.offline"
    site: str
    severity: str
    opened: bool  # True for an opening, False for a resolution
    at: datetime
    summary: str


@dataclass(frozen=True, slots=True)
class Message:
    """What one channel is sent: a single notice (count 1) or a group of the same kind and site."""

    kind: str
    site: str
    count: int
    items: tuple[Notice, ...]
    opened: bool

    @property
    def at(self) -> datetime:
        return self.items[0].at


def _single(notice: Notice) -> Message:
    return Message(kind=notice.kind, site=notice.site, count=1, items=(notice,), opened=notice.opened)


def group(notices: Sequence[Notice], window_s: float, threshold: int) -> list[Message]:
    """Fold bursts into messages, in time order.

    Notices of the same kind, site and direction (openings and resolutions are never mixed) arriving within
    ``window_s`` of the first of them are one burst; a burst of at least ``threshold`` notices is one message,
    a smaller one is a message per notice. A notice past the window starts the next burst.
    """
    if window_s < 0:
        raise ValueError("window_s must not be negative")
    if threshold < 1:
        raise ValueError("threshold must be at least 1")
    window = timedelta(seconds=window_s)
    bursts: list[list[Notice]] = []
    open_burst: dict[tuple[str, str, bool], list[Notice]] = {}
    for notice in sorted(notices, key=lambda n: n.at):
        bucket = (notice.kind, notice.site, notice.opened)
        burst = open_burst.get(bucket)
        if burst is not None and notice.at - burst[0].at <= window:
            burst.append(notice)
            continue
        burst = [notice]
        open_burst[bucket] = burst
        bursts.append(burst)
    messages: list[Message] = []
    for burst in bursts:
        if len(burst) >= threshold:
            first = burst[0]
            messages.append(Message(kind=first.kind, site=first.site, count=len(burst), items=tuple(burst), opened=first.opened))
        else:
            messages.extend(_single(notice) for notice in burst)
    messages.sort(key=lambda m: m.at)  # stable: bursts starting together keep their order
    return messages


@dataclass(slots=True)
class _Condition:
    last_opened_at: datetime | None = None  # when its last opening was notified
    notified_open: bool = False  # the last thing notified about it was an opening
    pending: Notice | None = field(default=None)  # an opening held back that has not resolved since


class FlapGate:
    """Admit a condition's opening at most once per ``hold_s``; admit a resolution only of an admitted opening.

    An open/resolve/open flap within the hold gives one opening (and the resolution of it). An opening held
    back that is still open when the hold ends is not lost: :meth:`due` hands it over then, so a condition
    that settled into the open state after flapping is notified again.
    """

    def __init__(self, hold_s: float) -> None:
        if hold_s < 0:
            raise ValueError("hold_s must not be negative")
        self.hold = timedelta(seconds=hold_s)
        self._conditions: dict[str, _Condition] = {}

    def admit(self, notice: Notice) -> bool:
        condition = self._conditions.setdefault(notice.key, _Condition())
        if not notice.opened:
            condition.pending = None
            if condition.notified_open:
                condition.notified_open = False
                return True
            return False
        if condition.last_opened_at is not None and notice.at - condition.last_opened_at < self.hold:
            if not condition.notified_open:
                condition.pending = notice
            return False
        condition.last_opened_at = notice.at
        condition.notified_open = True
        condition.pending = None
        return True

    def due(self, now: datetime) -> list[Notice]:
        """Openings held back during a flap, still open, whose hold has ended by ``now``; they count as notified."""
        released: list[Notice] = []
        for condition in self._conditions.values():
            if condition.pending is None or condition.last_opened_at is None or now - condition.last_opened_at < self.hold:
                continue
            released.append(condition.pending)
            condition.last_opened_at = now
            condition.notified_open = True
            condition.pending = None
        released.sort(key=lambda n: n.at)
        return released

    def snapshot(self) -> dict[str, Any]:
        """The gate's state as JSON-ready data, for :meth:`restore` after a restart."""
        return {
            key: {
                "last_opened_at": c.last_opened_at.isoformat() if c.last_opened_at else None,
                "notified_open": c.notified_open,
                "pending": _notice_to_dict(c.pending) if c.pending else None,
            }
            for key, c in self._conditions.items()
            if c.last_opened_at is not None or c.pending is not None
        }

    def restore(self, state: dict[str, Any]) -> None:
        """Replace the gate's state with one from :meth:`snapshot`."""
        self._conditions = {
            key: _Condition(
                last_opened_at=datetime.fromisoformat(c["last_opened_at"]) if c["last_opened_at"] else None,
                notified_open=bool(c["notified_open"]),
                pending=_notice_from_dict(c["pending"]) if c["pending"] else None,
            )
            for key, c in state.items()
        }


def _notice_to_dict(notice: Notice) -> dict[str, Any]:
    return {
        "key": notice.key,
        "kind": notice.kind,
        "site": notice.site,
        "severity": notice.severity,
        "opened": notice.opened,
        "at": notice.at.isoformat(),
        "summary": notice.summary,
    }


def _notice_from_dict(data: dict[str, Any]) -> Notice:
    return Notice(
        key=data["key"],
        kind=data["kind"],
        site=data["site"],
        severity=data["severity"],
        opened=bool(data["opened"]),
        at=datetime.fromisoformat(data["at"]),
        summary=data["summary"],
    )
