"""Listen settings: defaults until changed, validated changes (every problem in one 400) that persist and are audited,
hub-wide writes."""

from __future__ import annotations

import uuid

import pytest

from tests.harness import HubProcess

PASSWORD = "listen-settings-password-1"
DEFAULTS = {"max_listeners_per_node": 16, "max_listeners_per_user": 4, "disconnect_grace_s": 30, "share_link_max_days": 30}
ROUTE = "/api/v1/settings/listen"


def user_token(hub: HubProcess, roles: list[str], sites: list[str] | None = None) -> str:
    username = f"ls-{uuid.uuid4().hex[:8]}"
    body = {"username": username, "password": PASSWORD, "roles": roles, **({"sites": sites} if sites else {})}
    with hub.admin() as admin:
        assert admin.post("/api/v1/auth/users", json=body).status_code == 201
    return hub.login(username, PASSWORD)


def settings_of(hub: HubProcess) -> dict:
    with hub.admin() as admin:
        response = admin.get(ROUTE)
    assert response.status_code == 200, response.text
    return response.json()["data"]


@pytest.fixture(autouse=True)
def restore_defaults(hub: HubProcess) -> None:
    with hub.admin() as admin:
        assert admin.put(ROUTE, json=DEFAULTS).status_code == 200


def test_the_defaults_are_read_with_settings_read(hub: HubProcess) -> None:
    with hub.client(user_token(hub, ["viewer"])) as viewer:
        response = viewer.get(ROUTE)
    assert response.status_code == 200, response.text
    assert response.json()["data"] == DEFAULTS


def test_a_change_persists_leaves_the_rest_and_is_audited_with_before_and_after(hub: HubProcess) -> None:
    with hub.admin() as admin:
        changed = admin.put(ROUTE, json={"max_listeners_per_node": 32.0, "disconnect_grace_s": 2.5})
        assert changed.status_code == 200, changed.text
        expected = {**DEFAULTS, "max_listeners_per_node": 32, "disconnect_grace_s": 2.5}
        assert changed.json()["data"] == expected and settings_of(hub) == expected
        assert isinstance(changed.json()["data"]["max_listeners_per_node"], int)
        assert admin.put(ROUTE, json={"share_link_max_days": 3650, "max_listeners_per_user": 1}).status_code == 200
        assert settings_of(hub) == {**expected, "share_link_max_days": 3650, "max_listeners_per_user": 1}
        events = admin.get("/api/v1/audit-events", params={"action": "listen_settings.update"}).json()["data"]
    latest = events[0]
    assert latest["actor"]["name"] == "admin" and latest["outcome"] == "success"
    assert latest["permission"] == "settings:manage"
    assert latest["before"]["share_link_max_days"] == 30 and latest["after"]["share_link_max_days"] == 3650
    assert latest["before"]["max_listeners_per_node"] == 32 and latest["after"]["max_listeners_per_user"] == 1


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"max_listeners_per_node": 0}, "max_listeners_per_node"),
        ({"max_listeners_per_node": 1001}, "max_listeners_per_node"),
        ({"max_listeners_per_node": 2.5}, "max_listeners_per_node"),
        ({"max_listeners_per_node": True}, "max_listeners_per_node"),
        ({"max_listeners_per_user": 101}, "max_listeners_per_user"),
        ({"max_listeners_per_user": "4"}, "max_listeners_per_user"),
        ({"disconnect_grace_s": -1}, "disconnect_grace_s"),
        ({"disconnect_grace_s": 3601}, "disconnect_grace_s"),
        ({"disconnect_grace_s": None}, "disconnect_grace_s"),
        ({"share_link_max_days": 0}, "share_link_max_days"),
        ({"share_link_max_days": 3651}, "share_link_max_days"),
        ({"max_listeners_per_node": 8, "colour": "red"}, "colour"),
    ],
)
def test_invalid_settings_are_a_400_naming_the_field_and_change_nothing(hub: HubProcess, body: dict, field: str) -> None:
    with hub.admin() as admin:
        response = admin.put(ROUTE, json=body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_request" and field in error["fields"]
    assert settings_of(hub) == DEFAULTS


def test_every_problem_is_named_in_one_400(hub: HubProcess) -> None:
    body = {"max_listeners_per_node": 0, "max_listeners_per_user": "x", "disconnect_grace_s": 1e9, "share_link_max_days": 1.5}
    with hub.admin() as admin:
        response = admin.put(ROUTE, json=body)
    assert response.status_code == 400, response.text
    assert set(response.json()["error"]["fields"]) == set(body)
    assert settings_of(hub) == DEFAULTS


@pytest.mark.parametrize("body", [b"", b"[]", b"not json", b'"text"'])
def test_a_body_that_is_not_an_object_is_a_400(hub: HubProcess, body: bytes) -> None:
    with hub.admin() as admin:
        response = admin.put(ROUTE, content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "invalid_request"


def test_reading_needs_settings_read_and_changing_needs_settings_manage_on_every_site(hub: HubProcess) -> None:
    hub.ensure_site("north")
    with hub.client() as anonymous:
        assert anonymous.get(ROUTE).status_code == 401
    with hub.client(user_token(hub, ["operator"])) as operator:  # reads settings, may not manage them
        assert operator.get(ROUTE).status_code == 200
        refused = operator.put(ROUTE, json={"max_listeners_per_node": 7})
        assert refused.status_code == 403 and refused.json()["error"]["required"] == ["settings:manage"]
    with hub.client(user_token(hub, ["admin"], ["north"])) as site_admin:
        assert site_admin.get(ROUTE).status_code == 200
        refused = site_admin.put(ROUTE, json={"max_listeners_per_node": 7})
        assert refused.status_code == 403 and "on every site" in refused.json()["error"]["message"]
    assert settings_of(hub) == DEFAULTS
