"""A really full data disk (the hub's data dir on a small tmpfs, filled, then freed): reads go on, writes answer 507,
readiness and a hub health event say why, and everything recovers by itself once space returns."""

from __future__ import annotations

import errno
import json
import os
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from hark_fleet.hub.app import ROUTES
from hark_fleet.hub.clock import utcnow
from hark_fleet.hub.db.models import ApiKey, AuthSession

from tests.conftest import hub_database
from tests.harness import ADMIN_PASSWORD, HubProcess, create_database, drop_database, tmpfs, wait_for
from tests.hub.api.test_fleet import now_iso
from tests.hub.api.test_recording_upload import (
    completed_recording,
    enroll,
    put_chunk,
    sine_wav,
    stored_path,
    uploading_recording,
)
from tests.node.fakes import close, mqtt_client

STORAGE_EVENT = "hub.storage_full"


@pytest.fixture(params=["sqlite", "postgres"])
def hub_on_small_disk(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[HubProcess]:
    """A hub whose data dir is a 48 MB tmpfs (needs root), its database in it or on PostgreSQL; stopped, then unmounted."""
    url = create_database() if request.param == "postgres" else None
    hub = HubProcess(tmp_path / "hub", database_url=url)
    code = 0
    try:
        with tmpfs(hub.data_dir, "48m"):
            hub.start()
            try:
                yield hub
            finally:
                code = hub.stop()
    finally:
        if url:
            drop_database(url)
    assert code == 0, f"hark-hub exited with {code}:\n{hub.log()}"


def fill(directory: Path) -> Path:
    """Write a new file until the disk has no byte left; return it."""
    filler = directory / f"filler-{len(list(directory.glob('filler-*')))}.bin"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for block in (1024 * 1024, 4096, 1):
            data = b"\0" * block
            while True:
                try:
                    os.write(fd, data)
                except OSError as err:
                    assert err.errno == errno.ENOSPC
                    break
    finally:
        os.close(fd)
    return filler


def storage_check(hub: HubProcess) -> dict[str, Any]:
    return dict(httpx.get(f"{hub.url}/readyz").json()["checks"].get("storage", {}))


def storage_events(api: httpx.Client) -> list[dict[str, Any]]:
    answer = api.get("/api/v1/health-events", params={"kind": STORAGE_EVENT})
    assert answer.status_code == 200, answer.text
    return list(answer.json()["data"])


def test_a_full_data_disk_keeps_reads_refuses_writes_with_507_and_recovers_by_itself(hub_on_small_disk: HubProcess) -> None:
    hub = hub_on_small_disk
    node_id, credential = enroll(hub)
    stored, _ = completed_recording(hub, node=(node_id, credential))
    kept, kept_wav = completed_recording(hub, node=(node_id, credential))
    stored_file = stored_path(hub, stored)
    pending = uploading_recording(hub, node=(node_id, credential))
    wav = sine_wav(1.0)
    with hub.admin() as admin:
        answer = admin.post("/api/v1/auth/keys", json={"name": "reader", "scopes": ["node:read", "recording:read"]})
        assert answer.status_code == 201, answer.text
        key = answer.json()["data"]["secret"]
    session = hub.login()
    with hub_database(hub):  # long unused: the next request would stamp them (a write) on every path
        AuthSession.update(last_used_at=utcnow() - timedelta(hours=1)).execute()
        ApiKey.update(last_used_at=utcnow() - timedelta(hours=1)).execute()
    assert storage_check(hub) == {"ok": True}

    filler = fill(hub.data_dir)
    body = wait_for(lambda: (c := storage_check(hub)) and not c["ok"] and c, 15, "readyz to report the full disk")
    assert "full" in body["reason"] and str(hub.data_dir) in body["reason"]
    assert httpx.get(f"{hub.url}/readyz").status_code == 503

    # on the hub's reserve: the event is recorded, and an operator can log in and delete recordings to make room
    operator = httpx.post(f"{hub.url}/api/v1/auth/login", json={"username": "admin", "password": ADMIN_PASSWORD})
    assert operator.status_code == 200, operator.text
    with hub.client(operator.json()["data"]["token"]) as api:
        [event] = storage_events(api)
        assert api.delete(f"/api/v1/recordings/{stored.recording_id}").status_code == 204
    assert (event["severity"], event["state"], event["node_id"]) == ("critical", "open", None)
    assert event["details"]["path"] == str(hub.data_dir)
    assert not stored_file.exists()

    # then not one byte left, not even the reserve: reads go on for sessions, API keys and nodes
    second = fill(hub.data_dir)
    with hub.client(session) as api:
        for path in ("/api/v1/auth/me", "/api/v1/nodes", f"/api/v1/nodes/{node_id}", "/api/v1/recordings"):
            assert api.get(path).status_code == 200, (path, api.get(path).text)
        waveform = api.get(f"/api/v1/recordings/{kept.recording_id}/waveform", params={"buckets": 77})
        assert waveform.status_code == 200 and waveform.json()["data"]["buckets"] == 77  # computed, not cached
        assert api.get(f"/api/v1/recordings/{kept.recording_id}/file").content == kept_wav
        for template, handler in ROUTES:  # every read without a path parameter: never a 500
            if "{" in template or "get" not in handler.permissions or template == "/readyz":
                continue
            with api.stream("GET", template) as answer:  # streams (SSE) answer their status at once
                assert answer.status_code < 500, (template, answer.status_code, answer.read())
        assert storage_events(api)[0]["state"] == "open"
    with hub.client(key) as api:
        assert api.get("/api/v1/nodes").status_code == 200
    with hub.client(credential) as node:
        assert node.get(f"/api/v1/nodes/{node_id}/config").status_code == 200
    if hub.database_url is None:  # the stamps were due and had no room (PostgreSQL has its own disk)
        assert "optional write to auth_session" in hub.log() and "optional write to api_key" in hub.log()
    # a wrong token is still a 401, though its audit line cannot be written
    assert httpx.get(f"{hub.url}/api/v1/nodes", headers={"Authorization": "Bearer ses_wrong"}).status_code == 401

    # writes answer 507 with the reason, uploads included; a login too once the database has no room
    login = httpx.post(f"{hub.url}/api/v1/auth/login", json={"username": "admin", "password": ADMIN_PASSWORD})
    assert login.status_code == (507 if hub.database_url is None else 200), login.text
    with hub.client(session) as api:
        for answer in (
            api.patch(f"/api/v1/nodes/{node_id}", json={"name": "renamed"}),
            api.post("/api/v1/auth/keys", json={"name": "another", "scopes": ["node:read"]}),
            *([login] if hub.database_url is None else []),
        ):
            assert answer.status_code == 507, answer.text
            error = answer.json()["error"]
            assert error["code"] == "insufficient_storage" and "disk" in error["message"]
    refused = put_chunk(hub, pending, wav, 0, len(wav) - 1)
    assert refused.status_code == 507 and refused.json()["error"]["code"] == "insufficient_storage", refused.text

    # space returns: ready again, the event resolved, writes work
    filler.unlink()
    second.unlink()
    wait_for(lambda: storage_check(hub) == {"ok": True}, 15, "readyz to see the space back")
    assert httpx.get(f"{hub.url}/readyz").status_code == 200
    with hub.client(session) as api:
        [event] = storage_events(api)
        assert event["state"] == "resolved"
        assert api.patch(f"/api/v1/nodes/{node_id}", json={"name": "renamed"}).status_code == 200
    done = put_chunk(hub, pending, wav, 0, len(wav) - 1)
    assert done.status_code == 200 and done.headers["Upload-Complete"] == "true", done.text
    fresh = httpx.post(f"{hub.url}/api/v1/auth/login", json={"username": "admin", "password": ADMIN_PASSWORD})
    assert fresh.status_code == 200, fresh.text
    assert "Traceback" not in hub.log()


def leave_free(directory: Path, free_bytes: int) -> Path:
    """A file that leaves about `free_bytes` free on the disk of `directory`; return it."""
    stats = os.statvfs(directory)
    filler = directory / "filler-leave.bin"
    with filler.open("wb") as handle:
        handle.write(b"\0" * max(0, stats.f_bavail * stats.f_frsize - free_bytes))
    return filler


def test_an_upload_that_runs_out_of_space_midway_answers_507_and_resumes_once_space_returns(
    hub_on_small_disk: HubProcess,
) -> None:
    hub = hub_on_small_disk
    take = uploading_recording(hub)
    data = sine_wav(90.0)  # 26 MB: more than is left, while the disk does not count as full yet
    filler = leave_free(hub.data_dir, 20 * 1024 * 1024)
    assert storage_check(hub) == {"ok": True}

    answer = put_chunk(hub, take, data, 0, len(data) - 1)
    assert answer.status_code == 507, answer.text
    assert answer.json()["error"]["code"] == "insufficient_storage"
    wait_for(lambda: not storage_check(hub)["ok"], 10, "the failed write to count as a full disk")

    filler.unlink()
    wait_for(lambda: storage_check(hub) == {"ok": True}, 15, "readyz to see the space back")
    with hub.client(take.credential) as node:
        offset = int(node.head(f"/api/v1/recordings/{take.recording_id}/cache-file").headers["Upload-Offset"])
    assert 0 < offset < len(data)  # what reached the disk stays; the node resumes from there
    done = put_chunk(hub, take, data, offset, len(data) - 1)
    assert done.status_code == 200 and done.headers["Upload-Complete"] == "true", done.text
    assert stored_path(hub, take).read_bytes() == data
    assert "Traceback" not in hub.log()


def test_a_hub_restarted_on_a_full_disk_starts_serves_reads_and_says_why(hub_on_small_disk: HubProcess) -> None:
    hub = hub_on_small_disk
    node_id, _ = enroll(hub)
    session = hub.login()
    assert hub.stop() == 0, hub.log()
    filler = fill(hub.data_dir)  # as systemd restarts a hub whose disk filled up

    hub.start(wait_ready=False)
    body = wait_for(lambda: _readiness(hub), 30, "the hub to answer /readyz\n" + hub.log())
    assert not body["checks"]["storage"]["ok"] and body["checks"]["database"] == {"ok": True}
    with hub.client(session) as api:
        assert api.get(f"/api/v1/nodes/{node_id}").status_code == 200
        [event] = storage_events(api)
        assert event["state"] == "open"
        assert api.patch(f"/api/v1/nodes/{node_id}", json={"name": "x"}).status_code == 507
    assert "damaged" not in hub.log() and "Traceback" not in hub.log()

    filler.unlink()
    wait_for(lambda: storage_check(hub) == {"ok": True}, 15, "readyz to see the space back")


def _readiness(hub: HubProcess) -> dict[str, Any] | None:
    assert hub.proc is not None and hub.proc.poll() is None, f"the hub exited:\n{hub.log()}"
    try:
        return dict(httpx.get(f"{hub.url}/readyz", timeout=2).json())
    except httpx.HTTPError:
        return None


def test_telemetry_the_full_disk_cannot_take_is_logged_once_and_stored_once_space_returns(tmp_path: Path) -> None:
    hub = HubProcess(tmp_path / "hub")
    with tmpfs(hub.data_dir, "48m"):
        hub.start()
        try:
            node_id, credential = enroll(hub)
            box = mqtt_client("127.0.0.1", hub.mqtt_port, node_id, credential, client_id=node_id)
            try:
                filler = fill(hub.data_dir)
                second = None
                wait_for(lambda: not storage_check(hub)["ok"], 15, "readyz to report the full disk")
                second = fill(hub.data_dir)  # the reserve given up for the event is taken too
                for seq in range(1, 60):  # 6 s of heartbeats at 10 a second, none of which can be stored
                    beat = {"msg_id": f"full-{seq}", "ts": now_iso(), "seq": seq, "agent_version": "0.1.0", "uptime_s": seq}
                    box.publish(f"hark/v1/nodes/{node_id}/heartbeat", json.dumps(beat), qos=1)
                    time.sleep(0.1)
                lines = [line for line in hub.log().splitlines() if "could not store" in line]
                assert 0 < len(lines) <= 2, lines
                filler.unlink()
                second.unlink()
                wait_for(lambda: storage_check(hub)["ok"], 15, "readyz to see the space back")
                beat = {"msg_id": "after", "ts": now_iso(), "seq": 99, "agent_version": "0.1.0", "uptime_s": 99.0}
                box.publish(f"hark/v1/nodes/{node_id}/heartbeat", json.dumps(beat), qos=1)
                with hub.admin() as admin:
                    wait_for(
                        lambda: admin.get(f"/api/v1/nodes/{node_id}").json()["data"]["status"] == "online", 15, "the node online"
                    )
            finally:
                close(box)
        finally:
            code = hub.stop()
    assert code == 0, hub.log()
