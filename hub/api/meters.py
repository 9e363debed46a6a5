"""Meters: a node's level history (per second from memory, per minute and coarser from the database) and the
SSE stream of every frame the caller may see, or of the latest frames once per tick (`coalesce`)."""

from __future__ import annotations

import re

from hark_fleet.hub.api.base import BaseHandler
from hark_fleet.hub.api.history import query_window
from hark_fleet.hub.api.streaming import StreamHandler
from hark_fleet.hub.errors import InvalidRequest
from hark_fleet.hub.meters import COALESCE_MAX_MS, COALESCE_MIN_MS, RANGES_S
from hark_fleet.hub.services import nodes
from hark_fleet.hub.services.history import METRIC_RANGES_S

MAX_STREAM_NODES = 200
MAX_RATE_HZ = 10  # a node's own meter rate: more would be no limit
# Ranges served from memory at one point per second; the longer ones come from the stored minutes.
STORED_RANGES_S = {name: span for name, span in METRIC_RANGES_S.items() if name not in RANGES_S}
ALL_RANGES_S = {**RANGES_S, **STORED_RANGES_S}
COALESCE_RE = re.compile(r"([0-9]{1,6}(?:\.[0-9]{1,6})?)(ms|s)")  # as the OpenAPI pattern: ASCII digits, no spaces


class NodeMeterHistoryHandler(BaseHandler):
    """`GET /api/v1/nodes/{id}/meters/history?range=5m|15m|1h|24h|7d|30d` (or `from`/`to`), oldest first.

    Up to an hour: one point per second, from memory. Longer, or `from`/`to`: the stored minutes
    rolled up into buckets sized by the span (1 min up to a day, 10 min up to a week, 1 h beyond).
    """

    permissions = {"get": "node:read"}

    async def get(self, id: str) -> None:
        win = query_window(self, ALL_RANGES_S, "5m")
        await self.hub.db.run(nodes.get_node, id, self.scope)
        if win.range in RANGES_S:
            points = self.hub.ingest.meters.history(id, RANGES_S[win.range], win.end)
            self.write_data({"node_id": id, **win.to_api(), "interval_s": 1, "points": points})
            return
        points = await self.hub.ingest.history.meter_points(id, win)
        self.write_data({"node_id": id, **win.to_api(), "points": points})


def coalesce_ms(text: str) -> int:
    """`100ms`, `0.5s`, `2s`: a coalesced stream's tick in whole milliseconds, from 50 ms to 5 s."""
    found = COALESCE_RE.fullmatch(text)
    if found is None:
        raise ValueError(f"a duration such as 100ms or 0.5s, from {COALESCE_MIN_MS}ms to {COALESCE_MAX_MS // 1000}s")
    value = float(found[1]) * (1 if found[2] == "ms" else 1000)
    ms = round(value)
    if abs(value - ms) > 1e-6:
        raise ValueError("whole milliseconds")
    if not COALESCE_MIN_MS <= ms <= COALESCE_MAX_MS:
        raise ValueError(f"from {COALESCE_MIN_MS}ms to {COALESCE_MAX_MS // 1000}s")
    return ms


class MeterEventsHandler(StreamHandler):
    """`GET /api/v1/meter-events?node_id=...&max_rate=...`: `event: meter` for every frame of the nodes asked for (or
    all in scope), with `max_rate` at most that many per second of each node. With `coalesce=100ms` (50 ms to 5 s)
    instead: a snapshot of the latest frames, then `event: meters` once per tick with the latest frame of each node
    that sent one since the last tick."""

    permissions = {"get": "node:read"}

    async def get(self) -> None:
        max_rate = self.query_integer("max_rate", None, 1, MAX_RATE_HZ)
        coalesce = self.query_args().get("coalesce")
        interval_ms = None
        if coalesce:
            try:
                interval_ms = coalesce_ms(coalesce[-1])
            except ValueError as err:
                raise InvalidRequest("Some query parameters are invalid.", fields={"coalesce": str(err)}) from err
            if max_rate is not None:
                raise InvalidRequest("Some query parameters are invalid.", fields={"max_rate": "not with coalesce"})
        requested = self.get_query_arguments("node_id")
        if len(requested) > MAX_STREAM_NODES:
            raise InvalidRequest("Too many nodes.", fields={"node_id": f"at most {MAX_STREAM_NODES}"})
        for node_id in dict.fromkeys(requested):
            await self.hub.db.run(nodes.get_node, node_id, self.scope)  # 404 outside the caller's sites
        store = self.hub.ingest.meters
        node_ids = frozenset(requested) if requested else None
        if interval_ms is not None:
            coalesced = store.subscribe_coalesced(self.scope, node_ids, interval_ms)
            try:
                first = store.snapshot(coalesced)
                await self.pump(coalesced, [first] if first else [], "meters", write_interval=0, direct=True)
            finally:
                store.unsubscribe_coalesced(coalesced)
            return
        subscription = store.subscribe(self.scope, node_ids, max_rate)
        try:
            await self.pump(subscription, [], "meters")
        finally:
            store.unsubscribe(subscription)
