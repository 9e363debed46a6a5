"""The authorization matrix, generated from the route table: every route, every role, a scoped key, a node.

A request is allowed exactly when the caller holds the route's permission. A route added
without a declared permission fails here before it can be reached by anyone.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import httpx
import pytest
from hark_fleet.hub.api.base import AUTHENTICATED, PUBLIC
from hark_fleet.hub.api.hub_wide import HubWide
from hark_fleet.hub.app import ROUTES
from hark_fleet.hub.auth.permissions import ALL_PERMISSIONS, BUILTIN_ROLES, USER_PERMISSIONS, with_implied

from tests.harness import HubProcess

PASSWORD = "matrix-test-password-1"
KEY_SCOPES = ["node:read", "audit:read", "recording:read"]
NODE_IDS: dict[str, str] = {}  # a node credential calls routes about itself
DECLARED = set(ALL_PERMISSIONS) | {PUBLIC, AUTHENTICATED}
CASES = [(path, method, permission) for path, handler in ROUTES for method, permission in handler.permissions.items()]
SITE_ADMIN = "site-admin"  # admin on north only: every permission, limited to one site
# What a site-limited grant may not do whatever it holds: change what every site shares (users' groups, roles, profiles...).
HUB_WIDE = {
    (path, method)
    for path, handler in ROUTES
    if issubclass(handler, HubWide)
    for method in handler.permissions
    if method in handler.hub_wide_methods
}


def test_every_route_declares_a_known_permission_for_each_method() -> None:
    for path, handler in ROUTES:
        assert handler.permissions, f"{path} declares no methods"
        for method, permission in handler.permissions.items():
            assert permission in DECLARED, f"{method.upper()} {path} declares {permission!r}"


def new_user_token(hub: HubProcess, role: str) -> str:
    username = f"matrix-{role}-{uuid.uuid4().hex[:6]}"
    with hub.admin() as admin:
        created = admin.post("/api/v1/auth/users", json={"username": username, "password": PASSWORD, "roles": [role]})
    assert created.status_code == 201, created.text
    return hub.login(username, PASSWORD)


@pytest.fixture(scope="module")
def callers(hub: HubProcess) -> Iterator[dict[str, tuple[str, frozenset[str]]]]:
    """A token and its permissions for each built-in role, and for a site-limited service key."""
    tokens = {role: (new_user_token(hub, role), permissions) for role, permissions in BUILTIN_ROLES.items()}
    for site in ("north", "south"):
        hub.ensure_site(site)  # a grant's or node's site must exist
    with hub.admin() as admin:
        key = admin.post(
            "/api/v1/auth/keys", json={"name": "matrix", "kind": "service", "scopes": KEY_SCOPES, "sites": ["north"]}
        )
        tokens["scoped-key"] = (key.json()["data"]["secret"], with_implied(frozenset(KEY_SCOPES)))
        username = f"matrix-site-admin-{uuid.uuid4().hex[:6]}"
        body = {"username": username, "password": PASSWORD, "roles": ["admin"], "sites": ["north"]}
        assert admin.post("/api/v1/auth/users", json=body).status_code == 201
    tokens[SITE_ADMIN] = (hub.login(username, PASSWORD), with_implied(frozenset(USER_PERMISSIONS)))
    yield tokens


class Answer:
    """The status and (for errors) the body of a response; streams are not read past their headers."""

    def __init__(self, status_code: int, body: bytes) -> None:
        self.status_code = status_code
        self.text = body.decode(errors="replace")

    def json(self) -> dict:
        return json.loads(self.text)


def request(hub: HubProcess, method: str, path: str, token: str | None, own_id: str = "matrix-x") -> Answer:
    url = hub.url + path.replace("{id}", own_id).replace("{iid}", "matrix-x")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    body = b"{}" if method in ("post", "put", "patch") else None
    with httpx.stream(method.upper(), url, headers=headers, content=body, timeout=15) as response:
        if response.headers.get("content-type", "").startswith("text/event-stream"):
            return Answer(response.status_code, b"")
        return Answer(response.status_code, response.read())


@pytest.mark.parametrize(("path", "method", "permission"), CASES, ids=[f"{m.upper()} {p}" for p, m, _ in CASES])
def test_allowed_exactly_when_the_caller_holds_the_permission(
    hub: HubProcess, callers: dict[str, tuple[str, frozenset[str]]], path: str, method: str, permission: str | None
) -> None:
    if permission is PUBLIC:
        response = request(hub, method, path, None)
        assert response.status_code not in (401, 403), response.text
        return
    anonymous = request(hub, method, path, None)
    assert anonymous.status_code == 401, f"{method.upper()} {path} without a token: {anonymous.status_code}"
    if permission == AUTHENTICATED:
        for role in BUILTIN_ROLES:  # throwaway users: these routes include logging out everywhere
            token = new_user_token(hub, role)
            assert request(hub, method, path, token).status_code not in (401, 403), f"{role} refused {method.upper()} {path}"
        return
    for name, (token, granted) in callers.items():
        response = request(hub, method, path, token, NODE_IDS.get(token, "matrix-x"))
        if name == SITE_ADMIN and (path, method) in HUB_WIDE:
            assert response.status_code == 403, f"a site admin allowed {method.upper()} {path}, which every site shares"
            assert "on every site" in response.json()["error"]["message"], response.text
        elif permission in granted:
            assert response.status_code not in (401, 403), f"{name} refused {method.upper()} {path}: {response.text}"
        else:
            assert response.status_code == 403, f"{name} allowed {method.upper()} {path} without {permission}"
            if method == "head":
                continue  # a HEAD answer has no body to read the error from
            error = response.json()["error"]
            if name == "node":
                assert error["code"] == "forbidden" and error["required"] == [permission]
            elif name == "scoped-key":
                assert error["code"] == "insufficient_scope" and error["required"] == [permission]
            else:
                assert error == {
                    "code": "forbidden",
                    "message": f"This needs the permission {permission}.",
                    "required": [permission],
                }


AUDIT_READS = [path for path, handler in ROUTES if handler.permissions.get("get") == "audit:read"]


def test_a_site_limited_audit_reader_sees_only_its_sites_on_every_audit_route(
    hub: HubProcess, callers: dict[str, tuple[str, frozenset[str]]]
) -> None:
    """Audit reads follow site scope (API.md): the north key and a north operator see north's events and their own."""
    with hub.admin() as admin:
        ids = {}
        for site in ("north", "south"):
            node = admin.post("/api/v1/nodes/enroll", json={"name": f"matrix-{site}-{uuid.uuid4().hex[:6]}", "site": site})
            node_id = node.json()["data"]["node"]["id"]
            ids[site] = admin.get("/api/v1/audit-events", params={"target_id": node_id}).json()["data"][0]["id"]
        username = f"matrix-north-{uuid.uuid4().hex[:6]}"
        body = {"username": username, "password": PASSWORD, "roles": ["operator"], "sites": ["north"]}
        operator = admin.post("/api/v1/auth/users", json=body).json()["data"]
    readers = {"scoped-key": (callers["scoped-key"][0], "key"), "north operator": (hub.login(username, PASSWORD), operator["id"])}
    assert AUDIT_READS, "no route reads the audit log"
    for name, (token, own) in readers.items():

        def visible(event: dict, own: str = own) -> bool:
            return event["site"] == "north" or own in (event["actor"]["id"], event["actor"]["type"])

        for path in AUDIT_READS:
            url = hub.url + path
            with httpx.Client(headers={"Authorization": f"Bearer {token}"}, timeout=15) as client:
                if "{id}" in path:
                    assert client.get(url.replace("{id}", ids["north"])).status_code == 200, (name, path)
                    assert client.get(url.replace("{id}", ids["south"])).status_code == 404, (name, path)
                    continue
                response = client.get(url, params={"format": "ndjson", "limit": 200, "fields": "site"})
            assert response.status_code == 200, (name, path, response.text)
            if path.endswith("/facets"):
                assert {f["value"] for f in response.json()["data"]["site"]} <= {"north", None}, (name, path)
                continue
            found = response.json()["data"] if path.endswith("-events") else [json.loads(x) for x in response.text.splitlines()]
            assert ids["north"] in {e["id"] for e in found}, (name, path)
            assert all(visible(e) for e in found), (name, path)


KEY_ROUTES = [(p, m) for p, handler in ROUTES if p.startswith("/api/v1/auth/keys") for m in handler.permissions]


@pytest.mark.parametrize(("path", "method"), KEY_ROUTES, ids=[f"{m.upper()} {p}" for p, m in KEY_ROUTES])
def test_only_sessions_and_keys_holding_auth_keys_manage_keys(
    hub: HubProcess, callers: dict[str, tuple[str, frozenset[str]]], path: str, method: str
) -> None:
    """Key management is for login sessions (every role may) and for keys whose scopes name auth:keys."""
    refused = request(hub, method, path, callers["scoped-key"][0])
    assert refused.status_code == 403, refused.text
    assert refused.json()["error"]["code"] == "insufficient_scope"
    assert refused.json()["error"]["required"] == ["auth:keys"]
    with hub.admin() as admin:
        managing = admin.post("/api/v1/auth/keys", json={"name": "matrix-keys", "scopes": ["auth:keys"]}).json()["data"]
    allowed = request(hub, method, path, managing["secret"], managing["key"]["id"])
    assert allowed.status_code not in (401, 403), allowed.text
