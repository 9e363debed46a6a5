"""`GET /api/v1/status`: the fleet at a glance, counted per status and severity, scoped to the caller's sites,
with hours of storage left from the nodes' heartbeats and from the recordings the hub is taking in."""

from __future__ import annotations

import uuid
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import pytest

from tests.harness import HubProcess, wait_for

STATUS = "/api/v1/status"
PASSWORD = "status-test-password"


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def enroll(hub: HubProcess, site: str) -> tuple[str, str]:
    hub.ensure_site(site)
    with hub.admin() as admin:
        response = admin.post("/api/v1/nodes/enroll", json={"name": unique("box"), "site": site})
    assert response.status_code == 201, response.text
    data = response.json()["data"]
    return data["node"]["id"], data["credential"]


def heartbeat(hub: HubProcess, node_id: str, credential: str, **extra: Any) -> None:
    body = {"msg_id": unique("hb"), "ts": now_iso(), "seq": 1, "agent_version": "0.1.0", "uptime_s": 5.0, **extra}
    with hub.client(credential) as node:
        response = node.post(f"/api/v1/nodes/{node_id}/heartbeat", json=body)
    assert response.status_code == 200, response.text


def status(hub: HubProcess, token: str | None = None) -> dict[str, Any]:
    with hub.client(token) if token else hub.admin() as client:
        response = client.get(STATUS)
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()["data"]
    return data


def site_viewer(hub: HubProcess, site: str) -> str:
    username = unique("viewer")
    with hub.admin() as admin:
        body = {"username": username, "password": PASSWORD, "roles": ["viewer"], "sites": [site]}
        assert admin.post("/api/v1/auth/users", json=body).status_code == 201
    return hub.login(username, PASSWORD)


def raise_event(hub: HubProcess, node_id: str, severity: str, kind: str | None = None) -> None:
    with hub.admin() as admin:
        body = {"kind": kind or unique("test.condition"), "severity": severity, "node_id": node_id}
        response = admin.post("/api/v1/health-events", json=body)
    assert response.status_code == 201, response.text


@pytest.fixture
def site(hub: HubProcess) -> str:
    name = unique("st")
    hub.ensure_site(name)
    return name


def test_the_status_counts_nodes_by_status_and_matches_the_node_list(hub: HubProcess, site: str) -> None:
    online, credential = enroll(hub, site)
    enroll(hub, site)  # never connected: pending
    heartbeat(hub, online, credential)
    nodes = status(hub, site_viewer(hub, site))["nodes"]
    assert nodes == {"total": 2, "by_status": {"pending": 1, "online": 1, "degraded": 0, "offline": 0}}

    def same_as_the_list() -> bool:  # read again if a node changed status between the two reads
        counted = status(hub)["nodes"]["by_status"]
        with hub.admin() as admin:
            listed = admin.get("/api/v1/nodes", params={"limit": 200}).json()["data"]
        return {s: n for s, n in counted.items() if n} == dict(Counter(n["status"] for n in listed))

    wait_for(same_as_the_list, 10, "the status's counts to match the node list")


def test_open_events_are_counted_by_severity_and_resolved_ones_are_not(hub: HubProcess, site: str) -> None:
    node_id, _ = enroll(hub, site)
    viewer = site_viewer(hub, site)
    raise_event(hub, node_id, "critical")
    raise_event(hub, node_id, "warning")
    raise_event(hub, node_id, "warning")
    events = status(hub, viewer)["health_events"]
    assert events["by_severity"] == {"critical": 1, "warning": 2, "info": 0} and events["total"] == 3
    assert events["on_nodes"]["warning"] == {"events": 2, "nodes": 1}
    with hub.admin() as admin:
        open_critical = admin.get("/api/v1/health-events", params={"node_id": node_id, "severity": "critical"}).json()["data"]
        assert admin.post(f"/api/v1/health-events/{open_critical[0]['id']}/resolve").status_code == 200
    assert status(hub, viewer)["health_events"]["by_severity"] == {"critical": 0, "warning": 2, "info": 0}


def test_recordings_of_the_last_day_are_counted_by_status(hub: HubProcess, site: str) -> None:
    node_id, _ = enroll(hub, site)
    viewer = site_viewer(hub, site)
    with hub.admin() as admin:
        for _ in range(2):
            assert admin.post("/api/v1/recordings", json={"node_id": node_id}).status_code == 201
        stopped = admin.post("/api/v1/recordings", json={"node_id": node_id}).json()["data"]["recording"]
        assert admin.post(f"/api/v1/recordings/{stopped['id']}/stop").status_code == 200
    recordings = status(hub, viewer)["recordings"]
    assert recordings["hours"] == 24 and recordings["total"] == 3
    assert (recordings["by_status"]["queued"], recordings["by_status"]["cancelled"]) == (2, 1)


def test_a_site_limited_caller_sees_only_its_sites_numbers(hub: HubProcess, site: str) -> None:
    other = unique("st")
    mine, _ = enroll(hub, site)
    theirs, _ = enroll(hub, other)
    enroll(hub, other)
    raise_event(hub, theirs, "critical")
    with hub.admin() as admin:
        assert admin.post("/api/v1/recordings", json={"node_id": theirs}).status_code == 201
    seen = status(hub, site_viewer(hub, site))
    assert seen["nodes"]["total"] == 1 and seen["nodes"]["by_status"]["pending"] == 1
    assert seen["health_events"]["total"] == 0 and seen["recordings"]["total"] == 0
    assert [n["node_id"] for n in seen["storage"]["nodes"]["nodes"]] == [mine]
    assert status(hub, site_viewer(hub, other))["nodes"]["total"] == 2


def test_node_hours_left_come_from_their_heartbeats_lowest_first(hub: HubProcess, site: str) -> None:
    low, low_credential = enroll(hub, site)
    high, high_credential = enroll(hub, site)
    idle, idle_credential = enroll(hub, site)
    disk = {"path": "/var/lib/hark", "used_pct": 80.0, "free_bytes": 1_728_000_000}
    heartbeat(hub, high, high_credential, disk=disk, disk_hours_left=100.0, recording_bytes_per_s=4800.0)
    heartbeat(hub, low, low_credential, disk=disk, disk_hours_left=1.5, recording_bytes_per_s=320_000.0)
    heartbeat(hub, idle, idle_credential, disk=disk)
    storage = status(hub, site_viewer(hub, site))["storage"]["nodes"]
    assert [n["node_id"] for n in storage["nodes"]] == [low, high, idle]
    first = storage["nodes"][0]
    assert (first["hours_left"], first["recording_bytes_per_s"], first["free_bytes"]) == (1.5, 320_000.0, 1_728_000_000)
    assert storage["nodes"][2]["hours_left"] is None
    assert (storage["recording"], storage["under_warning"], storage["under_critical"]) == (2, 1, 1)
    assert storage["lowest_hours_left"] == 1.5


def test_hub_hours_left_follow_the_rate_of_the_recordings_in_progress(hub: HubProcess, site: str) -> None:
    node_id, credential = enroll(hub, site)
    idle = status(hub)["storage"]["hub"]
    assert 0 < idle["free_bytes"] <= idle["total_bytes"] and idle["full"] is False
    with hub.admin() as admin:
        assert admin.post("/api/v1/recordings", json={"node_id": node_id}).status_code == 201
    with hub.client(credential) as node:
        job = node.post(f"/api/v1/nodes/{node_id}/recording-jobs/claim-next", json={}).json()["data"]["job"]
        progress = {"bytes": 2_880_000, "seconds": 10.0}  # 288,000 bytes a second: 48 kHz, 24 bit, 2 channels
        body = {"lease_epoch": job["lease_epoch"], "state": "recording", "progress": progress}
        assert node.post(f"/api/v1/recording-jobs/{job['id']}/heartbeat", json=body).status_code == 200
    hub_storage = status(hub)["storage"]["hub"]
    assert hub_storage["recordings_in_progress"] == idle["recordings_in_progress"] + 1
    assert hub_storage["recording_bytes_per_s"] == idle["recording_bytes_per_s"] + 288_000.0
    expected = hub_storage["free_bytes"] / hub_storage["recording_bytes_per_s"] / 3600
    assert hub_storage["hours_left"] == pytest.approx(expected, abs=0.01)


def test_the_status_has_the_hub_broker_and_database_state(hub: HubProcess) -> None:
    data = status(hub)
    assert set(data) == {"nodes", "health_events", "recordings", "upload_backlog", "storage", "hub", "broker", "database"}
    assert data["hub"]["version"] and 0 < data["hub"]["uptime_s"]
    assert data["broker"] == {"kind": "embedded", "url": f"mqtt://127.0.0.1:{hub.mqtt_port}", "connected": True}
    expected_kind = "postgresql" if hub.database_url else "sqlite"
    assert data["database"] == {"kind": expected_kind, "reachable": True}
    assert set(data["upload_backlog"]) == {"count", "bytes", "bytes_known_for"}


def test_the_upload_backlog_counts_recordings_uploading_and_their_bytes_left(hub: HubProcess, site: str) -> None:
    node_id, credential = enroll(hub, site)
    viewer = site_viewer(hub, site)
    with hub.admin() as admin:
        assert admin.post("/api/v1/recordings", json={"node_id": node_id}).status_code == 201
    with hub.client(credential) as node:
        job = node.post(f"/api/v1/nodes/{node_id}/recording-jobs/claim-next", json={}).json()["data"]["job"]
        for state, progress in [("recording", {"seconds": 1}), ("uploading", {"bytes": 1_000, "total": 5_000})]:
            body = {"lease_epoch": job["lease_epoch"], "state": state, "progress": progress}
            response = node.post(f"/api/v1/recording-jobs/{job['id']}/heartbeat", json=body)
            assert response.status_code == 200, response.text
    assert status(hub, viewer)["upload_backlog"] == {"count": 1, "bytes": 4_000, "bytes_known_for": 1}


def test_the_status_needs_credentials(hub: HubProcess) -> None:
    with hub.client() as anonymous:
        assert anonymous.get(STATUS).status_code == 401
