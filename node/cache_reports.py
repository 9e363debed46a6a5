"""Telling the hub which recordings the node's cache evicted (`POST /api/v1/nodes/{id}/cache-evictions`).

`CacheDirectory.apply` keeps every eviction in a small file beside the cache until the hub has taken it, so a hub
that is away, or a node that restarts meanwhile, loses none: this worker sends what is pending (in batches), forgets
what the hub answered, and backs off while the hub cannot be reached. The hub shows the node copy as evicted.
"""

from __future__ import annotations

import asyncio
import logging

import msgspec
from hark_fleet.node.errors import HubRejected, NodeError
from hark_fleet.node.hub_client import HubClient, answer_data
from hark_fleet.node.recorder import CacheDirectory
from hark_fleet.node.worker import wait_any
from hark_fleet.protocol.backoff import backoff_delay

log = logging.getLogger(__name__)

POLL_S = 5.0  # a look at the pending list (in memory once read)
BATCH = 500
RETRY_BASE_S = 2.0
RETRY_CAP_S = 300.0
REFUSED = (400, 413, 422)  # the hub will never take these ids: drop them rather than retry for ever


class EvictionReporter:
    """Sends the cache's pending evictions to the hub until none is left."""

    def __init__(self, cache: CacheDirectory, hub: HubClient) -> None:
        self.cache = cache
        self.hub = hub

    async def run(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        attempt = 0
        while not stop.is_set():
            pending = await loop.run_in_executor(None, self.cache.evictions_pending)
            if not pending:
                await wait_any(POLL_S, stop)
                continue
            try:
                await self.report(pending[:BATCH])
                attempt = 0
            except NodeError as err:
                delay = backoff_delay(attempt, RETRY_BASE_S, RETRY_CAP_S)
                attempt += 1
                log.warning("cannot report %d cache evictions to the hub (%s); retrying in %.1fs", len(pending), err, delay)
                await wait_any(delay, stop)

    async def report(self, recording_ids: list[str]) -> None:
        """One batch to the hub; forgotten once it answered (or refused the ids for good)."""
        body = msgspec.json.encode({"recording_ids": recording_ids})
        try:
            response = await self.hub.fetch(
                "POST", self.hub.url("cache-evictions"), body=body, headers={"Content-Type": "application/json"}
            )
        except HubRejected as err:
            if err.status not in REFUSED:
                raise
            log.error("the hub refused a cache-evictions report (%s): dropping %d ids", err, len(recording_ids))
        else:
            data = answer_data(response.body, "cache-evictions answer") or {}
            unknown = data.get("unknown") if isinstance(data, dict) else None
            if unknown:
                log.info("cache evictions the hub does not know as this node's: %s", ", ".join(map(str, unknown)))
            log.info("told the hub of %d cache evictions", len(recording_ids))
        await asyncio.get_running_loop().run_in_executor(None, self.cache.evictions_reported, recording_ids)
