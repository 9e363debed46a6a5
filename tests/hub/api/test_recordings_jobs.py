"""Recordings and their jobs: create and stop, the node's claim under a fenced lease, heartbeats,
terminal reports, retry rules, bulk actions, the reaper, recovery after a node restart, and
concurrent claims that never hand one job out twice."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as mqtt
import pytest
from hark_fleet.hub.db.models import Recording
from hark_fleet.hub.services.recordings import recording_to_api
from paho.mqtt.enums import CallbackAPIVersion

from tests.conftest import hub_database
from tests.harness import HubProcess, hub_on, wait_for

RECORDINGS = "/api/v1/recordings"
JOBS = "/api/v1/recording-jobs"
PASSWORD = "recording-test-password"


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def enroll(hub: HubProcess, site: str = "north") -> tuple[str, str]:
    hub.ensure_site(site)  # a node's site must exist
    with hub.admin() as admin:
        response = admin.post("/api/v1/nodes/enroll", json={"name": unique("rec"), "site": site})
    assert response.status_code == 201, response.text
    data = response.json()["data"]
    return data["node"]["id"], data["credential"]


def user_token(hub: HubProcess, roles: list[str], sites: list[str] | None = None) -> str:
    username = unique("recu")
    body: dict[str, Any] = {"username": username, "password": PASSWORD, "roles": roles}
    if sites is not None:
        body["sites"] = sites
        for site in sites:
            hub.ensure_site(site)  # a grant's site must exist
    with hub.admin() as admin:
        assert admin.post("/api/v1/auth/users", json=body).status_code == 201
    return hub.login(username, PASSWORD)


def start(hub: HubProcess, node_id: str, **body: Any) -> dict[str, Any]:
    with hub.admin() as admin:
        response = admin.post(RECORDINGS, json={"node_id": node_id, **body})
    assert response.status_code == 201, response.text
    return response.json()["data"]


def claim(hub: HubProcess, node_id: str, credential: str, **body: Any) -> httpx.Response:
    with hub.client(credential) as node:
        return node.post(f"/api/v1/nodes/{node_id}/recording-jobs/claim-next", json=body)


def beat(hub: HubProcess, credential: str, job: dict[str, Any], state: str = "recording", **extra: Any) -> httpx.Response:
    body = {"lease_epoch": job["lease_epoch"], "state": state, "progress": {"seconds": 1}, **extra}
    with hub.client(credential) as node:
        return node.post(f"{JOBS}/{job['id']}/heartbeat", json=body)


def audit(hub: HubProcess, target_id: str) -> list[dict[str, Any]]:
    with hub.admin() as admin:
        return list(reversed(admin.get("/api/v1/audit-events", params={"target_id": target_id}).json()["data"]))


def get_job(hub: HubProcess, job_id: str) -> dict[str, Any]:
    with hub.admin() as admin:
        response = admin.get(f"{JOBS}/{job_id}")
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()["data"]
    return data


# -- create and stop ------------------------------------------------------------------------------


def test_a_recording_is_created_with_the_default_profile_and_its_job_queued(hub: HubProcess) -> None:
    node_id, _ = enroll(hub)
    created = start(hub, node_id, duration_s=30, name="Morning take")
    recording, job = created["recording"], created["job"]
    assert recording["status"] == "queued" and recording["node_id"] == node_id and recording["site"] == "north"
    assert (recording["format"], recording["sample_rate"], recording["bit_depth"], recording["channels"]) == (
        "wav",
        48000,
        24,
        None,
    )
    assert recording["profile_id"] == "default" and recording["job_id"] == job["id"]
    assert recording["name"] == "Morning take" and recording["requested_duration_s"] == 30
    assert recording["created_by"]["name"] == "admin"
    assert (job["state"], job["lease_epoch"], job["attempts"], job["recording_id"]) == ("queued", 0, 1, recording["id"])
    assert [e["action"] for e in audit(hub, recording["id"])] == ["recording.create"]
    unnamed = start(hub, node_id)["recording"]
    assert unnamed["name"].endswith(" UTC") and unnamed["requested_duration_s"] is None


def test_invalid_requests_name_the_field_and_unknown_nodes_are_404(hub: HubProcess) -> None:
    node_id, _ = enroll(hub)
    with hub.admin() as admin:
        profile = admin.post("/api/v1/settings/recording-profiles", json={"name": unique("short"), "max_duration_s": 60}).json()[
            "data"
        ]
        cases = [
            ({"node_id": node_id, "duration_s": 61, "profile_id": profile["id"]}, {"duration_s"}),
            ({"node_id": node_id, "duration_s": 86401}, {"duration_s"}),  # the default's maximum is 12 h
            ({"node_id": node_id, "duration_s": 0}, {"duration_s"}),
            ({"node_id": node_id, "profile_id": "rpf_missing"}, {"profile_id"}),
            ({"node_id": node_id, "name": " padded"}, {"name"}),
            ({"node_id": node_id, "colour": "red"}, {"colour"}),
            ({}, {"node_id"}),
        ]
        for body, fields in cases:
            response = admin.post(RECORDINGS, json=body)
            assert response.status_code == 400, (body, response.text)
            assert set(response.json()["error"]["fields"]) == fields, body
        assert admin.post(RECORDINGS, json={"node_id": node_id, "duration_s": 60, "profile_id": profile["id"]}).status_code == 201
        assert admin.post(RECORDINGS, json={"node_id": "nod_missing"}).status_code == 404
        assert admin.post(f"{RECORDINGS}/rec_missing/stop").status_code == 404
        assert admin.get(f"{JOBS}/rjb_missing").status_code == 404


def test_the_recording_keeps_a_snapshot_of_its_profile(hub: HubProcess) -> None:
    node_id, credential = enroll(hub)
    with hub.admin() as admin:
        profile = admin.post(
            "/api/v1/settings/recording-profiles",
            json={"name": unique("flac"), "format": "flac", "sample_rate": 44100, "bit_depth": 16, "channels": 2},
        ).json()["data"]
    recording = start(hub, node_id, profile_id=profile["id"])["recording"]
    with hub.admin() as admin:
        changed = admin.patch(f"/api/v1/settings/recording-profiles/{profile['id']}", json={"sample_rate": 96000})
        assert changed.status_code == 200
    claimed = claim(hub, node_id, credential).json()["data"]
    assert claimed["recording"]["id"] == recording["id"]
    assert claimed["recording"]["profile"] == {
        "format": "flac",
        "sample_rate": 44100,
        "bit_depth": 16,
        "channels": 2,
        "channel_map_template_id": None,
        "segment_s": 10.0,
        "preroll_s": 0.0,
        "max_duration_s": 43200.0,
    }


def test_stopping_a_queued_recording_cancels_it_at_once(hub: HubProcess) -> None:
    node_id, credential = enroll(hub)
    created = start(hub, node_id)
    rid, jid = created["recording"]["id"], created["job"]["id"]
    with hub.admin() as admin:
        stopped = admin.post(f"{RECORDINGS}/{rid}/stop")
        assert stopped.status_code == 200, stopped.text
        data = stopped.json()["data"]
        assert data["recording"]["status"] == "cancelled" and data["job"]["state"] == "cancelled"
        again = admin.post(f"{RECORDINGS}/{rid}/stop")
        assert again.status_code == 409 and again.json()["error"]["code"] == "conflict"
    assert claim(hub, node_id, credential).status_code == 204, "a cancelled job is never claimed"
    assert [e["action"] for e in audit(hub, rid)] == ["recording.create", "recording.stop"]
    assert get_job(hub, jid)["actions"]["retry"] == {"allowed": True, "reason": None}


def test_stopping_a_running_recording_asks_the_node_on_cmd_job_and_in_its_heartbeat(hub: HubProcess) -> None:
    node_id, credential = enroll(hub)
    client, received = subscribe_as_node(hub, node_id, credential)
    try:
        created = start(hub, node_id)
        rid, jid = created["recording"]["id"], created["job"]["id"]
        wait_for(lambda: len(received) == 1, 5, "cmd/job after the recording was created")
        job = claim(hub, node_id, credential).json()["data"]["job"]
        first = beat(hub, credential, job)
        assert first.json()["data"]["stop_requested"] is False
        with hub.admin() as admin:
            stopped = admin.post(f"{RECORDINGS}/{rid}/stop")
        assert stopped.status_code == 200, stopped.text
        assert stopped.json()["data"]["job"]["stop_requested"] is True
        assert stopped.json()["data"]["recording"]["status"] == "recording"
        wait_for(lambda: len(received) == 2, 5, "cmd/job stop")
        assert beat(hub, credential, job).json()["data"]["stop_requested"] is True
    finally:
        client.disconnect()
        client.loop_stop()
    assert received == [
        {"topic": f"hark/v1/nodes/{node_id}/cmd/job", "job_id": jid, "recording_id": rid},
        {"topic": f"hark/v1/nodes/{node_id}/cmd/job", "job_id": jid, "recording_id": rid, "stop": True},
    ]
    assert [e["action"] for e in audit(hub, rid)] == ["recording.create", "recording.stop"]


def subscribe_as_node(hub: HubProcess, node_id: str, credential: str) -> tuple[mqtt.Client, list[dict[str, Any]]]:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=node_id)
    client.username_pw_set(node_id, credential)
    received: list[dict[str, Any]] = []
    subscribed = threading.Event()
    client.on_message = lambda c, u, m: received.append({"topic": m.topic, **json.loads(m.payload)})
    client.on_subscribe = lambda *a: subscribed.set()
    client.on_connect = lambda c, *a: c.subscribe(f"hark/v1/nodes/{node_id}/cmd/job", qos=1)
    client.connect("127.0.0.1", hub.mqtt_port)
    client.loop_start()
    assert subscribed.wait(5), "no subscription on the hub's broker"
    return client, received


# -- the node's side ---------------------------------------------------------------------------------


def test_claim_heartbeat_and_report_move_the_job_and_the_recording(hub: HubProcess) -> None:
    node_id, credential = enroll(hub)
    assert claim(hub, node_id, credential).status_code == 204
    created = start(hub, node_id, duration_s=5)
    rid = created["recording"]["id"]
    response = claim(hub, node_id, credential)
    assert response.status_code == 200, response.text
    claimed = response.json()["data"]
    job = claimed["job"]
    assert (job["id"], job["state"], job["lease_epoch"], job["recovered"]) == (created["job"]["id"], "claimed", 1, False)
    assert claimed["recording"]["id"] == rid and claimed["recording"]["profile"]["format"] == "wav"
    assert claim(hub, node_id, credential, active_job_ids=[job["id"]]).status_code == 204, "nothing else is queued"
    recording_beat = beat(hub, credential, job)
    assert recording_beat.status_code == 200, recording_beat.text
    assert recording_beat.json()["data"]["job"]["state"] == "recording"
    assert recording_beat.json()["data"]["job"]["capture_started"] is True
    report = {
        "started_at": "2026-01-31T12:00:00.000Z",
        "ended_at": "2026-01-31T12:00:05.000Z",
        "duration_s": 5.0,
        "sample_rate": 48000,
        "channels": 2,
        "bit_depth": 24,
        "format": "wav",
        "integrity": {"segments": 1, "dropped_frames": 0},
        "interrupted": False,
        "time_quality": "synced",
        "clock_offset_ms": 1.5,
    }
    uploading = beat(hub, credential, job, "uploading", recording=report)
    assert uploading.status_code == 200, uploading.text
    with hub.client(credential) as node:
        own = node.get(f"{JOBS}/{job['id']}")
        assert own.status_code == 200 and own.json()["data"]["state"] == "uploading"
        backwards = node.post(f"{JOBS}/{job['id']}/heartbeat", json={"lease_epoch": 1, "state": "recording"})
        assert backwards.status_code == 409
        bad = node.post(f"{JOBS}/{job['id']}/heartbeat", json={"lease_epoch": 1, "state": "done"})
        assert bad.status_code == 400 and set(bad.json()["error"]["fields"]) == {"state"}
        bad_report = node.post(
            f"{JOBS}/{job['id']}/heartbeat",
            json={"lease_epoch": 1, "state": "uploading", "recording": {"started_at": "yesterday", "format": "mp3"}},
        )
        assert set(bad_report.json()["error"]["fields"]) == {"recording.started_at", "recording.format"}
        failed = node.post(f"{JOBS}/{job['id']}/failed", json={"lease_epoch": 1, "error": "disk full"})
        assert failed.status_code == 200, failed.text
        assert failed.json()["data"]["recording"]["status"] == "failed"
        repeated = node.post(f"{JOBS}/{job['id']}/failed", json={"lease_epoch": 1, "error": "disk full"})
        assert repeated.status_code == 200, "the same report again answers the same"
        late = node.post(f"{JOBS}/{job['id']}/heartbeat", json={"lease_epoch": 1, "state": "uploading"})
        assert late.status_code == 409 and late.json()["error"]["code"] == "stale_lease"
    with hub.admin() as admin:
        assert admin.post(f"{RECORDINGS}/{rid}/stop").status_code == 409, "an ended recording cannot be stopped"
    stored = stored_recording(hub, rid)
    assert {k: stored[k] for k in report if k not in ("started_at", "ended_at")} == {
        k: v for k, v in report.items() if k not in ("started_at", "ended_at")
    }
    assert (stored["started_at"], stored["ended_at"]) == (report["started_at"], report["ended_at"])
    assert stored["error"] == "disk full"
    actions = [(e["action"], e["actor"]["type"], e["actor"]["id"]) for e in audit(hub, job["id"])]
    assert actions == [
        ("recording.job.claimed", "node", node_id),
        ("recording.job.recording", "node", node_id),
        ("recording.job.uploading", "node", node_id),
        ("recording.job.failed", "node", node_id),
    ]
    with hub.admin() as admin:
        retry = admin.post(f"{JOBS}/{job['id']}/retry")
    assert retry.status_code == 409, "a job that started capturing is never recorded again"


def stored_recording(hub: HubProcess, recording_id: str) -> dict[str, Any]:
    """The recording row, read from the hub's database (the library's reads are another family)."""
    with hub_database(hub):
        return recording_to_api(Recording.get_by_id(recording_id), None)


def test_a_stale_lease_is_refused_and_another_nodes_job_is_node_mismatch(hub: HubProcess) -> None:
    node_id, credential = enroll(hub)
    _, other_credential = enroll(hub)
    start(hub, node_id)
    job = claim(hub, node_id, credential).json()["data"]["job"]
    # A restarted node claims again: the same job comes back under a new epoch, the old one is fenced off.
    again = claim(hub, node_id, credential).json()["data"]["job"]
    assert (again["id"], again["lease_epoch"], again["recovered"]) == (job["id"], 2, True)
    stale = beat(hub, credential, job)
    assert stale.status_code == 409 and stale.json()["error"]["code"] == "stale_lease"
    assert beat(hub, credential, again).status_code == 200
    with hub.client(credential) as node:
        finish = node.post(f"{JOBS}/{job['id']}/cancelled", json={"lease_epoch": 1})
        assert finish.status_code == 409 and finish.json()["error"]["code"] == "stale_lease"
        assert node.post(f"{JOBS}/rjb_missing/heartbeat", json={"lease_epoch": 1, "state": "recording"}).status_code == 404
    with hub.client(other_credential) as other:
        for method, path, body in (
            ("POST", f"{JOBS}/{job['id']}/heartbeat", {"lease_epoch": 2, "state": "recording"}),
            ("POST", f"{JOBS}/{job['id']}/failed", {"lease_epoch": 2}),
            ("POST", f"{JOBS}/{job['id']}/cancelled", {"lease_epoch": 2}),
            ("GET", f"{JOBS}/{job['id']}", None),
            ("POST", f"/api/v1/nodes/{node_id}/recording-jobs/claim-next", {}),
        ):
            response = other.request(method, path, json=body)
            assert response.status_code == 403 and response.json()["error"]["code"] == "node_mismatch", (path, response.text)
        assert other.get(JOBS).status_code == 403, "a node credential lists nothing"
    assert get_job(hub, job["id"])["lease_epoch"] == 2
    with hub.admin() as admin:
        denied = admin.get("/api/v1/audit-events", params={"action": "access.denied"}).json()["data"]
    assert any("node_mismatch on recording job" in (e["reason"] or "") for e in denied)


def test_a_node_running_a_job_claims_the_next_without_losing_it(hub: HubProcess) -> None:
    node_id, credential = enroll(hub)
    start(hub, node_id)
    start(hub, node_id)
    first = claim(hub, node_id, credential).json()["data"]["job"]
    second = claim(hub, node_id, credential, active_job_ids=[first["id"]]).json()["data"]["job"]
    assert second["id"] != first["id"] and second["recovered"] is False
    assert beat(hub, credential, first).status_code == 200, "the first job's lease still holds"


def test_a_node_cancels_a_claimed_job_and_a_cancelled_job_is_retried(hub: HubProcess) -> None:
    node_id, credential = enroll(hub)
    created = start(hub, node_id)
    job = claim(hub, node_id, credential).json()["data"]["job"]
    with hub.client(credential) as node:
        cancelled = node.post(f"{JOBS}/{job['id']}/cancelled", json={"lease_epoch": job["lease_epoch"], "error": None})
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["data"]["recording"]["status"] == "cancelled"
    with hub.admin() as admin:
        retried = admin.post(f"{JOBS}/{job['id']}/retry")
        assert retried.status_code == 200, retried.text
        data = retried.json()["data"]
        assert (data["state"], data["attempts"], data["lease_epoch"]) == ("queued", 2, 1)
        assert data["actions"]["retry"]["allowed"] is False
        again = admin.post(f"{JOBS}/{job['id']}/retry")
        assert again.status_code == 409
    reclaimed = claim(hub, node_id, credential).json()["data"]
    assert (reclaimed["job"]["id"], reclaimed["job"]["lease_epoch"]) == (job["id"], 2)
    assert reclaimed["recording"]["status"] == "queued" and reclaimed["recording"]["id"] == created["recording"]["id"]
    assert [e["action"] for e in audit(hub, job["id"])] == [
        "recording.job.claimed",
        "recording.job.cancelled",
        "recording.job.retry",
        "recording.job.claimed",
    ]


def test_bulk_retry_and_bulk_stop_answer_per_id(hub: HubProcess) -> None:
    node_id, credential = enroll(hub)
    queued = start(hub, node_id)["job"]
    running = start(hub, node_id)["job"]
    first = claim(hub, node_id, credential).json()["data"]["job"]
    assert first["id"] == queued["id"]
    assert beat(hub, credential, first).status_code == 200
    with hub.admin() as admin:
        stopped = admin.post(f"{JOBS}/bulk-stop", json={"ids": [first["id"], running["id"], "rjb_missing", running["id"]]})
        assert stopped.status_code == 200, stopped.text
        rows = stopped.json()["data"]
        assert [(r["id"], r["ok"]) for r in rows] == [(first["id"], True), (running["id"], True), ("rjb_missing", False)]
        assert rows[0]["job"]["stop_requested"] is True and rows[1]["job"]["state"] == "cancelled"
        assert rows[2]["error"]["code"] == "not_found"
        retried = admin.post(f"{JOBS}/bulk-retry", json={"ids": [running["id"], first["id"]]}).json()["data"]
        assert [(r["id"], r["ok"]) for r in retried] == [(running["id"], True), (first["id"], False)]
        assert retried[0]["job"]["state"] == "queued" and retried[1]["error"]["code"] == "conflict"
        empty = admin.post(f"{JOBS}/bulk-retry", json={"ids": []})
        assert empty.status_code == 400 and set(empty.json()["error"]["fields"]) == {"ids"}


def test_jobs_list_filter_facet_export_and_site_scope(hub: HubProcess) -> None:
    north, north_credential = enroll(hub, "north")
    south, _ = enroll(hub, "south")
    north_jobs = [start(hub, north)["job"] for _ in range(3)]
    south_job = start(hub, south)["job"]
    claim(hub, north, north_credential)
    with hub.admin() as admin:
        page = admin.get(JOBS, params={"node_id": north, "limit": 2}).json()
        assert [j["id"] for j in page["data"]] == [north_jobs[2]["id"], north_jobs[1]["id"]], "newest first"
        rest = admin.get(JOBS, params={"node_id": north, "cursor": page["meta"]["next_cursor"]}).json()
        assert [j["id"] for j in rest["data"]] == [north_jobs[0]["id"]]
        claimed = admin.get(JOBS, params={"node_id": north, "state": "claimed"}).json()["data"]
        assert [j["id"] for j in claimed] == [north_jobs[0]["id"]]
        facets = admin.get(f"{JOBS}/facets", params={"node_id": north, "fields": "state"}).json()["data"]
        assert facets == {"state": [{"value": "queued", "count": 2}, {"value": "claimed", "count": 1}]}
        bad = admin.get(JOBS, params={"state": "paused"})
        assert bad.status_code == 400 and set(bad.json()["error"]["fields"]) == {"state"}
        exported = admin.get(f"{JOBS}/export", params={"node_id": north, "format": "ndjson"})
        assert [json.loads(line)["id"] for line in exported.text.splitlines()] == [j["id"] for j in reversed(north_jobs)]
        csv_text = admin.post(f"{JOBS}/export?format=csv", json={"ids": [south_job["id"]]}).text
        assert csv_text.splitlines()[0].startswith("id,recording_id,node_id,site,state")
        assert south_job["id"] in csv_text and north_jobs[0]["id"] not in csv_text
    with hub.client(user_token(hub, ["operator"], ["north"])) as limited:
        seen = {j["node_id"] for j in limited.get(JOBS, params={"node_id": [north, south]}).json()["data"]}
        assert seen == {north}
        assert limited.get(f"{JOBS}/{south_job['id']}").status_code == 404
        assert limited.post(f"{JOBS}/{south_job['id']}/retry").status_code == 404
        assert limited.post(RECORDINGS, json={"node_id": south}).status_code == 404
        assert limited.post(f"{RECORDINGS}/{south_job['recording_id']}/stop").status_code == 404
        assert limited.post(RECORDINGS, json={"node_id": north}).status_code == 201
    with hub.client(user_token(hub, ["viewer"])) as viewer:
        assert viewer.get(f"{JOBS}/{south_job['id']}").status_code == 200
        denied = viewer.post(RECORDINGS, json={"node_id": north})
        assert denied.status_code == 403 and denied.json()["error"]["required"] == ["recording:create"]
        assert viewer.post(f"{JOBS}/{south_job['id']}/retry").json()["error"]["required"] == ["recording:control"]


# -- concurrency ------------------------------------------------------------------------------------


def test_concurrent_claims_hand_each_queued_job_out_exactly_once(hub: HubProcess) -> None:
    node_id, credential = enroll(hub)
    jobs = {start(hub, node_id)["job"]["id"] for _ in range(12)}
    claimers = 8
    fresh: list[str] = []  # claims of queued jobs (what must never repeat)
    errors: list[str] = []
    barrier = threading.Barrier(claimers)
    lock = threading.Lock()

    def claimer() -> None:
        with hub.client(credential) as node:
            barrier.wait()
            for _ in range(100):
                # The node says what it runs, so those are not handed back as recovered; a claim
                # still in flight elsewhere may be recovered meanwhile, which is not a fresh claim.
                with lock:
                    held = list(fresh)
                response = node.post(f"/api/v1/nodes/{node_id}/recording-jobs/claim-next", json={"active_job_ids": held})
                if response.status_code == 204:
                    return
                if response.status_code != 200:
                    errors.append(response.text)
                    return
                job = response.json()["data"]["job"]
                if not job["recovered"]:
                    with lock:
                        fresh.append(job["id"])

    threads = [threading.Thread(target=claimer) for _ in range(claimers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors
    assert sorted(fresh) == sorted(jobs), "every queued job claimed, none twice"
    with hub.admin() as admin:
        listed = admin.get(JOBS, params={"node_id": node_id, "limit": 200}).json()["data"]
    assert {j["state"] for j in listed} == {"claimed"}
    claims = [e for e in audit_by_action(hub, "recording.job.claimed") if e["target"]["id"] in jobs]
    assert sorted(e["target"]["id"] for e in claims) == sorted(jobs)


def audit_by_action(hub: HubProcess, action: str) -> list[dict[str, Any]]:
    with hub.admin() as admin:
        return admin.get("/api/v1/audit-events", params={"action": action, "limit": 200}).json()["data"]


# -- the reaper and recovery ----------------------------------------------------------------------


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def quick_hub(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubProcess]:
    """A hub whose job leases run out after 1 s, with a 3 s recovery grace."""
    env = {"HARK_JOB_LEASE_TIMEOUT_S": "1", "HARK_JOB_RECOVERY_GRACE_S": "3"}
    with hub_on(request.param, Path(tmp_path_factory.mktemp(f"quick-hub-{request.param}")), env_extra=env) as process:
        yield process


def test_the_reaper_fails_a_job_whose_node_went_quiet_before_capturing(quick_hub: HubProcess) -> None:
    hub = quick_hub
    node_id, credential = enroll(hub)
    created = start(hub, node_id)
    job = claim(hub, node_id, credential).json()["data"]["job"]
    failed = wait_for(lambda: (j := get_job(hub, job["id"]))["state"] == "failed" and j, 10, "the reaper")
    assert "no heartbeat" in failed["error"] and failed["actions"]["retry"]["allowed"] is True
    late = beat(hub, credential, job)
    assert late.status_code == 409 and late.json()["error"]["code"] == "stale_lease"
    entry = audit(hub, job["id"])[-1]
    assert (entry["action"], entry["actor"]["type"]) == ("recording.job.failed", "system")
    with hub.admin() as admin:
        assert admin.post(f"{JOBS}/{job['id']}/retry").status_code == 200
    assert claim(hub, node_id, credential).json()["data"]["recording"]["id"] == created["recording"]["id"]


def test_a_restarted_node_recovers_the_job_it_was_capturing(quick_hub: HubProcess) -> None:
    hub = quick_hub
    node_id, credential = enroll(hub)
    created = start(hub, node_id)
    job = claim(hub, node_id, credential).json()["data"]["job"]
    assert beat(hub, credential, job).status_code == 200
    # The node dies mid-capture; its lease runs out but the recovery grace keeps the job.
    time.sleep(2.5)  # past the 1 s lease, with a sweep (every 2 s) in between
    assert get_job(hub, job["id"])["state"] == "recording", "within the grace the job waits for its node"
    recovered = claim(hub, node_id, credential).json()["data"]
    assert recovered["job"]["id"] == job["id"] and recovered["job"]["recovered"] is True
    assert recovered["job"]["lease_epoch"] == job["lease_epoch"] + 1 and recovered["job"]["state"] == "recording"
    assert recovered["recording"]["id"] == created["recording"]["id"]
    uploading = beat(hub, credential, recovered["job"], "uploading", recording={"interrupted": True})
    assert uploading.status_code == 200, uploading.text
    # Gone again, now past the lease and the grace: the job fails and is never retried.
    failed = wait_for(lambda: (j := get_job(hub, job["id"]))["state"] == "failed" and j, 15, "the reaper after the grace")
    assert "recovery grace" in failed["error"] and failed["actions"]["retry"]["allowed"] is False
    with hub.admin() as admin:
        assert admin.post(f"{JOBS}/{job['id']}/retry").status_code == 409
    actions = [e["action"] for e in audit(hub, job["id"])]
    assert actions == [
        "recording.job.claimed",
        "recording.job.recording",
        "recording.job.recovered",
        "recording.job.uploading",
        "recording.job.failed",
    ]


def test_after_a_hub_restart_a_claimed_job_keeps_its_lease_for_a_full_timeout(tmp_path: Path) -> None:
    hub = HubProcess(tmp_path / "hub", env_extra={"HARK_JOB_LEASE_TIMEOUT_S": "5"})
    hub.start()
    try:
        node_id, credential = enroll(hub)
        start(hub, node_id)
        job = claim(hub, node_id, credential).json()["data"]["job"]
        assert hub.stop() == 0
        time.sleep(7)  # past the lease while the hub is away: the node could not have reached it
        hub.start()
        time.sleep(3)  # the node finds the hub again, well within a lease timeout of the hub's start
        answer = beat(hub, credential, job)
        assert answer.status_code == 200, answer.text
        assert get_job(hub, job["id"])["state"] == "recording"
    finally:
        assert hub.stop() == 0, hub.log()


def test_queued_jobs_of_a_deleted_node_are_cancelled(quick_hub: HubProcess) -> None:
    hub = quick_hub
    node_id, _ = enroll(hub)
    job = start(hub, node_id)["job"]
    with hub.admin() as admin:
        assert admin.delete(f"/api/v1/nodes/{node_id}", params={"force": "true"}).status_code == 204
    cancelled = wait_for(lambda: (j := get_job(hub, job["id"]))["state"] == "cancelled" and j, 10, "the reaper")
    assert cancelled["error"] == "the node was deleted"
    with hub.admin() as admin:
        assert admin.post(RECORDINGS, json={"node_id": node_id}).status_code == 404
        assert admin.post(f"{JOBS}/{job['id']}/retry").status_code == 409
