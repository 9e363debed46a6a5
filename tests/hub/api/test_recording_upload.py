"""A node's resumable upload of a recording's file: chunks, HEAD, restarts, fencing, digests and idempotence."""

from __future__ import annotations

import hashlib
import io
import socket
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import soundfile
from hark_fleet.hub.api.recording_upload import FLUSH_BYTES
from hark_fleet.hub.clock import utcnow
from hark_fleet.hub.db.models import Recording, RecordingJob
from hark_fleet.hub.ids import new_id

from tests.conftest import hub_database
from tests.harness import HubProcess, wait_for

RATE = 48000
LEVEL = 0.5  # the sine's peak: -6 dBFS


def sine_wav(seconds: float = 2.0, channels: int = 2, fmt: str = "WAV", subtype: str = "PCM_24") -> bytes:
    """A 1 kHz sine at LEVEL on every channel, as a real WAV (or FLAC) file."""
    t = np.arange(int(RATE * seconds)) / RATE
    signal = LEVEL * np.sin(2 * np.pi * 1000 * t)
    out = io.BytesIO()
    soundfile.write(out, np.repeat(signal[:, None], channels, axis=1), RATE, format=fmt, subtype=subtype)
    return out.getvalue()


def enroll(hub: HubProcess, site: str | None = "north") -> tuple[str, str]:
    if site is not None:
        hub.ensure_site(site)  # a node's site must exist
    with hub.admin() as admin:
        response = admin.post("/api/v1/nodes/enroll", json={"name": f"up-{uuid.uuid4().hex[:6]}", "site": site})
    assert response.status_code == 201, response.text
    data = response.json()["data"]
    return data["node"]["id"], data["credential"]


@dataclass
class Take:
    """A recording in the uploading state, its job, and the node that owns it."""

    recording_id: str
    job_id: str
    node_id: str
    credential: str
    site: str | None
    epoch: int = 3


def uploading_recording(
    hub: HubProcess,
    node: tuple[str, str] | None = None,
    site: str | None = "north",
    fmt: str = "wav",
    interrupted: bool = False,
    status: str = "uploading",
    started_at: datetime | None = None,
    seconds: float = 2.0,
    metadata: dict[str, Any] | None = None,
    name: str | None = None,
) -> Take:
    """Rows as the recording jobs leave them once capture ended (written straight into the hub's database)."""
    node_id, credential = node or enroll(hub, site)
    started = started_at or utcnow() - timedelta(seconds=seconds + 5)
    take = Take(new_id("rec"), new_id("rjb"), node_id, credential, site)
    with hub_database(hub):
        Recording.create(
            id=take.recording_id,
            node_id=node_id,
            site=site,
            name=name or f"take {take.recording_id[-6:]}",
            status=status,
            profile_id="default",
            profile={"format": fmt, "sample_rate": RATE, "bit_depth": 24, "segment_s": 10.0},
            format=fmt,
            sample_rate=RATE,
            bit_depth=24,
            channels=2,
            started_at=started,
            ended_at=started + timedelta(seconds=seconds),
            duration_s=seconds,
            metadata=metadata or {},
            integrity={"segments": [{"index": 0, "frames": int(RATE * seconds), "sha256": "00" * 32}], "gaps": []},
            interrupted=interrupted,
            time_quality="synced",
            created_by={"type": "user", "id": "usr_test", "name": "test"},
        )
        job_state = {"uploading": "uploading", "recording": "recording", "queued": "queued"}.get(status, status)
        RecordingJob.create(
            id=take.job_id,
            recording_id=take.recording_id,
            node_id=node_id,
            site=site,
            state=job_state,
            lease_epoch=take.epoch,
            capture_started=status != "queued",
            claimed_at=None if status == "queued" else utcnow(),
            last_heartbeat_at=None if status == "queued" else utcnow(),  # the lease reaper leaves it alone
        )
    return take


def rows(hub: HubProcess, take: Take) -> tuple[Recording | None, RecordingJob | None]:
    with hub_database(hub):
        return Recording.get_or_none(Recording.id == take.recording_id), RecordingJob.get_or_none(RecordingJob.id == take.job_id)


def cache_file(take: Take) -> str:
    return f"/api/v1/recordings/{take.recording_id}/cache-file"


def put_chunk(
    hub: HubProcess,
    take: Take,
    data: bytes,
    start: int,
    end: int,
    digest: str | None = None,
    epoch: int | None = None,
    credential: str | None = None,
) -> httpx.Response:
    headers = {
        "Content-Range": f"bytes {start}-{end}/{len(data)}",
        "X-Content-SHA256": digest or hashlib.sha256(data).hexdigest(),
        "X-Lease-Epoch": str(take.epoch if epoch is None else epoch),
        "Content-Type": "application/octet-stream",
    }
    with hub.client(credential or take.credential) as node:
        return node.put(cache_file(take), content=data[start : end + 1], headers=headers)


def head(hub: HubProcess, take: Take, credential: str | None = None) -> httpx.Response:
    with hub.client(credential or take.credential) as node:
        return node.head(cache_file(take))


def upload(hub: HubProcess, take: Take, data: bytes, pieces: int = 3) -> httpx.Response:
    """The whole file in `pieces` chunks; returns the final answer."""
    bounds = np.linspace(0, len(data), pieces + 1).astype(int)
    response = None
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        response = put_chunk(hub, take, data, int(a), int(b) - 1)
        assert response.status_code == 200, response.text
    assert response is not None
    return response


def completed_recording(hub: HubProcess, **kwargs: Any) -> tuple[Take, bytes]:
    """A recording whose file is uploaded and stored."""
    seconds = kwargs.pop("seconds", 2.0)
    fmt = kwargs.get("fmt", "wav")
    data = sine_wav(seconds, fmt="FLAC" if fmt == "flac" else "WAV", subtype="PCM_16" if fmt == "flac" else "PCM_24")
    take = uploading_recording(hub, seconds=seconds, **kwargs)
    final = upload(hub, take, data)
    assert final.headers["Upload-Complete"] == "true", final.text
    return take, data


def stored_path(hub: HubProcess, take: Take) -> Path:
    recording, _ = rows(hub, take)
    assert recording is not None and recording.storage_key
    return hub.data_dir / "recordings" / recording.storage_key


def audit_of(hub: HubProcess, recording_id: str) -> list[dict[str, Any]]:
    with hub.admin() as admin:
        return admin.get("/api/v1/audit-events", params={"target_id": recording_id}).json()["data"]


# -- tests ---------------------------------------------------------------------------------------


def test_a_file_uploads_in_three_chunks_with_a_head_between(hub: HubProcess) -> None:
    take = uploading_recording(hub)
    data = sine_wav()
    first = head(hub, take)
    assert first.status_code == 200
    assert (first.headers["Upload-Offset"], first.headers["Upload-Complete"]) == ("0", "false")
    third = len(data) // 3
    one = put_chunk(hub, take, data, 0, third - 1)
    assert one.status_code == 200, one.text
    assert one.headers["Upload-Offset"] == str(third) and one.json()["data"] == {"upload_offset": third, "complete": False}
    assert head(hub, take).headers["Upload-Offset"] == str(third)
    assert put_chunk(hub, take, data, third, 2 * third - 1).headers["Upload-Offset"] == str(2 * third)
    assert head(hub, take).headers["Upload-Offset"] == str(2 * third)
    last = put_chunk(hub, take, data, 2 * third, len(data) - 1)
    assert last.status_code == 200, last.text
    assert (last.headers["Upload-Offset"], last.headers["Upload-Complete"]) == (str(len(data)), "true")
    shown = last.json()["data"]["recording"]
    assert shown["status"] == "completed" and shown["size_bytes"] == len(data)
    assert shown["sha256"] == hashlib.sha256(data).hexdigest() and shown["job_id"] == take.job_id

    recording, job = rows(hub, take)
    assert recording is not None and job is not None
    assert recording.status == "completed" and job.state == "completed"
    assert recording.storage_key == f"north/{take.node_id}/{take.recording_id}.wav"
    assert stored_path(hub, take).read_bytes() == data
    assert not (hub.data_dir / "uploads" / f"{take.recording_id}.part").exists()
    done = head(hub, take)
    assert (done.headers["Upload-Offset"], done.headers["Upload-Complete"]) == (str(len(data)), "true")

    completed = [a for a in audit_of(hub, take.recording_id) if a["action"] == "recording.upload.completed"]
    assert len(completed) == 1
    assert completed[0]["actor"]["type"] == "node" and completed[0]["actor"]["id"] == take.node_id
    assert completed[0]["before"]["status"] == "uploading" and completed[0]["after"]["status"] == "completed"


def test_an_upload_resumes_after_the_hub_restarts(hub: HubProcess) -> None:
    take = uploading_recording(hub)
    data = sine_wav(3.0)
    third = len(data) // 3
    assert put_chunk(hub, take, data, 0, third - 1).status_code == 200
    assert hub.stop() == 0
    hub.start()
    # The running hash died with the process: the hub re-hashes the part it kept.
    assert head(hub, take).headers["Upload-Offset"] == str(third)
    assert put_chunk(hub, take, data, third, 2 * third - 1).status_code == 200
    last = put_chunk(hub, take, data, 2 * third, len(data) - 1)
    assert last.status_code == 200, last.text
    assert last.headers["Upload-Complete"] == "true"
    assert stored_path(hub, take).read_bytes() == data
    assert "re-hashed" in hub.log()


def test_a_chunk_at_the_wrong_offset_is_refused_with_the_offset_to_send_from(hub: HubProcess) -> None:
    take = uploading_recording(hub)
    data = sine_wav(1.0)
    assert put_chunk(hub, take, data, 0, 999).status_code == 200
    for start in (0, 500, 2000):  # a chunk sent again, one overlapping, one leaving a hole
        refused = put_chunk(hub, take, data, start, start + 999)
        assert refused.status_code == 409, refused.text
        assert refused.json()["error"]["code"] == "offset_mismatch"
        assert refused.headers["Upload-Offset"] == "1000" and refused.json()["error"]["upload_offset"] == 1000
    assert head(hub, take).headers["Upload-Offset"] == "1000"
    assert put_chunk(hub, take, data, 1000, len(data) - 1).headers["Upload-Complete"] == "true"


def test_a_stale_lease_epoch_is_refused(hub: HubProcess) -> None:
    take = uploading_recording(hub)
    data = sine_wav(1.0)
    for epoch in (take.epoch - 1, take.epoch + 1):
        refused = put_chunk(hub, take, data, 0, len(data) - 1, epoch=epoch)
        assert refused.status_code == 409, refused.text
        assert refused.json()["error"]["code"] == "stale_lease"
    assert head(hub, take).headers["Upload-Offset"] == "0"
    recording, job = rows(hub, take)
    assert recording is not None and job is not None
    assert recording.status == "uploading" and job.state == "uploading"


def test_a_corrupted_upload_is_refused_and_nothing_is_kept(hub: HubProcess) -> None:
    take = uploading_recording(hub)
    data = sine_wav(1.0)
    corrupted = bytearray(data)
    corrupted[5000] ^= 0xFF
    half = len(data) // 2
    assert put_chunk(hub, take, bytes(corrupted), 0, half - 1, digest=hashlib.sha256(data).hexdigest()).status_code == 200
    refused = put_chunk(hub, take, bytes(corrupted), half, len(data) - 1, digest=hashlib.sha256(data).hexdigest())
    assert refused.status_code == 400, refused.text
    assert refused.json()["error"]["code"] == "checksum_mismatch"
    assert refused.json()["error"]["received_sha256"] == hashlib.sha256(bytes(corrupted)).hexdigest()
    assert head(hub, take).headers["Upload-Offset"] == "0"
    assert not (hub.data_dir / "uploads" / f"{take.recording_id}.part").exists()
    recording, job = rows(hub, take)
    assert recording is not None and job is not None
    assert (recording.status, recording.storage_key, job.state) == ("uploading", None, "uploading")
    rejected = [a for a in audit_of(hub, take.recording_id) if a["action"] == "recording.upload.rejected"]
    assert rejected and rejected[0]["outcome"] == "failure"
    # The node sends it again, right this time.
    assert upload(hub, take, data, pieces=2).headers["Upload-Complete"] == "true"
    assert stored_path(hub, take).read_bytes() == data


def test_another_nodes_credential_is_refused(hub: HubProcess) -> None:
    take = uploading_recording(hub)
    _, other = enroll(hub)
    data = sine_wav(0.5)
    assert head(hub, take, credential=other).status_code == 403
    refused = put_chunk(hub, take, data, 0, len(data) - 1, credential=other)
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "node_mismatch"
    with hub.client(take.credential) as node:
        missing = node.head("/api/v1/recordings/rec_missing/cache-file")
    assert missing.status_code == 404
    assert head(hub, take).headers["Upload-Offset"] == "0"


def test_resending_a_completed_upload_is_idempotent(hub: HubProcess) -> None:
    take, data = completed_recording(hub)
    again = put_chunk(hub, take, data, len(data) // 2, len(data) - 1)
    assert again.status_code == 200, again.text
    assert (again.headers["Upload-Offset"], again.headers["Upload-Complete"]) == (str(len(data)), "true")
    other = sine_wav(1.0)
    conflict = put_chunk(hub, take, other, 0, len(other) - 1)
    assert conflict.status_code == 409 and conflict.json()["error"]["code"] == "upload_completed"
    assert stored_path(hub, take).read_bytes() == data
    assert len([a for a in audit_of(hub, take.recording_id) if a["action"] == "recording.upload.completed"]) == 1


def test_an_interrupted_recording_keeps_what_was_captured(hub: HubProcess) -> None:
    take, data = completed_recording(hub, interrupted=True)
    recording, job = rows(hub, take)
    assert recording is not None and job is not None
    assert (recording.status, recording.size_bytes, job.state) == ("interrupted", len(data), "completed")


def test_garbage_upload_headers_are_named_in_a_400(hub: HubProcess) -> None:
    take = uploading_recording(hub)
    cases = [
        ({"Content-Range": "bytes=0-9/10"}, "Content-Range"),
        ({"Content-Range": "bytes 9-0/10"}, "Content-Range"),
        ({"Content-Range": "bytes 0-10/10"}, "Content-Range"),
        ({"Content-Range": "bytes 0-9/10", "X-Content-SHA256": "abc"}, "X-Content-SHA256"),
        ({"Content-Range": "bytes 0-9/10", "X-Lease-Epoch": "three"}, "X-Lease-Epoch"),
        ({"Content-Range": "bytes 0-4/10"}, "Content-Length"),
    ]
    with hub.client(take.credential) as node:
        for override, field in cases:
            headers = {"Content-Range": "bytes 0-9/10", "X-Content-SHA256": "ab" * 32, "X-Lease-Epoch": "3", **override}
            response = node.put(cache_file(take), content=b"0123456789", headers=headers)
            assert response.status_code == 400, (override, response.text)
            assert field in response.json()["error"]["fields"], (override, response.text)
        missing = node.put(cache_file(take), content=b"0123456789")
        assert set(missing.json()["error"]["fields"]) >= {"Content-Range", "X-Content-SHA256", "X-Lease-Epoch"}
    assert head(hub, take).headers["Upload-Offset"] == "0"


def test_a_chunk_cut_off_midway_keeps_what_arrived_and_resumes(hub: HubProcess) -> None:
    take = uploading_recording(hub)
    data = sine_wav(4.0)  # ~1.1 MB: the hub writes what it got in 1 MiB blocks
    sent = 1_100_000
    request = (
        f"PUT {cache_file(take)} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {take.credential}\r\n"
        f"Content-Length: {len(data)}\r\nContent-Range: bytes 0-{len(data) - 1}/{len(data)}\r\n"
        f"X-Content-SHA256: {hashlib.sha256(data).hexdigest()}\r\nX-Lease-Epoch: {take.epoch}\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", hub.port)) as conn:
        conn.sendall(request + data[:sent])
    # What arrived was written in blocks of at least FLUSH_BYTES; the tail that never filled one is dropped.
    offset = wait_for(lambda: int(head(hub, take).headers["Upload-Offset"]) >= FLUSH_BYTES, 10, "the first block")
    offset = int(head(hub, take).headers["Upload-Offset"])
    assert offset <= sent

    def resumed() -> httpx.Response | None:
        answer = put_chunk(hub, take, data, offset, len(data) - 1)
        busy = answer.status_code == 409 and answer.json()["error"]["code"] == "upload_in_progress"
        return None if busy else answer  # the cut-off request may still be writing its last block

    last = wait_for(resumed, 10, "the cut-off request to let go")
    assert last.status_code == 200, last.text
    assert last.headers["Upload-Complete"] == "true"
    assert stored_path(hub, take).read_bytes() == data


def test_an_empty_file_uploads_as_one_empty_chunk(hub: HubProcess) -> None:
    take = uploading_recording(hub)
    headers = {
        "Content-Range": "bytes */0",
        "X-Content-SHA256": hashlib.sha256(b"").hexdigest(),
        "X-Lease-Epoch": str(take.epoch),
    }
    with hub.client(take.credential) as node:
        answer = node.put(cache_file(take), content=b"", headers=headers)
    assert answer.status_code == 200, answer.text
    assert (answer.headers["Upload-Offset"], answer.headers["Upload-Complete"]) == ("0", "true")
    assert stored_path(hub, take).read_bytes() == b""
