"""The audit log on a real hub: what each mutation and denial writes, and how the log is read."""

from __future__ import annotations

import csv
import io
import json
import time
import uuid
from typing import Any

import httpx
import pytest

from tests.harness import HubProcess
from tests.hub.api.sites import sites_exist

EVENTS = "/api/v1/audit-events"
USERS = "/api/v1/auth/users"
PASSWORD = "amber-Meadow-switch-61"
EVENT_FIELDS = {
    "id",
    "at",
    "actor",
    "permission",
    "action",
    "target",
    "site",
    "before",
    "after",
    "outcome",
    "reason",
    "source_ip",
}


_sites_exist = sites_exist("north", "south", "east")


def unique(prefix: str = "aud") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def create_user(hub: HubProcess, roles: list[str], password: str = PASSWORD) -> dict[str, Any]:
    with hub.admin() as client:
        response = client.post(USERS, json={"username": unique(), "password": password, "roles": roles})
    assert response.status_code == 201, response.text
    return response.json()["data"]


def admin_identity(hub: HubProcess) -> dict[str, Any]:
    with hub.admin() as client:
        user = client.get("/api/v1/auth/me").json()["data"]["user"]
    return {"type": "user", "id": user["id"], "name": user["username"]}


def events(hub: HubProcess, **params: Any) -> list[dict[str, Any]]:
    with hub.admin() as client:
        response = client.get(EVENTS, params={"limit": 200, **params})
    assert response.status_code == 200, response.text
    return response.json()["data"]


def only_event(hub: HubProcess, **params: Any) -> dict[str, Any]:
    found = events(hub, **params)
    assert len(found) == 1, found
    return found[0]


@pytest.fixture
def history(hub: HubProcess) -> dict[str, Any]:
    """A user created and changed four times: five events about it, oldest first, a few ms apart."""
    user = create_user(hub, ["viewer"])
    with hub.admin() as client:
        for roles in (["technician"], ["operator"], ["viewer"], ["technician", "viewer"]):
            time.sleep(0.01)
            assert client.patch(f"{USERS}/{user['id']}/access", json={"roles": roles}).status_code == 200
    found = events(hub, target_id=user["id"])
    assert len(found) == 5
    return {"user": user, "events": list(reversed(found))}


# -- what gets written ------------------------------------------------------------------------


def test_user_create_writes_one_event_about_the_new_user(hub: HubProcess) -> None:
    user = create_user(hub, ["viewer"])
    event = only_event(hub, target_id=user["id"])
    assert set(event) == EVENT_FIELDS
    assert event["id"].startswith("aud_")
    assert event["at"].endswith("Z")
    assert event["action"] == "user.create"
    assert event["actor"] == admin_identity(hub)
    assert event["permission"] == "auth:manage"
    assert event["target"] == {"type": "user", "id": user["id"]}
    assert event["before"] is None
    assert event["after"] == user
    assert event["outcome"] == "success"
    assert event["source_ip"] == "127.0.0.1"
    text = json.dumps(event)
    assert PASSWORD not in text
    assert "password_hash" not in text
    assert "argon2" not in text


def test_every_user_mutation_writes_exactly_one_event(hub: HubProcess) -> None:
    user = create_user(hub, ["viewer"])
    new_password = "second-Orchard-bell-29"
    with hub.admin() as client:
        for method, path, body in (
            ("PATCH", "access", {"roles": ["technician"], "sites": ["north"]}),
            ("PATCH", "password", {"password": new_password}),
            ("PATCH", "status", {"status": "disabled"}),
            ("PATCH", "status", {"status": "active"}),
            ("DELETE", "", None),
        ):
            url = f"{USERS}/{user['id']}" + (f"/{path}" if path else "")
            response = client.request(method, url, json=body)
            assert response.status_code in (200, 204), response.text
    found = events(hub, target_id=user["id"])
    assert [e["action"] for e in found] == [
        "user.delete",
        "user.enable",
        "user.disable",
        "user.password.reset",
        "user.access.update",
        "user.create",
    ]
    actor = admin_identity(hub)
    assert all(e["actor"] == actor and e["permission"] == "auth:manage" and e["outcome"] == "success" for e in found)
    assert all(e["target"] == {"type": "user", "id": user["id"]} for e in found)
    delete, enable, disable, reset = found[:4]
    assert disable["before"]["disabled"] is False and disable["after"]["disabled"] is True
    assert enable["before"]["disabled"] is True and enable["after"]["disabled"] is False
    assert delete["before"]["username"] == user["username"]
    assert delete["after"] is None
    assert reset["after"] == {"sessions_revoked": 0}
    text = json.dumps(found)
    assert new_password not in text
    assert PASSWORD not in text
    assert "argon2" not in text


def test_access_update_records_before_and_after(hub: HubProcess) -> None:
    user = create_user(hub, ["viewer"])
    with hub.admin() as client:
        after = client.patch(f"{USERS}/{user['id']}/access", json={"roles": ["operator"], "sites": ["east"]}).json()["data"]
    event = only_event(hub, target_id=user["id"], action="user.access.update")
    assert event["before"] == user
    assert event["after"] == after
    assert event["before"]["roles"] == ["viewer"] and event["before"]["sites"] is None
    assert event["after"]["roles"] == ["operator"] and event["after"]["sites"] == ["east"]


def test_group_role_and_policy_mutations_are_audited(hub: HubProcess) -> None:
    actor = admin_identity(hub)
    with hub.admin() as client:
        group = client.post("/api/v1/auth/groups", json={"name": unique("grp"), "roles": ["viewer"]}).json()["data"]
        changed = client.patch(f"/api/v1/auth/groups/{group['id']}", json={"sites": ["north"]}).json()["data"]
        assert client.delete(f"/api/v1/auth/groups/{group['id']}").status_code == 204
        role = client.post("/api/v1/auth/roles", json={"name": unique("role"), "permissions": ["node:read"]}).json()["data"]
        role_after = client.patch(f"/api/v1/auth/roles/{role['id']}", json={"permissions": ["health:read"]}).json()["data"]
        assert client.delete(f"/api/v1/auth/roles/{role['id']}").status_code == 204
        policies = client.get("/api/v1/auth/access-policies").json()["data"]
        assert client.patch("/api/v1/auth/access-policies", json={"session_ttl_s": 7200}).status_code == 200
        assert client.patch("/api/v1/auth/access-policies", json=policies).status_code == 200
    group_events = events(hub, target_id=group["id"])
    assert [(e["action"], e["before"], e["after"]) for e in group_events] == [
        ("group.delete", changed, None),
        ("group.update", group, changed),
        ("group.create", None, group),
    ]
    role_events = events(hub, target_id=role["id"])
    assert [(e["action"], e["before"], e["after"]) for e in role_events] == [
        ("role.delete", role_after, None),
        ("role.update", role, role_after),
        ("role.create", None, role),
    ]
    policy_events = events(hub, action="access_policy.update", limit=2)
    assert policy_events[1]["before"] == policies
    assert policy_events[1]["after"] == policies | {"session_ttl_s": 7200}
    assert policy_events[0]["after"] == policies
    for event in group_events + role_events + policy_events:
        assert event["actor"] == actor
        assert event["permission"] == "auth:manage"
        assert event["outcome"] == "success"


def test_a_denied_request_writes_access_denied(hub: HubProcess) -> None:
    viewer = create_user(hub, ["viewer"])
    with hub.client(hub.login(viewer["username"], PASSWORD)) as client:
        response = client.get(USERS)
    assert response.status_code == 403
    event = only_event(hub, actor_id=viewer["id"], action="access.denied")
    assert event["actor"] == {"type": "user", "id": viewer["id"], "name": viewer["username"]}
    assert event["permission"] == "auth:manage"
    assert event["outcome"] == "failure"
    assert event["target"] is None
    assert event["reason"] == "GET /api/v1/auth/users"
    assert event["source_ip"] == "127.0.0.1"


def test_a_failed_login_writes_auth_login_failure(hub: HubProcess) -> None:
    user = create_user(hub, ["viewer"])
    wrong = "not-the-Right-one-404"
    response = httpx.post(f"{hub.url}/api/v1/auth/login", json={"username": user["username"], "password": wrong})
    assert response.status_code == 401
    event = only_event(hub, target_id=user["id"], action="auth.login")
    assert event["outcome"] == "failure"
    assert event["actor"] == {"type": "anonymous", "id": None, "name": user["username"]}
    assert event["target"] == {"type": "user", "id": user["id"]}
    assert event["source_ip"] == "127.0.0.1"
    assert wrong not in json.dumps(event)
    # A successful login is audited as the user, about the new session.
    hub.login(user["username"], PASSWORD)
    success = only_event(hub, actor_id=user["id"], action="auth.login")
    assert success["outcome"] == "success"
    assert success["target"]["type"] == "session"


def test_reads_are_not_audited(hub: HubProcess) -> None:
    viewer = create_user(hub, ["viewer"])
    with hub.client(hub.login(viewer["username"], PASSWORD)) as client:
        assert client.get("/api/v1/auth/me").status_code == 200
        assert client.get("/api/v1/nodes").status_code == 200
    assert [e["action"] for e in events(hub, actor_id=viewer["id"])] == ["auth.login"]


# -- reading the log ---------------------------------------------------------------------------


def test_list_is_newest_first_with_cursor_pages(hub: HubProcess, history: dict[str, Any]) -> None:
    target = history["user"]["id"]
    seen: list[dict[str, Any]] = []
    sizes = []
    cursor = None
    with hub.admin() as client:
        while True:
            params = {"target_id": target, "limit": 2} | ({"cursor": cursor} if cursor else {})
            body = client.get(EVENTS, params=params).json()
            seen += body["data"]
            sizes.append(len(body["data"]))
            cursor = body["meta"]["next_cursor"]
            if cursor is None:
                break
    assert sizes == [2, 2, 1]
    ids = [e["id"] for e in seen]
    assert len(set(ids)) == 5
    assert seen == list(reversed(history["events"]))
    assert ids == sorted(ids, reverse=True)
    assert [e["at"] for e in seen] == sorted((e["at"] for e in seen), reverse=True)
    assert seen[-1]["action"] == "user.create"


def test_unfiltered_pages_do_not_repeat_events(hub: HubProcess, history: dict[str, Any]) -> None:
    with hub.admin() as client:
        first = client.get(EVENTS, params={"limit": 2}).json()
        second = client.get(EVENTS, params={"limit": 2, "cursor": first["meta"]["next_cursor"]}).json()
        both = client.get(EVENTS, params={"limit": 4}).json()
    assert [e["id"] for e in first["data"] + second["data"]] == [e["id"] for e in both["data"]]


def test_filters_by_action_actor_target_and_outcome(hub: HubProcess, history: dict[str, Any]) -> None:
    target = history["user"]["id"]
    actor = admin_identity(hub)["id"]
    oldest = history["events"][0]
    assert events(hub, target_id=target, action="user.create") == [oldest]
    assert len(events(hub, target_id=target, action="user.access.update")) == 4
    assert len(events(hub, target_id=target, actor_id=actor)) == 5
    assert events(hub, target_id=target, actor_id="usr_someoneelse") == []
    assert len(events(hub, target_id=target, outcome="success")) == 5
    assert events(hub, target_id=target, outcome="failure") == []
    both = events(hub, target_id=target, action=["user.create", "user.access.update"])
    assert len(both) == 5
    failures = events(hub, outcome="failure")
    assert failures and all(e["outcome"] == "failure" for e in failures)
    created = events(hub, action="user.create", actor_id=actor)
    assert oldest in created and all(e["action"] == "user.create" for e in created)


def test_time_range_is_from_inclusive_to_exclusive(hub: HubProcess, history: dict[str, Any]) -> None:
    target = history["user"]["id"]
    e = history["events"]
    assert [x["id"] for x in events(hub, target_id=target, **{"from": e[1]["at"], "to": e[4]["at"]})] == [
        e[3]["id"],
        e[2]["id"],
        e[1]["id"],
    ]
    assert len(events(hub, target_id=target, **{"from": e[0]["at"]})) == 5
    assert [x["id"] for x in events(hub, target_id=target, to=e[1]["at"])] == [e[0]["id"]]
    assert events(hub, target_id=target, **{"from": "2000-01-01T00:00:00Z", "to": "2000-01-02T00:00:00Z"}) == []


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"outcome": "maybe"}, "outcome"),
        ({"from": "yesterday"}, "from"),
        ({"to": "2026-01-01T00:00:00"}, "to"),
        ({"severity": "high"}, "severity"),
        ({"cursor": "nonsense"}, "cursor"),
        ({"limit": "201"}, "limit"),
    ],
)
def test_bad_list_parameters_are_400(hub: HubProcess, params: dict[str, str], field: str) -> None:
    with hub.admin() as client:
        response = client.get(EVENTS, params=params)
    assert response.status_code == 400
    assert list(response.json()["error"]["fields"]) == [field]


def test_facets_count_the_filtered_events(hub: HubProcess, history: dict[str, Any]) -> None:
    target = history["user"]["id"]
    actor = admin_identity(hub)
    with hub.admin() as client:
        response = client.get(f"{EVENTS}/facets", params={"target_id": target})
        chosen = client.get(f"{EVENTS}/facets", params={"target_id": target, "fields": "action,outcome"})
    assert response.status_code == 200
    facets = response.json()["data"]
    assert facets["action"] == [{"value": "user.access.update", "count": 4}, {"value": "user.create", "count": 1}]
    assert facets["outcome"] == [{"value": "success", "count": 5}]
    assert facets["actor_id"] == [{"value": actor["id"], "count": 5}]
    assert facets["actor_type"] == [{"value": "user", "count": 5}]
    assert facets["target_type"] == [{"value": "user", "count": 5}]
    assert facets["permission"] == [{"value": "auth:manage", "count": 5}]
    assert chosen.json()["data"] == {"action": facets["action"], "outcome": facets["outcome"]}


def test_csv_export_streams_the_filtered_events(hub: HubProcess, history: dict[str, Any]) -> None:
    with hub.admin() as client:
        response = client.get(f"{EVENTS}/export", params={"format": "csv", "target_id": history["user"]["id"]})
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert list(rows[0]) == [
        "id",
        "at",
        "actor",
        "permission",
        "action",
        "target",
        "site",
        "outcome",
        "reason",
        "source_ip",
        "before",
        "after",
    ]
    newest_first = list(reversed(history["events"]))
    assert [r["id"] for r in rows] == [e["id"] for e in newest_first]
    first = rows[0]
    assert json.loads(first["actor"]) == newest_first[0]["actor"]
    assert json.loads(first["target"]) == newest_first[0]["target"]
    assert json.loads(first["before"]) == newest_first[0]["before"]
    assert json.loads(first["after"]) == newest_first[0]["after"]
    assert rows[-1]["action"] == "user.create"
    assert rows[-1]["before"] == ""
    assert "argon2" not in response.text


def test_ndjson_export_matches_the_list(hub: HubProcess, history: dict[str, Any]) -> None:
    with hub.admin() as client:
        response = client.get(f"{EVENTS}/export", params={"format": "ndjson", "target_id": history["user"]["id"]})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/x-ndjson"
    assert [json.loads(line) for line in response.text.splitlines()] == list(reversed(history["events"]))


def test_export_of_a_selection_by_ids(hub: HubProcess, history: dict[str, Any]) -> None:
    chosen = [history["events"][0]["id"], history["events"][3]["id"]]
    with hub.admin() as client:
        ndjson = client.post(f"{EVENTS}/export", params={"format": "ndjson"}, json={"ids": chosen + ["aud_unknown"]})
        as_csv = client.post(f"{EVENTS}/export", params={"format": "csv"}, json={"ids": chosen})
        filtered = client.post(
            f"{EVENTS}/export",
            params={"format": "ndjson"},
            json={"filters": {"target_id": history["user"]["id"], "action": "user.create"}},
        )
    assert ndjson.status_code == 200
    assert [json.loads(line)["id"] for line in ndjson.text.splitlines()] == [chosen[1], chosen[0]]
    assert [r["id"] for r in csv.DictReader(io.StringIO(as_csv.text))] == [chosen[1], chosen[0]]
    assert [json.loads(line) for line in filtered.text.splitlines()] == [history["events"][0]]


def test_export_with_an_unknown_format_is_400(hub: HubProcess) -> None:
    with hub.admin() as client:
        response = client.get(f"{EVENTS}/export", params={"format": "xml"})
    assert response.status_code == 400
    assert response.json()["error"]["fields"] == {"format": "must be csv or ndjson"}


def test_detail_answers_the_event_and_404_for_an_unknown_id(hub: HubProcess, history: dict[str, Any]) -> None:
    event = history["events"][2]
    with hub.admin() as client:
        found = client.get(f"{EVENTS}/{event['id']}")
        missing = client.get(f"{EVENTS}/aud_00000000000000000000000000")
    assert found.status_code == 200
    assert found.json() == {"data": event}
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "not_found"


def test_a_viewer_cannot_read_the_audit_log(hub: HubProcess, history: dict[str, Any]) -> None:
    viewer = create_user(hub, ["viewer"])
    event_id = history["events"][0]["id"]
    with hub.client(hub.login(viewer["username"], PASSWORD)) as client:
        responses = [
            client.get(EVENTS),
            client.get(f"{EVENTS}/{event_id}"),
            client.get(f"{EVENTS}/facets"),
            client.get(f"{EVENTS}/export"),
            client.post(f"{EVENTS}/export", json={"ids": [event_id]}),
        ]
    for response in responses:
        assert response.status_code == 403, response.request.url
        assert response.json()["error"] == {
            "code": "forbidden",
            "message": "This needs the permission audit:read.",
            "required": ["audit:read"],
        }
    denied = events(hub, actor_id=viewer["id"], action="access.denied")
    assert len(denied) == 5
    assert all(e["permission"] == "audit:read" and e["outcome"] == "failure" for e in denied)


def test_the_audit_log_cannot_be_changed_through_the_api(hub: HubProcess, history: dict[str, Any]) -> None:
    event_id = history["events"][0]["id"]
    with hub.admin() as client:
        assert client.delete(f"{EVENTS}/{event_id}").status_code == 405
        assert client.patch(f"{EVENTS}/{event_id}", json={"outcome": "failure"}).status_code == 405
        assert client.post(EVENTS, json={"action": "user.create"}).status_code == 405
        assert client.get(f"{EVENTS}/{event_id}").json()["data"] == history["events"][0]


# -- site scope --------------------------------------------------------------------------------


def site_limited_reader(hub: HubProcess, sites: list[str] | None) -> tuple[dict[str, Any], str]:
    """An operator (who holds audit:read) limited to `sites`, and their login token."""
    with hub.admin() as client:
        response = client.post(USERS, json={"username": unique(), "password": PASSWORD, "roles": ["operator"], "sites": sites})
    assert response.status_code == 201, response.text
    user = response.json()["data"]
    return user, hub.login(user["username"], PASSWORD)


@pytest.fixture
def two_sites(hub: HubProcess) -> dict[str, Any]:
    """A node enrolled on north and one on south, and the node.enroll event about each."""
    enrolled = {}
    with hub.admin() as client:
        for site in ("north", "south"):
            response = client.post("/api/v1/nodes/enroll", json={"name": unique("box"), "site": site})
            assert response.status_code == 201, response.text
            enrolled[site] = response.json()["data"]["node"]
    return {site: only_event(hub, target_id=node["id"], action="node.enroll") for site, node in enrolled.items()}


def test_an_event_records_the_site_of_its_target(hub: HubProcess, two_sites: dict[str, Any]) -> None:
    assert two_sites["north"]["site"] == "north" and two_sites["south"]["site"] == "south"
    user = create_user(hub, ["viewer"])
    assert only_event(hub, target_id=user["id"])["site"] is None  # a user is hub-wide


def test_a_site_limited_reader_sees_only_its_sites_and_its_own_actions(hub: HubProcess, two_sites: dict[str, Any]) -> None:
    reader, token = site_limited_reader(hub, ["north"])
    hub_wide = only_event(hub, target_id=reader["id"], action="user.create")
    with hub.client(token) as client:
        listed = client.get(EVENTS, params={"limit": 200}).json()["data"]
        facets = client.get(f"{EVENTS}/facets", params={"fields": "action,target_type"}).json()["data"]
        export = client.get(f"{EVENTS}/export", params={"format": "ndjson"}).text
        selected = client.post(f"{EVENTS}/export", params={"format": "ndjson"}, json={"ids": [two_sites["south"]["id"]]}).text
        north = client.get(f"{EVENTS}/{two_sites['north']['id']}")
        south = client.get(f"{EVENTS}/{two_sites['south']['id']}")
        user_event = client.get(f"{EVENTS}/{hub_wide['id']}")
    ids = {e["id"] for e in listed}
    assert two_sites["north"]["id"] in ids
    assert two_sites["south"]["id"] not in ids and hub_wide["id"] not in ids
    assert two_sites["south"]["id"] not in export and hub_wide["id"] not in export
    assert selected == ""
    assert south.status_code == 404 and user_event.status_code == 404
    assert all(e["site"] == "north" or e["actor"]["id"] == reader["id"] for e in listed)
    assert any(e["action"] == "auth.login" and e["actor"]["id"] == reader["id"] for e in listed)  # its own action
    # Facets count only what the list shows: the reader's own login, and node events on north.
    assert {f["value"] for f in facets["target_type"]} == {e["target"]["type"] for e in listed if e["target"]}
    assert sum(f["count"] for f in facets["action"]) == len(listed)
    assert two_sites["north"]["id"] in export
    assert north.status_code == 200 and north.json()["data"] == two_sites["north"]


def test_a_site_limited_key_reads_the_audit_log_of_its_sites_only(hub: HubProcess, two_sites: dict[str, Any]) -> None:
    with hub.admin() as client:
        created = client.post("/api/v1/auth/keys", json={"name": "audit-north", "scopes": ["audit:read"], "sites": ["north"]})
    assert created.status_code == 201, created.text
    with hub.client(created.json()["data"]["secret"]) as client:
        listed = client.get(EVENTS, params={"limit": 200}).json()["data"]
        south = client.get(f"{EVENTS}/{two_sites['south']['id']}")
    assert two_sites["north"]["id"] in {e["id"] for e in listed}
    assert south.status_code == 404
    assert all(e["site"] == "north" for e in listed)


def test_an_unlimited_reader_sees_every_site_and_hub_wide_events(hub: HubProcess, two_sites: dict[str, Any]) -> None:
    _, token = site_limited_reader(hub, None)
    with hub.client(token) as client:
        ids = {e["id"] for e in client.get(EVENTS, params={"limit": 200}).json()["data"]}
        by_site = client.get(EVENTS, params={"site": "south", "limit": 200}).json()["data"]
    assert {two_sites["north"]["id"], two_sites["south"]["id"]} <= ids
    assert two_sites["south"] in by_site and all(e["site"] == "south" for e in by_site)
