"""The schedule runner: keeps the book in step with the hub and starts each held job on the node's own clock.

Two loops on the agent's event loop. The sync loop asks the hub for this node's scheduled jobs at start,
on `nudge()` (`cmd/job {"scheduled": true}`, the broker coming back) and every SYNC_S; a hub that is away
changes nothing: the book stays as it is and the takes happen anyway. The main loop sleeps until the next
`start_at` and starts the recorder then (`Recorder(start_at=...)` opens the ring at the frame captured at
that instant, so waking a little late costs nothing); each take runs in its own task, so overlapping jobs
record at once from the one ring. Heartbeat failures never stop a take; the file is delivered (uploaded)
whenever the hub can be reached, and missed or failed jobs are reported until the hub has heard them.

Crash safety: the book is written before a recorder starts (status `recording`), so after a restart a job
is never recorded twice: its interrupted take is found by the cache recovery (`Recovered`, run once by the
ad-hoc worker) and delivered; a job marked recording with no audio at all in the cache (the node died in
between) is recorded again only if its occurrence is still running (late), else reported failed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from hark_fleet.node.errors import HubProtocolError, HubRejected, HubUnreachable, NodeError
from hark_fleet.node.recorder import CorruptRecording, Manifest, Recorder, RecordingResult
from hark_fleet.node.recorder.const import MANIFEST_FILE, UPLOADED
from hark_fleet.node.recording_client import StaleLease
from hark_fleet.node.recording_jobs import JobExecution, Recovered, failure_of
from hark_fleet.node.schedule import timing
from hark_fleet.node.schedule.book import FAILED, HELD, MISSED, RECORDED, RECORDING, Book, HeldJob, merge
from hark_fleet.node.worker import wait_any
from hark_fleet.protocol.backoff import backoff_delay

log = logging.getLogger(__name__)

SYNC_S = 60.0  # the hub is asked for changes at least this often
RETRY_BASE_S = 1.0
RETRY_CAP_S = 30.0  # sync and reports retry at least this often while the hub is away


class ScheduleRunner:
    """Holds this node's scheduled jobs (the book), syncs them with the hub and runs each at its time."""

    def __init__(
        self,
        book: Book,
        execution: JobExecution,
        recovered: Recovered,
        sync_s: float = SYNC_S,
        retry_cap_s: float = RETRY_CAP_S,
    ) -> None:
        self.book = book
        self.execution = execution
        self.client = execution.client
        self.recovered = recovered
        self.sync_s = sync_s
        self.retry_cap_s = retry_cap_s
        self.active: dict[str, Recorder] = {}  # job id -> its running recorder
        self.last_sync: float | None = None  # time.time() of the last sync the hub answered
        self._sync_now = asyncio.Event()
        self._changed = asyncio.Event()
        self._save_lock = asyncio.Lock()
        self._tasks: dict[str, asyncio.Task[Any]] = {}  # job id -> the task working on it (take, delivery, report)
        self._loaded = asyncio.Event()

    # -- control (on the loop) ---------------------------------------------------------

    def nudge(self) -> None:
        """Sync with the hub now (`cmd/job {"scheduled": true}`)."""
        self._sync_now.set()

    def job_command(self, job_id: str | None, stop: bool) -> None:
        """`cmd/job` with `stop`: the hub stops this running scheduled take (it is finalized and delivered).

        A take not started yet was withdrawn by the stop: the sync this asks for drops it from the book.
        """
        if not stop:
            return
        recorder = self.active.get(job_id or "")
        if recorder is not None:
            log.info("hub stopped scheduled job %s", job_id)
            recorder.stop()
        else:
            self.nudge()

    def current(self) -> Recorder | None:
        """One running scheduled recorder (for the disk-rate reading), or None."""
        return next(iter(self.active.values()), None)

    def stop_all(self, reason: str) -> None:
        """Stop every running take now (the UPS says the battery is nearly out)."""
        for recorder in list(self.active.values()):
            recorder.stop(reason)

    async def ready(self) -> None:
        """Wait until the book is loaded and the cache recovered (tests and the agent's diagnostics)."""
        await self._loaded.wait()

    # -- the loops ---------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Load the book, settle what a restart left, then sync and start jobs until `stop` is set."""
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self.book.load)
        await self.recovered.wait()
        await self._settle_after_restart()
        self._loaded.set()
        log.info("schedule: %d scheduled jobs in the book", len(self.book.entries))
        syncing = asyncio.create_task(self._sync_loop(stop), name="schedule-sync")
        try:
            await self._main_loop(stop)
        finally:
            await asyncio.gather(syncing, return_exceptions=True)
            tasks = list(self._tasks.values())
            if tasks:
                await asyncio.gather(*tasks, return_exceptions=True)

    async def _main_loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self._changed.clear()
            now = time.time()
            for entry in list(self.book.entries.values()):
                if entry.job_id in self._tasks:
                    continue
                if entry.status == HELD:
                    action = timing.decide(entry.start_at, entry.end_at, now)
                    if action == "start":
                        self._spawn(entry, self._take(entry, stop))
                    elif action == "missed":
                        entry.status, entry.error = MISSED, timing.missed_reason(entry.start_at, entry.end_at)
                        log.warning("job %s missed: %s", entry.job_id, entry.error)
                        await self._save()
                        self._spawn(entry, self._report(entry, stop))
                elif entry.status == RECORDED:
                    self._spawn(entry, self._deliver_cached(entry, stop))
                elif entry.status in (MISSED, FAILED):
                    self._spawn(entry, self._report(entry, stop))
            starts = [e.start_at for e in self.book.entries.values() if e.status == HELD and e.job_id not in self._tasks]
            await wait_any(timing.seconds_until_wake(starts, time.time()), stop, self._changed)

    async def _sync_loop(self, stop: asyncio.Event) -> None:
        attempt = 0
        while not stop.is_set():
            self._sync_now.clear()
            try:
                await self.sync()
                attempt = 0
                await wait_any(self.sync_s, stop, self._sync_now)
            except (HubUnreachable, HubRejected, HubProtocolError) as err:
                delay = backoff_delay(attempt, RETRY_BASE_S, self.retry_cap_s)
                attempt += 1
                log.warning("schedule: cannot sync the scheduled jobs (%s); the book stands, retrying in %.1fs", err, delay)
                await wait_any(delay, stop, self._sync_now)

    async def sync(self) -> None:
        """One sync: tell the hub what the book holds, take new and changed jobs, drop withdrawn ones."""
        answer = await self.client.sync_scheduled(self.book.held_pairs())
        self.last_sync = time.time()
        merged = merge(self.book.entries, answer.jobs, answer.withdrawn)
        if merged.changed:
            log.info(
                "schedule: %d new, %d changed, %d withdrawn scheduled jobs",
                len(merged.added),
                len(merged.updated),
                len(merged.dropped),
            )
            await self._save()
            self._changed.set()

    # -- one job -------------------------------------------------------------------------------

    async def _take(self, entry: HeldJob, stop: asyncio.Event) -> None:
        """Record the job from its planned instant (or late, until its end), then deliver it."""
        if self.book.entries.get(entry.job_id) is not entry or entry.status != HELD:
            return  # withdrawn or changed by a sync since the main loop looked
        claimed = entry.claimed()
        loop = asyncio.get_running_loop()
        try:
            recorder = self.execution.make_recorder(claimed, start_at=entry.start_at, duration_s=entry.duration_s)
        except NodeError as err:
            entry.status, entry.error = MISSED, f"the node cannot record it: {err}"
            log.error("job %s: %s", entry.job_id, entry.error)
            await self._save()
            await self._report(entry, stop)
            return
        entry.status = RECORDING
        await self._save()  # on disk before any audio: a restart never starts this take again
        recorder.start(self.execution.audio.ring)
        self.active[entry.job_id] = recorder
        late = time.time() - entry.start_at
        log.info("job %s: scheduled recording %s started (woke %.3f s after the plan)", entry.job_id, entry.recording_id, late)
        try:
            result = await self.execution.follow(claimed, recorder, stop, stale_stops=False, report_failure=False)
        finally:
            await loop.run_in_executor(None, recorder.wait)
            self.active.pop(entry.job_id, None)
        if result is None:
            ended = recorder.result
            entry.status, entry.error = FAILED, failure_of(ended) if ended is not None else "the recording failed"
            await self._save()
            await self._report(entry, stop)
            return
        entry.status = RECORDED
        await self._save()
        await self._deliver(entry, result, stop)

    async def _deliver_cached(self, entry: HeldJob, stop: asyncio.Event) -> None:
        """Deliver a take finalized before (this run or one before it)."""
        result = await asyncio.get_running_loop().run_in_executor(None, self.execution.load_cached, entry.recording_id)
        if result is None or result.path is None:
            entry.status, entry.error = FAILED, "the node lost this recording's audio"
            await self._save()
            await self._report(entry, stop)
            return
        await self._deliver(entry, result, stop)

    async def _deliver(self, entry: HeldJob, result: RecordingResult, stop: asyncio.Event) -> None:
        try:
            delivered = await self.execution.deliver(entry.claimed(), result, stop)
        except StaleLease:
            log.error("job %s: the hub gave this scheduled job a newer lease; its take stays in the cache", entry.job_id)
            delivered = True  # nothing more this node can do with it
        if delivered or not stop.is_set():
            self.book.entries.pop(entry.job_id, None)  # delivered (or refused for good: kept in the cache, logged)
            await self._save()

    async def _report(self, entry: HeldJob, stop: asyncio.Event) -> None:
        """Tell the hub a job was missed or failed, retrying while it is away; then drop it from the book."""
        attempt = 0
        claimed = entry.claimed()
        error = entry.error or entry.status
        while not stop.is_set():
            try:
                if entry.status == MISSED:
                    await self.client.missed(claimed, error)
                else:
                    await self.client.finish(claimed, "failed", error)
                break
            except StaleLease as err:
                log.warning("job %s: not reported %s (%s)", entry.job_id, entry.status, err)
                break
            except HubRejected as err:
                if 400 <= err.status < 500 and err.status != 429:
                    log.warning("job %s: the hub refused the %s report: %s", entry.job_id, entry.status, err)
                    break
            except (HubUnreachable, HubProtocolError) as err:
                log.info("job %s: cannot report it %s yet (%s)", entry.job_id, entry.status, err)
            delay = backoff_delay(attempt, RETRY_BASE_S, self.retry_cap_s)
            attempt += 1
            await wait_any(delay, stop, self._sync_now)
        else:
            return  # stopping: reported after the restart
        self.book.entries.pop(entry.job_id, None)
        await self._save()

    # -- after a restart -------------------------------------------------------------------------

    async def _settle_after_restart(self) -> None:
        """Jobs the book says were recording or recorded: deliver what the cache holds; never record one twice."""
        loop = asyncio.get_running_loop()
        changed = False
        now = time.time()
        for entry in list(self.book.entries.values()):
            if entry.status not in (RECORDING, RECORDED):
                continue
            found = self.recovered.take(entry.recording_id)
            if found is None:
                found = await loop.run_in_executor(None, self.execution.load_cached, entry.recording_id)
            if found is not None and found.state == "finalized" and found.path is not None:
                if entry.status != RECORDED:
                    log.info("job %s: its take was interrupted by a restart; delivering what was captured", entry.job_id)
                entry.status = RECORDED
            elif found is not None and found.state != "finalized":
                entry.status, entry.error = FAILED, failure_of(found)
            elif await loop.run_in_executor(None, self._uploaded, entry.recording_id):
                del self.book.entries[entry.job_id]  # delivered just before the restart
            elif entry.status == RECORDING and now < entry.end_at:
                log.warning("job %s: the node stopped before its take had audio; recording the rest late", entry.job_id)
                entry.status = HELD
            else:
                entry.status, entry.error = FAILED, "the node restarted and has none of this recording's audio"
            changed = True
        if changed:
            await self._save()

    def _uploaded(self, recording_id: str) -> bool:
        """Whether the cache holds this recording as confirmed uploaded (blocking)."""
        directory = self.execution.cache.path_for(recording_id)
        if not (directory / MANIFEST_FILE).exists():
            return False
        try:
            return Manifest.load(directory).state == UPLOADED
        except CorruptRecording:
            return False

    # -- helpers -------------------------------------------------------------------------------------

    def _spawn(self, entry: HeldJob, work: Any) -> None:
        job_id = entry.job_id
        task = asyncio.create_task(self._guard(job_id, work), name=f"schedule-{job_id}")
        self._tasks[job_id] = task

    async def _guard(self, job_id: str, work: Any) -> None:
        try:
            await work
        except Exception:
            log.exception("schedule: job %s hit an unexpected error", job_id)
        finally:
            self._tasks.pop(job_id, None)
            self._changed.set()

    async def _save(self) -> None:
        """Write the book as it is now; saves queue so the newest state is the one left on disk."""
        async with self._save_lock:
            data = self.book.snapshot()
            await asyncio.get_running_loop().run_in_executor(None, self.book.write, data)
