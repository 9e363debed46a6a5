"""History that lasts, on the hub's loop: each node's meter and heartbeat minutes go to the database
once a minute, every node's in one transaction, and the minute in progress on a clean stop; minutes
past the retention are pruned from the ingest sweep, a bounded batch at a time.

Nothing here runs per frame or per heartbeat write: `MeterStore` folds frames into their minute as
they arrive and `HeartbeatMinutes` folds each applied heartbeat into its node's minute; this module
only takes the minutes that ended. Reads add what is not stored yet, so a chart reaches up to now.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

from hark_fleet.hub.errors import is_storage_full
from hark_fleet.hub.meters import MeterStore
from hark_fleet.hub.services import history
from hark_fleet.hub.services.history import HeartbeatMinutes, MeterSummary, MetricSummary, Window
from hark_fleet.protocol.messages import Heartbeat

if TYPE_CHECKING:
    from hark_fleet.hub.server import Hub

log = logging.getLogger(__name__)

FLUSH_LAG_S = 2.0  # after a minute ends, wait this long for its last frames and heartbeats to arrive
PRUNE_INTERVAL_S = 600.0  # between prunes once nothing is left past the retention
MAX_UNSTORED = 200_000  # minutes kept while the database cannot take them (about 100 min of 1,000 nodes)
AWAY_LOG_INTERVAL_S = 60.0


class HistoryRecorder:
    """Takes ended minutes from the meter store and the heartbeat folds, stores them, prunes and serves reads."""

    def __init__(self, hub: Hub, meters: MeterStore) -> None:
        self.hub = hub
        self.meters = meters
        self.heartbeats = HeartbeatMinutes()
        self.retention_s = hub.config.history_retention_days * 86400.0
        self._meters: list[MeterSummary] = []  # taken, not stored yet (the database was away)
        self._metrics: list[MetricSummary] = []
        self._writing: tuple[list[MeterSummary], list[MetricSummary]] = ([], [])  # being stored right now
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._prune_at = 0.0  # monotonic: the first sweep prunes
        self._away_logged_at = -AWAY_LOG_INTERVAL_S

    async def start(self) -> None:
        self._task = asyncio.create_task(self._every_minute())

    async def stop(self) -> None:
        """Store everything, the minute in progress included, so a restart loses nothing of it."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self.flush(everything=True)

    def add_heartbeats(self, beats: list[tuple[str, Heartbeat]]) -> None:
        """Heartbeats the hub applied (each once): folded into their node's minute."""
        now = time.time()
        oldest = now - self.retention_s
        for node_id, beat in beats:
            self.heartbeats.add(node_id, beat, now, oldest)

    def forget(self, node_id: str) -> None:
        """A deleted node: drop what is not stored yet (its stored minutes go with the node's row)."""
        self.heartbeats.forget(node_id)
        self._meters = [s for s in self._meters if s.node_id != node_id]
        self._metrics = [s for s in self._metrics if s.node_id != node_id]

    async def _every_minute(self) -> None:
        while True:
            await asyncio.sleep(seconds_to_next_minute(time.time()) + FLUSH_LAG_S)
            try:
                await self.flush()
            except Exception:
                log.exception("storing the history failed; retrying at the next minute")

    async def flush(self, everything: bool = False) -> None:
        """Store the minutes that ended (`everything`: those in progress too) in one transaction."""
        async with self._lock:
            now = None if everything else time.time()
            self._meters += self.meters.take_minutes(now)
            self._metrics += self.heartbeats.take(now)
            if not self._meters and not self._metrics:
                return
            if self.hub.disk.full:  # like every write while the data disk is full: what room is left is for recovering
                self._keep([], [])
                self._not_stored("the data disk is full", everything)
                return
            meters, metrics = self._meters, self._metrics
            self._meters, self._metrics = [], []
            self._writing = (meters, metrics)
            try:
                await self.hub.db.run(history.store_minutes, meters, metrics)
            except Exception as err:  # noqa: BLE001 - kept and tried again next minute; said once a minute
                if is_storage_full(err):
                    self.hub.disk.write_failed()
                self._keep(meters, metrics)
                self._not_stored(str(err), everything)
            finally:
                self._writing = ([], [])

    def _keep(self, meters: list[MeterSummary], metrics: list[MetricSummary]) -> None:
        """Minutes not stored wait for the next minute, the newest MAX_UNSTORED of each kind."""
        self._meters = (meters + self._meters)[-MAX_UNSTORED:]
        self._metrics = (metrics + self._metrics)[-MAX_UNSTORED:]

    def _not_stored(self, reason: str, final: bool) -> None:
        now = time.monotonic()
        if not final and now - self._away_logged_at < AWAY_LOG_INTERVAL_S:
            return
        self._away_logged_at = now
        what = f"{len(self._meters)} meter and {len(self._metrics)} heartbeat minutes"
        if final:
            log.error("could not store %s of history before stopping: %s; they are lost", what, reason)
        else:
            log.error("could not store %s of history: %s; kept in memory and tried again each minute", what, reason)

    async def prune_if_due(self) -> None:
        """From the ingest sweep: delete one bounded batch past the retention; again at the next sweep while more is left."""
        if time.monotonic() < self._prune_at:
            return
        self._prune_at = time.monotonic() + PRUNE_INTERVAL_S  # also after a failure: not again at every sweep
        before = history.expired_before(time.time(), self.retention_s)
        meters, metrics = await self.hub.db.run(history.prune, before, history.PRUNE_BATCH)
        if max(meters, metrics) >= history.PRUNE_BATCH:
            self._prune_at = 0.0  # more is left: the next sweep goes on
        if meters or metrics:
            log.info("history pruned: %d meter and %d heartbeat minutes older than the retention", meters, metrics)

    # -- reads -------------------------------------------------------------------------

    async def meter_points(self, node_id: str, win: Window) -> list[dict[str, Any]]:
        """Stored minutes and those not stored yet (a write in progress included), rolled up on the database worker."""
        writing = [s for s in self._writing[0] if s.node_id == node_id]
        unstored = writing + [s for s in self._meters if s.node_id == node_id] + self.meters.pending(node_id)
        return await self.hub.db.run(history.meter_history, node_id, win, unstored, [s.minute for s in writing])

    async def metric_points(self, node_id: str, win: Window) -> list[dict[str, Any]]:
        writing = [s for s in self._writing[1] if s.node_id == node_id]
        unstored = writing + [s for s in self._metrics if s.node_id == node_id] + self.heartbeats.pending(node_id)
        return await self.hub.db.run(history.metric_history, node_id, win, unstored, [s.minute for s in writing])


def seconds_to_next_minute(now: float) -> float:
    """Seconds until the next minute starts."""
    return history.MINUTE_S - now % history.MINUTE_S
