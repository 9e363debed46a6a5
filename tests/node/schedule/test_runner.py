"""The schedule runner on a real synthetic capture, the real recorder and cache, and a fake hub client.

Start accuracy is the product's requirement (first sample within 50 ms of the plan by the node's clock:
the ledger's `start_error_ms`), so asserting |start_error_ms| <= 50 is not a timing-of-the-test assertion.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from hark_fleet.node.clock import utc_iso
from hark_fleet.node.schedule.book import HELD, RECORDED, RECORDING, HeldJob

from tests.node.schedule.conftest import Node, Running, scheduled_job, until


def write_book(node: Node, *entries: HeldJob) -> None:
    node.book_path.parent.mkdir(parents=True, exist_ok=True)
    node.book_path.write_text(json.dumps({"version": 1, "jobs": [e.as_dict() for e in entries]}))


def book_statuses(node: Node) -> dict[str, str]:
    if not node.book_path.exists():
        return {}
    return {e["job"]["id"]: e["status"] for e in json.loads(node.book_path.read_text())["jobs"]}


def test_a_synced_job_is_recorded_on_time_and_delivered(node: Node) -> None:
    async def scenario() -> None:
        plan = time.time() + 1.0
        node.client.jobs["job-1"] = scheduled_job("job-1", plan, 0.5)
        async with Running(node):
            await until(lambda: "rec-job-1" in node.client.uploads, 30, "the upload")
            await until(lambda: not book_statuses(node), 10, "the book to be empty")
        ledger = node.ledger("rec-job-1")
        assert abs(ledger["start_error_ms"]) <= 50 and ledger["late_s"] == 0.0  # the product's accuracy requirement
        assert ledger["scheduled_start"] == utc_iso(plan) and ledger["time_quality"] == "ntp" and ledger["clock_offset_ms"] == 1.5
        assert ledger["frames_written"] == 24_000
        ended = [fields for job_id, state, fields in node.client.beats if state == "uploading" and fields]
        assert ended and ended[0]["scheduled_start_at"] == utc_iso(plan) and "late_s" not in ended[0]  # on time

    asyncio.run(scenario())


def test_a_held_job_starts_while_the_hub_is_unreachable_and_is_delivered_when_it_returns(node: Node) -> None:
    async def scenario() -> None:
        plan = time.time() + 1.0
        write_book(node, HeldJob.from_claimed(scheduled_job("job-1", plan, 0.5)))
        node.client.reachable = False  # every call raises HubUnreachable
        async with Running(node):
            await until(lambda: book_statuses(node).get("job-1") == RECORDED, 30, "the take to be recorded")
            assert node.client.uploads == {} and node.client.calls > 0
            ledger = node.ledger("rec-job-1")
            assert abs(ledger["start_error_ms"]) <= 50 and ledger["state"] == "finalized"
            node.client.reachable = True
            await until(lambda: "rec-job-1" in node.client.uploads, 60, "the upload once the hub is back")
            await until(lambda: not book_statuses(node), 10, "the book to be empty")
        assert json.loads((node.cache_root / "rec-job-1" / "manifest.json").read_text())["state"] == "uploaded"

    asyncio.run(scenario())


def test_a_withdrawn_job_is_dropped_and_never_recorded(node: Node) -> None:
    async def scenario() -> None:
        plan = time.time() + 1.5
        node.client.jobs["job-1"] = scheduled_job("job-1", plan, 0.3)
        async with Running(node) as runner:
            await until(lambda: book_statuses(node).get("job-1") == HELD, 10, "the job to be held")
            del node.client.jobs["job-1"]
            node.client.withdrawn["job-1"] = "withdrawn: the schedule was deleted"
            runner.nudge()
            await until(lambda: "job-1" not in book_statuses(node), 10, "the job to be dropped")
            await until(lambda: time.time() > plan + 0.6, 10, "the occurrence to be over")
        assert not (node.cache_root / "rec-job-1").exists() and node.client.uploads == {} and node.client.missed_jobs == {}

    asyncio.run(scenario())


def test_a_job_whose_occurrence_passed_while_the_node_was_off_is_reported_missed(node: Node) -> None:
    async def scenario() -> None:
        write_book(node, HeldJob.from_claimed(scheduled_job("job-1", time.time() - 60, 30)))
        async with Running(node):
            await until(lambda: "job-1" in node.client.missed_jobs, 10, "the missed report")
            await until(lambda: not book_statuses(node), 10, "the book to be empty")
        assert "the node was not running" in node.client.missed_jobs["job-1"]
        assert not (node.cache_root / "rec-job-1").exists()

    asyncio.run(scenario())


def test_a_node_booted_mid_occurrence_records_the_rest_marked_late(node: Node) -> None:
    async def scenario() -> None:
        plan = time.time() - 20  # the ring holds 5 s: the plan is out of its reach
        write_book(node, HeldJob.from_claimed(scheduled_job("job-1", plan, 21)))
        async with Running(node):
            await until(lambda: "rec-job-1" in node.client.uploads, 30, "the upload")
        ledger = node.ledger("rec-job-1")
        assert ledger["late_s"] > 15 and abs(ledger["start_error_ms"] - ledger["late_s"] * 1000) <= 1
        ended_at = plan + 21
        assert abs(ledger["frames_written"] / 48_000 - (ended_at - (plan + ledger["late_s"]))) < 0.01  # until the end
        fields = [f for _, state, f in node.client.beats if state == "uploading" and f][0]
        assert fields["late_s"] == ledger["late_s"]

    asyncio.run(scenario())


def test_two_overlapping_jobs_record_at_once_from_the_one_ring(node: Node) -> None:
    async def scenario() -> None:
        plan = time.time() + 1.0
        node.client.jobs["job-a"] = scheduled_job("job-a", plan, 1.0)
        node.client.jobs["job-b"] = scheduled_job("job-b", plan + 0.5, 1.0)
        async with Running(node) as runner:
            await until(lambda: len(runner.active) == 2, 20, "both takes running at once")
            await until(lambda: {"rec-job-a", "rec-job-b"} <= set(node.client.uploads), 30, "both uploads")
        for rid in ("rec-job-a", "rec-job-b"):
            ledger = node.ledger(rid)
            assert abs(ledger["start_error_ms"]) <= 50 and ledger["frames_written"] == 48_000 and ledger["lost_frames"] == 0

    asyncio.run(scenario())


def test_an_agent_stopped_mid_take_delivers_it_after_the_restart_without_recording_again(node: Node) -> None:
    async def scenario() -> None:
        plan = time.time() + 0.5
        node.client.jobs["job-1"] = scheduled_job("job-1", plan, 30)
        async with Running(node) as runner:
            await until(lambda: runner.active.get("job-1") and runner.active["job-1"].progress().seconds > 0.5, 20, "audio")
            node.client.reachable = False
        assert book_statuses(node) == {"job-1": RECORDED}
        assert json.loads((node.cache_root / "rec-job-1" / "ledger.json").read_text())["stop_reason"] == "interrupted"
        node.client.reachable = True
        async with Running(node) as runner:
            await until(lambda: "rec-job-1" in node.client.uploads, 30, "the upload after the restart")
            assert runner.active == {}
        assert not book_statuses(node)

    asyncio.run(scenario())


def test_a_node_killed_mid_take_delivers_the_interrupted_take_after_the_restart(node: Node) -> None:
    """The take is cut by kill -9 (the recorder driver subprocess); the restarted node recovers and delivers it once."""
    node.cache_root.mkdir(parents=True, exist_ok=True)
    driver = subprocess.Popen(
        [sys.executable, "-m", "tests.node.recorder.driver", str(node.cache_root), "wav"],
        stdout=subprocess.PIPE,
        cwd=Path(__file__).resolve().parents[3],
    )
    try:
        assert driver.stdout is not None
        for line in driver.stdout:
            if json.loads(line).get("frames", 0) > 48_000:
                break
    finally:
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait(10)
    entry = HeldJob.from_claimed(scheduled_job("job-1", time.time() - 5, 3600))
    entry.recording["id"] = "rec-1"  # the driver's recording
    entry.status = RECORDING
    write_book(node, entry)

    async def scenario() -> None:
        async with Running(node) as runner:
            await until(lambda: "rec-1" in node.client.uploads, 30, "the interrupted take's upload")
            assert runner.active == {}
        ended = [f for _, state, f in node.client.beats if state == "uploading" and f][0]
        assert ended["interrupted"] is True
        assert not book_statuses(node) and node.client.missed_jobs == {} and node.client.failed == {}

    asyncio.run(scenario())
