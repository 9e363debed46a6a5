"""Deleting a node safely: the preview and the 409 name what stands in the way (recordings in progress or
uploading, recording and lifecycle jobs not finished, uploads not finished, open health events), and a
forced delete ends each of them, each with its own audit entry, before the node goes."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from tests.harness import HubProcess

NODES = "/api/v1/nodes"


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


@pytest.fixture
def node(hub: HubProcess) -> tuple[str, str]:
    """A node never connected (pending), so only what is queued for it stands in the way."""
    with hub.admin() as admin:
        response = admin.post(f"{NODES}/enroll", json={"name": unique("doomed")})
    assert response.status_code == 201, response.text
    data = response.json()["data"]
    return data["node"]["id"], data["credential"]


def record(hub: HubProcess, node_id: str, name: str) -> dict[str, Any]:
    with hub.admin() as admin:
        response = admin.post("/api/v1/recordings", json={"node_id": node_id, "name": name})
    assert response.status_code == 201, response.text
    data: dict[str, Any] = response.json()["data"]
    return data


def preview(hub: HubProcess, node_id: str) -> dict[str, Any]:
    with hub.admin() as admin:
        response = admin.get(f"{NODES}/{node_id}/delete-preview")
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()["data"]
    return data


def audit(hub: HubProcess, **params: str) -> list[dict[str, Any]]:
    with hub.admin() as admin:
        rows: list[dict[str, Any]] = admin.get("/api/v1/audit-events", params=params).json()["data"]
    return rows


def test_delete_without_force_on_a_node_with_a_queued_job_is_409_naming_the_job(hub: HubProcess, node: tuple[str, str]) -> None:
    node_id, _ = node
    job = record(hub, node_id, "Dawn chorus")["job"]
    with hub.admin() as admin:
        refused = admin.delete(f"{NODES}/{node_id}")
        assert refused.status_code == 409, refused.text
        error = refused.json()["error"]
        assert error["code"] == "conflict"
        assert job["id"] in error["message"] and "Dawn chorus" in error["message"]
        assert [j["id"] for j in error["blockers"]["jobs"]] == [job["id"]]
        assert error["reasons"] == ["1 recording queued, in progress or still uploading"]
        assert admin.get(f"{NODES}/{node_id}").status_code == 200
        assert admin.get(f"/api/v1/recording-jobs/{job['id']}").json()["data"]["state"] == "queued"


def test_the_preview_names_every_blocker_by_id(hub: HubProcess, node: tuple[str, str]) -> None:
    node_id, credential = node
    queued = record(hub, node_id, "Queued take")["job"]
    uploading = record(hub, node_id, "Uploading take")
    with hub.client(credential) as box:
        claimed = box.post(f"{NODES}/{node_id}/recording-jobs/claim-next", json={}).json()["data"]["job"]
        assert claimed["id"] == queued["id"]  # oldest first: the queued take is claimed, the other stays queued
        for state, progress in [("recording", {"seconds": 1}), ("uploading", {"bytes": 100, "total": 1000})]:
            body = {"lease_epoch": claimed["lease_epoch"], "state": state, "progress": progress}
            assert box.post(f"/api/v1/recording-jobs/{claimed['id']}/heartbeat", json=body).status_code == 200
    with hub.admin() as admin:
        lifecycle = admin.post(f"{NODES}/{node_id}/lifecycle/identify")
        assert lifecycle.status_code == 202, lifecycle.text
        event = admin.post("/api/v1/health-events", json={"kind": "disk.low", "severity": "warning", "node_id": node_id})
        assert event.status_code == 201, event.text
    data = preview(hub, node_id)
    blockers = data["blockers"]
    assert [(j["kind"], j["id"], j["state"]) for j in blockers["jobs"]] == [
        ("recording", queued["id"], "uploading"),
        ("recording", uploading["job"]["id"], "queued"),
        ("lifecycle", lifecycle.json()["data"]["id"], "queued"),
    ]
    assert blockers["jobs"][2]["label"] == "identify" and blockers["jobs"][1]["label"] == "Uploading take"
    assert [(r["name"], r["status"]) for r in blockers["active_recordings"]] == [("Queued take", "uploading")]
    upload = {"recording_id": queued["recording_id"], "job_id": queued["id"], "name": "Queued take"}
    assert blockers["pending_uploads"] == [{**upload, "bytes_sent": 100, "bytes_total": 1000}]
    assert [(e["id"], e["kind"]) for e in blockers["health_events"]] == [(event.json()["data"]["id"], "disk.low")]
    assert data["requires_force"] is True
    assert data["reasons"] == [
        "1 open health event",
        "2 recordings queued, in progress or still uploading",
        "1 lifecycle job queued or running",
    ]
    counts = data["dependents"]
    assert (counts["unfinished_recording_jobs"], counts["unfinished_lifecycle_jobs"]) == (2, 1)
    assert (counts["active_recordings"], counts["pending_uploads"], counts["open_health_events"]) == (1, 1, 1)


def test_force_cancels_the_jobs_resolves_the_events_and_audits_each(hub: HubProcess, node: tuple[str, str]) -> None:
    node_id, credential = node
    first = record(hub, node_id, "Taken and uploading")
    second = record(hub, node_id, "Still queued")
    with hub.client(credential) as box:
        claimed = box.post(f"{NODES}/{node_id}/recording-jobs/claim-next", json={}).json()["data"]["job"]
        body = {"lease_epoch": claimed["lease_epoch"], "state": "uploading", "progress": {"bytes": 0, "total": 10}}
        assert box.post(f"/api/v1/recording-jobs/{claimed['id']}/heartbeat", json=body).status_code == 200
    with hub.admin() as admin:
        lifecycle = admin.post(f"{NODES}/{node_id}/lifecycle/identify").json()["data"]
        event = admin.post("/api/v1/health-events", json={"kind": "temperature.high", "severity": "critical", "node_id": node_id})
        event_id = event.json()["data"]["id"]
        assert admin.delete(f"{NODES}/{node_id}", params={"force": "true"}).status_code == 204
        assert admin.get(f"{NODES}/{node_id}").status_code == 404
        for made in (first, second):
            job = admin.get(f"/api/v1/recording-jobs/{made['job']['id']}").json()["data"]
            assert (job["state"], job["error"]) == ("cancelled", "the node was deleted")
            recording = admin.get(f"/api/v1/recordings/{made['recording']['id']}").json()["data"]
            assert recording["status"] == "cancelled"
    for made in (first, second):
        cancelled = audit(hub, target_id=made["job"]["id"], action="recording.job.cancelled")
        assert len(cancelled) == 1 and cancelled[0]["actor"]["name"] == "admin"
        assert cancelled[0]["after"]["state"] == "cancelled" and "forced" in cancelled[0]["reason"]
    expired = audit(hub, target_id=node_id, action="node.lifecycle.expired")
    assert [e["after"]["id"] for e in expired] == [lifecycle["id"]] and expired[0]["actor"]["name"] == "admin"
    resolved = audit(hub, target_id=event_id, action="health.resolve")
    assert len(resolved) == 1 and resolved[0]["after"]["state"] == "resolved"
    deleted = audit(hub, target_id=node_id, action="node.delete")
    assert deleted[0]["after"]["forced"] is True
    assert deleted[0]["after"]["blockers_ended"] == {
        "unfinished_recording_jobs": 2,
        "unfinished_lifecycle_jobs": 1,
        "pending_uploads": 1,
        "open_health_events": 1,
    }


def test_a_node_with_nothing_in_the_way_is_deleted_without_force(hub: HubProcess, node: tuple[str, str]) -> None:
    node_id, _ = node
    data = preview(hub, node_id)
    assert data["blockers"] == {"active_recordings": [], "jobs": [], "pending_uploads": [], "health_events": []}
    assert data["requires_force"] is False and data["reasons"] == []
    with hub.admin() as admin:
        assert admin.delete(f"{NODES}/{node_id}").status_code == 204
    assert audit(hub, target_id=node_id, action="node.delete")[0]["after"] == {"forced": False, "blockers_ended": None}
