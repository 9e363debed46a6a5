"""Retention at the hub: every `retention_interval_s`, when asked, and as soon as free space drops under the floor.

A run deletes the hub's copies `retention_rules.decide_hub` lets go (their age passed and every required provider
confirmed them), then, if free space is still under the largest `min_free_bytes_hub` of the policies, evicts
confirmed recordings oldest first until the floor is met (`emergency_order`). Nothing else is ever deleted: when
that is not enough, a critical `hub.retention_shortfall` health event says what is held and why; it resolves once
there is room again. Each run is a `RetentionRun` row, an audit event `retention.run`, and one `recording.evicted`
event per evicted recording.

More than one hub (issue 24): the loop runs on the instance holding the RETENTION lease, which closes the runs a
dead holder left unfinished when it gains the lease; each eviction's mark is fenced by the lease (a holder that lost
it deletes nothing). A manual run asked of another instance is started there as a row and run by the holder.

Free space is read every CHECK_S (one statvfs); the floor is read from the policies every FLOOR_REFRESH_S and at
once when a policy changes. An emergency whose plan fell short is not retried before EMERGENCY_RETRY_S unless free
space dropped further, so a hub that cannot make room does not churn.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hark_fleet.hub.clock import utcnow
from hark_fleet.hub.cluster.leases import RETENTION, LeaseLost
from hark_fleet.hub.disk_watch import measure
from hark_fleet.hub.services import health_events, retention_runs
from hark_fleet.hub.services.audit import SYSTEM, Actor
from hark_fleet.hub.storage import StorageError

if TYPE_CHECKING:
    from hark_fleet.hub.server import Hub

log = logging.getLogger(__name__)

CHECK_S = 2.0
RUN_MESSAGE = "retention.run"  # a manual run asked of an instance that does not hold the RETENTION lease
FLOOR_REFRESH_S = 30.0
EMERGENCY_RETRY_S = 60.0
FIRST_RUN_DELAY_S = 600.0  # the first scheduled run after a start (sooner with a shorter interval)


class RetentionRunner:
    """`hub.retention`: runs retention on a schedule, on demand and when space runs short."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.interval_s = hub.config.retention_interval_s
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._runs: set[asyncio.Task[Any]] = set()
        self._floor: int | None = None
        self._floor_read = 0.0
        self._shortfall_open: bool | None = None  # None: not known yet this process
        self._last_emergency = -1e18
        self._last_emergency_free: int | None = None
        self.last_run: dict[str, Any] | None = None

    @property
    def root(self) -> Path:
        return Path(getattr(self.hub.storage, "root", self.hub.config.data_dir))

    async def start(self) -> None:
        """Run the loop while this instance holds the RETENTION lease; take manual runs asked of other instances."""
        self.hub.leases.role(RETENTION, self._start_loop, self.stop)
        self.hub.leases.on_nudge(RETENTION, self._nudged)
        messages = getattr(self.hub, "cluster_messages", None)
        if messages is not None:
            messages.on(RUN_MESSAGE, self._on_run_message)

    async def _start_loop(self) -> None:
        closed = await self.hub.db.run(retention_runs.close_unfinished, "the hub stopped during this run")
        if closed:
            log.warning("retention: %d runs were cut short by the hub stopping; marked finished", closed)
        self._task = asyncio.create_task(self._loop(), name="retention")

    async def stop(self) -> None:
        tasks = [t for t in (self._task, *self._runs) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def policies_changed(self) -> None:
        """A retention policy changed: read the floor again now (on the instance running retention)."""
        self._nudged()
        self.hub.leases.nudge(RETENTION)

    def _nudged(self) -> None:
        self._floor = None
        self._wake.set()

    async def run_now(self, actor: Actor) -> dict[str, Any]:
        """Start a manual run and answer its row at once (the run goes on in the background, on the holder)."""
        run = await self.hub.db.run(retention_runs.start_run, "manual", actor)
        messages = getattr(self.hub, "cluster_messages", None)
        if self.hub.leases.holds(RETENTION) or messages is None:
            self._run_in_background(run["id"], actor)
        else:
            actor_fields = {"type": actor.type, "id": actor.id, "name": actor.name, "source_ip": actor.source_ip}
            await messages.send(RUN_MESSAGE, {"run_id": run["id"], "actor": actor_fields})
        return run

    def _run_in_background(self, run_id: str, actor: Actor) -> None:
        task = asyncio.create_task(self.run(run_id, "manual", actor))
        self._runs.add(task)
        task.add_done_callback(self._runs.discard)

    def _on_run_message(self, payload: dict[str, Any], sender: str = "") -> None:
        """A manual run asked of another instance: the holder runs it (a run no holder took is closed by the next one)."""
        if not self.hub.leases.holds(RETENTION) or sender == self.hub.instance_id:
            return
        fields = payload.get("actor") or {}
        actor = Actor(fields.get("type", "system"), fields.get("id"), fields.get("name"), fields.get("source_ip"))
        self._run_in_background(str(payload["run_id"]), actor)

    async def _free_bytes(self) -> int | None:
        spaces = await asyncio.get_running_loop().run_in_executor(None, measure, [self.root])
        return spaces[0].free_bytes if spaces else None

    async def _current_floor(self) -> int:
        if self._floor is None or time.monotonic() - self._floor_read >= FLOOR_REFRESH_S:
            self._floor = await self.hub.db.run(retention_runs.floor_bytes)
            self._floor_read = time.monotonic()
        return self._floor

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        next_run = loop.time() + min(FIRST_RUN_DELAY_S, self.interval_s)
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), CHECK_S)
            except TimeoutError:
                pass
            self._wake.clear()
            try:
                if loop.time() >= next_run:
                    next_run = loop.time() + self.interval_s
                    await self._start_and_run("schedule")
                    continue
                await self._watch_space()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - retention must outlive any one failed pass
                log.exception("retention pass failed; trying again")

    async def _watch_space(self) -> None:
        """Free space under the floor: an emergency run (not churning when the last one fell short)."""
        floor = await self._current_floor()
        free = await self._free_bytes()
        if free is None:
            return
        if floor <= 0 or free >= floor:
            if self._shortfall_open is not False:
                await self._record_shortfall(None)
            return
        now = time.monotonic()
        fell_further = self._last_emergency_free is not None and free < self._last_emergency_free - (1 << 20)
        if self._shortfall_open and now - self._last_emergency < EMERGENCY_RETRY_S and not fell_further:
            return
        self._last_emergency, self._last_emergency_free = now, free
        await self._start_and_run("emergency")

    async def _start_and_run(self, trigger: str) -> dict[str, Any]:
        run = await self.hub.db.run(retention_runs.start_run, trigger, SYSTEM)
        return await self.run(run["id"], trigger, SYSTEM)

    async def run(self, run_id: str, trigger: str, actor: Actor) -> dict[str, Any]:
        """One run (one at a time): plan, mark and delete, measure, record the run and the shortfall event.

        The hub stopping cuts a run short between two evictions: the run is then recorded as finished with what it did
        (a copy marked evicted whose file was not deleted yet stays on disk: nothing unconfirmed is ever lost)."""
        try:
            return await self._run(run_id, actor)
        except asyncio.CancelledError:
            await asyncio.shield(self.hub.db.run(retention_runs.close_unfinished, "the hub stopped during this run"))
            raise

    async def _run(self, run_id: str, actor: Actor) -> dict[str, Any]:
        async with self._lock:
            loop = asyncio.get_running_loop()
            free_before = await self._free_bytes() or 0
            plan = await self.hub.db.run(retention_runs.plan_hub, utcnow(), free_before)
            self._floor, self._floor_read = plan.floor_bytes, time.monotonic()
            deleted: list[list[str]] = []
            errors: list[str] = []
            freed = 0
            for eviction in plan.evictions:
                try:
                    event = await self.hub.db.run(
                        self.hub.leases.fenced(RETENTION, retention_runs.mark_evicted), run_id, eviction, utcnow()
                    )
                except LeaseLost as err:
                    errors.append(f"stopped: {err}")
                    break
                if event is None:
                    continue  # held or evicted meanwhile: left alone
                try:
                    await loop.run_in_executor(None, self.hub.storage.delete, eviction.storage_key)
                except (OSError, StorageError) as err:
                    log.error("retention: could not delete %s (%s): %s", eviction.recording_id, eviction.storage_key, err)
                    errors.append(f"{eviction.recording_id}: {err}")
                deleted.append([eviction.recording_id, eviction.reason])
                freed += eviction.size_bytes
                self.hub.events.publish(event.type, event.site, event.data)
                log.info("retention: evicted %s from the hub (%s)", eviction.recording_id, eviction.reason)
            free_after = await self._free_bytes() or 0
            held = [[rid, reason] for rid, reason in plan.held]
            shortfall = max(plan.floor_bytes - free_after, 0) if plan.floor_bytes > 0 else 0
            summary = {
                "deleted": deleted,
                "held": held,
                "errors": errors,
                "freed_bytes": freed,
                "free_bytes_before": free_before,
                "free_bytes_after": free_after,
                "floor_bytes": plan.floor_bytes,
                "shortfall_bytes": shortfall,
            }
            result = await self.hub.db.run(retention_runs.finish_run, run_id, actor, summary)
            if shortfall:
                log.error(
                    "retention: %d B short of the %d B floor; %d recordings held (not confirmed where required)",
                    shortfall,
                    plan.floor_bytes,
                    len(held),
                )
                await self._record_shortfall(retention_runs.shortfall_details(free_after, plan.floor_bytes, shortfall, held))
            elif plan.floor_bytes <= 0 or free_after >= plan.floor_bytes:
                await self._record_shortfall(None)
            self.last_run = result
            return result

    async def _record_shortfall(self, details: dict[str, Any] | None) -> None:
        """Open (details) or resolve (None) the hub's critical shortfall event."""
        state = "open" if details is not None else "resolved"
        try:
            events = await self.hub.db.run(
                health_events.hub_condition, retention_runs.SHORTFALL_KIND, state, "critical", details or {}
            )
        except Exception as err:  # noqa: BLE001 - no room for the event: tried again at the next check
            log.warning("could not record %s (%s)", retention_runs.SHORTFALL_KIND, err)
            return
        self._shortfall_open = details is not None
        self.hub.ingest.publish_events(events)
