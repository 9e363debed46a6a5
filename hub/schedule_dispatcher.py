"""The schedule dispatcher: the hub's loop that turns schedules into jobs ahead of time (`hub.schedules`).

Every `schedule_dispatch_interval_s`, and at once on `nudge()` (a schedule changed), it dispatches the
occurrences that start within `schedule_lead_s` and ends as `missed` the scheduled jobs nobody started.
The database work runs on the database worker in small batches (at most `JOBS_PER_BATCH` jobs, and
no new schedule after `BATCH_S`), so a request waits for one short batch at most (on SQLite the
worker is one thread) while a large fleet is dispatched; the pass takes longer under load instead.

It remembers, per schedule and version, when the next occurrence after the window starts, and looks
at a schedule again only once the window reaches it, when it changes, after a nudge, or at the full
pass every `FULL_PASS_S` (a selector picks up nodes added since). Restarting forgets nothing that
matters: dispatch is idempotent, and the first pass is a full one. On PostgreSQL the loop runs only on the
instance holding the DISPATCHER lease (issue 24), each batch and missed-job sweep runs fenced by it, and each
batch still holds its advisory lock, so of two hubs on one database only one dispatches at a time. `nudge()` on
any instance wakes the holder.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import statistics
import time
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from hark_fleet.hub.cluster.leases import DISPATCHER
from hark_fleet.hub.services import schedule_dispatch
from hark_fleet.hub.services.schedule_dispatch import DispatchResult
from hark_fleet.protocol.topics import command_topic

if TYPE_CHECKING:
    from hark_fleet.hub.server import Hub

log = logging.getLogger(__name__)

SCHEDULES_PER_BATCH = 10
JOBS_PER_BATCH = 100
BATCH_S = 0.005  # a batch stops before its next schedule after this long: requests wait for about one batch at most
FULL_PASS_S = 600.0


class ScheduleDispatcher:
    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._full = True
        self._full_at = 0.0
        self._next_due: dict[str, tuple[int, datetime | None]] = {}  # schedule id -> (version, next start after the window)
        self.passes = 0
        self.last_pass: dict[str, float] = {}

    async def start(self) -> None:
        """Run the loop while this instance holds the DISPATCHER lease."""
        self.hub.leases.role(DISPATCHER, self._start_loop, self.stop)
        self.hub.leases.on_nudge(DISPATCHER, self._nudged)

    async def _start_loop(self) -> None:
        self._full = True  # a new holder knows nothing of what the last one looked at
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    def nudge(self) -> None:
        """A schedule changed: look at every schedule again, now (on the instance that dispatches)."""
        self._nudged()
        self.hub.leases.nudge(DISPATCHER)

    def _nudged(self) -> None:
        self._full = True
        self._wake.set()

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            try:
                await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                self._full = True
                log.exception("schedule dispatch failed; retrying at the next pass")
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=self.hub.config.schedule_dispatch_interval_s)
            except TimeoutError:
                pass

    async def run_once(self, now: datetime | None = None) -> DispatchResult:
        """One pass: dispatch what the window reaches, end missed jobs, publish the events and tell the nodes."""
        started = time.perf_counter()
        now = now or datetime.now(UTC)
        lead = self.hub.config.schedule_lead_s
        full = self._full or time.monotonic() - self._full_at >= FULL_PASS_S
        self._full = False
        db = self.hub.db
        due = await db.run(schedule_dispatch.due_schedules)
        versions = dict(due)
        for gone in set(self._next_due) - set(versions):
            del self._next_due[gone]
        horizon = now + timedelta(seconds=lead)
        todo = [sid for sid, version in due if full or self._is_due(sid, version, horizon)]
        total = DispatchResult()
        batches: list[float] = []  # each batch's time, from handing it to the database worker to its answer
        for first in range(0, len(todo), SCHEDULES_PER_BATCH):
            chunk = todo[first : first + SCHEDULES_PER_BATCH]
            resume: dict[str, datetime] = {}
            while chunk:
                work = functools.partial(
                    self.hub.leases.fenced(DISPATCHER, schedule_dispatch.dispatch),
                    max_jobs=JOBS_PER_BATCH,
                    resume=resume,
                    max_seconds=BATCH_S,
                )
                began = time.perf_counter()
                step = await db.run(work, now, lead, chunk)
                batches.append(time.perf_counter() - began)
                total.add(step)
                for sid, following in step.next_start.items():
                    self._next_due[sid] = (versions.get(sid, 0), following)
                if step.locked_out or step.complete:
                    break
                chunk = [sid for sid in chunk if sid not in step.next_start]  # those done need no second look
                resume = step.resume
            if total.locked_out:
                self._full = True  # another hub dispatches; look at everything again next time
                break
        if full and not total.locked_out:
            self._full_at = time.monotonic()
        grace = self.hub.config.job_lease_timeout_s
        while True:
            missed = await db.run(
                self.hub.leases.fenced(DISPATCHER, schedule_dispatch.sweep_missed), now, grace, self.hub.ingest.started_at
            )
            total.add(missed)
            if missed.jobs < schedule_dispatch.MISSED_BATCH:
                break
        self._publish(total)
        self.passes += 1
        elapsed = time.perf_counter() - started
        longest = max(batches, default=0.0)
        self.last_pass = {"seconds": elapsed, "schedules": len(todo), "occurrences": total.occurrences, "jobs": total.jobs}
        if total.jobs or total.occurrences:
            log.info(
                "schedule dispatch: %d schedules looked at, %d occurrences and %d jobs in %.3f s "
                "(%d batches, median %.1f ms, longest %.1f ms)%s",
                len(todo),
                total.occurrences,
                total.jobs,
                elapsed,
                len(batches),
                statistics.median(batches) * 1000 if batches else 0.0,
                longest * 1000,
                " (another hub holds the dispatch lock)" if total.locked_out else "",
            )
        return total

    def _is_due(self, schedule_id: str, version: int, horizon: datetime) -> bool:
        known = self._next_due.get(schedule_id)
        if known is None or known[0] != version:
            return True
        following = known[1]
        return following is not None and following < horizon

    def _publish(self, result: DispatchResult) -> None:
        self.hub.ingest.publish_events(result.events)
        bridge = self.hub.bridge
        if bridge is None:
            return
        for node_id in sorted(result.nodes):
            bridge.publish(command_topic(node_id, "job"), {"scheduled": True})
