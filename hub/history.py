"""History that lasts, on the hub's loop: each node's meter and heartbeat minutes go to the database
once a minute, every node's in one transaction, and the minute in progress on a clean stop; minutes
past the retention are pruned from the ingest sweep, a bounded batch at a time.

Nothing here runs per frame or per heartbeat write: `MeterStore` folds frames into their minute as
they arrive and `HeartbeatMinutes` folds each applied heartbeat into its node's minute; this module
only takes the minutes that ended. Reads add what is not stored yet, so a chart reaches up to now.

Several hubs (issue 24): every hub gets every meter frame and folds every minute, but only the holder of
the `history` lease stores meter minutes, fenced (a hub that lost the lease stores none). The others keep
the minutes they took for `BACKLOG_S`: a hub that takes the lease over stores those no row holds yet (the
minute that ended just before the holder died). At a clean stop the holder stores what it has, the minute in
progress included, only when no other hub runs; else it stores no more meter minutes: the hub taking the lease
over has them all (those that ended in its backlog, the one in progress whole). Heartbeats are shared out, so
every hub stores its heartbeat minutes and the database merges the parts (`services.history.store_minutes`).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from typing import TYPE_CHECKING, Any

from hark_fleet.hub.cluster.leases import HISTORY
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
BACKLOG_S = 300.0  # meter minutes a hub not holding the history lease keeps for a takeover


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
        self._backlog: dict[tuple[str, int], MeterSummary] = {}  # taken while another hub stored meters
        self._last_holder = False  # gave the history lease up at a clean stop, no other hub running

    async def start(self) -> None:
        self._task = asyncio.create_task(self._every_minute())
        self.hub.leases.role(HISTORY, self._gained, self._released)

    async def _gained(self) -> None:
        """This hub stores meter minutes from now on (its backlog with the next minute's write)."""
        self._last_holder = False

    async def _released(self) -> None:
        """The lease goes. Given up at a clean stop (still held) with no other hub running: this hub goes on storing
        meter minutes until it stops (`stop()` stores the minute in progress with the heartbeats, in one write)."""
        leases = self.hub.leases
        self._last_holder = leases.holds(HISTORY) and leases.live_instances() <= {self.hub.instance_id}

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
        for key in [key for key in self._backlog if key[0] == node_id]:
            del self._backlog[key]

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
            wall = time.time()
            now = None if everything else wall
            taken = self.meters.take_minutes(now)
            leases = self.hub.leases
            fenced = leases.holds(HISTORY)
            holder = fenced or self._last_holder
            if holder:
                self._meters += taken
            else:  # another hub stores them; kept for a takeover (and no longer in this hub's queue)
                self._remember(self._meters + taken, wall)
                self._meters = []
            self._metrics += self.heartbeats.take(now)
            backlog = self._take_backlog(self._meters, wall) if holder else []
            if not self._meters and not self._metrics and not backlog:
                return
            if self.hub.disk.full:  # like every write while the data disk is full: what room is left is for recovering
                self._keep([], [])
                self._remember(backlog, wall)
                self._not_stored("the data disk is full", everything)
                return
            meters, metrics = self._meters, self._metrics
            self._meters, self._metrics = [], []
            self._writing = (meters, metrics)
            check = functools.partial(leases.check_fence, HISTORY) if leases.on_postgres and fenced else None
            try:
                stored = await self.hub.db.run(history.store_minutes, meters, metrics, check, backlog)
            except Exception as err:  # noqa: BLE001 - kept and tried again next minute; said once a minute
                if is_storage_full(err):
                    self.hub.disk.write_failed()
                self._keep(meters, metrics)
                self._remember(backlog, wall)
                self._not_stored(str(err), everything)
            else:
                if not stored:  # the lease was lost before the write: the new holder stores them
                    log.info("history lease lost: %d meter minutes left to the hub holding it", len(meters))
                    self._remember(meters + backlog, wall)
            finally:
                self._writing = ([], [])

    def _remember(self, summaries: list[MeterSummary], now: float) -> None:
        """Keep meter minutes another hub stores, for BACKLOG_S, in case this hub takes the lease over."""
        for summary in summaries:
            key = (summary.node_id, summary.minute)
            old = self._backlog.get(key)
            self._backlog[key] = summary if old is None else history.merge_meters([old, summary])[0]
        oldest = now - BACKLOG_S
        for key in [key for key in self._backlog if key[1] < oldest]:
            del self._backlog[key]

    def _take_backlog(self, meters: list[MeterSummary], now: float) -> list[MeterSummary]:
        """The kept minutes still recent, taken out, but those `meters` (stored merged) hold."""
        if not self._backlog:
            return []
        writing = {(s.node_id, s.minute) for s in meters}
        oldest = now - BACKLOG_S
        taken = [s for key, s in self._backlog.items() if key not in writing and key[1] >= oldest]
        self._backlog.clear()
        return taken

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
