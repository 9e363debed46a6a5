"""The node's direct-upload worker against a real `hark-hub` and a moto S3 server (issue 20).

The cache holds a finished recording (its manifest and file, as the recorder leaves them); the worker
claims the hub's direct item, hashes and sends the parts S3 does not hold, and completes. Also: a node
restarted mid-upload sends only the missing parts; a cache that lost the file, or holds another one,
fails the upload for good; and the part PUT itself against a plain HTTP server: a file that changes
after it was hashed is cut short, and S3's refusal comes back with its code.
"""

from __future__ import annotations

import asyncio
import hashlib
import http.server
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hark_fleet.node.hub_client import HubClient
from hark_fleet.node.offsite import worker as worker_module
from hark_fleet.node.offsite.client import DirectUploadClient, FileChanged, PartRefused, SignedPart
from hark_fleet.node.offsite.worker import DirectUploadWorker
from hark_fleet.node.recorder.manifest import Manifest

from tests.direct_s3 import (
    PresignableMotoS3,
    presignable_s3_fixture,  # noqa: F401 - the fixture presignable_s3
)
from tests.harness import HubProcess, running_hub
from tests.hub.api.test_direct_uploads import Node, enroll, item, object_bytes, queued_item

MIB = 1024 * 1024
SIZE = 8 * MIB + 2 * MIB + 5  # two parts of the hub's 8 MiB


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubProcess]:
    with running_hub(tmp_path_factory.mktemp("direct-node-hub")) as process:
        yield process


def cache_recording(root: Path, recording_id: str, data: bytes, sha256: str | None = None) -> Path:
    """A finished recording in the node's cache, as the recorder leaves it: its directory, file and manifest."""
    directory = root / recording_id
    directory.mkdir(parents=True)
    path = directory / f"{recording_id}.wav"
    path.write_bytes(data)
    manifest = Manifest(
        recording_id=recording_id,
        job_id="job_x",
        state="finalized",
        profile={},
        working_file=f"{recording_id}.rec.wav",
        final_file=path.name,
        format="wav",
        size_bytes=len(data),
        sha256=sha256 or hashlib.sha256(data).hexdigest(),
    )
    manifest.save(directory)
    return path


class Upload:
    """One direct item for a node whose cache is `root`, with the worker and what it PUT."""

    def __init__(self, hub: HubProcess, s3: PresignableMotoS3, root: Path, data: bytes) -> None:
        self.hub, self.s3, self.root, self.data = hub, s3, root, data
        self.node: Node = enroll(hub)
        self.bucket = s3.create_bucket()
        self.item_id, self.recording_id, self.key = queued_item(hub, s3, self.node, data, self.bucket)
        self.sent: list[int] = []

    def client(self) -> DirectUploadClient:
        return DirectUploadClient(HubClient(self.hub.url, self.node.id, self.node.credential))

    def run_once(self) -> bool:
        """The worker's claim and upload, once, as a fresh node process would; the part numbers it PUT in `sent`."""

        async def once() -> bool:
            client = self.client()
            put = client.put_part

            async def counted(signed: SignedPart, *args: Any) -> None:
                self.sent.append(signed.number)
                await put(signed, *args)

            client.put_part = counted  # type: ignore[method-assign]
            worker = DirectUploadWorker(self.root, client)
            try:
                return await worker.claim_and_upload(asyncio.Event())
            finally:
                client.close()
                client.hub.close()

        return asyncio.run(once())


def test_the_worker_sends_the_recordings_cached_file_straight_to_s3(
    hub: HubProcess, presignable_s3: PresignableMotoS3, tmp_path: Path
) -> None:
    data = os.urandom(SIZE)
    upload = Upload(hub, presignable_s3, tmp_path, data)
    cache_recording(tmp_path, upload.recording_id, data)
    assert upload.run_once()
    synced = item(hub, upload.item_id)
    assert synced["state"] == "synced" and synced["verified_by"] == "s3-part-checksums", synced
    assert synced["bytes_sent"] == SIZE and synced["checksum_sha256"] == hashlib.sha256(data).hexdigest()
    assert upload.sent == [1, 2]
    assert object_bytes(presignable_s3, upload.bucket, upload.key) == data
    assert not upload.run_once()  # nothing left to do


def test_a_restarted_node_sends_only_the_parts_s3_does_not_hold(
    hub: HubProcess, presignable_s3: PresignableMotoS3, tmp_path: Path
) -> None:
    data = os.urandom(SIZE)
    upload = Upload(hub, presignable_s3, tmp_path, data)
    path = cache_recording(tmp_path, upload.recording_id, data)

    async def first_process_dies_after_part_one() -> None:
        client = upload.client()
        try:
            claimed = await client.claim()
            assert claimed is not None
            digest = hashlib.sha256(data[: claimed.part_size]).hexdigest()
            (signed,) = await client.sign(claimed, [(1, digest, claimed.part_size)])
            await client.put_part(signed, path, 0, claimed.part_size, digest)
        finally:
            client.close()
            client.hub.close()

    asyncio.run(first_process_dies_after_part_one())
    assert item(hub, upload.item_id)["state"] == "uploading"
    assert upload.run_once()
    assert upload.sent == [2]
    assert item(hub, upload.item_id)["state"] == "synced"
    assert object_bytes(presignable_s3, upload.bucket, upload.key) == data


def test_a_recording_the_cache_no_longer_holds_fails_for_good_with_that_reason(
    hub: HubProcess, presignable_s3: PresignableMotoS3, tmp_path: Path
) -> None:
    upload = Upload(hub, presignable_s3, tmp_path, os.urandom(MIB))
    assert upload.run_once()
    failed = item(hub, upload.item_id)
    assert failed["state"] == "failed" and "no longer holds" in failed["last_error"], failed
    assert failed["next_attempt_at"] is None and upload.sent == []


def test_a_cached_file_that_is_not_the_recordings_is_never_sent(
    hub: HubProcess, presignable_s3: PresignableMotoS3, tmp_path: Path
) -> None:
    data = os.urandom(MIB)
    upload = Upload(hub, presignable_s3, tmp_path, data)
    other = os.urandom(MIB)
    cache_recording(tmp_path, upload.recording_id, other)  # same size, other bytes (and its own digest)
    assert upload.run_once()
    failed = item(hub, upload.item_id)
    assert failed["state"] == "failed" and "another file" in failed["last_error"], failed
    assert upload.sent == []
    assert presignable_s3.client().list_objects_v2(Bucket=upload.bucket).get("Contents", []) == []


def test_a_file_changed_under_its_manifest_is_caught_before_completing(
    hub: HubProcess, presignable_s3: PresignableMotoS3, tmp_path: Path
) -> None:
    data = os.urandom(MIB)
    upload = Upload(hub, presignable_s3, tmp_path, data)
    path = cache_recording(tmp_path, upload.recording_id, data)
    path.write_bytes(os.urandom(MIB))  # the manifest still says the recording's digest
    assert upload.run_once()
    failed = item(hub, upload.item_id)
    assert failed["state"] == "failed" and "SHA-256" in failed["last_error"] and failed["next_attempt_at"] is None, failed


def test_the_worker_claims_soon_after_a_recording_ends_without_waiting_for_its_poll(
    hub: HubProcess, presignable_s3: PresignableMotoS3, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(worker_module, "POLL_S", 3600.0)  # only the end of a recording can make it claim in time
    node = enroll(hub)
    client = DirectUploadClient(HubClient(hub.url, node.id, node.credential))
    recording: list[object] = [object()]  # what the node records now
    worker = DirectUploadWorker(tmp_path, client, lambda: recording[0])
    claims: list[Any] = []
    claim = client.claim

    async def counted(*args: Any) -> Any:
        claims.append(await claim(*args))
        return claims[-1]

    client.claim = counted  # type: ignore[method-assign]
    data = os.urandom(MIB)
    bucket = presignable_s3.create_bucket()

    async def scenario() -> str:
        stop = asyncio.Event()
        task = asyncio.create_task(worker.run(stop))
        try:
            while not claims:  # its first claim, at start, finds nothing
                await asyncio.sleep(0.05)
            item_id, recording_id, _ = await asyncio.to_thread(queued_item, hub, presignable_s3, node, data, bucket)
            cache_recording(tmp_path, recording_id, data)
            recording[0] = None  # the take ends: the hub queues its direct uploads now
            for _ in range(600):
                if (await asyncio.to_thread(item, hub, item_id))["state"] == "synced":
                    return "synced"
                await asyncio.sleep(0.1)
            return str((await asyncio.to_thread(item, hub, item_id))["state"])
        finally:
            stop.set()
            await task
            client.hub.close()

    assert asyncio.run(scenario()) == "synced"
    assert claims[0] is None and claims[1] is not None  # the next claim came from the end of the take, not the 1 h poll


# -- the PUT of one part, against a plain HTTP server ------------------------------------------------------------


class PartServer(http.server.ThreadingHTTPServer):
    """Answers every PUT with `status` and `body`, and keeps how many body bytes each request delivered."""

    def __init__(self, status: int, body: bytes = b"") -> None:
        self.status, self.body = status, body
        self.received: list[int] = []
        self.headers_seen: list[dict[str, str]] = []
        super().__init__(("127.0.0.1", 0), _PartHandler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/bucket/key?partNumber=1&X-Amz-Signature=x"


class _PartHandler(http.server.BaseHTTPRequestHandler):
    server: PartServer

    def do_PUT(self) -> None:  # noqa: N802 - http.server's name
        self.server.headers_seen.append({k.lower(): v for k, v in self.headers.items()})
        left, got = int(self.headers["Content-Length"]), 0
        while left > 0:
            block = self.rfile.read(min(65536, left))
            if not block:
                break
            got, left = got + len(block), left - len(block)
        self.server.received.append(got)
        if left:
            return  # the client hung up
        self.send_response(self.server.status)
        self.send_header("Content-Length", str(len(self.server.body)))
        self.end_headers()
        self.wfile.write(self.server.body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def part_file(tmp_path: Path) -> Path:
    path = tmp_path / "take.wav"
    path.write_bytes(os.urandom(3 * MIB))
    return path


def put(server: PartServer, path: Path, sha256: str) -> None:
    async def go() -> None:
        client = DirectUploadClient(HubClient("http://127.0.0.1:9", "nod_x", "secret-credential"))
        try:
            signed = SignedPart(1, server.url, {"x-amz-checksum-sha256": "c2lnbmVk", "x-amz-sdk-checksum-algorithm": "SHA256"})
            await client.put_part(signed, path, MIB, MIB, sha256)
        finally:
            client.close()

    asyncio.run(go())


def test_a_part_goes_with_the_signed_headers_and_never_the_hub_credential(part_file: Path) -> None:
    server = PartServer(200)
    try:
        put(server, part_file, hashlib.sha256(part_file.read_bytes()[MIB : 2 * MIB]).hexdigest())
        assert server.received == [MIB]
        (headers,) = server.headers_seen
        assert headers["x-amz-checksum-sha256"] == "c2lnbmVk" and headers["x-amz-sdk-checksum-algorithm"] == "SHA256"
        assert "authorization" not in headers
    finally:
        server.shutdown()
        server.server_close()


def test_a_part_whose_bytes_no_longer_hash_as_signed_is_cut_short(part_file: Path) -> None:
    server = PartServer(200)
    try:
        with pytest.raises(FileChanged):
            put(server, part_file, hashlib.sha256(b"what was hashed before").hexdigest())
        assert all(got < MIB for got in server.received), server.received  # S3 never gets a whole part
    finally:
        server.shutdown()
        server.server_close()


def test_s3_refusing_a_part_comes_back_with_its_code(part_file: Path) -> None:
    server = PartServer(400, b"<?xml version='1.0'?><Error><Code>BadDigest</Code><Message>no</Message></Error>")
    try:
        with pytest.raises(PartRefused) as refused:
            put(server, part_file, hashlib.sha256(part_file.read_bytes()[MIB : 2 * MIB]).hexdigest())
        assert refused.value.status == 400 and refused.value.code == "BadDigest" and not refused.value.expired
    finally:
        server.shutdown()
        server.server_close()
