"""Fixtures of the schedule runner tests: a real synthetic capture, the real cache and recorder, a fake hub client.

The fake client plays the hub's agent routes (sync, heartbeat, upload, failed, missed) in memory and raises
HubUnreachable for every call while `reachable` is False, so a test can take the hub away and bring it back.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from hark_fleet.audio.capture import CaptureSupervisor, ring_for_source
from hark_fleet.audio.source import parse_audio_source
from hark_fleet.node.clock import utc_iso
from hark_fleet.node.errors import HubUnreachable
from hark_fleet.node.heartbeat import ClockStatus
from hark_fleet.node.recorder import CacheDirectory
from hark_fleet.node.recording_client import ClaimedJob, ScheduledSync, file_sha256
from hark_fleet.node.recording_jobs import JobExecution, Recovered
from hark_fleet.node.schedule import BOOK_FILE, Book, ScheduleRunner

SOURCE = "synthetic:sine?freq=440&dbfs=-6&channels=2&rate=48000"
RATE = 48_000
PROFILE = {"format": "wav", "sample_rate": RATE, "bit_depth": 16, "segment_s": 1.0, "preroll_s": 0.0}


def scheduled_job(job_id: str, start_at: float, duration_s: float, revision: int = 1, epoch: int = 1) -> ClaimedJob:
    """A scheduled job as the sync route hands it out."""
    job = {
        "id": job_id,
        "state": "claimed",
        "lease_epoch": epoch,
        "revision": revision,
        "start_at": utc_iso(start_at),
        "end_at": utc_iso(start_at + duration_s),
        "schedule_id": "sch_1",
    }
    recording = {"id": f"rec-{job_id}", "profile": dict(PROFILE), "requested_duration_s": duration_s}
    return ClaimedJob(job, recording)


@dataclass
class FakeClient:
    """The hub's agent routes for scheduled jobs, in memory."""

    reachable: bool = True
    jobs: dict[str, ClaimedJob] = field(default_factory=dict)  # what the next sync hands out (unless held at that revision)
    withdrawn: dict[str, str] = field(default_factory=dict)
    syncs: list[list[tuple[str, int]]] = field(default_factory=list)
    beats: list[tuple[str, str, dict[str, Any] | None]] = field(default_factory=list)  # job id, state, recording fields
    uploads: dict[str, bytes] = field(default_factory=dict)  # recording id -> the file the hub received
    failed: dict[str, str] = field(default_factory=dict)
    missed_jobs: dict[str, str] = field(default_factory=dict)
    calls: int = 0

    def _call(self) -> None:
        self.calls += 1
        if not self.reachable:
            raise HubUnreachable("the hub is away (test)")

    async def sync_scheduled(self, held: list[tuple[str, int]]) -> ScheduledSync:
        self._call()
        self.syncs.append(list(held))
        holding = dict(held)
        jobs = [c for c in self.jobs.values() if holding.get(c.job_id) != int(c.job["revision"])]
        return ScheduledSync(jobs, {k: v for k, v in self.withdrawn.items() if k in holding}, 86400.0, utc_iso())

    async def heartbeat(
        self, job: ClaimedJob, state: str, progress: dict[str, Any], recording: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        self._call()
        self.beats.append((job.job_id, state, recording))
        return {}

    async def upload(self, job: ClaimedJob, path: Path, sha256: str, progress: Any = None) -> None:
        self._call()
        assert file_sha256(path) == sha256
        self.uploads[job.recording_id] = path.read_bytes()

    async def finish(self, job: ClaimedJob, outcome: str, error: str | None = None) -> None:
        self._call()
        self.failed[job.job_id] = error or outcome

    async def missed(self, job: ClaimedJob, error: str) -> None:
        self._call()
        self.missed_jobs[job.job_id] = error


@dataclass
class Node:
    """What the runner runs on: the data directory, a capturing ring, the cache and the fake hub."""

    data_dir: Path
    audio: Any
    client: FakeClient
    clock: ClockStatus

    @property
    def cache_root(self) -> Path:
        return self.data_dir / "recordings"

    @property
    def book_path(self) -> Path:
        return self.data_dir / BOOK_FILE

    def runner(self) -> tuple[ScheduleRunner, Recovered]:
        """A runner as the agent makes it (a new one for each simulated start of the agent)."""
        cache = CacheDirectory(self.cache_root)
        execution = JobExecution(cache, self.client, self.audio, self.clock, lambda: {})  # type: ignore[arg-type]
        recovered = Recovered()
        runner = ScheduleRunner(Book(self.book_path), execution, recovered, sync_s=0.2, retry_cap_s=0.2)
        return runner, recovered

    def ledger(self, recording_id: str) -> dict[str, Any]:
        import json

        return json.loads((self.cache_root / recording_id / "ledger.json").read_text())


@pytest.fixture
def node(tmp_path: Path, no_thread_leak: None) -> Iterator[Node]:
    source = parse_audio_source(SOURCE)
    ring = ring_for_source(source, seconds=5)
    supervisor = CaptureSupervisor(source, ring, lambda condition: None)
    supervisor.start()
    audio = SimpleNamespace(ring=ring, rate=source.rate, channel_map=SimpleNamespace(inputs=[0, 1]))
    try:
        deadline = time.monotonic() + 10
        while ring.frames_written < RATE // 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        yield Node(tmp_path, audio, FakeClient(), ClockStatus(offset_ms=1.5, quality="ntp"))
    finally:
        supervisor.stop()


async def until(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    """Wait (on the loop) until `predicate()` is truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


class Running:
    """A runner task with its recovery (as the ad-hoc worker runs it), stopped on exit."""

    def __init__(self, node: Node) -> None:
        self.runner, self.recovered = node.runner()
        self.node = node
        self.stop = asyncio.Event()
        self.tasks: list[asyncio.Task[Any]] = []

    async def __aenter__(self) -> ScheduleRunner:
        self.node.cache_root.mkdir(parents=True, exist_ok=True)
        self.tasks = [
            asyncio.create_task(self.recovered.run(self.node.cache_root)),
            asyncio.create_task(self.runner.run(self.stop)),
        ]
        await until(lambda: self.runner._loaded.is_set() or any(t.done() for t in self.tasks), 20, "the runner to start")
        return self.runner

    async def __aexit__(self, *exc: object) -> None:
        self.stop.set()
        await asyncio.wait_for(asyncio.gather(*self.tasks), 30)
