"""The fleet events stream: numbered events, a bounded replay buffer, and bounded subscriber queues."""

from __future__ import annotations

import json
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hark_fleet.hub.auth.principal import SiteScope
from hark_fleet.hub.clock import iso, utcnow
from hark_fleet.hub.outbox import Outbox

log = logging.getLogger(__name__)

REPLAY = 5000  # events kept for `Last-Event-ID` resume
QUEUE = 1000  # events a subscriber's socket may leave unsent before it is dropped


@dataclass(frozen=True, slots=True)
class FleetEvent:
    """Something a change caused, for the events stream once its transaction commits: `node.online`, ..."""

    type: str
    site: str | None
    data: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Event:
    id: int
    type: str
    site: str | None
    data: dict[str, Any]

    def sse(self) -> bytes:
        payload = json.dumps({**self.data, "type": self.type}, separators=(",", ":"))
        return f"id: {self.id}\nevent: {self.type}\ndata: {payload}\n\n".encode()


class Subscription:
    """One stream client: what it may see, and its outbox of encoded events (dropped when it fell too far behind)."""

    def __init__(self, scope: SiteScope, types: frozenset[str] | None) -> None:
        self.scope = scope
        self.types = types
        self.outbox = Outbox(QUEUE)

    @property
    def dropped(self) -> bool:
        return self.outbox.dropped

    def wants(self, event: Event) -> bool:
        return self.scope.allows(event.site) and (self.types is None or event.type in self.types)


class EventBus:
    """Publish fleet events to live subscribers and keep the last REPLAY for resumption."""

    def __init__(self) -> None:
        self._next = 1
        self._buffer: deque[Event] = deque(maxlen=REPLAY)
        self._subscribers: set[Subscription] = set()
        self._listeners: list[Callable[[Event], None]] = []

    def add_listener(self, listener: Callable[[Event], None]) -> None:
        """Call `listener` with every event published, on the loop, before subscribers see it (the notifier's intake)."""
        self._listeners.append(listener)

    def publish(self, type: str, site: str | None, data: dict[str, Any]) -> Event:
        event = Event(self._next, type, site, {**data, "emitted_at": iso(utcnow())})
        self._next += 1
        self._buffer.append(event)
        for listener in self._listeners:
            try:
                listener(event)
            except Exception:
                log.exception("an event listener failed on %s", event.type)
        payload: bytes | None = None  # encoded once, for every subscriber
        for sub in list(self._subscribers):
            if not sub.wants(event):
                continue
            if payload is None:
                payload = event.sse()
            if not sub.outbox.put(payload):
                self._subscribers.discard(sub)
        return event

    def subscribe(
        self, scope: SiteScope, types: frozenset[str] | None, after: int | None
    ) -> tuple[Subscription, list[Event], bool]:
        """A new subscription, the buffered events after `after` it should see first, and whether
        the buffer still reached back that far (False: some events were lost to the client)."""
        sub = Subscription(scope, types)
        complete = True
        backlog: list[Event] = []
        if after is not None:
            oldest = self._buffer[0].id if self._buffer else self._next
            complete = after + 1 >= oldest
            backlog = [e for e in self._buffer if e.id > after and sub.wants(e)]
        self._subscribers.add(sub)
        return sub, backlog, complete

    def unsubscribe(self, sub: Subscription) -> None:
        self._subscribers.discard(sub)
