"""Malformed, oversized and deeply nested bodies: 400 or 413 in the error shape, never a 500, and nothing changed."""

from __future__ import annotations

import base64
import re
import uuid
from typing import Any

import httpx
import pytest
from hark_fleet.hub.app import ROUTES

from tests.harness import HubProcess
from tests.hub.api.test_fleet import enroll, heartbeat, node_detail, now_iso
from tests.hub.api.test_recording_upload import uploading_recording

DEEP_OBJECT = b'{"a":' * 1000 + b"1" + b"}" * 1000  # msgspec's own recursion guard trips on this
DEEP_LIST = b"[" * 1000 + b"]" * 1000


def nested(levels: int) -> Any:
    """A value nested `levels` objects deep: decodable, but deeper than the hub keeps."""
    value: Any = 1
    for _ in range(levels):
        value = {"a": value}
    return value


def post_json(client: httpx.Client, method: str, url: str, content: bytes) -> httpx.Response:
    return client.request(method, url, content=content, headers={"Content-Type": "application/json"})


def assert_refused(response: httpx.Response, status: int = 400) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert error["code"] == {400: "invalid_request", 413: "payload_too_large"}[status], error
    return error


# -- the routes the issue names ------------------------------------------------------------------


@pytest.mark.parametrize("body", [DEEP_OBJECT, DEEP_LIST], ids=["deep-object", "deep-list"])
def test_deeply_nested_metadata_is_400_and_changes_nothing(hub: HubProcess, body: bytes) -> None:
    take = uploading_recording(hub, metadata={"project": "dawn"})
    with hub.admin() as admin:
        one = post_json(admin, "PATCH", f"/api/v1/recordings/{take.recording_id}/metadata", body)
        bulk = post_json(admin, "POST", "/api/v1/recordings/bulk-metadata", body)
        wrapped = b'{"ids": ["%s"], "metadata": %s}' % (take.recording_id.encode(), body)
        bulk_inner = post_json(admin, "POST", "/api/v1/recordings/bulk-metadata", wrapped)
        for response in (one, bulk, bulk_inner):
            assert_refused(response)
        free_form = {"notes": nested(40)}  # decodable, but deeper than any body the hub accepts
        assert_refused(admin.patch(f"/api/v1/recordings/{take.recording_id}/metadata", json=free_form))
        assert_refused(admin.post("/api/v1/recordings/bulk-metadata", json={"ids": [take.recording_id], "metadata": free_form}))
        kept = admin.get(f"/api/v1/recordings/{take.recording_id}").json()["data"]["metadata"]
    assert kept == {"project": "dawn"}


def test_deeply_nested_agent_bodies_are_400_and_change_nothing(hub: HubProcess) -> None:
    node, credential = enroll(hub)
    agent = hub.client(credential)
    base = f"/api/v1/nodes/{node['id']}"
    with agent:
        for route in ("heartbeat", "health-events", "meter-frame", "commissioning-reports"):
            for body in (DEEP_OBJECT, DEEP_LIST):
                assert_refused(post_json(agent, "POST", f"{base}/{route}", body))
        deep = nested(40)
        assert_refused(agent.post(f"{base}/heartbeat", json=heartbeat(f"m-{uuid.uuid4().hex}", audio={"state": deep})))
        health = {"msg_id": f"h-{uuid.uuid4().hex}", "ts": now_iso(), "kind": "disk.low", "state": "open", "details": deep}
        assert_refused(agent.post(f"{base}/health-events", json=health))
        assert_refused(agent.post(f"{base}/commissioning-reports", json={"channels": deep}))
        assert_refused(post_json(agent, "POST", f"{base}/heartbeat", b"{" + b" " * 1_100_000 + b"}"), 413)
    detail = node_detail(hub, node["id"])
    assert detail["status"] == "pending" and detail["last_seen_at"] is None
    with hub.admin() as admin:
        reports = admin.get(f"{base}/commissioning-reports").json()["data"]
        events = admin.get("/api/v1/health-events", params={"node_id": node["id"]}).json()["data"]
    assert reports == [] and events == []


def test_an_outbox_message_id_outside_1_to_100_characters_is_refused_on_http_as_on_mqtt(hub: HubProcess) -> None:
    node, credential = enroll(hub)
    with hub.client(credential) as agent:
        for msg_id in ("", "m" * 101):
            error = assert_refused(agent.post(f"/api/v1/nodes/{node['id']}/heartbeat", json=heartbeat(msg_id)))
            assert "msg_id" in error["fields"], error
        assert agent.post(f"/api/v1/nodes/{node['id']}/heartbeat", json=heartbeat("m" * 100)).status_code == 200


def test_a_deeply_nested_cursor_is_400(hub: HubProcess) -> None:
    cursor = base64.urlsafe_b64encode(DEEP_OBJECT).decode().rstrip("=")
    with hub.admin() as admin:
        for path in ("/api/v1/nodes", "/api/v1/recordings", "/api/v1/audit-events"):
            assert_refused(admin.get(path, params={"cursor": cursor}))


# -- every other route that takes a body -----------------------------------------------------------

SESSION_ENDERS = {"/api/v1/auth/logout", "/api/v1/auth/logout-all"}  # they take no body and would end the sweep's session
WRITES = sorted(
    (method, path, handler.permissions[method])
    for path, handler in ROUTES
    for method in handler.permissions
    if method in ("post", "put", "patch", "delete") and path not in SESSION_ENDERS
)


@pytest.fixture(scope="module")
def sweep_node(hub: HubProcess) -> tuple[str, str]:
    node, credential = enroll(hub)
    return node["id"], credential


@pytest.mark.parametrize(("method", "path", "permission"), WRITES, ids=[f"{m.upper()} {p}" for m, p, _ in WRITES])
def test_no_route_answers_500_to_hostile_bodies(
    hub: HubProcess, sweep_node: tuple[str, str], method: str, path: str, permission: str | None
) -> None:
    node_id, credential = sweep_node
    as_node = permission == "node:control"
    url = re.sub(r"\{id\}", node_id, path) if as_node and path.startswith("/api/v1/nodes/") else path
    url = re.sub(r"\{\w+\}", "missing", url)
    token = credential if as_node else hub.login()
    bodies = [DEEP_OBJECT, DEEP_LIST, b"\xff\xfe{", b'{"a": [1, 2, ' + b"[" * 200 + b"]" * 200 + b"]}"]
    with hub.client(token) as client:
        for body in bodies:
            response = post_json(client, method.upper(), url, body)
            assert response.status_code < 500, (body[:20], response.text)
            assert response.headers["content-type"].startswith("application/json") or response.status_code == 204
            if response.status_code >= 400:
                assert "Traceback" not in response.text
                assert set(response.json()) == {"error"}
    assert httpx.get(f"{hub.url}/healthz").status_code == 200
