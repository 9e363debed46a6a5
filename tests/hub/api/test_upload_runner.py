"""`/api/v1/upload-runner`: the status's shape, a pass on demand (202), pause and resume (hub-wide), each audited."""

from __future__ import annotations

import uuid

from tests.harness import HubProcess, wait_for

PASSWORD = "runner-test-password-1"


def audited(hub: HubProcess, action: str) -> list[dict]:
    with hub.admin() as admin:
        return admin.get("/api/v1/audit-events", params={"action": action}).json()["data"]


def test_the_status_says_state_concurrency_backlog_and_eta(hub: HubProcess) -> None:
    with hub.admin() as admin:
        answer = admin.get("/api/v1/upload-runner")
    assert answer.status_code == 200, answer.text
    status = answer.json()["data"]
    assert set(status) == {"state", "concurrency", "active", "throughput_bps", "backlog", "eta_s", "last_pass_at", "passes"}
    assert status["state"] in ("idle", "paused") and status["concurrency"] == 2 and status["active"] == []
    assert status["backlog"] == {"count": 0, "bytes": 0} and status["eta_s"] == 0


def test_run_makes_a_pass_now_and_is_audited(hub: HubProcess) -> None:
    with hub.admin() as admin:
        admin.post("/api/v1/upload-runner/resume")
        before = admin.get("/api/v1/upload-runner").json()["data"]["passes"]
        answer = admin.post("/api/v1/upload-runner/run")
    assert answer.status_code == 202, answer.text
    assert answer.json()["data"]["passes"] > before and answer.json()["data"]["last_pass_at"]
    assert audited(hub, "upload_runner.run")[0]["outcome"] == "success"


def test_pause_and_resume_change_the_state_and_the_actions_and_are_audited(hub: HubProcess) -> None:
    with hub.admin() as admin:
        paused = admin.post("/api/v1/upload-runner/pause")
        assert paused.status_code == 200, paused.text
        assert paused.json()["data"]["state"] == "paused"
        actions = admin.get("/api/v1/upload-runner/actions").json()["data"]
        assert actions["resume"]["allowed"] and not actions["pause"]["allowed"] and not actions["run"]["allowed"]
        resumed = admin.post("/api/v1/upload-runner/resume")
        assert resumed.json()["data"]["state"] in ("idle", "running")
        assert admin.get("/api/v1/upload-runner/actions").json()["data"]["pause"] == {"allowed": True, "reason": None}
    assert audited(hub, "upload_runner.pause")[0]["after"] == {"paused": True}
    assert audited(hub, "upload_runner.resume")[0]["after"] == {"paused": False}


def test_a_site_limited_operator_reads_and_runs_but_cannot_pause_every_sites_uploads(hub: HubProcess) -> None:
    hub.ensure_site("north")
    username = f"runner-north-{uuid.uuid4().hex[:6]}"
    with hub.admin() as admin:
        body = {"username": username, "password": PASSWORD, "roles": ["operator"], "sites": ["north"]}
        assert admin.post("/api/v1/auth/users", json=body).status_code == 201
    with hub.client(hub.login(username, PASSWORD)) as operator:
        assert operator.get("/api/v1/upload-runner").json()["data"]["backlog"] == {"count": 0, "bytes": 0}
        actions = operator.get("/api/v1/upload-runner/actions").json()["data"]
        assert actions["run"]["allowed"] and not actions["pause"]["allowed"] and "every site" in actions["pause"]["reason"]
        assert operator.post("/api/v1/upload-runner/run").status_code == 202
        refused = operator.post("/api/v1/upload-runner/pause")
        assert refused.status_code == 403 and refused.json()["error"]["required"] == ["recording:control"]
    with hub.admin() as admin:
        wait_for(lambda: admin.get("/api/v1/upload-runner").json()["data"]["state"] != "paused", 5, "the runner still running")
