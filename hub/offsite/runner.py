"""The upload runner (issue 20): the hub's loop that copies recordings from its storage to the providers (`hub.upload_runner`).

Every `upload_pass_interval_s`, and at once on `nudge()` or when an upload ends, a pass promotes what
became eligible (`upload_runs.promote_due`) and claims queued `via_hub` items up to
`upload_concurrency` uploads at once and each provider's `max_concurrency`. Items of the `direct`
route are promoted here but claimed by their nodes, never by the runner.

Each upload runs on the runner's own thread pool (not the database worker, not the event loop): the
provider streams the hub's stored file from `hub.storage.open(key, offset)`, so memory stays flat
whatever the file's size. Its progress (`bytes_sent` and the provider's `resume` state) is written to
the item whenever the resume state changes (a part landed) and at most once a second otherwise, all
under the claim's lease epoch. Pacing comes from token buckets: one per provider
(`rate_limit_bps`, shared by its concurrent uploads) and one per policy (`bandwidth_cap_bps`).

Stopping the hub or pausing the runner cancels the uploads between chunks and gives their items
back to the queue with their resume state; a hub killed outright leaves them `uploading`, and the
next start queues them again (`requeue_interrupted`), so the upload continues from the parts the
provider already holds instead of starting over. A pause survives a restart (a marker file in the
data dir).

More than one hub (issue 24): the runner works only on the instance holding the UPLOADS lease. Gaining the
lease queues again what a dead holder left `uploading` (as a restart does; the claim's lease epoch keeps a
stale holder's progress out); losing it stops the uploads as a stop does. `nudge()` and `run_now()` on
another instance wake the holder.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from hark_fleet.hub.clock import iso, utcnow
from hark_fleet.hub.cluster.leases import UPLOADS
from hark_fleet.hub.events import FleetEvent
from hark_fleet.hub.offsite.base import ProviderError, ProviderSpec, UploadResult
from hark_fleet.hub.offsite.rate_limit import BucketRegistry, throttle_for
from hark_fleet.hub.offsite.registry import open_provider
from hark_fleet.hub.services import upload_runs
from hark_fleet.hub.services.upload_providers import load_spec
from hark_fleet.hub.services.upload_runs import ClaimedItem, StaleLease
from hark_fleet.protocol.atomic_file import write_atomic

if TYPE_CHECKING:
    from hark_fleet.hub.server import Hub

log = logging.getLogger(__name__)

ROUTE = "via_hub"
PROGRESS_EVERY_S = 1.0  # progress without a new resume state is written at most this often
THROUGHPUT_WINDOW_S = 60.0
STOP_WAIT_S = 15.0  # how long stopping waits for uploads to notice the cancellation
PAUSED_FILE = "upload_runner.paused"
WINDOW_CHECK_S = 5.0  # an upload in flight looks this often whether its policy's window has closed
FULL_PROMOTE_S = 60.0  # every item is looked at this often (windows opening); passes between look at new and due ones


@dataclass(slots=True)
class ActiveUpload:
    """One upload in flight, as `status()` shows it."""

    claimed: ClaimedItem
    provider_id: str
    started: float = field(default_factory=time.monotonic)
    bytes_sent: int = 0
    first_bytes: int = 0  # bytes_sent when this attempt started (a resumed upload starts past 0)
    stale: bool = False  # the lease was lost: stop at the next chunk
    window_closed: str | None = None  # why the policy's window stopped it ("outside the window ...")
    window_checked: float = 0.0
    writing: asyncio.Task[None] | None = None  # the progress write in flight, if any

    async def flushed(self) -> None:
        """Wait for the progress writes still in flight (so the outcome is written after them)."""
        while self.writing is not None and not self.writing.done():
            await asyncio.gather(self.writing, return_exceptions=True)

    def rate_bps(self, now: float) -> float:
        elapsed = now - self.started
        return (self.bytes_sent - self.first_bytes) / elapsed if elapsed > 0 else 0.0


@dataclass(slots=True)
class Outcome:
    kind: str  # synced | failed | released | stale
    result: UploadResult | None = None
    error: str = ""
    retryable: bool = True
    keep_resume: bool = True


@dataclass(slots=True)
class Written:
    """When an upload's progress was last written, and the resume state it held."""

    at: float
    resume: dict[str, Any]


class ProgressWriter:
    """Writes an upload's progress on the event loop, newest first: the provider's thread hands over the latest
    (bytes, resume) and goes on; while a write is in flight, later reports replace each other and the newest is
    written next. A write refused as stale marks the upload stale, so it stops."""

    def __init__(self, hub: Hub, active: ActiveUpload, loop: asyncio.AbstractEventLoop) -> None:
        self.hub = hub
        self.active = active
        self.loop = loop
        self._lock = threading.Lock()
        self._pending: tuple[int, dict[str, Any]] | None = None
        self._busy = False

    def submit(self, bytes_sent: int, resume: dict[str, Any]) -> None:
        """From any thread: write this progress soon."""
        with self._lock:
            self._pending = (bytes_sent, resume)
            if self._busy:
                return
            self._busy = True
        self.loop.call_soon_threadsafe(self._start)

    def _start(self) -> None:
        self.active.writing = asyncio.ensure_future(self._drain())

    async def _drain(self) -> None:
        claimed = self.active.claimed
        while True:
            with self._lock:
                pending, self._pending = self._pending, None
                if pending is None:
                    self._busy = False
                    return
            try:
                await self.hub.db.run(upload_runs.progress, claimed.item_id, claimed.epoch, pending[0], pending[1])
            except StaleLease:
                self.active.stale = True
            except Exception:  # noqa: BLE001 - a lost progress write is made good by the next one or by the provider's truth
                log.warning("writing the progress of upload item %s failed", claimed.item_id, exc_info=True)


class Throughput:
    """Bytes sent over the last minute, across uploads (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._samples: deque[tuple[float, int]] = deque()
        self._since: float | None = None  # when the current stretch of uploading began

    def started(self) -> None:
        with self._lock:
            now = time.monotonic()
            if self._since is None or not self._samples or now - self._samples[-1][0] > THROUGHPUT_WINDOW_S:
                self._since = now

    def add(self, n: int) -> None:
        if n > 0:
            with self._lock:
                self._samples.append((time.monotonic(), n))

    def bps(self) -> float:
        with self._lock:
            now = time.monotonic()
            while self._samples and now - self._samples[0][0] > THROUGHPUT_WINDOW_S:
                self._samples.popleft()
            if not self._samples or self._since is None:
                return 0.0
            window = min(THROUGHPUT_WINDOW_S, now - self._since)
            return sum(n for _, n in self._samples) / window if window > 0 else 0.0


class UploadRunner:
    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._pass_lock = asyncio.Lock()
        self._stopping = threading.Event()
        self._pool: ThreadPoolExecutor | None = None
        self._active: dict[str, ActiveUpload] = {}
        self._uploads: set[asyncio.Task[None]] = set()
        self._provider_limits = BucketRegistry()
        self._policy_caps = BucketRegistry()
        self._throughput = Throughput()
        self._backlog: dict[str, int] = {"count": 0, "bytes": 0}
        self.passes = 0
        self.last_pass_at: datetime | None = None
        self._full = True  # the next promotion looks at every item (at start, after a nudge, every FULL_PROMOTE_S)
        self._full_at = 0.0

    @property
    def concurrency(self) -> int:
        return self.hub.config.upload_concurrency

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Run while this instance holds the UPLOADS lease."""
        self.hub.leases.role(UPLOADS, self._start_role, self.stop)
        self.hub.leases.on_nudge(UPLOADS, self._nudged)

    async def _start_role(self) -> None:
        self._full = True
        self._stopping.clear()
        self._pool = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="hark-upload")
        requeued = await self.hub.db.run(upload_runs.requeue_interrupted, ROUTE)
        if requeued:
            log.info("upload runner: %d uploads cut off by the last stop queued again; they resume where they were", requeued)
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        """Cancel the uploads (their items go back to the queue, resume kept) and the loop."""
        self._stopping.set()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self._uploads:
            done, pending = await asyncio.wait(set(self._uploads), timeout=STOP_WAIT_S)
            if pending:
                log.warning("upload runner: %d uploads did not stop within %.0f s; leaving them", len(pending), STOP_WAIT_S)
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    def nudge(self) -> None:
        """Something changed (an item queued, a provider or policy saved): look at the whole queue now (on the holder)."""
        self._nudged()
        self.hub.leases.nudge(UPLOADS)

    def _nudged(self) -> None:
        self._full = True
        self._wake.set()

    async def run_now(self) -> dict[str, Any]:
        """One pass now (`POST /upload-runner/run`), looking at the whole queue; the status after it.

        On an instance not holding the UPLOADS lease, the holder is woken instead and this instance's status answered."""
        if not self.hub.leases.holds(UPLOADS):
            self.hub.leases.nudge(UPLOADS)
            return self.status()
        self._full = True
        await self._pass()
        return self.status()

    def pause(self) -> None:
        """No new uploads; those in flight stop at their next chunk and go back to the queue (resume kept)."""
        write_atomic(self.hub.config.data_dir / PAUSED_FILE, "paused\n")

    def resume(self) -> None:
        (self.hub.config.data_dir / PAUSED_FILE).unlink(missing_ok=True)
        self.nudge()

    @property
    def paused(self) -> bool:
        """Paused from any hub sharing the data directory: the flag is the file there, read each time."""
        return (self.hub.config.data_dir / PAUSED_FILE).exists()

    # -- status ----------------------------------------------------------------------------------

    def status(self, sites: frozenset[str] | None = None, backlog: dict[str, int] | None = None) -> dict[str, Any]:
        """State, throughput, backlog and ETA, and the uploads in flight (only those of `sites` when given)."""
        now = time.monotonic()
        active = [a for a in list(self._active.values()) if sites is None or a.claimed.site in sites]
        throughput = self._throughput.bps()
        backlog = dict(backlog if backlog is not None else self._backlog)
        if self.paused:
            state = "paused"
        elif self._active:
            state = "running"
        else:
            state = "idle"
        return {
            "state": state,
            "concurrency": self.concurrency,
            "active": [
                {
                    "item_id": a.claimed.item_id,
                    "recording_id": a.claimed.recording_id,
                    "recording_name": a.claimed.recording_name,
                    "provider_id": a.provider_id,
                    "provider_name": a.claimed.provider_name,
                    "site": a.claimed.site,
                    "bytes_sent": a.bytes_sent,
                    "bytes_total": a.claimed.size,
                    "rate_bps": round(a.rate_bps(now)),
                }
                for a in sorted(active, key=lambda a: a.started)
            ],
            "throughput_bps": round(throughput),
            "backlog": backlog,
            "eta_s": _eta(backlog["bytes"], throughput),
            "last_pass_at": iso(self.last_pass_at),
            "passes": self.passes,
        }

    # -- the loop ---------------------------------------------------------------------------------

    async def _run(self) -> None:
        while not self._stopping.is_set():
            self._wake.clear()
            try:
                await self._pass()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("upload runner pass failed; retrying at the next pass")
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=self.hub.config.upload_pass_interval_s)
            except TimeoutError:
                pass

    async def _pass(self) -> None:
        async with self._pass_lock:
            db = self.hub.db
            await db.run(upload_runs.release_stalled_direct, utcnow())
            await self._promote()
            if not self.paused and not self._stopping.is_set():
                await self._claim_some()
            self._backlog = await db.run(upload_runs.backlog, None, ROUTE)
            self.passes += 1
            self.last_pass_at = datetime.now(UTC)

    async def _promote(self) -> None:
        """Promote batch by batch (requests interleave): everything after a nudge or every FULL_PROMOTE_S, else only
        items just made and failed ones due again (a window opening is seen within FULL_PROMOTE_S)."""
        full = self._full or time.monotonic() - self._full_at >= FULL_PROMOTE_S
        self._full = False
        now = utcnow()
        after: str | None = ""
        while after is not None:
            _, after = await self.hub.db.run(upload_runs.promote_batch, now, after, not full)
        if full:
            self._full_at = time.monotonic()

    async def _claim_some(self) -> None:
        free = self.concurrency - len(self._active)
        if free <= 0:
            return
        db = self.hub.db
        candidates = await db.run(upload_runs.claimable, ROUTE, max(free * 8, 32), list(self._active))
        specs: dict[str, ProviderSpec | None] = {}
        for item in candidates:
            if len(self._active) >= self.concurrency or self._stopping.is_set():
                return
            if item.provider_id not in specs:
                specs[item.provider_id] = await self._spec(item.provider_id)
            spec = specs[item.provider_id]
            if spec is None:
                continue
            busy = sum(1 for a in self._active.values() if a.provider_id == spec.id)
            if busy >= max(1, spec.max_concurrency):
                continue
            claimed = await db.run(upload_runs.claim, item.id, ROUTE)
            if claimed is None:
                continue
            active = ActiveUpload(claimed, spec.id, bytes_sent=claimed.bytes_sent, first_bytes=claimed.bytes_sent)
            self._active[claimed.item_id] = active
            task = asyncio.create_task(self._upload(active, spec))
            self._uploads.add(task)
            task.add_done_callback(self._uploads.discard)

    async def _spec(self, provider_id: str) -> ProviderSpec | None:
        try:
            return await self.hub.db.run(load_spec, provider_id, self.hub.secrets)
        except Exception as err:  # noqa: BLE001 - a provider that cannot be read is skipped this pass
            log.warning("upload runner: provider %s cannot be loaded: %s", provider_id, type(err).__name__)
            return None

    # -- one upload -----------------------------------------------------------------------------

    async def _upload(self, active: ActiveUpload, spec: ProviderSpec) -> None:
        claimed = active.claimed
        loop = asyncio.get_running_loop()
        self._throughput.started()
        try:
            assert self._pool is not None
            outcome = await loop.run_in_executor(self._pool, self._upload_blocking, active, spec, loop)
            await active.flushed()
        except Exception as err:  # noqa: BLE001 - a broken pool or a bug: the item fails and is tried again later
            log.exception("upload of item %s failed unexpectedly", claimed.item_id)
            outcome = Outcome("failed", error=f"{type(err).__name__}: {err}")
        finally:
            self._active.pop(claimed.item_id, None)
        try:
            await self._settle(claimed, outcome)
        except StaleLease:
            log.info("upload item %s was taken over while uploading; its result is dropped", claimed.item_id)
        except Exception:
            log.exception("recording the end of upload item %s failed; it is queued again at the next start", claimed.item_id)
        if not self._stopping.is_set():
            self._wake.set()  # a slot is free

    async def _settle(self, claimed: ClaimedItem, outcome: Outcome) -> None:
        db = self.hub.db
        events: list[FleetEvent] = []
        if outcome.kind == "synced" and outcome.result is not None:
            events = await db.run(upload_runs.finish_synced, claimed.item_id, claimed.epoch, outcome.result)
            log.info(
                "uploaded recording %s to provider %s (%s)", claimed.recording_id, claimed.provider_id, outcome.result.verified_by
            )
        elif outcome.kind == "failed":
            events = await db.run(
                _finish_failed,
                claimed.item_id,
                claimed.epoch,
                outcome.error,
                outcome.retryable,
                self.hub.config.upload_backoff_base_s,
                outcome.keep_resume,
            )
            log.warning(
                "upload of recording %s to provider %s failed: %s", claimed.recording_id, claimed.provider_id, outcome.error
            )
        elif outcome.kind == "released":
            await db.run(upload_runs.release, claimed.item_id, claimed.epoch, outcome.error or None)
            if outcome.error:
                log.info("upload of recording %s to %s stopped: %s", claimed.recording_id, claimed.provider_id, outcome.error)
        for event in events:
            self.hub.events.publish(event.type, event.site, event.data)

    def _upload_blocking(self, active: ActiveUpload, spec: ProviderSpec, loop: asyncio.AbstractEventLoop) -> Outcome:
        """On an upload thread: stream the stored file to the provider, persisting progress as parts land."""
        claimed = active.claimed

        def cancelled() -> bool:
            if self._stopping.is_set() or self.paused or active.stale or active.window_closed:
                return True
            window = claimed.window
            now = time.monotonic()
            if window is not None and now - active.window_checked >= WINDOW_CHECK_S:
                active.window_checked = now
                if not window.is_open(datetime.now(UTC)):
                    active.window_closed = f"outside the window {window.describe()}"
            return active.window_closed is not None

        if not claimed.remote_key:
            return Outcome("failed", error="config: the item has no remote key", retryable=False)
        if not claimed.storage_key:
            return Outcome("failed", error="read: the recording is not on the hub")
        storage = self.hub.storage
        storage_key = claimed.storage_key
        writer = ProgressWriter(self.hub, active, loop)
        last = Written(time.monotonic(), claimed.resume)

        def on_progress(bytes_sent: int, resume: dict[str, Any]) -> None:
            # Called on the provider's thread between parts: never wait here for the database.
            self._throughput.add(bytes_sent - active.bytes_sent)
            active.bytes_sent = bytes_sent
            now = time.monotonic()
            if resume == last.resume and now - last.at < PROGRESS_EVERY_S and bytes_sent < claimed.size:
                return
            last.at, last.resume = now, resume
            writer.submit(bytes_sent, resume)

        throttle = throttle_for(
            (
                self._provider_limits.get(spec.id, spec.rate_limit_bps),
                self._policy_caps.get(claimed.policy_id, claimed.bandwidth_cap_bps) if claimed.policy_id else None,
            ),
            cancelled,
        )
        try:
            provider = open_provider(spec)
        except ProviderError as err:
            return Outcome("failed", error=f"{err.step}: {err.message}", retryable=err.retryable)
        try:
            result = provider.upload(
                key=claimed.remote_key,
                size=claimed.size,
                sha256=claimed.sha256,
                open_at=lambda offset: storage.open(storage_key, offset),
                resume=claimed.resume,
                on_progress=on_progress,
                throttle=throttle,
                cancelled=cancelled,
            )
        except ProviderError as err:
            if active.stale:
                return Outcome("stale")
            if cancelled():
                return Outcome("released")
            return Outcome(
                "failed", error=f"{err.step}: {err.message}", retryable=err.retryable, keep_resume=err.step != "verify"
            )
        except Exception as err:  # noqa: BLE001 - a provider bug or a storage error: failed, tried again later
            if active.stale:
                return Outcome("stale")
            if cancelled():
                return Outcome("released", error=active.window_closed or "")
            log.exception("upload of item %s raised", claimed.item_id)
            return Outcome("failed", error=f"{type(err).__name__}: {err}")
        finally:
            try:
                provider.close()
            except Exception:  # noqa: BLE001 - closing a client must not hide the outcome
                log.warning("closing provider %s failed", spec.id, exc_info=True)
        if active.stale:
            return Outcome("stale")
        return Outcome("synced", result=result)


def _eta(left: int, bps: float) -> int | None:
    """Seconds to send `left` bytes at `bps`: 0 with nothing left, None when nothing is moving."""
    if not left:
        return 0
    return round(left / bps) if bps > 0 else None


def _finish_failed(item_id: str, epoch: int, error: str, retryable: bool, base_s: float, keep_resume: bool) -> list[FleetEvent]:
    return upload_runs.finish_failed(item_id, epoch, error, retryable, None, base_s=base_s, keep_resume=keep_resume)
