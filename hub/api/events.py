"""`GET /api/v1/events/stream`: fleet events as Server-Sent Events, scoped, resumable."""

from __future__ import annotations

from hub.api.streaming import StreamHandler
from hub.errors import InvalidRequest
from hub.events import Event


class EventStreamHandler(StreamHandler):
    """One SSE connection: replays what it missed (`Last-Event-ID`), then follows live events."""

    permissions = {"get": "node:read"}

    async def get(self) -> None:
        raw_last = self.request.headers.get("Last-Event-ID") or self.get_query_argument("last_event_id", None)
        try:
            after = int(raw_last) if raw_last else None
        except ValueError as err:
            raise InvalidRequest("Last-Event-ID must be an event id.", fields={"Last-Event-ID": "not a number"}) from err
        types_arg = self.get_query_arguments("type")
        types = frozenset(types_arg) if types_arg else None
        subscription, backlog, complete = self.hub.events.subscribe(self.scope, types, after)
        preamble = [] if complete else [b'event: reset\ndata: {"reason": "events were missed; reload the state"}\n\n']
        try:
            await self.pump(subscription.queue, Event.sse, lambda: subscription.dropped, preamble + [e.sse() for e in backlog])
        finally:
            self.hub.events.unsubscribe(subscription)
