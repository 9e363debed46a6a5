"""`GET /api/v1/events/stream`: fleet events as Server-Sent Events, scoped, resumable."""

from __future__ import annotations

import asyncio

from tornado.iostream import StreamClosedError

from hub.api.base import BaseHandler
from hub.errors import InvalidRequest


class EventStreamHandler(BaseHandler):
    """One SSE connection: replays what it missed (`Last-Event-ID`), then follows live events."""

    permissions = {"get": "node:read"}
    accepts_query_token = True

    async def get(self) -> None:
        raw_last = self.request.headers.get("Last-Event-ID") or self.get_query_argument("last_event_id", None)
        try:
            after = int(raw_last) if raw_last else None
        except ValueError as err:
            raise InvalidRequest("Last-Event-ID must be an event id.", fields={"Last-Event-ID": "not a number"}) from err
        types_arg = self.get_query_arguments("type")
        types = frozenset(types_arg) if types_arg else None
        self.set_header("Content-Type", "text/event-stream; charset=utf-8")
        self.set_header("Cache-Control", "no-store")
        self.set_header("X-Accel-Buffering", "no")
        subscription, backlog, complete = self.hub.events.subscribe(self.scope, types, after)
        self._closed = asyncio.Event()
        self.hub.streams_opened(self)
        closed = asyncio.ensure_future(self._closed.wait())
        try:
            self.write("retry: 2000\n\n")
            if not complete:
                self.write('event: reset\ndata: {"reason": "events were missed; reload the state"}\n\n')
            for event in backlog:
                self.write(event.sse())
            await self.flush()
            while not self._closed.is_set():
                getter = asyncio.ensure_future(subscription.queue.get())
                done, _ = await asyncio.wait(
                    {getter, closed}, timeout=self.hub.config.sse_keepalive_s, return_when=asyncio.FIRST_COMPLETED
                )
                if getter not in done:
                    getter.cancel()
                    if closed in done:
                        break
                    self.write(": keepalive\n\n")
                else:
                    self.write(getter.result().sse())
                    while not subscription.queue.empty():
                        self.write(subscription.queue.get_nowait().sse())
                if subscription.dropped:
                    self.write('event: reset\ndata: {"reason": "this client fell behind"}\n\n')
                    await self.flush()
                    break
                await self.flush()
        except StreamClosedError:
            pass
        finally:
            closed.cancel()
            self.hub.events.unsubscribe(subscription)
            self.hub.streams_closed(self)
        if not self._finished:
            try:
                self.finish()
            except StreamClosedError:
                pass

    def close_stream(self) -> None:
        """End this stream (the client went away, or the hub is stopping)."""
        if hasattr(self, "_closed"):
            self._closed.set()

    def on_connection_close(self) -> None:
        self.close_stream()
