"""Groups, roles and access policies on a real hub: what they grant shows in the member's own `me`."""

from __future__ import annotations

import time
import uuid
from datetime import datetime
from typing import Any

import httpx
import pytest
from hark_fleet.hub.db.models import User

from tests.conftest import hub_database
from tests.harness import ADMIN_PASSWORD, HubProcess, wait_for
from tests.hub.api.sites import sites_exist

USERS = "/api/v1/auth/users"
GROUPS = "/api/v1/auth/groups"
ROLES = "/api/v1/auth/roles"
POLICIES = "/api/v1/auth/access-policies"
PASSWORD = "quiet-Harbour-lamp-83"

# API.md, "Permissions, roles and scope".
USER_PERMISSIONS = {
    "auth:manage",
    "audit:read",
    "node:read",
    "node:manage",
    "listen:monitor",
    "listen:manage",
    "health:read",
    "health:acknowledge",
    "recording:read",
    "recording:read_own",
    "recording:create",
    "recording:control",
    "recording:playback",
    "recording:download",
    "recording:edit",
    "recording:delete",
    "recording:share",
    "schedule:read",
    "schedule:manage",
    "settings:read",
    "settings:manage",
    "notify:read",
    "notify:manage",
    "site:read",
    "site:manage",
    "metrics:read",
}
BUILTIN = {
    "admin": USER_PERMISSIONS,
    "operator": {
        "audit:read",
        "node:read",
        "health:read",
        "recording:read",
        "recording:read_own",
        "schedule:read",
        "settings:read",
        "notify:read",
        "site:read",
        "metrics:read",
        "listen:monitor",
        "health:acknowledge",
        "recording:create",
        "recording:control",
        "recording:playback",
        "recording:download",
        "recording:edit",
        "recording:share",
        "schedule:manage",
    },
    "technician": {
        "node:read",
        "node:manage",
        "health:read",
        "health:acknowledge",
        "listen:monitor",
        "recording:read",
        "recording:read_own",
        "recording:playback",
        "settings:read",
        "notify:read",
        "site:read",
    },
    "viewer": {
        "node:read",
        "health:read",
        "recording:read",
        "recording:read_own",
        "schedule:read",
        "settings:read",
        "notify:read",
        "site:read",
    },
    # Reads, plays and downloads only the recordings it started.
    "recordist": {
        "node:read",
        "site:read",
        "health:read",
        "recording:read_own",
        "recording:create",
        "recording:control",
        "recording:playback",
        "recording:download",
        "listen:monitor",
    },
}
DEFAULT_POLICIES = {"session_ttl_s": 43200, "oidc_default_roles": [], "oidc_mappings": [], "oidc_sites_claim": None}


_sites_exist = sites_exist("north", "south", "east", "west")


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def create_user(hub: HubProcess, roles: list[str], **extra: Any) -> dict[str, Any]:
    with hub.admin() as client:
        response = client.post(USERS, json={"username": unique("member"), "password": PASSWORD, "roles": roles, **extra})
    assert response.status_code == 201, response.text
    return response.json()["data"]


def create_group(hub: HubProcess, roles: list[str], sites: list[str] | None = None, **extra: Any) -> dict[str, Any]:
    with hub.admin() as client:
        response = client.post(GROUPS, json={"name": unique("group"), "roles": roles, "sites": sites, **extra})
    assert response.status_code == 201, response.text
    return response.json()["data"]


def create_role(hub: HubProcess, permissions: list[str]) -> dict[str, Any]:
    with hub.admin() as client:
        response = client.post(ROLES, json={"name": unique("role"), "permissions": permissions})
    assert response.status_code == 201, response.text
    return response.json()["data"]


def me(hub: HubProcess, token: str) -> dict[str, Any]:
    with hub.client(token) as client:
        response = client.get("/api/v1/auth/me")
    assert response.status_code == 200, response.text
    return response.json()["data"]


def logged_in(hub: HubProcess, user: dict[str, Any]) -> str:
    return hub.login(user["username"], PASSWORD)


# -- groups -------------------------------------------------------------------------------


def test_group_create_answers_201_with_the_group(hub: HubProcess) -> None:
    name = unique("Night shift")
    with hub.admin() as client:
        response = client.post(
            GROUPS, json={"name": name, "roles": ["viewer"], "sites": ["south", "north"], "description": "nights"}
        )
    assert response.status_code == 201
    group = response.json()["data"]
    assert set(group) == {"id", "name", "description", "roles", "sites", "members", "created_at"}
    assert group["id"].startswith("grp_")
    assert group["name"] == name
    assert group["description"] == "nights"
    assert group["roles"] == ["viewer"]
    assert group["sites"] == ["north", "south"]
    assert group["members"] == []
    assert group["created_at"].endswith("Z")


def test_groups_can_be_listed_read_changed_and_deleted(hub: HubProcess) -> None:
    group = create_group(hub, ["viewer"])
    with hub.admin() as client:
        listed = client.get(GROUPS).json()
        assert group in listed["data"]
        assert listed["meta"] == {"next_cursor": None}
        assert client.get(f"{GROUPS}/{group['id']}").json()["data"] == group
        new_name = unique("renamed")
        response = client.patch(
            f"{GROUPS}/{group['id']}", json={"name": new_name, "roles": ["technician"], "sites": ["east"], "description": "d"}
        )
        assert response.status_code == 200
        changed = response.json()["data"]
        assert changed == group | {"name": new_name, "roles": ["technician"], "sites": ["east"], "description": "d"}
        assert client.get(f"{GROUPS}/{group['id']}").json()["data"] == changed
        response = client.patch(f"{GROUPS}/{group['id']}", json={"sites": None})
        assert response.json()["data"]["sites"] is None
        response = client.delete(f"{GROUPS}/{group['id']}")
        assert response.status_code == 204
        assert response.content == b""
        assert client.get(f"{GROUPS}/{group['id']}").status_code == 404
        assert client.patch(f"{GROUPS}/{group['id']}", json={"description": "x"}).status_code == 404
        assert client.delete(f"{GROUPS}/{group['id']}").status_code == 404
        assert group["id"] not in [g["id"] for g in client.get(GROUPS).json()["data"]]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "", "roles": []}, "name"),
        ({"name": "bad/name", "roles": []}, "name"),
        ({"name": "fine name", "roles": ["wizard"]}, "roles"),
        ({"name": "fine name", "roles": [], "sites": ["not a site"]}, "sites"),
        ({"name": "fine name", "roles": [], "colour": "red"}, "colour"),
    ],
)
def test_invalid_group_is_400(hub: HubProcess, body: dict[str, Any], field: str) -> None:
    with hub.admin() as client:
        response = client.post(GROUPS, json=body)
    assert response.status_code == 400
    assert list(response.json()["error"]["fields"]) == [field]


def test_duplicate_group_name_is_409(hub: HubProcess) -> None:
    group = create_group(hub, [])
    other = create_group(hub, [])
    with hub.admin() as client:
        assert client.post(GROUPS, json={"name": group["name"], "roles": []}).status_code == 409
        response = client.patch(f"{GROUPS}/{other['id']}", json={"name": group["name"]})
        assert response.status_code == 409
        assert client.get(f"{GROUPS}/{other['id']}").json()["data"]["name"] == other["name"]


def test_group_member_gets_the_groups_roles_on_the_groups_sites(hub: HubProcess) -> None:
    group = create_group(hub, ["technician"], ["north"])
    user = create_user(hub, [], groups=[group["id"]])
    assert user["groups"] == [group["id"]]
    data = me(hub, logged_in(hub, user))
    assert set(data["permissions"]) == BUILTIN["technician"]
    assert data["grants"] == [{"permissions": data["permissions"], "sites": ["north"]}]
    assert data["user"]["groups"] == [group["id"]]
    with hub.admin() as client:
        assert client.get(f"{GROUPS}/{group['id']}").json()["data"]["members"] == [user["id"]]
        detail = client.get(f"{USERS}/{user['id']}").json()["data"]
    assert sorted(detail["permissions"]) == sorted(BUILTIN["technician"])


def test_own_roles_and_group_roles_are_separate_grants(hub: HubProcess) -> None:
    group = create_group(hub, ["technician"], ["north"])
    user = create_user(hub, ["viewer"], sites=["south"], groups=[group["id"]])
    data = me(hub, logged_in(hub, user))
    assert set(data["permissions"]) == BUILTIN["viewer"] | BUILTIN["technician"]
    grants = sorted(((tuple(sorted(g["permissions"])), tuple(g["sites"])) for g in data["grants"]), key=lambda g: g[1])
    assert grants == [(tuple(sorted(BUILTIN["technician"])), ("north",)), (tuple(sorted(BUILTIN["viewer"])), ("south",))]


def test_removing_a_member_takes_the_groups_roles_away(hub: HubProcess) -> None:
    group = create_group(hub, ["operator"], ["east"])
    user = create_user(hub, [])
    token = logged_in(hub, user)
    assert me(hub, token)["permissions"] == []  # now cached
    with hub.admin() as client:
        response = client.patch(f"{USERS}/{user['id']}/access", json={"groups": [group["id"]]})
        assert response.status_code == 200
        assert response.json()["data"]["groups"] == [group["id"]]
        assert set(me(hub, token)["permissions"]) == BUILTIN["operator"]
        response = client.patch(f"{USERS}/{user['id']}/access", json={"groups": []})
        assert response.json()["data"]["groups"] == []
        data = me(hub, token)
        assert data["permissions"] == []
        assert data["grants"] == []
        assert client.get(f"{GROUPS}/{group['id']}").json()["data"]["members"] == []


def test_changing_or_deleting_a_group_changes_its_members_access(hub: HubProcess) -> None:
    group = create_group(hub, ["viewer"], ["north"])
    user = create_user(hub, [], groups=[group["id"]])
    token = logged_in(hub, user)
    assert me(hub, token)["grants"][0]["sites"] == ["north"]
    with hub.admin() as client:
        assert client.patch(f"{GROUPS}/{group['id']}", json={"roles": ["technician"], "sites": ["west"]}).status_code == 200
        data = me(hub, token)
        assert set(data["permissions"]) == BUILTIN["technician"]
        assert data["grants"][0]["sites"] == ["west"]
        assert client.delete(f"{GROUPS}/{group['id']}").status_code == 204
        assert client.get(f"{USERS}/{user['id']}").json()["data"]["groups"] == []
    assert me(hub, token)["permissions"] == []


# -- roles --------------------------------------------------------------------------------


def test_roles_list_the_four_built_ins_with_the_documented_permissions(hub: HubProcess) -> None:
    with hub.admin() as client:
        response = client.get(ROLES)
    assert response.status_code == 200
    roles = {r["name"]: r for r in response.json()["data"] if r["builtin"]}
    assert set(roles) == set(BUILTIN)
    for name, permissions in BUILTIN.items():
        assert roles[name]["id"] == name
        assert len(roles[name]["permissions"]) == len(permissions), name
        assert set(roles[name]["permissions"]) == permissions, name
    assert roles["viewer"]["permissions"] == [
        "node:read",
        "health:read",
        "recording:read",
        "recording:read_own",
        "schedule:read",
        "settings:read",
        "notify:read",
        "site:read",
    ]
    assert set(roles["technician"]["permissions"]) == BUILTIN["technician"]
    assert all("node:control" not in r["permissions"] for r in response.json()["data"])


def test_custom_role_grants_exactly_its_permissions(hub: HubProcess) -> None:
    with hub.admin() as client:
        name = unique("auditor")
        response = client.post(
            ROLES, json={"name": name, "permissions": ["metrics:read", "audit:read", "audit:read"], "description": "reads logs"}
        )
    assert response.status_code == 201
    role = response.json()["data"]
    assert role["id"].startswith("rol_")
    assert role["name"] == name
    assert role["builtin"] is False
    assert role["description"] == "reads logs"
    assert sorted(role["permissions"]) == ["audit:read", "metrics:read"]
    user = create_user(hub, [name])
    token = logged_in(hub, user)
    assert sorted(me(hub, token)["permissions"]) == ["audit:read", "metrics:read"]
    with hub.client(token) as client:
        assert client.get("/api/v1/audit-events", params={"limit": 1}).status_code == 200
        denied = client.get("/api/v1/nodes")
    assert denied.status_code == 403
    assert denied.json()["error"]["required"] == ["node:read"]
    with hub.admin() as client:
        assert role in client.get(ROLES).json()["data"]


@pytest.mark.parametrize(
    ("permissions", "problem"),
    [
        (["node:read", "node:fly"], "not user permissions: node:fly"),
        (["node:control"], "not user permissions: node:control"),
        (["NODE:READ"], "not user permissions: NODE:READ"),
    ],
)
def test_role_with_a_permission_users_cannot_hold_is_400(hub: HubProcess, permissions: list[str], problem: str) -> None:
    name = unique("bad")
    with hub.admin() as client:
        response = client.post(ROLES, json={"name": name, "permissions": permissions})
        assert response.status_code == 400
        assert response.json()["error"]["fields"] == {"permissions": problem}
        assert name not in [r["name"] for r in client.get(ROLES).json()["data"]]


@pytest.mark.parametrize("name", ["Upper", "x", "has space", "1starts-with-digit", "viewer"])
def test_role_name_must_be_new_and_well_formed(hub: HubProcess, name: str) -> None:
    with hub.admin() as client:
        response = client.post(ROLES, json={"name": name, "permissions": ["node:read"]})
    if name == "viewer":
        assert response.status_code == 409
    else:
        assert response.status_code == 400
        assert list(response.json()["error"]["fields"]) == ["name"]


def test_changing_a_roles_permissions_takes_effect(hub: HubProcess) -> None:
    role = create_role(hub, ["node:read"])
    user = create_user(hub, [role["name"]])
    token = logged_in(hub, user)
    assert me(hub, token)["permissions"] == ["node:read"]  # now cached
    with hub.admin() as client:
        response = client.patch(f"{ROLES}/{role['id']}", json={"permissions": ["recording:read", "schedule:read"]})
        assert response.status_code == 200
        assert sorted(response.json()["data"]["permissions"]) == ["recording:read", "schedule:read"]
        # recording:read includes reading one's own recordings (the library's routes ask for recording:read_own)
        assert sorted(me(hub, token)["permissions"]) == ["recording:read", "recording:read_own", "schedule:read"]
        bad = client.patch(f"{ROLES}/{role['id']}", json={"permissions": ["node:control"]})
        assert bad.status_code == 400
        assert bad.json()["error"]["fields"] == {"permissions": "not user permissions: node:control"}
    assert sorted(me(hub, token)["permissions"]) == ["recording:read", "recording:read_own", "schedule:read"]


def test_a_role_still_given_cannot_be_deleted(hub: HubProcess) -> None:
    role = create_role(hub, ["node:read"])
    user = create_user(hub, [role["name"]])
    group = create_group(hub, [role["name"]])
    with hub.admin() as client:
        response = client.delete(f"{ROLES}/{role['id']}")
        assert response.status_code == 409
        assert response.json()["error"]["code"] == "conflict"
        assert client.patch(f"{USERS}/{user['id']}/access", json={"roles": []}).status_code == 200
        assert client.delete(f"{ROLES}/{role['id']}").status_code == 409  # the group still has it
        assert client.patch(f"{GROUPS}/{group['id']}", json={"roles": []}).status_code == 200
        response = client.delete(f"{ROLES}/{role['id']}")
        assert response.status_code == 204
        assert client.delete(f"{ROLES}/{role['id']}").status_code == 404
        assert role["name"] not in [r["name"] for r in client.get(ROLES).json()["data"]]
        # A deleted role's name is unknown again.
        response = client.patch(f"{USERS}/{user['id']}/access", json={"roles": [role["name"]]})
        assert response.status_code == 400


@pytest.mark.parametrize("name", ["admin", "operator", "technician", "viewer"])
def test_built_in_roles_cannot_be_changed_or_deleted(hub: HubProcess, name: str) -> None:
    with hub.admin() as client:
        patched = client.patch(f"{ROLES}/{name}", json={"permissions": ["node:read"]})
        deleted = client.delete(f"{ROLES}/{name}")
        roles = {r["name"]: r for r in client.get(ROLES).json()["data"]}
    assert patched.status_code == 409
    assert patched.json()["error"]["code"] == "conflict"
    assert deleted.status_code == 409
    assert set(roles[name]["permissions"]) == BUILTIN[name]


def test_unknown_role_id_is_404(hub: HubProcess) -> None:
    with hub.admin() as client:
        assert client.patch(f"{ROLES}/rol_nothing", json={"description": "x"}).status_code == 404
        assert client.delete(f"{ROLES}/rol_nothing").status_code == 404


def test_a_custom_role_cannot_take_away_the_last_admins_access(hub: HubProcess) -> None:
    """The only full admin holds auth:manage through a custom role; changing that role must not strand the hub."""
    with hub.admin() as client:
        first = client.get("/api/v1/auth/me").json()["data"]["user"]["id"]
        for other in client.get(USERS, params={"role": "admin", "limit": 200}).json()["data"]:
            if other["id"] != first:
                assert client.delete(f"{USERS}/{other['id']}").status_code == 204
    role = create_role(hub, sorted(USER_PERMISSIONS))
    holder = create_user(hub, [role["name"]])
    with hub.client(logged_in(hub, holder)) as client:
        assert client.patch(f"{USERS}/{first}/access", json={"roles": ["viewer"]}).status_code == 200
        try:
            response = client.patch(f"{ROLES}/{role['id']}", json={"permissions": ["node:read"]})
            assert response.status_code == 409
            assert response.json()["error"]["code"] == "last_admin"
        finally:
            restored = client.patch(f"{USERS}/{first}/access", json={"roles": ["admin"]})
            if restored.status_code != 200:  # nobody can manage users any more: repair the database
                with hub_database(hub):
                    User.update(roles=["admin"]).where(User.id == first).execute()
                wait_for(lambda: admin_can_manage(hub), 5, "the admin's access to come back")


def admin_can_manage(hub: HubProcess) -> bool:
    with hub.admin() as client:
        return "auth:manage" in client.get("/api/v1/auth/me").json()["data"]["permissions"]


# -- access policies -------------------------------------------------------------------------


def test_access_policies_have_defaults(hub: HubProcess) -> None:
    with hub.admin() as client:
        response = client.get(POLICIES)
    assert response.status_code == 200
    assert response.json()["data"] == DEFAULT_POLICIES


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"session_lifetime": 3600}, "session_lifetime"),
        ({"oidc_default_roles": ["viewer", "overlord"]}, "oidc_default_roles"),
        ({"session_ttl_s": 299}, "session_ttl_s"),
        ({"session_ttl_s": 30 * 86400 + 1}, "session_ttl_s"),
        ({"session_ttl_s": "3600"}, "session_ttl_s"),
        ({"oidc_mappings": [{"claim": "groups", "value": "ops", "roles": ["ghost"]}]}, "oidc_mappings[0].roles"),
    ],
)
def test_invalid_access_policies_are_400_and_change_nothing(hub: HubProcess, body: dict[str, Any], field: str) -> None:
    with hub.admin() as client:
        before = client.get(POLICIES).json()["data"]
        response = client.patch(POLICIES, json=body)
        assert response.status_code == 400
        assert response.json()["error"]["code"] == "invalid_request"
        assert list(response.json()["error"]["fields"]) == [field]
        assert client.get(POLICIES).json()["data"] == before


def test_valid_access_policies_persist_and_apply_to_new_sessions(hub: HubProcess) -> None:
    role = create_role(hub, ["node:read"])
    changes = {
        "session_ttl_s": 3600,
        "oidc_default_roles": ["viewer", role["name"]],
        "oidc_mappings": [{"claim": "groups", "value": "ops", "roles": ["operator"], "sites": ["north"]}],
        "oidc_sites_claim": "sites",
    }
    with hub.admin() as client:
        try:
            response = client.patch(POLICIES, json=changes)
            assert response.status_code == 200
            assert response.json()["data"] == changes
            assert client.get(POLICIES).json()["data"] == changes
            # A partial patch keeps the rest.
            assert client.patch(POLICIES, json={"oidc_sites_claim": None}).json()["data"] == changes | {"oidc_sites_claim": None}
            started = time.time()
            login = httpx.post(f"{hub.url}/api/v1/auth/login", json={"username": "admin", "password": ADMIN_PASSWORD})
            expires = datetime.fromisoformat(login.json()["data"]["expires_at"].replace("Z", "+00:00")).timestamp()
            assert started + 3600 - 5 <= expires <= time.time() + 3600 + 5
        finally:
            assert client.patch(POLICIES, json=DEFAULT_POLICIES).status_code == 200
        assert client.get(POLICIES).json()["data"] == DEFAULT_POLICIES


def test_groups_roles_and_policies_need_auth_manage(hub: HubProcess) -> None:
    viewer = create_user(hub, ["viewer"])
    with hub.client(logged_in(hub, viewer)) as client:
        responses = [
            client.get(GROUPS),
            client.post(GROUPS, json={"name": unique("g"), "roles": ["admin"]}),
            client.get(ROLES),
            client.post(ROLES, json={"name": unique("r"), "permissions": ["auth:manage"]}),
            client.get(POLICIES),
            client.patch(POLICIES, json={"session_ttl_s": 300}),
        ]
    for response in responses:
        assert response.status_code == 403, response.request.url
        assert response.json()["error"]["required"] == ["auth:manage"]


# -- nobody grants what they do not hold --------------------------------------------------------

VIEWER = BUILTIN["viewer"]
NOT_HELD = "You cannot grant permissions you do not hold"


def create_manager(hub: HubProcess, **extra: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """A user whose only own role is a custom one holding just auth:manage (on every site), and that role."""
    role = create_role(hub, ["auth:manage"])
    return create_user(hub, [role["name"]], **extra), role


def assert_not_held(response: httpx.Response, required: set[str] | None = None, key: bool = False) -> dict[str, Any]:
    """403 naming the permissions the caller lacks: `forbidden`, or `insufficient_scope` with `current` for a key."""
    assert response.status_code == 403, (response.request.method, str(response.request.url), response.text)
    error = response.json()["error"]
    assert error["code"] == ("insufficient_scope" if key else "forbidden"), error
    assert error["message"].startswith(NOT_HELD), error
    assert error["required"] and "auth:manage" not in error["required"], error
    if required is not None:
        assert set(error["required"]) == required, error
    if key:
        assert error["current"] == ["auth:manage"], error
    return error


def failures(hub: HubProcess, **params: str) -> list[str]:
    with hub.admin() as client:
        response = client.get("/api/v1/audit-events", params={"outcome": "failure", "limit": 200, **params})
    assert response.status_code == 200, response.text
    return sorted(event["action"] for event in response.json()["data"] if NOT_HELD in (event["reason"] or ""))


def remove(hub: HubProcess, *paths: str) -> None:
    """Delete what a test made (users before roles); managers hold auth:manage everywhere, so they must go."""
    with hub.admin() as client:
        for path in paths:
            assert client.delete(path).status_code == 204, path


def test_a_caller_cannot_grant_through_a_group_what_they_do_not_hold(hub: HubProcess) -> None:
    north_viewers = create_group(hub, ["viewer"], ["north"])
    admins = create_group(hub, ["admin"])
    manager, managers = create_manager(hub, groups=[north_viewers["id"]])
    made: list[str] = []
    try:
        with hub.client(logged_in(hub, manager)) as client:
            own_group = f"{GROUPS}/{north_viewers['id']}"
            refused = {
                "admin group": client.post(GROUPS, json={"name": unique("g"), "roles": ["admin"]}),
                "south viewers": client.post(GROUPS, json={"name": unique("g"), "roles": ["viewer"], "sites": ["south"]}),
                "own group made admin": client.patch(own_group, json={"roles": ["viewer", "admin"]}),
                "own group widened": client.patch(own_group, json={"sites": ["north", "south"]}),
                "own group everywhere": client.patch(own_group, json={"sites": None}),
                "joins the admins": client.patch(
                    f"{USERS}/{manager['id']}/access", json={"groups": [north_viewers["id"], admins["id"]]}
                ),
                "new admin member": client.post(
                    USERS, json={"username": unique("u"), "password": PASSWORD, "groups": [admins["id"]]}
                ),
            }
            allowed = {
                "north viewers": client.post(GROUPS, json={"name": unique("g"), "roles": ["viewer"], "sites": ["north"]}),
                "managers": client.post(GROUPS, json={"name": unique("g"), "roles": [managers["name"]]}),
                "renamed": client.patch(own_group, json={"name": unique("renamed")}),
            }
            made = [f"{GROUPS}/{r.json()['data']['id']}" for r in allowed.values() if r.status_code == 201]
            taken_away = (
                [client.patch(made[1], json={"roles": []}), client.patch(made[0], json={"sites": []})] if len(made) == 2 else []
            )
        for name in ("admin group", "joins the admins", "new admin member"):  # every site: viewer's too, held on north only
            assert set(assert_not_held(refused[name])["required"]) == USER_PERMISSIONS - {"auth:manage"}, name
        assert set(assert_not_held(refused["own group made admin"])["required"]) == USER_PERMISSIONS - {"auth:manage"} - VIEWER
        for name in ("south viewers", "own group widened", "own group everywhere"):
            assert set(assert_not_held(refused[name])["required"]) == VIEWER, name
        assert "south" in refused["own group widened"].json()["error"]["message"]
        assert "every site" in refused["own group everywhere"].json()["error"]["message"]
        assert [r.status_code for r in allowed.values()] == [201, 201, 200], [r.text for r in allowed.values()]
        assert [r.status_code for r in taken_away] == [200, 200], [r.text for r in taken_away]
        with hub.admin() as client:
            unchanged = client.get(own_group).json()["data"]
        assert (unchanged["roles"], unchanged["sites"], unchanged["members"]) == (["viewer"], ["north"], [manager["id"]])
        assert "audit:read" not in me(hub, logged_in(hub, manager))["permissions"]
        assert failures(hub, target_id=north_viewers["id"]) == ["group.update"] * 3
        assert failures(hub, actor_id=manager["id"], action="group.create") == ["group.create"] * 2
    finally:
        remove(
            hub,
            f"{USERS}/{manager['id']}",
            f"{ROLES}/{managers['id']}",
            *made,
            f"{GROUPS}/{north_viewers['id']}",
            f"{GROUPS}/{admins['id']}",
        )


def test_a_caller_cannot_put_into_a_role_permissions_they_do_not_hold_everywhere(hub: HubProcess) -> None:
    north_viewers = create_group(hub, ["viewer"], ["north"])
    manager, managers = create_manager(hub, groups=[north_viewers["id"]])
    readers = create_role(hub, ["node:read"])
    made: list[str] = []
    try:
        with hub.client(logged_in(hub, manager)) as client:
            refused = {
                "auditor": client.post(ROLES, json={"name": unique("r"), "permissions": ["auth:manage", "audit:read"]}),
                "viewer everywhere": client.post(ROLES, json={"name": unique("r"), "permissions": sorted(VIEWER)}),
                "own role made admin": client.patch(f"{ROLES}/{managers['id']}", json={"permissions": sorted(USER_PERMISSIONS)}),
                "readers manage nodes": client.patch(
                    f"{ROLES}/{readers['id']}", json={"permissions": ["node:read", "node:manage"]}
                ),
            }
            created = client.post(ROLES, json={"name": unique("r"), "permissions": ["auth:manage"]})
            made = [f"{ROLES}/{created.json()['data']['id']}"] if created.status_code == 201 else []
            allowed = [
                created,
                client.patch(f"{ROLES}/{readers['id']}", json={"permissions": []}),  # taking away is not granting
                client.patch(f"{ROLES}/{readers['id']}", json={"description": "reads nothing now"}),
                client.patch(f"{ROLES}/{managers['id']}", json={"permissions": ["auth:manage"]}),  # nothing new
            ]
        assert set(assert_not_held(refused["auditor"])["required"]) == {"audit:read"}
        # Held on north only: a role's permissions count on every site it can be given.
        assert set(assert_not_held(refused["viewer everywhere"])["required"]) == VIEWER
        assert "every site" in refused["viewer everywhere"].json()["error"]["message"]
        assert set(assert_not_held(refused["own role made admin"])["required"]) == USER_PERMISSIONS - {"auth:manage"}
        assert set(assert_not_held(refused["readers manage nodes"])["required"]) == {"node:manage"}
        assert [r.status_code for r in allowed] == [201, 200, 200, 200], [r.text for r in allowed]
        with hub.admin() as client:
            roles = {r["id"]: r for r in client.get(ROLES).json()["data"]}
        assert roles[managers["id"]]["permissions"] == ["auth:manage"]
        assert "audit:read" not in me(hub, logged_in(hub, manager))["permissions"]
        assert failures(hub, target_id=managers["id"]) == ["role.update"]
        assert failures(hub, target_id=readers["id"]) == ["role.update"]
        assert failures(hub, actor_id=manager["id"], action="role.create") == ["role.create"] * 2
    finally:
        remove(hub, f"{USERS}/{manager['id']}", f"{ROLES}/{managers['id']}", f"{ROLES}/{readers['id']}", *made)
        remove(hub, f"{GROUPS}/{north_viewers['id']}")


def test_a_caller_cannot_give_identity_provider_users_what_they_do_not_hold(hub: HubProcess) -> None:
    north_viewers = create_group(hub, ["viewer"], ["north"])
    manager, managers = create_manager(hub, groups=[north_viewers["id"]])
    admins_mapping = {"claim": "groups", "value": "hark-admins", "roles": ["admin"], "sites": None}
    north_mapping = {"claim": "groups", "value": "north", "roles": ["viewer"], "sites": ["north"]}
    try:
        with hub.admin() as client:
            assert client.patch(POLICIES, json={"oidc_mappings": [admins_mapping]}).status_code == 200
        with hub.client(logged_in(hub, manager)) as client:
            refused = {
                "admin by default": client.patch(POLICIES, json={"oidc_default_roles": ["admin"]}),
                "viewer by default": client.patch(POLICIES, json={"oidc_default_roles": ["viewer"]}),
                "new operators": client.patch(
                    POLICIES, json={"oidc_mappings": [admins_mapping, {**north_mapping, "roles": ["operator"]}]}
                ),
                "admin for everyone": client.patch(POLICIES, json={"oidc_mappings": [{**admins_mapping, "value": "everyone"}]}),
                "viewers beyond north": client.patch(
                    POLICIES, json={"oidc_mappings": [{**north_mapping, "sites": ["north", "south"]}]}
                ),
            }
            allowed = [
                client.patch(POLICIES, json={"session_ttl_s": 3600}),
                client.patch(POLICIES, json={"oidc_mappings": [admins_mapping, north_mapping]}),  # held on north
                client.patch(POLICIES, json={"oidc_mappings": [north_mapping], "oidc_default_roles": [managers["name"]]}),
                client.patch(POLICIES, json={"oidc_mappings": [], "oidc_default_roles": []}),  # taking away
            ]
        assert set(assert_not_held(refused["admin by default"])["required"]) == USER_PERMISSIONS - {"auth:manage"}
        assert set(assert_not_held(refused["viewer by default"])["required"]) == VIEWER
        assert set(assert_not_held(refused["new operators"])["required"]) == BUILTIN["operator"] - VIEWER  # on north
        assert set(assert_not_held(refused["admin for everyone"])["required"]) == USER_PERMISSIONS - {"auth:manage"}
        assert set(assert_not_held(refused["viewers beyond north"])["required"]) == VIEWER
        assert "south" in refused["viewers beyond north"].json()["error"]["message"]
        assert [r.status_code for r in allowed] == [200, 200, 200, 200], [r.text for r in allowed]
        assert failures(hub, actor_id=manager["id"], action="access_policy.update") == ["access_policy.update"] * 5
    finally:
        with hub.admin() as client:
            assert client.patch(POLICIES, json=DEFAULT_POLICIES).status_code == 200
        remove(hub, f"{USERS}/{manager['id']}", f"{ROLES}/{managers['id']}", f"{GROUPS}/{north_viewers['id']}")


def test_a_key_with_only_auth_manage_cannot_grant_through_groups_roles_or_policies(hub: HubProcess) -> None:
    viewers = create_group(hub, ["viewer"], ["north"])
    admins = create_group(hub, ["admin"])
    readers = create_role(hub, ["node:read"])
    member = create_user(hub, ["viewer"])
    with hub.admin() as client:
        key = client.post("/api/v1/auth/keys", json={"name": unique("k"), "kind": "service", "scopes": ["auth:manage"]})
    assert key.status_code == 201, key.text
    key_id, made = key.json()["data"]["key"]["id"], []
    try:
        with hub.client(key.json()["data"]["secret"]) as client:
            refused = [
                client.post(GROUPS, json={"name": unique("g"), "roles": ["admin"]}),
                client.patch(f"{GROUPS}/{viewers['id']}", json={"roles": ["admin"]}),
                client.patch(f"{GROUPS}/{viewers['id']}", json={"sites": None}),
                client.post(ROLES, json={"name": unique("r"), "permissions": ["auth:manage", "audit:read"]}),
                client.patch(f"{ROLES}/{readers['id']}", json={"permissions": ["node:read", "node:manage"]}),
                client.patch(POLICIES, json={"oidc_default_roles": ["admin"]}),
                client.patch(f"{USERS}/{member['id']}/access", json={"groups": [admins["id"]]}),
            ]
            allowed = [
                client.post(GROUPS, json={"name": unique("g"), "roles": []}),
                client.post(ROLES, json={"name": unique("r"), "permissions": ["auth:manage"]}),
                client.patch(f"{GROUPS}/{viewers['id']}", json={"roles": []}),
                client.patch(f"{ROLES}/{readers['id']}", json={"permissions": []}),
                client.patch(POLICIES, json={"session_ttl_s": 3600}),
            ]
        made = [f"{GROUPS}/{allowed[0].json()['data']['id']}", f"{ROLES}/{allowed[1].json()['data']['id']}"]
        for response in refused:
            assert_not_held(response, key=True)
        assert [r.status_code for r in allowed] == [201, 201, 200, 200, 200], [r.text for r in allowed]
        assert failures(hub, actor_id=key_id) == sorted(
            [
                "group.create",
                "group.update",
                "group.update",
                "role.create",
                "role.update",
                "access_policy.update",
                "user.access.update",
            ]
        )
    finally:
        with hub.admin() as client:
            assert client.patch(POLICIES, json=DEFAULT_POLICIES).status_code == 200
            assert client.delete(f"/api/v1/auth/keys/{key_id}").status_code == 204
        remove(
            hub,
            f"{USERS}/{member['id']}",
            *made,
            f"{ROLES}/{readers['id']}",
            f"{GROUPS}/{viewers['id']}",
            f"{GROUPS}/{admins['id']}",
        )
