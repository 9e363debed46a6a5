"""The node's recording worker: claim a job, record it from the ring buffer, upload the file, and start over.

One job at a time, from claim to confirmed upload, with a job heartbeat every few seconds so
the hub's lease stays fresh and a stop from the hub arrives promptly (also pushed on
`cmd/job`). At start the cache is recovered first: recordings a crash cut short are finalized
as interrupted, and the hub hands their jobs back to this node (`recovered`) to be uploaded,
never recorded again. The cache policy is applied before every claim: a nearly full disk
stops new jobs (and a running one at the hard floor) before anything is corrupted.

`JobExecution` holds the pieces every kind of job shares (making the recorder from the job's profile,
following a recording with heartbeats and the disk policy, delivering the file, giving up); the
scheduled-job runner (`node.schedule.runner`) uses the same object. `recover_once` runs the cache
recovery once per agent start, for both.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hark_fleet.node.audio_path import AudioPath
from hark_fleet.node.errors import HubRejected, HubUnreachable, NodeError
from hark_fleet.node.heartbeat import ClockStatus
from hark_fleet.node.recorder import CacheDirectory, CachePolicy, Recorder, RecordingProfile, RecordingResult, recover_cache
from hark_fleet.node.recorder.errors import RecorderError
from hark_fleet.node.recording_client import ClaimedJob, RecordingClient, StaleLease, UploadRejected
from hark_fleet.node.worker import wait_any
from hark_fleet.protocol.backoff import backoff_delay

log = logging.getLogger(__name__)

POLL_S = 10.0  # claim-next when no `cmd/job` nudge came
HEARTBEAT_S = 2.0
DONE_POLL_S = 0.2
RETRY_BASE_S = 1.0
RETRY_CAP_S = 60.0
CACHE_FULL = "recording.cache_full"

Report = Callable[[str, str, str, dict[str, Any]], None]  # kind, open|resolved, severity, details


class JobExecution:
    """What running any recording job takes, shared by the ad-hoc worker and the scheduled runner.

    A hub that is away never stops a recording: heartbeat failures are logged and skipped; only the
    agent stopping, a stop from the hub, the duration, or the disk's hard floor end one.
    """

    def __init__(
        self,
        cache: CacheDirectory,
        client: RecordingClient,
        audio: AudioPath,
        clock: ClockStatus,
        policy: Callable[[], dict[str, Any]],
    ) -> None:
        self.cache = cache
        self.client = client
        self.audio = audio
        self.clock = clock
        self._policy = policy

    def cache_policy(self) -> CachePolicy:
        """The hub's cache policy, or the defaults when it is refused."""
        try:
            return CachePolicy.from_config(self._policy())
        except NodeError as err:
            log.error("cache policy from the hub refused (%s): using the defaults", err)
            return CachePolicy()

    def make_recorder(self, claimed: ClaimedJob, start_at: float | None = None, duration_s: float | None = None) -> Recorder:
        """The job's recorder from its recording's profile (not started); NodeError when the profile does not fit the source."""
        recording = claimed.recording
        profile = RecordingProfile.from_dict(recording.get("profile") or {})
        inputs = self.audio.channel_map.inputs
        if profile.channels is not None:
            if profile.channels > len(inputs):
                raise RecorderError(f"the profile asks {profile.channels} channels; the source has {len(inputs)}")
            inputs = inputs[: profile.channels]
        if profile.sample_rate != self.audio.rate:
            raise RecorderError(f"the profile asks {profile.sample_rate} Hz; the source runs at {self.audio.rate} Hz")
        return Recorder(
            claimed.recording_id,
            self.cache.path_for(claimed.recording_id),
            self.audio.rate,
            len(inputs),
            profile,
            job_id=claimed.job_id,
            duration_s=recording.get("requested_duration_s") if duration_s is None else duration_s,
            inputs=inputs,
            clock_offset_ms=self.clock.offset_ms,
            time_quality=self.clock.quality,
            start_at=start_at,
        )

    async def follow(
        self,
        claimed: ClaimedJob,
        recorder: Recorder,
        stop: asyncio.Event,
        stale_stops: bool = True,
        report_failure: bool = True,
    ) -> RecordingResult | None:
        """Heartbeat a started recorder until it is done; its result when finalized with a file, else None (job failed,
        reported to the hub unless `report_failure` is False: then the caller reports `recorder.result.error`).

        `stale_stops`: a StaleLease from the hub stops the recording and is raised (ad-hoc jobs); without it the
        recording goes on (a scheduled take belongs to this node whatever the lease says) and heartbeats stop.
        """
        loop = asyncio.get_running_loop()
        last_beat = 0.0
        beating = True
        try:
            while not recorder.done.is_set():
                if loop.time() - last_beat >= HEARTBEAT_S:
                    last_beat = loop.time()
                    if beating:
                        try:
                            await self.beat(claimed, "recording", recorder.progress().as_dict(), recorder)
                        except StaleLease:
                            if stale_stops:
                                raise
                            log.warning("job %s: the hub holds a newer lease; recording on without heartbeats", claimed.job_id)
                            beating = False
                    decision = await loop.run_in_executor(None, self.cache.apply, self.cache_policy())
                    if decision.stop_recording:
                        log.error("job %s: the disk is nearly full: stopping the recording cleanly", claimed.job_id)
                        recorder.stop("disk_low")
                if stop.is_set():
                    recorder.stop("interrupted")  # the agent is stopping: keep what was captured
                    break
                await wait_any(DONE_POLL_S, stop)
        except StaleLease:
            recorder.stop("stopped")
            raise
        finally:
            await loop.run_in_executor(None, recorder.wait)
        result = recorder.result
        assert result is not None
        if result.state != "finalized" or result.path is None:
            if report_failure:
                await self.give_up(claimed, failure_of(result))
            return None
        return result

    async def beat(self, claimed: ClaimedJob, state: str, progress: dict[str, Any], recorder: Recorder | None = None) -> None:
        """One job heartbeat; a hub that is away is not a reason to stop recording."""
        try:
            answer = await self.client.heartbeat(claimed, state, progress)
        except (HubUnreachable, HubRejected) as err:
            if isinstance(err, HubRejected) and err.status in (404, 409) and err.code != "stale_lease":
                log.warning("job %s heartbeat refused: %s", claimed.job_id, err)
            return
        if answer.get("stop_requested") and recorder is not None:
            recorder.stop()

    async def deliver(self, claimed: ClaimedJob, result: RecordingResult, stop: asyncio.Event) -> bool:
        """Tell the hub what was captured, then upload until the hub holds the whole file; True once it does.

        False when the agent stops first (the file stays finalized in the cache and goes up after the restart)
        or the hub refuses the job for good (403/404).
        """
        assert result.path is not None and result.sha256 is not None
        attempt = 0
        while not stop.is_set():
            try:
                await self.client.heartbeat(
                    claimed, "uploading", {"bytes": 0, "total": result.size_bytes}, result.recording_fields()
                )

                async def progress(sent: int, total: int) -> None:
                    await self.beat(claimed, "uploading", {"bytes": sent, "total": total})

                await self.client.upload(claimed, result.path, result.sha256, progress)
                break
            except UploadRejected as err:
                log.error("job %s: the hub refused the file (%s); sending it again", claimed.job_id, err)
            except (HubUnreachable, HubRejected) as err:
                if isinstance(err, HubRejected) and err.status in (403, 404):
                    log.error("job %s: upload refused for good: %s", claimed.job_id, err)
                    return False
                log.warning("job %s: upload interrupted (%s)", claimed.job_id, err)
            delay = backoff_delay(attempt, RETRY_BASE_S, RETRY_CAP_S)
            attempt += 1
            await wait_any(delay, stop)
        else:
            return False  # stopping: the recording stays in the cache, finalized, and goes up after the restart
        await asyncio.get_running_loop().run_in_executor(None, self.cache.mark_uploaded, claimed.recording_id)
        log.info("job %s: %s uploaded (%d bytes)", claimed.job_id, claimed.recording_id, result.size_bytes or 0)
        return True

    async def give_up(self, claimed: ClaimedJob, error: str) -> bool:
        """Report the job failed; True when the hub heard it."""
        log.error("job %s failed: %s", claimed.job_id, error)
        try:
            await self.client.finish(claimed, "failed", error)
        except (NodeError, HubUnreachable) as err:
            log.warning("could not report job %s failed: %s", claimed.job_id, err)
            return False
        return True

    def load_cached(self, recording_id: str) -> RecordingResult | None:
        """A recording's result as the cache holds it (blocking: an executor)."""
        for result in recover_cache(self.cache.root):
            if result.recording_id == recording_id:
                return result
        return None


def failure_of(result: RecordingResult) -> str:
    """Why a recording that did not finalize with a file failed, for the hub."""
    return result.error or f"recording ended {result.state}"


class Recovered:
    """The cache recovery of one agent start, run once for every worker that needs it (`await wait()`)."""

    def __init__(self) -> None:
        self.results: dict[str, RecordingResult] = {}
        self.ready = asyncio.Event()

    async def run(self, root: Path) -> None:
        """Recover the cache (finalize what a crash cut short) and keep the results by recording id."""
        try:
            for result in await asyncio.get_running_loop().run_in_executor(None, recover_cache, root):
                self.results[result.recording_id] = result
                log.info(
                    "cache: recording %s %s%s",
                    result.recording_id,
                    result.state,
                    " (interrupted)" if result.interrupted else "",
                )
        finally:
            self.ready.set()

    async def wait(self) -> dict[str, RecordingResult]:
        await self.ready.wait()
        return self.results

    def take(self, recording_id: str) -> RecordingResult | None:
        """The recovered result of one recording (once)."""
        return self.results.pop(recording_id, None)


class RecordingWorker:
    """Claims, records and uploads this node's recording jobs, one at a time."""

    def __init__(
        self,
        cache_root: Path,
        client: RecordingClient,
        audio: AudioPath,
        clock: ClockStatus,
        report: Report,
        policy: Callable[[], dict[str, Any]],
    ) -> None:
        self.cache = CacheDirectory(cache_root)
        self.client = client
        self.audio = audio
        self.clock = clock
        self.execution = JobExecution(self.cache, client, audio, clock, policy)
        self.recovered = Recovered()
        self._report = report
        self.nudge = asyncio.Event()
        self.current: Recorder | None = None
        self.current_job: ClaimedJob | None = None
        self._cache_full = False

    # -- control (on the loop) ---------------------------------------------------------

    def job_command(self, job_id: str | None, stop: bool) -> None:
        """`cmd/job`: a job is ready (claim now), or the running one must stop."""
        if stop:
            if self.current is not None and self.current_job is not None and self.current_job.job_id == job_id:
                log.info("hub stopped job %s", job_id)
                self.current.stop()
            return
        self.nudge.set()

    async def run(self, stop: asyncio.Event) -> None:
        self.cache.root.mkdir(parents=True, exist_ok=True)
        await self.recovered.run(self.cache.root)
        attempt = 0
        while not stop.is_set():
            self.nudge.clear()
            try:
                claimed = await self._claim()
                attempt = 0
            except (HubUnreachable, HubRejected) as err:
                delay = backoff_delay(attempt, RETRY_BASE_S, RETRY_CAP_S)
                attempt += 1
                log.warning("cannot claim a recording job (%s); retrying in %.1fs", err, delay)
                await wait_any(delay, stop)
                continue
            if claimed is None:
                await wait_any(POLL_S, stop, self.nudge)
                continue
            try:
                await self._work(claimed, stop)
            except StaleLease:
                log.warning("job %s was claimed again elsewhere: dropping it", claimed.job_id)
            except Exception:
                log.exception("job %s failed on the node", claimed.job_id)
                await self.execution.give_up(claimed, "the node hit an unexpected error")

    # -- one job ---------------------------------------------------------------------------

    async def _claim(self) -> ClaimedJob | None:
        decision = await asyncio.get_running_loop().run_in_executor(None, self.cache.apply, self.execution.cache_policy())
        if decision.accept_jobs == self._cache_full:  # changed
            self._cache_full = not decision.accept_jobs
            state = "open" if self._cache_full else "resolved"
            self._report(
                CACHE_FULL, state, "critical", {"reasons": list(decision.reasons), "free_bytes": decision.free_bytes_after}
            )
        if self._cache_full:
            return None  # the disk is too full for another recording: do not take one
        return await self.client.claim_next()

    async def _work(self, claimed: ClaimedJob, stop: asyncio.Event) -> None:
        recording_id = claimed.recording_id
        known = self.recovered.take(recording_id)
        if claimed.job.get("recovered") or known is not None:
            if known is None:
                known = await asyncio.get_running_loop().run_in_executor(None, self.execution.load_cached, recording_id)
            if known is None:
                await self.execution.give_up(claimed, "the node restarted and has none of this recording's audio")
                return
            log.info("job %s: uploading %s recording %s", claimed.job_id, known.state, recording_id)
            await self.execution.deliver(claimed, known, stop)
            return
        result = await self._record(claimed, stop)
        if result is not None:
            await self.execution.deliver(claimed, result, stop)

    async def _record(self, claimed: ClaimedJob, stop: asyncio.Event) -> RecordingResult | None:
        try:
            recorder = self.execution.make_recorder(claimed)
        except NodeError as err:
            await self.execution.give_up(claimed, str(err))
            return None
        recorder.start(self.audio.ring)
        self.current, self.current_job = recorder, claimed
        log.info("job %s: recording %s (%s)", claimed.job_id, claimed.recording_id, recorder.profile.format)
        try:
            return await self.execution.follow(claimed, recorder, stop)
        finally:
            self.current, self.current_job = None, None
