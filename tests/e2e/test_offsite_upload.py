"""Off-site upload end to end (issue 20): a real hub uploads to moto's S3 server, OpenSSH's sshd and a directory.

- a node's recording reaches all three kinds of provider and each copy is the recording byte for byte;
- a hub killed with SIGKILL in the middle of a 200 MB multipart upload continues it after restart
  without sending again the parts the server already holds (a counting proxy in front of moto says how
  many bytes the hub sent after the restart: about what was left, not the whole file);
- a hub stopped (SIGTERM) mid-upload gives the item back to the queue with its progress, and continues it;
- a provider that answers 503 makes the item `failed` with the reason and a next attempt, and it syncs
  once the provider answers again.
"""

from __future__ import annotations

import hashlib
import json
import os
import select
import socket
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hark_fleet.hub.clock import utcnow
from hark_fleet.hub.db.models import Recording, UploadItem
from hark_fleet.hub.ids import new_id
from hark_fleet.hub.storage import recording_key

from tests.conftest import hub_database
from tests.e2e.conftest import Fleet
from tests.harness import HubProcess, wait_for
from tests.offsite_servers import MotoS3, Sshd

MIB = 1024 * 1024
SINE = "synthetic:sine?freq=1000&dbfs=-20&channels=2"
QUEUE = "/api/v1/upload-queue"
# Short passes and backoff, so the test waits for the runner's behaviour, not its default pacing.
RUNNER_ENV = {"HARK_UPLOAD_PASS_INTERVAL_S": "0.5", "HARK_UPLOAD_BACKOFF_BASE_S": "1"}


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    running = Fleet(tmp_path, None)
    running.hub.env_extra.update(RUNNER_ENV)
    running.hub.start()
    running.hub.ensure_site("north")
    yield running
    running.stop()


# -- a proxy in front of moto: counts the bytes sent to it, and answers 503 while switched on ---------------------


class CountingProxy:
    """A TCP proxy on loopback to `upstream`; `sent` counts the bytes clients sent through it. While `failing`, every
    request is answered `503 ServiceUnavailable` (connections open when it is switched on are cut)."""

    UNAVAILABLE = (
        b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/xml\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s"
    )
    BODY = b"<?xml version='1.0'?><Error><Code>ServiceUnavailable</Code><Message>switched off by the test</Message></Error>"

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.sent = 0
        self._failing = False
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._stopped = threading.Event()
        self._threads: list[threading.Thread] = []
        self._start(self._accept)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def take_count(self) -> int:
        with self._lock:
            sent, self.sent = self.sent, 0
            return sent

    def set_failing(self, failing: bool) -> None:
        with self._lock:
            self._failing = failing
            cut = list(self._open) if failing else []
        for sock in cut:
            _close(sock)

    def stop(self) -> None:
        self._stopped.set()
        _close(self.listener)
        with self._lock:
            for sock in list(self._open):
                _close(sock)
        for thread in self._threads:
            thread.join(timeout=5)

    def _start(self, target: Any, *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        self._threads = [t for t in self._threads if t.is_alive()]
        self._threads.append(thread)
        thread.start()

    def _accept(self) -> None:
        while not self._stopped.is_set():
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            with self._lock:
                failing = self._failing
            self._start(self._refuse if failing else self._relay, client)

    def _refuse(self, client: socket.socket) -> None:
        with client:
            client.settimeout(5)
            head = b""
            try:
                while b"\r\n\r\n" not in head:
                    chunk = client.recv(65536)
                    if not chunk:
                        return
                    head += chunk
                client.sendall(self.UNAVAILABLE % (len(self.BODY), self.BODY))
            except OSError:
                return

    def _relay(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(self.upstream)
        except OSError:
            _close(client)
            return
        with self._lock:
            self._open.update((client, upstream))
        try:
            pair = {client: upstream, upstream: client}
            while not self._stopped.is_set():
                ready, _, _ = select.select(list(pair), [], [], 0.5)
                for sock in ready:
                    data = sock.recv(1024 * 1024)
                    if not data:
                        return
                    pair[sock].sendall(data)
                    if sock is client:
                        with self._lock:
                            self.sent += len(data)
        except (OSError, ValueError):
            return
        finally:
            with self._lock:
                self._open.difference_update((client, upstream))
            _close(client)
            _close(upstream)


def _close(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()


@pytest.fixture
def proxy(moto_s3: MotoS3) -> Iterator[CountingProxy]:
    running = CountingProxy((moto_s3.host, moto_s3.port))
    yield running
    running.stop()


# -- helpers ---------------------------------------------------------------------------------------------------------


def add_provider(
    hub: HubProcess, kind: str, config: dict[str, Any], secrets: dict[str, str], rate_limit_bps: int | None = None
) -> str:
    """A provider made through the providers' settings (`POST /settings/upload-providers`); its id."""
    body = {
        "kind": kind,
        "name": f"{kind}-{uuid.uuid4().hex[:6]}",
        "config": config,
        "secrets": secrets,
        "rate_limit_bps": rate_limit_bps,
    }
    with hub.admin() as admin:
        response = admin.post("/api/v1/settings/upload-providers", json=body)
    assert response.status_code == 201, response.text
    provider_id: str = response.json()["data"]["id"]
    return provider_id


def s3_provider(hub: HubProcess, moto_s3: MotoS3, bucket: str, endpoint: str | None = None, **kwargs: Any) -> str:
    config = moto_s3.provider_config(bucket)
    if endpoint:
        config["endpoint_url"] = endpoint
    return add_provider(hub, "s3", config, moto_s3.provider_secrets(), **kwargs)


def enroll_node(fleet: Fleet) -> str:
    with fleet.hub.admin() as admin:
        response = admin.post("/api/v1/nodes/enroll", json={"name": f"box-{uuid.uuid4().hex[:6]}", "site": "north"})
    assert response.status_code == 201, response.text
    node_id: str = response.json()["data"]["node"]["id"]
    return node_id


def stored_recording(hub: HubProcess, node_id: str, size: int) -> tuple[str, str]:
    """A completed recording whose file (`size` random bytes) is in the hub's storage; its id and sha256."""
    recording_id = new_id("rec")
    key = recording_key("north", node_id, recording_id, "wav")
    path = hub.data_dir / "recordings" / key
    path.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    with open(path, "wb") as out:
        left = size
        while left:
            block = os.urandom(min(4 * MIB, left))
            digest.update(block)
            out.write(block)
            left -= len(block)
    now = utcnow()
    with hub_database(hub):
        Recording.create(
            id=recording_id,
            node_id=node_id,
            site="north",
            name=f"stored {size // MIB} MB",
            status="completed",
            format="wav",
            sample_rate=48000,
            bit_depth=24,
            channels=2,
            started_at=now,
            ended_at=now,
            size_bytes=size,
            sha256=digest.hexdigest(),
            storage_key=key,
            legal_hold=False,
        )
    return recording_id, digest.hexdigest()


def enqueue(hub: HubProcess, recording_id: str, provider_ids: list[str]) -> list[dict[str, Any]]:
    with hub.admin() as admin:
        response = admin.post(f"/api/v1/recordings/{recording_id}/upload-queue", json={"provider_ids": provider_ids})
    assert response.status_code in (200, 201, 202), response.text
    return items_of(hub, recording_id)


def items_of(hub: HubProcess, recording_id: str) -> list[dict[str, Any]]:
    with hub.admin() as admin:
        response = admin.get(QUEUE, params={"recording_id": recording_id, "limit": 50})
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["data"]
    return items


def item(hub: HubProcess, item_id: str) -> dict[str, Any]:
    with hub.admin() as admin:
        response = admin.get(f"{QUEUE}/{item_id}")
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()["data"]
    return data


def wait_synced(hub: HubProcess, item_id: str, timeout: float) -> dict[str, Any]:
    def synced() -> dict[str, Any] | None:
        found = item(hub, item_id)
        return found if found["state"] == "synced" else None

    try:
        return wait_for(synced, timeout, f"item {item_id} to sync", interval=0.3)  # type: ignore[no-any-return]
    except AssertionError as err:
        raise AssertionError(f"{err}\n{item(hub, item_id)}\n--- hub log ---\n{hub.log()[-4000:]}") from None


def stream_events(hub: HubProcess, event_type: str) -> list[dict[str, Any]]:
    """The buffered fleet events of one type, read from the start of the stream until it goes quiet."""
    found: list[dict[str, Any]] = []
    params = {"type": event_type, "last_event_id": "0"}
    headers = {"Authorization": f"Bearer {hub.login()}"}
    try:
        with httpx.stream("GET", f"{hub.url}/api/v1/events/stream", params=params, headers=headers, timeout=1.0) as response:
            for line in response.iter_lines():
                if line.startswith("data: "):
                    found.append(json.loads(line[len("data: ") :]))
    except httpx.ReadTimeout:
        pass  # the backlog comes at once; silence means it is all here
    return found


def s3_sha256(moto_s3: MotoS3, bucket: str, key: str) -> str:
    body = moto_s3.client().get_object(Bucket=bucket, Key=key)["Body"]
    digest = hashlib.sha256()
    for block in iter(lambda: body.read(4 * MIB), b""):
        digest.update(block)
    return digest.hexdigest()


# -- the tests ---------------------------------------------------------------------------------------------------------


def test_a_nodes_recording_reaches_s3_sftp_and_a_directory_byte_for_byte(
    fleet: Fleet, moto_s3: MotoS3, s3_bucket: str, sshd: Sshd, offsite_dir: Path, tmp_path: Path
) -> None:
    hub = fleet.hub
    sftp_base = tmp_path / "sftp-archive"
    sftp_base.mkdir()
    providers = {
        "s3": s3_provider(hub, moto_s3, s3_bucket),
        "sftp": add_provider(hub, "sftp", sshd.provider_config(str(sftp_base)), sshd.provider_secrets()),
        "local": add_provider(hub, "local", {"path": str(offsite_dir)}, {}),
    }
    with hub.admin() as admin:
        policy = {
            "name": "archive everything from north",
            "provider_ids": list(providers.values()),
            "criteria": {"sites": ["north"]},
        }
        response = admin.post("/api/v1/settings/upload-policies", json=policy)
        assert response.status_code == 201, response.text
    node = fleet.enroll(HARK_NODE_AUDIO_SOURCE=SINE)
    node.start()
    fleet.wait_status(node, "online")
    with hub.admin() as admin:
        response = admin.post("/api/v1/recordings", json={"node_id": node.node_id, "duration_s": 2, "name": "to the archive"})
        assert response.status_code == 201, response.text
        recording_id = response.json()["data"]["recording"]["id"]
    wait_for(lambda: len(items_of(hub, recording_id)) == 3, 40, "the recording to be queued to three providers", 0.3)
    with hub.admin() as admin:
        recording = admin.get(f"/api/v1/recordings/{recording_id}").json()["data"]
        original = admin.get(f"/api/v1/recordings/{recording_id}/file").content
    assert hashlib.sha256(original).hexdigest() == recording["sha256"]
    by_kind = {i["provider_kind"]: i for i in items_of(hub, recording_id)}
    synced = {kind: wait_synced(hub, found["id"], 60) for kind, found in by_kind.items()}
    for kind, done in synced.items():
        assert done["checksum_sha256"] == recording["sha256"] and done["verified_by"], (kind, done)
        assert done["bytes_sent"] == done["bytes_total"] == len(original) and done["progress"] == 1, (kind, done)
    assert moto_s3.client().get_object(Bucket=s3_bucket, Key=synced["s3"]["remote_key"])["Body"].read() == original
    assert (sftp_base / synced["sftp"]["remote_key"]).read_bytes() == original
    assert (offsite_dir / synced["local"]["remote_key"]).read_bytes() == original


def test_a_hub_killed_mid_upload_resumes_after_restart_without_sending_the_finished_parts_again(
    fleet: Fleet, moto_s3: MotoS3, s3_bucket: str, proxy: CountingProxy
) -> None:
    hub = fleet.hub
    size = 200 * MIB
    provider_id = s3_provider(hub, moto_s3, s3_bucket, endpoint=proxy.endpoint, rate_limit_bps=8 * MIB)
    recording_id, sha256 = stored_recording(hub, enroll_node(fleet), size)
    [queued] = enqueue(hub, recording_id, [provider_id])

    def far_enough() -> bool:
        return item(hub, queued["id"])["bytes_sent"] >= 72 * MIB

    wait_for(far_enough, 120, "the upload to pass 72 MB", interval=0.2)
    with hub.admin() as admin:
        status = admin.get("/api/v1/upload-runner").json()["data"]
    assert status["state"] == "running" and [a["item_id"] for a in status["active"]] == [queued["id"]], status
    assert status["throughput_bps"] > 0 and status["backlog"]["bytes"] < size and status["eta_s"] is not None, status
    client = moto_s3.client()
    [upload] = client.list_multipart_uploads(Bucket=s3_bucket)["Uploads"]
    parts = client.list_parts(Bucket=s3_bucket, Key=upload["Key"], UploadId=upload["UploadId"])["Parts"]
    held = sum(p["Size"] for p in parts)
    assert held >= 64 * MIB, parts

    assert hub.proc is not None
    hub.proc.kill()  # SIGKILL: the item stays `uploading` in the database, the multipart upload open at the server
    hub.proc.wait()
    hub.proc = None
    before_restart = proxy.take_count()
    assert before_restart >= held
    hub.start()

    done = wait_synced(hub, queued["id"], 180)
    after_restart = proxy.take_count()
    assert done["checksum_sha256"] == sha256 and done["remote_key"] == upload["Key"]
    assert done["attempts"] == 1, done  # the restart continued the attempt (a kill is not a failure)
    # The hub sent what the server lacked: at most the bytes not in the parts it held at the kill, plus the
    # requests' own headers (list_parts, complete); never the whole file again.
    assert after_restart <= size - held + 2 * MIB, (after_restart, size, held)
    assert before_restart + after_restart < size + 24 * MIB, (before_restart, after_restart)  # at most the parts in flight twice
    assert client.list_multipart_uploads(Bucket=s3_bucket).get("Uploads", []) == []
    assert s3_sha256(moto_s3, s3_bucket, upload["Key"]) == sha256
    assert "queued again" in hub.log()


def test_a_provider_answering_503_fails_items_with_the_reason_and_a_next_attempt_and_they_sync_when_it_recovers(
    fleet: Fleet, moto_s3: MotoS3, s3_bucket: str, proxy: CountingProxy
) -> None:
    hub = fleet.hub
    provider_id = s3_provider(hub, moto_s3, s3_bucket, endpoint=proxy.endpoint)
    node_id = enroll_node(fleet)
    proxy.set_failing(True)
    stored = [stored_recording(hub, node_id, size) for size in (3 * MIB, 20 * MIB)]  # a single PUT and a multipart upload
    queued = [enqueue(hub, recording_id, [provider_id])[0] for recording_id, _ in stored]

    def failed_with_a_next_attempt(item_id: str) -> dict[str, Any] | None:
        found = item(hub, item_id)
        return found if found["state"] == "failed" and found["next_attempt_at"] and found["last_error"] else None

    for each in queued:
        failed = wait_for(lambda each=each: failed_with_a_next_attempt(each["id"]), 90, "the item to fail", interval=0.3)
        assert "503" in failed["last_error"] or "unavailable" in failed["last_error"].lower(), failed
    proxy.set_failing(False)
    for each, (_, sha256) in zip(queued, stored, strict=True):
        done = wait_synced(hub, each["id"], 90)
        assert done["checksum_sha256"] == sha256 and done["attempts"] >= 2 and done["last_error"] is None, done
        assert s3_sha256(moto_s3, s3_bucket, done["remote_key"]) == sha256
    ids = {each["id"] for each in queued}
    failures = [e for e in stream_events(hub, "upload.failed") if e["id"] in ids]
    assert {e["id"] for e in failures} == ids and all(e["state"] == "failed" and e["last_error"] for e in failures)
    synced = [e for e in stream_events(hub, "upload.synced") if e["id"] in ids]
    assert {e["id"] for e in synced} == ids and all(e["site"] == "north" for e in synced)


def test_a_hub_stopped_mid_upload_gives_the_item_back_to_the_queue_and_continues_it_after_restart(
    fleet: Fleet, offsite_dir: Path
) -> None:
    hub = fleet.hub
    provider_id = add_provider(hub, "local", {"path": str(offsite_dir)}, {}, rate_limit_bps=4 * MIB)
    recording_id, sha256 = stored_recording(hub, enroll_node(fleet), 80 * MIB)  # 20 s at 4 MiB/s
    [queued] = enqueue(hub, recording_id, [provider_id])
    wait_for(lambda: item(hub, queued["id"])["bytes_sent"] >= 16 * MIB, 60, "the first 16 MiB to land", interval=0.2)
    assert hub.stop() == 0  # SIGTERM: the upload is cancelled between chunks and its item released
    with hub_database(hub):
        released = UploadItem.get_by_id(queued["id"])
        assert (released.state, released.attempts) == ("queued", 0)
        assert released.bytes_sent >= 16 * MIB and released.resume["offset"] == released.bytes_sent
    hub.start()
    done = wait_synced(hub, queued["id"], 60)
    assert done["checksum_sha256"] == sha256 and done["attempts"] == 1
    assert hashlib.sha256((offsite_dir / done["remote_key"]).read_bytes()).hexdigest() == sha256
