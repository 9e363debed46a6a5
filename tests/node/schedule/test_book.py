"""The book of held scheduled jobs: merging a sync answer, and surviving on disk."""

from __future__ import annotations

import json
from pathlib import Path

from hark_fleet.node.schedule.book import FAILED, HELD, MISSED, RECORDED, RECORDING, Book, HeldJob, merge

from tests.node.schedule.conftest import scheduled_job

T0 = 1_800_000_000.0


def held(job_id: str, status: str = HELD, revision: int = 1, epoch: int = 1) -> HeldJob:
    entry = HeldJob.from_claimed(scheduled_job(job_id, T0, 60, revision, epoch))
    entry.status = status
    return entry


def test_a_new_job_from_the_hub_is_held() -> None:
    entries: dict[str, HeldJob] = {}
    merged = merge(entries, [scheduled_job("job-1", T0, 60)], {})
    assert merged.added == ("job-1",) and merged.changed
    assert entries["job-1"].status == HELD and entries["job-1"].start_at == T0 and entries["job-1"].duration_s == 60


def test_a_held_job_takes_the_hubs_new_revision_whole() -> None:
    entries = {"job-1": held("job-1")}
    changed = scheduled_job("job-1", T0 + 600, 30, revision=2)
    merged = merge(entries, [changed], {})
    assert merged.updated == ("job-1",)
    assert entries["job-1"].start_at == T0 + 600 and entries["job-1"].duration_s == 30 and entries["job-1"].revision == 2


def test_a_started_take_keeps_its_plan_and_only_learns_the_new_lease() -> None:
    entries = {"job-1": held("job-1", RECORDING)}
    merge(entries, [scheduled_job("job-1", T0 + 600, 30, revision=2, epoch=5)], {})
    entry = entries["job-1"]
    assert entry.status == RECORDING and entry.start_at == T0 and entry.lease_epoch == 5 and entry.revision == 2


def test_a_withdrawn_job_is_dropped_unless_its_capture_began() -> None:
    entries = {"a": held("a"), "b": held("b", RECORDING), "c": held("c", RECORDED), "d": held("d", MISSED), "e": held("e")}
    merged = merge(entries, [], {"a": "withdrawn: deleted", "b": "withdrawn", "c": "withdrawn", "d": "the job is missed"})
    assert set(entries) == {"b", "c", "e"} and set(merged.dropped) == {"a", "d"} and set(merged.kept) == {"b", "c"}


def test_a_job_without_times_is_ignored() -> None:
    bad = scheduled_job("job-1", T0, 60)
    del bad.job["start_at"]
    entries: dict[str, HeldJob] = {}
    assert not merge(entries, [bad], {}).changed and entries == {}


def test_the_book_round_trips_through_its_file(tmp_path: Path) -> None:
    book = Book(tmp_path / "scheduled_jobs.json")
    book.entries = {"a": held("a"), "b": held("b", FAILED)}
    book.entries["b"].error = "the recording failed"
    book.write(book.snapshot())
    again = Book(book.path)
    again.load()
    assert {k: e.as_dict() for k, e in again.entries.items()} == {k: e.as_dict() for k, e in book.entries.items()}
    assert again.held_pairs() == [("a", 1), ("b", 1)]
    stored = json.loads(book.path.read_text())["jobs"][0]
    assert set(stored) == {"job", "recording", "lease_epoch", "revision", "status", "error"}


def test_a_damaged_book_is_moved_aside_and_the_node_starts_empty(tmp_path: Path) -> None:
    path = tmp_path / "scheduled_jobs.json"
    path.write_text('{"version": 1, "jobs": [{"job": ')
    book = Book(path)
    book.load()
    assert book.entries == {} and not path.exists() and (tmp_path / "scheduled_jobs.json.damaged").exists()


def test_a_temp_file_left_by_a_crash_mid_write_is_removed_and_the_old_book_stands(tmp_path: Path) -> None:
    book = Book(tmp_path / "scheduled_jobs.json")
    book.entries = {"a": held("a")}
    book.write(book.snapshot())
    (tmp_path / ".scheduled_jobs.json.x1y2.tmp").write_text("half a book")
    again = Book(book.path)
    again.load()
    assert list(again.entries) == ["a"] and sorted(p.name for p in tmp_path.iterdir()) == ["scheduled_jobs.json"]


def test_an_entry_with_an_unknown_status_damages_the_book(tmp_path: Path) -> None:
    entry = held("a").as_dict()
    entry["status"] = "bogus"
    path = tmp_path / "scheduled_jobs.json"
    path.write_text(json.dumps({"version": 1, "jobs": [entry]}))
    book = Book(path)
    book.load()
    assert book.entries == {} and (tmp_path / "scheduled_jobs.json.damaged").exists()
