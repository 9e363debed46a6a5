"""Health events: one list of problems, worked through by hand; repeats count on one event; node status follows."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from tests.harness import HubProcess, wait_for


def now_iso(offset_s: float = 0) -> str:
    return (datetime.now(UTC) + timedelta(seconds=offset_s)).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def enroll(hub: HubProcess, site: str = "north") -> tuple[str, str]:
    hub.ensure_site(site)  # a node's site must exist
    with hub.admin() as admin:
        data = admin.post("/api/v1/nodes/enroll", json={"name": f"h-{uuid.uuid4().hex[:6]}", "site": site}).json()["data"]
    return data["node"]["id"], data["credential"]


def report(hub: HubProcess, node_id: str, credential: str, kind: str, state: str, severity: str = "warning") -> None:
    body = {"msg_id": uuid.uuid4().hex, "ts": now_iso(), "kind": kind, "state": state, "severity": severity, "details": {}}
    with hub.client(credential) as client:
        assert client.post(f"/api/v1/nodes/{node_id}/health-events", json=body).status_code == 200


def events_of(hub: HubProcess, node_id: str) -> list[dict]:
    with hub.admin() as admin:
        return admin.get("/api/v1/health-events", params={"node_id": node_id}).json()["data"]


def heartbeat(hub: HubProcess, node_id: str, credential: str) -> None:
    body = {"msg_id": uuid.uuid4().hex, "ts": now_iso(), "seq": 1, "agent_version": "t", "uptime_s": 1.0}
    with hub.client(credential) as client:
        assert client.post(f"/api/v1/nodes/{node_id}/heartbeat", json=body).status_code == 200


def node_status(hub: HubProcess, node_id: str) -> str:
    with hub.admin() as admin:
        return admin.get(f"/api/v1/nodes/{node_id}").json()["data"]["status"]


def test_a_flapping_condition_is_one_event_with_a_count(hub: HubProcess) -> None:
    node_id, credential = enroll(hub)
    for _ in range(3):
        report(hub, node_id, credential, "disk.low", "open")
    events = events_of(hub, node_id)
    assert [(e["kind"], e["count"], e["state"]) for e in events] == [("disk.low", 3, "open")]
    report(hub, node_id, credential, "disk.low", "resolved")
    assert events_of(hub, node_id)[0]["state"] == "resolved"
    report(hub, node_id, credential, "disk.low", "open")  # it comes back: a new event
    assert [e["state"] for e in events_of(hub, node_id)] == ["open", "resolved"]


def test_an_acknowledged_event_is_not_resolved_by_the_condition_clearing(hub: HubProcess) -> None:
    node_id, credential = enroll(hub)
    report(hub, node_id, credential, "clock.unsynced", "open")
    event_id = events_of(hub, node_id)[0]["id"]
    with hub.admin() as admin:
        acked = admin.post(f"/api/v1/health-events/{event_id}/acknowledge")
    assert acked.status_code == 200
    assert acked.json()["data"]["state"] == "acknowledged" and acked.json()["data"]["acknowledged_by"] == "admin"
    report(hub, node_id, credential, "clock.unsynced", "resolved")
    assert events_of(hub, node_id)[0]["state"] == "acknowledged"


def test_lifecycle_rules_and_audit(hub: HubProcess) -> None:
    node_id, credential = enroll(hub)
    report(hub, node_id, credential, "temperature.high", "open")
    event_id = events_of(hub, node_id)[0]["id"]
    with hub.admin() as admin:
        detail = admin.get(f"/api/v1/health-events/{event_id}").json()["data"]
        assert detail["actions"]["reopen"] == {"allowed": False, "reason": "only a resolved event can be reopened"}
        assert admin.post(f"/api/v1/health-events/{event_id}/reopen").status_code == 409
        assert admin.post(f"/api/v1/health-events/{event_id}/suppress").status_code == 409  # needs `until`
        suppressed = admin.post(f"/api/v1/health-events/{event_id}/suppress", json={"until": now_iso(3600)})
        assert suppressed.json()["data"]["state"] == "suppressed"
        assert admin.post(f"/api/v1/health-events/{event_id}/acknowledge").status_code == 409
        assert admin.post(f"/api/v1/health-events/{event_id}/resolve").json()["data"]["state"] == "resolved"
        assert admin.post(f"/api/v1/health-events/{event_id}/resolve").status_code == 409
        assert admin.post(f"/api/v1/health-events/{event_id}/reopen").json()["data"]["state"] == "open"
        audit = admin.get("/api/v1/audit-events", params={"target_id": event_id}).json()["data"]
    assert [a["action"] for a in audit] == ["health.reopen", "health.resolve", "health.suppress", "health.opened"]
    assert audit[0]["before"]["state"] == "resolved" and audit[0]["after"]["state"] == "open"


def test_a_suppression_ends_by_itself_and_a_critical_event_degrades_the_node_again(hub: HubProcess) -> None:
    node_id, credential = enroll(hub)
    heartbeat(hub, node_id, credential)
    report(hub, node_id, credential, "power.under_voltage", "open", severity="critical")
    event_id = events_of(hub, node_id)[0]["id"]
    with hub.admin() as admin:
        suppressed = admin.post(f"/api/v1/health-events/{event_id}/suppress", json={"until": now_iso(3)})
        assert suppressed.json()["data"]["state"] == "suppressed"
        assert node_status(hub, node_id) == "online"
        state = lambda: admin.get(f"/api/v1/health-events/{event_id}").json()["data"]["state"]  # noqa: E731
        wait_for(lambda: state() == "open", 15, "the event open again")
        reopened = admin.get(f"/api/v1/health-events/{event_id}").json()["data"]
        audit = admin.get("/api/v1/audit-events", params={"target_id": event_id}).json()["data"]
    assert reopened["suppressed_until"] is None
    assert audit[0]["action"] == "health.reopen" and audit[0]["actor"]["type"] == "system"
    assert audit[0]["reason"] == "its suppression ended"
    wait_for(lambda: node_status(hub, node_id) == "degraded", 10, "the node degraded again")


def test_a_critical_event_turns_the_node_degraded_and_its_resolution_back(hub: HubProcess) -> None:
    node_id, credential = enroll(hub)
    heartbeat(hub, node_id, credential)
    assert node_status(hub, node_id) == "online"
    report(hub, node_id, credential, "audio.device_lost", "open", severity="critical")
    assert node_status(hub, node_id) == "degraded"
    event_id = events_of(hub, node_id)[0]["id"]
    with hub.admin() as admin:
        assert admin.post(f"/api/v1/health-events/{event_id}/resolve").status_code == 200
    assert node_status(hub, node_id) == "online"
    report(hub, node_id, credential, "audio.device_lost", "open", severity="critical")
    assert node_status(hub, node_id) == "degraded"
    report(hub, node_id, credential, "audio.device_lost", "resolved", severity="critical")
    assert node_status(hub, node_id) == "online"


def test_hub_side_creation_bulk_actions_and_scope(hub: HubProcess) -> None:
    north, _ = enroll(hub, "north")
    south, _ = enroll(hub, "south")
    with hub.admin() as admin:
        created = [
            admin.post("/api/v1/health-events", json={"kind": "site.power", "node_id": n, "severity": "info"})
            for n in (north, south)
        ]
        assert [c.status_code for c in created] == [201, 201]
        ids = [c.json()["data"]["id"] for c in created]
        bad = admin.post("/api/v1/health-events", json={"kind": "x y", "severity": "dire"})
        assert set(bad.json()["error"]["fields"]) == {"kind", "severity"}
        result = admin.post("/api/v1/health-events/bulk-lifecycle", json={"ids": [*ids, "hev_missing"], "action": "acknowledge"})
        assert [(r["id"], r["ok"]) for r in result.json()["data"]] == [(ids[0], True), (ids[1], True), ("hev_missing", False)]
        username = f"hn-{uuid.uuid4().hex[:6]}"
        admin.post(
            "/api/v1/auth/users",
            json={"username": username, "password": "health-test-password", "roles": ["technician"], "sites": ["north"]},
        )
    with hub.client(hub.login(username, "health-test-password")) as tech:
        assert tech.get(f"/api/v1/health-events/{ids[1]}").status_code == 404
        assert tech.post(f"/api/v1/health-events/{ids[1]}/resolve").status_code == 404
        assert tech.post(f"/api/v1/health-events/{ids[0]}/resolve").status_code == 200
        listed = {e["id"] for e in tech.get("/api/v1/health-events", params={"kind": "site.power"}).json()["data"]}
    assert ids[0] in listed and ids[1] not in listed


def test_a_viewer_reads_but_cannot_acknowledge(hub: HubProcess) -> None:
    node_id, credential = enroll(hub)
    report(hub, node_id, credential, "outbox.high", "open")
    event_id = events_of(hub, node_id)[0]["id"]
    username = f"hv-{uuid.uuid4().hex[:6]}"
    with hub.admin() as admin:
        admin.post("/api/v1/auth/users", json={"username": username, "password": "health-test-password", "roles": ["viewer"]})
    with hub.client(hub.login(username, "health-test-password")) as viewer:
        assert viewer.get(f"/api/v1/health-events/{event_id}").status_code == 200
        denied = viewer.post(f"/api/v1/health-events/{event_id}/acknowledge")
    assert denied.status_code == 403 and denied.json()["error"]["required"] == ["health:acknowledge"]
