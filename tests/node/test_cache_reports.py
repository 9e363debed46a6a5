"""The node cache keeps recordings under legal hold, and tells the hub of what it evicted without losing any report.

The reporter talks to a real `hark-hub`; while the hub is stopped the evictions wait on disk (surviving a new
`CacheDirectory`, as after a node restart) and go up once it is back.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from hark_fleet.audio.capture import RingBuffer
from hark_fleet.node.cache_reports import EvictionReporter
from hark_fleet.node.hub_client import HubClient
from hark_fleet.node.recorder import CacheDirectory, CachedRecording, CachePolicy, DiskSpace, Recorder, plan_cache

from tests.harness import HubProcess, running_hub, wait_for
from tests.hub.api.test_recording_upload import Take, completed_recording
from tests.node.recorder.conftest import RATE, Feeder, profile, ramp

GB = 1_000_000_000
NOW = 1_750_000_000.0
DAY = 86_400.0
POLICY = CachePolicy.from_config({"min_free_pct": 10, "keep_after_upload_s": 3600, "max_bytes": None})


def test_recordings_under_legal_hold_are_never_evicted_even_when_space_is_short() -> None:
    recordings = [CachedRecording("held", "uploaded", 3 * GB, NOW - 9 * DAY), CachedRecording("free", "uploaded", GB, NOW - DAY)]
    decision = plan_cache(POLICY, recordings, DiskSpace(2 * GB, 100 * GB), NOW, held=frozenset({"held"}))
    assert decision.evict == ("free",)
    assert not decision.accept_jobs  # evicting all it may still leaves too little: new jobs wait, the held one stays
    assert plan_cache(POLICY, recordings, DiskSpace(2 * GB, 100 * GB), NOW).evict == ("held", "free")


def recorded(cache: CacheDirectory, recording_ids: list[str], uploaded_at: float) -> None:
    ring = RingBuffer(1, RATE, seconds=10)
    for rid in recording_ids:
        recorder = Recorder(rid, cache.path_for(rid), RATE, 1, profile(), duration_s=0.2)
        recorder.start(ring)
        Feeder(ring, ramp(1)).write(RATE // 2)
        assert recorder.wait(10)
        recorder.join(5)
        cache.mark_uploaded(rid, at=uploaded_at)


def copies_node_state(hub: HubProcess, recording_id: str) -> str:
    with hub.admin() as admin:
        state: str = admin.get(f"/api/v1/recordings/{recording_id}/copies").json()["data"]["node"]["state"]
        return state


async def report_until_empty(reporter: EvictionReporter, cache: CacheDirectory) -> None:
    stop = asyncio.Event()
    task = asyncio.create_task(reporter.run(stop))
    try:
        for _ in range(400):
            if not cache.evictions_pending():
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"evictions still pending: {cache.evictions_pending()}")
    finally:
        stop.set()
        await task
        reporter.hub.close()  # on its loop


def test_evictions_wait_on_disk_while_the_hub_is_away_and_reach_it_when_it_is_back(tmp_path: Path, no_thread_leak: None) -> None:
    with running_hub(tmp_path / "hub") as hub:
        take, _ = completed_recording(hub, seconds=0.3)
        held, _ = completed_recording(hub, node=(take.node_id, take.credential), seconds=0.3)
        hub.stop()  # the hub goes away before the node's cache evicts
        cache = CacheDirectory(tmp_path / "cache")
        recorded(cache, [take.recording_id, held.recording_id], uploaded_at=NOW - 2 * DAY)
        cache.held = frozenset({held.recording_id})
        decision = cache.apply(POLICY, now=NOW)
        assert decision.evict == (take.recording_id,) and cache.path_for(held.recording_id).exists()
        assert cache.evictions_pending() == [take.recording_id]
        reporter = EvictionReporter(cache, HubClient(hub.url, take.node_id, take.credential))
        assert asyncio.run(asyncio.wait_for(_one_report(reporter, [take.recording_id]), 20))  # unreachable: kept
        restarted = CacheDirectory(tmp_path / "cache")  # as after a node restart
        assert restarted.evictions_pending() == [take.recording_id]
        hub.start()
        reporter = EvictionReporter(restarted, HubClient(hub.url, take.node_id, take.credential))
        asyncio.run(report_until_empty(reporter, restarted))
        assert not restarted.evictions_file.exists()
        assert copies_node_state(hub, take.recording_id) == "evicted"
        assert copies_node_state(hub, held.recording_id) == "present"


async def _one_report(reporter: EvictionReporter, ids: list[str]) -> bool:
    """One report attempt; True when it failed (the hub could not be reached)."""
    try:
        await reporter.report(ids)
    except Exception:  # noqa: BLE001 - the node's HubUnreachable
        return True
    finally:
        reporter.hub.close()
    return False


def test_a_report_the_hub_took_is_not_sent_again(tmp_path: Path, hub: HubProcess, no_thread_leak: None) -> None:
    take: Take = completed_recording(hub, seconds=0.3)[0]
    cache = CacheDirectory(tmp_path / "cache")
    recorded(cache, [take.recording_id], uploaded_at=NOW - 2 * DAY)
    cache.apply(POLICY, now=NOW)
    asyncio.run(report_until_empty(EvictionReporter(cache, HubClient(hub.url, take.node_id, take.credential)), cache))
    wait_for(lambda: copies_node_state(hub, take.recording_id) == "evicted", 10, "the node copy shown evicted")
    assert cache.evictions_pending() == [] and not cache.evictions_file.exists()


def test_the_retention_floor_for_nodes_holds_free_space_in_bytes() -> None:
    recordings = [CachedRecording("a", "uploaded", 5 * GB, NOW - 60), CachedRecording("b", "uploaded", 5 * GB, NOW - 30)]
    disk = DiskSpace(12 * GB, 100 * GB)  # 1 % of the disk is 1 GB: only the floor in bytes asks for more
    enough = CachePolicy.from_config({"min_free_pct": 1, "keep_after_upload_s": 3600, "min_free_bytes": 20 * GB})
    decision = plan_cache(enough, recordings, disk, NOW)
    assert decision.evict == ("a", "b") and decision.accept_jobs  # 12 + 5 + 5 = 22 GB free
    short = CachePolicy.from_config({"min_free_pct": 1, "keep_after_upload_s": 3600, "min_free_bytes": 25 * GB})
    refused = plan_cache(short, recordings, disk, NOW)
    assert refused.evict == ("a", "b") and not refused.accept_jobs
    assert any(f"under {25 * GB} B" in reason for reason in refused.reasons)
