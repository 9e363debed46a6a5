"""Notification settings: defaults until changed, validated changes that persist and are audited, hub-wide writes."""

from __future__ import annotations

import uuid

import pytest

from tests.harness import HubProcess

PASSWORD = "notify-settings-password-1"
DEFAULTS = {"allow_private_destinations": False, "storm_window_s": 5, "storm_threshold": 3, "flap_hold_s": 300}
ROUTE = "/api/v1/settings/notifications"


def user_token(hub: HubProcess, roles: list[str], sites: list[str] | None = None) -> str:
    username = f"ns-{uuid.uuid4().hex[:8]}"
    body = {"username": username, "password": PASSWORD, "roles": roles, **({"sites": sites} if sites else {})}
    with hub.admin() as admin:
        assert admin.post("/api/v1/auth/users", json=body).status_code == 201
    return hub.login(username, PASSWORD)


def settings_of(hub: HubProcess) -> dict:
    with hub.admin() as admin:
        response = admin.get(ROUTE)
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    return {name: data[name] for name in DEFAULTS}


@pytest.fixture(autouse=True)
def restore_defaults(hub: HubProcess) -> None:
    with hub.admin() as admin:
        assert admin.put(ROUTE, json=DEFAULTS).status_code == 200


def test_the_settings_come_with_the_event_health_and_channel_kinds_for_the_console(hub: HubProcess) -> None:
    with hub.client(user_token(hub, ["viewer"])) as viewer:  # settings:read
        data = viewer.get(ROUTE).json()["data"]
    assert {name: data[name] for name in DEFAULTS} == DEFAULTS
    events = {e["name"]: e["description"] for e in data["event_kinds"]}
    assert {"health.opened", "health.resolved", "node.offline", "node.online"} <= set(events)
    assert all(events.values())
    assert "audio.silence" in {k["name"] for k in data["health_kinds"]}
    kinds = {k["kind"]: k for k in data["kinds"]}
    assert set(kinds) == {"webhook", "slack", "discord", "teams", "google_chat", "matrix", "telegram", "email", "ntfy"}
    assert "room_id" in {f["name"] for f in kinds["matrix"]["config"]}
    assert "access_token" in {f["name"] for f in kinds["matrix"]["secrets"]}


def test_a_change_persists_leaves_the_rest_and_is_audited_with_before_and_after(hub: HubProcess) -> None:
    with hub.admin() as admin:
        changed = admin.put(ROUTE, json={"storm_window_s": 12.5, "storm_threshold": 10.0, "allow_private_destinations": True})
        assert changed.status_code == 200, changed.text
        assert "event_kinds" in changed.json()["data"]
        expected = {**DEFAULTS, "storm_window_s": 12.5, "storm_threshold": 10, "allow_private_destinations": True}
        assert settings_of(hub) == expected
        assert admin.put(ROUTE, json={"flap_hold_s": 0}).status_code == 200
        assert settings_of(hub) == {**expected, "flap_hold_s": 0}
        events = admin.get("/api/v1/audit-events", params={"action": "notify_settings.update"}).json()["data"]
    latest = events[0]
    assert latest["actor"]["name"] == "admin" and latest["outcome"] == "success"
    assert latest["permission"] == "settings:manage"
    assert latest["before"]["flap_hold_s"] == 300 and latest["after"]["flap_hold_s"] == 0
    assert latest["after"]["storm_threshold"] == 10


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"storm_window_s": 121}, "storm_window_s"),
        ({"storm_window_s": -1}, "storm_window_s"),
        ({"storm_window_s": "5"}, "storm_window_s"),
        ({"storm_threshold": 1}, "storm_threshold"),
        ({"storm_threshold": 1001}, "storm_threshold"),
        ({"storm_threshold": 2.5}, "storm_threshold"),
        ({"storm_threshold": True}, "storm_threshold"),
        ({"flap_hold_s": 86401}, "flap_hold_s"),
        ({"flap_hold_s": None}, "flap_hold_s"),
        ({"allow_private_destinations": "yes"}, "allow_private_destinations"),
        ({"allow_private_destinations": 1}, "allow_private_destinations"),
        ({"storm_threshold": 5, "colour": "red"}, "colour"),
    ],
)
def test_invalid_settings_are_a_400_naming_the_field_and_change_nothing(hub: HubProcess, body: dict, field: str) -> None:
    with hub.admin() as admin:
        response = admin.put(ROUTE, json=body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_request" and field in error["fields"]
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
        refused = operator.put(ROUTE, json={"storm_threshold": 7})
        assert refused.status_code == 403 and refused.json()["error"]["required"] == ["settings:manage"]
    with hub.client(user_token(hub, ["admin"], ["north"])) as site_admin:
        assert site_admin.get(ROUTE).status_code == 200
        refused = site_admin.put(ROUTE, json={"storm_threshold": 7})
        assert refused.status_code == 403 and "on every site" in refused.json()["error"]["message"]
    assert settings_of(hub) == DEFAULTS
