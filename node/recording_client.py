"""The hub's recording-job and upload routes, as this node calls them (see API.md "Recordings and jobs").

Uploads are one file per recording, streamed from disk in pieces (never read whole), resumed
from the hub's `Upload-Offset`, and verified by the hub against the whole file's sha256.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
from hark_fleet.node.errors import HubProtocolError, HubRejected, NodeError
from hark_fleet.node.hub_client import HubClient, answer_data

log = logging.getLogger(__name__)

UPLOAD_CHUNK_BYTES = 64 * 1024 * 1024  # one PUT; a failure costs at most this much again
READ_BYTES = 256 * 1024  # what is read from disk and handed to the socket at a time
UPLOAD_TIMEOUT_S = 600.0


class StaleLease(NodeError):
    """The hub gave this job to a newer claim: stop working on it."""


class UploadRejected(NodeError):
    """The hub refused the file itself (its checksum did not match): it must be sent again from the start."""


@dataclass(frozen=True, slots=True)
class ClaimedJob:
    job: dict[str, Any]
    recording: dict[str, Any]

    @property
    def job_id(self) -> str:
        return str(self.job["id"])

    @property
    def lease_epoch(self) -> int:
        return int(self.job["lease_epoch"])

    @property
    def recording_id(self) -> str:
        return str(self.recording["id"])


@dataclass(frozen=True, slots=True)
class ScheduledSync:
    """The hub's answer to a scheduled-jobs sync: jobs to hold (new or changed), held ids to drop and why."""

    jobs: list[ClaimedJob]
    withdrawn: dict[str, str]  # job id -> reason
    lead_s: float | None = None
    server_time: str | None = None


def file_sha256(path: Path) -> str:
    """The whole file's sha256, read in pieces (blocking: call it from an executor)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while piece := handle.read(1024 * 1024):
            digest.update(piece)
    return digest.hexdigest()


def _data(body: bytes | None) -> Any:
    return answer_data(body)


def _raise_stale(err: HubRejected) -> None:
    if err.status == 409 and err.code == "stale_lease":
        raise StaleLease(str(err)) from err


class RecordingClient:
    """Claims jobs, reports on them and uploads their files, as this node."""

    def __init__(self, hub: HubClient) -> None:
        self.hub = hub

    async def claim_next(self) -> ClaimedJob | None:
        url = self.hub.url("recording-jobs/claim-next")
        response = await self.hub.fetch(
            "POST", url, body=b"{}", headers={"Content-Type": "application/json"}, expected=(200, 204)
        )
        if response.code == 204:
            return None
        data = _data(response.body)
        if not isinstance(data, dict) or "job" not in data or "recording" not in data:
            raise HubProtocolError("claim-next answered without a job and its recording")
        return ClaimedJob(data["job"], data["recording"])

    async def sync_scheduled(self, held: Sequence[tuple[str, int]]) -> ScheduledSync:
        """`POST nodes/{id}/recording-jobs/scheduled` with the (job id, revision) pairs this node holds.

        The hub answers with this node's scheduled jobs it does not hold at their revision (claimed by this call)
        and which held ids to drop. Scheduled jobs never come through `claim_next`.
        """
        body = {"held": [{"id": job_id, "revision": revision} for job_id, revision in held]}
        response = await self.hub.fetch(
            "POST",
            self.hub.url("recording-jobs/scheduled"),
            body=msgspec.json.encode(body),
            headers={"Content-Type": "application/json"},
        )
        data = _data(response.body)
        if not isinstance(data, dict) or not isinstance(data.get("jobs"), list):
            raise HubProtocolError("the scheduled-jobs sync answered without its jobs")
        jobs = []
        for item in data["jobs"]:
            if not isinstance(item, dict) or not isinstance(item.get("job"), dict) or not isinstance(item.get("recording"), dict):
                raise HubProtocolError("the scheduled-jobs sync answered a job without its recording")
            jobs.append(ClaimedJob(item["job"], item["recording"]))
        withdrawn = {
            str(item["id"]): str(item.get("reason") or "withdrawn")
            for item in data.get("withdrawn") or []
            if isinstance(item, dict) and item.get("id")
        }
        lead = data.get("lead_s")
        return ScheduledSync(jobs, withdrawn, float(lead) if isinstance(lead, int | float) else None, data.get("server_time"))

    async def missed(self, job: ClaimedJob, error: str) -> None:
        """`POST recording-jobs/{id}/missed`: this node could not record its scheduled job (StaleLease on a newer claim)."""
        body = {"lease_epoch": job.lease_epoch, "error": error}
        try:
            await self.hub.fetch(
                "POST",
                self.hub.api_url(f"recording-jobs/{job.job_id}/missed"),
                body=msgspec.json.encode(body),
                headers={"Content-Type": "application/json"},
            )
        except HubRejected as err:
            _raise_stale(err)
            raise

    async def heartbeat(
        self, job: ClaimedJob, state: str, progress: dict[str, Any], recording: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Report progress; the answer says `stop_requested`. StaleLease when another claim took the job."""
        body: dict[str, Any] = {"lease_epoch": job.lease_epoch, "state": state, "progress": progress}
        if recording is not None:
            body["recording"] = recording
        try:
            response = await self.hub.fetch(
                "POST",
                self.hub.api_url(f"recording-jobs/{job.job_id}/heartbeat"),
                body=msgspec.json.encode(body),
                headers={"Content-Type": "application/json"},
            )
        except HubRejected as err:
            _raise_stale(err)
            raise
        data = _data(response.body)
        return data if isinstance(data, dict) else {}

    async def finish(self, job: ClaimedJob, outcome: str, error: str | None = None) -> None:
        """`cancelled` or `failed`."""
        body = {"lease_epoch": job.lease_epoch, "error": error}
        try:
            await self.hub.fetch(
                "POST",
                self.hub.api_url(f"recording-jobs/{job.job_id}/{outcome}"),
                body=msgspec.json.encode(body),
                headers={"Content-Type": "application/json"},
            )
        except HubRejected as err:
            _raise_stale(err)
            raise

    async def upload_offset(self, recording_id: str) -> tuple[int, bool]:
        """How many bytes of the file the hub holds, and whether the upload is complete."""
        response = await self.hub.fetch("HEAD", self.hub.api_url(f"recordings/{recording_id}/cache-file"))
        try:
            offset = int(response.headers.get("Upload-Offset", "0"))
        except ValueError as err:
            raise HubProtocolError("Upload-Offset is not a number") from err
        return offset, response.headers.get("Upload-Complete", "false").lower() == "true"

    async def upload(
        self,
        job: ClaimedJob,
        path: Path,
        sha256: str,
        progress: Callable[[int, int], Awaitable[None]] | None = None,
    ) -> None:
        """Send the file from where the hub's copy ends, a chunk per PUT, until the hub has it all."""
        total = path.stat().st_size
        offset, complete = await self.upload_offset(job.recording_id)
        while not complete:
            if offset >= total and total > 0:
                raise HubProtocolError(f"the hub holds {offset} of {total} bytes but calls the upload incomplete")
            end = min(total, offset + UPLOAD_CHUNK_BYTES) - 1
            try:
                offset, complete = await self._put(job, path, offset, end, total, sha256)
            except HubRejected as err:
                _raise_stale(err)
                if err.status == 409 and "Upload-Offset" in err.headers:
                    offset = int(err.headers["Upload-Offset"])  # the hub holds a different amount: go on from there
                    continue
                if err.status == 400 and err.code == "checksum_mismatch":
                    raise UploadRejected(str(err)) from err
                raise
            if progress is not None and not complete:  # once complete the job is over: no more heartbeats
                await progress(offset, total)

    async def _put(self, job: ClaimedJob, path: Path, start: int, end: int, total: int, sha256: str) -> tuple[int, bool]:
        loop = asyncio.get_running_loop()
        length = end - start + 1 if total else 0

        async def produce(write: Callable[[bytes], Awaitable[None]]) -> None:
            with open(path, "rb") as handle:
                handle.seek(start)
                left = length
                while left > 0:
                    piece = await loop.run_in_executor(None, handle.read, min(READ_BYTES, left))
                    if not piece:
                        raise NodeError(f"{path} shrank while it was being uploaded")
                    left -= len(piece)
                    await write(piece)

        headers = {
            "Content-Type": "application/octet-stream",
            "Content-Length": str(length),
            "Content-Range": f"bytes {start}-{end}/{total}" if total else f"bytes */{total}",
            "X-Content-SHA256": sha256,
            "X-Lease-Epoch": str(job.lease_epoch),
        }
        response = await self.hub.fetch(
            "PUT",
            self.hub.api_url(f"recordings/{job.recording_id}/cache-file"),
            headers=headers,
            body_producer=produce,
            request_timeout=UPLOAD_TIMEOUT_S,
        )
        try:
            offset = int(response.headers.get("Upload-Offset", str(end + 1)))
        except ValueError as err:
            raise HubProtocolError("Upload-Offset is not a number") from err
        return offset, response.headers.get("Upload-Complete", "false").lower() == "true" or offset >= total
