"""A node's upload of a recording's file: which recording and job it targets, and what completing it changes.

Plain functions on a database worker; the bytes themselves go through `hub.storage`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from hark_fleet.hub.clock import utcnow
from hark_fleet.hub.db.models import Recording, RecordingJob, database_proxy
from hark_fleet.hub.errors import Conflict, InvalidRequest, NotFound
from hark_fleet.hub.events import FleetEvent
from hark_fleet.hub.services import query, upload_queue
from hark_fleet.hub.services.audit import Actor, record
from hark_fleet.hub.services.recordings import JOB_ACTIVE, recording_to_api

PERMISSION = "node:control"
STORED = ("completed", "interrupted")  # statuses whose file is in storage
MAX_CHUNK_BYTES = 4 * 1024**3
_CONTENT_RANGE = re.compile(r"^bytes (\d{1,18})-(\d{1,18})/(\d{1,18})$")
_SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")


@dataclass(frozen=True, slots=True)
class UploadTarget:
    """What an upload needs to know about its recording and the recording's latest job."""

    recording_id: str
    node_id: str
    site: str | None
    format: str
    status: str
    size_bytes: int | None
    sha256: str | None
    storage_key: str | None
    job_id: str | None
    job_state: str | None
    lease_epoch: int | None

    @property
    def stored(self) -> bool:
        """The upload already completed: the file is in storage."""
        return self.status in STORED and self.storage_key is not None and self.sha256 is not None


@dataclass(frozen=True, slots=True)
class ChunkHeaders:
    """A `PUT .../cache-file` request's headers, checked."""

    start: int
    end: int  # inclusive
    total: int
    sha256: str
    lease_epoch: int

    @property
    def length(self) -> int:
        return self.end - self.start + 1

    @property
    def final(self) -> bool:
        return self.end + 1 == self.total


def parse_chunk_headers(
    content_range: str | None, sha256: str | None, lease_epoch: str | None, content_length: str | None
) -> ChunkHeaders:
    """Check the upload headers; every problem is named in one 400."""
    problems: dict[str, str] = {}
    start = end = total = epoch = 0
    match = _CONTENT_RANGE.match((content_range or "").strip())
    if (content_range or "").strip() == "bytes */0" and content_length == "0":
        match, start, end = None, 0, -1  # an empty file: one empty, final chunk
    elif content_range is None:
        problems["Content-Range"] = "is required: bytes <first>-<last>/<total>"
    elif match is None:
        problems["Content-Range"] = "must be bytes <first>-<last>/<total> (e.g. bytes 0-1048575/5000000)"
    else:
        start, end, total = (int(g) for g in match.groups())
        if start > end:
            problems["Content-Range"] = "the first byte is after the last"
        elif end >= total:
            problems["Content-Range"] = "the last byte must be before the total"
        elif end - start + 1 > MAX_CHUNK_BYTES:
            problems["Content-Range"] = f"a chunk is at most {MAX_CHUNK_BYTES} bytes"
    digest = (sha256 or "").strip()
    if not _SHA256.match(digest):
        problems["X-Content-SHA256"] = "is required: the hex sha256 of the whole file (64 characters)"
    try:
        epoch = query.integer((lease_epoch or "").strip(), 0)
    except ValueError:
        problems["X-Lease-Epoch"] = "is required: the job's lease epoch (an integer)"
    if content_length is None:
        problems["Content-Length"] = "is required"
    elif match is not None and "Content-Range" not in problems and int(content_length) != end - start + 1:
        problems["Content-Length"] = f"must be the range's length ({end - start + 1})"
    if problems:
        raise InvalidRequest("The upload headers are invalid.", fields=problems)
    return ChunkHeaders(start, end, total, digest.lower(), epoch)


def _latest_job(recording_id: str) -> RecordingJob | None:
    job: RecordingJob | None = (
        RecordingJob.select().where(RecordingJob.recording_id == recording_id).order_by(RecordingJob.id.desc()).first()
    )
    return job


def load_target(recording_id: str) -> UploadTarget:
    """The recording an upload is for, and its latest job; NotFound when there is no such recording."""
    recording = Recording.get_or_none(Recording.id == recording_id)
    if recording is None:
        raise NotFound(f"No recording {recording_id}.")
    job = _latest_job(recording_id)
    return UploadTarget(
        recording_id=recording.id,
        node_id=recording.node_id,
        site=recording.site,
        format=recording.format,
        status=recording.status,
        size_bytes=recording.size_bytes,
        sha256=recording.sha256,
        storage_key=recording.storage_key,
        job_id=job.id if job else None,
        job_state=job.state if job else None,
        lease_epoch=job.lease_epoch if job else None,
    )


def check_writable(target: UploadTarget, lease_epoch: int) -> None:
    """The recording's job is held by the caller's lease and may still upload."""
    if target.job_id is None or target.job_state not in JOB_ACTIVE:
        raise Conflict(
            f"The recording's job is {target.job_state or 'missing'}; there is no upload to take.", code="job_not_active"
        )
    if target.lease_epoch != lease_epoch:
        raise Conflict(
            "This lease is stale: the job was claimed again since.", code="stale_lease", current_epoch=target.lease_epoch
        )


def complete_upload(
    actor: Actor, recording_id: str, lease_epoch: int, size_bytes: int, sha256: str, storage_key: str
) -> tuple[dict[str, Any], list[FleetEvent]]:
    """The file is in storage: the recording becomes completed (or interrupted), its job completed; audited."""
    at = utcnow()
    with database_proxy.atomic():
        target = load_target(recording_id)
        check_writable(target, lease_epoch)
        recording = Recording.get_by_id(recording_id)
        before = recording_to_api(recording, target.job_id)
        status = "interrupted" if recording.interrupted else "completed"
        Recording.update(
            status=status, size_bytes=size_bytes, sha256=sha256, storage_key=storage_key, error=None, updated_at=at
        ).where(Recording.id == recording_id).execute()
        RecordingJob.update(state="completed", updated_at=at).where(RecordingJob.id == target.job_id).execute()
        after = recording_to_api(Recording.get_by_id(recording_id), target.job_id)
        record(
            actor,
            "recording.upload.completed",
            permission=PERMISSION,
            target=("recording", recording_id),
            before=before,
            after=after,
        )
    # Off-site copies (issue 20): queued after the commit; a problem there never fails the upload.
    return after, [FleetEvent("recording.completed", target.site, after), *upload_queue.enqueue_safely(recording_id)]


def reject_upload(actor: Actor, recording_id: str, reason: str) -> None:
    """Audit an upload the hub refused at its end (the whole file did not match its digest)."""
    record(
        actor,
        "recording.upload.rejected",
        permission=PERMISSION,
        target=("recording", recording_id),
        outcome="failure",
        reason=reason,
    )
