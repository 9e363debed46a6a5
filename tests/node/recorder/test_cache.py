"""Cache policy: pure eviction and admission decisions, and the directory that applies them."""

from __future__ import annotations

from pathlib import Path

import pytest
from hark_fleet.audio.capture import RingBuffer
from hark_fleet.node.recorder import (
    CacheDirectory,
    CachedRecording,
    CachePolicy,
    CachePolicyError,
    DiskSpace,
    Recorder,
    RecorderError,
    plan_cache,
)

from tests.node.recorder.conftest import RATE, Feeder, profile, ramp

GB = 1_000_000_000
NOW = 1_750_000_000.0
DAY = 86_400.0
POLICY = CachePolicy.from_config({"min_free_pct": 10, "keep_after_upload_s": 604800, "max_bytes": None})


def item(rid: str, state: str, size: int, uploaded_days_ago: float | None = None) -> CachedRecording:
    return CachedRecording(rid, state, size, None if uploaded_days_ago is None else NOW - uploaded_days_ago * DAY)


def test_uploaded_recordings_are_evicted_once_kept_long_enough() -> None:
    recordings = [item("old", "uploaded", GB, 8), item("fresh", "uploaded", GB, 1), item("waiting", "finalized", GB)]
    decision = plan_cache(POLICY, recordings, DiskSpace(50 * GB, 100 * GB), NOW)
    assert decision.evict == ("old",) and decision.accept_jobs and not decision.stop_recording
    assert decision.free_bytes_after == 51 * GB


def test_low_space_evicts_uploaded_recordings_oldest_upload_first_until_above_min_free() -> None:
    recordings = [item("b", "uploaded", 3 * GB, 2), item("a", "uploaded", 3 * GB, 3), item("c", "uploaded", 3 * GB, 1)]
    decision = plan_cache(POLICY, recordings, DiskSpace(5 * GB, 100 * GB), NOW)
    assert decision.evict == ("a", "b") and decision.free_bytes_after == 11 * GB and decision.accept_jobs


def test_recordings_the_hub_has_not_confirmed_are_never_evicted_even_when_the_disk_is_nearly_full() -> None:
    recordings = [item(f"r{i}", state, 10 * GB) for i, state in enumerate(["recording", "finalized", "failed", "finalized"])]
    decision = plan_cache(POLICY, recordings, DiskSpace(GB // 2, 100 * GB), NOW)
    assert decision.evict == ()
    assert not decision.accept_jobs and not decision.stop_recording  # 500 MB free: over the 200 MB floor
    assert any("under 10%" in reason for reason in decision.reasons)


def test_new_jobs_are_refused_when_evicting_everything_allowed_still_leaves_too_little_space() -> None:
    recordings = [item("done", "uploaded", 2 * GB, 0.5), item("pending", "finalized", 40 * GB)]
    decision = plan_cache(POLICY, recordings, DiskSpace(5 * GB, 100 * GB), NOW)
    assert decision.evict == ("done",) and decision.free_bytes_after == 7 * GB and not decision.accept_jobs


def test_running_recordings_must_stop_below_the_hard_floor() -> None:
    big = DiskSpace(150 * 1024 * 1024, 100 * GB)  # 150 MB free of 100 GB: under the 200 MB floor
    assert plan_cache(POLICY, [], big, NOW).stop_recording
    small = DiskSpace(90_000, 8 * 1024 * 1024)  # 8 MB disk: the floor is 1 % (83886 B)
    assert not plan_cache(POLICY, [], small, NOW).stop_recording
    assert plan_cache(POLICY, [], DiskSpace(80_000, 8 * 1024 * 1024), NOW).stop_recording
    rescued = plan_cache(POLICY, [item("u", "uploaded", GB, 0.1)], big, NOW)
    assert rescued.evict == ("u",) and not rescued.stop_recording


def test_max_bytes_caps_the_cache_with_uploaded_recordings_only() -> None:
    policy = CachePolicy.from_config({"min_free_pct": 10, "keep_after_upload_s": 604800, "max_bytes": 5 * GB})
    recordings = [item("u1", "uploaded", 2 * GB, 3), item("u2", "uploaded", 2 * GB, 2), item("f", "finalized", 2 * GB)]
    decision = plan_cache(policy, recordings, DiskSpace(50 * GB, 100 * GB), NOW)
    assert decision.evict == ("u1",) and decision.accept_jobs
    full = plan_cache(
        policy, [item("f1", "finalized", 3 * GB), item("f2", "finalized", 3 * GB)], DiskSpace(50 * GB, 100 * GB), NOW
    )
    assert full.evict == () and not full.accept_jobs and not full.stop_recording


def test_a_policy_with_an_unknown_or_bad_key_is_refused_naming_the_key() -> None:
    with pytest.raises(CachePolicyError, match=r"cache\.min_free: unknown key"):
        CachePolicy.from_config({"min_free": 10})
    with pytest.raises(CachePolicyError, match=r"cache\.max_bytes"):
        CachePolicy.from_config({"max_bytes": "lots"})
    with pytest.raises(CachePolicyError, match=r"cache\.min_free_pct"):
        CachePolicy.from_config({"min_free_pct": 150})


def test_the_cache_directory_lists_marks_and_deletes_only_confirmed_recordings(tmp_path: Path, no_thread_leak: None) -> None:
    ring = RingBuffer(1, RATE, seconds=10)
    cache = CacheDirectory(tmp_path / "cache")
    for rid in ("rec-a", "rec-b"):
        recorder = Recorder(rid, cache.path_for(rid), RATE, 1, profile(), duration_s=0.5)
        recorder.start(ring)
        Feeder(ring, ramp(1)).write(RATE)
        assert recorder.wait(10)
        recorder.join(5)
    cache.mark_uploaded("rec-a", at=NOW - 8 * DAY)
    listed = {r.recording_id: r for r in cache.recordings()}
    assert listed["rec-a"].state == "uploaded" and listed["rec-a"].uploaded_at == pytest.approx(NOW - 8 * DAY, abs=0.001)
    assert listed["rec-b"].state == "finalized" and listed["rec-b"].size_bytes > RATE  # 0.5 s of 16-bit mono and the JSON files
    with pytest.raises(RecorderError, match="not confirmed uploaded"):
        cache.delete("rec-b")
    with pytest.raises(RecorderError, match="cannot name"):
        cache.path_for("../etc")
    decision = cache.apply(POLICY, now=NOW)
    assert decision.evict == ("rec-a",) and not cache.path_for("rec-a").exists() and cache.path_for("rec-b").exists()
    assert [r.recording_id for r in cache.recordings()] == ["rec-b"]
