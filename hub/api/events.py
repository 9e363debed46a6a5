"""`GET /api/v1/events/stream`: fleet events as Server-Sent Events, scoped, resumable."""

from __future__ import annotations

from hark_fleet.hub.api.streaming import StreamHandler
from hark_fleet.hub.errors import InvalidRequest
from hark_fleet.hub.services import query


class EventStreamHandler(StreamHandler):
    """One SSE connection: replays what it missed (`Last-Event-ID`), then follows live events."""

    permissions = {"get": "node:read"}

    async def get(self) -> None:
        after = self.query_integer("last_event_id", None, 0)
        header = self.request.headers.get("Last-Event-ID", "").strip()
        if header:  # the browser's own resume wins over the query
            try:
                after = query.integer(header, 0)
            except ValueError as err:
                raise InvalidRequest("Last-Event-ID must be an event id.", fields={"Last-Event-ID": str(err)}) from err
        types_arg = self.get_query_arguments("type")
        types = frozenset(types_arg) if types_arg else None
        subscription, backlog, complete = await self.hub.events.open(self.scope, types, after)
        preamble = [] if complete else [b'event: reset\ndata: {"reason": "events were missed; reload the state"}\n\n']
        try:
            await self.pump(subscription.outbox, preamble + [e.sse() for e in backlog], "events")
        finally:
            self.hub.events.unsubscribe(subscription)
