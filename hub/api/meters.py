"""Live meters: a node's per-second history and the SSE stream of every frame the caller may see."""

from __future__ import annotations

from hark_fleet.hub.api.base import BaseHandler
from hark_fleet.hub.api.streaming import StreamHandler
from hark_fleet.hub.errors import InvalidRequest
from hark_fleet.hub.meters import RANGES_S
from hark_fleet.hub.services import nodes

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


class MeterEventsHandler(StreamHandler):
    """`GET /api/v1/meter-events?node_id=...`: `event: meter` for every frame of the nodes asked for (or all in scope)."""

    permissions = {"get": "node:read"}

    async def get(self) -> None:
        requested = self.get_query_arguments("node_id")
        if len(requested) > MAX_STREAM_NODES:
            raise InvalidRequest("Too many nodes.", fields={"node_id": f"at most {MAX_STREAM_NODES}"})
        for node_id in dict.fromkeys(requested):
            await self.hub.db.run(nodes.get_node, node_id, self.scope)  # 404 outside the caller's sites
        store = self.hub.ingest.meters
        subscription = store.subscribe(self.scope, frozenset(requested) if requested else None)
        try:
            await self.pump(subscription.queue, bytes, lambda: subscription.dropped, [])
        finally:
            store.unsubscribe(subscription)
