"""Live meters: a node's per-second history and the SSE stream of every frame the caller may see."""

from __future__ import annotations

import asyncio

from tornado.iostream import StreamClosedError

from hub.api.base import BaseHandler
from hub.errors import InvalidRequest
from hub.meters import RANGES_S
from hub.services import nodes

MAX_STREAM_NODES = 200


class NodeMeterHistoryHandler(BaseHandler):
    """`GET /api/v1/nodes/{id}/meters/history?range=5m|15m|1h`: one point per second, oldest first."""

    permissions = {"get": "node:read"}

    async def get(self, id: str) -> None:
        name = self.get_query_argument("range", "5m")
        if name not in RANGES_S:
            raise InvalidRequest("Unknown range.", fields={"range": f"must be one of {', '.join(RANGES_S)}"})
        await self.hub.db.run(nodes.get_node, id, self.scope)
        points = self.hub.ingest.meters.history(id, RANGES_S[name])
        self.write_data({"node_id": id, "range": name, "interval_s": 1, "points": points})


class MeterEventsHandler(BaseHandler):
    """`GET /api/v1/meter-events?node_id=...`: `event: meter` for every frame of the nodes asked for (or all in scope)."""

    permissions = {"get": "node:read"}
    accepts_query_token = True

    async def get(self) -> None:
        requested = self.get_query_arguments("node_id")
        if len(requested) > MAX_STREAM_NODES:
            raise InvalidRequest("Too many nodes.", fields={"node_id": f"at most {MAX_STREAM_NODES}"})
        for node_id in dict.fromkeys(requested):
            await self.hub.db.run(nodes.get_node, node_id, self.scope)  # 404 outside the caller's sites
        self.set_header("Content-Type", "text/event-stream; charset=utf-8")
        self.set_header("Cache-Control", "no-store")
        self.set_header("X-Accel-Buffering", "no")
        store = self.hub.ingest.meters
        subscription = store.subscribe(self.scope, frozenset(requested) if requested else None)
        self._closed = asyncio.Event()
        self.hub.streams_opened(self)
        closed = asyncio.ensure_future(self._closed.wait())
        try:
            self.write("retry: 2000\n\n")
            await self.flush()
            while not self._closed.is_set():
                getter = asyncio.ensure_future(subscription.queue.get())
                done, _ = await asyncio.wait(
                    {getter, closed}, timeout=self.hub.config.sse_keepalive_s, return_when=asyncio.FIRST_COMPLETED
                )
                if getter in done:
                    self.write(getter.result())
                    while not subscription.queue.empty():
                        self.write(subscription.queue.get_nowait())
                else:
                    getter.cancel()
                    if closed in done:
                        break
                    self.write(": keepalive\n\n")
                if subscription.dropped:
                    self.write('event: reset\ndata: {"reason": "this client fell behind"}\n\n')
                    await self.flush()
                    break
                await self.flush()
        except StreamClosedError:
            pass
        finally:
            closed.cancel()
            store.unsubscribe(subscription)
            self.hub.streams_closed(self)
        if not self._finished:
            try:
                self.finish()
            except StreamClosedError:
                pass

    def close_stream(self) -> None:
        if hasattr(self, "_closed"):
            self._closed.set()

    def on_connection_close(self) -> None:
        self.close_stream()
