"""User administration on a real hub: create, list, detail, access, password, status, delete, and the last admin."""

from __future__ import annotations

import csv
import io
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hark_fleet.hub.db.models import User

from tests.conftest import hub_database
from tests.harness import ADMIN_PASSWORD, HubProcess, wait_for
from tests.hub.api.sites import sites_exist

USERS = "/api/v1/auth/users"
PASSWORD = "plain-Lantern-47-river"
VIEWER = {
    "node:read",
    "health:read",
    "recording:read",
    "recording:read_own",
    "schedule:read",
    "settings:read",
    "notify:read",
    "site:read",
}
TECHNICIAN = {
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
}
USER_FIELDS = {
    "id",
    "username",
    "display_name",
    "roles",
    "sites",
    "groups",
    "disabled",
    "sso",
    "created_at",
    "password_changed_at",
}


_sites_exist = sites_exist("north", "south", "east", "west")


def unique(prefix: str = "u") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def create_user(hub: HubProcess, roles: list[str], sites: list[str] | None = None, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"username": extra.pop("username", unique()), "password": PASSWORD, "roles": roles, **extra}
    if sites is not None:
        body["sites"] = sites
    with hub.admin() as client:
        response = client.post(USERS, json=body)
    assert response.status_code == 201, response.text
    return response.json()["data"]


def me(hub: HubProcess, token: str) -> httpx.Response:
    with hub.client(token) as client:
        return client.get("/api/v1/auth/me")


def login_status(hub: HubProcess, username: str, password: str) -> int:
    return httpx.post(f"{hub.url}/api/v1/auth/login", json={"username": username, "password": password}).status_code


def admin_id(hub: HubProcess) -> str:
    with hub.admin() as client:
        return client.get("/api/v1/auth/me").json()["data"]["user"]["id"]


@pytest.fixture
def only_first_admin(hub: HubProcess) -> Iterator[str]:
    """Make the first `admin` the only full admin (other tests' admins are deleted); yield its id."""
    first = admin_id(hub)
    with hub.admin() as client:
        others = [u for u in client.get(USERS, params={"role": "admin", "limit": 200}).json()["data"] if u["id"] != first]
        for user in others:
            assert client.delete(f"{USERS}/{user['id']}").status_code == 204
    yield first


# -- create ---------------------------------------------------------------------------


def test_create_answers_201_with_the_user_and_no_password(hub: HubProcess) -> None:
    username = unique("create")
    with hub.admin() as client:
        response = client.post(
            USERS, json={"username": username, "password": PASSWORD, "roles": ["viewer"], "sites": ["north", "east"]}
        )
    assert response.status_code == 201
    user = response.json()["data"]
    assert set(user) == USER_FIELDS
    assert user["id"].startswith("usr_")
    assert user["username"] == username
    assert user["display_name"] is None
    assert user["roles"] == ["viewer"]
    assert user["sites"] == ["east", "north"]
    assert user["groups"] == []
    assert user["disabled"] is False
    assert user["sso"] is False
    assert user["created_at"].endswith("Z")
    assert user["password_changed_at"].endswith("Z")
    assert PASSWORD not in response.text
    assert "argon2" not in response.text
    assert "password_hash" not in response.text


def test_created_user_can_log_in_and_without_sites_sees_every_site(hub: HubProcess) -> None:
    user = create_user(hub, ["technician"], display_name="Tess Technician")
    assert user["sites"] is None
    assert user["display_name"] == "Tess Technician"
    token = hub.login(user["username"], PASSWORD)
    data = me(hub, token).json()["data"]
    assert data["user"]["id"] == user["id"]
    assert set(data["permissions"]) == TECHNICIAN
    assert data["grants"] == [{"permissions": data["permissions"], "sites": None}]


@pytest.mark.parametrize(
    ("password", "problem"),
    [
        ("password123", "is too common"),
        ("PASSWORD123", "is too common"),
        ("short-1", "must be at least 10 characters"),
        ("", "must be at least 10 characters"),
    ],
)
def test_weak_password_is_400_naming_the_field(hub: HubProcess, password: str, problem: str) -> None:
    username = unique("weak")
    with hub.admin() as client:
        response = client.post(USERS, json={"username": username, "password": password, "roles": ["viewer"]})
        assert response.status_code == 400
        error = response.json()["error"]
        assert error["code"] == "invalid_request"
        assert error["fields"] == {"password": problem}
        assert client.get(USERS, params={"q": username}).json()["data"] == []


@pytest.mark.parametrize("username", ["", "has space", "-leading-dash", "slash/name", "x" * 151, "naïve"])
def test_bad_username_is_400_naming_the_field(hub: HubProcess, username: str) -> None:
    with hub.admin() as client:
        response = client.post(USERS, json={"username": username, "password": PASSWORD, "roles": ["viewer"]})
    assert response.status_code == 400
    assert list(response.json()["error"]["fields"]) == ["username"]


def test_username_with_a_trailing_newline_is_400(hub: HubProcess) -> None:
    username = unique("newline") + "\n"
    with hub.admin() as client:
        response = client.post(USERS, json={"username": username, "password": PASSWORD, "roles": ["viewer"]})
    assert response.status_code == 400
    assert list(response.json()["error"]["fields"]) == ["username"]


def test_username_and_password_problems_are_reported_together(hub: HubProcess) -> None:
    with hub.admin() as client:
        response = client.post(USERS, json={"username": "bad name", "password": "short", "roles": ["viewer"]})
    assert response.status_code == 400
    assert set(response.json()["error"]["fields"]) == {"username", "password"}


def test_unknown_role_is_400(hub: HubProcess) -> None:
    username = unique("role")
    with hub.admin() as client:
        response = client.post(USERS, json={"username": username, "password": PASSWORD, "roles": ["viewer", "superuser"]})
        assert response.status_code == 400
        assert response.json()["error"]["fields"] == {"roles": "unknown roles: superuser"}
        assert client.get(USERS, params={"q": username}).json()["data"] == []


def test_unknown_group_is_400(hub: HubProcess) -> None:
    username = unique("group")
    with hub.admin() as client:
        response = client.post(
            USERS, json={"username": username, "password": PASSWORD, "roles": ["viewer"], "groups": ["grp_missing"]}
        )
        assert response.status_code == 400
        assert response.json()["error"]["fields"] == {"groups": "no groups grp_missing"}
        assert client.get(USERS, params={"q": username}).json()["data"] == []


def test_bad_site_name_is_400(hub: HubProcess) -> None:
    with hub.admin() as client:
        response = client.post(USERS, json={"username": unique(), "password": PASSWORD, "roles": ["viewer"], "sites": ["a b"]})
    assert response.status_code == 400
    assert list(response.json()["error"]["fields"]) == ["sites"]


def test_unknown_body_field_is_400(hub: HubProcess) -> None:
    with hub.admin() as client:
        response = client.post(USERS, json={"username": unique(), "password": PASSWORD, "roles": [], "admin": True})
    assert response.status_code == 400
    assert response.json()["error"]["fields"] == {"admin": "is not a known field"}


def test_duplicate_username_is_409(hub: HubProcess) -> None:
    user = create_user(hub, ["viewer"])
    with hub.admin() as client:
        response = client.post(USERS, json={"username": user["username"], "password": "another-Pass-9876", "roles": []})
        assert response.status_code == 409
        assert response.json()["error"]["code"] == "conflict"
        assert len(client.get(USERS, params={"q": user["username"]}).json()["data"]) == 1
    # The first user's password is untouched.
    assert hub.login(user["username"], PASSWORD)


def test_creating_users_needs_auth_manage(hub: HubProcess) -> None:
    viewer = create_user(hub, ["viewer"])
    with hub.client(hub.login(viewer["username"], PASSWORD)) as client:
        response = client.post(USERS, json={"username": unique(), "password": PASSWORD, "roles": ["admin"]})
    assert response.status_code == 403
    assert response.json()["error"]["required"] == ["auth:manage"]


# -- list, facets, export ------------------------------------------------------------------


@pytest.fixture
def listed(hub: HubProcess) -> dict[str, Any]:
    """Three users sharing a unique tag in their names: a viewer, a site-limited technician, a disabled viewer."""
    tag = uuid.uuid4().hex[:10]
    users = {
        "a": create_user(hub, ["viewer"], username=f"list-{tag}-a"),
        "b": create_user(hub, ["technician", "viewer"], ["south"], username=f"list-{tag}-b", display_name="Queen"),
        "c": create_user(hub, ["viewer"], username=f"list-{tag}-c"),
    }
    with hub.admin() as client:
        assert client.patch(f"{USERS}/{users['c']['id']}/status", json={"status": "disabled"}).status_code == 200
    return {"tag": tag, **users}


def usernames(response: httpx.Response) -> list[str]:
    assert response.status_code == 200, response.text
    return [u["username"] for u in response.json()["data"]]


def test_list_searches_and_filters(hub: HubProcess, listed: dict[str, Any]) -> None:
    tag = listed["tag"]
    a, b, c = (f"list-{tag}-{x}" for x in "abc")
    with hub.admin() as client:
        assert usernames(client.get(USERS, params={"q": tag})) == [a, b, c]
        assert usernames(client.get(USERS, params={"q": tag.upper()})) == [a, b, c]
        assert usernames(client.get(USERS, params={"q": tag, "role": "technician"})) == [b]
        assert usernames(client.get(USERS, params={"q": tag, "role": "viewer"})) == [a, b, c]
        assert usernames(client.get(USERS, params={"q": tag, "disabled": "true"})) == [c]
        assert usernames(client.get(USERS, params={"q": tag, "disabled": "false"})) == [a, b]
        assert usernames(client.get(USERS, params={"q": tag, "site": "south"})) == [b]
        assert usernames(client.get(USERS, params={"q": tag, "role": "viewer", "disabled": "false"})) == [a, b]
        assert usernames(client.get(USERS, params=[("q", tag), ("role", "technician"), ("role", "admin")])) == [b]
        assert usernames(client.get(USERS, params={"q": "queen"})) == [b]  # display name; q is no hex digit


def test_list_pages_with_a_cursor(hub: HubProcess, listed: dict[str, Any]) -> None:
    tag = listed["tag"]
    with hub.admin() as client:
        first = client.get(USERS, params={"q": tag, "limit": 2}).json()
        second = client.get(USERS, params={"q": tag, "limit": 2, "cursor": first["meta"]["next_cursor"]}).json()
    assert [u["username"] for u in first["data"] + second["data"]] == [f"list-{tag}-{x}" for x in "abc"]
    assert second["meta"]["next_cursor"] is None


def test_list_items_never_carry_a_password_hash(hub: HubProcess, listed: dict[str, Any]) -> None:
    with hub.admin() as client:
        response = client.get(USERS, params={"limit": 200})
    assert response.status_code == 200
    assert all(set(u) == USER_FIELDS for u in response.json()["data"])
    assert "argon2" not in response.text


@pytest.mark.parametrize(
    ("params", "field"), [({"disabled": "maybe"}, "disabled"), ({"colour": "red"}, "colour"), ({"limit": "0"}, "limit")]
)
def test_bad_list_parameters_are_400(hub: HubProcess, params: dict[str, str], field: str) -> None:
    with hub.admin() as client:
        response = client.get(USERS, params=params)
    assert response.status_code == 400
    assert list(response.json()["error"]["fields"]) == [field]


def test_facets_count_roles_sites_and_disabled(hub: HubProcess, listed: dict[str, Any]) -> None:
    with hub.admin() as client:
        response = client.get(f"{USERS}/facets", params={"q": listed["tag"]})
    assert response.status_code == 200
    assert response.json()["data"] == {
        "role": [{"value": "viewer", "count": 3}, {"value": "technician", "count": 1}],
        "site": [{"value": "south", "count": 1}],
        "disabled": [{"value": False, "count": 2}, {"value": True, "count": 1}],
    }


def test_facets_can_be_chosen_and_filtered(hub: HubProcess, listed: dict[str, Any]) -> None:
    with hub.admin() as client:
        chosen = client.get(f"{USERS}/facets", params={"q": listed["tag"], "disabled": "false", "fields": "role"})
        unknown = client.get(f"{USERS}/facets", params={"fields": "password"})
    assert chosen.json()["data"] == {"role": [{"value": "viewer", "count": 2}, {"value": "technician", "count": 1}]}
    assert unknown.status_code == 400
    assert list(unknown.json()["error"]["fields"]) == ["fields"]


def test_csv_export_has_a_header_and_the_matching_users(hub: HubProcess, listed: dict[str, Any]) -> None:
    with hub.admin() as client:
        response = client.get(f"{USERS}/export", params={"format": "csv", "q": listed["tag"]})
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    assert response.headers["content-disposition"] == 'attachment; filename="export.csv"'
    rows = list(csv.reader(io.StringIO(response.text)))
    assert rows[0] == ["id", "username", "display_name", "roles", "sites", "groups", "disabled", "sso", "created_at"]
    b = listed["b"]
    assert [r[1] for r in rows[1:]] == [listed[x]["username"] for x in "abc"]
    assert rows[2] == [b["id"], b["username"], "Queen", "technician;viewer", "south", "", "false", "false", b["created_at"]]
    assert rows[3][6] == "true"
    assert "argon2" not in response.text


def test_export_of_a_selection(hub: HubProcess, listed: dict[str, Any]) -> None:
    with hub.admin() as client:
        response = client.post(f"{USERS}/export", params={"format": "ndjson"}, json={"ids": [listed["c"]["id"], "usr_none"]})
    assert response.status_code == 200
    lines = response.text.splitlines()
    assert len(lines) == 1
    assert '"username":"' + listed["c"]["username"] + '"' in lines[0]


# -- detail ------------------------------------------------------------------------------


def test_detail_has_resolved_permissions_and_action_states(hub: HubProcess) -> None:
    user = create_user(hub, ["viewer"], ["north"])
    with hub.admin() as client:
        response = client.get(f"{USERS}/{user['id']}")
        assert response.status_code == 200
        detail = response.json()["data"]
        assert {k: detail[k] for k in USER_FIELDS} == user
        assert sorted(detail["permissions"]) == sorted(VIEWER)
        assert detail["actions"] == {
            "update_access": {"allowed": True, "reason": None},
            "reset_password": {"allowed": True, "reason": None},
            "disable": {"allowed": True, "reason": None},
            "enable": {"allowed": False, "reason": "already enabled"},
            "delete": {"allowed": True, "reason": None},
        }
        assert client.patch(f"{USERS}/{user['id']}/status", json={"status": "disabled"}).status_code == 200
        actions = client.get(f"{USERS}/{user['id']}").json()["data"]["actions"]
    assert actions["disable"] == {"allowed": False, "reason": "already disabled"}
    assert actions["enable"] == {"allowed": True, "reason": None}


def test_detail_of_an_unknown_user_is_404(hub: HubProcess) -> None:
    with hub.admin() as client:
        response = client.get(f"{USERS}/usr_doesnotexist")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


# -- access ------------------------------------------------------------------------------


def test_changing_roles_takes_effect_on_the_users_own_me(hub: HubProcess) -> None:
    user = create_user(hub, ["viewer"])
    token = hub.login(user["username"], PASSWORD)
    assert set(me(hub, token).json()["data"]["permissions"]) == VIEWER  # the token is now cached
    with hub.admin() as client:
        response = client.patch(f"{USERS}/{user['id']}/access", json={"roles": ["technician"]})
    assert response.status_code == 200
    assert response.json()["data"]["roles"] == ["technician"]
    data = me(hub, token).json()["data"]
    assert data["user"]["roles"] == ["technician"]
    assert set(data["permissions"]) == TECHNICIAN
    with hub.client(token) as client:
        assert client.get("/api/v1/nodes").status_code == 200


def test_taking_every_role_away_leaves_no_permission(hub: HubProcess) -> None:
    user = create_user(hub, ["viewer"])
    token = hub.login(user["username"], PASSWORD)
    with hub.admin() as client:
        assert client.patch(f"{USERS}/{user['id']}/access", json={"roles": []}).status_code == 200
    data = me(hub, token).json()["data"]
    assert data["permissions"] == []
    assert data["grants"] == []
    with hub.client(token) as client:
        response = client.get("/api/v1/nodes")
    assert response.status_code == 403
    assert response.json()["error"]["required"] == ["node:read"]


def test_site_limit_shows_in_me_grants_and_can_be_lifted(hub: HubProcess) -> None:
    user = create_user(hub, ["viewer"])
    token = hub.login(user["username"], PASSWORD)
    with hub.admin() as client:
        response = client.patch(f"{USERS}/{user['id']}/access", json={"sites": ["west", "north"]})
        assert response.status_code == 200
        assert response.json()["data"]["sites"] == ["north", "west"]
        assert response.json()["data"]["roles"] == ["viewer"]  # roles not in the body stay
        grants = me(hub, token).json()["data"]["grants"]
        assert len(grants) == 1
        assert set(grants[0]["permissions"]) == VIEWER
        assert grants[0]["sites"] == ["north", "west"]
        assert client.patch(f"{USERS}/{user['id']}/access", json={"sites": None}).json()["data"]["sites"] is None
    assert me(hub, token).json()["data"]["grants"][0]["sites"] is None


@pytest.mark.parametrize(
    ("body", "field"),
    [({"roles": ["root"]}, "roles"), ({"sites": ["no such site!"]}, "sites"), ({"groups": ["grp_nope"]}, "groups")],
)
def test_invalid_access_change_is_400_and_changes_nothing(hub: HubProcess, body: dict[str, Any], field: str) -> None:
    user = create_user(hub, ["viewer"])
    with hub.admin() as client:
        response = client.patch(f"{USERS}/{user['id']}/access", json=body)
        assert response.status_code == 400
        assert list(response.json()["error"]["fields"]) == [field]
        detail = client.get(f"{USERS}/{user['id']}").json()["data"]
    assert {k: detail[k] for k in USER_FIELDS} == user


def test_access_change_of_an_unknown_user_is_404(hub: HubProcess) -> None:
    with hub.admin() as client:
        response = client.patch(f"{USERS}/usr_doesnotexist/access", json={"roles": ["viewer"]})
    assert response.status_code == 404


def access(client: httpx.Client, user_id: str, **body: Any) -> httpx.Response:
    return client.patch(f"{USERS}/{user_id}/access", json=body)


def test_roles_are_replaced_by_the_full_list_and_kept_when_only_sites_or_groups_change(hub: HubProcess) -> None:
    user = create_user(hub, ["viewer"])
    with hub.admin() as client:
        group = client.post("/api/v1/auth/groups", json={"name": unique("g"), "roles": ["viewer"]}).json()["data"]
        assert access(client, user["id"], roles=["operator", "technician"]).json()["data"]["roles"] == ["operator", "technician"]
        after_sites = access(client, user["id"], sites=["south", "north"]).json()["data"]
        after_groups = access(client, user["id"], groups=[group["id"]]).json()["data"]
        after_roles = access(client, user["id"], roles=["technician", "viewer", "technician"]).json()["data"]
        detail = client.get(f"{USERS}/{user['id']}").json()["data"]
        assert client.delete(f"/api/v1/auth/groups/{group['id']}").status_code == 204
    assert (after_sites["roles"], after_sites["sites"]) == (["operator", "technician"], ["north", "south"])
    assert (after_groups["roles"], after_groups["sites"], after_groups["groups"]) == (
        ["operator", "technician"],
        ["north", "south"],
        [group["id"]],
    )
    assert (after_roles["roles"], after_roles["sites"], after_roles["groups"]) == (
        ["technician", "viewer"],  # the list replaces the roles (a repeat counts once)
        ["north", "south"],
        [group["id"]],
    )
    assert set(detail["permissions"]) == TECHNICIAN | VIEWER


def test_sites_can_be_set_cleared_to_every_site_and_emptied(hub: HubProcess) -> None:
    user = create_user(hub, ["viewer"], ["north"])
    token = hub.login(user["username"], PASSWORD)
    with hub.admin() as client:
        assert access(client, user["id"], sites=["west", "east"]).json()["data"]["sites"] == ["east", "west"]
        assert access(client, user["id"], roles=["viewer"]).json()["data"]["sites"] == ["east", "west"]  # left out: kept
        assert access(client, user["id"], sites=None).json()["data"]["sites"] is None
        assert me(hub, token).json()["data"]["grants"][0]["sites"] is None
        emptied = access(client, user["id"], sites=[]).json()["data"]
    assert (emptied["roles"], emptied["sites"]) == (["viewer"], [])  # no site: the roles reach nothing
    with hub.client(token) as client:
        assert client.get("/api/v1/nodes").json()["data"] == []


def test_a_caller_cannot_grant_permissions_they_do_not_hold(hub: HubProcess) -> None:
    with hub.admin() as client:
        manager_role = client.post("/api/v1/auth/roles", json={"name": unique("um"), "permissions": ["auth:manage"]})
        managers = manager_role.json()["data"]["name"]
        admins = client.post("/api/v1/auth/groups", json={"name": unique("admins"), "roles": ["admin"]}).json()["data"]
    manager = create_user(hub, [managers])
    other = create_user(hub, ["viewer"], ["north"])
    with hub.client(hub.login(manager["username"], PASSWORD)) as client:
        refused = [
            access(client, other["id"], roles=["viewer", "admin"]),
            access(client, manager["id"], roles=[managers, "admin"]),
            access(client, other["id"], groups=[admins["id"]]),
            access(client, other["id"], sites=None),  # the viewer's reads on every site: not held
            client.post(USERS, json={"username": unique(), "password": PASSWORD, "roles": ["operator"]}),
        ]
        allowed = [
            access(client, other["id"], sites=["north"]),  # nothing new
            access(client, other["id"], roles=[]),  # taking away is not granting
            access(client, other["id"], roles=[managers], sites=None),  # what the manager holds everywhere
        ]
    for response in refused:
        assert response.status_code == 403, (response.request.url, response.text)
        error = response.json()["error"]
        assert error["code"] == "forbidden" and "auth:manage" not in error["required"], error
        assert error["message"].startswith("You cannot grant permissions you do not hold"), error
    assert "audit:read" in refused[0].json()["error"]["required"]
    assert set(refused[3].json()["error"]["required"]) == VIEWER
    assert [r.status_code for r in allowed] == [200, 200, 200], [r.text for r in allowed]
    with hub.admin() as client:
        detail = client.get(f"{USERS}/{other['id']}").json()["data"]
        audit = client.get("/api/v1/audit-events", params={"target_id": other["id"], "outcome": "failure"}).json()["data"]
        assert client.delete(f"/api/v1/auth/groups/{admins['id']}").status_code == 204
        for user in (manager, other):  # both hold auth:manage everywhere: full admins for the last-admin tests
            assert client.delete(f"{USERS}/{user['id']}").status_code == 204
    assert (detail["roles"], detail["sites"], detail["groups"]) == ([managers], None, [])
    assert [a["action"] for a in audit] == ["user.access.update"] * 3
    assert all(a["actor"]["id"] == manager["id"] and "do not hold" in a["reason"] for a in audit)


def test_a_caller_cannot_widen_a_users_sites_past_their_own(hub: HubProcess) -> None:
    with hub.admin() as client:
        managers = client.post("/api/v1/auth/roles", json={"name": unique("um"), "permissions": ["auth:manage"]})
        north_viewers = client.post("/api/v1/auth/groups", json={"name": unique("nv"), "roles": ["viewer"], "sites": ["north"]})
    manager = create_user(hub, [managers.json()["data"]["name"]], groups=[north_viewers.json()["data"]["id"]])
    other = create_user(hub, ["viewer"], ["north"])
    with hub.client(hub.login(manager["username"], PASSWORD)) as client:
        to_south = access(client, other["id"], sites=["north", "south"])
        everywhere = access(client, other["id"], sites=None)
        narrower = access(client, other["id"], sites=[])
        back = access(client, other["id"], sites=["north"])
    for response in (to_south, everywhere):
        assert response.status_code == 403, response.text
        assert set(response.json()["error"]["required"]) == VIEWER
    assert "south" in to_south.json()["error"]["message"] and "every site" in everywhere.json()["error"]["message"]
    assert (narrower.status_code, back.status_code) == (200, 200)
    with hub.admin() as client:
        assert client.delete(f"/api/v1/auth/groups/{north_viewers.json()['data']['id']}").status_code == 204
        assert client.delete(f"{USERS}/{manager['id']}").status_code == 204


def test_a_key_cannot_grant_more_than_its_scopes(hub: HubProcess) -> None:
    other = create_user(hub, ["viewer"])
    with hub.admin() as client:
        key = client.post("/api/v1/auth/keys", json={"name": unique("k"), "kind": "service", "scopes": ["auth:manage"]})
    with hub.client(key.json()["data"]["secret"]) as client:
        response = access(client, other["id"], roles=["admin"])
        kept = access(client, other["id"], roles=[])
    assert response.status_code == 403
    error = response.json()["error"]
    assert error["code"] == "insufficient_scope" and error["current"] == ["auth:manage"] and "audit:read" in error["required"]
    assert kept.status_code == 200


def test_a_users_own_key_cannot_disable_or_delete_them(hub: HubProcess) -> None:
    second = create_user(hub, ["admin"])
    try:
        with hub.client(hub.login(second["username"], PASSWORD)) as client:
            key = client.post("/api/v1/auth/keys", json={"name": unique("k"), "kind": "user", "scopes": ["auth:manage"]})
            assert key.status_code == 201, key.text
        with hub.client(key.json()["data"]["secret"]) as client:
            actions = client.get(f"{USERS}/{second['id']}").json()["data"]["actions"]
            disable = client.patch(f"{USERS}/{second['id']}/status", json={"status": "disabled"})
            delete = client.delete(f"{USERS}/{second['id']}")
        assert actions["disable"] == {"allowed": False, "reason": "you cannot disable yourself"}
        assert actions["delete"] == {"allowed": False, "reason": "you cannot delete yourself"}
        assert (disable.status_code, delete.status_code) == (409, 409), (disable.text, delete.text)
        with hub.admin() as client:
            assert client.get(f"{USERS}/{second['id']}").json()["data"]["disabled"] is False
    finally:
        with hub.admin() as client:
            client.delete(f"{USERS}/{second['id']}")


# -- password -----------------------------------------------------------------------------


def test_password_reset_ends_the_users_sessions(hub: HubProcess) -> None:
    user = create_user(hub, ["viewer"])
    first, second = hub.login(user["username"], PASSWORD), hub.login(user["username"], PASSWORD)
    assert me(hub, first).status_code == 200
    new_password = "fresh-Copper-kettle-52"
    with hub.admin() as client:
        response = client.patch(f"{USERS}/{user['id']}/password", json={"password": new_password})
    assert response.status_code == 200
    assert set(response.json()["data"]) == USER_FIELDS
    assert response.json()["data"]["password_changed_at"] >= user["password_changed_at"]
    assert new_password not in response.text
    assert me(hub, first).status_code == 401
    assert me(hub, second).status_code == 401
    assert login_status(hub, user["username"], PASSWORD) == 401
    assert me(hub, hub.login(user["username"], new_password)).status_code == 200


def test_password_reset_refuses_a_weak_password_and_keeps_the_old_one(hub: HubProcess) -> None:
    user = create_user(hub, ["viewer"])
    token = hub.login(user["username"], PASSWORD)
    with hub.admin() as client:
        response = client.patch(f"{USERS}/{user['id']}/password", json={"password": "password123"})
    assert response.status_code == 400
    assert response.json()["error"]["fields"] == {"password": "is too common"}
    assert me(hub, token).status_code == 200
    assert hub.login(user["username"], PASSWORD)


def test_a_single_sign_on_users_password_cannot_be_reset(hub: HubProcess) -> None:
    user = create_user(hub, ["viewer"])
    with hub_database(hub):  # as the OIDC callback provisions them: no local password
        User.update(oidc_subject=f"sub-{user['id']}", password_hash="").where(User.id == user["id"]).execute()
    with hub.admin() as client:
        detail = client.get(f"{USERS}/{user['id']}").json()["data"]
        assert detail["sso"] is True
        assert detail["actions"]["reset_password"] == {"allowed": False, "reason": "this user signs in through single sign-on"}
        response = client.patch(f"{USERS}/{user['id']}/password", json={"password": "local-Backdoor-pass-77"})
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "sso_user"
    assert login_status(hub, user["username"], "local-Backdoor-pass-77") == 401


# -- status -------------------------------------------------------------------------------


def test_disabling_ends_sessions_and_blocks_login_until_enabled(hub: HubProcess) -> None:
    user = create_user(hub, ["viewer"])
    token = hub.login(user["username"], PASSWORD)
    assert me(hub, token).status_code == 200
    with hub.admin() as client:
        response = client.patch(f"{USERS}/{user['id']}/status", json={"status": "disabled"})
        assert response.status_code == 200
        assert response.json()["data"]["disabled"] is True
        assert me(hub, token).status_code == 401
        assert login_status(hub, user["username"], PASSWORD) == 401
        response = client.patch(f"{USERS}/{user['id']}/status", json={"status": "active"})
        assert response.status_code == 200
        assert response.json()["data"]["disabled"] is False
    assert me(hub, token).status_code == 401  # sessions ended by disabling stay ended
    assert me(hub, hub.login(user["username"], PASSWORD)).status_code == 200


def test_unknown_status_is_400(hub: HubProcess) -> None:
    user = create_user(hub, ["viewer"])
    with hub.admin() as client:
        response = client.patch(f"{USERS}/{user['id']}/status", json={"status": "frozen"})
    assert response.status_code == 400
    assert response.json()["error"]["fields"] == {"status": "must be active or disabled"}


# -- delete -------------------------------------------------------------------------------


def test_delete_answers_204_then_404_and_ends_the_users_sessions(hub: HubProcess) -> None:
    user = create_user(hub, ["viewer"])
    token = hub.login(user["username"], PASSWORD)
    with hub.admin() as client:
        response = client.delete(f"{USERS}/{user['id']}")
        assert response.status_code == 204
        assert response.content == b""
        assert client.get(f"{USERS}/{user['id']}").status_code == 404
        assert client.delete(f"{USERS}/{user['id']}").status_code == 404
        assert client.get(USERS, params={"q": user["username"]}).json()["data"] == []
    assert me(hub, token).status_code == 401
    assert login_status(hub, user["username"], PASSWORD) == 401


def test_a_deleted_username_can_be_used_again(hub: HubProcess) -> None:
    user = create_user(hub, ["viewer"])
    with hub.admin() as client:
        assert client.delete(f"{USERS}/{user['id']}").status_code == 204
    again = create_user(hub, ["technician"], username=user["username"])
    assert again["id"] != user["id"]


# -- the last admin ------------------------------------------------------------------------


def assert_admin_unchanged(hub: HubProcess, first: str) -> None:
    with hub.admin() as client:
        detail = client.get(f"{USERS}/{first}").json()["data"]
        assert client.get("/api/v1/auth/me").status_code == 200
    assert detail["roles"] == ["admin"]
    assert detail["sites"] is None
    assert detail["disabled"] is False
    assert hub.login("admin", ADMIN_PASSWORD)


def test_the_only_full_admin_cannot_be_demoted_disabled_or_deleted(hub: HubProcess, only_first_admin: str) -> None:
    first = only_first_admin
    # An admin limited to one site is not a full admin: it manages only users within its sites, and the
    # full admin (every site) is not one of them, so it is not found.
    site_admin = create_user(hub, ["admin"], ["north"])
    with hub.admin() as client:
        actions = client.get(f"{USERS}/{first}").json()["data"]["actions"]
        assert actions["disable"] == {"allowed": False, "reason": "the last admin"}
        assert actions["delete"] == {"allowed": False, "reason": "the last admin"}
        audit_before = client.get("/api/v1/audit-events", params={"target_id": first, "limit": 200}).json()["data"]
        for body in ({"roles": ["viewer"]}, {"sites": ["north"]}, {"roles": []}):
            response = client.patch(f"{USERS}/{first}/access", json=body)
            assert response.status_code == 409, body
            assert response.json()["error"]["code"] == "last_admin"
    with hub.client(hub.login(site_admin["username"], PASSWORD)) as other:
        attempts = [
            other.patch(f"{USERS}/{first}/access", json={"roles": ["operator"]}),
            other.patch(f"{USERS}/{first}/status", json={"status": "disabled"}),
            other.delete(f"{USERS}/{first}"),
        ]
    for response in attempts:
        assert response.status_code == 404, response.request.method
        assert response.json()["error"] == {"code": "not_found", "message": f"No user {first}."}
    assert_admin_unchanged(hub, first)
    with hub.admin() as client:
        audit_after = client.get("/api/v1/audit-events", params={"target_id": first, "limit": 200}).json()["data"]
        assert client.delete(f"{USERS}/{site_admin['id']}").status_code == 204
    assert audit_after == audit_before


def test_with_a_second_full_admin_the_first_can_be_demoted(hub: HubProcess, only_first_admin: str) -> None:
    first = only_first_admin
    second = create_user(hub, ["admin"])
    second_token = hub.login(second["username"], PASSWORD)
    admin_token = hub.login()
    try:
        with hub.client(second_token) as client:
            response = client.patch(f"{USERS}/{first}/access", json={"roles": ["viewer"]})
            assert response.status_code == 200
            assert response.json()["data"]["roles"] == ["viewer"]
        assert set(me(hub, admin_token).json()["data"]["permissions"]) == VIEWER
        # Now the second admin is the last one.
        with hub.client(second_token) as client:
            response = client.patch(f"{USERS}/{second['id']}/access", json={"roles": ["operator"]})
        assert response.status_code == 409
        assert response.json()["error"]["code"] == "last_admin"
    finally:
        with hub.client(second_token) as client:
            assert client.patch(f"{USERS}/{first}/access", json={"roles": ["admin"]}).status_code == 200
    assert "auth:manage" in me(hub, admin_token).json()["data"]["permissions"]
    with hub.admin() as client:
        assert client.delete(f"{USERS}/{second['id']}").status_code == 204
    assert_admin_unchanged(hub, first)


def test_a_group_cannot_take_away_the_last_admins_access(hub: HubProcess, only_first_admin: str) -> None:
    # The admin role through a group on every site makes a full admin too; taking it away is guarded.
    member = create_user(hub, [])
    with hub.admin() as client:
        group = client.post("/api/v1/auth/groups", json={"name": unique("admins"), "roles": ["admin"]}).json()["data"]
        assert client.patch(f"{USERS}/{member['id']}/access", json={"groups": [group["id"]]}).status_code == 200
    with hub.client(hub.login(member["username"], PASSWORD)) as client:
        assert client.patch(f"{USERS}/{only_first_admin}/access", json={"roles": ["viewer"]}).status_code == 200
        try:
            attempts = [
                client.delete(f"/api/v1/auth/groups/{group['id']}"),
                client.patch(f"/api/v1/auth/groups/{group['id']}", json={"sites": ["north"]}),
                client.patch(f"/api/v1/auth/groups/{group['id']}", json={"roles": ["operator"]}),
                client.patch(f"{USERS}/{member['id']}/access", json={"groups": []}),
            ]
        finally:
            assert client.patch(f"{USERS}/{only_first_admin}/access", json={"roles": ["admin"]}).status_code == 200
    for response in attempts:
        assert response.status_code == 409, response.request.url
        assert response.json()["error"]["code"] == "last_admin"
    with hub.admin() as client:
        assert client.get(f"/api/v1/auth/groups/{group['id']}").json()["data"] == group | {"members": [member["id"]]}
        assert client.delete(f"/api/v1/auth/groups/{group['id']}").status_code == 204
        assert client.delete(f"{USERS}/{member['id']}").status_code == 204
    assert_admin_unchanged(hub, only_first_admin)


def demote_each_other_at_once(hub: HubProcess, pair: list[dict[str, Any]], tokens: list[str]) -> list[int]:
    """Each of two admins demotes the other, released together; the two statuses."""
    statuses = [0, 0]
    barrier = threading.Barrier(2)

    def demote(k: int) -> None:
        with hub.client(tokens[k]) as client:
            barrier.wait()
            statuses[k] = client.patch(f"{USERS}/{pair[1 - k]['id']}/access", json={"roles": ["viewer"]}).status_code

    threads = [threading.Thread(target=demote, args=(k,)) for k in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return statuses


def test_two_admins_demoting_each_other_at_once_leave_one_full_admin(hub: HubProcess, only_first_admin: str) -> None:
    first = only_first_admin
    for _ in range(5):
        pair = [create_user(hub, ["admin"]), create_user(hub, ["admin"])]
        tokens = [hub.login(u["username"], PASSWORD) for u in pair]
        with hub.admin() as client:  # the two newcomers become the only full admins
            assert client.patch(f"{USERS}/{first}/access", json={"roles": ["viewer"]}).status_code == 200
        statuses = demote_each_other_at_once(hub, pair, tokens)
        if statuses == [200, 200]:  # nobody may manage users any more: repair the database
            with hub_database(hub):
                User.update(roles=["admin"]).where(User.id == first).execute()
            wait_for(lambda: admin_can_manage(hub), 5, "the first admin's access to come back")
        else:
            with hub.client(tokens[statuses.index(200)]) as client:
                assert client.patch(f"{USERS}/{first}/access", json={"roles": ["admin"]}).status_code == 200
        with hub.admin() as client:
            for user in pair:
                assert client.delete(f"{USERS}/{user['id']}").status_code == 204
        assert statuses != [200, 200], "both demotions went through: no full admin was left"
        # The loser was refused as the last admin, or had already lost auth:manage when it was checked.
        assert sorted(statuses) in ([200, 403], [200, 409])
    assert_admin_unchanged(hub, first)


def admin_can_manage(hub: HubProcess) -> bool:
    with hub.admin() as client:
        return "auth:manage" in client.get("/api/v1/auth/me").json()["data"]["permissions"]


def test_an_admin_cannot_disable_or_delete_themselves(hub: HubProcess) -> None:
    second = create_user(hub, ["admin"])
    try:
        with hub.client(hub.login(second["username"], PASSWORD)) as client:
            disable = client.patch(f"{USERS}/{second['id']}/status", json={"status": "disabled"})
            delete = client.delete(f"{USERS}/{second['id']}")
            assert client.get("/api/v1/auth/me").status_code == 200
            actions = client.get(f"{USERS}/{second['id']}").json()["data"]["actions"]
        assert disable.status_code == 409
        assert disable.json()["error"]["code"] == "conflict"
        assert delete.status_code == 409
        assert delete.json()["error"]["code"] == "conflict"
        assert actions["disable"] == {"allowed": False, "reason": "you cannot disable yourself"}
        assert actions["delete"] == {"allowed": False, "reason": "you cannot delete yourself"}
        with hub.admin() as client:
            detail = client.get(f"{USERS}/{second['id']}").json()["data"]
        assert detail["disabled"] is False
    finally:
        with hub.admin() as client:
            assert client.delete(f"{USERS}/{second['id']}").status_code == 204


def test_a_site_limited_admin_cannot_lift_their_own_limit(hub: HubProcess) -> None:
    site_admin = create_user(hub, ["admin"], ["north"])
    with hub.client(hub.login(site_admin["username"], PASSWORD)) as client:
        response = client.patch(f"{USERS}/{site_admin['id']}/access", json={"sites": None})
        assert response.status_code == 403
        assert client.get("/api/v1/auth/me").json()["data"]["grants"][0]["sites"] == ["north"]
