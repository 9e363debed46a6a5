"""Scheduled jobs through a real hub: the dispatcher makes them ahead of time, the node syncs what it holds (claimed once,
withdrawn when it should drop them), reports lateness or a miss; claim-next never hands them out; lists filter by schedule."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from hark_fleet.hub.db.models import Schedule
from hark_fleet.hub.services import schedule_dispatch

from tests.conftest import hub_database
from tests.harness import HubProcess, hub_on, wait_for

JOBS = "/api/v1/recording-jobs"


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def hub(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubProcess]:
    """A hub that dispatches every half second and calls a job missed 1 s after its end."""
    env = {"HARK_SCHEDULE_DISPATCH_INTERVAL_S": "0.5", "HARK_JOB_LEASE_TIMEOUT_S": "1"}
    with hub_on(request.param, Path(tmp_path_factory.mktemp(f"sched-hub-{request.param}")), env_extra=env) as process:
        yield process


def enroll(hub: HubProcess, site: str = "north") -> tuple[str, str]:
    hub.ensure_site(site)
    with hub.admin() as admin:
        response = admin.post("/api/v1/nodes/enroll", json={"name": f"sch-{uuid.uuid4().hex[:6]}", "site": site})
    assert response.status_code == 201, response.text
    data = response.json()["data"]
    return data["node"]["id"], data["credential"]


def make_schedule(hub: HubProcess, node_ids: list[str], start_in_s: float, duration_s: int, rrule: str | None = None) -> str:
    """A schedule row written straight into the hub's database (the dispatcher finds it at its next pass)."""
    schedule_id = f"sch_{uuid.uuid4().hex[:12]}"
    start = datetime.now(UTC) + timedelta(seconds=start_in_s)
    with hub_database(hub):
        Schedule.create(
            id=schedule_id,
            name="Test take",
            target={"node_ids": node_ids},
            site="north",
            time_zone="UTC",
            start_local=start.strftime("%Y-%m-%dT%H:%M:%S"),
            duration_s=duration_s,
            rrule=rrule,
            profile_id="default",
            created_by={"type": "user", "id": "usr_x", "name": "admin"},
        )
    return schedule_id


def sync(hub: HubProcess, node_id: str, credential: str, held: list[dict[str, Any]] | None = None) -> httpx.Response:
    with hub.client(credential) as node:
        return node.post(f"/api/v1/nodes/{node_id}/recording-jobs/scheduled", json={"held": held or []})


def synced_jobs(hub: HubProcess, node_id: str, credential: str, count: int) -> list[dict[str, Any]]:
    """Sync until the dispatcher has made `count` jobs for the node (they come claimed)."""
    got: list[dict[str, Any]] = []

    def enough() -> bool:
        answer = sync(hub, node_id, credential, [{"id": j["job"]["id"], "revision": j["job"]["revision"]} for j in got])
        assert answer.status_code == 200, answer.text
        got.extend(answer.json()["data"]["jobs"])
        return len(got) >= count

    wait_for(enough, 20, f"{count} scheduled jobs for the node", interval=0.2)
    return got


def admin_get(hub: HubProcess, path: str, **params: Any) -> Any:
    with hub.admin() as admin:
        response = admin.get(path, params=params)
    assert response.status_code == 200, response.text
    return response.json()["data"]


def test_sync_hands_out_each_job_claimed_once_and_withdraws_what_the_node_should_drop(hub: HubProcess) -> None:
    node_id, credential = enroll(hub)
    schedule_id = make_schedule(hub, [node_id], start_in_s=3600, duration_s=600, rrule="FREQ=HOURLY;COUNT=3")
    held = synced_jobs(hub, node_id, credential, 3)
    job, recording = held[0]["job"], held[0]["recording"]
    assert (job["state"], job["lease_epoch"], job["revision"], job["schedule_id"]) == ("claimed", 1, 0, schedule_id)
    assert job["start_at"] < held[1]["job"]["start_at"] < held[2]["job"]["start_at"]
    assert recording["schedule_id"] == schedule_id and recording["scheduled_start_at"] == job["start_at"]
    assert recording["requested_duration_s"] == 600 and recording["profile"]["format"] == "wav"
    again = sync(
        hub, node_id, credential, [{"id": h["job"]["id"], "revision": 0} for h in held] + [{"id": "rjb_nope", "revision": 0}]
    )
    data = again.json()["data"]
    assert data["jobs"] == [] and data["lead_s"] == 86400 and data["server_time"].endswith("Z")
    assert data["withdrawn"] == [{"id": "rjb_nope", "reason": "the hub has no such job for this node"}]
    # a node that lost its book gets them again, under the same lease
    lost = sync(hub, node_id, credential).json()["data"]["jobs"]
    assert [j["job"]["id"] for j in lost] == [h["job"]["id"] for h in held] and {j["job"]["lease_epoch"] for j in lost} == {1}
    # the schedule is deleted: every job is withdrawn, and the node is told to drop them
    with hub_database(hub):
        Schedule.delete().where(Schedule.id == schedule_id).execute()
        assert schedule_dispatch.reconcile(schedule_id, datetime.now(UTC)).nodes == {node_id}
    dropped = sync(hub, node_id, credential, [{"id": h["job"]["id"], "revision": 0} for h in held]).json()["data"]
    assert dropped["jobs"] == []
    assert dropped["withdrawn"] == [{"id": h["job"]["id"], "reason": "withdrawn: the schedule was deleted"} for h in held]
    audit = admin_get(hub, "/api/v1/audit-events", target_id=job["id"])
    assert "recording.job.claimed" in [e["action"] for e in audit]


def test_stopping_a_held_take_before_it_starts_cancels_it_and_the_node_drops_it(hub: HubProcess) -> None:
    node_id, credential = enroll(hub)
    make_schedule(hub, [node_id], start_in_s=3600, duration_s=600)
    [held] = synced_jobs(hub, node_id, credential, 1)
    with hub.admin() as admin:
        stopped = admin.post(f"/api/v1/recordings/{held['recording']['id']}/stop")
    assert stopped.status_code == 200, stopped.text
    assert stopped.json()["data"]["recording"]["status"] == "cancelled"
    answer = sync(hub, node_id, credential, [{"id": held["job"]["id"], "revision": held["job"]["revision"]}]).json()["data"]
    assert answer["jobs"] == [] and [w["id"] for w in answer["withdrawn"]] == [held["job"]["id"]]


def test_claim_next_never_hands_out_a_scheduled_job(hub: HubProcess) -> None:
    node_id, credential = enroll(hub)
    make_schedule(hub, [node_id], start_in_s=600, duration_s=60)
    wait_for(lambda: admin_get(hub, JOBS, node_id=node_id), 20, "the dispatcher", interval=0.2)
    with hub.client(credential) as node:
        assert node.post(f"/api/v1/nodes/{node_id}/recording-jobs/claim-next", json={}).status_code == 204


def test_heartbeats_report_the_planned_start_and_the_lateness(hub: HubProcess) -> None:
    node_id, credential = enroll(hub)
    make_schedule(hub, [node_id], start_in_s=30, duration_s=3600)
    (held,) = synced_jobs(hub, node_id, credential, 1)
    job = held["job"]
    report = {"started_at": datetime.now(UTC).isoformat(), "late_s": 12.5, "scheduled_start_at": job["start_at"]}
    with hub.client(credential) as node:
        answer = node.post(f"{JOBS}/{job['id']}/heartbeat", json={"lease_epoch": 1, "state": "recording", "recording": report})
        assert answer.status_code == 200, answer.text
        bad = node.post(
            f"{JOBS}/{job['id']}/heartbeat",
            json={"lease_epoch": 1, "state": "recording", "recording": {"late_s": -1, "scheduled_start_at": "tomorrow"}},
        )
    assert bad.status_code == 400
    assert set(bad.json()["error"]["fields"]) == {"recording.late_s", "recording.scheduled_start_at"}
    recording = admin_get(hub, f"/api/v1/recordings/{held['recording']['id']}")
    assert recording["status"] == "recording" and recording["late_s"] == 12.5
    assert recording["scheduled_start_at"] == job["start_at"]
    # started capturing: never withdrawn, never handed out again
    data = sync(hub, node_id, credential).json()["data"]
    assert data["jobs"] == [] and data["withdrawn"] == []


def test_a_node_reports_a_scheduled_job_missed(hub: HubProcess) -> None:
    node_id, credential = enroll(hub)
    make_schedule(hub, [node_id], start_in_s=600, duration_s=60)
    (held,) = synced_jobs(hub, node_id, credential, 1)
    job = held["job"]
    body = {"lease_epoch": 1, "error": "the node was off through the whole occurrence"}
    with hub.client(credential) as node:
        assert node.post(f"{JOBS}/{job['id']}/missed", json={"lease_epoch": 0}).status_code == 409  # stale lease
        first = node.post(f"{JOBS}/{job['id']}/missed", json=body)
        again = node.post(f"{JOBS}/{job['id']}/missed", json=body)
    assert first.status_code == 200, first.text
    assert again.json() == first.json()
    data = first.json()["data"]
    assert (data["job"]["state"], data["recording"]["status"]) == ("missed", "missed")
    assert data["job"]["error"] == body["error"]
    assert sync(hub, node_id, credential, [{"id": job["id"], "revision": 0}]).json()["data"]["withdrawn"] == [
        {"id": job["id"], "reason": body["error"]}
    ]
    # an ad-hoc job cannot be missed
    with hub.admin() as admin:
        adhoc = admin.post("/api/v1/recordings", json={"node_id": node_id}).json()["data"]["job"]
    with hub.client(credential) as node:
        claimed = node.post(f"/api/v1/nodes/{node_id}/recording-jobs/claim-next", json={}).json()["data"]["job"]
        assert claimed["id"] == adhoc["id"]
        refused = node.post(f"{JOBS}/{adhoc['id']}/missed", json={"lease_epoch": claimed["lease_epoch"]})
    assert refused.status_code == 409


def test_the_hub_calls_an_unstarted_job_missed_and_a_node_that_recorded_it_anyway_brings_it_back(hub: HubProcess) -> None:
    node_id, credential = enroll(hub)
    other_id, other_credential = enroll(hub)
    make_schedule(hub, [node_id, other_id], start_in_s=3, duration_s=2)
    (held,) = synced_jobs(hub, node_id, credential, 1)
    job_id = held["job"]["id"]

    def missed() -> list[dict[str, Any]]:
        jobs: list[dict[str, Any]] = admin_get(hub, JOBS, schedule_id=held["job"]["schedule_id"], state="missed")
        return jobs if len(jobs) == 2 else []

    jobs = {j["node_id"]: j for j in wait_for(missed, 30, "both jobs missed", interval=0.3)}
    assert jobs[other_id]["error"].startswith("the node did not start it: it never fetched the job")
    assert jobs[node_id]["error"].startswith("the node did not start it")
    # the node recorded it while the hub could not hear it: its report brings the job back
    with hub.client(credential) as node:
        answer = node.post(
            f"{JOBS}/{job_id}/heartbeat", json={"lease_epoch": 1, "state": "uploading", "recording": {"late_s": 0}}
        )
    assert answer.status_code == 200, answer.text
    assert answer.json()["data"]["job"]["state"] == "uploading" and answer.json()["data"]["job"]["error"] is None
    assert admin_get(hub, f"/api/v1/recordings/{held['recording']['id']}")["status"] == "uploading"
    with hub.client(other_credential) as node:  # the other never held it: nothing to bring back
        assert (
            node.post(f"{JOBS}/{jobs[other_id]['id']}/heartbeat", json={"lease_epoch": 0, "state": "recording"}).status_code
            == 409
        )


def test_sync_refuses_bad_bodies_and_another_nodes_path(hub: HubProcess) -> None:
    node_id, credential = enroll(hub)
    other_id, _ = enroll(hub)
    with hub.client(credential) as node:
        path = f"/api/v1/nodes/{node_id}/recording-jobs/scheduled"
        assert node.post(path).status_code == 200  # no body: holds nothing
        cases = [
            ({"held": [{"id": "rjb_1", "revision": -1}]}, "held[0].revision"),
            ({"held": [{"id": "", "revision": 0}]}, "held[0].id"),
            ({"held": [{"id": f"rjb_{i}", "revision": 0} for i in range(2001)]}, "held"),
            ({"held": [{"id": "rjb_1"}]}, None),
            ({"colour": "red"}, None),
        ]
        for body, field in cases:
            response = node.post(path, json=body)
            assert response.status_code == 400, (body, response.text)
            if field:
                assert field in response.json()["error"]["fields"], response.text
        mismatch = node.post(f"/api/v1/nodes/{other_id}/recording-jobs/scheduled", json={})
    assert mismatch.status_code == 403 and mismatch.json()["error"]["code"] == "node_mismatch"
    with hub.admin() as admin:  # a user has no node to sync
        assert admin.post(f"/api/v1/nodes/{node_id}/recording-jobs/scheduled", json={}).status_code == 403


def test_the_library_and_the_job_list_filter_by_schedule(hub: HubProcess) -> None:
    node_id, _ = enroll(hub)
    schedule_id = make_schedule(hub, [node_id], start_in_s=7200, duration_s=60, rrule="FREQ=HOURLY;COUNT=2")
    jobs = wait_for(lambda: len(j := admin_get(hub, JOBS, schedule_id=schedule_id)) == 2 and j, 20, "two jobs", interval=0.2)
    recordings = admin_get(hub, "/api/v1/recordings", schedule_id=schedule_id)
    assert {r["id"] for r in recordings} == {j["recording_id"] for j in jobs}
    assert all(r["schedule_id"] == schedule_id and r["status"] == "queued" for r in recordings)
    assert admin_get(hub, "/api/v1/recordings", schedule_id="sch_other") == []
