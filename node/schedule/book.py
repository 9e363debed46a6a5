"""The book: every scheduled job this node holds, on disk (`scheduled_jobs.json` in the data directory).

An entry is `{job, recording, lease_epoch, revision, status, error}`; its status moves
held -> recording -> recorded -> (delivered: dropped from the book), or held -> missed / failed
(dropped once the hub has heard it). The file is replaced atomically on every change, so a node that
dies at any point finds either the old book or the new one. `merge` (pure) applies a sync answer.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hark_fleet.node.clock import parse_utc
from hark_fleet.node.recording_client import ClaimedJob
from hark_fleet.protocol.atomic_file import remove_stale_temps, write_atomic

log = logging.getLogger(__name__)

BOOK_FILE = "scheduled_jobs.json"
BOOK_VERSION = 1

HELD = "held"  # waiting for its start
RECORDING = "recording"  # the recorder was (about to be) started: never started again
RECORDED = "recorded"  # finalized in the cache: to be delivered
DELIVERED = "delivered"  # the hub holds the file (dropped from the book)
MISSED = "missed"  # not recorded (off through the occurrence, profile does not fit): to be reported
FAILED = "failed"  # the take failed on the node: to be reported
STATUSES = (HELD, RECORDING, RECORDED, DELIVERED, MISSED, FAILED)
STARTED = (RECORDING, RECORDED, DELIVERED)  # capture began: a withdrawal no longer applies


@dataclass(slots=True)
class HeldJob:
    """One scheduled job as the hub handed it (`job`, `recording`) and where this node is with it."""

    job: dict[str, Any]
    recording: dict[str, Any]
    status: str = HELD
    error: str | None = None

    @classmethod
    def from_claimed(cls, claimed: ClaimedJob) -> HeldJob:
        """A new held job from a sync answer; ValueError when it has no usable id, lease, start or end."""
        entry = cls(dict(claimed.job), dict(claimed.recording))
        entry.check()
        return entry

    def check(self) -> None:
        """ValueError unless the job has an id, a recording id, a lease epoch and start_at < end_at."""
        if not self.job.get("id") or not self.recording.get("id"):
            raise ValueError("a scheduled job needs its id and its recording's id")
        int(self.job["lease_epoch"])
        if not self.start_at < self.end_at:
            raise ValueError(f"job {self.job_id}: start_at must come before end_at")
        if self.status not in STATUSES:
            raise ValueError(f"job {self.job_id}: unknown status {self.status!r}")

    @property
    def job_id(self) -> str:
        return str(self.job["id"])

    @property
    def recording_id(self) -> str:
        return str(self.recording["id"])

    @property
    def revision(self) -> int:
        return int(self.job.get("revision") or 0)

    @property
    def lease_epoch(self) -> int:
        return int(self.job["lease_epoch"])

    @property
    def start_at(self) -> float:
        return parse_utc(str(self.job["start_at"]))

    @property
    def end_at(self) -> float:
        return parse_utc(str(self.job["end_at"]))

    @property
    def duration_s(self) -> float:
        """Elapsed seconds from start to end (a late take records until `end_at`)."""
        return self.end_at - self.start_at

    def claimed(self) -> ClaimedJob:
        """The job as the recording client and the job execution take it."""
        return ClaimedJob(self.job, self.recording)

    def as_dict(self) -> dict[str, Any]:
        return {
            "job": self.job,
            "recording": self.recording,
            "lease_epoch": self.lease_epoch,
            "revision": self.revision,
            "status": self.status,
            "error": self.error,
        }

    @classmethod
    def from_dict(cls, body: dict[str, Any]) -> HeldJob:
        entry = cls(dict(body["job"]), dict(body["recording"]), str(body.get("status") or HELD), body.get("error"))
        entry.check()
        return entry


@dataclass(frozen=True, slots=True)
class Merged:
    """What a sync changed: job ids added or updated, dropped (withdrawn), and withdrawals ignored (capture began)."""

    added: tuple[str, ...] = ()
    updated: tuple[str, ...] = ()
    dropped: tuple[str, ...] = ()
    kept: tuple[str, ...] = ()

    @property
    def changed(self) -> bool:
        return bool(self.added or self.updated or self.dropped)


def merge(entries: dict[str, HeldJob], jobs: Iterable[ClaimedJob], withdrawn: dict[str, str]) -> Merged:
    """Apply a sync answer to `entries` in place (pure otherwise).

    A new job is held; a job held and not started takes the hub's new revision whole (times, profile, lease);
    one whose capture began keeps its take and only learns the new lease epoch and revision. A withdrawn job is
    dropped unless its capture began (then it is finished and delivered: the hub never withdraws those); a
    missed or failed one the hub has ended is dropped too.
    """
    added: list[str] = []
    updated: list[str] = []
    dropped: list[str] = []
    kept: list[str] = []
    for claimed in jobs:
        try:
            fresh = HeldJob.from_claimed(claimed)
        except (KeyError, TypeError, ValueError) as err:
            log.error("scheduled job from the hub ignored: %s", err)
            continue
        known = entries.get(fresh.job_id)
        if known is None:
            entries[fresh.job_id] = fresh
            added.append(fresh.job_id)
        elif known.status == HELD:
            known.job, known.recording = fresh.job, fresh.recording
            updated.append(fresh.job_id)
        elif known.lease_epoch != fresh.lease_epoch or known.revision != fresh.revision:
            known.job = {**known.job, "lease_epoch": fresh.lease_epoch, "revision": fresh.revision}
            updated.append(fresh.job_id)
    for job_id, reason in withdrawn.items():
        known = entries.get(job_id)
        if known is None:
            continue
        if known.status in STARTED:
            kept.append(job_id)
            log.warning("job %s withdrawn (%s) after its capture began: finishing and delivering it", job_id, reason)
            continue
        log.info("job %s withdrawn by the hub: %s", job_id, reason)
        del entries[job_id]
        dropped.append(job_id)
    return Merged(tuple(added), tuple(updated), tuple(dropped), tuple(kept))


class Book:
    """The held jobs by job id, loaded from and saved to one JSON file (blocking I/O: call from an executor)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.entries: dict[str, HeldJob] = {}

    def load(self) -> None:
        """Read the book; a damaged one is moved aside (logged) and the node starts with none."""
        remove_stale_temps(self.path)
        self.entries = {}
        if not self.path.exists():
            return
        try:
            body = json.loads(self.path.read_bytes())
            items = body["jobs"]
            for item in items:
                entry = HeldJob.from_dict(item)
                self.entries[entry.job_id] = entry
        except (OSError, ValueError, KeyError, TypeError) as err:
            aside = self.path.with_name(f"{self.path.name}.damaged")
            log.error("the book of scheduled jobs is damaged (%s): moved to %s; the next sync fills it again", err, aside)
            os.replace(self.path, aside)
            self.entries = {}

    def snapshot(self) -> bytes:
        """The book as it is now, encoded (taken on the loop, written by `write`)."""
        body = {"version": BOOK_VERSION, "jobs": [entry.as_dict() for entry in self.entries.values()]}
        return json.dumps(body, indent=1, sort_keys=True).encode("utf-8")

    def write(self, data: bytes) -> None:
        """Replace the file atomically with `data` (a snapshot)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(self.path, data)

    def held_pairs(self) -> list[tuple[str, int]]:
        """(job id, revision) of every entry: what a sync tells the hub this node holds."""
        return [(entry.job_id, entry.revision) for entry in self.entries.values()]
