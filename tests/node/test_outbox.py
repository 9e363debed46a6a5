"""The outbox on a real SQLite file: order, acks, capacity eviction, and the high-level reports."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from hark_fleet.node.errors import OutboxError
from hark_fleet.node.health import outbox_level_payload
from hark_fleet.node.outbox import Outbox
from hark_fleet.node.outbox_policy import Admission, level_transition, plan_admission
from hark_fleet.node.sender import OutboxSender


def fill(outbox: Outbox, kind: str, count: int, prefix: str | None = None) -> list[str]:
    ids = []
    for _ in range(count):
        msg_id = f"{prefix or kind}-{outbox.depth}-{len(ids)}"
        assert outbox.enqueue(msg_id, f"t/{kind}", msg_id.encode(), kind, 0.0)
        ids.append(msg_id)
    return ids


def held(outbox: Outbox) -> list[str]:
    return [row.msg_id for row in outbox.after(0, 100_000)]


def test_rows_come_out_in_the_order_they_went_in(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "outbox.sqlite3", 100)
    ids = fill(outbox, "telemetry", 3) + fill(outbox, "job", 2) + fill(outbox, "health", 2)
    rows = outbox.after(0, 100)
    assert [r.msg_id for r in rows] == ids
    assert [r.seq for r in rows] == sorted(r.seq for r in rows)
    assert [r.msg_id for r in outbox.after(rows[2].seq, 2)] == ids[3:5]
    assert rows[0].payload == ids[0].encode() and rows[0].attempts == 0 and rows[0].last_sent_at is None
    outbox.close()


def test_rows_survive_a_reopen_and_keep_their_order(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite3"
    outbox = Outbox(path, 100)
    ids = fill(outbox, "telemetry", 3)
    outbox.close()
    again = Outbox(path, 100)
    ids += fill(again, "telemetry", 2, prefix="second")
    assert held(again) == ids
    assert again.depth == 5
    again.close()


def test_ack_removes_only_the_named_rows(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "outbox.sqlite3", 100)
    ids = fill(outbox, "telemetry", 5)
    assert outbox.remove([ids[1], ids[3], "never-sent"]) == 2
    assert held(outbox) == [ids[0], ids[2], ids[4]]
    assert outbox.depth == 3
    assert outbox.remove([ids[1]]) == 0  # a repeated ack is harmless
    outbox.close()


def test_enqueueing_the_same_msg_id_twice_keeps_one_row(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "outbox.sqlite3", 100)
    assert outbox.enqueue("m-1", "t", b"x", "telemetry", 0.0)
    assert outbox.enqueue("m-1", "t", b"x", "telemetry", 0.0)
    assert outbox.depth == 1
    outbox.close()


def test_mark_sent_counts_attempts(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "outbox.sqlite3", 100)
    ids = fill(outbox, "telemetry", 2)
    outbox.mark_sent([ids[0]], 100.0)
    outbox.mark_sent([ids[0]], 115.0)
    first, second = outbox.rows(ids)
    assert (first.attempts, first.last_sent_at) == (2, 115.0)
    assert (second.attempts, second.last_sent_at) == (0, None)
    outbox.close()


def test_full_outbox_drops_the_oldest_telemetry_first(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "outbox.sqlite3", 10)
    jobs = fill(outbox, "job", 3)
    health = fill(outbox, "health", 2)
    telemetry = fill(outbox, "telemetry", 5)
    newer = fill(outbox, "telemetry", 3, prefix="newer")
    assert outbox.depth == 10
    assert held(outbox) == jobs + health + telemetry[3:] + newer
    outbox.close()


def test_telemetry_never_pushes_out_jobs_and_is_refused_when_only_jobs_remain(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "outbox.sqlite3", 10)
    jobs = fill(outbox, "job", 10)
    assert not outbox.enqueue("late-heartbeat", "t", b"x", "telemetry", 0.0)
    assert not outbox.enqueue("late-health", "t", b"x", "health", 0.0)
    assert held(outbox) == jobs
    # a job row is never lost, even over capacity
    assert outbox.enqueue("job-11", "t", b"x", "job", 0.0)
    assert held(outbox) == [*jobs, "job-11"]
    outbox.close()


def test_health_may_push_out_telemetry_then_older_health_but_not_lifecycle(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "outbox.sqlite3", 4)
    lifecycle = fill(outbox, "lifecycle", 2)
    health = fill(outbox, "health", 1)
    telemetry = fill(outbox, "telemetry", 1)
    assert outbox.enqueue("h-2", "t", b"x", "health", 0.0)
    assert held(outbox) == lifecycle + health + ["h-2"]
    assert outbox.enqueue("h-3", "t", b"x", "health", 0.0)
    assert held(outbox) == [*lifecycle, "h-2", "h-3"]
    assert not outbox.enqueue("t-late", "t", b"x", "telemetry", 0.0)
    assert telemetry[0] not in held(outbox)
    outbox.close()


def test_an_unknown_kind_is_refused(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "outbox.sqlite3", 10)
    with pytest.raises(ValueError, match="unknown outbox kind"):
        outbox.enqueue("m", "t", b"x", "gossip", 0.0)
    outbox.close()


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite3"
    Outbox(path, 10).close()
    import sqlite3

    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version = 99")
    db.close()
    with pytest.raises(OutboxError, match="schema version 99"):
        Outbox(path, 10)


# -- the policy as plain functions -------------------------------------------------------


def test_admission_policy() -> None:
    assert plan_admission("telemetry", {"telemetry": 3}, 10) == Admission(True)
    assert plan_admission("telemetry", {"telemetry": 6, "job": 4}, 10) == Admission(True, {"telemetry": 1})
    assert plan_admission("telemetry", {"job": 10}, 10) == Admission(False)
    assert plan_admission("telemetry", {"lifecycle": 10}, 10) == Admission(False)
    assert plan_admission("health", {"telemetry": 1, "health": 9}, 10) == Admission(True, {"telemetry": 1})
    assert plan_admission("job", {"job": 10}, 10) == Admission(True, {}, over_capacity=True)
    assert plan_admission("job", {"lifecycle": 2, "job": 8}, 10) == Admission(True, {"lifecycle": 1})


@pytest.mark.parametrize(
    ("depth", "was_high", "expected"),
    [(8, False, None), (9, False, True), (9, True, None), (5, True, None), (4, True, False), (4, False, None)],
)
def test_level_transitions_have_hysteresis(depth: int, was_high: bool, expected: bool | None) -> None:
    assert level_transition(depth, 10, was_high) is expected


# -- the sender's level reports (no broker needed: nothing is published) ------------------


def test_high_and_resolved_reports_are_enqueued_once_each(tmp_path: Path, no_thread_leak: None) -> None:
    def report(msg_id: str, high: bool, depth: int, capacity: int) -> tuple[str, bytes]:
        return "hark/v1/nodes/n1/health", outbox_level_payload(msg_id, high, depth, capacity)

    async def scenario() -> list[dict[str, object]]:
        sender = OutboxSender(tmp_path / "outbox.sqlite3", 10, "boot", lambda t, p: False, report)
        await sender.open()
        ids = [await sender.enqueue("telemetry", "hark/v1/nodes/n1/heartbeat", lambda m: m.encode()) for _ in range(8)]
        assert sender.level.depth == 8  # 80 % is not past 80 %
        ids.append(await sender.enqueue("telemetry", "hark/v1/nodes/n1/heartbeat", lambda m: m.encode()))
        assert sender.level.depth == 10  # 9 heartbeats and the open report
        ids.append(await sender.enqueue("telemetry", "hark/v1/nodes/n1/heartbeat", lambda m: m.encode()))
        assert sender.level.depth == 10  # the oldest heartbeat made room; no second report
        await sender.ack([i for i in ids[:6] if i])  # depth 5: not below 50 % yet
        await sender.ack([ids[6] or ""])  # depth 4: resolved (and its report makes 5)
        await sender.ack([ids[7] or ""])
        assert sender.level.depth == 4
        await sender.close()
        outbox = Outbox(tmp_path / "outbox.sqlite3", 10)
        reports = [json.loads(r.payload) for r in outbox.after(0, 100) if r.kind == "health"]
        assert outbox.is_high() is False
        outbox.close()
        return reports

    reports = asyncio.run(scenario())
    assert [(r["kind"], r["state"], r["severity"]) for r in reports] == [
        ("outbox.high", "open", "warning"),
        ("outbox.high", "resolved", "warning"),
    ]
    assert reports[0]["details"] == {"depth": 9, "capacity": 10}
    assert reports[1]["details"] == {"depth": 4, "capacity": 10}
    assert all(r["msg_id"].startswith("boot-") and r["ts"].endswith("Z") for r in reports)


def test_the_high_flag_survives_a_restart(tmp_path: Path, no_thread_leak: None) -> None:
    reports: list[bool] = []

    def report(msg_id: str, high: bool, depth: int, capacity: int) -> tuple[str, bytes]:
        reports.append(high)
        return "t/health", b"{}"

    async def scenario() -> None:
        sender = OutboxSender(tmp_path / "outbox.sqlite3", 10, "boot1", lambda t, p: False, report)
        await sender.open()
        for _ in range(9):
            await sender.enqueue("telemetry", "t/hb", lambda m: b"x")
        await sender.close()
        again = OutboxSender(tmp_path / "outbox.sqlite3", 10, "boot2", lambda t, p: False, report)
        await again.open()  # still high: no second open report
        await again.close()
        smaller = OutboxSender(tmp_path / "outbox.sqlite3", 100, "boot3", lambda t, p: False, report)
        await smaller.open()  # 10 of 100 rows: resolved at once
        await smaller.close()

    asyncio.run(scenario())
    assert reports == [True, False]
