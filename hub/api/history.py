"""History that lasts: a node's heartbeat metrics over up to a year, in buckets sized by the span."""

from __future__ import annotations

import time

from hark_fleet.hub.api.base import BaseHandler
from hark_fleet.hub.errors import InvalidRequest
from hark_fleet.hub.services import history, nodes
from hark_fleet.hub.services.history import Window

WINDOW_PARAMS = frozenset({"range", "from", "to"})


def query_window(handler: BaseHandler, ranges: dict[str, int], default: str) -> Window:
    """`range` (ending now) or `from`/`to` from the query; a bad, mixed or unknown one is a 400 naming the parameter."""
    args = handler.query_args()
    unknown = sorted(set(args) - WINDOW_PARAMS)
    if unknown:
        raise InvalidRequest("Unknown query parameters.", fields={name: "is not a parameter of this route" for name in unknown})
    start = handler.optional_time(args["from"][-1] if "from" in args else None, "from")
    end = handler.optional_time(args["to"][-1] if "to" in args else None, "to")
    name = args["range"][-1] if "range" in args else None
    return history.window(name, start, end, time.time(), ranges, default)


class NodeMetricHistoryHandler(BaseHandler):
    """`GET /api/v1/nodes/{id}/metrics/history?range=1h|24h|7d|30d` (or `from`/`to`): heartbeat metrics per bucket."""

    permissions = {"get": "node:read"}

    async def get(self, id: str) -> None:
        win = query_window(self, history.METRIC_RANGES_S, "24h")
        await self.hub.db.run(nodes.get_node, id, self.scope)
        points = await self.hub.ingest.history.metric_points(id, win)
        self.write_data({"node_id": id, **win.to_api(), "points": points})
