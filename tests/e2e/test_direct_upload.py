"""The direct route with real processes (issue 20): `hark-node` sends a recording from its cache straight to S3
(moto's standalone server) through requests `hark-hub` signs, and the hub never reads the bytes.

The node reaches the hub's HTTP only through a relay that forwards every request except the recording's own
upload to the hub (`HEAD|PUT /recordings/{id}/cache-file`, answered 503 while held back) and counts the body bytes
it forwarded. So while the direct upload runs the hub cannot have the file: when the item is synced, the object in
S3 must be the node's cached file byte for byte, the hub's data directory must hold no copy, and what reached the
hub must be a small fraction of the file (JSON calls only). If the hub (or the node, through the hub) carried the
bytes, these fail. Then the relay lets the node's own upload through, and the hub's copy matches S3's.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import http.server
import re
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hark_fleet.hub.db.models import UploadProvider
from hark_fleet.hub.ids import new_id
from hark_fleet.hub.secret_box import SecretBox

from tests.conftest import hub_database
from tests.direct_s3 import (
    PresignableMotoS3,
    presignable_s3_fixture,  # noqa: F401 - the fixture presignable_s3
)
from tests.e2e.conftest import Fleet
from tests.harness import HubProcess, wait_for

SOURCE = "synthetic:sine?freq=1000&dbfs=-20&channels=8"  # 8 x 24-bit x 48 kHz: 1.15 MB/s
DURATION_S = 9  # about 10 MB: two parts of the hub's 8 MiB
PART = 8 * 1024 * 1024  # the hub's part size for a file this small
HELD = re.compile(r"^/api/v1/recordings/[^/]+/cache-file$")


class HoldingRelay(http.server.ThreadingHTTPServer):
    """An HTTP relay on loopback to the hub: forwards every request, except recording uploads while `hold` is set."""

    daemon_threads = True

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.hold = True
        self.refused = 0  # upload requests answered 503 instead of reaching the hub
        self.forwarded_body_bytes = 0  # request body bytes that reached the hub through here
        self.lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _RelayHandler)
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def close(self) -> None:
        self.shutdown()
        self.server_close()


class _RelayHandler(http.server.BaseHTTPRequestHandler):
    server: HoldingRelay

    def _relay(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        path = self.path.split("?", 1)[0]
        if self.server.hold and HELD.match(path):
            with self.server.lock:
                self.server.refused += 1
            self.rfile.read(length)
            self._answer(503, {"Content-Type": "application/json"}, b'{"error": {"code": "unavailable", "message": "held"}}')
            return
        body = self.rfile.read(length) if length else None
        with self.server.lock:
            self.server.forwarded_body_bytes += length
        upstream = http.client.HTTPConnection("127.0.0.1", self.server.upstream_port, timeout=60)
        try:
            headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
            upstream.request(self.command, self.path, body=body, headers=headers)
            answer = upstream.getresponse()
            data = answer.read()
            skip = ("transfer-encoding", "connection", "content-length")
            self._answer(answer.status, {k: v for k, v in answer.getheaders() if k.lower() not in skip}, data)
        finally:
            upstream.close()

    def _answer(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_HEAD = do_PATCH = do_DELETE = _relay

    def log_message(self, *args: Any) -> None:
        pass


class ThrottledLink:
    """A TCP relay on loopback in front of the S3 server: what goes up is paced to `rate_bps` and counted."""

    def __init__(self, upstream_port: int, rate_bps: int) -> None:
        self.upstream_port = upstream_port
        self.rate_bps = rate_bps
        self.sent_up = 0  # bytes from clients (the hub's S3 calls, the node's parts) to the server
        self.lock = threading.Lock()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.listener.getsockname()[1]}"

    def _accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, up: bool) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(16384):
                if up:
                    with self.lock:
                        self.sent_up += len(data)
                    time.sleep(len(data) / self.rate_bps)
                sink.sendall(data)
        for end in (source, sink):
            with contextlib.suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.closed = True
        self.listener.close()


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    """A hub with the embedded broker whose upload runner looks at the queue every second."""
    running = Fleet(tmp_path, None)
    running.hub.env_extra.update({"HARK_UPLOAD_PASS_INTERVAL_S": "1"})
    running.hub.start()
    yield running
    running.stop()


def s3_provider(hub: HubProcess, s3: PresignableMotoS3, bucket: str, endpoint: str | None = None) -> str:
    """An S3 provider on the moto server (or `endpoint` in front of it), its secret sealed with the hub's key as the
    settings API does."""
    provider_id = new_id("upv")
    box = SecretBox.open_dir(hub.data_dir)
    with hub_database(hub):
        UploadProvider.create(
            id=provider_id,
            name=f"archive-{provider_id[-6:]}",
            kind="s3",
            config={**s3.provider_config(bucket), **({"endpoint_url": endpoint} if endpoint else {})},
            sealed_secrets=box.seal(s3.provider_secrets(), f"upload_provider:{provider_id}"),
            secret_names=["secret_access_key"],
        )
    return provider_id


def direct_policy(hub: HubProcess, provider_id: str) -> None:
    hub.ensure_site("north")
    body = {
        "name": f"direct-{uuid.uuid4().hex[:6]}",
        "provider_ids": [provider_id],
        "route": "direct",
        "criteria": {"sites": ["north"]},
    }
    with hub.admin() as admin:
        policy = admin.post("/api/v1/settings/upload-policies", json=body)
    assert policy.status_code == 201, policy.text


def admin_get(hub: HubProcess, path: str, **params: Any) -> Any:
    with hub.admin() as admin:
        response = admin.get(path, params=params)
    assert response.status_code == 200, response.text
    return response.json()["data"]


def test_a_recording_goes_from_the_nodes_cache_straight_to_s3_and_the_hub_never_reads_it(
    fleet: Fleet, presignable_s3: PresignableMotoS3
) -> None:
    hub = fleet.hub
    bucket = presignable_s3.create_bucket()
    direct_policy(hub, s3_provider(hub, presignable_s3, bucket))
    relay = HoldingRelay(hub.port)
    try:
        node = fleet.enroll(HARK_NODE_AUDIO_SOURCE=SOURCE)
        node.hub_url = relay.url  # all its HTTP goes through the relay; MQTT goes straight to the hub's broker
        node.start()
        fleet.wait_status(node, "online", timeout=30)
        with hub.admin() as admin:
            created = admin.post("/api/v1/recordings", json={"node_id": node.node_id, "duration_s": DURATION_S})
        assert created.status_code == 201, created.text
        recording_id = created.json()["data"]["recording"]["id"]

        def synced() -> dict[str, Any] | None:
            items = admin_get(hub, "/api/v1/upload-queue", recording_id=recording_id)
            return items[0] if items and items[0]["state"] == "synced" else None

        try:
            item = wait_for(synced, 150, "the direct upload to be synced", interval=0.5)
        except AssertionError as err:
            items = admin_get(hub, "/api/v1/upload-queue", recording_id=recording_id)
            raise AssertionError(
                f"{err}\n{items}\n--- node ---\n{node.log()[-4000:]}\n--- hub ---\n{hub.log()[-4000:]}"
            ) from None

        # at this moment the hub has never had the file
        held = admin_get(hub, f"/api/v1/recordings/{recording_id}")
        assert held["status"] == "uploading" and held["sha256"] is None, held
        assert relay.refused > 0  # the node did try to upload to the hub, and was held back
        cached = node.workdir / "data" / "recordings" / recording_id / f"{recording_id}.wav"
        data = cached.read_bytes()
        assert len(data) > 8 * 1024 * 1024, len(data)  # a multipart upload
        assert relay.forwarded_body_bytes < len(data) // 20, (relay.forwarded_body_bytes, len(data))
        copies = [p for p in hub.data_dir.rglob(f"*{recording_id}*") if p.is_file()]
        assert copies == [], copies

        # and S3 holds exactly the node's file, verified by the part checksums the hub signed
        digest = hashlib.sha256(data).hexdigest()
        assert item["verified_by"] == "s3-part-checksums" and item["checksum_sha256"] == digest, item
        assert item["route"] == "direct" and item["bytes_sent"] == len(data), item
        stored = presignable_s3.client().get_object(Bucket=bucket, Key=item["remote_key"])["Body"].read()
        assert stored == data

        # once let through, the node's own upload gives the hub the same file
        relay.hold = False

        def completed() -> dict[str, Any] | None:
            recording: dict[str, Any] = admin_get(hub, f"/api/v1/recordings/{recording_id}")
            return recording if recording["status"] == "completed" else None

        on_hub = wait_for(completed, 120, "the recording to reach the hub", interval=0.5)
        assert on_hub["sha256"] == digest
    finally:
        relay.close()


def test_a_node_killed_mid_upload_sends_only_the_parts_s3_does_not_hold_after_its_restart(
    fleet: Fleet, presignable_s3: PresignableMotoS3
) -> None:
    hub = fleet.hub
    bucket = presignable_s3.create_bucket()
    link = ThrottledLink(presignable_s3.port, rate_bps=512 * 1024)  # part 1 (8 MiB) takes 16 s, part 2 (2 MiB) 4 s
    try:
        direct_policy(hub, s3_provider(hub, presignable_s3, bucket, endpoint=link.endpoint))
        node = fleet.enroll(HARK_NODE_AUDIO_SOURCE=SOURCE)
        node.start()
        fleet.wait_status(node, "online", timeout=30)
        with hub.admin() as admin:
            created = admin.post("/api/v1/recordings", json={"node_id": node.node_id, "duration_s": DURATION_S})
        assert created.status_code == 201, created.text
        recording_id = created.json()["data"]["recording"]["id"]

        def item() -> dict[str, Any] | None:
            items = admin_get(hub, "/api/v1/upload-queue", recording_id=recording_id)
            return items[0] if items else None

        def part_one_on_s3() -> dict[str, Any] | None:
            now = item()
            return now if now is not None and now["bytes_sent"] >= PART else None

        during = wait_for(part_one_on_s3, 150, "the first part to reach S3", interval=0.1)
        node.kill()  # a power cut while part 2 is on its way
        assert during["state"] == "uploading", during
        before_restart = link.sent_up
        node.start()

        def synced() -> dict[str, Any] | None:
            now = item()
            return now if now is not None and now["state"] == "synced" else None

        try:
            done = wait_for(synced, 150, "the direct upload to be synced after the restart", interval=0.5)
        except AssertionError as err:
            raise AssertionError(f"{err}\n{item()}\n--- node ---\n{node.log()[-4000:]}") from None
        resent = link.sent_up - before_restart
        data = (node.workdir / "data" / "recordings" / recording_id / f"{recording_id}.wav").read_bytes()
        # Never part 1 again. Part 2 goes up again in full, unless the killed process's socket buffer still held the
        # rest of it: the kernel delivers that after the kill, S3 completes the part, and the restarted node only lists it.
        assert 0 < resent < PART, (resent, len(data))
        assert presignable_s3.client().get_object(Bucket=bucket, Key=done["remote_key"])["Body"].read() == data
        assert done["checksum_sha256"] == hashlib.sha256(data).hexdigest() and done["attempts"] == 1, done
    finally:
        link.close()
