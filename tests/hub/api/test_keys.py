"""API keys: secret shown once, deny-by-default scopes, site limits, expiry, revoke, rotate."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from hark_fleet.hub.clock import utcnow
from hark_fleet.hub.db.models import Node
from hark_fleet.hub.ids import new_id

from tests.conftest import hub_database
from tests.harness import HubProcess
from tests.hub.api.sites import sites_exist

PASSWORD = "keys-test-password-1"


_sites_exist = sites_exist("north", "south")


def make_user(hub: HubProcess, roles: list[str], sites: list[str] | None = None) -> str:
    """A new user's login token."""
    username = f"k-{uuid.uuid4().hex[:8]}"
    with hub.admin() as admin:
        response = admin.post(
            "/api/v1/auth/users", json={"username": username, "password": PASSWORD, "roles": roles, "sites": sites}
        )
    assert response.status_code == 201, response.text
    return hub.login(username, PASSWORD)


def create_key(client: httpx.Client, **body: object) -> tuple[dict, str]:
    response = client.post("/api/v1/auth/keys", json={"name": "test key", **body})
    assert response.status_code == 201, response.text
    data = response.json()["data"]
    return data["key"], data["secret"]


@pytest.fixture(scope="module")
def nodes(hub: HubProcess) -> None:
    with hub_database(hub):
        Node.delete().execute()
        for name, site in (("n-north", "north"), ("n-south", "south")):
            Node.create(id=new_id("nod"), name=name, site=site, tags=[], status="online", created_at=utcnow())


def test_the_secret_is_shown_once_and_only_its_prefix_is_listed(hub: HubProcess) -> None:
    with hub.admin() as admin:
        key, secret = create_key(admin, scopes=["node:read"])
        assert secret.startswith("hkk_") and len(secret) > 40
        assert key["key_prefix"] == secret[:12]
        assert key["status"] == "active" and key["kind"] == "user"
        listed = admin.get("/api/v1/auth/keys").json()["data"]
    mine = next(k for k in listed if k["id"] == key["id"])
    assert mine == key
    assert secret not in str(listed)


def test_a_key_reaches_only_the_routes_its_scopes_name(hub: HubProcess, nodes: None) -> None:
    with hub.admin() as admin:
        _, secret = create_key(admin, scopes=["node:read"])
    with hub.client(secret) as client:
        assert client.get("/api/v1/nodes").status_code == 200
        denied = client.get("/api/v1/audit-events")
    assert denied.status_code == 403
    assert denied.json()["error"] == {
        "code": "insufficient_scope",
        "message": "This API key's scopes do not include audit:read.",
        "required": ["audit:read"],
        "current": ["node:read"],
    }


@pytest.mark.parametrize("scopes", [[], ["node:control"], ["nodes:everything"]])
def test_keys_need_real_user_permissions_as_scopes(hub: HubProcess, scopes: list[str]) -> None:
    with hub.admin() as admin:
        response = admin.post("/api/v1/auth/keys", json={"name": "k", "scopes": scopes})
    assert response.status_code == 400
    assert "scopes" in response.json()["error"]["fields"]


def test_a_user_key_cannot_hold_more_than_its_owner(hub: HubProcess) -> None:
    viewer = make_user(hub, ["viewer"])
    with hub.client(viewer) as client:
        response = client.post("/api/v1/auth/keys", json={"name": "k", "scopes": ["node:manage"]})
        assert response.status_code == 403
        assert response.json()["error"]["required"] == ["node:manage"]
        _, secret = create_key(client, scopes=["node:read"])
    with hub.client(secret) as key_client:
        assert key_client.get("/api/v1/nodes").status_code == 200


def test_a_user_key_loses_what_its_owner_loses(hub: HubProcess) -> None:
    username = f"k-{uuid.uuid4().hex[:8]}"
    with hub.admin() as admin:
        user = admin.post("/api/v1/auth/users", json={"username": username, "password": PASSWORD, "roles": ["operator"]}).json()[
            "data"
        ]
        with hub.client(hub.login(username, PASSWORD)) as owner:
            _, secret = create_key(owner, scopes=["node:read", "audit:read"])
        with hub.client(secret) as key_client:
            assert key_client.get("/api/v1/audit-events").status_code == 200
            admin.patch(f"/api/v1/auth/users/{user['id']}/access", json={"roles": ["viewer"]})
            assert key_client.get("/api/v1/audit-events").status_code == 403
            assert key_client.get("/api/v1/nodes").status_code == 200
            admin.patch(f"/api/v1/auth/users/{user['id']}/status", json={"status": "disabled"})
            assert key_client.get("/api/v1/nodes").json()["error"]["code"] == "api_key_revoked"


def test_service_keys_are_for_admins_and_hold_only_their_scopes(hub: HubProcess) -> None:
    operator = make_user(hub, ["operator"])
    with hub.client(operator) as client:
        refused = client.post("/api/v1/auth/keys", json={"name": "ci", "kind": "service", "scopes": ["node:read"]})
        assert refused.status_code == 403
    with hub.admin() as admin:
        key, secret = create_key(admin, kind="service", scopes=["metrics:read"])
    assert key["kind"] == "service" and key["user_id"] is None
    with hub.client(secret) as client:
        assert client.get("/metrics").status_code == 200
        assert client.get("/api/v1/nodes").status_code == 403


def test_a_site_limited_key_sees_only_its_sites(hub: HubProcess, nodes: None) -> None:
    with hub.admin() as admin:
        _, secret = create_key(admin, scopes=["node:read"], sites=["north"])
    with hub.client(secret) as client:
        names = [n["name"] for n in client.get("/api/v1/nodes").json()["data"]]
        facets = client.get("/api/v1/nodes/facets", params={"fields": "site"}).json()["data"]["site"]
        export = client.get("/api/v1/nodes/export").text
    assert names == ["n-north"]
    assert facets == [{"value": "north", "count": 1}]
    assert "n-south" not in export


def test_an_expired_key_answers_api_key_expired(hub: HubProcess) -> None:
    soon = (datetime.now(UTC) + timedelta(seconds=2)).isoformat().replace("+00:00", "Z")
    with hub.admin() as admin:
        key, secret = create_key(admin, scopes=["node:read"], expires_at=soon)
        past = admin.post("/api/v1/auth/keys", json={"name": "k", "scopes": ["node:read"], "expires_at": "2020-01-01T00:00:00Z"})
        assert past.json()["error"]["fields"] == {"expires_at": "must be in the future"}
    time.sleep(2.5)
    with hub.client(secret) as client:
        response = client.get("/api/v1/nodes")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "api_key_expired"


def test_a_revoked_key_answers_api_key_revoked(hub: HubProcess) -> None:
    with hub.admin() as admin:
        key, secret = create_key(admin, scopes=["node:read"])
        with hub.client(secret) as client:
            assert client.get("/api/v1/nodes").status_code == 200
            assert admin.delete(f"/api/v1/auth/keys/{key['id']}").status_code == 204
            response = client.get("/api/v1/nodes")
        listed = next(k for k in admin.get("/api/v1/auth/keys").json()["data"] if k["id"] == key["id"])
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "api_key_revoked"
    assert listed["status"] == "revoked"


def test_rotation_replaces_the_secret_at_once(hub: HubProcess) -> None:
    with hub.admin() as admin:
        key, old = create_key(admin, scopes=["node:read"])
        rotated = admin.post(f"/api/v1/auth/keys/{key['id']}/rotate")
    assert rotated.status_code == 201
    new = rotated.json()["data"]["secret"]
    assert new != old and rotated.json()["data"]["key"]["key_prefix"] == new[:12]
    with hub.client(old) as client:
        assert client.get("/api/v1/nodes").json()["error"]["code"] == "api_key_revoked"
    with hub.client(new) as client:
        assert client.get("/api/v1/nodes").status_code == 200


def test_users_manage_only_their_own_keys(hub: HubProcess) -> None:
    alice, bob = make_user(hub, ["viewer"]), make_user(hub, ["viewer"])
    with hub.client(alice) as client:
        key, _ = create_key(client, scopes=["node:read"])
    with hub.client(bob) as client:
        assert key["id"] not in [k["id"] for k in client.get("/api/v1/auth/keys").json()["data"]]
        assert client.delete(f"/api/v1/auth/keys/{key['id']}").status_code == 404
        assert client.post(f"/api/v1/auth/keys/{key['id']}/rotate").status_code == 404
    with hub.admin() as admin:
        assert key["id"] in [k["id"] for k in admin.get("/api/v1/auth/keys", params={"limit": 200}).json()["data"]]


# -- keys that make keys, and what a key may hold ----------------------------------------------


def new_user(hub: HubProcess, roles: list[str], sites: list[str] | None = None) -> tuple[dict, str]:
    """A new user and their login token."""
    username = f"k-{uuid.uuid4().hex[:8]}"
    with hub.admin() as admin:
        response = admin.post(
            "/api/v1/auth/users", json={"username": username, "password": PASSWORD, "roles": roles, "sites": sites}
        )
    assert response.status_code == 201, response.text
    return response.json()["data"], hub.login(username, PASSWORD)


def key_events(hub: HubProcess, key_id: str) -> list[dict]:
    with hub.admin() as admin:
        return admin.get("/api/v1/audit-events", params={"target_id": key_id}).json()["data"]


def test_a_key_without_the_key_management_scope_cannot_manage_keys(hub: HubProcess) -> None:
    with hub.admin() as admin:
        sibling, _ = create_key(admin, scopes=["node:read", "audit:read"])
        _, secret = create_key(admin, scopes=["node:read"])
    with hub.client(secret) as client:
        made = client.post("/api/v1/auth/keys", json={"name": "child", "scopes": ["node:read"]})
        answers = [
            made,
            client.get("/api/v1/auth/keys"),
            client.post(f"/api/v1/auth/keys/{sibling['id']}/rotate"),
            client.delete(f"/api/v1/auth/keys/{sibling['id']}"),
        ]
    for response in answers:
        assert response.status_code == 403, (response.request.method, response.request.url, response.text)
        error = response.json()["error"]
        assert error["code"] == "insufficient_scope" and error["required"] == ["auth:keys"]
        assert error["current"] == ["node:read"]
    assert [e["action"] for e in key_events(hub, sibling["id"])] == ["api_key.create"]


def test_a_key_with_the_key_management_scope_makes_keys_within_its_own_scopes_and_sites(hub: HubProcess, nodes: None) -> None:
    with hub.admin() as admin:
        parent, secret = create_key(admin, scopes=["node:read", "auth:keys"], sites=["north"])
    assert parent["scopes"] == ["node:read", "auth:keys"] and parent["parent_key_id"] is None
    with hub.client(secret) as client:
        child, child_secret = create_key(client, scopes=["node:read"])
        more = client.post("/api/v1/auth/keys", json={"name": "k", "scopes": ["node:read", "audit:read"]})
        elsewhere = client.post("/api/v1/auth/keys", json={"name": "k", "scopes": ["node:read"], "sites": ["north", "south"]})
        service = client.post("/api/v1/auth/keys", json={"name": "k", "kind": "service", "scopes": ["node:read"]})
        listed = [k["id"] for k in client.get("/api/v1/auth/keys").json()["data"]]
    assert child["parent_key_id"] == parent["id"] and child["sites"] == ["north"]
    assert more.status_code == 403 and more.json()["error"]["required"] == ["audit:read"]
    assert elsewhere.status_code == 403 and elsewhere.json()["error"]["sites"] == ["south"]
    assert "south" in elsewhere.json()["error"]["message"]
    assert service.status_code == 403
    assert sorted(listed) == sorted([parent["id"], child["id"]])  # itself and what it made, not the admin's other keys
    with hub.client(child_secret) as client:
        assert [n["name"] for n in client.get("/api/v1/nodes").json()["data"]] == ["n-north"]
    created = key_events(hub, child["id"])[-1]
    assert created["action"] == "api_key.create" and created["actor"]["id"] == parent["id"]
    assert created["after"]["parent_key_id"] == parent["id"]


def test_a_user_cannot_make_a_key_for_sites_they_do_not_have(hub: HubProcess, nodes: None) -> None:
    user, token = new_user(hub, ["viewer"], ["north"])
    with hub.client(token) as client:
        refused = client.post("/api/v1/auth/keys", json={"name": "k", "scopes": ["node:read"], "sites": ["north", "south"]})
        defaulted, secret = create_key(client, scopes=["node:read"])
    assert refused.status_code == 403
    assert refused.json()["error"]["sites"] == ["south"] and refused.json()["error"]["required"] == ["node:read"]
    assert defaulted["sites"] == ["north"]
    with hub.client(secret) as client:
        assert [n["name"] for n in client.get("/api/v1/nodes").json()["data"]] == ["n-north"]
    with hub.admin() as admin:
        denied = admin.get("/api/v1/audit-events", params={"actor_id": user["id"], "action": "api_key.create"}).json()["data"]
    assert [e["outcome"] for e in denied] == ["success", "failure"]


def test_revoking_a_key_revokes_the_keys_it_made(hub: HubProcess) -> None:
    _, token = new_user(hub, ["viewer"])
    with hub.client(token) as session:
        parent, secret = create_key(session, scopes=["node:read", "auth:keys"])
        with hub.client(secret) as client:
            child, child_secret = create_key(client, scopes=["node:read", "auth:keys"])
        with hub.client(child_secret) as client:
            grandchild, grandchild_secret = create_key(client, scopes=["node:read"])
        assert session.delete(f"/api/v1/auth/keys/{parent['id']}").status_code == 204
        listed = {k["id"]: k["status"] for k in session.get("/api/v1/auth/keys").json()["data"]}
    assert listed[child["id"]] == "revoked" and listed[grandchild["id"]] == "revoked"
    for made in (child_secret, grandchild_secret):
        with hub.client(made) as client:
            assert client.get("/api/v1/nodes").json()["error"]["code"] == "api_key_revoked"
    revoked = key_events(hub, grandchild["id"])[0]
    assert revoked["action"] == "api_key.revoke" and revoked["after"]["status"] == "revoked"
    assert parent["id"] in revoked["reason"]


def test_a_key_holds_no_more_than_its_creator_holds_now(hub: HubProcess, nodes: None) -> None:
    """Effective permissions are the intersection with the creator's, worked out at each authentication."""
    creator, token = new_user(hub, ["admin"])
    with hub.client(token) as session:
        service, service_secret = create_key(session, kind="service", scopes=["node:read", "audit:read"])
        user_key, user_secret = create_key(session, scopes=["node:read", "auth:keys"])
    with hub.client(user_secret) as client:
        _, grandchild_secret = create_key(client, scopes=["node:read"])
    with hub.admin() as admin:
        admin.patch(f"/api/v1/auth/users/{creator['id']}/access", json={"roles": ["viewer"], "sites": ["north"]})
    with hub.client(service_secret) as client:
        assert client.get("/api/v1/audit-events").status_code == 403
        assert [n["name"] for n in client.get("/api/v1/nodes").json()["data"]] == ["n-north"]
    with hub.client(grandchild_secret) as client:
        assert [n["name"] for n in client.get("/api/v1/nodes").json()["data"]] == ["n-north"]
    with hub.admin() as admin:
        assert admin.delete(f"/api/v1/auth/users/{creator['id']}").status_code == 204
        listed = {k["id"]: k["status"] for k in admin.get("/api/v1/auth/keys", params={"limit": 200}).json()["data"]}
    assert listed[service["id"]] == "revoked" and listed[user_key["id"]] == "revoked"
    for secret in (service_secret, grandchild_secret):
        with hub.client(secret) as client:
            assert client.get("/api/v1/nodes").json()["error"]["code"] == "api_key_revoked"


def test_disabling_a_user_stops_every_key_it_made(hub: HubProcess) -> None:
    creator, token = new_user(hub, ["admin"])
    with hub.client(token) as session:
        _, service_secret = create_key(session, kind="service", scopes=["node:read"])
        _, user_secret = create_key(session, scopes=["node:read", "auth:keys"])
    with hub.client(user_secret) as client:
        _, child_secret = create_key(client, scopes=["node:read"])
    with hub.admin() as admin:
        admin.patch(f"/api/v1/auth/users/{creator['id']}/status", json={"status": "disabled"})
    for secret in (service_secret, user_secret, child_secret):
        with hub.client(secret) as client:
            assert client.get("/api/v1/nodes").json()["error"]["code"] == "api_key_revoked"
